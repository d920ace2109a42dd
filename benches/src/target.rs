//! The server under test: its address (loopback only) and where client sockets bind. A
//! cluster is given as several addresses; sockets are spread over its nodes round-robin and
//! REST calls go to the first.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

#[derive(Debug)]
pub struct Target {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080` (the first node).
    pub base_url: String,
    /// `ws://host:port/ws` of the first node.
    pub ws_url: String,
    pub addr: SocketAddr,
    /// Every node: (`ws://host:port/ws`, address, base URL); one for a single server.
    nodes: Vec<(String, SocketAddr, String)>,
    next_node: AtomicUsize,
    source_ips: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Target {
    /// Parses `http://HOST:PORT` and resolves it. Refuses anything that is not on the
    /// loopback network: load must never leave this machine.
    pub async fn resolve(urls: &str, source_ips: Vec<IpAddr>) -> Result<Self> {
        let mut nodes = Vec::new();
        for url in urls.split(',').filter(|u| !u.is_empty()) {
            let one = Self::resolve_one(url).await?;
            nodes.push((one.ws_url, one.addr, one.base_url));
        }
        let mut target = Self::resolve_one(urls.split(',').next().unwrap_or_default()).await?;
        target.nodes = nodes;
        target.source_ips = source_ips;
        Ok(target)
    }

    /// The node the next client socket goes to (round-robin): its index, WS URL and address.
    pub fn next_node(&self) -> (usize, &str, SocketAddr) {
        let i = self.next_node.fetch_add(1, Ordering::Relaxed) % self.node_count();
        let (url, addr) = self.node(i);
        (i, url, addr)
    }

    /// Node `i` (modulo their count): its WS URL and address.
    pub fn node(&self, i: usize) -> (&str, SocketAddr) {
        match self.nodes.get(i % self.nodes.len().max(1)) {
            Some((url, addr, _)) => (url.as_str(), *addr),
            None => (self.ws_url.as_str(), self.addr),
        }
    }

    /// How many nodes were given (1 for a single server).
    pub fn node_count(&self) -> usize {
        self.nodes.len().max(1)
    }

    /// `/api…` URL of `path` on node `i` (modulo their count).
    pub fn node_api(&self, i: usize, path: &str) -> String {
        match self.nodes.get(i % self.nodes.len().max(1)) {
            Some((_, _, base)) => format!("{base}/api{path}"),
            None => self.api(path),
        }
    }

    async fn resolve_one(url: &str) -> Result<Self> {
        let source_ips = Vec::new();
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
            nodes: Vec::new(),
            next_node: AtomicUsize::new(0),
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
