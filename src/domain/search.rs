//! Admission for message searches: how many one user may run at once, and a pool bounding
//! the matching work (lowercasing and comparing payloads) that runs off the async workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palaver_actors::kinds::MessageType;
use palaver_entity::messages;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::domain::message::MessageCore;

/// Running searches per user, and the matching pool shared by all of them.
pub struct SearchGate {
    per_user: usize,
    running: Mutex<HashMap<Uuid, usize>>,
    /// One permit per matching batch on the blocking pool: at most one per core, so searches
    /// never take every thread (health checks and sockets keep theirs).
    matching: Arc<Semaphore>,
}

/// A user's search slot; freed when dropped.
pub struct SearchSlot {
    gate: Arc<SearchGate>,
    user_id: Uuid,
}

impl SearchGate {
    pub fn new(per_user: usize) -> Self {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        Self {
            per_user: per_user.max(1),
            running: Mutex::new(HashMap::new()),
            matching: Arc::new(Semaphore::new(cores)),
        }
    }

    /// A slot for one more search by `user_id`, or `None` when they already run the maximum.
    /// The map holds only users with a search running (entries go when their count is 0).
    pub fn enter(self: &Arc<Self>, user_id: Uuid) -> Option<SearchSlot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(user_id).or_insert(0);
        if *count >= self.per_user {
            return None;
        }
        *count += 1;
        Some(SearchSlot { gate: self.clone(), user_id })
    }

    /// Waits for a turn in the matching pool.
    #[allow(clippy::expect_used, reason = "the matching semaphore is never closed")]
    pub async fn matching_permit(&self) -> OwnedSemaphorePermit {
        self.matching.clone().acquire_owned().await.expect("the matching semaphore is never closed")
    }
}

impl Drop for SearchSlot {
    fn drop(&mut self) {
        let mut running = self.gate.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.user_id);
            }
        }
    }
}

/// `raw` with `%`, `_` and the escape character (`\\`) escaped, to match literally in a
/// LIKE pattern.
pub fn like_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A LIKE pattern matching any text that contains `needle` literally.
pub fn like_contains(needle: &str) -> String {
    format!("%{}%", like_escape(needle))
}

/// The text a message is searched by: its payload read as UTF-8 (lossy), or a webhook's content.
pub fn searchable_text(m: &messages::Model) -> String {
    if MessageType::Webhook.is(&m.message_type)
        && let Some(serde_json::Value::String(content)) = MessageCore::from(m).content
    {
        return content.to_lowercase();
    }
    String::from_utf8_lossy(&m.ciphertext).to_lowercase()
}

/// The bytes a candidate costs to match.
pub fn payload_len(m: &messages::Model) -> usize {
    m.ciphertext.len() + m.webhook_content.as_ref().map_or(0, String::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_contains("a%b_c"), "%a\\%b\\_c%");
    }

    #[test]
    fn slots_are_per_user_and_freed_on_drop() {
        let gate = Arc::new(SearchGate::new(2));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert!(gate.enter(a).is_none());
        assert!(gate.enter(b).is_some(), "another user is not affected");
        drop(first);
        assert!(gate.enter(a).is_some());
    }

    #[test]
    fn idle_users_leave_no_entry() {
        let gate = Arc::new(SearchGate::new(1));
        drop(gate.enter(Uuid::new_v4()).unwrap());
        assert!(gate.running.lock().unwrap().is_empty());
    }

    #[test]
    fn non_utf8_payloads_are_searchable_without_failing() {
        let m = messages::Model {
            id: Uuid::nil(),
            channel_id: Uuid::nil(),
            sender_id: None,
            ciphertext: vec![0xff, b'H', b'e', b'L', b'L', b'o', 0xfe],
            nonce: vec![1],
            message_type: "text".into(),
            reply_to_id: None,
            sender_key_id: None,
            thread_id: None,
            edited_at: None,
            deleted_at: None,
            quarantined_at: None,
            expires_at: None,
            webhook_content: None,
            created_at: palaver_entity::now(),
            client_nonce: None,
        };
        assert!(searchable_text(&m).contains("hello"));
    }
}
