//! Shared warp plumbing: state injection, the caller, JSON bodies, path ids and responses.
//!
//! Filters here never reject once a route's path and method matched: they yield
//! `ApiResult<…>` values so the handler turns every problem into the one error body.

pub mod multipart;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

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
        .map(move |h: Option<String>| auth::caller_from_header(&state, h.as_deref()))
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
pub fn into_reply(r: Response) -> impl Reply {
    r
}

/// Resolves the client IP: the peer, unless the peer is a trusted proxy that names one.
pub fn resolve_client_ip(
    peer: SocketAddr,
    headers: &warp::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trusted.iter().any(|net| net.contains(&peer_ip)) {
        return peer_ip;
    }
    let header_ip = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    };
    header_ip("cf-connecting-ip").or_else(|| header_ip("x-forwarded-for")).unwrap_or(peer_ip)
}
