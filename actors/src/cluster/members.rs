//! Who is in the cluster: every node announces itself on `<prefix>.v1.ctl` (heartbeats) and
//! hears the others. A node counts as live while it was heard within `dead_after` *and* holds
//! its node lock (a crashed process loses the lock at once, before it falls silent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::shards::Shard;
use super::{Cluster, ClusterConfig};

/// What nodes tell each other on `ctl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlMessage {
    /// "I am alive" (every `heartbeat`).
    Heartbeat,
    /// Shards this node just took.
    Acquired { shards: Vec<Shard> },
    /// Shards this node just gave up.
    Released { shards: Vec<Shard> },
    /// This node is shutting down: stop counting it now.
    Leaving,
}

/// A control message with its sender.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    boot: String,
    #[serde(flatten)]
    message: ControlMessage,
}

pub struct Members {
    node_id: String,
    /// New at every start: tells a restarted node from the previous run of the same id.
    boot_id: String,
    subject: String,
    /// Other nodes → when they were last heard.
    heard: Mutex<HashMap<String, Instant>>,
}

impl Members {
    pub fn new(config: &ClusterConfig, boot_id: String) -> Self {
        Self {
            node_id: config.node_id.clone(),
            boot_id,
            subject: format!("{}.v1.ctl", config.prefix),
            heard: Mutex::new(HashMap::new()),
        }
    }

    pub fn control_subject(&self) -> String {
        self.subject.clone()
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    pub async fn publish(&self, nats: &async_nats::Client, message: &ControlMessage) -> Result<(), String> {
        let envelope =
            Envelope { node: self.node_id.clone(), boot: self.boot_id.clone(), message: message.clone() };
        let body = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
        nats.publish(self.subject.clone(), body.into()).await.map_err(|e| e.to_string())
    }

    /// Live nodes, this one included, sorted.
    pub fn live(&self, dead_after: Duration, holds_lock: impl Fn(&str) -> bool) -> Vec<String> {
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let mut live: Vec<String> = heard
            .iter()
            .filter(|(node, at)| at.elapsed() < dead_after && holds_lock(node))
            .map(|(node, _)| node.clone())
            .collect();
        live.push(self.node_id.clone());
        live.sort();
        live
    }

    fn heard(&self, envelope: &Envelope) {
        if envelope.node == self.node_id {
            return;
        }
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        match envelope.message {
            ControlMessage::Leaving => {
                heard.remove(&envelope.node);
            }
            _ => {
                heard.insert(envelope.node.clone(), Instant::now());
            }
        }
    }
}

/// Reads `ctl` until shutdown.
pub async fn listen(
    cluster: Arc<Cluster>,
    mut control: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            message = control.next() => {
                let Some(message) = message else { break };
                match serde_json::from_slice::<Envelope>(&message.payload) {
                    Ok(envelope) => cluster.members.heard(&envelope),
                    Err(err) => tracing::debug!(%err, "ignored a malformed control message"),
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// Announces this node every `heartbeat` until shutdown.
pub async fn heartbeats(cluster: Arc<Cluster>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(cluster.config.timers.heartbeat);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let _ = cluster.members.publish(&cluster.nats, &ControlMessage::Heartbeat).await;
            }
            _ = stop.changed() => break,
        }
    }
}
