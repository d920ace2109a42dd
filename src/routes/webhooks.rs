//! Seed section "Webhooks": `/channels/{id}/webhooks` (create, list), `/webhooks/{id}`
//! (update, delete) with Bearer; `POST /webhooks/execute/{token}` is public.
//!
//! Managing a channel's webhooks takes the caller's raw channel role `owner` (the wire gives
//! instance admins no bypass here). Executing one posts a `webhook` message through the
//! channel's actor, so it is ordered, group-committed and delivered live like any send.

use std::time::Duration;

use palaver_actors::channel::{PostError, Poster, ServerPost};
use palaver_actors::kinds::MessageType;
use palaver_actors::roles::manages_webhooks;
use palaver_entity::webhooks;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
};
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::domain::channel::{channel_role, find_channel};
use crate::domain::posting;
use crate::domain::webhook::{
    self, CreateWebhookRequest, ExecuteRequest, UpdateWebhookRequest, WebhookContent, WebhookUpdate,
    WebhookView,
};
use crate::error::{ApiError, ApiResult};
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// How long an execution waits for the channel to commit the message.
const POST_WAIT: Duration = Duration::from_secs(10);
/// Token buckets kept before forgetting idle ones (bounds memory under junk tokens).
const MAX_TRACKED_TOKENS: usize = 10_000;

/// Webhook management: the channel must exist (404) and the caller's raw role be `owner` (403).
async fn require_channel_owner(state: &AppState, channel_id: Uuid, caller: &Caller) -> ApiResult<()> {
    find_channel(&state.db, channel_id).await?;
    if manages_webhooks(channel_role(&state.db, channel_id, caller.user_id).await?.as_deref()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// The webhook (404), after checking the caller owns its channel (403).
async fn owned_webhook(state: &AppState, id: Uuid, caller: &Caller) -> ApiResult<webhooks::Model> {
    let hook = webhooks::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    require_channel_owner(state, hook.channel_id, caller).await?;
    Ok(hook)
}

/// POST /api/channels/{id}/webhooks
pub(crate) async fn create_webhook(
    id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<CreateWebhookRequest>,
) -> Reply {
    let channel_id = id.get()?;
    let body = body?;
    let name = webhook::name(&body.name)?;
    let avatar_url = webhook::avatar(body.avatar_url.as_deref())?;
    require_channel_owner(&state, channel_id, &caller).await?;
    let token = webhook::new_token();
    let row = webhooks::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel_id: Set(channel_id),
        name: Set(name),
        token_hash: Set(webhook::token_hash(&token)),
        avatar_url: Set(avatar_url),
        active: Set(true),
        created_by: Set(Some(caller.user_id)),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&state.db)
    .await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "webhook_created",
        Some(&client),
        Some(json!({"webhook_id": row.id, "channel_id": channel_id})),
    )
    .await;
    let mut view = WebhookView::from(&row);
    view.token = Some(token);
    ok_json(&view)
}

/// GET /api/channels/{id}/webhooks
pub(crate) async fn list_webhooks(id: PathId, state: AppState, caller: Caller) -> Reply {
    let channel_id = id.get()?;
    require_channel_owner(&state, channel_id, &caller).await?;
    let rows = webhooks::Entity::find()
        .filter(webhooks::Column::ChannelId.eq(channel_id))
        .order_by_asc(webhooks::Column::CreatedAt)
        .order_by_asc(webhooks::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(WebhookView::from).collect::<Vec<_>>())
}

/// PATCH /api/webhooks/{id}
pub(crate) async fn update_webhook(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<UpdateWebhookRequest>,
) -> Reply {
    let id = id.get()?;
    let update = WebhookUpdate::parse(body?)?;
    let mut hook = owned_webhook(&state, id, &caller).await?;
    update.apply(&mut hook);
    let mut active = hook.clone().into_active_model();
    active.name = Set(hook.name.clone());
    active.avatar_url = Set(hook.avatar_url.clone());
    active.active = Set(hook.active);
    let saved = active.update(&state.db).await?;
    ok_json(&WebhookView::from(&saved))
}

/// DELETE /api/webhooks/{id}
pub(crate) async fn delete_webhook(id: PathId, state: AppState, caller: Caller, client: ClientInfo) -> Reply {
    let id = id.get()?;
    let hook = owned_webhook(&state, id, &caller).await?;
    webhooks::Entity::delete_by_id(hook.id).exec(&state.db).await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "webhook_deleted",
        Some(&client),
        Some(json!({"webhook_id": hook.id, "channel_id": hook.channel_id})),
    )
    .await;
    ok_empty()
}

/// POST /api/webhooks/execute/{token} (public)
pub(crate) async fn execute_webhook(
    token: String,
    state: AppState,
    body: ApiResult<ExecuteRequest>,
) -> Reply {
    // The rate limit comes first (before any lookup), keyed by the token's hash so that no
    // secret sits in memory. The wire's mirror answers 400 here; Palaver uses 429 for limits.
    let hash = webhook::token_hash(&token);
    if state.webhook_limits.len() > MAX_TRACKED_TOKENS {
        state.webhook_limits.retain_recent();
    }
    if state.webhook_limits.check_key(&hash).is_err() {
        return Err(ApiError::RateLimited { retry_after: 1 });
    }
    let body = body?;
    if !webhook::plausible_token(&token) {
        return Err(ApiError::not_found("webhook"));
    }
    let hook = webhooks::Entity::find()
        .filter(webhooks::Column::TokenHash.eq(hash))
        .one(&state.db)
        .await?
        .filter(|h| h.active)
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let content = WebhookContent::parse(body, &hook)?;
    let post = ServerPost {
        // History shows webhook messages without a sender; the live frame names the
        // webhook's creator (wire, "Webhooks").
        sender_id: None,
        live_sender_id: hook.created_by,
        ciphertext: vec![0],
        nonce: vec![0],
        message_type: MessageType::Webhook,
        webhook_content: Some(content.to_json()),
        // The channel's rules for a plain member's send, and the creator must still hold
        // the right to manage webhooks there (left, kicked or demoted → refused).
        poster: Poster::Webhook { creator: hook.created_by },
        claim: None,
    };
    match state.hub.post_message(hook.channel_id, post, POST_WAIT).await {
        Ok(_) | Err(PostError::AlreadyDelivered) => ok_empty(),
        Err(PostError::Unavailable) => Err(ApiError::Unavailable("webhook post not committed".into())),
        Err(err) => Err(posting::refusal(err)),
    }
}
