//! Command-line flags of the load generator.

use std::net::IpAddr;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Fanout,
    Idle,
    History,
    Ingest,
    Presence,
    Register,
    Recovery,
    Failover,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Idle => "idle",
            Scenario::History => "history",
            Scenario::Ingest => "ingest",
            Scenario::Presence => "presence",
            Scenario::Register => "register",
            Scenario::Recovery => "recovery",
            Scenario::Failover => "failover",
        }
    }
}

/// Load generator for Palaver (or the ceiling server). Prints one JSON line of results
/// per scenario on stdout; progress goes to stderr.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// Base URL of the server under test (loopback only), e.g. http://127.0.0.1:8080; for a
    /// cluster, every node's, comma-separated (sockets are spread over them round-robin).
    #[arg(long)]
    pub url: String,

    #[arg(long, value_enum)]
    pub scenario: Scenario,

    /// PID of the server process: its CPU time and RSS are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Other processes of the system under test (the other nodes of a cluster, nats-server):
    /// their CPU time is added to the server's.
    #[arg(long, value_delimiter = ',')]
    pub also_pids: Vec<u32>,

    /// The target is the ceiling server: skip REST setup, use fake tokens and random
    /// channel ids.
    #[arg(long)]
    pub ceiling: bool,

    /// Measured phase length in seconds (fanout, recovery, history, ingest).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,

    /// Extra seconds after the last send to wait for outstanding deliveries/acks.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,

    /// Loopback source addresses for client sockets, used round-robin
    /// (e.g. 127.0.0.1,127.0.0.2). Empty = let the kernel choose.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,

    /// Prefix of registered usernames (random by default so runs never collide).
    #[arg(long)]
    pub users_prefix: Option<String>,

    /// Free-form label copied into the result line (e.g. "ceiling", "palaver-sqlite").
    #[arg(long)]
    pub label: Option<String>,

    /// How many sockets may be connecting/authenticating at the same time.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,

    /// How many REST setup calls (register/join) run at the same time.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,

    /// Sockets per user (the server allows 8; a 9th evicts the oldest).
    #[arg(long, default_value_t = 8)]
    pub sockets_per_user: usize,

    // ---- fanout ----
    /// fanout/recovery: receiving sockets subscribed to the channel.
    #[arg(long, default_value_t = 1000)]
    pub receivers: usize,

    /// fanout/recovery: sending sockets (separate users from the receivers).
    #[arg(long, default_value_t = 20)]
    pub senders: usize,

    /// fanout/ingest: messages per second per sending socket (server sustained limit: 5).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,

    /// fanout/ingest/history seeding: ciphertext size in bytes (min 24).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,

    // ---- recovery ----
    /// recovery: seconds between waves of receivers that drop and resume (first wave after
    /// this long, none at or after the end of the send phase).
    #[arg(long, default_value_t = 10)]
    pub wave_every: u64,

    /// recovery: share of the receivers that drop and resume in each wave (0–1).
    #[arg(long, default_value_t = 0.1)]
    pub wave_share: f64,

    // ---- idle ----
    /// idle/presence: sockets to open and authenticate (idle also subscribes them).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,

    /// idle: seconds to hold the sockets open after the last one is ready.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,

    // ---- history ----
    /// history: concurrent HTTP clients (keep-alive).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,

    /// history: messages sent over WS before reading starts.
    #[arg(long, default_value_t = 200)]
    pub seed_messages: usize,

    // ---- ingest ----
    /// ingest: channels, one sending socket each.
    #[arg(long, default_value_t = 200)]
    pub channels: usize,

    // ---- failover ----
    /// failover: every node's pid, in `--url` order (the channel's owner is SIGKILLed).
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,

    /// failover: seconds into the send phase at which the owner is killed.
    #[arg(long, default_value_t = 10)]
    pub kill_after: u64,

    // ---- register ----
    /// register: accounts to register (argon2 each); concurrency is --setup-concurrency.
    #[arg(long, default_value_t = 200)]
    pub registrations: usize,
}

/// The per-socket sustained WebSocket rate limit of the server (seed default).
pub const SERVER_SUSTAINED_RATE: f64 = 5.0;

impl Args {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate > 0.0 && self.rate <= SERVER_SUSTAINED_RATE,
            "--rate must be in (0, {SERVER_SUSTAINED_RATE}] (the server's per-socket sustained limit)"
        );
        anyhow::ensure!(self.payload_bytes >= crate::frame::STAMP_LEN, "--payload-bytes must be >= 24");
        anyhow::ensure!(self.payload_bytes <= 65_536, "--payload-bytes must be <= 65536");
        anyhow::ensure!((1..=8).contains(&self.sockets_per_user), "--sockets-per-user must be 1..=8");
        anyhow::ensure!(
            self.connect_concurrency > 0 && self.setup_concurrency > 0,
            "concurrency must be > 0"
        );
        anyhow::ensure!(self.wave_every > 0, "--wave-every must be > 0");
        anyhow::ensure!((0.0..=1.0).contains(&self.wave_share), "--wave-share must be in [0, 1]");
        for ip in &self.source_ips {
            anyhow::ensure!(ip.is_loopback(), "--source-ips must be loopback addresses, got {ip}");
        }
        Ok(())
    }
}
