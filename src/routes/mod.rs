//! All HTTP routes, grouped by the seed's sections (one file each).

pub mod account;
pub mod admin;
pub mod announcements;
pub mod auth;
pub mod channels;
pub mod dms;
pub mod emojis;
pub mod health;
pub mod images;
pub mod keys;
pub mod legal;
pub mod messages;
pub mod push;
pub mod reports;
pub mod totp;
pub mod users;

use warp::Filter;

use crate::error::ApiError;
use crate::http::Route;
use crate::state::AppState;

/// Every `/api/...` route, then a JSON 404.
pub fn all(state: &AppState) -> Route {
    let sections = [
        health::routes(state),
        auth::routes(state),
        account::routes(state),
        totp::routes(state),
        users::routes(state),
        keys::routes(state),
        reports::routes(state),
        announcements::routes(state),
        admin::routes(state),
        legal::routes(state),
        push::routes(state),
        channels::routes(state),
        messages::routes(state),
        dms::routes(state),
        images::routes(state),
        emojis::routes(state),
    ];
    // Each section is boxed, so combining them keeps compile times and types small.
    let api = sections.into_iter().reduce(|a, b| a.or(b).unify().boxed()).expect("at least one section");
    let api = warp::path("api").and(api);
    let not_found = warp::any().map(|| ApiError::not_found("route").into_response());
    api.or(not_found).unify().boxed()
}
