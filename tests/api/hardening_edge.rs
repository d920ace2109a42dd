//! Issue 10, the unauthenticated edge: overlong login names, spoofable client IPs and
//! unbounded password hashing.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use palaver::config::RateLimit;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, rand_bytes, spawn_app_with};

/// `total` of the admin audit-log page for `query` (e.g. `?action=login_failed`).
async fn audit_total(app: &TestApp, admin_token: &str, query: &str) -> u64 {
    let page = app.get(&format!("/admin/audit-log{query}"), admin_token).await.expect(200);
    page["total"].as_u64().unwrap_or_else(|| panic!("no total in {page}"))
}

async fn overlong_login_names_are_refused_before_any_work(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.login_max_failures = 2).await;
    let owner = app.register("owner").await;
    let before = audit_total(&app, &owner.token, "").await;

    // ~2 MB of name, just under the JSON body cap.
    let huge = "a".repeat(2_000_000);
    let thirty_three = "b".repeat(33);
    for name in [&huge, &thirty_three] {
        let login = app.post_public("/auth/login", json!({"username": name, "password": "Whatever-1"})).await;
        assert_eq!(login.expect_error(400), "validation_error");
        let recover = app
            .post_public(
                "/auth/recover",
                json!({"username": name, "recovery_code": "ABCD-EFGH-JKLM-NPQR", "new_password": "Brand-New-9"}),
            )
            .await;
        assert_eq!(recover.expect_error(400), "validation_error");
    }
    // No audit row was written for any of them.
    assert_eq!(audit_total(&app, &owner.token, "").await, before);
    assert_eq!(audit_total(&app, &owner.token, "?action=login_failed").await, 0);

    // The same names, ten more times: still the length refusal, never a lockout message
    // (no lockout entry is kept for them).
    for _ in 0..3 {
        let reply = app.post_public("/auth/login", json!({"username": thirty_three, "password": "x"})).await;
        let message = reply.body["message"].as_str().unwrap_or_default().to_string();
        assert_eq!(reply.expect_error(400), "validation_error");
        assert!(!message.contains("locked"), "{message}");
    }

    // A name within the rule is still looked up and audited as before.
    let unknown =
        app.post_public("/auth/login", json!({"username": "nobody", "password": "Whatever-1"})).await;
    assert_eq!(unknown.expect_error(401), "unauthorized");
    assert_eq!(audit_total(&app, &owner.token, "?action=login_failed").await, 1);
    app.stop().await;
}

/// A registration body for a fresh random identity.
fn registration(username: &str) -> Value {
    TestApp::registration_body(username, &SigningKey::from_bytes(&rand_bytes()))
}

async fn hashing_pool_overflow_answers_503_with_retry_after(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.hash_workers = 1;
        c.hash_queue = 0;
    })
    .await;
    let mut created = 0;
    let mut busy = 0;
    // One burst nearly always overflows a one-worker pool; on a very loaded machine a burst
    // may trickle in, so try a few.
    for round in 0..5 {
        let replies =
            futures_util::future::join_all(
                (0..16).map(|i| {
                    let app = &app;
                    async move {
                        app.post_public("/auth/register", registration(&format!("burst{round}x{i}"))).await
                    }
                }),
            )
            .await;
        for reply in replies {
            match reply.status.as_u16() {
                200 => created += 1,
                503 => {
                    let retry_after =
                        reply.headers.get("retry-after").map(|v| v.to_str().unwrap().to_string());
                    assert!(
                        retry_after.as_deref().is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
                        "503 without a Retry-After: {retry_after:?}"
                    );
                    assert_eq!(reply.expect_error(503), "unavailable");
                    busy += 1;
                }
                other => panic!("unexpected status {other}: {}", reply.body),
            }
        }
        if busy > 0 && created > 0 {
            break;
        }
    }
    assert!(busy > 0, "a one-worker pool with no queue never refused a burst of registrations");
    assert!(created > 0, "no registration got through");
    // The server is healthy and hashes again once the burst is over.
    app.get_public("/health").await.expect(200);
    app.post_public("/auth/register", registration("after_burst")).await.expect(200);
    app.post_public("/auth/login", json!({"username": "after_burst", "password": "Correct-Horse-9"}))
        .await
        .expect(200);
    app.stop().await;
}

crate::both_backends!(
    overlong_login_names_are_refused_before_any_work,
    hashing_pool_overflow_answers_503_with_retry_after
);

// ---------------------------------------------------------------------------------------------
// Client IP and per-IP buckets (no database involved beyond start-up: SQLite only).

/// A server with only the `/auth/*` bucket being small: 3 requests, then 1 per second.
async fn small_auth_bucket(tweak: impl FnOnce(&mut palaver::Config)) -> TestApp {
    spawn_app_with(Backend::Sqlite, |c| {
        c.http_rate_limits = true;
        c.http_rate_limit = RateLimit::new(10_000, 10_000);
        c.auth_rate_limit = RateLimit::new(3, 1);
        tweak(c);
    })
    .await
}

/// Sends 12 `/auth/config` requests, the i-th with `header: value(i)`; returns the statuses.
async fn auth_requests_with(app: &TestApp, header: &str, value: impl Fn(usize) -> String) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..12 {
        let resp = app.client.get(app.url("/auth/config")).header(header, value(i)).send().await.unwrap();
        statuses.push(resp.status().as_u16());
    }
    statuses
}

/// 12 requests against a 3-token bucket refilled at 1/s: unless the machine stalls for 9 s
/// in the middle, some are refused.
fn assert_limited(statuses: &[u16]) {
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "one client escaped its bucket: {statuses:?}");
}

fn assert_never_limited(statuses: &[u16]) {
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cf_connecting_ip_is_not_believed_by_default() {
    let app = small_auth_bucket(|_| {}).await;
    let statuses = auth_requests_with(&app, "cf-connecting-ip", |i| format!("198.51.100.{}", i + 1)).await;
    assert_limited(&statuses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_client_ip_header_is_believed() {
    let app = small_auth_bucket(|c| c.client_ip_header = Some("cf-connecting-ip".into())).await;
    let statuses = auth_requests_with(&app, "cf-connecting-ip", |i| format!("198.51.100.{}", i + 1)).await;
    assert_never_limited(&statuses);
    app.stop().await;

    let app = small_auth_bucket(|c| c.client_ip_header = Some("x-real-ip".into())).await;
    let statuses = auth_requests_with(&app, "x-real-ip", |i| format!("198.51.100.{}", i + 1)).await;
    assert_never_limited(&statuses);
    // Only the configured header: CF-Connecting-IP is now just another header.
    let statuses = auth_requests_with(&app, "cf-connecting-ip", |i| format!("203.0.113.{}", i + 1)).await;
    assert_limited(&statuses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_walked_from_the_right() {
    let app = small_auth_bucket(|_| {}).await;
    // Distinct clients behind the (loopback) proxy get their own buckets...
    let statuses = auth_requests_with(&app, "x-forwarded-for", |i| format!("198.51.100.{}", i + 1)).await;
    assert_never_limited(&statuses);
    // ...but what a client wrote into the header itself (the left part) does not count: the
    // proxy appended the real address on the right.
    let statuses =
        auth_requests_with(&app, "x-forwarded-for", |i| format!("192.0.2.{}, 203.0.113.9", i + 1)).await;
    assert_limited(&statuses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_a_bucket_per_64() {
    let app = small_auth_bucket(|_| {}).await;
    // Different /64s: different clients.
    let statuses = auth_requests_with(&app, "x-forwarded-for", |i| format!("2001:db8:{:x}::1", i + 1)).await;
    assert_never_limited(&statuses);
    // Rotating addresses inside one /64: one client.
    let statuses =
        auth_requests_with(&app, "x-forwarded-for", |i| format!("2001:db8:ffff:1:{:x}::{:x}", i + 1, i + 7))
            .await;
    assert_limited(&statuses);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_burst_against_a_tiny_pool_always_answers() {
    // A burst of logins against a tiny pool never hangs a request; every answer comes back
    // (401 for the wrong password, or 503 when the pool is full: never a lockout from it).
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.hash_workers = 1;
        c.hash_queue = 1;
        c.login_max_failures = 100;
    })
    .await;
    app.register("victim").await;
    let replies = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all((0..12).map(|_| {
            app.post_public("/auth/login", json!({"username": "victim", "password": "Wrong-Passw0rd"}))
        })),
    )
    .await
    .expect("logins answered");
    for reply in replies {
        assert!(matches!(reply.status.as_u16(), 401 | 503), "{} {}", reply.status, reply.body);
    }
    app.get_public("/health").await.expect(200);
    app.stop().await;
}
