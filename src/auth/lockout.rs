//! Lockout after repeated failures (login, recovery), per username, in memory.
//!
//! Ten failures within the window lock the name for 15 minutes. Kept in memory on purpose:
//! a restart forgives, and the counter never touches the database on the hot login path.
//!
//! Bounded: names are at most `Username::MAX_LEN` bytes (longer ones are refused before they
//! get here), an entry is dropped once its window or lock has run out (lazily when the map is
//! full, and by the periodic purge), and a hard cap evicts the oldest entries first.

use std::time::{Duration, Instant};

use dashmap::DashMap;

const LOCK_FOR: Duration = Duration::from_secs(15 * 60);
/// Most names tracked at once (~100 bytes each).
const MAX_ENTRIES: usize = 100_000;

pub struct Lockouts {
    max_failures: u32,
    capacity: usize,
    /// (purpose, lowercase username) → failures so far and when the lock ends.
    entries: DashMap<(&'static str, String), Entry>,
}

struct Entry {
    failures: u32,
    first_failure: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self { failures: 0, first_failure: now, locked_until: None }
    }

    /// A lock that has run out, or failures long ago: the entry says nothing any more.
    fn expired(&self, now: Instant) -> bool {
        match self.locked_until {
            Some(until) => until <= now,
            None => now.duration_since(self.first_failure) > LOCK_FOR,
        }
    }
}

impl Lockouts {
    pub fn new(max_failures: u32) -> Self {
        Self::with_capacity(max_failures, MAX_ENTRIES)
    }

    pub fn with_capacity(max_failures: u32, capacity: usize) -> Self {
        Self { max_failures: max_failures.max(1), capacity: capacity.max(1), entries: DashMap::new() }
    }

    /// `Some(seconds left)` while `name` is locked for `purpose`.
    pub fn locked_for(&self, purpose: &'static str, name: &str) -> Option<u64> {
        let key = (purpose, name.to_lowercase());
        let entry = self.entries.get(&key)?;
        let until = entry.locked_until?;
        let now = Instant::now();
        (until > now).then(|| (until - now).as_secs().max(1))
    }

    /// Counts one failure; the tenth locks the name.
    pub fn record_failure(&self, purpose: &'static str, name: &str) {
        self.record_failure_at(purpose, name, Instant::now());
    }

    fn record_failure_at(&self, purpose: &'static str, name: &str, now: Instant) {
        let key = (purpose, name.to_lowercase());
        // Room first (never while holding an entry: DashMap would deadlock).
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        let mut entry = self.entries.entry(key).or_insert_with(|| Entry::new(now));
        if entry.expired(now) {
            *entry = Entry::new(now);
        }
        entry.failures += 1;
        if entry.failures >= self.max_failures {
            entry.locked_until = Some(now + LOCK_FOR);
        }
    }

    pub fn clear(&self, purpose: &'static str, name: &str) {
        self.entries.remove(&(purpose, name.to_lowercase()));
    }

    /// Drops every entry whose window or lock has run out.
    pub fn purge_expired(&self) {
        self.purge_expired_at(Instant::now());
    }

    fn purge_expired_at(&self, now: Instant) {
        self.entries.retain(|_, entry| !entry.expired(now));
        self.entries.shrink_to_fit();
    }

    /// Called when full: drops what has expired and, if that is not enough, the oldest
    /// eighth (a batch, so a flood of new names does not scan the map on every failure).
    fn make_room(&self, now: Instant) {
        self.purge_expired_at(now);
        if self.entries.len() < self.capacity {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.iter().map(|e| e.first_failure).collect();
        let evict = (ages.len() / 8).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        self.entries.retain(|_, entry| entry.first_failure > cutoff);
    }

    /// Names tracked right now (all purposes).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_clears_on_success() {
        let l = Lockouts::new(3);
        l.record_failure("login", "Alice");
        l.record_failure("login", "alice");
        assert!(l.locked_for("login", "alice").is_none());
        l.record_failure("login", "ALICE");
        assert!(l.locked_for("login", "alice").unwrap() > 800);
        assert!(l.locked_for("recover", "alice").is_none());
        l.clear("login", "alice");
        assert!(l.locked_for("login", "alice").is_none());
    }

    #[test]
    fn entries_expire_after_their_window() {
        let l = Lockouts::new(2);
        let start = Instant::now();
        l.record_failure_at("login", "once", start);
        l.record_failure_at("login", "locked", start);
        l.record_failure_at("login", "locked", start);
        assert_eq!(l.len(), 2);
        // Within the window both stay (one is locked).
        l.purge_expired_at(start + Duration::from_secs(60));
        assert_eq!(l.len(), 2);
        // After it, neither says anything any more.
        l.purge_expired_at(start + LOCK_FOR + Duration::from_secs(1));
        assert!(l.is_empty());
    }

    #[test]
    fn the_map_stays_bounded_and_evicts_the_oldest() {
        let l = Lockouts::with_capacity(10, 64);
        let start = Instant::now();
        for i in 0..10_000u64 {
            l.record_failure_at("login", &format!("name{i}"), start + Duration::from_millis(i));
            assert!(l.len() <= 64, "{} entries after {i}", l.len());
        }
        // The newest names are the ones kept.
        assert!(l.entries.contains_key(&("login", "name9999".to_string())));
        assert!(!l.entries.contains_key(&("login", "name0".to_string())));
    }
}
