//! Validated profile edits (`PUT|PATCH /account/profile`, rest-auth-account-users.md):
//! absent or `null` = unchanged, `""` (after trimming) = cleared, except `display_name`,
//! which cannot be cleared.

use serde::Deserialize;

use crate::domain::registration::display_name;
use crate::error::{ApiError, ApiResult};

/// Longest avatar / banner URL, in bytes.
pub const URL_MAX: usize = 2048;
pub const CUSTOM_STATUS_MAX: usize = 128;
pub const BIO_MAX: usize = 500;
pub const PRONOUNS_MAX: usize = 50;

/// The body as clients send it.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ProfileRequest {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub banner_url: Option<String>,
    #[serde(default)]
    pub custom_status: Option<String>,
    #[serde(default)]
    pub bio: Option<String>,
    #[serde(default)]
    pub pronouns: Option<String>,
}

/// One optional column's change: `None` = keep, `Some(None)` = clear, `Some(Some(v))` = set.
pub type Change = Option<Option<String>>;

/// The checked edit.
#[derive(Debug, Default)]
pub struct ProfileUpdate {
    pub display_name: Option<String>,
    pub avatar_url: Change,
    pub banner_url: Change,
    pub custom_status: Change,
    pub bio: Change,
    pub pronouns: Change,
}

impl ProfileUpdate {
    pub fn parse(req: ProfileRequest) -> ApiResult<Self> {
        Ok(Self {
            display_name: req.display_name.as_deref().map(display_name).transpose()?,
            avatar_url: change(req.avatar_url, |v| image_url("avatar_url", v))?,
            banner_url: change(req.banner_url, |v| image_url("banner_url", v))?,
            custom_status: change(req.custom_status, |v| max_len("custom_status", v, CUSTOM_STATUS_MAX))?,
            bio: change(req.bio, |v| max_len("bio", v, BIO_MAX))?,
            pronouns: change(req.pronouns, |v| max_len("pronouns", v, PRONOUNS_MAX))?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.display_name.is_none()
            && self.avatar_url.is_none()
            && self.banner_url.is_none()
            && self.custom_status.is_none()
            && self.bio.is_none()
            && self.pronouns.is_none()
    }
}

fn change(raw: Option<String>, check: impl Fn(&str) -> ApiResult<()>) -> ApiResult<Change> {
    match raw.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(value) => {
            check(value)?;
            Ok(Some(Some(value.to_string())))
        }
    }
}

fn max_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::validation(format!("{field} must be at most {max} bytes")));
    }
    Ok(())
}

/// `http://`, `https://` or a local `/api/` path, ≤2048 bytes.
fn image_url(field: &str, value: &str) -> ApiResult<()> {
    max_len(field, value, URL_MAX)?;
    if !(value.starts_with("http://") || value.starts_with("https://") || value.starts_with("/api/")) {
        return Err(ApiError::validation(format!("{field} must start with http://, https:// or /api/")));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::validation(format!("{field} must not contain spaces")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ProfileRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn absent_null_empty_and_set_are_distinct() {
        let u =
            ProfileUpdate::parse(req(r#"{"bio": null, "pronouns": "  ", "custom_status": " hi "}"#)).unwrap();
        assert_eq!(u.bio, None);
        assert_eq!(u.pronouns, Some(None));
        assert_eq!(u.custom_status, Some(Some("hi".into())));
        assert_eq!(u.avatar_url, None);
        assert!(ProfileUpdate::parse(req("{}")).unwrap().is_empty());
    }

    #[test]
    fn rules_are_enforced() {
        assert!(ProfileUpdate::parse(req(r#"{"display_name": " "}"#)).is_err());
        assert!(ProfileUpdate::parse(req(&format!(r#"{{"display_name": "{}"}}"#, "x".repeat(65)))).is_err());
        assert!(ProfileUpdate::parse(req(r#"{"avatar_url": "javascript:alert(1)"}"#)).is_err());
        assert!(ProfileUpdate::parse(req(r#"{"avatar_url": "/api/avatars/a.png"}"#)).is_ok());
        assert!(ProfileUpdate::parse(req(&format!(r#"{{"bio": "{}"}}"#, "x".repeat(501)))).is_err());
        assert!(ProfileUpdate::parse(req(&format!(r#"{{"pronouns": "{}"}}"#, "x".repeat(51)))).is_err());
    }
}
