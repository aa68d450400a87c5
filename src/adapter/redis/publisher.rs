//! The publisher task: writes queued ops and commands to Redis in pipelines (on a Redis
//! Cluster, one per slot), and counts what Redis answered.

use std::sync::{atomic::Ordering, Arc};

use redis::cluster_routing::Route;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    conn::timed,
    shared::{Outgoing, Shared},
};

/// Ops written to Redis in one pipeline at most.
const PUBLISH_BATCH: usize = 64;

/// Writes queued ops to Redis, in pipelines of up to [`PUBLISH_BATCH`].
pub(super) async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>, mut stop: watch::Receiver<bool>) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            first = rx.recv() => match first {
                Some(first) => batch.push(first),
                None => return,
            },
        }
        while batch.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if !shared.link_up.load(Ordering::Relaxed) {
            let n = batch.iter().filter(|o| !matches!(o, Outgoing::Command(_))).count() as u64;
            if n > 0 {
                shared.lose(n, &shared.warn_link, "redis unreachable: ops lost", &"link down");
            }
            batch.clear();
            continue;
        }
        let mut groups: Vec<Group> = Vec::new();
        for out in batch.drain(..) {
            let route = shared.route_of(&out);
            let at = match groups.iter().position(|g| g.route == route) {
                Some(at) => at,
                None => {
                    let mut pipe = redis::pipe();
                    // Every command's answer is looked at, an error in one not failing the others.
                    pipe.ignore_errors();
                    let key = match &out {
                        Outgoing::Publish { channel, .. } => Some(channel.clone()),
                        Outgoing::Append(_) | Outgoing::Command(_) => None,
                    };
                    groups.push(Group {
                        route,
                        key,
                        pipe,
                        kinds: Vec::new(),
                        loaded: false,
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[at];
            if matches!(out, Outgoing::Append(_)) && !group.loaded {
                // The append scripts run by their SHA1, in order with everything else: loaded in
                // the same pipeline (on the shard that runs them), they never miss after a
                // restart or a SCRIPT FLUSH.
                group
                    .pipe
                    .cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&shared.history_scripts.append_source)
                    .ignore();
                group.loaded = true;
            }
            group.kinds.push(match out {
                Outgoing::Publish { channel, payload } => {
                    group.pipe.cmd(shared.publish_command()).arg(&*channel).arg(payload);
                    Kind::Op
                }
                Outgoing::Append(cmd) => {
                    group.pipe.add_command(cmd);
                    Kind::Append
                }
                Outgoing::Command(cmd) => {
                    group.pipe.add_command(cmd);
                    Kind::Command
                }
            });
        }
        // One pipeline per slot (one Redis: one in all), in the order queued within each; on a
        // Redis Cluster, the shards are written to at once.
        let limit = shared.options.command_timeout;
        let sent = Instant::now();
        let shared = &shared;
        let writes = groups.into_iter().map(|group| {
            let mut conn = shared.conn();
            async move {
                let mut result = timed(limit, group.pipe.query_async::<Vec<redis::Value>>(&mut conn)).await;
                if result.as_ref().is_ok_and(|answers| answers.iter().any(moved)) {
                    // The slot moved to another shard (a reshard). The client follows a
                    // redirection of a command, not of a pipeline's: one command to the slot
                    // makes it learn the new owner, and the pipeline, of which no keyed
                    // command ran (the old owner has none of the slot), is sent again.
                    let key = group.key.as_deref().unwrap_or(shared.history_keys.meta());
                    let mut learn = redis::cmd("EXISTS");
                    learn.arg(key);
                    if timed(limit, learn.query_async::<redis::Value>(&mut conn)).await.is_ok() {
                        tracing::debug!(node = %shared.node, key, "redis adapter: a slot moved; its pipeline sent again");
                        result = timed(limit, group.pipe.query_async::<Vec<redis::Value>>(&mut conn)).await;
                    }
                }
                (group.kinds, result)
            }
        });
        for (kinds, result) in futures_util::future::join_all(writes).await {
            match result {
                Ok(answers) => {
                    shared.up();
                    shared.answered(&kinds, &answers);
                }
                Err(e) => {
                    let ops = kinds.iter().filter(|k| !matches!(k, Kind::Command)).count();
                    shared.stats.lost.fetch_add(ops as u64, Ordering::Relaxed);
                    shared.down(sent, &e);
                }
            }
        }
    }
}

/// Whether a pipeline's answer says its slot is another shard's now.
fn moved(answer: &redis::Value) -> bool {
    matches!(answer, redis::Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::Moved))
}

/// The ops and commands of a batch that go to one slot.
struct Group {
    route: Option<Route>,
    /// A key of its slot (a channel), or `None` for the history's slot.
    key: Option<Arc<str>>,
    pipe: redis::Pipeline,
    kinds: Vec<Kind>,
    /// The append script is loaded at the start of the pipeline.
    loaded: bool,
}

/// What a command of a publisher's pipeline was.
pub(super) enum Kind {
    Op,
    Append,
    Command,
}

impl Shared {
    /// Counts what Redis answered to a pipeline of the publisher.
    pub(super) fn answered(&self, kinds: &[Kind], answers: &[redis::Value]) {
        let (mut published, mut lost, mut evicted) = (0u64, 0u64, 0u64);
        for (kind, answer) in kinds.iter().zip(answers) {
            let failed = match answer {
                redis::Value::ServerError(e) => Some(e),
                _ => None,
            };
            match (kind, failed) {
                (Kind::Op, None) => published += 1,
                (Kind::Append, None) => {
                    published += 1;
                    if let redis::Value::Int(n) = answer {
                        evicted += u64::try_from(*n).unwrap_or(0);
                    }
                }
                (Kind::Command, None) => {}
                (Kind::Op | Kind::Append, Some(e)) => {
                    lost += 1;
                    self.warn_malformed
                        .warn(&self.node, "redis refused an op: lost", &format!("{e:?}"));
                }
                (Kind::Command, Some(e)) => {
                    self.warn_malformed
                        .warn(&self.node, "redis refused a command", &format!("{e:?}"));
                }
            }
        }
        // Answers missing altogether (none expected): their ops count as lost.
        lost += kinds
            .iter()
            .skip(answers.len())
            .filter(|k| !matches!(k, Kind::Command))
            .count() as u64;
        self.stats.published.fetch_add(published, Ordering::Relaxed);
        self.stats.lost.fetch_add(lost, Ordering::Relaxed);
        if evicted > 0 {
            if let Some(hook) = self.on_evicted.get() {
                hook(evicted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::{super::shared::unconnected, *};

    #[tokio::test]
    async fn what_redis_answered_is_counted_per_command() {
        let (shared, _out, _inbound) = unconnected("a", "p", 8);
        let evicted = Arc::new(AtomicU64::new(0));
        let seen = evicted.clone();
        let _ = shared.on_evicted.set(Box::new(move |n| {
            seen.fetch_add(n, Ordering::Relaxed);
        }));
        let refused = redis::parse_redis_value(b"-ERR refused\r\n").unwrap();
        assert!(matches!(refused, redis::Value::ServerError(_)));
        let kinds = [
            Kind::Op,
            Kind::Append,
            Kind::Op,
            Kind::Command,
            Kind::Command,
            Kind::Op,
            Kind::Append,
            Kind::Command,
        ];
        let answers = [
            redis::Value::Int(1),
            redis::Value::Int(3),
            refused.clone(),
            redis::Value::Okay,
            refused,
            // The last three got no answer at all.
        ];
        shared.answered(&kinds, &answers);
        // Published: the first op and the append; lost: the refused op, and the op and the
        // append with no answer; commands count as neither.
        assert_eq!(shared.stats.published.load(Ordering::Relaxed), 2);
        assert_eq!(shared.stats.lost.load(Ordering::Relaxed), 3);
        assert_eq!(evicted.load(Ordering::Relaxed), 3);
    }
}
