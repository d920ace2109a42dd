//! Lockout after repeated failures (login, recovery), per username, in memory.
//!
//! Ten failures within the window lock the name for 15 minutes. Kept in memory on purpose:
//! a restart forgives, and the counter never touches the database on the hot login path.

use std::time::{Duration, Instant};

use dashmap::DashMap;

const LOCK_FOR: Duration = Duration::from_secs(15 * 60);

pub struct Lockouts {
    max_failures: u32,
    /// (purpose, lowercase username) → failures so far and when the lock ends.
    entries: DashMap<(&'static str, String), Entry>,
}

#[derive(Default)]
struct Entry {
    failures: u32,
    first_failure: Option<Instant>,
    locked_until: Option<Instant>,
}

impl Lockouts {
    pub fn new(max_failures: u32) -> Self {
        Self { max_failures: max_failures.max(1), entries: DashMap::new() }
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
        let now = Instant::now();
        let mut entry = self.entries.entry((purpose, name.to_lowercase())).or_default();
        // A lock that has run out, or failures long ago, start a fresh count.
        if entry.locked_until.is_some_and(|u| u <= now)
            || entry.first_failure.is_some_and(|f| now - f > LOCK_FOR)
        {
            *entry = Entry::default();
        }
        entry.first_failure.get_or_insert(now);
        entry.failures += 1;
        if entry.failures >= self.max_failures {
            entry.locked_until = Some(now + LOCK_FOR);
        }
    }

    pub fn clear(&self, purpose: &'static str, name: &str) {
        self.entries.remove(&(purpose, name.to_lowercase()));
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
}
