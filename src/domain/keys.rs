//! E2E key material as the wire sends it (rest-keys-totp-webhooks-polls-misc.md): validated
//! identity keys, signed prekeys (Ed25519 signature checked) and one-time prekeys.

use std::collections::HashSet;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// Most one-time prekeys accepted in one request.
pub const MAX_ONE_TIME_PREKEYS: usize = 200;
/// Largest sender-key distribution, as JSON text. The wire leaves it opaque ("any JSON"); a
/// real one is a few hundred bytes, and each upload is broadcast to every subscriber of the
/// channel, so the cap bounds what one member can make the server fan out.
pub const MAX_SENDER_KEY_DISTRIBUTION_BYTES: usize = 16 * 1024;

/// `{key_id, public_key, signature}` as sent by clients.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SignedPrekeyInput {
    pub key_id: i32,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// `{key_id, public_key}` as sent by clients (and returned in bundles).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct OneTimePrekeyInput {
    pub key_id: i32,
    pub public_key: Vec<u8>,
}

/// A 32-byte Ed25519 identity public key.
pub fn identity_key(bytes: &[u8]) -> ApiResult<VerifyingKey> {
    let raw: [u8; 32] =
        bytes.try_into().map_err(|_| ApiError::validation("identity_key must be exactly 32 bytes"))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| ApiError::validation("identity_key is not a valid Ed25519 public key"))
}

/// Checks sizes and that `signature` is `identity`'s Ed25519 signature over `public_key`.
pub fn verify_signed_prekey(identity: &VerifyingKey, prekey: &SignedPrekeyInput) -> ApiResult<()> {
    if prekey.public_key.len() != 32 {
        return Err(ApiError::validation("signed_prekey.public_key must be exactly 32 bytes"));
    }
    let raw: [u8; 64] = prekey
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::validation("signed_prekey.signature must be exactly 64 bytes"))?;
    identity
        .verify(&prekey.public_key, &Signature::from_bytes(&raw))
        .map_err(|_| ApiError::validation("signed_prekey signature does not verify against the identity key"))
}

/// A sender-key distribution: present, not null, at most
/// [`MAX_SENDER_KEY_DISTRIBUTION_BYTES`] as JSON text. Returns the value and its text.
pub fn sender_key_distribution(raw: Option<serde_json::Value>) -> ApiResult<(serde_json::Value, String)> {
    let value =
        raw.filter(|d| !d.is_null()).ok_or_else(|| ApiError::validation("distribution is required"))?;
    let text = value.to_string();
    if text.len() > MAX_SENDER_KEY_DISTRIBUTION_BYTES {
        return Err(ApiError::validation(format!(
            "distribution must be at most {MAX_SENDER_KEY_DISTRIBUTION_BYTES} bytes as JSON"
        )));
    }
    Ok((value, text))
}

/// Checks a batch of one-time prekeys (≤200, 32-byte keys) and drops repeated key ids
/// (the first one wins), so a batch never collides with itself.
pub fn one_time_prekeys(batch: Vec<OneTimePrekeyInput>) -> ApiResult<Vec<OneTimePrekeyInput>> {
    if batch.len() > MAX_ONE_TIME_PREKEYS {
        return Err(ApiError::validation(format!(
            "at most {MAX_ONE_TIME_PREKEYS} one-time prekeys per request"
        )));
    }
    if batch.iter().any(|k| k.public_key.len() != 32) {
        return Err(ApiError::validation("every one-time prekey public_key must be exactly 32 bytes"));
    }
    let mut seen = HashSet::new();
    Ok(batch.into_iter().filter(|k| seen.insert(k.key_id)).collect())
}
