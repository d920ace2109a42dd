//! `recovery`: the `fanout` load (R receivers, S senders in one channel) while waves of
//! receivers drop their sockets and resume with `since` (`/work/shared/wire/resume.md`).
//!
//! Every `--wave-every` seconds of the send phase, `--wave-share` of the receivers (a fresh
//! slice of a shuffled order each wave) drop their socket without a close handshake,
//! reconnect at once, authenticate and `subscribe` with `since` = the last position they
//! saw. Each receiver keeps its channel position from `subscribed`, every durable frame's
//! `cseq` and `resync_required`, as the client recipe says.
//!
//! Per reconnect: replay latency (`subscribe` sent → last replayed frame, or → `subscribed`
//! when nothing is replayed), `recovered`, frames and bytes replayed. Per receiver: every
//! message (sender index, sequence number from the ciphertext stamp) at most once, and `cseq`
//! strictly rising within an epoch. At the end, a receiver whose every resume said
//! `recovered:true` must hold every acked message: anything missing is a gap.
//!
//! Receivers that never drop ("steady") report the fan-out figures (receive latency,
//! deliveries/s) to compare with plain `fanout` at the same S: the waves must not slow them
//! down. Palaver only: the ceiling has no stream positions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::{StreamExt, stream};
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::sender::{Progress, SendPlan, run_sender};
use super::{Ctx, account_for, open_all, warn_if_few_files};
use crate::clock;
use crate::frame::{self, SendTemplate, ServerFrame, Stamp};
use crate::procfs::PhaseMeter;
use crate::setup::users_for;
use crate::stats::{ErrorCounts, Latency, SeqSet, SharedLatency, round3};
use crate::target::Target;
use crate::ws::{self, HANDSHAKE_TIMEOUT, WsStream};

/// Receiving sockets per user at most. A dropped socket's session may still be registered
/// when its replacement authenticates; with 4 sockets per user even a whole user's sockets
/// reconnecting at once stay within the server's cap of 8, so no reconnect evicts (4009) a
/// sibling.
const MAX_RECEIVERS_PER_USER: usize = 4;

/// Attempts per reconnect before a receiver gives up.
const RECONNECT_ATTEMPTS: u32 = 3;

/// How long after a wave's start a message counts as sent "in the wave" (the steady
/// receivers' latency is reported for both sides of this split).
const WAVE_WINDOW: Duration = Duration::from_secs(2);

/// Pause between reconnect attempts.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    ensure!(!ctx.setup.is_ceiling(), "recovery: the ceiling has no stream positions (Palaver only)");
    let per_user = a.sockets_per_user.min(MAX_RECEIVERS_PER_USER);
    let wave_size = ((a.receivers as f64 * a.wave_share).round() as usize).min(a.receivers);
    let wave_offsets: Vec<Duration> = (1..)
        .map(|k| Duration::from_secs(a.wave_every * k))
        .take_while(|t| *t < Duration::from_secs(a.duration))
        .collect();
    eprintln!(
        "recovery: {} receivers ({per_user} per user), {} senders × {}/s for {}s; {} waves of {wave_size} every {}s",
        a.receivers,
        a.senders,
        a.rate,
        a.duration,
        wave_offsets.len(),
        a.wave_every
    );
    warn_if_few_files("recovery", a.receivers + a.senders + wave_size);

    let setup = &ctx.setup;
    let recv_users = setup.users("r", users_for(a.receivers, per_user)).await?;
    let send_users = setup.users("s", users_for(a.senders, a.sockets_per_user)).await?;
    let members: Vec<_> = send_users.iter().chain(&recv_users).cloned().collect();
    let channel = setup.shared_channel("bench-recovery", &members).await?;

    let tokens: Vec<String> =
        (0..a.receivers).map(|i| account_for(&recv_users, per_user, i).token.clone()).collect();
    let receivers = open_receivers(ctx, &tokens, channel).await?;
    let senders = open_all(ctx, "senders", &send_users, a.senders, |_| vec![]).await?;
    // Let the server finish any per-connection work (presence etc.) before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let start = Instant::now() + Duration::from_millis(200);
    let start_ns = clock::now_ns() + 200_000_000;
    let send_end = start + Duration::from_secs(a.duration);

    // Wave k takes the k-th slice of one shuffled order, so a receiver drops at most once
    // unless the waves together exceed the receivers.
    let mut order: Vec<usize> = (0..a.receivers).collect();
    order.shuffle(&mut rand::rng());
    let mut drops: Vec<Vec<Instant>> = vec![Vec::new(); a.receivers];
    for (k, offset) in wave_offsets.iter().enumerate() {
        for j in 0..wave_size {
            drops[order[(k * wave_size + j) % a.receivers]].push(start + *offset);
        }
    }

    let shared = Arc::new(Shared {
        target: ctx.target.clone(),
        channel,
        senders: a.senders,
        progress: Progress::default(),
        steady_latency: SharedLatency::new(16),
        steady_latency_in_waves: SharedLatency::new(16),
        dropping_latency: SharedLatency::new(16),
        wave_windows_ns: wave_offsets
            .iter()
            .map(|offset| {
                let from = start_ns + offset.as_nanos() as u64;
                (from, from + WAVE_WINDOW.as_nanos() as u64)
            })
            .collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let recv_tasks: Vec<_> = receivers
        .into_iter()
        .zip(tokens)
        .zip(drops)
        .enumerate()
        .map(|(idx, ((joined, token), drops))| {
            let plan = ReceiverPlan { idx, token, drops };
            tokio::spawn(receiver(plan, joined, shared.clone(), stop_rx.clone()))
        })
        .collect();

    let meter = PhaseMeter::start(a.server_pid)?;
    let template = Arc::new(SendTemplate::new(channel, a.payload_bytes));
    // The senders count acks in a Progress of their own; the receivers' unique deliveries
    // go to `shared.progress`.
    let send_progress = Arc::new(Progress::default());
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
                exit_when_done: false,
            };
            tokio::spawn(run_sender(s.ws, plan, send_progress.clone(), stop_rx.clone()))
        })
        .collect();

    // Wait for the send phase, then drain until everything acked arrived everywhere (or
    // the drain time is up: receivers that did not recover never catch up).
    tokio::time::sleep_until(send_end).await;
    let drain_end = send_end + Duration::from_secs(a.drain);
    let receivers_n = a.receivers as u64;
    while Instant::now() < drain_end {
        let acked = send_progress.acked.load(Ordering::Relaxed);
        let all_acked = send_progress.outstanding.load(Ordering::Relaxed) <= 0;
        if all_acked && shared.progress.delivered_unique.load(Ordering::Relaxed) >= acked * receivers_n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let usage = meter.finish().await?;

    let mut sent = 0;
    let mut acked_sets = Vec::with_capacity(a.senders);
    let mut ack_latency = Latency::default();
    let mut errors = ErrorCounts::default();
    for t in send_tasks {
        let r = t.await?;
        sent += r.sent;
        acked_sets.push(r.acked);
        ack_latency.merge(&r.ack_latency);
        errors.merge(&r.errors);
    }
    let acked: u64 = acked_sets.iter().map(SeqSet::len).sum();

    let mut t = Totals::default();
    for task in recv_tasks {
        t.add(task.await?, &acked_sets, acked);
    }

    let delivery_secs = (t.last_recv_ns.saturating_sub(start_ns) as f64 / 1e9).max(a.duration as f64);
    let reconnects = t.reconnects.len() as u64;
    let recovered = t.reconnects.iter().filter(|r| r.recovered).count() as u64;
    let complete: Vec<&Reconnect> = t.reconnects.iter().filter(|r| r.replay_us.is_some()).collect();
    let (mut replay_latency, mut replay_latency_recovered, mut resume_latency) =
        (Latency::default(), Latency::default(), Latency::default());
    for r in &complete {
        let us = r.replay_us.unwrap_or_default();
        replay_latency.record_us(us);
        if r.recovered {
            replay_latency_recovered.record_us(us);
        }
        resume_latency.record_us(r.resume_us.unwrap_or_default());
    }
    let frames_replayed: u64 = t.reconnects.iter().map(|r| r.frames).sum();
    let bytes_replayed: u64 = t.reconnects.iter().map(|r| r.bytes).sum();
    let per_reconnect =
        |total: u64| if reconnects > 0 { round3(total as f64 / reconnects as f64) } else { 0.0 };
    let by_cause = |cause: Cause| t.reconnects.iter().filter(|r| r.cause == cause).count();
    let mut steady_latency = shared.steady_latency.merged();
    steady_latency.merge(&shared.steady_latency_in_waves.merged());
    let steady_per_receiver = if t.steady_receivers > 0 {
        t.steady_delivered as f64 / delivery_secs / t.steady_receivers as f64
    } else {
        0.0
    };

    Ok(json!({
        "receivers": a.receivers,
        "receivers_per_user": per_user,
        "senders": a.senders,
        "rate": a.rate,
        "duration_s": a.duration,
        "payload_bytes": a.payload_bytes,
        "wave_every_s": a.wave_every,
        "wave_share": a.wave_share,
        "waves": wave_offsets.len(),
        "wave_size": wave_size,
        "sent": sent,
        "acked": acked,
        "errors": errors,
        "receiver_errors": t.errors,
        "reconnects": {
            "total": reconnects,
            "wave": by_cause(Cause::Wave),
            "server_closed": by_cause(Cause::ServerClosed),
            "failed_attempts": t.reconnect_failures,
            "receivers_gave_up": t.gave_up,
            "replays_interrupted": reconnects - complete.len() as u64,
        },
        "recovered_share": if reconnects > 0 { round3(recovered as f64 / reconnects as f64) } else { 0.0 },
        "recovered": recovered,
        "replay_latency_ms": replay_latency.summary_ms(),
        "replay_latency_recovered_ms": replay_latency_recovered.summary_ms(),
        "resume_latency_ms": resume_latency.summary_ms(),
        "replayed_frames": { "total": frames_replayed, "per_reconnect": per_reconnect(frames_replayed) },
        "replayed_bytes": { "total": bytes_replayed, "per_reconnect": per_reconnect(bytes_replayed) },
        "gaps": t.gaps,
        "duplicates": t.duplicates,
        "cseq_not_rising": t.cseq_not_rising,
        "cseq_skips": t.cseq_skips,
        "replay_mismatches": t.replay_mismatches,
        "resync_required": t.resync_required,
        "not_recovered_missing": t.not_recovered_missing,
        "steady": {
            "receivers": t.steady_receivers,
            "closed_by_server": t.steady_closed,
            "lost": t.steady_lost,
            "recv_latency_ms": steady_latency.summary_ms(),
            // Split by when the message was sent: within WAVE_WINDOW of a wave's start, or not.
            "recv_latency_in_waves_ms": shared.steady_latency_in_waves.merged().summary_ms(),
            "recv_latency_between_waves_ms": shared.steady_latency.merged().summary_ms(),
            "deliveries_per_s": round3(t.steady_delivered as f64 / delivery_secs),
            "deliveries_per_s_per_receiver": round3(steady_per_receiver),
            "deliveries_per_s_all_receivers_equivalent": round3(steady_per_receiver * a.receivers as f64),
        },
        "dropping_recv_latency_ms": shared.dropping_latency.merged().summary_ms(),
        "delivered": t.delivered,
        "expected": acked * receivers_n,
        "deliveries_per_s": round3(t.delivered as f64 / delivery_secs),
        "delivery_span_s": round3(delivery_secs),
        "ack_latency_ms": ack_latency.summary_ms(),
        "server_cpu_s": usage.server_cpu_s.map(round3),
        "server_rss_kb": usage.server_rss_kb,
        "loadgen_cpu_s": round3(usage.loadgen_cpu_s),
    }))
}

/// What every receiver task reads.
struct Shared {
    target: Arc<Target>,
    channel: Uuid,
    senders: usize,
    /// Unique deliveries, for ending the drain early.
    progress: Progress,
    /// Receive latency of live frames on receivers that have not reconnected (yet), for
    /// messages sent outside the waves' windows.
    steady_latency: SharedLatency,
    /// The same for messages sent within a wave's window: what the waves cost the others.
    steady_latency_in_waves: SharedLatency,
    /// `[from, to)` in `clock::now_ns` time: each wave's start and WAVE_WINDOW after it.
    wave_windows_ns: Vec<(u64, u64)>,
    /// Receive latency of live frames on the other receivers (in a wave, or closed by the
    /// server), before and after their resume.
    dropping_latency: SharedLatency,
}

/// One receiver's schedule.
struct ReceiverPlan {
    idx: usize,
    token: String,
    /// When to drop the socket and resume (rising).
    drops: Vec<Instant>,
}

/// A socket subscribed with `since`, and the `subscribed` answer.
struct Joined {
    ws: WsStream,
    subscribed: Subscribed,
    /// When `subscribe` was sent (`clock::now_ns`).
    subscribe_sent_ns: u64,
}

/// The fields of a `subscribed` frame.
struct Subscribed {
    epoch: String,
    cseq: u64,
    recovered: bool,
    replayed: u64,
}

/// A receiver's position in the channel's stream: the last `cseq` it holds in `epoch`.
struct Position {
    epoch: String,
    cseq: u64,
}

/// Why a receiver reconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Its turn in a wave.
    Wave,
    /// The server closed the socket (e.g. 4008 slow reader).
    ServerClosed,
}

/// One resume.
struct Reconnect {
    cause: Cause,
    recovered: bool,
    /// `subscribe` sent → last replayed frame (or `subscribed` if none); `None` if the
    /// replay did not finish before the socket dropped again or the run ended.
    replay_us: Option<u64>,
    /// Socket dropped → replay done: what a user waits for.
    resume_us: Option<u64>,
    frames: u64,
    bytes: u64,
}

/// A replay in progress: `left` frames still to come, all at or below `until`.
struct Replay {
    record: usize,
    until: u64,
    left: u64,
    subscribe_sent_ns: u64,
    dropped_ns: u64,
}

struct ReceiverReport {
    /// Indexed by sender: which sequence numbers arrived.
    per_sender: Vec<SeqSet>,
    duplicates: u64,
    cseq_not_rising: u64,
    cseq_skips: u64,
    replay_mismatches: u64,
    resync_required: u64,
    reconnects: Vec<Reconnect>,
    reconnect_failures: u64,
    gave_up: bool,
    /// Some resume said `recovered:false`, or a `resync_required` came: this receiver may
    /// lack messages a real client would fetch over REST.
    unrecovered: bool,
    /// In no wave.
    planned_steady: bool,
    /// In no wave and never closed by the server.
    steady: bool,
    /// Unique deliveries while steady.
    steady_delivered: u64,
    last_recv_ns: u64,
    errors: ErrorCounts,
}

/// Connects, authenticates and subscribes every receiver with `since` `{}` (so each
/// learns the channel's epoch and position from `subscribed`).
async fn open_receivers(ctx: &Ctx, tokens: &[String], channel: Uuid) -> Result<Vec<Joined>> {
    let started = std::time::Instant::now();
    let mut joined: Vec<(usize, Result<Joined>)> = stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let target = ctx.target.clone();
            async move { (i, join(&target, token, channel, None).await) }
        })
        .buffer_unordered(ctx.args.connect_concurrency)
        .collect()
        .await;
    joined.sort_by_key(|(i, _)| *i);
    eprintln!("  receivers: {} sockets subscribed in {:.1}s", joined.len(), started.elapsed().as_secs_f64());
    joined.into_iter().map(|(i, r)| r.with_context(|| format!("receiver socket {i}"))).collect()
}

/// Opens a socket, authenticates and subscribes to `channel` with `since` (`{}` without a
/// position), returning once `subscribed` arrived; replayed frames follow on the socket.
async fn join(target: &Target, token: &str, channel: Uuid, since: Option<&Position>) -> Result<Joined> {
    let (mut ws, _node) = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws::connect(target))
        .await
        .context("timed out connecting")??;
    ws::authenticate(&mut ws, token).await?;
    let subscribe_sent_ns = clock::now_ns();
    ws::send_text(&mut ws, frame::subscribe_since(channel, since.map(|p| (p.epoch.as_str(), p.cseq))))
        .await?;
    let f = ws::wait_for(&mut ws, "subscribed", |f| {
        matches!(f.kind.as_str(), "subscribed" | "subscribe_refused") && f.channel_id == Some(channel)
    })
    .await?;
    if f.kind == "subscribe_refused" {
        bail!("subscribe_refused: {}", f.code.as_deref().unwrap_or("?"));
    }
    let subscribed = Subscribed {
        epoch: f.epoch.context("subscribed without epoch")?,
        cseq: f.cseq.context("subscribed without cseq")?,
        recovered: f.recovered.context("subscribed without recovered")?,
        replayed: f.replayed.context("subscribed without replayed")?,
    };
    Ok(Joined { ws, subscribed, subscribe_sent_ns })
}

/// What happened on a receiver's socket.
enum Event {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Closed(Option<u16>),
    Drop,
    Stop,
}

/// One task per receiving socket: reads `new_message` stamps and positions, drops and
/// resumes on schedule (and whenever the server closes the socket).
async fn receiver(
    plan: ReceiverPlan,
    first: Joined,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverReport {
    let mut rep = ReceiverReport {
        per_sender: vec![SeqSet::default(); shared.senders],
        duplicates: 0,
        cseq_not_rising: 0,
        cseq_skips: 0,
        replay_mismatches: 0,
        resync_required: 0,
        reconnects: Vec::new(),
        reconnect_failures: 0,
        gave_up: false,
        unrecovered: false,
        planned_steady: plan.drops.is_empty(),
        steady: plan.drops.is_empty(),
        steady_delivered: 0,
        last_recv_ns: 0,
        errors: ErrorCounts::default(),
    };
    let mut ws = first.ws;
    let mut pos = Position { epoch: first.subscribed.epoch, cseq: first.subscribed.cseq };
    let mut replay: Option<Replay> = None;
    let mut drops = plan.drops.into_iter().peekable();
    loop {
        let event = match drops.peek().copied() {
            Some(at) => tokio::select! {
                msg = next_event(&mut ws) => msg,
                _ = tokio::time::sleep_until(at) => { drops.next(); Event::Drop }
                _ = stop.changed() => Event::Stop,
            },
            None => tokio::select! {
                msg = next_event(&mut ws) => msg,
                _ = stop.changed() => Event::Stop,
            },
        };
        let cause = match event {
            Event::Stop => break,
            Event::Text(text) => {
                on_text(&text, &mut rep, &mut pos, &mut replay, &shared, plan.idx);
                continue;
            }
            Event::Drop => Cause::Wave,
            Event::Closed(code) => {
                rep.errors.add(&match code {
                    Some(c) => format!("closed_{c}"),
                    None => "closed".to_owned(),
                });
                Cause::ServerClosed
            }
        };
        // Drop the socket without a close handshake (as a lost connection would), then
        // resume at once.
        drop(ws);
        let dropped_ns = clock::now_ns();
        rep.steady = false;
        replay = None;
        let resumed = tokio::select! {
            r = resume(&shared, &plan.token, &pos, &mut rep) => r,
            _ = stop.changed() => break,
        };
        let Some(joined) = resumed else {
            rep.gave_up = true;
            break;
        };
        ws = joined.ws;
        let s = joined.subscribed;
        let mut record = Reconnect {
            cause,
            recovered: s.recovered,
            replay_us: None,
            resume_us: None,
            frames: 0,
            bytes: 0,
        };
        if s.recovered && s.epoch != pos.epoch {
            // recovered:true promises the stream the client named.
            rep.replay_mismatches += 1;
        }
        if !s.recovered {
            // A real client fetches the missed window over REST; the bench only notes it
            // and continues from the announced position.
            rep.unrecovered = true;
            pos = Position { epoch: s.epoch, cseq: s.cseq };
        }
        if s.replayed == 0 {
            let now = clock::now_ns();
            record.replay_us = Some(now.saturating_sub(joined.subscribe_sent_ns) / 1_000);
            record.resume_us = Some(now.saturating_sub(dropped_ns) / 1_000);
        } else {
            replay = Some(Replay {
                record: rep.reconnects.len(),
                until: s.cseq,
                left: s.replayed,
                subscribe_sent_ns: joined.subscribe_sent_ns,
                dropped_ns,
            });
        }
        rep.reconnects.push(record);
    }
    rep
}

async fn next_event(ws: &mut WsStream) -> Event {
    loop {
        return match ws.next().await {
            Some(Ok(Message::Text(t))) => Event::Text(t),
            Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| f.code.into())),
            None | Some(Err(_)) => Event::Closed(None),
            Some(Ok(_)) => continue,
        };
    }
}

/// Reconnects and subscribes with `since` = `pos`, retrying a few times.
async fn resume(shared: &Shared, token: &str, pos: &Position, rep: &mut ReceiverReport) -> Option<Joined> {
    for attempt in 0..RECONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(RECONNECT_BACKOFF).await;
        }
        match join(&shared.target, token, shared.channel, Some(pos)).await {
            Ok(joined) => return Some(joined),
            Err(e) => {
                rep.reconnect_failures += 1;
                rep.errors.add(&format!("reconnect: {}", e.root_cause()));
            }
        }
    }
    None
}

/// Handles one text frame: positions, replay accounting, message identity and latency.
fn on_text(
    text: &str,
    rep: &mut ReceiverReport,
    pos: &mut Position,
    replay: &mut Option<Replay>,
    shared: &Shared,
    idx: usize,
) {
    let kind = frame::frame_type(text);
    match kind {
        Some("resync_required") => {
            rep.resync_required += 1;
            rep.unrecovered = true;
            match ServerFrame::parse(text) {
                Ok(ServerFrame { epoch: Some(epoch), cseq: Some(cseq), .. }) => {
                    *pos = Position { epoch, cseq }
                }
                _ => rep.errors.add("malformed_resync_required"),
            }
            return;
        }
        Some("error") => {
            let code = ServerFrame::parse(text).ok().and_then(|f| f.code).unwrap_or_default();
            rep.errors.add(&code);
            return;
        }
        // Other channels' answers, acks, presence, pongs: no position of this stream.
        Some("subscribed" | "subscribe_refused" | "message_sent") | None => return,
        Some(_) => {}
    }
    // A durable frame carries its position; ephemeral frames carry none.
    let Some(cseq) = frame::cseq(text) else {
        if kind == Some("new_message") {
            rep.errors.add("new_message_without_cseq");
        }
        return;
    };
    if cseq <= pos.cseq {
        rep.cseq_not_rising += 1;
    } else {
        // Every position in this scenario is a message, so a skipped position is a frame
        // this receiver never got (the wire allows skips for internal events: the
        // message check at the end is the ground truth).
        rep.cseq_skips += cseq - pos.cseq - 1;
        pos.cseq = cseq;
    }
    let replayed = match replay.as_mut() {
        Some(r) => {
            let rec = &mut rep.reconnects[r.record];
            rec.frames += 1;
            rec.bytes += text.len() as u64;
            if cseq > r.until {
                rep.replay_mismatches += 1;
            }
            r.left -= 1;
            if r.left == 0 {
                let now = clock::now_ns();
                rec.replay_us = Some(now.saturating_sub(r.subscribe_sent_ns) / 1_000);
                rec.resume_us = Some(now.saturating_sub(r.dropped_ns) / 1_000);
                *replay = None;
            }
            true
        }
        None => false,
    };
    if kind != Some("new_message") {
        return;
    }
    let Some(Stamp { sender, seq, sent_ns }) = frame::stamp(text) else {
        rep.errors.add("foreign_new_message");
        return;
    };
    let Some(set) = rep.per_sender.get_mut(sender as usize) else {
        rep.errors.add("foreign_new_message");
        return;
    };
    if !set.insert(seq) {
        rep.duplicates += 1;
        return;
    }
    let now = clock::now_ns();
    rep.last_recv_ns = now;
    shared.progress.delivered_unique.fetch_add(1, Ordering::Relaxed);
    if replayed {
        // Its age measures how long the socket was away, not the fan-out.
        return;
    }
    let latency_us = now.saturating_sub(sent_ns) / 1_000;
    if rep.steady {
        rep.steady_delivered += 1;
        let in_wave = shared.wave_windows_ns.iter().any(|(from, to)| (*from..*to).contains(&sent_ns));
        let latency = if in_wave { &shared.steady_latency_in_waves } else { &shared.steady_latency };
        latency.record_us(idx, latency_us);
    } else {
        shared.dropping_latency.record_us(idx, latency_us);
    }
}

/// The receivers' reports summed up.
#[derive(Default)]
struct Totals {
    delivered: u64,
    duplicates: u64,
    cseq_not_rising: u64,
    cseq_skips: u64,
    replay_mismatches: u64,
    resync_required: u64,
    /// Acked messages missing on receivers whose every resume recovered.
    gaps: u64,
    /// Acked messages missing on receivers with an unrecovered window.
    not_recovered_missing: u64,
    reconnects: Vec<Reconnect>,
    reconnect_failures: u64,
    gave_up: u64,
    steady_receivers: u64,
    steady_delivered: u64,
    /// Acked messages missing on steady receivers.
    steady_lost: u64,
    /// Receivers in no wave that the server closed (their figures left the steady ones).
    steady_closed: u64,
    last_recv_ns: u64,
    errors: ErrorCounts,
}

impl Totals {
    fn add(&mut self, r: ReceiverReport, acked_sets: &[SeqSet], acked: u64) {
        let got = r.per_sender.iter().map(SeqSet::len).sum::<u64>();
        let got_acked: u64 = r.per_sender.iter().zip(acked_sets).map(|(g, ok)| g.intersection_len(ok)).sum();
        let missing = acked.saturating_sub(got_acked);
        self.delivered += got;
        self.duplicates += r.duplicates;
        self.cseq_not_rising += r.cseq_not_rising;
        self.cseq_skips += r.cseq_skips;
        self.replay_mismatches += r.replay_mismatches;
        self.resync_required += r.resync_required;
        if r.unrecovered || r.gave_up {
            self.not_recovered_missing += missing;
        } else {
            self.gaps += missing;
        }
        if r.steady {
            self.steady_receivers += 1;
            self.steady_delivered += r.steady_delivered;
            self.steady_lost += missing;
        }
        self.steady_closed += (r.planned_steady && !r.steady) as u64;
        self.reconnects.extend(r.reconnects);
        self.reconnect_failures += r.reconnect_failures;
        self.gave_up += r.gave_up as u64;
        self.last_recv_ns = self.last_recv_ns.max(r.last_recv_ns);
        self.errors.merge(&r.errors);
    }
}
