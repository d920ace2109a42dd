//! Live sessions by user: who is online, where to deliver user-scoped and instance-wide
//! frames, and the per-user session cap (a newer session evicts the oldest).

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use uuid::Uuid;

use crate::elsewhere::Elsewhere;
use crate::error_code::ErrorCode;
use crate::outbox::{CLOSE_EVICTED, Outbox};
use crate::protocol::{Epoch, Frame, ServerFrame};

/// Where a DM channel's durable frame stands in its stream.
#[derive(Debug, Clone, Copy)]
pub struct DmPosition {
    pub channel_id: Uuid,
    pub epoch: Epoch,
    pub cseq: u64,
}

#[derive(Default)]
pub struct SessionRegistry {
    /// user id → that user's open sessions, oldest first.
    by_user: DashMap<Uuid, Vec<Arc<Outbox>>>,
    /// Sessions on the other nodes of a cluster (unset on a single node): user-scoped and
    /// instance-wide frames reach them too.
    elsewhere: OnceLock<Arc<dyn Elsewhere>>,
}

/// Which of a user's logins (refresh-token families) a revocation reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logins {
    /// Every login (password change, logout everywhere, recovery).
    All,
    /// One login (one session revoked, a stolen refresh token replayed).
    Only(Uuid),
    /// Every login except the caller's own (revoke the other sessions). Sockets whose token
    /// names no login cannot be told apart from the others and are included.
    AllBut(Uuid),
}

impl Logins {
    pub fn includes(self, login: Option<Uuid>) -> bool {
        match self {
            Self::All => true,
            Self::Only(only) => login == Some(only),
            Self::AllBut(kept) => login != Some(kept),
        }
    }
}

/// What registering a session changed.
pub struct Registered {
    /// True when this is the user's first live session (the user just came online).
    pub first_session: bool,
}

impl SessionRegistry {
    /// Joins the sessions of the other nodes (once; later calls are ignored).
    /// The other nodes of a cluster, if any.
    pub fn elsewhere(&self) -> Option<&Arc<dyn Elsewhere>> {
        self.elsewhere.get()
    }

    pub fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

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
                    ErrorCode::TooManySessions,
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
    /// In a cluster, the user's sessions on other nodes get it too.
    pub fn send_to_user(&self, user_id: Uuid, frame: &Frame, except_session: Option<Uuid>) {
        self.deliver(user_id, frame, except_session, Outbox::push);
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.send_to_users_except(&[user_id], frame, except_session);
        }
    }

    /// `send_to_user` for many users: one message to the other nodes, not one per user.
    pub fn send_to_users(&self, user_ids: &[Uuid], frame: &Frame) {
        self.send_to_users_here(user_ids, frame, None);
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.send_to_users(user_ids, frame);
        }
    }

    /// `send_to_users` on this node only (what another node asked for).
    pub fn send_to_users_here(&self, user_ids: &[Uuid], frame: &Frame, except_session: Option<Uuid>) {
        for user_id in user_ids {
            self.deliver(*user_id, frame, except_session, Outbox::push);
        }
    }

    /// `send_to_user` for a durable frame of a DM channel at `cseq`: each session notes the
    /// first position it got live (so a later replay does not repeat it).
    pub fn send_dm_frame(&self, user_id: Uuid, frame: &Frame, except_session: Option<Uuid>, at: DmPosition) {
        if let Some(sessions) = self.by_user.get(&user_id) {
            for session in sessions.iter().filter(|s| Some(s.session_id) != except_session) {
                session.dm_seen(at.channel_id, at.epoch, at.cseq);
                session.push(frame.clone());
            }
        }
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.send_to_users_except(&[user_id], frame, except_session);
        }
    }

    /// One open session of a user.
    pub fn session(&self, user_id: Uuid, session_id: Uuid) -> Option<Arc<Outbox>> {
        self.by_user.get(&user_id)?.iter().find(|s| s.session_id == session_id).cloned()
    }

    /// Every open session of a user.
    pub fn sessions_of(&self, user_id: Uuid) -> Vec<Arc<Outbox>> {
        self.by_user.get(&user_id).map(|s| s.iter().cloned().collect()).unwrap_or_default()
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

    /// Delivers to every connected session (in a cluster, on every node).
    pub fn send_to_everyone(&self, frame: &Frame) {
        self.send_to_everyone_here(frame);
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.send_to_everyone(frame);
        }
    }

    /// Delivers to every connected session on this node.
    pub fn send_to_everyone_here(&self, frame: &Frame) {
        for sessions in self.by_user.iter() {
            for session in sessions.iter() {
                session.push(frame.clone());
            }
        }
    }

    /// Closes every session of a user (suspension, deletion, logout everywhere).
    pub fn close_user(&self, user_id: Uuid, code: u16) {
        self.close_logins(user_id, Logins::All, code);
    }

    /// Closes the user's sessions opened by the given logins (a revoked session, every login
    /// but the current one). They leave the registry when their socket task ends.
    pub fn close_logins(&self, user_id: Uuid, logins: Logins, code: u16) {
        if let Some(sessions) = self.by_user.get(&user_id) {
            for session in sessions.iter().filter(|s| logins.includes(s.login)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::CLOSE_UNAUTHORIZED;

    #[test]
    fn closing_logins_reaches_only_their_sockets() {
        let registry = SessionRegistry::default();
        let user = Uuid::new_v4();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut keep = Vec::new();
        let mut open = |login| {
            let (outbox, rx) = Outbox::for_login(Uuid::new_v4(), user, login, 8, 1 << 20);
            registry.register(outbox.clone(), 8);
            keep.push(rx);
            outbox
        };
        let (on_a, on_b, legacy) = (open(Some(a)), open(Some(b)), open(None));
        let states = || [&on_a, &on_b, &legacy].map(|o| o.close_requested());

        registry.close_logins(user, Logins::Only(b), CLOSE_UNAUTHORIZED);
        assert_eq!(states(), [0, CLOSE_UNAUTHORIZED, 0]);
        registry.close_logins(user, Logins::AllBut(a), CLOSE_UNAUTHORIZED);
        assert_eq!(states(), [0, CLOSE_UNAUTHORIZED, CLOSE_UNAUTHORIZED]);
        registry.close_logins(user, Logins::All, CLOSE_UNAUTHORIZED);
        assert_eq!(states(), [CLOSE_UNAUTHORIZED; 3]);
    }
}
