//! Mirror-only section "Push notifications": `GET /push/vapid-key` (public),
//! `POST /push/subscribe`, `POST /push/unsubscribe` (Bearer).
//!
//! The VAPID key pair is generated on first start (`crate::push::vapid`), so the key is always
//! served; sending lives in `crate::push`.

use palaver_entity::push_subscriptions;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use uuid::Uuid;
use warp::http::StatusCode;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::{ok_json, status_only};
use crate::push::endpoint::{self, MAX_ENDPOINT_BYTES};
use crate::state::AppState;

/// Longest accepted key (base64url of a 65-byte P-256 point is 87 chars; auth is 22).
const MAX_KEY_BYTES: usize = 512;

/// GET /api/push/vapid-key
pub(crate) async fn vapid_key(state: AppState) -> ApiResult<warp::reply::Response> {
    ok_json(&serde_json::json!({ "public_key": state.push.vapid_public_key() }))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct Subscribe {
    endpoint: String,
    p256dh_key: String,
    auth_key: String,
}

/// POST /api/push/subscribe
pub(crate) async fn subscribe(
    state: AppState,
    caller: Caller,
    body: ApiResult<Subscribe>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    endpoint::parse(&body.endpoint, state.push.loopback_ports()).map_err(ApiError::validation)?;
    for (name, key) in [("p256dh_key", &body.p256dh_key), ("auth_key", &body.auth_key)] {
        if key.trim().is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(ApiError::validation(format!("{name} must be 1-{MAX_KEY_BYTES} bytes")));
        }
    }
    let row = push_subscriptions::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(caller.user_id),
        endpoint: Set(body.endpoint),
        p256dh_key: Set(body.p256dh_key),
        auth_key: Set(body.auth_key),
        created_at: Set(palaver_entity::now()),
    };
    push_subscriptions::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([push_subscriptions::Column::UserId, push_subscriptions::Column::Endpoint])
                .update_columns([push_subscriptions::Column::P256dhKey, push_subscriptions::Column::AuthKey])
                .to_owned(),
        )
        .exec_without_returning(&state.db)
        .await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct Unsubscribe {
    endpoint: String,
}

/// POST /api/push/unsubscribe
pub(crate) async fn unsubscribe(
    state: AppState,
    caller: Caller,
    body: ApiResult<Unsubscribe>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    if body.endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(ApiError::validation(format!("endpoint must be at most {MAX_ENDPOINT_BYTES} bytes")));
    }
    push_subscriptions::Entity::delete_many()
        .filter(push_subscriptions::Column::UserId.eq(caller.user_id))
        .filter(push_subscriptions::Column::Endpoint.eq(body.endpoint))
        .exec(&state.db)
        .await?;
    Ok(status_only(StatusCode::NO_CONTENT))
}
