//! The hub's limits and timeouts ([`Config`]), the slow consumer policy and rate limits.

use std::time::Duration;

use std::num::NonZeroU32;

use governor::Quota;

/// What happens when a connection's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close the connection with code `1013` ("slow consumer"). The default.
    #[default]
    Close,
    /// Drop the message for that connection only, and count the drop.
    DropMessage,
}

/// The body of a native client's error event ([`Config::error_style`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorStyle {
    /// `{"status": …, "message": …}` plus the error's extra fields (for example `"code"`,
    /// `"errors"`), the status as the [`ErrorEvent`](crate::ErrorEvent) says. The default.
    #[default]
    Detailed,
    /// NestJS's `{"status": "error", "message": …}`, as its `BaseWsExceptionFilter` sends: the
    /// status is always `"error"` and extra fields are left out.
    NestJs,
}

/// Limits and timeouts of a [`Hub`](crate::Hub), each with its default.
///
/// | setting | default | what happens past it |
/// |---|---|---|
/// | [`max_message_size`](Config::max_message_size) | 64 KiB | close `1009` (message too big): one frame, or the fragments of one message together; a frame announcing more is refused on its header |
/// | [`outbound_queue`](Config::outbound_queue) | 1024 messages | the [`SlowConsumerPolicy`] applies (default: close `1013`) |
/// | [`read_buffer_size`](Config::read_buffer_size) | 2 KiB | (the size of one read, not a limit: larger messages are read in several) |
/// | [`ping_interval`](Config::ping_interval) | 25 s | a ping is sent after this long |
/// | [`ping_timeout`](Config::ping_timeout) | 20 s | no frame from the peer, or a write to it blocked, for `ping_interval + ping_timeout`: close `4001` |
/// | [`max_rooms_per_connection`](Config::max_rooms_per_connection) | 100 | `error` event, the join does not happen |
/// | [`max_room_name_len`](Config::max_room_name_len) | 128 bytes | `error` event, the join does not happen |
/// | [`max_event_name_len`](Config::max_event_name_len) | 128 bytes | `error` event, the event does not run |
/// | [`max_attachments`](Config::max_attachments) | 10 | native protocol: `error` event, the event does not run and its binary frames are skipped (Socket.IO: `SocketIoConfig::max_attachments`) |
/// | [`max_connections_per_user`](Config::max_connections_per_user) | 16 | HTTP `429` at the handshake |
/// | [`max_connections`](Config::max_connections) | 100,000 | HTTP `503` at the handshake |
/// | [`max_dynamic_namespaces`](Config::max_dynamic_namespaces) | 10,000 | a connection to a new [dynamic namespace](crate::HubBuilder::dynamic_namespace) is refused as one to an unknown namespace: the request goes on to the inner service (usually a `404`), `CONNECT_ERROR` "Invalid namespace" for Socket.IO |
/// | [`connect_rate_per_user`](Config::connect_rate_per_user) | 10/s, bursts of 30 | HTTP `429` at the handshake |
/// | [`max_connections_per_address`](Config::max_connections_per_address) | 64 | HTTP `429` at the handshake, `CONNECT_ERROR` for Socket.IO (anonymous connections; authenticated ones too with [`address_limits_for_users`](Config::address_limits_for_users)) |
/// | [`connect_rate_per_address`](Config::connect_rate_per_address) | 10/s, bursts of 30 | HTTP `429` at the handshake, `CONNECT_ERROR` for Socket.IO (as above) |
/// | [`rate_limit_flood_threshold`](Config::rate_limit_flood_threshold) | 20 refused events in a row | close `1008` (a namespace or event [rate limit](crate::RateLimit) must be set) |
/// | [`write_batch`](Config::write_batch) | 256 messages | (messages written before one flush) |
/// | [`shutdown_timeout`](Config::shutdown_timeout) | 10 s | [`Hub::shutdown`](crate::Hub::shutdown) stops waiting; also bounds each connection's delivery of its queue before `1001` |
/// | [`shutdown_batch`](Config::shutdown_batch) | 500 connections | connections closed per step of a shutdown |
/// | [`shutdown_batch_interval`](Config::shutdown_batch_interval) | 50 ms | pause between two shutdown steps |
/// | [`token_expiry_warning`](Config::token_expiry_warning) | 30 s | a `token_expiring` event this long before a connection's [identity expires](crate::Identity::expires_at) (`None`: no warning) |
/// | [`close_on_token_expiry`](Config::close_on_token_expiry) | `true` | an identity's expiry passed without a `$refresh`: an `error` event (status `token_expired`), then close `4003` (Socket.IO: a `DISCONNECT` of the namespace) |
/// | [`compression`](Config::compression) | `None` (off) | permessage-deflate for the clients that offer it ([`Compression`]) |
/// | [`header_read_timeout`](Config::header_read_timeout) | 10 s | [`Hub::serve`](crate::Hub::serve) only: a request head not complete by then (a slow-loris client) closes its TCP connection |
///
/// The per-address limits apply where the client address is known: the TCP peer address
/// when the server puts it in the request's extensions as a `SocketAddr`
/// ([`Hub::serve`](crate::Hub::serve) does), or what
/// [`HubBuilder::client_address_from_header`](crate::HubBuilder::client_address_from_header)
/// or [`HubBuilder::client_address`](crate::HubBuilder::client_address) give. Without a known
/// address they do not apply. IPv6 addresses count by their `/64` prefix.
///
/// Fixed: JSON nested deeper than 128 levels is refused with an `error` event (serde_json's
/// recursion limit), never a stack overflow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest inbound message (after reassembling fragments), in bytes.
    pub max_message_size: usize,
    /// Capacity of each connection's outbound queue, in messages.
    pub outbound_queue: usize,
    /// What to do when a connection's outbound queue is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// How much one read from a connection asks for, in bytes. Connections read into a buffer
    /// shared by the thread they run on, so this costs no memory per connection.
    pub read_buffer_size: usize,
    /// Interval between server pings.
    ///
    /// The heartbeat is looked at by one clock for every connection, not a timer in each: a
    /// ping goes out, and a silent peer is closed, at its time or up to a thirty-second part
    /// of the wait later (at most 250 ms), never earlier.
    pub ping_interval: Duration,
    /// How long past a ping interval a silent peer is kept.
    pub ping_timeout: Duration,
    /// Most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// Longest room name, in bytes.
    pub max_room_name_len: usize,
    /// Longest event name, in bytes.
    pub max_event_name_len: usize,
    /// Most binary attachments on one native message (its text frame and its binary frames
    /// together are bounded by [`max_message_size`](Self::max_message_size)).
    pub max_attachments: usize,
    /// Most simultaneous connections of one user.
    pub max_connections_per_user: usize,
    /// Most simultaneous connections on this hub.
    pub max_connections: usize,
    /// Most [dynamic namespaces](crate::HubBuilder::dynamic_namespace) at a time (one
    /// exists from its first connection until its last one has left).
    pub max_dynamic_namespaces: usize,
    /// New connections per user: a token bucket (`None`: no limit).
    pub connect_rate_per_user: Option<RateLimit>,
    /// Most simultaneous anonymous connections from one client address (all of them with
    /// [`address_limits_for_users`](Self::address_limits_for_users)).
    pub max_connections_per_address: usize,
    /// New anonymous connections per client address (all of them with
    /// [`address_limits_for_users`](Self::address_limits_for_users)): a token bucket
    /// (`None`: no limit).
    pub connect_rate_per_address: Option<RateLimit>,
    /// Whether the per-address limits also count authenticated connections (default `false`:
    /// those have the per-user limits).
    pub address_limits_for_users: bool,
    /// Rate-limited events refused in a row before the connection is closed with `1008`
    /// (0: never close).
    pub rate_limit_flood_threshold: u32,
    /// Most queued messages written to a socket before one flush.
    pub write_batch: usize,
    /// How long [`Hub::shutdown`](crate::Hub::shutdown) waits for connections to end.
    pub shutdown_timeout: Duration,
    /// How many connections a shutdown closes at a time.
    pub shutdown_batch: usize,
    /// Pause between two batches of a shutdown.
    pub shutdown_batch_interval: Duration,
    /// How long [`Hub::serve`](crate::Hub::serve) waits for a request's head (request line
    /// and headers) before it closes the connection. An app that serves the hub with its own
    /// server sets its own (hyper: `http1::Builder::header_read_timeout`, with a timer).
    pub header_read_timeout: Duration,
    /// How long before a connection's [identity expires](crate::Identity::expires_at) it gets
    /// a `token_expiring` event (`None`: no warning). The client answers with `$refresh` and a
    /// new token.
    pub token_expiry_warning: Option<Duration>,
    /// Whether a connection is closed when its identity expires without a refresh (code
    /// `4003`; an `error` event with status `token_expired` goes first either way). Only
    /// identities with an expiry have one ([`JwtAuth`](crate::JwtAuth) sets it from `exp`).
    pub close_on_token_expiry: bool,
    /// The name of the error event a native client gets (default `"error"`; NestJS's
    /// `@nestjs/platform-ws` clients listen for `"exception"`). Socket.IO clients always get
    /// `error`.
    pub error_event: String,
    /// The body of a native client's error event (default [`ErrorStyle::Detailed`]).
    pub error_style: ErrorStyle,
    /// permessage-deflate (RFC 7692) for clients that offer it, on the native WebSocket and
    /// Socket.IO's WebSocket transport (default `None`: off; see [`Compression`]).
    pub compression: Option<Compression>,
}

/// permessage-deflate (RFC 7692) settings: [`HubBuilder::compression`](crate::HubBuilder::compression).
///
/// | setting | default | what it does |
/// |---|---|---|
/// | [`threshold`](Compression::threshold) | 256 bytes | messages shorter go uncompressed (so does one that compressing would not make smaller) |
/// | [`level`](Compression::level) | 1 | zlib's level, 0 (none) to 9 (smallest, slowest) |
/// | [`max_window_bits`](Compression::max_window_bits) | 15 | the server's window, 9 to 15 (a client may ask for less) |
/// | [`client_max_window_bits`](Compression::client_max_window_bits) | 15 | the window asked of clients that accept a limit, 9 to 15 |
/// | [`client_context_takeover`](Compression::client_context_takeover) | `false` | whether clients may keep their context from one message to the next |
///
/// The server never keeps its context (it answers `server_no_context_takeover`): a message
/// is compressed on its own, once per emit for every recipient with the same window, and no
/// connection holds a compressor. Unless [`client_context_takeover`](Compression::client_context_takeover)
/// is set, clients are asked for the same (`client_no_context_takeover`) and no connection
/// holds a decompressor between messages either; with it, each connection that uses it keeps
/// one (about 2^`client_max_window_bits` bytes and zlib's state) for its life.
///
/// A compressed message is inflated up to [`Config::max_message_size`], and no further: past
/// it the connection is closed with `1009`.
///
/// Why these defaults, and why it is off (measured on JSON chat events, one compressor reset
/// per message as here): compressing costs about 5 µs a message at level 1 and 15–20 µs at
/// level 6, whatever its size up to 1 KiB, against about 0.3 µs of CPU per delivery without
/// it; level 6 saves only a few points more (a 400-byte event: 74% at level 1, 76% at 6). A
/// 100-byte event shrinks by about a quarter, a 400-byte one by three quarters: below 256
/// bytes it is not worth its CPU. A broadcast pays the cost once, a message to one client
/// pays it every time: turn it on where payloads are large or bandwidth is dear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// Messages shorter than this many bytes are sent uncompressed.
    pub threshold: usize,
    /// zlib's compression level, 0 to 9.
    pub level: u32,
    /// The largest window the server compresses with, as a power of two (9 to 15).
    pub max_window_bits: u8,
    /// The window asked of clients that accept a limit, as a power of two (9 to 15).
    pub client_max_window_bits: u8,
    /// Whether clients may keep their compression context between messages (costs a
    /// decompressor per connection).
    pub client_context_takeover: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            threshold: 256,
            level: 1,
            max_window_bits: 15,
            client_max_window_bits: 15,
            client_context_takeover: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            outbound_queue: 1024,
            slow_consumer: SlowConsumerPolicy::Close,
            read_buffer_size: 2 * 1024,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_rooms_per_connection: 100,
            max_room_name_len: 128,
            max_event_name_len: 128,
            max_attachments: 10,
            max_connections_per_user: 16,
            max_connections: 100_000,
            max_dynamic_namespaces: 10_000,
            connect_rate_per_user: Some(RateLimit::per_second(10).burst(30)),
            max_connections_per_address: 64,
            connect_rate_per_address: Some(RateLimit::per_second(10).burst(30)),
            address_limits_for_users: false,
            rate_limit_flood_threshold: 20,
            write_batch: 256,
            shutdown_timeout: Duration::from_secs(10),
            shutdown_batch: 500,
            shutdown_batch_interval: Duration::from_millis(50),
            header_read_timeout: Duration::from_secs(10),
            token_expiry_warning: Some(Duration::from_secs(30)),
            close_on_token_expiry: true,
            error_event: "error".to_owned(),
            error_style: ErrorStyle::Detailed,
            compression: None,
        }
    }
}

/// A rate: so many events per second on average, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub(crate) per_second: NonZeroU32,
    pub(crate) burst: NonZeroU32,
}

impl RateLimit {
    /// `n` events per second (at least 1), with a burst of `n`.
    pub fn per_second(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            per_second: n,
            burst: n,
        }
    }

    /// Allows bursts of up to `burst` events (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        self
    }

    /// `per_second` events a second with bursts of `burst` (both at least 1), in a constant.
    pub(crate) const fn per_second_const(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: match NonZeroU32::new(per_second) {
                Some(n) => n,
                None => NonZeroU32::MIN,
            },
            burst: match NonZeroU32::new(burst) {
                Some(n) => n,
                None => NonZeroU32::MIN,
            },
        }
    }

    pub(crate) fn quota(&self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}
