//! Configuration: one struct with documented fields.
//!
//! Precedence: command-line flags > environment variables > TOML file (`--config` /
//! `PALAVER_CONFIG`) > built-in defaults. The environment names are fixed: operators'
//! scripts rely on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

/// Who may create an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    Open,
    InviteOnly,
    Closed,
}

impl RegistrationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationMode::Open => "open",
            RegistrationMode::InviteOnly => "invite_only",
            RegistrationMode::Closed => "closed",
        }
    }
}

impl FromStr for RegistrationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "open" => Ok(Self::Open),
            "invite_only" => Ok(Self::InviteOnly),
            "closed" => Ok(Self::Closed),
            other => Err(format!("unknown registration mode {other:?} (open, invite_only, closed)")),
        }
    }
}

/// How log lines are written to stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers (`tracing-subscriber`'s json format).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log_format {other:?}: use text or json")),
        }
    }
}

/// Longest accepted `drain_delay`: the whole shutdown must fit in 10 s.
pub const MAX_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// A token bucket: `burst` tokens, refilled at `per_second`. Written `BURST/PER_SECOND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_second: u32,
}

impl RateLimit {
    pub const fn new(burst: u32, per_second: u32) -> Self {
        Self { burst, per_second }
    }
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (burst, rate) = s
            .split_once('/')
            .ok_or_else(|| format!("rate limit {s:?} must look like BURST/PER_SECOND, e.g. 10/5"))?;
        let burst: u32 = burst.trim().parse().map_err(|_| format!("bad burst in {s:?}"))?;
        let per_second: u32 = rate.trim().parse().map_err(|_| format!("bad rate in {s:?}"))?;
        if burst == 0 || per_second == 0 {
            return Err(format!("rate limit {s:?} must be positive"));
        }
        Ok(Self { burst, per_second })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Link-preview fetch limits. Fixed by the wire contract (10 s, 512 000 bytes of HTML) and not
/// configurable by operators; tests may shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkPreviewLimits {
    /// Whole fetch, DNS and every redirect included.
    pub timeout: Duration,
    /// Bytes of the page read at most (the rest is never downloaded).
    pub max_body_bytes: usize,
    /// Redirects followed at most (each target is checked like the first URL).
    pub max_redirects: usize,
}

/// Web Push delivery: the queue, the workers, retries and the per-user rate limit. Fixed in
/// production; tests shorten the times.
#[derive(Clone, Copy, Debug)]
pub struct PushLimits {
    /// Deliveries waiting for a worker; more are dropped (and logged), never waited for.
    pub queue: usize,
    /// Deliveries in flight at once (one HTTP request each).
    pub workers: usize,
    /// Attempts per delivery (the first included) on network errors, 5xx and 429.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one (429's Retry-After wins).
    pub retry_base: Duration,
    /// Longest wait before a retry, `Retry-After` included.
    pub retry_max: Duration,
    /// One HTTP request to a push service, connecting included.
    pub request_timeout: Duration,
    /// Notifications per user in a burst, then one per `per_user_period`.
    pub per_user_burst: u32,
    pub per_user_period: Duration,
}

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            queue: 4096,
            workers: 8,
            max_attempts: 4,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(10 * 60),
            request_timeout: Duration::from_secs(15),
            per_user_burst: 10,
            per_user_period: Duration::from_secs(6),
        }
    }
}

impl Default for LinkPreviewLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), max_body_bytes: 512_000, max_redirects: 3 }
    }
}

/// What one message search may cost (`GET /messages/search`, `GET /channels/{id}/messages/search`).
/// Not configurable by operators; tests may shrink them. Whichever runs out first ends the
/// scan, and the answer says it was cut short (`X-Search-Truncated: true`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLimits {
    /// Candidate rows scanned at most.
    pub max_rows: usize,
    /// Payload bytes scanned at most.
    pub max_bytes: usize,
    /// Wall time one search may take, waiting for the database and the matching pool included.
    pub max_time: Duration,
    /// Searches one user may have running at once (429 `rate_limited` beyond).
    pub per_user: usize,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self { max_rows: 20_000, max_bytes: 64 * 1024 * 1024, max_time: Duration::from_secs(3), per_user: 2 }
    }
}

/// Flags and environment variables. Every field is optional so that a missing one falls
/// through to the config file and then to the default.
#[derive(Parser, Debug, Default)]
#[command(name = "palaver", version, about = "Palaver: a self-hosted, end-to-end-encrypted chat server")]
pub struct Cli {
    /// TOML configuration file (keys are the lowercase field names, e.g. `bind = "0.0.0.0:8080"`).
    #[arg(long, env = "PALAVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "PALAVER_BIND")]
    pub bind: Option<SocketAddr>,
    /// A separate address serving `GET /metrics` (Prometheus). Unset: the main listener
    /// serves it to loopback clients only.
    #[arg(long, env = "PALAVER_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Directory for the SQLite database, the signing key and uploads.
    #[arg(long, env = "PALAVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL; `postgres://…` selects PostgreSQL. Default: SQLite in the data dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// `open`, `invite_only` or `closed`.
    #[arg(long, env = "PALAVER_REGISTRATION")]
    pub registration: Option<RegistrationMode>,
    /// Comma-separated CIDRs whose `X-Forwarded-For` is believed.
    #[arg(long, env = "PALAVER_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Header a trusted proxy sets to the client's address (e.g. `cf-connecting-ip`,
    /// `x-real-ip`), believed instead of `X-Forwarded-For`. Unset: `X-Forwarded-For` only.
    #[arg(long, env = "PALAVER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Canonical public base URL, shown in `/auth/config`.
    #[arg(long, env = "PALAVER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// `on` or `off`: the per-IP HTTP limiters (general and `/auth/*`). Off is for benchmarks.
    #[arg(long, env = "PALAVER_HTTP_RATE_LIMITS")]
    pub http_rate_limits: Option<String>,
    /// General per-IP HTTP bucket, `BURST/PER_SECOND`.
    #[arg(long, env = "PALAVER_HTTP_RATE_LIMIT")]
    pub http_rate_limit: Option<RateLimit>,
    /// Stricter per-IP bucket on `/auth/*`, `BURST/PER_SECOND`.
    #[arg(long, env = "PALAVER_AUTH_RATE_LIMIT")]
    pub auth_rate_limit: Option<RateLimit>,
    /// Password hashes (argon2, 19 MiB each) computed at once. Default: the number of cores.
    #[arg(long, env = "PALAVER_HASH_WORKERS")]
    pub hash_workers: Option<usize>,
    /// Password hashes that may wait for a worker; beyond them requests get 503. Default: 16 × workers.
    #[arg(long, env = "PALAVER_HASH_QUEUE")]
    pub hash_queue: Option<usize>,
    /// Per-WebSocket frame bucket, `BURST/PER_SECOND`.
    #[arg(long, env = "PALAVER_WS_RATE_LIMIT")]
    pub ws_rate_limit: Option<RateLimit>,
    /// Failed logins per username before a 15-minute lockout.
    #[arg(long, env = "PALAVER_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<u32>,
    /// Who may create communities: `admin_only` or `open`.
    #[arg(long, env = "PALAVER_COMMUNITY_CREATION")]
    pub community_creation: Option<String>,
    /// Version string of the web client bundle served, sent as `server_version` on the socket.
    #[arg(long, env = "PALAVER_CLIENT_VERSION")]
    pub client_version: Option<String>,
    /// Directory holding a built web client (SPA) to serve at `/`.
    #[arg(long, env = "PALAVER_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Comma-separated CORS origins allowed (`*` for any).
    #[arg(long, env = "PALAVER_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Maximum size of one uploaded file, in bytes.
    #[arg(long, env = "PALAVER_MAX_FILE_SIZE")]
    pub max_file_size: Option<u64>,
    /// Per-user upload quota in bytes (0 = unlimited).
    #[arg(long, env = "PALAVER_UPLOAD_QUOTA")]
    pub upload_quota: Option<u64>,
    /// File uploads per user per minute (0 = unlimited).
    #[arg(long, env = "PALAVER_UPLOAD_RATE_LIMIT")]
    pub upload_rate_limit: Option<u32>,
    /// Capacity of each socket's outbound queue, in frames.
    #[arg(long, env = "PALAVER_WS_QUEUE")]
    pub ws_queue: Option<usize>,
    /// Capacity of each socket's outbound queue, in bytes (a stalled reader of large frames
    /// is disconnected once this much is queued for it).
    #[arg(long, env = "PALAVER_WS_QUEUE_BYTES")]
    pub ws_queue_bytes: Option<usize>,
    /// `on` or `off`: channel actors serve the newest history page from memory. Off is for
    /// measuring what the in-memory page is worth.
    #[arg(long, env = "PALAVER_HISTORY_CACHE")]
    pub history_cache: Option<String>,
    /// WebRTC ICE servers for voice, as a JSON array of `{"urls", "username"?, "credential"?}`.
    #[arg(long, env = "PALAVER_ICE_SERVERS")]
    pub ice_servers: Option<String>,
    /// Executions per webhook token, `BURST/PER_SECOND`.
    #[arg(long, env = "PALAVER_WEBHOOK_RATE_LIMIT")]
    pub webhook_rate_limit: Option<RateLimit>,
    /// Giphy API key; without one the GIF endpoints answer 503.
    #[arg(long, env = "PALAVER_GIPHY_API_KEY")]
    pub giphy_api_key: Option<String>,
    /// Base URL of the Giphy API.
    #[arg(long, env = "PALAVER_GIPHY_API_URL")]
    pub giphy_api_url: Option<String>,
    /// GitHub token allowed to open issues; with `github_repo`, feedback becomes an issue.
    #[arg(long, env = "PALAVER_GITHUB_TOKEN")]
    pub github_token: Option<String>,
    /// `owner/name` of the repository feedback issues are opened in.
    #[arg(long, env = "PALAVER_GITHUB_REPO")]
    pub github_repo: Option<String>,
    /// Base URL of the GitHub API.
    #[arg(long, env = "PALAVER_GITHUB_API_URL")]
    pub github_api_url: Option<String>,
    /// `text` or `json` (one JSON object per line) for the log lines on stdout.
    #[arg(long, env = "PALAVER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Seconds `/api/health` answers 503 `draining` before the listener closes on SIGTERM, so a
    /// load balancer stops sending new clients first (0–5).
    #[arg(long, env = "PALAVER_DRAIN_DELAY")]
    pub drain_delay: Option<u64>,
    /// Enables the cluster: comma-separated `nats://` URLs (needs PostgreSQL).
    #[arg(long, env = "PALAVER_NATS_URL")]
    pub nats_url: Option<String>,
    /// This node's id in the cluster (default: the host name).
    #[arg(long, env = "PALAVER_NODE_ID")]
    pub node_id: Option<String>,
    /// NATS subject prefix (several deployments on one NATS).
    #[arg(long, env = "PALAVER_NATS_PREFIX")]
    pub nats_prefix: Option<String>,
    /// Connection for the cluster's advisory locks (default: DATABASE_URL).
    #[arg(long, env = "PALAVER_LOCK_DATABASE_URL")]
    pub lock_database_url: Option<String>,
    /// NATS disconnection before a node detaches, in seconds (`10` or `10s`).
    #[arg(long, env = "PALAVER_DETACH_AFTER")]
    pub detach_after: Option<String>,
    /// Contact sent to push services in the VAPID token (`sub`): a `mailto:` or `https://`
    /// URI. Default: the public URL when it is `https://`, else `mailto:postmaster@localhost`.
    #[arg(long, env = "PALAVER_PUSH_CONTACT")]
    pub push_contact: Option<String>,
}

/// The same keys, read from the optional TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    metrics_bind: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    registration: Option<RegistrationMode>,
    trusted_proxies: Option<String>,
    client_ip_header: Option<String>,
    public_url: Option<String>,
    http_rate_limits: Option<String>,
    http_rate_limit: Option<RateLimit>,
    auth_rate_limit: Option<RateLimit>,
    hash_workers: Option<usize>,
    hash_queue: Option<usize>,
    ws_rate_limit: Option<RateLimit>,
    login_max_failures: Option<u32>,
    community_creation: Option<String>,
    client_version: Option<String>,
    web_dir: Option<PathBuf>,
    cors_origins: Option<String>,
    max_file_size: Option<u64>,
    upload_quota: Option<u64>,
    upload_rate_limit: Option<u32>,
    ws_queue: Option<usize>,
    ws_queue_bytes: Option<usize>,
    history_cache: Option<String>,
    ice_servers: Option<String>,
    webhook_rate_limit: Option<RateLimit>,
    giphy_api_key: Option<String>,
    giphy_api_url: Option<String>,
    github_token: Option<String>,
    github_repo: Option<String>,
    github_api_url: Option<String>,
    log_format: Option<String>,
    drain_delay: Option<u64>,
    nats_url: Option<String>,
    node_id: Option<String>,
    nats_prefix: Option<String>,
    lock_database_url: Option<String>,
    detach_after: Option<String>,
    push_contact: Option<String>,
}

/// Hash requests that may wait per hashing worker. A waiting request holds no argon2 memory
/// (only its password), so the queue bounds latency, not RSS: 16 per worker at ~50 ms a hash
/// is under a second of wait, and a burst of logins from one office is not refused.
pub const HASH_QUEUE_PER_WORKER: usize = 16;

/// Smallest accepted `ws_queue_bytes`.
pub const MIN_WS_QUEUE_BYTES: usize = 512 * 1024;

/// The resolved configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address; port 0 picks a free port (tests do this).
    pub bind: SocketAddr,
    /// Where `GET /metrics` is served on its own (then not on `bind`); `None`: on `bind`, to
    /// loopback clients only. Operators keep it off the public listener either way.
    pub metrics_bind: Option<SocketAddr>,
    /// Holds the SQLite file, `signing_key.pem` and uploads.
    pub data_dir: PathBuf,
    /// SQLite or PostgreSQL URL.
    pub database_url: String,
    pub registration: RegistrationMode,
    /// Peers whose `X-Forwarded-For` (or `client_ip_header`) we believe.
    pub trusted_proxies: Vec<IpNet>,
    /// Lower-case name of the header trusted proxies put the client address in
    /// (`cf-connecting-ip`, `x-real-ip` …); `None`: the `X-Forwarded-For` rule only.
    pub client_ip_header: Option<String>,
    pub public_url: Option<String>,
    /// False turns both HTTP limiters off (benchmarks); the socket limiter stays.
    pub http_rate_limits: bool,
    pub http_rate_limit: RateLimit,
    pub auth_rate_limit: RateLimit,
    /// Threads computing password hashes (each keeps one 19 MiB argon2 block).
    pub hash_workers: usize,
    /// Hash requests waiting for a worker before further ones are answered 503.
    pub hash_queue: usize,
    pub ws_rate_limit: RateLimit,
    pub login_max_failures: u32,
    /// True when anyone may create a community; false = instance admins only.
    pub open_community_creation: bool,
    pub client_version: String,
    pub web_dir: Option<PathBuf>,
    pub cors_origins: Vec<String>,
    pub max_file_size: u64,
    pub upload_quota: u64,
    /// File uploads allowed per user per minute; 0 turns the limit off.
    pub upload_rate_limit: u32,
    /// Frames buffered per socket before a slow reader is disconnected.
    pub ws_queue: usize,
    /// Bytes buffered per socket before a slow reader is disconnected.
    pub ws_queue_bytes: usize,
    /// A channel actor with no subscribers stops after this long idle (not settable from
    /// flags, environment or file: tests shorten it to race sends against idle stops).
    pub channel_idle_stop: std::time::Duration,
    /// Newest history pages held by channel actors (on by default).
    pub history_cache: bool,
    /// ICE servers handed to clients in `/auth/config` (checked at start-up).
    pub ice_servers: Vec<serde_json::Value>,
    /// Bucket per webhook token for `POST /webhooks/execute/{token}`.
    pub webhook_rate_limit: RateLimit,
    /// Giphy API key (GIF search / trending); `None` = not configured (503).
    pub giphy_api_key: Option<String>,
    /// Giphy API base URL (tests point it at a local stand-in).
    pub giphy_api_url: String,
    /// Token and `owner/name` repository: feedback is forwarded as an issue when both are set.
    pub github_token: Option<String>,
    pub github_repo: Option<String>,
    /// GitHub API base URL (tests point it at a local stand-in).
    pub github_api_url: String,
    /// Log lines as text or JSON (`main.rs` installs the subscriber).
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long health answers `draining` while still serving, before the
    /// listener closes and the drain begins (at most `MAX_DRAIN_DELAY`).
    pub drain_delay: Duration,
    /// Several nodes over NATS (`PALAVER_NATS_URL`); `None`: a single node, no NATS.
    pub cluster: Option<ClusterSettings>,
    /// Link-preview fetch limits (not settable from flags, environment or file).
    pub link_preview: LinkPreviewLimits,
    /// The VAPID contact (`sub`) for Web Push: `mailto:` or `https://`; `None`: the public URL
    /// when it is `https://`, else `mailto:postmaster@localhost`.
    pub push_contact: Option<String>,
    /// Web Push delivery limits (not settable from flags, environment or file).
    pub push: PushLimits,
    /// Message-search budget (not settable from flags, environment or file).
    pub search: SearchLimits,
    /// TEST ONLY. Loopback ports (`127.0.0.0/8` or `::1`, never mapped forms) the link previewer
    /// may fetch from, so black-box tests can preview a page served by the test itself. There is
    /// deliberately no flag, environment variable or config-file key for it (`FileConfig` denies
    /// unknown keys): it can only be set by code that builds a `Config`, and it is empty otherwise.
    pub allow_loopback_previews_for_tests: Vec<u16>,
    /// TEST ONLY. How long every message search waits after taking its per-user slot, so a
    /// test can hold searches in flight and see the per-user limit. Zero (no wait) unless code
    /// that builds a `Config` sets it; no flag, environment variable or config-file key.
    pub search_hold_for_tests: Duration,
    /// TEST ONLY. Loopback ports a push subscription endpoint may point at, with `http://`, so
    /// black-box tests can run a push service themselves. Like the preview allowance: no flag,
    /// environment variable or config-file key; empty unless code that builds a `Config` sets it.
    pub allow_loopback_push_for_tests: Vec<u16>,
}

impl Config {
    /// Defaults for everything; the data dir and database come from `data_dir`.
    #[allow(clippy::expect_used, reason = "static, tested CIDR list")]
    pub fn with_data_dir(data_dir: impl AsRef<Path>) -> Self {
        let data_dir = data_dir.as_ref().to_path_buf();
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_bind: None,
            database_url: sqlite_url(&data_dir),
            data_dir,
            registration: RegistrationMode::Open,
            trusted_proxies: parse_cidrs("127.0.0.0/8,::1/128").expect("static CIDRs"),
            client_ip_header: None,
            public_url: None,
            http_rate_limits: true,
            http_rate_limit: RateLimit::new(50, 20),
            auth_rate_limit: RateLimit::new(10, 5),
            hash_workers: crate::auth::hashing::HashPool::default_workers(),
            hash_queue: HASH_QUEUE_PER_WORKER * crate::auth::hashing::HashPool::default_workers(),
            // The wire's bucket (websocket.md): a voice call's signalling burst needs 30.
            ws_rate_limit: RateLimit::new(30, 10),
            login_max_failures: 10,
            open_community_creation: false,
            client_version: "unknown".into(),
            web_dir: None,
            cors_origins: vec!["tauri://localhost".into()],
            max_file_size: 100 * 1024 * 1024,
            upload_quota: 500 * 1024 * 1024,
            upload_rate_limit: 10,
            ws_queue: 1024,
            ws_queue_bytes: palaver_actors::outbox::DEFAULT_QUEUE_BYTES,
            channel_idle_stop: palaver_actors::channel::IDLE_STOP,
            history_cache: true,
            ice_servers: Vec::new(),
            webhook_rate_limit: RateLimit::new(1, 1),
            giphy_api_key: None,
            giphy_api_url: "https://api.giphy.com".into(),
            github_token: None,
            github_repo: None,
            github_api_url: "https://api.github.com".into(),
            log_format: LogFormat::Text,
            drain_delay: Duration::ZERO,
            cluster: None,
            link_preview: LinkPreviewLimits::default(),
            push_contact: None,
            push: PushLimits::default(),
            search: SearchLimits::default(),
            allow_loopback_previews_for_tests: Vec::new(),
            search_hold_for_tests: Duration::ZERO,
            allow_loopback_push_for_tests: Vec::new(),
        }
    }

    /// Reads flags, environment and the optional file.
    pub fn load() -> Result<Self, String> {
        Self::from_cli(Cli::parse())
    }

    pub fn from_cli(cli: Cli) -> Result<Self, String> {
        let file: FileConfig = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = cli.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data"));
        let mut config = Self::with_data_dir(&data_dir);
        if let Some(v) = cli.bind.or(file.bind) {
            config.bind = v;
        }
        config.metrics_bind = cli.metrics_bind.or(file.metrics_bind);
        if let Some(v) = cli.database_url.or(file.database_url) {
            config.database_url = v;
        }
        if let Some(v) = cli.registration.or(file.registration) {
            config.registration = v;
        }
        if let Some(v) = cli.trusted_proxies.or(file.trusted_proxies) {
            config.trusted_proxies = parse_cidrs(&v)?;
        }
        if let Some(v) = cli.client_ip_header.or(file.client_ip_header) {
            config.client_ip_header = parse_header_name(&v)?;
        }
        config.public_url = cli.public_url.or(file.public_url).or(config.public_url);
        if let Some(v) = cli.http_rate_limits.or(file.http_rate_limits) {
            config.http_rate_limits = parse_switch(&v)?;
        }
        if let Some(v) = cli.http_rate_limit.or(file.http_rate_limit) {
            config.http_rate_limit = v;
        }
        if let Some(v) = cli.auth_rate_limit.or(file.auth_rate_limit) {
            config.auth_rate_limit = v;
        }
        if let Some(v) = cli.hash_workers.or(file.hash_workers) {
            config.hash_workers = v.max(1);
            config.hash_queue = HASH_QUEUE_PER_WORKER * config.hash_workers;
        }
        if let Some(v) = cli.hash_queue.or(file.hash_queue) {
            config.hash_queue = v;
        }
        if let Some(v) = cli.ws_rate_limit.or(file.ws_rate_limit) {
            config.ws_rate_limit = v;
        }
        if let Some(v) = cli.login_max_failures.or(file.login_max_failures) {
            config.login_max_failures = v.max(1);
        }
        if let Some(v) = cli.community_creation.or(file.community_creation) {
            config.open_community_creation = match v.as_str() {
                "open" => true,
                "admin_only" => false,
                other => return Err(format!("community_creation {other:?}: use admin_only or open")),
            };
        }
        if let Some(v) = cli.client_version.or(file.client_version) {
            config.client_version = v;
        }
        config.web_dir = cli.web_dir.or(file.web_dir);
        if let Some(v) = cli.cors_origins.or(file.cors_origins) {
            config.cors_origins =
                v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = cli.max_file_size.or(file.max_file_size) {
            config.max_file_size = v;
        }
        if let Some(v) = cli.upload_quota.or(file.upload_quota) {
            config.upload_quota = v;
        }
        if let Some(v) = cli.upload_rate_limit.or(file.upload_rate_limit) {
            config.upload_rate_limit = v;
        }
        if let Some(v) = cli.ws_queue.or(file.ws_queue) {
            config.ws_queue = v.max(16);
        }
        if let Some(v) = cli.ws_queue_bytes.or(file.ws_queue_bytes) {
            // Below this a single large message frame (64 KiB of ciphertext as JSON numbers)
            // would close a healthy socket.
            config.ws_queue_bytes = v.max(MIN_WS_QUEUE_BYTES);
        }
        if let Some(v) = cli.history_cache.or(file.history_cache) {
            config.history_cache = parse_switch(&v)?;
        }
        if let Some(v) = cli.ice_servers.or(file.ice_servers) {
            config.ice_servers = parse_ice_servers(&v)?;
        }
        if let Some(v) = cli.webhook_rate_limit.or(file.webhook_rate_limit) {
            config.webhook_rate_limit = v;
        }
        config.giphy_api_key =
            cli.giphy_api_key.or(file.giphy_api_key).map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        if let Some(v) = cli.giphy_api_url.or(file.giphy_api_url) {
            config.giphy_api_url = v.trim_end_matches('/').to_string();
        }
        let non_empty = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        config.github_token = non_empty(cli.github_token.or(file.github_token));
        config.github_repo = non_empty(cli.github_repo.or(file.github_repo));
        if let Some(repo) = &config.github_repo
            && repo.split('/').filter(|part| !part.is_empty()).count() != 2
        {
            return Err(format!("github_repo {repo:?} must look like owner/name"));
        }
        if let Some(v) = cli.github_api_url.or(file.github_api_url) {
            config.github_api_url = v.trim_end_matches('/').to_string();
        }
        if let Some(v) = cli.log_format.or(file.log_format) {
            config.log_format = v.parse()?;
        }
        if let Some(v) = cli.drain_delay.or(file.drain_delay) {
            let delay = Duration::from_secs(v);
            if delay > MAX_DRAIN_DELAY {
                return Err(format!("drain_delay {v}: at most {} seconds", MAX_DRAIN_DELAY.as_secs()));
            }
            config.drain_delay = delay;
        }
        if let Some(nats_url) = non_empty(cli.nats_url.or(file.nats_url)) {
            let mut cluster = ClusterSettings::new(nats_url, &config.database_url);
            if let Some(node_id) = non_empty(cli.node_id.or(file.node_id)) {
                cluster.node_id = node_id;
            }
            if let Some(prefix) = non_empty(cli.nats_prefix.or(file.nats_prefix)) {
                cluster.prefix = prefix;
            }
            if let Some(url) = non_empty(cli.lock_database_url.or(file.lock_database_url)) {
                cluster.lock_database_url = url;
            }
            if let Some(v) = non_empty(cli.detach_after.or(file.detach_after)) {
                cluster.detach_after = parse_seconds(&v).map_err(|e| format!("detach_after: {e}"))?;
            }
            config.cluster = Some(cluster);
        }
        config.push_contact = non_empty(cli.push_contact.or(file.push_contact));
        if let Some(contact) = &config.push_contact
            && !(contact.starts_with("mailto:") || contact.starts_with("https://"))
        {
            return Err(format!("push_contact {contact:?} must be a mailto: or https:// URI"));
        }
        Ok(config)
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")
    }
}

/// The cluster options (see `palaver_actors::cluster`). The lock URL defaults to the
/// database URL; the node id to the host name.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub nats_url: String,
    pub node_id: String,
    pub prefix: String,
    pub lock_database_url: String,
    pub detach_after: Duration,
    /// Heartbeat, liveness and placement clocks (tests shorten them; no flag).
    pub timers: palaver_actors::cluster::ClusterTimers,
}

impl ClusterSettings {
    pub fn new(nats_url: String, database_url: &str) -> Self {
        Self {
            nats_url,
            node_id: host_name(),
            prefix: "palaver".into(),
            lock_database_url: database_url.to_string(),
            detach_after: Duration::from_secs(10),
            timers: Default::default(),
        }
    }
}

/// The machine's host name, as a node id (characters a node id may not hold become `-`).
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_else(|_| "palaver".into());
    let id: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(64)
        .collect();
    if id.is_empty() { "palaver".into() } else { id }
}

/// `10` or `10s` → ten seconds.
fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let digits = raw.trim().trim_end_matches('s');
    match digits.parse::<u64>() {
        Ok(secs) if (1..=3600).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!("expected whole seconds between 1 and 3600, got {raw:?}")),
    }
}

/// The embedded default database: a SQLite file in the data dir, created on first start.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("palaver.db").display())
}

fn parse_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("bad CIDR {c:?} in trusted proxies"))
        })
        .collect()
}

/// A header name, lower-cased; empty means none.
fn parse_header_name(s: &str) -> Result<Option<String>, String> {
    let name = s.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Ok(None);
    }
    warp::http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| Some(name.clone()))
        .map_err(|_| format!("client_ip_header {name:?} is not a header name"))
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

/// `[{"urls": "stun:…" | ["turn:…", …], "username"?: "…", "credential"?: "…"}, …]`.
fn parse_ice_servers(raw: &str) -> Result<Vec<serde_json::Value>, String> {
    let bad = |why: &str| {
        format!("ice_servers: {why}; expected a JSON array like [{{\"urls\": \"stun:host:3478\"}}]")
    };
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(&e.to_string()))?;
    let servers = value.as_array().ok_or_else(|| bad("not an array"))?;
    for server in servers {
        let object = server.as_object().ok_or_else(|| bad("each entry must be an object"))?;
        let urls_ok = match object.get("urls") {
            Some(serde_json::Value::String(url)) => !url.is_empty(),
            Some(serde_json::Value::Array(urls)) => !urls.is_empty() && urls.iter().all(|u| u.is_string()),
            _ => false,
        };
        if !urls_ok {
            return Err(bad("each entry needs `urls`: a string or an array of strings"));
        }
        for key in ["username", "credential"] {
            if object.get(key).is_some_and(|v| !v.is_string()) {
                return Err(bad(&format!("`{key}` must be a string")));
            }
        }
    }
    Ok(servers.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_parses_burst_and_rate() {
        assert_eq!("10/5".parse::<RateLimit>(), Ok(RateLimit::new(10, 5)));
        assert!("10".parse::<RateLimit>().is_err());
        assert!("0/5".parse::<RateLimit>().is_err());
    }

    #[test]
    fn flags_override_file_and_defaults() {
        let cli = Cli {
            registration: Some(RegistrationMode::Closed),
            http_rate_limits: Some("off".into()),
            ..Cli::default()
        };
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.registration, RegistrationMode::Closed);
        assert!(!config.http_rate_limits);
        assert_eq!(config.bind.port(), 8080);
        assert!(config.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn client_ip_header_and_hash_pool_are_configurable() {
        let config = Config::from_cli(Cli::default()).unwrap();
        assert_eq!(config.client_ip_header, None, "no client-IP header is believed by default");
        assert!(config.hash_workers >= 1);
        assert_eq!(config.hash_queue, HASH_QUEUE_PER_WORKER * config.hash_workers);
        let cli = Cli {
            client_ip_header: Some(" CF-Connecting-IP ".into()),
            hash_workers: Some(3),
            ..Cli::default()
        };
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.client_ip_header.as_deref(), Some("cf-connecting-ip"));
        assert_eq!((config.hash_workers, config.hash_queue), (3, 48));
        let cli = Cli { hash_workers: Some(1), hash_queue: Some(0), ..Cli::default() };
        let config = Config::from_cli(cli).unwrap();
        assert_eq!((config.hash_workers, config.hash_queue), (1, 0));
        assert!(
            Config::from_cli(Cli { client_ip_header: Some("bad header".into()), ..Cli::default() }).is_err()
        );
    }

    #[test]
    fn log_format_and_drain_delay_are_checked() {
        assert_eq!(Config::from_cli(Cli::default()).unwrap().log_format, LogFormat::Text);
        let config =
            Config::from_cli(Cli { log_format: Some("json".into()), drain_delay: Some(2), ..Cli::default() })
                .unwrap();
        assert_eq!((config.log_format, config.drain_delay), (LogFormat::Json, Duration::from_secs(2)));
        let err = Config::from_cli(Cli { log_format: Some("xml".into()), ..Cli::default() }).unwrap_err();
        assert!(err.contains("text or json"), "{err}");
        assert!(Config::from_cli(Cli { drain_delay: Some(30), ..Cli::default() }).is_err());
    }

    #[test]
    fn ice_servers_are_checked_and_passed_through() {
        let servers = parse_ice_servers(
            r#"[{"urls": "stun:stun.example.org:3478"},
            {"urls": ["turn:t.example.org"], "username": "u", "credential": "c"}]"#,
        )
        .unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1]["urls"][0], "turn:t.example.org");
        for bad in [
            "{}",
            "[1]",
            r#"[{"url": "stun:x"}]"#,
            r#"[{"urls": []}]"#,
            r#"[{"urls": "x", "username": 1}]"#,
            "nope",
        ] {
            assert!(parse_ice_servers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_preview_allowance_cannot_be_configured() {
        // Not from defaults, flags or environment (there is no flag for it)...
        let config = Config::from_cli(Cli::default()).unwrap();
        assert!(config.allow_loopback_previews_for_tests.is_empty());
        assert_eq!(config.link_preview, LinkPreviewLimits::default());
        // ...nor from the config file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("palaver.toml");
        std::fs::write(&path, "allow_loopback_previews_for_tests = [8080]\n").unwrap();
        let err = Config::from_cli(Cli { config: Some(path), ..Cli::default() }).unwrap_err();
        assert!(err.contains("allow_loopback_previews_for_tests"), "{err}");
    }
}
