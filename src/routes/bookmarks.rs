//! Seed section "Bookmarks" (Bearer). Both path families are served through one handler each:
//! the seed's `POST|DELETE /bookmarks/{message_id}` and the web client's `POST /bookmarks`
//! (body `{message_id, note}`) and `DELETE /bookmarks/{bookmark_id}`; `GET /bookmarks`.

use palaver_entity::{bookmarks, messages};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::bookmark::{self, BookmarkView};
use crate::domain::channel::require_member;
use crate::domain::message::is_visible;
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// Either body: the client's `{message_id, note}`, or the seed's optional `{note}`.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateBookmark {
    #[serde(default)]
    message_id: Option<Uuid>,
    #[serde(default)]
    note: Option<String>,
}

/// POST /api/bookmarks (the message id in the body; a bad body is answered before the 401)
pub(crate) async fn create_bookmark_from_body(
    state: AppState,
    caller: ApiResult<Caller>,
    body: ApiResult<CreateBookmark>,
) -> Reply {
    let body = body?;
    let message_id = body.message_id.ok_or_else(|| ApiError::validation("message_id is required"))?;
    create_bookmark(state, caller, message_id, body.note).await
}

/// POST /api/bookmarks/{message_id} (seed path)
pub(crate) async fn create_bookmark_at(
    id: PathId,
    state: AppState,
    caller: ApiResult<Caller>,
    body: ApiResult<CreateBookmark>,
) -> Reply {
    let message_id = id.get()?;
    create_bookmark(state, caller, message_id, body?.note).await
}

/// Stores a bookmark of `message_id` for the caller.
async fn create_bookmark(
    state: AppState,
    caller: ApiResult<Caller>,
    message_id: Uuid,
    note: Option<String>,
) -> Reply {
    let caller = caller?;
    let note = bookmark::note(note.as_deref())?;
    let message = messages::Entity::find_by_id(message_id)
        .one(&state.db)
        .await?
        .filter(|m| is_visible(m, palaver_entity::now()))
        .ok_or_else(|| ApiError::not_found("message"))?;
    require_member(&state.db, message.channel_id, &caller).await?;
    let row = bookmarks::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(caller.user_id),
        message_id: Set(message.id),
        note: Set(note),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&state.db)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::conflict("this message is already bookmarked"),
        other => other,
    })?;
    ok_json(&BookmarkView::from(&row))
}

/// GET /api/bookmarks
pub(crate) async fn list_bookmarks(state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let limit = query.limit(bookmark::DEFAULT_LIMIT, bookmark::MAX_LIMIT)?;
    let offset = query.offset()?;
    let rows = bookmarks::Entity::find()
        .filter(bookmarks::Column::UserId.eq(caller.user_id))
        .order_by_desc(bookmarks::Column::CreatedAt)
        .order_by_desc(bookmarks::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(BookmarkView::from).collect::<Vec<_>>())
}

/// DELETE /api/bookmarks/{id} — the bookmark's id (client) or the message's id (seed).
pub(crate) async fn delete_bookmark(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let removed = bookmarks::Entity::delete_many()
        .filter(bookmarks::Column::UserId.eq(caller.user_id))
        .filter(Condition::any().add(bookmarks::Column::Id.eq(id)).add(bookmarks::Column::MessageId.eq(id)))
        .exec(&state.db)
        .await?;
    if removed.rows_affected == 0 {
        return Err(ApiError::not_found("bookmark"));
    }
    ok_empty()
}
