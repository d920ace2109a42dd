//! `/users/*`: search, profiles, visibility (self / instance owner / shared community), blocks.

use palaver_entity::{blocked_users, users};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{community, db};
use crate::common::{Backend, spawn_app};

fn usernames(list: &Value) -> Vec<&str> {
    list.as_array().expect("array").iter().map(|u| u["username"].as_str().expect("username")).collect()
}

async fn users_without_a_shared_community_cannot_see_each_other(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;

    assert_eq!(app.get(&format!("/users/{}", bob.id), &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&format!("/users/{}", alice.id), &bob.token).await.expect_error(404), "not_found");
    assert_eq!(app.get("/users/search?q=bob", &alice.token).await.expect(200), json!([]));

    // A community only alice and carol share does not make bob visible.
    community(&app, &[alice.id, carol.id]).await;
    app.get(&format!("/users/{}", carol.id), &alice.token).await.expect(200);
    app.get(&format!("/users/{}", bob.id), &alice.token).await.expect_error(404);
    app.get(&format!("/users/{}", alice.id), &bob.token).await.expect_error(404);
    app.stop().await;
}

async fn sharing_a_community_makes_users_visible(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    community(&app, &[alice.id, bob.id]).await;

    let user = app.get(&format!("/users/{}", bob.id), &alice.token).await.expect(200);
    assert_eq!(user["id"], bob.id.to_string());
    assert_eq!(user["username"], "bob");
    assert_eq!(user["display_name"], "bob display");
    assert_eq!(user["status"], "offline");
    assert_eq!(user["is_admin"], false);
    assert_eq!(user["is_owner"], false);
    assert!(user["avatar_url"].is_null() && user["custom_status"].is_null());
    assert!(user["created_at"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    assert!(user.get("email").is_none() && user.get("password_hash").is_none(), "no private fields: {user}");
    app.get(&format!("/users/{}", alice.id), &bob.token).await.expect(200);
    // Everyone sees themselves, community or not.
    assert_eq!(app.get(&format!("/users/{}", alice.id), &alice.token).await.expect(200)["username"], "alice");
    app.stop().await;
}

async fn instance_owner_sees_everyone_and_admins_do_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let user = app.get(&format!("/users/{}", alice.id), &owner.token).await.expect(200);
    assert_eq!(user["username"], "alice");
    let found = app.get("/users/search?q=o", &owner.token).await;
    assert_eq!(found.expect_error(400), "validation_error");
    // Owner search: all users but the caller, ordered by username.
    let found = app.get("/users/search?q=display", &owner.token).await.expect(200);
    assert_eq!(usernames(&found), ["alice", "bob"]);
    // The owner is not visible to others just for being the owner.
    app.get(&format!("/users/{}", owner.id), &alice.token).await.expect_error(404);

    // An instance admin (not owner) gets no exemption.
    let state = &app.server.as_ref().unwrap().state;
    let admin_token = state.tokens.issue(alice.id, "alice", true, false).unwrap();
    app.get(&format!("/users/{}", bob.id), &admin_token).await.expect_error(404);
    assert_eq!(app.get("/users/search?q=bob", &admin_token).await.expect(200), json!([]));
    app.stop().await;
}

async fn search_matches_username_or_display_name_case_insensitively(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let bobby = app.register("bobby").await;
    let carol = app.register("carol").await;
    let _stranger = app.register("bobstranger").await;
    community(&app, &[alice.id, bob.id, bobby.id, carol.id]).await;
    let mut row: users::ActiveModel =
        users::Entity::find_by_id(carol.id).one(db(&app)).await.unwrap().unwrap().into();
    row.display_name = Set("Carol Bobcat".into());
    row.update(db(&app)).await.unwrap();

    let found = app.get("/users/search?q=BOB", &alice.token).await.expect(200);
    assert_eq!(usernames(&found), ["bob", "bobby", "carol"], "visible matches only, by username");
    assert_eq!(found[1]["display_name"], "bobby display");
    assert_eq!(found[2]["display_name"], "Carol Bobcat");
    let found = app.get("/users/search?q=bCaT", &alice.token).await.expect(200);
    assert_eq!(usernames(&found), ["carol"]);
    // The caller is never in the results.
    let found = app.get("/users/search?q=DISPLAY", &alice.token).await.expect(200);
    assert_eq!(usernames(&found), ["bob", "bobby"]);
    // LIKE wildcards are plain characters.
    assert_eq!(app.get("/users/search?q=%25%25", &alice.token).await.expect(200), json!([]));
    assert_eq!(app.get("/users/search?q=__", &alice.token).await.expect(200), json!([]));
    app.stop().await;
}

async fn search_returns_at_most_twenty(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    for i in 0..22 {
        app.register(&format!("member{i:02}")).await;
    }
    let found = app.get("/users/search?q=member", &owner.token).await.expect(200);
    let names = usernames(&found);
    assert_eq!(names.len(), 20);
    assert_eq!(names[0], "member00");
    assert_eq!(names[19], "member19");
    app.stop().await;
}

async fn search_rejects_bad_queries(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    for path in ["/users/search", "/users/search?q=", "/users/search?q=a", "/users/search?q=%20%20a%20"] {
        assert_eq!(app.get(path, &owner.token).await.expect_error(400), "validation_error", "{path}");
    }
    let long = "a".repeat(257);
    app.get(&format!("/users/search?q={long}"), &owner.token).await.expect_error(400);
    let ok = "a".repeat(256);
    app.get(&format!("/users/search?q={ok}"), &owner.token).await.expect(200);
    // Byte length counts: 129 two-byte characters are 258 bytes.
    let wide = "é".repeat(129);
    app.get(&format!("/users/search?q={wide}"), &owner.token).await.expect_error(400);
    app.stop().await;
}

async fn get_user_unknown_or_malformed_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let code = app.get(&format!("/users/{}", Uuid::now_v7()), &owner.token).await.expect_error(404);
    assert_eq!(code, "not_found");
    assert_eq!(app.get("/users/not-a-uuid", &owner.token).await.expect_error(400), "validation_error");
    app.stop().await;
}

async fn users_endpoints_need_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let id = owner.id;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let calls: [(reqwest::Method, String, Option<Value>); 5] = [
        (get.clone(), "/users/search?q=owner".into(), None),
        (get.clone(), format!("/users/{id}"), None),
        (post.clone(), "/users/block".into(), Some(json!({"user_id": id}))),
        (post, format!("/users/unblock/{id}"), Some(json!({}))),
        (get, "/users/blocked".into(), None),
    ];
    for (method, path, body) in calls {
        let reply = app.request(method.clone(), &path, None, body.clone()).await;
        assert_eq!(reply.expect_error(401), "unauthorized", "{path}");
        let reply = app.request(method, &path, Some("garbage"), body).await;
        assert_eq!(reply.expect_error(401), "unauthorized", "{path}");
    }
    // Nothing was blocked by the refused calls.
    assert_eq!(blocked_users::Entity::find().all(db(&app)).await.unwrap(), vec![]);
    app.stop().await;
}

async fn block_list_and_unblock(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;

    assert_eq!(app.get("/users/blocked", &alice.token).await.expect(200), json!([]));
    let body = app.post("/users/block", &alice.token, json!({"user_id": bob.id})).await.expect(200);
    assert!(body.is_null(), "empty body, got {body}");
    let list = app.get("/users/blocked", &alice.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["blocked_id"], bob.id.to_string());
    let created_at = list[0]["created_at"].as_str().unwrap().to_string();
    assert!(chrono::DateTime::parse_from_rfc3339(&created_at).is_ok());

    // Repeat block: no-op, original time kept.
    app.post("/users/block", &alice.token, json!({"user_id": bob.id})).await.expect(200);
    let list = app.get("/users/blocked", &alice.token).await.expect(200);
    assert_eq!(list, json!([{"blocked_id": bob.id, "created_at": created_at}]));
    // Blocks are per blocker.
    assert_eq!(app.get("/users/blocked", &bob.token).await.expect(200), json!([]));
    app.post("/users/block", &alice.token, json!({"user_id": carol.id})).await.expect(200);
    assert_eq!(app.get("/users/blocked", &alice.token).await.expect(200).as_array().unwrap().len(), 2);

    app.post(&format!("/users/unblock/{}", bob.id), &alice.token, json!({})).await.expect(200);
    let list = app.get("/users/blocked", &alice.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["blocked_id"], carol.id.to_string());
    // No block (any more) → 404; bob cannot lift alice's block on carol.
    assert_eq!(
        app.post(&format!("/users/unblock/{}", bob.id), &alice.token, json!({})).await.expect_error(404),
        "not_found"
    );
    app.post(&format!("/users/unblock/{}", carol.id), &bob.token, json!({})).await.expect_error(404);
    app.post("/users/unblock/nope", &alice.token, json!({})).await.expect_error(400);
    assert_eq!(app.get("/users/blocked", &alice.token).await.expect(200).as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn block_rejects_self_unknown_and_malformed(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let code = app.post("/users/block", &alice.token, json!({"user_id": alice.id})).await.expect_error(400);
    assert_eq!(code, "validation_error");
    let code =
        app.post("/users/block", &alice.token, json!({"user_id": Uuid::now_v7()})).await.expect_error(404);
    assert_eq!(code, "not_found");
    app.post("/users/block", &alice.token, json!({"user_id": "bob"})).await.expect_error(400);
    app.post("/users/block", &alice.token, json!({})).await.expect_error(400);
    let rows = blocked_users::Entity::find()
        .filter(blocked_users::Column::BlockerId.eq(alice.id))
        .all(db(&app))
        .await
        .unwrap();
    assert!(rows.is_empty(), "nothing written: {rows:?}");
    app.stop().await;
}

crate::both_backends!(
    users_without_a_shared_community_cannot_see_each_other,
    sharing_a_community_makes_users_visible,
    instance_owner_sees_everyone_and_admins_do_not,
    search_matches_username_or_display_name_case_insensitively,
    search_returns_at_most_twenty,
    search_rejects_bad_queries,
    get_user_unknown_or_malformed_id,
    users_endpoints_need_a_token,
    block_list_and_unblock,
    block_rejects_self_unknown_and_malformed,
);
