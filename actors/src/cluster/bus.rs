//! What every node must hear at once: user-scoped and instance-wide frames, revocations, role,
//! settings and membership changes on `<prefix>.v1.all`; presence deltas and digests on
//! `<prefix>.v1.presence`.
//!
//! A node applies such a change to its own sockets and caches at once (as a single node does)
//! and publishes it here; the others apply it to theirs. The publishing node does not hear its
//! own messages (`no_echo`), so nothing is applied twice. Core NATS is at-most-once, so the
//! caches these events keep in step (barred users, instance roles, settings) are also reloaded
//! from the database every `CACHE_RELOAD` (see `Hub::reload_user_caches`).
//!
//! Wire: one JSON line (`BusEvent`), then, for frame deliveries, `\n` and the frame's bytes as
//! serialized once by the sender: no node re-encodes a frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::elsewhere::Elsewhere;
use crate::protocol::Frame;
use crate::registry::Logins;
use crate::roles::InstanceRole;
use crate::roster::RosterChange;

/// How often the caches kept in step by this bus are reloaded from the database anyway.
pub const CACHE_RELOAD: Duration = Duration::from_secs(30);

/// Events waiting for the publisher task. Producers never wait on NATS: past this, an event
/// is dropped and counted (the periodic reload repairs caches; a dropped frame is lost like
/// one to a full outbox).
const QUEUE: usize = 4096;

/// One change every node applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// The frame that follows goes to every session of these users.
    Users {
        users: Vec<Uuid>,
        /// A session not to deliver to (the sender's own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<Uuid>,
    },
    /// The frame that follows goes to every session.
    Everyone,
    /// These logins of a user ended: their sockets close with `code`.
    EndLogins { user: Uuid, logins: LoginsWire, code: u16 },
    /// A login's access tokens open no socket for `secs` more.
    RevokeLogin { login: Uuid, secs: u64 },
    /// Suspended or deleted: refused everywhere, sockets closed.
    Bar { user: Uuid },
    /// Unsuspended.
    Unbar { user: Uuid },
    /// Instance admin/owner flags changed (`None`: the account is gone).
    InstanceRole { user: Uuid, role: Option<(bool, bool)> },
    /// Admin settings changed: reload them from the database.
    SettingsChanged,
    /// A committed community membership change.
    Roster { change: RosterChange },
    /// The status `node` now announces for one of its users (`offline`: no session there).
    Presence { node: String, user: Uuid, status: String },
    /// Every status `node` announces, replacing what it told before.
    PresenceDigest { node: String, statuses: Vec<(Uuid, String)> },
    /// A user joined or left the voice session of `channel` (told by the channel's owner).
    Voice { user: Uuid, channel: Uuid, joined: bool },
    /// The sessions `node` now holds for a user (replacing what it told before).
    Sessions { node: String, user: Uuid, sessions: Vec<Uuid> },
    /// `node` just joined: every node sends its digest now rather than at its next tick.
    PresenceDigestPlease { node: String },
}

/// `Logins` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "which", content = "login", rename_all = "snake_case")]
pub enum LoginsWire {
    All,
    Only(Uuid),
    AllBut(Uuid),
}

impl From<Logins> for LoginsWire {
    fn from(logins: Logins) -> Self {
        match logins {
            Logins::All => Self::All,
            Logins::Only(l) => Self::Only(l),
            Logins::AllBut(l) => Self::AllBut(l),
        }
    }
}

impl From<LoginsWire> for Logins {
    fn from(logins: LoginsWire) -> Self {
        match logins {
            LoginsWire::All => Self::All,
            LoginsWire::Only(l) => Self::Only(l),
            LoginsWire::AllBut(l) => Self::AllBut(l),
        }
    }
}

/// Encodes an event and, for deliveries, the frame after it.
pub fn encode(event: &BusEvent, frame: Option<&Frame>) -> Bytes {
    // Serializing this enum cannot fail: plain fields, no maps.
    let head = serde_json::to_vec(event).unwrap_or_default();
    let mut out = BytesMut::with_capacity(head.len() + 1 + frame.map_or(0, |f| f.len()));
    out.put_slice(&head);
    if let Some(frame) = frame {
        out.put_u8(b'\n');
        out.put_slice(frame.as_bytes());
    }
    out.freeze()
}

/// Splits a bus message back into its event and frame. The frame's UTF-8 is checked once
/// here, without a copy; every local socket then shares those bytes.
pub fn decode(payload: Bytes) -> Option<(BusEvent, Option<Frame>)> {
    // Compact JSON escapes newlines inside strings, so the first `\n` ends the event.
    let split = payload.iter().position(|b| *b == b'\n');
    let head = &payload[..split.unwrap_or(payload.len())];
    let event: BusEvent = serde_json::from_slice(head).ok()?;
    let frame = match split {
        Some(at) => Some(Frame::try_from(payload.slice(at + 1..)).ok()?),
        None => None,
    };
    if matches!(event, BusEvent::Users { .. } | BusEvent::Everyone) != frame.is_some() {
        return None;
    }
    Some((event, frame))
}

/// Applies what other nodes published (the hub; a trait so this module need not know it).
pub trait RemoteEvents: Send + Sync {
    fn apply_remote(&self, event: BusEvent, frame: Option<Frame>);
    /// The statuses this node announces for its users (its presence digest).
    fn local_presence(&self) -> Vec<(Uuid, &'static str)>;
    /// Forgets what nodes silent for `ttl` told about presence.
    fn expire_remote_presence(&self, ttl: std::time::Duration);
}

/// This node's side of the bus: a bounded queue in front of one publisher task.
pub struct Bus {
    /// This node's id, as other nodes key its presence.
    node: String,
    all: async_nats::Subject,
    presence: async_nats::Subject,
    queue: mpsc::Sender<(async_nats::Subject, Bytes)>,
    /// Events dropped because the queue was full (metrics, logs).
    dropped: AtomicU64,
    /// See `Elsewhere::cap_grace`.
    cap_grace: Duration,
}

impl Bus {
    /// Queues an event for the other nodes; never waits.
    pub fn publish(&self, event: &BusEvent, frame: Option<&Frame>) {
        let subject = match event {
            BusEvent::Presence { .. }
            | BusEvent::PresenceDigest { .. }
            | BusEvent::PresenceDigestPlease { .. }
            | BusEvent::Sessions { .. } => &self.presence,
            _ => &self.all,
        };
        if self.queue.try_send((subject.clone(), encode(event, frame))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "cluster bus queue full: events for other nodes dropped");
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn publish_digest(&self, hub: &dyn RemoteEvents) {
        let statuses =
            hub.local_presence().into_iter().map(|(user, status)| (user, status.to_string())).collect();
        self.publish(&BusEvent::PresenceDigest { node: self.node.clone(), statuses }, None);
    }
}

impl Elsewhere for Bus {
    fn send_to_users_except(&self, users: &[Uuid], frame: &Frame, except: Option<Uuid>) {
        if !users.is_empty() {
            self.publish(&BusEvent::Users { users: users.to_vec(), except }, Some(frame));
        }
    }

    fn send_to_everyone(&self, frame: &Frame) {
        self.publish(&BusEvent::Everyone, Some(frame));
    }

    fn voice_changed(&self, user: Uuid, channel: Uuid, joined: bool) {
        self.publish(&BusEvent::Voice { user, channel, joined }, None);
    }

    fn roster_changed(&self, change: RosterChange) {
        self.publish(&BusEvent::Roster { change }, None);
    }

    fn sessions_changed(&self, user: Uuid, sessions: &[Uuid]) {
        self.publish(
            &BusEvent::Sessions { node: self.node.clone(), user, sessions: sessions.to_vec() },
            None,
        );
    }

    fn cap_grace(&self) -> Duration {
        self.cap_grace
    }

    fn presence_changed(&self, user: Uuid, status: &'static str) {
        self.publish(&BusEvent::Presence { node: self.node.clone(), user, status: status.to_string() }, None);
    }
}

/// How often each node sends its presence digest, and how long a silent node's users stay
/// listed.
#[derive(Clone, Copy, Debug)]
pub struct PresenceTimers {
    pub digest_every: Duration,
    pub ttl: Duration,
    /// How long a node waits before closing its own sessions only because other nodes'
    /// sessions put a user over the cap (`Elsewhere::cap_grace`).
    pub cap_grace: Duration,
}

/// Starts the bus: the publisher task, the listener that applies other nodes' events to
/// `hub`, and the presence digests. All end when `stop` fires.
pub(super) async fn start(
    nats: async_nats::Client,
    (prefix, node): (&str, &str),
    timers: PresenceTimers,
    hub: Arc<dyn RemoteEvents>,
    stop: watch::Receiver<bool>,
) -> Result<Arc<Bus>, String> {
    let all = async_nats::Subject::from(format!("{prefix}.v1.all"));
    let presence = async_nats::Subject::from(format!("{prefix}.v1.presence"));
    let subscribe_error = |e| format!("NATS subscribe: {e}");
    let all_in = nats.subscribe(all.clone()).await.map_err(subscribe_error)?;
    let presence_in = nats.subscribe(presence.clone()).await.map_err(subscribe_error)?;
    let (queue, pending) = mpsc::channel(QUEUE);
    let bus = Arc::new(Bus {
        node: node.to_string(),
        all,
        presence,
        queue,
        dropped: AtomicU64::new(0),
        cap_grace: timers.cap_grace,
    });
    tokio::spawn(publisher(nats, pending, stop.clone()));
    tokio::spawn(listen(
        hub.clone(),
        bus.clone(),
        futures_util::stream::select(all_in, presence_in),
        stop.clone(),
    ));
    tokio::spawn(presence_digests(hub, bus.clone(), timers, stop));
    Ok(bus)
}

async fn publisher(
    nats: async_nats::Client,
    mut pending: mpsc::Receiver<(async_nats::Subject, Bytes)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            next = pending.recv() => {
                let Some((subject, payload)) = next else { break };
                if let Err(err) = nats.publish(subject, payload).await {
                    tracing::debug!(%err, "cluster bus: publish failed");
                }
            }
            _ = stop.changed() => break,
        }
    }
    // What was queued before shutdown still goes out (a revocation must not be lost to a
    // restart of the node that made it).
    while let Ok((subject, payload)) = pending.try_recv() {
        let _ = nats.publish(subject, payload).await;
    }
    let _ = nats.flush().await;
}

async fn listen(
    hub: Arc<dyn RemoteEvents>,
    bus: Arc<Bus>,
    mut messages: impl futures_util::Stream<Item = async_nats::Message> + Unpin,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                match decode(message.payload) {
                    Some((BusEvent::PresenceDigestPlease { .. }, _)) => bus.publish_digest(hub.as_ref()),
                    Some((event, frame)) => hub.apply_remote(event, frame),
                    None => tracing::debug!("cluster bus: ignored a malformed message"),
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// Sends this node's presence digest now and then (and asks the others for theirs once, at
/// start), and drops the users of nodes silent for the TTL.
async fn presence_digests(
    hub: Arc<dyn RemoteEvents>,
    bus: Arc<Bus>,
    timers: PresenceTimers,
    mut stop: watch::Receiver<bool>,
) {
    bus.publish(&BusEvent::PresenceDigestPlease { node: bus.node.clone() }, None);
    let mut tick = tokio::time::interval(timers.digest_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                bus.publish_digest(hub.as_ref());
                hub.expire_remote_presence(timers.ttl);
            }
            _ = stop.changed() => break,
        }
    }
}

/// `InstanceRole` from its wire pair.
pub fn role_of(pair: (bool, bool)) -> InstanceRole {
    InstanceRole { is_admin: pair.0, is_owner: pair.1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_carry_the_frame_bytes_unchanged() {
        let frame = Frame::from(r#"{"type":"announcement","body":"a\nb"}"#.to_string());
        let users = vec![Uuid::new_v4(), Uuid::new_v4()];
        let event = BusEvent::Users { users: users.clone(), except: None };
        let (back, bytes) = decode(encode(&event, Some(&frame))).expect("decodes");
        assert_eq!(back, event);
        assert_eq!(bytes.as_deref(), Some(frame.as_str()));
    }

    #[test]
    fn control_events_round_trip_without_a_frame() {
        let user = Uuid::new_v4();
        for event in [
            BusEvent::Bar { user },
            BusEvent::EndLogins { user, logins: LoginsWire::AllBut(Uuid::new_v4()), code: 4001 },
            BusEvent::InstanceRole { user, role: Some((true, false)) },
            BusEvent::InstanceRole { user, role: None },
            BusEvent::SettingsChanged,
            BusEvent::Roster { change: RosterChange::Left { community: Uuid::new_v4(), user } },
            BusEvent::Presence { node: "n1".into(), user, status: "dnd".into() },
            BusEvent::PresenceDigest { node: "n-2".into(), statuses: vec![(user, "online".into())] },
        ] {
            assert_eq!(decode(encode(&event, None)).map(|(e, f)| (e, f.is_none())), Some((event, true)));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let frame = Frame::from("{}".to_string());
        // A delivery without its frame, a control event with one, bad UTF-8, bad JSON.
        assert!(decode(encode(&BusEvent::Everyone, None)).is_none());
        assert!(decode(encode(&BusEvent::SettingsChanged, Some(&frame))).is_none());
        assert!(decode(Bytes::from_static(b"{\"kind\":\"everyone\"}\n\xff\xfe")).is_none());
        assert!(decode(Bytes::from_static(b"not json")).is_none());
    }
}
