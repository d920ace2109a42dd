//! The extractors a route-table line may name in its `[…]` list (see `router.rs`).
//!
//! Each is a function of the shared state so the table can call them uniformly; none
//! rejects a request whose path and method matched, except `auth`, whose refusal is turned
//! into today's 401 body by the route's own recover step before any other route is tried.

use std::collections::HashMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use warp::Filter;
use warp::reply::Response;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub use super::ClientInfo;

/// A refusal decided by an extractor before the handler ran; answered with its error body.
#[derive(Debug)]
pub struct Refused {
    /// The error the response is built from (a `Mutex` only because rejections must be `Sync`).
    error: std::sync::Mutex<Option<ApiError>>,
}

impl warp::reject::Reject for Refused {}

/// The route's recover step: a `Refused` becomes its error response; any other rejection
/// (path or method did not match) goes on to the next route.
pub async fn answer_refusal(rejection: warp::Rejection) -> Result<Response, warp::Rejection> {
    let Some(refused) = rejection.find::<Refused>() else { return Err(rejection) };
    let error = match refused.error.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    Ok(error.unwrap_or(ApiError::Unauthorized).into_response())
}

/// The shared state (every route receives it right after its path ids).
pub fn state(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone + use<> {
    super::with_state(state)
}

/// The authenticated caller; a missing or bad token is answered 401 before the handler runs.
pub fn auth(state: &AppState) -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone + use<> {
    let state = state.clone();
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let result = auth::caller_from_header(&state.tokens, &state.hub, header.as_deref());
        async move {
            result
                .map_err(|error| warp::reject::custom(Refused { error: std::sync::Mutex::new(Some(error)) }))
        }
    })
}

/// The caller or the 401, for handlers that check something else first (or accept both).
pub fn maybe_auth(
    state: &AppState,
) -> impl Filter<Extract = (ApiResult<Caller>,), Error = warp::Rejection> + Clone + use<> {
    super::caller(state)
}

/// The JSON body (the handler decides when a 400/415 is answered).
pub fn json<T: DeserializeOwned + Send + 'static>(
    _state: &AppState,
) -> impl Filter<Extract = (ApiResult<T>,), Error = warp::Rejection> + Clone + use<T> {
    super::json()
}

/// The client's address and user agent.
pub fn client_info(
    _state: &AppState,
) -> impl Filter<Extract = (ClientInfo,), Error = warp::Rejection> + Clone + use<> {
    super::client_info()
}

/// The query string as name → value; never rejects (the handler parses what it reads).
pub fn query<T: DeserializeOwned + Send + 'static>(
    _state: &AppState,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone + use<T> {
    warp::query::<T>()
}

/// The raw query map (kept for handlers reading free-form names).
pub fn query_map(
    _state: &AppState,
) -> impl Filter<Extract = (HashMap<String, String>,), Error = warp::Rejection> + Clone + use<> {
    warp::query::<HashMap<String, String>>()
}

/// An unread upload body with its content type.
pub fn upload(
    _state: &AppState,
) -> impl Filter<Extract = (super::multipart::Upload,), Error = warp::Rejection> + Clone + use<> {
    super::multipart::upload()
}

/// One optional request header.
pub fn header(
    _state: &AppState,
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone + use<> {
    warp::header::optional::<String>(name)
}

/// The whole body, refusing more than `limit` bytes (the handler answers the 413).
pub fn raw_body(
    _state: &AppState,
    limit: usize,
) -> impl Filter<Extract = (ApiResult<Bytes>,), Error = warp::Rejection> + Clone + use<> {
    super::raw_body(limit)
}

/// A fixed value handed to the handler (several paths sharing one handler by kind).
pub fn value<T: Clone + Send + Sync + 'static>(
    _state: &AppState,
    value: T,
) -> impl Filter<Extract = (T,), Error = std::convert::Infallible> + Clone + use<T> {
    warp::any().map(move || value.clone())
}

/// The body as an unread stream (handlers that cap and parse it themselves).
pub fn body_stream(
    _state: &AppState,
) -> impl Filter<
    Extract = (impl futures_util::Stream<Item = Result<impl bytes::Buf + use<>, warp::Error>> + Send + use<>,),
    Error = warp::Rejection,
> + Clone
+ use<> {
    warp::body::stream()
}

/// The multipart stream, or the 400 to answer when the body is not `multipart/form-data`.
/// No length limit here: the front door caps the request, the handler caps each part.
pub fn multipart_form(
    _state: &AppState,
) -> impl Filter<Extract = (ApiResult<warp::multipart::FormData>,), Error = std::convert::Infallible> + Clone + use<>
{
    warp::multipart::form()
        .max_length(None)
        .map(Ok)
        .or(warp::any()
            .map(|| Err(ApiError::validation("expected a multipart/form-data body with a file field"))))
        .unify()
}
