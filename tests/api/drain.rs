//! Graceful drain (SIGTERM / SIGINT): the real binary is sent SIGTERM in the middle of a burst
//! of sends. Every send is either acknowledged and then stored, or answered with an error, or
//! left unanswered as the socket closes; none is acknowledged and missing, nothing is stored
//! unacknowledged. The socket closes with 1012 ("service restart") and the process exits
//! within 10 s. In-process: health answers 503 `draining` while the drain delay runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::common::process::{ProcessHarness, ServerProcess};
use crate::common::{Backend, TestApp, spawn_app_with};

const BURST: usize = 200;
/// Sends written before SIGTERM; the rest go out while the server drains.
const BEFORE_SIGNAL: usize = 100;

async fn sigterm_mid_burst_acks_only_what_is_stored(backend: Backend) {
    let harness = ProcessHarness::new(&backend).await;
    let mut server = harness.start().await;
    let http = reqwest::Client::new();
    let (token, channel_id) = alice_with_channel(&http, &server).await;

    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text(json!({"type": "authenticate", "token": token}).to_string())).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("\"authenticated\""), "{first:?}");

    // Every answer until the server closes the socket: acks, errors, and the close code.
    let acks_seen = Arc::new(AtomicUsize::new(0));
    let acks_counter = acks_seen.clone();
    let reader = tokio::spawn(async move {
        let (mut acked, mut refused, mut close_code) = (Vec::new(), Vec::new(), None);
        while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    match frame["type"].as_str() {
                        Some("message_sent") => {
                            acked.push(frame["id"].as_str().unwrap().to_string());
                            acks_counter.fetch_add(1, Ordering::SeqCst);
                        }
                        Some("error") => refused.push(frame),
                        _ => {}
                    }
                }
                Message::Close(frame) => {
                    close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
        (acked, refused, close_code)
    });

    let send = |i: usize| {
        Message::text(
            json!({"type": "send_message", "channel_id": channel_id, "ciphertext": format!("m{i}").as_bytes(),
                "nonce": [1, 2, 3], "message_type": "text"})
            .to_string(),
        )
    };
    for i in 0..BEFORE_SIGNAL {
        sink.feed(send(i)).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Mid-burst: the first commits are acked, the rest of the 100 are still in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks_seen.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let signalled = Instant::now();
    server.terminate();
    // The rest of the burst races the drain; once the socket is closed writes fail (fine).
    for i in BEFORE_SIGNAL..BURST {
        if sink.send(send(i)).await.is_err() {
            break;
        }
    }

    let status = server.exited_within(Duration::from_secs(10)).await;
    let exited_after = signalled.elapsed();
    assert!(status.is_some(), "the server still runs 10 s after SIGTERM");
    assert!(status.unwrap().success(), "a drained server exits 0: {status:?}");
    let (acked, refused, close_code) = reader.await.unwrap();
    assert_eq!(close_code, Some(1012), "the socket closes with 1012 service restart");
    assert!(!acked.is_empty(), "the burst was under way (drained in {exited_after:?})");
    assert!(acked.len() + refused.len() <= BURST, "at most one answer per send");
    for error in &refused {
        assert_eq!(error["code"], "unavailable", "a send refused during the drain says why: {error}");
    }

    // Restart on the same database: exactly the acknowledged messages are stored, in ack order.
    let server = harness.start().await;
    let login = post_json(
        &http,
        server.api("/auth/login"),
        None,
        json!({"username": "alice", "password": "Correct-Horse-9"}),
    )
    .await;
    let token = login["access_token"].as_str().expect("logged in after restart").to_string();
    let stored = history(&http, &server, &token, channel_id).await;
    assert_eq!(
        stored, acked,
        "every acked send is stored (in ack order), and no unacked one (refused: {refused:?})"
    );
    server.kill().await;
}

async fn health_says_draining_and_sockets_close_with_1012(backend: Backend) {
    let mut app = spawn_app_with(backend, |config| config.drain_delay = Duration::from_secs(2)).await;
    let alice = app.register("alice").await;
    let mut ws = app.ws(&alice.token).await;
    assert_eq!(app.get_public("/health").await.expect(200)["status"], "ok");

    let server = app.server.take().expect("running");
    let shutdown = tokio::spawn(server.shutdown());
    // During the drain delay the server still answers, and health takes it out of rotation.
    let deadline = Instant::now() + Duration::from_secs(1);
    let draining = loop {
        let reply = app.get_public("/health").await;
        if reply.status == 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draining.status, 503, "health answers 503 while draining");
    assert_eq!(draining.body["status"], "draining");
    // Then the socket is told to come back: 1012, service restart.
    assert_eq!(ws.expect_close(Duration::from_secs(8)).await, Some(1012));
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown ends").unwrap();
    // A new connection (the test client's pooled one may outlive the listener).
    let fresh = reqwest::Client::new();
    assert!(fresh.get(app.url("/health")).send().await.is_err(), "the listener is closed");
    app.stop().await;
}

/// Registers alice and creates a text channel; her token and the channel.
async fn alice_with_channel(http: &reqwest::Client, server: &ServerProcess) -> (String, Uuid) {
    let identity = ed25519_dalek::SigningKey::from_bytes(&crate::common::rand_bytes());
    let registered =
        post_json(http, server.api("/auth/register"), None, TestApp::registration_body("alice", &identity))
            .await;
    let token = registered["access_token"].as_str().expect("registered").to_string();
    let channel = post_json(
        http,
        server.api("/channels"),
        Some(&token),
        json!({"name": "drained", "channel_type": "text"}),
    )
    .await;
    (token, channel["id"].as_str().expect("channel created").parse().unwrap())
}

/// The channel's message ids, oldest first.
async fn history(
    http: &reqwest::Client,
    server: &ServerProcess,
    token: &str,
    channel_id: Uuid,
) -> Vec<String> {
    let mut stored: Vec<String> = Vec::new();
    loop {
        let mut url = server.api(&format!("/channels/{channel_id}/messages?limit=100"));
        if let Some(oldest) = stored.last() {
            url.push_str(&format!("&before={oldest}"));
        }
        let page: Vec<Value> = http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        if page.is_empty() {
            break;
        }
        stored.extend(page.iter().map(|m| m["id"].as_str().unwrap().to_string()));
    }
    stored.reverse();
    stored
}

pub async fn post_json(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

crate::both_backends!(
    sigterm_mid_burst_acks_only_what_is_stored,
    health_says_draining_and_sockets_close_with_1012
);
