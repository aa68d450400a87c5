//! Token extraction on arbitrary handshakes: `Authorization` and `Sec-WebSocket-Protocol`
//! header values and a query string. It must never panic, and a token it finds is never
//! empty and comes from where it says.

#![no_main]

use arbitrary::Arbitrary;
use http::{header, HeaderValue, Request, Uri};
use libfuzzer_sys::fuzz_target;
use tower_realtime::auth::{extract_token, TokenSource};

#[derive(Debug, Arbitrary)]
struct Handshake<'a> {
    authorization: Option<&'a [u8]>,
    protocols: Vec<&'a [u8]>,
    query: Option<&'a str>,
}

fuzz_target!(|input: Handshake<'_>| {
    let uri = input
        .query
        .and_then(|q| Uri::try_from(format!("/ws?{q}")).ok())
        .unwrap_or_else(|| Uri::from_static("/ws"));
    let mut req = Request::get(uri).body(()).expect("a valid request");
    if let Some(Ok(value)) = input.authorization.map(HeaderValue::from_bytes) {
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    for value in input
        .protocols
        .into_iter()
        .filter_map(|p| HeaderValue::from_bytes(p).ok())
    {
        req.headers_mut().append(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    let (parts, ()) = req.into_parts();

    let Some((token, source)) = extract_token(&parts) else {
        return;
    };
    assert!(!token.is_empty());
    match source {
        TokenSource::AuthorizationHeader => {
            let value = parts.headers[header::AUTHORIZATION].to_str().unwrap();
            assert!(value.contains(token.as_str()));
            assert_eq!(token.trim(), token);
        }
        TokenSource::Subprotocol => {
            // One element of the comma-separated list, everything after `bearer.`.
            assert!(!token.contains(','));
            assert_eq!(token.trim_end(), token);
            assert!(parts
                .headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains(token.as_str()))));
        }
        TokenSource::QueryParameter => assert!(parts.uri.query().is_some()),
    }
});
