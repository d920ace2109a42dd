//! Idempotent sends with `client_nonce` (docs/wire/resume.md, "Idempotent sends"): a repeat
//! of a keyed send within 10 minutes stores and broadcasts nothing and gets the original's
//! `message_sent` — from the same socket, another socket of the same user, while the original
//! is still being committed, and after a server restart. Keys are per user; a refused send is
//! not remembered; a malformed key is refused with `validation_error`.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_in_db, live, new_channel, sync};
use crate::common::{Backend, TestApp, TestUser, WsClient, spawn_app};

/// How long a socket must stay silent for "no second `new_message`" to count.
const QUIET: Duration = Duration::from_millis(500);

/// A `send_message` frame with `client_nonce` set to `key` (any JSON, to test refusals).
fn keyed(channel: Uuid, text: &str, key: Value) -> Value {
    json!({"type": "send_message", "channel_id": channel, "ciphertext": text.as_bytes(),
        "nonce": [1, 2, 3], "message_type": "text", "client_nonce": key})
}

/// Sends a keyed message and returns its `message_sent`.
async fn send_keyed(ws: &mut WsClient, channel: Uuid, text: &str, key: &str) -> Value {
    ws.send(keyed(channel, text, json!(key))).await;
    ws.expect("message_sent").await
}

/// The channel's history as `user` sees it over REST (newest first).
async fn history(app: &TestApp, user: &TestUser, channel: Uuid) -> Vec<Value> {
    let page = app.get(&format!("/channels/{channel}/messages"), &user.token).await.expect(200);
    page.as_array().expect("a page is an array").clone()
}

/// The ciphertexts of the channel's history, oldest first, as text.
async fn texts(app: &TestApp, user: &TestUser, channel: Uuid) -> Vec<String> {
    let mut texts: Vec<String> = history(app, user, channel)
        .await
        .iter()
        .map(|m| {
            let bytes: Vec<u8> = serde_json::from_value(m["ciphertext"].clone()).expect("ciphertext bytes");
            String::from_utf8(bytes).expect("test texts are UTF-8")
        })
        .collect();
    texts.reverse();
    texts
}

/// Exactly `count` `new_message` frames reach `ws`, then nothing more.
async fn expect_new_messages(ws: &mut WsClient, count: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    for _ in 0..count {
        frames.push(ws.expect("new_message").await);
    }
    ws.expect_no("new_message", QUIET).await;
    frames
}

/// Alice and Bob in one channel, each with a subscribed socket.
async fn alice_and_bob(app: &TestApp) -> (TestUser, TestUser, Uuid, WsClient, WsClient) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(app, &[&alice, &bob]).await;
    let alice_ws = live(app, &alice, channel).await;
    let bob_ws = live(app, &bob, channel).await;
    (alice, bob, channel, alice_ws, bob_ws)
}

async fn a_repeat_on_the_same_socket_gets_the_original_ack_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;

    let first = send_keyed(&mut alice_ws, channel, "hello", "key-1").await;
    assert_eq!(first["client_nonce"], "key-1", "the key is echoed");
    let second = send_keyed(&mut alice_ws, channel, "hello", "key-1").await;
    assert_eq!(second, first, "same id, created_at and every other field");

    let seen = expect_new_messages(&mut bob_ws, 1).await;
    assert_eq!(seen[0]["id"], first["id"]);
    assert_eq!(texts(&app, &alice, channel).await, ["hello"]);
    app.stop().await;
}

async fn a_repeat_from_another_socket_of_the_same_user_gets_the_original_ack(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;
    // Not subscribed: it sees only the answer to its own send.
    let mut alice_phone = app.ws(&alice.token).await;

    let first = send_keyed(&mut alice_ws, channel, "from the laptop", "shared-key").await;
    let repeat = send_keyed(&mut alice_phone, channel, "from the laptop", "shared-key").await;
    assert_eq!(repeat, first, "the other socket gets the same message_sent, key echoed");

    expect_new_messages(&mut bob_ws, 1).await;
    alice_ws.expect_no("message_sent", QUIET).await;
    assert_eq!(texts(&app, &alice, channel).await, ["from the laptop"]);
    app.stop().await;
}

async fn a_repeat_sent_before_the_original_is_acked_gets_the_same_ack(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;

    // Both frames leave before any answer: the repeat usually finds the original uncommitted.
    alice_ws.send(keyed(channel, "once", json!("burst"))).await;
    alice_ws.send(keyed(channel, "once", json!("burst"))).await;
    let first = alice_ws.expect("message_sent").await;
    let second = alice_ws.expect("message_sent").await;
    assert_eq!(second, first);
    assert_eq!(first["client_nonce"], "burst");

    expect_new_messages(&mut bob_ws, 1).await;
    assert_eq!(texts(&app, &alice, channel).await, ["once"]);
    app.stop().await;
}

async fn a_repeat_with_other_content_still_gets_the_original(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;

    let first = send_keyed(&mut alice_ws, channel, "original", "k").await;
    let repeat = send_keyed(&mut alice_ws, channel, "edited on retry", "k").await;
    assert_eq!(repeat, first);

    let seen = expect_new_messages(&mut bob_ws, 1).await;
    assert_eq!(seen[0]["ciphertext"], json!("original".as_bytes()));
    assert_eq!(texts(&app, &alice, channel).await, ["original"]);
    app.stop().await;
}

async fn keys_are_per_user_and_per_channel(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;
    let other_channel = channel_in_db(&app, &[&alice, &bob]).await;

    let from_alice = send_keyed(&mut alice_ws, channel, "alice", "same").await;
    assert_eq!(bob_ws.expect("new_message").await["id"], from_alice["id"]);
    let from_bob = send_keyed(&mut bob_ws, channel, "bob", "same").await;
    assert_ne!(from_bob["id"], from_alice["id"], "another user's key is another key");
    assert_eq!(from_bob["client_nonce"], "same");
    assert_eq!(alice_ws.expect("new_message").await["id"], from_bob["id"]);
    let elsewhere = send_keyed(&mut alice_ws, other_channel, "alice elsewhere", "same").await;
    assert_ne!(elsewhere["id"], from_alice["id"], "the same key in another channel is another key");

    assert_eq!(texts(&app, &alice, channel).await, ["alice", "bob"]);
    assert_eq!(texts(&app, &alice, other_channel).await, ["alice elsewhere"]);
    app.stop().await;
}

async fn a_repeat_is_answered_even_inside_slow_mode(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;
    app.patch(&format!("/channels/{channel}"), &alice.token, json!({"slow_mode_seconds": 60}))
        .await
        .expect(200);
    alice_ws.expect("channel_updated").await;
    bob_ws.expect("channel_updated").await;

    let first = send_keyed(&mut bob_ws, channel, "slow", "patient").await;
    assert_eq!(alice_ws.expect("new_message").await["id"], first["id"]);
    // The retry of a send slow mode let through is answered from the channel's memory of
    // the key, before the rules: not refused.
    let repeat = send_keyed(&mut bob_ws, channel, "slow", "patient").await;
    assert_eq!(repeat, first);
    // Slow mode itself is in force: a new key is refused.
    bob_ws.send(keyed(channel, "too soon", json!("impatient"))).await;
    assert_eq!(bob_ws.expect("error").await["code"], "slow_mode");

    alice_ws.expect_no("new_message", QUIET).await;
    assert_eq!(texts(&app, &bob, channel).await, ["slow"]);
    app.stop().await;
}

async fn a_repeat_after_a_server_restart_gets_the_stored_original(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (alice, bob, channel, mut alice_ws, _bob_ws) = alice_and_bob(&app).await;
    let first = send_keyed(&mut alice_ws, channel, "before the restart", "survivor").await;

    app.restart().await;
    let mut bob_ws = live(&app, &bob, channel).await;
    let mut alice_ws = app.ws(&alice.token).await;
    let repeat = send_keyed(&mut alice_ws, channel, "before the restart", "survivor").await;
    // The same id and created_at from the stored row; its position belonged to the epoch
    // before the restart, so the answer carries none (README, resume extension).
    let mut original = first.clone();
    assert!(original.as_object_mut().unwrap().remove("cseq").is_some());
    assert_eq!(repeat, original, "same id and created_at from the stored row");
    // A second repeat is answered from the restarted actor's memory, just the same.
    let again = send_keyed(&mut alice_ws, channel, "before the restart", "survivor").await;
    assert_eq!(again, original);

    bob_ws.expect_no("new_message", QUIET).await;
    assert_eq!(texts(&app, &alice, channel).await, ["before the restart"]);
    app.stop().await;
}

async fn malformed_keys_are_refused_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;

    for bad in
        [json!(7), json!(""), json!("k".repeat(65)), json!("é".repeat(33)), json!(["k"]), json!({"k": 1})]
    {
        alice_ws.send(keyed(channel, "refused", bad.clone())).await;
        let error = alice_ws.expect("error").await;
        assert_eq!(error["code"], "validation_error", "client_nonce {bad}: {error}");
    }
    sync(&mut alice_ws).await;
    bob_ws.expect_no("new_message", QUIET).await;
    assert!(history(&app, &alice, channel).await.is_empty(), "nothing stored");

    // The limits themselves are accepted: 64 bytes (also as 32 two-byte characters).
    for (text, key) in [("ascii", "k".repeat(64)), ("utf8", "é".repeat(32))] {
        let sent = send_keyed(&mut alice_ws, channel, text, &key).await;
        assert_eq!(sent["client_nonce"], key.as_str());
    }
    assert_eq!(texts(&app, &alice, channel).await, ["ascii", "utf8"]);
    app.stop().await;
}

async fn a_null_or_missing_key_sends_as_before_without_an_echo(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut alice_ws, mut bob_ws) = alice_and_bob(&app).await;

    alice_ws.send(keyed(channel, "null key", Value::Null)).await;
    let with_null = alice_ws.expect("message_sent").await;
    alice_ws
        .send(json!({"type": "send_message", "channel_id": channel, "ciphertext": "legacy".as_bytes(),
            "nonce": [1, 2, 3], "message_type": "text"}))
        .await;
    let legacy = alice_ws.expect("message_sent").await;
    for ack in [&with_null, &legacy] {
        let fields = ack.as_object().expect("an object");
        assert!(!fields.contains_key("client_nonce"), "no client_nonce field: {ack}");
        let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["channel_id", "created_at", "cseq", "id", "type"],
            "today's message_sent + cseq: {ack}"
        );
    }
    assert_ne!(with_null["id"], legacy["id"]);

    // Without a key, the same content twice is two messages (no deduplication).
    alice_ws.send(keyed(channel, "null key", Value::Null)).await;
    alice_ws.expect("message_sent").await;
    expect_new_messages(&mut bob_ws, 3).await;
    assert_eq!(texts(&app, &alice, channel).await, ["null key", "legacy", "null key"]);
    app.stop().await;
}

async fn a_refused_send_is_not_remembered(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = new_channel(&app, &alice, "general").await;
    let mut bob_ws = app.ws(&bob.token).await;

    // Bob is not a member yet: refused.
    bob_ws.send(keyed(channel, "too early", json!("retry-me"))).await;
    assert_eq!(bob_ws.expect("error").await["code"], "forbidden");

    // Once he joined, the same key is a new attempt and is stored.
    app.post(&format!("/channels/{channel}/join"), &bob.token, json!({})).await.expect(200);
    let sent = send_keyed(&mut bob_ws, channel, "now allowed", "retry-me").await;
    assert_eq!(sent["client_nonce"], "retry-me");
    assert_eq!(texts(&app, &alice, channel).await, ["now allowed"]);

    // And from then on it is remembered.
    let repeat = send_keyed(&mut bob_ws, channel, "now allowed", "retry-me").await;
    assert_eq!(repeat, sent);
    assert_eq!(texts(&app, &alice, channel).await, ["now allowed"]);
    app.stop().await;
}

crate::both_backends!(
    a_repeat_on_the_same_socket_gets_the_original_ack_and_stores_nothing,
    a_repeat_from_another_socket_of_the_same_user_gets_the_original_ack,
    a_repeat_sent_before_the_original_is_acked_gets_the_same_ack,
    a_repeat_with_other_content_still_gets_the_original,
    keys_are_per_user_and_per_channel,
    a_repeat_is_answered_even_inside_slow_mode,
    a_repeat_after_a_server_restart_gets_the_stored_original,
    malformed_keys_are_refused_and_nothing_is_stored,
    a_null_or_missing_key_sends_as_before_without_an_echo,
    a_refused_send_is_not_remembered,
);
