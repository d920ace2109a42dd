//! Channel traffic across nodes. Every channel has one owner, the node holding its shard: only
//! there does its actor run, order, commit and fan out. Other nodes reach it through
//! `<prefix>.v1.own.<shard>` (request/reply, a queue group so exactly one holder answers).
//!
//! A session on another node takes part in a channel through a **stand-in** on the owner: a
//! real `Outbox` (the channel actor cannot tell it from a local socket's) whose frames go,
//! in order, onto the one link to the session's node (`link`): no task per stand-in, one
//! forwarder per node gathers what all of that node's stand-ins got into NATS messages to
//! `<prefix>.v1.node.<node>` (`forward`). A channel's fan-out hands each node's link the frame
//! once (a broadcast), and that node delivers it to its sessions subscribed there, which it
//! knows from the attaches and detaches told on the same link; what one session alone gets
//! (acks, replays, errors) is addressed to it. So membership checks, replays with `since`,
//! acks after commit, kicks, the slow reader rule and `client_nonce` all work as on one node,
//! frames are still serialized once (the owner's bytes are what every socket gets), and the
//! owner does one thing per node and frame, not one per remote session.
//!
//! Never a silent gap: core NATS may drop a message; the receiving node sees a jump in the
//! link's numbering and asks the owner for the missing messages again (the link keeps what it
//! sent for a while), delivering them first, in order. If they are gone, every session
//! subscribed through that owner, or with a stand-in there, is closed with `out_of_sync` +
//! 4008 (a jump in a session's own numbering closes that session), and their clients
//! reconnect and resume. A node losing a shard unplanned closes every subscriber of that
//! shard's channels the same way (their clients resubscribe through the new owner); when an
//! owner dies, the other nodes re-attach their resume-capable subscribers to the next owner,
//! which tells them `resync_required`. A planned move keeps them: the old owner sends each
//! stand-in's node a `Moved` after the last frames (same link, same numbering), and that node
//! re-attaches its session to the next owner from that position.
//!
//! REST changes made on a non-owner run their database write where they arrived, while the
//! owner's actor is held for them (`OwnerRequest::Hold`: earlier sends flushed, send rules
//! checked, nothing else of the channel handled until `Release` brings the write's effects),
//! so they are ordered against sends exactly as on one node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::forward::{self, FROM_HEADER, Op};
use super::link::{self, CLOSE_STAND_IN_GONE, NodeLink};
use super::shards::{Shard, shard_of};
use crate::HubError;
use crate::channel::{
    BoxFuture, CHANNEL_COMMAND_TIMEOUT, ChannelCommand, ChannelMsg, ChannelRouter, CommandAnswer, Effect,
    MemberChange, Origin, Outgoing, PostError, Poster, Resume, ServerPost, VoiceAction,
};
use crate::community::{Answer, Command, CommunityRouter};
use crate::kinds::MessageType;
use crate::metrics::HubMetrics;
use crate::outbox::{Outbox, Relay};
use crate::protocol::{Epoch, Position, RelayedFrame, ServerFrame};
use crate::registry::SessionRegistry;
use crate::shared::StreamEnd;

/// How long a request may find no owner (a shard between owners) before it is `unavailable`.
const NO_OWNER_PATIENCE: Duration = Duration::from_secs(1);
/// Pause between asks while a shard has no owner.
const NO_OWNER_RETRY: Duration = Duration::from_millis(200);
/// Longest wait for an owner's answer (its actor may take `CHANNEL_COMMAND_TIMEOUT`).
const OWNER_ANSWER_TIMEOUT: Duration = Duration::from_secs(12);
/// How long a node giving shards up waits for NATS to confirm it stopped answering for them.
const UNSUBSCRIBE_PATIENCE: Duration = Duration::from_secs(1);
/// A stand-in no request used for this long, and in no channel's subscribers, is dropped.
const STAND_IN_IDLE: Duration = Duration::from_secs(60);
/// How often stand-ins of dead nodes and idle ones are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long after a session's send, edit, delete, reaction or voice action its answer (the
/// ack, the error, the voice state) may still be on the way from the owner: a session that
/// wrote through an owner this recently is closed if that owner dies, so its client retries.
const ANSWER_IN_FLIGHT: Duration = Duration::from_secs(30);
/// How long a node waits for an owner to send lost messages again before its sessions that
/// depended on them are told to resync instead.
const RESEND_PATIENCE: Duration = Duration::from_secs(1);
/// Most messages a node asks an owner to send again at once (more lost: resync instead).
const RESEND_MAX_MESSAGES: u64 = 1024;
/// Longest an owner's channel waits for another node's held write (`OwnerRequest::Hold`).
const HOLD_LIMIT: Duration = Duration::from_secs(5);
/// Frames waiting for one node's forwarder (beyond, the stand-ins pushing close their
/// sessions as slow consumers): over a second of a 1 000-session fan-out at 500 frames/s.
const NODE_LINK_FRAMES: usize = 512 * 1024;

/// The session a request comes from, on another node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteSession {
    pub node: String,
    pub session: Uuid,
    pub user: Uuid,
    pub login: Option<Uuid>,
    /// It sent a `subscribe` with `since`: told `resync_required` rather than closed.
    pub resume_capable: bool,
}

/// A `send_message` as forwarded (already validated by the session's node).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireOutgoing {
    #[serde(with = "super::wire_bytes")]
    ciphertext: Bytes,
    #[serde(with = "super::wire_bytes")]
    nonce: Bytes,
    message_type: MessageType,
    reply_to: Option<Uuid>,
    sender_key_id: Option<Uuid>,
    thread_id: Option<Uuid>,
    client_nonce: Option<String>,
}

/// A membership change as forwarded.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireMemberChange {
    Upsert { user: Uuid, role: String },
    Left { user: Uuid },
    Removed { user: Uuid, event: RelayedFrame },
}

/// An effect of a write committed on another node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireEffect {
    Broadcast { frame: RelayedFrame },
    Member { change: WireMemberChange },
    Reload { announce: bool },
    HistoryChanged,
    Deleted,
}

/// What another node asks of a channel's owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OwnerRequest {
    Subscribe {
        from: RemoteSession,
        resume: Option<WireResume>,
    },
    Unsubscribe {
        session: Uuid,
    },
    SessionClosed {
        user: Uuid,
        session: Uuid,
    },
    Send {
        from: RemoteSession,
        message: WireOutgoing,
    },
    Edit {
        from: RemoteSession,
        message_id: Uuid,
        #[serde(with = "super::wire_bytes")]
        ciphertext: Bytes,
        #[serde(with = "super::wire_bytes")]
        nonce: Bytes,
    },
    Delete {
        from: RemoteSession,
        message_id: Uuid,
    },
    React {
        from: RemoteSession,
        message_id: Uuid,
        emoji: String,
        add: bool,
    },
    Typing {
        from: RemoteSession,
        typing: bool,
    },
    MarkRead {
        from: RemoteSession,
        message_id: Uuid,
    },
    Voice {
        from: RemoteSession,
        action: VoiceAction,
    },
    Post {
        post: ServerPost,
    },
    MayPost {
        poster: Poster,
    },
    /// A REST write on the asking node, to be ordered like one made here: the owner's actor
    /// flushes earlier sends, checks the poster's send rules, answers `Held` and then waits
    /// (handling nothing else of the channel) for the asker's `Release` with the effects.
    Hold {
        command: Uuid,
        poster: Option<Poster>,
    },
    /// The held write is done (committed or failed): apply its effects and let the channel go.
    Release {
        command: Uuid,
        effects: Vec<WireEffect>,
    },
    /// Effects of a write committed on the asking node; `only_if_live`: nothing to do when no
    /// actor runs (an actor started later loads the committed state).
    Effects {
        effects: Vec<WireEffect>,
        only_if_live: bool,
    },
    Broadcast {
        frame: RelayedFrame,
    },
    Members {
        change: WireMemberChange,
    },
    Reload {
        announce: bool,
    },
    Deleted,
    Timeout {
        user: Uuid,
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    InvalidateHistory,
    /// A community command (the envelope's id is the community's): its actor runs here only.
    Community {
        command: Command,
    },
}

impl OwnerRequest {
    /// The remote session whose stand-in this request uses on the owner, if any.
    fn stand_in_of(&self) -> Option<(Uuid, Uuid)> {
        match self {
            Self::Subscribe { from, .. }
            | Self::Send { from, .. }
            | Self::Edit { from, .. }
            | Self::Delete { from, .. }
            | Self::React { from, .. }
            | Self::Typing { from, .. }
            | Self::MarkRead { from, .. }
            | Self::Voice { from, .. } => Some((from.user, from.session)),
            _ => None,
        }
    }

    /// Whether the session waits for an answer the owner sends over the link (an ack, an
    /// error, voice state), which the owner's death would lose.
    fn answered_over_the_link(&self) -> bool {
        matches!(
            self,
            Self::Send { .. }
                | Self::Edit { .. }
                | Self::Delete { .. }
                | Self::React { .. }
                | Self::Voice { .. }
        )
    }
}

/// A `subscribe` with `since`, as forwarded: the replay budget left for the whole frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireResume {
    since: Option<Position>,
    budget: usize,
    /// `Resume::quiet`.
    #[serde(default)]
    quiet: bool,
}

/// The owner's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum OwnerAnswer {
    /// Handed to the channel's actor (its frames reach the session through its stand-in).
    Taken,
    /// The actor answered a subscribe: attached or not, and the replay budget left.
    Subscribed {
        subscribed: bool,
        budget: usize,
    },
    Posted {
        result: Result<Uuid, PostError>,
    },
    MayPost {
        result: Result<(), PostError>,
    },
    Command {
        result: CommandAnswer,
    },
    /// The actor applied it.
    Done,
    /// A community actor's answer (boxed: an outcome may carry a whole row).
    Community {
        outcome: Box<Answer>,
    },
    /// The channel's actor is held for this command: run the write, then `Release`.
    Held,
    /// The actor stopped before answering (the asker's reply port is dropped, as locally).
    Dropped,
    /// This node does not own the shard (any more): ask again.
    NotOwner,
    Refused {
        error: WireHubError,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum WireHubError {
    NotFound,
    Unavailable,
    Stopped,
    Internal(String),
}

impl From<HubError> for WireHubError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::NotFound => Self::NotFound,
            HubError::Unavailable => Self::Unavailable,
            HubError::Stopped => Self::Stopped,
            HubError::Internal(detail) => Self::Internal(detail),
        }
    }
}

impl From<WireHubError> for HubError {
    fn from(err: WireHubError) -> Self {
        match err {
            WireHubError::NotFound => Self::NotFound,
            WireHubError::Unavailable => Self::Unavailable,
            WireHubError::Stopped => Self::Stopped,
            WireHubError::Internal(detail) => Self::Internal(detail),
        }
    }
}

/// A node's request for messages an owner's link to it sent and it did not get (answered
/// with `forward::encode_resent`).
#[derive(Serialize, Deserialize)]
struct ResendRequest {
    /// The asking node (whose link).
    node: String,
    /// The link's id, as its messages carry it.
    link: u64,
    first: u64,
    last: u64,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    channel: Uuid,
    request: OwnerRequest,
}

/// What the owner's node offers the router (the hub; a trait so this module need not know it).
pub trait ChannelsHere: Send + Sync {
    /// Hands a message to this node's actor of the channel (started if needed).
    fn deliver_here(&self, channel_id: Uuid, message: ChannelMsg) -> BoxFuture<Result<(), HubError>>;
    /// Whether an actor of the channel runs (or is starting) here.
    fn live_here(&self, channel_id: Uuid) -> bool;
    /// Runs a community command on this node's actor of the community (started if needed).
    fn community_here(&self, community_id: Uuid, command: Command) -> BoxFuture<Result<Answer, HubError>>;
    /// This node lost these shards: their actors stop. Unplanned, their subscribers are
    /// closed `out_of_sync` (they resubscribe through the new owner); planned, they get the
    /// actors' last frames and are re-attached to the next owner. Answers where the streams
    /// of the channels that stopped cleanly ended (handed to the next owner if planned).
    fn shards_lost(&self, shards: HashSet<Shard>, planned: bool) -> BoxFuture<Vec<StreamEnd>>;
    /// This node took these shards; `handed` are the streams a planned handoff continues.
    fn shards_taken(&self, shards: HashSet<Shard>, handed: Vec<StreamEnd>);
    /// This node's sessions.
    fn sessions(&self) -> &SessionRegistry;
    /// A session of this node was subscribed to `channel_id` on an owner that handed the
    /// channel on (planned): attach it to the next owner, from `at`; or on an owner that died
    /// (`at` is `None`): attach it to the next owner, which tells it `resync_required`.
    fn reattach(&self, outbox: Arc<Outbox>, channel_id: Uuid, at: Option<(Epoch, u64)>);
}

/// Queue sizes of a stand-in (the same bounds as a socket's queue).
#[derive(Clone, Copy, Debug)]
pub struct StandInLimits {
    pub frames: usize,
    pub bytes: usize,
}

/// What this node knows of the messages one owner forwarded to it.
#[derive(Default)]
struct FromOwner {
    /// The owner's link (its forwarder's id) and the number of its last message.
    link: Option<(u64, u64)>,
    /// (user, session) → the last number that session was given.
    sessions: HashMap<(Uuid, Uuid), u64>,
    /// Channel → this node's sessions subscribed to it on that owner (by `Join`/`Leave`).
    channels: HashMap<Uuid, HashMap<Uuid, Arc<Outbox>>>,
}

/// A session of this node with a stand-in on an owner.
struct Dependence {
    user: Uuid,
    /// Its last send, edit, delete, reaction or voice action through that owner, if any:
    /// while an answer may be on the way, the owner's death must close the session.
    wrote_at: Option<Instant>,
}

impl Dependence {
    fn answer_in_flight(&self) -> bool {
        self.wrote_at.is_some_and(|at| at.elapsed() < ANSWER_IN_FLIGHT)
    }
}

/// A channel actor held for a write running on another node (`OwnerRequest::Hold`).
struct HeldCommand {
    /// Hands the write's effects to the held actor.
    effects: tokio::sync::oneshot::Sender<Vec<Effect>>,
    /// The actor's answer once it applied them.
    answer: ractor::concurrency::OneshotReceiver<CommandAnswer>,
}

/// One remote session's stand-in on this (owner) node.
struct StandIn {
    outbox: Arc<Outbox>,
    node: String,
    last_used: Mutex<Instant>,
}

/// This node's side of channel routing: asks owners, serves the shards it owns, keeps the
/// stand-ins of remote sessions and delivers what owners forward to its own sessions.
pub struct Router {
    /// Itself, for the futures `ChannelRouter` hands out (they outlive `&self`).
    this: std::sync::Weak<Self>,
    nats: async_nats::Client,
    prefix: String,
    node_id: String,
    /// Shards owned here (with their fencing epochs), kept by the ownership loop.
    owned: Arc<DashMap<Shard, i64>>,
    /// Live nodes as of the last ownership tick (stand-ins of others are dropped).
    live_nodes: Mutex<Vec<String>>,
    here: OnceLock<Arc<dyn ChannelsHere>>,
    /// Shard → the task answering its requests.
    serving: DashMap<Shard, JoinHandle<()>>,
    stand_ins: Arc<DashMap<Uuid, StandIn>>,
    limits: StandInLimits,
    /// Stand-ins count into a registry of their own: their frames are not this node's
    /// sockets' frames.
    stand_in_metrics: Arc<HubMetrics>,
    /// Owner node → what it forwarded here (numbering, subscriptions).
    received: Mutex<HashMap<String, FromOwner>>,
    /// (owner node, session here): this node's sessions with a stand-in on that owner.
    depends: DashMap<(String, Uuid), Dependence>,
    /// Commands of other nodes whose channel actor is held here, waiting for `Release`.
    held: Arc<DashMap<Uuid, HeldCommand>>,
    /// Other node → the one ordered link its sessions' stand-ins push into.
    links: DashMap<String, Arc<NodeLink>>,
    /// Test hook: the next forwarded batch is dropped (proves gaps are never silent).
    drop_next: AtomicBool,
    /// Test hook: the next gap is not repaired (proves an unrepairable one is never silent).
    no_resend: AtomicBool,
    /// Gaps in what owners forwarded that could not be repaired (metrics, tests).
    pub gaps: AtomicUsize,
    /// Gaps repaired by the owner sending the lost messages again (metrics, tests).
    pub gaps_repaired: AtomicUsize,
}

impl Router {
    pub fn new(
        nats: async_nats::Client,
        prefix: &str,
        node_id: &str,
        owned: Arc<DashMap<Shard, i64>>,
        limits: StandInLimits,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            nats,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            owned,
            live_nodes: Mutex::new(Vec::new()),
            here: OnceLock::new(),
            serving: DashMap::new(),
            stand_ins: Arc::new(DashMap::new()),
            limits,
            stand_in_metrics: Arc::default(),
            received: Mutex::default(),
            links: DashMap::new(),
            held: Arc::new(DashMap::new()),
            depends: DashMap::new(),
            drop_next: AtomicBool::new(false),
            no_resend: AtomicBool::new(false),
            gaps: AtomicUsize::new(0),
            gaps_repaired: AtomicUsize::new(0),
        })
    }

    /// Starts serving: this node's inbox and the stand-in sweep. Shards acquired before are
    /// served from now on.
    pub async fn start(
        self: &Arc<Self>,
        here: Arc<dyn ChannelsHere>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let _ = self.here.set(here);
        let inbox = self
            .nats
            .subscribe(format!("{}.v1.node.{}", self.prefix, self.node_id))
            .await
            .map_err(|e| format!("NATS subscribe: {e}"))?;
        let resends = self
            .nats
            .subscribe(format!("{}.v1.resend.{}", self.prefix, self.node_id))
            .await
            .map_err(|e| format!("NATS subscribe: {e}"))?;
        tokio::spawn(self.clone().inbox(inbox, stop.clone()));
        tokio::spawn(self.clone().answer_resends(resends, stop.clone()));
        tokio::spawn(self.clone().sweep(stop));
        let owned: Vec<Shard> = self.owned.iter().map(|e| *e.key()).collect();
        self.serve(&owned).await;
        Ok(())
    }

    /// Test hook: drops the next batch forwarded to a session of this node.
    #[cfg(feature = "test-hooks")]
    pub fn drop_next_forwarded(&self) {
        self.drop_next.store(true, Ordering::SeqCst);
    }

    /// Test hook: drops the next batch forwarded to a session of this node, and does not
    /// ask for it again.
    #[cfg(feature = "test-hooks")]
    pub fn lose_next_forwarded(&self) {
        self.no_resend.store(true, Ordering::SeqCst);
        self.drop_next.store(true, Ordering::SeqCst);
    }

    /// The live nodes changed. Sessions here that depended on a node now gone (a crash: it
    /// could not tell them itself) may have missed frames of its channels or answers to what
    /// they sent. A session whose answer may be lost (it wrote through that owner within
    /// `ANSWER_IN_FLIGHT`), or that cannot resync (no `since` ever), is told so and closed
    /// (4008): its client reconnects and retries. A resume-capable subscriber is re-attached
    /// to each channel's next owner, which tells it `resync_required` (`restarted`) and goes
    /// on with live frames: no reconnect wave through the survivors.
    pub(super) fn set_live_nodes(&self, live: Vec<String>) {
        if !live.is_empty() {
            let here = self.here.get();
            let gone: Vec<(String, FromOwner)> = {
                let mut received = self.received.lock().unwrap_or_else(|e| e.into_inner());
                let dead: Vec<String> =
                    received.keys().filter(|node| !live.contains(node)).cloned().collect();
                dead.into_iter().filter_map(|node| received.remove_entry(&node)).collect()
            };
            let mut to_close: HashMap<Uuid, Arc<Outbox>> = HashMap::new();
            let mut in_flight = HashSet::new();
            self.depends.retain(|(node, session), dependence| {
                if live.contains(node) {
                    return true;
                }
                if dependence.answer_in_flight() {
                    in_flight.insert(*session);
                    if let Some(outbox) = here.and_then(|h| h.sessions().session(dependence.user, *session)) {
                        to_close.insert(*session, outbox);
                    }
                }
                false
            });
            let mut reattach = Vec::new();
            for (node, from) in gone {
                for (channel, members) in from.channels {
                    for (session, outbox) in members {
                        if outbox.is_closed() || in_flight.contains(&session) {
                            continue;
                        }
                        if outbox.is_resume_capable() {
                            reattach.push((outbox, channel));
                        } else {
                            tracing::info!(%session, node, "a channel owner this session followed is gone");
                            to_close.insert(session, outbox);
                        }
                    }
                }
            }
            let out_of_sync = ServerFrame::out_of_sync().encode();
            for (session, outbox) in &to_close {
                tracing::warn!(%session, "a channel owner this session used is gone: closed to resync");
                outbox.close_out_of_sync(&out_of_sync);
            }
            if let Some(here) = here {
                for (outbox, channel) in reattach {
                    here.reattach(outbox, channel, None);
                }
                here.sessions().forget_nodes_except(&live);
            }
        }
        *self.live_nodes.lock().unwrap_or_else(|e| e.into_inner()) = live;
    }

    fn subject(&self, shard: Shard) -> String {
        format!("{}.v1.own.{shard}", self.prefix)
    }

    /// Answers requests for these (newly acquired) shards.
    pub(super) async fn serve(self: &Arc<Self>, shards: &[Shard]) {
        if self.here.get().is_none() {
            return;
        }
        for shard in shards {
            if self.serving.contains_key(shard) {
                continue;
            }
            match self.nats.queue_subscribe(self.subject(*shard), "owner".into()).await {
                Ok(requests) => {
                    let task = tokio::spawn(self.clone().answer(*shard, requests));
                    self.serving.insert(*shard, task);
                }
                Err(err) => tracing::warn!(shard, %err, "cannot serve a shard's requests"),
            }
        }
    }

    /// These shards are no longer owned here: stop answering for them, stop their actors.
    /// Stops serving `shards` (their actors stop); answers where their streams ended.
    pub(super) async fn lost(&self, shards: &[Shard], planned: bool) -> Vec<StreamEnd> {
        let mut stopped = Vec::new();
        for shard in shards {
            if let Some((_, task)) = self.serving.remove(shard) {
                task.abort();
                stopped.push(task);
            }
        }
        if !stopped.is_empty() {
            // Each ended task dropped its subscription (the unsubscribe is queued on the
            // connection); the flush's round trip comes back once NATS applied them. Until then
            // a request for these shards could still be handed to this node, which would drop
            // it unanswered and leave its asker waiting out OWNER_ANSWER_TIMEOUT.
            for task in stopped {
                let _ = task.await;
            }
            let _ = tokio::time::timeout(UNSUBSCRIBE_PATIENCE, self.nats.flush()).await;
        }
        match self.here.get() {
            Some(here) if !shards.is_empty() => {
                here.shards_lost(shards.iter().copied().collect(), planned).await
            }
            _ => Vec::new(),
        }
    }

    /// Waits (at most `patience`) until every link handed what was pushed to NATS, then
    /// flushes the connection: a leaving node's last frames and moves reach the other nodes.
    pub(super) async fn flush_links(&self, patience: Duration) {
        let give_up = Instant::now() + patience;
        while Instant::now() < give_up && !self.links.iter().all(|link| link.is_drained()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.nats.flush().await;
    }

    /// `shards` are this node's now; `handed` continue streams of a planned handoff.
    pub(super) fn taken(&self, shards: &[Shard], handed: Vec<StreamEnd>) {
        if let Some(here) = self.here.get() {
            here.shards_taken(shards.iter().copied().collect(), handed);
        }
    }

    // -------------------------------------------------------------------------------------
    // Asking the owner

    async fn ask(&self, channel_id: Uuid, request: OwnerRequest) -> Result<OwnerAnswer, HubError> {
        Ok(self.ask_owner(channel_id, request).await?.1)
    }

    /// Asks the owner; answers which node answered, and how.
    async fn ask_owner(
        &self,
        channel_id: Uuid,
        request: OwnerRequest,
    ) -> Result<(String, OwnerAnswer), HubError> {
        let payload: Bytes = serde_json::to_vec(&Envelope { channel: channel_id, request })
            .map_err(|e| HubError::Internal(e.to_string()))?
            .into();
        let subject = self.subject(shard_of(channel_id));
        let give_up = Instant::now() + NO_OWNER_PATIENCE;
        loop {
            let request =
                async_nats::Request::new().payload(payload.clone()).timeout(Some(OWNER_ANSWER_TIMEOUT));
            let retry = match self.nats.send_request(subject.clone(), request).await {
                Ok(message) => match serde_json::from_slice::<(String, OwnerAnswer)>(&message.payload) {
                    Ok((_, OwnerAnswer::NotOwner)) => true,
                    Ok(answered) => return Ok(answered),
                    Err(err) => return Err(HubError::Internal(format!("owner answer: {err}"))),
                },
                Err(err) if err.kind() == async_nats::client::RequestErrorKind::NoResponders => true,
                Err(_) => return Err(HubError::Unavailable),
            };
            if retry && Instant::now() + NO_OWNER_RETRY < give_up {
                tokio::time::sleep(NO_OWNER_RETRY).await;
            } else {
                return Err(HubError::Unavailable);
            }
        }
    }

    fn remote_session(&self, origin: &Origin) -> RemoteSession {
        RemoteSession {
            node: self.node_id.clone(),
            session: origin.outbox.session_id,
            user: origin.user_id,
            login: origin.outbox.login,
            resume_capable: origin.outbox.is_resume_capable(),
        }
    }

    /// Forwards one channel message; see `ChannelRouter::forward`.
    async fn forward_message(self: Arc<Self>, channel_id: Uuid, message: ChannelMsg) -> Result<(), HubError> {
        let from = |origin: &Origin| self.remote_session(origin);
        let (request, waiting) = match message {
            ChannelMsg::Subscribe { origin, resume, reply } => {
                let budget = resume.as_ref().map(|r| r.budget.clone());
                let wire = resume.map(|r| WireResume {
                    since: r.since.clone(),
                    budget: r.budget.load(Ordering::Acquire),
                    quiet: r.quiet,
                });
                (
                    OwnerRequest::Subscribe { from: from(&origin), resume: wire },
                    Waiting::Subscribe(reply, budget),
                )
            }
            ChannelMsg::Unsubscribe { session_id } => {
                (OwnerRequest::Unsubscribe { session: session_id }, Waiting::Nothing)
            }
            ChannelMsg::SessionClosed { user_id, session_id } => {
                (OwnerRequest::SessionClosed { user: user_id, session: session_id }, Waiting::Nothing)
            }
            ChannelMsg::Send { origin, message } => {
                let wire = WireOutgoing {
                    ciphertext: message.ciphertext,
                    nonce: message.nonce,
                    message_type: message.message_type,
                    reply_to: message.reply_to,
                    sender_key_id: message.sender_key_id,
                    thread_id: message.thread_id,
                    client_nonce: message.client_nonce,
                };
                (OwnerRequest::Send { from: from(&origin), message: wire }, Waiting::Nothing)
            }
            ChannelMsg::Edit { origin, message_id, ciphertext, nonce } => {
                (OwnerRequest::Edit { from: from(&origin), message_id, ciphertext, nonce }, Waiting::Nothing)
            }
            ChannelMsg::Delete { origin, message_id } => {
                (OwnerRequest::Delete { from: from(&origin), message_id }, Waiting::Nothing)
            }
            ChannelMsg::React { origin, message_id, emoji, add } => {
                (OwnerRequest::React { from: from(&origin), message_id, emoji, add }, Waiting::Nothing)
            }
            ChannelMsg::Typing { origin, typing } => {
                (OwnerRequest::Typing { from: from(&origin), typing }, Waiting::Nothing)
            }
            ChannelMsg::MarkRead { origin, message_id } => {
                (OwnerRequest::MarkRead { from: from(&origin), message_id }, Waiting::Nothing)
            }
            ChannelMsg::Voice { origin, action } => {
                (OwnerRequest::Voice { from: from(&origin), action }, Waiting::Nothing)
            }
            ChannelMsg::Post { post, reply } => (OwnerRequest::Post { post }, Waiting::Post(reply)),
            ChannelMsg::MayPost { poster, reply } => {
                (OwnerRequest::MayPost { poster }, Waiting::MayPost(Some(reply)))
            }
            ChannelMsg::Command { command, reply } => {
                // The owner's actor is held while the write runs here: ordered after every
                // send it accepted before, before every send after, as on one node.
                let ChannelCommand { poster, write } = command;
                let id = Uuid::new_v4();
                match self.ask(channel_id, OwnerRequest::Hold { command: id, poster }).await? {
                    OwnerAnswer::Held => {}
                    OwnerAnswer::Command { result } => {
                        let _ = reply.send(result);
                        return Ok(());
                    }
                    OwnerAnswer::Refused { error } => return Err(error.into()),
                    _ => return Err(HubError::Unavailable),
                }
                let effects = write.await.iter().map(wire_effect).collect();
                (OwnerRequest::Release { command: id, effects }, Waiting::Command(reply))
            }
            ChannelMsg::Broadcast { frame } => {
                (OwnerRequest::Broadcast { frame: frame.relayed() }, Waiting::Nothing)
            }
            ChannelMsg::Members { change, reply } => {
                (OwnerRequest::Members { change: wire_member_change(&change) }, Waiting::Unit(reply))
            }
            ChannelMsg::Reload { announce, reply } => {
                (OwnerRequest::Reload { announce }, Waiting::Unit(reply))
            }
            ChannelMsg::Deleted { reply } => (OwnerRequest::Deleted, Waiting::Unit(reply)),
            ChannelMsg::Timeout { user_id, until } => {
                (OwnerRequest::Timeout { user: user_id, until }, Waiting::Nothing)
            }
            ChannelMsg::InvalidateHistory => (OwnerRequest::InvalidateHistory, Waiting::Nothing),
            // History pages are read from the database on a non-owner (`Hub::channel`
            // refuses a remote channel); the rest are the actor's own messages.
            ChannelMsg::History { .. }
            | ChannelMsg::HistoryFill { .. }
            | ChannelMsg::Committed
            | ChannelMsg::TypingExpired { .. }
            | ChannelMsg::VoiceGrace { .. }
            | ChannelMsg::IdleCheck
            | ChannelMsg::Shutdown => return Ok(()),
            #[cfg(feature = "test-hooks")]
            ChannelMsg::Crash => return Ok(()),
        };
        let stand_in = request.stand_in_of();
        let wrote = request.answered_over_the_link();
        let (owner, answer) = self.ask_owner(channel_id, request).await?;
        // The session now depends on that owner (its stand-in there holds its subscriptions
        // and pending acks): if the owner dies, the session must hear of it.
        if let Some((user, session)) = stand_in
            && !matches!(answer, OwnerAnswer::Refused { .. } | OwnerAnswer::NotOwner)
        {
            let mut dependence =
                self.depends.entry((owner, session)).or_insert(Dependence { user, wrote_at: None });
            if wrote {
                dependence.wrote_at = Some(Instant::now());
            }
        }
        waiting.settle(answer)
    }

    // -------------------------------------------------------------------------------------
    // Answering as the owner

    async fn answer(self: Arc<Self>, shard: Shard, mut requests: async_nats::Subscriber) {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else { continue };
            let router = self.clone();
            tokio::spawn(async move {
                let answer = match serde_json::from_slice::<Envelope>(&message.payload) {
                    Ok(envelope) if shard_of(envelope.channel) != shard => {
                        OwnerAnswer::Refused { error: WireHubError::NotFound }
                    }
                    Ok(_) if !router.owned.contains_key(&shard) => OwnerAnswer::NotOwner,
                    Ok(envelope) => router.handle(envelope.channel, envelope.request).await,
                    Err(err) => OwnerAnswer::Refused { error: WireHubError::Internal(err.to_string()) },
                };
                let body = serde_json::to_vec(&(&router.node_id, &answer)).unwrap_or_default();
                let _ = router.nats.publish(reply_to, body.into()).await;
            });
        }
    }

    /// Runs one request on this node's actor of the channel and answers as it answers.
    async fn handle(&self, channel_id: Uuid, request: OwnerRequest) -> OwnerAnswer {
        let Some(here) = self.here.get() else { return OwnerAnswer::NotOwner };
        let (message, pending) = match request {
            OwnerRequest::Community { command } => {
                return match here.community_here(channel_id, command).await {
                    Ok(outcome) => OwnerAnswer::Community { outcome: Box::new(outcome) },
                    Err(error) => OwnerAnswer::Refused { error: error.into() },
                };
            }
            OwnerRequest::Subscribe { from, resume } => {
                let origin = self.stand_in(&from);
                let budget = resume.as_ref().map(|r| Arc::new(AtomicUsize::new(r.budget)));
                let resume = resume.map(|r| Resume {
                    since: r.since,
                    budget: budget.clone().unwrap_or_default(),
                    answered: Arc::new(AtomicBool::new(false)),
                    quiet: r.quiet,
                });
                let (reply, answer) = ractor::concurrency::oneshot();
                let message = ChannelMsg::Subscribe { origin, resume, reply: Some(reply.into()) };
                (message, Pending::Subscribe(answer, budget))
            }
            OwnerRequest::Unsubscribe { session } => {
                (ChannelMsg::Unsubscribe { session_id: session }, Pending::Taken)
            }
            OwnerRequest::SessionClosed { user, session } => {
                // The session is gone: so is its stand-in (closing it drops it from every
                // channel's subscribers at their next delivery).
                if let Some((_, stand_in)) = self.stand_ins.remove(&session) {
                    stand_in.outbox.close(CLOSE_STAND_IN_GONE);
                }
                (ChannelMsg::SessionClosed { user_id: user, session_id: session }, Pending::Taken)
            }
            OwnerRequest::Send { from, message } => {
                let outgoing = Outgoing {
                    ciphertext: message.ciphertext,
                    nonce: message.nonce,
                    message_type: message.message_type,
                    reply_to: message.reply_to,
                    sender_key_id: message.sender_key_id,
                    thread_id: message.thread_id,
                    client_nonce: message.client_nonce,
                    received_at: Instant::now(),
                };
                (ChannelMsg::Send { origin: self.stand_in(&from), message: outgoing }, Pending::Taken)
            }
            OwnerRequest::Edit { from, message_id, ciphertext, nonce } => (
                ChannelMsg::Edit { origin: self.stand_in(&from), message_id, ciphertext, nonce },
                Pending::Taken,
            ),
            OwnerRequest::Delete { from, message_id } => {
                (ChannelMsg::Delete { origin: self.stand_in(&from), message_id }, Pending::Taken)
            }
            OwnerRequest::React { from, message_id, emoji, add } => {
                (ChannelMsg::React { origin: self.stand_in(&from), message_id, emoji, add }, Pending::Taken)
            }
            OwnerRequest::Typing { from, typing } => {
                (ChannelMsg::Typing { origin: self.stand_in(&from), typing }, Pending::Taken)
            }
            OwnerRequest::MarkRead { from, message_id } => {
                (ChannelMsg::MarkRead { origin: self.stand_in(&from), message_id }, Pending::Taken)
            }
            OwnerRequest::Voice { from, action } => {
                (ChannelMsg::Voice { origin: self.stand_in(&from), action }, Pending::Taken)
            }
            OwnerRequest::Post { post } => {
                let (reply, answer) = ractor::concurrency::oneshot();
                (ChannelMsg::Post { post, reply: Some(reply.into()) }, Pending::Post(answer))
            }
            OwnerRequest::MayPost { poster } => {
                let (reply, answer) = ractor::concurrency::oneshot();
                (ChannelMsg::MayPost { poster, reply: reply.into() }, Pending::MayPost(answer))
            }
            OwnerRequest::Hold { command, poster } => return self.hold(channel_id, command, poster).await,
            OwnerRequest::Release { command, effects } => {
                let effects: Vec<Effect> = effects.into_iter().map(effect).collect();
                match self.held.remove(&command) {
                    Some((_, held)) => {
                        if held.effects.send(effects).is_err() {
                            return OwnerAnswer::Refused { error: WireHubError::Unavailable };
                        }
                        return match within(CHANNEL_COMMAND_TIMEOUT, held.answer).await {
                            Some(result) => OwnerAnswer::Command { result },
                            None => OwnerAnswer::Dropped,
                        };
                    }
                    // The hold ran out (or this node took the shard since): the write is
                    // committed all the same, so its effects are applied now, out of order,
                    // where an actor runs (one started later loads the committed state).
                    None if !here.live_here(channel_id) => return OwnerAnswer::Command { result: Ok(()) },
                    None => {
                        let command =
                            ChannelCommand { poster: None, write: Box::pin(async move { effects }) };
                        let (reply, answer) = ractor::concurrency::oneshot();
                        (ChannelMsg::Command { command, reply: reply.into() }, Pending::Command(answer))
                    }
                }
            }
            OwnerRequest::Effects { effects, only_if_live } => {
                if only_if_live && !here.live_here(channel_id) {
                    return OwnerAnswer::Command { result: Ok(()) };
                }
                let effects: Vec<Effect> = effects.into_iter().map(effect).collect();
                let command = ChannelCommand { poster: None, write: Box::pin(async move { effects }) };
                let (reply, answer) = ractor::concurrency::oneshot();
                (ChannelMsg::Command { command, reply: reply.into() }, Pending::Command(answer))
            }
            OwnerRequest::Broadcast { frame } => {
                (ChannelMsg::Broadcast { frame: ServerFrame::Relayed(frame) }, Pending::Taken)
            }
            OwnerRequest::Members { change } => {
                let (reply, answer) = ractor::concurrency::oneshot();
                let message =
                    ChannelMsg::Members { change: member_change(change), reply: Some(reply.into()) };
                (message, Pending::Unit(answer))
            }
            OwnerRequest::Reload { announce } => {
                let (reply, answer) = ractor::concurrency::oneshot();
                (ChannelMsg::Reload { announce, reply: Some(reply.into()) }, Pending::Unit(answer))
            }
            OwnerRequest::Deleted => {
                let (reply, answer) = ractor::concurrency::oneshot();
                (ChannelMsg::Deleted { reply: Some(reply.into()) }, Pending::Unit(answer))
            }
            OwnerRequest::Timeout { user, until } => {
                (ChannelMsg::Timeout { user_id: user, until }, Pending::Taken)
            }
            OwnerRequest::InvalidateHistory => (ChannelMsg::InvalidateHistory, Pending::Taken),
        };
        // Membership and settings changes to a channel nobody has open here need no actor.
        let only_live = matches!(
            message,
            ChannelMsg::Members { .. }
                | ChannelMsg::Reload { .. }
                | ChannelMsg::Deleted { .. }
                | ChannelMsg::Timeout { .. }
                | ChannelMsg::InvalidateHistory
                | ChannelMsg::Broadcast { .. }
                | ChannelMsg::Unsubscribe { .. }
                | ChannelMsg::SessionClosed { .. }
        );
        if only_live && !here.live_here(channel_id) {
            return match pending {
                Pending::Unit(_) => OwnerAnswer::Done,
                _ => OwnerAnswer::Taken,
            };
        }
        if let Err(err) = here.deliver_here(channel_id, message).await {
            return OwnerAnswer::Refused { error: err.into() };
        }
        pending.wait().await
    }

    /// Holds the channel's actor for a write running on the asking node (see
    /// `OwnerRequest::Hold`): answers `Held` once the actor runs the command (earlier sends
    /// flushed, send rules passed), or the actor's refusal.
    async fn hold(&self, channel_id: Uuid, command: Uuid, poster: Option<Poster>) -> OwnerAnswer {
        let Some(here) = self.here.get() else { return OwnerAnswer::NotOwner };
        let (go, going) = tokio::sync::oneshot::channel::<()>();
        let (effects, released) = tokio::sync::oneshot::channel::<Vec<Effect>>();
        let held = self.held.clone();
        let write = Box::pin(async move {
            let _ = go.send(());
            // An asker that never releases (its node died) holds the channel this long at
            // most; its effects, if they come later, are applied out of order.
            let effects = tokio::time::timeout(HOLD_LIMIT, released).await.ok().and_then(Result::ok);
            held.remove(&command);
            effects.unwrap_or_default()
        });
        let (reply, mut answer) = ractor::concurrency::oneshot();
        let message = ChannelMsg::Command { command: ChannelCommand { poster, write }, reply: reply.into() };
        if let Err(err) = here.deliver_here(channel_id, message).await {
            return OwnerAnswer::Refused { error: err.into() };
        }
        tokio::select! {
            Ok(()) = going => {
                self.held.insert(command, HeldCommand { effects, answer });
                OwnerAnswer::Held
            }
            result = &mut answer => match result {
                Ok(result) => OwnerAnswer::Command { result },
                Err(_) => OwnerAnswer::Dropped,
            },
            _ = tokio::time::sleep(CHANNEL_COMMAND_TIMEOUT) => OwnerAnswer::Dropped,
        }
    }

    /// The stand-in of a remote session (created on first use). One per session, even when
    /// its requests arrive at once (a `subscribe` asks its channels concurrently): two would
    /// number their batches separately, and the session's node would see gaps.
    fn stand_in(&self, from: &RemoteSession) -> Origin {
        let entry = self.stand_ins.entry(from.session);
        let outbox = match entry {
            dashmap::Entry::Occupied(stand_in) if !stand_in.get().outbox.is_closed() => {
                *stand_in.get().last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                stand_in.get().outbox.clone()
            }
            entry => {
                let outbox = Outbox::relayed(
                    from.session,
                    from.user,
                    from.login,
                    self.link(&from.node),
                    (self.limits.frames, self.limits.bytes),
                    self.stand_in_metrics.clone(),
                );
                entry.insert(StandIn {
                    outbox: outbox.clone(),
                    node: from.node.clone(),
                    last_used: Mutex::new(Instant::now()),
                });
                outbox
            }
        };
        if from.resume_capable {
            outbox.mark_resume_capable();
        }
        Origin { outbox, user_id: from.user }
    }

    /// The link to `node` that this node's stand-ins push into (its forwarder started if needed).
    fn link(&self, node: &str) -> Arc<NodeLink> {
        if let Some(link) = self.links.get(node)
            && !link.is_closed()
        {
            return link.clone();
        }
        self.links
            .entry(node.to_owned())
            .and_modify(|link| {
                if link.is_closed() {
                    *link = self.start_link(node);
                }
            })
            .or_insert_with(|| self.start_link(node))
            .clone()
    }

    fn start_link(&self, node: &str) -> Arc<NodeLink> {
        let link = NodeLink::new(NODE_LINK_FRAMES);
        let subject = format!("{}.v1.node.{node}", self.prefix);
        tokio::spawn(link::forward(link.clone(), self.nats.clone(), subject, self.node_id.clone()));
        link
    }

    /// Drops stand-ins of nodes no longer live, and idle ones nothing holds.
    async fn sweep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let live = self.live_nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.stand_ins.retain(|_, stand_in| {
                let node_gone = !live.is_empty() && !live.contains(&stand_in.node);
                // Held only by this map: in no channel, no send pending.
                let idle = Arc::strong_count(&stand_in.outbox) <= 1
                    && stand_in.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > STAND_IN_IDLE;
                if node_gone || idle {
                    stand_in.outbox.close(CLOSE_STAND_IN_GONE);
                }
                !(node_gone || idle || stand_in.outbox.is_closed())
            });
            // A dead node's forwarder ends (its stand-ins were closed above).
            self.links.retain(|node, link| {
                let keep = live.is_empty() || live.contains(node);
                if !keep {
                    link.shut();
                }
                keep
            });
            if let Some(here) = self.here.get() {
                let sessions = here.sessions();
                let mut received = self.received.lock().unwrap_or_else(|e| e.into_inner());
                for from in received.values_mut() {
                    from.sessions.retain(|(user, session), _| sessions.session(*user, *session).is_some());
                    for members in from.channels.values_mut() {
                        members.retain(|_, outbox| !outbox.is_closed());
                    }
                    from.channels.retain(|_, members| !members.is_empty());
                }
                // Each owner's entry stays while it lives (`set_live_nodes`): its link's
                // numbering must go on being checked.
                drop(received);
                self.depends
                    .retain(|(_, session), dependence| sessions.session(dependence.user, *session).is_some());
            }
        }
    }

    // -------------------------------------------------------------------------------------
    // Delivering what owners forward to this node's sessions

    async fn inbox(self: Arc<Self>, mut inbox: async_nats::Subscriber, mut stop: watch::Receiver<bool>) {
        loop {
            let message = tokio::select! {
                message = inbox.next() => match message { Some(m) => m, None => break },
                _ = stop.changed() => break,
            };
            if self.drop_next.swap(false, Ordering::SeqCst) {
                continue;
            }
            let Some(from) =
                message.headers.as_ref().and_then(|h| h.get(FROM_HEADER)).map(|v| v.as_str().to_owned())
            else {
                continue;
            };
            let message = match forward::decode(message.payload) {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(%from, ?err, "a forwarded message could not be read");
                    continue;
                }
            };
            // A jump in the link's numbering: NATS lost messages. The owner keeps what it sent
            // for a while; asked for them again, they are delivered first, in order, as if
            // nothing happened. (This loop waits for the answer: later messages wait in the
            // subscription meanwhile, so the order holds.)
            if let Some((link, first, last)) = self.missing_before(&from, message.link) {
                for resent in self.ask_resend(&from, link, first, last).await.unwrap_or_default() {
                    self.deliver_forwarded(&from, resent);
                }
            }
            self.deliver_forwarded(&from, message);
        }
    }

    /// The numbers of this owner's messages lost before one numbered `(link, number)`, if
    /// any may still be asked for again.
    fn missing_before(&self, from: &str, (link, number): (u64, u64)) -> Option<(u64, u64, u64)> {
        let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let (last_link, last) = received.get(from)?.link?;
        let missing = number.checked_sub(last.checked_add(1)?).filter(|missing| *missing > 0)?;
        (last_link == link && missing <= RESEND_MAX_MESSAGES).then_some((link, last + 1, number - 1))
    }

    /// Asks owner `from` for its link's messages `first..=last` again; `None` if it no longer
    /// has them all (or does not answer in time): the gap is then told to the sessions.
    async fn ask_resend(
        &self,
        from: &str,
        link: u64,
        first: u64,
        last: u64,
    ) -> Option<Vec<forward::Message>> {
        if self.no_resend.swap(false, Ordering::SeqCst) {
            return None;
        }
        let request = ResendRequest { node: self.node_id.clone(), link, first, last };
        let payload: Bytes = serde_json::to_vec(&request).ok()?.into();
        let subject = format!("{}.v1.resend.{from}", self.prefix);
        let asked = tokio::time::timeout(RESEND_PATIENCE, self.nats.request(subject, payload)).await;
        let answer = match asked {
            Ok(Ok(answer)) => answer,
            _ => {
                tracing::warn!(from, first, last, "an owner did not send lost messages again in time");
                return None;
            }
        };
        let messages = forward::decode_resent(answer.payload).ok()??;
        let messages: Vec<forward::Message> =
            messages.into_iter().map(forward::decode).collect::<Result<_, _>>().ok()?;
        // Exactly the ones missing, in order, of the same link.
        let expected = first..=last;
        let complete = messages.len() as u64 == last - first + 1
            && messages.iter().zip(expected).all(|(m, number)| m.link == (link, number));
        if !complete {
            return None;
        }
        self.gaps_repaired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(from, first, last, "messages lost on the way were sent again by their owner");
        Some(messages)
    }

    /// Answers other nodes asking for messages this node's links to them sent and they lost.
    async fn answer_resends(
        self: Arc<Self>,
        mut requests: async_nats::Subscriber,
        mut stop: watch::Receiver<bool>,
    ) {
        // The answer must fit in one NATS message.
        let max_bytes = self.nats.server_info().max_payload.saturating_sub(64 * 1024);
        loop {
            let request = tokio::select! {
                request = requests.next() => match request { Some(r) => r, None => break },
                _ = stop.changed() => break,
            };
            let Some(reply_to) = request.reply else { continue };
            let resent = serde_json::from_slice::<ResendRequest>(&request.payload).ok().and_then(|asked| {
                let link = self.links.get(&asked.node)?.clone();
                link.resend(asked.link, asked.first, asked.last, max_bytes)
            });
            let answer = resent.map(|messages| forward::encode_resent(&messages)).unwrap_or_default();
            let _ = self.nats.publish(reply_to, answer).await;
        }
    }

    /// Messages from owner `from` may have been lost (a jump in its link's numbering, or a new
    /// link: the old one may have ended with messages unsent), and with them broadcasts or a
    /// session's `Join`: every session here subscribed through that owner, or with a stand-in
    /// there at all, is told (resync or reconnect), never left with a silent gap.
    fn lost_from(&self, from: &str, state: &mut FromOwner, sessions: &SessionRegistry) {
        let frame = ServerFrame::out_of_sync().encode();
        let mut told = HashSet::new();
        for (_, members) in state.channels.drain() {
            for (session, outbox) in members {
                if told.insert(session) {
                    outbox.close_out_of_sync(&frame);
                }
            }
        }
        self.depends.retain(|(node, session), dependence| {
            if node != from {
                return true;
            }
            if told.insert(*session)
                && let Some(outbox) = sessions.session(dependence.user, *session)
            {
                outbox.close_out_of_sync(&frame);
            }
            false
        });
        if !told.is_empty() {
            self.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from, sessions = told.len(), "messages forwarded by a channel owner were lost");
        }
    }

    fn deliver_forwarded(&self, from: &str, message: forward::Message) {
        let Some(here) = self.here.get() else { return };
        let mut received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let state = received.entry(from.to_owned()).or_default();
        // The owner's messages come numbered per link: a jump (a lost message) or another
        // link (the old one ended, maybe with messages unsent) may have cost broadcasts.
        let (link, number) = message.link;
        let continuous = match state.link {
            Some((last_link, last)) => last_link == link && number == last + 1,
            None => number == 1,
        };
        if !continuous {
            self.lost_from(from, state, here.sessions());
        }
        state.link = Some(message.link);
        // Each named session's own numbering: a jump means it missed something of its own.
        let named: Vec<Option<Arc<Outbox>>> = message
            .sessions
            .iter()
            .map(|n| {
                let outbox = here.sessions().session(n.user, n.session)?;
                let last = state.sessions.insert((n.user, n.session), n.seq);
                // A stand-in counts from 1; anything else after what was seen is a loss.
                let in_order = n.seq == 1 || last.is_some_and(|last| n.seq == last + 1);
                if !in_order {
                    self.gaps.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = %n.session, seq = n.seq, ?last, "frames forwarded by a channel owner were lost");
                    outbox.close_out_of_sync(&ServerFrame::out_of_sync().encode());
                    return None;
                }
                Some(outbox)
            })
            .collect();
        for op in message.ops {
            match op {
                Op::Frame { session, frame } => {
                    if let Some(outbox) = &named[session as usize] {
                        outbox.push(frame);
                    }
                }
                Op::Close { session, code } => {
                    if let Some(outbox) = &named[session as usize] {
                        outbox.close(code);
                    }
                }
                Op::Moved { session, moved } => {
                    let Some(outbox) = &named[session as usize] else { continue };
                    // Everything before this point came from that owner: if it holds nothing
                    // else of the session, its later death costs the session nothing.
                    if moved.released {
                        self.depends.remove(&(from.to_owned(), outbox.session_id));
                    }
                    here.reattach(outbox.clone(), moved.channel_id, Some((moved.epoch, moved.cseq)));
                }
                Op::Join { session, channel } => {
                    if let Some(outbox) = &named[session as usize] {
                        state.channels.entry(channel).or_default().insert(outbox.session_id, outbox.clone());
                    }
                }
                Op::Leave { session, channel } => {
                    let id = message.sessions[session as usize].session;
                    if let Some(members) = state.channels.get_mut(&channel) {
                        members.remove(&id);
                        if members.is_empty() {
                            state.channels.remove(&channel);
                        }
                    }
                }
                Op::Broadcast { channel, frame, except, ephemeral } => {
                    let Some(members) = state.channels.get_mut(&channel) else { continue };
                    members.retain(|id, outbox| {
                        if Some(*id) != except {
                            if ephemeral {
                                outbox.push_ephemeral(frame.clone());
                            } else {
                                outbox.push(frame.clone());
                            }
                        }
                        !outbox.is_closed()
                    });
                    if members.is_empty() {
                        state.channels.remove(&channel);
                    }
                }
            }
        }
    }
}

/// What the asker does with the owner's answer.
enum Waiting {
    Nothing,
    Subscribe(Option<ractor::RpcReplyPort<bool>>, Option<Arc<AtomicUsize>>),
    Post(Option<ractor::RpcReplyPort<Result<Uuid, PostError>>>),
    MayPost(Option<ractor::RpcReplyPort<Result<(), PostError>>>),
    Command(ractor::RpcReplyPort<CommandAnswer>),
    Unit(Option<ractor::RpcReplyPort<()>>),
}

impl Waiting {
    fn settle(self, answer: OwnerAnswer) -> Result<(), HubError> {
        match (self, answer) {
            (_, OwnerAnswer::Refused { error }) => return Err(error.into()),
            (Self::Subscribe(reply, budget), OwnerAnswer::Subscribed { subscribed, budget: left }) => {
                if let Some(budget) = budget {
                    budget.store(left, Ordering::Release);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(subscribed);
                }
            }
            (Self::Post(Some(reply)), OwnerAnswer::Posted { result }) => {
                let _ = reply.send(result);
            }
            (Self::MayPost(Some(reply)), OwnerAnswer::MayPost { result }) => {
                let _ = reply.send(result);
            }
            (Self::Command(reply), OwnerAnswer::Command { result }) => {
                let _ = reply.send(result);
            }
            (Self::Unit(Some(reply)), OwnerAnswer::Done) => {
                let _ = reply.send(());
            }
            // Taken, Dropped, or an answer with no port waiting for it: ports left are
            // dropped, which their holders read as "the actor stopped".
            _ => {}
        }
        Ok(())
    }
}

/// The answer of a reply port, if it comes within `wait`.
async fn within<T>(wait: Duration, answer: ractor::concurrency::OneshotReceiver<T>) -> Option<T> {
    tokio::time::timeout(wait, answer).await.ok().and_then(Result::ok)
}

/// What the owner waits for before answering.
enum Pending {
    Taken,
    Subscribe(ractor::concurrency::OneshotReceiver<bool>, Option<Arc<AtomicUsize>>),
    Post(ractor::concurrency::OneshotReceiver<Result<Uuid, PostError>>),
    MayPost(ractor::concurrency::OneshotReceiver<Result<(), PostError>>),
    Command(ractor::concurrency::OneshotReceiver<CommandAnswer>),
    Unit(ractor::concurrency::OneshotReceiver<()>),
}

impl Pending {
    async fn wait(self) -> OwnerAnswer {
        let wait = CHANNEL_COMMAND_TIMEOUT;
        match self {
            Self::Taken => OwnerAnswer::Taken,
            Self::Subscribe(answer, budget) => match within(wait, answer).await {
                Some(subscribed) => OwnerAnswer::Subscribed {
                    subscribed,
                    budget: budget.map_or(0, |b| b.load(Ordering::Acquire)),
                },
                None => OwnerAnswer::Dropped,
            },
            Self::Post(answer) => match within(wait, answer).await {
                Some(result) => OwnerAnswer::Posted { result },
                None => OwnerAnswer::Dropped,
            },
            Self::MayPost(answer) => match within(wait, answer).await {
                Some(result) => OwnerAnswer::MayPost { result },
                None => OwnerAnswer::Dropped,
            },
            Self::Command(answer) => match within(wait, answer).await {
                Some(result) => OwnerAnswer::Command { result },
                None => OwnerAnswer::Dropped,
            },
            Self::Unit(answer) => match within(wait, answer).await {
                Some(()) => OwnerAnswer::Done,
                None => OwnerAnswer::Dropped,
            },
        }
    }
}

fn wire_member_change(change: &MemberChange) -> WireMemberChange {
    match change {
        MemberChange::Upsert { user_id, role } => {
            WireMemberChange::Upsert { user: *user_id, role: role.clone() }
        }
        MemberChange::Left { user_id } => WireMemberChange::Left { user: *user_id },
        MemberChange::Removed { user_id, event } => {
            WireMemberChange::Removed { user: *user_id, event: event.relayed() }
        }
    }
}

fn member_change(change: WireMemberChange) -> MemberChange {
    match change {
        WireMemberChange::Upsert { user, role } => MemberChange::Upsert { user_id: user, role },
        WireMemberChange::Left { user } => MemberChange::Left { user_id: user },
        WireMemberChange::Removed { user, event } => {
            MemberChange::Removed { user_id: user, event: ServerFrame::Relayed(event) }
        }
    }
}

fn wire_effect(effect: &Effect) -> WireEffect {
    match effect {
        Effect::Broadcast(frame) => WireEffect::Broadcast { frame: frame.relayed() },
        Effect::Member(change) => WireEffect::Member { change: wire_member_change(change) },
        Effect::Reload { announce } => WireEffect::Reload { announce: *announce },
        Effect::HistoryChanged => WireEffect::HistoryChanged,
        Effect::Deleted => WireEffect::Deleted,
    }
}

fn effect(effect: WireEffect) -> Effect {
    match effect {
        WireEffect::Broadcast { frame } => Effect::Broadcast(ServerFrame::Relayed(frame)),
        WireEffect::Member { change } => Effect::Member(member_change(change)),
        WireEffect::Reload { announce } => Effect::Reload { announce },
        WireEffect::HistoryChanged => Effect::HistoryChanged,
        WireEffect::Deleted => Effect::Deleted,
    }
}

impl ChannelRouter for Router {
    fn elsewhere(&self, channel_id: Uuid) -> bool {
        !self.owned.contains_key(&shard_of(channel_id))
    }

    fn forward(&self, channel_id: Uuid, message: ChannelMsg) -> BoxFuture<Result<(), HubError>> {
        match self.me() {
            Some(me) => Box::pin(me.forward_message(channel_id, message)),
            None => Box::pin(async { Err(HubError::Unavailable) }),
        }
    }

    fn forward_effects(&self, channel_id: Uuid, effects: Vec<Effect>) -> BoxFuture<CommandAnswer> {
        let Some(me) = self.me() else { return Box::pin(async { Err(PostError::Unavailable) }) };
        Box::pin(async move {
            let effects = effects.iter().map(wire_effect).collect();
            match me.ask(channel_id, OwnerRequest::Effects { effects, only_if_live: true }).await {
                Ok(OwnerAnswer::Command { result }) => result,
                _ => Err(PostError::Unavailable),
            }
        })
    }
}

impl CommunityRouter for Router {
    fn elsewhere(&self, community_id: Uuid) -> bool {
        !self.owned.contains_key(&shard_of(community_id))
    }

    fn command(&self, community_id: Uuid, command: Command) -> BoxFuture<Result<Answer, HubError>> {
        let Some(me) = self.me() else { return Box::pin(async { Err(HubError::Unavailable) }) };
        Box::pin(async move {
            match me.ask(community_id, OwnerRequest::Community { command }).await? {
                OwnerAnswer::Community { outcome } => Ok(*outcome),
                OwnerAnswer::Refused { error } => Err(error.into()),
                other => Err(HubError::Internal(format!("unexpected owner answer {other:?}"))),
            }
        })
    }
}

impl Router {
    /// This router as an `Arc` (it is always held in one; set at construction).
    fn me(&self) -> Option<Arc<Self>> {
        self.this.upgrade()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let from = RemoteSession {
            node: "n2".into(),
            session: Uuid::new_v4(),
            user: Uuid::new_v4(),
            login: None,
            resume_capable: true,
        };
        let request = OwnerRequest::Subscribe {
            from,
            resume: Some(WireResume {
                since: Some(Position { epoch: "abcdefgh".into(), cseq: 7 }),
                budget: 9,
                quiet: true,
            }),
        };
        let text = serde_json::to_string(&Envelope { channel: Uuid::nil(), request }).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back.request,
            OwnerRequest::Subscribe { resume: Some(WireResume { budget: 9, quiet: true, .. }), .. }
        ));
    }

    #[test]
    fn relayed_frames_keep_their_bytes_and_class() {
        let frame = ServerFrame::UserWarned {
            channel_id: Uuid::nil(),
            user_id: Uuid::nil(),
            reason: "a\nb".into(),
            warning_count: 2,
        };
        let relayed = frame.relayed();
        assert!(relayed.durable);
        let again = ServerFrame::Relayed(relayed);
        assert_eq!(again.encode(), frame.encode());
        assert_eq!(again.encode_at(5), frame.encode_at(5));
    }
}
