//! Seed section "Miscellaneous": `GET /gifs/search` and `GET /gifs/trending` (Bearer), a
//! proxy to Giphy with a 5-minute cache. Without a configured key both answer 503 saying so
//! (the mirror answers 400; a missing server feature is not the client's bad input).

use std::collections::HashMap;

use warp::Filter;

use crate::auth::Caller;
use crate::domain::gif::{GifPage, GifQuery};
use crate::error::ApiResult;
use crate::http::{Route, caller, ok_json, respond, with_state};
use crate::state::AppState;

type Reply = ApiResult<warp::reply::Response>;

pub fn routes(state: &AppState) -> Route {
    let search = warp::path!("gifs" / "search")
        .and(warp::get())
        .and(with_state(state))
        .and(caller(state))
        .and(warp::query::<HashMap<String, String>>())
        .then(search_gifs)
        .map(respond)
        .boxed();
    let trending = warp::path!("gifs" / "trending")
        .and(warp::get())
        .and(with_state(state))
        .and(caller(state))
        .and(warp::query::<HashMap<String, String>>())
        .then(trending_gifs)
        .map(respond)
        .boxed();
    search.or(trending).unify().boxed()
}

/// GET /api/gifs/search
async fn search_gifs(state: AppState, caller: ApiResult<Caller>, query: HashMap<String, String>) -> Reply {
    caller?;
    state.gifs.require_configured()?;
    match GifQuery::search(&query)? {
        Some(query) => ok_json(&state.gifs.fetch(query).await?),
        None => ok_json(&GifPage::empty()),
    }
}

/// GET /api/gifs/trending
async fn trending_gifs(state: AppState, caller: ApiResult<Caller>, query: HashMap<String, String>) -> Reply {
    caller?;
    state.gifs.require_configured()?;
    ok_json(&state.gifs.fetch(GifQuery::trending(&query)?).await?)
}
