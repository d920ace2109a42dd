//! All HTTP routes, grouped by the seed's sections (one file each).

pub mod account;
pub mod admin;
pub mod admin_files;
pub mod admin_moderation;
pub mod admin_users;
pub mod announcements;
pub mod auth;
pub mod bookmarks;
pub mod channels;
pub mod communities;
pub mod dms;
pub mod emojis;
pub mod feedback;
pub mod files;
pub mod gifs;
pub mod groups;
pub mod health;
pub mod images;
pub mod keys;
pub mod legal;
pub mod link_preview;
pub mod messages;
pub mod polls;
pub mod push;
pub mod reports;
pub mod scheduled;
pub mod totp;
pub mod users;
pub mod webhooks;

use warp::{Filter, Reply};

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
        admin_users::routes(state),
        admin_moderation::routes(state),
        admin_files::routes(state),
        legal::routes(state),
        push::routes(state),
        channels::routes(state),
        communities::routes(state),
        messages::routes(state),
        dms::routes(state),
        groups::routes(state),
        webhooks::routes(state),
        polls::routes(state),
        scheduled::routes(state),
        bookmarks::routes(state),
        feedback::routes(state),
        gifs::routes(state),
        files::routes(state),
        link_preview::routes(state),
        images::routes(state),
        emojis::routes(state),
    ];
    // Each section is boxed, so combining them keeps compile times and types small.
    let api = sections.into_iter().reduce(|a, b| a.or(b).unify().boxed()).expect("at least one section");
    // Under /api an unmatched path is a JSON 404 (never the SPA's index.html).
    let api_not_found = warp::any().map(|| ApiError::not_found("route").into_response());
    let api = warp::path("api").and(api.or(api_not_found).unify());
    match &state.config.web_dir {
        Some(dir) => api.or(web_client(dir)).unify().boxed(),
        None => {
            let not_found = warp::any().map(|| ApiError::not_found("route").into_response());
            api.or(not_found).unify().boxed()
        }
    }
}

/// The built web client (SPA): files from `dir`; any other GET path gets `index.html` with
/// 200, so client-side routes survive a reload. `index.html` is never cached (it names the
/// hashed assets of the current build).
fn web_client(dir: &std::path::Path) -> Route {
    let index = dir.join("index.html");
    let files = warp::get().and(warp::fs::dir(dir.to_path_buf())).map(|file: warp::fs::File| {
        let is_index = file.path().file_name().is_some_and(|n| n == "index.html");
        let mut response = file.into_response();
        if is_index {
            no_cache(&mut response);
        }
        response
    });
    let fallback = warp::get().and(warp::fs::file(index)).map(|file: warp::fs::File| {
        let mut response = file.into_response();
        no_cache(&mut response);
        response
    });
    let not_found = warp::any().map(|| ApiError::not_found("route").into_response());
    files.or(fallback).unify().or(not_found).unify().boxed()
}

fn no_cache(response: &mut warp::reply::Response) {
    response
        .headers_mut()
        .insert(warp::http::header::CACHE_CONTROL, warp::http::HeaderValue::from_static("no-cache"));
}
