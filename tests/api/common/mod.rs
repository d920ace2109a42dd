//! `spawn_app(backend)`: a real Palaver on 127.0.0.1:0 with its own fresh database, and a
//! client that talks to it over real HTTP and WebSockets.
//!
//! PostgreSQL suites run when `TEST_POSTGRES_URL` is set (CI sets it): each test creates its
//! own database and drops it afterwards. Without the variable the PostgreSQL variants are
//! compiled as `#[ignore]` (see build.rs), so the run reports how many were not run.

#![allow(dead_code)]

pub mod cluster;
pub mod fixtures;
pub mod process;
pub mod proxy;

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use palaver::{Config, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// Runs each listed `async fn name(backend: Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(palaver_pg), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
                async fn $name() {
                    super::$name($crate::common::Backend::postgres()).await
                }
            )*
        }
    };
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// Server URL of the PostgreSQL to create a test database on.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend. Only PostgreSQL variants call this, and they are compiled as
    /// ignored unless `TEST_POSTGRES_URL` was set at build time (build.rs); cargo rebuilds
    /// when the variable changes, so here it is set.
    pub fn postgres() -> Self {
        Self::Postgres(postgres_url())
    }
}

/// The server URL of `TEST_POSTGRES_URL` (see `Backend::postgres`).
pub fn postgres_url() -> String {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("TEST_POSTGRES_URL is not set; run the PostgreSQL variants with it set"),
    }
}

/// A fresh PostgreSQL database, dropped when this guard goes away (also on panic).
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> (Self, String) {
        use sea_orm::{ConnectionTrait, Database};
        let name = format!("palaver_test_{}", Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL is set but unreachable ({admin_url}): {e}"));
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
        admin.close().await.ok();
        let url = replace_db_name(admin_url, &name);
        (Self { admin_url: admin_url.to_string(), name }, url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a separate thread and runtime to block on it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                use sea_orm::{ConnectionTrait, Database};
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                    admin.close().await.ok();
                }
            });
        })
        .join();
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    pub config: Config,
    pub backend: Backend,
    // Kept for their Drop: the data dir and the PostgreSQL database (a cluster's nodes
    // share both, held by the cluster instead).
    data_dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
}

/// A registered user with its tokens and E2E identity key.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub password: String,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
    pub recovery_code: String,
    pub identity: SigningKey,
}

/// Test defaults: open registration and no HTTP rate limits (tests that need limits turn them on).
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(data_dir);
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.http_rate_limits = false;
    config.ws_rate_limit = palaver::config::RateLimit::new(1000, 1000);
    // Tests register crowds at once (like the rate limits above, the hashing pool's refusal
    // is tested on its own, in hardening_edge, with the sizes it needs).
    config.hash_queue = 256;
    config
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(data_dir.path());
    let pg = match &backend {
        Backend::Sqlite => None,
        Backend::Postgres(admin_url) => {
            let (db, url) = PgDatabase::create(admin_url).await;
            config.database_url = url;
            Some(db)
        }
    };
    tweak(&mut config);
    let server = palaver::serve(config.clone()).await.expect("server starts");
    TestApp {
        addr: server.addr,
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        server: Some(server),
        config,
        backend,
        data_dir: Some(data_dir),
        pg,
    }
}

impl TestApp {
    /// A server started elsewhere (a cluster node) whose data dir and database belong to
    /// its caller.
    pub fn borrowing(server: Server, config: Config, backend: Backend) -> Self {
        Self {
            addr: server.addr,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            server: Some(server),
            config,
            backend,
            data_dir: None,
            pg: None,
        }
    }
}

/// A response as the client sees it: status and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts an error status and the error body's shape; returns the `code`.
    #[track_caller]
    pub fn expect_error(self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        let code = self.body["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.body));
        assert!(
            self.body["message"].is_string() && self.body["error"].is_string(),
            "bad error body {}",
            self.body
        );
        code.to_string()
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(reqwest::Method::GET, path, Some(token), None).await
    }
    pub async fn get_public(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None, None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn post_public(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, None, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(reqwest::Method::PUT, path, Some(token), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(reqwest::Method::PATCH, path, Some(token), Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(token), None).await
    }
    pub async fn delete_with(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(token), Some(body)).await
    }

    /// The registration body the web client sends, with a real Ed25519 identity.
    pub fn registration_body(username: &str, identity: &SigningKey) -> Value {
        let prekey: [u8; 32] = rand_bytes();
        let signature = identity.sign(&prekey).to_bytes();
        let one_time: Vec<Value> =
            (1..=5).map(|i| json!({"key_id": i, "public_key": rand_bytes::<32>().to_vec()})).collect();
        json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": "Correct-Horse-9",
            "display_name": format!("{username} display"),
            "identity_key": identity.verifying_key().to_bytes().to_vec(),
            "signed_prekey": {"key_id": 1, "public_key": prekey.to_vec(), "signature": signature.to_vec()},
            "one_time_prekeys": one_time,
        })
    }

    /// Registers `username` (must succeed) and returns its tokens.
    pub async fn register(&self, username: &str) -> TestUser {
        let identity = SigningKey::from_bytes(&rand_bytes());
        let body = Self::registration_body(username, &identity);
        let reply = self.post_public("/auth/register", body).await.expect(200);
        TestUser {
            id: reply["user"]["id"].as_str().unwrap().parse().unwrap(),
            username: username.to_string(),
            password: "Correct-Horse-9".into(),
            email: format!("{username}@example.com"),
            token: reply["access_token"].as_str().unwrap().to_string(),
            refresh_token: reply["refresh_token"].as_str().unwrap().to_string(),
            recovery_code: reply["recovery_code"].as_str().unwrap_or_default().to_string(),
            identity,
        }
    }

    /// Opens a socket and authenticates it; the `authenticated` frame has been consumed.
    pub async fn ws(&self, token: &str) -> WsClient {
        let mut ws = self.ws_raw().await;
        ws.send(json!({"type": "authenticate", "token": token})).await;
        ws.expect("authenticated").await;
        ws
    }

    /// Opens a socket without authenticating.
    pub async fn ws_raw(&self) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(self.ws_url()).await.expect("websocket connects");
        WsClient { stream }
    }

    /// Opens and authenticates a socket whose kernel receive buffer is tiny, so a client that
    /// stops reading backs up into the server quickly (slow-consumer tests).
    pub async fn ws_small_receive_buffer(&self, token: &str) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = socket.connect(self.addr).await.expect("tcp connects");
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        let (stream, _) =
            tokio_tungstenite::client_async(self.ws_url(), stream).await.expect("websocket connects");
        let mut ws = WsClient { stream };
        ws.send(json!({"type": "authenticate", "token": token})).await;
        ws.expect("authenticated").await;
        ws
    }

    /// Stops the server (gracefully, like a deploy would) without starting a new one; the
    /// data dir and database stay. `start_again` brings it back.
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Starts a server on the same data dir and database (a new port: `addr` follows).
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "stop_server first");
        let server = palaver::serve(self.config.clone()).await.expect("server restarts");
        self.addr = server.addr;
        self.server = Some(server);
    }

    /// Stops the server and starts a new one on the same data dir and database.
    pub async fn restart(&mut self) {
        self.stop_server().await;
        self.start_again().await;
    }

    /// Stops the server and drops the test database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

pub fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let r = Uuid::new_v4().into_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    out
}

pub struct WsClient {
    pub stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// How long a test waits for a frame it expects.
pub const FRAME_WAIT: Duration = Duration::from_secs(5);

impl WsClient {
    pub async fn send(&mut self, frame: Value) {
        self.stream.send(Message::text(frame.to_string())).await.expect("frame sent");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text.to_string())).await.expect("frame sent");
    }

    /// The next JSON frame other than heartbeat `pong`s without a client timestamp, or
    /// `None` on timeout / close.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??.ok()?;
            match msg {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("server frames are JSON");
                    if value["type"] == "pong" && value.get("heartbeat").is_none() && is_heartbeat(&value) {
                        continue;
                    }
                    return Some(value);
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for a frame of `kind`, skipping presence and heartbeat frames only; any other
    /// frame first is a test failure (so unexpected frames are noticed).
    #[track_caller]
    pub fn expect(&mut self, kind: &str) -> impl Future<Output = Value> + '_ {
        let kind = kind.to_string();
        let caller = std::panic::Location::caller();
        async move {
            loop {
                let frame = self
                    .next_frame(FRAME_WAIT)
                    .await
                    .unwrap_or_else(|| panic!("{caller}: no {kind:?} frame within {FRAME_WAIT:?}"));
                if frame["type"] == kind.as_str() {
                    return frame;
                }
                if is_ambient(&frame) {
                    continue;
                }
                panic!("{caller}: expected {kind:?}, got {frame}");
            }
        }
    }

    /// `expect` for a durable channel frame: checks it carries its stream position (a
    /// positive `cseq`, resume.md) and returns it without that field, so a test can compare
    /// the rest of the frame exactly.
    #[track_caller]
    pub fn expect_durable(&mut self, kind: &str) -> impl Future<Output = Value> + '_ {
        let expected = self.expect(kind);
        async move {
            let mut frame = expected.await;
            let cseq = frame.as_object_mut().and_then(|f| f.remove("cseq"));
            assert!(cseq.as_ref().and_then(Value::as_u64).is_some_and(|c| c >= 1), "no cseq in {frame}");
            frame
        }
    }

    /// The next frame of `kind`, skipping frames of any other kind.
    pub async fn expect_eventually(&mut self, kind: &str) -> Value {
        loop {
            let frame = self
                .next_frame(FRAME_WAIT)
                .await
                .unwrap_or_else(|| panic!("no {kind:?} frame within {FRAME_WAIT:?}"));
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Asserts that no frame of `kind` arrives within `wait` (ambient frames are ignored).
    pub async fn expect_no(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(frame) =
            self.next_frame(deadline.saturating_duration_since(tokio::time::Instant::now())).await
        {
            assert_ne!(frame["type"], kind, "unexpected {kind} frame: {frame}");
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("socket not closed within {wait:?}"),
            }
        }
    }
}

/// Heartbeat pongs carry Unix seconds (small numbers); client pings in tests use other values.
fn is_heartbeat(frame: &Value) -> bool {
    frame["timestamp"].as_i64().is_some_and(|t| (1_600_000_000..4_000_000_000).contains(&t))
}

/// Frames that may arrive at any time and that `expect` steps over.
fn is_ambient(frame: &Value) -> bool {
    matches!(frame["type"].as_str(), Some("pong" | "presence_update" | "presence_bulk"))
}
