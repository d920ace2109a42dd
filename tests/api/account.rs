//! `/account/*`: me, profile (both methods), password (both paths), recovery code, deletion
//! (both paths), sessions (list, revoke one, revoke others, logout everywhere), preferences.

use palaver::auth::tokens::hash_token;
use palaver_entity::{communities, refresh_tokens, users};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, Reply, TestApp, TestUser, spawn_app};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

async fn login(app: &TestApp, username: &str, password: &str) -> Reply {
    app.post_public("/auth/login", json!({"username": username, "password": password})).await
}

async fn refresh(app: &TestApp, token: &str) -> Reply {
    app.post_public("/auth/refresh", json!({"refresh_token": token})).await
}

/// A request without a token.
async fn anonymous(app: &TestApp, method: reqwest::Method, path: &str) -> Reply {
    app.request(method, path, None, Some(json!({}))).await
}

/// A session row for `user` as if made on another device `age` ago; returns its token.
async fn add_session(app: &TestApp, user: &TestUser, age: chrono::Duration) -> (Uuid, String) {
    let token = palaver::auth::tokens::new_refresh_token();
    let id = Uuid::new_v4();
    let created = palaver_entity::now() - age;
    refresh_tokens::ActiveModel {
        id: Set(id),
        user_id: Set(user.id),
        token_hash: Set(hash_token(&token)),
        family_id: Set(Uuid::new_v4()),
        device_name: Set(Some("Other device".into())),
        ip_address: Set(Some("192.0.2.7".into())),
        created_at: Set(created),
        expires_at: Set(created + chrono::Duration::days(30)),
        revoked_at: Set(None),
    }
    .insert(db(app))
    .await
    .unwrap();
    (id, token)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

async fn me_returns_the_caller(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let me = app.get("/account/me", &alice.token).await.expect(200);
    assert_eq!(me["id"], alice.id.to_string());
    assert_eq!(me["username"], "alice");
    assert!(me.get("email").is_none() && me.get("password_hash").is_none(), "no secrets: {me}");
    assert_eq!(anonymous(&app, reqwest::Method::GET, "/account/me").await.expect_error(401), "unauthorized");
    assert_eq!(app.get("/account/me", "not-a-jwt").await.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn profile_update_changes_only_given_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let updated = app
        .put(
            "/account/profile",
            &alice.token,
            json!({
                "display_name": "  Alice A.  ",
                "avatar_url": "https://cdn.example.com/a.png",
                "banner_url": "/api/avatars/banner.png",
                "custom_status": "busy",
                "bio": "hello",
                "pronouns": "she/her",
            }),
        )
        .await
        .expect(200);
    assert_eq!(updated["display_name"], "Alice A.");
    assert_eq!(updated["avatar_url"], "https://cdn.example.com/a.png");
    assert_eq!(updated["banner_url"], "/api/avatars/banner.png");
    assert_eq!(updated["custom_status"], "busy");
    assert_eq!(updated["bio"], "hello");
    assert_eq!(updated["pronouns"], "she/her");

    // The seed's PATCH: null keeps, "" clears.
    let updated = app
        .patch("/account/profile", &alice.token, json!({"bio": null, "pronouns": "", "avatar_url": " "}))
        .await
        .expect(200);
    assert_eq!(updated["bio"], "hello");
    assert!(updated.get("pronouns").is_none(), "cleared pronouns are omitted: {updated}");
    assert!(updated["avatar_url"].is_null());
    assert_eq!(updated["display_name"], "Alice A.");
    let me = app.get("/account/me", &alice.token).await.expect(200);
    assert_eq!(me, updated);
    // An empty body changes nothing.
    assert_eq!(app.put("/account/profile", &alice.token, json!({})).await.expect(200), me);
    app.stop().await;
}

async fn profile_update_rejects_bad_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let before = app.get("/account/me", &alice.token).await.expect(200);
    let cases = [
        json!({"display_name": ""}),
        json!({"display_name": "   "}),
        json!({"display_name": "x".repeat(65)}),
        json!({"avatar_url": "ftp://example.com/a.png"}),
        json!({"avatar_url": "javascript:alert(1)"}),
        json!({"avatar_url": format!("https://e.com/{}", "a".repeat(2040))}),
        json!({"banner_url": "example.com/b.png"}),
        json!({"custom_status": "x".repeat(129)}),
        json!({"bio": "x".repeat(501)}),
        json!({"pronouns": "x".repeat(51)}),
        json!({"display_name": 5}),
        // One bad field stops the whole edit.
        json!({"bio": "fine", "pronouns": "x".repeat(51)}),
    ];
    for body in cases {
        let reply = app.put("/account/profile", &alice.token, body.clone()).await;
        assert_eq!(reply.status.as_u16(), 400, "{body}: {}", reply.body);
        assert_eq!(reply.expect_error(400), "validation_error");
    }
    assert_eq!(app.get("/account/me", &alice.token).await.expect(200), before);
    assert_eq!(
        anonymous(&app, reqwest::Method::PUT, "/account/profile").await.expect_error(401),
        "unauthorized"
    );
    assert_eq!(
        anonymous(&app, reqwest::Method::PATCH, "/account/profile").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn profile_update_reaches_other_users_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut socket = app.ws(&bob.token).await;
    app.put("/account/profile", &alice.token, json!({"display_name": "Alice Live", "bio": "new bio"}))
        .await
        .expect(200);
    let frame = socket.expect("user_profile_updated").await;
    assert_eq!(frame["user_id"], alice.id.to_string());
    assert_eq!(frame["display_name"], "Alice Live");
    assert_eq!(frame["bio"], "new bio");
    app.stop().await;
}

async fn password_change_needs_the_current_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let change = |path: &'static str, current: &str, new: &str| {
        let body = json!({"current_password": current, "new_password": new});
        let token = alice.token.clone();
        let app = &app;
        async move {
            if path == "/account/password" {
                app.put(path, &token, body).await
            } else {
                app.post(path, &token, body).await
            }
        }
    };
    change("/account/password", "Wrong-Horse-9", "Battery-Staple-7").await.expect_error(400);
    change("/account/password", &alice.password, "weak").await.expect_error(400);
    app.put("/account/password", &alice.token, json!({"new_password": "Battery-Staple-7"}))
        .await
        .expect_error(400);
    login(&app, "alice", &alice.password).await.expect(200);
    let session = login(&app, "alice", &alice.password).await.expect(200);

    let reply = change("/account/password", &alice.password, "Battery-Staple-7").await.expect(200);
    assert!(reply.is_null(), "empty body expected, got {reply}");
    // Every session ends; the new password works, the old one not.
    refresh(&app, session["refresh_token"].as_str().unwrap()).await.expect_error(401);
    login(&app, "alice", &alice.password).await.expect_error(401);
    login(&app, "alice", "Battery-Staple-7").await.expect(200);

    // The seed's path does the same.
    change("/account/change-password", "Battery-Staple-7", "Another-Pass-5").await.expect(200);
    login(&app, "alice", "Another-Pass-5").await.expect(200);
    assert_eq!(
        anonymous(&app, reqwest::Method::PUT, "/account/password").await.expect_error(401),
        "unauthorized"
    );
    assert_eq!(
        anonymous(&app, reqwest::Method::POST, "/account/change-password").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn recovery_code_can_be_regenerated(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let reply = app.post("/account/regenerate-recovery-code", &alice.token, json!({})).await.expect(200);
    let code = reply["recovery_code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 19);
    assert_ne!(code, alice.recovery_code);
    let recover = |code: &str| {
        app.post_public(
            "/auth/recover",
            json!({"username": "alice", "recovery_code": code, "new_password": "Battery-Staple-7"}),
        )
    };
    recover(&alice.recovery_code).await.expect_error(400);
    recover(&code).await.expect(200);
    assert_eq!(
        anonymous(&app, reqwest::Method::POST, "/account/regenerate-recovery-code").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn account_deletion_needs_the_password_and_no_ownership(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    app.delete_with("/account", &alice.token, json!({"password": "Wrong-Horse-9"})).await.expect_error(400);
    app.delete_with("/account", &alice.token, json!({})).await.expect_error(400);
    // Owning a community blocks the deletion.
    let community = Uuid::now_v7();
    communities::ActiveModel {
        id: Set(community),
        name: Set("alice's".into()),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        owner_id: Set(alice.id),
        who_can_create_groups: Set("admin".into()),
        who_can_create_invites: Set("admin".into()),
        discoverable: Set(false),
        community_theme: Set(None),
        welcome_message: Set(None),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(&app))
    .await
    .unwrap();
    let reply = app.delete_with("/account", &alice.token, json!({"password": alice.password})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    assert!(users::Entity::find_by_id(alice.id).one(db(&app)).await.unwrap().is_some());
    communities::Entity::delete_by_id(community).exec(db(&app)).await.unwrap();

    let reply =
        app.delete_with("/account", &alice.token, json!({"password": alice.password})).await.expect(200);
    assert!(reply.is_null());
    assert!(users::Entity::find_by_id(alice.id).one(db(&app)).await.unwrap().is_none());
    // Its tokens die at once.
    assert_eq!(app.get("/account/me", &alice.token).await.expect_error(401), "unauthorized");
    refresh(&app, &alice.refresh_token).await.expect_error(401);
    login(&app, "alice", &alice.password).await.expect_error(401);

    // The seed's path.
    app.delete_with("/account/delete", &bob.token, json!({"password": "Wrong-Horse-9"}))
        .await
        .expect_error(400);
    app.delete_with("/account/delete", &bob.token, json!({"password": bob.password})).await.expect(200);
    assert!(users::Entity::find_by_id(bob.id).one(db(&app)).await.unwrap().is_none());
    assert_eq!(anonymous(&app, reqwest::Method::DELETE, "/account").await.expect_error(401), "unauthorized");
    assert_eq!(
        anonymous(&app, reqwest::Method::DELETE, "/account/delete").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn logout_all_revokes_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    add_session(&app, &alice, chrono::Duration::hours(1)).await;
    let reply = app.post("/account/logout-all", &alice.token, json!({})).await.expect(200);
    assert_eq!(reply["revoked_count"], 2);
    refresh(&app, &alice.refresh_token).await.expect_error(401);
    assert_eq!(app.get("/account/sessions", &alice.token).await.expect(200), json!([]));
    assert_eq!(
        app.post("/account/logout-all", &alice.token, json!({})).await.expect(200)["revoked_count"],
        0
    );
    assert_eq!(
        anonymous(&app, reqwest::Method::POST, "/account/logout-all").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn revoke_all_keeps_the_current_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let (_old, old_token) = add_session(&app, &alice, chrono::Duration::hours(2)).await;
    let (_older, _) = add_session(&app, &alice, chrono::Duration::hours(3)).await;

    // Naming the current session keeps exactly that one.
    let reply = app
        .post("/account/sessions/revoke-all", &alice.token, json!({"refresh_token": old_token}))
        .await
        .expect(200);
    assert_eq!(reply["revoked_count"], 2);
    refresh(&app, &alice.refresh_token).await.expect_error(401);
    let kept = refresh(&app, &old_token).await.expect(200);

    // Without a body the newest session stays (here: the one just rotated to).
    add_session(&app, &alice, chrono::Duration::hours(5)).await;
    let reply =
        app.request(reqwest::Method::POST, "/account/sessions/revoke-all", Some(&alice.token), None).await;
    assert_eq!(reply.expect(200)["revoked_count"], 1);
    refresh(&app, kept["refresh_token"].as_str().unwrap()).await.expect(200);

    // A token that is not one of the caller's sessions is refused.
    app.post("/account/sessions/revoke-all", &alice.token, json!({"refresh_token": "ab".repeat(32)}))
        .await
        .expect_error(400);
    assert_eq!(
        anonymous(&app, reqwest::Method::POST, "/account/sessions/revoke-all").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn sessions_are_listed_newest_first_and_revocable(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    // Log in from "Firefox": that is the newest session.
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .header("user-agent", FIREFOX)
        .json(&json!({"username": "alice", "password": alice.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (older, _) = add_session(&app, &alice, chrono::Duration::hours(1)).await;
    let (oldest, _) = add_session(&app, &alice, chrono::Duration::hours(2)).await;
    let (revoked, _) = add_session(&app, &alice, chrono::Duration::minutes(1)).await;
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, sea_orm::sea_query::Expr::value(palaver_entity::now()))
        .filter(refresh_tokens::Column::Id.eq(revoked))
        .exec(db(&app))
        .await
        .unwrap();
    let (expired, _) = add_session(&app, &alice, chrono::Duration::days(31)).await;

    let list = app.get("/account/sessions", &alice.token).await.expect(200);
    let listed = ids(&list);
    assert_eq!(listed.len(), 3, "{list}");
    assert_eq!(&listed[1..], &[older.to_string(), oldest.to_string()]);
    assert!(!listed.contains(&revoked.to_string()) && !listed.contains(&expired.to_string()));
    let newest = &list[0];
    assert_eq!(newest["device_name"], "Firefox on Linux");
    assert_eq!(newest["ip_address"], "127.0.0.1");
    assert!(newest["created_at"].is_string() && newest["expires_at"].is_string());

    // Revoke one; again is 404; someone else's, a revoked or a malformed id too.
    app.delete(&format!("/account/sessions/{older}"), &alice.token).await.expect(200);
    assert!(!ids(&app.get("/account/sessions", &alice.token).await.expect(200)).contains(&older.to_string()));
    app.delete(&format!("/account/sessions/{older}"), &alice.token).await.expect_error(404);
    app.delete(&format!("/account/sessions/{oldest}"), &bob.token).await.expect_error(404);
    app.delete(&format!("/account/sessions/{revoked}"), &alice.token).await.expect_error(404);
    app.delete("/account/sessions/not-a-uuid", &alice.token).await.expect_error(400);
    assert_eq!(ids(&app.get("/account/sessions", &alice.token).await.expect(200)).len(), 2);
    assert_eq!(
        anonymous(&app, reqwest::Method::GET, "/account/sessions").await.expect_error(401),
        "unauthorized"
    );
    assert_eq!(
        anonymous(&app, reqwest::Method::DELETE, &format!("/account/sessions/{oldest}"))
            .await
            .expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

async fn preferences_merge_shallowly(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    assert_eq!(app.get("/account/preferences", &alice.token).await.expect(200), json!({"preferences": {}}));
    let reply = app
        .put(
            "/account/preferences",
            &alice.token,
            json!({"preferences": {"theme": "dark", "layout": {"compact": true}}}),
        )
        .await
        .expect(200);
    assert_eq!(reply, json!({"preferences": {"theme": "dark", "layout": {"compact": true}}}));
    let reply = app
        .put(
            "/account/preferences",
            &alice.token,
            json!({"preferences": {"layout": {"wide": true}, "sendReadReceipts": false}}),
        )
        .await
        .expect(200);
    let expected =
        json!({"preferences": {"theme": "dark", "layout": {"wide": true}, "sendReadReceipts": false}});
    assert_eq!(reply, expected);
    assert_eq!(app.get("/account/preferences", &alice.token).await.expect(200), expected);
    // Another user's preferences are their own.
    assert_eq!(app.get("/account/preferences", &bob.token).await.expect(200), json!({"preferences": {}}));

    for bad in [
        json!({"preferences": [1, 2]}),
        json!({"preferences": "dark"}),
        json!({"preferences": null}),
        json!({}),
    ] {
        app.put("/account/preferences", &alice.token, bad).await.expect_error(400);
    }
    let huge = json!({"preferences": {"blob": "x".repeat(16 * 1024)}});
    app.put("/account/preferences", &alice.token, huge).await.expect_error(400);
    assert_eq!(app.get("/account/preferences", &alice.token).await.expect(200), expected);
    assert_eq!(
        anonymous(&app, reqwest::Method::GET, "/account/preferences").await.expect_error(401),
        "unauthorized"
    );
    assert_eq!(
        anonymous(&app, reqwest::Method::PUT, "/account/preferences").await.expect_error(401),
        "unauthorized"
    );
    app.stop().await;
}

crate::both_backends!(
    me_returns_the_caller,
    profile_update_changes_only_given_fields,
    profile_update_rejects_bad_values,
    profile_update_reaches_other_users_live,
    password_change_needs_the_current_password,
    recovery_code_can_be_regenerated,
    account_deletion_needs_the_password_and_no_ownership,
    logout_all_revokes_every_session,
    revoke_all_keeps_the_current_session,
    sessions_are_listed_newest_first_and_revocable,
    preferences_merge_shallowly,
);
