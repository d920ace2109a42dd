//! Seed section "Announcements" (user side): `GET /announcements`,
//! `POST /announcements/{id}/dismiss`, and the client's aliases under `/account/...` (Bearer).
//! Posting announcements is admin-only (routes/admin.rs).

use palaver_entity::{announcement_dismissals, announcements};
use sea_orm::sea_query::Query;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::auth::Caller;
use crate::domain::announcement::AnnouncementView;
use crate::error::{ApiError, ApiResult};
use crate::http::{PathId, ok_empty, ok_json};
use crate::state::AppState;

/// GET /api/announcements (also GET /api/account/announcements)
pub(crate) async fn list_announcements(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    let dismissed = Query::select()
        .column(announcement_dismissals::Column::AnnouncementId)
        .from(announcement_dismissals::Entity)
        .and_where(announcement_dismissals::Column::UserId.eq(caller.user_id))
        .to_owned();
    let rows = announcements::Entity::find()
        .filter(announcements::Column::Id.not_in_subquery(dismissed))
        .order_by_desc(announcements::Column::CreatedAt)
        .order_by_desc(announcements::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(AnnouncementView::from).collect::<Vec<_>>())
}

/// POST /api/announcements/{id}/dismiss (also POST /api/account/announcements/{id}/dismiss)
pub(crate) async fn dismiss_announcement(
    id: PathId,
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let id = id.get()?;
    if announcements::Entity::find_by_id(id).one(&state.db).await?.is_none() {
        return Err(ApiError::not_found("announcement"));
    }
    let row = announcement_dismissals::ActiveModel {
        announcement_id: Set(id),
        user_id: Set(caller.user_id),
        dismissed_at: Set(palaver_entity::now()),
    };
    // Dismissing twice is fine: the first dismissal stays.
    announcement_dismissals::Entity::insert(row)
        .on_conflict_do_nothing()
        .exec_without_returning(&state.db)
        .await?;
    ok_empty()
}
