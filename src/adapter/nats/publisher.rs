//! The publisher task: writes queued ops to core NATS subjects and history emits, sessions
//! and revocations to JetStream, in the order they were queued, and counts what happened.

use std::sync::{atomic::Ordering, Arc};

use futures_util::{stream::FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{
    history::Appending,
    shared::{Outgoing, Shared},
};

/// History emits written to JetStream and not yet acknowledged, at most. Waiting for each
/// acknowledgement before writing the next would hold a node to one history emit per round
/// trip to the server; they are written in order (the stream keeps that order) and their
/// acknowledgements read as they come.
const APPEND_WINDOW: usize = 256;

/// Writes queued ops to NATS until the adapter stops.
pub(super) async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>, mut stop: watch::Receiver<bool>) {
    let mut appending = FuturesOrdered::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(()) = appending.next(), if !appending.is_empty() => {}
            out = rx.recv(), if appending.len() < APPEND_WINDOW => match out {
                Some(Outgoing::Append { streams, payload, params }) => {
                    match shared.start_append(&streams, payload, &params).await {
                        Ok(started) => {
                            let shared = shared.clone();
                            appending.push_back(Box::pin(async move { shared.count_kept(started).await }));
                        }
                        Err(e) => shared.lose(1, &shared.warn_link, "history emit not kept: lost", &e),
                    }
                }
                Some(out @ Outgoing::Publish { .. }) => shared.send(out).await,
                // Sessions and revocations are written after the history emits before them.
                Some(out) => {
                    while appending.next().await.is_some() {}
                    shared.send(out).await;
                }
                None => {
                    while appending.next().await.is_some() {}
                    return;
                }
            },
        }
    }
}

impl Shared {
    /// Waits until a history emit is kept, and counts it published or lost.
    async fn count_kept(&self, started: Appending) {
        match self.kept(started).await {
            Ok(()) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.lose(1, &self.warn_link, "history emit not kept: lost", &e),
        }
    }

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
            } => match self.start_append(&streams, payload, &params).await {
                Ok(started) => self.count_kept(started).await,
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
