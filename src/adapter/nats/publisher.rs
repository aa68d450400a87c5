//! The publisher task: writes queued ops to core NATS subjects and history emits, sessions
//! and revocations to JetStream, in the order they were queued, and counts what happened.

use std::sync::{atomic::Ordering, Arc};

use tokio::sync::{mpsc, watch};

use super::shared::{Outgoing, Shared};

/// Writes queued ops to NATS until the adapter stops.
pub(super) async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>, mut stop: watch::Receiver<bool>) {
    loop {
        let out = tokio::select! {
            _ = stop.changed() => return,
            out = rx.recv() => match out {
                Some(out) => out,
                None => return,
            },
        };
        shared.send(out).await;
    }
}

impl Shared {
    /// Writes one queued op.
    pub(super) async fn send(&self, out: Outgoing) {
        match out {
            Outgoing::Publish { subject, payload } => {
                let sent =
                    tokio::time::timeout(self.options.command_timeout, self.client.publish(subject, payload)).await;
                match sent {
                    Ok(Ok(())) => {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => self.lose(1, &self.warn_link, "op not published: lost", &e),
                    Err(_) => self.lose(1, &self.warn_link, "op not published in time: lost", &"timeout"),
                }
            }
            Outgoing::Append {
                streams,
                payload,
                params,
            } => match self.append(&streams, payload, &params).await {
                Ok(()) => {
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.lose(1, &self.warn_link, "history emit not kept: lost", &e),
            },
            Outgoing::Session { id, json, ttl } => {
                if let Err(e) = self.keep_session(&id, json, ttl).await {
                    self.warn_link.warn(&self.node, "session not kept", &e);
                }
            }
            Outgoing::Revoke { user, room, ttl } => {
                if let Err(e) = self.revoke(&user, &room, ttl).await {
                    self.warn_link.warn(&self.node, "revocation not kept", &e);
                }
            }
        }
    }
}
