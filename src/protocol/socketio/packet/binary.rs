//! Binary attachments in a payload: placeholders (`{"_placeholder":true,"num":n}`), checked,
//! made and turned back into bytes.

use bytes::Bytes;
use serde_json::Value;

use crate::protocol::attach::{is_placeholder, placeholders_valid};

use super::SioDecodeError;

pub use crate::protocol::attach::{placeholder, placeholder_index};

pub(super) fn check_placeholders(data: &Value, attachments: usize) -> Result<(), SioDecodeError> {
    if placeholders_valid(data, attachments) {
        Ok(())
    } else {
        Err(SioDecodeError::IllegalPlaceholder)
    }
}

/// Adds `bytes` to the attachments of an outgoing payload and returns the placeholder to put
/// in the JSON where the bytes belong.
pub fn attach(attachments: &mut Vec<Bytes>, bytes: Bytes) -> Value {
    attachments.push(bytes);
    placeholder(attachments.len() - 1)
}

/// A copy of `data` with each placeholder replaced by its attachment as an array of byte
/// values (`[1,2,3,4]`), the form serde reads into a `Vec<u8>`.
///
/// A placeholder that refers to no attachment is [`SioDecodeError::IllegalPlaceholder`].
pub fn reconstruct_as_bytes(data: &Value, attachments: &[Bytes]) -> Result<Value, SioDecodeError> {
    Ok(match data {
        Value::Object(_) if is_placeholder(data) => {
            let bytes = placeholder_index(data)
                .and_then(|n| attachments.get(n))
                .ok_or(SioDecodeError::IllegalPlaceholder)?;
            Value::Array(bytes.iter().map(|b| Value::from(*b)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), reconstruct_as_bytes(v, attachments)?)))
                .collect::<Result<_, SioDecodeError>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| reconstruct_as_bytes(v, attachments))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::super::testing::{complete, partial};
    use super::super::{encode_binary_event, PacketKind, SioDecodeError, SioPacket};
    use super::*;

    #[test]
    fn binary_examples_from_the_protocol_document() {
        let text = r#"51-["baz",{"_placeholder":true,"num":0}]"#;
        let p = partial(text);
        assert_eq!((p.expected(), p.received()), (1, 0));
        assert_eq!(p.header().kind, PacketKind::BinaryEvent);
        let p = complete(p, &[&[1, 2, 3, 4]]);
        assert_eq!(p.event_name().as_deref(), Some("baz"));
        assert_eq!(p.args(), &[placeholder(0)]);
        assert_eq!(p.attachments, vec![Bytes::from_static(&[1, 2, 3, 4])]);
        assert_eq!(p.encode(), text);

        let text = r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let p = complete(partial(text), &[&[1, 2], &[3, 4]]);
        assert_eq!(p.ns, "/admin");
        assert_eq!(
            p.attachments,
            vec![Bytes::from_static(&[1, 2]), Bytes::from_static(&[3, 4])]
        );
        assert_eq!(p.encode(), text);

        let text = r#"51-14["foo",{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(text), &[&[1, 2, 3, 4]]);
        assert_eq!((p.kind, p.id), (PacketKind::BinaryEvent, Some(14)));
        assert_eq!(p.encode(), text);

        let text = r#"61-15["bar",{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(text), &[&[1, 2, 3, 4]]);
        assert_eq!((p.kind, p.id), (PacketKind::BinaryAck, Some(15)));
        assert_eq!(p.args(), &[json!("bar"), placeholder(0)]);
        assert_eq!(p.encode(), text);

        // From the sample session: a binary ack in a namespace.
        let text = r#"61-/admin,1[{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(text), &[b"x"]);
        assert_eq!((p.ns.as_str(), p.id, p.args().len()), ("/admin", Some(1), 1));
        assert_eq!(p.encode(), text);
    }

    #[test]
    fn nested_placeholders_and_reconstruction() {
        let text =
            r#"52-["upload",{"name":"a.bin","parts":[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]}]"#;
        let p = complete(partial(text), &[&[0xAA], &[1, 2]]);
        let arg = &p.args()[0];
        let parts = arg["parts"].as_array().unwrap();
        assert_eq!(
            parts.iter().map(placeholder_index).collect::<Vec<_>>(),
            [Some(1), Some(0)]
        );
        assert_eq!(placeholder_index(&arg["name"]), None);

        let plain = reconstruct_as_bytes(arg, &p.attachments).unwrap();
        assert_eq!(plain, json!({"name":"a.bin","parts":[[1,2],[170]]}));
        let parts: Vec<Vec<u8>> = serde_json::from_value(plain["parts"].clone()).unwrap();
        assert_eq!(parts, vec![vec![1, 2], vec![0xAA]]);

        assert!(matches!(
            reconstruct_as_bytes(&placeholder(2), &p.attachments),
            Err(SioDecodeError::IllegalPlaceholder)
        ));
        assert_eq!(reconstruct_as_bytes(&json!([1, "x"]), &[]).unwrap(), json!([1, "x"]));
    }

    /// `socket.emit('message', buffer)` → handler → `message-back` with the same data: the
    /// placeholders and attachments go back out unchanged.
    #[test]
    fn binary_event_echo_is_lossless() {
        let inbound = r#"51-3["message",{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(inbound), &[&[9, 8, 7]]);

        let data_json = p.args()[0].to_string();
        let out = encode_binary_event("/", "message-back", &data_json, p.attachments.len(), None);
        assert_eq!(out, r#"51-["message-back",{"_placeholder":true,"num":0}]"#);

        let back = complete(partial(&out), &[&[9, 8, 7]]);
        assert_eq!(back.event_name().as_deref(), Some("message-back"));
        assert_eq!(back.args(), p.args());

        // The same through SioPacket: an ack carrying the attachments becomes a BINARY_ACK.
        let mut ack = SioPacket::ack("/", 3, p.args().iter().cloned());
        ack.attachments = p.attachments.clone();
        assert_eq!(ack.wire_kind(), PacketKind::BinaryAck);
        assert_eq!(ack.encode(), r#"61-3[{"_placeholder":true,"num":0}]"#);
    }

    #[test]
    fn building_an_outgoing_binary_payload() {
        let mut attachments = Vec::new();
        let data = json!({"a": attach(&mut attachments, Bytes::from_static(b"x")), "b": attach(&mut attachments, Bytes::from_static(b"yz"))});
        let mut p = SioPacket::event("/files", "chunk", [data], Some(4));
        p.attachments = attachments;
        let text = p.encode();
        assert_eq!(
            text,
            r#"52-/files,4["chunk",{"a":{"_placeholder":true,"num":0},"b":{"_placeholder":true,"num":1}}]"#
        );
        assert_eq!(complete(partial(&text), &[b"x", b"yz"]), {
            let mut p2 = p.clone();
            p2.kind = PacketKind::BinaryEvent;
            p2
        });

        // A "binary" packet without attachments goes out as a plain one.
        let mut p = SioPacket::event("/", "e", [json!(1)], None);
        p.kind = PacketKind::BinaryEvent;
        assert_eq!(p.encode(), r#"2["e",1]"#);
    }
}
