//! The real `palaver` binary as a child process, for tests that must kill it without
//! warning (SIGKILL) or signal it (SIGTERM), read what it logs, and start it again on the
//! same database.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Backend, PgDatabase};

/// A database (SQLite file in a data dir, or a fresh PostgreSQL database) that outlives the
/// server processes started on it.
pub struct ProcessHarness {
    pub data_dir: tempfile::TempDir,
    database_url: Option<String>,
    _pg: Option<PgDatabase>,
}

/// One running server process.
pub struct ServerProcess {
    pub child: Child,
    pub base_url: String,
    /// Every line the process wrote to stdout so far (the log lines, in order).
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl ProcessHarness {
    pub async fn new(backend: &Backend) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (pg, database_url) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres(admin_url) => {
                let (db, url) = PgDatabase::create(admin_url).await;
                (Some(db), Some(url))
            }
        };
        Self { data_dir, database_url, _pg: pg }
    }

    /// The PostgreSQL database the servers share (`None` on SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// Starts the server binary on 127.0.0.1:0 and waits for the address it prints.
    pub async fn start(&self) -> ServerProcess {
        self.start_with(&[]).await
    }

    /// `start` with more environment variables (they override the defaults here).
    pub async fn start_with(&self, env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_palaver"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PALAVER_BIND", "127.0.0.1:0")
            .env("PALAVER_DATA_DIR", self.data_dir.path())
            .env("PALAVER_HTTP_RATE_LIMITS", "off")
            .env("PALAVER_WS_RATE_LIMIT", "1000/1000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = &self.database_url {
            command.env("DATABASE_URL", url);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("start the palaver binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let base_url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read server stdout") {
                seen.lock().unwrap().push(line.clone());
                if let Some(url) = listening_url(&line) {
                    return url;
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server starts within 60 s");
        // Keep reading stdout so the child never blocks on a full pipe.
        let stdout = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        ServerProcess { child, base_url, stdout }
    }
}

impl ServerProcess {
    pub fn api(&self, path: &str) -> String {
        format!("{}/api{path}", self.base_url)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base_url.replacen("http://", "ws://", 1))
    }

    /// SIGKILL: no shutdown hook, no flush, nothing graceful.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the server");
    }

    /// SIGTERM: what a deploy or `systemctl stop` sends; the server drains and exits.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().map(|r| r.expect("wait for the server"))
    }
}

/// The address line: `listening on http://…` (text logs) or a JSON line whose message is
/// `listening` (JSON logs).
fn listening_url(line: &str) -> Option<String> {
    if let Some(url) = line.strip_prefix("listening on ") {
        return Some(url.trim().to_string());
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    (value["message"] == "listening").then(|| value["url"].as_str().map(str::to_string)).flatten()
}
