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

/// One other node's sessions of a user: (node id, session ids).
type NodeSessions = (Arc<str>, Vec<Uuid>);

/// Clones share one registry (a delayed cap check holds a clone).
#[derive(Default, Clone)]
pub struct SessionRegistry {
    /// user id → that user's open sessions, oldest first.
    by_user: Arc<DashMap<Uuid, Vec<Arc<Outbox>>>>,
    /// Cluster only: user id → the sessions each other node last told it holds for that user.
    /// Session ids are time-ordered (UUIDv7), so with the local ones they say which sessions
    /// are the user's newest anywhere, and the per-user cap holds across the cluster.
    remote: Arc<DashMap<Uuid, Vec<NodeSessions>>>,
    /// Users with a delayed cap check pending (one timer per user, however many sessions open
    /// meanwhile).
    cap_checks: Arc<DashMap<Uuid, ()>>,
    /// Sessions on the other nodes of a cluster (unset on a single node): user-scoped and
    /// instance-wide frames reach them too.
    elsewhere: Arc<OnceLock<Arc<dyn Elsewhere>>>,
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
    /// (`CLOSE_EVICTED`) and removed, so the new one always gets in (see `enforce_cap`).
    pub fn register(&self, outbox: Arc<Outbox>, cap: usize) -> Registered {
        let user_id = outbox.user_id;
        let first_session = {
            let mut sessions = self.by_user.entry(user_id).or_default();
            let first = sessions.is_empty();
            sessions.push(outbox);
            first
        };
        self.enforce_cap(user_id, cap);
        self.tell_sessions(user_id);
        Registered { first_session }
    }

    /// Removes a session; returns true when it was the user's last one (user went offline).
    pub fn unregister(&self, user_id: Uuid, session_id: Uuid) -> bool {
        let mut last = false;
        let mut removed = false;
        self.by_user.remove_if_mut(&user_id, |_, sessions| {
            let before = sessions.len();
            sessions.retain(|s| s.session_id != session_id);
            removed = sessions.len() < before;
            last = sessions.is_empty();
            last
        });
        if removed {
            self.tell_sessions(user_id);
        }
        last
    }

    /// Keeps the per-user cap: a user's sessions beyond their `cap` newest close
    /// (`too_many_sessions`, `CLOSE_EVICTED`). Sessions over the cap on this node alone close
    /// at once. Sessions that are over it only counting other nodes' close after
    /// `Elsewhere::cap_grace`, if they still are then: right after a node dies its sessions
    /// still count, while their users reconnect here. Every node applies the same rule to its
    /// own sessions, so the cluster converges on the `cap` newest (a new session on any node
    /// evicts the oldest, wherever it is).
    fn enforce_cap(&self, user_id: Uuid, cap: usize) {
        let cap = cap.max(1);
        self.close_beyond(user_id, cap, &[]);
        let elsewhere = self.remote_ids(user_id);
        if !elsewhere.is_empty() && self.oldest_kept(user_id, cap, &elsewhere).is_some() {
            self.check_cap_later(user_id, cap);
        }
    }

    /// The ids of `user`'s sessions on other nodes.
    fn remote_ids(&self, user_id: Uuid) -> Vec<Uuid> {
        self.remote
            .get(&user_id)
            .map(|nodes| nodes.iter().flat_map(|(_, ids)| ids.iter().copied()).collect())
            .unwrap_or_default()
    }

    /// The oldest of `user`'s `cap` newest sessions (here and `elsewhere`), when some session
    /// here is older than it.
    fn oldest_kept(&self, user_id: Uuid, cap: usize, elsewhere: &[Uuid]) -> Option<Uuid> {
        let sessions = self.by_user.get(&user_id)?;
        if sessions.len() + elsewhere.len() <= cap {
            return None;
        }
        let mut newest_first: Vec<Uuid> =
            sessions.iter().map(|s| s.session_id).chain(elsewhere.iter().copied()).collect();
        newest_first.sort_unstable_by(|a, b| b.cmp(a));
        let oldest_kept = newest_first[cap - 1];
        sessions.iter().any(|s| s.session_id < oldest_kept).then_some(oldest_kept)
    }

    /// Closes this node's sessions of `user` that are not among their `cap` newest, counting
    /// `elsewhere` too. Returns whether any closed.
    fn close_beyond(&self, user_id: Uuid, cap: usize, elsewhere: &[Uuid]) -> bool {
        let Some(oldest_kept) = self.oldest_kept(user_id, cap, elsewhere) else { return false };
        let Some(mut sessions) = self.by_user.get_mut(&user_id) else { return false };
        let before = sessions.len();
        sessions.retain(|session| {
            if session.session_id >= oldest_kept {
                return true;
            }
            session.push(
                ServerFrame::error(
                    ErrorCode::TooManySessions,
                    "signed in on too many devices: this oldest session was closed",
                )
                .encode(),
            );
            session.close(CLOSE_EVICTED);
            false
        });
        sessions.len() < before
    }

    /// Checks `user` against the cap again, counting other nodes, after the grace.
    fn check_cap_later(&self, user_id: Uuid, cap: usize) {
        let Some(grace) = self.elsewhere.get().map(|e| e.cap_grace()) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.cap_checks.insert(user_id, ()).is_some() {
            return;
        }
        let registry = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            registry.cap_checks.remove(&user_id);
            let elsewhere = registry.remote_ids(user_id);
            if registry.close_beyond(user_id, cap, &elsewhere) {
                registry.tell_sessions(user_id);
            }
        });
    }

    /// Tells the other nodes which sessions of `user` are here now.
    fn tell_sessions(&self, user_id: Uuid) {
        if let Some(elsewhere) = self.elsewhere.get() {
            let here: Vec<Uuid> = self
                .by_user
                .get(&user_id)
                .map(|sessions| sessions.iter().map(|s| s.session_id).collect())
                .unwrap_or_default();
            elsewhere.sessions_changed(user_id, &here);
        }
    }

    /// Another node's sessions of `user` (replacing what it told before; empty: none there).
    /// Over `cap`, this node's oldest sessions of the user close (after the grace).
    pub fn remote_sessions(&self, node: &str, user_id: Uuid, mut sessions: Vec<Uuid>, cap: usize) {
        // That node holds at most `cap` itself; more is a confused or hostile peer.
        sessions.sort_unstable_by(|a, b| b.cmp(a));
        sessions.truncate(cap.max(1));
        if sessions.is_empty() {
            self.remote.remove_if_mut(&user_id, |_, nodes| {
                nodes.retain(|(n, _)| &**n != node);
                nodes.is_empty()
            });
            return;
        }
        {
            let mut nodes = self.remote.entry(user_id).or_default();
            match nodes.iter_mut().find(|(n, _)| &**n == node) {
                Some((_, ids)) => *ids = sessions,
                None => nodes.push((Arc::from(node), sessions)),
            }
        }
        self.enforce_cap(user_id, cap);
    }

    /// Forgets the sessions `node` told of for users it no longer lists (its presence digest
    /// names every user with a session there: this repairs a lost "none left").
    pub fn remote_digest(&self, node: &str, listed: &std::collections::HashSet<Uuid>) {
        self.remote.retain(|user, nodes| {
            if !listed.contains(user) {
                nodes.retain(|(n, _)| &**n != node);
            }
            !nodes.is_empty()
        });
    }

    /// Forgets the sessions of every node not in `live` (a crashed node's sessions died with it:
    /// counted, they would evict live ones as their users reconnect elsewhere).
    pub fn forget_nodes_except(&self, live: &[String]) {
        self.remote.retain(|_, nodes| {
            nodes.retain(|(n, _)| live.iter().any(|l| **l == **n));
            !nodes.is_empty()
        });
    }

    /// Forgets every session of a node gone silent.
    pub fn forget_node(&self, node: &str) {
        self.remote.retain(|_, nodes| {
            nodes.retain(|(n, _)| &**n != node);
            !nodes.is_empty()
        });
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
    use std::time::Duration;

    use crate::outbox::{CLOSE_UNAUTHORIZED, OutboxReceiver};

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

    /// Another node that tells nothing (the cap's grace is the default 3 s).
    struct QuietNodes;
    impl Elsewhere for QuietNodes {
        fn send_to_users_except(&self, _: &[Uuid], _: &Frame, _: Option<Uuid>) {}
        fn send_to_everyone(&self, _: &Frame) {}
        fn roster_changed(&self, _: crate::roster::RosterChange) {}
        fn presence_changed(&self, _: Uuid, _: &'static str) {}
        fn voice_changed(&self, _: Uuid, _: Uuid, _: bool) {}
        fn sessions_changed(&self, _: Uuid, _: &[Uuid]) {}
    }

    /// A user with six sessions here (the oldest) and then four newer on node "a": cap 8.
    fn six_here_then_four_elsewhere() -> (SessionRegistry, Uuid, Vec<Arc<Outbox>>, Vec<OutboxReceiver>) {
        let registry = SessionRegistry::default();
        registry.set_elsewhere(Arc::new(QuietNodes));
        let user = Uuid::new_v4();
        let (mut here, mut receivers) = (Vec::new(), Vec::new());
        for _ in 0..6 {
            let (outbox, rx) = Outbox::new(Uuid::now_v7(), user, 8);
            registry.register(outbox.clone(), 8);
            here.push(outbox);
            receivers.push(rx);
        }
        let elsewhere = (0..4).map(|_| Uuid::now_v7()).collect();
        registry.remote_sessions("a", user, elsewhere, 8);
        (registry, user, here, receivers)
    }

    fn closed(sessions: &[Arc<Outbox>]) -> Vec<bool> {
        sessions.iter().map(|s| s.close_requested() == CLOSE_EVICTED).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_over_the_cap_only_with_other_nodes_close_after_the_grace() {
        let (registry, user, here, _rx) = six_here_then_four_elsewhere();
        assert_eq!(closed(&here), [false; 6], "nothing closes before the grace");
        tokio::time::sleep(Duration::from_millis(2900)).await;
        assert_eq!(closed(&here), [false; 6]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(closed(&here), [true, true, false, false, false, false], "the two oldest anywhere");
        assert_eq!(registry.sessions_of(user).len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_nodes_sessions_forgotten_within_the_grace_close_nothing() {
        let (registry, user, here, _rx) = six_here_then_four_elsewhere();
        tokio::time::sleep(Duration::from_secs(1)).await;
        registry.forget_nodes_except(&[]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(closed(&here), [false; 6]);
        assert_eq!(registry.sessions_of(user).len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_cap_on_this_node_alone_closes_at_once() {
        let (registry, user, here, _rx) = six_here_then_four_elsewhere();
        let (three_more, _rx2): (Vec<_>, Vec<_>) =
            (0..3).map(|_| Outbox::new(Uuid::now_v7(), user, 8)).unzip();
        for outbox in &three_more {
            registry.register(outbox.clone(), 8);
        }
        assert_eq!(closed(&here), [true, false, false, false, false, false], "nine here: the oldest at once");
        tokio::time::sleep(Duration::from_secs(4)).await;
        // Then, with the four newer elsewhere, only the four newest here stay.
        assert_eq!(closed(&here), [true, true, true, true, true, false]);
        assert_eq!(closed(&three_more), [false; 3]);
        assert_eq!(registry.sessions_of(user).len(), 4);
    }
}
