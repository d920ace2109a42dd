//! Delivery of scheduled messages (`POST /messages/schedule`), owned by the server.
//!
//! One task per server. It sleeps until the soonest pending message is due (or until a new
//! one is scheduled), then posts every due message through its channel's actor, so ordering,
//! group commit and the live `new_message` are those of any send. Exactly once: the actor
//! stores the message in the same transaction that sets the scheduled row's `delivered_at`
//! where it is still null; a second attempt (a retry after a timeout, another node) finds the
//! claim taken and stores nothing. A message that fell due while the server was down is
//! delivered when it starts, because the first sweep runs at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use palaver_actors::channel::{PostError, Poster, ServerPost};
use palaver_actors::kinds::MessageType;
use palaver_actors::roles::InstanceRole;
use palaver_entity::{scheduled_messages, users};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// Longest sleep between sweeps when nothing is due sooner (also the safety net for
/// messages scheduled by another node).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Due messages handled per sweep before looking again.
const BATCH: u64 = 100;
/// How long one delivery may wait for its channel's commit.
const POST_WAIT: Duration = Duration::from_secs(10);
/// A message whose delivery failed (database trouble) is retried after this long.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Starts the delivery task; it ends when `shutdown` fires.
pub fn start(state: AppState, mut shutdown: broadcast::Receiver<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let wake = state.scheduler.clone();
        let mut failed: HashMap<uuid::Uuid, Instant> = HashMap::new();
        loop {
            let next = match sweep(&state, &mut failed, &mut shutdown).await {
                Ok(Sweep::Stopped) => return,
                Ok(Sweep::Done) => next_due(&state).await.unwrap_or(Some(RETRY_AFTER)),
                Err(err) => {
                    tracing::warn!(error = %err, "scheduled delivery sweep failed; retrying");
                    Some(RETRY_AFTER)
                }
            };
            let mut sleep = next.unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
            if sleep.is_zero() && !failed.is_empty() {
                // Only messages that just failed are due: give the database a moment.
                sleep = RETRY_AFTER;
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = wake.notified() => {}
                _ = shutdown.recv() => return,
            }
        }
    })
}

enum Sweep {
    Done,
    Stopped,
}

/// Delivers every message due now (skipping ones that failed a moment ago).
async fn sweep(
    state: &AppState,
    failed: &mut HashMap<uuid::Uuid, Instant>,
    shutdown: &mut broadcast::Receiver<()>,
) -> Result<Sweep, DbErr> {
    failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
    loop {
        let due = scheduled_messages::Entity::find()
            .filter(scheduled_messages::Column::DeliveredAt.is_null())
            .filter(scheduled_messages::Column::ScheduledFor.lte(palaver_entity::now()))
            .order_by_asc(scheduled_messages::Column::ScheduledFor)
            .order_by_asc(scheduled_messages::Column::Id)
            .limit(BATCH + failed.len() as u64)
            .all(&state.db)
            .await?;
        let due: Vec<_> = due.into_iter().filter(|m| !failed.contains_key(&m.id)).collect();
        if due.is_empty() {
            return Ok(Sweep::Done);
        }
        for message in due {
            if !matches!(shutdown.try_recv(), Err(broadcast::error::TryRecvError::Empty)) {
                return Ok(Sweep::Stopped);
            }
            if let Err(err) = deliver(state, &message).await {
                tracing::warn!(scheduled = %message.id, error = ?err, "scheduled delivery failed; will retry");
                failed.insert(message.id, Instant::now());
            }
        }
    }
}

/// Posts one due message as its author. Refusals (the author may no longer send there) drop
/// it silently, as the wire says; database trouble leaves it pending for a retry.
async fn deliver(state: &AppState, message: &scheduled_messages::Model) -> Result<(), PostError> {
    let author = users::Entity::find_by_id(message.user_id)
        .one(&state.db)
        .await
        .map_err(|e| PostError::Internal(e.to_string()))?;
    let Some(author) = author.filter(|u| u.suspended_at.is_none()) else {
        return drop_message(state, message).await;
    };
    let post = ServerPost {
        sender_id: Some(author.id),
        live_sender_id: Some(author.id),
        ciphertext: decode_blob(&message.ciphertext),
        nonce: decode_blob(&message.nonce),
        message_type: MessageType::Text,
        webhook_content: None,
        poster: Poster::User(
            author.id,
            InstanceRole { is_admin: author.is_admin, is_owner: author.is_owner },
        ),
        claim: Some(message.id),
    };
    match state.hub.post_message(message.channel_id, post, POST_WAIT).await {
        Ok(id) => {
            tracing::debug!(scheduled = %message.id, message = %id, "scheduled message delivered");
            Ok(())
        }
        Err(PostError::AlreadyDelivered) => Ok(()),
        Err(PostError::Refused(code, text)) => {
            tracing::info!(scheduled = %message.id, code = code.as_str(), reason = %text, "scheduled message dropped");
            drop_message(state, message).await
        }
        Err(err) => Err(err),
    }
}

/// Marks a message that may not be delivered as done, so it is neither retried nor listed.
async fn drop_message(state: &AppState, message: &scheduled_messages::Model) -> Result<(), PostError> {
    scheduled_messages::Entity::update_many()
        .col_expr(scheduled_messages::Column::DeliveredAt, Expr::value(palaver_entity::now()))
        .filter(scheduled_messages::Column::Id.eq(message.id))
        .filter(scheduled_messages::Column::DeliveredAt.is_null())
        .exec(&state.db)
        .await
        .map(|_| ())
        .map_err(|e| PostError::Internal(e.to_string()))
}

/// How long until the soonest pending message is due (`None` when nothing is pending).
async fn next_due(state: &AppState) -> Result<Option<Duration>, DbErr> {
    let soonest: Option<chrono::DateTime<chrono::Utc>> = scheduled_messages::Entity::find()
        .select_only()
        .column(scheduled_messages::Column::ScheduledFor)
        .filter(scheduled_messages::Column::DeliveredAt.is_null())
        .order_by_asc(scheduled_messages::Column::ScheduledFor)
        .into_tuple()
        .one(&state.db)
        .await?;
    Ok(soonest.map(|at| (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)))
}

/// The wire's text encoding of a blob: the JSON text of a byte array (what the web client
/// sends), else the string's own UTF-8 bytes.
pub fn decode_blob(text: &str) -> Vec<u8> {
    serde_json::from_str::<Vec<u8>>(text).unwrap_or_else(|_| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::decode_blob;

    #[test]
    fn blobs_decode_from_json_arrays_or_raw_text() {
        assert_eq!(decode_blob("[1, 2, 255]"), vec![1, 2, 255]);
        assert_eq!(decode_blob("[256]"), b"[256]".to_vec());
        assert_eq!(decode_blob("hello"), b"hello".to_vec());
    }
}
