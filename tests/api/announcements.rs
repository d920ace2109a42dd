//! Announcements: posting (`/admin/announcements`), listing and dismissing (`/announcements`
//! and the client's `/account/announcements` aliases), and the live `announcement` frame.

use std::time::Duration;

use palaver_entity::{announcement_dismissals, announcements, audit_log};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, TestApp, TestUser, spawn_app};

async fn post(app: &TestApp, admin: &TestUser, title: &str, body: &str) -> Value {
    app.post("/admin/announcements", &admin.token, json!({"title": title, "body": body})).await.expect(200)
}

fn titles(list: &Value) -> Vec<&str> {
    list.as_array().expect("array").iter().map(|a| a["title"].as_str().expect("title")).collect()
}

async fn admin_posts_and_users_list_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    assert_eq!(app.get("/announcements", &alice.token).await.expect(200), json!([]));

    let first = post(&app, &owner, "  Maintenance  ", "Down at **noon**.").await;
    assert_eq!(first["title"], "Maintenance");
    assert_eq!(first["body"], "Down at **noon**.");
    assert_eq!(first["created_by"], owner.id.to_string());
    assert!(chrono::DateTime::parse_from_rfc3339(first["created_at"].as_str().unwrap()).is_ok());
    post(&app, &owner, "Second", "b").await;
    post(&app, &owner, "Third", "c").await;

    for path in ["/announcements", "/account/announcements"] {
        let list = app.get(path, &alice.token).await.expect(200);
        assert_eq!(titles(&list), ["Third", "Second", "Maintenance"], "{path}");
        assert_eq!(list[2], first);
    }
    let audit = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("admin_create_announcement"))
        .all(db(&app))
        .await
        .unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0].user_id, Some(owner.id));
    app.stop().await;
}

async fn dismissing_hides_for_that_user_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let one = post(&app, &owner, "One", "1").await;
    let two = post(&app, &owner, "Two", "2").await;

    let path = format!("/announcements/{}/dismiss", one["id"].as_str().unwrap());
    assert!(app.post(&path, &alice.token, json!({})).await.expect(200).is_null(), "empty body");
    assert_eq!(titles(&app.get("/announcements", &alice.token).await.expect(200)), ["Two"]);
    assert_eq!(titles(&app.get("/announcements", &bob.token).await.expect(200)), ["Two", "One"]);
    // Idempotent, through either path.
    app.post(
        &format!("/account/announcements/{}/dismiss", one["id"].as_str().unwrap()),
        &alice.token,
        json!({}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/account/announcements/{}/dismiss", two["id"].as_str().unwrap()),
        &alice.token,
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(app.get("/account/announcements", &alice.token).await.expect(200), json!([]));
    // The admin list is not filtered by dismissals.
    app.post(&format!("/announcements/{}/dismiss", two["id"].as_str().unwrap()), &owner.token, json!({}))
        .await
        .expect(200);
    assert_eq!(titles(&app.get("/admin/announcements", &owner.token).await.expect(200)), ["Two", "One"]);
    assert_eq!(announcement_dismissals::Entity::find().all(db(&app)).await.unwrap().len(), 3);
    app.stop().await;
}

async fn dismissing_unknown_or_malformed_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    for prefix in ["/announcements", "/account/announcements"] {
        let path = format!("{prefix}/{}/dismiss", Uuid::now_v7());
        assert_eq!(app.post(&path, &alice.token, json!({})).await.expect_error(404), "not_found");
        let path = format!("{prefix}/nope/dismiss");
        assert_eq!(app.post(&path, &alice.token, json!({})).await.expect_error(400), "validation_error");
    }
    assert!(announcement_dismissals::Entity::find().all(db(&app)).await.unwrap().is_empty());
    app.stop().await;
}

async fn announcement_endpoints_need_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let one = post(&app, &owner, "One", "1").await;
    let id = one["id"].as_str().unwrap();
    for path in ["/announcements", "/account/announcements", "/admin/announcements"] {
        let reply = app.request(reqwest::Method::GET, path, None, None).await;
        assert_eq!(reply.expect_error(401), "unauthorized", "{path}");
    }
    for path in [format!("/announcements/{id}/dismiss"), format!("/account/announcements/{id}/dismiss")] {
        let reply = app.request(reqwest::Method::POST, &path, None, Some(json!({}))).await;
        assert_eq!(reply.expect_error(401), "unauthorized", "{path}");
    }
    let reply = app
        .request(
            reqwest::Method::POST,
            "/admin/announcements",
            None,
            Some(json!({"title": "t", "body": "b"})),
        )
        .await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert!(announcement_dismissals::Entity::find().all(db(&app)).await.unwrap().is_empty());
    assert_eq!(announcements::Entity::find().all(db(&app)).await.unwrap().len(), 1);
    app.stop().await;
}

async fn only_instance_staff_post_or_list_all(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let body = json!({"title": "t", "body": "b"});
    assert_eq!(
        app.post("/admin/announcements", &alice.token, body.clone()).await.expect_error(403),
        "forbidden"
    );
    // Permission is checked before the body.
    app.post("/admin/announcements", &alice.token, json!({})).await.expect_error(403);
    assert_eq!(app.get("/admin/announcements", &alice.token).await.expect_error(403), "forbidden");
    assert!(announcements::Entity::find().all(db(&app)).await.unwrap().is_empty());

    // An instance admin who is not the owner may.
    let state = &app.server.as_ref().unwrap().state;
    let admin_token = state.tokens.issue(bob.id, "bob", true, false).unwrap();
    let made = app.post("/admin/announcements", &admin_token, body).await.expect(200);
    assert_eq!(made["created_by"], bob.id.to_string());
    assert_eq!(titles(&app.get("/admin/announcements", &admin_token).await.expect(200)), ["t"]);
    app.stop().await;
}

async fn bad_announcements_are_refused_and_not_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let bodies = [
        json!({"title": "", "body": "b"}),
        json!({"title": "   ", "body": "b"}),
        json!({"title": "t", "body": " \n "}),
        json!({"title": "t".repeat(201), "body": "b"}),
        json!({"title": "t", "body": "b".repeat(5001)}),
        json!({"title": "é".repeat(101), "body": "b"}),
        json!({"title": "t"}),
        json!({"title": 5, "body": "b"}),
    ];
    for body in bodies {
        let code = app.post("/admin/announcements", &owner.token, body.clone()).await.expect_error(400);
        assert_eq!(code, "validation_error", "{body}");
    }
    assert!(announcements::Entity::find().all(db(&app)).await.unwrap().is_empty(), "nothing stored");
    // The limits themselves are fine.
    post(&app, &owner, &"t".repeat(200), &"b".repeat(5000)).await;
    app.stop().await;
}

async fn admin_list_is_capped_at_one_hundred(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    for i in 0..101 {
        post(&app, &owner, &format!("n{i:03}"), "b").await;
    }
    let list = app.get("/admin/announcements", &owner.token).await.expect(200);
    let titles = titles(&list);
    assert_eq!(titles.len(), 100);
    assert_eq!(titles[0], "n100");
    assert_eq!(titles[99], "n001");
    app.stop().await;
}

async fn announcement_reaches_every_connected_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let mut alice_ws = app.ws(&alice.token).await;
    let mut owner_ws = app.ws(&owner.token).await;
    let made = post(&app, &owner, "Live", "now").await;
    for ws in [&mut alice_ws, &mut owner_ws] {
        let frame = ws.expect("announcement").await;
        assert_eq!(frame["id"], made["id"]);
        assert_eq!(frame["title"], "Live");
        assert_eq!(frame["body"], "now");
        assert_eq!(frame["created_by"], owner.id.to_string());
        assert_eq!(frame["created_at"], made["created_at"]);
    }
    // A refused post sends nothing.
    app.post("/admin/announcements", &alice.token, json!({"title": "x", "body": "y"}))
        .await
        .expect_error(403);
    alice_ws.expect_no("announcement", Duration::from_millis(300)).await;
    app.stop().await;
}

crate::both_backends!(
    admin_posts_and_users_list_newest_first,
    dismissing_hides_for_that_user_only,
    dismissing_unknown_or_malformed_ids,
    announcement_endpoints_need_a_token,
    only_instance_staff_post_or_list_all,
    bad_announcements_are_refused_and_not_stored,
    admin_list_is_capped_at_one_hundred,
    announcement_reaches_every_connected_session,
);
