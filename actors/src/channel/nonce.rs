//! Idempotent sends (docs/wire/resume.md, "Idempotent sends: client_nonce"): the channel's
//! memory of the keys its senders gave, so a repeated send is answered with the original's
//! `message_sent` instead of storing a second message.
//!
//! A key is per sender user: another socket of the same user gets the same answer, another
//! user with the same string is a different key. It is remembered from acceptance (a repeat
//! then waits for the original's commit) until 10 minutes after the commit; a send refused or
//! failed is forgotten, so its repeat is a new attempt. Memory is bounded: at most
//! [`MAX_KEYS`] committed keys per channel, oldest forgotten first. Keys are stored with the
//! message, so an actor younger than [`REMEMBER_FOR`] (its memory may have missed the
//! original) asks the database before accepting a keyed send.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use palaver_entity::messages;
use uuid::Uuid;

use super::{ChannelState, Origin};
use crate::error_code::ErrorCode;
use crate::protocol::ServerFrame;
use crate::store;

/// How long after its commit a send's key is answered with the original.
pub const REMEMBER_FOR: Duration = Duration::from_secs(10 * 60);

/// Most committed keys one channel remembers; past that the oldest are forgotten early.
pub const MAX_KEYS: usize = 10_000;

/// Most repeats of one key that may wait for the original's commit; further ones are refused
/// (`rate_limited`), so a client looping on a slow commit cannot grow the memory.
const MAX_WAITERS: usize = 32;

/// A send's key: its sender and the `client_nonce` they chose.
pub(super) type NonceKey = (Uuid, String);

/// What a committed send's `message_sent` says: kept per key to answer its repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sent {
    /// The stored message's id.
    pub id: Uuid,
    /// The channel it was stored in.
    pub channel_id: Uuid,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The thread root it belongs to, if it is a thread reply.
    pub thread_id: Option<Uuid>,
    /// Its position in the channel's stream; unknown (None) for an answer rebuilt from the
    /// database after the actor restarted (its epoch is gone).
    pub cseq: Option<u64>,
}

impl Sent {
    /// What a send's ack says about the stored row. Every field of `message_sent` that
    /// describes the message is set here (and only here, with [`Sent::frame`]), so an original
    /// and its repeats always get the same answer.
    pub fn of(row: &messages::Model, cseq: Option<u64>) -> Self {
        Self {
            id: row.id,
            channel_id: row.channel_id,
            created_at: row.created_at,
            thread_id: row.thread_id,
            cseq,
        }
    }

    /// The `message_sent` frame answering a send with key `client_nonce` (None: no key).
    pub fn frame(&self, client_nonce: Option<String>) -> ServerFrame {
        ServerFrame::MessageSent {
            id: self.id,
            channel_id: self.channel_id,
            created_at: self.created_at,
            cseq: self.cseq,
            thread_id: self.thread_id,
            client_nonce,
        }
    }
}

/// What the memory knows of one key.
enum Remembered {
    /// Accepted, not yet committed: repeats wait here for the original's outcome.
    Pending(Vec<Origin>),
    /// Committed at that instant, with the answer for its repeats.
    Done { sent: Sent, committed_at: Instant },
}

/// What a keyed send finds in memory.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Not remembered: a new send (the database may still know it, see [`ChannelState::accept`]).
    Unknown,
    /// The original committed within [`REMEMBER_FOR`]: answer with this.
    Sent(Sent),
    /// The original is still pending; the repeat was queued and will be answered with it.
    Waiting,
    /// Too many repeats already wait for the original.
    TooManyWaiting,
}

/// One channel's keys (see the module doc).
#[derive(Default)]
pub struct NonceMemory {
    /// Every remembered key.
    keys: HashMap<NonceKey, Remembered>,
    /// The committed keys in the order they were remembered, with their commit instant: the
    /// front is the next to expire or to be forgotten for room. One entry per `Done` key.
    order: VecDeque<(NonceKey, Instant)>,
}

impl NonceMemory {
    /// What is known of `key` at `now`; a pending original gets `waiter` queued for its answer.
    pub(super) fn lookup(&mut self, key: &NonceKey, waiter: &Origin, now: Instant) -> Lookup {
        self.expire(now);
        match self.keys.get_mut(key) {
            None => Lookup::Unknown,
            Some(Remembered::Done { sent, committed_at }) => {
                // `expire` only looks at the front; an older entry loaded from the database
                // may sit behind a newer one.
                if now.saturating_duration_since(*committed_at) < REMEMBER_FOR {
                    Lookup::Sent(sent.clone())
                } else {
                    Lookup::Unknown
                }
            }
            Some(Remembered::Pending(waiters)) if waiters.len() >= MAX_WAITERS => Lookup::TooManyWaiting,
            Some(Remembered::Pending(waiters)) => {
                waiters.push(waiter.clone());
                Lookup::Waiting
            }
        }
    }

    /// `key`'s send was accepted and waits for its commit.
    pub(super) fn accepted(&mut self, key: NonceKey) {
        self.keys.insert(key, Remembered::Pending(Vec::new()));
    }

    /// `key`'s send was committed at `committed_at` with answer `sent`; returns the repeats
    /// that waited for it.
    pub(super) fn committed(&mut self, key: NonceKey, sent: Sent, committed_at: Instant) -> Vec<Origin> {
        let done = Remembered::Done { sent, committed_at };
        let waiters = match self.keys.entry(key.clone()) {
            MapEntry::Occupied(mut slot) => match std::mem::replace(slot.get_mut(), done) {
                Remembered::Pending(waiters) => waiters,
                // Already committed (cannot happen: a known key is never accepted twice);
                // keep the one `order` entry it has.
                Remembered::Done { .. } => return Vec::new(),
            },
            MapEntry::Vacant(slot) => {
                slot.insert(done);
                Vec::new()
            }
        };
        while self.order.len() >= MAX_KEYS {
            self.forget_front();
        }
        self.order.push_back((key, committed_at));
        waiters
    }

    /// `key`'s send was refused or failed: forgotten, so a repeat is a new attempt. Returns
    /// the repeats that waited for it (they get the same error).
    pub(super) fn failed(&mut self, key: &NonceKey) -> Vec<Origin> {
        match self.keys.remove(key) {
            Some(Remembered::Pending(waiters)) => waiters,
            Some(done @ Remembered::Done { .. }) => {
                self.keys.insert(key.clone(), done);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Forgets every pending key for which `still_pending` is false (their commit was lost
    /// without an outcome: nobody hears, as for the original, and repeats are new attempts).
    pub(super) fn forget_lost(&mut self, still_pending: impl Fn(&NonceKey) -> bool) {
        self.keys.retain(|key, entry| matches!(entry, Remembered::Done { .. }) || still_pending(key));
    }

    /// Drops the committed keys older than [`REMEMBER_FOR`] at `now` (from the front).
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((_, committed_at)) = self.order.front() {
            if now.saturating_duration_since(*committed_at) < REMEMBER_FOR {
                break;
            }
            self.forget_front();
        }
    }

    /// Forgets the oldest committed key (unless the key was since sent and committed again:
    /// then its newer entry further back in `order` decides).
    fn forget_front(&mut self) {
        if let Some((key, at)) = self.order.pop_front()
            && matches!(self.keys.get(&key), Some(Remembered::Done { committed_at, .. }) if *committed_at == at)
        {
            self.keys.remove(&key);
        }
    }

    /// How many keys are remembered (pending and committed).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

impl ChannelState {
    /// Answers a keyed send that repeats a remembered one: `true` if it was answered (or
    /// queued for the original's answer) and must not be stored.
    pub(super) fn answer_repeat(&mut self, origin: &Origin, client_nonce: &str) -> bool {
        let key = (origin.user_id, client_nonce.to_owned());
        match self.nonces.lookup(&key, origin, Instant::now()) {
            Lookup::Unknown => false,
            Lookup::Sent(sent) => {
                origin.reply(&sent.frame(Some(key.1)));
                true
            }
            Lookup::Waiting => true,
            Lookup::TooManyWaiting => {
                origin.error(
                    ErrorCode::RateLimited,
                    "this send is already being committed, wait for its answer",
                );
                true
            }
        }
    }

    /// For an actor younger than [`REMEMBER_FOR`] (its memory may lack the original): answers
    /// a keyed send whose original is stored, and remembers it. `true` if the send was
    /// answered — with the original's ack, or with `unavailable` when the database could not
    /// tell (storing it then might duplicate the original).
    pub(super) async fn answer_stored_repeat(&mut self, origin: &Origin, client_nonce: &str) -> bool {
        if self.started_at.elapsed() >= REMEMBER_FOR {
            return false;
        }
        let since = Utc::now() - chrono::Duration::from_std(REMEMBER_FOR).unwrap_or_default();
        let stored =
            store::sent_with_client_nonce(&self.shared.db, self.id(), origin.user_id, client_nonce, since)
                .await;
        let row = match stored {
            Ok(Some(row)) => row,
            Ok(None) => return false,
            Err(err) => {
                tracing::warn!(channel = %self.id(), error = %err, "client_nonce lookup failed");
                origin.error(ErrorCode::Unavailable, "the database is unavailable, message not sent");
                return true;
            }
        };
        let sent = Sent::of(&row, None);
        // Its commit happened about when it was created: it expires from then.
        let age = (Utc::now() - row.created_at).to_std().unwrap_or_default();
        let now = Instant::now();
        let committed_at = now.checked_sub(age).unwrap_or(now);
        self.nonces.committed((origin.user_id, client_nonce.to_owned()), sent.clone(), committed_at);
        origin.reply(&sent.frame(Some(client_nonce.to_owned())));
        true
    }

    /// A committed row's key (if it had one) is remembered with `sent`; the repeats that
    /// waited for it get the same answer.
    pub(super) fn nonce_committed(
        &mut self,
        sender: Option<Uuid>,
        client_nonce: Option<&String>,
        sent: &Sent,
    ) {
        let (Some(sender), Some(client_nonce)) = (sender, client_nonce) else { return };
        let key = (sender, client_nonce.clone());
        for waiter in self.nonces.committed(key, sent.clone(), Instant::now()) {
            waiter.reply(&sent.frame(Some(client_nonce.clone())));
        }
    }

    /// A row's send failed or was refused: its key (if any) is forgotten and the repeats
    /// that waited for it get the same error.
    pub(super) fn nonce_failed(&mut self, row: &messages::Model, code: ErrorCode, text: &str) {
        let (Some(sender), Some(client_nonce)) = (row.sender_id, &row.client_nonce) else { return };
        for waiter in self.nonces.failed(&(sender, client_nonce.clone())) {
            waiter.error(code, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;

    fn sent(n: u128) -> Sent {
        Sent {
            id: Uuid::from_u128(n),
            channel_id: Uuid::nil(),
            created_at: DateTime::UNIX_EPOCH,
            thread_id: None,
            cseq: Some(n as u64),
        }
    }

    fn key(n: usize) -> NonceKey {
        (Uuid::nil(), format!("key-{n}"))
    }

    fn origin() -> Origin {
        Origin { outbox: Outbox::new(Uuid::now_v7(), Uuid::nil(), 16).0, user_id: Uuid::nil() }
    }

    #[test]
    fn a_committed_key_answers_until_it_expires() {
        let mut memory = NonceMemory::default();
        let t0 = Instant::now();
        memory.accepted(key(1));
        assert!(memory.committed(key(1), sent(1), t0).is_empty());
        let waiter = origin();
        let just_before = t0 + REMEMBER_FOR - Duration::from_millis(1);
        assert_eq!(memory.lookup(&key(1), &waiter, just_before), Lookup::Sent(sent(1)));
        assert_eq!(memory.lookup(&key(1), &waiter, t0 + REMEMBER_FOR), Lookup::Unknown);
        assert_eq!(memory.len(), 0, "expired keys leave memory");
    }

    #[test]
    fn the_oldest_keys_are_forgotten_past_the_cap() {
        let mut memory = NonceMemory::default();
        let t0 = Instant::now();
        for n in 0..MAX_KEYS + 5 {
            memory.committed(key(n), sent(n as u128), t0 + Duration::from_millis(n as u64));
        }
        assert_eq!(memory.len(), MAX_KEYS);
        let waiter = origin();
        let now = t0 + Duration::from_secs(60);
        for n in 0..5 {
            assert_eq!(memory.lookup(&key(n), &waiter, now), Lookup::Unknown, "key {n} forgotten");
        }
        assert_eq!(memory.lookup(&key(5), &waiter, now), Lookup::Sent(sent(5)));
        assert_eq!(memory.lookup(&key(MAX_KEYS + 4), &waiter, now), Lookup::Sent(sent(MAX_KEYS as u128 + 4)));
    }

    #[test]
    fn repeats_of_a_pending_key_wait_and_get_its_outcome() {
        let mut memory = NonceMemory::default();
        let now = Instant::now();
        memory.accepted(key(1));
        memory.accepted(key(2));
        let waiter = origin();
        assert_eq!(memory.lookup(&key(1), &waiter, now), Lookup::Waiting);
        assert_eq!(memory.lookup(&key(2), &waiter, now), Lookup::Waiting);
        assert_eq!(memory.committed(key(1), sent(1), now).len(), 1);
        assert_eq!(memory.failed(&key(2)).len(), 1);
        assert_eq!(memory.lookup(&key(2), &waiter, now), Lookup::Unknown, "a failed send is forgotten");
        assert_eq!(memory.failed(&key(1)).len(), 0, "a committed key is not forgotten by a failure");
        assert_eq!(memory.lookup(&key(1), &waiter, now), Lookup::Sent(sent(1)));
    }

    #[test]
    fn waiters_are_bounded_and_lost_commits_forgotten() {
        let mut memory = NonceMemory::default();
        let now = Instant::now();
        memory.accepted(key(1));
        memory.accepted(key(2));
        let waiter = origin();
        for _ in 0..MAX_WAITERS {
            assert_eq!(memory.lookup(&key(1), &waiter, now), Lookup::Waiting);
        }
        assert_eq!(memory.lookup(&key(1), &waiter, now), Lookup::TooManyWaiting);
        memory.forget_lost(|k| *k == key(2));
        assert_eq!(memory.lookup(&key(1), &waiter, now), Lookup::Unknown);
        assert_eq!(memory.lookup(&key(2), &waiter, now), Lookup::Waiting);
    }
}
