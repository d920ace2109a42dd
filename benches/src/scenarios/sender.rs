//! A sending socket shared by the scenarios: sends `send_message` frames on a fixed
//! schedule and matches each `message_sent` (or `error`) to the oldest unanswered send —
//! the server keeps acks in send order per channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::send_ticker;
use crate::clock;
use crate::frame::{self, SendTemplate, ServerFrame, Stamp};
use crate::stats::{ErrorCounts, Latency, SeqSet};
use crate::ws::WsStream;

/// Counters shared by all senders (and receivers) of a scenario, so the coordinator
/// can end a drain as soon as everything is answered.
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicU64,
    /// Sends without an ack or error yet.
    pub outstanding: AtomicI64,
    pub delivered_unique: AtomicU64,
}

pub struct SendPlan {
    /// Written into the stamp so receivers know who sent a message.
    pub sender_idx: u64,
    pub template: Arc<SendTemplate>,
    pub first_send: Instant,
    /// No sends at or after this instant.
    pub send_end: Instant,
    /// Messages per second (≤ the server's per-socket sustained limit).
    pub rate: f64,
    /// Stop after this many sends (None = until `send_end`).
    pub max_messages: Option<u64>,
    /// Keep the acked message ids (for verifying history afterwards).
    pub collect_ids: bool,
    /// Return as soon as every send is answered instead of waiting for `stop`.
    pub exit_when_done: bool,
}

pub struct SenderReport {
    pub sent: u64,
    pub acked: SeqSet,
    pub acked_ids: Vec<Uuid>,
    pub ack_latency: Latency,
    pub errors: ErrorCounts,
    /// The socket, unless it failed (kept open until the scenario drops it).
    pub ws: Option<WsStream>,
}

pub async fn run_sender(
    ws: WsStream,
    plan: SendPlan,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SenderReport {
    let (mut sink, mut stream) = ws.split();
    let mut ticker = send_ticker(plan.first_send, plan.rate);
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut rep = SenderReport {
        sent: 0,
        acked: SeqSet::default(),
        acked_ids: Vec::new(),
        ack_latency: Latency::default(),
        errors: ErrorCounts::default(),
        ws: None,
    };
    let mut sending = true;
    let mut healthy = true;
    loop {
        if !sending && plan.exit_when_done && pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = ticker.tick(), if sending => {
                if Instant::now() >= plan.send_end || plan.max_messages.is_some_and(|m| rep.sent >= m) {
                    sending = false;
                    continue;
                }
                let (seq, sent_ns) = (rep.sent, clock::now_ns());
                pending.push_back((seq, sent_ns));
                progress.outstanding.fetch_add(1, Ordering::Relaxed);
                let text = plan.template.render(Stamp { sender: plan.sender_idx, seq, sent_ns });
                if sink.send(Message::text(text)).await.is_err() {
                    rep.errors.add("write_failed");
                    healthy = false;
                    break;
                }
                rep.sent += 1;
            }
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => {
                        rep.errors.add("closed_by_server");
                        healthy = false;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => {
                        rep.errors.add("read_failed");
                        healthy = false;
                        break;
                    }
                };
                match frame::frame_type(&text) {
                    Some("message_sent") => {
                        let Some((seq, sent_ns)) = pending.pop_front() else {
                            rep.errors.add("ack_without_send");
                            continue;
                        };
                        rep.ack_latency.record_us(clock::us_since(sent_ns));
                        rep.acked.insert(seq);
                        if plan.collect_ids {
                            match ServerFrame::parse(&text).ok().and_then(|f| f.id) {
                                Some(id) => rep.acked_ids.push(id),
                                None => rep.errors.add("ack_without_id"),
                            }
                        }
                        progress.acked.fetch_add(1, Ordering::Relaxed);
                        progress.outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                    Some("error") => {
                        let code = ServerFrame::parse(&text).ok().and_then(|f| f.code).unwrap_or_default();
                        rep.errors.add(&code);
                        // The send this error answers will never be acked.
                        if pending.pop_front().is_some() {
                            progress.outstanding.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
            _ = stop.changed() => break,
        }
    }
    if !pending.is_empty() {
        rep.errors.0.insert("unanswered".into(), pending.len() as u64);
    }
    if healthy {
        rep.ws = sink.reunite(stream).ok();
    }
    rep
}
