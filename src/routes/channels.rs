//! Seed sections "Channels" and "Sender Keys (Group E2E)": `/channels`, `/channels/unread`,
//! `/channels/{id}` (get, patch), join / leave, members (list, role, kick, ban, unban),
//! transfer-ownership, read-cursors and sender-keys (Bearer).
//!
//! Every write to a channel's state runs as a command of the channel's actor
//! (`write_channel`, see `actors/src/channel_command.rs`): the actor orders it after every
//! send it accepted before, runs the write, applies its effects to its hot state and emits
//! their frames, and only then does the response leave. A handler parses, gates (the
//! permission checks), hands the write to the actor and maps the answer.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use palaver_actors::channel::{Effect, MemberChange, Poster};
use palaver_actors::protocol::{ServerFrame, rfc3339};
use palaver_actors::roles::Level;
use palaver_entity::{
    channel_bans, channel_members, channels, community_members, group_members, groups, messages,
    read_cursors, sender_keys, users,
};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::domain::channel::{
    ChannelMemberView, ChannelUpdate, ChannelView, CreateChannelRequest, NewChannel, SenderKeyView,
    UpdateChannelRequest, assignable_role, ban_reason, caller_level, channel_role, effective_level,
    find_channel, require_member,
};
use crate::domain::keys;
use crate::domain::posting::refusal;
use crate::http::query::QueryParams;
use crate::error::{ApiError, ApiResult};
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// `GET /channels/{id}/members`: default and largest page.
const MEMBERS_DEFAULT_LIMIT: u64 = 200;
const MEMBERS_MAX_LIMIT: u64 = 500;

// ---------------------------------------------------------------------------------------
// Live side

/// Runs `write` as a command of the channel's actor (started if none runs): after every send
/// it accepted before, and, with a `poster`, only if the channel's send rules let that poster
/// put content there. The write answers its value and the effects of what it committed; the
/// actor applies them (hot state, frames) before this returns. 403/404 when the poster is
/// refused, 503 when the actor cannot be reached.
pub(crate) async fn write_channel<T, W>(
    state: &AppState,
    channel_id: Uuid,
    poster: Option<Poster>,
    write: W,
) -> ApiResult<T>
where
    T: Send + 'static,
    W: Future<Output = ApiResult<(T, Vec<Effect>)>> + Send + 'static,
{
    state.hub.channel_write(channel_id, poster, write).await.map_err(refusal)?
}

/// Effects of a change committed by a transaction that spans several channels (group joins,
/// leaves and deletions, bulk purges, account deletion), applied by each open channel's
/// actor in its order (`Hub::channel_effects`). The change is committed: a failure here is
/// only logged.
pub(crate) async fn apply_effects(state: &AppState, channel_id: Uuid, effects: Vec<Effect>) {
    if let Err(err) = state.hub.channel_effects(channel_id, effects).await {
        tracing::debug!(channel = %channel_id, error = ?err, "channel effects not applied");
    }
}

/// A role change's effects: the actor learns the new role, then subscribers get
/// `member_role_updated`.
fn role_effects(channel_id: Uuid, user_id: Uuid, role: &str) -> [Effect; 2] {
    [
        Effect::Member(MemberChange::Upsert { user_id, role: role.to_string() }),
        Effect::Broadcast(ServerFrame::MemberRoleUpdated { channel_id, user_id, role: role.to_string() }),
    ]
}

// ---------------------------------------------------------------------------------------
// Channels

/// GET /api/channels
pub(crate) async fn list_channels(state: AppState, caller: Caller) -> Reply {
    let mine = Query::select()
        .column(channel_members::Column::ChannelId)
        .from(channel_members::Entity)
        .and_where(channel_members::Column::UserId.eq(caller.user_id))
        .to_owned();
    let rows = channels::Entity::find()
        .filter(channels::Column::Id.in_subquery(mine))
        .order_by_asc(channels::Column::CreatedAt)
        .order_by_asc(channels::Column::Id)
        .all(&state.db)
        .await?;
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
    let txn = crate::db::begin_write(&state.db).await?;
    channels::Entity::insert(channel.clone().into_active_model()).exec_without_returning(&txn).await?;
    channel_members::Entity::insert(channel_members::ActiveModel {
        channel_id: Set(channel.id),
        user_id: Set(caller.user_id),
        role: Set("owner".into()),
        joined_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    ok_json(&ChannelView::from(&channel))
}

async fn in_community(db: &impl ConnectionTrait, community_id: Uuid, user_id: Uuid) -> ApiResult<bool> {
    Ok(community_members::Entity::find()
        .filter(community_members::Column::CommunityId.eq(community_id))
        .filter(community_members::Column::UserId.eq(user_id))
        .count(db)
        .await?
        > 0)
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
    save_channel_update(&state, channel, update).await
}

/// Applies a parsed settings change to a channel row and answers the Channel object; shared by
/// `PATCH /channels/{id}` and `PATCH /groups/{gid}/channels/{chid}` (whose callers checked
/// the permission). Only the settings columns are written.
pub(crate) async fn save_channel_update(
    state: &AppState,
    mut channel: channels::Model,
    update: ChannelUpdate,
) -> Reply {
    if update.is_empty() {
        return ok_json(&ChannelView::from(&channel));
    }
    let channel_id = channel.id;
    update.apply(&mut channel);
    let mut row = channel.into_active_model();
    for col in [
        channels::Column::Name,
        channels::Column::Topic,
        channels::Column::ReadOnly,
        channels::Column::SlowModeSeconds,
        channels::Column::MessageTtlSeconds,
        channels::Column::Discoverable,
        channels::Column::Archived,
        channels::Column::VoiceBackground,
    ] {
        row.reset(col);
    }
    // The actor reloads its settings (slow mode, read-only, TTL…) and announces
    // `channel_updated`; the new rules apply to the next send it handles.
    let db = state.db.clone();
    let channel = write_channel(state, channel_id, None, async move {
        let channel = row.update(&db).await?;
        Ok((channel, vec![Effect::Reload { announce: true }]))
    })
    .await?;
    ok_json(&ChannelView::from(&channel))
}

/// POST /api/channels/{id}/join
pub(crate) async fn join_channel(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let channel = find_channel(&state.db, id).await?;
    if channel_role(&state.db, id, caller.user_id).await?.is_some() {
        return ok_empty();
    }
    // The mirror lets anyone who knows a DM's id join it; a DM has exactly its two people.
    if channel.channel_type == "dm" {
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
    write_channel(&state, id, None, async move {
        let banned = channel_bans::Entity::find_by_id((id, user_id)).one(&db).await?.is_some();
        if banned {
            return Err(ApiError::ForbiddenBecause("you are banned from this channel".into()));
        }
        let inserted = channel_members::Entity::insert(channel_members::ActiveModel {
            channel_id: Set(id),
            user_id: Set(user_id),
            role: Set("member".into()),
            joined_at: Set(palaver_entity::now()),
        })
        .on_conflict(
            OnConflict::columns([channel_members::Column::ChannelId, channel_members::Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&db)
        .await?;
        let effects = if inserted > 0 {
            vec![Effect::Member(MemberChange::Upsert { user_id, role: "member".into() })]
        } else {
            Vec::new()
        };
        Ok(((), effects))
    })
    .await?;
    ok_empty()
}

/// POST /api/channels/{id}/leave
pub(crate) async fn leave_channel(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let channel = find_channel(&state.db, id).await?;
    let Some(role) = channel_role(&state.db, id, caller.user_id).await? else { return ok_empty() };
    if role == "owner" {
        return Err(ApiError::validation("the owner cannot leave the channel; transfer ownership first"));
    }
    if channel.channel_type == "dm" {
        return Err(ApiError::validation("you cannot leave a direct message"));
    }
    let (db, user_id) = (state.db.clone(), caller.user_id);
    write_channel(&state, id, None, async move {
        let txn = crate::db::begin_write(&db).await?;
        remove_membership(&txn, id, user_id).await?;
        txn.commit().await?;
        Ok(((), vec![Effect::Member(MemberChange::Left { user_id })]))
    })
    .await?;
    ok_empty()
}

/// Deletes a membership and the member's sender key (a non-member's key must not be served).
async fn remove_membership(db: &impl ConnectionTrait, channel_id: Uuid, user_id: Uuid) -> ApiResult<u64> {
    let removed = channel_members::Entity::delete_many()
        .filter(channel_members::Column::ChannelId.eq(channel_id))
        .filter(channel_members::Column::UserId.eq(user_id))
        .exec(db)
        .await?
        .rows_affected;
    sender_keys::Entity::delete_many()
        .filter(sender_keys::Column::ChannelId.eq(channel_id))
        .filter(sender_keys::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(removed)
}

// ---------------------------------------------------------------------------------------
// Members and moderation

/// GET /api/channels/{id}/members?limit=&offset=
pub(crate) async fn list_members(
    id: PathId,
    state: AppState,
    caller: Caller,
    query: QueryParams,
) -> Reply {
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
    let mut entries: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> = channel_members::Entity::find()
        .filter(channel_members::Column::ChannelId.eq(id))
        .order_by_asc(channel_members::Column::JoinedAt)
        .order_by_asc(channel_members::Column::UserId)
        .all(&state.db)
        .await?
        .into_iter()
        .map(|m| (m.user_id, m.role, m.joined_at))
        .collect();
    if let Some(group_id) = open_group {
        let joined: HashSet<Uuid> = entries.iter().map(|(u, _, _)| *u).collect();
        let rest = group_members::Entity::find()
            .filter(group_members::Column::GroupId.eq(group_id))
            .order_by_asc(group_members::Column::JoinedAt)
            .order_by_asc(group_members::Column::UserId)
            .all(&state.db)
            .await?;
        entries.extend(
            rest.into_iter()
                .filter(|g| !joined.contains(&g.user_id))
                .map(|g| (g.user_id, "member".into(), g.joined_at)),
        );
    }
    let page: Vec<_> = entries.into_iter().skip(offset as usize).take(limit as usize).collect();
    let ids: Vec<Uuid> = page.iter().map(|(u, _, _)| *u).collect();
    let people: HashMap<Uuid, users::Model> = if ids.is_empty() {
        HashMap::new()
    } else {
        users::Entity::find()
            .filter(users::Column::Id.is_in(ids))
            .all(&state.db)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect()
    };
    let views: Vec<ChannelMemberView> = page
        .iter()
        .filter_map(|(user_id, role, joined_at)| {
            people.get(user_id).map(|u| ChannelMemberView::new(u, role, joined_at))
        })
        .collect();
    ok_json(&views)
}

#[derive(Deserialize)]
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
    if current == "owner" {
        return Err(ApiError::validation("the owner's role changes only by transferring ownership"));
    }
    let db = state.db.clone();
    write_channel(&state, id, None, async move {
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

/// The checks kick and ban share: the caller must outrank the target's channel role (403);
/// the target must be a member (404).
async fn check_can_remove(
    state: &AppState,
    channel_id: Uuid,
    caller: &Caller,
    target: Uuid,
) -> ApiResult<()> {
    let level = caller_level(&state.db, channel_id, caller).await?;
    if level <= Level::Member {
        return Err(ApiError::Forbidden);
    }
    let role =
        channel_role(&state.db, channel_id, target).await?.ok_or_else(|| ApiError::not_found("member"))?;
    if level <= Level::from_role(&role) {
        return Err(ApiError::Forbidden);
    }
    Ok(())
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
    check_can_remove(&state, id, &caller, target).await?;
    let (db, by) = (state.db.clone(), caller.user_id);
    write_channel(&state, id, None, async move {
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

#[derive(Deserialize)]
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
    check_can_remove(&state, id, &caller, target).await?;
    let (db, by, recorded_reason) = (state.db.clone(), caller.user_id, reason.clone());
    write_channel(&state, id, None, async move {
        let txn = crate::db::begin_write(&db).await?;
        let removed = remove_membership(&txn, id, target).await?;
        if removed == 0 {
            return Err(ApiError::not_found("member"));
        }
        channel_bans::Entity::insert(channel_bans::ActiveModel {
            channel_id: Set(id),
            user_id: Set(target),
            reason: Set(recorded_reason),
            banned_by: Set(Some(by)),
            created_at: Set(palaver_entity::now()),
        })
        .on_conflict(
            OnConflict::columns([channel_bans::Column::ChannelId, channel_bans::Column::UserId])
                .update_columns([
                    channel_bans::Column::Reason,
                    channel_bans::Column::BannedBy,
                    channel_bans::Column::CreatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        let event = ServerFrame::MemberBanned { channel_id: id, user_id: target, banned_by: by };
        Ok(((), vec![Effect::Member(MemberChange::Removed { user_id: target, event })]))
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
    write_channel(&state, id, None, async move {
        let removed = channel_bans::Entity::delete_many()
            .filter(channel_bans::Column::ChannelId.eq(id))
            .filter(channel_bans::Column::UserId.eq(target))
            .exec(&db)
            .await?
            .rows_affected;
        if removed == 0 {
            return Err(ApiError::not_found("ban"));
        }
        Ok(((), Vec::new()))
    })
    .await?;
    let meta = serde_json::json!({"channel_id": id, "target_user_id": target});
    audit::record(&state.db, Some(caller.user_id), "channel_unban", Some(&client), Some(meta)).await;
    ok_empty()
}

#[derive(Deserialize)]
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
    write_channel(&state, id, None, async move {
        let txn = crate::db::begin_write(&db).await?;
        // Every current owner (the caller, or the owner an instance admin acts for) becomes
        // admin.
        let demoted: Vec<Uuid> = channel_members::Entity::find()
            .filter(channel_members::Column::ChannelId.eq(id))
            .filter(channel_members::Column::Role.eq("owner"))
            .filter(channel_members::Column::UserId.ne(target))
            .all(&txn)
            .await?
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let set_role = |user: Condition, role: &'static str| {
            channel_members::Entity::update_many()
                .col_expr(channel_members::Column::Role, Expr::value(role))
                .filter(channel_members::Column::ChannelId.eq(id))
                .filter(user)
        };
        if !demoted.is_empty() {
            set_role(Condition::all().add(channel_members::Column::UserId.is_in(demoted.clone())), "admin")
                .exec(&txn)
                .await?;
        }
        set_role(Condition::all().add(channel_members::Column::UserId.eq(target)), "owner")
            .exec(&txn)
            .await?;
        txn.commit().await?;
        let mut effects: Vec<Effect> =
            demoted.into_iter().flat_map(|user| role_effects(id, user, "admin")).collect();
        effects.extend(role_effects(id, target, "owner"));
        Ok(((), effects))
    })
    .await?;
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Read state

#[derive(Serialize)]
struct UnreadView {
    channel_id: Uuid,
    unread_count: i64,
}

/// GET /api/channels/unread
pub(crate) async fn unread_counts(state: AppState, caller: Caller) -> Reply {
    let me = caller.user_id;
    let m = Alias::new("m");
    let cm = Alias::new("cm");
    let rc = Alias::new("rc");
    let col = |table: &Alias, c: &str| Expr::col((table.clone(), Alias::new(c)));
    let mut stmt = Query::select();
    stmt.expr_as(col(&m, "channel_id"), Alias::new("channel_id"))
        .expr_as(col(&m, "id").count(), Alias::new("unread_count"))
        .from_as(messages::Entity, m.clone())
        .join_as(
            JoinType::InnerJoin,
            channel_members::Entity,
            cm.clone(),
            col(&cm, "channel_id")
                .equals((m.clone(), Alias::new("channel_id")))
                .and(col(&cm, "user_id").eq(me)),
        )
        .join_as(
            JoinType::LeftJoin,
            read_cursors::Entity,
            rc.clone(),
            col(&rc, "channel_id")
                .equals((m.clone(), Alias::new("channel_id")))
                .and(col(&rc, "user_id").eq(me)),
        )
        .and_where(
            col(&rc, "last_read_message_id").is_null().or(col(&m, "id").gt(col(&rc, "last_read_message_id"))),
        )
        .and_where(col(&m, "sender_id").is_null().or(col(&m, "sender_id").ne(me)))
        .and_where(col(&m, "deleted_at").is_null())
        .and_where(col(&m, "quarantined_at").is_null())
        .and_where(col(&m, "expires_at").is_null().or(col(&m, "expires_at").gt(palaver_entity::now())))
        .group_by_col((m.clone(), Alias::new("channel_id")));
    let rows = state.db.query_all(&stmt).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let channel_id: Uuid = row.try_get("", "channel_id")?;
        let unread_count: i64 = row.try_get("", "unread_count")?;
        if unread_count > 0 {
            out.push(UnreadView { channel_id, unread_count });
        }
    }
    out.sort_by_key(|u| u.channel_id);
    ok_json(&out)
}

#[derive(Serialize)]
struct ReadCursorView {
    user_id: Uuid,
    last_read_message_id: Option<Uuid>,
    last_read_at: String,
}

/// GET /api/channels/{id}/read-cursors
pub(crate) async fn list_read_cursors(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    require_member(&state.db, id, &caller).await?;
    let rows = read_cursors::Entity::find()
        .filter(read_cursors::Column::ChannelId.eq(id))
        .order_by_asc(read_cursors::Column::LastReadAt)
        .order_by_asc(read_cursors::Column::UserId)
        .all(&state.db)
        .await?;
    let views: Vec<ReadCursorView> = rows
        .iter()
        .map(|c| ReadCursorView {
            user_id: c.user_id,
            last_read_message_id: c.last_read_message_id,
            last_read_at: rfc3339(&c.last_read_at),
        })
        .collect();
    ok_json(&views)
}

// ---------------------------------------------------------------------------------------
// Sender keys

#[derive(Deserialize)]
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
    let stored = write_channel(&state, id, None, async move {
        let row = sender_keys::ActiveModel {
            id: Set(Uuid::now_v7()),
            channel_id: Set(id),
            user_id: Set(user_id),
            chain_id: Set(chain_id),
            distribution: Set(distribution_text),
            created_at: Set(palaver_entity::now()),
        };
        sender_keys::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([sender_keys::Column::ChannelId, sender_keys::Column::UserId])
                    .update_columns([
                        sender_keys::Column::ChainId,
                        sender_keys::Column::Distribution,
                        sender_keys::Column::CreatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&db)
            .await?;
        let stored = sender_keys::Entity::find()
            .filter(sender_keys::Column::ChannelId.eq(id))
            .filter(sender_keys::Column::UserId.eq(user_id))
            .one(&db)
            .await?
            .ok_or_else(|| ApiError::internal("sender key vanished after upsert"))?;
        let frame = ServerFrame::SenderKeyUpdated {
            channel_id: id,
            user_id,
            chain_id: stored.chain_id,
            distribution,
        };
        Ok((stored, vec![Effect::Broadcast(frame)]))
    })
    .await?;
    ok_json(&SenderKeyView::from(&stored))
}

/// GET /api/channels/{id}/sender-keys
pub(crate) async fn list_sender_keys(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    require_member(&state.db, id, &caller).await?;
    let rows = sender_keys::Entity::find()
        .filter(sender_keys::Column::ChannelId.eq(id))
        .order_by_asc(sender_keys::Column::CreatedAt)
        .order_by_asc(sender_keys::Column::UserId)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(SenderKeyView::from).collect::<Vec<_>>())
}
