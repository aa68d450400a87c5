//! A request before it reaches a session: its query ([`parse_query`], [`EioQuery`]), what it
//! is ([`RequestKind`]), and the reference server's errors ([`EngineError`]).

use super::{Transport, PROTOCOL_VERSION};

/// A refused Engine.IO request, with the error codes, messages and HTTP statuses of the
/// reference server.
///
/// | code | message | status |
/// |---|---|---|
/// | 0 | `Transport unknown` | 400 |
/// | 1 | `Session ID unknown` | 400 |
/// | 2 | `Bad handshake method` | 400 |
/// | 3 | `Bad request` | 400 |
/// | 4 | `Forbidden` | 403 |
/// | 5 | `Unsupported protocol version` | 400 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EngineError {
    /// Code 0: the `transport` parameter is missing or names no transport.
    #[error("Transport unknown")]
    UnknownTransport,
    /// Code 1: the `sid` names no live session.
    #[error("Session ID unknown")]
    UnknownSid,
    /// Code 2: a handshake (no `sid`) with another method than `GET`.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Code 3: anything else malformed (a WebSocket handshake without an upgrade, a
    /// transport that does not match the session's, a second pending poll, …).
    #[error("Bad request")]
    BadRequest,
    /// Code 4: the request was refused (authentication, origin, limits).
    #[error("Forbidden")]
    Forbidden,
    /// Code 5: the `EIO` parameter is missing or is not `4`.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl EngineError {
    /// The numeric code of the JSON error body.
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The standard message of the code.
    pub fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP status of the refusal: `403` for [`EngineError::Forbidden`], `400` otherwise.
    pub fn status(self) -> http::StatusCode {
        match self {
            EngineError::Forbidden => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body of the refusal (`Content-Type: application/json`):
    /// `{"code":0,"message":"Transport unknown"}`.
    pub fn json_body(self) -> String {
        error_body(self, self.message())
    }
}

/// The JSON body of a refusal with a message of your own (the reference server uses the
/// message an `allowRequest` hook gives, for example): `{"code":4,"message":"…"}`.
pub fn error_body(error: EngineError, message: &str) -> String {
    serde_json::json!({ "code": error.code(), "message": message }).to_string()
}

/// The Engine.IO parameters of a request's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EioQuery {
    /// The `transport` parameter.
    pub transport: Transport,
    /// The `sid` parameter, once the session exists.
    pub sid: Option<String>,
}

/// What an Engine.IO request asks for, once [`EioQuery::classify`] has accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// A new session (no `sid`): a polling `GET`, or a WebSocket upgrade for a WebSocket-only
    /// client.
    Handshake(Transport),
    /// A long poll (`GET`) of the session `sid`: answer with its pending packets.
    Poll {
        /// The session id.
        sid: String,
    },
    /// A `POST` of packets to the session `sid`.
    Post {
        /// The session id.
        sid: String,
    },
    /// A WebSocket upgrade of the polling session `sid`.
    Upgrade {
        /// The session id.
        sid: String,
    },
}

/// Reads `EIO`, `transport` and `sid` from a query string (without the `?`); other
/// parameters are ignored. When a parameter repeats, the last one counts, as in the
/// reference server.
///
/// The transport is checked first: missing or unknown is [`EngineError::UnknownTransport`];
/// then `EIO`: missing or other than `4` is [`EngineError::UnsupportedProtocolVersion`].
/// An empty `sid` counts as none; a `sid` that is not valid percent-encoded UTF-8 is
/// [`EngineError::BadRequest`].
pub fn parse_query(query: &str) -> Result<EioQuery, EngineError> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => eio = Some(value),
            "transport" => transport = Some(value),
            "sid" => sid = Some(value),
            _ => {}
        }
    }
    let transport = transport
        .and_then(Transport::from_name)
        .ok_or(EngineError::UnknownTransport)?;
    if eio != Some(PROTOCOL_VERSION) {
        return Err(EngineError::UnsupportedProtocolVersion);
    }
    let sid = match sid {
        None | Some("") => None,
        Some(raw) => Some(crate::util::percent_decode(raw).ok_or(EngineError::BadRequest)?),
    };
    Ok(EioQuery { transport, sid })
}

impl EioQuery {
    /// Sorts an accepted query into what the request asks for, given its method and whether
    /// it is a WebSocket upgrade request, with the reference server's checks:
    ///
    /// - no `sid`: a handshake, which must be a `GET` ([`EngineError::BadHandshakeMethod`]);
    ///   `transport=websocket` must come as an upgrade ([`EngineError::BadRequest`]);
    /// - `sid` and `transport=polling`: a `GET` poll or a `POST`; an upgrade request or another
    ///   method is [`EngineError::BadRequest`];
    /// - `sid` and `transport=websocket`: must be an upgrade ([`EngineError::BadRequest`]).
    ///
    /// Whether the `sid` is known ([`EngineError::UnknownSid`]), and whether the session may
    /// still upgrade, is for the caller to check against its sessions.
    pub fn classify(&self, method: &http::Method, is_websocket_upgrade: bool) -> Result<RequestKind, EngineError> {
        match (&self.sid, self.transport) {
            (None, transport) => {
                if method != http::Method::GET {
                    return Err(EngineError::BadHandshakeMethod);
                }
                if (transport == Transport::WebSocket) != is_websocket_upgrade {
                    return Err(EngineError::BadRequest);
                }
                Ok(RequestKind::Handshake(transport))
            }
            (Some(sid), Transport::Polling) if !is_websocket_upgrade => {
                let sid = sid.clone();
                if method == http::Method::GET {
                    Ok(RequestKind::Poll { sid })
                } else if method == http::Method::POST {
                    Ok(RequestKind::Post { sid })
                } else {
                    Err(EngineError::BadRequest)
                }
            }
            (Some(sid), Transport::WebSocket) if is_websocket_upgrade && method == http::Method::GET => {
                Ok(RequestKind::Upgrade { sid: sid.clone() })
            }
            (Some(_), _) => Err(EngineError::BadRequest),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::super::Transport;
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query("EIO=4&transport=polling&t=N8hyd6w"),
            Ok(EioQuery {
                transport: Transport::Polling,
                sid: None
            })
        );
        assert_eq!(
            parse_query("EIO=4&transport=websocket&sid=lv_VI97HAXpY6yYWAAAC"),
            Ok(EioQuery {
                transport: Transport::WebSocket,
                sid: Some("lv_VI97HAXpY6yYWAAAC".into())
            })
        );
        assert_eq!(
            parse_query("sid=a%2Bb+c&transport=polling&EIO=4").map(|q| q.sid),
            Ok(Some("a+b c".into()))
        );
        assert_eq!(parse_query("EIO=4&transport=polling&sid=").map(|q| q.sid), Ok(None));
        assert_eq!(
            parse_query("EIO=3&transport=polling&EIO=4").map(|q| q.transport),
            Ok(Transport::Polling)
        );
    }

    #[test]
    fn query_errors() {
        use EngineError::*;
        assert_eq!(parse_query("EIO=4"), Err(UnknownTransport));
        assert_eq!(parse_query("EIO=4&transport=flashsocket"), Err(UnknownTransport));
        assert_eq!(parse_query("EIO=4&transport="), Err(UnknownTransport));
        assert_eq!(parse_query(""), Err(UnknownTransport));
        assert_eq!(parse_query("transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(parse_query("EIO=3&transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(parse_query("EIO=&transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(parse_query("EIO=4&transport=polling&sid=%zz"), Err(BadRequest));
        assert_eq!(parse_query("EIO=4&transport=polling&sid=%"), Err(BadRequest));
        assert_eq!(parse_query("EIO=4&transport=polling&sid=%ff"), Err(BadRequest));
    }

    #[test]
    fn request_classification() {
        use EngineError::*;
        let q = |t, sid: Option<&str>| EioQuery {
            transport: t,
            sid: sid.map(str::to_owned),
        };
        let (p, w) = (Transport::Polling, Transport::WebSocket);
        let s = Some("abc");
        let sid = || "abc".to_owned();

        assert_eq!(q(p, None).classify(&Method::GET, false), Ok(RequestKind::Handshake(p)));
        assert_eq!(q(w, None).classify(&Method::GET, true), Ok(RequestKind::Handshake(w)));
        assert_eq!(q(p, None).classify(&Method::POST, false), Err(BadHandshakeMethod));
        assert_eq!(q(w, None).classify(&Method::PUT, true), Err(BadHandshakeMethod));
        assert_eq!(q(w, None).classify(&Method::GET, false), Err(BadRequest));
        assert_eq!(q(p, None).classify(&Method::GET, true), Err(BadRequest));

        assert_eq!(
            q(p, s).classify(&Method::GET, false),
            Ok(RequestKind::Poll { sid: sid() })
        );
        assert_eq!(
            q(p, s).classify(&Method::POST, false),
            Ok(RequestKind::Post { sid: sid() })
        );
        assert_eq!(q(p, s).classify(&Method::DELETE, false), Err(BadRequest));
        assert_eq!(q(p, s).classify(&Method::GET, true), Err(BadRequest));
        assert_eq!(
            q(w, s).classify(&Method::GET, true),
            Ok(RequestKind::Upgrade { sid: sid() })
        );
        assert_eq!(q(w, s).classify(&Method::GET, false), Err(BadRequest));
        assert_eq!(q(w, s).classify(&Method::POST, false), Err(BadRequest));
    }

    #[test]
    fn error_codes_messages_and_bodies() {
        use EngineError::*;
        let all = [
            (UnknownTransport, 0, "Transport unknown"),
            (UnknownSid, 1, "Session ID unknown"),
            (BadHandshakeMethod, 2, "Bad handshake method"),
            (BadRequest, 3, "Bad request"),
            (Forbidden, 4, "Forbidden"),
            (UnsupportedProtocolVersion, 5, "Unsupported protocol version"),
        ];
        for (e, code, message) in all {
            assert_eq!(e.code(), code);
            assert_eq!(e.message(), message);
            assert_eq!(e.to_string(), message);
            assert_eq!(e.json_body(), format!(r#"{{"code":{code},"message":"{message}"}}"#));
            let want = if e == Forbidden { 403 } else { 400 };
            assert_eq!(e.status().as_u16(), want);
        }
        assert_eq!(
            error_body(Forbidden, "no \"token\""),
            r#"{"code":4,"message":"no \"token\""}"#
        );
    }
}
