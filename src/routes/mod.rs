//! All HTTP routes, grouped by the seed's sections (one file each).

pub mod health;

use warp::Filter;

use crate::error::ApiError;
use crate::http::Route;
use crate::state::AppState;

/// Every `/api/...` route, then the SPA (when configured), then a JSON 404.
pub fn all(state: &AppState) -> Route {
    let api = health::routes(state);
    let api = warp::path("api").and(api);
    let not_found = warp::any().map(|| ApiError::not_found("route").into_response());
    api.or(not_found).unify().boxed()
}
