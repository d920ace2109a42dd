//! Seed section "Miscellaneous": `GET /gifs/search` and `GET /gifs/trending` (Bearer), a
//! proxy to Giphy with a 5-minute cache. Without a configured key both answer 503 saying so
//! (the mirror answers 400; a missing server feature is not the client's bad input).

use std::collections::HashMap;

use crate::auth::Caller;
use crate::domain::gif::{GifPage, GifQuery};
use crate::http::{Reply, ok_json};
use crate::state::AppState;

/// GET /api/gifs/search
pub(crate) async fn search_gifs(state: AppState, _caller: Caller, query: HashMap<String, String>) -> Reply {
    state.gifs.require_configured()?;
    match GifQuery::search(&query)? {
        Some(query) => ok_json(&state.gifs.fetch(query).await?),
        None => ok_json(&GifPage::empty()),
    }
}

/// GET /api/gifs/trending
pub(crate) async fn trending_gifs(state: AppState, _caller: Caller, query: HashMap<String, String>) -> Reply {
    state.gifs.require_configured()?;
    ok_json(&state.gifs.fetch(GifQuery::trending(&query)?).await?)
}
