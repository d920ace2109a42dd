//! Seed section "Admin": `/admin/*`. Every route needs an access token whose claims say
//! instance admin or owner (`auth::admin_only`, else 403); stricter rules are noted per route.
//!
//! Grouped like rest-admin.md; each group has its own `*_routes` function, combined in
//! `routes`: registration invites, announcements, instance settings and the webhooks
//! overview. Users are in admin_users.rs, purges / quarantine / audit log / reports in
//! admin_moderation.rs.

use std::collections::BTreeMap;

use palaver_entity::{announcements, registration_invites, webhooks};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::tokens::random_alphanumeric;
use crate::auth::{Caller, admin_only};
use crate::domain::admin::{Page, WebhookOverview};
use crate::domain::announcement::{self, AnnouncementView, announcement_frame};
use crate::domain::invite::{self, RegistrationInviteView};
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{ClientInfo, PathId, ok_empty, ok_json};
use crate::state::AppState;

/// Most announcements `GET /admin/announcements` returns.
const ANNOUNCEMENT_LIST_LIMIT: u64 = 100;

// ---------------------------------------------------------------------------------------
// Registration invites

/// GET /api/admin/invites
pub(crate) async fn list_invites(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let rows = registration_invites::Entity::find()
        .order_by_desc(registration_invites::Column::CreatedAt)
        .order_by_desc(registration_invites::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(RegistrationInviteView::from).collect::<Vec<_>>())
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateInvite {
    #[serde(default)]
    max_uses: Option<i64>,
    #[serde(default)]
    expires_in_hours: Option<i64>,
}

/// POST /api/admin/invites
pub(crate) async fn create_invite(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<CreateInvite>,
) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let body = body?;
    let max_uses = invite::max_uses(body.max_uses)?;
    let lifetime = invite::expires_in_hours(body.expires_in_hours)?;
    let now = palaver_entity::now();
    let row = registration_invites::ActiveModel {
        id: Set(Uuid::now_v7()),
        code: Set(random_alphanumeric(invite::CODE_LEN)),
        created_by: Set(Some(caller.user_id)),
        max_uses: Set(max_uses),
        used_count: Set(0),
        expires_at: Set(lifetime.map(|d| now + d)),
        created_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "admin_create_invite",
        Some(&client),
        Some(
            json!({"invite_id": row.id, "max_uses": row.max_uses, "expires_in_hours": body.expires_in_hours}),
        ),
    )
    .await;
    ok_json(&RegistrationInviteView::from(&row))
}

/// DELETE /api/admin/invites/{id}
pub(crate) async fn delete_invite(
    id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let id = id.get()?;
    let deleted = registration_invites::Entity::delete_by_id(id).exec(&state.db).await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found("invite"));
    }
    audit::record(
        &state.db,
        Some(caller.user_id),
        "admin_delete_invite",
        Some(&client),
        Some(json!({"invite_id": id})),
    )
    .await;
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Announcements

/// GET /api/admin/announcements
pub(crate) async fn list_announcements(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let rows = announcements::Entity::find()
        .order_by_desc(announcements::Column::CreatedAt)
        .order_by_desc(announcements::Column::Id)
        .limit(ANNOUNCEMENT_LIST_LIMIT)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(AnnouncementView::from).collect::<Vec<_>>())
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateAnnouncement {
    title: String,
    body: String,
}

/// POST /api/admin/announcements
pub(crate) async fn create_announcement(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<CreateAnnouncement>,
) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let body = body?;
    let (title, text) = announcement::validate(&body.title, &body.body)?;
    let row = announcements::ActiveModel {
        id: Set(Uuid::now_v7()),
        title: Set(title),
        body: Set(text),
        created_by: Set(Some(caller.user_id)),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&state.db)
    .await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "admin_create_announcement",
        Some(&client),
        Some(json!({"announcement_id": row.id, "title": row.title})),
    )
    .await;
    state.hub.send_to_everyone(&announcement_frame(&row, caller.user_id));
    ok_json(&AnnouncementView::from(&row))
}

// ---------------------------------------------------------------------------------------
// Instance settings

/// GET /api/admin/settings — only settings that were ever stored (may be `{}`).
pub(crate) async fn get_settings(state: AppState, caller: Caller) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    ok_json(&state.settings.stored())
}

/// PUT /api/admin/settings — all pairs checked before any is saved; answers the full map.
pub(crate) async fn put_settings(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<BTreeMap<String, String>>,
) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let changes = body?;
    state.settings.update(&state.db, changes.clone()).await?;
    if !changes.is_empty() {
        state.hub.settings_changed();
        audit::record(
            &state.db,
            Some(caller.user_id),
            "admin_update_settings",
            Some(&client),
            Some(json!({"changes": changes})),
        )
        .await;
    }
    ok_json(&state.settings.stored())
}

// ---------------------------------------------------------------------------------------
// Webhooks overview

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct WebhookPage {
    webhooks: Vec<WebhookOverview>,
    total: u64,
}

/// GET /api/admin/webhooks?page=&per_page= — every webhook, newest first, never the token.
pub(crate) async fn list_webhooks(
    state: AppState,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<warp::reply::Response> {
    admin_only(&caller)?;
    let page = Page::from_query(&query)?;
    let total = webhooks::Entity::find().count(&state.db).await?;
    let rows = webhooks::Entity::find()
        .order_by_desc(webhooks::Column::CreatedAt)
        .order_by_desc(webhooks::Column::Id)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&state.db)
        .await?;
    ok_json(&WebhookPage { webhooks: rows.iter().map(WebhookOverview::from).collect(), total })
}
