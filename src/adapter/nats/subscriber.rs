//! The reading tasks: the core subscriber reads this node's subjects (ops for every node, ops
//! and replies for this one; the client subscribes again by itself after a reconnect), and the
//! history reader follows the history stream with an ordered consumer, delivering each event
//! with its epoch and offset, the emitting node's own included.

use std::sync::{atomic::Ordering, Arc};

use async_nats::{
    jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy},
    Subscriber,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{history::is_copy, shared::Shared};
use crate::adapter::{
    engine::Inbound,
    wire::{self, Decoded, Op},
};

/// Reads the core subscriptions until the adapter stops.
pub(super) async fn subscriber(
    shared: Arc<Shared>,
    mut all: Subscriber,
    mut own: Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            message = all.next() => match message {
                Some(message) => shared.on_message(&message.payload),
                None => return,
            },
            message = own.next() => match message {
                Some(message) => shared.on_message(&message.payload),
                None => return,
            },
        }
    }
}

impl Shared {
    /// A kept history emit, from the history stream (`epoch`, at `offset`).
    pub(super) fn on_history(&self, payload: &[u8], epoch: &str, offset: u64) {
        let Some(json) = self.open(payload) else { return };
        match wire::decode(json, &self.node) {
            Ok(Decoded::Op {
                from,
                op:
                    Op::HistoryEmit {
                        ns,
                        targets,
                        except,
                        except_rooms,
                        except_users,
                        event,
                        data,
                        ..
                    },
            }) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                let op = Op::HistoryEmit {
                    epoch: epoch.to_owned(),
                    offset,
                    ns,
                    targets,
                    except,
                    except_rooms,
                    except_users,
                    event,
                    data,
                };
                self.deliver(Inbound::Op { from, op });
            }
            Ok(_) => self.malformed("not a history emit in the history stream: dropped", &offset),
            Err(e) => self.malformed("history message dropped", &e),
        }
    }
}

/// Follows the history stream: from its end when it existed at connect (`start`: its epoch and
/// last offset), from its start when it appears later or is made anew; after a break, from the
/// last event delivered.
pub(super) async fn history_reader(shared: Arc<Shared>, start: Option<(String, u64)>, mut stop: watch::Receiver<bool>) {
    let mut position = start;
    loop {
        let found = shared.history_stream(None).await;
        let (stream, epoch) = match found {
            Ok(Some((stream, info))) => (stream, info.config.description.unwrap_or_default()),
            Ok(None) => {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(shared.options.heartbeat) => {}
                    _ = shared.history_made.notified() => {}
                }
                continue;
            }
            Err(e) => {
                shared.warn_link.warn(&shared.node, "history stream unreachable", &e);
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(shared.options.heartbeat) => {}
                }
                continue;
            }
        };
        let from = match &position {
            Some((known, last)) if *known == epoch => last.saturating_add(1),
            _ => 1,
        };
        let config = OrderedConfig {
            deliver_subject: shared.client.new_inbox(),
            filter_subject: shared.names.history_subjects.clone(),
            deliver_policy: if from <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence { start_sequence: from }
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        };
        let limit = shared.options.command_timeout;
        let messages = match tokio::time::timeout(limit, async {
            let consumer = stream.create_consumer(config).await?;
            consumer.messages().await.map_err(async_nats::Error::from)
        })
        .await
        {
            Ok(Ok(messages)) => messages,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timeout".to_owned(),
                };
                shared.warn_link.warn(&shared.node, "history consumer not made", &why);
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(shared.options.heartbeat) => {}
                }
                continue;
            }
        };
        position = Some((epoch.clone(), from.saturating_sub(1)));
        let mut messages = std::pin::pin!(messages);
        loop {
            let message = tokio::select! {
                _ = stop.changed() => return,
                message = messages.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    shared.warn_link.warn(&shared.node, "history consumer broke", &e);
                    break;
                }
                None => break,
            };
            let Ok(info) = message.info() else {
                shared.malformed("history message without its position: dropped", &"no info");
                continue;
            };
            let offset = info.stream_sequence;
            position = Some((epoch.clone(), offset));
            if !is_copy(message.headers.as_ref()) {
                shared.on_history(&message.payload, &epoch, offset);
            }
        }
    }
}
