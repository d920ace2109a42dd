use crate::common::{Backend, spawn_app};

async fn health_reports_ok_with_version_and_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app.get_public("/health").await.expect(200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["db_healthy"], true);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_secs"].is_u64());
    app.stop().await;
}

async fn unknown_api_path_is_a_json_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let code = app.get_public("/no/such/route").await.expect_error(404);
    assert_eq!(code, "not_found");
    app.stop().await;
}

crate::both_backends!(health_reports_ok_with_version_and_database, unknown_api_path_is_a_json_404);
