//! GIF search (rest-keys-totp-webhooks-polls-misc.md, "GIFs"): the GIF result object, the
//! query rules, and the Giphy proxy with its 5-minute cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};

/// Results are reused this long.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Cached answers kept at most (the cache is cleared when full).
const CACHE_MAX: usize = 2000;
/// Default and largest page.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 50;
/// Longest search text, in bytes.
pub const MAX_QUERY: usize = 256;
/// How long one upstream call may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// The wire's GIF result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct GifResult {
    pub id: String,
    pub title: String,
    pub preview_url: String,
    pub url: String,
    pub width: i64,
    pub height: i64,
}

/// `{results, next}`: `next` is the offset to pass as `pos`, null at the end.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GifPage {
    pub results: Vec<GifResult>,
    pub next: Option<String>,
}

impl GifPage {
    pub fn empty() -> Self {
        Self { results: Vec::new(), next: None }
    }
}

/// What to ask Giphy for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GifQuery {
    Search { q: String, limit: u32, offset: u32 },
    Trending { limit: u32, offset: u32 },
}

impl GifQuery {
    /// `GET /gifs/search` parameters; `None` when the text is empty or too long (the wire
    /// answers an empty page then).
    pub fn search(query: &HashMap<String, String>) -> ApiResult<Option<Self>> {
        let (limit, offset) = page(query)?;
        let q = query.get("q").map(|q| q.trim()).unwrap_or_default();
        if q.is_empty() || q.len() > MAX_QUERY {
            return Ok(None);
        }
        Ok(Some(Self::Search { q: q.to_string(), limit, offset }))
    }

    /// `GET /gifs/trending` parameters.
    pub fn trending(query: &HashMap<String, String>) -> ApiResult<Self> {
        let (limit, offset) = page(query)?;
        Ok(Self::Trending { limit, offset })
    }
}

/// `limit` (default 20, clamped 1–50) and `pos` (a numeric offset, default 0).
fn page(query: &HashMap<String, String>) -> ApiResult<(u32, u32)> {
    let limit = match query.get("limit").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(raw) => {
            let n: i64 = raw.parse().map_err(|_| ApiError::validation("limit must be an integer"))?;
            n.clamp(1, MAX_LIMIT as i64) as u32
        }
    };
    let offset = match query.get("pos").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => 0,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 4999)
            .ok_or_else(|| ApiError::validation("pos must be an offset returned as next (0-4999)"))?,
    };
    Ok((limit, offset))
}

/// The Giphy proxy: one HTTP client, the key, and the cache.
pub struct GifProxy {
    client: reqwest::Client,
    api_key: Option<String>,
    base_url: String,
    cache: DashMap<GifQuery, (Instant, GifPage)>,
}

impl GifProxy {
    pub fn new(config: &Config) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(UPSTREAM_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("GIF proxy client: {e}"))?;
        Ok(Self {
            client,
            api_key: config.giphy_api_key.clone(),
            base_url: config.giphy_api_url.clone(),
            cache: DashMap::new(),
        })
    }

    /// 503 with a clear message when no key is configured.
    pub fn require_configured(&self) -> ApiResult<()> {
        match self.api_key {
            Some(_) => Ok(()),
            None => Err(ApiError::ServiceUnavailable(
                "GIF search is not configured on this server (no Giphy API key)".into(),
            )),
        }
    }

    /// One page of results, from the cache when fresh; upstream failures are 500.
    pub async fn fetch(&self, query: GifQuery) -> ApiResult<GifPage> {
        self.require_configured()?;
        if let Some(hit) = self.cache.get(&query)
            && hit.0.elapsed() < CACHE_TTL
        {
            return Ok(hit.1.clone());
        }
        let key = self.api_key.as_deref().unwrap_or_default();
        let (path, mut params) = match &query {
            GifQuery::Search { q, limit, offset } => (
                "search",
                vec![("q", q.clone()), ("limit", limit.to_string()), ("offset", offset.to_string())],
            ),
            GifQuery::Trending { limit, offset } => {
                ("trending", vec![("limit", limit.to_string()), ("offset", offset.to_string())])
            }
        };
        params.push(("api_key", key.to_string()));
        params.push(("rating", "pg-13".to_string()));
        let url = format!("{}/v1/gifs/{path}", self.base_url);
        let response = self
            .client
            .get(&url)
            .query(&params)
            .send()
            .await
            .map_err(|e| ApiError::internal(format!("giphy request: {}", e.without_url())))?;
        if !response.status().is_success() {
            return Err(ApiError::internal(format!("giphy answered {}", response.status())));
        }
        let body: GiphyResponse = response
            .json()
            .await
            .map_err(|e| ApiError::internal(format!("giphy body: {}", e.without_url())))?;
        let page = body.into_page();
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(query, (Instant::now(), page.clone()));
        Ok(page)
    }
}

#[derive(Deserialize)]
struct GiphyResponse {
    #[serde(default)]
    data: Vec<Value>,
    #[serde(default)]
    pagination: Option<GiphyPagination>,
}

#[derive(Deserialize)]
struct GiphyPagination {
    #[serde(default)]
    total_count: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
}

impl GiphyResponse {
    fn into_page(self) -> GifPage {
        let results: Vec<GifResult> = self.data.iter().filter_map(gif_result).collect();
        let next = self.pagination.and_then(|p| {
            let offset = p.offset.unwrap_or(0);
            let count = p.count.unwrap_or(self.data.len() as u64);
            let end = offset + count;
            (count > 0 && p.total_count.is_some_and(|total| end < total)).then(|| end.to_string())
        });
        GifPage { results, next }
    }
}

/// A Giphy object → GIF result (skipped when it lacks an id or an image URL). Giphy sends
/// sizes as strings.
fn gif_result(item: &Value) -> Option<GifResult> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let number = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
    let images = &item["images"];
    let original = &images["original"];
    let url = text(&original["url"])?;
    let preview_url = ["fixed_width_small", "fixed_height_small", "preview_gif", "fixed_width"]
        .iter()
        .find_map(|k| text(&images[*k]["url"]))
        .unwrap_or_else(|| url.clone());
    Some(GifResult {
        id: text(&item["id"])?,
        title: text(&item["title"]).unwrap_or_default(),
        preview_url,
        url,
        width: number(&original["width"]),
        height: number(&original["height"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn query_rules() {
        assert_eq!(GifQuery::search(&query(&[("q", "  ")])).unwrap(), None);
        assert_eq!(GifQuery::search(&query(&[("q", &"x".repeat(257))])).unwrap(), None);
        assert_eq!(
            GifQuery::search(&query(&[("q", " cat "), ("limit", "500"), ("pos", "40")])).unwrap(),
            Some(GifQuery::Search { q: "cat".into(), limit: 50, offset: 40 })
        );
        assert_eq!(
            GifQuery::trending(&query(&[])).unwrap(),
            GifQuery::Trending { limit: DEFAULT_LIMIT, offset: 0 }
        );
        assert!(GifQuery::trending(&query(&[("pos", "abc")])).is_err());
        assert!(GifQuery::trending(&query(&[("limit", "many")])).is_err());
    }

    #[test]
    fn giphy_objects_map_to_results_and_next() {
        let body: GiphyResponse = serde_json::from_value(json!({
            "data": [
                {"id": "a", "title": "A", "images": {
                    "original": {"url": "https://g/a.gif", "width": "480", "height": "270"},
                    "fixed_width_small": {"url": "https://g/a-small.gif"}}},
                {"id": "b", "images": {}},
            ],
            "pagination": {"total_count": 10, "count": 2, "offset": 4},
        }))
        .unwrap();
        let page = body.into_page();
        assert_eq!(page.results.len(), 1);
        assert_eq!(page.results[0].preview_url, "https://g/a-small.gif");
        assert_eq!((page.results[0].width, page.results[0].height), (480, 270));
        assert_eq!(page.next.as_deref(), Some("6"));
        let last: GiphyResponse = serde_json::from_value(
            json!({"data": [], "pagination": {"total_count": 6, "count": 0, "offset": 6}}),
        )
        .unwrap();
        assert_eq!(last.into_page().next, None);
    }
}
