//! Micro-benchmarks of the hot path (issue 4): a client frame parsed, a server frame encoded,
//! and one message fanned out by a real channel actor to N in-process sessions.
//!
//! `cargo bench -p palaver-bench --bench hotpath` (a filter after `--` picks groups, e.g.
//! `-- fanout`). What each group measures is in `benches/README.md`.

mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use palaver_actors::protocol::{ServerFrame, decode};
use uuid::Uuid;

use fixture::LiveChannel;

/// Ciphertext sizes: a short chat line, and a long message or a small attachment's key blob.
const SMALL_CIPHERTEXT: usize = 200;
const LARGE_CIPHERTEXT: usize = 4 * 1024;
/// Subscribed sessions per channel in the fan-out group.
const FANOUT_SESSIONS: [usize; 3] = [10, 100, 1000];

/// Bytes that look like ciphertext on the wire (all of 0–255, so the JSON integers have the
/// widths real traffic has).
fn ciphertext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 167 + 13) as u8).collect()
}

/// A `send_message` frame as the web client sends it.
fn send_message_text(ciphertext_len: usize) -> String {
    serde_json::json!({
        "type": "send_message",
        "channel_id": Uuid::now_v7(),
        "ciphertext": ciphertext(ciphertext_len),
        "nonce": ciphertext(24),
        "message_type": "text",
        "reply_to": null,
        "sender_key_id": Uuid::new_v4(),
        "thread_id": null,
    })
    .to_string()
}

fn decode_frames(c: &mut Criterion) {
    let frames = [
        ("send_message/200B", send_message_text(SMALL_CIPHERTEXT)),
        ("send_message/4KiB", send_message_text(LARGE_CIPHERTEXT)),
        ("typing", serde_json::json!({"type": "typing", "channel_id": Uuid::now_v7()}).to_string()),
        ("ping", r#"{"type":"ping","timestamp":1767225600000}"#.to_string()),
    ];
    let mut group = c.benchmark_group("decode");
    for (name, text) in &frames {
        // Refuse to time a parse error: the frames must be ones the server accepts.
        decode(text).unwrap_or_else(|err| panic!("{name}: {err}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| decode(black_box(text)))
        });
    }
    group.finish();
}

fn new_message(ciphertext_len: usize, created_at: DateTime<Utc>) -> ServerFrame {
    ServerFrame::NewMessage {
        id: Uuid::now_v7(),
        channel_id: Uuid::now_v7(),
        sender_id: Some(Uuid::now_v7()),
        ciphertext: Bytes::from(ciphertext(ciphertext_len)),
        nonce: Bytes::from(ciphertext(24)),
        message_type: "text".into(),
        reply_to: None,
        sender_key_id: Some(Uuid::new_v4()),
        created_at,
        thread_id: None,
    }
}

fn encode_frames(c: &mut Criterion) {
    let created_at = palaver_entity::now();
    let frames = [
        ("new_message/200B", new_message(SMALL_CIPHERTEXT, created_at)),
        ("new_message/4KiB", new_message(LARGE_CIPHERTEXT, created_at)),
        (
            "message_sent",
            ServerFrame::MessageSent {
                id: Uuid::now_v7(),
                channel_id: Uuid::now_v7(),
                created_at,
                cseq: Some(1_042),
                thread_id: None,
            },
        ),
        ("user_typing", ServerFrame::UserTyping { channel_id: Uuid::now_v7(), user_id: Uuid::now_v7() }),
        ("pong", ServerFrame::Pong { timestamp: 1_767_225_600_000 }),
    ];
    let mut group = c.benchmark_group("encode");
    for (name, frame) in &frames {
        group.throughput(Throughput::Bytes(frame.encode().len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), frame, |b, frame| {
            b.iter(|| black_box(frame).encode())
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    // The server's runtime shape on this machine: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let database = runtime.block_on(fixture::open_database());
    let hub = runtime.block_on(fixture::start_hub(&database.db));
    let most = FANOUT_SESSIONS.iter().copied().max().unwrap_or(0);
    let users = runtime.block_on(fixture::seed_users(&database.db, most + 1));

    let mut group = c.benchmark_group("fanout");
    // Each send commits to SQLite: fewer, longer samples than the pure-CPU groups.
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    for sessions in FANOUT_SESSIONS {
        let mut channel = runtime.block_on(LiveChannel::start(&hub, &users[..=sessions], SMALL_CIPHERTEXT));
        // Deliveries per second: one send reaches `sessions` outboxes.
        group.throughput(Throughput::Elements(channel.receivers() as u64));
        group.bench_function(BenchmarkId::from_parameter(sessions), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        channel.send_one().await;
                    }
                    start.elapsed()
                })
            })
        });
        // Dropping the receivers closes their outboxes; the channel forgets them on its
        // next broadcast, and each size gets a channel of its own anyway.
        drop(channel);
    }
    group.finish();
    runtime.block_on(hub.shutdown());
}

/// Short runs: the whole suite must stay well under three minutes on two shared cores.
fn config() -> Criterion {
    Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = hotpath;
    config = config();
    targets = decode_frames, encode_frames, fanout
}
criterion_main!(hotpath);
