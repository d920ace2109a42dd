//! `PALAVER_LOG_FORMAT=json`: the real binary's stdout is JSON lines, one per HTTP request
//! (method, route template, status, duration, client IP) and one per WebSocket session end
//! (duration, frames in/out, close code). A bad format refuses to start with one line.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::process::{ProcessHarness, ServerProcess};
use crate::common::{Backend, TestApp};
use crate::drain::post_json;

async fn json_logs_have_one_line_per_request_and_socket(backend: Backend) {
    let harness = ProcessHarness::new(&backend).await;
    let mut server = harness.start_with(&[("PALAVER_LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    let http = reqwest::Client::new();
    let identity = ed25519_dalek::SigningKey::from_bytes(&crate::common::rand_bytes());
    let registered =
        post_json(&http, server.api("/auth/register"), None, TestApp::registration_body("alice", &identity))
            .await;
    let token = registered["access_token"].as_str().expect("registered").to_string();
    let channel = post_json(
        &http,
        server.api("/channels"),
        Some(&token),
        json!({"name": "logged", "channel_type": "text"}),
    )
    .await;
    let channel_id = channel["id"].as_str().expect("channel created").to_string();
    let status = http
        .get(server.api(&format!("/channels/{channel_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    ws.send(Message::text(json!({"type": "authenticate", "token": token}).to_string())).await.unwrap();
    ws.send(Message::text(json!({"type": "ping", "timestamp": 7}).to_string())).await.unwrap();
    // Wait for our pong: both frames were handled.
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if frame.to_text().unwrap().contains("\"timestamp\":7") {
            break;
        }
    }
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })))
        .await
        .unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}

    let socket_line = wait_for_line(&server, |line| line["message"] == "websocket session ended").await;
    assert_eq!(socket_line["level"], "INFO");
    assert_eq!(socket_line["close_code"], 1000, "{socket_line}");
    assert_eq!(socket_line["closed_by"], "client", "{socket_line}");
    assert_eq!(socket_line["frames_in"], 2, "authenticate and ping: {socket_line}");
    // authenticated, the connect-time pong, and the answer to our ping at least.
    assert!(socket_line["frames_out"].as_u64().is_some_and(|n| n >= 3), "{socket_line}");
    assert!(socket_line["duration_ms"].is_u64(), "{socket_line}");
    assert_eq!(socket_line["client_ip"], "127.0.0.1");

    let get_channel = wait_for_line(&server, |line| {
        line["message"] == "request" && line["method"] == "GET" && line["route"] == "/api/channels/{id}"
    })
    .await;
    assert_eq!(get_channel["status"], 200, "{get_channel}");
    assert!(get_channel["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{get_channel}");
    assert_eq!(get_channel["client_ip"], "127.0.0.1");
    assert!(!get_channel.to_string().contains(&channel_id), "ids stay out of the access log");
    let register = wait_for_line(&server, |line| line["route"] == "/api/auth/register").await;
    assert_eq!((register["method"].as_str(), register["status"].as_u64()), (Some("POST"), Some(200)));
    let upgrade = wait_for_line(&server, |line| line["route"] == "/ws").await;
    assert_eq!(upgrade["status"], 101);

    server.terminate();
    assert!(server.exited_within(Duration::from_secs(10)).await.is_some_and(|s| s.success()));
    let lines = server.stdout.lock().unwrap().clone();
    for line in &lines {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok_and(|v| v.is_object()), "stdout line is not a JSON object: {line}");
    }
}

async fn an_unknown_log_format_refuses_to_start(_backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_palaver"))
        .env_clear()
        .env("PALAVER_DATA_DIR", data_dir.path())
        .env("PALAVER_BIND", "127.0.0.1:0")
        .env("PALAVER_LOG_FORMAT", "xml")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(2), "refused at start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("log_format \"xml\"") && stderr.contains("text or json"), "{stderr}");
}

/// The first stdout line (as JSON) matching `wanted`, waiting up to 10 s for it.
async fn wait_for_line(server: &ServerProcess, wanted: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let found = server
            .stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| wanted(line));
        if let Some(line) = found {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such log line in: {:#?}", server.stdout.lock().unwrap());
}

crate::both_backends!(json_logs_have_one_line_per_request_and_socket, an_unknown_log_format_refuses_to_start);
