//! Webhooks (rest-keys-totp-webhooks-polls-misc.md, "Webhooks"): the Webhook object, its
//! secret token (shown once, stored as a SHA-256 hash), and the checked create / update /
//! execute input.

use palaver_actors::wire_time::rfc3339;
use palaver_entity::webhooks;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::channel::image_url;
use crate::error::{ApiError, ApiResult};

/// Webhook names: 1–64 bytes after trimming.
pub const NAME_MAX: usize = 64;
/// Executed content: 1–4000 bytes.
pub const CONTENT_MAX: usize = 4000;
/// Display-name override on execution: at most 64 bytes.
pub const USERNAME_MAX: usize = 64;
/// Length of a token: 32 random bytes as lowercase hex (`[A-Za-z0-9]{64}` on the wire).
pub const TOKEN_LEN: usize = 64;

/// The wire's Webhook object; `token` only in the create response.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub avatar_url: Option<String>,
    pub active: bool,
    pub created_at: String,
}

impl From<&webhooks::Model> for WebhookView {
    fn from(w: &webhooks::Model) -> Self {
        Self {
            id: w.id,
            channel_id: w.channel_id,
            name: w.name.clone(),
            token: None,
            avatar_url: w.avatar_url.clone(),
            active: w.active,
            created_at: rfc3339(&w.created_at),
        }
    }
}

/// A fresh secret: 32 random bytes as 64 hex characters (256 bits, unguessable).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is stored instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a path segment can be a token at all (saves a lookup for junk).
pub fn plausible_token(token: &str) -> bool {
    token.len() == TOKEN_LEN && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A name: 1–64 bytes after trimming.
pub fn name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(ApiError::validation(format!("name must be 1-{NAME_MAX} bytes")));
    }
    Ok(name.to_string())
}

/// An avatar URL (the avatar rule); empty = none.
pub fn avatar(raw: Option<&str>) -> ApiResult<Option<String>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(url) => image_url("avatar_url", url).map(Some),
    }
}

/// `POST /channels/{id}/webhooks` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateWebhookRequest {
    pub name: String,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// `PATCH /webhooks/{id}` as sent: absent or null = unchanged.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct UpdateWebhookRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// A checked webhook edit. `avatar_url: Some(None)` clears it (an empty string was sent).
#[derive(Debug, Default)]
pub struct WebhookUpdate {
    pub name: Option<String>,
    pub avatar_url: Option<Option<String>>,
    pub active: Option<bool>,
}

impl WebhookUpdate {
    pub fn parse(req: UpdateWebhookRequest) -> ApiResult<Self> {
        Ok(Self {
            name: req.name.as_deref().map(name).transpose()?,
            avatar_url: req.avatar_url.as_deref().map(|url| avatar(Some(url))).transpose()?,
            active: req.active,
        })
    }

    pub fn apply(self, w: &mut webhooks::Model) {
        if let Some(v) = self.name {
            w.name = v;
        }
        if let Some(v) = self.avatar_url {
            w.avatar_url = v;
        }
        if let Some(v) = self.active {
            w.active = v;
        }
    }
}

/// `POST /webhooks/execute/{token}` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ExecuteRequest {
    pub content: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// A checked execution: what the message's `webhook_content` holds.
#[derive(Debug, Serialize)]
pub struct WebhookContent {
    pub content: String,
    pub webhook_name: String,
    pub webhook_avatar: Option<String>,
}

impl WebhookContent {
    /// Content 1–4000 bytes; `username` (≤64, trimmed; empty = the webhook's name) and
    /// `avatar_url` (avatar rule) override the webhook's own.
    pub fn parse(req: ExecuteRequest, hook: &webhooks::Model) -> ApiResult<Self> {
        if req.content.trim().is_empty() || req.content.len() > CONTENT_MAX {
            return Err(ApiError::validation(format!("content must be 1-{CONTENT_MAX} bytes")));
        }
        let username = req.username.as_deref().map(str::trim).filter(|u| !u.is_empty());
        if username.is_some_and(|u| u.len() > USERNAME_MAX) {
            return Err(ApiError::validation(format!("username must be at most {USERNAME_MAX} bytes")));
        }
        let avatar = avatar(req.avatar_url.as_deref())?;
        Ok(Self {
            content: req.content,
            webhook_name: username.map(str::to_string).unwrap_or_else(|| hook.name.clone()),
            webhook_avatar: avatar.or_else(|| hook.avatar_url.clone()),
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_alphanumerics_and_hash_stably() {
        let t = new_token();
        assert!(plausible_token(&t));
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t), token_hash(&t));
        assert_ne!(token_hash(&t), t);
        assert!(!plausible_token("short"));
        assert!(!plausible_token(&"-".repeat(64)));
    }

    #[test]
    fn update_rules() {
        let parse = |json: &str| WebhookUpdate::parse(serde_json::from_str(json).unwrap());
        assert!(parse(r#"{"name": " "}"#).is_err());
        assert!(parse(r#"{"avatar_url": "ftp://x"}"#).is_err());
        let u = parse(r#"{"avatar_url": "", "active": false}"#).unwrap();
        assert_eq!((u.avatar_url, u.active), (Some(None), Some(false)));
        let u = parse(r#"{"avatar_url": null}"#).unwrap();
        assert_eq!(u.avatar_url, None);
    }
}
