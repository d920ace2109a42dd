//! Link previews: fetch a page the user linked (SSRF-safe, see `fetch`), read its metadata with
//! a real HTML parser (`html`), and keep the answer in a small in-memory cache.

pub mod addr;
pub mod fetch;
pub mod html;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Semaphore;
use url::Url;

use crate::config::LinkPreviewLimits;
pub use fetch::FetchError;
pub use html::PageMeta;

/// How long a preview is served from memory.
const CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// Most previews kept; when full, expired entries are dropped, and if none were, nothing new is
/// cached until some expire (bounded memory, no eviction bookkeeping).
const CACHE_MAX_ENTRIES: usize = 4096;
/// Fetches running at once across the server; more wait (within their own deadline).
const MAX_CONCURRENT_FETCHES: usize = 16;

/// The previewer held in `AppState`.
pub struct LinkPreviews {
    limits: LinkPreviewLimits,
    /// Test-only loopback allowance (`Config::allow_loopback_previews_for_tests`).
    loopback_ports: Vec<u16>,
    cache: DashMap<String, (Instant, Arc<PageMeta>)>,
    fetches: Semaphore,
}

impl LinkPreviews {
    pub fn new(limits: LinkPreviewLimits, loopback_ports: Vec<u16>) -> Self {
        if !loopback_ports.is_empty() {
            tracing::warn!(ports = ?loopback_ports, "TEST-ONLY link preview loopback allowance is on");
        }
        Self {
            limits,
            loopback_ports,
            cache: DashMap::new(),
            fetches: Semaphore::new(MAX_CONCURRENT_FETCHES),
        }
    }

    /// The metadata of the page at `url` (an `http(s)` URL already validated for shape).
    pub async fn preview(&self, url: Url) -> Result<Arc<PageMeta>, FetchError> {
        let key = url.as_str().to_string();
        if let Some(entry) = self.cache.get(&key)
            && entry.0.elapsed() < CACHE_TTL
        {
            return Ok(entry.1.clone());
        }
        // One deadline for waiting for a fetch slot and the fetch itself.
        let page = tokio::time::timeout(self.limits.timeout, async {
            let _permit =
                self.fetches.acquire().await.map_err(|_| FetchError::Network("shutting down".into()))?;
            fetch::fetch(url, &self.limits, &self.loopback_ports).await
        })
        .await
        .map_err(|_| FetchError::Timeout)??;
        // Parsing up to half a megabyte is CPU work: keep it off the async workers.
        let meta = tokio::task::spawn_blocking(move || {
            let text = decode(&page.body, page.charset.as_deref());
            html::extract(&text, &page.url)
        })
        .await
        .map_err(|e| FetchError::Network(format!("parser failed: {e}")))?;
        let meta = Arc::new(meta);
        self.remember(key, meta.clone());
        Ok(meta)
    }

    fn remember(&self, key: String, meta: Arc<PageMeta>) {
        if self.cache.len() >= CACHE_MAX_ENTRIES {
            self.cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if self.cache.len() >= CACHE_MAX_ENTRIES {
                return;
            }
        }
        self.cache.insert(key, (Instant::now(), meta));
    }
}

/// The body as text: the declared charset when known, else UTF-8 (invalid bytes replaced;
/// the body may also have been cut inside a character).
fn decode(body: &[u8], charset: Option<&str>) -> String {
    let encoding = charset
        .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode_with_bom_removal(body).0.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_declared_charsets_and_tolerates_bad_bytes() {
        assert_eq!(decode(b"caf\xe9", Some("iso-8859-1")), "café");
        assert_eq!(decode("café".as_bytes(), None), "café");
        assert_eq!(decode(b"caf\xc3", Some("utf-8")), "caf\u{fffd}");
        assert_eq!(decode(b"abc", Some("no-such-charset")), "abc");
    }
}
