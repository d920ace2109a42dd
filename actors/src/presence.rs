//! Presence: who is online, told to community mates without O(n²) frames.
//!
//! Changes are coalesced: every `FLUSH` the pending changes (latest per user wins) are
//! grouped by recipient, and each online mate gets ONE frame for the whole batch
//! (`presence_update` for a single change, `presence_bulk` for several). 5,000 sockets
//! joining one community therefore cost a handful of frames per socket, not 5,000.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::hub::Shared;
use crate::protocol::ServerFrame;
use crate::store;

const FLUSH: Duration = Duration::from_millis(250);

pub struct Presence {
    changes: mpsc::UnboundedSender<(Uuid, &'static str)>,
    /// Status set with `update_presence` for users who chose something other than online.
    chosen: Arc<DashMap<Uuid, &'static str>>,
    task: JoinHandle<()>,
}

/// The wire's statuses; `invisible` is announced as `offline`.
pub fn parse_status(s: &str) -> Option<&'static str> {
    match s {
        "online" => Some("online"),
        "idle" => Some("idle"),
        "dnd" => Some("dnd"),
        "invisible" => Some("invisible"),
        "offline" => Some("offline"),
        _ => None,
    }
}

impl Presence {
    pub fn start(shared: Arc<Shared>) -> Self {
        let (changes, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(flush_loop(shared, rx));
        Self { changes, chosen: Arc::new(DashMap::new()), task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }

    /// A user came online (first session).
    pub fn online(&self, user_id: Uuid) {
        self.chosen.remove(&user_id);
        let _ = self.changes.send((user_id, "online"));
    }

    /// A user's last session closed.
    pub fn offline(&self, user_id: Uuid) {
        self.chosen.remove(&user_id);
        let _ = self.changes.send((user_id, "offline"));
    }

    /// `update_presence` from a client.
    pub fn set(&self, user_id: Uuid, status: &'static str) {
        self.chosen.insert(user_id, status);
        let announced = if status == "invisible" { "offline" } else { status };
        let _ = self.changes.send((user_id, announced));
    }

    /// The statuses to list for `user_id` right after authentication: online mates.
    pub async fn bulk_for(&self, shared: &Shared, user_id: Uuid) -> Vec<(Uuid, String)> {
        let Ok(mut mates) = store::mates_of(&shared.db, &[user_id]).await else { return Vec::new() };
        let mates = mates.remove(&user_id).unwrap_or_default();
        mates
            .into_iter()
            .filter(|m| shared.sessions.is_online(*m))
            .filter(|m| self.chosen.get(m).is_none_or(|s| *s != "invisible"))
            .take(5000)
            .map(|m| (m, "online".to_string()))
            .collect()
    }
}

async fn flush_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(Uuid, &'static str)>) {
    let mut pending: HashMap<Uuid, &'static str> = HashMap::new();
    loop {
        // Wait for the first change, then gather everything arriving within FLUSH.
        match rx.recv().await {
            Some((user, status)) => {
                pending.insert(user, status);
            }
            None => return,
        }
        tokio::time::sleep(FLUSH).await;
        while let Ok((user, status)) = rx.try_recv() {
            pending.insert(user, status);
        }
        let changed: Vec<Uuid> = pending.keys().copied().collect();
        let communities = match store::communities_of(&shared.db, &changed).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "presence lookup failed; dropping a batch");
                pending.clear();
                continue;
            }
        };
        // One frame per community, encoded once, to its online members. A user in several
        // of those communities gets one frame per community (bounded, never per change).
        for members in communities.values() {
            let mut statuses: Vec<(Uuid, String)> = members
                .iter()
                .filter_map(|m| pending.get(m).map(|status| (*m, status.to_string())))
                .collect();
            if statuses.is_empty() {
                continue;
            }
            statuses.sort();
            // A lone change need not be told to its own subject.
            let lone_subject = (statuses.len() == 1).then(|| statuses[0].0);
            let frame = match lone_subject {
                Some(user_id) => {
                    ServerFrame::PresenceUpdate { user_id, status: statuses.remove(0).1 }.encode()
                }
                None => ServerFrame::PresenceBulk { statuses }.encode(),
            };
            for member in members.iter().filter(|m| Some(**m) != lone_subject) {
                shared.sessions.send_to_user(*member, &frame, None);
            }
        }
        pending.clear();
    }
}
