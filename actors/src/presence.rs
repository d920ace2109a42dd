//! Presence: who is online, told to community mates without O(n²) frames.
//!
//! An announcement (first session opened, last session closed, `update_presence`) updates the
//! in-memory [`Roster`](crate::roster::Roster) at once, so the `presence_bulk` a new session
//! gets lists the mates present at that moment without touching the database, and queues the
//! change for each of the user's communities.
//!
//! Changes are coalesced per community: a community's pending changes (latest per user wins)
//! go out as ONE frame, encoded once, to its online members (`presence_update` for a single
//! change, `presence_bulk` for several) when its window is over, or earlier once no change
//! came for [`LULL`]. The window adapts: a lone change waits only [`MIN_WINDOW`]; while a
//! community's batches are big (a connect storm, a restart) each window doubles up to
//! [`MAX_WINDOW`]; small batches halve it again and a quiet community starts over at the
//! minimum. 5,000 sockets joining one community thus cost each socket a bulk and a few batch
//! frames, not one frame per 250 ms of the ramp, and the last batch of a storm still goes
//! out [`LULL`] after its last change.
//!
//! In a cluster a user is present while any node lists them (the latest status told wins).
//! Each node tells the others the status it announces for its own users (a delta per change,
//! and a digest of all of them now and then); the roster and this flush are driven by that
//! union, and presence frames are built by each node for its own sockets only. A node not heard
//! from for the TTL has its users dropped (`expire_remote`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::elsewhere::Elsewhere;
use crate::protocol::ServerFrame;
use crate::shared::Shared;

/// A community's first change after a quiet spell waits this long for company.
const MIN_WINDOW: Duration = Duration::from_millis(250);
/// The widest window a burst can grow to: a change is never held longer.
const MAX_WINDOW: Duration = Duration::from_secs(2);
/// A batch goes out before its window is over once no change came for this long: the end
/// of a storm is told promptly. Long enough not to cut a storm's windows at every hiccup.
const LULL: Duration = Duration::from_millis(500);
/// A batch at least this big means a burst: the community's next window doubles.
const BURST_BATCH: usize = 16;
/// Mates listed in a session's `presence_bulk` at most (wire: capped at 5000).
const BULK_CAP: usize = 5000;
/// Queued changes taken in one go before timers get a look-in.
const DRAIN_MAX: usize = 4096;

/// One user's announced status, for the communities they belonged to at that moment.
struct Change {
    user_id: Uuid,
    status: &'static str,
    communities: Vec<Uuid>,
}

pub struct Presence {
    shared: Arc<Shared>,
    changes: mpsc::UnboundedSender<Change>,
    /// Who is present where. Announcements update it, the roster and the queue in one order
    /// under this lock, so a reconnect racing the previous session's close ends online.
    book: Mutex<Book>,
    /// The other nodes of a cluster (unset on a single node): told of this node's statuses.
    elsewhere: OnceLock<Arc<dyn Elsewhere>>,
    task: JoinHandle<()>,
}

/// Statuses by where they were announced.
#[derive(Default)]
struct Book {
    /// Users with a session here → the status this node announces for them (not `offline`).
    local: HashMap<Uuid, &'static str>,
    /// Other nodes → what they announce for their users.
    remote: HashMap<String, RemoteNode>,
    /// Orders remote statuses: the latest told wins.
    told: u64,
}

struct RemoteNode {
    /// user → (status, when it was told).
    users: HashMap<Uuid, (&'static str, u64)>,
    /// Last delta or digest from that node.
    heard: Instant,
}

impl Book {
    /// The status shown for a user: this node's, else the latest another node told, else
    /// offline.
    fn shown(&self, user_id: Uuid) -> &'static str {
        if let Some(status) = self.local.get(&user_id) {
            return status;
        }
        self.remote
            .values()
            .filter_map(|node| node.users.get(&user_id))
            .max_by_key(|(_, told)| *told)
            .map_or("offline", |(status, _)| *status)
    }

    fn listed_elsewhere(&self, user_id: Uuid) -> bool {
        self.remote.values().any(|node| node.users.contains_key(&user_id))
    }

    fn next_told(&mut self) -> u64 {
        self.told += 1;
        self.told
    }
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
        let task = tokio::spawn(flush_loop(shared.clone(), rx));
        Self { shared, changes, book: Mutex::new(Book::default()), elsewhere: OnceLock::new(), task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }

    /// Tells the other nodes of this node's statuses from now on (once).
    pub fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    /// A user came online (first session).
    pub fn online(&self, user_id: Uuid) {
        self.announce(user_id, "online", |_| true);
    }

    /// A user's last session closed. A session opened since then keeps them online.
    pub fn offline(&self, user_id: Uuid) {
        self.announce(user_id, "offline", |shared| !shared.sessions.is_online(user_id));
    }

    /// `update_presence` from a client.
    pub fn set(&self, user_id: Uuid, status: &'static str) {
        let announced = if status == "invisible" { "offline" } else { status };
        self.announce(user_id, announced, |_| true);
    }

    /// The statuses to list for `user_id` right after authentication: present mates, each
    /// as `online` (the wire's bulk never reports other statuses).
    pub fn bulk_for(&self, user_id: Uuid) -> Vec<(Uuid, String)> {
        let mates = self.shared.roster.present_mates(user_id, BULK_CAP);
        mates.into_iter().map(|m| (m, "online".to_string())).collect()
    }

    /// What this node announces for its users (the digest other nodes get).
    pub fn local_statuses(&self) -> Vec<(Uuid, &'static str)> {
        self.book().local.iter().map(|(user, status)| (*user, *status)).collect()
    }

    /// Another node's delta: the status it now announces for one of its users.
    pub fn remote_changed(&self, node: &str, user_id: Uuid, status: &'static str) {
        let mut book = self.book();
        let before = book.shown(user_id);
        let told = book.next_told();
        let entry = book
            .remote
            .entry(node.to_string())
            .or_insert_with(|| RemoteNode { users: HashMap::new(), heard: Instant::now() });
        entry.heard = Instant::now();
        if status == "offline" {
            entry.users.remove(&user_id);
        } else {
            entry.users.insert(user_id, (status, told));
        }
        self.show_if_changed(&book, user_id, before);
    }

    /// Another node's digest: every status it announces, replacing what it told before.
    pub fn remote_digest(&self, node: &str, statuses: Vec<(Uuid, &'static str)>) {
        let mut book = self.book();
        let told = book.next_told();
        let old = book.remote.remove(node).map(|n| n.users).unwrap_or_default();
        let mut users = HashMap::with_capacity(statuses.len());
        for (user, status) in statuses {
            // An unchanged status keeps its age: a digest does not outrank a newer delta
            // from another node.
            let kept = old.get(&user).filter(|(was, _)| *was == status).map_or(told, |(_, at)| *at);
            users.insert(user, (status, kept));
        }
        let affected: HashSet<Uuid> = old.keys().chain(users.keys()).copied().collect();
        book.remote.insert(node.to_string(), RemoteNode { users: old, heard: Instant::now() });
        let before: Vec<(Uuid, &'static str)> = affected.iter().map(|u| (*u, book.shown(*u))).collect();
        if let Some(entry) = book.remote.get_mut(node) {
            entry.users = users;
        }
        for (user_id, was) in before {
            self.show_if_changed(&book, user_id, was);
        }
    }

    /// Drops what nodes silent for `ttl` told (a dead or cut-off node's users go offline).
    /// Returns the nodes forgotten.
    pub fn expire_remote(&self, ttl: Duration) -> Vec<String> {
        let mut book = self.book();
        let now = Instant::now();
        let silent: Vec<String> = book
            .remote
            .iter()
            .filter(|(_, n)| now.duration_since(n.heard) >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for node in &silent {
            let users: Vec<Uuid> =
                book.remote.get(node).map(|n| n.users.keys().copied().collect()).unwrap_or_default();
            let before: Vec<(Uuid, &'static str)> = users.iter().map(|u| (*u, book.shown(*u))).collect();
            book.remote.remove(node);
            tracing::info!(node, users = users.len(), "presence: a silent node's users are no longer listed");
            for (user_id, was) in before {
                self.show_if_changed(&book, user_id, was);
            }
        }
        silent
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change on this node: always told to local mates (as on a single node), unless another
    /// node still shows the user and the status shown stays the same.
    fn announce(&self, user_id: Uuid, status: &'static str, still_applies: impl FnOnce(&Shared) -> bool) {
        let mut book = self.book();
        if !still_applies(&self.shared) {
            return;
        }
        let before = book.shown(user_id);
        if status == "offline" {
            book.local.remove(&user_id);
        } else {
            book.local.insert(user_id, status);
        }
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.presence_changed(user_id, status);
        }
        let shown = book.shown(user_id);
        if shown != before || !book.listed_elsewhere(user_id) {
            self.show(user_id, shown);
        }
    }

    fn show_if_changed(&self, book: &Book, user_id: Uuid, before: &'static str) {
        let shown = book.shown(user_id);
        if shown != before {
            self.show(user_id, shown);
        }
    }

    /// Updates the roster and queues the change for the user's communities (called with the
    /// book locked, so roster and queue follow the book's order).
    fn show(&self, user_id: Uuid, status: &'static str) {
        let communities = self.shared.roster.set_present(user_id, status != "offline");
        if !communities.is_empty() {
            let _ = self.changes.send(Change { user_id, status, communities });
        }
    }
}

/// A community's pending changes.
struct Batch {
    changes: HashMap<Uuid, &'static str>,
    window: Duration,
    opened: Instant,
    last_change: Instant,
}

impl Batch {
    /// At the end of the window, or after a [`LULL`].
    fn due(&self) -> Instant {
        (self.last_change + LULL).min(self.opened + self.window)
    }
}

/// The window a community's next batch gets, while its burst lasts.
struct Pace {
    window: Duration,
    flushed_at: Instant,
}

impl Pace {
    /// A burst lasts while changes keep coming within one window of the last flush.
    fn bursting(&self, now: Instant) -> bool {
        now.duration_since(self.flushed_at) < self.window
    }
}

async fn flush_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Change>) {
    let mut batches: HashMap<Uuid, Batch> = HashMap::new();
    let mut paces: HashMap<Uuid, Pace> = HashMap::new();
    loop {
        let next_due = batches.values().map(Batch::due).min();
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { return };
                let now = Instant::now();
                queue(&mut batches, &paces, change, now);
                for _ in 0..DRAIN_MAX {
                    let Ok(change) = rx.try_recv() else { break };
                    queue(&mut batches, &paces, change, now);
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                let due: Vec<Uuid> = batches.iter().filter(|(_, b)| b.due() <= now).map(|(c, _)| *c).collect();
                for community_id in due {
                    let Some(batch) = batches.remove(&community_id) else { continue };
                    let size = flush(&shared, community_id, &batch.changes);
                    let window = next_window(batch.window, size);
                    tracing::debug!(community = %community_id, size, held_ms = now.duration_since(batch.opened).as_millis() as u64, next_window_ms = window.as_millis() as u64, "presence batch sent");
                    paces.insert(community_id, Pace { window, flushed_at: now });
                }
                paces.retain(|_, p| p.window > MIN_WINDOW && p.bursting(now));
            }
        }
    }
}

fn queue(batches: &mut HashMap<Uuid, Batch>, paces: &HashMap<Uuid, Pace>, change: Change, now: Instant) {
    for community_id in change.communities {
        let batch = batches.entry(community_id).or_insert_with(|| {
            let window = match paces.get(&community_id) {
                Some(pace) if pace.bursting(now) => pace.window,
                _ => MIN_WINDOW,
            };
            Batch { changes: HashMap::new(), window, opened: now, last_change: now }
        });
        batch.last_change = now;
        batch.changes.insert(change.user_id, change.status);
    }
}

/// Big batches double the window (up to the cap), small ones halve it (down to the minimum).
fn next_window(window: Duration, batch_size: usize) -> Duration {
    if batch_size >= BURST_BATCH { (window * 2).min(MAX_WINDOW) } else { (window / 2).max(MIN_WINDOW) }
}

/// Sends one community's batch to its online members; returns how many changes it held.
/// Changes of users who are no longer members are dropped: outsiders hear nothing.
fn flush(shared: &Shared, community_id: Uuid, changes: &HashMap<Uuid, &'static str>) -> usize {
    let users: Vec<Uuid> = changes.keys().copied().collect();
    let (members, still_in) = shared.roster.members_and_still_in(community_id, &users);
    let mut statuses: Vec<(Uuid, String)> = users
        .iter()
        .zip(still_in)
        .filter(|(_, member)| *member)
        .map(|(user, _)| (*user, changes[user].to_string()))
        .collect();
    if statuses.is_empty() {
        return 0;
    }
    statuses.sort();
    let size = statuses.len();
    // A lone change need not be told to its own subject.
    let lone_subject = (size == 1).then(|| statuses[0].0);
    let frame = match lone_subject {
        Some(user_id) => ServerFrame::PresenceUpdate { user_id, status: statuses.remove(0).1 }.encode(),
        None => ServerFrame::PresenceBulk { statuses }.encode(),
    };
    for member in members.iter().filter(|m| Some(**m) != lone_subject) {
        // Presence is of the droppable class: a socket far behind skips it.
        shared.sessions.send_to_user_ephemeral(*member, &frame, None);
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_goes_out_after_a_lull_or_at_the_end_of_its_window() {
        let start = Instant::now();
        let mut batch =
            Batch { changes: HashMap::new(), window: MIN_WINDOW, opened: start, last_change: start };
        assert_eq!(batch.due(), start + MIN_WINDOW);
        batch.window = MAX_WINDOW;
        assert_eq!(batch.due(), start + LULL);
        batch.last_change = start + Duration::from_millis(1900);
        assert_eq!(batch.due(), start + MAX_WINDOW);
    }

    #[test]
    fn window_grows_with_bursts_and_shrinks_back() {
        let mut window = MIN_WINDOW;
        let mut grown = vec![];
        for _ in 0..5 {
            window = next_window(window, BURST_BATCH);
            grown.push(window.as_millis());
        }
        assert_eq!(grown, [500, 1000, 2000, 2000, 2000]);
        window = next_window(window, 1);
        assert_eq!(window, Duration::from_secs(1));
        for _ in 0..5 {
            window = next_window(window, 1);
        }
        assert_eq!(window, MIN_WINDOW);
    }

    fn remote(users: &[(Uuid, &'static str, u64)]) -> RemoteNode {
        RemoteNode { users: users.iter().map(|(u, s, t)| (*u, (*s, *t))).collect(), heard: Instant::now() }
    }

    #[test]
    fn a_local_status_wins_else_the_latest_told_by_another_node() {
        let (user, nobody) = (Uuid::new_v4(), Uuid::new_v4());
        let mut book = Book::default();
        book.remote.insert("n2".into(), remote(&[(user, "away", 1)]));
        book.remote.insert("n3".into(), remote(&[(user, "dnd", 2)]));
        assert_eq!(book.shown(user), "dnd");
        assert_eq!(book.shown(nobody), "offline");
        assert!(book.listed_elsewhere(user) && !book.listed_elsewhere(nobody));
        book.local.insert(user, "online");
        assert_eq!(book.shown(user), "online");
    }
}
