//! What an Engine.IO session keeps of its client's requests: the handshake's head (each
//! namespace's CONNECT is authenticated against it), and the recovery a CONNECT asks for.

use http::request::Parts;
use serde_json::Value;

use crate::{
    hub::history::{Resume, MAX_RECOVERY_TOKEN},
    protocol::offset::parse_socketio_offset,
};

/// The request's method, URI, version and headers, in allocations of their own.
///
/// A session keeps its handshake's head for as long as it lives (each namespace's CONNECT is
/// authenticated against it). The server parsed that head in place: its URI and header values
/// are slices of the connection's read buffer (16 KiB here), and every slice, or anything in
/// the extensions holding one (a framework's copy of the URI, say), keeps the whole buffer
/// alive. A copy of the URI and headers takes a few hundred bytes. The extensions are not kept.
pub(super) fn detach(parts: Parts) -> Parts {
    let Parts {
        method,
        uri,
        version,
        headers,
        ..
    } = parts;
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = method;
    copy.version = version;
    copy.uri = http::Uri::try_from(uri.to_string()).unwrap_or(uri);
    copy.headers.reserve(headers.len());
    for (name, value) in &headers {
        let name = http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut fresh = http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        fresh.set_sensitive(value.is_sensitive());
        copy.headers.append(name, fresh);
    }
    copy
}

/// The session a Socket.IO client asks to recover: `pid` and `offset` in its CONNECT data. An
/// offset that is not one of ours (the client keeps the last string argument of any event)
/// leaves the position unknown, which does not recover.
///
/// An offset of an earlier `epoch` is no position at all: the client keeps its last offset
/// across sessions, so a client whose session began after a restart, and that has had no
/// history event since, still presents one from before. Its session, if it is of this epoch,
/// has everything since it began; if it is not, it does not recover.
///
/// A `pid` longer than any id given out (the native session id's limit) names no session: it
/// is not looked up, nor copied, and the client does not recover (`unknown session`).
pub(super) fn recovery_ask(data: Option<&Value>, epoch: Option<&str>) -> Option<Resume> {
    let pid = data?.get("pid")?.as_str()?;
    let mut resume = Resume {
        // An empty id is never one given out.
        session: if pid.len() <= MAX_RECOVERY_TOKEN {
            pid.to_owned()
        } else {
            String::new()
        },
        ..Resume::default()
    };
    match data?.get("offset") {
        None | Some(Value::Null) => {}
        Some(offset) => match offset.as_str().and_then(parse_socketio_offset) {
            Some((of, _)) if epoch.is_some_and(|current| current != of) => {}
            Some((of, seq)) => {
                resume.epoch = Some(of.to_owned());
                resume.offset = Some(seq);
            }
            None => resume.unknown_offset = true,
        },
    }
    Some(resume)
}

#[cfg(test)]
mod tests {
    use super::{detach, recovery_ask};
    use crate::hub::history::MAX_RECOVERY_TOKEN;

    #[test]
    fn a_pid_longer_than_any_given_out_names_no_session() {
        let pid = "a".repeat(MAX_RECOVERY_TOKEN + 1);
        let data = serde_json::json!({ "pid": pid, "offset": "ab-3" });
        let resume = recovery_ask(Some(&data), None).expect("a resume, that recovers nothing");
        assert_eq!(resume.session, "", "not copied, never found");
        let data = serde_json::json!({ "pid": "a".repeat(MAX_RECOVERY_TOKEN) });
        assert_eq!(
            recovery_ask(Some(&data), None).unwrap().session.len(),
            MAX_RECOVERY_TOKEN
        );
    }

    #[test]
    fn a_detached_head_keeps_method_uri_version_and_headers_but_not_extensions() {
        let mut secret = http::HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        let req = http::Request::builder()
            .method("GET")
            .uri("/socket.io/?EIO=4&transport=websocket&token=t")
            .version(http::Version::HTTP_11)
            .header("authorization", secret)
            .header("x-custom", "1")
            .header("x-custom", "2")
            .extension(42u32)
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let copy = detach(parts.clone());
        assert_eq!(copy.method, parts.method);
        assert_eq!(copy.uri, parts.uri);
        assert_eq!(copy.version, parts.version);
        assert_eq!(copy.headers, parts.headers);
        let values: Vec<_> = copy.headers.get_all("x-custom").iter().collect();
        assert_eq!(values, ["1", "2"], "repeated headers kept, in order");
        assert!(copy.headers["authorization"].is_sensitive());
        assert_eq!(copy.extensions.get::<u32>(), None);
    }
}
