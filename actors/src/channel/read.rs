//! Read cursors: stores a member's last read message and sends read receipts (unless the
//! reader turned them off).

use palaver_entity::{read_cursors, users};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait, QuerySelect};
use uuid::Uuid;

use super::{ChannelState, Origin};
use crate::error_code::ErrorCode;
use crate::protocol::ServerFrame;

impl ChannelState {
    pub(super) async fn mark_read(&mut self, origin: Origin, message_id: Uuid) {
        if !self.is_member(origin.user_id) {
            return;
        }
        let db = &self.shared.db;
        let now = palaver_entity::now();
        let cursor = read_cursors::ActiveModel {
            channel_id: Set(self.id()),
            user_id: Set(origin.user_id),
            last_read_message_id: Set(Some(message_id)),
            last_read_at: Set(now),
        };
        let saved = read_cursors::Entity::insert(cursor)
            .on_conflict(
                OnConflict::columns([read_cursors::Column::ChannelId, read_cursors::Column::UserId])
                    .update_columns([
                        read_cursors::Column::LastReadMessageId,
                        read_cursors::Column::LastReadAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await;
        if saved.is_err() {
            return origin.error(ErrorCode::Unavailable, "the database is unavailable, try again");
        }
        let send_receipts = users::Entity::find_by_id(origin.user_id)
            .select_only()
            .column(users::Column::Preferences)
            .into_tuple::<String>()
            .one(db)
            .await
            .ok()
            .flatten()
            .is_some_and(|prefs| {
                serde_json::from_str::<serde_json::Value>(&prefs)
                    .map(|p| p.get("sendReadReceipts") != Some(&serde_json::Value::Bool(false)))
                    .unwrap_or(true)
            });
        if send_receipts {
            self.broadcast_ephemeral(&ServerFrame::ReadReceipt {
                channel_id: self.id(),
                user_id: origin.user_id,
                message_id,
                timestamp: now,
            });
        }
    }
}
