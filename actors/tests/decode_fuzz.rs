//! Property tests (fuzzing, fixed seeds) of the WebSocket client frame decoder
//! (`protocol::decode`): arbitrary text and arbitrary JSON never panic, every refusal is the
//! documented `invalid message: …` text (the session sends it as an `invalid_message` error
//! frame), and decoding a frame never allocates much more than the frame itself — frames are
//! at most `MAX_FRAME_BYTES` (the gateway refuses larger ones before parsing), so neither is
//! anything the decoder holds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot unwrap fails, which is what it should do"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use palaver_actors::protocol::decode;
use palaver_actors::session::MAX_FRAME_BYTES;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

// ---------------------------------------------------------------- allocation meter

/// Counts the bytes the current thread holds and the peak since the last reset.
struct Meter;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: allocations during thread teardown are simply not counted.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Peak bytes allocated (above what was held before) while decoding `text`.
fn peak_while_decoding(text: &str) -> usize {
    let base = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let decoded = decode(text);
    let peak = PEAK.with(Cell::get) - base;
    drop(decoded);
    peak.max(0) as usize
}

// ---------------------------------------------------------------- strategies

const FRAME_TYPES: &[&str] = &[
    "authenticate",
    "send_message",
    "edit_message",
    "delete_message",
    "update_presence",
    "typing",
    "stop_typing",
    "subscribe",
    "unsubscribe",
    "rtc_offer",
    "rtc_answer",
    "rtc_ice_candidate",
    "join_voice",
    "leave_voice",
    "kick_from_voice",
    "add_reaction",
    "remove_reaction",
    "mark_read",
    "mark_all_read",
    "ping",
];

const FIELDS: &[&str] = &[
    "token",
    "channel_id",
    "channel_ids",
    "message_id",
    "ciphertext",
    "nonce",
    "message_type",
    "reply_to",
    "sender_key_id",
    "thread_id",
    "status",
    "target_user_id",
    "session_id",
    "sdp",
    "candidate",
    "user_id",
    "emoji",
    "timestamp",
    "type",
];

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7061_6c61_7665_7210),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Any JSON value, a few levels deep, with the kinds of leaves frames carry.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(json!("0192a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b")),
        prop::sample::select(FRAME_TYPES).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS).prop_map(String::from), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A frame-shaped object: a known (or unknown) `type` and arbitrary fields.
fn frame_shaped() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        4 => prop::sample::select(FRAME_TYPES).prop_map(Value::from),
        1 => any_json(),
    ];
    (kind, prop::collection::vec((prop::sample::select(FIELDS), any_json()), 0..8)).prop_map(
        |(kind, fields)| {
            let mut frame = serde_json::Map::new();
            for (key, value) in fields {
                frame.insert(key.to_string(), value);
            }
            frame.insert("type".into(), kind);
            Value::Object(frame)
        },
    )
}

#[track_caller]
fn assert_documented(text: &str) {
    if let Err(message) = decode(text) {
        assert!(message.starts_with("invalid message: "), "undocumented refusal {message:?} for {text:?}");
    }
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_documented(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,256}") {
        assert_documented(&text);
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        assert_documented(&value.to_string());
    }

    #[test]
    fn frame_shaped_json_never_panics(frame in frame_shaped()) {
        assert_documented(&frame.to_string());
    }

    #[test]
    fn truncated_frames_never_panic(frame in frame_shaped(), cut in any::<prop::sample::Index>()) {
        let text = frame.to_string();
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        assert_documented(&text[..end]);
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// A frame of any type padded to tens of KiB with the cheapest JSON there is (one-digit
    /// numbers, empty arrays, nesting) costs at most a small multiple of its own size.
    #[test]
    fn decoding_allocates_about_the_frame_size(
        kind in prop::sample::select(FRAME_TYPES),
        field in prop::sample::select(FIELDS),
        filler in prop::sample::select(&["0,", "[],", "{},", "\"\",", "[[[[0]]]],"][..]),
        repeat in 1_000usize..20_000,
    ) {
        let list = filler.repeat(repeat);
        let text = format!(r#"{{"type":"{kind}","{field}":[{}],"pad":[{}]}}"#, &list[..list.len() - 1], &list[..list.len() - 1]);
        prop_assume!(text.len() <= MAX_FRAME_BYTES);
        let peak = peak_while_decoding(&text);
        prop_assert!(
            peak <= 4 * text.len() + 64 * 1024,
            "decoding a {} byte {kind} frame ({field} and pad of {filler:?}) peaked at {peak} bytes",
            text.len()
        );
        assert_documented(&text);
    }
}

#[test]
fn the_largest_frame_allowed_decodes_within_bounds() {
    // A 1 MiB subscribe of one-digit numbers: the worst case for a buffering decoder.
    let body = "0,".repeat((MAX_FRAME_BYTES - 64) / 2);
    let text = format!(r#"{{"type":"subscribe","channel_ids":[{}]}}"#, &body[..body.len() - 1]);
    assert!(text.len() <= MAX_FRAME_BYTES);
    let peak = peak_while_decoding(&text);
    assert!(peak <= 4 * text.len(), "a {} byte frame peaked at {peak} bytes", text.len());
    assert!(decode(&text).unwrap_err().starts_with("invalid message: "));
}
