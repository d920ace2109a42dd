//! Serving the built web client (`PALAVER_WEB_DIR`) and the client configuration it reads.

use serde_json::json;

use crate::common::{Backend, spawn_app, spawn_app_with};

async fn web_client_is_served_with_spa_fallback_and_api_404s_stay_json(backend: Backend) {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>Chatalot</title>").unwrap();
    std::fs::create_dir(web.path().join("assets")).unwrap();
    std::fs::write(web.path().join("assets/app-1234.js"), "console.log(1)").unwrap();
    let dir = web.path().to_path_buf();
    let app = spawn_app_with(backend, move |c| c.web_dir = Some(dir)).await;
    let get = |path: &str| app.client.get(format!("http://{}{path}", app.addr)).send();

    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert!(index.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(index.text().await.unwrap().contains("Chatalot"));

    let asset = get("/assets/app-1234.js").await.unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.headers()["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(asset.text().await.unwrap(), "console.log(1)");

    // A client-side route reloads into the SPA.
    let route = get("/channels/some-channel").await.unwrap();
    assert_eq!(route.status(), 200);
    assert!(route.text().await.unwrap().contains("Chatalot"));
    // Path traversal never leaves the web dir.
    let outside = get("/..%2f..%2fetc%2fpasswd").await.unwrap();
    assert!(!outside.text().await.unwrap().contains("root:"));

    // The API keeps its own 404s and answers as before.
    assert_eq!(app.get_public("/no-such-endpoint").await.expect_error(404), "not_found");
    app.get_public("/health").await.expect(200);
    app.stop().await;
}

async fn without_a_web_dir_other_paths_are_json_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.client.get(format!("http://{}/index.html", app.addr)).send().await.unwrap();
    assert_eq!(reply.status(), 404);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    app.stop().await;
}

async fn ice_servers_from_configuration_reach_auth_config(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let config = app.get_public("/auth/config").await.expect(200);
    assert!(config.get("ice_servers").is_none(), "omitted when none are configured: {config}");
    app.stop().await;

    let servers = json!([{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]);
    let configured = servers.as_array().unwrap().clone();
    let app = spawn_app_with(backend, move |c| c.ice_servers = configured).await;
    let config = app.get_public("/auth/config").await.expect(200);
    assert_eq!(config["ice_servers"], servers);
    app.stop().await;
}

crate::both_backends!(
    web_client_is_served_with_spa_fallback_and_api_404s_stay_json,
    without_a_web_dir_other_paths_are_json_404,
    ice_servers_from_configuration_reach_auth_config,
);
