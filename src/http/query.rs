//! Query strings: read as name → value (never rejecting the route), then parsed by the
//! handler at the point where today's order of checks puts the 400, with one rule per kind
//! of value (the same messages on every route).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// The query string of a request. Repeated names keep the last value; unknown names are
/// ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct QueryParams(HashMap<String, String>);

/// `limit` and `offset` of a listing, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows to return: clamped into `1..=max`.
    pub limit: u64,
    /// Rows to skip: negative counts as 0.
    pub offset: u64,
}

impl From<HashMap<String, String>> for QueryParams {
    fn from(map: HashMap<String, String>) -> Self {
        Self(map)
    }
}

impl QueryParams {
    /// The trimmed value of `key`; `None` when absent or blank.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The raw value of `key`, untrimmed.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `limit` (clamped to `1..=max`, `default` when absent); 400 when not an integer.
    pub fn limit(&self, default: u64, max: u64) -> ApiResult<u64> {
        match self.text("limit") {
            None => Ok(default),
            Some(raw) => {
                let n: i64 = raw.parse().map_err(|_| ApiError::validation("limit must be an integer"))?;
                Ok(n.clamp(1, i64::try_from(max).unwrap_or(i64::MAX)).unsigned_abs())
            }
        }
    }

    /// `offset` (≥0, default 0); 400 when not an integer.
    pub fn offset(&self) -> ApiResult<u64> {
        match self.text("offset") {
            None => Ok(0),
            Some(raw) => {
                let n: i64 = raw.parse().map_err(|_| ApiError::validation("offset must be an integer"))?;
                Ok(Ord::max(n, 0).unsigned_abs())
            }
        }
    }

    /// `limit` then `offset`, in that order of checks.
    pub fn page(&self, default: u64, max: u64) -> ApiResult<Page> {
        let limit = self.limit(default, max)?;
        Ok(Page { limit, offset: self.offset()? })
    }

    /// A boolean (`true`/`false`/`1`/`0`, case-insensitive, absent = false); 400 otherwise.
    pub fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.0.get(key).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(_) => Err(ApiError::validation(format!("{key} must be true or false"))),
        }
    }

    /// A message id; 400 when malformed.
    pub fn message_id(&self, key: &str) -> ApiResult<Option<Uuid>> {
        match self.text(key) {
            None => Ok(None),
            Some(raw) => Uuid::parse_str(raw)
                .map(Some)
                .map_err(|_| ApiError::validation(format!("{key} must be a message id"))),
        }
    }

    /// An RFC 3339 time; absent or unreadable is `None` (filters that ignore a bad bound).
    pub fn time(&self, key: &str) -> Option<DateTime<Utc>> {
        self.0
            .get(key)
            .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn limits_and_offsets_follow_the_listing_rules() {
        assert_eq!(params(&[]).page(50, 100).unwrap(), Page { limit: 50, offset: 0 });
        assert_eq!(
            params(&[("limit", " 500 "), ("offset", "-3")]).page(50, 100).unwrap(),
            Page { limit: 100, offset: 0 }
        );
        assert_eq!(params(&[("limit", "0")]).limit(50, 100).unwrap(), 1);
        assert_eq!(params(&[("limit", "")]).limit(50, 100).unwrap(), 50);
        assert!(params(&[("limit", "x")]).limit(50, 100).is_err());
        assert!(params(&[("offset", "1.5")]).offset().is_err());
    }

    #[test]
    fn flags_and_ids_refuse_garbage() {
        assert!(params(&[("f", "TRUE")]).flag("f").unwrap());
        assert!(!params(&[("f", "0")]).flag("f").unwrap());
        assert!(params(&[("f", "yes")]).flag("f").is_err());
        assert_eq!(params(&[]).message_id("before").unwrap(), None);
        assert!(params(&[("before", "nope")]).message_id("before").is_err());
    }
}
