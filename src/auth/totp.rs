//! TOTP second factor: the at-rest key for secrets, code checks with replay protection, and
//! backup codes.
//!
//! Parameters (wire): SHA-1, 6 digits, 30 s step, ±1 step, issuer `Chatalot`, account =
//! username. Every time step is accepted once per user (`user_totp.last_used_step`), for
//! login, disable and regeneration alike (RFC 6238 §5.2).
//!
//! Secrets are stored encrypted with ChaCha20-Poly1305 under a key kept in the data dir
//! (`totp.key`, 0600, created on first start), so a database dump alone does not reveal them.
//! The same key also peppers the backup-code hashes.

use std::path::Path;

use super::create_private_once;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use palaver_entity::{totp_backup_codes, user_totp};
use rand::RngCore;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Totp};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Issuer shown in authenticator apps (the web client's name, as the wire says).
pub const ISSUER: &str = "Chatalot";
/// Seconds per TOTP step.
pub const STEP_SECS: u64 = 30;
/// Number of backup codes issued at once.
pub const BACKUP_CODE_COUNT: usize = 8;
/// Prefix of stored (encrypted) secrets, so the format can change later.
const SECRET_FORMAT: &str = "v1:";
/// Associated data bound into every ciphertext.
const AAD: &[u8] = b"palaver totp secret v1";

/// The instance key that protects TOTP secrets at rest.
pub struct TotpKeys {
    cipher: ChaCha20Poly1305,
    /// Pepper for backup-code hashes, derived from the same key.
    pepper: [u8; 32],
}

impl TotpKeys {
    /// Loads `totp.key` (32 raw bytes) from the data dir, creating it (0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("totp.key");
        let key: [u8; 32] = if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            bytes.try_into().map_err(|_| format!("{} must hold exactly 32 bytes", path.display()))?
        } else {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            // Another node sharing the data dir may have created it first: use theirs.
            let bytes = create_private_once(&path, &key)?;
            bytes.try_into().map_err(|_| format!("{} must hold exactly 32 bytes", path.display()))?
        };
        Ok(Self::from_key(key))
    }

    fn from_key(key: [u8; 32]) -> Self {
        let pepper: [u8; 32] =
            Sha256::new_with_prefix(b"palaver backup-code pepper\0").chain_update(key).finalize().into();
        Self { cipher: ChaCha20Poly1305::new(&Key::from(key)), pepper }
    }

    /// `v1:` + base64(nonce ‖ ciphertext) of the raw secret bytes, bound to the user.
    pub fn encrypt(&self, user_id: Uuid, secret: &[u8]) -> ApiResult<String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad_for(user_id);
        let ciphertext = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: secret, aad: &aad })
            .map_err(|_| ApiError::internal("totp secret encryption failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        Ok(format!("{SECRET_FORMAT}{}", BASE64.encode(blob)))
    }

    /// The raw secret from its stored form; a wrong key or a tampered row is an internal error.
    pub fn decrypt(&self, user_id: Uuid, stored: &str) -> ApiResult<Vec<u8>> {
        let blob = stored
            .strip_prefix(SECRET_FORMAT)
            .and_then(|b| BASE64.decode(b).ok())
            .filter(|b| b.len() > 12)
            .ok_or_else(|| ApiError::internal("stored totp secret is malformed"))?;
        let (nonce, ciphertext) = blob.split_at(12);
        let nonce: [u8; 12] =
            nonce.try_into().map_err(|_| ApiError::internal("stored totp secret is malformed"))?;
        let aad = aad_for(user_id);
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| ApiError::internal("stored totp secret does not decrypt (wrong totp.key?)"))
    }

    /// What is stored for a backup code: keyed SHA-256 of its normalized form, hex.
    pub fn hash_backup_code(&self, code: &str) -> String {
        let digest =
            Sha256::new_with_prefix(self.pepper).chain_update(normalize_backup_code(code)).finalize();
        hex::encode(digest)
    }
}

fn aad_for(user_id: Uuid) -> Vec<u8> {
    let mut aad = AAD.to_vec();
    aad.extend_from_slice(user_id.as_bytes());
    aad
}

/// 20 random bytes (160 bits, the RFC's recommendation).
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// The generator for a user's secret with the wire's parameters.
pub fn totp_for(secret: Vec<u8>, username: &str) -> ApiResult<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(STEP_SECS)
        .with_skew(1)
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(username)
        .build()
        .map_err(|e| ApiError::internal(format!("totp: {e}")))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The step (within ±1 of `now`) whose code is `code`, skipping steps at or before
/// `last_used` (already spent). `None` when nothing matches.
pub fn matching_step(totp: &Totp, code: &str, now: u64, last_used: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let origin = now / STEP_SECS;
    (origin.saturating_sub(1)..=origin + 1)
        .filter(|step| last_used.is_none_or(|last| (*step as i64) > last))
        .find(|step| {
            constant_time_eq(totp.generate(step * STEP_SECS).to_string().as_bytes(), code.as_bytes())
        })
        .map(|step| step as i64)
}

/// Byte equality in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when `code` looks like a TOTP code (6 digits) rather than a backup code.
pub fn looks_like_totp(code: &str) -> bool {
    let code = code.trim();
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a current TOTP code for `row` and spends its step atomically: a code is accepted
/// once, also when two requests race with it. `row` must be the user's stored row.
pub async fn accept_code(
    db: &impl ConnectionTrait,
    keys: &TotpKeys,
    row: &user_totp::Model,
    username: &str,
    code: &str,
) -> ApiResult<bool> {
    let secret = keys.decrypt(row.user_id, &row.secret)?;
    let totp = totp_for(secret, username)?;
    let Some(step) = matching_step(&totp, code, unix_now(), row.last_used_step) else {
        return Ok(false);
    };
    let spent = user_totp::Entity::update_many()
        .col_expr(user_totp::Column::LastUsedStep, Expr::value(step))
        .filter(user_totp::Column::UserId.eq(row.user_id))
        .filter(user_totp::Column::Secret.eq(row.secret.clone()))
        .filter(
            Condition::any()
                .add(user_totp::Column::LastUsedStep.is_null())
                .add(user_totp::Column::LastUsedStep.lt(step)),
        )
        .exec(db)
        .await?;
    Ok(spent.rows_affected == 1)
}

/// Consumes an unused backup code of the user (single use, race-free).
pub async fn accept_backup_code(
    db: &impl ConnectionTrait,
    keys: &TotpKeys,
    user_id: Uuid,
    code: &str,
) -> ApiResult<bool> {
    let normalized = normalize_backup_code(code);
    if normalized.len() != 9 {
        return Ok(false);
    }
    let used = totp_backup_codes::Entity::update_many()
        .col_expr(totp_backup_codes::Column::UsedAt, Expr::value(palaver_entity::now()))
        .filter(totp_backup_codes::Column::UserId.eq(user_id))
        .filter(totp_backup_codes::Column::CodeHash.eq(keys.hash_backup_code(&normalized)))
        .filter(totp_backup_codes::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(used.rows_affected >= 1)
}

/// `XXXX-XXXX` in upper case; accepts lower case, spaces and a missing dash.
pub fn normalize_backup_code(code: &str) -> String {
    let compact: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    if compact.len() == 8 { format!("{}-{}", &compact[..4], &compact[4..]) } else { compact }
}

/// Replaces the user's backup codes with `BACKUP_CODE_COUNT` fresh ones; returns them in clear.
pub async fn replace_backup_codes(
    db: &impl ConnectionTrait,
    keys: &TotpKeys,
    user_id: Uuid,
) -> ApiResult<Vec<String>> {
    totp_backup_codes::Entity::delete_many()
        .filter(totp_backup_codes::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    let now = palaver_entity::now();
    let codes: Vec<String> = (0..BACKUP_CODE_COUNT)
        .map(|_| {
            let raw = crate::auth::tokens::random_code(8);
            format!("{}-{}", &raw[..4], &raw[4..])
        })
        .collect();
    let rows = codes.iter().map(|code| totp_backup_codes::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        code_hash: Set(keys.hash_backup_code(code)),
        used_at: Set(None),
        created_at: Set(now),
    });
    totp_backup_codes::Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_are_bound_to_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TotpKeys::load_or_create(dir.path()).unwrap();
        let user = Uuid::now_v7();
        let secret = new_secret();
        let stored = keys.encrypt(user, &secret).unwrap();
        assert!(stored.starts_with("v1:"));
        assert_eq!(keys.decrypt(user, &stored).unwrap(), secret);
        assert!(keys.decrypt(Uuid::now_v7(), &stored).is_err());
        // The key is read back on restart, with owner-only permissions.
        let again = TotpKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(again.decrypt(user, &stored).unwrap(), secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("totp.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn codes_match_within_one_step_and_spent_steps_are_refused() {
        let totp = totp_for(new_secret(), "alice").unwrap();
        let now = 1_700_000_000u64;
        let step = (now / STEP_SECS) as i64;
        let current = totp.generate(now).to_string();
        let previous = totp.generate(now - STEP_SECS).to_string();
        let far = totp.generate(now - 3 * STEP_SECS).to_string();
        assert_eq!(matching_step(&totp, &current, now, None), Some(step));
        assert_eq!(matching_step(&totp, &previous, now, None), Some(step - 1));
        assert_eq!(matching_step(&totp, &current, now, Some(step)), None);
        assert_eq!(matching_step(&totp, &current, now, Some(step - 1)), Some(step));
        if far != current && far != previous {
            assert_eq!(matching_step(&totp, &far, now, None), None);
        }
        assert_eq!(matching_step(&totp, "12345", now, None), None);
        assert_eq!(matching_step(&totp, "+12345", now, None), None);
    }

    #[test]
    fn backup_codes_normalize() {
        assert_eq!(normalize_backup_code("abcd-efgh"), "ABCD-EFGH");
        assert_eq!(normalize_backup_code(" ABCDEFGH "), "ABCD-EFGH");
        let keys = TotpKeys::from_key([7; 32]);
        assert_eq!(keys.hash_backup_code("abcd efgh"), keys.hash_backup_code("ABCD-EFGH"));
        assert_ne!(
            TotpKeys::from_key([8; 32]).hash_backup_code("ABCD-EFGH"),
            keys.hash_backup_code("ABCD-EFGH")
        );
    }
}
