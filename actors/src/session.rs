//! The session actor: one per authenticated WebSocket.
//!
//! Owns the connection's token bucket and its subscriptions. The gateway's reader task
//! hands it every text frame; it checks size and rate, parses, validates shape and routes
//! the request to the channel actor (or answers itself). Replies and events reach the socket
//! through the session's `Outbox`, drained by the gateway's writer task.
//!
//! Never: blocks on the socket, panics on client input.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::channel::{ChannelMsg, MAX_REPLAY_BYTES, Origin, Outgoing, Resume, VoiceAction, size_ok};
use crate::error_code::ErrorCode;
use crate::hub::Hub;
use crate::outbox::Outbox;
use crate::presence::parse_status;
use crate::protocol::{ClientFrame, EditMessageFrame, Position, ServerFrame, decode};
use crate::{HubError, store};

/// Largest client frame (wire: 1 MiB of text).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
const MAX_SUBSCRIBE_PER_FRAME: usize = 200;
const MAX_SUBSCRIPTIONS: usize = 500;
/// One voice join or leave per user per this interval.
const VOICE_COOLDOWN: Duration = Duration::from_secs(2);
/// Longest one `subscribe` frame waits for its channels' answers, all of them together.
const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);
/// Channels of one `subscribe` frame asked at once (each may load its actor's state).
const SUBSCRIBE_CONCURRENCY: usize = 16;
/// Frames a socket's reader may have handed to its session actor and not yet handled.
pub const MAX_FRAMES_IN_FLIGHT: usize = 32;

pub enum SessionMsg {
    /// From the reader task: one text frame (already known to be within the size limit).
    /// The permit is released once the frame has been handled.
    Text(String, FramePermit),
    /// From the reader task: a text frame over the size limit (dropped).
    TooLarge(FramePermit),
    /// From the gateway: the socket is gone; clean up and stop.
    Closed,
}

/// One frame's place among the `MAX_FRAMES_IN_FLIGHT` of its socket.
pub type FramePermit = OwnedSemaphorePermit;

/// The bounded hand-off from a socket's reader to its session actor: the reader takes a
/// permit per frame and waits when the session is behind, so a flood backs up into the
/// client's TCP connection instead of the actor's (unbounded) mailbox.
pub struct FrameGate {
    permits: Arc<Semaphore>,
    hub: Arc<Hub>,
}

impl FrameGate {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { permits: Arc::new(Semaphore::new(MAX_FRAMES_IN_FLIGHT)), hub }
    }

    /// Waits until the session has room for one more frame.
    #[allow(clippy::expect_used, reason = "the gate never closes its semaphore")]
    pub async fn admit(&self) -> FramePermit {
        let permit =
            self.permits.clone().acquire_owned().await.expect("the gate's semaphore is never closed");
        let in_flight = MAX_FRAMES_IN_FLIGHT - self.permits.available_permits();
        self.hub.frames_in_flight_peak.fetch_max(in_flight, Ordering::Relaxed);
        permit
    }
}

pub struct SessionArgs {
    pub hub: Arc<Hub>,
    pub outbox: Arc<Outbox>,
}

pub struct SessionActor;

pub struct SessionState {
    hub: Arc<Hub>,
    origin: Origin,
    bucket: TokenBucket,
    /// WebRTC signalling relays have their own bucket (see `HubConfig::signal_rate_burst`).
    signal_bucket: TokenBucket,
    subscriptions: HashSet<Uuid>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let config = &args.hub.config;
        let bucket = TokenBucket::new(config.ws_rate_burst, config.ws_rate_per_second);
        let signal_bucket = TokenBucket::new(config.signal_rate_burst, config.signal_rate_per_second);
        let origin = Origin { user_id: args.outbox.user_id, outbox: args.outbox };
        Ok(SessionState { hub: args.hub, origin, bucket, signal_bucket, subscriptions: HashSet::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Text(text, _permit) => {
                let received_at = Instant::now();
                let frame = decode(&text);
                drop(text);
                let metrics = &state.hub.shared.metrics;
                metrics.frames_in.inc(frame.as_ref().map_or("invalid", ClientFrame::type_name));
                // Signalling relays draw on their own bucket: a call's setup burst gets through
                // after other traffic, and a signalling flood is still limited.
                let (bucket, bucket_name) = match &frame {
                    Ok(frame) if frame.is_signalling() => (&mut state.signal_bucket, "ws_signalling"),
                    _ => (&mut state.bucket, "ws_frames"),
                };
                if !bucket.take() {
                    metrics.rate_limited.inc(bucket_name);
                    state.origin.error_frame(ErrorCode::RateLimited, "too many frames, slow down");
                    return Ok(());
                }
                match frame {
                    // Boxed: the actor's task is allocated at the size of its largest future,
                    // and `dispatch`'s is ~9 KB. Inline, every idle socket would carry it;
                    // boxed, it is allocated only while a frame is handled (measured by
                    // `cargo bench -p palaver-bench --bench socketmem`).
                    Ok(frame) => Box::pin(state.dispatch(frame, received_at)).await,
                    Err(err) => state.origin.error_frame(ErrorCode::InvalidMessage, err),
                }
            }
            SessionMsg::TooLarge(_permit) => {
                state.hub.shared.metrics.frames_in.inc("too_large");
                let _ = state.bucket.take();
                state.origin.error_frame(ErrorCode::ValidationError, "frame too large (max 1 MiB)");
            }
            SessionMsg::Closed => {
                Box::pin(state.closed()).await;
                myself.stop(None);
            }
        }
        Ok(())
    }
}

impl SessionState {
    fn user_id(&self) -> Uuid {
        self.origin.user_id
    }

    /// Reports a hub failure in the wire's terms.
    fn hub_error(&self, err: HubError) {
        match err {
            HubError::NotFound => self.origin.error_frame(ErrorCode::NotFound, "channel not found"),
            HubError::Unavailable => {
                self.origin.error_frame(ErrorCode::Unavailable, "the database is unavailable, try again")
            }
            HubError::Stopped => {
                self.origin.error_frame(ErrorCode::Unavailable, "the server is shutting down")
            }
            HubError::Internal(detail) => {
                tracing::error!(error = %detail, "hub error");
                self.origin.error_frame(ErrorCode::InternalError, "internal error")
            }
        }
    }

    async fn to_channel(&self, channel_id: Uuid, message: ChannelMsg) {
        if let Err(err) = self.hub.send_to_channel(channel_id, message).await {
            self.hub_error(err);
        }
    }

    /// The channel a message lives in, or an error frame sent.
    async fn channel_of(&self, message_id: Uuid) -> Option<Uuid> {
        match store::channel_of_message(&self.hub.db, message_id).await {
            Ok(Some(channel)) => Some(channel),
            Ok(None) => {
                self.origin.error_frame(ErrorCode::NotFound, "message not found");
                None
            }
            Err(err) => {
                self.hub_error(HubError::from_db(err));
                None
            }
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame, received_at: Instant) {
        let origin = self.origin.clone();
        match frame {
            // Later `authenticate` frames are ignored (wire).
            ClientFrame::Authenticate { .. } => {}
            ClientFrame::Ping { timestamp } => {
                origin.outbox.push(ServerFrame::Pong { timestamp }.encode());
            }
            ClientFrame::SendMessage(frame) => match Outgoing::parse(frame, received_at) {
                Ok((channel_id, message)) => {
                    self.to_channel(channel_id, ChannelMsg::Send { origin, message }).await;
                }
                Err(text) => origin.error_frame(ErrorCode::ValidationError, text),
            },
            ClientFrame::EditMessage(EditMessageFrame { message_id, ciphertext, nonce }) => {
                if !size_ok(&ciphertext, Outgoing::MAX_CIPHERTEXT) || !size_ok(&nonce, Outgoing::MAX_NONCE) {
                    return origin.error_frame(
                        ErrorCode::ValidationError,
                        "ciphertext must be 1–65536 bytes and nonce 1–256 bytes",
                    );
                }
                if let Some(channel_id) = self.channel_of(message_id).await {
                    let msg = ChannelMsg::Edit {
                        origin,
                        message_id,
                        ciphertext: ciphertext.into(),
                        nonce: nonce.into(),
                    };
                    self.to_channel(channel_id, msg).await;
                }
            }
            ClientFrame::DeleteMessage { message_id } => {
                if let Some(channel_id) = self.channel_of(message_id).await {
                    self.to_channel(channel_id, ChannelMsg::Delete { origin, message_id }).await;
                }
            }
            ClientFrame::AddReaction { message_id, emoji }
            | ClientFrame::RemoveReaction { message_id, emoji }
                if emoji.chars().count() > 32 || emoji.trim().is_empty() =>
            {
                let _ = message_id;
                origin.error_frame(ErrorCode::ValidationError, "emoji must be 1–32 characters")
            }
            ClientFrame::AddReaction { message_id, emoji } => {
                if let Some(channel_id) = self.channel_of(message_id).await {
                    self.to_channel(channel_id, ChannelMsg::React { origin, message_id, emoji, add: true })
                        .await;
                }
            }
            ClientFrame::RemoveReaction { message_id, emoji } => {
                if let Some(channel_id) = self.channel_of(message_id).await {
                    self.to_channel(channel_id, ChannelMsg::React { origin, message_id, emoji, add: false })
                        .await;
                }
            }
            ClientFrame::Typing { channel_id } => {
                self.quietly(channel_id, ChannelMsg::Typing { origin, typing: true }).await
            }
            ClientFrame::StopTyping { channel_id } => {
                self.quietly(channel_id, ChannelMsg::Typing { origin, typing: false }).await
            }
            ClientFrame::MarkRead { channel_id, message_id } => {
                self.quietly(channel_id, ChannelMsg::MarkRead { origin, message_id }).await
            }
            ClientFrame::MarkAllRead => {
                if let Err(err) = store::mark_all_read(&self.hub.db, self.user_id()).await {
                    self.hub_error(HubError::from_db(err));
                }
            }
            ClientFrame::Subscribe { channel_ids, since: None } => self.subscribe(channel_ids).await,
            ClientFrame::Subscribe { channel_ids, since: Some(since) } => {
                self.subscribe_resuming(channel_ids, since).await
            }
            ClientFrame::Unsubscribe { channel_ids } => self.unsubscribe(channel_ids).await,
            ClientFrame::UpdatePresence { status } => match parse_status(&status) {
                Some(status) => self.hub.presence.set(self.user_id(), status),
                None => origin.error_frame(ErrorCode::ValidationError, "unknown presence status"),
            },
            ClientFrame::RtcOffer { target_user_id, session_id, sdp } => {
                if size_ok(sdp.as_bytes(), 32_768) {
                    self.relay(
                        target_user_id,
                        ServerFrame::RtcOffer { from_user_id: self.user_id(), session_id, sdp },
                    );
                } else {
                    origin.error_frame(ErrorCode::ValidationError, "sdp must be 1–32768 bytes");
                }
            }
            ClientFrame::RtcAnswer { target_user_id, session_id, sdp } => {
                if size_ok(sdp.as_bytes(), 32_768) {
                    self.relay(
                        target_user_id,
                        ServerFrame::RtcAnswer { from_user_id: self.user_id(), session_id, sdp },
                    );
                } else {
                    origin.error_frame(ErrorCode::ValidationError, "sdp must be 1–32768 bytes");
                }
            }
            ClientFrame::RtcIceCandidate { target_user_id, session_id, candidate } => {
                if size_ok(candidate.as_bytes(), 2048) {
                    let frame =
                        ServerFrame::RtcIceCandidate { from_user_id: self.user_id(), session_id, candidate };
                    self.relay(target_user_id, frame);
                } else {
                    origin.error_frame(ErrorCode::ValidationError, "candidate must be 1–2048 bytes");
                }
            }
            ClientFrame::JoinVoice { channel_id } => {
                if self.voice_cooldown() {
                    if let Some(current) = self.hub.shared.voice.get(&self.user_id()).map(|c| *c)
                        && current != channel_id
                    {
                        let leave = ChannelMsg::Voice { origin: origin.clone(), action: VoiceAction::Leave };
                        self.to_channel(current, leave).await;
                    }
                    self.to_channel(channel_id, ChannelMsg::Voice { origin, action: VoiceAction::Join })
                        .await;
                }
            }
            ClientFrame::LeaveVoice { channel_id } => {
                if self.voice_cooldown() {
                    self.quietly(channel_id, ChannelMsg::Voice { origin, action: VoiceAction::Leave }).await;
                }
            }
            ClientFrame::KickFromVoice { channel_id, user_id } => {
                let msg = ChannelMsg::Voice { origin, action: VoiceAction::Kick { target: user_id } };
                self.to_channel(channel_id, msg).await;
            }
        }
    }

    /// For frames the wire says to ignore silently when they do not apply.
    async fn quietly(&self, channel_id: Uuid, message: ChannelMsg) {
        if let Err(err @ (HubError::Unavailable | HubError::Internal(_))) =
            self.hub.send_to_channel(channel_id, message).await
        {
            self.hub_error(err);
        }
    }

    fn voice_cooldown(&self) -> bool {
        let now = Instant::now();
        let cooldowns: &DashMap<Uuid, Instant> = &self.hub.voice_cooldowns;
        let mut entry = cooldowns.entry(self.user_id()).or_insert(now - VOICE_COOLDOWN);
        if now.duration_since(*entry) < VOICE_COOLDOWN {
            self.origin.error_frame(ErrorCode::RateLimited, "voice join/leave too fast");
            return false;
        }
        *entry = now;
        true
    }

    /// WebRTC signalling: only between participants of the same voice session.
    fn relay(&self, target: Uuid, frame: ServerFrame) {
        let voice = &self.hub.shared.voice;
        let mine = voice.get(&self.user_id()).map(|c| *c);
        let theirs = voice.get(&target).map(|c| *c);
        match (mine, theirs) {
            (Some(a), Some(b)) if a == b => self.hub.send_to_user(target, &frame),
            _ => self.origin.error_frame(ErrorCode::Forbidden, "not in the same voice session"),
        }
    }

    /// The channels of a `subscribe` frame without repeats, if the frame is within the limits
    /// (else the client is told why and nothing is subscribed).
    fn subscribe_targets(&self, channel_ids: Vec<Uuid>) -> Option<Vec<Uuid>> {
        if channel_ids.len() > MAX_SUBSCRIBE_PER_FRAME {
            self.origin.error_frame(ErrorCode::ValidationError, "at most 200 channels per subscribe");
            return None;
        }
        // Channels this session already follows are asked again too: a member removed and
        // re-added meanwhile was dropped by the channel, and the channel skips a session it
        // still has (silently, as the wire says).
        let fresh: Vec<Uuid> = {
            let mut seen = HashSet::new();
            channel_ids.into_iter().filter(|id| seen.insert(*id)).collect()
        };
        let added = fresh.iter().filter(|id| !self.subscriptions.contains(id)).count();
        if self.subscriptions.len() + added > MAX_SUBSCRIPTIONS {
            self.origin.error_frame(ErrorCode::ValidationError, "at most 500 subscriptions per connection");
            return None;
        }
        Some(fresh)
    }

    /// A `subscribe` with `since` (resume.md): every channel is answered, `subscribed` (by the
    /// channel, followed by its replay) or `subscribe_refused`. Channels the client holds a
    /// position in are asked one at a time in the frame's order, since they share the
    /// frame's replay budget; the others all at once, as a plain subscribe.
    async fn subscribe_resuming(&mut self, channel_ids: Vec<Uuid>, mut since: HashMap<Uuid, Position>) {
        let Some(targets) = self.subscribe_targets(channel_ids) else { return };
        self.origin.outbox.mark_resume_capable();
        let budget = Arc::new(AtomicUsize::new(MAX_REPLAY_BYTES));
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_DEADLINE;
        let (positioned, fresh): (Vec<Uuid>, Vec<Uuid>) =
            targets.into_iter().partition(|id| since.contains_key(id));
        let resume = |since: Option<Position>| Resume {
            since,
            budget: budget.clone(),
            answered: Arc::new(AtomicBool::new(false)),
            quiet: false,
        };
        let mut asks = JoinSet::new();
        let limit = Arc::new(Semaphore::new(SUBSCRIBE_CONCURRENCY));
        let mut running = HashMap::new();
        for channel_id in fresh {
            let (hub, origin, limit, resume) =
                (self.hub.clone(), self.origin.clone(), limit.clone(), resume(None));
            running.insert(channel_id, resume.answered.clone());
            asks.spawn(async move {
                let _turn = limit.acquire_owned().await;
                let answered = resume.answered.clone();
                (channel_id, answered, subscribe_one(&hub, channel_id, origin, Some(resume)).await)
            });
        }
        let mut answers = Vec::new();
        for channel_id in positioned {
            let resume = resume(since.remove(&channel_id));
            let answered = resume.answered.clone();
            let ask = subscribe_one(&self.hub, channel_id, self.origin.clone(), Some(resume));
            match tokio::time::timeout_at(deadline, ask).await {
                Ok(answer) => answers.push((channel_id, answered, answer)),
                Err(_) => answers.push((channel_id, answered, Err(HubError::Unavailable))),
            }
        }
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, asks.join_next()).await {
            if let Ok(answer) = joined {
                running.remove(&answer.0);
                answers.push(answer);
            }
        }
        asks.abort_all();
        // Asks still running past the deadline: their channel may yet attach the session, unless
        // the refusal below claims the answer first (see `Resume::answered`).
        for (channel_id, answered) in running {
            answers.push((channel_id, answered, Err(HubError::Unavailable)));
        }
        for (channel_id, answered, answer) in answers {
            let code = match answer {
                Ok(true) => {
                    self.subscriptions.insert(channel_id);
                    continue;
                }
                Ok(false) => ErrorCode::Forbidden,
                Err(HubError::NotFound) => ErrorCode::NotFound,
                Err(_) => ErrorCode::Unavailable,
            };
            if !answered.swap(true, Ordering::AcqRel) {
                self.subscriptions.remove(&channel_id);
                self.origin.reply(&ServerFrame::SubscribeRefused { channel_id, code });
            }
        }
    }

    async fn subscribe(&mut self, channel_ids: Vec<Uuid>) {
        let Some(fresh) = self.subscribe_targets(channel_ids) else { return };
        // The channels are asked concurrently under one deadline, so a slow channel (its
        // actor loading, a slow database) holds this session for SUBSCRIBE_DEADLINE at most,
        // not that long per channel.
        let limit = Arc::new(Semaphore::new(SUBSCRIBE_CONCURRENCY));
        let mut asks = JoinSet::new();
        for channel_id in fresh.iter().copied() {
            let (hub, origin, limit) = (self.hub.clone(), self.origin.clone(), limit.clone());
            asks.spawn(async move {
                let _turn = limit.acquire_owned().await;
                (channel_id, subscribe_one(&hub, channel_id, origin, None).await)
            });
        }
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_DEADLINE;
        let mut unanswered: HashSet<Uuid> = fresh.into_iter().collect();
        let mut failure = None;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, asks.join_next()).await {
            let Ok((channel_id, answer)) = joined else { continue };
            unanswered.remove(&channel_id);
            match answer {
                Ok(true) => {
                    self.subscriptions.insert(channel_id);
                }
                // No longer a member: forget the stale subscription.
                Ok(false) => {
                    self.subscriptions.remove(&channel_id);
                }
                Err(HubError::NotFound) => {}
                Err(err) => failure = Some(err),
            }
        }
        asks.abort_all();
        if !unanswered.is_empty() {
            // Their answer may still come: count them as followed so that `unsubscribe` and
            // the socket's close reach them.
            self.subscriptions.extend(unanswered);
            failure = Some(HubError::Unavailable);
        }
        if let Some(err) = failure {
            self.hub_error(err);
        }
    }

    async fn unsubscribe(&mut self, channel_ids: Vec<Uuid>) {
        if channel_ids.len() > MAX_SUBSCRIPTIONS {
            return self
                .origin
                .error_frame(ErrorCode::ValidationError, "at most 500 channels per unsubscribe");
        }
        let targets: Vec<Uuid> =
            if channel_ids.is_empty() { self.subscriptions.iter().copied().collect() } else { channel_ids };
        let session_id = self.origin.outbox.session_id;
        for channel_id in targets {
            if self.subscriptions.remove(&channel_id) {
                self.hub.notify_channel(channel_id, ChannelMsg::Unsubscribe { session_id });
            }
        }
    }

    /// The socket closed: leave every channel, tell presence if this was the last session.
    async fn closed(&mut self) {
        let user_id = self.user_id();
        let session_id = self.origin.outbox.session_id;
        let last = self.hub.sessions().unregister(user_id, session_id);
        let mut channels: Vec<Uuid> = self.subscriptions.drain().collect();
        if let Some(voice) = self.hub.shared.voice.get(&user_id).map(|c| *c) {
            channels.push(voice);
        }
        for channel_id in channels {
            self.hub.notify_channel(channel_id, ChannelMsg::SessionClosed { user_id, session_id });
        }
        if last {
            self.hub.presence.offline(user_id);
        }
    }
}

/// Asks one channel to attach the session; `Ok(false)` when the user is not a member. A
/// channel actor stopping (idle) drops the question unanswered; it is asked again, and the
/// hub routes it to a fresh actor.
async fn subscribe_one(
    hub: &Hub,
    channel_id: Uuid,
    origin: Origin,
    resume: Option<Resume>,
) -> Result<bool, HubError> {
    for _ in 0..3 {
        let (reply, answer) = ractor::concurrency::oneshot();
        let resume = resume.as_ref().map(Resume::again);
        let message = ChannelMsg::Subscribe { origin: origin.clone(), resume, reply: Some(reply.into()) };
        hub.send_to_channel(channel_id, message).await?;
        if let Ok(subscribed) = answer.await {
            return Ok(subscribed);
        }
    }
    Err(HubError::Unavailable)
}

/// The per-socket frame bucket.
struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, per_second: u32) -> Self {
        Self {
            tokens: burst as f64,
            burst: burst as f64,
            per_second: per_second as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let mut bucket = TokenBucket::new(3, 1);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take());
    }
}
