//! `failover` (cluster only): `--senders` sockets spread over the nodes send to one channel at
//! `--rate`, each message with its own `client_nonce`, one at a time, the way a client that
//! never gives up on a message does: on `unavailable` it sends again with the same key, on a
//! lost connection it reconnects (to the next node) and sends again. `--kill-after` seconds
//! in, the channel's owner is SIGKILLed.
//!
//! Reports the unavailable window (kill → each sender's first ack of a message first tried
//! after the kill), the acks, and the history as a survivor serves it afterwards: acked
//! messages missing (must be 0) and keys stored twice (must be 0; each message's ciphertext
//! carries its key).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Ctx, send_ticker};
use crate::frame::ServerFrame;
use crate::setup::{Account, users_for};
use crate::stats::{ErrorCounts, Latency, round3};
use crate::ws::{self, WsStream};

/// Longest wait for one answer before the connection counts as lost.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// Pause before sending again after `unavailable` or a lost connection.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// After the send phase, a message still unacked is given up this much later.
const GIVE_UP_AFTER_END: Duration = Duration::from_secs(30);

pub async fn run(ctx: &Ctx) -> Result<Value> {
    let a = &ctx.args;
    let nodes = ctx.target.node_count();
    if nodes < 2 || a.node_pids.len() != nodes {
        bail!("failover needs a cluster: several --url nodes and their --node-pids, in the same order");
    }
    anyhow::ensure!(a.kill_after < a.duration, "--kill-after must fall within --duration");
    let node_ids = node_ids(ctx, nodes).await?;
    let users = ctx.setup.users("f", users_for(a.senders, a.sockets_per_user)).await?;
    let channel = ctx.setup.shared_channel("bench-failover", &users).await?;
    let live: Vec<&str> = node_ids.iter().map(String::as_str).collect();
    let shard = palaver_actors::cluster::shards::shard_of(channel);
    let owner_id = palaver_actors::cluster::shards::placement(shard, &live).context("no live node")?;
    let owner = node_ids.iter().position(|n| n == owner_id).context("owner among the nodes")?;
    eprintln!(
        "failover: {} senders × {}/s on {nodes} nodes for {}s; owner {owner_id} killed at {}s",
        a.senders, a.rate, a.duration, a.kill_after
    );

    let start = Instant::now() + Duration::from_millis(500);
    let send_end = start + Duration::from_secs(a.duration);
    let kill_at = start + Duration::from_secs(a.kill_after);
    let tasks: Vec<_> = (0..a.senders)
        .map(|i| {
            let sender = Sender {
                target: ctx.target.clone(),
                token: super::account_for(&users, a.sockets_per_user, i).token.clone(),
                channel,
                index: i,
                node: i % nodes,
                nodes,
                payload_bytes: a.payload_bytes,
            };
            let first = start + Duration::from_secs_f64(i as f64 / a.senders as f64 / a.rate);
            tokio::spawn(sender.run(first, send_end, a.rate))
        })
        .collect();

    tokio::time::sleep_until(kill_at).await;
    let pid = a.node_pids[owner];
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    anyhow::ensure!(killed.success(), "could not kill the owner (pid {pid})");
    let killed_at = Instant::now();
    eprintln!("failover: killed {owner_id} (pid {pid})");

    let mut acked: Vec<Uuid> = Vec::new();
    let mut windows = Latency::default();
    let mut before_latency = Latency::default();
    let mut after_latency = Latency::default();
    let mut errors = ErrorCounts::default();
    let (mut sent, mut given_up, mut reconnects, mut never_again) = (0u64, 0u64, 0u64, 0u64);
    for task in tasks {
        let r = task.await?;
        sent += r.sent;
        given_up += r.given_up;
        reconnects += r.reconnects;
        errors.merge(&r.errors);
        for ack in &r.acks {
            acked.push(ack.id);
            let us = (ack.acked - ack.first_try).as_micros() as u64;
            if ack.first_try < killed_at { before_latency.record_us(us) } else { after_latency.record_us(us) }
        }
        match r.acks.iter().find(|ack| ack.first_try >= killed_at) {
            Some(ack) => windows.record_us((ack.acked - killed_at).as_micros() as u64),
            None => never_again += 1,
        }
    }

    let survivor = (owner + 1) % nodes;
    let stored = history(ctx, survivor, &users[0], channel, acked.len()).await?;
    let distinct: HashSet<Uuid> = stored.iter().map(|m| m.id).collect();
    let keys: HashSet<Vec<u8>> = stored.iter().map(|m| m.ciphertext.clone()).collect();
    let acked_set: HashSet<Uuid> = acked.iter().copied().collect();
    let missing = acked_set.difference(&distinct).count();
    Ok(json!({
        "senders": a.senders,
        "nodes": nodes,
        "rate": a.rate,
        "duration_s": a.duration,
        "kill_after_s": a.kill_after,
        "killed": owner_id,
        "sent": sent,
        "acked": acked_set.len(),
        "given_up": given_up,
        "reconnects": reconnects,
        "errors": errors,
        "unavailable_window_ms": windows.summary_ms(),
        "senders_never_acked_again": never_again,
        "ack_latency_before_kill_ms": before_latency.summary_ms(),
        "ack_latency_after_kill_ms": after_latency.summary_ms(),
        "stored": stored.len(),
        "acked_missing": missing,
        "stored_twice": stored.len() - keys.len(),
        "stored_unacked": distinct.difference(&acked_set).count(),
        "offered_per_s": round3(a.senders as f64 * a.rate),
    }))
}

/// Each node's `node_id`, from its health.
async fn node_ids(ctx: &Ctx, nodes: usize) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let health: Value =
            ctx.setup.http.get(ctx.target.node_api(i, "/health")).send().await?.json().await?;
        let id = health["cluster"]["node_id"].as_str().context("a node's health has no cluster.node_id")?;
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// A stored message: its id and ciphertext (which carries the sender's key).
#[derive(serde::Deserialize)]
struct Stored {
    id: Uuid,
    ciphertext: Vec<u8>,
}

/// Every message of the channel, as node `node` serves its history (newest first).
async fn history(
    ctx: &Ctx,
    node: usize,
    reader: &Account,
    channel: Uuid,
    expected: usize,
) -> Result<Vec<Stored>> {
    let mut ids = Vec::with_capacity(expected);
    let mut before: Option<Uuid> = None;
    for _ in 0..=expected / 100 + 10 {
        let mut url = ctx.target.node_api(node, &format!("/channels/{channel}/messages?limit=100"));
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let page: Vec<Stored> = ctx
            .setup
            .http
            .get(&url)
            .bearer_auth(&reader.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(last) = page.last() else { return Ok(ids) };
        before = Some(last.id);
        ids.extend(page);
    }
    bail!("history of channel {channel} did not end")
}

struct Sender {
    target: std::sync::Arc<crate::target::Target>,
    token: String,
    channel: Uuid,
    index: usize,
    /// The node this sender is connected to (moves on when its connection is lost).
    node: usize,
    nodes: usize,
    payload_bytes: usize,
}

struct Ack {
    id: Uuid,
    first_try: Instant,
    acked: Instant,
}

#[derive(Default)]
struct SenderResult {
    sent: u64,
    acks: Vec<Ack>,
    given_up: u64,
    reconnects: u64,
    errors: ErrorCounts,
}

/// What came of one attempt to send.
enum Attempt {
    Acked(Uuid),
    /// `unavailable`: send again with the same key.
    Retry,
    /// The connection is gone: reconnect, then send again.
    Lost,
    /// Refused for good (any other error).
    Refused,
}

impl Sender {
    async fn run(mut self, first: Instant, send_end: Instant, rate: f64) -> SenderResult {
        let mut result = SenderResult::default();
        let mut ticker = send_ticker(first, rate);
        let mut ws: Option<WsStream> = None;
        let mut k = 0u64;
        loop {
            ticker.tick().await;
            if Instant::now() >= send_end {
                break;
            }
            let key = format!("failover-{}-{k}", self.index);
            k += 1;
            result.sent += 1;
            let first_try = Instant::now();
            let give_up = send_end + GIVE_UP_AFTER_END;
            loop {
                if Instant::now() >= give_up {
                    result.given_up += 1;
                    break;
                }
                let Some(socket) = ws.as_mut() else {
                    match self.connect().await {
                        Ok(socket) => ws = Some(socket),
                        Err(_) => {
                            self.node = (self.node + 1) % self.nodes;
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                    continue;
                };
                match self.attempt(socket, &key, &mut result.errors).await {
                    Attempt::Acked(id) => {
                        result.acks.push(Ack { id, first_try, acked: Instant::now() });
                        break;
                    }
                    Attempt::Retry => tokio::time::sleep(RETRY_PAUSE).await,
                    Attempt::Lost => {
                        ws = None;
                        result.reconnects += 1;
                        self.node = (self.node + 1) % self.nodes;
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Attempt::Refused => {
                        result.given_up += 1;
                        break;
                    }
                }
            }
        }
        result
    }

    async fn connect(&self) -> Result<WsStream> {
        let (url, addr) = self.target.node(self.node);
        let mut socket = tokio::time::timeout(ANSWER_WAIT, ws::connect_to(&self.target, url, addr))
            .await
            .context("timed out connecting")??;
        ws::authenticate(&mut socket, &self.token).await?;
        Ok(socket)
    }

    async fn attempt(&self, ws: &mut WsStream, key: &str, errors: &mut ErrorCounts) -> Attempt {
        let frame = json!({
            "type": "send_message",
            "channel_id": self.channel,
            // The key itself, padded: the stored history shows which sends were stored twice.
            "ciphertext": key.bytes().chain(std::iter::repeat(0)).take(self.payload_bytes.max(key.len())).collect::<Vec<u8>>(),
            "nonce": [1, 2, 3],
            "message_type": "text",
            "client_nonce": key,
        });
        if ws::send_text(ws, frame.to_string()).await.is_err() {
            return Attempt::Lost;
        }
        let deadline = Instant::now() + ANSWER_WAIT;
        loop {
            let text = match tokio::time::timeout_at(deadline, ws::next_text(ws)).await {
                Ok(Ok(Some(text))) => text,
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Attempt::Lost,
            };
            let Ok(frame) = ServerFrame::parse(&text) else { continue };
            match frame.kind.as_str() {
                "message_sent" => match frame.id {
                    Some(id) => return Attempt::Acked(id),
                    None => continue,
                },
                "error" => {
                    let code = frame.code.as_deref().unwrap_or("?");
                    errors.add(code);
                    return match code {
                        "unavailable" => Attempt::Retry,
                        // This socket is being closed: send again from a new one.
                        "too_many_sessions" => Attempt::Lost,
                        _ => Attempt::Refused,
                    };
                }
                _ => continue,
            }
        }
    }
}
