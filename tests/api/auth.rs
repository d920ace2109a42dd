//! `/auth/*`: config, registration (validation, modes, invites, first user), login (lockout,
//! no user enumeration, suspension, session replacement), refresh rotation and reuse
//! detection, recovery, and the `/auth/*` rate limiter.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use palaver::config::{RateLimit, RegistrationMode};
use palaver_entity::{
    identity_keys, one_time_prekeys, refresh_tokens, registration_invites, signed_prekeys, users,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, Reply, TestApp, rand_bytes, spawn_app, spawn_app_with};

async fn login(app: &TestApp, username: &str, password: &str) -> Reply {
    app.post_public("/auth/login", json!({"username": username, "password": password})).await
}

async fn refresh(app: &TestApp, token: &str) -> Reply {
    app.post_public("/auth/refresh", json!({"refresh_token": token})).await
}

async fn user_count(app: &TestApp) -> u64 {
    users::Entity::find().count(db(app)).await.unwrap()
}

/// The claims of an access token (tests may look inside; clients don't).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

async fn audit_actions(app: &TestApp, user_id: Option<Uuid>) -> Vec<String> {
    let mut q = palaver_entity::audit_log::Entity::find();
    if let Some(id) = user_id {
        q = q.filter(palaver_entity::audit_log::Column::UserId.eq(id));
    }
    q.all(db(app)).await.unwrap().into_iter().map(|e| e.action).collect()
}

async fn add_invite(app: &TestApp, code: &str, max_uses: Option<i32>, expires_in: Option<chrono::Duration>) {
    registration_invites::ActiveModel {
        id: Set(Uuid::now_v7()),
        code: Set(code.into()),
        created_by: Set(None),
        max_uses: Set(max_uses),
        used_count: Set(0),
        expires_at: Set(expires_in.map(|d| palaver_entity::now() + d)),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(app))
    .await
    .unwrap();
}

async fn invite_uses(app: &TestApp, code: &str) -> i32 {
    registration_invites::Entity::find()
        .filter(registration_invites::Column::Code.eq(code))
        .one(db(app))
        .await
        .unwrap()
        .expect("invite exists")
        .used_count
}

fn body_for(username: &str) -> Value {
    TestApp::registration_body(username, &SigningKey::from_bytes(&rand_bytes()))
}

async fn config_describes_the_instance(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let config = app.get_public("/auth/config").await.expect(200);
    assert_eq!(config["registration_mode"], "open");
    assert_eq!(config["max_messages_cache"], 500);
    assert_eq!(config["max_pins_per_channel"], 50);
    assert_eq!(config["e2e_enabled"], true);
    assert!(config.get("public_url").is_none(), "omitted when unset: {config}");
    assert!(config.get("ice_servers").is_none(), "omitted when empty: {config}");
    app.stop().await;

    let app = spawn_app_with(backend, |c| {
        c.registration = RegistrationMode::InviteOnly;
        c.public_url = Some("https://chat.example.com".into());
    })
    .await;
    let config = app.get_public("/auth/config").await.expect(200);
    assert_eq!(config["registration_mode"], "invite_only");
    assert_eq!(config["public_url"], "https://chat.example.com");
    app.stop().await;
}

async fn register_returns_tokens_user_and_recovery_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let identity = SigningKey::from_bytes(&rand_bytes());
    let body = TestApp::registration_body("alice", &identity);
    let reply = app.post_public("/auth/register", body).await.expect(200);

    let refresh = reply["refresh_token"].as_str().unwrap();
    assert_eq!(refresh.len(), 64);
    assert!(refresh.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let code = reply["recovery_code"].as_str().unwrap();
    assert_eq!(code.len(), 19);
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 4);
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| "ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(c)))
    );
    let user = &reply["user"];
    assert_eq!(user["username"], "alice");
    assert_eq!(user["display_name"], "alice display");
    assert_eq!(user["status"], "offline");
    assert!(user["avatar_url"].is_null() && user["banner_url"].is_null() && user["custom_status"].is_null());
    assert!(user.get("bio").is_none() && user.get("pronouns").is_none());
    assert!(user["created_at"].as_str().unwrap().contains('T'));
    let claims = claims(reply["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["aud"], "chatalot");

    let me = app.get("/account/me", reply["access_token"].as_str().unwrap()).await.expect(200);
    assert_eq!(me["id"], user["id"]);

    // Keys, one-time prekeys and the session are stored; the email in lower case.
    let id: Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let db = db(&app);
    let key = identity_keys::Entity::find_by_id(id).one(db).await.unwrap().expect("identity key");
    assert_eq!(key.identity_key, identity.verifying_key().to_bytes().to_vec());
    assert_eq!(
        signed_prekeys::Entity::find().filter(signed_prekeys::Column::UserId.eq(id)).count(db).await.unwrap(),
        1
    );
    assert_eq!(
        one_time_prekeys::Entity::find()
            .filter(one_time_prekeys::Column::UserId.eq(id))
            .count(db)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        refresh_tokens::Entity::find().filter(refresh_tokens::Column::UserId.eq(id)).count(db).await.unwrap(),
        1
    );
    let row = users::Entity::find_by_id(id).one(db).await.unwrap().unwrap();
    assert_eq!(row.email, "alice@example.com");
    assert_ne!(row.recovery_code_hash.as_deref(), Some(code), "recovery code is stored hashed");
    assert!(audit_actions(&app, Some(id)).await.contains(&"register".to_string()));

    // A blank display name falls back to the username.
    let mut body = body_for("bob");
    body["display_name"] = json!("   ");
    let reply = app.post_public("/auth/register", body).await.expect(200);
    assert_eq!(reply["user"]["display_name"], "bob");
    app.stop().await;
}

async fn first_user_is_owner_and_admin_second_is_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.register("first").await;
    let second = app.register("second").await;
    let me = app.get("/account/me", &first.token).await.expect(200);
    assert_eq!((me["is_admin"].as_bool(), me["is_owner"].as_bool()), (Some(true), Some(true)));
    assert_eq!(claims(&first.token)["is_owner"], true);
    let me = app.get("/account/me", &second.token).await.expect(200);
    assert_eq!((me["is_admin"].as_bool(), me["is_owner"].as_bool()), (Some(false), Some(false)));
    assert_eq!(claims(&second.token)["is_admin"], false);
    app.stop().await;
}

async fn concurrent_first_registrations_make_exactly_one_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let names: Vec<String> = (0..4).map(|i| format!("racer{i}")).collect();
    let replies =
        futures_util::future::join_all(names.iter().map(|n| app.post_public("/auth/register", body_for(n))))
            .await;
    let owners = replies.into_iter().filter(|r| r.body["user"]["is_owner"] == true).count();
    assert_eq!(owners, 1);
    let stored = users::Entity::find().filter(users::Column::IsOwner.eq(true)).count(db(&app)).await.unwrap();
    assert_eq!(stored, 1);
    app.stop().await;
}

async fn register_rejects_invalid_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let other = SigningKey::from_bytes(&rand_bytes());
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("username too short", Box::new(|b| b["username"] = json!("ab"))),
        ("username too long", Box::new(|b| b["username"] = json!("x".repeat(33)))),
        ("username starts with _", Box::new(|b| b["username"] = json!("_alice"))),
        ("username starts with .", Box::new(|b| b["username"] = json!(".alice"))),
        ("username ends with .", Box::new(|b| b["username"] = json!("alice."))),
        ("username with ..", Box::new(|b| b["username"] = json!("al..ice"))),
        ("username with space", Box::new(|b| b["username"] = json!("al ice"))),
        ("username non-ASCII", Box::new(|b| b["username"] = json!("alïce"))),
        ("email without @", Box::new(|b| b["email"] = json!("alice.example.com"))),
        ("email without local part", Box::new(|b| b["email"] = json!("@example.com"))),
        ("email without dotted domain", Box::new(|b| b["email"] = json!("alice@localhost"))),
        ("email too long", Box::new(|b| b["email"] = json!(format!("{}@example.com", "a".repeat(250))))),
        ("password too short", Box::new(|b| b["password"] = json!("Ab1!xyz"))),
        ("password too long", Box::new(|b| b["password"] = json!(format!("Ab1!{}", "x".repeat(125))))),
        ("password without uppercase", Box::new(|b| b["password"] = json!("correct-horse-9"))),
        ("password without lowercase", Box::new(|b| b["password"] = json!("CORRECT-HORSE-9"))),
        ("password without digit", Box::new(|b| b["password"] = json!("Correct-Horse-X"))),
        ("password without symbol", Box::new(|b| b["password"] = json!("CorrectHorse9"))),
        ("display name too long", Box::new(|b| b["display_name"] = json!("x".repeat(65)))),
        ("identity key 31 bytes", Box::new(|b| b["identity_key"] = json!(vec![1u8; 31]))),
        ("identity key 33 bytes", Box::new(|b| b["identity_key"] = json!(vec![1u8; 33]))),
        ("signed prekey 31 bytes", Box::new(|b| b["signed_prekey"]["public_key"] = json!(vec![1u8; 31]))),
        ("signature 63 bytes", Box::new(|b| b["signed_prekey"]["signature"] = json!(vec![1u8; 63]))),
        (
            "signature by another key",
            Box::new(move |b| {
                let prekey: Vec<u8> =
                    serde_json::from_value(b["signed_prekey"]["public_key"].clone()).unwrap();
                b["signed_prekey"]["signature"] = json!(other.sign(&prekey).to_bytes().to_vec());
            }),
        ),
        ("signature over other bytes", Box::new(|b| b["signed_prekey"]["public_key"] = json!(vec![7u8; 32]))),
        (
            "one-time prekey 31 bytes",
            Box::new(|b| b["one_time_prekeys"] = json!([{"key_id": 1, "public_key": vec![1u8; 31]}])),
        ),
        (
            "201 one-time prekeys",
            Box::new(|b| {
                b["one_time_prekeys"] = json!(
                    (0..201).map(|i| json!({"key_id": i, "public_key": vec![1u8; 32]})).collect::<Vec<_>>()
                )
            }),
        ),
        (
            "missing password",
            Box::new(|b| b.as_object_mut().unwrap().remove("password").map(|_| ()).unwrap()),
        ),
        ("wrong type", Box::new(|b| b["username"] = json!(42))),
        ("byte out of range", Box::new(|b| b["identity_key"] = json!(vec![300; 32]))),
    ];
    for (what, mutate) in cases {
        let mut body = body_for("alice");
        mutate(&mut body);
        let reply = app.post_public("/auth/register", body).await;
        assert_eq!(reply.status.as_u16(), 400, "{what}: {}", reply.body);
        assert_eq!(reply.expect_error(400), "validation_error", "{what}");
    }
    // Bad JSON and a wrong content type.
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // Nothing was written by any of them.
    assert_eq!(user_count(&app).await, 0);
    assert_eq!(identity_keys::Entity::find().count(db(&app)).await.unwrap(), 0);
    // The same body with valid values goes through, and 200 one-time prekeys are fine.
    let mut body = body_for("alice");
    body["one_time_prekeys"] =
        json!((0..200).map(|i| json!({"key_id": i, "public_key": vec![1u8; 32]})).collect::<Vec<_>>());
    app.post_public("/auth/register", body).await.expect(200);
    app.stop().await;
}

async fn duplicate_username_or_email_conflicts(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice").await;
    let mut same_name = body_for("alice");
    same_name["email"] = json!("other@example.com");
    assert_eq!(app.post_public("/auth/register", same_name).await.expect_error(409), "conflict");
    let mut other_case = body_for("ALICE");
    other_case["email"] = json!("other@example.com");
    assert_eq!(app.post_public("/auth/register", other_case).await.expect_error(409), "conflict");
    let mut same_email = body_for("alice2");
    same_email["email"] = json!("Alice@Example.com");
    assert_eq!(app.post_public("/auth/register", same_email).await.expect_error(409), "conflict");
    assert_eq!(user_count(&app).await, 1);
    app.stop().await;
}

async fn closed_registration_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.registration = RegistrationMode::Closed).await;
    assert_eq!(app.get_public("/auth/config").await.expect(200)["registration_mode"], "closed");
    let reply = app.post_public("/auth/register", body_for("alice")).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    assert_eq!(user_count(&app).await, 0);
    app.stop().await;
}

async fn invite_only_registration_needs_a_valid_code(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.registration = RegistrationMode::InviteOnly).await;
    // The very first account needs no code (someone has to create the invites).
    let owner = app.register("owner").await;
    assert_eq!(app.get("/account/me", &owner.token).await.expect(200)["is_owner"], true);

    assert_eq!(
        app.post_public("/auth/register", body_for("nocode")).await.expect_error(400),
        "validation_error"
    );
    let mut body = body_for("badcode");
    body["invite_code"] = json!("NOSUCHCODE12");
    assert_eq!(app.post_public("/auth/register", body).await.expect_error(400), "validation_error");

    add_invite(&app, "ONEUSEINVITE", Some(1), None).await;
    add_invite(&app, "EXPIREDINVIT", None, Some(chrono::Duration::hours(-1))).await;
    let mut body = body_for("expired");
    body["invite_code"] = json!("EXPIREDINVIT");
    assert_eq!(app.post_public("/auth/register", body).await.expect_error(400), "validation_error");

    // A registration that fails for another reason does not spend the code.
    let mut taken = body_for("owner");
    taken["email"] = json!("fresh@example.com");
    taken["invite_code"] = json!("ONEUSEINVITE");
    assert_eq!(app.post_public("/auth/register", taken).await.expect_error(409), "conflict");
    let mut weak = body_for("weakling");
    weak["password"] = json!("weak");
    weak["invite_code"] = json!("ONEUSEINVITE");
    app.post_public("/auth/register", weak).await.expect_error(400);
    assert_eq!(invite_uses(&app, "ONEUSEINVITE").await, 0);

    let mut body = body_for("invited");
    body["invite_code"] = json!("ONEUSEINVITE");
    let reply = app.post_public("/auth/register", body).await.expect(200);
    assert_eq!(reply["user"]["is_owner"], false);
    assert_eq!(invite_uses(&app, "ONEUSEINVITE").await, 1);

    let mut body = body_for("latecomer");
    body["invite_code"] = json!("ONEUSEINVITE");
    assert_eq!(app.post_public("/auth/register", body).await.expect_error(400), "validation_error");
    assert_eq!(invite_uses(&app, "ONEUSEINVITE").await, 1);
    assert_eq!(user_count(&app).await, 2);
    app.stop().await;
}

async fn login_succeeds_and_replaces_older_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let reply = login(&app, "alice", &alice.password).await.expect(200);
    assert!(reply.get("recovery_code").is_none());
    assert_eq!(reply["user"]["id"], alice.id.to_string());
    let token = reply["access_token"].as_str().unwrap();
    app.get("/account/me", token).await.expect(200);
    // The registration's session is gone; the new one works.
    assert_eq!(refresh(&app, &alice.refresh_token).await.expect_error(401), "unauthorized");
    refresh(&app, reply["refresh_token"].as_str().unwrap()).await.expect(200);
    assert!(audit_actions(&app, Some(alice.id)).await.contains(&"login".to_string()));
    app.stop().await;
}

async fn wrong_password_and_unknown_user_look_the_same(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let wrong = login(&app, "alice", "Wrong-Horse-9").await;
    let unknown = login(&app, "nobody", "Wrong-Horse-9").await;
    assert_eq!(wrong.status.as_u16(), 401);
    assert_eq!(unknown.status.as_u16(), 401);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.expect_error(401), "unauthorized");
    let actions = audit_actions(&app, Some(alice.id)).await;
    assert!(actions.contains(&"login_failed".to_string()));
    // Missing fields are a bad request, not a crash.
    app.post_public("/auth/login", json!({"username": "alice"})).await.expect_error(400);
    app.stop().await;
}

async fn login_locks_after_repeated_failures(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.login_max_failures = 3).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for _ in 0..3 {
        login(&app, "alice", "Wrong-Horse-9").await.expect_error(401);
    }
    // Locked now, even with the right password; the message says how long.
    let reply = login(&app, "alice", &alice.password).await;
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.body);
    let message = reply.body["message"].as_str().unwrap().to_string();
    assert!(message.contains("seconds"), "{message}");
    assert!(message.chars().any(|c| c.is_ascii_digit()), "{message}");
    // Other accounts are not affected.
    login(&app, "bob", &bob.password).await.expect(200);
    app.stop().await;
}

async fn suspended_user_cannot_login_or_refresh(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let state = &app.server.as_ref().unwrap().state;
    let mut row: users::ActiveModel =
        users::Entity::find_by_id(alice.id).one(&state.db).await.unwrap().unwrap().into();
    row.suspended_at = Set(Some(palaver_entity::now()));
    row.suspended_reason = Set(Some("spam".into()));
    row.update(&state.db).await.unwrap();
    state.hub.bar_user(alice.id);

    // The password is checked first: a wrong one is still just 401.
    login(&app, "alice", "Wrong-Horse-9").await.expect_error(401);
    let reply = login(&app, "alice", &alice.password).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    assert_eq!(refresh(&app, &alice.refresh_token).await.expect_error(401), "unauthorized");
    assert_eq!(app.get("/account/me", &alice.token).await.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn refresh_rotates_and_detects_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let first = refresh(&app, &alice.refresh_token).await.expect(200);
    let t1 = first["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(t1, alice.refresh_token);
    app.get("/account/me", first["access_token"].as_str().unwrap()).await.expect(200);
    let second = refresh(&app, &t1).await.expect(200);
    let t2 = second["refresh_token"].as_str().unwrap().to_string();

    // t1 was rotated out: presenting it again is reuse, and kills t2 as well.
    assert_eq!(refresh(&app, &t1).await.expect_error(401), "unauthorized");
    assert_eq!(refresh(&app, &t2).await.expect_error(401), "unauthorized");
    let active = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(alice.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .count(db(&app))
        .await
        .unwrap();
    assert_eq!(active, 0);

    // Malformed and unknown tokens.
    for bad in ["", "not-hex", &"g".repeat(64), &"ab".repeat(31), &"ab".repeat(32)] {
        assert_eq!(refresh(&app, bad).await.expect_error(401), "unauthorized", "{bad:?}");
    }
    app.post_public("/auth/refresh", json!({})).await.expect_error(400);
    app.stop().await;
}

async fn refresh_carries_current_roles(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    assert_eq!(claims(&alice.token)["is_admin"], false);
    users::Entity::update_many()
        .col_expr(users::Column::IsAdmin, sea_orm::sea_query::Expr::value(true))
        .filter(users::Column::Id.eq(alice.id))
        .exec(db(&app))
        .await
        .unwrap();
    let reply = refresh(&app, &alice.refresh_token).await.expect(200);
    let claims = claims(reply["access_token"].as_str().unwrap());
    assert_eq!(claims["is_admin"], true);
    assert_eq!(claims["is_owner"], false);
    app.stop().await;
}

async fn refresh_fails_once_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    refresh_tokens::Entity::update_many()
        .col_expr(
            refresh_tokens::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(palaver_entity::now() - chrono::Duration::seconds(1)),
        )
        .filter(refresh_tokens::Column::UserId.eq(alice.id))
        .exec(db(&app))
        .await
        .unwrap();
    assert_eq!(refresh(&app, &alice.refresh_token).await.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn recover_resets_the_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let new_password = "Battery-Staple-7";
    let recover = |username: &str, code: &str, password: &str| {
        app.post_public(
            "/auth/recover",
            json!({"username": username, "recovery_code": code, "new_password": password}),
        )
    };
    // Wrong length, weak password, wrong code, unknown user.
    recover("alice", "ABCD-EFGH", new_password).await.expect_error(400);
    recover("alice", &alice.recovery_code, "weak").await.expect_error(400);
    let wrong = recover("alice", "ABCD-EFGH-JKLM-NPQR", new_password).await;
    let unknown = recover("nobody", &alice.recovery_code, new_password).await;
    assert_eq!(wrong.status.as_u16(), 400);
    assert_eq!(wrong.body, unknown.body, "same answer whether or not the user exists");
    login(&app, "alice", &alice.password).await.expect(200);
    let session = login(&app, "alice", &alice.password).await.expect(200);

    // Success: lower case is accepted, a new code comes back, sessions end.
    let reply = recover("alice", &alice.recovery_code.to_lowercase(), new_password).await.expect(200);
    let new_code = reply["recovery_code"].as_str().unwrap().to_string();
    assert_eq!(new_code.len(), 19);
    assert_ne!(new_code, alice.recovery_code);
    refresh(&app, session["refresh_token"].as_str().unwrap()).await.expect_error(401);
    login(&app, "alice", &alice.password).await.expect_error(401);
    login(&app, "alice", new_password).await.expect(200);
    // The old code is spent; the new one works.
    recover("alice", &alice.recovery_code, "Another-Pass-5").await.expect_error(400);
    recover("alice", &new_code, "Another-Pass-5").await.expect(200);
    assert!(audit_actions(&app, Some(alice.id)).await.contains(&"account_recovered".to_string()));
    app.stop().await;
}

async fn recovery_locks_after_repeated_failures(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.login_max_failures = 3).await;
    let alice = app.register("alice").await;
    let body =
        |code: &str| json!({"username": "alice", "recovery_code": code, "new_password": "Battery-Staple-7"});
    for _ in 0..3 {
        app.post_public("/auth/recover", body("ABCD-EFGH-JKLM-NPQR")).await.expect_error(400);
    }
    let reply = app.post_public("/auth/recover", body(&alice.recovery_code)).await;
    assert_eq!(reply.status.as_u16(), 400);
    assert!(reply.body["message"].as_str().unwrap().contains("seconds"), "{}", reply.body);
    // The password did not change.
    login(&app, "alice", &alice.password).await.expect(200);
    app.stop().await;
}

async fn auth_endpoints_are_rate_limited(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.http_rate_limits = true;
        c.auth_rate_limit = RateLimit::new(2, 1);
    })
    .await;
    app.get_public("/auth/config").await.expect(200);
    app.get_public("/auth/config").await.expect(200);
    let reply = app.get_public("/auth/config").await;
    assert!(reply.headers.get("retry-after").is_some(), "Retry-After header expected");
    assert_eq!(reply.expect_error(429), "rate_limited");
    // Other paths use the general bucket only.
    app.get_public("/health").await.expect(200);
    app.stop().await;
}

crate::both_backends!(
    config_describes_the_instance,
    register_returns_tokens_user_and_recovery_code,
    first_user_is_owner_and_admin_second_is_not,
    concurrent_first_registrations_make_exactly_one_owner,
    register_rejects_invalid_input,
    duplicate_username_or_email_conflicts,
    closed_registration_is_refused,
    invite_only_registration_needs_a_valid_code,
    login_succeeds_and_replaces_older_sessions,
    wrong_password_and_unknown_user_look_the_same,
    login_locks_after_repeated_failures,
    suspended_user_cannot_login_or_refresh,
    refresh_rotates_and_detects_reuse,
    refresh_carries_current_roles,
    refresh_fails_once_expired,
    recover_resets_the_password,
    recovery_locks_after_repeated_failures,
    auth_endpoints_are_rate_limited,
);
