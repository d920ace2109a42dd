//! Seed section "Groups": `/groups` (list, create, discover), `/groups/{id}` (get, patch,
//! delete), transfer-ownership, join / leave, members, the group's channels (list, create,
//! patch, delete) and group invites (`/groups/{id}/invites`, previews and accepts under both
//! the seed's `/group-invites/{code}` and the client's `/invites/{code}`) (Bearer).
//! Icon, banner and voice-background uploads live with the image routes.
//!
//! Group membership and deletions span channels in one transaction; their effects then reach
//! each open channel's actor before the response is sent (`channel_write::apply_effects`), and
//! deleted channels' actors are stopped before `channel_deleted` / `group_deleted` go out to
//! the community.

use palaver_actors::channel::{Effect, MemberChange};
use palaver_actors::protocol::ServerFrame;
use palaver_actors::roles::Level;
use palaver_entity::{channels, group_invites, groups};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::auth::tokens::random_alphanumeric;
use crate::domain::channel::{
    ChannelUpdate, ChannelView, CreateChannelRequest, NewChannel, UpdateChannelRequest,
};
use crate::domain::channel_write::{apply_effects, save_channel_update};
use crate::domain::community::{community_role, find_community};
use crate::domain::group::{
    self, AcceptedInvite, ChannelScope, CreateGroupRequest, GroupInviteView, GroupUpdate, GroupView,
    InvitePreview, InviteState, NewGroup, UpdateGroupRequest,
};
use crate::domain::group_store::{
    accept, delete, discoverable, initial_members, insert_channel, insert_group, member_views, save_update,
    transfer, view, views, visible_channels,
};
use crate::domain::invite;
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// `GET /groups/{id}/members`: default and largest page.
const MEMBERS_DEFAULT_LIMIT: u64 = 200;
const MEMBERS_MAX_LIMIT: u64 = 500;

// ---------------------------------------------------------------------------------------
// Live side

/// Live channels learn of new members (no event: joins are not announced on the wire).
async fn announce_joins(state: &AppState, user_id: Uuid, channels: &[Uuid]) {
    for channel_id in channels {
        let change = MemberChange::Upsert { user_id, role: "member".into() };
        apply_effects(&state.hub, *channel_id, vec![Effect::Member(change)]).await;
    }
}

/// Stops the live actors of deleted channels: their subscribers hear nothing more.
async fn stop_channels(state: &AppState, channels: &[Uuid]) {
    for channel_id in channels {
        apply_effects(&state.hub, *channel_id, vec![Effect::Deleted]).await;
    }
}

/// Community scope delivery; a failure to read the member list is logged (the change itself
/// is already committed).
async fn to_community(state: &AppState, community_id: Uuid, frame: &ServerFrame) {
    if let Err(err) = state.hub.send_to_community(community_id, frame).await {
        tracing::warn!(community = %community_id, error = %err, "community event not delivered");
    }
}

// ---------------------------------------------------------------------------------------
// Groups

/// GET /api/groups
pub(crate) async fn list_groups(state: AppState, caller: Caller) -> Reply {
    let rows = groups::Entity::find()
        .filter(groups::Column::Id.in_subquery(group::groups_of(caller.user_id)))
        .order_by_asc(groups::Column::Name)
        .order_by_asc(groups::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&views(&state.db, &rows).await?)
}

/// POST /api/groups
pub(crate) async fn create_group(
    state: AppState,
    caller: Caller,
    body: ApiResult<CreateGroupRequest>,
) -> Reply {
    let new = NewGroup::parse(body?)?;
    let community = find_community(&state.db, new.community_id).await?;
    let role = community_role(&state.db, community.id, caller.user_id).await?;
    // Members only; the instance owner may act in any community.
    if role.is_none() && !caller.is_owner {
        return Err(ApiError::ForbiddenBecause("you are not a member of this community".into()));
    }
    let level = Level::effective(Level::instance(caller.is_admin, caller.is_owner), role.as_deref());
    if !group::meets_policy(level, &community.who_can_create_groups) {
        return Err(ApiError::Forbidden);
    }
    if let Some(assigned) = new.assigned_member_id {
        if !group::is_community_moderator(&state.db, community.id, &caller).await? {
            return Err(ApiError::Forbidden);
        }
        if community_role(&state.db, community.id, assigned).await?.is_none() {
            return Err(ApiError::validation("the assigned member must be a member of this community"));
        }
    }
    let members = initial_members(&state.db, &community, &new, caller.user_id).await?;

    let row = insert_group(&state.db, &community, new, caller.user_id, &members).await?;
    ok_json(&GroupView::new(&row, members.len() as i64))
}

/// GET /api/groups/discover
pub(crate) async fn discover_groups(state: AppState, caller: Caller) -> Reply {
    let rows = discoverable(&state.db, &caller).await?;
    ok_json(&views(&state.db, &rows).await?)
}

/// GET /api/groups/{id}
pub(crate) async fn get_group(id: PathId, state: AppState, caller: Caller) -> Reply {
    let (row, _) = group::require_role(&state.db, id.get()?, &caller).await?;
    ok_json(&view(&state.db, &row).await?)
}

/// PATCH /api/groups/{id}
pub(crate) async fn update_group(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<UpdateGroupRequest>,
) -> Reply {
    let id = id.get()?;
    let update = GroupUpdate::parse(body?)?;
    let (row, _) = group::require_manager(&state.db, id, &caller).await?;
    if update.allow_invites.is_some()
        && !group::is_community_moderator(&state.db, row.community_id, &caller).await?
    {
        return Err(ApiError::ForbiddenBecause("only community moderators can change allow_invites".into()));
    }
    if update.is_empty() {
        return ok_json(&view(&state.db, &row).await?);
    }
    let row = save_update(&state.db, row, update).await?;
    to_community(&state, row.community_id, &group::group_updated_frame(&row)).await;
    ok_json(&view(&state.db, &row).await?)
}

/// DELETE /api/groups/{id}
pub(crate) async fn delete_group(id: PathId, state: AppState, caller: Caller, client: ClientInfo) -> Reply {
    let row = group::find_group(&state.db, id.get()?).await?;
    let allowed = if row.assigned_member_id.is_some() {
        row.owner_id == caller.user_id
            || group::is_community_moderator(&state.db, row.community_id, &caller).await?
    } else {
        group::membership(&state.db, row.id, caller.user_id).await?.as_deref() == Some("owner")
    };
    if !allowed {
        return Err(ApiError::Forbidden);
    }
    let channel_ids = delete(&state.db, row.id).await?;
    stop_channels(&state, &channel_ids).await;
    to_community(&state, row.community_id, &ServerFrame::GroupDeleted { group_id: row.id }).await;
    let meta =
        serde_json::json!({"group_id": row.id, "group_name": row.name, "community_id": row.community_id});
    audit::record(&state.db, Some(caller.user_id), "group_deleted", Some(&client), Some(meta)).await;
    ok_empty()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "GroupTransferRequest")]
pub(crate) struct TransferRequest {
    new_owner_id: Uuid,
}

/// POST /api/groups/{id}/transfer-ownership
pub(crate) async fn transfer_ownership(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<TransferRequest>,
) -> Reply {
    let id = id.get()?;
    let target = body?.new_owner_id;
    let row = group::find_group(&state.db, id).await?;
    if group::membership(&state.db, id, caller.user_id).await?.as_deref() != Some("owner") {
        return Err(ApiError::Forbidden);
    }
    if row.assigned_member_id.is_some() {
        return Err(ApiError::validation("a personal group's ownership cannot be transferred"));
    }
    if target == caller.user_id {
        return Err(ApiError::validation("you already own this group"));
    }
    if group::membership(&state.db, id, target).await?.is_none() {
        return Err(ApiError::validation("the new owner must be a member of the group"));
    }
    transfer(&state.db, id, caller.user_id, target).await?;
    ok_empty()
}

/// POST /api/groups/{id}/join
pub(crate) async fn join_group(id: PathId, state: AppState, caller: Caller) -> Reply {
    let row = group::find_group(&state.db, id.get()?).await?;
    if row.visibility == "private" && !row.discoverable {
        return Err(ApiError::ForbiddenBecause("this group can only be joined with an invite".into()));
    }
    if !caller.is_owner && community_role(&state.db, row.community_id, caller.user_id).await?.is_none() {
        return Err(ApiError::ForbiddenBecause("you are not a member of this community".into()));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    let joined = group::add_member(&txn, row.id, caller.user_id, "member", ChannelScope::All).await?;
    txn.commit().await?;
    announce_joins(&state, caller.user_id, &joined.channels).await;
    ok_empty()
}

/// POST /api/groups/{id}/leave
pub(crate) async fn leave_group(id: PathId, state: AppState, caller: Caller) -> Reply {
    let row = group::find_group(&state.db, id.get()?).await?;
    let role = group::membership(&state.db, row.id, caller.user_id).await?.ok_or(ApiError::Forbidden)?;
    if Level::from_role(&role) == Level::Owner {
        return Err(ApiError::validation("the owner cannot leave; transfer ownership or delete the group"));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    let (all, left) = group::remove_member(&txn, row.id, caller.user_id).await?;
    txn.commit().await?;
    // The leaver's sessions stop receiving the channels at once; the others rotate keys.
    for channel_id in left {
        let change = MemberChange::Left { user_id: caller.user_id };
        apply_effects(&state.hub, channel_id, vec![Effect::Member(change)]).await;
    }
    for channel_id in all {
        let frame = ServerFrame::SenderKeyRotationRequired { channel_id, reason: "member_left".into() };
        apply_effects(&state.hub, channel_id, vec![Effect::Broadcast(frame)]).await;
    }
    ok_empty()
}

/// GET /api/groups/{id}/members?limit=&offset=
pub(crate) async fn list_members(id: PathId, state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let id = id.get()?;
    let limit = query.limit(MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT)?;
    let offset = query.offset()?;
    group::require_role(&state.db, id, &caller).await?;
    ok_json(&member_views(&state.db, id, limit, offset).await?)
}

// ---------------------------------------------------------------------------------------
// The group's channels

/// GET /api/groups/{id}/channels
pub(crate) async fn list_channels(id: PathId, state: AppState, caller: Caller) -> Reply {
    let (row, _) = group::require_role(&state.db, id.get()?, &caller).await?;
    let rows = visible_channels(&state.db, row.id, caller.user_id).await?;
    ok_json(&rows.iter().map(ChannelView::from).collect::<Vec<_>>())
}

/// POST /api/groups/{id}/channels
pub(crate) async fn create_channel(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<CreateChannelRequest>,
) -> Reply {
    let id = id.get()?;
    // `group_id` and `discoverable` in the body are ignored here.
    let new = NewChannel::parse(body?)?;
    let (row, _) = group::require_manager(&state.db, id, &caller).await?;
    let now = palaver_entity::now();
    let channel = channels::Model {
        id: Uuid::now_v7(),
        name: Some(new.name),
        channel_type: new.channel_type,
        topic: new.topic,
        created_by: Some(caller.user_id),
        group_id: Some(row.id),
        read_only: false,
        slow_mode_seconds: 0,
        discoverable: true,
        archived: false,
        voice_background: None,
        message_ttl_seconds: None,
        created_at: now,
    };
    insert_channel(&state.db, &channel, row.id, caller.user_id).await?;
    ok_json(&ChannelView::from(&channel))
}

/// A channel of this group, or 404 (missing) / 403 (another group's).
async fn group_channel(state: &AppState, group_id: Uuid, channel_id: Uuid) -> ApiResult<channels::Model> {
    let channel = crate::domain::channel::find_channel(&state.db, channel_id).await?;
    if channel.group_id != Some(group_id) {
        return Err(ApiError::Forbidden);
    }
    Ok(channel)
}

/// PATCH /api/groups/{group_id}/channels/{channel_id}
pub(crate) async fn update_channel(
    group_id: PathId,
    channel_id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<UpdateChannelRequest>,
) -> Reply {
    let (group_id, channel_id) = (group_id.get()?, channel_id.get()?);
    // The message TTL is not changed through this route.
    let update = ChannelUpdate::parse(UpdateChannelRequest { message_ttl_seconds: None, ..body? })?;
    group::require_manager(&state.db, group_id, &caller).await?;
    let channel = group_channel(&state, group_id, channel_id).await?;
    ok_json(&ChannelView::from(&save_channel_update(&state.hub, &state.db, channel, update).await?))
}

/// DELETE /api/groups/{group_id}/channels/{channel_id}
pub(crate) async fn delete_channel(
    group_id: PathId,
    channel_id: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> Reply {
    let (group_id, channel_id) = (group_id.get()?, channel_id.get()?);
    let (row, _) = group::require_manager(&state.db, group_id, &caller).await?;
    group_channel(&state, group_id, channel_id).await?;
    // Members, messages, keys and moderation rows go with it (ON DELETE CASCADE).
    channels::Entity::delete_by_id(channel_id).exec(&state.db).await?;
    stop_channels(&state, &[channel_id]).await;
    to_community(&state, row.community_id, &ServerFrame::ChannelDeleted { channel_id }).await;
    let meta = serde_json::json!({"channel_id": channel_id, "group_id": group_id});
    audit::record(&state.db, Some(caller.user_id), "channel_deleted", Some(&client), Some(meta)).await;
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Invites

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateInviteRequest {
    #[serde(default)]
    max_uses: Option<i64>,
    #[serde(default)]
    expires_in_hours: Option<i64>,
}

/// GET /api/groups/{id}/invites
pub(crate) async fn list_invites(id: PathId, state: AppState, caller: Caller) -> Reply {
    let (row, _) = group::require_manager(&state.db, id.get()?, &caller).await?;
    let rows = group_invites::Entity::find()
        .filter(group_invites::Column::GroupId.eq(row.id))
        .order_by_asc(group_invites::Column::CreatedAt)
        .order_by_asc(group_invites::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(GroupInviteView::from).collect::<Vec<_>>())
}

/// POST /api/groups/{id}/invites
pub(crate) async fn create_invite(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<CreateInviteRequest>,
) -> Reply {
    let id = id.get()?;
    let body = body?;
    let max_uses = invite::max_uses(body.max_uses)?;
    let lifetime = invite::expires_in_hours(body.expires_in_hours)?;
    let (row, _) = group::require_manager(&state.db, id, &caller).await?;
    if row.assigned_member_id.is_some()
        && !row.allow_invites
        && !group::is_community_moderator(&state.db, row.community_id, &caller).await?
    {
        return Err(ApiError::validation("invites are disabled for this personal group"));
    }
    let now = palaver_entity::now();
    let invite = group_invites::ActiveModel {
        id: Set(Uuid::now_v7()),
        group_id: Set(row.id),
        code: Set(random_alphanumeric(invite::CODE_LEN)),
        created_by: Set(Some(caller.user_id)),
        max_uses: Set(max_uses),
        used_count: Set(0),
        expires_at: Set(lifetime.map(|d| now + d)),
        created_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    ok_json(&GroupInviteView::from(&invite))
}

/// DELETE /api/groups/{id}/invites/{invite_id}
pub(crate) async fn delete_invite(id: PathId, invite_id: PathId, state: AppState, caller: Caller) -> Reply {
    let (id, invite_id) = (id.get()?, invite_id.get()?);
    group::require_manager(&state.db, id, &caller).await?;
    let removed = group_invites::Entity::delete_many()
        .filter(group_invites::Column::Id.eq(invite_id))
        .filter(group_invites::Column::GroupId.eq(id))
        .exec(&state.db)
        .await?
        .rows_affected;
    if removed == 0 {
        return Err(ApiError::not_found("invite"));
    }
    ok_empty()
}

/// The invite with this code, or 404 (over-long codes are not looked up).
async fn find_invite(state: &AppState, code: &str) -> ApiResult<group_invites::Model> {
    if code.is_empty() || code.len() > group::INVITE_CODE_MAX {
        return Err(ApiError::not_found("invite"));
    }
    group_invites::Entity::find()
        .filter(group_invites::Column::Code.eq(code))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("invite"))
}

/// GET /api/invites/{code} and GET /api/group-invites/{code}
pub(crate) async fn invite_info(code: String, state: AppState, _caller: Caller) -> Reply {
    let invite = find_invite(&state, &code).await?;
    // Expired or used up reads as unknown here (unlike accepting, which says why).
    if group::invite_state(&invite, palaver_entity::now()) != InviteState::Usable {
        return Err(ApiError::not_found("invite"));
    }
    let row = group::find_group(&state.db, invite.group_id).await?;
    let count = group::member_count(&state.db, row.id).await?;
    ok_json(&InvitePreview::new(&row, &invite, count))
}

/// POST /api/invites/{code}/accept and POST /api/group-invites/{code}/accept
pub(crate) async fn accept_invite(code: String, state: AppState, caller: Caller) -> Reply {
    let invite = find_invite(&state, &code).await?;
    match group::invite_state(&invite, palaver_entity::now()) {
        InviteState::Usable => {}
        InviteState::Expired => return Err(ApiError::validation("this invite has expired")),
        InviteState::UsedUp => return Err(ApiError::validation("this invite has been used up")),
    }
    let row = group::find_group(&state.db, invite.group_id).await?;
    if !caller.is_owner && community_role(&state.db, row.community_id, caller.user_id).await?.is_none() {
        return Err(ApiError::validation("you must be a member of this group's community to join it"));
    }
    if group::membership(&state.db, row.id, caller.user_id).await?.is_some() {
        return Err(ApiError::conflict("you are already a member of this group"));
    }
    let joined = accept(&state.db, invite.id, row.id, caller.user_id).await?;
    announce_joins(&state, caller.user_id, &joined.channels).await;
    ok_json(&AcceptedInvite { group_id: row.id, group_name: row.name })
}
