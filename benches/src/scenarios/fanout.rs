//! `fanout`: R receiving sockets and S sending sockets in one channel. Each sender sends
//! `--rate` messages/s for `--duration` s; every receiver should get every acked message.
//!
//! Senders are separate users from receivers and do not subscribe, so a message is
//! expected exactly once on each receiving socket (Palaver delivers a sender's messages
//! to its user's *other* subscribed sockets; receivers never send, so that does not
//! apply to them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::sender::{Progress, SendPlan, run_sender};
use super::{Ctx, open_all};
use crate::clock;
use crate::frame::{self, SendTemplate, ServerFrame, Stamp};
use crate::procfs::PhaseMeter;
use crate::setup::users_for;
use crate::stats::{ErrorCounts, Latency, SeqSet, SharedLatency, round3};
use crate::ws::WsStream;

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    let per_user = a.sockets_per_user;
    let setup = &ctx.setup;

    eprintln!("fanout: {} receivers, {} senders × {}/s for {}s", a.receivers, a.senders, a.rate, a.duration);
    let recv_users = setup.users("r", users_for(a.receivers, per_user)).await?;
    let send_users = setup.users("s", users_for(a.senders, per_user)).await?;
    let members: Vec<_> = send_users.iter().chain(&recv_users).cloned().collect();
    let channel = setup.shared_channel("bench-fanout", &members).await?;

    let receivers = open_all(ctx, "receivers", &recv_users, a.receivers, |_| vec![channel]).await?;
    let senders = open_all(ctx, "senders", &send_users, a.senders, |_| vec![]).await?;
    // Let the server finish any per-connection work (presence etc.) before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let progress = Arc::new(Progress::default());
    let recv_latency = Arc::new(SharedLatency::new(16));
    // A cluster's receivers split by the node they are on: the channel owner's receivers
    // wait for no node hop, the others for one (two for a send that arrived elsewhere).
    let nodes = ctx.target.node_count();
    let recv_by_node: Arc<Vec<SharedLatency>> = Arc::new((0..nodes).map(|_| SharedLatency::new(4)).collect());
    let (stop_tx, stop_rx) = watch::channel(false);

    let recv_tasks: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            tokio::spawn(receiver(
                i,
                r.ws,
                a.senders,
                recv_latency.clone(),
                (recv_by_node.clone(), r.node),
                progress.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let meter = PhaseMeter::start(a.server_pid)?;
    let start = Instant::now() + Duration::from_millis(200);
    let start_ns = clock::now_ns() + 200_000_000;
    let send_end = start + Duration::from_secs(a.duration);
    let template = Arc::new(SendTemplate::new(channel, a.payload_bytes));
    let send_tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            // Stagger senders across one send period so sends are spread evenly.
            let offset = Duration::from_secs_f64(i as f64 / a.senders as f64 / a.rate);
            let plan = SendPlan {
                sender_idx: i as u64,
                template: template.clone(),
                first_send: start + offset,
                send_end,
                rate: a.rate,
                max_messages: None,
                collect_ids: false,
                // Stay connected until the drain ends: a disconnect is server work.
                exit_when_done: false,
            };
            (tokio::spawn(run_sender(s.ws, plan, progress.clone(), stop_rx.clone())), s.node)
        })
        .collect();

    // Wait for the send phase, then drain until everything acked arrived everywhere
    // (or the drain time is up).
    tokio::time::sleep_until(send_end).await;
    let drain_end = send_end + Duration::from_secs(a.drain);
    let receivers_n = a.receivers as u64;
    while Instant::now() < drain_end {
        let acked = progress.acked.load(Ordering::Relaxed);
        let all_acked = progress.outstanding.load(Ordering::Relaxed) <= 0;
        if all_acked && progress.delivered_unique.load(Ordering::Relaxed) >= acked * receivers_n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let usage = meter.finish().await?;

    let mut sent = 0;
    let mut acked_sets = Vec::with_capacity(a.senders);
    let mut ack_latency = Latency::default();
    let mut ack_by_node: Vec<Latency> = (0..nodes).map(|_| Latency::default()).collect();
    let mut errors = ErrorCounts::default();
    for (t, node) in send_tasks {
        let r = t.await?;
        sent += r.sent;
        acked_sets.push(r.acked);
        ack_latency.merge(&r.ack_latency);
        ack_by_node[node].merge(&r.ack_latency);
        errors.merge(&r.errors);
    }
    let acked: u64 = acked_sets.iter().map(SeqSet::len).sum();

    let (mut delivered, mut delivered_acked, mut duplicates, mut closed_early) = (0, 0, 0, 0);
    let mut last_recv_ns = 0;
    let mut recv_errors = ErrorCounts::default();
    for t in recv_tasks {
        let r = t.await?;
        delivered += r.per_sender.iter().map(SeqSet::len).sum::<u64>();
        delivered_acked +=
            r.per_sender.iter().zip(&acked_sets).map(|(got, ok)| got.intersection_len(ok)).sum::<u64>();
        duplicates += r.duplicates;
        closed_early += r.closed_early as u64;
        last_recv_ns = last_recv_ns.max(r.last_recv_ns);
        recv_errors.merge(&r.errors);
    }
    let expected = acked * receivers_n;
    // Throughput over the time deliveries actually took (start → last delivery), so a
    // server that falls behind and catches up in the drain is not flattered.
    let delivery_secs = (last_recv_ns.saturating_sub(start_ns) as f64 / 1e9).max(a.duration as f64);
    let recv_latency = recv_latency.merged();
    let by_node = (nodes > 1).then(|| {
        json!({
            "recv_latency_ms": recv_by_node.iter().map(|l| l.merged().summary_ms()).collect::<Vec<_>>(),
            "ack_latency_ms": ack_by_node.iter().map(Latency::summary_ms).collect::<Vec<_>>(),
        })
    });

    Ok(json!({
        "receivers": a.receivers,
        "senders": a.senders,
        "rate": a.rate,
        "duration_s": a.duration,
        "payload_bytes": a.payload_bytes,
        "sent": sent,
        "acked": acked,
        "errors": errors,
        "receiver_errors": recv_errors,
        "delivered": delivered,
        "expected": expected,
        "lost": expected.saturating_sub(delivered_acked),
        "duplicates": duplicates,
        "unexpected": delivered - delivered_acked,
        "receivers_closed_early": closed_early,
        "offered_deliveries_per_s": round3(a.senders as f64 * a.rate * a.receivers as f64),
        "deliveries_per_s": round3(delivered as f64 / delivery_secs),
        "delivery_span_s": round3(delivery_secs),
        "recv_latency_ms": recv_latency.summary_ms(),
        "ack_latency_ms": ack_latency.summary_ms(),
        "by_node": by_node,
        "receive_cdf_ms": recv_latency.cdf_ms(),
        "ack_cdf_ms": ack_latency.cdf_ms(),
        "server_cpu_s": usage.server_cpu_s.map(round3),
        "server_rss_kb": usage.server_rss_kb,
        "deliveries_per_cpu_s": usage.server_cpu_s.filter(|c| *c > 0.0).map(|c| round3(delivered as f64 / c)),
        "loadgen_cpu_s": round3(usage.loadgen_cpu_s),
    }))
}

struct ReceiverReport {
    /// Indexed by sender: which sequence numbers arrived.
    per_sender: Vec<SeqSet>,
    duplicates: u64,
    closed_early: bool,
    last_recv_ns: u64,
    errors: ErrorCounts,
}

/// One task per receiving socket: finds `new_message` frames, reads the stamp at the
/// start of the ciphertext and records latency and arrival. Everything else is skipped.
async fn receiver(
    idx: usize,
    mut ws: WsStream,
    senders: usize,
    latency: Arc<SharedLatency>,
    (by_node, node): (Arc<Vec<SharedLatency>>, usize),
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverReport {
    let mut rep = ReceiverReport {
        per_sender: vec![SeqSet::default(); senders],
        duplicates: 0,
        closed_early: false,
        last_recv_ns: 0,
        errors: ErrorCounts::default(),
    };
    loop {
        let text = tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => { rep.closed_early = true; break; }
                Some(Ok(_)) => continue,
                Some(Err(_)) => { rep.closed_early = true; rep.errors.add("read_failed"); break; }
            },
            _ = stop.changed() => break,
        };
        match frame::frame_type(&text) {
            Some("new_message") => {
                let Some(Stamp { sender, seq, sent_ns }) = frame::stamp(&text) else {
                    rep.errors.add("foreign_new_message");
                    continue;
                };
                let Some(set) = rep.per_sender.get_mut(sender as usize) else {
                    rep.errors.add("foreign_new_message");
                    continue;
                };
                if set.insert(seq) {
                    let now = clock::now_ns();
                    let us = now.saturating_sub(sent_ns) / 1_000;
                    latency.record_us(idx, us);
                    by_node[node].record_us(idx, us);
                    rep.last_recv_ns = now;
                    progress.delivered_unique.fetch_add(1, Ordering::Relaxed);
                } else {
                    rep.duplicates += 1;
                }
            }
            Some("error") => {
                let code = ServerFrame::parse(&text).ok().and_then(|f| f.code).unwrap_or_default();
                rep.errors.add(&code);
            }
            _ => {}
        }
    }
    rep
}
