//! The subscriber task: reads this node's channels, and classifies what arrives (ops for the
//! hub, queries to answer, replies to pending queries, malformed messages). On one Redis, a
//! pub/sub connection of its own; on a Redis Cluster, a cluster connection (RESP3) subscribed
//! to shard channels, whose messages come as pushes. A subscription that breaks, or that
//! fails its check, is replaced by a new one.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use dashmap::DashMap;
use futures_util::StreamExt;
use redis::{aio::PubSub, cluster_async::ClusterConnection, PushInfo, PushKind};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    conn::{ping_primaries, timed, Subscription},
    shared::{ReplyTx, Shared},
};
use crate::adapter::{common, engine::Inbound, wire::Signer};

/// First pause before subscribing again; doubled on each failure up to the heartbeat interval.
const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);

/// How a probe of a Redis Cluster subscription starts: never the start of an op (those are
/// JSON), so no node takes one for an op.
const PROBE: &[u8] = b"\0probe ";

impl Shared {
    /// A message from the subscription.
    pub(super) fn on_message(self: &Arc<Self>, payload: &[u8]) {
        common::on_message(self, payload);
    }
}

impl common::Node for Shared {
    fn node(&self) -> &str {
        &self.node
    }

    fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    fn pending(&self) -> &DashMap<u64, ReplyTx> {
        &self.pending
    }

    fn counters(&self) -> &common::Counters {
        &self.stats
    }

    fn warn(&self, trouble: common::Trouble, what: &str, error: &dyn std::fmt::Display) {
        let warn = match trouble {
            common::Trouble::Unauthenticated => &self.warn_unauthenticated,
            common::Trouble::Malformed => &self.warn_malformed,
        };
        warn.warn(&self.node, what, error);
    }

    fn deliver(&self, message: Inbound) {
        Shared::deliver(self, message);
    }

    fn history_emits_on_the_bus(&self) -> bool {
        true
    }
}

/// Reads the subscription; when it breaks (or fails its check), makes a new one, with a
/// growing pause between attempts. Whatever was published meanwhile is missed: the hub finds
/// the history emits missed from their offsets, and reads them back.
pub(super) async fn subscriber(shared: Arc<Shared>, first: Subscription, mut stop: watch::Receiver<bool>) {
    let mut next = Some(first);
    let mut delay = RESUBSCRIBE_MIN_DELAY;
    let limit = shared.options.command_timeout;
    loop {
        let subscription = match next.take() {
            Some(s) => s,
            None => {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match shared.connector.subscribe(&shared.keys, limit).await {
                    Ok(s) => {
                        shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = %shared.node, "redis adapter: subscribed again");
                        delay = RESUBSCRIBE_MIN_DELAY;
                        s
                    }
                    Err(e) => {
                        shared.warn_link.warn(&shared.node, "could not subscribe", &e);
                        delay = (delay * 2).min(shared.options.heartbeat);
                        continue;
                    }
                }
            }
        };
        shared.subscribed.store(true, Ordering::Relaxed);
        let lost = match subscription {
            Subscription::Single(pubsub) => read(&shared, pubsub, &mut stop).await,
            Subscription::Cluster { conn, pushes } => read_shards(&shared, conn, pushes, &mut stop).await,
        };
        let Some(why) = lost else { return };
        shared.subscribed.store(false, Ordering::Relaxed);
        shared.warn_link.warn(&shared.node, "subscription lost", &why);
    }
}

/// Reads a pub/sub connection of one Redis, pinging it each heartbeat, until it breaks or
/// does not answer within `command_timeout` (why), or the adapter stops (`None`).
async fn read(shared: &Arc<Shared>, pubsub: PubSub, stop: &mut watch::Receiver<bool>) -> Option<&'static str> {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(shared.options.heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            message = stream.next() => match message {
                Some(message) => shared.on_message(message.get_payload_bytes()),
                None => return Some("connection closed"),
            },
            _ = ping.tick() => {
                if timed(shared.options.command_timeout, sink.ping::<()>()).await.is_err() {
                    return Some("no answer to ping");
                }
            }
        }
    }
}

/// Reads the shard channels of a Redis Cluster until a shard's connection closes or the
/// subscription fails its check (why), or the adapter stops (`None`). Each heartbeat, every
/// primary is pinged, and a probe is published on this node's own channel (no other node
/// listens to it): both within `command_timeout`, and the probe must come back within
/// `command_timeout` too. The client library reconnects to a shard and subscribes there again
/// by itself, but now and then never gets there, or gets there and nothing arrives any more:
/// this finds it out, whatever the cause.
async fn read_shards(
    shared: &Arc<Shared>,
    conn: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    stop: &mut watch::Receiver<bool>,
) -> Option<&'static str> {
    let limit = shared.options.command_timeout;
    let own = shared.keys.node_channel(&shared.node);
    let mut ping = tokio::time::interval(shared.options.heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut probes = 0u64;
    // The probe on its way, and when it must be back by.
    let mut probe: Option<(Vec<u8>, Instant)> = None;
    loop {
        let due = probe.as_ref().map(|(_, due)| *due);
        tokio::select! {
            _ = stop.changed() => return None,
            push = pushes.recv() => match push.map(|push| shared.on_push(push)) {
                None => return Some("connection closed"),
                Some(Heard::Lost) => return Some("a shard connection closed"),
                Some(Heard::Probe(back)) => {
                    if probe.as_ref().is_some_and(|(sent, _)| *sent == back) {
                        probe = None;
                    }
                }
                Some(Heard::Other) => {}
            },
            _ = async { tokio::time::sleep_until(due?).await; Some(()) }, if due.is_some() => {
                return Some("its probe did not come back");
            }
            _ = ping.tick() => {
                let mut c = conn.clone();
                let token = probe.is_none().then(|| {
                    probes += 1;
                    [PROBE, format!("{} {probes}", shared.node).as_bytes()].concat()
                });
                let check = async {
                    ping_primaries(&c).await?;
                    if let Some(token) = &token {
                        redis::cmd("SPUBLISH").arg(&*own).arg(token).exec_async(&mut c).await?;
                    }
                    Ok(())
                };
                if timed(limit, check).await.is_err() {
                    return Some("no answer to ping");
                }
                if let Some(token) = token {
                    probe = Some((token, Instant::now() + limit));
                }
            }
        }
    }
}

/// What a push of a Redis Cluster subscription was, besides a message (handed on).
#[derive(Debug, PartialEq)]
enum Heard {
    /// A probe came back.
    Probe(Vec<u8>),
    /// A shard's connection closed: whatever it had subscribed to is lost.
    Lost,
    Other,
}

impl Shared {
    /// A push of the cluster's subscription connection.
    fn on_push(self: &Arc<Self>, push: PushInfo) -> Heard {
        match push.kind {
            PushKind::SMessage | PushKind::Message => match &push.data[..] {
                [_, redis::Value::BulkString(payload)] if payload.starts_with(PROBE) => Heard::Probe(payload.clone()),
                [_, redis::Value::BulkString(payload)] => {
                    self.on_message(payload);
                    Heard::Other
                }
                _ => Heard::Other,
            },
            PushKind::Disconnection => Heard::Lost,
            // The node never unsubscribes while it runs: the server did, as a slot of one of
            // its channels moved to another shard (a reshard). The subscription is made again.
            PushKind::SUnsubscribe => Heard::Lost,
            _ => Heard::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tokio::sync::mpsc;

    use super::{
        super::shared::{unconnected, unconnected_with, Outgoing},
        *,
    };
    use crate::adapter::{
        wire::{self, Decoded, Op, Query},
        RedisOptions, Target,
    };

    fn from(node: &str, op: &Op) -> Vec<u8> {
        wire::encode(node, op).unwrap()
    }

    fn join(conn: u64) -> Op {
        Op::Join { conn, room: "r".into() }
    }

    /// The next op queued for Redis: its channel, sender and op.
    fn sent(out: &mut mpsc::Receiver<Outgoing>) -> (String, String, Op) {
        let Ok(Outgoing::Publish { channel, payload }) = out.try_recv() else {
            panic!("a publish was expected");
        };
        match wire::decode(&payload, "someone else").unwrap() {
            Decoded::Op { from, op } => (channel.to_string(), from, op),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn count(shared: &Shared) -> (u64, u64, u64) {
        let s = &shared.stats;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        (load(&s.received), load(&s.malformed), load(&s.dropped))
    }

    #[tokio::test]
    async fn own_ops_are_ignored_except_history_emits_and_others_reach_the_hub() {
        let (shared, mut out, mut inbound) = unconnected("a", "p", 8);
        shared.on_message(&from("a", &join(1)));
        assert!(inbound.try_recv().is_err());
        assert_eq!(count(&shared), (0, 0, 0));

        shared.on_message(&from("b", &join(2)));
        match inbound.try_recv() {
            Ok(Inbound::Op {
                from,
                op: Op::Join { conn, room },
            }) => assert_eq!((from.as_str(), conn, room.as_str()), ("b", 2, "r")),
            other => panic!("unexpected {other:?}"),
        }

        let history = Op::HistoryEmit {
            epoch: "e".into(),
            offset: 5,
            ns: "/".into(),
            targets: vec![Target::All],
            except: vec![],
            except_rooms: vec![],
            except_users: vec![],
            event: "m".into(),
            data: serde_json::value::to_raw_value(&1).unwrap(),
        };
        shared.on_message(&from("a", &history));
        match inbound.try_recv() {
            Ok(Inbound::Op {
                from,
                op: Op::HistoryEmit { offset, .. },
            }) => assert_eq!((from.as_str(), offset), ("a", 5)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(count(&shared), (2, 0, 0));
        assert!(out.try_recv().is_err());
    }

    #[tokio::test]
    async fn malformed_messages_are_counted_and_dropped() {
        let (shared, mut out, mut inbound) = unconnected("a", "p", 8);
        let bad: [&[u8]; 7] = [
            b"",
            b"not json",
            b"\xff\xfe",
            br#"{"v":2,"node":"b","op":{"join":{"conn":1,"room":"r"}}}"#,
            br#"{"v":1,"node":"b","op":{"teleport":{}}}"#,
            br#"{"v":1,"node":"b","op":{"join":{"conn":"one","room":"r"}}}"#,
            br#"{"v":1,"op":{"join":{"conn":1,"room":"r"}}}"#,
        ];
        for payload in bad {
            shared.on_message(payload);
        }
        assert_eq!(count(&shared), (0, bad.len() as u64, 0));
        assert!(inbound.try_recv().is_err());
        assert!(out.try_recv().is_err());
    }

    #[tokio::test]
    async fn replies_go_to_the_pending_query_of_their_id() {
        let (shared, _out, mut inbound) = unconnected("a", "p", 8);
        let (tx7, mut rx7) = mpsc::channel(4);
        let (tx8, mut rx8) = mpsc::channel(4);
        shared.pending.insert(7, tx7);
        shared.pending.insert(8, tx8);
        let reply = |id, answer, error: Option<&str>| Op::Reply {
            id,
            answer,
            error: error.map(str::to_owned),
        };
        shared.on_message(&from("b", &reply(7, json!([1, 2]), None)));
        shared.on_message(&from("c", &reply(7, Value::Null, Some("boom"))));
        shared.on_message(&from("b", &reply(99, json!(0), None)));
        assert_eq!(rx7.try_recv().unwrap(), ("b".to_owned(), Ok(json!([1, 2]))));
        assert_eq!(rx7.try_recv().unwrap(), ("c".to_owned(), Err("boom".to_owned())));
        assert!(rx7.try_recv().is_err());
        assert!(rx8.try_recv().is_err());
        // Replies are the adapter's business, not the hub's.
        assert!(inbound.try_recv().is_err());
        assert_eq!(count(&shared), (3, 0, 0));
    }

    #[tokio::test]
    async fn queries_reach_the_hub_with_a_way_back_to_the_asker() {
        let (shared, mut out, mut inbound) = unconnected("a", "p", 8);
        let query = |id| Op::Query {
            id,
            reply_to: "b".into(),
            query: Query::RoomsOf { conn: 1 },
        };
        shared.on_message(&from("b", &query(4)));
        shared.on_message(&from("b", &query(5)));
        let mut replies = Vec::new();
        for _ in 0..2 {
            match inbound.try_recv() {
                Ok(Inbound::Query {
                    from,
                    query: Query::RoomsOf { conn: 1 },
                    reply,
                }) => {
                    assert_eq!((from.as_str(), reply.to()), ("b", "b"));
                    replies.push(reply);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let unanswered = replies.pop().unwrap();
        let answered = replies.pop().unwrap();
        assert_eq!((answered.id(), unanswered.id()), (4, 5));

        assert!(answered.send(json!(["r"])));
        let (channel, sender, op) = sent(&mut out);
        assert_eq!((channel.as_str(), sender.as_str()), ("p#node#b", "a"));
        assert!(matches!(op, Op::Reply { id: 4, answer, error: None } if answer == json!(["r"])));

        drop(unanswered);
        let (channel, _, op) = sent(&mut out);
        assert_eq!(channel, "p#node#b");
        assert!(matches!(op, Op::Reply { id: 5, answer: Value::Null, error: Some(e) } if e == "not answered"));
        assert!(out.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_query_not_understood_is_answered_with_an_error() {
        let (shared, mut out, mut inbound) = unconnected("a", "p", 8);
        shared.on_message(br#"{"v":1,"node":"b","op":{"query":{"id":9,"reply_to":"b","query":{"weather":{}}}}}"#);
        assert!(inbound.try_recv().is_err());
        assert_eq!(count(&shared), (0, 1, 0));
        let (channel, sender, op) = sent(&mut out);
        assert_eq!((channel.as_str(), sender.as_str()), ("p#node#b", "a"));
        assert!(matches!(op, Op::Reply { id: 9, answer: Value::Null, error: Some(e) } if e == "unknown query"));
    }

    #[tokio::test]
    async fn messages_past_a_full_inbound_queue_are_dropped_and_counted() {
        let (shared, _out, mut inbound) = unconnected("a", "p", 1);
        shared.on_message(&from("b", &join(1)));
        shared.on_message(&from("b", &join(2)));
        assert_eq!(count(&shared), (2, 0, 1));
        assert!(matches!(
            inbound.try_recv(),
            Ok(Inbound::Op {
                op: Op::Join { conn: 1, .. },
                ..
            })
        ));
        assert!(inbound.try_recv().is_err());
    }

    #[tokio::test]
    async fn cluster_pushes_carry_messages_probes_and_closed_shards() {
        let (shared, _out, mut inbound) = unconnected("a", "p", 8);
        let bulk = |b: &[u8]| redis::Value::BulkString(b.to_vec());
        let heard = shared.on_push(PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk(b"{p:b:3}"), bulk(&from("b", &join(1)))],
        });
        assert_eq!(heard, Heard::Other);
        assert!(matches!(
            inbound.try_recv(),
            Ok(Inbound::Op {
                op: Op::Join { conn: 1, .. },
                ..
            })
        ));
        // Confirmations and other pushes are not messages.
        shared.on_push(PushInfo {
            kind: PushKind::SSubscribe,
            data: vec![bulk(b"{p:b:3}"), redis::Value::Int(1)],
        });
        assert!(inbound.try_recv().is_err());
        assert_eq!(count(&shared), (1, 0, 0));
        // A probe is the subscriber's, never the hub's, nor counted as malformed.
        let probe = [PROBE, b"a 1"].concat();
        let heard = shared.on_push(PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk(b"{p:n:a}"), bulk(&probe)],
        });
        assert_eq!(heard, Heard::Probe(probe));
        assert!(inbound.try_recv().is_err());
        assert_eq!(count(&shared), (1, 0, 0));
        let heard = shared.on_push(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert_eq!(heard, Heard::Lost);
    }

    fn signed(node: &str, key: u8) -> (Arc<Shared>, mpsc::Receiver<Outgoing>, mpsc::Receiver<Inbound>) {
        unconnected_with(
            RedisOptions {
                prefix: "p".into(),
                node_id: Some(node.into()),
                ..RedisOptions::default()
            }
            .sign_with([key; 32]),
        )
    }

    fn unauthenticated(shared: &Shared) -> u64 {
        shared.stats.unauthenticated.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn with_a_key_ops_go_out_signed_and_only_signed_ops_come_in() {
        let (a, mut out_a, _) = signed("a", 1);
        let (b, _, mut inbound_b) = signed("b", 1);
        let (c, _, mut inbound_c) = signed("c", 2);
        let (plain, _, mut inbound_plain) = unconnected("d", "p", 8);

        assert!(a.enqueue(a.keys.all.clone(), &join(1)));
        let Ok(Outgoing::Publish { payload, .. }) = out_a.try_recv() else {
            panic!("a publish was expected");
        };
        // The same key: delivered; another key, none, or a forged message: dropped, counted.
        b.on_message(&payload);
        assert!(matches!(
            inbound_b.try_recv(),
            Ok(Inbound::Op {
                op: Op::Join { conn: 1, .. },
                ..
            })
        ));
        c.on_message(&payload);
        assert!(inbound_c.try_recv().is_err());
        assert_eq!((count(&c), unauthenticated(&c)), ((0, 0, 0), 1));
        b.on_message(&from("x", &join(2)));
        assert!(inbound_b.try_recv().is_err());
        assert_eq!((count(&b), unauthenticated(&b)), ((1, 0, 0), 1));
        // A node without a key cannot read signed messages: they are malformed to it.
        plain.on_message(&payload);
        assert!(inbound_plain.try_recv().is_err());
        assert_eq!((count(&plain), unauthenticated(&plain)), ((0, 1, 0), 0));
        // Its own signed echo is ignored, as without a key.
        a.on_message(&payload);
        assert_eq!((count(&a), unauthenticated(&a)), ((0, 0, 0), 0));
    }
}
