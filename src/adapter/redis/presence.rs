//! This node's presence: users and their live connection counts, kept locally in shards and
//! published to Redis by the presence and sync scripts.

use std::sync::atomic::Ordering;

use super::{
    options::RedisAdapterError,
    shared::{Shared, PRESENCE_SHARDS},
};

pub(super) fn shard_of(user: &str) -> usize {
    crate::adapter::common::shard_of(user, PRESENCE_SHARDS)
}

impl Shared {
    /// Applies +1 / -1 to a user's local count and publishes the new count. Returns the
    /// cluster-wide change (1 online, -1 offline, 0 none).
    pub(super) async fn presence_change(&self, user: &str, delta: i32) -> Result<i64, RedisAdapterError> {
        let mut shard = self.presence[shard_of(user)].lock().await;
        let Some(count) = crate::adapter::common::local_count(&mut shard, user, delta) else {
            return Ok(0);
        };
        // The shard stays locked until Redis has the new count: per user, counts reach Redis in
        // order, and a sync cannot interleave.
        let count = count.to_string();
        let result = self
            .run::<(i64, Vec<String>)>(&self.scripts.presence, &[user, &count])
            .await;
        drop(shard);
        match result {
            Ok((-2, offline)) => {
                self.report(Vec::new(), offline);
                self.needs_sync.store(true, Ordering::Relaxed);
                self.wake_heartbeat.notify_one();
                Err(RedisAdapterError::NotRegistered)
            }
            Ok((change, offline)) => {
                self.report(Vec::new(), offline);
                Ok(change)
            }
            Err(e) => {
                self.needs_sync.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Registers this node and replaces its presence in Redis with the local truth.
    pub(super) async fn sync(&self) -> Result<(), RedisAdapterError> {
        let mut guards = Vec::with_capacity(self.presence.len());
        for shard in &self.presence {
            guards.push(shard.lock().await);
        }
        let pairs: Vec<String> = guards
            .iter()
            .flat_map(|g| g.iter().flat_map(|(user, n)| [user.clone(), n.to_string()]))
            .collect();
        let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
        self.needs_sync.store(false, Ordering::Relaxed);
        let result = self.run::<(Vec<String>, Vec<String>)>(&self.scripts.sync, &args).await;
        drop(guards);
        match result {
            Ok((online, offline)) => {
                self.report(online, offline);
                Ok(())
            }
            Err(e) => {
                self.needs_sync.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_user_always_lands_in_the_same_shard() {
        let mut used = HashSet::new();
        for i in 0..1000 {
            let user = format!("user-{i}");
            let shard = shard_of(&user);
            assert!(shard < PRESENCE_SHARDS);
            assert_eq!(shard_of(&user.clone()), shard, "{user}");
            used.insert(shard);
        }
        // The users spread over every shard.
        assert_eq!(used.len(), PRESENCE_SHARDS);
    }
}
