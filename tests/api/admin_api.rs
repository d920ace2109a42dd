//! `/admin/*` beyond invites and announcements: users (list/search, suspend, unsuspend,
//! delete, admin flag, password reset), purges with their live `message_deleted` frames,
//! message quarantine, the audit log, reports, instance settings and the webhooks overview.

use std::time::Duration;

use palaver_entity::{
    audit_log, blocked_hashes, channel_members, channels, communities, community_members, files,
    group_members, groups, messages, refresh_tokens, reports, users, webhooks,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{
    channel_with, community, db, group, insert_message, live, ordered_ids, send_text,
};
use crate::common::{Backend, TestApp, TestUser, spawn_app};

// ---------------------------------------------------------------------------------------
// Helpers

async fn audit_rows(app: &TestApp, action: &str) -> Vec<audit_log::Model> {
    audit_log::Entity::find().filter(audit_log::Column::Action.eq(action)).all(db(app)).await.unwrap()
}

/// The single audit entry for `action`, by `actor`; returns its metadata.
async fn audited_once(app: &TestApp, action: &str, actor: Uuid) -> Value {
    let rows = audit_rows(app, action).await;
    assert_eq!(rows.len(), 1, "one {action} entry, got {rows:?}");
    assert_eq!(rows[0].user_id, Some(actor), "{action} actor");
    serde_json::from_str(rows[0].metadata.as_deref().unwrap_or("null")).unwrap()
}

async fn user_row(app: &TestApp, id: Uuid) -> Option<users::Model> {
    users::Entity::find_by_id(id).one(db(app)).await.unwrap()
}

/// An access token for `user` claiming instance admin (the DB flag is not needed for the
/// caller side: the wire reads the flags from the token).
fn admin_token(app: &TestApp, user: &TestUser) -> String {
    let state = &app.server.as_ref().unwrap().state;
    state.tokens.issue(user.id, &user.username, true, false).unwrap()
}

/// Makes `user` an admin in the database (via the owner) and returns a token that says so.
async fn promote(app: &TestApp, owner: &TestUser, user: &TestUser) -> String {
    app.put(&format!("/admin/users/{}/admin", user.id), &owner.token, json!({"is_admin": true}))
        .await
        .expect(200);
    admin_token(app, user)
}

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::StatusCode {
    app.post_public("/auth/login", json!({"username": username, "password": password})).await.status
}

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array().expect("array").iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

async fn insert_file(
    app: &TestApp,
    uploader: Uuid,
    channel: Option<Uuid>,
    checksum: &str,
) -> (Uuid, std::path::PathBuf) {
    let id = Uuid::now_v7();
    let relative = format!("{}/{}/{id}", &checksum[..2], &checksum[2..4]);
    let path = app.config.data_dir.join("files").join(&relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"ciphertext bytes").unwrap();
    files::ActiveModel {
        id: Set(id),
        uploader_id: Set(uploader),
        channel_id: Set(channel),
        encrypted_name: Set("name".into()),
        size_bytes: Set(16),
        content_type: Set(None),
        checksum: Set(checksum.into()),
        storage_path: Set(relative),
        thumbnail_path: Set(None),
        quarantined_at: Set(None),
        quarantined_by: Set(None),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(app))
    .await
    .unwrap();
    (id, path)
}

async fn history(app: &TestApp, user: &TestUser, channel: Uuid) -> Vec<String> {
    ids_of(&app.get(&format!("/channels/{channel}/messages"), &user.token).await.expect(200))
}

// ---------------------------------------------------------------------------------------
// Every admin route: 401 without a token, 403 for an ordinary user

async fn admin_routes_refuse_anonymous_and_ordinary_users(backend: Backend) {
    use reqwest::Method;
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let some = Uuid::now_v7();
    let routes: Vec<(Method, String, Value)> = vec![
        (Method::GET, "/admin/users".into(), json!(null)),
        (Method::POST, format!("/admin/users/{}/suspend", bob.id), json!({"reason": null})),
        (Method::POST, format!("/admin/users/{}/unsuspend", bob.id), json!({})),
        (Method::DELETE, format!("/admin/users/{}", bob.id), json!({})),
        (Method::PUT, format!("/admin/users/{}/admin", bob.id), json!({"is_admin": true})),
        (Method::PUT, format!("/admin/users/{}/password", bob.id), json!({"new_password": "New-Passw0rd!"})),
        (Method::POST, format!("/admin/purge/message/{some}"), json!({})),
        (Method::POST, format!("/admin/purge/user/{}/messages", bob.id), json!({})),
        (Method::POST, format!("/admin/purge/channel/{some}"), json!({})),
        (Method::POST, format!("/admin/messages/{some}/quarantine"), json!({})),
        (Method::POST, format!("/admin/messages/{some}/unquarantine"), json!({})),
        (Method::GET, "/admin/audit-log".into(), json!(null)),
        (Method::GET, "/admin/reports".into(), json!(null)),
        (Method::POST, format!("/admin/reports/{some}/review"), json!({"status": "resolved"})),
        (Method::GET, "/admin/settings".into(), json!(null)),
        (Method::PUT, "/admin/settings".into(), json!({"e2e_enabled": "false"})),
        (Method::GET, "/admin/webhooks".into(), json!(null)),
    ];
    for (method, path, body) in &routes {
        let body = (!body.is_null()).then(|| body.clone());
        let reply = app.request(method.clone(), path, Some(&alice.token), body.clone()).await;
        assert_eq!(reply.status.as_u16(), 403, "{method} {path} as a member: {}", reply.body);
        assert_eq!(reply.expect_error(403), "forbidden");
        let reply = app.request(method.clone(), path, None, body).await;
        assert_eq!(reply.status.as_u16(), 401, "{method} {path} without a token: {}", reply.body);
        assert_eq!(reply.expect_error(401), "unauthorized");
        let reply = app.request(method.clone(), path, Some("garbage"), None).await;
        assert_eq!(reply.expect_error(401), "unauthorized", "{method} {path} with a bad token");
    }
    // Nothing happened to bob, and nothing was audited as an admin action.
    let bob_row = user_row(&app, bob.id).await.unwrap();
    assert!(bob_row.suspended_at.is_none() && !bob_row.is_admin);
    let admin_actions = audit_log::Entity::find().all(db(&app)).await.unwrap();
    assert!(admin_actions.iter().all(|a| !a.action.starts_with("admin_")), "{admin_actions:?}");
    // The admin flag is the owner's alone: an instance admin gets 403 too.
    let admin = admin_token(&app, &alice);
    let reply = app.put(&format!("/admin/users/{}/admin", bob.id), &admin, json!({"is_admin": true})).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    assert!(!user_row(&app, bob.id).await.unwrap().is_admin);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Users: list and search

async fn users_are_listed_newest_first_with_search_paging_and_memberships(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    // Alice is in two communities and one group: listed by name.
    let c1 = community(&app, &[alice.id, bob.id]).await;
    let c2 = community(&app, &[bob.id, alice.id]).await;
    communities::Entity::update_many()
        .col_expr(communities::Column::Name, sea_orm::sea_query::Expr::value("Zebra"))
        .filter(communities::Column::Id.eq(c1))
        .exec(db(&app))
        .await
        .unwrap();
    communities::Entity::update_many()
        .col_expr(communities::Column::Name, sea_orm::sea_query::Expr::value("Aardvark"))
        .filter(communities::Column::Id.eq(c2))
        .exec(db(&app))
        .await
        .unwrap();
    let g = group(&app, c1, &[alice.id]).await;
    users::Entity::update_many()
        .col_expr(users::Column::DisplayName, sea_orm::sea_query::Expr::value("Carol THE Great"))
        .filter(users::Column::Id.eq(carol.id))
        .exec(db(&app))
        .await
        .unwrap();

    let list = app.get("/admin/users", &owner.token).await.expect(200);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["carol", "bob", "alice", "owner"], "newest account first");
    let a = list.as_array().unwrap().iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(a["id"], alice.id.to_string());
    assert_eq!(a["email"], "alice@example.com");
    assert_eq!(a["display_name"], "alice display");
    assert!(a["avatar_url"].is_null() && a["suspended_at"].is_null() && a["suspended_reason"].is_null());
    assert_eq!(a["is_admin"], false);
    assert_eq!(a["is_owner"], false);
    assert!(chrono::DateTime::parse_from_rfc3339(a["created_at"].as_str().unwrap()).is_ok());
    assert_eq!(
        a["communities"],
        json!([{"id": c2, "name": "Aardvark", "role": "member"}, {"id": c1, "name": "Zebra", "role": "owner"}])
    );
    assert_eq!(a["groups"], json!([{"id": g, "name": "group", "role": "owner"}]));
    let o = list.as_array().unwrap().iter().find(|u| u["username"] == "owner").unwrap();
    assert_eq!((o["is_owner"].clone(), o["is_admin"].clone()), (json!(true), json!(true)));
    assert_eq!((o["groups"].clone(), o["communities"].clone()), (json!([]), json!([])));

    // Search: case-insensitive substring of username, display name or email.
    let found = |q: &str| {
        let app = &app;
        let token = owner.token.clone();
        let q = q.to_string();
        async move {
            let list = app.get(&format!("/admin/users?search={q}"), &token).await.expect(200);
            list.as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found("ALI").await, ["alice"]);
    assert_eq!(found("the%20great").await, ["carol"], "display name");
    assert_eq!(found("bob%40example").await, ["bob"], "email");
    assert_eq!(found("example.com").await, ["carol", "bob", "alice", "owner"]);
    assert_eq!(found("%25").await, Vec::<String>::new(), "a literal %, not a wildcard");
    // The seed's q= works too.
    let list = app.get("/admin/users?q=bob", &owner.token).await.expect(200);
    assert_eq!(ids_of(&list), [bob.id.to_string()]);

    // Paging: limit/offset (client) and page (seed, pages of `limit`).
    let page = app.get("/admin/users?limit=2&offset=1", &owner.token).await.expect(200);
    assert_eq!(ids_of(&page), [bob.id.to_string(), alice.id.to_string()]);
    let page = app.get("/admin/users?limit=3&page=2", &owner.token).await.expect(200);
    assert_eq!(ids_of(&page), [owner.id.to_string()]);
    assert_eq!(ids_of(&app.get("/admin/users?limit=0", &owner.token).await.expect(200)).len(), 1, "clamped");
    assert_eq!(ids_of(&app.get("/admin/users?limit=500", &owner.token).await.expect(200)).len(), 4);
    assert_eq!(app.get("/admin/users?offset=10", &owner.token).await.expect(200), json!([]));
    assert_eq!(app.get("/admin/users?limit=many", &owner.token).await.expect_error(400), "validation_error");
    assert_eq!(app.get("/admin/users?offset=x", &owner.token).await.expect_error(400), "validation_error");

    // An instance admin (token claim) may list too.
    let admin = admin_token(&app, &alice);
    assert_eq!(ids_of(&app.get("/admin/users", &admin).await.expect(200)).len(), 4);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Users: suspension

async fn suspension_ends_sessions_and_refuses_login_until_lifted(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut socket = app.ws(&alice.token).await;
    let mut bystander = app.ws(&bob.token).await;
    app.get("/account/me", &alice.token).await.expect(200);

    let path = format!("/admin/users/{}/suspend", alice.id);
    let body = app.post(&path, &owner.token, json!({"reason": "  spamming  "})).await.expect(200);
    assert!(body.is_null(), "empty body, got {body}");

    // The open socket is closed at once; other users' sockets are untouched.
    assert_eq!(socket.expect_close(Duration::from_secs(5)).await, Some(4001));
    bystander.send(json!({"type": "ping", "timestamp": 7})).await;
    assert_eq!(bystander.expect("pong").await["timestamp"], 7);
    // REST and new sockets refuse the still-unexpired token; login says why; refresh is dead.
    assert_eq!(app.get("/account/me", &alice.token).await.expect_error(401), "unauthorized");
    let mut ws = app.ws_raw().await;
    ws.send(json!({"type": "authenticate", "token": alice.token})).await;
    assert_eq!(ws.expect("error").await["code"], "unauthorized");
    let reply =
        app.post_public("/auth/login", json!({"username": "alice", "password": alice.password})).await;
    let code = reply.body["code"].clone();
    let message = reply.body["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(reply.expect_error(400), "validation_error", "{code}");
    assert!(message.contains("suspended") && message.contains("spamming"), "{message}");
    let reply = app.post_public("/auth/refresh", json!({"refresh_token": alice.refresh_token})).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let live_tokens = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::UserId.eq(alice.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .count(db(&app))
        .await
        .unwrap();
    assert_eq!(live_tokens, 0, "every refresh token revoked");

    // Persisted and shown to admins.
    let row = user_row(&app, alice.id).await.unwrap();
    assert!(row.suspended_at.is_some());
    assert_eq!(row.suspended_reason.as_deref(), Some("spamming"));
    let list = app.get("/admin/users?search=alice", &owner.token).await.expect(200);
    assert_eq!(list[0]["suspended_reason"], "spamming");
    assert!(chrono::DateTime::parse_from_rfc3339(list[0]["suspended_at"].as_str().unwrap()).is_ok());
    let meta = audited_once(&app, "admin_suspend_user", owner.id).await;
    assert_eq!(meta["target_user_id"], alice.id.to_string());
    assert_eq!(meta["reason"], "spamming");

    // Suspending again only updates the reason.
    app.post(&path, &owner.token, json!({"reason": null})).await.expect(200);
    assert_eq!(user_row(&app, alice.id).await.unwrap().suspended_reason, None);

    // Unsuspend restores the account: the unexpired token works again and login succeeds.
    let body =
        app.post(&format!("/admin/users/{}/unsuspend", alice.id), &owner.token, json!({})).await.expect(200);
    assert!(body.is_null());
    app.get("/account/me", &alice.token).await.expect(200);
    let mut ws = app.ws(&alice.token).await;
    ws.send(json!({"type": "ping", "timestamp": 9})).await;
    assert_eq!(ws.expect("pong").await["timestamp"], 9);
    assert_eq!(login(&app, "alice", &alice.password).await, 200);
    let row = user_row(&app, alice.id).await.unwrap();
    assert!(row.suspended_at.is_none() && row.suspended_reason.is_none());
    let list = app.get("/admin/users?search=alice", &owner.token).await.expect(200);
    assert!(list[0]["suspended_at"].is_null() && list[0]["suspended_reason"].is_null());
    audited_once(&app, "admin_unsuspend_user", owner.id).await;
    // Unsuspending someone who is not suspended is harmless.
    app.post(&format!("/admin/users/{}/unsuspend", bob.id), &owner.token, json!({})).await.expect(200);
    app.stop().await;
}

async fn suspension_refuses_self_staff_unknown_and_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let alice_admin = promote(&app, &owner, &alice).await;
    let suspend = |id: Uuid| format!("/admin/users/{id}/suspend");

    // Owner suspending self, an admin suspending self, the owner or another admin: all 400.
    assert_eq!(
        app.post(&suspend(owner.id), &owner.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post(&suspend(alice.id), &alice_admin, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post(&suspend(owner.id), &alice_admin, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post(&suspend(alice.id), &owner.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    // Bad reason, bad body, bad id, unknown user.
    let long = "x".repeat(501);
    let reply = app.post(&suspend(bob.id), &alice_admin, json!({"reason": long})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    let reply = app.post(&suspend(bob.id), &alice_admin, json!({"reason": 5})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    let reply = app.post("/admin/users/not-a-uuid/suspend", &alice_admin, json!({})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    let reply = app.post(&suspend(Uuid::now_v7()), &alice_admin, json!({})).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let reply =
        app.post(&format!("/admin/users/{}/unsuspend", Uuid::now_v7()), &alice_admin, json!({})).await;
    assert_eq!(reply.expect_error(404), "not_found");
    // Nobody was suspended or audited as such.
    for id in [owner.id, alice.id, bob.id] {
        assert!(user_row(&app, id).await.unwrap().suspended_at.is_none());
    }
    assert!(audit_rows(&app, "admin_suspend_user").await.is_empty());
    // An instance admin may suspend an ordinary user (exactly 500 bytes of reason is fine).
    app.post(&suspend(carol.id), &alice_admin, json!({"reason": "y".repeat(500)})).await.expect(200);
    audited_once(&app, "admin_suspend_user", alice.id).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Users: deletion

async fn deleting_a_user_hands_over_ownership_and_cleans_up(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let owned = community(&app, &[alice.id, bob.id, carol.id]).await;
    let owned_group = group(&app, owned, &[alice.id, bob.id]).await;
    // Two DMs of alice: with bob (bob stays) and with carol (carol already gone from it).
    let dm_bob = app.post("/dms", &alice.token, json!({"target_user_id": bob.id})).await.expect(200);
    let dm_bob: Uuid = dm_bob["channel"]["id"].as_str().unwrap().parse().unwrap();
    let dm_carol = app.post("/dms", &alice.token, json!({"target_user_id": carol.id})).await.expect(200);
    let dm_carol: Uuid = dm_carol["channel"]["id"].as_str().unwrap().parse().unwrap();
    channel_members::Entity::delete_many()
        .filter(channel_members::Column::ChannelId.eq(dm_carol))
        .filter(channel_members::Column::UserId.eq(carol.id))
        .exec(db(&app))
        .await
        .unwrap();
    let (_, blob) = insert_file(&app, alice.id, None, &"ab".repeat(32)).await;
    let mut socket = app.ws(&alice.token).await;

    let body = app.delete(&format!("/admin/users/{}", alice.id), &owner.token).await.expect(200);
    assert!(body.is_null());
    assert!(user_row(&app, alice.id).await.is_none(), "account gone");
    assert_eq!(socket.expect_close(Duration::from_secs(5)).await, Some(4001));
    assert_eq!(app.get("/account/me", &alice.token).await.expect_error(401), "unauthorized");
    assert_eq!(login(&app, "alice", &alice.password).await, 401);
    // Ownership passed to the instance owner, who is now the owner member.
    let c = communities::Entity::find_by_id(owned).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(c.owner_id, owner.id);
    let g = groups::Entity::find_by_id(owned_group).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(g.owner_id, owner.id);
    let m = community_members::Entity::find_by_id((owned, owner.id)).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(m.role, "owner");
    let m = group_members::Entity::find_by_id((owned_group, owner.id)).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(m.role, "owner");
    // The DM bob is still in stays; the empty one is gone; alice's blob is gone.
    assert!(channels::Entity::find_by_id(dm_bob).one(db(&app)).await.unwrap().is_some());
    assert!(channels::Entity::find_by_id(dm_carol).one(db(&app)).await.unwrap().is_none());
    assert!(!blob.exists(), "the deleted user's blobs are removed");
    let list = app.get("/admin/users", &owner.token).await.expect(200);
    assert!(!ids_of(&list).contains(&alice.id.to_string()));
    let meta = audited_once(&app, "admin_delete_user", owner.id).await;
    assert_eq!(meta["target_user_id"], alice.id.to_string());
    assert_eq!(meta["communities_reassigned"], 1);
    assert_eq!(meta["dm_channels_deleted"], 1);

    assert_eq!(
        app.delete(&format!("/admin/users/{}", alice.id), &owner.token).await.expect_error(404),
        "not_found"
    );
    app.stop().await;
}

async fn deletion_protects_self_owner_and_admins(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let alice_admin = promote(&app, &owner, &alice).await;
    let _bob_admin = promote(&app, &owner, &bob).await;
    let delete = |id: Uuid| format!("/admin/users/{id}");
    assert_eq!(app.delete(&delete(owner.id), &owner.token).await.expect_error(400), "validation_error");
    assert_eq!(app.delete(&delete(owner.id), &alice_admin).await.expect_error(400), "validation_error");
    assert_eq!(app.delete(&delete(alice.id), &alice_admin).await.expect_error(400), "validation_error");
    // Another admin: revoke the role first (even the owner must).
    assert_eq!(app.delete(&delete(bob.id), &alice_admin).await.expect_error(400), "validation_error");
    assert_eq!(app.delete(&delete(bob.id), &owner.token).await.expect_error(400), "validation_error");
    assert_eq!(app.delete("/admin/users/123", &owner.token).await.expect_error(400), "validation_error");
    assert_eq!(app.delete(&delete(Uuid::now_v7()), &owner.token).await.expect_error(404), "not_found");
    for id in [owner.id, alice.id, bob.id] {
        assert!(user_row(&app, id).await.is_some());
    }
    assert!(audit_rows(&app, "admin_delete_user").await.is_empty());
    // Once demoted, bob can be deleted (by an admin).
    app.put(&format!("/admin/users/{}/admin", bob.id), &owner.token, json!({"is_admin": false}))
        .await
        .expect(200);
    app.delete(&delete(bob.id), &alice_admin).await.expect(200);
    assert!(user_row(&app, bob.id).await.is_none());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Users: admin flag and password reset

async fn only_the_owner_grants_and_revokes_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let path = format!("/admin/users/{}/admin", alice.id);
    app.put(&path, &owner.token, json!({"is_admin": true})).await.expect(200);
    assert!(user_row(&app, alice.id).await.unwrap().is_admin);
    let meta = audited_once(&app, "admin_grant_admin", owner.id).await;
    assert_eq!(meta["target_user_id"], alice.id.to_string());
    // Takes effect in tokens issued from now on: a fresh login can use the admin API.
    let reply =
        app.post_public("/auth/login", json!({"username": "alice", "password": alice.password})).await;
    let body = reply.expect(200);
    assert_eq!(body["user"]["is_admin"], true);
    let fresh = body["access_token"].as_str().unwrap();
    app.get("/admin/users", fresh).await.expect(200);
    // …but an admin still cannot change admin flags.
    assert_eq!(app.put(&path, fresh, json!({"is_admin": false})).await.expect_error(403), "forbidden");

    // Refusals: self, the owner (by anyone), bad bodies, unknown and malformed ids.
    let own = format!("/admin/users/{}/admin", owner.id);
    assert_eq!(
        app.put(&own, &owner.token, json!({"is_admin": false})).await.expect_error(400),
        "validation_error"
    );
    for body in [json!({}), json!({"is_admin": "yes"}), json!({"is_admin": null})] {
        assert_eq!(app.put(&path, &owner.token, body).await.expect_error(400), "validation_error");
    }
    let unknown = format!("/admin/users/{}/admin", Uuid::now_v7());
    assert_eq!(
        app.put(&unknown, &owner.token, json!({"is_admin": true})).await.expect_error(404),
        "not_found"
    );
    assert!(user_row(&app, owner.id).await.unwrap().is_admin, "owner untouched");

    app.put(&path, &owner.token, json!({"is_admin": false})).await.expect(200);
    assert!(!user_row(&app, alice.id).await.unwrap().is_admin);
    audited_once(&app, "admin_revoke_admin", owner.id).await;
    app.stop().await;
}

async fn password_reset_replaces_the_password_and_revokes_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let alice_admin = promote(&app, &owner, &alice).await;
    let path = |id: Uuid| format!("/admin/users/{id}/password");

    let body =
        app.put(&path(bob.id), &alice_admin, json!({"new_password": "Brand-New-Pass1"})).await.expect(200);
    assert!(body.is_null());
    assert_eq!(login(&app, "bob", &bob.password).await, 401, "old password refused");
    let reply = app.post_public("/auth/refresh", json!({"refresh_token": bob.refresh_token})).await;
    assert_eq!(reply.expect_error(401), "unauthorized", "refresh tokens revoked");
    assert_eq!(login(&app, "bob", "Brand-New-Pass1").await, 200);
    let meta = audited_once(&app, "admin_reset_password", alice.id).await;
    assert_eq!(meta["target_user_id"], bob.id.to_string());
    assert!(!meta.to_string().contains("Brand-New-Pass1"), "the password is never audited");

    // Password rules, bad body, self, the owner, an admin (by an admin), unknown.
    for body in [json!({"new_password": "short"}), json!({"new_password": "alllowercase1!"}), json!({})] {
        assert_eq!(app.put(&path(carol.id), &alice_admin, body).await.expect_error(400), "validation_error");
    }
    let good = json!({"new_password": "Another-Pass2"});
    assert_eq!(
        app.put(&path(alice.id), &alice_admin, good.clone()).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.put(&path(owner.id), &alice_admin, good.clone()).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.put(&path(owner.id), &owner.token, good.clone()).await.expect_error(400),
        "validation_error"
    );
    let unknown = path(Uuid::now_v7());
    assert_eq!(app.put(&unknown, &alice_admin, good.clone()).await.expect_error(404), "not_found");
    let _bob_admin = promote(&app, &owner, &bob).await;
    assert_eq!(
        app.put(&path(bob.id), &alice_admin, good.clone()).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(login(&app, "carol", &carol.password).await, 200, "carol untouched");
    assert_eq!(login(&app, "owner", &owner.password).await, 200, "owner untouched");
    assert_eq!(audit_rows(&app, "admin_reset_password").await.len(), 1);
    // The owner may reset an admin's password.
    app.put(&path(bob.id), &owner.token, good).await.expect(200);
    assert_eq!(login(&app, "bob", "Another-Pass2").await, 200);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Purge

async fn purging_a_message_tells_subscribers_and_empties_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_with(&app, &alice, &[&bob]).await;
    let mut sender = live(&app, &alice, channel).await;
    let mut watcher = live(&app, &bob, channel).await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        let ack = send_text(&mut sender, channel, text).await;
        sent.push(ack["id"].as_str().unwrap().to_string());
        watcher.expect("new_message").await;
    }
    let target = &sent[1];

    let reply =
        app.post(&format!("/admin/purge/message/{target}"), &owner.token, json!({})).await.expect(200);
    assert_eq!(reply, json!({"messages_deleted": 1, "files_deleted": 0, "hashes_blocked": 0}));
    let frame = watcher.expect("message_deleted").await;
    assert_eq!(frame["message_id"], target.as_str());
    let frame = sender.expect("message_deleted").await;
    assert_eq!(frame["message_id"], target.as_str());
    assert_eq!(history(&app, &bob, channel).await, [sent[2].clone(), sent[0].clone()]);
    let row = messages::Entity::find_by_id(target.parse::<Uuid>().unwrap()).one(db(&app)).await.unwrap();
    assert!(row.is_none(), "hard-deleted, not soft");
    let meta = audited_once(&app, "admin_purge_message", owner.id).await;
    assert_eq!(meta["message_id"], target.as_str());
    assert_eq!(meta["block_hashes"], false);

    // Again → 404; malformed id and bad flag → 400; block_hashes=true is only recorded.
    let again = format!("/admin/purge/message/{target}");
    assert_eq!(app.post(&again, &owner.token, json!({})).await.expect_error(404), "not_found");
    let reply = app.post("/admin/purge/message/xyz", &owner.token, json!({})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    let reply = app
        .post(&format!("/admin/purge/message/{}?block_hashes=maybe", sent[0]), &owner.token, json!({}))
        .await;
    assert_eq!(reply.expect_error(400), "validation_error");
    assert_eq!(history(&app, &bob, channel).await.len(), 2, "a refused purge deletes nothing");
    let reply = app
        .post(&format!("/admin/purge/message/{}?block_hashes=true", sent[0]), &owner.token, json!({}))
        .await;
    assert_eq!(reply.expect(200)["hashes_blocked"], 0);
    assert_eq!(watcher.expect("message_deleted").await["message_id"], sent[0].as_str());
    assert_eq!(audit_rows(&app, "admin_purge_message").await.len(), 2);
    assert_eq!(blocked_hashes::Entity::find().count(db(&app)).await.unwrap(), 0);
    app.stop().await;
}

async fn purging_a_users_messages_and_a_channel_removes_messages_and_files(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let general = channel_with(&app, &alice, &[&bob]).await;
    let random = channel_with(&app, &bob, &[&alice]).await;
    let ids = ordered_ids(6);
    insert_message(&app, ids[0], general, Some(alice.id), b"a1").await;
    insert_message(&app, ids[1], general, Some(bob.id), b"b1").await;
    insert_message(&app, ids[2], random, Some(alice.id), b"a2").await;
    insert_message(&app, ids[3], random, Some(bob.id), b"b2").await;
    insert_message(&app, ids[4], general, Some(alice.id), b"a3").await;
    insert_message(&app, ids[5], random, Some(bob.id), b"b3").await;
    let hash_a = "a1".repeat(32);
    let hash_b = "b2".repeat(32);
    let (_, alice_blob) = insert_file(&app, alice.id, Some(general), &hash_a).await;
    let (_, alice_blob2) = insert_file(&app, alice.id, None, &hash_a).await;
    let (_, bob_blob) = insert_file(&app, bob.id, Some(random), &hash_b).await;
    let mut watch_general = live(&app, &bob, general).await;
    let mut watch_random = live(&app, &bob, random).await;

    // Alice's messages everywhere, and her files; hashes blocked on request.
    let path = format!("/admin/purge/user/{}/messages?block_hashes=true", alice.id);
    let reply = app.post(&path, &owner.token, json!({})).await.expect(200);
    assert_eq!(reply, json!({"messages_deleted": 3, "files_deleted": 2, "hashes_blocked": 1}));
    let mut deleted = Vec::new();
    for _ in 0..2 {
        deleted
            .push(watch_general.expect("message_deleted").await["message_id"].as_str().unwrap().to_string());
    }
    deleted.sort();
    assert_eq!(deleted, [ids[0].to_string(), ids[4].to_string()]);
    assert_eq!(watch_random.expect("message_deleted").await["message_id"], ids[2].to_string());
    assert_eq!(history(&app, &bob, general).await, [ids[1].to_string()]);
    assert_eq!(history(&app, &bob, random).await, [ids[5].to_string(), ids[3].to_string()]);
    assert!(!alice_blob.exists() && !alice_blob2.exists() && bob_blob.exists());
    let remaining = files::Entity::find().all(db(&app)).await.unwrap();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].uploader_id, bob.id);
    let blocked = blocked_hashes::Entity::find().all(db(&app)).await.unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!((blocked[0].hash.as_str(), blocked[0].blocked_by), (hash_a.as_str(), Some(owner.id)));
    let meta = audited_once(&app, "admin_purge_user_messages", owner.id).await;
    assert_eq!(meta["target_user_id"], alice.id.to_string());
    assert_eq!(meta["messages_deleted"], 3);
    // Nothing left of alice's: a second purge finds nothing (and blocks nothing twice).
    let reply = app.post(&path, &owner.token, json!({})).await.expect(200);
    assert_eq!(reply, json!({"messages_deleted": 0, "files_deleted": 0, "hashes_blocked": 0}));

    // The whole channel, without blocking.
    let reply =
        app.post(&format!("/admin/purge/channel/{random}"), &owner.token, json!({})).await.expect(200);
    assert_eq!(reply, json!({"messages_deleted": 2, "files_deleted": 1, "hashes_blocked": 0}));
    let mut deleted = Vec::new();
    for _ in 0..2 {
        deleted
            .push(watch_random.expect("message_deleted").await["message_id"].as_str().unwrap().to_string());
    }
    deleted.sort();
    assert_eq!(deleted, [ids[3].to_string(), ids[5].to_string()]);
    assert_eq!(history(&app, &bob, random).await, Vec::<String>::new());
    assert_eq!(history(&app, &bob, general).await, [ids[1].to_string()], "other channels untouched");
    assert!(!bob_blob.exists());
    assert_eq!(blocked_hashes::Entity::find().count(db(&app)).await.unwrap(), 1);
    assert!(channels::Entity::find_by_id(random).one(db(&app)).await.unwrap().is_some(), "channel kept");
    let meta = audited_once(&app, "admin_purge_channel", owner.id).await;
    assert_eq!(meta["channel_id"], random.to_string());

    // Unknown targets, malformed ids and flags.
    let unknown_user = format!("/admin/purge/user/{}/messages", Uuid::now_v7());
    assert_eq!(app.post(&unknown_user, &owner.token, json!({})).await.expect_error(404), "not_found");
    let unknown_channel = format!("/admin/purge/channel/{}", Uuid::now_v7());
    assert_eq!(app.post(&unknown_channel, &owner.token, json!({})).await.expect_error(404), "not_found");
    assert_eq!(
        app.post("/admin/purge/channel/nope", &owner.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    let bad_flag = format!("/admin/purge/channel/{general}?block_hashes=2");
    assert_eq!(app.post(&bad_flag, &owner.token, json!({})).await.expect_error(400), "validation_error");
    assert_eq!(history(&app, &bob, general).await.len(), 1, "refused purges delete nothing");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Message quarantine

async fn quarantine_hides_a_message_until_lifted(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let channel = channel_with(&app, &alice, &[]).await;
    let ids = ordered_ids(2);
    insert_message(&app, ids[0], channel, Some(alice.id), b"fine").await;
    insert_message(&app, ids[1], channel, Some(alice.id), b"bad").await;
    let q = format!("/admin/messages/{}/quarantine", ids[1]);
    let uq = format!("/admin/messages/{}/unquarantine", ids[1]);

    // Not quarantined yet: unquarantine is 404.
    assert_eq!(app.post(&uq, &owner.token, json!({})).await.expect_error(404), "not_found");
    let body = app.post(&q, &owner.token, json!({})).await.expect(200);
    assert!(body.is_null());
    assert_eq!(history(&app, &alice, channel).await, [ids[0].to_string()]);
    let row = messages::Entity::find_by_id(ids[1]).one(db(&app)).await.unwrap().unwrap();
    assert!(row.quarantined_at.is_some(), "kept, only hidden");
    assert_eq!(app.post(&q, &owner.token, json!({})).await.expect_error(404), "not_found", "already");
    let meta = audited_once(&app, "admin_quarantine_message", owner.id).await;
    assert_eq!(meta["message_id"], ids[1].to_string());

    app.post(&uq, &owner.token, json!({})).await.expect(200);
    assert_eq!(history(&app, &alice, channel).await, [ids[1].to_string(), ids[0].to_string()]);
    assert_eq!(app.post(&uq, &owner.token, json!({})).await.expect_error(404), "not_found", "already");
    audited_once(&app, "admin_unquarantine_message", owner.id).await;

    let unknown = format!("/admin/messages/{}/quarantine", Uuid::now_v7());
    assert_eq!(app.post(&unknown, &owner.token, json!({})).await.expect_error(404), "not_found");
    let reply = app.post("/admin/messages/zzz/quarantine", &owner.token, json!({})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Audit log

async fn audit_log_filters_and_pages_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    for _ in 0..3 {
        assert_eq!(login(&app, "alice", &alice.password).await, 200);
    }
    assert_eq!(login(&app, "alice", "Wrong-Password-1").await, 401);

    let all = app.get("/admin/audit-log", &owner.token).await.expect(200);
    let total = all["total"].as_u64().unwrap();
    assert!(total >= 6, "{all}");
    assert_eq!((all["page"].clone(), all["per_page"].clone()), (json!(1), json!(50)));
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, total);
    let times: Vec<_> = entries
        .iter()
        .map(|e| chrono::DateTime::parse_from_rfc3339(e["created_at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let e = &entries[0];
    for key in ["id", "user_id", "action", "ip_address", "user_agent", "metadata", "created_at"] {
        assert!(e.get(key).is_some(), "{key} missing in {e}");
    }

    let logins = app
        .get(&format!("/admin/audit-log?action=login&user_id={}", alice.id), &owner.token)
        .await
        .expect(200);
    assert_eq!(logins["total"], 3);
    assert!(
        logins["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "login" && e["user_id"] == alice.id.to_string())
    );
    let failed = app.get("/admin/audit-log?action=login_failed", &owner.token).await.expect(200);
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["entries"][0]["ip_address"], "127.0.0.1");
    let page = app.get("/admin/audit-log?action=login&per_page=2&page=2", &owner.token).await.expect(200);
    assert_eq!(
        (page["total"].clone(), page["page"].clone(), page["per_page"].clone()),
        (json!(3), json!(2), json!(2))
    );
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["id"], logins["entries"][2]["id"], "the oldest login on page 2");
    let clamped = app.get("/admin/audit-log?per_page=1000&page=0", &owner.token).await.expect(200);
    assert_eq!((clamped["page"].clone(), clamped["per_page"].clone()), (json!(1), json!(100)));

    // Date range (inclusive bounds; unparsable bounds are ignored).
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let enc = |s: &str| s.replace('+', "%2B");
    let none =
        app.get(&format!("/admin/audit-log?date_from={}", enc(&future)), &owner.token).await.expect(200);
    assert_eq!(none["total"], 0);
    let within = format!("/admin/audit-log?date_from={}&date_to={}", enc(&past), enc(&future));
    assert_eq!(app.get(&within, &owner.token).await.expect(200)["total"], total);
    let ignored = app.get("/admin/audit-log?date_to=yesterday", &owner.token).await.expect(200);
    assert_eq!(ignored["total"], total);

    assert_eq!(
        app.get("/admin/audit-log?user_id=alice", &owner.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.get("/admin/audit-log?page=first", &owner.token).await.expect_error(400),
        "validation_error"
    );
    let nobody =
        app.get(&format!("/admin/audit-log?user_id={}", Uuid::now_v7()), &owner.token).await.expect(200);
    assert_eq!(nobody, json!({"entries": [], "total": 0, "page": 1, "per_page": 50}));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Reports

async fn reports_are_listed_by_status_and_reviewed(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let mut made = Vec::new();
    for i in 0..3 {
        let body = json!({"report_type": "user", "target_id": owner.id, "reason": format!("reason {i}")});
        made.push(app.post("/reports", &alice.token, body).await.expect(200));
    }
    let list = app.get("/admin/reports", &owner.token).await.expect(200);
    assert_eq!(
        (list["total"].clone(), list["page"].clone(), list["per_page"].clone()),
        (json!(3), json!(1), json!(50))
    );
    assert_eq!(list["reports"][0], made[2], "newest first, the Report object as created");

    let id = made[0]["id"].as_str().unwrap();
    let path = format!("/admin/reports/{id}/review");
    let reviewed = app
        .post(&path, &owner.token, json!({"status": "resolved", "admin_notes": "  handled  "}))
        .await
        .expect(200);
    assert_eq!(reviewed["status"], "resolved");
    assert_eq!(reviewed["admin_notes"], "handled");
    assert_eq!(reviewed["reviewed_by"], owner.id.to_string());
    assert!(chrono::DateTime::parse_from_rfc3339(reviewed["reviewed_at"].as_str().unwrap()).is_ok());
    assert_eq!(reviewed["reason"], "reason 0");
    let row = reports::Entity::find_by_id(id.parse::<Uuid>().unwrap()).one(db(&app)).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.reviewed_by), ("resolved", Some(owner.id)));
    let meta = audited_once(&app, "report_reviewed", owner.id).await;
    assert_eq!(meta["report_id"], id);

    let pending = app.get("/admin/reports?status=pending", &owner.token).await.expect(200);
    assert_eq!(pending["total"], 2);
    let resolved = app.get("/admin/reports?status=resolved", &owner.token).await.expect(200);
    assert_eq!(resolved["total"], 1);
    assert_eq!(resolved["reports"][0]["id"], id);
    let paged = app.get("/admin/reports?per_page=1&page=3", &owner.token).await.expect(200);
    assert_eq!(paged["reports"][0]["id"], made[0]["id"]);
    assert_eq!(
        app.get("/admin/reports?status=open", &owner.token).await.expect_error(400),
        "validation_error"
    );

    // Bad reviews change nothing.
    let other = format!("/admin/reports/{}/review", made[1]["id"].as_str().unwrap());
    for body in [
        json!({"status": "pending"}),
        json!({"status": "closed"}),
        json!({}),
        json!({"status": "dismissed", "admin_notes": "n".repeat(5001)}),
    ] {
        assert_eq!(app.post(&other, &owner.token, body).await.expect_error(400), "validation_error");
    }
    let unknown = format!("/admin/reports/{}/review", Uuid::now_v7());
    assert_eq!(
        app.post(&unknown, &owner.token, json!({"status": "dismissed"})).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.get("/admin/reports?status=pending", &owner.token).await.expect(200)["total"], 2);
    assert_eq!(audit_rows(&app, "report_reviewed").await.len(), 1);
    // Notes may be cleared with null; an admin (token claim) may review.
    let admin = admin_token(&app, &alice);
    let again =
        app.post(&other, &admin, json!({"status": "dismissed", "admin_notes": null})).await.expect(200);
    assert!(again["admin_notes"].is_null());
    assert_eq!(again["reviewed_by"], alice.id.to_string());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Settings and webhooks overview

async fn settings_are_validated_stored_and_visible(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    assert_eq!(app.get("/admin/settings", &owner.token).await.expect(200), json!({}));
    let saved = app
        .put("/admin/settings", &owner.token, json!({"max_pins_per_channel": "10", "e2e_enabled": "false"}))
        .await
        .expect(200);
    assert_eq!(saved, json!({"max_pins_per_channel": "10", "e2e_enabled": "false"}));
    let config = app.get_public("/auth/config").await.expect(200);
    assert_eq!(config["max_pins_per_channel"], 10);
    assert_eq!(config["e2e_enabled"], false);
    let meta = audited_once(&app, "admin_update_settings", owner.id).await;
    assert_eq!(meta["changes"]["max_pins_per_channel"], "10");

    for body in [
        json!({"max_pins_per_channel": "0"}),
        json!({"max_messages_cache": "10001", "e2e_enabled": "true"}),
        json!({"e2e_enabled": "yes"}),
        json!({"theme": "dark"}),
        json!({"max_pins_per_channel": 20}),
        json!(["e2e_enabled"]),
    ] {
        assert_eq!(
            app.put("/admin/settings", &owner.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    // Nothing of a refused update was saved (e2e_enabled stayed "false").
    assert_eq!(app.get("/admin/settings", &owner.token).await.expect(200), saved);
    let saved =
        app.put("/admin/settings", &owner.token, json!({"max_messages_cache": "50"})).await.expect(200);
    assert_eq!(saved["max_messages_cache"], "50");
    assert_eq!(saved["e2e_enabled"], "false", "the full map");
    app.stop().await;
}

async fn webhooks_overview_pages_without_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let channel = channel_with(&app, &alice, &[]).await;
    assert_eq!(
        app.get("/admin/webhooks", &owner.token).await.expect(200),
        json!({"webhooks": [], "total": 0})
    );
    let mut made = Vec::new();
    for i in 0..3 {
        let id = Uuid::now_v7();
        webhooks::ActiveModel {
            id: Set(id),
            channel_id: Set(channel),
            name: Set(format!("hook {i}")),
            token_hash: Set(format!("{i:064}")),
            avatar_url: Set(None),
            active: Set(i != 1),
            created_by: Set(Some(alice.id)),
            created_at: Set(palaver_entity::now() + chrono::Duration::seconds(i)),
        }
        .insert(db(&app))
        .await
        .unwrap();
        made.push(id);
    }
    let all = app.get("/admin/webhooks", &owner.token).await.expect(200);
    assert_eq!(all["total"], 3);
    let first = &all["webhooks"][0];
    assert_eq!(first["id"], made[2].to_string(), "newest first");
    assert_eq!(first["channel_id"], channel.to_string());
    assert_eq!(first["name"], "hook 2");
    assert_eq!(first["active"], true);
    assert_eq!(first["created_by"], alice.id.to_string());
    assert!(first["created_at"].is_string());
    assert!(first.get("token").is_none() && first.get("token_hash").is_none());
    assert_eq!(all["webhooks"][1]["active"], false);
    let page = app.get("/admin/webhooks?per_page=2&page=2", &owner.token).await.expect(200);
    assert_eq!(page["total"], 3);
    assert_eq!(ids_of(&page["webhooks"]), [made[0].to_string()]);
    assert_eq!(
        app.get("/admin/webhooks?per_page=x", &owner.token).await.expect_error(400),
        "validation_error"
    );
    app.stop().await;
}

crate::both_backends!(
    admin_routes_refuse_anonymous_and_ordinary_users,
    users_are_listed_newest_first_with_search_paging_and_memberships,
    suspension_ends_sessions_and_refuses_login_until_lifted,
    suspension_refuses_self_staff_unknown_and_bad_input,
    deleting_a_user_hands_over_ownership_and_cleans_up,
    deletion_protects_self_owner_and_admins,
    only_the_owner_grants_and_revokes_admin,
    password_reset_replaces_the_password_and_revokes_sessions,
    purging_a_message_tells_subscribers_and_empties_history,
    purging_a_users_messages_and_a_channel_removes_messages_and_files,
    quarantine_hides_a_message_until_lifted,
    audit_log_filters_and_pages_newest_first,
    reports_are_listed_by_status_and_reviewed,
    settings_are_validated_stored_and_visible,
    webhooks_overview_pages_without_tokens,
);
