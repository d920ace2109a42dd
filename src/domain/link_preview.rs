//! Link preview input and the preview object of the wire (rest-keys-totp-webhooks-polls-misc.md).

use serde::Serialize;
use url::Url;

use crate::error::{ApiError, ApiResult};
use crate::linkpreview::PageMeta;

/// Longest URL accepted, in bytes after trimming.
pub const MAX_URL_BYTES: usize = 2048;

/// A URL the caller asked to preview: its text as given (echoed back) and the parsed form.
#[derive(Debug, Clone)]
pub struct PreviewUrl {
    pub requested: String,
    pub url: Url,
}

impl PreviewUrl {
    /// 1–2048 bytes, `http://` or `https://`, a host, no credentials. Whether the host may be
    /// fetched is decided later, on its resolved addresses.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let raw = raw.map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Err(ApiError::validation("url is required"));
        }
        if raw.len() > MAX_URL_BYTES {
            return Err(ApiError::validation(format!("url must be at most {MAX_URL_BYTES} bytes")));
        }
        let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err(ApiError::validation("url must start with http:// or https://"));
        }
        let mut url =
            Url::parse(raw).map_err(|e| ApiError::validation(format!("url is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ApiError::validation("url must be an http:// or https:// URL with a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ApiError::validation("url must not contain credentials"));
        }
        url.set_fragment(None);
        Ok(Self { requested: raw.to_string(), url })
    }
}

/// `GET /link-preview` response.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LinkPreviewView {
    pub url: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub image: Option<String>,
    pub site_name: Option<String>,
}

impl LinkPreviewView {
    pub fn new(requested: String, meta: &PageMeta) -> Self {
        Self {
            url: requested,
            title: meta.title.clone(),
            description: meta.description.clone(),
            image: meta.image.clone(),
            site_name: meta.site_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_and_keeps_the_requested_text() {
        let p = PreviewUrl::parse(Some("  HTTPS://Example.COM/a?b=1#frag ")).unwrap();
        assert_eq!(p.requested, "HTTPS://Example.COM/a?b=1#frag");
        assert_eq!(p.url.as_str(), "https://example.com/a?b=1");
        assert!(PreviewUrl::parse(Some("http://example.com")).is_ok());
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            None,
            Some(""),
            Some("   "),
            Some("example.com"),
            Some("ftp://example.com/"),
            Some("file:///etc/passwd"),
            Some("javascript:alert(1)"),
            Some("http://"),
            Some("http://exa mple.com/"),
            Some("http://user:pw@example.com/"),
            Some("http://[::1/"),
        ] {
            assert!(PreviewUrl::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(PreviewUrl::parse(Some(&long)).is_err());
    }
}
