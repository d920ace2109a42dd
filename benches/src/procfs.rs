//! CPU time and memory of a process, read from /proc (Linux only).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A process to observe: the server under test (`Some(pid)`) or this process (`None`).
#[derive(Debug, Clone, Copy)]
pub struct Proc(pub Option<u32>);

impl Proc {
    fn path(self, file: &str) -> String {
        match self.0 {
            Some(pid) => format!("/proc/{pid}/{file}"),
            None => format!("/proc/self/{file}"),
        }
    }

    /// utime + stime in seconds.
    pub fn cpu_seconds(self) -> Result<f64> {
        let path = self.path("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) is in parentheses and may contain spaces: split
        // after the last ')'. Then field 3 is first; utime/stime are fields 14/15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() < 13 {
            bail!("malformed {path}");
        }
        let utime: u64 = fields[11].parse().context("utime")?;
        let stime: u64 = fields[12].parse().context("stime")?;
        Ok((utime + stime) as f64 / clock_ticks_per_second())
    }

    /// A `Vm*` line of /proc/PID/status in KiB (e.g. "VmRSS", "VmHWM").
    pub fn status_kb(self, key: &str) -> Result<u64> {
        let path = self.path("status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                let kb = rest.split_whitespace().next().context("empty value")?;
                return kb.parse().with_context(|| format!("{key} in {path}"));
            }
        }
        bail!("{key} missing from {path}")
    }

    pub fn rss_kb(self) -> Result<u64> {
        self.status_kb("VmRSS")
    }
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Samples a process's RSS in the background to find the peak of one phase (VmHWM would
/// give the peak over the whole life of the process instead).
pub struct RssMonitor {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssMonitor {
    pub fn start(proc_: Proc, every: Duration) -> Self {
        let peak_kb = Arc::new(AtomicU64::new(proc_.rss_kb().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, stop2) = (peak_kb.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(kb) = proc_.rss_kb() {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        });
        RssMonitor { peak_kb, stop, task }
    }

    /// Stops sampling and returns the peak RSS seen (KiB).
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak_kb.load(Ordering::Relaxed)
    }
}

/// Other processes whose CPU time counts as the server's (cluster nodes, nats-server), set
/// once from `--also-pids`.
pub static ALSO_MEASURED: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// CPU seconds of the server and every `ALSO_MEASURED` process.
fn system_cpu_seconds(server: Proc) -> Result<f64> {
    let mut total = server.cpu_seconds()?;
    for pid in ALSO_MEASURED.get().map(Vec::as_slice).unwrap_or_default() {
        total += Proc(Some(*pid)).cpu_seconds()?;
    }
    Ok(total)
}

/// Before/after figures of one measured phase for the server and the load generator.
pub struct PhaseMeter {
    server: Option<Proc>,
    server_cpu0: f64,
    server_rss0: u64,
    self_cpu0: f64,
    monitor: Option<RssMonitor>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseUsage {
    /// Server CPU seconds spent during the phase (null without --server-pid).
    pub server_cpu_s: Option<f64>,
    pub server_rss_kb: Option<RssUsage>,
    /// The load generator's own CPU seconds in the phase: if it approaches
    /// 2 × wall time the generator, not the server, is the bottleneck.
    pub loadgen_cpu_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RssUsage {
    pub before: u64,
    pub peak: u64,
    #[serde(rename = "final")]
    pub final_: u64,
}

impl PhaseMeter {
    pub fn start(server_pid: Option<u32>) -> Result<Self> {
        let server = server_pid.map(|p| Proc(Some(p)));
        let (server_cpu0, server_rss0) = match server {
            Some(p) => (system_cpu_seconds(p)?, p.rss_kb()?),
            None => (0.0, 0),
        };
        Ok(PhaseMeter {
            server,
            server_cpu0,
            server_rss0,
            self_cpu0: Proc(None).cpu_seconds()?,
            monitor: server.map(|p| RssMonitor::start(p, Duration::from_millis(250))),
        })
    }

    pub async fn finish(self) -> Result<PhaseUsage> {
        let peak = match self.monitor {
            Some(m) => m.finish().await,
            None => 0,
        };
        let (server_cpu_s, server_rss_kb) = match self.server {
            Some(p) => {
                let final_ = p.rss_kb()?;
                (
                    Some(system_cpu_seconds(p)? - self.server_cpu0),
                    Some(RssUsage { before: self.server_rss0, peak: peak.max(final_), final_ }),
                )
            }
            None => (None, None),
        };
        Ok(PhaseUsage {
            server_cpu_s,
            server_rss_kb,
            loadgen_cpu_s: Proc(None).cpu_seconds()? - self.self_cpu0,
        })
    }
}
