//! `Elsewhere`: what this node tells the other nodes of a cluster (the cluster bus implements
//! it). The session registry, the roster and presence hold one each, unset on a single node,
//! so they need not know the cluster module.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::Frame;

/// Must return at once: implementations queue, never wait.
pub trait Elsewhere: Send + Sync {
    /// Every session of these users on the other nodes.
    fn send_to_users(&self, users: &[Uuid], frame: &Frame) {
        self.send_to_users_except(users, frame, None);
    }
    /// The same, skipping one session (the sender's own, for the frame it caused).
    fn send_to_users_except(&self, users: &[Uuid], frame: &Frame, except_session: Option<Uuid>);
    /// Every session on the other nodes.
    fn send_to_everyone(&self, frame: &Frame);
    /// A committed membership change, so the other nodes' rosters stay exact.
    fn roster_changed(&self, change: RosterChange);
    /// The status this node now announces for one of its users (`offline`: none of their
    /// sessions is here any more).
    fn presence_changed(&self, user: Uuid, status: &'static str);
    /// A user joined or left the voice session of a channel owned here (other nodes check
    /// WebRTC signalling and voice moves against it).
    fn voice_changed(&self, user: Uuid, channel: Uuid, joined: bool);
    /// The sessions of a user on this node now (after one opened or closed): the per-user
    /// session cap counts them on every node.
    fn sessions_changed(&self, user: Uuid, sessions: &[Uuid]);
    /// How long this node waits before closing its own sessions of a user only because
    /// sessions on other nodes put the user over the cap. Right after a node dies, the
    /// sessions it held still count until it leaves the live set, while their users are
    /// already reconnecting here: closing at once would evict live sessions for ghosts.
    fn cap_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3)
    }
}

/// A committed membership change (what the other nodes of a cluster are told).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RosterChange {
    Joined {
        community: Uuid,
        user: Uuid,
    },
    /// Left, kicked or banned.
    Left {
        community: Uuid,
        user: Uuid,
    },
    CommunityDeleted {
        community: Uuid,
    },
    /// Every membership went with the account.
    UserDeleted {
        user: Uuid,
    },
}
