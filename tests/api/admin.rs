//! `/admin/*` (so far: registration invites; announcements are in announcements.rs).

use palaver_entity::{audit_log, registration_invites};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, TestApp, spawn_app};

async fn audit_actions(app: &TestApp, action: &str) -> Vec<audit_log::Model> {
    audit_log::Entity::find().filter(audit_log::Column::Action.eq(action)).all(db(app)).await.unwrap()
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

async fn admin_creates_lists_and_deletes_invites(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    assert_eq!(app.get("/admin/invites", &owner.token).await.expect(200), json!([]));

    let invite = app
        .post("/admin/invites", &owner.token, json!({"max_uses": 3, "expires_in_hours": 48}))
        .await
        .expect(200);
    let code = invite["code"].as_str().unwrap();
    assert_eq!(code.len(), 12);
    assert!(code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    assert_eq!(invite["created_by"], owner.id.to_string());
    assert_eq!(invite["max_uses"], 3);
    assert_eq!(invite["used_count"], 0);
    let lifetime = time(&invite["expires_at"]) - time(&invite["created_at"]);
    assert_eq!(lifetime, chrono::Duration::hours(48));
    assert!((time(&invite["created_at"]).to_utc() - chrono::Utc::now()).num_seconds().abs() < 60);

    let unlimited = app
        .post("/admin/invites", &owner.token, json!({"max_uses": null, "expires_in_hours": null}))
        .await
        .expect(200);
    assert!(unlimited["max_uses"].is_null() && unlimited["expires_at"].is_null());
    assert_ne!(unlimited["code"], invite["code"]);
    // Both fields may be left out.
    let bare = app.post("/admin/invites", &owner.token, json!({})).await.expect(200);
    assert!(bare["max_uses"].is_null() && bare["expires_at"].is_null());
    let year = app.post("/admin/invites", &owner.token, json!({"expires_in_hours": 8760})).await.expect(200);
    assert_eq!(time(&year["expires_at"]) - time(&year["created_at"]), chrono::Duration::hours(8760));

    let list = app.get("/admin/invites", &owner.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert_eq!(list[3], invite, "newest first, same object as created");
    assert_eq!(audit_actions(&app, "admin_create_invite").await.len(), 4);

    let id = invite["id"].as_str().unwrap();
    let body = app.delete(&format!("/admin/invites/{id}"), &owner.token).await.expect(200);
    assert!(body.is_null(), "empty body, got {body}");
    let list = app.get("/admin/invites", &owner.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(list.as_array().unwrap().iter().all(|i| i["id"] != id));
    assert_eq!(
        app.delete(&format!("/admin/invites/{id}"), &owner.token).await.expect_error(404),
        "not_found"
    );
    let audit = audit_actions(&app, "admin_delete_invite").await;
    assert_eq!(audit.len(), 1, "only the successful delete");
    assert_eq!(audit[0].user_id, Some(owner.id));
    app.stop().await;
}

async fn bad_invites_are_refused_and_not_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let bodies = [
        json!({"max_uses": 1, "expires_in_hours": 0}),
        json!({"max_uses": 1, "expires_in_hours": 8761}),
        json!({"max_uses": 1, "expires_in_hours": -5}),
        json!({"max_uses": 0}),
        json!({"max_uses": -1}),
        json!({"max_uses": "three"}),
        json!({"expires_in_hours": 1.5}),
    ];
    for body in bodies {
        let code = app.post("/admin/invites", &owner.token, body.clone()).await.expect_error(400);
        assert_eq!(code, "validation_error", "{body}");
    }
    assert!(registration_invites::Entity::find().all(db(&app)).await.unwrap().is_empty(), "nothing stored");
    assert!(audit_actions(&app, "admin_create_invite").await.is_empty());
    let code =
        app.delete(&format!("/admin/invites/{}", Uuid::now_v7()), &owner.token).await.expect_error(404);
    assert_eq!(code, "not_found");
    assert_eq!(app.delete("/admin/invites/nope", &owner.token).await.expect_error(400), "validation_error");
    app.stop().await;
}

async fn invites_are_for_instance_staff_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let invite = app.post("/admin/invites", &owner.token, json!({"max_uses": 1})).await.expect(200);
    let id = invite["id"].as_str().unwrap();

    assert_eq!(app.get("/admin/invites", &alice.token).await.expect_error(403), "forbidden");
    assert_eq!(app.post("/admin/invites", &alice.token, json!({})).await.expect_error(403), "forbidden");
    // Permission comes before validation.
    app.post("/admin/invites", &alice.token, json!({"expires_in_hours": 0})).await.expect_error(403);
    assert_eq!(
        app.delete(&format!("/admin/invites/{id}"), &alice.token).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.request(reqwest::Method::GET, "/admin/invites", None, None).await.expect_error(401),
        "unauthorized"
    );
    let reply = app.request(reqwest::Method::POST, "/admin/invites", None, Some(json!({}))).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let reply = app.request(reqwest::Method::DELETE, &format!("/admin/invites/{id}"), None, None).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert_eq!(
        registration_invites::Entity::find().all(db(&app)).await.unwrap().len(),
        1,
        "still there, no new one"
    );

    // An instance admin (not owner) is allowed.
    let state = &app.server.as_ref().unwrap().state;
    let admin_token = state.tokens.issue(alice.id, "alice", true, false).unwrap();
    assert_eq!(app.get("/admin/invites", &admin_token).await.expect(200).as_array().unwrap().len(), 1);
    let made = app.post("/admin/invites", &admin_token, json!({})).await.expect(200);
    assert_eq!(made["created_by"], alice.id.to_string());
    app.delete(&format!("/admin/invites/{id}"), &admin_token).await.expect(200);
    app.stop().await;
}

crate::both_backends!(
    admin_creates_lists_and_deletes_invites,
    bad_invites_are_refused_and_not_stored,
    invites_are_for_instance_staff_only,
);
