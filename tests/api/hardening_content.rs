//! Issue 10, content entering the server: one set of send rules for every way into a channel
//! (polls, webhooks, scheduled messages, files), searches with a budget and a per-user limit,
//! uploads that refuse repeated or unknown form parts, size limits on client blobs, and new
//! communities discoverable by default (invite previews show the name).

use std::time::Duration;

use palaver_entity::messages;
use reqwest::multipart::{Form, Part};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{
    channel_with, community_with_channel, db, invite, join, open_app, ordered_ids, users,
};
use crate::common::{Backend, Reply, TestApp, TestUser, spawn_app, spawn_app_with};

// ---------------------------------------------------------------------------------------
// Helpers

async fn time_out(app: &TestApp, by: &TestUser, cid: Uuid, channel: Uuid, user: &TestUser) {
    let path = format!("/communities/{cid}/channels/{channel}/timeout");
    app.post(&path, &by.token, json!({"user_id": user.id, "duration_seconds": 600})).await.expect(200);
}

async fn patch_channel(app: &TestApp, by: &TestUser, channel: Uuid, body: Value) {
    app.patch(&format!("/channels/{channel}"), &by.token, body).await.expect(200);
}

fn poll_body() -> Value {
    json!({"question": "lunch?", "options": ["yes", "no"]})
}

async fn new_poll(app: &TestApp, user: &TestUser, channel: Uuid) -> Reply {
    app.post(&format!("/channels/{channel}/polls"), &user.token, poll_body()).await
}

async fn new_webhook(app: &TestApp, owner: &TestUser, channel: Uuid) -> String {
    let hook = app
        .post(&format!("/channels/{channel}/webhooks"), &owner.token, json!({"name": "bot"}))
        .await
        .expect(200);
    format!("/webhooks/execute/{}", hook["token"].as_str().unwrap())
}

/// Executes a webhook, waiting out its 1/s per-token bucket when needed.
async fn execute(app: &TestApp, path: &str) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app.post_public(path, json!({"content": "ping"})).await;
        if reply.status.as_u16() != 429 || tokio::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn in_secs(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

fn schedule_body(channel: Uuid, at: &str) -> Value {
    json!({"channel_id": channel, "ciphertext": "[104,105]", "nonce": "[9]", "scheduled_for": at})
}

/// Waits until `user` has no pending scheduled message (delivered or dropped).
async fn wait_until_nothing_pending(app: &TestApp, user: &TestUser) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = app.get("/messages/scheduled", &user.token).await.expect(200);
        if pending.as_array().unwrap().is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "scheduled message still pending: {pending}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn message_count(app: &TestApp, user: &TestUser, channel: Uuid) -> usize {
    let history = app.get(&format!("/channels/{channel}/messages?limit=100"), &user.token).await.expect(200);
    history.as_array().unwrap().len()
}

/// A multipart upload to `path` (the web client's way).
async fn upload_form(app: &TestApp, path: &str, token: &str, form: Form) -> Reply {
    let resp =
        app.client.post(app.url(path)).bearer_auth(token).multipart(form).send().await.expect("upload sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body read");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body, headers }
}

fn file_part() -> Part {
    Part::bytes(b"hello, file".to_vec()).file_name("a.txt").mime_str("text/plain").unwrap()
}

/// Inserts `n` text messages with `payload` into `channel` straight into the database.
async fn bulk_messages(app: &TestApp, channel: Uuid, sender: Uuid, n: usize, payload: &[u8]) {
    let ids = ordered_ids(n);
    for chunk in ids.chunks(100) {
        let rows = chunk.iter().map(|id| messages::ActiveModel {
            id: Set(*id),
            channel_id: Set(channel),
            sender_id: Set(Some(sender)),
            ciphertext: Set(payload.to_vec()),
            nonce: Set(vec![7]),
            message_type: Set("text".into()),
            reply_to_id: Set(None),
            sender_key_id: Set(None),
            thread_id: Set(None),
            edited_at: Set(None),
            deleted_at: Set(None),
            quarantined_at: Set(None),
            expires_at: Set(None),
            webhook_content: Set(None),
            created_at: Set(palaver_entity::now()),
            client_nonce: Set(None),
        });
        messages::Entity::insert_many(rows).exec_without_returning(db(app)).await.expect("insert messages");
    }
    app.server.as_ref().expect("server running").state.hub.history_changed(channel);
}

// ---------------------------------------------------------------------------------------
// Item 9: the same send rules for every way content enters a channel

async fn polls_obey_timeouts_read_only_and_archived(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let (cid, _, channel) = community_with_channel(&app, alice, &[bob, carol]).await;
    new_poll(&app, bob, channel).await.expect(200);

    // Timed out: no polls (as no messages).
    time_out(&app, alice, cid, channel, bob).await;
    assert_eq!(new_poll(&app, bob, channel).await.expect_error(403), "forbidden");
    new_poll(&app, carol, channel).await.expect(200);

    // Read-only: plain members are refused, the owner is not.
    patch_channel(&app, alice, channel, json!({"read_only": true})).await;
    assert_eq!(new_poll(&app, carol, channel).await.expect_error(403), "forbidden");
    new_poll(&app, alice, channel).await.expect(200);

    // Archived: nobody posts.
    patch_channel(&app, alice, channel, json!({"read_only": false, "archived": true})).await;
    assert_eq!(new_poll(&app, carol, channel).await.expect_error(403), "forbidden");
    assert_eq!(new_poll(&app, alice, channel).await.expect_error(403), "forbidden");
    app.stop().await;
}

async fn webhooks_obey_read_only_and_archived(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let hook = new_webhook(&app, alice, channel).await;
    execute(&app, &hook).await.expect(200);

    patch_channel(&app, alice, channel, json!({"read_only": true})).await;
    assert_eq!(execute(&app, &hook).await.expect_error(403), "forbidden", "read-only refuses webhooks");
    patch_channel(&app, alice, channel, json!({"read_only": false, "archived": true})).await;
    assert_eq!(execute(&app, &hook).await.expect_error(403), "forbidden", "archived refuses webhooks");
    patch_channel(&app, alice, channel, json!({"archived": false})).await;
    execute(&app, &hook).await.expect(200);
    assert_eq!(message_count(&app, bob, channel).await, 2, "only the two allowed executions were stored");
    app.stop().await;
}

async fn webhooks_stop_when_their_creator_loses_the_right(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "dave"]).await;
    let (alice, bob, carol, dave) = (&u[0], &u[1], &u[2], &u[3]);

    // Lost the right to manage webhooks: ownership transferred away.
    let channel = channel_with(&app, alice, &[bob]).await;
    let hook = new_webhook(&app, alice, channel).await;
    execute(&app, &hook).await.expect(200);
    let transfer = format!("/channels/{channel}/transfer-ownership");
    app.post(&transfer, &alice.token, json!({"new_owner_id": bob.id})).await.expect(200);
    assert_eq!(execute(&app, &hook).await.expect_error(403), "forbidden", "creator demoted");

    // Kicked: the creator was removed from the community (and so from its channels).
    let (cid, _, kicked_channel) = community_with_channel(&app, alice, &[carol]).await;
    let transfer = format!("/channels/{kicked_channel}/transfer-ownership");
    app.post(&transfer, &alice.token, json!({"new_owner_id": carol.id})).await.expect(200);
    let carols = new_webhook(&app, carol, kicked_channel).await;
    execute(&app, &carols).await.expect(200);
    app.delete(&format!("/communities/{cid}/members/{}", carol.id), &alice.token).await.expect(200);
    assert_eq!(execute(&app, &carols).await.expect_error(403), "forbidden", "creator kicked");

    // Left: the creator left the community.
    let (cid, _, left_channel) = community_with_channel(&app, alice, &[dave]).await;
    let transfer = format!("/channels/{left_channel}/transfer-ownership");
    app.post(&transfer, &alice.token, json!({"new_owner_id": dave.id})).await.expect(200);
    let daves = new_webhook(&app, dave, left_channel).await;
    execute(&app, &daves).await.expect(200);
    app.post(&format!("/communities/{cid}/leave"), &dave.token, json!({})).await.expect(200);
    assert_eq!(execute(&app, &daves).await.expect_error(403), "forbidden", "creator left");
    app.stop().await;
}

async fn scheduled_messages_obey_the_rules_when_scheduled_and_delivered(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let (cid, _, channel) = community_with_channel(&app, alice, &[bob, carol]).await;

    // Timed out after scheduling: not posted at delivery; timed out already: refused at once.
    app.post("/messages/schedule", &bob.token, schedule_body(channel, &in_secs(3))).await.expect(200);
    time_out(&app, alice, cid, channel, bob).await;
    let refused = app.post("/messages/schedule", &bob.token, schedule_body(channel, &in_secs(60))).await;
    assert_eq!(refused.expect_error(403), "forbidden");
    wait_until_nothing_pending(&app, bob).await;
    assert_eq!(message_count(&app, alice, channel).await, 0, "a timed-out sender's message is not posted");

    // Banned after scheduling: not posted.
    app.post("/messages/schedule", &carol.token, schedule_body(channel, &in_secs(3))).await.expect(200);
    let ban = format!("/communities/{cid}/bans/{}", carol.id);
    app.post(&ban, &alice.token, json!({"reason": "spam"})).await.expect(200);
    wait_until_nothing_pending(&app, carol).await;
    assert_eq!(message_count(&app, alice, channel).await, 0, "a banned sender's message is not posted");

    // Read-only: a plain member cannot schedule there.
    patch_channel(&app, alice, channel, json!({"read_only": true})).await;
    let b = app.register("bea").await;
    join(&app, alice, cid, &b).await;
    let refused = app.post("/messages/schedule", &b.token, schedule_body(channel, &in_secs(60))).await;
    assert_eq!(refused.expect_error(403), "forbidden");
    app.stop().await;
}

async fn files_into_a_channel_obey_the_rules(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let (cid, _, channel) = community_with_channel(&app, alice, &[bob]).await;
    let form = || Form::new().text("channel_id", channel.to_string()).part("file", file_part());
    upload_form(&app, "/files/upload", &bob.token, form()).await.expect(200);
    time_out(&app, alice, cid, channel, bob).await;
    assert_eq!(upload_form(&app, "/files/upload", &bob.token, form()).await.expect_error(403), "forbidden");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Item 10: repeated or unknown form parts

async fn uploads_refuse_repeated_and_unknown_parts(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let channel = channel_with(&app, alice, &[]).await;
    let id = channel.to_string();

    let mut repeated = Form::new();
    for _ in 0..50 {
        repeated = repeated.text("channel_id", id.clone());
    }
    let repeated = repeated.part("file", file_part());
    let reply = upload_form(&app, "/files/upload", &alice.token, repeated).await;
    assert_eq!(reply.expect_error(400), "validation_error");

    let unknown_channel =
        Form::new().text("channel_id", Uuid::now_v7().to_string()).part("file", file_part());
    assert_eq!(
        upload_form(&app, "/files/upload", &alice.token, unknown_channel).await.expect_error(404),
        "not_found"
    );
    let unknown_field = Form::new().text("colour", "blue").part("file", file_part());
    assert_eq!(
        upload_form(&app, "/files/upload", &alice.token, unknown_field).await.expect_error(400),
        "validation_error"
    );
    let two_names = Form::new().text("name", "a").text("name", "b").part("file", file_part());
    assert_eq!(
        upload_form(&app, "/files/upload", &alice.token, two_names).await.expect_error(400),
        "validation_error"
    );
    let two_files = Form::new().part("file", file_part()).part("file", file_part());
    assert_eq!(
        upload_form(&app, "/files/upload", &alice.token, two_files).await.expect_error(400),
        "validation_error"
    );
    // The other multipart routes: a repeated part is refused too.
    let png = || Part::bytes(vec![0x89, b'P', b'N', b'G']).file_name("a.png").mime_str("image/png").unwrap();
    let two_avatars = Form::new().part("avatar", png()).part("avatar", png());
    assert_eq!(
        upload_form(&app, "/account/avatar", &alice.token, two_avatars).await.expect_error(400),
        "validation_error"
    );
    // A well-formed upload still works.
    let good = Form::new().text("name", "n").text("channel_id", id).part("file", file_part());
    upload_form(&app, "/files/upload", &alice.token, good).await.expect(200);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Item 6 (blobs): every client-supplied blob has a maximum

async fn oversize_client_blobs_are_refused(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let (cid, _, channel) = community_with_channel(&app, alice, &[bob]).await;
    let big = |n: usize| "x".repeat(n);
    let msg_id = Uuid::now_v7();

    // A sender-key distribution is broadcast to every subscriber: 16 KiB at most.
    let keys = format!("/channels/{channel}/sender-keys");
    app.post(&keys, &bob.token, json!({"chain_id": 1, "distribution": {"k": big(1000)}})).await.expect(200);

    let cases: Vec<(&str, String, Value)> = vec![
        (
            "sender key",
            keys.clone(),
            json!({"chain_id": 1, "distribution": {"k": big(2 * 1024 * 1024 - 100)}}),
        ),
        ("sender key 17 KiB", keys.clone(), json!({"chain_id": 1, "distribution": big(17 * 1024)})),
        (
            "poll question",
            format!("/channels/{channel}/polls"),
            json!({"question": big(501), "options": ["a", "b"]}),
        ),
        (
            "poll option",
            format!("/channels/{channel}/polls"),
            json!({"question": "q", "options": ["a", big(201)]}),
        ),
        ("webhook name", format!("/channels/{channel}/webhooks"), json!({"name": big(65)})),
        (
            "webhook avatar",
            format!("/channels/{channel}/webhooks"),
            json!({"name": "n", "avatar_url": format!("https://e.com/{}", big(3000))}),
        ),
        (
            "scheduled ciphertext",
            "/messages/schedule".into(),
            json!({"channel_id": channel, "ciphertext": big(100_001), "nonce": "[1]", "scheduled_for": in_secs(60)}),
        ),
        (
            "scheduled preview",
            "/messages/schedule".into(),
            json!({"channel_id": channel, "ciphertext": "[1]", "nonce": "[1]", "scheduled_for": in_secs(60), "content_preview": big(10_001)}),
        ),
        ("bookmark note", "/bookmarks".into(), json!({"message_id": msg_id, "note": big(501)})),
        (
            "report reason",
            "/reports".into(),
            json!({"report_type": "message", "target_id": msg_id, "reason": big(2001)}),
        ),
        ("community name", "/communities".into(), json!({"name": big(65)})),
        ("community description", "/communities".into(), json!({"name": "n", "description": big(2049)})),
        ("group name", "/groups".into(), json!({"community_id": cid, "name": big(65)})),
        ("channel name", "/channels".into(), json!({"name": big(65), "channel_type": "text"})),
        (
            "channel topic",
            "/channels".into(),
            json!({"name": "n", "channel_type": "text", "topic": big(513)}),
        ),
        (
            "push endpoint",
            "/push/subscribe".into(),
            json!({"endpoint": format!("https://e.com/{}", big(5000)), "p256dh_key": "k", "auth_key": "a"}),
        ),
        (
            "push unsubscribe",
            "/push/unsubscribe".into(),
            json!({"endpoint": format!("https://e.com/{}", big(5000))}),
        ),
        (
            "one-time prekeys",
            "/keys/prekeys/one-time".into(),
            json!((0..201).map(|i| json!({"key_id": i, "public_key": vec![0u8; 32]})).collect::<Vec<_>>()),
        ),
    ];
    for (what, path, body) in cases {
        let reply = app.post(&path, &alice.token, body).await;
        let status = reply.status.as_u16();
        assert!(matches!(status, 400 | 413), "{what}: expected 400/413, got {status}: {}", reply.body);
        if status == 400 {
            assert_eq!(reply.body["code"], "validation_error", "{what}");
        }
    }
    let patches: Vec<(&str, String, Value)> = vec![
        ("custom status", "/account/profile".into(), json!({"custom_status": big(129)})),
        ("bio", "/account/profile".into(), json!({"bio": big(501)})),
        ("community welcome", format!("/communities/{cid}"), json!({"welcome_message": big(2001)})),
        ("channel topic", format!("/channels/{channel}"), json!({"topic": big(513)})),
    ];
    for (what, path, body) in patches {
        let reply = app.patch(&path, &alice.token, body).await;
        assert_eq!(reply.expect_error(400), "validation_error", "{what}");
    }
    let prefs = json!({"preferences": {"blob": big(70_000)}});
    assert_eq!(
        app.put("/account/preferences", &alice.token, prefs).await.expect_error(400),
        "validation_error"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Item 4: search budget, per-user limit, health while searching

async fn search_past_its_budget_says_it_was_cut_short(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.search.max_rows = 300).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let channel = channel_with(&app, alice, &[]).await;
    bulk_messages(&app, channel, alice.id, 1, b"the needle is here").await;
    bulk_messages(&app, channel, alice.id, 700, b"just hay").await;

    for path in
        [format!("/channels/{channel}/messages/search?q=needle"), "/messages/search?q=needle".to_string()]
    {
        let reply = app.get(&path, &alice.token).await;
        assert_eq!(reply.headers["x-search-truncated"], "true", "{path}");
        let scanned: usize = reply.headers["x-search-scanned"].to_str().unwrap().parse().unwrap();
        assert!((300..=400).contains(&scanned), "scanned {scanned}");
        assert_eq!(reply.expect(200), json!([]), "the match lies past the budget");
    }
    // Within the budget: complete, and said so.
    let reply = app.get(&format!("/channels/{channel}/messages/search?q=hay&limit=5"), &alice.token).await;
    assert_eq!(reply.headers["x-search-truncated"], "false");
    assert_eq!(reply.expect(200).as_array().unwrap().len(), 5);
    app.stop().await;
}

async fn third_concurrent_search_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.search_hold_for_tests = Duration::from_secs(5)).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{channel}/messages/search?q=hello");

    // Each search holds its slot for 5 s, so three sent together overlap: one is refused.
    let search = |user: &TestUser| {
        let token = user.token.clone();
        let path = path.clone();
        let app = &app;
        async move { app.get(&path, &token).await }
    };
    let (a, b, c, other) = tokio::join!(search(alice), search(alice), search(alice), search(bob));
    let mut statuses: Vec<u16> = [&a, &b, &c].iter().map(|r| r.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429], "two searches at once per user");
    let refused = [a, b, c].into_iter().find(|r| r.status.as_u16() == 429).unwrap();
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(refused.expect_error(429), "rate_limited");
    other.expect(200);
    // Slots are given back: searching works again.
    app.get(&path, &alice.token).await.expect(200);
    app.stop().await;
}

async fn health_answers_while_searches_run(backend: Backend) {
    let app = spawn_app(backend).await;
    let names: Vec<String> = (0..4).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_root, u) = users(&app, &refs).await;
    let others: Vec<&TestUser> = u[1..].iter().collect();
    let channel = channel_with(&app, &u[0], &others).await;
    bulk_messages(&app, channel, u[0].id, 3000, &[b'a'; 4096]).await;
    let path = format!("/channels/{channel}/messages/search?q=zz");

    let (app_ref, path) = (&app, &path);
    let searches = futures_util::future::join_all(
        u.iter()
            .flat_map(|user| [user, user])
            .map(|user| async move { app_ref.get(path, &user.token).await.status.as_u16() }),
    );
    let health = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..5 {
            let reply = tokio::time::timeout(Duration::from_secs(10), app.get_public("/health")).await;
            reply.expect("health answered while searches run").expect(200);
        }
    };
    let (statuses, ()) = tokio::join!(searches, health);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Also: discoverable by default

async fn invite_preview_of_a_default_community_shows_its_name(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let c = app
        .post("/communities", &alice.token, json!({"name": "Garden", "description": "d"}))
        .await
        .expect(200);
    assert_eq!(c["discoverable"], true);
    let cid: Uuid = c["id"].as_str().unwrap().parse().unwrap();
    let code = invite(&app, alice, cid).await;
    let preview = app.get(&format!("/community-invites/{code}"), &bob.token).await.expect(200);
    assert_eq!(preview["community_name"], "Garden");
    assert_eq!(preview["community_description"], "d");
    // Saying so still creates a private one.
    let c = app
        .post("/communities", &alice.token, json!({"name": "Hidden", "discoverable": false}))
        .await
        .expect(200);
    assert_eq!(c["discoverable"], false);
    let cid: Uuid = c["id"].as_str().unwrap().parse().unwrap();
    let code = invite(&app, alice, cid).await;
    let preview = app.get(&format!("/community-invites/{code}"), &bob.token).await.expect(200);
    assert_eq!(preview["community_name"], "Private Community");
    app.stop().await;
}

crate::both_backends!(
    polls_obey_timeouts_read_only_and_archived,
    webhooks_obey_read_only_and_archived,
    webhooks_stop_when_their_creator_loses_the_right,
    scheduled_messages_obey_the_rules_when_scheduled_and_delivered,
    files_into_a_channel_obey_the_rules,
    uploads_refuse_repeated_and_unknown_parts,
    oversize_client_blobs_are_refused,
    search_past_its_budget_says_it_was_cut_short,
    third_concurrent_search_is_refused,
    health_answers_while_searches_run,
    invite_preview_of_a_default_community_shows_its_name,
);
