//! Scheduled messages: schedule / list own / cancel, and delivery owned by the server —
//! live on time, exactly once, and after a restart for messages that fell due while down.

use std::time::Duration;

use palaver_entity::{messages, scheduled_messages};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Database, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_with, db, expect_quiet, live, users};
use crate::common::{Backend, TestApp, TestUser, spawn_app};

fn in_secs(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

async fn schedule(app: &TestApp, user: &TestUser, channel: Uuid, at: &str, text: &str) -> Value {
    app.post(
        "/messages/schedule",
        &user.token,
        json!({
            "channel_id": channel,
            "ciphertext": serde_json::to_string(text.as_bytes()).unwrap(),
            "nonce": "[9,9]",
            "scheduled_for": at,
            "content_preview": "preview",
        }),
    )
    .await
    .expect(200)
}

/// The channel's messages, oldest first, as their payload text.
async fn texts(app: &TestApp, user: &TestUser, channel: Uuid) -> Vec<String> {
    let history = app.get(&format!("/channels/{channel}/messages?limit=100"), &user.token).await.expect(200);
    let mut out: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let bytes: Vec<u8> = serde_json::from_value(m["ciphertext"].clone()).unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    out.reverse();
    out
}

/// Waits until the channel holds `n` messages (delivery is asynchronous).
async fn wait_for_messages(app: &TestApp, user: &TestUser, channel: Uuid, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = texts(app, user, channel).await;
        if found.len() >= n || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn schedule_list_cancel_and_refusals(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let channel = channel_with(&app, alice, &[bob]).await;

    let later = schedule(&app, alice, channel, &in_secs(7200), "later").await;
    let sooner = schedule(&app, alice, channel, &in_secs(3600), "sooner").await;
    assert_eq!(sooner["channel_id"], channel.to_string());
    assert_eq!(sooner["content_preview"], "preview");
    assert!(sooner["scheduled_for"].is_string() && sooner["created_at"].is_string());
    let plain = app
        .post(
            "/messages/schedule",
            &bob.token,
            json!({"channel_id": channel, "ciphertext": "raw text", "nonce": "n", "scheduled_for": in_secs(60)}),
        )
        .await
        .expect(200);
    assert!(plain.get("content_preview").is_none(), "omitted when null: {plain}");

    // Own pending messages only, soonest first.
    let list = app.get("/messages/scheduled", &alice.token).await.expect(200);
    let ids: Vec<&Value> = list.as_array().unwrap().iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&sooner["id"], &later["id"]]);
    assert_eq!(app.get("/messages/scheduled", &bob.token).await.expect(200).as_array().unwrap().len(), 1);

    // Cancel: someone else's is 404, own works once.
    let cancel = format!("/messages/scheduled/{}", later["id"].as_str().unwrap());
    assert_eq!(app.delete(&cancel, &bob.token).await.expect_error(404), "not_found");
    app.delete(&cancel, &alice.token).await.expect(200);
    assert_eq!(app.delete(&cancel, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(
        app.delete("/messages/scheduled/xyz", &alice.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.get("/messages/scheduled", &alice.token).await.expect(200).as_array().unwrap().len(), 1);

    // Refusals.
    let body = |at: String, ciphertext: &str| json!({"channel_id": channel, "ciphertext": ciphertext, "nonce": "[1]", "scheduled_for": at});
    for bad in [
        body(in_secs(-5), "[1]"),
        body(in_secs(31 * 86_400), "[1]"),
        body("next tuesday".into(), "[1]"),
        body(in_secs(60), ""),
        body(in_secs(60), &"1".repeat(100_001)),
        json!({"channel_id": channel, "ciphertext": "[1]", "nonce": "", "scheduled_for": in_secs(60)}),
        json!({"channel_id": channel, "ciphertext": "[1]", "nonce": "[1]", "scheduled_for": in_secs(60), "content_preview": "p".repeat(10_001)}),
        json!({"ciphertext": "[1]", "nonce": "[1]", "scheduled_for": in_secs(60)}),
    ] {
        assert_eq!(
            app.post("/messages/schedule", &alice.token, bad).await.expect_error(400),
            "validation_error"
        );
    }
    assert_eq!(
        app.post("/messages/schedule", &carol.token, body(in_secs(60), "[1]")).await.expect_error(403),
        "forbidden"
    );
    let unknown = json!({"channel_id": Uuid::now_v7(), "ciphertext": "[1]", "nonce": "[1]", "scheduled_for": in_secs(60)});
    assert_eq!(app.post("/messages/schedule", &alice.token, unknown).await.expect_error(404), "not_found");
    let anonymous = app.request(reqwest::Method::GET, "/messages/scheduled", None, None).await;
    assert_eq!(anonymous.expect_error(401), "unauthorized");

    // At most 50 pending per user.
    for i in 0..49 {
        schedule(&app, alice, channel, &in_secs(3600 + i), "filler").await;
    }
    let over = app.post("/messages/schedule", &alice.token, body(in_secs(60), "[1]")).await;
    assert_eq!(over.expect_error(400), "validation_error");
    app.stop().await;
}

async fn due_message_is_delivered_live_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let mut bob_ws = live(&app, bob, channel).await;
    let mut alice_ws = live(&app, alice, channel).await;

    let scheduled = schedule(&app, alice, channel, &in_secs(1), "hi").await;
    let started = std::time::Instant::now();
    // Delivered as alice's message, live to everyone subscribed (her own sessions too: no
    // socket sent it, so there is no `message_sent`).
    for ws in [&mut bob_ws, &mut alice_ws] {
        let frame = ws.expect("new_message").await;
        assert_eq!(frame["sender_id"], alice.id.to_string());
        assert_eq!(frame["ciphertext"], json!(b"hi".to_vec()));
        assert_eq!(frame["nonce"], json!([9, 9]));
        assert_eq!(frame["message_type"], "text");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "delivered about on time: {:?}", started.elapsed());
    expect_quiet(&mut alice_ws, Duration::from_millis(300)).await;

    assert_eq!(texts(&app, bob, channel).await, ["hi"]);
    let history = app.get(&format!("/channels/{channel}/messages"), &bob.token).await.expect(200);
    assert_eq!(history[0]["sender_id"], alice.id.to_string());
    assert_eq!(app.get("/messages/scheduled", &alice.token).await.expect(200), json!([]));
    let cancel = format!("/messages/scheduled/{}", scheduled["id"].as_str().unwrap());
    assert_eq!(app.delete(&cancel, &alice.token).await.expect_error(404), "not_found", "delivered is final");
    expect_quiet(&mut bob_ws, Duration::from_millis(500)).await;
    app.stop().await;
}

async fn due_while_down_is_delivered_on_start_exactly_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (u[0].clone(), u[1].clone());
    let channel = channel_with(&app, &alice, &[&bob]).await;
    for text in ["one", "two", "three"] {
        schedule(&app, &alice, channel, &in_secs(3600), text).await;
    }
    // Bob schedules, then leaves the channel: his message must be dropped, not delivered.
    schedule(&app, &bob, channel, &in_secs(3600), "ghost").await;
    app.post(&format!("/channels/{channel}/leave"), &bob.token, json!({})).await.expect(200);

    // While the server is down, every message falls due.
    app.stop_server().await;
    let direct = Database::connect(&app.config.database_url).await.expect("database reachable");
    scheduled_messages::Entity::update_many()
        .col_expr(
            scheduled_messages::Column::ScheduledFor,
            Expr::value(palaver_entity::now() - chrono::Duration::minutes(5)),
        )
        .exec(&direct)
        .await
        .unwrap();
    direct.close().await.ok();

    // Two servers start on the same database at once: each message still arrives once.
    let mut config = app.config.clone();
    config.bind = "127.0.0.1:0".parse().unwrap();
    let (second, ()) = tokio::join!(palaver::serve(config), app.start_again());
    let second = second.expect("second server starts");
    let delivered = wait_for_messages(&app, &alice, channel, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.shutdown().await;
    let mut delivered_sorted = texts(&app, &alice, channel).await;
    assert_eq!(delivered_sorted.len(), 3, "exactly once each: {delivered:?}");
    delivered_sorted.sort();
    assert_eq!(delivered_sorted, ["one", "three", "two"]);

    // Nothing is pending any more, and another restart delivers nothing again.
    assert_eq!(app.get("/messages/scheduled", &alice.token).await.expect(200), json!([]));
    assert_eq!(app.get("/messages/scheduled", &bob.token).await.expect(200), json!([]));
    app.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = messages::Entity::find()
        .filter(messages::Column::ChannelId.eq(channel))
        .count(db(&app))
        .await
        .unwrap();
    assert_eq!(count, 3);
    let undelivered = scheduled_messages::Entity::find()
        .filter(scheduled_messages::Column::DeliveredAt.is_null())
        .count(db(&app))
        .await
        .unwrap();
    assert_eq!(undelivered, 0);
    app.stop().await;
}

crate::both_backends!(
    schedule_list_cancel_and_refusals,
    due_message_is_delivered_live_once,
    due_while_down_is_delivered_on_start_exactly_once,
);
