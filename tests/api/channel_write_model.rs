//! The channel write model: a REST write to a channel runs in its actor's order. A ban racing
//! a stream of sends splits the stream cleanly: every acknowledged message is stored and
//! reached the observer before the ban's event; every later send is refused; nothing from
//! the banned user follows the event.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::common::fixtures::{channel_in_db, send_frame};
use crate::common::{Backend, TestUser, WsClient, spawn_app_with};

/// Rounds of the race: enough for the ban to land at different points of the stream.
const ROUNDS: usize = 20;
/// Sends per round.
const SENDS: usize = 24;
/// How long a socket must stay silent before a round's frames count as all received.
const QUIET: Duration = Duration::from_millis(400);

/// Subscribes an existing socket to `channel` (a ping round trip proves it was handled).
async fn subscribe(ws: &mut WsClient, channel: Uuid) {
    ws.send(serde_json::json!({"type": "subscribe", "channel_ids": [channel]})).await;
    ws.send(serde_json::json!({"type": "ping", "timestamp": 9})).await;
    loop {
        let frame = ws.next_frame(Duration::from_secs(5)).await.expect("pong");
        if frame["type"] == "pong" && frame["timestamp"] == 9 {
            return;
        }
    }
}

/// Every frame until the socket stays quiet for `QUIET`.
async fn drain(ws: &mut WsClient) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Some(frame) = ws.next_frame(QUIET).await {
        frames.push(frame);
    }
    frames
}

/// One race between `member`'s stream of sends and `moderator`'s REST `action` (`ban` or
/// `kick`); `event` is the frame the action emits.
async fn race(backend: Backend, action: &str, event: &str) {
    let app = spawn_app_with(backend, |c| {
        c.ws_rate_limit = palaver::config::RateLimit::new(100_000, 100_000);
    })
    .await;
    let alice: TestUser = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let mut bob_ws = app.ws(&bob.token).await;
    let mut carol_ws = app.ws(&carol.token).await;

    for round in 0..ROUNDS {
        let channel = channel_in_db(&app, &[&alice, &bob, &carol]).await;
        subscribe(&mut bob_ws, channel).await;
        subscribe(&mut carol_ws, channel).await;

        // The action lands somewhere in the stream: later in later rounds.
        let path = format!("/channels/{channel}/members/{}/{action}", bob.id);
        let sends = async {
            for i in 0..SENDS {
                bob_ws.send(send_frame(channel, &format!("r{round} m{i}"))).await;
                tokio::task::yield_now().await;
            }
        };
        let moderation = async {
            tokio::time::sleep(Duration::from_millis((round % 5) as u64 * 3)).await;
            app.post(&path, &alice.token, serde_json::json!({})).await.expect(200);
        };
        tokio::join!(sends, moderation);

        // The sender: one answer per send; no ack after the event.
        let mut acked = Vec::new();
        let mut refused = 0;
        let mut after_event = false;
        for frame in drain(&mut bob_ws).await {
            match frame["type"].as_str() {
                Some(kind) if kind == event => after_event = true,
                Some("message_sent") => {
                    assert!(!after_event, "round {round}: a send was acked after {event}: {frame}");
                    acked.push(frame["id"].as_str().unwrap_or_default().to_string());
                }
                Some("error") => {
                    assert_eq!(frame["code"], "forbidden", "round {round}: {frame}");
                    refused += 1;
                }
                _ => {}
            }
        }
        assert!(after_event, "round {round}: the member never heard {event}");
        assert_eq!(acked.len() + refused, SENDS, "round {round}: every send answered once");

        // The observer: every acked message before the event, nothing from bob after it.
        let mut seen_before = HashSet::new();
        let mut saw_event = false;
        for frame in drain(&mut carol_ws).await {
            match frame["type"].as_str() {
                Some(kind) if kind == event => saw_event = true,
                Some("new_message") => {
                    assert!(!saw_event, "round {round}: new_message after {event}: {frame}");
                    seen_before.insert(frame["id"].as_str().unwrap_or_default().to_string());
                }
                _ => {}
            }
        }
        assert!(saw_event, "round {round}: the observer never heard {event}");
        for id in &acked {
            assert!(seen_before.contains(id), "round {round}: acked {id} did not reach the observer first");
        }

        // History: every acked message is stored.
        let page =
            app.get(&format!("/channels/{channel}/messages?limit=100"), &alice.token).await.expect(200);
        let stored: HashSet<String> = page
            .as_array()
            .map(|list| list.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for id in &acked {
            assert!(stored.contains(id), "round {round}: acked {id} is not in history");
        }
        assert_eq!(stored.len(), acked.len(), "round {round}: only acked messages are stored");
    }
}

async fn a_ban_racing_sends_splits_the_stream(backend: Backend) {
    race(backend, "ban", "member_banned").await;
}

async fn a_kick_racing_sends_splits_the_stream(backend: Backend) {
    race(backend, "kick", "member_kicked").await;
}

crate::both_backends!(a_ban_racing_sends_splits_the_stream, a_kick_racing_sends_splits_the_stream);
