//! Push endpoints are URLs the client chooses, and the server POSTs to them: an SSRF surface.
//! An endpoint must be `https://` (the wire's rule) and, when the server connects, every
//! address it connects to must be globally routable (`linkpreview::addr`, the same tables the
//! link previewer uses). The HTTP client resolves names only through [`CheckedResolver`], which
//! refuses a name if any of its addresses is not public, so the checked addresses are the ones
//! connected to; literal-IP hosts are checked by [`check_literal_host`] before each request.
//! Redirects are not followed and proxies from the environment are ignored.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::linkpreview::addr::{self, Blocked};

/// Longest accepted push endpoint URL (wire).
pub const MAX_ENDPOINT_BYTES: usize = 2048;

/// Parses a client's endpoint: `https://` with a host, at most 2048 bytes. `loopback_ports` is
/// the test-only allowance (`Config::allow_loopback_push_for_tests`): `http://` to a literal
/// loopback address on one of those ports. Empty in production.
pub fn parse(raw: &str, loopback_ports: &[u16]) -> Result<Url, &'static str> {
    const RULE: &str = "endpoint must be an https:// URL of at most 2048 bytes";
    if raw.len() > MAX_ENDPOINT_BYTES {
        return Err(RULE);
    }
    let url = Url::parse(raw).map_err(|_| RULE)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint must not carry credentials");
    }
    let https = url.scheme() == "https" && raw.starts_with("https://");
    if (https && url.host().is_some()) || test_loopback(&url, loopback_ports) { Ok(url) } else { Err(RULE) }
}

fn test_loopback(url: &Url, loopback_ports: &[u16]) -> bool {
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    url.scheme() == "http" && loopback && url.port().is_some_and(|p| loopback_ports.contains(&p))
}

/// The origin a VAPID token's `aud` names (scheme, host and any non-default port).
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Refuses an endpoint whose host is a literal non-public address (names are checked by the
/// resolver when the client connects).
pub fn check_literal_host(url: &Url, loopback_ports: &[u16]) -> Result<(), Blocked> {
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        Some(Host::Ipv4(ip)) => addr::permitted(SocketAddr::new(ip.into(), port), loopback_ports),
        Some(Host::Ipv6(ip)) => addr::permitted(SocketAddr::new(ip.into(), port), loopback_ports),
        _ => Ok(()),
    }
}

/// A name that resolves to a non-public address: no request to it can ever be sent.
#[derive(Debug)]
pub struct BlockedName {
    name: String,
    addr: std::net::IpAddr,
    why: Blocked,
}

impl std::fmt::Display for BlockedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "push endpoint {} resolves to {}, {}", self.name, self.addr, self.why)
    }
}

impl std::error::Error for BlockedName {}

/// Whether a request failed because the resolver refused the endpoint's name.
pub fn refused_by_resolver<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BlockedName> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(blocked) = e.downcast_ref::<BlockedName>() {
            return Some(blocked);
        }
        cause = e.source();
    }
    None
}

/// The push client's only resolver: one lookup per name, refused if any answer is not a
/// globally routable address (so a name cannot mix public and internal records). The
/// test-only loopback allowance never applies to names, only to literal addresses.
pub struct CheckedResolver;

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{name} did not resolve").into());
            }
            for addr in &found {
                if let Err(why) = addr::check(addr.ip()) {
                    return Err(Box::new(BlockedName { name, addr: addr.ip(), why }) as _);
                }
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_endpoints_parse_without_the_test_allowance() {
        assert!(parse("https://fcm.googleapis.com/fcm/send/abc", &[]).is_ok());
        assert!(parse("https://push.example.com:8443/x", &[]).is_ok());
        for bad in [
            "http://push.example.com/x",
            "push.example.com/x",
            "https://",
            "https://user:pw@push.example.com/x",
            "http://127.0.0.1:4000/x",
            "ftp://push.example.com/x",
        ] {
            assert!(parse(bad, &[]).is_err(), "{bad}");
        }
        let long = format!("https://push.example.com/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        assert!(parse(&long, &[]).is_err());
    }

    #[test]
    fn the_test_allowance_admits_plain_http_to_listed_loopback_ports_only() {
        assert!(parse("http://127.0.0.1:4000/x", &[4000]).is_ok());
        assert!(parse("http://[::1]:4000/x", &[4000]).is_ok());
        assert!(parse("http://127.0.0.1:4001/x", &[4000]).is_err());
        assert!(parse("http://localhost:4000/x", &[4000]).is_err(), "names never");
        assert!(parse("http://10.0.0.1:4000/x", &[4000]).is_err());
    }

    #[test]
    fn literal_hosts_must_be_public() {
        let check = |raw: &str, ports: &[u16]| check_literal_host(&Url::parse(raw).unwrap(), ports);
        assert_eq!(check("https://127.0.0.1/x", &[]), Err(Blocked::Loopback));
        assert_eq!(check("https://10.1.2.3/x", &[]), Err(Blocked::Private));
        assert_eq!(check("https://169.254.169.254/x", &[]), Err(Blocked::LinkLocal));
        assert_eq!(check("https://[::ffff:127.0.0.1]/x", &[443]), Err(Blocked::Ipv4Mapped));
        assert_eq!(check("https://8.8.8.8/x", &[]), Ok(()));
        assert_eq!(check("https://push.example.com/x", &[]), Ok(()), "names: the resolver decides");
        assert_eq!(check("http://127.0.0.1:4000/x", &[4000]), Ok(()));
    }

    #[test]
    fn the_audience_is_the_origin_with_a_non_default_port() {
        assert_eq!(
            origin(&Url::parse("https://push.example.com/a/b?c").unwrap()),
            "https://push.example.com"
        );
        assert_eq!(
            origin(&Url::parse("https://push.example.com:443/a").unwrap()),
            "https://push.example.com"
        );
        assert_eq!(origin(&Url::parse("http://127.0.0.1:4000/a").unwrap()), "http://127.0.0.1:4000");
    }

    #[tokio::test]
    async fn names_of_internal_addresses_are_refused_by_the_resolver() {
        let err = match CheckedResolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must not resolve"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(CheckedResolver))
            .build()
            .unwrap();
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        assert!(refused_by_resolver(&err).is_some(), "found through the error chain: {err:?}");
    }
}
