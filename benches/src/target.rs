//! The server under test: its address (loopback only) and where client sockets bind.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

#[derive(Debug)]
pub struct Target {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// `ws://host:port/ws`
    pub ws_url: String,
    pub addr: SocketAddr,
    source_ips: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Target {
    /// Parses `http://HOST:PORT` and resolves it. Refuses anything that is not on the
    /// loopback network: load must never leave this machine.
    pub async fn resolve(url: &str, source_ips: Vec<IpAddr>) -> Result<Self> {
        let base_url = url.trim_end_matches('/').to_owned();
        let host_port = base_url
            .strip_prefix("http://")
            .with_context(|| format!("--url must start with http:// (got {url})"))?;
        if host_port.contains('/') {
            bail!("--url must be a bare origin like http://127.0.0.1:8080 (got {url})");
        }
        let addr = tokio::net::lookup_host(host_port)
            .await
            .with_context(|| format!("resolving {host_port}"))?
            .find(|a| a.is_ipv4())
            .with_context(|| format!("{host_port} has no IPv4 address"))?;
        if !addr.ip().is_loopback() {
            bail!("refusing non-loopback target {addr}: benchmarks only run against 127.0.0.0/8");
        }
        Ok(Target {
            ws_url: format!("ws://{host_port}/ws"),
            base_url,
            addr,
            source_ips,
            next_source: AtomicUsize::new(0),
        })
    }

    /// The next source address for a client socket (round-robin), if any were given.
    pub fn next_source_ip(&self) -> Option<IpAddr> {
        if self.source_ips.is_empty() {
            return None;
        }
        let i = self.next_source.fetch_add(1, Ordering::Relaxed);
        Some(self.source_ips[i % self.source_ips.len()])
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api{}", self.base_url, path)
    }
}
