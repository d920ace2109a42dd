//! `GET /metrics` (issue 14 §1): the Prometheus text format, counters that move by exactly the
//! traffic a test makes, labels that never carry an id, and where it is served.

use std::collections::HashMap;

use serde_json::json;
use uuid::Uuid;

use crate::common::fixtures::{channel_with, live, send_text, users};
use crate::common::{Backend, TestApp, spawn_app, spawn_app_with};

/// One scrape: `name{labels}` (labels as written by the server) → value.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// The value of a series; absent series count as 0 (a counter not yet moved).
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape_url(app: &TestApp, url: &str) -> Scrape {
    let response = app.client.get(url).send().await.expect("scrape sent");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.expect("scrape body");
    let samples = parse_exposition(&text);
    Scrape { text, samples }
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_url(app, &format!("http://{}/metrics", app.addr)).await
}

/// Parses the text format strictly: every line is `# HELP name text`, `# TYPE name kind`, or
/// `name{key="value",…} number`; panics on anything else.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let is_name = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("bad HELP line {line:?}"));
            assert!(is_name(name) && !help.is_empty(), "bad HELP line {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(is_name(name), "bad TYPE line {line:?}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "bad TYPE line {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels {line:?}"));
                for (key, value) in label_pairs(labels, line) {
                    assert!(is_name(&key), "bad label name in {line:?}");
                    assert!(!looks_like_uuid(&value), "label {key} carries an id: {line:?}");
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        assert!(samples.insert(series.to_string(), value).is_none(), "series twice: {line:?}");
    }
    samples
}

/// `key="value"` pairs, with the format's escapes undone.
fn label_pairs(mut labels: &str, line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    while !labels.is_empty() {
        let (key, rest) = labels.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        pairs.push((key.to_string(), value));
        labels = &rest[end + 1..];
        labels = labels.strip_prefix(',').unwrap_or(labels);
    }
    pairs
}

fn looks_like_uuid(text: &str) -> bool {
    text.split(['/', '=', ' ']).any(|part| Uuid::parse_str(part).is_ok())
}

/// How much a series moved from `before` to `after`.
fn delta(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    after.get(series) - before.get(series)
}

async fn counters_move_by_exactly_the_traffic_made(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, others) = users(&app, &["bob"]).await;
    let bob = &others[0];
    let channel = channel_with(&app, &root, &[bob]).await;
    let mut sender = live(&app, &root, channel).await;
    let mut receiver = live(&app, bob, channel).await;

    let before = scrape(&app).await;
    for i in 0..3 {
        send_text(&mut sender, channel, &format!("hello {i}")).await;
        receiver.expect("new_message").await;
    }
    let history = format!("/channels/{channel}/messages");
    for _ in 0..2 {
        app.get(&history, &root.token).await.expect(200);
    }
    app.get(&history, "not-a-token").await.expect_error(401);
    let after = scrape(&app).await;

    // Sockets: three sends in, three acks to the sender, three messages to the receiver.
    assert_eq!(delta(&before, &after, r#"palaver_ws_frames_in_total{type="send_message"}"#), 3.0);
    assert_eq!(delta(&before, &after, r#"palaver_ws_frames_out_total{type="message_sent"}"#), 3.0);
    assert_eq!(delta(&before, &after, r#"palaver_ws_frames_out_total{type="new_message"}"#), 3.0);
    assert!(delta(&before, &after, "palaver_ws_bytes_out_total") > 0.0);
    assert_eq!(after.get("palaver_ws_sockets_open"), 2.0);
    assert_eq!(after.get("palaver_ws_sessions_authenticated"), 2.0);
    // Every send acked once; the group commits stored exactly three rows.
    assert_eq!(delta(&before, &after, "palaver_ack_latency_seconds_count"), 3.0);
    assert_eq!(delta(&before, &after, "palaver_commit_batch_rows_sum"), 3.0);
    let commits = delta(&before, &after, "palaver_commit_batch_rows_count");
    assert!((1.0..=3.0).contains(&commits), "{commits} commits for three sends");
    assert_eq!(delta(&before, &after, "palaver_commit_duration_seconds_count"), commits);
    assert!(after.get("palaver_channel_actors_live") >= 1.0);

    // REST: two answered, one refused, all by the route's template.
    let route = r#"method="GET",route="/api/channels/{id}/messages""#;
    assert_eq!(
        delta(&before, &after, &format!(r#"palaver_http_requests_total{{{route},status="200"}}"#)),
        2.0
    );
    assert_eq!(
        delta(&before, &after, &format!(r#"palaver_http_requests_total{{{route},status="401"}}"#)),
        1.0
    );
    assert_eq!(
        delta(&before, &after, &format!(r#"palaver_http_request_duration_seconds_count{{{route}}}"#)),
        3.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            &format!(r#"palaver_http_request_duration_seconds_bucket{{{route},le="+Inf"}}"#)
        ),
        3.0
    );
    // The first scrape is counted too, under its own route.
    let scrapes = r#"palaver_http_requests_total{method="GET",route="/metrics",status="200"}"#;
    assert_eq!(delta(&before, &after, scrapes), 1.0);

    // No id anywhere in the exposition (labels are checked while parsing).
    for id in [root.id, bob.id, channel] {
        assert!(!after.text.contains(&id.to_string()), "the exposition names {id}");
    }
    for family in [
        "palaver_db_pool_connections",
        "palaver_argon2_queue_length",
        "palaver_rate_limited_total",
        "palaver_unavailable_total",
        "palaver_ws_closes_total",
        "palaver_channel_resync_total",
        "palaver_channel_actors_started_total",
        "palaver_ws_ephemeral_dropped_total",
    ] {
        assert!(after.text.contains(&format!("# TYPE {family} ")), "{family} missing");
    }

    // A socket that leaves is counted by its close code and no longer open.
    drop(receiver);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = scrape(&app).await;
        if now.get("palaver_ws_sockets_open") == 1.0 {
            assert_eq!(delta(&after, &now, r#"palaver_ws_closes_total{code="1000"}"#), 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the closed socket is still counted as open");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

async fn rate_limit_refusals_are_counted_by_bucket(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.http_rate_limits = true;
        config.auth_rate_limit = palaver::config::RateLimit::new(1, 1);
    })
    .await;
    let before = scrape(&app).await;
    let login = json!({"username": "nobody", "password": "wrong password"});
    let mut refused = 0;
    for _ in 0..3 {
        let reply = app.post_public("/auth/login", login.clone()).await;
        if reply.status.as_u16() == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 1, "a bucket of one token refuses one of three logins at once");
    let after = scrape(&app).await;
    assert_eq!(delta(&before, &after, r#"palaver_rate_limited_total{bucket="http_auth"}"#), refused as f64);
    assert_eq!(delta(&before, &after, r#"palaver_rate_limited_total{bucket="http_general"}"#), 0.0);
    app.stop().await;
}

async fn metrics_stay_off_the_public_side(backend: Backend) {
    // On the main listener: a client forwarded by a trusted proxy is not loopback.
    let app = spawn_app(backend.clone()).await;
    let forwarded = app
        .client
        .get(format!("http://{}/metrics", app.addr))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status().as_u16(), 404);
    app.stop().await;

    // With a metrics listener of its own, only that one serves it.
    let app =
        spawn_app_with(backend, |config| config.metrics_bind = Some("127.0.0.1:0".parse().unwrap())).await;
    let main = app.client.get(format!("http://{}/metrics", app.addr)).send().await.unwrap();
    assert_eq!(main.status().as_u16(), 404);
    let metrics_addr = app.server.as_ref().and_then(|s| s.metrics_addr).expect("a metrics listener");
    let separate = scrape_url(&app, &format!("http://{metrics_addr}/metrics")).await;
    assert!(separate.text.contains("# TYPE palaver_http_requests_total counter"));
    let elsewhere = app.client.get(format!("http://{metrics_addr}/api/health")).send().await.unwrap();
    assert_eq!(elsewhere.status().as_u16(), 404);
    app.stop().await;
}

crate::both_backends!(
    counters_move_by_exactly_the_traffic_made,
    rate_limit_refusals_are_counted_by_bucket,
    metrics_stay_off_the_public_side,
);
