//! `/keys/*`: key bundles (one-time prekeys handed out once, also under concurrency),
//! re-registration, signed and one-time prekey uploads, the count, and `keys_low`.

use std::collections::HashSet;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use palaver_entity::{identity_keys, signed_prekeys};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, TestApp, TestUser, rand_bytes, spawn_app};

fn signed_prekey(identity: &SigningKey, key_id: i32) -> Value {
    let public: [u8; 32] = rand_bytes();
    json!({"key_id": key_id, "public_key": public.to_vec(), "signature": identity.sign(&public).to_bytes().to_vec()})
}

fn one_time(key_ids: impl IntoIterator<Item = i32>) -> Value {
    key_ids.into_iter().map(|id| json!({"key_id": id, "public_key": rand_bytes::<32>().to_vec()})).collect()
}

fn registration(identity: &SigningKey, spk_id: i32, otks: Value) -> Value {
    json!({
        "identity_key": identity.verifying_key().to_bytes().to_vec(),
        "signed_prekey": signed_prekey(identity, spk_id),
        "one_time_prekeys": otks,
    })
}

async fn count(app: &TestApp, user: &TestUser) -> u64 {
    app.get("/keys/prekeys/count", &user.token).await.expect(200)["count"].as_u64().expect("count")
}

async fn bundle(app: &TestApp, of: &TestUser, by: &TestUser) -> Value {
    app.get(&format!("/keys/{}/bundle", of.id), &by.token).await.expect(200)
}

async fn bundle_serves_keys_and_hands_out_prekeys_oldest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let identity = SigningKey::from_bytes(&rand_bytes());
    let otks = one_time([30, 10, 20]);
    let body = registration(&identity, 7, otks.clone());
    app.post("/keys/register", &alice.token, body.clone()).await.expect(200);
    assert_eq!(count(&app, &alice).await, 3);

    // Upload order is age order (not key id order).
    for (i, expected) in otks.as_array().unwrap().iter().enumerate() {
        let b = bundle(&app, &alice, &bob).await;
        assert_eq!(b["identity_key"], body["identity_key"]);
        assert_eq!(b["signed_prekey"], body["signed_prekey"]);
        assert_eq!(&b["one_time_prekey"], expected, "fetch {i}");
        assert_eq!(count(&app, &alice).await, 2 - i as u64);
    }
    let b = bundle(&app, &alice, &bob).await;
    assert!(b["one_time_prekey"].is_null(), "none left: {b}");
    assert_eq!(b["signed_prekey"], body["signed_prekey"]);
    // Anyone authenticated may fetch, including the owner.
    bundle(&app, &alice, &alice).await;
    app.stop().await;
}

async fn bundle_missing_keys_unknown_user_and_no_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let path = format!("/keys/{}/bundle", Uuid::now_v7());
    assert_eq!(app.get(&path, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get("/keys/nope/bundle", &alice.token).await.expect_error(400), "validation_error");
    let path = format!("/keys/{}/bundle", bob.id);
    assert_eq!(app.request(reqwest::Method::GET, &path, None, None).await.expect_error(401), "unauthorized");
    assert_eq!(count(&app, &bob).await, 5, "a refused fetch hands out nothing");

    // Identity key without a signed prekey → 404, and no one-time prekey is spent.
    signed_prekeys::Entity::delete_many()
        .filter(signed_prekeys::Column::UserId.eq(bob.id))
        .exec(db(&app))
        .await
        .unwrap();
    app.get(&path, &alice.token).await.expect_error(404);
    assert_eq!(count(&app, &bob).await, 5);
    // No identity key → 404.
    identity_keys::Entity::delete_by_id(alice.id).exec(db(&app)).await.unwrap();
    app.get(&format!("/keys/{}/bundle", alice.id), &bob.token).await.expect_error(404);
    assert_eq!(count(&app, &alice).await, 5);
    app.stop().await;
}

async fn concurrent_bundle_fetches_hand_out_each_prekey_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let identity = SigningKey::from_bytes(&rand_bytes());
    app.post("/keys/register", &alice.token, registration(&identity, 1, one_time(1..=10))).await.expect(200);

    let path = format!("/keys/{}/bundle", alice.id);
    let fetches = (0..20).map(|_| app.get(&path, &bob.token));
    let replies = futures_util::future::join_all(fetches).await;
    let mut handed_out = HashSet::new();
    let mut nulls = 0;
    for reply in replies {
        let b = reply.expect(200);
        match b["one_time_prekey"]["key_id"].as_i64() {
            Some(id) => assert!(handed_out.insert(id), "prekey {id} handed out twice"),
            None => {
                assert!(b["one_time_prekey"].is_null());
                nulls += 1;
            }
        }
    }
    assert_eq!(handed_out, (1..=10).collect::<HashSet<i64>>());
    assert_eq!(nulls, 10);
    assert_eq!(count(&app, &alice).await, 0);
    app.stop().await;
}

async fn keys_low_reaches_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut alice_ws = app.ws(&alice.token).await;
    let mut bob_ws = app.ws(&bob.token).await;

    // 30 → 29 left: not low yet.
    app.post("/keys/prekeys/one-time", &alice.token, one_time(100..125)).await.expect(200);
    assert_eq!(count(&app, &alice).await, 30);
    bundle(&app, &alice, &bob).await;
    alice_ws.expect_no("keys_low", Duration::from_millis(300)).await;

    for _ in 0..4 {
        bundle(&app, &alice, &bob).await;
    }
    // 25 left after the fifth fetch: still not low. The sixth leaves 24.
    alice_ws.expect_no("keys_low", Duration::from_millis(300)).await;
    bundle(&app, &alice, &bob).await;
    let frame = alice_ws.expect("keys_low").await;
    assert_eq!(frame["remaining"], 24);
    // Only the owner is told.
    bob_ws.expect_no("keys_low", Duration::from_millis(300)).await;
    app.stop().await;
}

async fn register_replaces_all_keys_atomically(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    assert_eq!(count(&app, &alice).await, 5);

    let identity = SigningKey::from_bytes(&rand_bytes());
    // Repeated key ids in one batch: the first wins.
    let otks = json!([
        {"key_id": 1, "public_key": rand_bytes::<32>().to_vec()},
        {"key_id": 1, "public_key": rand_bytes::<32>().to_vec()},
        {"key_id": 2, "public_key": rand_bytes::<32>().to_vec()},
    ]);
    let body = registration(&identity, 3, otks.clone());
    app.post("/keys/register", &alice.token, body.clone()).await.expect(200);
    assert_eq!(count(&app, &alice).await, 2, "old one-time prekeys replaced");
    let b = bundle(&app, &alice, &bob).await;
    assert_eq!(b["identity_key"], body["identity_key"]);
    assert_eq!(b["signed_prekey"], body["signed_prekey"]);
    assert_eq!(b["one_time_prekey"], otks[0]);

    // Empty one-time list: the remaining prekey is kept, identity and signed prekey replaced.
    let identity2 = SigningKey::from_bytes(&rand_bytes());
    let body2 = registration(&identity2, 3, json!([]));
    app.post("/keys/register", &alice.token, body2.clone()).await.expect(200);
    assert_eq!(count(&app, &alice).await, 1);
    let b = bundle(&app, &alice, &bob).await;
    assert_eq!(b["identity_key"], body2["identity_key"]);
    assert_eq!(b["signed_prekey"], body2["signed_prekey"]);
    assert_eq!(b["one_time_prekey"], otks[2]);
    app.stop().await;
}

async fn register_rejects_bad_keys_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let before = {
        let b = bundle(&app, &alice, &bob).await;
        json!({"identity_key": b["identity_key"], "signed_prekey": b["signed_prekey"]})
    };
    let count_before = count(&app, &alice).await;

    let identity = SigningKey::from_bytes(&rand_bytes());
    let other = SigningKey::from_bytes(&rand_bytes());
    let good = registration(&identity, 9, one_time(50..60));
    let mut bad_bodies = Vec::new();
    // Signed by a different key.
    let mut b = good.clone();
    b["signed_prekey"] = signed_prekey(&other, 9);
    bad_bodies.push(b);
    // Identity key of 31 bytes.
    let mut b = good.clone();
    b["identity_key"] = json!(vec![1u8; 31]);
    bad_bodies.push(b);
    // Signature of 63 bytes, public key of 33 bytes.
    let mut b = good.clone();
    b["signed_prekey"]["signature"] = json!(vec![1u8; 63]);
    bad_bodies.push(b);
    let mut b = good.clone();
    b["signed_prekey"]["public_key"] = json!(vec![1u8; 33]);
    bad_bodies.push(b);
    // 201 one-time prekeys; one bad one-time prekey in a good batch.
    let mut b = good.clone();
    b["one_time_prekeys"] = one_time(1..=201);
    bad_bodies.push(b);
    let mut b = good.clone();
    b["one_time_prekeys"][3]["public_key"] = json!(vec![1u8; 31]);
    bad_bodies.push(b);
    // Byte values out of range, missing field.
    let mut b = good.clone();
    b["identity_key"][0] = json!(256);
    bad_bodies.push(b);
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("one_time_prekeys");
    bad_bodies.push(b);

    for (i, body) in bad_bodies.into_iter().enumerate() {
        let code = app.post("/keys/register", &alice.token, body).await.expect_error(400);
        assert_eq!(code, "validation_error", "body {i}");
    }
    let reply = app.request(reqwest::Method::POST, "/keys/register", None, Some(good.clone())).await;
    assert_eq!(reply.expect_error(401), "unauthorized");

    assert_eq!(count(&app, &alice).await, count_before, "no prekeys replaced");
    let b = bundle(&app, &alice, &bob).await;
    assert_eq!(b["identity_key"], before["identity_key"]);
    assert_eq!(b["signed_prekey"], before["signed_prekey"]);
    // 200 is the limit, not 199.
    let mut b = good.clone();
    b["one_time_prekeys"] = one_time(1..=200);
    app.post("/keys/register", &alice.token, b).await.expect(200);
    assert_eq!(count(&app, &alice).await, 200);
    app.stop().await;
}

async fn signed_prekey_upload_rotates_the_served_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let first = signed_prekey(&alice.identity, 2);
    app.post("/keys/prekeys/signed", &alice.token, first.clone()).await.expect(200);
    assert_eq!(bundle(&app, &alice, &bob).await["signed_prekey"], first);
    let second = signed_prekey(&alice.identity, 3);
    app.post("/keys/prekeys/signed", &alice.token, second.clone()).await.expect(200);
    assert_eq!(bundle(&app, &alice, &bob).await["signed_prekey"], second);
    // Re-uploading an existing key id replaces it and makes it the newest.
    let again = signed_prekey(&alice.identity, 2);
    app.post("/keys/prekeys/signed", &alice.token, again.clone()).await.expect(200);
    assert_eq!(bundle(&app, &alice, &bob).await["signed_prekey"], again);
    let rows = signed_prekeys::Entity::find()
        .filter(signed_prekeys::Column::UserId.eq(alice.id))
        .all(db(&app))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "key ids 1 (from registration), 2 and 3");
    app.stop().await;
}

async fn signed_prekey_upload_rejects_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let served = bundle(&app, &alice, &bob).await["signed_prekey"].clone();

    let other = SigningKey::from_bytes(&rand_bytes());
    let mut short_sig = signed_prekey(&alice.identity, 4);
    short_sig["signature"] = json!(vec![0u8; 64 - 1]);
    let mut long_key = signed_prekey(&alice.identity, 4);
    long_key["public_key"] = json!(vec![0u8; 33]);
    for body in [signed_prekey(&other, 4), short_sig, long_key, json!({"key_id": 4}), json!([])] {
        let code = app.post("/keys/prekeys/signed", &alice.token, body.clone()).await.expect_error(400);
        assert_eq!(code, "validation_error", "{body}");
    }
    let good = signed_prekey(&alice.identity, 4);
    let reply = app.request(reqwest::Method::POST, "/keys/prekeys/signed", None, Some(good.clone())).await;
    reply.expect_error(401);
    assert_eq!(bundle(&app, &alice, &bob).await["signed_prekey"], served, "nothing stored");

    // Without a stored identity key the upload is refused (400).
    identity_keys::Entity::delete_by_id(alice.id).exec(db(&app)).await.unwrap();
    let code = app.post("/keys/prekeys/signed", &alice.token, good).await.expect_error(400);
    assert_eq!(code, "validation_error");
    let rows = signed_prekeys::Entity::find()
        .filter(signed_prekeys::Column::UserId.eq(alice.id))
        .all(db(&app))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only the registration's signed prekey");
    app.stop().await;
}

async fn one_time_prekey_upload_ignores_duplicates(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    assert_eq!(count(&app, &alice).await, 5);
    // Key ids 1–5 exist: 5 is ignored, 7 is repeated in the batch.
    let body = app.post("/keys/prekeys/one-time", &alice.token, one_time([5, 6, 7, 7])).await.expect(200);
    assert!(body.is_null(), "empty body, got {body}");
    assert_eq!(count(&app, &alice).await, 7);
    app.post("/keys/prekeys/one-time", &alice.token, json!([])).await.expect(200);
    assert_eq!(count(&app, &alice).await, 7);
    // Counts are per user.
    assert_eq!(count(&app, &bob).await, 5);
    app.post("/keys/prekeys/one-time", &alice.token, one_time(1000..1200)).await.expect(200);
    assert_eq!(count(&app, &alice).await, 207);
    app.stop().await;
}

async fn one_time_prekey_upload_rejects_bad_batches_whole(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let mut bad_key = one_time(10..20);
    bad_key[9]["public_key"] = json!(vec![1u8; 31]);
    let bodies = [
        one_time(10..211),
        bad_key,
        json!({"key_id": 10, "public_key": vec![1u8; 32]}),
        json!([{"key_id": 10}]),
        json!([{"key_id": 3_000_000_000i64, "public_key": vec![1u8; 32]}]),
    ];
    for body in bodies {
        let code = app.post("/keys/prekeys/one-time", &alice.token, body).await.expect_error(400);
        assert_eq!(code, "validation_error");
    }
    let reply =
        app.request(reqwest::Method::POST, "/keys/prekeys/one-time", None, Some(one_time(10..12))).await;
    reply.expect_error(401);
    assert_eq!(count(&app, &alice).await, 5, "nothing stored");
    app.stop().await;
}

async fn prekey_count_needs_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let reply = app.request(reqwest::Method::GET, "/keys/prekeys/count", None, None).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let reply = app.get("/keys/prekeys/count", "not-a-token").await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    app.stop().await;
}

crate::both_backends!(
    bundle_serves_keys_and_hands_out_prekeys_oldest_first,
    bundle_missing_keys_unknown_user_and_no_token,
    concurrent_bundle_fetches_hand_out_each_prekey_once,
    keys_low_reaches_owner,
    register_replaces_all_keys_atomically,
    register_rejects_bad_keys_and_changes_nothing,
    signed_prekey_upload_rotates_the_served_key,
    signed_prekey_upload_rejects_bad_input,
    one_time_prekey_upload_ignores_duplicates,
    one_time_prekey_upload_rejects_bad_batches_whole,
    prekey_count_needs_a_token,
);
