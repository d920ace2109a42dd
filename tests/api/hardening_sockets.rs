//! Issue 10, sockets: outboxes bounded in bytes with ephemeral frames dropped first, a
//! bounded hand-off from a socket's reader to its session, `mark_all_read` in one statement,
//! per-user channel creation limits, sends racing idle channel stops, and the signalling
//! bucket.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use palaver_entity::messages;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::common::fixtures::{channel_in_db, send_frame, subscribed};
use crate::common::{Backend, TestApp, TestUser, WsClient, spawn_app, spawn_app_with};

/// Sends one message and waits for its ack (skipping other frames); returns its id.
async fn send_acked(ws: &mut WsClient, channel: Uuid, text: &str) -> Uuid {
    ws.send(send_frame(channel, text)).await;
    loop {
        let frame = ws.next_frame(Duration::from_secs(30)).await.expect("the sender is answered");
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "message_sent" {
            return frame["id"].as_str().unwrap().parse().unwrap();
        }
    }
}

/// A ping round trip: every frame sent before it has been handled by the session.
async fn round_trip(ws: &mut WsClient, timestamp: i64) {
    ws.send(json!({"type": "ping", "timestamp": timestamp})).await;
    loop {
        let frame = ws.next_frame(Duration::from_secs(30)).await.expect("pong");
        if frame["type"] == "pong" && frame["timestamp"] == timestamp {
            return;
        }
    }
}

/// Alice sends large messages until Bob (who stopped reading) is gone; returns how many.
async fn send_until_offline(
    app: &TestApp,
    a: &mut WsClient,
    channel: Uuid,
    bob: &TestUser,
    text: &str,
) -> usize {
    let hub = &app.server.as_ref().unwrap().state.hub;
    let mut sent = 0;
    while sent < 3000 && hub.sessions().is_online(bob.id) {
        send_acked(a, channel, text).await;
        sent += 1;
    }
    sent
}

async fn ephemeral_frames_are_dropped_before_a_slow_reader_is_closed(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.ws_queue = 16).await;
    let hub = app.server.as_ref().unwrap().state.hub.clone();
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let channel = channel_in_db(&app, &[&alice, &bob, &carol]).await;
    let mut a = subscribed(&app, &alice, channel).await;
    let mut c = subscribed(&app, &carol, channel).await;
    // Bob stops reading after subscribing; his tiny receive buffer makes the server's
    // writes back up into his 16-frame queue.
    let mut slow = app.ws_small_receive_buffer(&bob.token).await;
    slow.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    round_trip(&mut slow, 1).await;

    // Each round: a message from Alice, then Carol typing and stopping. Until Bob's queue is
    // over half full he is queued all three; then typing is dropped, messages still queue.
    let payload = "x".repeat(4000);
    let mut sent_ids = Vec::new();
    let mut typing_sent = 0;
    let mut round = 0;
    while hub.sessions().ephemeral_dropped(bob.id) == 0 {
        assert!(round < 3000, "typing was never dropped although Bob stopped reading");
        round += 1;
        sent_ids.push(send_acked(&mut a, channel, &payload).await);
        c.send(json!({"type": "typing", "channel_id": channel})).await;
        c.send(json!({"type": "stop_typing", "channel_id": channel})).await;
        typing_sent += 2;
        // The channel has Carol's frames before Alice's next message.
        round_trip(&mut c, 100 + round).await;
    }
    // One more message: over half full is not full, so it is queued, and Bob is still here.
    sent_ids.push(send_acked(&mut a, channel, &payload).await);
    assert!(hub.sessions().is_online(bob.id), "Bob was closed before his queue was full");

    // Bob reads again: every message, in order; some typing frames never came.
    let mut received = Vec::new();
    let mut typing_received = 0;
    while received.len() < sent_ids.len() {
        let frame = slow.next_frame(Duration::from_secs(30)).await.expect("Bob's queued frames");
        match frame["type"].as_str() {
            Some("new_message") => received.push(frame["id"].as_str().unwrap().parse::<Uuid>().unwrap()),
            Some("user_typing" | "user_stopped_typing") => typing_received += 1,
            _ => {}
        }
    }
    assert_eq!(received, sent_ids, "no message may be dropped");
    assert!(typing_received < typing_sent, "{typing_received} of {typing_sent} typing frames arrived");

    // Bob stops reading again: the full queue closes him with the resync code.
    let sent = send_until_offline(&app, &mut a, channel, &bob, &payload).await;
    assert!(sent < 3000, "Bob was never cut off although he stopped reading");
    let code = slow.expect_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(palaver_actors::outbox::CLOSE_SLOW_CONSUMER));
    app.stop().await;
}

async fn byte_bound_closes_a_stalled_reader_of_large_frames(backend: Backend) {
    // 1024 frames allowed, but only 512 KiB.
    let app = spawn_app_with(backend, |c| c.ws_queue_bytes = palaver::config::MIN_WS_QUEUE_BYTES).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    let mut a = subscribed(&app, &alice, channel).await;
    let mut slow = app.ws_small_receive_buffer(&bob.token).await;
    slow.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    round_trip(&mut slow, 1).await;
    // Each `new_message` carries 64 KiB of ciphertext: about 256 KB of JSON.
    let payload = "x".repeat(65_536);
    let sent = send_until_offline(&app, &mut a, channel, &bob, &payload).await;
    // Kernel buffers take some; the byte bound closes Bob long before 1024 frames.
    assert!(sent < 200, "Bob was cut off only after {sent} large frames");
    let code = slow.expect_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(palaver_actors::outbox::CLOSE_SLOW_CONSUMER));
    round_trip(&mut a, 2).await;
    app.stop().await;
}

async fn a_flood_of_frames_waits_in_the_socket_not_in_server_memory(backend: Backend) {
    // No rate limit to speak of: every frame reaches the session and costs a query.
    let app =
        spawn_app_with(backend, |c| c.ws_rate_limit = palaver::config::RateLimit::new(100_000, 100_000))
            .await;
    let hub = app.server.as_ref().unwrap().state.hub.clone();
    let alice = app.register("alice").await;
    let ws = app.ws(&alice.token).await;
    let (mut sink, mut stream) = ws.stream.split();
    let flood = tokio::spawn(async move {
        for _ in 0..5000 {
            sink.send(Message::text(r#"{"type":"mark_all_read"}"#)).await.expect("frame sent");
        }
        sink.send(Message::text(r#"{"type":"ping","timestamp":42}"#)).await.expect("ping sent");
        sink
    });
    // The socket stays responsive: the ping after the flood is answered.
    let pong = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_ne!(frame["type"], "error", "{frame}");
                if frame["type"] == "pong" && frame["timestamp"] == 42 {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(pong, Ok(true), "the ping after the flood was not answered");
    let _sink = flood.await.unwrap();
    // The reader never ran ahead of the session by more than its permits.
    let peak = hub.frames_in_flight_peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak <= palaver_actors::session::MAX_FRAMES_IN_FLIGHT,
        "{peak} frames waited for the session at once"
    );
    app.stop().await;
}

async fn mark_all_read_marks_every_channel_read(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut b = app.ws(&bob.token).await;
    let mut with_messages = Vec::new();
    for i in 0..60 {
        let channel = channel_in_db(&app, &[&bob, &alice]).await;
        // Every third channel stays empty; the rest get two messages.
        if i % 3 != 0 {
            send_acked(&mut b, channel, "first").await;
            send_acked(&mut b, channel, "newest").await;
            with_messages.push(channel);
        }
    }
    let unread_of = |unread: &Value, channel: Uuid| {
        unread
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["channel_id"] == channel.to_string())
            .map_or(0, |u| u["unread_count"].as_i64().unwrap())
    };
    let before = app.get("/channels/unread", &alice.token).await.expect(200);
    assert!(with_messages.iter().all(|c| unread_of(&before, *c) == 2), "{before}");

    let mut a = app.ws(&alice.token).await;
    a.send(json!({"type": "mark_all_read"})).await;
    round_trip(&mut a, 5).await;
    let after = app.get("/channels/unread", &alice.token).await.expect(200);
    for channel in &with_messages {
        assert_eq!(unread_of(&after, *channel), 0, "{channel} still unread: {after}");
    }
    // A later message is unread again (the cursor is at the newest, not beyond).
    send_acked(&mut b, with_messages[0], "later").await;
    let later = app.get("/channels/unread", &alice.token).await.expect(200);
    assert_eq!(unread_of(&later, with_messages[0]), 1, "{later}");
    app.stop().await;
}

async fn channel_creation_beyond_the_hourly_limit_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let limit = palaver::domain::channel::CREATED_PER_HOUR_MAX;
    for i in 0..limit {
        let body = json!({"name": format!("c{i}"), "channel_type": "text"});
        app.post("/channels", &alice.token, body).await.expect(200);
    }
    let reply =
        app.post("/channels", &alice.token, json!({"name": "one-more", "channel_type": "text"})).await;
    let retry_after = reply.headers.get("retry-after").cloned();
    assert_eq!(reply.expect_error(429), "rate_limited");
    let retry_after: u64 = retry_after.expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // Someone else is not affected.
    let bob = app.register("bob").await;
    app.post("/channels", &bob.token, json!({"name": "bobs", "channel_type": "text"})).await.expect(200);
    app.stop().await;
}

async fn sends_racing_idle_channel_stops_are_all_answered(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.channel_idle_stop = Duration::from_millis(20)).await;
    let db = app.server.as_ref().unwrap().state.db.clone();
    let mut senders = Vec::new();
    for i in 0..3 {
        let user = app.register(&format!("sender{i}")).await;
        let channel = channel_in_db(&app, &[&user]).await;
        // Not subscribed: the channel's actor is idle between sends and stops.
        let ws = app.ws(&user.token).await;
        senders.push((ws, channel));
    }
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(n, (mut ws, channel))| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for round in 0..120u64 {
                    ws.send(send_frame(channel, &format!("m{round}"))).await;
                    // Every send is answered: acked, or refused with a readable error.
                    let answer = ws
                        .next_frame(Duration::from_secs(20))
                        .await
                        .unwrap_or_else(|| panic!("send {round} on channel {n} got no answer"));
                    match answer["type"].as_str() {
                        Some("message_sent") => {
                            acked.push(answer["id"].as_str().unwrap().parse::<Uuid>().unwrap())
                        }
                        Some("error") => assert_eq!(answer["code"], "unavailable", "{answer}"),
                        _ => panic!("unexpected {answer}"),
                    }
                    // Around the idle timeout, so sends meet actors that are stopping.
                    tokio::time::sleep(Duration::from_millis(15 + (round * 7 + n as u64 * 3) % 15)).await;
                }
                (channel, acked)
            })
        })
        .collect();
    for task in tasks {
        let (channel, acked) = task.await.unwrap();
        assert!(!acked.is_empty());
        let stored: HashSet<Uuid> = messages::Entity::find()
            .select_only()
            .column(messages::Column::Id)
            .filter(messages::Column::ChannelId.eq(channel))
            .into_tuple()
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
        for id in &acked {
            assert!(stored.contains(id), "acked message {id} is not in history");
        }
    }
    app.stop().await;
}

async fn a_call_setup_burst_gets_through_and_a_signalling_flood_is_limited(backend: Backend) {
    // The shipped default bucket, not the tests' generous one.
    let default_bucket = palaver::Config::with_data_dir(".").ws_rate_limit;
    assert_eq!(default_bucket, palaver::config::RateLimit::new(30, 10), "the wire's bucket");
    let app = spawn_app_with(backend, |c| c.ws_rate_limit = default_bucket).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    for ws in [&mut a, &mut b] {
        ws.send(json!({"type": "join_voice", "channel_id": channel})).await;
        ws.expect_eventually("voice_state_update").await;
    }
    // Other traffic first: Alice spends her whole frame bucket.
    for i in 0..40 {
        a.send(json!({"type": "ping", "timestamp": i})).await;
    }
    // Then a call setup: one offer and 15 ICE candidates, at once.
    let call = Uuid::new_v4();
    a.send(json!({"type": "rtc_offer", "target_user_id": bob.id, "session_id": call, "sdp": "v=0 offer"}))
        .await;
    for i in 0..15 {
        let candidate = format!("{{\"candidate\":\"c{i}\"}}");
        a.send(json!({"type": "rtc_ice_candidate", "target_user_id": bob.id, "session_id": call, "candidate": candidate}))
            .await;
    }
    let mut relayed = 0;
    while relayed < 16 {
        let frame = b.next_frame(Duration::from_secs(10)).await.expect("every signalling frame reaches Bob");
        if matches!(frame["type"].as_str(), Some("rtc_offer" | "rtc_ice_candidate")) {
            relayed += 1;
        }
    }
    // A flood of candidates is still limited.
    for i in 0..300 {
        let candidate = format!("{{\"candidate\":\"f{i}\"}}");
        a.send(json!({"type": "rtc_ice_candidate", "target_user_id": bob.id, "session_id": call, "candidate": candidate}))
            .await;
    }
    let mut limited = 0;
    while let Some(frame) = a.next_frame(Duration::from_secs(2)).await {
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "rate_limited", "{frame}");
            limited += 1;
        }
    }
    assert!(limited >= 100, "only {limited} of 300 flooded candidates were limited");
    app.stop().await;
}

crate::both_backends!(
    ephemeral_frames_are_dropped_before_a_slow_reader_is_closed,
    byte_bound_closes_a_stalled_reader_of_large_frames,
    a_flood_of_frames_waits_in_the_socket_not_in_server_memory,
    mark_all_read_marks_every_channel_read,
    channel_creation_beyond_the_hourly_limit_is_refused,
    sends_racing_idle_channel_stops_are_all_answered,
    a_call_setup_burst_gets_through_and_a_signalling_flood_is_limited,
);
