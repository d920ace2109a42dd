//! Opaque bytes (ciphertext, nonces) inside the JSON requests nodes send each other, as
//! base64 text: serde_json writes a `Vec<u8>` as an array of numbers, up to four bytes of
//! JSON and a number parse per byte, which made a forwarded send cost more than the client's
//! own decode. Reading also accepts the array form, so a node that has this reads what an
//! older node sends.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_any(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("base64 text or an array of bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes, E> {
        STANDARD.decode(text).map(Bytes::from).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Carrier {
        #[serde(with = "super")]
        bytes: Bytes,
    }

    #[test]
    fn bytes_travel_as_base64_and_come_back_equal() {
        let carrier = Carrier { bytes: Bytes::from_static(&[0, 1, 2, 250, 255]) };
        let text = serde_json::to_string(&carrier).unwrap();
        assert_eq!(text, r#"{"bytes":"AAEC+v8="}"#);
        assert_eq!(serde_json::from_str::<Carrier>(&text).unwrap(), carrier);
    }

    #[test]
    fn an_older_nodes_number_array_is_still_read() {
        let carrier: Carrier = serde_json::from_str(r#"{"bytes":[0,1,2,250,255]}"#).unwrap();
        assert_eq!(&carrier.bytes[..], &[0, 1, 2, 250, 255]);
    }

    #[test]
    fn bad_base64_and_out_of_range_numbers_are_refused() {
        assert!(serde_json::from_str::<Carrier>(r#"{"bytes":"not base64!"}"#).is_err());
        assert!(serde_json::from_str::<Carrier>(r#"{"bytes":[256]}"#).is_err());
        assert!(serde_json::from_str::<Carrier>(r#"{"bytes":7}"#).is_err());
    }
}
