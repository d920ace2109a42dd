//! `POST /reports`.

use palaver_entity::{audit_log, reports};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::common::fixtures::db;
use crate::common::{Backend, spawn_app};

async fn report_is_created_pending_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let target = Uuid::now_v7();
    let report = app
        .post(
            "/reports",
            &alice.token,
            json!({"report_type": "message", "target_id": target, "reason": "  spam  "}),
        )
        .await
        .expect(200);
    assert_eq!(report["reporter_id"], alice.id.to_string());
    assert_eq!(report["report_type"], "message");
    assert_eq!(report["target_id"], target.to_string());
    assert_eq!(report["reason"], "spam");
    assert_eq!(report["status"], "pending");
    assert!(
        report["reviewed_by"].is_null() && report["reviewed_at"].is_null() && report["admin_notes"].is_null()
    );
    assert!(report.as_object().unwrap().contains_key("reviewed_by"), "always emitted: {report}");
    assert!(chrono::DateTime::parse_from_rfc3339(report["created_at"].as_str().unwrap()).is_ok());
    let id: Uuid = report["id"].as_str().unwrap().parse().unwrap();

    let stored = reports::Entity::find_by_id(id).one(db(&app)).await.unwrap().expect("stored");
    assert_eq!(stored.reporter_id, alice.id);
    assert_eq!(stored.status, "pending");
    let audit = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("report_created"))
        .all(db(&app))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].user_id, Some(alice.id));

    for kind in ["user", "file"] {
        let r = app
            .post("/reports", &alice.token, json!({"report_type": kind, "target_id": target, "reason": "x"}))
            .await
            .expect(200);
        assert_eq!(r["report_type"], kind);
    }
    let reason = "é".repeat(1000);
    app.post("/reports", &alice.token, json!({"report_type": "user", "target_id": target, "reason": reason}))
        .await
        .expect(200);
    app.stop().await;
}

async fn bad_reports_are_refused_and_not_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let target = Uuid::now_v7();
    let bodies = [
        json!({"report_type": "comment", "target_id": target, "reason": "spam"}),
        json!({"report_type": "Message", "target_id": target, "reason": "spam"}),
        json!({"report_type": "message", "target_id": target, "reason": "   "}),
        json!({"report_type": "message", "target_id": target, "reason": ""}),
        json!({"report_type": "message", "target_id": target, "reason": "a".repeat(2001)}),
        json!({"report_type": "message", "target_id": target, "reason": "é".repeat(1001)}),
        json!({"report_type": "message", "target_id": "not-a-uuid", "reason": "spam"}),
        json!({"report_type": "message", "reason": "spam"}),
    ];
    for body in bodies {
        let code = app.post("/reports", &alice.token, body.clone()).await.expect_error(400);
        assert_eq!(code, "validation_error", "{body}");
    }
    let body = json!({"report_type": "message", "target_id": target, "reason": "spam"});
    let reply = app.request(reqwest::Method::POST, "/reports", None, Some(body.clone())).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert!(reports::Entity::find().all(db(&app)).await.unwrap().is_empty(), "nothing stored");
    let audit = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("report_created"))
        .all(db(&app))
        .await
        .unwrap();
    assert!(audit.is_empty());
    app.stop().await;
}

crate::both_backends!(report_is_created_pending_and_audited, bad_reports_are_refused_and_not_stored);
