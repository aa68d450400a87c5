//! The subscriber task: reads this node's channels, and classifies what arrives (ops for the
//! hub, queries to answer, replies to pending queries, malformed messages).

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::StreamExt;
use redis::{aio::PubSub, Client};
use serde_json::Value;
use tokio::sync::watch;

use super::{
    inbound::{Inbound, QueryReply},
    keys::Keys,
    options::RedisAdapterError,
    shared::{timed, Shared},
};
use crate::adapter::wire::{self, Decoded, Op};

/// First pause before subscribing again; doubled on each failure up to the heartbeat interval.
const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);

pub(super) async fn subscribe(client: &Client, keys: &Keys, limit: Duration) -> Result<PubSub, RedisAdapterError> {
    timed(limit, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&[&*keys.all, keys.own.as_str()]).await?;
        Ok(pubsub)
    })
    .await
}

impl Shared {
    /// A message from the subscription.
    pub(super) fn on_message(self: &Arc<Self>, payload: &[u8]) {
        match wire::decode(payload, &self.node) {
            Ok(Decoded::Own) => {}
            Ok(Decoded::Op { from, op }) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                match op {
                    Op::Reply { id, answer, error } => {
                        if let Some(tx) = self.pending.get(&id) {
                            let _ = tx.try_send((from, error.map_or(Ok(answer), Err)));
                        }
                    }
                    Op::Query { id, reply_to, query } => {
                        let reply = QueryReply {
                            shared: self.clone(),
                            id,
                            to: reply_to,
                            done: false,
                        };
                        self.deliver(Inbound::Query { from, query, reply });
                    }
                    op => self.deliver(Inbound::Op { from, op }),
                }
            }
            Ok(Decoded::UnknownQuery { from, id, reply_to }) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn_malformed
                    .warn(&self.node, "query not understood: answered with an error", &from);
                self.reply(&reply_to, id, Value::Null, Some("unknown query".to_owned()));
            }
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn_malformed.warn(&self.node, "message dropped", &e);
            }
        }
    }
}

/// Reads the subscription; when it breaks (or stops answering pings), subscribes again, with
/// a growing pause between attempts.
pub(super) async fn subscriber(shared: Arc<Shared>, first: PubSub, mut stop: watch::Receiver<bool>) {
    let mut next = Some(first);
    let mut delay = RESUBSCRIBE_MIN_DELAY;
    let limit = shared.options.command_timeout;
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match subscribe(&shared.client, &shared.keys, limit).await {
                    Ok(p) => {
                        shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = %shared.node, "redis adapter: subscribed again");
                        delay = RESUBSCRIBE_MIN_DELAY;
                        p
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
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(shared.options.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let why = loop {
            tokio::select! {
                _ = stop.changed() => return,
                message = stream.next() => match message {
                    Some(message) => shared.on_message(message.get_payload_bytes()),
                    None => break "connection closed",
                },
                _ = ping.tick() => {
                    if timed(limit, sink.ping::<()>()).await.is_err() {
                        break "no answer to ping";
                    }
                }
            }
        };
        shared.subscribed.store(false, Ordering::Relaxed);
        shared.warn_link.warn(&shared.node, "subscription lost", &why);
    }
}
