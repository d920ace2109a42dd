//! `/push/*`: no VAPID key (Web Push not offered yet), subscriptions stored per (user, endpoint).

use palaver_entity::push_subscriptions;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, TestApp, spawn_app};

async fn subscriptions_of(app: &TestApp, user: Uuid) -> Vec<push_subscriptions::Model> {
    push_subscriptions::Entity::find()
        .filter(push_subscriptions::Column::UserId.eq(user))
        .order_by_asc(push_subscriptions::Column::Endpoint)
        .all(db(app))
        .await
        .unwrap()
}

fn sub(endpoint: &str, p256dh: &str, auth: &str) -> Value {
    json!({"endpoint": endpoint, "p256dh_key": p256dh, "auth_key": auth})
}

async fn vapid_key_is_not_configured(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.get_public("/push/vapid-key").await;
    assert_eq!(reply.status.as_u16(), 404);
    assert!(reply.body.is_null(), "empty body, got {}", reply.body);
    app.stop().await;
}

async fn subscribe_upserts_and_unsubscribe_removes(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let endpoint = "https://push.example.com/send/abc";

    let reply = app.post("/push/subscribe", &alice.token, sub(endpoint, "p1", "a1")).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert!(reply.body.is_null());
    let subs = subscriptions_of(&app, alice.id).await;
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].endpoint.as_str(), subs[0].p256dh_key.as_str(), subs[0].auth_key.as_str()),
        (endpoint, "p1", "a1")
    );

    // Same endpoint again: keys updated, still one row.
    assert_eq!(
        app.post("/push/subscribe", &alice.token, sub(endpoint, "p2", "a2")).await.status.as_u16(),
        204
    );
    let subs = subscriptions_of(&app, alice.id).await;
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].p256dh_key.as_str(), subs[0].auth_key.as_str()), ("p2", "a2"));
    // Another endpoint of alice, and the same endpoint for bob, are separate.
    let other = "https://push.example.com/send/def";
    assert_eq!(app.post("/push/subscribe", &alice.token, sub(other, "p3", "a3")).await.status.as_u16(), 204);
    assert_eq!(app.post("/push/subscribe", &bob.token, sub(endpoint, "pb", "ab")).await.status.as_u16(), 204);
    assert_eq!(subscriptions_of(&app, alice.id).await.len(), 2);
    assert_eq!(subscriptions_of(&app, bob.id).await.len(), 1);

    let reply = app.post("/push/unsubscribe", &alice.token, json!({"endpoint": endpoint})).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert!(reply.body.is_null());
    let subs = subscriptions_of(&app, alice.id).await;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].endpoint, other);
    assert_eq!(
        subscriptions_of(&app, bob.id).await.len(),
        1,
        "bob's subscription to the same endpoint stays"
    );
    // Unknown endpoint: nothing to do, still 204.
    let reply = app.post("/push/unsubscribe", &alice.token, json!({"endpoint": endpoint})).await;
    assert_eq!(reply.status.as_u16(), 204);
    app.stop().await;
}

async fn bad_subscriptions_are_refused_and_not_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let long = format!("https://push.example.com/{}", "a".repeat(2049 - 25));
    assert_eq!(long.len(), 2049);
    let bodies = [
        sub("http://push.example.com/x", "p", "a"),
        sub("push.example.com/x", "p", "a"),
        sub(&long, "p", "a"),
        sub("https://push.example.com/x", "", "a"),
        sub("https://push.example.com/x", "p", "  "),
        json!({"endpoint": "https://push.example.com/x", "p256dh_key": "p"}),
    ];
    for body in bodies {
        let code = app.post("/push/subscribe", &alice.token, body.clone()).await.expect_error(400);
        assert_eq!(code, "validation_error", "{body}");
    }
    assert_eq!(
        app.post("/push/unsubscribe", &alice.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert!(subscriptions_of(&app, alice.id).await.is_empty(), "nothing stored");
    let ok = format!("https://push.example.com/{}", "a".repeat(2048 - 25));
    assert_eq!(app.post("/push/subscribe", &alice.token, sub(&ok, "p", "a")).await.status.as_u16(), 204);
    app.stop().await;
}

async fn push_subscriptions_need_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let body = sub("https://push.example.com/x", "p", "a");
    let reply = app.request(reqwest::Method::POST, "/push/subscribe", None, Some(body.clone())).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let reply =
        app.request(reqwest::Method::POST, "/push/subscribe", Some("garbage"), Some(body.clone())).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert!(push_subscriptions::Entity::find().all(db(&app)).await.unwrap().is_empty());

    app.post("/push/subscribe", &alice.token, body).await;
    let reply = app
        .request(
            reqwest::Method::POST,
            "/push/unsubscribe",
            None,
            Some(json!({"endpoint": "https://push.example.com/x"})),
        )
        .await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert_eq!(subscriptions_of(&app, alice.id).await.len(), 1, "still subscribed");
    app.stop().await;
}

crate::both_backends!(
    vapid_key_is_not_configured,
    subscribe_upserts_and_unsubscribe_removes,
    bad_subscriptions_are_refused_and_not_stored,
    push_subscriptions_need_a_token,
);
