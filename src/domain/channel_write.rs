//! Writes to one channel's state, each run by the channel's actor in its order
//! (`write_channel`, see `actors/src/channel/command.rs`): the future does the database
//! write and answers the effects the actor applies (hot state, frames). Also the permission
//! checks those writes share.

use std::future::Future;

use palaver_actors::Hub;
use palaver_actors::channel::{Effect, MemberChange, Poster};
use palaver_actors::protocol::ServerFrame;
use palaver_actors::roles::Level;
use palaver_entity::{channel_bans, channel_members, channels, community_members, sender_keys};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::{ChannelUpdate, caller_level, channel_role};
use crate::domain::posting::refusal;
use crate::error::{ApiError, ApiResult};

/// What a write future answers: its value and the effects of what it committed.
type Written<T> = ApiResult<(T, Vec<Effect>)>;

/// Runs `write` as a command of the channel's actor (started if none runs): after every send
/// it accepted before, and, with a `poster`, only if the channel's send rules let that poster
/// put content there. The write answers its value and the effects of what it committed; the
/// actor applies them (hot state, frames) before this returns. 403/404 when the poster is
/// refused, 503 when the actor cannot be reached.
pub(crate) async fn write_channel<T, W>(
    hub: &Hub,
    channel_id: Uuid,
    poster: Option<Poster>,
    write: W,
) -> ApiResult<T>
where
    T: Send + 'static,
    W: Future<Output = ApiResult<(T, Vec<Effect>)>> + Send + 'static,
{
    hub.channel_write(channel_id, poster, write).await.map_err(refusal)?
}

/// Effects of a change committed by a transaction that spans several channels (group joins,
/// leaves and deletions, bulk purges, account deletion), applied by each open channel's
/// actor in its order (`Hub::channel_effects`). The change is committed: a failure here is
/// only logged.
pub(crate) async fn apply_effects(hub: &Hub, channel_id: Uuid, effects: Vec<Effect>) {
    if let Err(err) = hub.channel_effects(channel_id, effects).await {
        tracing::debug!(channel = %channel_id, error = ?err, "channel effects not applied");
    }
}

/// A role change's effects: the actor learns the new role, then subscribers get
/// `member_role_updated`.
pub(crate) fn role_effects(channel_id: Uuid, user_id: Uuid, role: &str) -> [Effect; 2] {
    [
        Effect::Member(MemberChange::Upsert { user_id, role: role.to_string() }),
        Effect::Broadcast(ServerFrame::MemberRoleUpdated { channel_id, user_id, role: role.to_string() }),
    ]
}

/// Whether `user_id` belongs to the community.
pub(crate) async fn in_community(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    user_id: Uuid,
) -> ApiResult<bool> {
    Ok(community_members::Entity::find()
        .filter(community_members::Column::CommunityId.eq(community_id))
        .filter(community_members::Column::UserId.eq(user_id))
        .count(db)
        .await?
        > 0)
}

/// Applies a parsed settings change to a channel row and answers the saved row; shared by
/// `PATCH /channels/{id}` and `PATCH /groups/{gid}/channels/{chid}` (whose callers checked
/// the permission). Only the settings columns are written.
pub(crate) async fn save_channel_update(
    hub: &Hub,
    db: &DatabaseConnection,
    mut channel: channels::Model,
    update: ChannelUpdate,
) -> ApiResult<channels::Model> {
    if update.is_empty() {
        return Ok(channel);
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
    let db = db.clone();
    write_channel(hub, channel_id, None, async move {
        let channel = row.update(&db).await?;
        Ok((channel, vec![Effect::Reload { announce: true }]))
    })
    .await
}

/// Deletes a membership and the member's sender key (a non-member's key must not be served).
pub(crate) async fn remove_membership(
    db: &impl ConnectionTrait,
    channel_id: Uuid,
    user_id: Uuid,
) -> ApiResult<u64> {
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

/// The checks kick and ban share: the caller must outrank the target's channel role (403);
/// the target must be a member (404).
pub(crate) async fn check_can_remove(
    db: &DatabaseConnection,
    channel_id: Uuid,
    caller: &Caller,
    target: Uuid,
) -> ApiResult<()> {
    let level = caller_level(db, channel_id, caller).await?;
    if level <= Level::Member {
        return Err(ApiError::Forbidden);
    }
    let role = channel_role(db, channel_id, target).await?.ok_or_else(|| ApiError::not_found("member"))?;
    if level <= Level::from_role(&role) {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// Joins `user_id` as a member unless banned (403); no effect when already a member.
pub(crate) async fn join(db: &DatabaseConnection, id: Uuid, user_id: Uuid) -> Written<()> {
    let banned = channel_bans::Entity::find_by_id((id, user_id)).one(db).await?.is_some();
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
    .exec_without_returning(db)
    .await?;
    let effects = if inserted > 0 {
        vec![Effect::Member(MemberChange::Upsert { user_id, role: "member".into() })]
    } else {
        Vec::new()
    };
    Ok(((), effects))
}

/// Removes the member (404 when not one) and records the ban; `member_banned` follows.
pub(crate) async fn ban(
    db: &DatabaseConnection,
    id: Uuid,
    target: Uuid,
    by: Uuid,
    recorded_reason: Option<String>,
) -> Written<()> {
    let txn = crate::db::begin_write(db).await?;
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
}

/// Makes `target` the owner; every other owner becomes admin.
pub(crate) async fn transfer_ownership(db: &DatabaseConnection, id: Uuid, target: Uuid) -> Written<()> {
    let txn = crate::db::begin_write(db).await?;
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
    set_role(Condition::all().add(channel_members::Column::UserId.eq(target)), "owner").exec(&txn).await?;
    txn.commit().await?;
    let mut effects: Vec<Effect> =
        demoted.into_iter().flat_map(|user| role_effects(id, user, "admin")).collect();
    effects.extend(role_effects(id, target, "owner"));
    Ok(((), effects))
}

/// Stores (or replaces) the member's sender key and announces `sender_key_updated`.
pub(crate) async fn store_sender_key(
    db: &DatabaseConnection,
    id: Uuid,
    user_id: Uuid,
    chain_id: i64,
    distribution_text: String,
    distribution: serde_json::Value,
) -> Written<sender_keys::Model> {
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
        .exec_without_returning(db)
        .await?;
    let stored = sender_keys::Entity::find()
        .filter(sender_keys::Column::ChannelId.eq(id))
        .filter(sender_keys::Column::UserId.eq(user_id))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::internal("sender key vanished after upsert"))?;
    let frame =
        ServerFrame::SenderKeyUpdated { channel_id: id, user_id, chain_id: stored.chain_id, distribution };
    Ok((stored, vec![Effect::Broadcast(frame)]))
}

/// Lifts a ban (404 when none); no live effect (bans are checked when someone joins).
pub(crate) async fn unban(db: &DatabaseConnection, id: Uuid, target: Uuid) -> Written<()> {
    let removed = channel_bans::Entity::delete_many()
        .filter(channel_bans::Column::ChannelId.eq(id))
        .filter(channel_bans::Column::UserId.eq(target))
        .exec(db)
        .await?
        .rows_affected;
    if removed == 0 {
        return Err(ApiError::not_found("ban"));
    }
    Ok(((), Vec::new()))
}
