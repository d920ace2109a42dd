//! Live sessions by user: who is online, where to deliver user-scoped and instance-wide
//! frames, and the per-user session cap (a newer session evicts the oldest).

use std::sync::Arc;

use dashmap::DashMap;
use uuid::Uuid;

use crate::outbox::{CLOSE_EVICTED, Outbox};
use crate::protocol::{Frame, ServerFrame};

#[derive(Default)]
pub struct SessionRegistry {
    /// user id → that user's open sessions, oldest first.
    by_user: DashMap<Uuid, Vec<Arc<Outbox>>>,
}

/// What registering a session changed.
pub struct Registered {
    /// True when this is the user's first live session (the user just came online).
    pub first_session: bool,
}

impl SessionRegistry {
    /// Adds a session. Over `cap`, the user's oldest sessions are told to close
    /// (`CLOSE_EVICTED`) and removed at once, so the new one always gets in.
    pub fn register(&self, outbox: Arc<Outbox>, cap: usize) -> Registered {
        let mut sessions = self.by_user.entry(outbox.user_id).or_default();
        let first_session = sessions.is_empty();
        sessions.push(outbox);
        while sessions.len() > cap.max(1) {
            let oldest = sessions.remove(0);
            oldest.push(
                ServerFrame::error(
                    "too_many_sessions",
                    "signed in on too many devices: this oldest session was closed",
                )
                .encode(),
            );
            oldest.close(CLOSE_EVICTED);
        }
        Registered { first_session }
    }

    /// Removes a session; returns true when it was the user's last one (user went offline).
    pub fn unregister(&self, user_id: Uuid, session_id: Uuid) -> bool {
        let mut last = false;
        self.by_user.remove_if_mut(&user_id, |_, sessions| {
            sessions.retain(|s| s.session_id != session_id);
            last = sessions.is_empty();
            last
        });
        last
    }

    pub fn is_online(&self, user_id: Uuid) -> bool {
        self.by_user.get(&user_id).is_some_and(|s| !s.is_empty())
    }

    /// Delivers to every session of `user_id` (optionally except one session).
    pub fn send_to_user(&self, user_id: Uuid, frame: &Frame, except_session: Option<Uuid>) {
        self.deliver(user_id, frame, except_session, Outbox::push);
    }

    /// Like `send_to_user`, for frames of the droppable class (typing, receipts, presence):
    /// a session whose queue is over half full does not get them.
    pub fn send_to_user_ephemeral(&self, user_id: Uuid, frame: &Frame, except_session: Option<Uuid>) {
        self.deliver(user_id, frame, except_session, Outbox::push_ephemeral);
    }

    fn deliver(
        &self,
        user_id: Uuid,
        frame: &Frame,
        except_session: Option<Uuid>,
        push: fn(&Outbox, Frame) -> bool,
    ) {
        if let Some(sessions) = self.by_user.get(&user_id) {
            for session in sessions.iter().filter(|s| Some(s.session_id) != except_session) {
                push(session, frame.clone());
            }
        }
    }

    /// Ephemeral frames dropped so far from the queues of a user's open sessions (metrics,
    /// tests).
    pub fn ephemeral_dropped(&self, user_id: Uuid) -> u64 {
        self.by_user.get(&user_id).map_or(0, |s| s.iter().map(|o| o.ephemeral_dropped()).sum())
    }

    /// Delivers to every connected session on this node.
    pub fn send_to_everyone(&self, frame: &Frame) {
        for sessions in self.by_user.iter() {
            for session in sessions.iter() {
                session.push(frame.clone());
            }
        }
    }

    /// Closes every session of a user (suspension, deletion, logout everywhere).
    pub fn close_user(&self, user_id: Uuid, code: u16) {
        if let Some(sessions) = self.by_user.get(&user_id) {
            for session in sessions.iter() {
                session.close(code);
            }
        }
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self, code: u16) {
        for sessions in self.by_user.iter() {
            for session in sessions.iter() {
                session.close(code);
            }
        }
    }

    /// Users with at least one session, among `candidates`.
    pub fn online_among<'a>(&self, candidates: impl IntoIterator<Item = &'a Uuid>) -> Vec<Uuid> {
        candidates.into_iter().filter(|id| self.is_online(**id)).copied().collect()
    }

    pub fn session_count(&self) -> usize {
        self.by_user.iter().map(|s| s.len()).sum()
    }
}
