//! Property test: arbitrary JSON (and arbitrary bytes) posted to the busiest REST routes of a
//! real server never gets a 5xx, and every refusal has the wire error shape with a documented
//! code. Inputs come from proptest strategies with a fixed seed (reproducible); the requests are
//! sent outside proptest's closure so they can be awaited.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

use crate::common::{Backend, TestApp, spawn_app};

/// Cases per route: structured JSON values, then raw bodies.
const JSON_CASES: usize = 48;
const RAW_CASES: usize = 12;

/// The codes of the wire error table (plus the front door's own).
const DOCUMENTED_CODES: &[&str] = &[
    "validation_error",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "rate_limited",
    "payload_too_large",
    "unsupported_media_type",
    "method_not_allowed",
];

/// Any JSON value: scalars of every kind (long strings, huge numbers), nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
        (0usize..5000).prop_map(|n| Value::String("x".repeat(n))),
        Just(json!("00000000-0000-0000-0000-000000000000")),
        Just(json!("2026-12-05T10:00:00Z")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A route's valid-looking body with some of its fields replaced by arbitrary values: reaches
/// deeper than random objects, which mostly fail on the first missing field.
fn mutated(template: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = template.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let n = keys.len().max(1);
    (prop::collection::vec((0..n, any_json()), 1..4), any::<bool>()).prop_map(move |(changes, drop_one)| {
        let mut body = template.clone();
        if let Some(obj) = body.as_object_mut() {
            for (i, value) in changes {
                if let Some(key) = keys.get(i) {
                    if drop_one {
                        obj.remove(key);
                    } else {
                        obj.insert(key.clone(), value);
                    }
                }
            }
        }
        body
    })
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("strategy generates").current()
}

#[track_caller]
fn assert_documented(route: &str, sent: &str, status: u16, body: &Value) {
    assert!(status < 500, "{route}: {status} for body {sent}: {body}");
    if status >= 400 {
        let code = body["code"].as_str().unwrap_or_else(|| panic!("{route}: no code in {body} for {sent}"));
        assert!(DOCUMENTED_CODES.contains(&code), "{route}: undocumented code {code} for {sent}");
        assert!(body["message"].is_string() && body["error"].is_string(), "{route}: bad error body {body}");
    }
}

async fn arbitrary_bodies_never_break_the_busiest_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("fuzzowner").await;
    let channel = app.post("/channels", &owner.token, json!({"name": "fuzz", "channel_type": "text"})).await;
    let channel_id = channel.body["id"].as_str().expect("channel created").to_string();
    let poll = app
        .post(
            &format!("/channels/{channel_id}/polls"),
            &owner.token,
            json!({"question": "q?", "options": ["a", "b"], "multi_select": false, "anonymous": false}),
        )
        .await;
    let poll_id = poll.body["id"].as_str().unwrap_or("00000000-0000-0000-0000-000000000000").to_string();

    // (method, path, authenticated, a plausible body to mutate)
    let routes: Vec<(reqwest::Method, String, bool, Value)> = vec![
        (
            reqwest::Method::POST,
            "/auth/register".into(),
            false,
            TestApp::registration_body(
                "fuzzer",
                &ed25519_dalek::SigningKey::from_bytes(&crate::common::rand_bytes()),
            ),
        ),
        (
            reqwest::Method::POST,
            "/auth/login".into(),
            false,
            json!({"username": "fuzzowner", "password": "Wrong-Passw0rd"}),
        ),
        (reqwest::Method::POST, "/auth/refresh".into(), false, json!({"refresh_token": "abc"})),
        (
            reqwest::Method::PATCH,
            "/account/profile".into(),
            true,
            json!({"display_name": "F", "bio": "b", "custom_status": "s"}),
        ),
        (reqwest::Method::POST, "/channels".into(), true, json!({"name": "c", "channel_type": "text"})),
        (
            reqwest::Method::PATCH,
            format!("/channels/{channel_id}"),
            true,
            json!({"name": "n", "topic": "t", "slow_mode_seconds": 5}),
        ),
        (
            reqwest::Method::POST,
            format!("/channels/{channel_id}/polls"),
            true,
            json!({"question": "q?", "options": ["a", "b"], "multi_select": false, "anonymous": false}),
        ),
        (reqwest::Method::POST, format!("/polls/{poll_id}/vote"), true, json!({"option_index": 0})),
        (reqwest::Method::POST, "/dms".into(), true, json!({"target_user_id": owner.id})),
        (
            reqwest::Method::POST,
            format!("/channels/{channel_id}/sender-keys"),
            true,
            json!({"chain_id": 1, "distribution": {"k": "v"}}),
        ),
        (
            reqwest::Method::POST,
            "/keys/prekeys/one-time".into(),
            true,
            json!({"prekeys": [{"key_id": 1, "public_key": [1, 2, 3]}]}),
        ),
        (
            reqwest::Method::POST,
            "/messages/schedule".into(),
            true,
            json!({"channel_id": channel_id, "ciphertext": "aGk=", "nonce": "bm9uY2U=", "scheduled_for": "2030-01-01T00:00:00Z"}),
        ),
    ];

    let config = PropConfig { cases: 1, ..PropConfig::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let raw = prop::collection::vec(any::<u8>(), 0..4096);
    let client = reqwest::Client::new();
    for (method, path, authenticated, template) in &routes {
        let token = authenticated.then_some(owner.token.as_str());
        let structured = prop_oneof![any_json(), mutated(template.clone())];
        for _ in 0..JSON_CASES {
            let body = sample(&mut runner, &structured);
            let sent = body.to_string();
            let reply = app.request(method.clone(), path, token, Some(body)).await;
            assert_documented(path, &sent, reply.status.as_u16(), &reply.body);
        }
        for _ in 0..RAW_CASES {
            let bytes = sample(&mut runner, &raw);
            let mut req = client
                .request(method.clone(), app.url(path))
                .header("content-type", "application/json")
                .body(bytes.clone());
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await.expect("request sent");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_documented(path, &format!("{} raw bytes", bytes.len()), status, &body);
        }
    }
    // Still serving normally afterwards.
    app.get("/account/me", &owner.token).await.expect(200);
}

crate::both_backends!(arbitrary_bodies_never_break_the_busiest_routes);
