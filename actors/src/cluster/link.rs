//! The one ordered link from a channel owner to another node: every stand-in of that node's
//! sessions pushes into it (`outbox::Relay`), and one forwarder task drains it into NATS
//! messages to `<prefix>.v1.node.<node>`.
//!
//! Why one queue per node and not one per stand-in: a fan-out to 300 sessions of a node used
//! to wake 300 drain tasks. Now a channel's fan-out appends one `Broadcast` for the whole
//! node (that node fans out to its subscribed sessions itself, `forward`), and what one
//! session alone gets is one entry for it; the forwarder wakes once. Order is the order of
//! the one queue, so it is exactly the order the owner pushed in; each drained batch becomes
//! one numbered message, naming each session in it with its own number (a jump on the
//! receiving node is a lost message, never a silent gap).
//!
//! Bounded: past `max_entries` frames waiting (NATS cannot keep up with this node), pushes
//! fail and the stand-ins concerned close their sessions as slow consumers; closes, moves,
//! joins and leaves are always queued, so the session's node still learns of them.
//!
//! What was sent stays a little while (`RESEND_WINDOW`, at most `RESEND_BYTES`): core NATS
//! may drop a message, and the receiving node, seeing the jump, asks for the missing ones
//! again (`NodeLink::resend`) instead of making its sessions reconnect.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use tokio::sync::Notify;
use uuid::Uuid;

use super::forward::{FORWARD_BATCH_BYTES, FROM_HEADER, Moved, NodeBatch, Numbered, Op};
use crate::outbox::Relay;
use crate::protocol::{Epoch, Frame};

/// A stand-in's close with this code is not forwarded: the session itself is gone.
pub const CLOSE_STAND_IN_GONE: u16 = 4999;

/// How long a sent message can still be asked for again. A gap shows on the receiving node
/// with the next message, normally milliseconds later; a link quiet for longer than this
/// after a loss makes its sessions resync instead.
pub const RESEND_WINDOW: Duration = Duration::from_secs(2);
/// Most bytes of sent messages kept per link.
pub const RESEND_BYTES: usize = 8 * 1024 * 1024;

/// The messages a link sent recently, by number (contiguous: oldest dropped first).
#[derive(Debug, Default)]
struct Sent {
    messages: VecDeque<(u64, Instant, Bytes)>,
    bytes: usize,
}

impl Sent {
    fn keep(&mut self, number: u64, payload: Bytes) {
        let now = Instant::now();
        self.bytes += payload.len();
        self.messages.push_back((number, now, payload));
        while let Some((_, at, oldest)) = self.messages.front() {
            if self.bytes <= RESEND_BYTES && now.duration_since(*at) <= RESEND_WINDOW {
                break;
            }
            self.bytes -= oldest.len();
            self.messages.pop_front();
        }
    }

    /// Messages `first..=last`, if every one is still here and they fit in `max_bytes`.
    fn range(&self, first: u64, last: u64, max_bytes: usize) -> Option<Vec<Bytes>> {
        let oldest = self.messages.front()?.0;
        if first < oldest || last < first {
            return None;
        }
        let start = usize::try_from(first - oldest).ok()?;
        let count = usize::try_from((last - first).checked_add(1)?).ok()?;
        let found: Vec<Bytes> =
            self.messages.iter().skip(start).take(count).map(|(_, _, payload)| payload.clone()).collect();
        let bytes: usize = found.iter().map(Bytes::len).sum();
        (found.len() == count && bytes <= max_bytes).then_some(found)
    }
}

/// One thing for the other node, in the order the owner produced it.
#[derive(Debug)]
enum Entry {
    Frame { user: Uuid, session: Uuid, frame: Frame },
    Close { user: Uuid, session: Uuid, code: u16 },
    Moved { user: Uuid, session: Uuid, moved: Moved },
    Join { user: Uuid, session: Uuid, channel: Uuid },
    Leave { user: Uuid, session: Uuid, channel: Uuid },
    Broadcast { channel: Uuid, frame: Frame, except: Option<Uuid>, ephemeral: bool },
}

impl Entry {
    /// The one session the entry is for (none: a broadcast).
    fn session(&self) -> Option<(Uuid, Uuid)> {
        match self {
            Entry::Frame { user, session, .. }
            | Entry::Close { user, session, .. }
            | Entry::Moved { user, session, .. }
            | Entry::Join { user, session, .. }
            | Entry::Leave { user, session, .. } => Some((*user, *session)),
            Entry::Broadcast { .. } => None,
        }
    }
}

#[derive(Debug, Default)]
struct Waiting {
    entries: Vec<Entry>,
    /// Frame entries among `entries` (closes and moves do not count against the bound).
    frames: usize,
}

/// The link from this (owner) node to one other node.
#[derive(Debug)]
pub struct NodeLink {
    waiting: Mutex<Waiting>,
    /// Wakes the forwarder when the queue turns non-empty (a permit is kept if it is busy);
    /// shared with `HELD_WAKES` while a fan-out holds it back (`with_wakes_held`).
    wake: Arc<Notify>,
    /// The forwarder ended (NATS publish failed, or the node is gone).
    closed: AtomicBool,
    /// The forwarder took entries and has not handed all of them to NATS yet.
    busy: AtomicBool,
    /// Most frame entries waiting.
    max_entries: usize,
    /// This link's id on the wire: the receiving node tells a lost message (a jump in the
    /// numbering) from a new link (another id: the old one may have ended with some unsent).
    id: u64,
    /// What the forwarder sent lately, for `resend`.
    sent: Mutex<Sent>,
}

impl NodeLink {
    pub fn new(max_entries: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(Waiting::default()),
            wake: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            max_entries: max_entries.max(1),
            id: Uuid::new_v4().as_u64_pair().0,
            sent: Mutex::default(),
        })
    }

    /// Messages `first..=last` of this link again (the receiving node lost them), if this is
    /// still the link `id` and it kept every one of them, within `max_bytes` in all.
    pub fn resend(&self, id: u64, first: u64, last: u64, max_bytes: usize) -> Option<Vec<Bytes>> {
        if id != self.id {
            return None;
        }
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).range(first, last, max_bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Only whole entries are pushed or taken under the lock: a poisoned one is consistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, entry: Entry, counts: bool) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut waiting = self.lock();
        if counts && waiting.frames >= self.max_entries {
            return false;
        }
        let was_empty = waiting.entries.is_empty();
        waiting.entries.push(entry);
        waiting.frames += usize::from(counts);
        drop(waiting);
        if was_empty && !hold_wake(&self.wake) {
            self.wake.notify_one();
        }
        true
    }

    /// Ends the link: the forwarder stops, stand-ins on it count as closed.
    pub fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Everything waiting, in order (the forwarder's side).
    fn take(&self) -> Vec<Entry> {
        let mut waiting = self.lock();
        waiting.frames = 0;
        self.busy.store(true, Ordering::Release);
        std::mem::take(&mut waiting.entries)
    }

    /// Everything pushed so far was handed to NATS (or the link is shut): a node that is
    /// leaving waits for this, so its last frames and moves are not lost with the process.
    pub fn is_drained(&self) -> bool {
        self.is_closed() || (self.lock().entries.is_empty() && !self.busy.load(Ordering::Acquire))
    }
}

impl Relay for NodeLink {
    fn push(&self, user_id: Uuid, session_id: Uuid, frame: Frame) -> bool {
        self.enqueue(Entry::Frame { user: user_id, session: session_id, frame }, true)
    }

    fn close(&self, user_id: Uuid, session_id: Uuid, code: u16) {
        self.enqueue(Entry::Close { user: user_id, session: session_id, code }, false);
    }

    fn moved(&self, user_id: Uuid, session_id: Uuid, channel_id: Uuid, at: (Epoch, u64), released: bool) {
        let moved = Moved { channel_id, epoch: at.0, cseq: at.1, released };
        self.enqueue(Entry::Moved { user: user_id, session: session_id, moved }, false);
    }

    fn join(&self, user_id: Uuid, session_id: Uuid, channel_id: Uuid) {
        self.enqueue(Entry::Join { user: user_id, session: session_id, channel: channel_id }, false);
    }

    fn leave(&self, user_id: Uuid, session_id: Uuid, channel_id: Uuid) {
        self.enqueue(Entry::Leave { user: user_id, session: session_id, channel: channel_id }, false);
    }

    fn broadcast(&self, channel_id: Uuid, frame: Frame, except: Option<Uuid>, ephemeral: bool) -> bool {
        self.enqueue(Entry::Broadcast { channel: channel_id, frame, except, ephemeral }, true)
    }

    fn congested(&self) -> bool {
        self.lock().frames > self.max_entries / 2
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Turns drained entries into NATS messages, each naming a session once with its next
/// number (numbered per session from 1; a session's numbering restarts after its stand-in
/// closed).
#[derive(Default)]
pub struct Batcher {
    /// Session → the last number it was sent.
    numbers: HashMap<Uuid, u64>,
}

impl Batcher {
    /// The messages carrying `entries`, in order, each at most about `FORWARD_BATCH_BYTES`
    /// of frames (a single larger frame goes alone).
    fn batches(&mut self, entries: Vec<Entry>) -> Vec<NodeBatch> {
        let mut out = Vec::new();
        let mut batch = NodeBatch::default();
        // Session → its index in `batch`.
        let mut named: HashMap<Uuid, u32> = HashMap::new();
        let mut bytes = 0usize;
        let mut ended: Vec<Uuid> = Vec::new();
        for entry in entries {
            if let Entry::Close { code: CLOSE_STAND_IN_GONE, session, .. } = entry {
                ended.push(session);
                continue;
            }
            let index = entry.session().map(|(user, session)| match named.get(&session) {
                Some(index) => *index,
                None => {
                    let number = self.numbers.entry(session).or_insert(0);
                    *number += 1;
                    let index = batch.session(Numbered { user, session, seq: *number });
                    named.insert(session, index);
                    index
                }
            });
            // (A broadcast names no session: the index is not used for it.)
            let session = index.unwrap_or(0);
            let op = match entry {
                Entry::Frame { frame, .. } => {
                    bytes += frame.len();
                    Op::Frame { session, frame: batch.frame(frame) }
                }
                Entry::Close { session: id, code, .. } => {
                    ended.push(id);
                    Op::Close { session, code }
                }
                Entry::Moved { moved, .. } => Op::Moved { session, moved },
                Entry::Join { channel, .. } => Op::Join { session, channel },
                Entry::Leave { channel, .. } => Op::Leave { session, channel },
                Entry::Broadcast { channel, frame, except, ephemeral } => {
                    bytes += frame.len();
                    Op::Broadcast { channel, frame: batch.frame(frame), except, ephemeral }
                }
            };
            batch.op(op);
            if bytes >= FORWARD_BATCH_BYTES {
                out.push(std::mem::take(&mut batch));
                named.clear();
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
        for session in ended {
            self.numbers.remove(&session);
        }
        out
    }
}

thread_local! {
    /// While `with_wakes_held` runs on this thread: the forwarders its pushes would have woken.
    static HELD_WAKES: RefCell<Option<Vec<Arc<Notify>>>> = const { RefCell::new(None) };
}

/// Keeps `wake` for the end of the running `with_wakes_held`, if any (false: wake now).
fn hold_wake(wake: &Arc<Notify>) -> bool {
    HELD_WAKES.with(|held| match held.borrow_mut().as_mut() {
        Some(held) => {
            if !held.iter().any(|w| Arc::ptr_eq(w, wake)) {
                held.push(wake.clone());
            }
            true
        }
        None => false,
    })
}

/// Runs a fan-out (`push`es onto links, synchronously) and wakes each link's forwarder once
/// at its end. Why: a forwarder woken by the first push would either send a partial batch
/// or have to yield until the rest landed, and a yield queues it behind every local
/// socket writer the same fan-out woke, so remote sessions waited for all local writes.
/// Woken last, it runs next on this worker (tokio's most-recently-woken slot).
pub fn with_wakes_held<R>(fan_out: impl FnOnce() -> R) -> R {
    let outer = HELD_WAKES.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_some() {
            return false;
        }
        *held = Some(Vec::new());
        true
    });
    if !outer {
        return fan_out();
    }
    // Wakes even if `fan_out` panics: a forwarder left asleep would strand its link.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let held = HELD_WAKES.with(|held| held.borrow_mut().take()).unwrap_or_default();
            for wake in held {
                wake.notify_one();
            }
        }
    }
    let _release = Release;
    fan_out()
}

/// Drains `link` into NATS messages to `subject` until the link is shut or a publish fails.
pub async fn forward(link: Arc<NodeLink>, nats: async_nats::Client, subject: String, from: String) {
    let subject = async_nats::Subject::from(subject);
    let mut batcher = Batcher::default();
    let mut number = 0u64;
    'run: loop {
        link.wake.notified().await;
        if link.is_closed() {
            break;
        }
        let entries = link.take();
        for batch in batcher.batches(entries) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(FROM_HEADER, from.as_str());
            number += 1;
            let payload = batch.encode(link.id, number);
            link.sent.lock().unwrap_or_else(|p| p.into_inner()).keep(number, payload.clone());
            if nats.publish_with_headers(subject.clone(), headers, payload).await.is_err() {
                break 'run;
            }
        }
        link.busy.store(false, Ordering::Release);
    }
    link.shut();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::forward::{Message, decode};
    use crate::outbox::Outbox;

    #[test]
    fn sent_messages_can_be_asked_for_again_while_they_are_kept() {
        let link = NodeLink::new(16);
        {
            let mut sent = link.sent.lock().unwrap();
            for number in 1..=5u64 {
                sent.keep(number, Bytes::from(vec![number as u8; 10]));
            }
        }
        let again = link.resend(link.id, 2, 4, usize::MAX).expect("all kept");
        assert_eq!(again, [2u8, 3, 4].map(|n| Bytes::from(vec![n; 10])));
        assert_eq!(link.resend(link.id, 5, 5, usize::MAX).map(|m| m.len()), Some(1));
        assert!(link.resend(link.id ^ 1, 2, 4, usize::MAX).is_none(), "another link's numbers");
        assert!(link.resend(link.id, 4, 6, usize::MAX).is_none(), "6 was never sent");
        assert!(link.resend(link.id, 4, 3, usize::MAX).is_none(), "an empty range");
        assert!(link.resend(link.id, 1, u64::MAX, usize::MAX).is_none(), "a range past every number");
        assert!(link.resend(link.id, 2, 4, 29).is_none(), "more than the answer may carry");
        // Past the byte bound the oldest go first, and then cannot be sent again.
        let mut sent = link.sent.lock().unwrap();
        sent.keep(6, Bytes::from(vec![0u8; RESEND_BYTES]));
        assert_eq!(sent.messages.len(), 1);
        assert!(sent.range(5, 6, usize::MAX).is_none());
        assert_eq!(sent.range(6, 6, usize::MAX).map(|m| m.len()), Some(1));
    }

    #[test]
    fn sent_messages_older_than_the_window_are_dropped() {
        let mut sent = Sent::default();
        sent.keep(1, Bytes::from_static(b"old"));
        sent.messages[0].1 -= RESEND_WINDOW + Duration::from_millis(1);
        sent.keep(2, Bytes::from_static(b"new"));
        assert_eq!(sent.messages.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(), [2]);
        assert_eq!(sent.bytes, 3);
    }

    fn drain(link: &NodeLink, batcher: &mut Batcher) -> Vec<Message> {
        batcher.batches(link.take()).into_iter().map(|b| decode(b.encode(1, 1)).unwrap()).collect()
    }

    /// What one session was sent in `message`, in order: its number and its frames' texts,
    /// closes as `close:<code>`.
    fn of(message: &Message, session: Uuid) -> (u64, Vec<String>) {
        let Some(index) = message.sessions.iter().position(|n| n.session == session) else {
            return (0, Vec::new());
        };
        let index = index as u32;
        let mut got = Vec::new();
        for op in &message.ops {
            match op {
                Op::Frame { session, frame } if *session == index => got.push(frame.as_str().to_owned()),
                Op::Close { session, code } if *session == index => got.push(format!("close:{code}")),
                _ => {}
            }
        }
        (message.sessions[index as usize].seq, got)
    }

    #[test]
    fn a_fan_out_wakes_its_forwarder_once_when_it_ends() {
        use futures_util::FutureExt;
        let link = NodeLink::new(100);
        let (user, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        with_wakes_held(|| {
            assert!(link.push(user, a, Frame::from("x")));
            assert!(link.broadcast(b, Frame::from("x"), None, false));
            // Nested (a fan-out inside a fan-out): still held until the outer one ends.
            with_wakes_held(|| assert!(link.push(user, a, Frame::from("y"))));
            assert!(link.wake.notified().now_or_never().is_none(), "woken before the fan-out ended");
        });
        assert!(link.wake.notified().now_or_never().is_some(), "not woken at the end");
        assert!(link.wake.notified().now_or_never().is_none(), "woken more than once");
        // Outside a fan-out a push wakes at once.
        link.take();
        assert!(link.push(user, a, Frame::from("z")));
        assert!(link.wake.notified().now_or_never().is_some());
    }

    #[test]
    fn each_session_gets_its_frames_in_order_numbered_per_message() {
        let link = NodeLink::new(100);
        let mut batcher = Batcher::default();
        let (user, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for text in ["one", "two"] {
            let frame = Frame::from(text);
            assert!(link.push(user, a, frame.clone()));
            assert!(link.push(user, b, frame));
        }
        let messages = drain(&link, &mut batcher);
        assert_eq!(messages.len(), 1);
        for session in [a, b] {
            assert_eq!(of(&messages[0], session), (1, vec!["one".into(), "two".into()]));
        }
        assert!(link.push(user, a, Frame::from("three")));
        let messages = drain(&link, &mut batcher);
        assert_eq!(of(&messages[0], a), (2, vec!["three".into()]));
        assert_eq!(messages[0].sessions.len(), 1, "b was not named: its number stays");
    }

    #[test]
    fn broadcasts_joins_and_a_sessions_own_frames_keep_the_owners_order() {
        let link = NodeLink::new(100);
        let (user, a, channel) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let message = Frame::from("new_message");
        // A subscribe: replay, attach; then the channel's traffic, and an ack for a alone.
        assert!(link.push(user, a, Frame::from("replayed")));
        link.join(user, a, channel);
        assert!(link.broadcast(channel, message.clone(), Some(a), false));
        assert!(link.push(user, a, Frame::from("message_sent")));
        assert!(link.broadcast(channel, Frame::from("typing"), None, true));
        link.leave(user, a, channel);
        let messages = drain(&link, &mut Batcher::default());
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].sessions.len(), 1);
        assert_eq!(
            messages[0].ops,
            vec![
                Op::Frame { session: 0, frame: Frame::from("replayed") },
                Op::Join { session: 0, channel },
                Op::Broadcast { channel, frame: message, except: Some(a), ephemeral: false },
                Op::Frame { session: 0, frame: Frame::from("message_sent") },
                Op::Broadcast { channel, frame: Frame::from("typing"), except: None, ephemeral: true },
                Op::Leave { session: 0, channel },
            ]
        );
    }

    #[test]
    fn a_close_follows_the_frames_before_it_and_restarts_the_numbering() {
        let link = NodeLink::new(100);
        let mut batcher = Batcher::default();
        let (user, a) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(link.push(user, a, Frame::from("x")));
        drain(&link, &mut batcher);
        assert!(link.push(user, a, Frame::from("y")));
        link.close(user, a, 4008);
        let messages = drain(&link, &mut batcher);
        assert_eq!(of(&messages[0], a), (2, vec!["y".into(), "close:4008".into()]));
        // A new stand-in for the same session starts again at 1.
        assert!(link.push(user, a, Frame::from("z")));
        assert_eq!(of(&drain(&link, &mut batcher)[0], a).0, 1);
        // A gone session's close is not forwarded.
        link.close(user, a, CLOSE_STAND_IN_GONE);
        assert!(drain(&link, &mut batcher).is_empty());
    }

    #[test]
    fn a_move_travels_with_the_frames_before_it_even_when_the_link_is_full() {
        let link = NodeLink::new(1);
        let mut batcher = Batcher::default();
        let (user, a, channel) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let epoch = Epoch::parse("Vt4nR2cL").unwrap();
        assert!(link.push(user, a, Frame::from("last of the old owner")));
        link.leave(user, a, channel);
        link.moved(user, a, channel, (epoch, 9), true);
        let messages = drain(&link, &mut batcher);
        assert_eq!(messages.len(), 1);
        let moved = Moved { channel_id: channel, epoch, cseq: 9, released: true };
        assert_eq!(
            messages[0].ops,
            vec![
                Op::Frame { session: 0, frame: Frame::from("last of the old owner") },
                Op::Leave { session: 0, channel },
                Op::Moved { session: 0, moved },
            ]
        );
        // The session's numbering goes on: a move is not a close.
        link.moved(user, a, channel, (epoch, 9), false);
        assert_eq!(drain(&link, &mut batcher)[0].sessions[0].seq, 2);
    }

    #[test]
    fn a_full_link_refuses_frames_and_broadcasts_but_still_takes_closes() {
        let link = NodeLink::new(2);
        let (user, a, channel) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(link.push(user, a, Frame::from("1")));
        assert!(!link.congested());
        assert!(link.broadcast(channel, Frame::from("2"), None, false));
        assert!(link.congested());
        assert!(!link.push(user, a, Frame::from("3")));
        assert!(!link.broadcast(channel, Frame::from("3"), None, false));
        link.close(user, a, 4008);
        let messages = drain(&link, &mut Batcher::default());
        assert_eq!(of(&messages[0], a), (1, vec!["1".into(), "close:4008".into()]));
        assert_eq!(messages[0].ops.len(), 3);
        link.shut();
        assert!(link.is_closed());
        assert!(!link.push(user, a, Frame::from("4")));
    }

    #[test]
    fn a_stand_in_pushes_into_its_link_and_is_closed_slow_when_the_link_is_full() {
        let link = NodeLink::new(2);
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let outbox = Outbox::relayed(session, user, None, link.clone(), (300, 1 << 20), Default::default());
        assert!(outbox.push(Frame::from("a")));
        assert!(outbox.push_ephemeral(Frame::from("typing")));
        // Over half full: the droppable class is dropped, other frames still go.
        assert!(!outbox.push_ephemeral(Frame::from("typing")));
        assert_eq!(outbox.ephemeral_dropped(), 1);
        assert!(!outbox.push(Frame::from("b")));
        assert_eq!(outbox.close_requested(), crate::outbox::CLOSE_SLOW_CONSUMER);
        assert!(outbox.is_closed());
        // Nothing after the close.
        assert!(!outbox.push(Frame::from("c")));
        let messages = drain(&link, &mut Batcher::default());
        assert_eq!(messages.len(), 1);
        let closed = format!("close:{}", crate::outbox::CLOSE_SLOW_CONSUMER);
        assert_eq!(of(&messages[0], session), (1, vec!["a".into(), "typing".into(), closed]));
        // A replay is bounded by the session's queue, not by the link.
        assert_eq!(outbox.room(), (300, 1 << 20));
    }

    #[test]
    fn a_shut_link_closes_its_stand_ins() {
        let link = NodeLink::new(10);
        let outbox =
            Outbox::relayed(Uuid::new_v4(), Uuid::new_v4(), None, link.clone(), (1, 1), Default::default());
        assert!(!outbox.is_closed());
        link.shut();
        assert!(outbox.is_closed());
    }

    #[test]
    fn a_large_drain_is_split_into_messages_of_bounded_size() {
        let link = NodeLink::new(10_000);
        let mut batcher = Batcher::default();
        let user = Uuid::new_v4();
        let sessions: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let big = Frame::from("x".repeat(100 * 1024));
        for _ in 0..3 {
            for session in &sessions {
                // Distinct buffers: nothing is shared between sessions.
                assert!(link.push(user, *session, Frame::from(big.as_str().to_owned())));
            }
        }
        let batches = batcher.batches(link.take());
        assert!(batches.len() >= 4, "{} messages", batches.len());
        let mut next: HashMap<Uuid, u64> = HashMap::new();
        let mut frames = 0;
        for batch in batches {
            assert!(batch.len() < FORWARD_BATCH_BYTES + big.len() + 1024);
            let message = decode(batch.encode(1, 1)).unwrap();
            for numbered in &message.sessions {
                let expected = next.entry(numbered.session).or_insert(0);
                *expected += 1;
                assert_eq!(numbered.seq, *expected);
                frames += of(&message, numbered.session).1.len();
            }
        }
        assert_eq!(frames, 12);
    }
}
