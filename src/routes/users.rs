//! Seed section "Users": `/users/search`, `/users/{id}`, `/users/block`, `/users/unblock/{id}`,
//! `/users/blocked` (Bearer). Visibility: self, instance owner, or a shared community
//! (`domain::visibility`); invisible users are answered 404 like missing ones.

use palaver_actors::protocol::rfc3339;
use palaver_entity::{blocked_users, users};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::search::like_contains;
use crate::domain::user::UserView;
use crate::domain::visibility::{can_see_user, community_peers_of};
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{PathId, ok_empty, ok_json};
use crate::state::AppState;

/// Most users one search returns.
const SEARCH_LIMIT: u64 = 20;

/// GET /api/users/search?q=
pub(crate) async fn search_users(
    state: AppState,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<warp::reply::Response> {
    let q = query.text("q").unwrap_or_default();
    if q.len() < 2 || q.len() > 256 {
        return Err(ApiError::validation("q must be 2-256 bytes"));
    }
    let pattern = like_contains(&q.to_lowercase());
    let matches = |col: users::Column| {
        Expr::expr(Func::lower(Expr::col((users::Entity, col))))
            .like(LikeExpr::new(pattern.clone()).escape('\\'))
    };
    let mut select = users::Entity::find()
        .filter(
            Condition::any().add(matches(users::Column::Username)).add(matches(users::Column::DisplayName)),
        )
        .filter(users::Column::Id.ne(caller.user_id));
    if !caller.is_owner {
        select = select.filter(users::Column::Id.in_subquery(community_peers_of(caller.user_id)));
    }
    let found = select.order_by_asc(users::Column::Username).limit(SEARCH_LIMIT).all(&state.db).await?;
    ok_json(&found.iter().map(UserView::from).collect::<Vec<_>>())
}

/// GET /api/users/{user_id}
pub(crate) async fn get_user(
    id: PathId,
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let id = id.get()?;
    if !can_see_user(&state.db, &caller, id).await? {
        return Err(ApiError::not_found("user"));
    }
    let user =
        users::Entity::find_by_id(id).one(&state.db).await?.ok_or_else(|| ApiError::not_found("user"))?;
    ok_json(&UserView::from(&user))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct BlockRequest {
    user_id: Uuid,
}

/// POST /api/users/block
pub(crate) async fn block_user(
    state: AppState,
    caller: Caller,
    body: ApiResult<BlockRequest>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    if body.user_id == caller.user_id {
        return Err(ApiError::validation("you cannot block yourself"));
    }
    if users::Entity::find_by_id(body.user_id).one(&state.db).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    let row = blocked_users::ActiveModel {
        blocker_id: Set(caller.user_id),
        blocked_id: Set(body.user_id),
        created_at: Set(palaver_entity::now()),
    };
    // A repeat block keeps the original one (and its time).
    blocked_users::Entity::insert(row).on_conflict_do_nothing().exec_without_returning(&state.db).await?;
    ok_empty()
}

/// POST /api/users/unblock/{user_id}
pub(crate) async fn unblock_user(
    id: PathId,
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let id = id.get()?;
    let deleted = blocked_users::Entity::delete_many()
        .filter(blocked_users::Column::BlockerId.eq(caller.user_id))
        .filter(blocked_users::Column::BlockedId.eq(id))
        .exec(&state.db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found("block"));
    }
    ok_empty()
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct BlockedEntry {
    blocked_id: Uuid,
    created_at: String,
}

/// GET /api/users/blocked
pub(crate) async fn list_blocked(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    let rows = blocked_users::Entity::find()
        .filter(blocked_users::Column::BlockerId.eq(caller.user_id))
        .order_by_desc(blocked_users::Column::CreatedAt)
        .all(&state.db)
        .await?;
    let entries: Vec<BlockedEntry> = rows
        .iter()
        .map(|b| BlockedEntry { blocked_id: b.blocked_id, created_at: rfc3339(&b.created_at) })
        .collect();
    ok_json(&entries)
}
