//! Messages as REST shows them (rest-messages-dms-files.md): the Message object (reactions
//! grouped in first-use order, thread counters, webhook content), the Pinned message object,
//! the edit-history entry and the DM object; plus the "hidden" rule every read shares.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use palaver_actors::wire_time::rfc3339;
use palaver_entity::{message_edits, messages, reactions};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::channel::ChannelView;
use crate::domain::user::UserView;
use crate::error::ApiResult;

/// Messages every read endpoint hides: soft-deleted, quarantined, or past their TTL.
pub fn visible(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(messages::Column::DeletedAt.is_null())
        .add(messages::Column::QuarantinedAt.is_null())
        .add(
            Condition::any()
                .add(messages::Column::ExpiresAt.is_null())
                .add(messages::Column::ExpiresAt.gt(now)),
        )
}

/// Whether a loaded row would be hidden by [`visible`].
pub fn is_visible(m: &messages::Model, now: DateTime<Utc>) -> bool {
    m.deleted_at.is_none() && m.quarantined_at.is_none() && m.expires_at.is_none_or(|e| e > now)
}

/// `{emoji, user_ids}`: one entry per emoji on a message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ReactionSummary {
    pub emoji: String,
    pub user_ids: Vec<Uuid>,
}

/// The fields the Message object and the Pinned message object share.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MessageCore {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub sender_id: Option<Uuid>,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub message_type: String,
    pub reply_to_id: Option<Uuid>,
    pub sender_key_id: Option<Uuid>,
    pub edited_at: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<Uuid>,
    /// Webhook messages: the posted text (the mirror never returned it; clients need it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_name: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_avatar: Option<Value>,
}

impl From<&messages::Model> for MessageCore {
    fn from(m: &messages::Model) -> Self {
        let webhook: Option<serde_json::Map<String, Value>> =
            m.webhook_content.as_deref().and_then(|raw| serde_json::from_str(raw).ok());
        let field = |name: &str| webhook.as_ref().and_then(|w| w.get(name)).filter(|v| !v.is_null()).cloned();
        Self {
            id: m.id,
            channel_id: m.channel_id,
            sender_id: m.sender_id,
            ciphertext: m.ciphertext.clone(),
            nonce: m.nonce.clone(),
            message_type: m.message_type.clone(),
            reply_to_id: m.reply_to_id,
            sender_key_id: m.sender_key_id,
            edited_at: m.edited_at.as_ref().map(rfc3339),
            created_at: rfc3339(&m.created_at),
            thread_id: m.thread_id,
            content: field("content"),
            webhook_name: field("webhook_name"),
            webhook_avatar: field("webhook_avatar"),
        }
    }
}

/// The wire's Message object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MessageView {
    #[serde(flatten)]
    pub core: MessageCore,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_reply_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_last_reply_at: Option<String>,
}

/// The wire's Pinned message object: a Message without reactions and thread counters.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PinnedView {
    #[serde(flatten)]
    pub core: MessageCore,
    pub pinned_by: Option<Uuid>,
    pub pinned_at: String,
}

/// One entry of `GET …/messages/{id}/history`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct EditView {
    pub id: Uuid,
    pub old_ciphertext: Vec<u8>,
    pub old_nonce: Vec<u8>,
    pub edited_at: String,
}

impl From<&message_edits::Model> for EditView {
    fn from(e: &message_edits::Model) -> Self {
        Self {
            id: e.id,
            old_ciphertext: e.old_ciphertext.clone(),
            old_nonce: e.old_nonce.clone(),
            edited_at: rfc3339(&e.edited_at),
        }
    }
}

/// The wire's DM object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DmView {
    pub channel: ChannelView,
    pub other_user: UserView,
}

/// Message objects for `rows` (order kept): reactions attached, and, when `thread_counters`
/// is set, the reply count and newest reply time on roots that have live replies.
pub async fn message_views(
    db: &impl ConnectionTrait,
    rows: Vec<messages::Model>,
    thread_counters: bool,
) -> ApiResult<Vec<MessageView>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|m| m.id).collect();
    let mut grouped = reactions_of(db, &ids).await?;
    let mut counters = if thread_counters {
        let roots: Vec<Uuid> = rows.iter().filter(|m| m.thread_id.is_none()).map(|m| m.id).collect();
        thread_counters_of(db, &roots).await?
    } else {
        HashMap::new()
    };
    Ok(rows
        .iter()
        .map(|m| {
            let counter = counters.remove(&m.id);
            MessageView {
                core: MessageCore::from(m),
                reactions: grouped.remove(&m.id).unwrap_or_default(),
                thread_reply_count: counter.map(|(n, _)| n),
                thread_last_reply_at: counter.map(|(_, last)| rfc3339(&last)),
            }
        })
        .collect())
}

/// message → its reactions grouped by emoji, emoji in order of first use, users in order
/// of reacting.
async fn reactions_of(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<ReactionSummary>>> {
    let rows = reactions::Entity::find()
        .filter(reactions::Column::MessageId.is_in(ids.to_vec()))
        .order_by_asc(reactions::Column::CreatedAt)
        .order_by_asc(reactions::Column::Emoji)
        .order_by_asc(reactions::Column::UserId)
        .all(db)
        .await?;
    Ok(group_reactions(rows))
}

/// Groups reaction rows (already in time order) per message and emoji.
pub fn group_reactions(rows: Vec<reactions::Model>) -> HashMap<Uuid, Vec<ReactionSummary>> {
    let mut out: HashMap<Uuid, Vec<ReactionSummary>> = HashMap::new();
    for r in rows {
        let list = out.entry(r.message_id).or_default();
        match list.iter_mut().find(|s| s.emoji == r.emoji) {
            Some(summary) => summary.user_ids.push(r.user_id),
            None => list.push(ReactionSummary { emoji: r.emoji, user_ids: vec![r.user_id] }),
        }
    }
    out
}

/// root → (live replies, newest reply time), only for roots with at least one live reply.
async fn thread_counters_of(
    db: &impl ConnectionTrait,
    roots: &[Uuid],
) -> ApiResult<HashMap<Uuid, (i64, DateTime<Utc>)>> {
    if roots.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Option<Uuid>, i64, DateTime<Utc>)> = messages::Entity::find()
        .select_only()
        .column(messages::Column::ThreadId)
        .column_as(Expr::col(messages::Column::Id).count(), "reply_count")
        .column_as(Expr::col(messages::Column::CreatedAt).max(), "last_reply_at")
        .filter(messages::Column::ThreadId.is_in(roots.to_vec()))
        .filter(visible(palaver_entity::now()))
        .group_by(messages::Column::ThreadId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(|(root, n, last)| root.map(|r| (r, (n, last)))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaction(message: u128, user: u128, emoji: &str) -> reactions::Model {
        reactions::Model {
            message_id: Uuid::from_u128(message),
            user_id: Uuid::from_u128(user),
            emoji: emoji.into(),
            created_at: palaver_entity::now(),
        }
    }

    #[test]
    fn reactions_group_by_emoji_in_first_use_order() {
        let grouped = group_reactions(vec![
            reaction(1, 10, "🎉"),
            reaction(1, 11, "👍"),
            reaction(2, 10, "👍"),
            reaction(1, 12, "🎉"),
        ]);
        let first = &grouped[&Uuid::from_u128(1)];
        assert_eq!(
            first[0],
            ReactionSummary {
                emoji: "🎉".into(), user_ids: vec![Uuid::from_u128(10), Uuid::from_u128(12)]
            }
        );
        assert_eq!(first[1].emoji, "👍");
        assert_eq!(grouped[&Uuid::from_u128(2)].len(), 1);
    }

    #[test]
    fn webhook_content_is_exposed_and_absent_fields_omitted() {
        let now = palaver_entity::now();
        let mut m = messages::Model {
            id: Uuid::from_u128(1),
            channel_id: Uuid::from_u128(2),
            sender_id: None,
            ciphertext: vec![0],
            nonce: vec![0],
            message_type: "webhook".into(),
            reply_to_id: None,
            sender_key_id: None,
            thread_id: None,
            edited_at: None,
            deleted_at: None,
            quarantined_at: None,
            expires_at: None,
            webhook_content: Some(r#"{"content":"hi","webhook_name":"bot","webhook_avatar":null}"#.into()),
            created_at: now,
            client_nonce: None,
        };
        let v = serde_json::to_value(MessageCore::from(&m)).unwrap();
        assert_eq!(v["content"], "hi");
        assert_eq!(v["webhook_name"], "bot");
        assert!(v.get("webhook_avatar").is_none() && v.get("thread_id").is_none());
        assert!(Value::is_null(&v["sender_id"]) && Value::is_null(&v["edited_at"]));
        m.webhook_content = Some("not json".into());
        assert!(serde_json::to_value(MessageCore::from(&m)).unwrap().get("content").is_none());
        assert!(is_visible(&m, now));
        m.expires_at = Some(now);
        assert!(!is_visible(&m, now));
    }
}
