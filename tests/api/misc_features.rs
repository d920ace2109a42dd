//! Feedback (multipart, stored, opened as a GitHub issue when configured) and the GIF proxy (503 when unconfigured; Giphy results
//! mapped, paged and cached when configured — against a local stand-in for Giphy).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use palaver_entity::feedback;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::fixtures::{db, users};
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

/// What a stand-in server saw: the request head (request line and headers) and the body.
type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A one-request-per-connection HTTP stand-in answering `answer(request line)` →
/// (status line, JSON body). Returns its base URL, a hit counter and what it saw.
async fn stand_in(answer: fn(&str) -> (&'static str, String)) -> (String, Arc<AtomicUsize>, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Arc::default();
    let (hits2, seen2) = (hits.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            hits2.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let head_end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(at + 4);
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
            let (status, reply) = answer(head.lines().next().unwrap_or_default());
            seen2.lock().unwrap().push((head, body));
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}"), hits, seen)
}

/// Giphy: `/v1/gifs/search` answers two results out of five; anything else answers 500.
fn giphy(request_line: &str) -> (&'static str, String) {
    if !request_line.contains(" /v1/gifs/search?") {
        return ("500 Internal Server Error", "{}".into());
    }
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
}

/// GitHub: opening an issue in `acme/chat` answers issue 42.
fn github(request_line: &str) -> (&'static str, String) {
    if request_line.starts_with("POST /repos/acme/chat/issues ") {
        ("201 Created", json!({"number": 42}).to_string())
    } else {
        ("404 Not Found", "{}".into())
    }
}

async fn feedback_opens_a_github_issue_when_configured(backend: Backend) {
    let (api, hits, seen) = stand_in(github).await;
    let app = spawn_app_with(backend, |c| {
        c.github_token = Some("gh-secret".into());
        c.github_repo = Some("acme/chat".into());
        c.github_api_url = api;
    })
    .await;
    let (_root, u) = users(&app, &["alice"]).await;
    let (status, body) = post_form(&app, Some(&u[0].token), form("Dark mode", "please", "feature")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issue_number"], 42);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let (head, sent) = seen.lock().unwrap()[0].clone();
    assert!(head.to_ascii_lowercase().contains("authorization: bearer gh-secret"), "{head}");
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["title"], "[feature] Dark mode");
    assert!(
        sent["body"].as_str().unwrap().contains("please") && sent["body"].as_str().unwrap().contains("alice")
    );
    assert_eq!(feedback::Entity::find().all(db(&app)).await.unwrap().len(), 1, "stored as well");
    app.stop().await;
}

async fn gifs_proxy_giphy_with_paging_and_cache(backend: Backend) {
    let (api, hits, seen) = stand_in(giphy).await;
    let app = spawn_app_with(backend, |c| {
        c.giphy_api_key = Some("test-key".into());
        c.giphy_api_url = api;
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
    let asked = seen.lock().unwrap()[0].0.lines().next().unwrap().to_string();
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
    feedback_opens_a_github_issue_when_configured,
    gifs_unconfigured_answer_503,
    gifs_proxy_giphy_with_paging_and_cache
);
