//! The `Hub`: the registry of live actors and sessions, and the entry point for routes.

use std::sync::Arc;

use uuid::Uuid;

use palaver_entity::users;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

use crate::outbox::{CLOSE_GOING_AWAY, CLOSE_UNAUTHORIZED};
use crate::protocol::ServerFrame;
use crate::registry::SessionRegistry;
use crate::users::BarredUsers;

/// Tunables of the live side (the server fills them from its configuration).
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Per-socket frame bucket: burst.
    pub ws_rate_burst: u32,
    /// Per-socket frame bucket: refill per second.
    pub ws_rate_per_second: u32,
    /// Frames queued per socket before a slow reader is disconnected.
    pub outbound_queue: usize,
    /// Sockets per user; one more evicts the oldest.
    pub max_sessions_per_user: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { ws_rate_burst: 10, ws_rate_per_second: 5, outbound_queue: 1024, max_sessions_per_user: 8 }
    }
}

pub struct Hub {
    pub db: DatabaseConnection,
    pub config: HubConfig,
    /// Suspended or deleted users: refused on every request and socket.
    pub users: BarredUsers,
    /// Live sessions by user.
    pub sessions: SessionRegistry,
}

impl Hub {
    /// Loads what must be known before serving (barred users) and starts the supervisors.
    pub async fn start(db: DatabaseConnection, config: HubConfig) -> Result<Arc<Self>, sea_orm::DbErr> {
        let barred = BarredUsers::default();
        let suspended: Vec<uuid::Uuid> = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .filter(users::Column::SuspendedAt.is_not_null())
            .into_tuple()
            .all(&db)
            .await?;
        for id in suspended {
            barred.bar(id);
        }
        Ok(Arc::new(Self { db, config, users: barred, sessions: SessionRegistry::default() }))
    }

    /// Closes every session and stops every actor.
    pub async fn shutdown(&self) {
        self.sessions.close_all(CLOSE_GOING_AWAY);
    }

    /// User scope: every session of one user.
    pub fn send_to_user(&self, user_id: Uuid, frame: &ServerFrame) {
        self.sessions.send_to_user(user_id, &frame.encode(), None);
    }

    /// Everyone scope: every connected session (profile updates, announcements).
    pub fn send_to_everyone(&self, frame: &ServerFrame) {
        self.sessions.send_to_everyone(&frame.encode());
    }

    /// Refuses a user's tokens from now on and closes their sockets (suspension, deletion).
    pub fn bar_user(&self, user_id: Uuid) {
        self.users.bar(user_id);
        self.sessions.close_user(user_id, CLOSE_UNAUTHORIZED);
    }

    /// Accepts a user's tokens again (unsuspension).
    pub fn unbar_user(&self, user_id: Uuid) {
        self.users.unbar(user_id);
    }
}
