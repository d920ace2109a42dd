//! `/totp/*` and 2FA at login: setup, verify, login with a code or a backup code, replay
//! protection (each time step once), disable (code or password), regenerate, remaining count.
//!
//! Codes are computed here from the secret the server hands out. Each test first waits, if
//! needed, until at least 5 s of the current 30 s step remain, then uses the previous,
//! current and next step (the server accepts ±1 step), so no test depends on a clock edge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palaver_entity::{audit_log, totp_backup_codes, user_totp};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::common::fixtures::db;
use crate::common::{Backend, Reply, TestApp, TestUser, spawn_app, spawn_app_with};

fn code_at(secret: &str, step: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
    let totp = totp_rs::Builder::new().with_secret(secret).build().expect("valid secret");
    totp.generate(step * 30).to_string()
}

/// A six-digit code that is valid for none of the steps around `step`.
fn wrong_code(secret: &str, step: u64) -> String {
    let valid: Vec<String> = (step - 2..=step + 2).map(|s| code_at(secret, s)).collect();
    (1u64..).map(|n| format!("{:06}", n * 7919 % 1_000_000)).find(|c| !valid.contains(c)).unwrap()
}

/// The current step, after waiting out the last 5 s of a step.
async fn fresh_step() -> u64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let left = 30_000 - ms % 30_000;
    if left < 5_000 {
        tokio::time::sleep(Duration::from_millis(left + 100)).await;
    }
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 30
}

async fn login(app: &TestApp, user: &TestUser, code: Option<&str>) -> Reply {
    let mut body = json!({"username": user.username, "password": user.password});
    if let Some(code) = code {
        body["totp_code"] = json!(code);
    }
    app.post_public("/auth/login", body).await
}

async fn audit_actions(app: &TestApp, user: &TestUser) -> Vec<String> {
    audit_log::Entity::find()
        .filter(audit_log::Column::UserId.eq(user.id))
        .all(db(app))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// Sets up and verifies 2FA with the previous step's code; returns the secret, the backup
/// codes and the current step (so `step` and `step + 1` are still unused).
async fn enable(app: &TestApp, user: &TestUser) -> (String, Vec<String>, u64) {
    let setup = app.post("/totp/setup", &user.token, json!({})).await.expect(200);
    let secret = setup["secret"].as_str().unwrap().to_string();
    let step = fresh_step().await;
    let reply =
        app.post("/totp/verify", &user.token, json!({"code": code_at(&secret, step - 1)})).await.expect(200);
    let codes =
        reply["backup_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    (secret, codes, step)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

async fn setup_and_verify_enable_two_factor(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    // A second setup replaces an unfinished first one.
    let first = app.post("/totp/setup", &alice.token, json!({})).await.expect(200);
    let setup = app.post("/totp/setup", &alice.token, json!({})).await.expect(200);
    let secret = setup["secret"].as_str().unwrap().to_string();
    assert_ne!(first["secret"], setup["secret"]);
    assert_eq!(totp_rs::Secret::try_from_base32(&secret).unwrap().as_bytes().len(), 20);
    let url = setup["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/Chatalot:alice?"), "{url}");
    assert!(url.contains(&format!("secret={secret}")) && url.contains("issuer=Chatalot"), "{url}");
    // Stored encrypted, never as the base32 the user sees.
    let row = user_totp::Entity::find_by_id(alice.id).one(db(&app)).await.unwrap().unwrap();
    assert!(!row.enabled);
    assert!(!row.secret.contains(&secret));

    let step = fresh_step().await;
    let old_secret = first["secret"].as_str().unwrap();
    let stale = code_at(old_secret, step);
    if !(step - 1..=step + 1).any(|s| code_at(&secret, s) == stale) {
        app.post("/totp/verify", &alice.token, json!({"code": stale})).await.expect_error(400);
    }
    app.post("/totp/verify", &alice.token, json!({"code": wrong_code(&secret, step)}))
        .await
        .expect_error(400);
    app.post("/totp/verify", &alice.token, json!({"code": "12ab56"})).await.expect_error(400);
    app.post("/totp/verify", &alice.token, json!({})).await.expect_error(400);
    // Still off after the failures: login needs no code.
    login(&app, &alice, None).await.expect(200);

    let reply =
        app.post("/totp/verify", &alice.token, json!({"code": code_at(&secret, step)})).await.expect(200);
    assert_eq!(reply["enabled"], true);
    let codes = strings(&reply["backup_codes"]);
    assert_eq!(codes.len(), 8);
    for code in &codes {
        assert_eq!(code.len(), 9, "{code}");
        assert_eq!(&code[4..5], "-");
        assert!(code.chars().filter(|c| *c != '-').all(|c| "ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(c)));
    }
    assert_eq!(app.get("/totp/backup-codes", &alice.token).await.expect(200), json!({"remaining": 8}));
    let stored = totp_backup_codes::Entity::find()
        .filter(totp_backup_codes::Column::UserId.eq(alice.id))
        .all(db(&app))
        .await
        .unwrap();
    assert!(stored.iter().all(|r| !codes.contains(&r.code_hash)), "backup codes are stored hashed");
    assert!(audit_actions(&app, &alice).await.contains(&"totp_enabled".to_string()));

    // Already enabled: setup and verify conflict.
    assert_eq!(app.post("/totp/setup", &alice.token, json!({})).await.expect_error(409), "conflict");
    app.post("/totp/verify", &alice.token, json!({"code": code_at(&secret, step + 1)}))
        .await
        .expect_error(409);
    // No pending setup, or no token.
    app.post("/totp/verify", &bob.token, json!({"code": "123456"})).await.expect_error(400);
    for path in ["/totp/setup", "/totp/verify", "/totp/disable", "/totp/regenerate-backup-codes"] {
        let reply = app.request(reqwest::Method::POST, path, None, Some(json!({"code": "123456"}))).await;
        assert_eq!(reply.expect_error(401), "unauthorized", "{path}");
    }
    assert_eq!(
        app.request(reqwest::Method::GET, "/totp/backup-codes", None, None).await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn login_requires_the_second_factor_once_per_step(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let (secret, _, step) = enable(&app, &alice).await;

    let reply = login(&app, &alice, None).await;
    assert_eq!(reply.status.as_u16(), 400);
    assert!(reply.body["message"].as_str().unwrap().contains("code"), "{}", reply.body);
    login(&app, &alice, Some(&wrong_code(&secret, step))).await.expect_error(401);
    // Wrong password with a right code is still a plain 401.
    let mut wrong_password = alice.clone();
    wrong_password.password = "Wrong-Horse-9".into();
    login(&app, &wrong_password, Some(&code_at(&secret, step))).await.expect_error(401);

    let current = code_at(&secret, step);
    let reply = login(&app, &alice, Some(&current)).await.expect(200);
    app.get("/account/me", reply["access_token"].as_str().unwrap()).await.expect(200);
    // The same code again is a replay; the step used by verify is spent too.
    assert_eq!(login(&app, &alice, Some(&current)).await.expect_error(401), "unauthorized");
    login(&app, &alice, Some(&code_at(&secret, step - 1))).await.expect_error(401);
    // The next step is still fresh.
    login(&app, &alice, Some(&code_at(&secret, step + 1))).await.expect(200);
    login(&app, &alice, Some(&code_at(&secret, step + 1))).await.expect_error(401);
    assert!(audit_actions(&app, &alice).await.contains(&"login_failed_2fa".to_string()));
    app.stop().await;
}

async fn backup_codes_work_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (_, codes, _) = enable(&app, &alice).await;

    login(&app, &alice, Some(&codes[0])).await.expect(200);
    assert_eq!(login(&app, &alice, Some(&codes[0])).await.expect_error(401), "unauthorized");
    // Typed in lower case without the dash is the same code.
    login(&app, &alice, Some(&codes[1].to_lowercase().replace('-', ""))).await.expect(200);
    login(&app, &alice, Some("ZZZZ-ZZZZ")).await.expect_error(401);
    assert_eq!(app.get("/totp/backup-codes", &alice.token).await.expect(200), json!({"remaining": 6}));
    assert!(audit_actions(&app, &alice).await.contains(&"login_backup_code_used".to_string()));
    // Someone else's backup code is no code at all for bob (2FA off: the code is ignored).
    app.get("/totp/backup-codes", &bob.token).await.expect_error(400);
    app.stop().await;
}

async fn disable_with_a_code_or_the_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let (secret, _, step) = enable(&app, &alice).await;
    // The verify code is spent; a wrong code is refused; neither a code nor a password too.
    app.post("/totp/disable", &alice.token, json!({"code": code_at(&secret, step - 1)}))
        .await
        .expect_error(400);
    app.post("/totp/disable", &alice.token, json!({"code": wrong_code(&secret, step)}))
        .await
        .expect_error(400);
    app.post("/totp/disable", &alice.token, json!({})).await.expect_error(400);
    let reply =
        app.post("/totp/disable", &alice.token, json!({"code": code_at(&secret, step)})).await.expect(200);
    assert_eq!(reply, json!({"enabled": false}));
    login(&app, &alice, None).await.expect(200);
    app.get("/totp/backup-codes", &alice.token).await.expect_error(400);
    let left = totp_backup_codes::Entity::find()
        .filter(totp_backup_codes::Column::UserId.eq(alice.id))
        .count(db(&app))
        .await
        .unwrap();
    assert_eq!(left, 0);
    app.post("/totp/disable", &alice.token, json!({"code": code_at(&secret, step + 1)}))
        .await
        .expect_error(400);
    assert!(audit_actions(&app, &alice).await.contains(&"totp_disabled".to_string()));

    // The seed's way: the account password.
    enable(&app, &bob).await;
    app.post("/totp/disable", &bob.token, json!({"password": "Wrong-Horse-9"})).await.expect_error(400);
    login(&app, &bob, None).await.expect_error(400);
    let reply = app.post("/totp/disable", &bob.token, json!({"password": bob.password})).await.expect(200);
    assert_eq!(reply["enabled"], false);
    login(&app, &bob, None).await.expect(200);
    app.stop().await;
}

async fn regenerating_backup_codes_replaces_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (secret, old_codes, step) = enable(&app, &alice).await;

    app.post("/totp/regenerate-backup-codes", &alice.token, json!({"code": wrong_code(&secret, step)}))
        .await
        .expect_error(400);
    let current = code_at(&secret, step);
    let reply =
        app.post("/totp/regenerate-backup-codes", &alice.token, json!({"code": current})).await.expect(200);
    let new_codes = strings(&reply["backup_codes"]);
    assert_eq!(new_codes.len(), 8);
    assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
    // Each step once here too.
    app.post("/totp/regenerate-backup-codes", &alice.token, json!({"code": current})).await.expect_error(400);

    login(&app, &alice, Some(&old_codes[0])).await.expect_error(401);
    login(&app, &alice, Some(&new_codes[0])).await.expect(200);
    assert_eq!(app.get("/totp/backup-codes", &alice.token).await.expect(200), json!({"remaining": 7}));
    // Without 2FA there is nothing to regenerate.
    app.post("/totp/regenerate-backup-codes", &bob.token, json!({"code": "123456"})).await.expect_error(400);
    app.stop().await;
}

async fn wrong_codes_lock_the_totp_endpoints(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.login_max_failures = 3).await;
    let alice = app.register("alice").await;
    let setup = app.post("/totp/setup", &alice.token, json!({})).await.expect(200);
    let secret = setup["secret"].as_str().unwrap().to_string();
    let step = fresh_step().await;
    for _ in 0..3 {
        app.post("/totp/verify", &alice.token, json!({"code": wrong_code(&secret, step)}))
            .await
            .expect_error(400);
    }
    let reply = app.post("/totp/verify", &alice.token, json!({"code": code_at(&secret, step)})).await;
    assert_eq!(reply.status.as_u16(), 400);
    assert!(reply.body["message"].as_str().unwrap().contains("seconds"), "{}", reply.body);
    let row = user_totp::Entity::find_by_id(alice.id).one(db(&app)).await.unwrap().unwrap();
    assert!(!row.enabled);
    app.stop().await;
}

crate::both_backends!(
    setup_and_verify_enable_two_factor,
    login_requires_the_second_factor_once_per_step,
    backup_codes_work_once,
    disable_with_a_code_or_the_password,
    regenerating_backup_codes_replaces_them,
    wrong_codes_lock_the_totp_endpoints,
);
