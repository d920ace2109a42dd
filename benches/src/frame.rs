//! Wire frames: building the client frames the load generator sends and cheaply reading
//! the few fields it needs from server frames.
//!
//! Receivers see hundreds of thousands of `new_message` frames per second while sharing
//! two cores with the server, so they do not run a full JSON parse: they find the `type`
//! value and the first 24 bytes of `ciphertext` by scanning. Everything off the hot path
//! (acks, errors, handshake) uses serde_json via [`ServerFrame`].

use std::fmt::Write as _;

use serde::Deserialize;
use uuid::Uuid;

/// Bytes at the start of every bench ciphertext: sender index, sequence number and send
/// time (ns on [`crate::clock`]), each a little-endian u64.
pub const STAMP_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Stamp {
    pub fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[0..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; STAMP_LEN]) -> Self {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Stamp { sender: word(0), seq: word(8), sent_ns: word(16) }
    }
}

/// Pre-rendered `send_message` frame for one channel and payload size: only the 24 stamp
/// bytes change per message.
#[derive(Debug, Clone)]
pub struct SendTemplate {
    prefix: String,
    suffix: String,
}

impl SendTemplate {
    pub fn new(channel_id: Uuid, payload_bytes: usize) -> Self {
        let prefix = format!(r#"{{"type":"send_message","channel_id":"{channel_id}","ciphertext":["#);
        let mut suffix = String::new();
        // Padding that looks like ciphertext (varied byte values) so the JSON size per
        // byte is realistic (~3.5 chars), unlike a run of zeros.
        for i in STAMP_LEN..payload_bytes {
            let _ = write!(suffix, ",{}", (i * 167 + 13) % 256);
        }
        suffix.push_str(r#"],"nonce":[1,2,3],"message_type":"text"}"#);
        SendTemplate { prefix, suffix }
    }

    pub fn render(&self, stamp: Stamp) -> String {
        let mut s = String::with_capacity(self.prefix.len() + self.suffix.len() + 4 * STAMP_LEN);
        s.push_str(&self.prefix);
        for (i, b) in stamp.to_bytes().iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{b}");
        }
        s.push_str(&self.suffix);
        s
    }
}

pub fn authenticate(token: &str) -> String {
    serde_json::json!({ "type": "authenticate", "token": token }).to_string()
}

pub fn subscribe(channel_ids: &[Uuid]) -> String {
    serde_json::json!({ "type": "subscribe", "channel_ids": channel_ids }).to_string()
}

/// `subscribe` to one channel with `since` (resume.md): the client's last position in it,
/// or `{}` when it has none yet (still asks for a `subscribed` answer).
pub fn subscribe_since(channel_id: Uuid, since: Option<(&str, u64)>) -> String {
    let since = match since {
        Some((epoch, cseq)) => {
            serde_json::json!({ channel_id.to_string(): { "epoch": epoch, "cseq": cseq } })
        }
        None => serde_json::json!({}),
    };
    serde_json::json!({ "type": "subscribe", "channel_ids": [channel_id], "since": since }).to_string()
}

pub fn ping(timestamp: i64) -> String {
    serde_json::json!({ "type": "ping", "timestamp": timestamp }).to_string()
}

/// The text right after `"key":` (whitespace skipped), for the first occurrence of the
/// quoted key that is followed by a colon (so a string *value* equal to the key is
/// skipped). `quoted_key` includes the quotes, e.g. `"\"type\""`.
fn value_after_key<'a>(text: &'a str, quoted_key: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + text[from..].find(quoted_key)?;
        let rest = text[at + quoted_key.len()..].trim_start();
        if let Some(value) = rest.strip_prefix(':') {
            return Some(value.trim_start());
        }
        from = at + quoted_key.len();
    }
}

/// The frame's `type` value, without a full parse.
pub fn frame_type(text: &str) -> Option<&str> {
    let v = value_after_key(text, "\"type\"")?.strip_prefix('"')?;
    Some(&v[..v.find('"')?])
}

/// The frame's `cseq` (stream position, resume.md), without a full parse.
pub fn cseq(text: &str) -> Option<u64> {
    let v = value_after_key(text, "\"cseq\"")?;
    v[..v.bytes().take_while(u8::is_ascii_digit).count()].parse().ok()
}

/// The bench stamp at the start of a frame's `ciphertext` array, without a full parse.
pub fn stamp(text: &str) -> Option<Stamp> {
    let mut rest = value_after_key(text, "\"ciphertext\"")?.strip_prefix('[')?;
    let mut bytes = [0u8; STAMP_LEN];
    for (i, slot) in bytes.iter_mut().enumerate() {
        if i > 0 {
            rest = rest.trim_start().strip_prefix(',')?;
        }
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        *slot = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
    }
    Some(Stamp::from_bytes(&bytes))
}

/// The server frame fields the load generator reads off the hot path. Unknown frames
/// and fields are fine (ignored).
#[derive(Debug, Deserialize)]
pub struct ServerFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub user_id: Option<Uuid>,
    #[serde(default)]
    pub channel_id: Option<Uuid>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// `subscribed` / `resync_required`: the channel's stream (resume.md).
    #[serde(default)]
    pub epoch: Option<String>,
    /// `subscribed` / `resync_required`: the channel's current position.
    #[serde(default)]
    pub cseq: Option<u64>,
    /// `subscribed`: every durable frame after `since` follows.
    #[serde(default)]
    pub recovered: Option<bool>,
    /// `subscribed`: how many replayed frames follow.
    #[serde(default)]
    pub replayed: Option<u64>,
    /// `resync_required`: `gap` or `restarted`.
    #[serde(default)]
    pub reason: Option<String>,
}

impl ServerFrame {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("unparsable server frame ({e}): {}", truncate(text)))
    }

    /// `code: message` of an `error` frame.
    pub fn error_text(&self) -> String {
        format!("{}: {}", self.code.as_deref().unwrap_or("?"), self.message.as_deref().unwrap_or(""))
    }
}

pub fn truncate(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_template_round_trips_through_the_scanner() {
        let ch = Uuid::new_v4();
        let st = Stamp { sender: 7, seq: 123_456, sent_ns: 9_876_543_210 };
        let frame = SendTemplate::new(ch, 64).render(st);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "send_message");
        assert_eq!(v["ciphertext"].as_array().unwrap().len(), 64);
        assert_eq!(v["channel_id"], ch.to_string());
        assert_eq!(frame_type(&frame), Some("send_message"));
        assert_eq!(stamp(&frame), Some(st));
    }

    #[test]
    fn scanner_copes_with_field_order_and_whitespace() {
        let st = Stamp { sender: 1, seq: 2, sent_ns: 3 };
        let arr: Vec<String> = st.to_bytes().iter().map(|b| b.to_string()).collect();
        let text = format!(
            "{{ \"message_type\" : \"type\", \"ciphertext\" : [ {} , 9 ], \"type\" : \"new_message\" }}",
            arr.join(" , ")
        );
        assert_eq!(frame_type(&text), Some("new_message"));
        assert_eq!(stamp(&text), Some(st));
        assert_eq!(frame_type(r#"{"type":"pong","timestamp":5}"#), Some("pong"));
        assert_eq!(stamp(r#"{"type":"new_message","ciphertext":[1,2]}"#), None);
    }

    #[test]
    fn cseq_scanner_reads_positions() {
        assert_eq!(cseq(r#"{"type":"new_message","cseq":1042,"id":"x"}"#), Some(1042));
        assert_eq!(cseq(r#"{"type":"new_message", "cseq" : 7}"#), Some(7));
        assert_eq!(cseq(r#"{"type":"user_typing","channel_id":"x"}"#), None);
    }

    #[test]
    fn subscribe_since_names_the_channel_position() {
        let ch = Uuid::new_v4();
        let v: serde_json::Value =
            serde_json::from_str(&subscribe_since(ch, Some(("k3Jd9aQx", 41)))).unwrap();
        assert_eq!(v["channel_ids"][0], ch.to_string());
        assert_eq!(v["since"][ch.to_string()]["epoch"], "k3Jd9aQx");
        assert_eq!(v["since"][ch.to_string()]["cseq"], 41);
        let v: serde_json::Value = serde_json::from_str(&subscribe_since(ch, None)).unwrap();
        assert_eq!(v["since"], serde_json::json!({}));
    }
}
