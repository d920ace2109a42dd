//! The newest history pages of a channel, held by its actor.
//!
//! Most history reads are "the newest page" (a client opening a channel). The channel actor
//! sees every change to its messages, so it can keep that page's JSON body and answer
//! without the database. Changes made elsewhere (admin purge and quarantine, account
//! deletion) invalidate it through the hub.
//!
//! Filling is optimistic: a miss hands the reader the current `version`; the reader queries
//! the database and offers the page back; the actor keeps it only if nothing changed in
//! between (otherwise the page might predate a change it already saw).

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// Distinct page shapes kept per channel (clients use one or two).
const MAX_PAGES: usize = 4;
/// Bigger bodies are not kept: a page of 50 large ciphertexts would pin megabytes per channel.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Which newest page (no cursor) a reader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub limit: u64,
    /// Thread replies left out.
    pub root_only: bool,
}

/// The channel actor's answer to a history read.
#[derive(Debug)]
pub enum HistoryAnswer {
    /// The reader is not a member of the channel.
    NotMember,
    /// The page: the JSON body to send as is.
    Page(Bytes),
    /// Not held: read the database, then offer the page back with this version.
    Miss { version: u64 },
}

struct CachedPage {
    body: Bytes,
    /// The page is stale from this time on: its first message to expire disappears.
    valid_until: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct HistoryCache {
    /// Bumped by every change to what history shows.
    version: u64,
    pages: HashMap<PageKey, CachedPage>,
}

impl HistoryCache {
    pub fn get(&self, key: PageKey, now: DateTime<Utc>) -> Result<Bytes, u64> {
        match self.pages.get(&key) {
            Some(page) if page.valid_until.is_none_or(|t| now < t) => Ok(page.body.clone()),
            _ => Err(self.version),
        }
    }

    /// Keeps a page read at `version` if nothing changed since.
    pub fn fill(&mut self, key: PageKey, version: u64, body: Bytes, valid_until: Option<DateTime<Utc>>) {
        if version != self.version || body.len() > MAX_PAGE_BYTES {
            return;
        }
        if self.pages.len() >= MAX_PAGES && !self.pages.contains_key(&key) {
            self.pages.clear();
        }
        self.pages.insert(key, CachedPage { body, valid_until });
    }

    /// Something history shows changed: every held page is dropped and fills in flight refused.
    pub fn invalidate(&mut self) {
        self.version += 1;
        self.pages.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: PageKey = PageKey { limit: 50, root_only: false };

    #[test]
    fn a_fill_is_served_until_invalidated() {
        let mut cache = HistoryCache::default();
        let now = Utc::now();
        let version = cache.get(KEY, now).unwrap_err();
        cache.fill(KEY, version, Bytes::from_static(b"[1]"), None);
        assert_eq!(cache.get(KEY, now).unwrap(), Bytes::from_static(b"[1]"));
        assert!(cache.get(PageKey { limit: 10, root_only: false }, now).is_err());
        cache.invalidate();
        assert!(cache.get(KEY, now).is_err());
    }

    #[test]
    fn a_fill_read_before_a_change_is_refused() {
        let mut cache = HistoryCache::default();
        let version = cache.get(KEY, Utc::now()).unwrap_err();
        cache.invalidate();
        cache.fill(KEY, version, Bytes::from_static(b"[stale]"), None);
        assert!(cache.get(KEY, Utc::now()).is_err());
    }

    #[test]
    fn a_page_expires_with_its_first_disappearing_message() {
        let mut cache = HistoryCache::default();
        let now = Utc::now();
        cache.fill(KEY, 0, Bytes::from_static(b"[1]"), Some(now + chrono::Duration::seconds(5)));
        assert!(cache.get(KEY, now).is_ok());
        assert!(cache.get(KEY, now + chrono::Duration::seconds(5)).is_err());
    }

    #[test]
    fn oversized_pages_are_not_kept() {
        let mut cache = HistoryCache::default();
        cache.fill(KEY, 0, Bytes::from(vec![b' '; MAX_PAGE_BYTES + 1]), None);
        assert!(cache.get(KEY, Utc::now()).is_err());
    }
}
