//! The subscriber registry of one channel: the sessions that receive its events.
//!
//! Owned by the channel's registry slot (not the actor), so subscribers survive a restart of
//! the actor; only the channel actor fans out from it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::outbox::Outbox;
use crate::protocol::{Frame, ServerFrame};

/// One subscribed session.
struct Subscriber {
    outbox: Arc<Outbox>,
    /// The channel's position when it was attached: every durable frame above it (in the
    /// current epoch) reached it live, so a replay never repeats those.
    attached_at: u64,
}

/// The sessions subscribed to one channel. Only the channel actor fans out from it.
#[derive(Default)]
pub struct Subscribers {
    sessions: Mutex<HashMap<Uuid, Subscriber>>,
    /// True while messages are being committed and not yet announced. If the actor dies
    /// then, stored messages may never have been sent to anyone: its successor must tell
    /// the subscribers (kept here because the actor's own state dies with it).
    unannounced: AtomicBool,
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Subscriber>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removals), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the same bytes to every subscriber except `except`. Never waits.
    pub fn broadcast(&self, frame: &Frame, except: Option<Uuid>) {
        self.fan_out(frame, except, Outbox::push);
    }

    /// `broadcast` for frames of the droppable class (see `Outbox::push_ephemeral`).
    pub fn broadcast_ephemeral(&self, frame: &Frame, except: Option<Uuid>) {
        self.fan_out(frame, except, Outbox::push_ephemeral);
    }

    fn fan_out(&self, frame: &Frame, except: Option<Uuid>, push: fn(&Outbox, Frame) -> bool) {
        // Remote subscribers' links are woken once, after every local socket's writer.
        crate::cluster::link::with_wakes_held(|| {
            let mut sessions = self.lock();
            sessions.retain(|id, s| {
                if Some(*id) != except {
                    push(&s.outbox, frame.clone());
                }
                !s.outbox.is_closed()
            });
        });
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
        self.lock().drain().map(|(_, s)| s.outbox).collect()
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
        sessions.insert(outbox.session_id, Subscriber { outbox, attached_at: at });
        true
    }

    pub(super) fn remove(&self, session_id: Uuid) {
        self.lock().remove(&session_id);
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    pub(super) fn remove_user(&self, user_id: Uuid) {
        self.lock().retain(|_, s| s.outbox.user_id != user_id);
    }
}
