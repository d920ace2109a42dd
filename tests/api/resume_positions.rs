//! Stream positions and recovery (docs/wire/resume.md): `cseq` on every durable channel frame
//! and on `message_sent`, `subscribe` with `since` answered by `subscribed` and the exact
//! missed frames, `recovered:false` in every case the document lists, `resync_required`
//! when the channel's actor restarts, and REST `after=` catch-up after a server restart.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_in_db, community, send_frame, send_text, subscribe, sync, users};
use crate::common::{Backend, TestApp, TestUser, WsClient, spawn_app, spawn_app_with};

crate::both_backends!(
    durable_frames_carry_rising_positions_and_ephemeral_ones_none,
    a_resuming_receiver_gets_exactly_the_missed_frames_then_live_ones,
    unrecoverable_positions_answer_recovered_false,
    refusals_name_the_reason_and_a_bad_since_is_invalid,
    more_missed_than_the_replay_cap_is_not_recovered,
    a_resubscribe_does_not_repeat_frames_already_received,
    a_crashed_channel_actor_tells_resuming_sockets_to_resync,
    after_a_server_restart_the_epoch_changes_and_rest_after_catches_up,
    dm_positions_and_replay_reach_both_participants,
    legacy_subscribe_gets_no_answer_and_frames_only_gain_fields,
);

/// Subscribes with `since` (a map channel → position) and returns the `subscribed` answer.
async fn resume(ws: &mut WsClient, channel: Uuid, since: Value) -> Value {
    ws.send(json!({"type": "subscribe", "channel_ids": [channel], "since": since})).await;
    ws.expect("subscribed").await
}

fn position(subscribed: &Value, cseq: u64) -> Value {
    json!({"epoch": subscribed["epoch"], "cseq": cseq})
}

fn cseq(frame: &Value) -> u64 {
    frame["cseq"].as_u64().unwrap_or_else(|| panic!("no cseq in {frame}"))
}

/// The next `n` frames, skipping presence.
async fn frames(ws: &mut WsClient, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = ws.next_frame(Duration::from_secs(5)).await.expect("a frame");
        if !matches!(frame["type"].as_str(), Some("presence_update" | "presence_bulk")) {
            out.push(frame);
        }
    }
    out
}

/// Waits until every frame sent before has been handled, whatever frames come back meanwhile.
async fn settle(ws: &mut WsClient) {
    ws.send(json!({"type": "ping", "timestamp": 77})).await;
    while ws.expect_eventually("pong").await["timestamp"] != 77 {}
}

/// Two members, the first owner, both with a socket subscribed with `since: {}`.
async fn pair(app: &TestApp) -> (TestUser, TestUser, Uuid, WsClient, WsClient, Value) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(app, &[&alice, &bob]).await;
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    resume(&mut a, channel, json!({})).await;
    let first = resume(&mut b, channel, json!({})).await;
    (alice, bob, channel, a, b, first)
}

async fn durable_frames_carry_rising_positions_and_ephemeral_ones_none(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _bob, channel, mut a, mut b, first) = pair(&app).await;
    assert_eq!((first["recovered"].as_bool(), first["replayed"].as_u64()), (Some(false), Some(0)));
    assert_eq!(first["epoch"].as_str().unwrap().len(), 8);
    assert!(first["epoch"].as_str().unwrap().chars().all(|c| c.is_ascii_alphanumeric()));
    let start = cseq(&first);

    let sent = send_text(&mut a, channel, "hello").await;
    let message_id = sent["id"].as_str().unwrap().to_string();
    let new = b.expect("new_message").await;
    assert_eq!(cseq(&sent), start + 1, "message_sent carries the message's position");
    assert_eq!(cseq(&new), cseq(&sent));

    a.send(json!({"type": "typing", "channel_id": channel})).await;
    let typing = b.expect("user_typing").await;
    assert!(typing.get("cseq").is_none(), "ephemeral frames have no position: {typing}");

    a.send(json!({"type": "edit_message", "message_id": message_id, "ciphertext": [1], "nonce": [2]})).await;
    a.send(json!({"type": "add_reaction", "message_id": message_id, "emoji": "👍"})).await;
    settle(&mut a).await;
    let path = format!("/channels/{channel}/pins/{message_id}");
    app.post(&path, &alice.token, json!({})).await.expect(200);
    a.send(json!({"type": "remove_reaction", "message_id": message_id, "emoji": "👍"})).await;
    a.send(json!({"type": "delete_message", "message_id": message_id})).await;
    let mut seen = Vec::new();
    for kind in ["message_edited", "reaction_added", "message_pinned", "reaction_removed", "message_deleted"] {
        let frame = b.expect(kind).await;
        seen.push(cseq(&frame));
        if matches!(kind, "reaction_added" | "reaction_removed" | "message_deleted") {
            assert_eq!(frame["channel_id"], json!(channel), "{kind} names its channel");
        }
    }
    assert_eq!(seen, (start + 2..start + 7).collect::<Vec<_>>(), "one position per durable frame, in order");
    app.stop().await;
}

async fn a_resuming_receiver_gets_exactly_the_missed_frames_then_live_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, channel, mut a, mut b, first) = pair(&app).await;
    send_text(&mut a, channel, "seen").await;
    let held = cseq(&b.expect("new_message").await);
    drop(b);

    // Missed while away: messages, an edit, a delete, a reaction, a pin.
    let mut ids = Vec::new();
    for text in ["m1", "m2", "m3"] {
        ids.push(send_text(&mut a, channel, text).await["id"].as_str().unwrap().to_string());
    }
    a.send(json!({"type": "edit_message", "message_id": ids[0], "ciphertext": [9], "nonce": [9]})).await;
    a.send(json!({"type": "delete_message", "message_id": ids[1]})).await;
    a.send(json!({"type": "add_reaction", "message_id": ids[2], "emoji": "🎉"})).await;
    settle(&mut a).await;
    app.post(&format!("/channels/{channel}/pins/{}", ids[2]), &alice.token, json!({})).await.expect(200);

    let mut b = app.ws(&bob.token).await;
    let answer = resume(&mut b, channel, json!({ channel.to_string(): position(&first, held) })).await;
    assert_eq!(answer["recovered"], true, "{answer}");
    assert_eq!(answer["epoch"], first["epoch"]);
    assert_eq!(answer["replayed"], 7, "{answer}");
    assert_eq!(cseq(&answer), held + 7);
    let replayed = frames(&mut b, 7).await;
    let kinds: Vec<&str> = replayed.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["new_message", "new_message", "new_message", "message_edited", "message_deleted", "reaction_added", "message_pinned"]
    );
    let positions: Vec<u64> = replayed.iter().map(cseq).collect();
    assert_eq!(positions, (held + 1..=held + 7).collect::<Vec<_>>());
    assert_eq!(replayed[0]["id"], json!(ids[0]));

    // Then live frames, above the answer's position, without a repeat.
    a.send(send_frame(channel, "live")).await;
    let live = a.expect_eventually("message_sent").await;
    let next = b.expect("new_message").await;
    assert_eq!((cseq(&next), cseq(&live)), (held + 8, held + 8));
    crate::common::fixtures::expect_quiet(&mut b, Duration::from_millis(300)).await;
    app.stop().await;
}

async fn unrecoverable_positions_answer_recovered_false(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_alice, bob, channel, mut a, b, first) = pair(&app).await;
    drop(b);
    send_text(&mut a, channel, "one").await;
    send_text(&mut a, channel, "two").await;
    let now = cseq(&first) + 2;
    let cases = [
        ("another epoch", json!({ channel.to_string(): {"epoch": "zzzzzzzz", "cseq": 1} }), false),
        ("ahead of the stream", json!({ channel.to_string(): position(&first, now + 5) }), false),
        ("no entry for the channel", json!({ Uuid::now_v7().to_string(): position(&first, 0) }), false),
        ("at the current position", json!({ channel.to_string(): position(&first, now) }), true),
    ];
    for (case, since, recovered) in cases {
        let mut b = app.ws(&bob.token).await;
        let answer = resume(&mut b, channel, since).await;
        assert_eq!(answer["recovered"], recovered, "{case}: {answer}");
        assert_eq!(answer["replayed"], 0, "{case}: {answer}");
        assert_eq!(cseq(&answer), now, "{case}");
        crate::common::fixtures::expect_quiet(&mut b, Duration::from_millis(200)).await;
    }
    app.stop().await;
}

async fn refusals_name_the_reason_and_a_bad_since_is_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, bob, channel, mut a, _b, _first) = pair(&app).await;
    let carol = app.register("carol").await;
    let theirs = channel_in_db(&app, &[&carol]).await;
    let missing = Uuid::now_v7();
    a.send(json!({"type": "subscribe", "channel_ids": [theirs, missing, channel], "since": {}})).await;
    let mut answers = frames(&mut a, 3).await;
    answers.sort_by_key(|f| f["channel_id"].as_str().unwrap().to_string());
    for frame in &answers {
        let expected = if frame["channel_id"] == json!(channel) {
            json!({"type": "subscribed"})
        } else if frame["channel_id"] == json!(theirs) {
            json!({"type": "subscribe_refused", "code": "forbidden"})
        } else {
            json!({"type": "subscribe_refused", "code": "not_found"})
        };
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&frame[key], value, "{frame}");
        }
    }
    // No longer a member: refused, even with a position that was once valid.
    app.post(&format!("/channels/{channel}/members/{}/kick", bob.id), &alice.token, json!({})).await.expect(200);
    let mut b = app.ws(&bob.token).await;
    b.send(json!({"type": "subscribe", "channel_ids": [channel], "since": { channel.to_string(): {"epoch": "aaaaaaaa", "cseq": 0} }})).await;
    let refused = b.expect("subscribe_refused").await;
    assert_eq!(refused["code"], "forbidden");
    for bad in [json!([1]), json!({ channel.to_string(): {"epoch": 5, "cseq": 1} }), json!({ channel.to_string(): {"cseq": -1, "epoch": "x"} })] {
        a.send(json!({"type": "subscribe", "channel_ids": [channel], "since": bad})).await;
        let error = a.expect_eventually("error").await;
        assert_eq!(error["code"], "invalid_message", "{bad}");
    }
    app.stop().await;
}

async fn more_missed_than_the_replay_cap_is_not_recovered(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.ws_rate_limit = palaver::config::RateLimit::new(100_000, 100_000);
    })
    .await;
    let (_alice, bob, channel, mut a, b, first) = pair(&app).await;
    drop(b);
    let start = cseq(&first);
    let sends = 301;
    for i in 0..sends {
        a.send(send_frame(channel, &format!("m{i}"))).await;
    }
    let mut acked = 0;
    while acked < sends {
        if a.expect_eventually("message_sent").await["type"] == "message_sent" {
            acked += 1;
        }
    }
    let mut b = app.ws(&bob.token).await;
    let over = resume(&mut b, channel, json!({ channel.to_string(): position(&first, start) })).await;
    assert_eq!((over["recovered"].as_bool(), over["replayed"].as_u64()), (Some(false), Some(0)), "{over}");
    let mut b = app.ws(&bob.token).await;
    let within = resume(&mut b, channel, json!({ channel.to_string(): position(&first, start + 1) })).await;
    assert_eq!((within["recovered"].as_bool(), within["replayed"].as_u64()), (Some(true), Some(300)), "{within}");
    let replayed = frames(&mut b, 300).await;
    assert_eq!(cseq(&replayed[0]), start + 2);
    assert_eq!(cseq(&replayed[299]), start + 301);
    app.stop().await;
}

async fn a_resubscribe_does_not_repeat_frames_already_received(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_alice, _bob, channel, mut a, mut b, first) = pair(&app).await;
    for text in ["1", "2", "3"] {
        send_text(&mut a, channel, text).await;
    }
    let got: Vec<u64> = frames(&mut b, 3).await.iter().map(cseq).collect();
    // Bob claims to hold only the first: he already got the others live on this socket.
    let answer = resume(&mut b, channel, json!({ channel.to_string(): position(&first, got[0]) })).await;
    assert_eq!((answer["recovered"].as_bool(), answer["replayed"].as_u64()), (Some(true), Some(0)), "{answer}");
    crate::common::fixtures::expect_quiet(&mut b, Duration::from_millis(300)).await;
    let live = send_text(&mut a, channel, "4").await;
    assert_eq!(cseq(&b.expect("new_message").await), cseq(&live));
    app.stop().await;
}

async fn a_crashed_channel_actor_tells_resuming_sockets_to_resync(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_alice, bob, channel, mut a, mut b, first) = pair(&app).await;
    let mut legacy = crate::common::fixtures::subscribed(&app, &bob, channel).await;
    send_text(&mut a, channel, "before").await;
    b.expect("new_message").await;
    legacy.expect("new_message").await;

    let hub = &app.server.as_ref().unwrap().state.hub;
    hub.crash_channel(channel).await.unwrap();
    assert_eq!(a.expect("resync_required").await["reason"], "restarted");
    let resync = b.expect("resync_required").await;
    assert_eq!(resync["reason"], "restarted");
    assert_eq!((resync["channel_id"].clone(), resync["cseq"].as_u64()), (json!(channel), Some(0)));
    assert_ne!(resync["epoch"], first["epoch"], "a restart is a new epoch");

    // Live frames continue in the new epoch; the legacy socket saw nothing new but them.
    let sent = send_text(&mut a, channel, "after").await;
    assert_eq!(cseq(&sent), 1);
    assert_eq!(cseq(&b.expect("new_message").await), 1);
    assert_eq!(legacy.expect("new_message").await["ciphertext"], json!("after".as_bytes()));
    // The old epoch cannot be resumed.
    let mut again = app.ws(&bob.token).await;
    let answer = resume(&mut again, channel, json!({ channel.to_string(): position(&first, 1) })).await;
    assert_eq!(answer["recovered"], false);
    assert_eq!(answer["epoch"], resync["epoch"]);
    app.stop().await;
}

async fn after_a_server_restart_the_epoch_changes_and_rest_after_catches_up(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (alice, bob, channel, mut a, mut b, first) = pair(&app).await;
    let held = send_text(&mut a, channel, "held").await;
    b.expect("new_message").await;
    drop(b);
    let missed: Vec<String> = {
        let mut ids = Vec::new();
        for text in ["x", "y"] {
            ids.push(send_text(&mut a, channel, text).await["id"].as_str().unwrap().to_string());
        }
        ids
    };
    drop(a);
    app.restart().await;

    let mut b = app.ws(&bob.token).await;
    let answer = resume(&mut b, channel, json!({ channel.to_string(): position(&first, cseq(&held)) })).await;
    assert_eq!((answer["recovered"].as_bool(), answer["replayed"].as_u64()), (Some(false), Some(0)));
    assert_ne!(answer["epoch"], first["epoch"]);
    let page = app
        .get(&format!("/channels/{channel}/messages?after={}&limit=100", held["id"].as_str().unwrap()), &bob.token)
        .await
        .expect(200);
    let ids: Vec<&str> = page.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [missed[1].as_str(), missed[0].as_str()], "exactly the missed messages, newest first");
    let _ = alice;
    app.stop().await;
}

async fn dm_positions_and_replay_reach_both_participants(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    community(&app, &[alice.id, bob.id]).await;
    let dm = app.post("/dms", &alice.token, json!({"target_user_id": bob.id})).await.expect(200);
    let channel: Uuid = dm["channel"]["id"].as_str().unwrap().parse().unwrap();
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    resume(&mut a, channel, json!({})).await;
    let first = resume(&mut b, channel, json!({})).await;
    let sent = send_text(&mut a, channel, "hi").await;
    let got = b.expect_eventually("new_message").await;
    assert_eq!(cseq(&got), cseq(&sent));
    // Re-subscribing with an older position repeats nothing this socket got live.
    let again = resume(&mut b, channel, json!({ channel.to_string(): position(&first, cseq(&first)) })).await;
    assert_eq!((again["recovered"].as_bool(), again["replayed"].as_u64()), (Some(true), Some(0)), "{again}");
    drop(b);
    send_text(&mut a, channel, "while away").await;
    let mut b = app.ws(&bob.token).await;
    let back = resume(&mut b, channel, json!({ channel.to_string(): position(&first, cseq(&sent)) })).await;
    assert_eq!((back["recovered"].as_bool(), back["replayed"].as_u64()), (Some(true), Some(1)), "{back}");
    let replayed = b.expect("new_message").await;
    assert_eq!(replayed["ciphertext"], json!("while away".as_bytes()));
    app.stop().await;
}

async fn legacy_subscribe_gets_no_answer_and_frames_only_gain_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    subscribe(&mut a, channel).await;
    b.send(json!({"type": "subscribe", "channel_ids": [channel, Uuid::now_v7()]})).await;
    sync(&mut b).await;
    let sent = send_text(&mut a, channel, "plain").await;
    let keys: Vec<&str> = sent.as_object().unwrap().keys().map(String::as_str).collect();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["channel_id", "created_at", "cseq", "id", "type"]);
    let new = b.expect("new_message").await;
    assert_eq!(cseq(&new), cseq(&sent));
    app.stop().await;
}
