//! Shared warp plumbing: state injection, the caller, JSON bodies, path ids and responses.
//!
//! Filters here never reject once a route's path and method matched: they yield
//! `ApiResult<…>` values so the handler turns every problem into the one error body.

pub mod access_log;
pub mod extract;
pub mod metrics_endpoint;
pub mod multipart;
pub mod query;
pub mod router;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest JSON body we read (file uploads have their own, larger limit).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The client's address as the front server resolved it (trusted proxies applied).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

/// Client facts for audit entries and session lists.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Every route's output: a finished response.
pub type Route = BoxedFilter<(Response,)>;

/// What every handler returns: a finished response, or the error to answer with.
pub type Reply = ApiResult<Response>;

pub fn with_state(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// The caller from `Authorization: Bearer …`, or the 401 to answer with.
pub fn caller(
    state: &AppState,
) -> impl Filter<Extract = (ApiResult<Caller>,), Error = warp::Rejection> + Clone + use<> {
    let state = state.clone();
    warp::header::optional::<String>("authorization")
        .map(move |h: Option<String>| auth::caller_from_header(&state.tokens, &state.hub, h.as_deref()))
}

pub fn client_info() -> impl Filter<Extract = (ClientInfo,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<ClientAddr>().and(warp::header::optional::<String>("user-agent")).map(
        |addr: Option<ClientAddr>, ua: Option<String>| ClientInfo { ip: addr.map(|a| a.0), user_agent: ua },
    )
}

/// A JSON body parsed into `T`; bad JSON, wrong types or a wrong content type become 400/415.
pub fn json<T: DeserializeOwned + Send + 'static>()
-> impl Filter<Extract = (ApiResult<T>,), Error = warp::Rejection> + Clone {
    raw_body(JSON_BODY_LIMIT).and(warp::header::optional::<String>("content-type")).map(
        |body: ApiResult<Bytes>, content_type: Option<String>| {
            let body = body?;
            if let Some(ct) = content_type
                && !ct.to_ascii_lowercase().starts_with("application/json")
            {
                return Err(ApiError::UnsupportedMediaType);
            }
            parse_json(&body)
        },
    )
}

/// Parses JSON with a message naming the field that was wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}").map_err(|_| ApiError::validation("request body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::validation(format!("invalid request body: {e}")))
}

/// The whole body, refusing more than `limit` bytes.
pub fn raw_body(limit: usize) -> impl Filter<Extract = (ApiResult<Bytes>,), Error = warp::Rejection> + Clone {
    warp::body::stream().then(move |stream| collect_body(stream, limit))
}

async fn collect_body<S, B>(stream: S, limit: usize) -> ApiResult<Bytes>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::validation(format!("could not read body: {e}")))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// A path segment meant to be a UUID. Parsing never rejects the route, so a malformed id
/// is answered 400 by the handler instead of falling through to another route.
#[derive(Clone, Copy, Debug)]
pub struct PathId(Option<Uuid>);

impl FromStr for PathId {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(Uuid::parse_str(s).ok()))
    }
}

impl PathId {
    pub fn get(self) -> ApiResult<Uuid> {
        self.0.ok_or_else(|| ApiError::validation("malformed id in path: expected a UUID"))
    }
}

/// 200 with a JSON body.
pub fn ok_json<T: Serialize>(value: &T) -> ApiResult<Response> {
    let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
    ok_json_bytes(body.into())
}

/// 200 with a body that is already JSON (e.g. a history page held in memory).
pub fn ok_json_bytes(body: bytes::Bytes) -> ApiResult<Response> {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/json"));
    Ok(response)
}

/// 200 with an empty body ("returns nothing" endpoints).
pub fn ok_empty() -> ApiResult<Response> {
    Ok(Response::new(Bytes::new().into()))
}

/// A status with an empty body.
pub fn status_only(status: StatusCode) -> Response {
    let mut response = Response::new(Bytes::new().into());
    *response.status_mut() = status;
    response
}

/// Turns a handler's result into the response (errors into the error body).
pub fn respond(result: ApiResult<Response>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Convenience for filters composed of many routes.
pub fn boxed<F>(filter: F) -> Route
where
    F: Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    filter.boxed()
}

/// `Reply` for our response type (so filters can `.map(respond)`).
pub fn into_reply(r: Response) -> impl warp::Reply {
    r
}

/// Hops of `X-Forwarded-For` walked at most (a client may send thousands of trusted-looking
/// addresses; no real proxy chain is this long).
const MAX_FORWARDED_HOPS: usize = 16;

/// Resolves the client IP (wire README): the peer, unless the peer is a trusted proxy. Then
/// the configured client-IP header (`client_ip_header`, e.g. `cf-connecting-ip` behind
/// Cloudflare) when present, else `X-Forwarded-For` walked from the right: each proxy appends
/// the address it saw, so only the right end was written by proxies we trust, and the first
/// untrusted address is the client (all trusted → the leftmost). Never believed by default:
/// `CF-Connecting-IP` — any client can send it through a proxy that does not strip it.
pub fn resolve_client_ip(
    peer: SocketAddr,
    headers: &warp::http::HeaderMap,
    trusted: &[ipnet::IpNet],
    client_ip_header: Option<&str>,
) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    if let Some(ip) = client_ip_header
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(parse_forwarded_ip)
    {
        return ip;
    }
    let values: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    let hops = values.iter().rev().flat_map(|v| v.rsplit(',')).take(MAX_FORWARDED_HOPS);
    let mut client = peer_ip;
    for hop in hops {
        // Garbage where an address should be: stop at the last hop we could read.
        let Some(ip) = parse_forwarded_ip(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// One forwarded address: `1.2.3.4`, `2001:db8::1`, with or without a port or brackets.
fn parse_forwarded_ip(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| raw.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip| ip.to_canonical())
}

/// The key of a client's per-IP buckets: an IPv4 address, or the /64 of an IPv6 one (one
/// subscriber gets a whole /64, so keying by address would let it rotate through 2^64 keys).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn resolve(peer: &str, pairs: &[(&'static str, &'static str)], header: Option<&str>) -> String {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        resolve_client_ip(peer.parse().unwrap(), &headers(pairs), &trusted, header).to_string()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let spoof = [("x-forwarded-for", "1.1.1.1"), ("cf-connecting-ip", "2.2.2.2")];
        assert_eq!(resolve("203.0.113.5:1000", &spoof, None), "203.0.113.5");
        assert_eq!(resolve("203.0.113.5:1000", &spoof, Some("cf-connecting-ip")), "203.0.113.5");
        assert_eq!(resolve("[::ffff:203.0.113.5]:1000", &[], None), "203.0.113.5");
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right() {
        let p = "127.0.0.1:1";
        assert_eq!(resolve(p, &[("x-forwarded-for", "198.51.100.1")], None), "198.51.100.1");
        // The client wrote the left part itself; our proxies appended the right part.
        assert_eq!(
            resolve(p, &[("x-forwarded-for", "6.6.6.6, 198.51.100.1, 10.1.2.3")], None),
            "198.51.100.1"
        );
        // Several headers are one list.
        let two = [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.1, 10.0.0.9")];
        assert_eq!(resolve(p, &two, None), "198.51.100.1");
        // All trusted: the leftmost.
        assert_eq!(resolve(p, &[("x-forwarded-for", "10.0.0.7, 10.0.0.8")], None), "10.0.0.7");
        // Garbage stops the walk at the last readable hop.
        assert_eq!(resolve(p, &[("x-forwarded-for", "198.51.100.1, junk, 10.0.0.8")], None), "10.0.0.8");
        // Ports and brackets.
        assert_eq!(resolve(p, &[("x-forwarded-for", "[2001:db8::1]:443")], None), "2001:db8::1");
        assert_eq!(resolve(p, &[("x-forwarded-for", "198.51.100.1:8080")], None), "198.51.100.1");
        // No header: the proxy itself.
        assert_eq!(resolve(p, &[], None), "127.0.0.1");
    }

    #[test]
    fn cf_connecting_ip_only_when_configured() {
        let p = "127.0.0.1:1";
        let h = [("cf-connecting-ip", "198.51.100.7"), ("x-forwarded-for", "198.51.100.1")];
        assert_eq!(resolve(p, &h, None), "198.51.100.1");
        assert_eq!(resolve(p, &h, Some("cf-connecting-ip")), "198.51.100.7");
        // Configured but absent or unreadable: the X-Forwarded-For rule.
        assert_eq!(resolve(p, &[("x-forwarded-for", "198.51.100.1")], Some("x-real-ip")), "198.51.100.1");
        assert_eq!(
            resolve(p, &[("x-real-ip", "nope"), ("x-forwarded-for", "198.51.100.1")], Some("x-real-ip")),
            "198.51.100.1"
        );
    }

    #[test]
    fn a_long_trusted_chain_is_not_walked_to_its_end() {
        let long: &'static str = Box::leak(vec!["10.0.0.1"; 10_000].join(",").into_boxed_str());
        assert_eq!(resolve("127.0.0.1:1", &[("x-forwarded-for", long)], None), "10.0.0.1");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_eq!(limit_key(a).to_string(), "2001:db8:1:2::");
        assert_ne!(limit_key(a), limit_key(c));
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(limit_key(v4), v4);
        assert_eq!(limit_key("::ffff:198.51.100.1".parse().unwrap()), v4);
    }
}
