//! The audit log: one row per security-relevant action (login, failed login, password
//! change, 2FA change, recovery, session revoke, admin actions …).
//!
//! Rows never hold unbounded client text: the user agent and every string inside the
//! metadata are cut to a maximum, and the metadata as a whole has a size cap, whatever a
//! caller passes in.

use palaver_entity::audit_log;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait};
use serde_json::Value;
use uuid::Uuid;

use crate::http::ClientInfo;

/// Characters of the user agent kept.
const MAX_USER_AGENT_CHARS: usize = 512;
/// Characters of any string inside the metadata kept.
const MAX_METADATA_STRING_CHARS: usize = 256;
/// Items of any array (and entries of any object) inside the metadata kept.
const MAX_METADATA_ITEMS: usize = 64;
/// Serialized metadata larger than this is replaced by a marker.
const MAX_METADATA_BYTES: usize = 8 * 1024;

/// Writes an entry. A failure is logged, never surfaced: auditing must not break the action
/// it records (the action itself has already happened).
pub async fn record(
    db: &impl ConnectionTrait,
    user_id: Option<Uuid>,
    action: &str,
    client: Option<&ClientInfo>,
    metadata: Option<Value>,
) {
    let entry = audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        action: Set(action.to_string()),
        ip_address: Set(client.and_then(|c| c.ip).map(|ip| ip.to_string())),
        user_agent: Set(client
            .and_then(|c| c.user_agent.as_deref())
            .map(|ua| truncate_chars(ua, MAX_USER_AGENT_CHARS))),
        metadata: Set(metadata.map(bounded_metadata)),
        created_at: Set(palaver_entity::now()),
    };
    if let Err(err) = entry.insert(db).await {
        tracing::warn!(error = %err, action, "could not write audit entry");
    }
}

/// The metadata as stored: strings, arrays and objects cut to their maximum, and the
/// whole replaced by `{"truncated": true}` if it is still too large.
fn bounded_metadata(metadata: Value) -> String {
    let text = bound_value(metadata).to_string();
    if text.len() > MAX_METADATA_BYTES {
        return serde_json::json!({"truncated": true}).to_string();
    }
    text
}

fn bound_value(value: Value) -> Value {
    match value {
        Value::String(s) if s.chars().count() > MAX_METADATA_STRING_CHARS => {
            Value::String(truncate_chars(&s, MAX_METADATA_STRING_CHARS))
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().take(MAX_METADATA_ITEMS).map(bound_value).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .take(MAX_METADATA_ITEMS)
                .map(|(k, v)| (truncate_chars(&k, MAX_METADATA_STRING_CHARS), bound_value(v)))
                .collect(),
        ),
        other => other,
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_text_in_metadata_is_bounded() {
        let huge = "x".repeat(2_000_000);
        let stored = bounded_metadata(json!({"username": huge, "n": 3}));
        let back: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(back["username"].as_str().unwrap().len(), MAX_METADATA_STRING_CHARS);
        assert_eq!(back["n"], 3);

        let many: Vec<String> = (0..10_000).map(|i| format!("item{i}")).collect();
        let stored = bounded_metadata(json!({"list": many}));
        assert!(stored.len() <= MAX_METADATA_BYTES);
        let back: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(back["list"].as_array().unwrap().len(), MAX_METADATA_ITEMS);

        let deep: Vec<String> = (0..MAX_METADATA_ITEMS).map(|_| "y".repeat(250)).collect();
        let stored = bounded_metadata(json!({"a": deep, "b": deep}));
        assert_eq!(stored, r#"{"truncated":true}"#);

        let small = json!({"user_id": "9b2c", "revoked_count": 2});
        assert_eq!(bounded_metadata(small.clone()), small.to_string());
    }
}
