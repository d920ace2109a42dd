//! The SSRF-safe HTTP fetch behind link previews.
//!
//! For every hop (the first request and each redirect) the host is resolved once, every address
//! is checked (`addr::permitted`), and the request is sent with a client that can only connect to
//! those checked addresses: the checked set is installed as the client's DNS override and any
//! other lookup fails, so there is no second DNS lookup an attacker could answer differently
//! (DNS rebinding). Literal-IP hosts are checked before the client is built; proxies from the
//! environment are ignored. Redirects are followed by hand (so each target is checked the same
//! way), at most `max_redirects` times; the whole fetch, DNS included, has one deadline; at most
//! `max_body_bytes` of the body are read; only `text/html` (and XHTML) is accepted.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use url::{Host, Url};

use super::addr::{self, Blocked};
use crate::config::LinkPreviewLimits;

/// Why a preview could not be fetched (all answered 400 on the wire).
#[derive(Debug)]
pub enum FetchError {
    /// The host is or resolves to a non-public address.
    Blocked {
        host: String,
        addr: std::net::IpAddr,
        why: Blocked,
    },
    /// A redirect to something that is not an `http(s)` URL.
    BadRedirect(String),
    TooManyRedirects,
    /// The host name did not resolve.
    Resolve(String),
    Timeout,
    /// Connection or protocol failure.
    Network(String),
    Status(u16),
    NotHtml(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Blocked { host, addr, why } if host == &addr.to_string() => {
                write!(f, "links to internal or private addresses cannot be previewed ({addr} is {why})")
            }
            Self::Blocked { host, addr, why } => write!(
                f,
                "links to internal or private addresses cannot be previewed ({host} resolves to {addr}, {why})"
            ),
            Self::BadRedirect(to) => write!(f, "the page redirects to an unsupported location ({to})"),
            Self::TooManyRedirects => f.write_str("the page redirects too many times"),
            Self::Resolve(host) => write!(f, "could not resolve host {host}"),
            Self::Timeout => f.write_str("the page took too long to answer"),
            Self::Network(e) => write!(f, "could not fetch the page: {e}"),
            Self::Status(code) => write!(f, "the page answered HTTP {code}"),
            Self::NotHtml(ct) => write!(f, "the link is not an HTML page (content type {ct})"),
        }
    }
}

/// A fetched page: its final URL (after redirects), the first bytes of its body and the charset
/// its `Content-Type` declared.
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub body: Vec<u8>,
    pub charset: Option<String>,
}

/// Fetches `url` within `limits`. `loopback_ports` is the test-only allowance (empty in production).
pub async fn fetch(url: Url, limits: &LinkPreviewLimits, loopback_ports: &[u16]) -> Result<Page, FetchError> {
    tokio::time::timeout(limits.timeout, fetch_hops(url, limits, loopback_ports))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn fetch_hops(
    mut url: Url,
    limits: &LinkPreviewLimits,
    loopback_ports: &[u16],
) -> Result<Page, FetchError> {
    let mut redirects = 0;
    loop {
        let client = client_for(&url, loopback_ports).await?;
        url.set_fragment(None);
        let mut response = client
            .get(url.clone())
            .header(ACCEPT, "text/html,application/xhtml+xml;q=0.9")
            .send()
            .await
            .map_err(|e| FetchError::Network(describe(&e)))?;
        let status = response.status();
        if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::BadRedirect("no Location header".into()))?;
            let next = url
                .join(location.trim())
                .map_err(|_| FetchError::BadRedirect(location.chars().take(200).collect()))?;
            if !matches!(next.scheme(), "http" | "https") || next.host().is_none() {
                return Err(FetchError::BadRedirect(next.scheme().to_string()));
            }
            redirects += 1;
            if redirects > limits.max_redirects {
                return Err(FetchError::TooManyRedirects);
            }
            url = next;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "text/html" && mime != "application/xhtml+xml" {
            let shown = if mime.is_empty() { "none".to_string() } else { mime };
            return Err(FetchError::NotHtml(shown));
        }
        let charset = content_type
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
            .map(|(_, v)| v.trim().trim_matches('"').to_string());

        // Read at most the cap, then drop the response (closing the connection).
        let mut body = Vec::new();
        while body.len() < limits.max_body_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(limits.max_body_bytes - body.len());
                    body.extend_from_slice(&chunk[..take]);
                }
                Ok(None) => break,
                // A body cut short still has a usable head.
                Err(_) if !body.is_empty() => break,
                Err(e) => return Err(FetchError::Network(describe(&e))),
            }
        }
        return Ok(Page { url, body, charset });
    }
}

/// Resolves and checks `url`'s host, then builds a client that can reach only the checked
/// addresses.
async fn client_for(url: &Url, loopback_ports: &[u16]) -> Result<reqwest::Client, FetchError> {
    let port = url.port_or_known_default().ok_or_else(|| FetchError::BadRedirect(url.scheme().into()))?;
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .referer(false)
        .user_agent(concat!("Palaver/", env!("CARGO_PKG_VERSION"), " (link preview)"))
        // Any lookup not answered by the override below fails: no unchecked resolution.
        .dns_resolver(Arc::new(NoLookups));
    let builder = match url.host() {
        Some(Host::Ipv4(ip)) => {
            check(&ip.to_string(), SocketAddr::new(ip.into(), port), loopback_ports)?;
            builder
        }
        Some(Host::Ipv6(ip)) => {
            check(&ip.to_string(), SocketAddr::new(ip.into(), port), loopback_ports)?;
            builder
        }
        Some(Host::Domain(name)) => {
            let addrs = resolve(name, port).await?;
            for addr in &addrs {
                check(name, *addr, loopback_ports)?;
            }
            builder.resolve_to_addrs(name, &addrs)
        }
        None => return Err(FetchError::BadRedirect("no host".into())),
    };
    builder.build().map_err(|e| FetchError::Network(describe(&e)))
}

fn check(host: &str, addr: SocketAddr, loopback_ports: &[u16]) -> Result<(), FetchError> {
    addr::permitted(addr, loopback_ports).map_err(|why| FetchError::Blocked {
        host: host.to_string(),
        addr: addr.ip(),
        why,
    })
}

/// One lookup of `name`; every answer is returned (the caller refuses the host if any is
/// non-public, so a name cannot mix public and internal records).
async fn resolve(name: &str, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
    let found =
        tokio::net::lookup_host((name, port)).await.map_err(|_| FetchError::Resolve(name.to_string()))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(FetchError::Resolve(name.to_string()));
    }
    Ok(addrs)
}

/// The client's resolver: refuses everything (names are answered by the checked override).
struct NoLookups;

impl Resolve for NoLookups {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move { Err(format!("unchecked DNS lookup of {name} refused").into()) })
    }
}

/// A reqwest error without the URL (which the caller already knows) and with its cause.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(cause) = std::error::Error::source(e) {
        text.push_str(&format!(": {cause}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_never_resolves_names_itself() {
        // A client built for one checked host refuses any other name instead of looking it up
        // (the lookup fails inside the client: nothing leaves the machine).
        let url = Url::parse("http://localhost:9/").unwrap();
        let client = client_for(&url, &[9]).await.expect("localhost:9 is allowed here");
        let err = client.get("http://palaver-unchecked.invalid/").send().await.unwrap_err();
        assert!(format!("{err:?}").contains("unchecked DNS lookup"), "{err:?}");
    }

    #[tokio::test]
    async fn blocked_hosts_are_refused_before_a_client_exists() {
        for (raw, ports) in [
            ("http://localhost:9/", &[][..]),
            ("http://127.0.0.1:9/", &[10][..]),
            ("http://[::ffff:127.0.0.1]:9/", &[9][..]),
            ("http://169.254.169.254/", &[80][..]),
        ] {
            let url = Url::parse(raw).unwrap();
            let err = client_for(&url, ports).await.unwrap_err();
            assert!(matches!(err, FetchError::Blocked { .. }), "{raw}: {err:?}");
        }
    }
}
