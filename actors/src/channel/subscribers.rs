//! The subscriber registry of one channel: the sessions that receive its events.
//!
//! Owned by the channel's registry slot (not the actor), so subscribers survive a restart of
//! the actor; only the channel actor fans out from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::outbox::Outbox;
use crate::protocol::Frame;

/// The sessions subscribed to one channel. Only the channel actor fans out from it.
#[derive(Default)]
pub struct Subscribers {
    sessions: Mutex<HashMap<Uuid, Arc<Outbox>>>,
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Outbox>>> {
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
        let mut sessions = self.lock();
        sessions.retain(|id, outbox| {
            if Some(*id) != except {
                push(outbox, frame.clone());
            }
            !outbox.is_closed()
        });
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn insert(&self, outbox: Arc<Outbox>) -> bool {
        self.lock().insert(outbox.session_id, outbox).is_none()
    }

    pub(super) fn remove(&self, session_id: Uuid) {
        self.lock().remove(&session_id);
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    pub(super) fn remove_user(&self, user_id: Uuid) {
        self.lock().retain(|_, o| o.user_id != user_id);
    }
}
