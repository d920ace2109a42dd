//! The subscriber registry of one channel: the sessions that receive its events.
//!
//! Owned by the channel's registry slot (not the actor), so subscribers survive a restart of
//! the actor; only the channel actor fans out from it.
//!
//! In a cluster some subscribers are stand-ins for sessions on other nodes. A fan-out does not
//! push to each of them: it hands the frame once to each node's link (`Relay::broadcast`),
//! and that node delivers it to its sessions subscribed here, which it knows because every
//! attach and detach of a stand-in is told on the same link (`Relay::join`/`leave`), in
//! order with the frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::outbox::{CLOSE_SLOW_CONSUMER, Outbox, Relay};
use crate::protocol::{Frame, ServerFrame};

/// One subscribed session.
struct Subscriber {
    outbox: Arc<Outbox>,
    /// The channel's position when it was attached: every durable frame above it (in the
    /// current epoch) reached it live, so a replay never repeats those.
    attached_at: u64,
}

/// The sessions subscribed to one channel. Only the channel actor fans out from it.
pub struct Subscribers {
    /// Named in what stand-ins' links are told.
    channel_id: Uuid,
    sessions: Mutex<HashMap<Uuid, Subscriber>>,
    /// True while messages are being committed and not yet announced. If the actor dies
    /// then, stored messages may never have been sent to anyone: its successor must tell
    /// the subscribers (kept here because the actor's own state dies with it).
    unannounced: AtomicBool,
}

/// Whether two links are the same one (by address: the vtables of one type may differ
/// between codegen units).
fn same_link(a: &Arc<dyn Relay>, b: &Arc<dyn Relay>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Subscribers {
    pub fn new(channel_id: Uuid) -> Self {
        Self { channel_id, sessions: Mutex::default(), unannounced: AtomicBool::new(false) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Subscriber>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removals), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the same bytes to every subscriber except `except`. Never waits.
    pub fn broadcast(&self, frame: &Frame, except: Option<Uuid>) {
        self.fan_out(frame, except, false);
    }

    /// `broadcast` for frames of the droppable class (see `Outbox::push_ephemeral`).
    pub fn broadcast_ephemeral(&self, frame: &Frame, except: Option<Uuid>) {
        self.fan_out(frame, except, true);
    }

    fn fan_out(&self, frame: &Frame, except: Option<Uuid>, ephemeral: bool) {
        let push = if ephemeral { Outbox::push_ephemeral } else { Outbox::push };
        // Remote subscribers' links are woken once, after every local socket's writer.
        crate::cluster::link::with_wakes_held(|| {
            let mut sessions = self.lock();
            // The links of the stand-ins subscribed here: one broadcast each.
            let mut links: Vec<Arc<dyn Relay>> = Vec::new();
            sessions.retain(|id, s| {
                match s.outbox.relay() {
                    Some(link) if !s.outbox.is_closed() && !links.iter().any(|l| same_link(l, link)) => {
                        links.push(link.clone());
                    }
                    Some(_) => {}
                    None if Some(*id) != except => {
                        push(&s.outbox, frame.clone());
                    }
                    None => {}
                }
                !s.outbox.is_closed()
            });
            for link in links {
                // A busy link drops the droppable class, as a busy socket's queue does.
                if ephemeral && link.congested() {
                    continue;
                }
                if !link.broadcast(self.channel_id, frame.clone(), except, ephemeral) {
                    // The link is full: each of its sessions here is a slow reader, as each
                    // would have been told one by one.
                    sessions.retain(|_, s| {
                        if s.outbox.relay().is_some_and(|l| same_link(l, &link)) {
                            s.outbox.close(CLOSE_SLOW_CONSUMER);
                            return false;
                        }
                        true
                    });
                }
            }
        });
    }

    /// A stand-in left this channel: its node stops delivering the channel's broadcasts to it.
    fn detached(&self, outbox: &Outbox) {
        if let Some(link) = outbox.relay() {
            link.leave(outbox.user_id, outbox.session_id, self.channel_id);
        }
    }

    /// Every subscribed session's outbox.
    pub(super) fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.lock().values().map(|s| s.outbox.clone()).collect()
    }

    /// Where a session was attached, if it is subscribed.
    pub(super) fn attached_at(&self, session_id: Uuid) -> Option<u64> {
        self.lock().get(&session_id).map(|s| s.attached_at)
    }

    /// A new epoch began (the actor restarted): every subscriber gets its frames from the
    /// start of it.
    pub(super) fn reattach_all(&self) {
        for s in self.lock().values_mut() {
            s.attached_at = 0;
        }
    }

    /// The channel can no longer serve its subscribers (its actor could not be restarted):
    /// each is told and closed with 4008, so its client reconnects and catches up.
    pub fn close_all_out_of_sync(&self) {
        let frame = ServerFrame::out_of_sync().encode();
        for (_, s) in self.lock().drain() {
            s.outbox.close_out_of_sync(&frame);
        }
    }

    /// Detaches every subscriber (their channel moved to another node, which they are
    /// attached to next): nobody is closed.
    pub fn take_all(&self) -> Vec<Arc<Outbox>> {
        let mut sessions = self.lock();
        sessions.values().for_each(|s| self.detached(&s.outbox));
        sessions.drain().map(|(_, s)| s.outbox).collect()
    }

    pub(super) fn set_unannounced(&self, unannounced: bool) {
        self.unannounced.store(unannounced, Ordering::Release);
    }

    pub(super) fn unannounced(&self) -> bool {
        self.unannounced.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Attaches a session at position `at`; false if it was already attached (then it
    /// keeps its first position).
    pub(super) fn insert(&self, outbox: Arc<Outbox>, at: u64) -> bool {
        let mut sessions = self.lock();
        if sessions.contains_key(&outbox.session_id) {
            // A stand-in attached again: its node may have forgotten the membership (it took
            // this owner for dead, or the join was in a message it lost), and repeating a
            // join is harmless there.
            if let Some(link) = outbox.relay() {
                link.join(outbox.user_id, outbox.session_id, self.channel_id);
            }
            return false;
        }
        // Told under the lock: no fan-out can come between the attach and its news.
        if let Some(link) = outbox.relay() {
            link.join(outbox.user_id, outbox.session_id, self.channel_id);
        }
        sessions.insert(outbox.session_id, Subscriber { outbox, attached_at: at });
        true
    }

    pub(super) fn remove(&self, session_id: Uuid) {
        let mut sessions = self.lock();
        if let Some(s) = sessions.remove(&session_id) {
            self.detached(&s.outbox);
        }
    }

    pub(super) fn clear(&self) {
        let mut sessions = self.lock();
        sessions.values().for_each(|s| self.detached(&s.outbox));
        sessions.clear();
    }

    pub(super) fn remove_user(&self, user_id: Uuid) {
        self.lock().retain(|_, s| {
            let keep = s.outbox.user_id != user_id;
            if !keep {
                self.detached(&s.outbox);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::protocol::Epoch;

    /// A link that records what it is told and takes at most `room` broadcasts.
    #[derive(Debug, Default)]
    struct Recorder {
        told: Mutex<Vec<String>>,
        room: AtomicUsize,
    }

    impl Recorder {
        fn with_room(room: usize) -> Arc<Self> {
            let recorder = Self::default();
            recorder.room.store(room, Ordering::SeqCst);
            Arc::new(recorder)
        }

        fn told(&self) -> Vec<String> {
            std::mem::take(&mut self.told.lock().unwrap())
        }

        fn note(&self, what: String) {
            self.told.lock().unwrap().push(what);
        }
    }

    impl Relay for Recorder {
        fn push(&self, _: Uuid, session_id: Uuid, frame: Frame) -> bool {
            self.note(format!("push {session_id} {}", frame.as_str()));
            true
        }
        fn close(&self, _: Uuid, session_id: Uuid, code: u16) {
            self.note(format!("close {session_id} {code}"));
        }
        fn moved(&self, _: Uuid, _: Uuid, _: Uuid, _: (Epoch, u64), _: bool) {}
        fn join(&self, _: Uuid, session_id: Uuid, _: Uuid) {
            self.note(format!("join {session_id}"));
        }
        fn leave(&self, _: Uuid, session_id: Uuid, _: Uuid) {
            self.note(format!("leave {session_id}"));
        }
        fn broadcast(&self, _: Uuid, frame: Frame, except: Option<Uuid>, ephemeral: bool) -> bool {
            if self.room.load(Ordering::SeqCst) == 0 {
                return false;
            }
            self.room.fetch_sub(1, Ordering::SeqCst);
            let except = except.map(|e| e.to_string()).unwrap_or_default();
            self.note(format!("broadcast {} except:{except} ephemeral:{ephemeral}", frame.as_str()));
            true
        }
        fn congested(&self) -> bool {
            false
        }
        fn is_closed(&self) -> bool {
            false
        }
    }

    fn stand_in(link: &Arc<Recorder>, user: Uuid) -> Arc<Outbox> {
        Outbox::relayed(Uuid::new_v4(), user, None, link.clone(), (10, 1 << 20), Default::default())
    }

    #[test]
    fn a_fan_out_tells_each_node_once_and_every_local_socket() {
        let subscribers = Subscribers::new(Uuid::new_v4());
        let (node_b, node_c) = (Recorder::with_room(10), Recorder::with_room(10));
        let user = Uuid::new_v4();
        let b: Vec<_> = (0..300).map(|_| stand_in(&node_b, user)).collect();
        let c = stand_in(&node_c, user);
        let (local, mut local_rx) = Outbox::new(Uuid::new_v4(), user, 10);
        for outbox in b.iter().chain([&c, &local]) {
            assert!(subscribers.insert(outbox.clone(), 0));
        }
        assert_eq!(node_b.told().len(), 300, "one join per stand-in");
        assert_eq!(node_c.told(), vec![format!("join {}", c.session_id)]);
        subscribers.broadcast(&Frame::from("m"), Some(b[0].session_id));
        // 300 sessions of one node: one entry, naming the one to skip.
        assert_eq!(node_b.told(), vec![format!("broadcast m except:{} ephemeral:false", b[0].session_id)]);
        assert_eq!(node_c.told().len(), 1);
        assert_eq!(local_rx.try_recv().map(|f| f.as_str().to_owned()), Some("m".to_owned()));
        subscribers.broadcast_ephemeral(&Frame::from("typing"), None);
        assert_eq!(node_c.told(), vec!["broadcast typing except: ephemeral:true".to_owned()]);
    }

    #[test]
    fn a_stand_in_attached_again_is_told_to_its_node_again() {
        let subscribers = Subscribers::new(Uuid::new_v4());
        let link = Recorder::with_room(10);
        let a = stand_in(&link, Uuid::new_v4());
        assert!(subscribers.insert(a.clone(), 3));
        assert!(!subscribers.insert(a.clone(), 7), "already attached");
        assert_eq!(link.told(), vec![format!("join {}", a.session_id); 2]);
        assert_eq!(subscribers.attached_at(a.session_id), Some(3), "still attached from where it was");
        // A local socket attached again tells no one.
        let (local, _rx) = Outbox::new(Uuid::new_v4(), Uuid::new_v4(), 10);
        assert!(subscribers.insert(local.clone(), 0));
        assert!(!subscribers.insert(local, 0));
        assert!(link.told().is_empty());
    }

    #[test]
    fn detaching_a_stand_in_is_told_to_its_node() {
        let subscribers = Subscribers::new(Uuid::new_v4());
        let link = Recorder::with_room(10);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let [a1, a2, b1, b2] = [alice, alice, bob, bob].map(|user| stand_in(&link, user));
        for outbox in [&a1, &a2, &b1, &b2] {
            subscribers.insert(outbox.clone(), 0);
        }
        assert_eq!(link.told().len(), 4);
        subscribers.remove(a1.session_id);
        assert_eq!(link.told(), vec![format!("leave {}", a1.session_id)]);
        subscribers.remove(a1.session_id);
        assert!(link.told().is_empty(), "not subscribed: nothing to tell");
        // A kick of Bob: each of his sessions.
        subscribers.remove_user(bob);
        let mut told = link.told();
        told.sort();
        let mut want = vec![format!("leave {}", b1.session_id), format!("leave {}", b2.session_id)];
        want.sort();
        assert_eq!(told, want);
        // A planned move takes the rest, each told before it is handed on.
        assert_eq!(subscribers.take_all().len(), 1);
        assert_eq!(link.told(), vec![format!("leave {}", a2.session_id)]);
    }

    #[test]
    fn a_full_link_makes_its_sessions_here_slow_readers_and_spares_the_rest() {
        let subscribers = Subscribers::new(Uuid::new_v4());
        let (full, fine) = (Recorder::with_room(0), Recorder::with_room(10));
        let user = Uuid::new_v4();
        let stuck = [stand_in(&full, user), stand_in(&full, user)];
        let other = stand_in(&fine, user);
        for outbox in stuck.iter().chain([&other]) {
            subscribers.insert(outbox.clone(), 0);
        }
        subscribers.broadcast(&Frame::from("m"), None);
        for outbox in &stuck {
            assert_eq!(outbox.close_requested(), CLOSE_SLOW_CONSUMER);
        }
        assert_eq!(other.close_requested(), 0);
        assert_eq!(subscribers.len(), 1, "the slow readers are no longer subscribed");
    }
}
