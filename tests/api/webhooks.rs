//! Webhooks: management by the channel's owner only, the token shown once and stored hashed,
//! execution (public, rate-limited per token) posting a `webhook` message that subscribers
//! receive live and history returns with its content.

use palaver_entity::webhooks;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_with, db, live, send_text, users};
use crate::common::{Backend, TestApp, TestUser, spawn_app, spawn_app_with};

async fn create(app: &TestApp, owner: &TestUser, channel: Uuid, name: &str) -> Value {
    app.post(
        &format!("/channels/{channel}/webhooks"),
        &owner.token,
        json!({"name": name, "avatar_url": "https://example.com/bot.png"}),
    )
    .await
    .expect(200)
}

fn execute_path(hook: &Value) -> String {
    format!("/webhooks/execute/{}", hook["token"].as_str().expect("token in create response"))
}

async fn owner_manages_webhooks_and_others_cannot(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{channel}/webhooks");

    let hook = create(&app, alice, channel, "  CI bot ").await;
    assert_eq!(hook["name"], "CI bot");
    assert_eq!(hook["channel_id"], channel.to_string());
    assert_eq!(hook["active"], true);
    assert_eq!(hook["avatar_url"], "https://example.com/bot.png");
    assert!(hook["created_at"].is_string());
    let token = hook["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    // Stored hashed: the database never holds the token itself.
    let row = webhooks::Entity::find_by_id(hook["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .one(db(&app))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(row.token_hash, token);
    assert_eq!(row.created_by, Some(alice.id));
    let stored_raw =
        webhooks::Entity::find().filter(webhooks::Column::TokenHash.eq(token.clone())).one(db(&app));
    assert!(stored_raw.await.unwrap().is_none());

    // Listing: owner only, oldest first, never the token.
    create(&app, alice, channel, "second").await;
    let list = app.get(&path, &alice.token).await.expect(200);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["CI bot", "second"]);
    assert!(list.as_array().unwrap().iter().all(|h| h.get("token").is_none()));

    // Member, non-member and the instance owner (no bypass) are refused; no token is 401.
    for user in [bob, carol, &root] {
        let body = json!({"name": "x"});
        assert_eq!(app.post(&path, &user.token, body).await.expect_error(403), "forbidden");
        assert_eq!(app.get(&path, &user.token).await.expect_error(403), "forbidden");
    }
    let anonymous = app.request(reqwest::Method::GET, &path, None, None).await;
    assert_eq!(anonymous.expect_error(401), "unauthorized");

    // Bad input.
    for body in
        [json!({"name": " "}), json!({"name": "x".repeat(65)}), json!({"name": "x", "avatar_url": "ftp://x"})]
    {
        assert_eq!(app.post(&path, &alice.token, body).await.expect_error(400), "validation_error");
    }
    let unknown = format!("/channels/{}/webhooks", Uuid::now_v7());
    assert_eq!(app.post(&unknown, &alice.token, json!({"name": "x"})).await.expect_error(404), "not_found");
    let malformed = app.post("/channels/not-a-uuid/webhooks", &alice.token, json!({"name": "x"})).await;
    assert_eq!(malformed.expect_error(400), "validation_error");

    // Update: owner only; unknown 404; bad name 400; null avatar = unchanged.
    let hook_path = format!("/webhooks/{}", hook["id"].as_str().unwrap());
    let updated = app
        .patch(&hook_path, &alice.token, json!({"name": "Deploys", "avatar_url": null, "active": false}))
        .await
        .expect(200);
    assert_eq!((updated["name"].as_str(), updated["active"].as_bool()), (Some("Deploys"), Some(false)));
    assert_eq!(updated["avatar_url"], "https://example.com/bot.png");
    assert!(updated.get("token").is_none());
    assert_eq!(
        app.patch(&hook_path, &bob.token, json!({"name": "mine"})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.patch(&hook_path, &alice.token, json!({"name": ""})).await.expect_error(400),
        "validation_error"
    );
    let unknown_hook = format!("/webhooks/{}", Uuid::now_v7());
    assert_eq!(
        app.patch(&unknown_hook, &alice.token, json!({"name": "x"})).await.expect_error(404),
        "not_found"
    );
    let listed = app.get(&path, &alice.token).await.expect(200);
    assert_eq!(listed[0]["name"], "Deploys");
    assert_eq!(listed[0]["active"], false);

    // An inactive webhook cannot be executed; deleting removes it for good.
    let run = app.post_public(&format!("/webhooks/execute/{token}"), json!({"content": "hi"})).await;
    assert_eq!(run.expect_error(404), "not_found");
    assert_eq!(app.delete(&hook_path, &bob.token).await.expect_error(403), "forbidden");
    app.delete(&hook_path, &alice.token).await.expect(200);
    assert_eq!(app.delete(&hook_path, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&path, &alice.token).await.expect(200).as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn executed_message_arrives_live_and_in_history_with_its_content(backend: Backend) {
    let app =
        spawn_app_with(backend, |c| c.webhook_rate_limit = palaver::config::RateLimit::new(100, 100)).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let hook = create(&app, alice, channel, "CI").await;
    let mut bob_ws = live(&app, bob, channel).await;
    let mut alice_ws = live(&app, alice, channel).await;

    let sent = send_text(&mut bob_ws, channel, "before").await;
    alice_ws.expect("new_message").await;
    let reply = app
        .post_public(&execute_path(&hook), json!({"content": "build #7 passed", "username": "Jenkins"}))
        .await;
    assert_eq!(reply.expect(200), Value::Null, "200 with an empty body");

    // Live: sender is the webhook's creator, payload placeholders, type webhook — to every
    // subscriber, the creator's own sessions included (no socket sent it).
    for ws in [&mut bob_ws, &mut alice_ws] {
        let frame = ws.expect("new_message").await;
        assert_eq!(frame["message_type"], "webhook");
        assert_eq!(frame["sender_id"], alice.id.to_string());
        assert_eq!(frame["channel_id"], channel.to_string());
        assert_eq!(frame["ciphertext"], json!([0]));
        assert_eq!(frame["nonce"], json!([0]));
        assert!(frame["reply_to"].is_null() && frame["created_at"].is_string());
    }

    // History: newest first, after the socket message, no sender, with the content.
    let history = app.get(&format!("/channels/{channel}/messages"), &bob.token).await.expect(200);
    assert_eq!(history[1]["id"], sent["id"]);
    let message = &history[0];
    assert_eq!(message["message_type"], "webhook");
    assert!(message["sender_id"].is_null());
    assert_eq!(message["content"], "build #7 passed");
    assert_eq!(message["webhook_name"], "Jenkins");
    assert_eq!(message["webhook_avatar"], "https://example.com/bot.png");
    assert_eq!(message["ciphertext"], json!([0]));

    // Without overrides the webhook's own name is used.
    app.post_public(&execute_path(&hook), json!({"content": "plain"})).await.expect(200);
    bob_ws.expect("new_message").await;
    let history = app.get(&format!("/channels/{channel}/messages?limit=1"), &bob.token).await.expect(200);
    assert_eq!(
        (history[0]["content"].as_str(), history[0]["webhook_name"].as_str()),
        (Some("plain"), Some("CI"))
    );

    // Bad input and unknown tokens.
    for body in [
        json!({"content": ""}),
        json!({"content": "x".repeat(4001)}),
        json!({"content": "x", "username": "u".repeat(65)}),
        json!({"content": "x", "avatar_url": "javascript:alert(1)"}),
        json!({}),
    ] {
        assert_eq!(app.post_public(&execute_path(&hook), body).await.expect_error(400), "validation_error");
    }
    let unknown = format!("/webhooks/execute/{}", "a".repeat(64));
    assert_eq!(app.post_public(&unknown, json!({"content": "x"})).await.expect_error(404), "not_found");
    assert_eq!(
        app.post_public("/webhooks/execute/short", json!({"content": "x"})).await.expect_error(404),
        "not_found"
    );
    let history = app.get(&format!("/channels/{channel}/messages"), &bob.token).await.expect(200);
    assert_eq!(history.as_array().unwrap().len(), 3, "refused executions store nothing");
    app.stop().await;
}

async fn execution_is_rate_limited_per_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let channel = channel_with(&app, alice, &[]).await;
    let first = create(&app, alice, channel, "one").await;
    let second = create(&app, alice, channel, "two").await;

    app.post_public(&execute_path(&first), json!({"content": "1"})).await.expect(200);
    let limited = app.post_public(&execute_path(&first), json!({"content": "2"})).await;
    assert_eq!(limited.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(limited.expect_error(429), "rate_limited");
    // Another token has its own bucket.
    app.post_public(&execute_path(&second), json!({"content": "3"})).await.expect(200);
    // The bucket refills.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.post_public(&execute_path(&first), json!({"content": "4"})).await.expect(200);
    let history = app.get(&format!("/channels/{channel}/messages"), &alice.token).await.expect(200);
    let contents: Vec<&str> =
        history.as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["4", "3", "1"]);
    app.stop().await;
}

crate::both_backends!(
    owner_manages_webhooks_and_others_cannot,
    executed_message_arrives_live_and_in_history_with_its_content,
    execution_is_rate_limited_per_token,
);
