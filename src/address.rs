//! The client address of a request ([`AddressSource`]), and the connections and connect rate
//! counted per address ([`Addresses`]), for the per-address limits of the
//! [admission](crate::connection::admission).
//!
//! The address is, by default, the TCP peer address the server put in the request's
//! extensions as a [`SocketAddr`] ([`Hub::serve`](crate::Hub::serve) does); the builder may
//! take it from a header a trusted proxy sets, or from a function of the request. Addresses
//! count by their *key*: an IPv4 address as it is (an IPv4-mapped IPv6 address as its IPv4
//! address), an IPv6 address by its `/64` prefix, what one host is commonly given.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::{mapref::entry::Entry, DashMap};
use http::{request::Parts, HeaderName};

use crate::config::RateLimit;

/// A function giving a request's client address.
pub(crate) type AddressFn = Arc<dyn Fn(&Parts) -> Option<IpAddr> + Send + Sync>;

/// Where a request's client address is found.
#[derive(Clone, Default)]
pub(crate) enum AddressSource {
    /// The [`SocketAddr`] in the request's extensions, if any.
    #[default]
    Peer,
    /// A function of the request (a trusted proxy's header, say).
    Custom(AddressFn),
}

impl AddressSource {
    /// The last address in the last `name` header: the one the proxy in front of the server
    /// added (`X-Forwarded-For: <client>, <proxy 1>` grows at its end).
    pub(crate) fn header(name: HeaderName) -> Self {
        Self::Custom(Arc::new(move |parts: &Parts| {
            let value = parts.headers.get_all(&name).iter().next_back()?.to_str().ok()?;
            parse(value.rsplit(',').next()?.trim())
        }))
    }

    /// The client address of a request, as the key it counts under.
    pub(crate) fn of(&self, parts: &Parts) -> Option<IpAddr> {
        let ip = match self {
            Self::Peer => parts.extensions.get::<SocketAddr>().map(SocketAddr::ip),
            Self::Custom(f) => f(parts),
        };
        ip.map(key)
    }
}

/// A connection's client address, when known, and whether the connection counts under it
/// (the per-address limits apply to anonymous connections, or to every one with
/// [`address_limits_for_users`](crate::Config::address_limits_for_users)).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientAddr {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) counted: bool,
}

impl ClientAddr {
    /// The address the connection counts under, if it does.
    pub(crate) fn counted_ip(self) -> Option<IpAddr> {
        self.ip.filter(|_| self.counted)
    }
}

/// An address as written in a header: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse(text: &str) -> Option<IpAddr> {
    (text.parse::<IpAddr>().ok()).or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The key an address counts under: IPv4 as it is, IPv6 by its `/64` prefix.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = v6.to_bits() & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from_bits(prefix))
        }
    }
}

/// Connections and new connections per client address.
pub(crate) struct Addresses {
    pub(crate) source: AddressSource,
    /// Connections live or reserved, per address; an entry goes when its count is back to 0.
    counts: DashMap<IpAddr, usize>,
    rate: Option<governor::DefaultKeyedRateLimiter<IpAddr>>,
    /// Rate checks so far, to forget idle addresses now and then.
    checks: AtomicU64,
}

impl Addresses {
    pub(crate) fn new(source: AddressSource, rate: Option<RateLimit>) -> Self {
        Self {
            source,
            counts: DashMap::new(),
            rate: rate.map(|r| governor::RateLimiter::hashmap(r.quota())),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes a token from the address's bucket of new connections. `false`: refuse.
    pub(crate) fn check_rate(&self, addr: IpAddr) -> bool {
        let Some(limiter) = &self.rate else { return true };
        // Forget addresses whose bucket is full again now and then: what stays is the
        // addresses seen within one refill of the bucket, plus at most 1024.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(&addr).is_ok()
    }

    /// Counts a connection of `addr`, unless it has `max` already.
    pub(crate) fn reserve(&self, addr: IpAddr, max: usize) -> bool {
        let mut count = self.counts.entry(addr).or_insert(0);
        if *count >= max {
            let empty = *count == 0;
            drop(count);
            if empty {
                self.counts.remove_if(&addr, |_, n| *n == 0);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// A connection of `addr` counted by [`reserve`](Self::reserve) ended (or never started).
    pub(crate) fn release(&self, addr: Option<IpAddr>) {
        let Some(addr) = addr else { return };
        if let Entry::Occupied(mut e) = self.counts.entry(addr) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Addresses with a connection counted (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_header_gives_its_last_address() {
        let source = AddressSource::header(HeaderName::from_static("x-forwarded-for"));
        let p = parts(http::Request::get("/").header("x-forwarded-for", "6.6.6.6, 10.0.0.1"));
        assert_eq!(source.of(&p), Some("10.0.0.1".parse().unwrap()));
        let p = parts(
            http::Request::get("/")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-for", "[2001:db8::1]:443"),
        );
        assert_eq!(source.of(&p), Some("2001:db8::".parse().unwrap()), "IPv6 by its /64");
        let p = parts(http::Request::get("/").header("x-forwarded-for", "unknown"));
        assert_eq!(source.of(&p), None);
        assert_eq!(source.of(&parts(http::Request::get("/"))), None);
    }

    #[test]
    fn the_peer_address_comes_from_the_extensions() {
        let peer: SocketAddr = "[::ffff:1.2.3.4]:80".parse().unwrap();
        let p = parts(http::Request::get("/").extension(peer));
        assert_eq!(AddressSource::Peer.of(&p), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(AddressSource::Peer.of(&parts(http::Request::get("/"))), None);
    }

    #[test]
    fn counts_are_capped_and_forgotten_at_zero() {
        let addresses = Addresses::new(AddressSource::Peer, None);
        let a: IpAddr = "1.2.3.4".parse().unwrap();
        assert!(addresses.reserve(a, 2));
        assert!(addresses.reserve(a, 2));
        assert!(!addresses.reserve(a, 2));
        assert!(!addresses.reserve("5.6.7.8".parse().unwrap(), 0));
        assert_eq!(
            addresses.tracked(),
            1,
            "a refused address with no connection is not kept"
        );
        addresses.release(Some(a));
        addresses.release(Some(a));
        assert_eq!(addresses.tracked(), 0);
        addresses.release(Some(a));
        assert_eq!(addresses.tracked(), 0);
    }
}
