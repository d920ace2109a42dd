//! The community actor: one per active community, started on first use and stopped when idle.
//!
//! Owns: the community row, its members and their roles, and its bans — in memory, exact,
//! because every change to them is made here. Every membership, role, ban, settings and
//! moderation change of a community is ordered through its actor: it checks the rules against
//! its state, persists in one transaction, updates its state, then emits the live effects
//! (`community_updated`, `member_role_updated`, and, through the affected channel actors,
//! `member_kicked` / `member_banned` / `user_timed_out` / `user_warned`). A removed member's
//! sessions are unsubscribed from the community's channels before the command answers. Every
//! committed membership change is mirrored into the roster (presence's in-memory membership
//! index) at once.
//!
//! Never: holds a socket, panics on client input, or emits an event for a change that was not
//! committed. It calls channel actors (with a timeout); channel actors never call it, so the
//! two cannot wait on each other.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use palaver_entity::{
    channel_bans, channel_members, channel_timeouts, channel_warnings, channels, communities, community_bans,
    community_invites, community_members, group_members, groups, sender_keys, users,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod live;

pub use self::live::{CommunityRouter, CommunitySlot, LiveCommunities};
use crate::channel::{ChannelMsg, LiveChannels, MemberChange};
use crate::protocol::ServerFrame;
use crate::roles::{InstanceRole, Level};
use crate::shared::Shared;

/// Runs one write statement in a transaction opened by `CommunityState::begin` (fence
/// checked first in a cluster) and commits it; `?` turns errors into refusals.
macro_rules! fenced {
    ($state:expr, |$conn:ident| $write:expr) => {{
        let txn = $state.begin().await?;
        let $conn = &txn;
        let out = $write.await?;
        txn.commit().await?;
        out
    }};
}

/// How long an actor with nothing to do lingers before stopping.
pub const IDLE_STOP: Duration = Duration::from_secs(300);
/// How long the actor waits for a channel actor to apply a membership change.
const CHANNEL_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Roles `PUT …/members/{uid}/role` may assign.
pub const ASSIGNABLE_ROLES: [&str; 3] = ["member", "moderator", "admin"];

/// Everything the actor holds, loaded at start (and again after a crash).
#[derive(Clone, Debug)]
pub struct CommunitySnapshot {
    pub community: communities::Model,
    /// member → community role.
    pub members: HashMap<Uuid, String>,
    pub bans: HashSet<Uuid>,
}

pub async fn load_community(db: &DatabaseConnection, id: Uuid) -> Result<Option<CommunitySnapshot>, DbErr> {
    let Some(community) = communities::Entity::find_by_id(id).one(db).await? else { return Ok(None) };
    let members = community_members::Entity::find()
        .select_only()
        .column(community_members::Column::UserId)
        .column(community_members::Column::Role)
        .filter(community_members::Column::CommunityId.eq(id))
        .into_tuple::<(Uuid, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let bans = community_bans::Entity::find()
        .select_only()
        .column(community_bans::Column::UserId)
        .filter(community_bans::Column::CommunityId.eq(id))
        .into_tuple::<Uuid>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    Ok(Some(CommunitySnapshot { community, members, bans }))
}

/// Who asks for a change: the user and their instance role (from the token).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct By {
    pub user_id: Uuid,
    pub instance: InstanceRole,
}

/// A checked `PATCH /communities/{cid}`: `None` = keep; `Some(None)` = clear.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CommunityChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub icon_url: Option<Option<String>>,
    pub banner_url: Option<Option<String>>,
    pub who_can_create_groups: Option<String>,
    pub who_can_create_invites: Option<String>,
    pub discoverable: Option<bool>,
    pub welcome_message: Option<Option<String>>,
    /// The theme, already validated and serialized.
    pub community_theme: Option<String>,
}

/// A change to a community, made by the actor (serialized when another node owns it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Settings (can-manage). Emits `community_updated` to every member.
    Update { by: By, changes: CommunityChanges },
    /// Role of a member (can-manage, outrank, admin needs is-owner). Emits `member_role_updated`.
    SetRole { by: By, target: Uuid, role: String },
    /// Kick (can-moderate, outrank): out of the community, its groups and group channels.
    Kick { by: By, target: Uuid },
    /// Ban (can-moderate, outrank a member target): recorded, memberships removed.
    Ban { by: By, target: Uuid, reason: Option<String> },
    /// Lift a ban (can-moderate).
    Unban { by: By, target: Uuid },
    /// The caller leaves (owners cannot).
    Leave { by: By },
    /// Ownership to another member (is-owner); the previous owner becomes admin.
    TransferOwnership { by: By, target: Uuid },
    /// Join through an invite: usage counted atomically; auto-join public groups and their
    /// discoverable channels.
    Join { user_id: Uuid, invite_id: Uuid },
    /// Timeout in a group channel of this community (can-moderate, outrank).
    Timeout { by: By, channel_id: Uuid, target: Uuid, seconds: i64, reason: Option<String> },
    /// Lift an active timeout (can-moderate).
    RemoveTimeout { by: By, channel_id: Uuid, target: Uuid },
    /// Warning in a group channel of this community (can-moderate, outrank).
    Warn { by: By, channel_id: Uuid, target: Uuid, reason: String },
    /// Delete the community (is-owner). The actor stops afterwards.
    Delete { by: By },
}

/// What a command produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Updated(communities::Model),
    Joined(communities::Model),
    TimedOut(channel_timeouts::Model),
    Warned {
        warning: channel_warnings::Model,
        warning_count: i64,
    },
    /// Kick / ban removed the target from these channels (for the caller's audit entry).
    Removed {
        channels: Vec<Uuid>,
    },
}

/// Why a command was refused (mapped onto HTTP statuses by the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// 400
    Invalid(String),
    /// 403
    Forbidden(Option<String>),
    /// 404
    NotFound(Cow<'static, str>),
    /// 409
    Conflict(String),
    /// 503
    Unavailable,
    /// 500
    Internal(String),
}

impl From<DbErr> for Refusal {
    fn from(err: DbErr) -> Self {
        // Fenced: another node owns the community now; the caller may retry there.
        if crate::is_unavailable(&err) || crate::store::is_fenced(&err) {
            Self::Unavailable
        } else {
            Self::Internal(err.to_string())
        }
    }
}

pub type Answer = Result<Outcome, Refusal>;

pub enum CommunityMsg {
    /// From routes: a change (see `Command`). Answers when it is persisted and in effect.
    Command { command: Box<Command>, reply: RpcReplyPort<Answer> },
    /// From the hub: every member's id (community-scope delivery).
    MemberIds { reply: RpcReplyPort<Vec<Uuid>> },
    /// From routes: a user's role (`None` = not a member) and whether they are banned.
    Standing { user_id: Uuid, reply: RpcReplyPort<(Option<String>, bool)> },
    /// Internal, periodic: stop when idle.
    IdleCheck,
    /// Test hook: panic inside the actor (proves supervision restarts it).
    #[cfg(feature = "test-hooks")]
    Crash,
}

pub struct CommunityArgs {
    pub shared: Arc<Shared>,
    /// The live channel actors, told about membership changes.
    pub channels: Arc<LiveChannels>,
    pub snapshot: CommunitySnapshot,
}

pub struct CommunityActor;

pub struct CommunityState {
    shared: Arc<Shared>,
    /// The live channel actors, told about membership changes.
    channels: Arc<LiveChannels>,
    snapshot: CommunitySnapshot,
    last_activity: Instant,
    /// In a cluster: the shard epoch this actor's writes go under (`None` on one node).
    fence: Option<crate::store::Fence>,
}

impl Actor for CommunityActor {
    type Msg = CommunityMsg;
    type State = CommunityState;
    type Arguments = CommunityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CommunityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(60), || CommunityMsg::IdleCheck);
        let fence = args.shared.fence(args.snapshot.community.id);
        Ok(CommunityState {
            shared: args.shared,
            channels: args.channels,
            snapshot: args.snapshot,
            last_activity: Instant::now(),
            fence,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, CommunityMsg::IdleCheck) {
            state.last_activity = Instant::now();
        }
        match message {
            CommunityMsg::Command { command, reply } => {
                let deleting = matches!(*command, Command::Delete { .. });
                let answer = state.run(*command).await;
                let deleted = deleting && answer.is_ok();
                let _ = reply.send(answer);
                if deleted {
                    myself.stop(Some("community deleted".into()));
                }
            }
            CommunityMsg::MemberIds { reply } => {
                let _ = reply.send(state.snapshot.members.keys().copied().collect());
            }
            CommunityMsg::Standing { user_id, reply } => {
                let role = state.snapshot.members.get(&user_id).cloned();
                let _ = reply.send((role, state.snapshot.bans.contains(&user_id)));
            }
            CommunityMsg::IdleCheck => {
                if state.last_activity.elapsed() >= IDLE_STOP {
                    myself.stop(Some("idle".into()));
                }
            }
            #[cfg(feature = "test-hooks")]
            CommunityMsg::Crash => {
                panic!("crash requested for community {} (test hook)", state.snapshot.community.id)
            }
        }
        Ok(())
    }
}

impl CommunityState {
    fn id(&self) -> Uuid {
        self.snapshot.community.id
    }

    fn db(&self) -> &DatabaseConnection {
        &self.shared.db
    }

    /// A write transaction; in a cluster it first checks that this node still owns the
    /// community's shard under the epoch this actor started with (`store::Fence`), so a
    /// stale owner's command changes nothing.
    async fn begin(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        let txn = crate::db::begin_write(self.db()).await?;
        if let Some(fence) = self.fence {
            fence.check(&txn).await?;
        }
        Ok(txn)
    }

    /// Effective level (wire README, "Roles"): instance role, else community role, else member.
    fn level(&self, by: &By) -> Level {
        Level::effective(by.instance.level(), self.snapshot.members.get(&by.user_id).map(String::as_str))
    }

    /// "Is owner": the community owner or an instance role.
    fn is_owner(&self, by: &By) -> bool {
        self.level(by) >= Level::Owner
    }

    fn require(&self, ok: bool) -> Result<(), Refusal> {
        if ok { Ok(()) } else { Err(Refusal::Forbidden(None)) }
    }

    async fn run(&mut self, command: Command) -> Answer {
        match command {
            Command::Update { by, changes } => self.update(by, changes).await,
            Command::SetRole { by, target, role } => self.set_role(by, target, role).await,
            Command::Kick { by, target } => self.remove(by, target, None).await,
            Command::Ban { by, target, reason } => self.remove(by, target, Some(reason)).await,
            Command::Unban { by, target } => self.unban(by, target).await,
            Command::Leave { by } => self.leave(by).await,
            Command::TransferOwnership { by, target } => self.transfer(by, target).await,
            Command::Join { user_id, invite_id } => self.join(user_id, invite_id).await,
            Command::Timeout { by, channel_id, target, seconds, reason } => {
                self.timeout(by, channel_id, target, seconds, reason).await
            }
            Command::RemoveTimeout { by, channel_id, target } => {
                self.remove_timeout(by, channel_id, target).await
            }
            Command::Warn { by, channel_id, target, reason } => {
                self.warn(by, channel_id, target, reason).await
            }
            Command::Delete { by } => self.delete(by).await,
        }
    }

    // -----------------------------------------------------------------------------------
    // Settings

    async fn update(&mut self, by: By, changes: CommunityChanges) -> Answer {
        self.require(self.level(&by) >= Level::Admin)?;
        let mut row = self.snapshot.community.clone().into_active_model();
        let c = changes;
        if let Some(v) = c.name {
            row.name = Set(v);
        }
        if let Some(v) = c.description {
            row.description = Set(v);
        }
        if let Some(v) = c.icon_url {
            row.icon_url = Set(v);
        }
        if let Some(v) = c.banner_url {
            row.banner_url = Set(v);
        }
        if let Some(v) = c.who_can_create_groups {
            row.who_can_create_groups = Set(v);
        }
        if let Some(v) = c.who_can_create_invites {
            row.who_can_create_invites = Set(v);
        }
        if let Some(v) = c.discoverable {
            row.discoverable = Set(v);
        }
        if let Some(v) = c.welcome_message {
            row.welcome_message = Set(v);
        }
        if let Some(v) = c.community_theme {
            row.community_theme = Set(Some(v));
        }
        let updated = if row.is_changed() {
            fenced!(self, |conn| row.update(conn))
        } else {
            self.snapshot.community.clone()
        };
        self.snapshot.community = updated.clone();
        let frame = ServerFrame::CommunityUpdated {
            community_id: updated.id,
            name: Some(updated.name.clone()),
            description: updated.description.clone(),
            icon_url: updated.icon_url.clone(),
            banner_url: updated.banner_url.clone(),
            community_theme: updated.community_theme.as_deref().and_then(|t| serde_json::from_str(t).ok()),
            welcome_message: updated.welcome_message.clone(),
        };
        self.to_members(&frame);
        Ok(Outcome::Updated(updated))
    }

    // -----------------------------------------------------------------------------------
    // Roles and ownership

    async fn set_role(&mut self, by: By, target: Uuid, role: String) -> Answer {
        self.require(self.level(&by) >= Level::Admin)?;
        if target == by.user_id {
            return Err(Refusal::Invalid("you cannot change your own role".into()));
        }
        if !ASSIGNABLE_ROLES.contains(&role.as_str()) {
            return Err(Refusal::Invalid("role must be one of member, moderator, admin".into()));
        }
        let current =
            self.snapshot.members.get(&target).cloned().ok_or(Refusal::NotFound(Cow::Borrowed("member")))?;
        if Level::from_role(&current) == Level::Owner {
            return Err(Refusal::Invalid("the owner's role changes only by transferring ownership".into()));
        }
        self.require(self.level(&by) > Level::from_role(&current))?;
        if Level::from_role(&role) == Level::Admin && !self.is_owner(&by) {
            return Err(Refusal::Forbidden(Some("only the owner can appoint admins".into())));
        }
        let update = community_members::Entity::update_many()
            .col_expr(community_members::Column::Role, Expr::value(role.clone()))
            .filter(community_members::Column::CommunityId.eq(self.id()))
            .filter(community_members::Column::UserId.eq(target));
        fenced!(self, |conn| update.exec(conn));
        self.snapshot.members.insert(target, role.clone());
        self.announce_role(target, &role);
        Ok(Outcome::Done)
    }

    /// `member_role_updated` to every member: the frame's `channel_id` carries the community's
    /// id (the frame has no community field; no channel has that id, so channel views ignore it).
    fn announce_role(&self, user_id: Uuid, role: &str) {
        self.to_members(&ServerFrame::MemberRoleUpdated {
            channel_id: self.id(),
            user_id,
            role: role.into(),
        });
    }

    async fn transfer(&mut self, by: By, target: Uuid) -> Answer {
        self.require(self.is_owner(&by))?;
        let previous = self.snapshot.community.owner_id;
        if target == previous {
            return Err(Refusal::Invalid("that member already owns the community".into()));
        }
        if !self.snapshot.members.contains_key(&target) {
            return Err(Refusal::Invalid("the new owner must be a member of the community".into()));
        }
        let txn = self.begin().await?;
        communities::Entity::update_many()
            .col_expr(communities::Column::OwnerId, Expr::value(target))
            .filter(communities::Column::Id.eq(self.id()))
            .exec(&txn)
            .await?;
        let set_role = |user: Uuid, role: &'static str| {
            community_members::Entity::update_many()
                .col_expr(community_members::Column::Role, Expr::value(role))
                .filter(community_members::Column::CommunityId.eq(self.id()))
                .filter(community_members::Column::UserId.eq(user))
        };
        // Anyone else holding `owner` (the previous owner) steps down to admin.
        community_members::Entity::update_many()
            .col_expr(community_members::Column::Role, Expr::value("admin"))
            .filter(community_members::Column::CommunityId.eq(self.id()))
            .filter(community_members::Column::Role.eq("owner"))
            .exec(&txn)
            .await?;
        set_role(target, "owner").exec(&txn).await?;
        txn.commit().await?;
        self.snapshot.community.owner_id = target;
        let demoted: Vec<Uuid> = self
            .snapshot
            .members
            .iter()
            .filter(|(_, r)| Level::from_role(r) == Level::Owner)
            .map(|(u, _)| *u)
            .collect();
        for user in &demoted {
            self.snapshot.members.insert(*user, "admin".into());
        }
        self.snapshot.members.insert(target, "owner".into());
        for user in demoted {
            self.announce_role(user, "admin");
        }
        self.announce_role(target, "owner");
        Ok(Outcome::Done)
    }

    // -----------------------------------------------------------------------------------
    // Leaving, kicks and bans

    /// Kick (`ban` = None) or ban (`ban` = Some(reason)).
    async fn remove(&mut self, by: By, target: Uuid, ban: Option<Option<String>>) -> Answer {
        let level = self.level(&by);
        self.require(level >= Level::Moderator)?;
        if target == by.user_id {
            return Err(Refusal::Invalid(format!(
                "you cannot {} yourself",
                if ban.is_some() { "ban" } else { "kick" }
            )));
        }
        let role = self.snapshot.members.get(&target).cloned();
        match &role {
            Some(role) => self.require(level > Level::from_role(role))?,
            None if ban.is_none() => return Err(Refusal::NotFound(Cow::Borrowed("member"))),
            None => {
                let exists = users::Entity::find_by_id(target).count(self.db()).await? > 0;
                if !exists {
                    return Err(Refusal::NotFound(Cow::Borrowed("user")));
                }
            }
        }
        if target == self.snapshot.community.owner_id {
            return Err(Refusal::Invalid(
                "the community owner cannot be removed; transfer ownership first".into(),
            ));
        }
        let txn = self.begin().await?;
        let channels = remove_memberships(&txn, self.id(), target).await?;
        if let Some(reason) = &ban {
            community_bans::Entity::insert(community_bans::ActiveModel {
                community_id: Set(self.id()),
                user_id: Set(target),
                reason: Set(reason.clone()),
                banned_by: Set(Some(by.user_id)),
                created_at: Set(palaver_entity::now()),
            })
            .on_conflict(
                OnConflict::columns([community_bans::Column::CommunityId, community_bans::Column::UserId])
                    .update_columns([
                        community_bans::Column::Reason,
                        community_bans::Column::BannedBy,
                        community_bans::Column::CreatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        self.snapshot.members.remove(&target);
        self.shared.roster.left(self.id(), target);
        if ban.is_some() {
            self.snapshot.bans.insert(target);
        }
        for channel_id in &channels {
            let event = if ban.is_some() {
                ServerFrame::MemberBanned { channel_id: *channel_id, user_id: target, banned_by: by.user_id }
            } else {
                ServerFrame::MemberKicked { channel_id: *channel_id, user_id: target, kicked_by: by.user_id }
            };
            let change = MemberChange::Removed { user_id: target, event };
            self.channels
                .tell(*channel_id, CHANNEL_CALL_TIMEOUT, |reply| ChannelMsg::Members { change, reply })
                .await;
        }
        Ok(Outcome::Removed { channels })
    }

    async fn unban(&mut self, by: By, target: Uuid) -> Answer {
        self.require(self.level(&by) >= Level::Moderator)?;
        let delete = community_bans::Entity::delete_many()
            .filter(community_bans::Column::CommunityId.eq(self.id()))
            .filter(community_bans::Column::UserId.eq(target));
        let removed = fenced!(self, |conn| delete.exec(conn)).rows_affected;
        self.snapshot.bans.remove(&target);
        if removed == 0 {
            return Err(Refusal::NotFound(Cow::Borrowed("ban")));
        }
        Ok(Outcome::Done)
    }

    async fn leave(&mut self, by: By) -> Answer {
        let user = by.user_id;
        let Some(role) = self.snapshot.members.get(&user) else {
            return Err(Refusal::Invalid("you are not a member of this community".into()));
        };
        if Level::from_role(role) == Level::Owner || user == self.snapshot.community.owner_id {
            return Err(Refusal::Invalid("the owner cannot leave; transfer ownership first".into()));
        }
        let txn = self.begin().await?;
        let channels = remove_memberships(&txn, self.id(), user).await?;
        txn.commit().await?;
        self.snapshot.members.remove(&user);
        self.shared.roster.left(self.id(), user);
        for channel_id in channels {
            let change = MemberChange::Left { user_id: user };
            self.channels
                .tell(channel_id, CHANNEL_CALL_TIMEOUT, |reply| ChannelMsg::Members { change, reply })
                .await;
            self.channels.broadcast(
                channel_id,
                &ServerFrame::SenderKeyRotationRequired { channel_id, reason: "member_left".into() },
            );
        }
        Ok(Outcome::Done)
    }

    // -----------------------------------------------------------------------------------
    // Joining

    async fn join(&mut self, user_id: Uuid, invite_id: Uuid) -> Answer {
        if self.snapshot.bans.contains(&user_id) {
            return Err(Refusal::Forbidden(Some("you are banned from this community".into())));
        }
        if self.snapshot.members.contains_key(&user_id) {
            return Err(Refusal::Conflict("you are already a member of this community".into()));
        }
        let now = palaver_entity::now();
        let txn = self.begin().await?;
        // Counted atomically: the row only changes while the invite is still usable.
        let used = community_invites::Entity::update_many()
            .col_expr(
                community_invites::Column::UsedCount,
                Expr::col(community_invites::Column::UsedCount).add(1),
            )
            .filter(community_invites::Column::Id.eq(invite_id))
            .filter(community_invites::Column::CommunityId.eq(self.id()))
            .filter(
                Condition::any().add(community_invites::Column::MaxUses.is_null()).add(
                    Expr::col(community_invites::Column::UsedCount)
                        .lt(Expr::col(community_invites::Column::MaxUses)),
                ),
            )
            .filter(
                Condition::any()
                    .add(community_invites::Column::ExpiresAt.is_null())
                    .add(community_invites::Column::ExpiresAt.gt(now)),
            )
            .exec(&txn)
            .await?
            .rows_affected;
        if used == 0 {
            return Err(Refusal::Invalid("this invite has expired or been used up".into()));
        }
        community_members::Entity::insert(community_members::ActiveModel {
            community_id: Set(self.id()),
            user_id: Set(user_id),
            role: Set("member".into()),
            nickname: Set(None),
            joined_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        // Every public group (personal groups are private) and its discoverable channels.
        let public: Vec<Uuid> = groups::Entity::find()
            .select_only()
            .column(groups::Column::Id)
            .filter(groups::Column::CommunityId.eq(self.id()))
            .filter(groups::Column::Visibility.eq("public"))
            .into_tuple()
            .all(&txn)
            .await?;
        let mut joined_channels = Vec::new();
        if !public.is_empty() {
            for group_id in &public {
                group_members::Entity::insert(group_members::ActiveModel {
                    group_id: Set(*group_id),
                    user_id: Set(user_id),
                    role: Set("member".into()),
                    joined_at: Set(now),
                })
                .on_conflict(
                    OnConflict::columns([group_members::Column::GroupId, group_members::Column::UserId])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
            }
            let banned_from = Query::select()
                .column(channel_bans::Column::ChannelId)
                .from(channel_bans::Entity)
                .and_where(channel_bans::Column::UserId.eq(user_id))
                .to_owned();
            let open: Vec<Uuid> = channels::Entity::find()
                .select_only()
                .column(channels::Column::Id)
                .filter(channels::Column::GroupId.is_in(public))
                .filter(channels::Column::Discoverable.eq(true))
                .filter(channels::Column::Id.not_in_subquery(banned_from))
                .into_tuple()
                .all(&txn)
                .await?;
            for channel_id in open {
                let inserted = channel_members::Entity::insert(channel_members::ActiveModel {
                    channel_id: Set(channel_id),
                    user_id: Set(user_id),
                    role: Set("member".into()),
                    joined_at: Set(now),
                })
                .on_conflict(
                    OnConflict::columns([
                        channel_members::Column::ChannelId,
                        channel_members::Column::UserId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
                if inserted > 0 {
                    joined_channels.push(channel_id);
                }
            }
        }
        txn.commit().await?;
        self.snapshot.members.insert(user_id, "member".into());
        self.shared.roster.joined(self.id(), user_id);
        for channel_id in joined_channels {
            let change = MemberChange::Upsert { user_id, role: "member".into() };
            self.channels
                .tell(channel_id, CHANNEL_CALL_TIMEOUT, |reply| ChannelMsg::Members { change, reply })
                .await;
        }
        Ok(Outcome::Joined(self.snapshot.community.clone()))
    }

    // -----------------------------------------------------------------------------------
    // Channel moderation

    /// A group channel of this community, or 404.
    async fn own_channel(&self, channel_id: Uuid) -> Result<channels::Model, Refusal> {
        let channel = channels::Entity::find_by_id(channel_id)
            .one(self.db())
            .await?
            .ok_or(Refusal::NotFound(Cow::Borrowed("channel")))?;
        let Some(group_id) = channel.group_id else {
            return Err(Refusal::NotFound(Cow::Borrowed("channel")));
        };
        let in_here = groups::Entity::find_by_id(group_id)
            .filter(groups::Column::CommunityId.eq(self.id()))
            .count(self.db())
            .await?
            > 0;
        if in_here { Ok(channel) } else { Err(Refusal::NotFound(Cow::Borrowed("channel"))) }
    }

    async fn is_channel_member(&self, channel_id: Uuid, user_id: Uuid) -> Result<bool, Refusal> {
        Ok(channel_members::Entity::find_by_id((channel_id, user_id)).count(self.db()).await? > 0)
    }

    /// Outranking applies when the target is a community member (non-members have no rank).
    fn outranks(&self, by: &By, target: Uuid) -> Result<(), Refusal> {
        match self.snapshot.members.get(&target) {
            Some(role) => self.require(self.level(by) > Level::from_role(role)),
            None => Ok(()),
        }
    }

    async fn timeout(
        &mut self,
        by: By,
        channel_id: Uuid,
        target: Uuid,
        seconds: i64,
        reason: Option<String>,
    ) -> Answer {
        self.require(self.level(&by) >= Level::Moderator)?;
        self.own_channel(channel_id).await?;
        if !self.is_channel_member(channel_id, target).await? {
            return Err(Refusal::Invalid("the user is not a member of this channel".into()));
        }
        if target == by.user_id {
            return Err(Refusal::Invalid("you cannot time yourself out".into()));
        }
        self.outranks(&by, target)?;
        let now = palaver_entity::now();
        let row = channel_timeouts::Model {
            id: Uuid::now_v7(),
            channel_id,
            user_id: target,
            issued_by: Some(by.user_id),
            reason: reason.clone(),
            expires_at: now + chrono::Duration::seconds(seconds),
            created_at: now,
        };
        // A new timeout replaces any earlier one for the same user in the channel.
        let txn = self.begin().await?;
        channel_timeouts::Entity::delete_many()
            .filter(channel_timeouts::Column::ChannelId.eq(channel_id))
            .filter(channel_timeouts::Column::UserId.eq(target))
            .exec(&txn)
            .await?;
        channel_timeouts::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        self.set_channel_timeout(channel_id, target, Some(row.expires_at)).await;
        self.channels.broadcast(
            channel_id,
            &ServerFrame::UserTimedOut { channel_id, user_id: target, expires_at: row.expires_at, reason },
        );
        Ok(Outcome::TimedOut(row))
    }

    /// Tells a live channel actor about a timeout and waits until it holds it (the actor has no
    /// reply for `Timeout`, so a no-op membership read-back is used as the barrier).
    async fn set_channel_timeout(&self, channel_id: Uuid, user_id: Uuid, until: Option<DateTime<Utc>>) {
        self.channels.send_in_order(channel_id, ChannelMsg::Timeout { user_id, until }).await;
        // Messages to one actor are handled in order: once a later call is answered, the
        // timeout is in effect.
        self.channels
            .tell(channel_id, CHANNEL_CALL_TIMEOUT, |reply| ChannelMsg::Reload { announce: false, reply })
            .await;
    }

    async fn remove_timeout(&mut self, by: By, channel_id: Uuid, target: Uuid) -> Answer {
        self.require(self.level(&by) >= Level::Moderator)?;
        self.own_channel(channel_id).await?;
        let now = palaver_entity::now();
        let active = channel_timeouts::Entity::find()
            .filter(channel_timeouts::Column::ChannelId.eq(channel_id))
            .filter(channel_timeouts::Column::UserId.eq(target))
            .filter(channel_timeouts::Column::ExpiresAt.gt(now))
            .count(self.db())
            .await?;
        if active == 0 {
            return Err(Refusal::NotFound(Cow::Borrowed("timeout")));
        }
        let delete = channel_timeouts::Entity::delete_many()
            .filter(channel_timeouts::Column::ChannelId.eq(channel_id))
            .filter(channel_timeouts::Column::UserId.eq(target));
        fenced!(self, |conn| delete.exec(conn));
        self.set_channel_timeout(channel_id, target, None).await;
        Ok(Outcome::Done)
    }

    async fn warn(&mut self, by: By, channel_id: Uuid, target: Uuid, reason: String) -> Answer {
        self.require(self.level(&by) >= Level::Moderator)?;
        self.own_channel(channel_id).await?;
        if target == by.user_id {
            return Err(Refusal::Invalid("you cannot warn yourself".into()));
        }
        self.outranks(&by, target)?;
        if !self.is_channel_member(channel_id, target).await? {
            return Err(Refusal::Invalid("the user is not a member of this channel".into()));
        }
        let warning = channel_warnings::Model {
            id: Uuid::now_v7(),
            channel_id,
            user_id: target,
            issued_by: Some(by.user_id),
            reason: reason.clone(),
            created_at: palaver_entity::now(),
        };
        let insert = channel_warnings::Entity::insert(warning.clone().into_active_model());
        fenced!(self, |conn| insert.exec_without_returning(conn));
        let warning_count = channel_warnings::Entity::find()
            .filter(channel_warnings::Column::ChannelId.eq(channel_id))
            .filter(channel_warnings::Column::UserId.eq(target))
            .count(self.db())
            .await? as i64;
        self.channels.broadcast(
            channel_id,
            &ServerFrame::UserWarned { channel_id, user_id: target, reason, warning_count },
        );
        Ok(Outcome::Warned { warning, warning_count })
    }

    // -----------------------------------------------------------------------------------
    // Deletion

    async fn delete(&mut self, by: By) -> Answer {
        self.require(self.is_owner(&by))?;
        let channel_ids = group_channel_ids(self.db(), self.id()).await?;
        let memberships: Vec<(Uuid, Uuid)> = if channel_ids.is_empty() {
            Vec::new()
        } else {
            channel_members::Entity::find()
                .select_only()
                .column(channel_members::Column::ChannelId)
                .column(channel_members::Column::UserId)
                .filter(channel_members::Column::ChannelId.is_in(channel_ids))
                .into_tuple()
                .all(self.db())
                .await?
        };
        // Groups, channels, memberships, invites, bans and emojis go with it (ON DELETE CASCADE).
        let delete = communities::Entity::delete_by_id(self.id());
        fenced!(self, |conn| delete.exec(conn));
        self.snapshot.members.clear();
        self.shared.roster.community_deleted(self.id());
        // Live channels of the community stop serving everyone at once.
        for (channel_id, user_id) in memberships {
            self.channels.send(
                channel_id,
                ChannelMsg::Members { change: MemberChange::Left { user_id }, reply: None },
            );
        }
        Ok(Outcome::Done)
    }

    /// Community scope: every session of every member.
    fn to_members(&self, frame: &ServerFrame) {
        let members: Vec<Uuid> = self.snapshot.members.keys().copied().collect();
        self.shared.sessions.send_to_users(&members, &frame.encode());
    }
}

/// The ids of every channel in a group of the community.
async fn group_channel_ids(db: &impl ConnectionTrait, community_id: Uuid) -> Result<Vec<Uuid>, DbErr> {
    let of_community = Query::select()
        .column(groups::Column::Id)
        .from(groups::Entity)
        .and_where(groups::Column::CommunityId.eq(community_id))
        .to_owned();
    channels::Entity::find()
        .select_only()
        .column(channels::Column::Id)
        .filter(channels::Column::GroupId.in_subquery(of_community))
        .into_tuple()
        .all(db)
        .await
}

/// Removes a user from the community, its groups and its group channels (and their sender
/// keys there); returns the channels they were removed from.
async fn remove_memberships(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    let all_channels = group_channel_ids(db, community_id).await?;
    let channels: Vec<Uuid> = if all_channels.is_empty() {
        Vec::new()
    } else {
        channel_members::Entity::find()
            .select_only()
            .column(channel_members::Column::ChannelId)
            .filter(channel_members::Column::UserId.eq(user_id))
            .filter(channel_members::Column::ChannelId.is_in(all_channels))
            .into_tuple()
            .all(db)
            .await?
    };
    if !channels.is_empty() {
        channel_members::Entity::delete_many()
            .filter(channel_members::Column::UserId.eq(user_id))
            .filter(channel_members::Column::ChannelId.is_in(channels.clone()))
            .exec(db)
            .await?;
        sender_keys::Entity::delete_many()
            .filter(sender_keys::Column::UserId.eq(user_id))
            .filter(sender_keys::Column::ChannelId.is_in(channels.clone()))
            .exec(db)
            .await?;
    }
    let of_community = Query::select()
        .column(groups::Column::Id)
        .from(groups::Entity)
        .and_where(groups::Column::CommunityId.eq(community_id))
        .to_owned();
    group_members::Entity::delete_many()
        .filter(group_members::Column::UserId.eq(user_id))
        .filter(group_members::Column::GroupId.in_subquery(of_community))
        .exec(db)
        .await?;
    community_members::Entity::delete_many()
        .filter(community_members::Column::CommunityId.eq(community_id))
        .filter(community_members::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(channels)
}
