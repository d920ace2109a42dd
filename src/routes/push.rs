//! Routes for this seed section (being written).

use warp::Filter;

use crate::http::Route;
use crate::state::AppState;

pub fn routes(_state: &AppState) -> Route {
    // Matches nothing until the section's handlers land.
    warp::path!("__unrouted__" / "push")
        .and(warp::any())
        .map(|| crate::http::status_only(warp::http::StatusCode::NOT_FOUND))
        .boxed()
}
