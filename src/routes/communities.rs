//! Seed section "Communities": `/communities` (list, create), `/community-invites/{code}`
//! (preview, accept) and the gated `/communities/{cid}/…` routes: get, update, delete,
//! transfer-ownership, leave, members (list, role, nickname, kick), bans, invites, the
//! caller's groups, and channel moderation (timeouts, warnings) (Bearer).
//!
//! Reads go to the database. Every change to membership, roles, bans, settings and channel
//! moderation goes through the community's actor (`palaver_actors::community`), which checks
//! the rules against its live state, persists, then emits the live effects; a handler here
//! parses the input, applies the community gate, sends the command and maps the outcome.
//! Icons, banners and emojis live in the image routes.

use palaver_actors::community::{Command, Outcome};
use palaver_entity::{channel_warnings, communities, community_invites, community_members};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::auth::tokens::random_alphanumeric;
use crate::domain::community::{
    self, CommunityInviteView, CommunityView, CreateCommunityRequest, InvitePreview, NewCommunity, Standing,
    TimeoutView, UpdateCommunityRequest, WarningView, by, find_community, member_count, require_member,
};
use crate::domain::community_store::{
    ban_views, groups_of_member, insert_community, member_views, usable_invite, views_of_member,
};
use crate::domain::group_store::views;
use crate::domain::invite::expires_in_hours;
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// `GET /communities`: default and largest page.
const LIST_DEFAULT_LIMIT: u64 = 100;
const LIST_MAX_LIMIT: u64 = 500;
/// `GET /communities/{cid}/members`: default and largest page.
const MEMBERS_DEFAULT_LIMIT: u64 = 200;
const MEMBERS_MAX_LIMIT: u64 = 500;
/// Length of a community invite code (`[A-Za-z0-9]`).
const INVITE_CODE_LEN: usize = 12;

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs a command on the community's actor; refusals become the matching API errors.
async fn command(state: &AppState, community_id: Uuid, command: Command) -> ApiResult<Outcome> {
    Ok(state.hub.community_command(community_id, command).await??)
}

/// The gate (`require_member`) after checking the path id (400 when malformed).
async fn gate(state: &AppState, caller: &Caller, cid: PathId) -> ApiResult<Standing> {
    let cid = cid.get()?;
    require_member(&state.db, cid, caller).await
}

fn require(ok: bool) -> ApiResult<()> {
    if ok { Ok(()) } else { Err(ApiError::Forbidden) }
}

// ---------------------------------------------------------------------------------------
// Communities

/// GET /api/communities?limit=&offset=
pub(crate) async fn list_communities(state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let limit = query.limit(LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)?;
    let offset = query.offset()?;
    let views = views_of_member(&state.db, caller.user_id, limit, offset).await?;
    ok_json(&views)
}

/// POST /api/communities
pub(crate) async fn create_community(
    state: AppState,
    caller: Caller,
    body: ApiResult<CreateCommunityRequest>,
) -> Reply {
    if !state.config.open_community_creation && !caller.is_instance_staff() {
        return Err(ApiError::ForbiddenBecause("only instance admins can create communities".into()));
    }
    let new = NewCommunity::parse(body?)?;
    let now = palaver_entity::now();
    let community = communities::Model {
        id: Uuid::now_v7(),
        name: new.name,
        description: new.description,
        icon_url: None,
        banner_url: None,
        owner_id: caller.user_id,
        who_can_create_groups: "admin".into(),
        who_can_create_invites: "admin".into(),
        discoverable: new.discoverable,
        community_theme: None,
        welcome_message: None,
        created_at: now,
    };
    insert_community(&state.db, &community).await?;
    state.hub.shared.roster.joined(community.id, caller.user_id);
    ok_json(&CommunityView::new(&community, 1))
}

/// GET /api/communities/{cid}
pub(crate) async fn get_community(cid: PathId, state: AppState, caller: Caller) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let count = member_count(&state.db, standing.community.id).await?;
    ok_json(&CommunityView::new(&standing.community, count))
}

/// PATCH /api/communities/{cid}
pub(crate) async fn update_community(
    cid: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<UpdateCommunityRequest>,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    require(standing.can_manage())?;
    let changes = community::parse_update(body?)?;
    let id = standing.community.id;
    let Outcome::Updated(community) =
        command(&state, id, Command::Update { by: by(&caller), changes }).await?
    else {
        return Err(ApiError::internal("community update: unexpected outcome"));
    };
    let count = member_count(&state.db, id).await?;
    ok_json(&CommunityView::new(&community, count))
}

/// DELETE /api/communities/{cid}
pub(crate) async fn delete_community(
    cid: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    require(standing.is_owner())?;
    let id = standing.community.id;
    command(&state, id, Command::Delete { by: by(&caller) }).await?;
    let meta = json!({"community_id": id, "name": standing.community.name});
    audit::record(&state.db, Some(caller.user_id), "community_deleted", Some(&client), Some(meta)).await;
    ok_empty()
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "CommunityTransferRequest")]
pub(crate) struct TransferRequest {
    new_owner_id: Uuid,
}

/// POST /api/communities/{cid}/transfer-ownership
pub(crate) async fn transfer_ownership(
    cid: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<TransferRequest>,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    require(standing.is_owner())?;
    let target = body?.new_owner_id;
    command(&state, standing.community.id, Command::TransferOwnership { by: by(&caller), target }).await?;
    ok_empty()
}

/// POST /api/communities/{cid}/leave
pub(crate) async fn leave_community(cid: PathId, state: AppState, caller: Caller) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    command(&state, standing.community.id, Command::Leave { by: by(&caller) }).await?;
    ok_empty()
}

/// GET /api/communities/{cid}/groups
pub(crate) async fn list_my_groups(cid: PathId, state: AppState, caller: Caller) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let views =
        views(&state.db, &groups_of_member(&state.db, standing.community.id, caller.user_id).await?).await?;
    ok_json(&views)
}

// ---------------------------------------------------------------------------------------
// Members

/// GET /api/communities/{cid}/members?limit=&offset=
pub(crate) async fn list_members(cid: PathId, state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let limit = query.limit(MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT)?;
    let offset = query.offset()?;
    let views = member_views(&state.db, standing.community.id, limit, offset).await?;
    ok_json(&views)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "CommunityRoleRequest")]
pub(crate) struct RoleRequest {
    role: String,
}

/// PUT /api/communities/{cid}/members/{uid}/role
pub(crate) async fn set_member_role(
    cid: PathId,
    uid: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<RoleRequest>,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let target = uid.get()?;
    require(standing.can_manage())?;
    let role = body?.role.trim().to_string();
    command(&state, standing.community.id, Command::SetRole { by: by(&caller), target, role }).await?;
    ok_empty()
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct NicknameRequest {
    #[serde(default)]
    nickname: Option<String>,
}

/// PUT /api/communities/{cid}/members/{uid}/nickname
pub(crate) async fn set_nickname(
    cid: PathId,
    uid: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<NicknameRequest>,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let target = uid.get()?;
    require(target == caller.user_id || standing.can_manage())?;
    let nickname = community::nickname(body?.nickname.as_deref())?;
    let updated = community_members::Entity::update_many()
        .col_expr(community_members::Column::Nickname, Expr::value(nickname))
        .filter(community_members::Column::CommunityId.eq(standing.community.id))
        .filter(community_members::Column::UserId.eq(target))
        .exec(&state.db)
        .await?
        .rows_affected;
    if updated == 0 {
        return Err(ApiError::not_found("member"));
    }
    ok_empty()
}

/// DELETE /api/communities/{cid}/members/{uid}
pub(crate) async fn kick_member(
    cid: PathId,
    uid: PathId,
    state: AppState,
    caller: ApiResult<Caller>,
    client: ClientInfo,
) -> Reply {
    moderate_member(cid, uid, &state, caller, &client, MemberAction::Kick).await
}

/// What a moderator does to one member (kick, ban, unban).
enum MemberAction {
    Kick,
    /// The body is read only once the caller is known to be a moderator.
    Ban(ApiResult<BanRequest>),
    Unban,
}

/// Kick, ban and unban share one shape: the gate, the target from the path, moderator
/// rights, the actor command, then an audit entry naming the community and the target.
async fn moderate_member(
    cid: PathId,
    uid: PathId,
    state: &AppState,
    caller: ApiResult<Caller>,
    client: &ClientInfo,
    action: MemberAction,
) -> Reply {
    let caller = caller?;
    let standing = gate(state, &caller, cid).await?;
    let target = uid.get()?;
    require(standing.can_moderate())?;
    let id = standing.community.id;
    let mut meta = json!({"community_id": id, "target_user_id": target});
    let (command_, event) = match action {
        MemberAction::Kick => (Command::Kick { by: by(&caller), target }, "community_kick"),
        MemberAction::Unban => (Command::Unban { by: by(&caller), target }, "community_unban"),
        MemberAction::Ban(body) => {
            let reason = community::reason(body?.reason.as_deref())?;
            meta["reason"] = json!(reason);
            (Command::Ban { by: by(&caller), target, reason }, "community_ban")
        }
    };
    command(state, id, command_).await?;
    audit::record(&state.db, Some(caller.user_id), event, Some(client), Some(meta)).await;
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Bans

/// GET /api/communities/{cid}/bans
pub(crate) async fn list_bans(cid: PathId, state: AppState, caller: Caller) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    require(standing.can_moderate())?;
    let views = ban_views(&state.db, standing.community.id).await?;
    ok_json(&views)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(rename = "CommunityBanRequest")]
pub(crate) struct BanRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// POST /api/communities/{cid}/bans/{uid}
pub(crate) async fn ban_user(
    cid: PathId,
    uid: PathId,
    state: AppState,
    caller: ApiResult<Caller>,
    client: ClientInfo,
    body: ApiResult<BanRequest>,
) -> Reply {
    moderate_member(cid, uid, &state, caller, &client, MemberAction::Ban(body)).await
}

/// DELETE /api/communities/{cid}/bans/{uid}
pub(crate) async fn unban_user(
    cid: PathId,
    uid: PathId,
    state: AppState,
    caller: ApiResult<Caller>,
    client: ClientInfo,
) -> Reply {
    moderate_member(cid, uid, &state, caller, &client, MemberAction::Unban).await
}

// ---------------------------------------------------------------------------------------
// Invites

/// GET /api/communities/{cid}/invites
pub(crate) async fn list_invites(cid: PathId, state: AppState, caller: Caller) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    require(standing.can_manage())?;
    let rows = community_invites::Entity::find()
        .filter(community_invites::Column::CommunityId.eq(standing.community.id))
        .order_by_asc(community_invites::Column::CreatedAt)
        .order_by_asc(community_invites::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(CommunityInviteView::from).collect::<Vec<_>>())
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct InviteRequest {
    #[serde(default)]
    max_uses: Option<i64>,
    #[serde(default)]
    expires_in_hours: Option<i64>,
}

/// POST /api/communities/{cid}/invites
pub(crate) async fn create_invite(
    cid: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<InviteRequest>,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    require(standing.meets_policy(&standing.community.who_can_create_invites))?;
    let body = body?;
    let max_uses = community::invite_max_uses(body.max_uses)?;
    let lifetime = expires_in_hours(body.expires_in_hours)?;
    let now = palaver_entity::now();
    let invite = community_invites::Model {
        id: Uuid::now_v7(),
        community_id: standing.community.id,
        code: random_alphanumeric(INVITE_CODE_LEN),
        created_by: Some(caller.user_id),
        max_uses,
        used_count: 0,
        expires_at: lifetime.map(|d| now + d),
        created_at: now,
    };
    community_invites::Entity::insert(invite.clone().into_active_model())
        .exec_without_returning(&state.db)
        .await?;
    ok_json(&CommunityInviteView::from(&invite))
}

/// DELETE /api/communities/{cid}/invites/{iid}
pub(crate) async fn delete_invite(cid: PathId, iid: PathId, state: AppState, caller: Caller) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let invite_id = iid.get()?;
    require(standing.can_manage())?;
    let removed = community_invites::Entity::delete_many()
        .filter(community_invites::Column::Id.eq(invite_id))
        .filter(community_invites::Column::CommunityId.eq(standing.community.id))
        .exec(&state.db)
        .await?
        .rows_affected;
    if removed == 0 {
        return Err(ApiError::not_found("invite"));
    }
    ok_empty()
}

/// GET /api/community-invites/{code}
pub(crate) async fn invite_preview(code: String, state: AppState, _caller: Caller) -> Reply {
    let invite = usable_invite(&state.db, &code).await?;
    let community = find_community(&state.db, invite.community_id).await?;
    let count = member_count(&state.db, community.id).await?;
    ok_json(&InvitePreview::new(&community, count, &invite.code))
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct Accepted {
    community_id: Uuid,
    community_name: String,
}

/// POST /api/community-invites/{code}/accept
pub(crate) async fn accept_invite(code: String, state: AppState, caller: Caller) -> Reply {
    let invite = usable_invite(&state.db, &code).await?;
    let joined =
        command(&state, invite.community_id, Command::Join { user_id: caller.user_id, invite_id: invite.id })
            .await?;
    let Outcome::Joined(community) = joined else {
        return Err(ApiError::internal("invite accept: unexpected outcome"));
    };
    ok_json(&Accepted { community_id: community.id, community_name: community.name })
}

// ---------------------------------------------------------------------------------------
// Channel moderation

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct TimeoutRequest {
    user_id: Uuid,
    duration_seconds: i64,
    #[serde(default)]
    reason: Option<String>,
}

/// POST /api/communities/{cid}/channels/{chid}/timeout
pub(crate) async fn timeout_user(
    cid: PathId,
    chid: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<TimeoutRequest>,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let channel_id = chid.get()?;
    require(standing.can_moderate())?;
    let body = body?;
    let seconds = community::timeout_seconds(body.duration_seconds)?;
    let reason = community::reason(body.reason.as_deref())?;
    let target = body.user_id;
    let command_ = Command::Timeout { by: by(&caller), channel_id, target, seconds, reason };
    let Outcome::TimedOut(row) = command(&state, standing.community.id, command_).await? else {
        return Err(ApiError::internal("timeout: unexpected outcome"));
    };
    let meta = json!({"community_id": standing.community.id, "channel_id": channel_id, "target_user_id": target,
        "duration_seconds": seconds});
    audit::record(&state.db, Some(caller.user_id), "timeout_issued", Some(&client), Some(meta)).await;
    ok_json(&TimeoutView::from(&row))
}

/// DELETE /api/communities/{cid}/channels/{chid}/timeout/{uid}
pub(crate) async fn remove_timeout(
    cid: PathId,
    chid: PathId,
    uid: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let (channel_id, target) = (chid.get()?, uid.get()?);
    require(standing.can_moderate())?;
    command(&state, standing.community.id, Command::RemoveTimeout { by: by(&caller), channel_id, target })
        .await?;
    let meta =
        json!({"community_id": standing.community.id, "channel_id": channel_id, "target_user_id": target});
    audit::record(&state.db, Some(caller.user_id), "timeout_removed", Some(&client), Some(meta)).await;
    ok_empty()
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct WarnRequest {
    user_id: Uuid,
    reason: String,
}

/// Which answer a warning route gives (seed/mirror `warn` vs the web client's `warnings`).
#[derive(Clone, Copy)]
pub(crate) enum WarnReply {
    Warning,
    WithCount,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct WarningWithCount {
    warning: WarningView,
    warning_count: i64,
}

/// POST /api/communities/{cid}/channels/{chid}/warn
/// POST /api/communities/{cid}/channels/{chid}/warnings (web-client alias)
pub(crate) async fn warn_user(
    cid: PathId,
    chid: PathId,
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<WarnRequest>,
    reply: WarnReply,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let channel_id = chid.get()?;
    require(standing.can_moderate())?;
    let body = body?;
    let reason = community::warning_reason(&body.reason)?;
    let target = body.user_id;
    let command_ = Command::Warn { by: by(&caller), channel_id, target, reason };
    let Outcome::Warned { warning, warning_count } = command(&state, standing.community.id, command_).await?
    else {
        return Err(ApiError::internal("warn: unexpected outcome"));
    };
    let meta =
        json!({"community_id": standing.community.id, "channel_id": channel_id, "target_user_id": target});
    audit::record(&state.db, Some(caller.user_id), "user_warned", Some(&client), Some(meta)).await;
    let view = WarningView::from(&warning);
    match reply {
        WarnReply::Warning => ok_json(&view),
        WarnReply::WithCount => ok_json(&WarningWithCount { warning: view, warning_count }),
    }
}

/// GET /api/communities/{cid}/channels/{chid}/warnings/{uid}
pub(crate) async fn list_warnings(
    cid: PathId,
    chid: PathId,
    uid: PathId,
    state: AppState,
    caller: Caller,
) -> Reply {
    let standing = gate(&state, &caller, cid).await?;
    let (channel_id, target) = (chid.get()?, uid.get()?);
    require(standing.can_moderate())?;
    community::require_group_channel(&state.db, standing.community.id, channel_id).await?;
    let rows = channel_warnings::Entity::find()
        .filter(channel_warnings::Column::ChannelId.eq(channel_id))
        .filter(channel_warnings::Column::UserId.eq(target))
        .order_by_asc(channel_warnings::Column::CreatedAt)
        .order_by_asc(channel_warnings::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(WarningView::from).collect::<Vec<_>>())
}
