//! Seed sections "Channels" and "Sender Keys (Group E2E)": `/channels`, `/channels/unread`,
//! `/channels/{id}` (get, patch), join / leave, members (list, role, kick, ban, unban),
//! transfer-ownership, read-cursors and sender-keys (Bearer).
//!
//! Every write to a channel's state runs as a command of the channel's actor
//! (`domain::channel_write`, see `actors/src/channel/command.rs`): the actor orders it after every
//! send it accepted before, runs the write, applies its effects to its hot state and emits
//! their frames, and only then does the response leave. A handler parses, gates (the
//! permission checks), hands the write to the actor and maps the answer.

use palaver_actors::channel::{Effect, MemberChange};
use palaver_actors::kinds::ChannelType;
use palaver_actors::protocol::ServerFrame;
use palaver_actors::roles::Level;
use palaver_entity::{channel_members, channels, group_members, groups};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::domain::channel::{
    ChannelUpdate, ChannelView, CreateChannelRequest, NewChannel, SenderKeyView, UpdateChannelRequest,
    assignable_role, ban_reason, caller_level, channel_role, effective_level, find_channel, require_member,
};
use crate::domain::channel_list::{
    channels_of, insert_channel, member_views, read_cursors_of, sender_keys_of, unread_counts_of,
};
use crate::domain::channel_write::{
    self, check_can_remove, in_community, remove_membership, role_effects, save_channel_update, write_channel,
};
use crate::domain::keys;
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// `GET /channels/{id}/members`: default and largest page.
const MEMBERS_DEFAULT_LIMIT: u64 = 200;
const MEMBERS_MAX_LIMIT: u64 = 500;

// ---------------------------------------------------------------------------------------
// Channels

/// GET /api/channels
pub(crate) async fn list_channels(state: AppState, caller: Caller) -> Reply {
    let rows = channels_of(&state.db, caller.user_id).await?;
    ok_json(&rows.iter().map(ChannelView::from).collect::<Vec<_>>())
}

/// POST /api/channels
pub(crate) async fn create_channel(
    state: AppState,
    caller: Caller,
    body: ApiResult<CreateChannelRequest>,
) -> Reply {
    let new = NewChannel::parse(body?)?;
    match new.group_id {
        Some(group_id) => {
            let group = groups::Entity::find_by_id(group_id)
                .one(&state.db)
                .await?
                .ok_or_else(|| ApiError::not_found("group"))?;
            if !in_community(&state.db, group.community_id, caller.user_id).await? {
                return Err(ApiError::Forbidden);
            }
            // The same per-group bound as `POST /groups/{id}/channels`.
            crate::domain::group::check_channel_room(&state.db, group_id).await?;
        }
        None => crate::domain::channel::check_creation_quota(&state.db, caller.user_id).await?,
    }
    let now = palaver_entity::now();
    let channel = channels::Model {
        id: Uuid::now_v7(),
        name: Some(new.name),
        channel_type: new.channel_type,
        topic: new.topic,
        created_by: Some(caller.user_id),
        group_id: new.group_id,
        read_only: false,
        slow_mode_seconds: 0,
        discoverable: new.discoverable,
        archived: false,
        voice_background: None,
        message_ttl_seconds: None,
        created_at: now,
    };
    insert_channel(&state.db, &channel, caller.user_id).await?;
    ok_json(&ChannelView::from(&channel))
}

/// GET /api/channels/{id}
pub(crate) async fn get_channel(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let channel = find_channel(&state.db, id).await?;
    if channel_role(&state.db, id, caller.user_id).await?.is_none() {
        return Err(ApiError::Forbidden);
    }
    ok_json(&ChannelView::from(&channel))
}

/// PATCH /api/channels/{id}
pub(crate) async fn update_channel(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<UpdateChannelRequest>,
) -> Reply {
    let id = id.get()?;
    let update = ChannelUpdate::parse(body?)?;
    let channel = find_channel(&state.db, id).await?;
    let role = channel_role(&state.db, id, caller.user_id).await?;
    if effective_level(&caller, role.as_deref()) < Level::Owner {
        return Err(ApiError::Forbidden);
    }
    ok_json(&ChannelView::from(&save_channel_update(&state.hub, &state.db, channel, update).await?))
}

/// POST /api/channels/{id}/join
pub(crate) async fn join_channel(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let channel = find_channel(&state.db, id).await?;
    if channel_role(&state.db, id, caller.user_id).await?.is_some() {
        return ok_empty();
    }
    // The mirror lets anyone who knows a DM's id join it; a DM has exactly its two people.
    if ChannelType::Dm.is(&channel.channel_type) {
        return Err(ApiError::Forbidden);
    }
    if let Some(group_id) = channel.group_id {
        let community = groups::Entity::find_by_id(group_id).one(&state.db).await?.map(|g| g.community_id);
        match community {
            Some(community_id) if in_community(&state.db, community_id, caller.user_id).await? => {}
            _ => return Err(ApiError::Forbidden),
        }
    }
    // The ban check runs in the channel's order too: a ban handled just before cannot be
    // slipped past.
    let (db, user_id) = (state.db.clone(), caller.user_id);
    write_channel(&state.hub, id, None, async move { channel_write::join(&db, id, user_id).await }).await?;
    ok_empty()
}

/// POST /api/channels/{id}/leave
pub(crate) async fn leave_channel(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let channel = find_channel(&state.db, id).await?;
    let Some(role) = channel_role(&state.db, id, caller.user_id).await? else { return ok_empty() };
    if Level::from_role(&role) == Level::Owner {
        return Err(ApiError::validation("the owner cannot leave the channel; transfer ownership first"));
    }
    if ChannelType::Dm.is(&channel.channel_type) {
        return Err(ApiError::validation("you cannot leave a direct message"));
    }
    let (db, user_id) = (state.db.clone(), caller.user_id);
    write_channel(&state.hub, id, None, async move {
        let txn = crate::db::begin_write(&db).await?;
        remove_membership(&txn, id, user_id).await?;
        txn.commit().await?;
        Ok(((), vec![Effect::Member(MemberChange::Left { user_id })]))
    })
    .await?;
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Members and moderation

/// GET /api/channels/{id}/members?limit=&offset=
pub(crate) async fn list_members(id: PathId, state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let id = id.get()?;
    let limit = query.limit(MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT)?;
    let offset = query.offset()?;
    let channel = find_channel(&state.db, id).await?;
    let is_member = channel_role(&state.db, id, caller.user_id).await?.is_some();
    // Group members who have not joined a discoverable group channel still see (and are
    // listed in) it.
    let open_group = channel.group_id.filter(|_| channel.discoverable);
    if !is_member {
        let in_group = match open_group {
            Some(group_id) => {
                group_members::Entity::find_by_id((group_id, caller.user_id)).one(&state.db).await?.is_some()
            }
            None => false,
        };
        if !in_group {
            return Err(ApiError::Forbidden);
        }
    }
    ok_json(&member_views(&state.db, id, open_group, offset, limit).await?)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ChannelRoleRequest")]
pub(crate) struct RoleRequest {
    role: String,
}

/// PATCH /api/channels/{id}/members/{user_id}/role
pub(crate) async fn set_member_role(
    id: PathId,
    user_id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<RoleRequest>,
) -> Reply {
    let (id, target) = (id.get()?, user_id.get()?);
    let role = assignable_role(body?.role.trim())?;
    if caller_level(&state.db, id, &caller).await? < Level::Owner {
        return Err(ApiError::Forbidden);
    }
    if target == caller.user_id {
        return Err(ApiError::validation("you cannot change your own role"));
    }
    let current = channel_role(&state.db, id, target).await?.ok_or_else(|| ApiError::not_found("member"))?;
    if Level::from_role(&current) == Level::Owner {
        return Err(ApiError::validation("the owner's role changes only by transferring ownership"));
    }
    let db = state.db.clone();
    write_channel(&state.hub, id, None, async move {
        channel_members::Entity::update_many()
            .col_expr(channel_members::Column::Role, Expr::value(role))
            .filter(channel_members::Column::ChannelId.eq(id))
            .filter(channel_members::Column::UserId.eq(target))
            .exec(&db)
            .await?;
        Ok(((), role_effects(id, target, role).into()))
    })
    .await?;
    ok_empty()
}

/// POST /api/channels/{id}/members/{user_id}/kick
pub(crate) async fn kick_member(
    id: PathId,
    user_id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> Reply {
    let (id, target) = (id.get()?, user_id.get()?);
    check_can_remove(&state.db, id, &caller, target).await?;
    let (db, by) = (state.db.clone(), caller.user_id);
    write_channel(&state.hub, id, None, async move {
        let txn = crate::db::begin_write(&db).await?;
        let removed = remove_membership(&txn, id, target).await?;
        txn.commit().await?;
        if removed == 0 {
            return Err(ApiError::not_found("member"));
        }
        let event = ServerFrame::MemberKicked { channel_id: id, user_id: target, kicked_by: by };
        Ok(((), vec![Effect::Member(MemberChange::Removed { user_id: target, event })]))
    })
    .await?;
    let meta = serde_json::json!({"channel_id": id, "target_user_id": target});
    audit::record(&state.db, Some(caller.user_id), "channel_kick", Some(&client), Some(meta)).await;
    ok_empty()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ChannelBanRequest")]
pub(crate) struct BanRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// POST /api/channels/{id}/members/{user_id}/ban
pub(crate) async fn ban_member(
    id: PathId,
    user_id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<BanRequest>,
) -> Reply {
    let (id, target) = (id.get()?, user_id.get()?);
    let reason = ban_reason(body?.reason.as_deref())?;
    check_can_remove(&state.db, id, &caller, target).await?;
    let (db, by, recorded_reason) = (state.db.clone(), caller.user_id, reason.clone());
    write_channel(&state.hub, id, None, async move {
        channel_write::ban(&db, id, target, by, recorded_reason).await
    })
    .await?;
    let meta = serde_json::json!({"channel_id": id, "target_user_id": target, "reason": reason});
    audit::record(&state.db, Some(caller.user_id), "channel_ban", Some(&client), Some(meta)).await;
    ok_empty()
}

/// POST /api/channels/{id}/members/{user_id}/unban
pub(crate) async fn unban_member(
    id: PathId,
    user_id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> Reply {
    let (id, target) = (id.get()?, user_id.get()?);
    if caller_level(&state.db, id, &caller).await? < Level::Moderator {
        return Err(ApiError::Forbidden);
    }
    // Ordered with joins and bans by the channel's actor; no live effect (bans are checked
    // in the database when someone joins).
    let db = state.db.clone();
    write_channel(&state.hub, id, None, async move { channel_write::unban(&db, id, target).await }).await?;
    let meta = serde_json::json!({"channel_id": id, "target_user_id": target});
    audit::record(&state.db, Some(caller.user_id), "channel_unban", Some(&client), Some(meta)).await;
    ok_empty()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ChannelTransferRequest")]
pub(crate) struct TransferRequest {
    new_owner_id: Uuid,
}

/// POST /api/channels/{id}/transfer-ownership
pub(crate) async fn transfer_ownership(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<TransferRequest>,
) -> Reply {
    let id = id.get()?;
    let target = body?.new_owner_id;
    if caller_level(&state.db, id, &caller).await? < Level::Owner {
        return Err(ApiError::Forbidden);
    }
    if target == caller.user_id {
        return Err(ApiError::validation("you cannot transfer ownership to yourself"));
    }
    if channel_role(&state.db, id, target).await?.is_none() {
        return Err(ApiError::validation("the new owner must be a member of the channel"));
    }
    let db = state.db.clone();
    write_channel(
        &state.hub,
        id,
        None,
        async move { channel_write::transfer_ownership(&db, id, target).await },
    )
    .await?;
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Read state

/// GET /api/channels/unread
pub(crate) async fn unread_counts(state: AppState, caller: Caller) -> Reply {
    let out = unread_counts_of(&state.db, caller.user_id).await?;
    ok_json(&out)
}

/// GET /api/channels/{id}/read-cursors
pub(crate) async fn list_read_cursors(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    require_member(&state.db, id, &caller).await?;
    ok_json(&read_cursors_of(&state.db, id).await?)
}

// ---------------------------------------------------------------------------------------
// Sender keys

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct SenderKeyRequest {
    chain_id: i64,
    #[serde(default)]
    distribution: Option<serde_json::Value>,
}

/// POST /api/channels/{id}/sender-keys
pub(crate) async fn upload_sender_key(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<SenderKeyRequest>,
) -> Reply {
    let id = id.get()?;
    let body = body?;
    let (distribution, distribution_text) = keys::sender_key_distribution(body.distribution)?;
    require_member(&state.db, id, &caller).await?;
    let (db, user_id, chain_id) = (state.db.clone(), caller.user_id, body.chain_id);
    let stored = write_channel(&state.hub, id, None, async move {
        channel_write::store_sender_key(&db, id, user_id, chain_id, distribution_text, distribution).await
    })
    .await?;
    ok_json(&SenderKeyView::from(&stored))
}

/// GET /api/channels/{id}/sender-keys
pub(crate) async fn list_sender_keys(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    require_member(&state.db, id, &caller).await?;
    let rows = sender_keys_of(&state.db, id).await?;
    ok_json(&rows.iter().map(SenderKeyView::from).collect::<Vec<_>>())
}
