//! Seed section "Scheduled Messages" (Bearer): `POST /messages/schedule`,
//! `GET /messages/scheduled`, `DELETE /messages/scheduled/{id}`.
//!
//! These routes only store and list; delivery belongs to the server (src/scheduler.rs),
//! which is woken when something is scheduled.

use palaver_entity::{scheduled_messages, users};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::require_member;
use crate::domain::posting::{as_poster, require_may_post};
use crate::domain::scheduled::{self, NewScheduled, ScheduleRequest, ScheduledView};
use crate::error::{ApiError, ApiResult};
use crate::http::{PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// The caller's messages not yet delivered.
fn pending_of(user_id: Uuid) -> sea_orm::Select<scheduled_messages::Entity> {
    scheduled_messages::Entity::find()
        .filter(scheduled_messages::Column::UserId.eq(user_id))
        .filter(scheduled_messages::Column::DeliveredAt.is_null())
}

/// POST /api/messages/schedule
pub(crate) async fn schedule_message(
    state: AppState,
    caller: Caller,
    body: ApiResult<ScheduleRequest>,
) -> Reply {
    let now = palaver_entity::now();
    let new = NewScheduled::parse(body?, now)?;
    require_member(&state.db, new.channel_id, &caller).await?;
    // Checked now and again at delivery: a message the caller could not send is refused.
    require_may_post(&state.hub, new.channel_id, as_poster(&caller)).await?;
    // Counted under the user row's lock: concurrent requests cannot pass the limit together.
    let txn = crate::db::begin_write(&state.db).await?;
    crate::db::lock_row::<users::Entity>(&txn, caller.user_id).await?.ok_or(ApiError::Unauthorized)?;
    if pending_of(caller.user_id).count(&txn).await? >= scheduled::MAX_PENDING {
        return Err(ApiError::validation(format!(
            "you can have at most {} scheduled messages pending",
            scheduled::MAX_PENDING
        )));
    }
    let row = scheduled_messages::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(caller.user_id),
        channel_id: Set(new.channel_id),
        ciphertext: Set(new.ciphertext),
        nonce: Set(new.nonce),
        scheduled_for: Set(new.scheduled_for),
        content_preview: Set(new.content_preview),
        created_at: Set(now),
        delivered_at: Set(None),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    state.scheduler.wake();
    ok_json(&ScheduledView::from(&row))
}

/// GET /api/messages/scheduled
pub(crate) async fn list_scheduled(state: AppState, caller: Caller) -> Reply {
    let rows = pending_of(caller.user_id)
        .order_by_asc(scheduled_messages::Column::ScheduledFor)
        .order_by_asc(scheduled_messages::Column::Id)
        .limit(scheduled::LIST_MAX)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(ScheduledView::from).collect::<Vec<_>>())
}

/// DELETE /api/messages/scheduled/{id}
pub(crate) async fn cancel_scheduled(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    // Only a pending message of the caller's own; a delivered one is no longer cancellable.
    let removed = scheduled_messages::Entity::delete_many()
        .filter(scheduled_messages::Column::Id.eq(id))
        .filter(scheduled_messages::Column::UserId.eq(caller.user_id))
        .filter(scheduled_messages::Column::DeliveredAt.is_null())
        .exec(&state.db)
        .await?;
    if removed.rows_affected == 0 {
        return Err(ApiError::not_found("scheduled message"));
    }
    ok_empty()
}
