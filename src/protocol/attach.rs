//! Binary values in a payload, for every protocol: serialized as placeholders
//! `{"_placeholder":true,"num":n}` with their bytes kept aside as attachments, and read back
//! from a parsed payload and its attachments.
//!
//! Serde tells a binary value apart by the call it makes: `serialize_bytes` (what
//! [`Bytes`], `serde_bytes` and `ByteBuf` call) and `deserialize_bytes` /
//! `deserialize_byte_buf`. A plain `Vec<u8>` is a sequence of numbers to serde and stays one.

use std::io;

use bytes::Bytes;
use serde::{
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor},
    forward_to_deserialize_any, Deserializer, Serialize,
};
use serde_json::{Map, Value};

/// A payload serialized once: its JSON, with a placeholder where each binary value was, and
/// the binary values in placeholder order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Encoded {
    pub(crate) json: String,
    pub(crate) attachments: Vec<Bytes>,
}

/// Serializes `data` in one pass, as `serde_json::to_string` does, except that each value
/// serialized with `serialize_bytes` becomes a placeholder and its bytes an attachment.
pub(crate) fn to_json<T: Serialize + ?Sized>(data: &T) -> Result<Encoded, serde_json::Error> {
    let mut json = Vec::with_capacity(128);
    let mut formatter = Placeholders(Vec::new());
    data.serialize(&mut serde_json::Serializer::with_formatter(&mut json, &mut formatter))?;
    // serde_json writes valid UTF-8 only, and so does the formatter.
    let json = String::from_utf8(json).map_err(|e| de::Error::custom(e.utf8_error()))?;
    Ok(Encoded {
        json,
        attachments: formatter.0,
    })
}

/// serde_json's compact formatter, writing byte arrays as placeholders.
struct Placeholders(Vec<Bytes>);

impl serde_json::ser::Formatter for &mut Placeholders {
    fn write_byte_array<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: &[u8]) -> io::Result<()> {
        write!(writer, "{{\"_placeholder\":true,\"num\":{}}}", self.0.len())?;
        self.0.push(Bytes::copy_from_slice(value));
        Ok(())
    }
}

fn is_placeholder_object(map: &Map<String, Value>) -> bool {
    map.get("_placeholder") == Some(&Value::Bool(true))
}

/// Whether `value` is a placeholder object (`"_placeholder": true`), valid or not.
#[cfg(feature = "socketio")]
pub(crate) fn is_placeholder(value: &Value) -> bool {
    matches!(value, Value::Object(map) if is_placeholder_object(map))
}

fn placeholder_num(map: &Map<String, Value>) -> Option<usize> {
    map.get("num")?.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// The placeholder of attachment `num`: `{"_placeholder":true,"num":num}`.
#[cfg_attr(not(feature = "socketio"), allow(dead_code))]
pub fn placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

/// The attachment index of `value` when it is a placeholder.
pub fn placeholder_index(value: &Value) -> Option<usize> {
    match value {
        Value::Object(map) if is_placeholder_object(map) => placeholder_num(map),
        _ => None,
    }
}

/// Whether every placeholder in `data` refers to one of `attachments` attachments.
pub(crate) fn placeholders_valid(data: &Value, attachments: usize) -> bool {
    match data {
        Value::Object(map) if is_placeholder_object(map) => placeholder_num(map).is_some_and(|n| n < attachments),
        Value::Object(map) => map.values().all(|v| placeholders_valid(v, attachments)),
        Value::Array(items) => items.iter().all(|v| placeholders_valid(v, attachments)),
        _ => true,
    }
}

/// Deserializes `T` from a parsed payload and its attachments: a placeholder is the bytes of
/// its attachment to whatever reads it (a `Bytes` or `serde_bytes` field). A type that reads
/// a placeholder as anything else (a `serde_json::Value`, say) fails with an error naming the
/// attachment. Without attachments this is `T::deserialize(data)`.
pub(crate) fn from_value<T: de::DeserializeOwned>(data: Value, attachments: &[Bytes]) -> Result<T, serde_json::Error> {
    if attachments.is_empty() {
        return T::deserialize(data);
    }
    T::deserialize(Attached {
        value: data,
        attachments,
    })
}

/// A payload value with the attachments its placeholders refer to.
struct Attached<'a> {
    value: Value,
    attachments: &'a [Bytes],
}

impl Attached<'_> {
    /// The attachment this value stands for, when it is a placeholder.
    fn attachment(&self) -> Option<Result<&Bytes, serde_json::Error>> {
        let n = placeholder_index(&self.value)?;
        Some(
            self.attachments
                .get(n)
                .ok_or_else(|| de::Error::custom(format_args!("placeholder {n} refers to no attachment"))),
        )
    }
}

fn binary_where_json(n: usize) -> serde_json::Error {
    de::Error::custom(format_args!(
        "attachment {n} is binary: take it in a `Bytes` (or `serde_bytes`) field, or take the raw \
         payload with `Args` and the bytes with `Attachments`"
    ))
}

impl<'de> Deserializer<'de> for Attached<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if let Some(bytes) = self.attachment() {
            // Only a type that asks for bytes may have them; any other reading of a
            // placeholder would see its JSON, not the bytes it stands for.
            let _ = bytes?;
            return Err(binary_where_json(placeholder_index(&self.value).unwrap_or(0)));
        }
        let attachments = self.attachments;
        match self.value {
            Value::Array(items) => visitor.visit_seq(Seq {
                items: items.into_iter(),
                attachments,
            }),
            Value::Object(map) => visitor.visit_map(Fields {
                entries: map.into_iter(),
                value: None,
                attachments,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.attachment() {
            Some(bytes) => visitor.visit_bytes(bytes?),
            None => self.value.deserialize_bytes(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.attachment() {
            Some(bytes) => visitor.visit_byte_buf(bytes?.to_vec()),
            None => self.value.deserialize_byte_buf(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Binary values inside an enum's fields are not looked for.
        self.value.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Seq<'a> {
    items: std::vec::IntoIter<Value>,
    attachments: &'a [Bytes],
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = serde_json::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Self::Error> {
        self.items
            .next()
            .map(|value| {
                seed.deserialize(Attached {
                    value,
                    attachments: self.attachments,
                })
            })
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Fields<'a> {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
    attachments: &'a [Bytes],
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(Attached {
            value,
            attachments: self.attachments,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Upload {
        name: String,
        file: Bytes,
        parts: Vec<Bytes>,
        thumb: Option<Bytes>,
        sizes: Vec<u8>,
    }

    fn upload() -> Upload {
        Upload {
            name: "a.bin".into(),
            file: Bytes::from_static(&[0, 1, 2, 255]),
            parts: vec![Bytes::from_static(b"x"), Bytes::new()],
            thumb: Some(Bytes::from_static(b"t")),
            sizes: vec![1, 2],
        }
    }

    #[test]
    fn bytes_become_placeholders_and_come_back() {
        let encoded = to_json(&upload()).unwrap();
        assert_eq!(
            encoded.json,
            r#"{"name":"a.bin","file":{"_placeholder":true,"num":0},"parts":[{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}],"thumb":{"_placeholder":true,"num":3},"sizes":[1,2]}"#
        );
        assert_eq!(encoded.attachments.len(), 4);
        let value: Value = serde_json::from_str(&encoded.json).unwrap();
        assert!(placeholders_valid(&value, 4));
        assert!(!placeholders_valid(&value, 3));
        let back: Upload = from_value(value, &encoded.attachments).unwrap();
        assert_eq!(back, upload());
    }

    #[test]
    fn without_bytes_it_is_serde_json() {
        let data = json!({"a": [1, "x", null], "b": {"c": 1.5}});
        let encoded = to_json(&data).unwrap();
        assert_eq!(encoded.json, serde_json::to_string(&data).unwrap());
        assert!(encoded.attachments.is_empty());
    }

    #[test]
    fn a_placeholder_read_as_json_is_an_error() {
        let value = json!({"file": placeholder(0)});
        let err = from_value::<Value>(value.clone(), &[Bytes::from_static(b"x")]).unwrap_err();
        assert!(err.to_string().contains("attachment 0 is binary"), "{err}");
        // A placeholder with no attachment behind it.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct F {
            file: Bytes,
        }
        let err = from_value::<F>(json!({"file": placeholder(3)}), &[Bytes::new()]).unwrap_err();
        assert!(err.to_string().contains("refers to no attachment"), "{err}");
        // Other fields still read as usual, and unknown ones are skipped.
        let f: F = from_value(
            json!({"file": placeholder(0), "x": placeholder(0)}),
            &[Bytes::from_static(b"y")],
        )
        .unwrap();
        assert_eq!(f.file, Bytes::from_static(b"y"));
    }
}
