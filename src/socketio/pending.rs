//! Engine.IO sessions that have not connected a namespace yet: their caps (in all, per client
//! address, and their place under `max_connections`) and their connect timeout.
//!
//! A session takes a [`Place`] at its handshake and keeps it until its first namespace CONNECT
//! is let in (the connection then counts under `max_connections` in its stead) or it ends.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use dashmap::{mapref::entry::Entry, DashMap};
use tokio::task::AbortHandle;

use crate::{connection::admission::Refusal, hub::Hub};

/// The sessions of a hub that have not connected a namespace yet.
#[derive(Default)]
pub(crate) struct Pending {
    total: AtomicUsize,
    by_address: DashMap<IpAddr, usize>,
}

/// A session's place among those that have not connected a namespace; given back when
/// dropped, which also stops its connect timeout.
pub(crate) struct Place {
    hub: Hub,
    address: Option<IpAddr>,
    timer: Option<AbortHandle>,
}

impl Place {
    /// Takes a place for a new session from `address`, or says which cap is reached:
    /// `max_pending_sessions`, or `max_connections` with the live connections
    /// ([`Refusal::HubFull`], `503`); `max_pending_sessions_per_address`
    /// ([`Refusal::AddressSessions`], `429`).
    pub(crate) fn take(hub: &Hub, address: Option<IpAddr>) -> Result<Self, Refusal> {
        let Some(sio) = hub.socketio() else {
            return Err(Refusal::HubFull);
        };
        let (cfg, pending) = (&sio.config, &sio.pending);
        let before = pending.total.fetch_add(1, Ordering::AcqRel);
        // A session counts as a connection from its handshake on.
        let connections = hub.inner.slots.count();
        if before >= cfg.max_pending_sessions || before + connections >= hub.inner.config.max_connections {
            pending.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::HubFull);
        }
        if let Some(address) = address {
            let mut count = pending.by_address.entry(address).or_default();
            if *count >= cfg.max_pending_sessions_per_address {
                drop(count);
                pending.total.fetch_sub(1, Ordering::AcqRel);
                // An entry made for this refusal alone is not kept.
                pending.by_address.remove_if(&address, |_, n| *n == 0);
                return Err(Refusal::AddressSessions);
            }
            *count += 1;
        }
        Ok(Self {
            hub: hub.clone(),
            address,
            timer: None,
        })
    }

    /// Starts the connect timeout: `expire` closes the session when it has connected no
    /// namespace by then (that is, when this place is still held).
    pub(crate) fn arm(&mut self, timeout: Duration, expire: impl FnOnce() + Send + 'static) {
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            expire();
        });
        self.timer = Some(timer.abort_handle());
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        let Some(sio) = self.hub.socketio() else { return };
        sio.pending.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(address) = self.address {
            if let Entry::Occupied(mut e) = sio.pending.by_address.entry(address) {
                *e.get_mut() = e.get().saturating_sub(1);
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
}
