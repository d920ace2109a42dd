//! Nothing acknowledged is lost: the real server binary is killed with SIGKILL right after
//! acknowledging a burst, restarted on the same database, and history must hold every
//! acknowledged message, in acknowledgement order.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::common::process::ProcessHarness;
use crate::common::{Backend, TestApp};

const BURST: usize = 300;

async fn acked_messages_survive_a_kill_9(backend: Backend) {
    let harness = ProcessHarness::new(&backend).await;
    let server = harness.start().await;
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
        json!({"name": "durable", "channel_type": "text"}),
    )
    .await;
    let channel_id: Uuid = channel["id"].as_str().expect("channel created").parse().unwrap();

    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    ws.send(Message::text(json!({"type": "authenticate", "token": token}).to_string())).await.unwrap();
    // Pipeline the whole burst, then collect the acks.
    for i in 0..BURST {
        let frame = json!({"type": "send_message", "channel_id": channel_id,
            "ciphertext": format!("m{i}").as_bytes(), "nonce": [1, 2, 3], "message_type": "text"});
        ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut acked: Vec<String> = Vec::new();
    while acked.len() < BURST {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("acks arrive");
        let Some(Ok(Message::Text(text))) = next else { panic!("socket ended after {} acks", acked.len()) };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "message_sent" {
            acked.push(frame["id"].as_str().unwrap().to_string());
        }
    }
    // The moment the last ack is in, the process dies without any chance to flush.
    server.kill().await;

    let server = harness.start().await;
    let login = post_json(
        &http,
        server.api("/auth/login"),
        None,
        json!({"username": "alice", "password": "Correct-Horse-9"}),
    )
    .await;
    let token = login["access_token"].as_str().expect("logged in after restart").to_string();
    // History is newest first; page back with `before`.
    let mut stored: Vec<String> = Vec::new();
    loop {
        let mut url = server.api(&format!("/channels/{channel_id}/messages?limit=100"));
        if let Some(oldest) = stored.last() {
            url.push_str(&format!("&before={oldest}"));
        }
        let page: Vec<Value> = http.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        if page.is_empty() {
            break;
        }
        stored.extend(page.iter().map(|m| m["id"].as_str().unwrap().to_string()));
    }
    stored.reverse();
    assert_eq!(stored.len(), BURST, "every acknowledged message is stored, and nothing else");
    assert_eq!(stored, acked, "history order is acknowledgement order");
    server.kill().await;
}

async fn post_json(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

crate::both_backends!(acked_messages_survive_a_kill_9);
