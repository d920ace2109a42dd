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
