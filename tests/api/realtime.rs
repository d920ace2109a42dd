//! The real-time core over real sockets: handshake, sending, fan-out, ordering, limits,
//! slow consumers, the session cap, and a channel actor restarted mid-stream.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::common::fixtures::{channel_in_db, create, join, send_frame, subscribed};
use crate::common::{Backend, TestApp, TestUser, WsClient, spawn_app, spawn_app_with};

async fn two_clients_see_messages_edits_deletes_reactions_typing_and_receipts(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    let mut a = subscribed(&app, &alice, channel).await;
    let mut b = subscribed(&app, &bob, channel).await;

    a.send(json!({"type": "typing", "channel_id": channel})).await;
    let typing = b.expect("user_typing").await;
    assert_eq!(typing["user_id"], alice.id.to_string());

    a.send(send_frame(channel, "hello bob")).await;
    // Alice was typing: her send clears it for everyone, then her ack.
    a.expect("user_typing").await;
    a.expect("user_stopped_typing").await;
    let ack = a.expect("message_sent").await;
    let id = ack["id"].as_str().unwrap().to_string();
    assert_eq!(ack["channel_id"], channel.to_string());
    b.expect("user_stopped_typing").await;
    let msg = b.expect("new_message").await;
    assert_eq!(msg["id"], id);
    assert_eq!(msg["sender_id"], alice.id.to_string());
    assert_eq!(msg["ciphertext"], json!("hello bob".as_bytes()));
    assert_eq!(msg["nonce"], json!([1, 2, 3]));
    assert!(msg["reply_to"].is_null());
    // The sending socket gets the ack, not its own message.
    a.expect_no("new_message", Duration::from_millis(200)).await;

    a.send(json!({"type": "edit_message", "message_id": id, "ciphertext": [9, 9], "nonce": [4]})).await;
    for ws in [&mut a, &mut b] {
        let edited = ws.expect("message_edited").await;
        assert_eq!(edited["message_id"], id);
        assert_eq!(edited["ciphertext"], json!([9, 9]));
    }
    // Bob may not edit Alice's message.
    b.send(json!({"type": "edit_message", "message_id": id, "ciphertext": [1], "nonce": [1]})).await;
    assert_eq!(b.expect("error").await["code"], "forbidden");

    b.send(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"})).await;
    for ws in [&mut a, &mut b] {
        let r = ws.expect("reaction_added").await;
        assert_eq!(
            (r["emoji"].as_str(), r["user_id"].as_str()),
            (Some("👍"), Some(bob.id.to_string().as_str()))
        );
    }
    b.send(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"})).await;
    for ws in [&mut a, &mut b] {
        ws.expect("reaction_removed").await;
    }

    b.send(json!({"type": "mark_read", "channel_id": channel, "message_id": id})).await;
    for ws in [&mut a, &mut b] {
        let receipt = ws.expect("read_receipt").await;
        assert_eq!(receipt["user_id"], bob.id.to_string());
        assert_eq!(receipt["message_id"], id);
    }

    // Bob may not delete Alice's message; Alice may.
    b.send(json!({"type": "delete_message", "message_id": id})).await;
    assert_eq!(b.expect("error").await["code"], "forbidden");
    a.send(json!({"type": "delete_message", "message_id": id})).await;
    assert_eq!(b.expect("message_deleted").await["message_id"], id);
    app.stop().await;
}

async fn senders_other_devices_receive_its_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let channel = channel_in_db(&app, &[&alice]).await;
    let mut phone = subscribed(&app, &alice, channel).await;
    let mut laptop = subscribed(&app, &alice, channel).await;
    laptop.send(send_frame(channel, "from laptop")).await;
    laptop.expect("message_sent").await;
    assert_eq!(phone.expect("new_message").await["sender_id"], alice.id.to_string());
    app.stop().await;
}

async fn burst_from_several_senders_has_one_order_for_everyone_and_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let users = [
        app.register("sender1").await,
        app.register("sender2").await,
        app.register("sender3").await,
        app.register("reader").await,
    ];
    let refs: Vec<&TestUser> = users.iter().collect();
    let channel = channel_in_db(&app, &refs).await;
    let mut sockets = Vec::new();
    for user in &users {
        sockets.push(subscribed(&app, user, channel).await);
    }
    const PER_SENDER: usize = 20;
    for round in 0..PER_SENDER {
        for (i, ws) in sockets.iter_mut().take(3).enumerate() {
            ws.send(send_frame(channel, &format!("{i}-{round}"))).await;
        }
    }
    // Each socket sees every message: acks for its own, new_message for the others'.
    let mut orders = Vec::new();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let expected_total = 3 * PER_SENDER;
        let mut seen: Vec<String> = Vec::new();
        while seen.len() < expected_total {
            let frame = ws.next_frame(Duration::from_secs(10)).await.expect("all frames arrive");
            match frame["type"].as_str() {
                Some("new_message" | "message_sent") => seen.push(frame["id"].as_str().unwrap().to_string()),
                Some("pong" | "presence_update" | "presence_bulk") => {}
                other => panic!("socket {i}: unexpected {other:?}: {frame}"),
            }
        }
        orders.push(seen);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "every receiver sees the same order");
    }
    let mut sorted = orders[0].clone();
    sorted.sort();
    assert_eq!(sorted, orders[0], "the live order is the id order");
    app.stop().await;
}

async fn non_member_cannot_send_or_subscribe(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let channel = channel_in_db(&app, &[&alice]).await;
    let mut a = subscribed(&app, &alice, channel).await;
    let mut m = subscribed(&app, &mallory, channel).await;
    m.send(send_frame(channel, "let me in")).await;
    assert_eq!(m.expect("error").await["code"], "forbidden");
    a.send(send_frame(channel, "secret")).await;
    a.expect("message_sent").await;
    m.expect_no("new_message", Duration::from_millis(300)).await;
    // Unknown channel.
    m.send(send_frame(Uuid::now_v7(), "x")).await;
    assert_eq!(m.expect("error").await["code"], "not_found");
    app.stop().await;
}

async fn handshake_errors_are_readable_and_close_the_socket(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut ws = app.ws_raw().await;
    ws.send(json!({"type": "authenticate", "token": "not-a-jwt"})).await;
    assert_eq!(ws.expect("error").await["code"], "unauthorized");
    assert!(ws.expect_close(Duration::from_secs(3)).await.is_some());

    let mut ws = app.ws_raw().await;
    ws.send(json!({"type": "ping", "timestamp": 1})).await;
    assert_eq!(ws.expect("error").await["code"], "auth_required");
    app.stop().await;
}

async fn malformed_frames_get_errors_and_the_socket_keeps_working(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let channel = channel_in_db(&app, &[&alice]).await;
    let mut ws = subscribed(&app, &alice, channel).await;
    ws.send_text("{not json").await;
    assert_eq!(ws.expect("error").await["code"], "invalid_message");
    ws.send(json!({"type": "no_such_frame"})).await;
    assert_eq!(ws.expect("error").await["code"], "invalid_message");
    ws.send(json!({"type": "send_message", "channel_id": channel, "ciphertext": [], "nonce": [1], "message_type": "text"}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "validation_error");
    ws.send(json!({"type": "send_message", "channel_id": channel, "ciphertext": [1], "nonce": [1], "message_type": "system"}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "validation_error");
    let huge = format!("{{\"type\":\"ping\",\"timestamp\":1,\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    ws.send_text(&huge).await;
    assert_eq!(ws.expect("error").await["code"], "validation_error");
    ws.send(send_frame(channel, "still here")).await;
    ws.expect("message_sent").await;
    app.stop().await;
}

async fn frames_beyond_the_socket_bucket_are_rate_limited(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.ws_rate_limit = palaver::config::RateLimit::new(5, 1)).await;
    let alice = app.register("alice").await;
    let mut ws = app.ws(&alice.token).await;
    for i in 0..8 {
        ws.send(json!({"type": "ping", "timestamp": i})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    while pongs + limited < 8 {
        let frame = ws.next_frame(Duration::from_secs(3)).await.expect("an answer per frame");
        match frame["type"].as_str() {
            Some("pong") if frame["timestamp"].as_i64().unwrap() < 100 => pongs += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                limited += 1
            }
            _ => {}
        }
    }
    assert_eq!((pongs, limited), (5, 3));
    app.stop().await;
}

async fn ninth_session_evicts_the_oldest_with_a_close_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(app.ws(&alice.token).await);
    }
    let _ninth = app.ws(&alice.token).await;
    assert_eq!(sockets[0].expect("error").await["code"], "too_many_sessions");
    let code = sockets[0].expect_close(Duration::from_secs(3)).await;
    assert_eq!(code, Some(palaver_actors::outbox::CLOSE_EVICTED));
    // The second-oldest is still open.
    sockets[1].send(json!({"type": "ping", "timestamp": 3})).await;
    assert_eq!(sockets[1].expect("pong").await["timestamp"], 3);
    app.stop().await;
}

async fn slow_consumer_is_closed_with_resync_code(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.ws_queue = 8).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    let mut a = subscribed(&app, &alice, channel).await;
    // Bob's socket has a tiny receive buffer and Bob stops reading after subscribing, so the
    // server's writes to him back up: kernel buffers, the socket's write buffer, then his
    // 8-frame queue, which overflows.
    let mut slow = app.ws_small_receive_buffer(&bob.token).await;
    slow.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    slow.send(json!({"type": "ping", "timestamp": 1})).await;
    slow.expect("pong").await;
    let payload = "x".repeat(16_000);
    let hub = &app.server.as_ref().unwrap().state.hub;
    let mut sent = 0;
    // Alice keeps sending (and is acked every time) until Bob has been cut off; she is never
    // slowed down by him. She waits for each ack before the next send, so her own 8-frame
    // queue (ack + her copy of the message) never overflows however loaded the machine is.
    // The cap only bounds a broken server.
    while sent < 2000 && hub.sessions().is_online(bob.id) {
        a.send(send_frame(channel, &payload)).await;
        sent += 1;
        loop {
            let frame =
                a.next_frame(Duration::from_secs(30)).await.expect("Alice is acked whatever Bob does");
            assert_ne!(frame["type"], "error", "{frame}");
            if frame["type"] == "message_sent" {
                break;
            }
        }
    }
    assert!(sent < 2000, "Bob was never cut off although he stopped reading");
    // Reading again, Bob finds his socket closed with the resync code.
    let code = slow.expect_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(palaver_actors::outbox::CLOSE_SLOW_CONSUMER));
    // Alice's session is unharmed.
    a.send(json!({"type": "ping", "timestamp": 2})).await;
    assert_eq!(a.expect("pong").await["timestamp"], 2);
    app.stop().await;
}

async fn crashed_channel_actor_restarts_and_subscribers_keep_receiving(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    let mut a = subscribed(&app, &alice, channel).await;
    let mut b = subscribed(&app, &bob, channel).await;
    a.send(send_frame(channel, "before")).await;
    a.expect("message_sent").await;
    b.expect("new_message").await;

    let hub = &app.server.as_ref().unwrap().state.hub;
    let before = hub.live_channel_actor(channel).unwrap().get_id();
    hub.crash_channel(channel).await.unwrap();
    let mut restarted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if hub.live_channel_actor(channel).is_some_and(|a| a.get_id() != before) {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "the supervisor restarted the channel actor");
    a.send(send_frame(channel, "after")).await;
    a.expect("message_sent").await;
    let msg = b.expect("new_message").await;
    assert_eq!(msg["ciphertext"], json!("after".as_bytes()));
    app.stop().await;
}

/// A community whose members are `members` (makes them presence mates), made over REST so
/// the server's live side knows about it: the first member creates it (the first user
/// registered is the instance owner, who may), the others accept an invite.
async fn community_with(app: &TestApp, members: &[&TestUser]) {
    let cid = create(app, members[0], "mates").await;
    for member in &members[1..] {
        join(app, members[0], cid, member).await;
    }
}

/// Waits until a presence frame reports `user` with `status`. Changes within 250 ms are
/// coalesced, so the news may come as `presence_update` or inside a `presence_bulk`.
async fn expect_presence(ws: &mut WsClient, user: Uuid, status: &str) {
    loop {
        let frame = ws
            .next_frame(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no presence {status} for {user}"));
        let reported = match frame["type"].as_str() {
            Some("presence_update") => vec![(frame["user_id"].clone(), frame["status"].clone())],
            Some("presence_bulk") => {
                frame["statuses"].as_array().unwrap().iter().map(|p| (p[0].clone(), p[1].clone())).collect()
            }
            _ => continue,
        };
        if reported.contains(&(json!(user), json!(status))) {
            return;
        }
    }
}

async fn three_clients_presence_voice_signalling_and_unsubscribe(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let outsider = app.register("outsider").await;
    community_with(&app, &[&alice, &bob, &carol]).await;
    let channel = channel_in_db(&app, &[&alice, &bob, &carol]).await;

    // Presence: Bob connecting is announced to Alice; Bob's bulk lists Alice; an outsider
    // (no shared community) hears nothing.
    let mut a = subscribed(&app, &alice, channel).await;
    let mut o = app.ws(&outsider.token).await;
    let mut b = app.ws(&bob.token).await;
    expect_presence(&mut a, bob.id, "online").await;
    let bulk = b.expect("presence_bulk").await;
    assert!(bulk["statuses"].as_array().unwrap().contains(&json!([alice.id, "online"])), "{bulk}");
    b.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    b.send(json!({"type": "update_presence", "status": "dnd"})).await;
    expect_presence(&mut a, bob.id, "dnd").await;
    b.send(json!({"type": "update_presence", "status": "invisible"})).await;
    expect_presence(&mut a, bob.id, "offline").await;
    o.expect_no("presence_update", Duration::from_millis(300)).await;
    let mut c = subscribed(&app, &carol, channel).await;

    // Voice: Alice joins (self gets the full list first, then the channel frames), Bob joins.
    a.send(json!({"type": "join_voice", "channel_id": channel})).await;
    let own = a.expect("voice_state_update").await;
    assert_eq!(own["participants"], json!([alice.id]));
    // The channel hears the new participant list, then who joined.
    assert_eq!(c.expect("voice_state_update").await["participants"], json!([alice.id]));
    let joined = c.expect("user_joined_voice").await;
    assert_eq!(joined["user_id"], alice.id.to_string());
    b.send(json!({"type": "join_voice", "channel_id": channel})).await;
    let state = c.expect("voice_state_update").await;
    assert_eq!(state["participants"].as_array().unwrap().len(), 2, "{state}");
    assert_eq!(c.expect("user_joined_voice").await["user_id"], bob.id.to_string());

    // Signalling is relayed between participants only, with the sender named.
    let call = Uuid::new_v4();
    a.send(json!({"type": "rtc_offer", "target_user_id": bob.id, "session_id": call, "sdp": "v=0 offer"}))
        .await;
    let offer = b.expect_eventually("rtc_offer").await;
    assert_eq!(
        (offer["from_user_id"].as_str(), offer["sdp"].as_str()),
        (Some(alice.id.to_string().as_str()), Some("v=0 offer"))
    );
    assert_eq!(offer["session_id"], call.to_string());
    b.send(
        json!({"type": "rtc_answer", "target_user_id": alice.id, "session_id": call, "sdp": "v=0 answer"}),
    )
    .await;
    assert_eq!(a.expect_eventually("rtc_answer").await["sdp"], "v=0 answer");
    b.send(json!({"type": "rtc_ice_candidate", "target_user_id": alice.id, "session_id": call, "candidate": "{\"c\":1}"})).await;
    assert_eq!(a.expect("rtc_ice_candidate").await["candidate"], "{\"c\":1}");
    c.send(json!({"type": "rtc_offer", "target_user_id": alice.id, "session_id": call, "sdp": "v=0"})).await;
    assert_eq!(c.expect("error").await["code"], "forbidden", "Carol is not in the voice session");
    a.expect_no("rtc_offer", Duration::from_millis(200)).await;

    // The channel owner removes Bob from voice; everyone subscribed sees it.
    a.send(json!({"type": "kick_from_voice", "channel_id": channel, "user_id": bob.id})).await;
    let kicked = c.expect("kicked_from_voice").await;
    assert_eq!(
        (kicked["user_id"].as_str(), kicked["kicked_by"].as_str()),
        (Some(bob.id.to_string().as_str()), Some(alice.id.to_string().as_str()))
    );
    let left = c.expect("user_left_voice").await;
    assert_eq!(left["user_id"], bob.id.to_string());
    let after = c.expect("voice_state_update").await;
    assert_eq!(after["participants"], json!([alice.id]));
    // A member cannot kick someone who outranks them.
    c.send(json!({"type": "kick_from_voice", "channel_id": channel, "user_id": alice.id})).await;
    assert_eq!(c.expect("error").await["code"], "forbidden");

    // Typing then stop_typing reaches the others.
    c.send(json!({"type": "typing", "channel_id": channel})).await;
    b.expect_eventually("user_typing").await;
    c.send(json!({"type": "stop_typing", "channel_id": channel})).await;
    assert_eq!(b.expect_eventually("user_stopped_typing").await["user_id"], carol.id.to_string());

    // Carol unsubscribes: she no longer receives the channel's messages; Bob still does.
    c.send(json!({"type": "unsubscribe", "channel_ids": [channel]})).await;
    c.send(json!({"type": "ping", "timestamp": 3})).await;
    c.expect_eventually("pong").await;
    a.send(send_frame(channel, "after unsubscribe")).await;
    a.expect_eventually("message_sent").await;
    b.expect_eventually("new_message").await;
    c.expect_no("new_message", Duration::from_millis(300)).await;

    // mark_all_read moves Carol's cursor past everything: nothing unread.
    let unread = app.get("/channels/unread", &carol.token).await.expect(200);
    assert!(unread.to_string().contains(&channel.to_string()), "{unread}");
    c.send(json!({"type": "mark_all_read"})).await;
    c.send(json!({"type": "ping", "timestamp": 4})).await;
    c.expect_eventually("pong").await;
    let unread = app.get("/channels/unread", &carol.token).await.expect(200);
    let count = unread
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["channel_id"] == channel.to_string())
        .map(|u| u["unread_count"].as_i64().unwrap())
        .unwrap_or(0);
    assert_eq!(count, 0, "{unread}");

    // Bob's last socket closes: his mates see him go offline.
    drop(b);
    expect_presence(&mut a, bob.id, "offline").await;
    app.stop().await;
}

crate::both_backends!(
    two_clients_see_messages_edits_deletes_reactions_typing_and_receipts,
    senders_other_devices_receive_its_messages,
    burst_from_several_senders_has_one_order_for_everyone_and_history,
    non_member_cannot_send_or_subscribe,
    handshake_errors_are_readable_and_close_the_socket,
    malformed_frames_get_errors_and_the_socket_keeps_working,
    frames_beyond_the_socket_bucket_are_rate_limited,
    ninth_session_evicts_the_oldest_with_a_close_code,
    crashed_channel_actor_restarts_and_subscribers_keep_receiving,
    slow_consumer_is_closed_with_resync_code,
    three_clients_presence_voice_signalling_and_unsubscribe,
);
