//! Presence: this node's users and their live connection counts, kept locally in shards, and
//! in the presence bucket one entry per online user, `{"<node>": <connections>, ...}`, changed
//! only by compare-and-set on the entry's revision (retried on conflict), so that of nodes
//! racing on one user exactly one sees it come online or go offline.

use std::{
    collections::{BTreeMap, HashSet},
    sync::atomic::Ordering,
};

use async_nats::jetstream::{
    context::{PublishError, PublishErrorKind},
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    options::{token, untoken, NatsAdapterError},
    shared::{timed, Shared, PRESENCE_SHARDS},
};

/// Tries of one compare-and-set before giving up (each conflict means another node wrote).
const CAS_TRIES: usize = 64;

/// A user's connections per node, as kept in the presence bucket.
pub(super) type Counts = BTreeMap<String, u32>;

pub(super) fn shard_of(user: &str) -> usize {
    crate::adapter::common::shard_of(user, PRESENCE_SHARDS)
}

/// Reads an entry's value (`None` when it is not counts).
pub(super) fn parse_counts(value: &[u8]) -> Option<Counts> {
    serde_json::from_slice(value).ok()
}

pub(super) fn encode_counts(counts: &Counts) -> Bytes {
    serde_json::to_vec(counts).unwrap_or_default().into()
}

fn total(counts: &Counts) -> u64 {
    counts.values().map(|n| u64::from(*n)).sum()
}

/// An entry as read, for a compare-and-set.
pub(super) struct Read {
    /// The revision to write after (`None`: the key never existed, or expired).
    revision: Option<u64>,
    /// The entry holds counts (not deleted).
    present: bool,
    pub(super) counts: Counts,
}

/// What a compare-and-set did to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shift {
    /// 1: came online cluster-wide, -1: went offline, 0: neither.
    pub(super) change: i64,
    /// Connections of dead nodes were all it had: gone offline before this change.
    pub(super) was_dead: bool,
}

/// The change of a user's presence when `before` (live nodes only) becomes `after`, with
/// `dead` connections of dead nodes taken off.
pub(super) fn shift(before: &Counts, dead: u64, after: &Counts) -> Shift {
    let (before, after) = (total(before), total(after));
    let change = match (before > 0, after > 0) {
        (false, true) => 1,
        (true, false) => -1,
        _ => 0,
    };
    Shift {
        change,
        was_dead: dead > 0 && before == 0,
    }
}

impl Shared {
    /// Reads a user's entry.
    pub(super) async fn read_counts(&self, key: &str) -> Result<Read, NatsAdapterError> {
        let limit = self.options.command_timeout;
        let entry = timed(limit, self.presence.entry(key)).await?;
        Ok(match entry {
            None => Read {
                revision: None,
                present: false,
                counts: Counts::new(),
            },
            Some(entry) if entry.operation != Operation::Put => {
                // A marker left behind (its node failed to remove it, or died first): the
                // upkeep removes it, as the bucket's keys are the online users.
                self.markers.lock().insert(key.to_owned(), entry.revision);
                Read {
                    revision: Some(entry.revision),
                    present: false,
                    counts: Counts::new(),
                }
            }
            Some(entry) => {
                let counts = parse_counts(&entry.value).unwrap_or_else(|| {
                    self.malformed("presence entry not understood: replaced", &key);
                    Counts::new()
                });
                Read {
                    revision: Some(entry.revision),
                    present: true,
                    counts,
                }
            }
        })
    }

    /// Writes `counts` over `read` (deletes the entry when empty); `false` on a conflict.
    pub(super) async fn write_counts(&self, key: &str, read: &Read, counts: &Counts) -> Result<bool, NatsAdapterError> {
        let limit = self.options.command_timeout;
        let store: &kv::Store = &self.presence;
        let written = if counts.is_empty() {
            if !read.present {
                return Ok(true);
            }
            return self.delete_counts(key, read.revision).await;
        } else {
            let value = encode_counts(counts);
            let result = match read.revision {
                Some(revision) => timed(limit, store.update(key, value, revision)).await.map(drop),
                None => timed(limit, store.create(key, value)).await.map(drop),
            };
            match result {
                Ok(()) => true,
                Err(e) => return conflict(e),
            }
        };
        Ok(written)
    }

    /// Deletes a user's entry if it is still at `revision` (`false` on a conflict), then
    /// removes the delete marker and what came before it, and nothing after: the bucket holds
    /// the online users only. A writer that read the marker meanwhile finds nothing at its
    /// revision, reads again and creates the key.
    async fn delete_counts(&self, key: &str, revision: Option<u64>) -> Result<bool, NatsAdapterError> {
        let limit = self.options.command_timeout;
        let store: &kv::Store = &self.presence;
        let subject = format!("{}{key}", store.prefix);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        if let Some(revision) = revision {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                revision.to_string().as_str(),
            );
        }
        let deleted = timed(limit, async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, Bytes::new())
                .await?;
            ack.await
        })
        .await;
        let marker = match deleted {
            Ok(ack) => ack.sequence,
            Err(NatsAdapterError::Nats(e))
                if e.downcast_ref::<PublishError>()
                    .is_some_and(|p| p.kind() == PublishErrorKind::WrongLastSequence) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = self.purge_marker(key, marker).await {
            // A marker left behind: listed as a key until the upkeep removes it (the next
            // write of the key goes over it too).
            self.markers.lock().insert(key.to_owned(), marker);
            self.warn_malformed
                .warn(&self.node, "presence delete marker not removed", &e);
        }
        Ok(true)
    }

    /// Whether `node` has a live entry.
    pub(super) async fn is_live(&self, node: &str) -> Result<bool, NatsAdapterError> {
        let entry = timed(self.options.command_timeout, self.live.entry(node)).await?;
        Ok(entry.is_some_and(|e| e.operation == Operation::Put))
    }

    /// Sets this node's count for `user` in the presence bucket, taking off the connections of
    /// nodes found dead on the way.
    pub(super) async fn set_count(&self, user: &str, count: u32) -> Result<Shift, NatsAdapterError> {
        let key = token(user);
        let known: HashSet<String> = self.live_cache.lock().iter().cloned().collect();
        for _ in 0..CAS_TRIES {
            let read = self.read_counts(&key).await?;
            let mut before = read.counts.clone();
            let mut dead = 0u64;
            for node in read.counts.keys() {
                if *node != self.node && !known.contains(node) && !self.is_live(node).await? {
                    dead += u64::from(before.remove(node).unwrap_or(0));
                }
            }
            let mut after = before.clone();
            if count > 0 {
                after.insert(self.node.clone(), count);
            } else {
                after.remove(&self.node);
            }
            if after == read.counts {
                return Ok(shift(&before, dead, &after));
            }
            if self.write_counts(&key, &read, &after).await? {
                let shift = shift(&before, dead, &after);
                if shift.was_dead {
                    self.report(Vec::new(), vec![user.to_owned()]);
                }
                return Ok(shift);
            }
        }
        Err(NatsAdapterError::Unexpected(format!(
            "presence of a user changed {CAS_TRIES} times while being written"
        )))
    }

    /// Applies +1 / -1 to a user's local count and writes the new count. Returns the
    /// cluster-wide change (1 online, -1 offline, 0 none).
    pub(super) async fn presence_change(&self, user: &str, delta: i32) -> Result<i64, NatsAdapterError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(NatsAdapterError::Unexpected("the adapter was shut down".to_owned()));
        }
        let mut shard = self.local[shard_of(user)].lock().await;
        let Some(count) = crate::adapter::common::local_count(&mut shard, user, delta) else {
            return Ok(0);
        };
        // The shard stays locked until NATS has the new count: per user, counts reach NATS in
        // order, and a sync cannot interleave.
        let result = self.set_count(user, count).await;
        drop(shard);
        match result {
            Ok(shift) => Ok(shift.change),
            Err(e) => {
                self.needs_sync.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The keys of the presence bucket: one per online user (and a delete marker whose
    /// removal failed, until [`purge_markers`](Self::purge_markers) removes it), from one
    /// stream info request. Not from a consumer of the last entry of each key: one made while
    /// another node deletes and purges keys waits for entries that are gone, until the command
    /// timeout.
    pub(super) async fn presence_keys(&self) -> Result<Vec<String>, NatsAdapterError> {
        list_held(&self.presence, self.options.command_timeout).await
    }

    /// Removes the delete markers seen in the presence bucket or left by a failed removal
    /// (each with the entries before it, none after).
    pub(super) async fn purge_markers(&self) -> Result<(), NatsAdapterError> {
        let markers: Vec<(String, u64)> = self.markers.lock().iter().map(|(k, s)| (k.clone(), *s)).collect();
        for (key, marker) in markers {
            self.purge_marker(&key, marker).await?;
            let mut left = self.markers.lock();
            if left.get(&key) == Some(&marker) {
                left.remove(&key);
            }
        }
        Ok(())
    }

    /// Removes the delete marker at sequence `marker` of a user's key, and what came before it.
    async fn purge_marker(&self, key: &str, marker: u64) -> Result<(), NatsAdapterError> {
        let store: &kv::Store = &self.presence;
        let subject = format!("{}{key}", store.prefix);
        let purge = store.stream.purge().filter(subject).sequence(marker.saturating_add(1));
        timed(self.options.command_timeout, async { purge.await }).await?;
        Ok(())
    }

    /// Takes the connections of `dead` nodes off every user; the users left with none are
    /// returned (each by exactly one caller, whichever wrote last).
    pub(super) async fn take_off(&self, dead: &HashSet<String>) -> Result<Vec<String>, NatsAdapterError> {
        let mut offline = Vec::new();
        for key in self.presence_keys().await? {
            for _ in 0..CAS_TRIES {
                let read = self.read_counts(&key).await?;
                if !read.counts.keys().any(|n| dead.contains(n)) {
                    break;
                }
                let mut after = read.counts.clone();
                after.retain(|n, _| !dead.contains(n));
                if self.write_counts(&key, &read, &after).await? {
                    if after.is_empty() {
                        if let Some(user) = untoken(&key) {
                            offline.push(user);
                        }
                    }
                    break;
                }
            }
        }
        Ok(offline)
    }

    /// Replaces this node's counts in the presence bucket with the local truth; with `scan`,
    /// also takes off users it has there but no longer here. Reports the users this brings
    /// online or takes offline.
    pub(super) async fn sync(&self, scan: bool) -> Result<(), NatsAdapterError> {
        let mut guards = Vec::with_capacity(self.local.len());
        for shard in &self.local {
            guards.push(shard.lock().await);
        }
        self.needs_sync.store(false, Ordering::Relaxed);
        let result = async {
            let (mut online, mut offline) = (Vec::new(), Vec::new());
            for guard in &guards {
                for (user, n) in guard.iter() {
                    match self.set_count(user, *n).await?.change {
                        1 => online.push(user.clone()),
                        -1 => offline.push(user.clone()),
                        _ => {}
                    }
                }
            }
            if scan {
                for key in self.presence_keys().await? {
                    let Some(user) = untoken(&key) else { continue };
                    if guards[shard_of(&user)].contains_key(&user) {
                        continue;
                    }
                    if self.read_counts(&key).await?.counts.contains_key(&self.node)
                        && self.set_count(&user, 0).await?.change == -1
                    {
                        offline.push(user);
                    }
                }
            }
            Ok::<_, NatsAdapterError>((online, offline))
        }
        .await;
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

/// Whether a failed write was a conflict (`Ok(false)`) or another failure.
fn conflict(e: NatsAdapterError) -> Result<bool, NatsAdapterError> {
    if let NatsAdapterError::Nats(inner) = &e {
        if let Some(update) = inner.downcast_ref::<kv::UpdateError>() {
            if update.kind() == UpdateErrorKind::WrongLastRevision {
                return Ok(false);
            }
        }
        if let Some(create) = inner.downcast_ref::<kv::CreateError>() {
            if create.kind() == CreateErrorKind::AlreadyExists {
                return Ok(false);
            }
        }
    }
    Err(e)
}

/// The keys of a bucket whose entries are removed whole (expired, or purged with
/// [`forget`]), from one stream info request: no consumer made.
pub(super) async fn list_held(store: &kv::Store, limit: std::time::Duration) -> Result<Vec<String>, NatsAdapterError> {
    timed(limit, async {
        let mut subjects = store.stream.info_with_subjects(format!("{}>", store.prefix)).await?;
        let mut out = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, count) = subject?;
            if let Some(key) = subject.strip_prefix(&store.prefix) {
                if count > 0 {
                    out.push(key.to_owned());
                }
            }
        }
        Ok::<_, async_nats::Error>(out)
    })
    .await
}

/// Removes a key whole (no delete marker left), for [`list_held`].
pub(super) async fn forget(store: &kv::Store, key: &str, limit: std::time::Duration) -> Result<(), NatsAdapterError> {
    let subject = format!("{}{key}", store.prefix);
    timed(limit, async { store.stream.purge().filter(subject).await }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u32)]) -> Counts {
        pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

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
        assert_eq!(used.len(), PRESENCE_SHARDS);
    }

    #[test]
    fn counts_round_trip_and_garbage_is_refused() {
        let c = counts(&[("a", 2), ("b", 1)]);
        let encoded = encode_counts(&c);
        assert_eq!(&encoded[..], br#"{"a":2,"b":1}"#);
        assert_eq!(parse_counts(&encoded), Some(c));
        assert_eq!(parse_counts(b"{}"), Some(Counts::new()));
        for bad in [&b""[..], b"[1]", b"{\"a\":-1}", b"{\"a\":\"x\"}", b"\xff"] {
            assert_eq!(parse_counts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn shifts_are_first_and_last_connections_of_live_nodes() {
        let none = Counts::new();
        let one = counts(&[("a", 1)]);
        let two = counts(&[("a", 1), ("b", 3)]);
        assert_eq!(
            shift(&none, 0, &one),
            Shift {
                change: 1,
                was_dead: false
            }
        );
        assert_eq!(
            shift(&one, 0, &two),
            Shift {
                change: 0,
                was_dead: false
            }
        );
        assert_eq!(
            shift(&two, 0, &one),
            Shift {
                change: 0,
                was_dead: false
            }
        );
        assert_eq!(
            shift(&one, 0, &none),
            Shift {
                change: -1,
                was_dead: false
            }
        );
        // A dead node's connections were all the user had: offline first, then online.
        assert_eq!(
            shift(&none, 2, &one),
            Shift {
                change: 1,
                was_dead: true
            }
        );
        // Along with a live node's, they were not all it had.
        assert_eq!(
            shift(&one, 2, &two),
            Shift {
                change: 0,
                was_dead: false
            }
        );
    }
}
