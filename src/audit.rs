//! The audit log: one row per security-relevant action (login, failed login, password
//! change, 2FA change, recovery, session revoke, admin actions …).

use palaver_entity::audit_log;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait};
use uuid::Uuid;

use crate::http::ClientInfo;

/// Writes an entry. A failure is logged, never surfaced: auditing must not break the action
/// it records (the action itself has already happened).
pub async fn record(
    db: &impl ConnectionTrait,
    user_id: Option<Uuid>,
    action: &str,
    client: Option<&ClientInfo>,
    metadata: Option<serde_json::Value>,
) {
    let entry = audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        action: Set(action.to_string()),
        ip_address: Set(client.and_then(|c| c.ip).map(|ip| ip.to_string())),
        user_agent: Set(client.and_then(|c| c.user_agent.clone()).map(|ua| ua.chars().take(512).collect())),
        metadata: Set(metadata.map(|m| m.to_string())),
        created_at: Set(palaver_entity::now()),
    };
    if let Err(err) = entry.insert(db).await {
        tracing::warn!(error = %err, action, "could not write audit entry");
    }
}
