//! Feedback (multipart, stored) and the GIF proxy (503 when unconfigured; Giphy results
//! mapped, paged and cached when configured — against a local stand-in for Giphy).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use palaver_entity::feedback;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::channels::{db, users};
use crate::common::{Backend, TestApp, spawn_app, spawn_app_with};

async fn post_form(app: &TestApp, token: Option<&str>, form: reqwest::multipart::Form) -> (u16, Value) {
    let mut req = app.client.post(app.url("/feedback")).multipart(form);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn form(title: &str, description: &str, category: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("title", title.to_string())
        .text("description", description.to_string())
        .text("category", category.to_string())
}

async fn feedback_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];

    let screenshot = reqwest::multipart::Part::bytes(vec![0x89, b'P', b'N', b'G']).file_name("shot.png");
    let (status, body) = post_form(
        &app,
        Some(&alice.token),
        form(" It crashed ", "steps…", "bug").part("screenshot", screenshot),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["issue_number"].is_null());
    assert!(body["message"].is_string());
    let rows = feedback::Entity::find().all(db(&app)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].title.as_str(), rows[0].category.as_str()), ("It crashed", "bug"));
    assert_eq!(rows[0].user_id, Some(alice.id));

    for bad in [
        form("", "d", "bug"),
        form(&"t".repeat(201), "d", "bug"),
        form("t", "", "bug"),
        form("t", &"d".repeat(5001), "ui"),
        form("t", "d", "complaint"),
        reqwest::multipart::Form::new().text("title", "t").text("category", "other"),
        form("t", "d", "bug")
            .part("screenshot", reqwest::multipart::Part::bytes(vec![0u8; 5 * 1024 * 1024 + 1])),
    ] {
        let (status, body) = post_form(&app, Some(&alice.token), bad).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("validation_error")), "{body}");
    }
    let json_body = app
        .post("/feedback", &alice.token, json!({"title": "t", "description": "d", "category": "bug"}))
        .await;
    assert_eq!(json_body.expect_error(400), "validation_error");
    let (status, body) = post_form(&app, None, form("t", "d", "bug")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(feedback::Entity::find().all(db(&app)).await.unwrap().len(), 1, "refusals store nothing");
    app.stop().await;
}

async fn gifs_unconfigured_answer_503(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    for path in ["/gifs/search?q=cat", "/gifs/trending", "/gifs/search"] {
        let reply = app.get(path, &u[0].token).await;
        let message = reply.body["message"].as_str().unwrap_or_default().to_string();
        assert_eq!(reply.expect_error(503), "unavailable");
        assert!(message.contains("not configured"), "{message}");
    }
    let anonymous = app.request(reqwest::Method::GET, "/gifs/trending", None, None).await;
    assert_eq!(anonymous.expect_error(401), "unauthorized");
    app.stop().await;
}

/// A stand-in for Giphy: `/v1/gifs/search` answers two results out of five; anything else
/// answers 500. Counts the requests it served.
async fn fake_giphy() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (hits2, paths2) = (hits.clone(), paths.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            hits2.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 8192];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let head = String::from_utf8_lossy(&buf[..read]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            paths2.lock().unwrap().push(path.clone());
            let (status, body) = if path.starts_with("/v1/gifs/search") {
                let body = json!({
                    "data": [
                        {"id": "g1", "title": "Cat 1", "images": {
                            "original": {"url": "https://media/g1.gif", "width": "480", "height": "360"},
                            "fixed_width_small": {"url": "https://media/g1-small.gif"}}},
                        {"id": "g2", "title": "Cat 2", "images": {
                            "original": {"url": "https://media/g2.gif", "width": "200", "height": "100"}}},
                    ],
                    "pagination": {"total_count": 5, "count": 2, "offset": 0},
                });
                ("200 OK", body.to_string())
            } else {
                ("500 Internal Server Error", "{}".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}"), hits, paths)
}

async fn gifs_proxy_giphy_with_paging_and_cache(backend: Backend) {
    let (giphy, hits, paths) = fake_giphy().await;
    let app = spawn_app_with(backend, |c| {
        c.giphy_api_key = Some("test-key".into());
        c.giphy_api_url = giphy;
    })
    .await;
    let (_root, u) = users(&app, &["alice"]).await;
    let token = &u[0].token;

    let page = app.get("/gifs/search?q=cat&limit=2", token).await.expect(200);
    assert_eq!(page["next"], "2");
    assert_eq!(
        page["results"][0],
        json!({"id": "g1", "title": "Cat 1", "preview_url": "https://media/g1-small.gif",
               "url": "https://media/g1.gif", "width": 480, "height": 360})
    );
    assert_eq!(page["results"][1]["preview_url"], "https://media/g2.gif");
    let asked = paths.lock().unwrap()[0].clone();
    assert!(
        asked.contains("q=cat") && asked.contains("api_key=test-key") && asked.contains("limit=2"),
        "{asked}"
    );

    // The same question is answered from the cache.
    app.get("/gifs/search?q=cat&limit=2", token).await.expect(200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Empty or overlong text: an empty page without asking upstream.
    let empty = app.get("/gifs/search?q=", token).await.expect(200);
    assert_eq!(empty, json!({"results": [], "next": null}));
    let long = format!("/gifs/search?q={}", "x".repeat(257));
    assert_eq!(app.get(&long, token).await.expect(200)["results"], json!([]));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Bad paging is the client's mistake; an upstream failure is ours.
    assert_eq!(app.get("/gifs/search?q=cat&pos=later", token).await.expect_error(400), "validation_error");
    assert_eq!(app.get("/gifs/trending?limit=5", token).await.expect_error(500), "internal_error");
    app.stop().await;
}

crate::both_backends!(
    feedback_is_stored,
    gifs_unconfigured_answer_503,
    gifs_proxy_giphy_with_paging_and_cache
);
