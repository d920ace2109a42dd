//! The database goes away and comes back (PostgreSQL behind a cuttable proxy): sends get an
//! honest `unavailable` error frame, REST answers 503 `unavailable` (never `forbidden`), and
//! service resumes by itself shortly after the database is back, without a restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::proxy::CuttableProxy;
use crate::common::{Backend, WsClient, spawn_app_with};

/// `host:port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if host.contains(':') { host.to_string() } else { format!("{host}:5432") }
}

fn send_frame(channel: Uuid, text: &str) -> Value {
    json!({"type": "send_message", "channel_id": channel, "ciphertext": text.as_bytes(), "nonce": [1], "message_type": "text"})
}

/// The next `message_sent` or `error` frame (other frames are skipped).
async fn outcome(ws: &mut WsClient) -> Value {
    loop {
        let frame = ws.next_frame(Duration::from_secs(15)).await.expect("an answer to the send");
        if frame["type"] == "message_sent" || frame["type"] == "error" {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(palaver_pg), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
async fn database_outage_is_reported_honestly_and_service_resumes_by_itself() {
    let admin_url = crate::common::postgres_url();
    let target: SocketAddr =
        tokio::net::lookup_host(host_port(&admin_url)).await.unwrap().next().expect("database address");
    let proxy = CuttableProxy::start(target).await;
    let app = spawn_app_with(Backend::Postgres(admin_url), |c| {
        let original = host_port(&c.database_url);
        c.database_url = c.database_url.replacen(&original, &proxy.addr.to_string(), 1);
    })
    .await;
    let alice = app.register("alice").await;
    let channel =
        app.post("/channels", &alice.token, json!({"name": "ops", "channel_type": "text"})).await.expect(200);
    let channel: Uuid = channel["id"].as_str().unwrap().parse().unwrap();
    let mut ws = app.ws(&alice.token).await;
    ws.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    ws.send(send_frame(channel, "before")).await;
    assert_eq!(outcome(&mut ws).await["type"], "message_sent");

    proxy.cut().await;
    ws.send(send_frame(channel, "during")).await;
    let error = outcome(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "unavailable", "{error}");
    let history = format!("/channels/{channel}/messages");
    assert_eq!(app.get(&history, &alice.token).await.expect_error(503), "unavailable");
    assert_eq!(app.get("/channels", &alice.token).await.expect_error(503), "unavailable");

    proxy.restore();
    let back = Instant::now();
    let recovered = loop {
        ws.send(send_frame(channel, "after")).await;
        let frame = outcome(&mut ws).await;
        if frame["type"] == "message_sent" {
            break back.elapsed();
        }
        assert_eq!(frame["code"], "unavailable", "{frame}");
        assert!(back.elapsed() < Duration::from_secs(10), "service never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("sends resumed {recovered:?} after the database came back");
    assert!(recovered < Duration::from_secs(2), "resumed only after {recovered:?}");
    let page = app.get(&history, &alice.token).await.expect(200);
    let texts: Vec<Value> = page.as_array().unwrap().iter().map(|m| m["ciphertext"].clone()).collect();
    assert_eq!(
        texts,
        vec![json!("after".as_bytes()), json!("before".as_bytes())],
        "the refused send is not stored"
    );
    app.stop().await;
}
