//! The instance's VAPID key pair (RFC 8292): a P-256 key generated on first start and kept in
//! the data dir as `vapid_key.pem` (PKCS#8), like the token signing key. Push services tie a
//! subscription to the public key the browser was given, so the key must survive restarts.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::SecretKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand::RngCore;
use serde::Serialize;

use crate::auth::write_private;

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "vapid_key.pem";

/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const TOKEN_SECS: i64 = 12 * 60 * 60;

pub struct VapidKey {
    signing: EncodingKey,
    /// The uncompressed public point, base64url: what `GET /push/vapid-key` serves, what
    /// browsers pass to `pushManager.subscribe` and what the `k=` parameter carries.
    public_b64: String,
}

#[derive(Serialize)]
struct VapidClaims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

impl VapidKey {
    /// Loads `vapid_key.pem` from the data dir, generating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            create(data_dir, &path)?;
        }
        let pem = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let secret = SecretKey::from_pkcs8_pem(&pem).map_err(|e| format!("parse {}: {e}", path.display()))?;
        // jsonwebtoken takes the PKCS#8 document (DER) for ES256 signing.
        let der = secret.to_pkcs8_der().map_err(|e| format!("encode VAPID key: {e}"))?;
        let signing = EncodingKey::from_ec_der(der.as_bytes());
        let public = secret.public_key().to_encoded_point(false);
        Ok(Self { signing, public_b64: URL_SAFE_NO_PAD.encode(public.as_bytes()) })
    }

    pub fn public_key_b64(&self) -> &str {
        &self.public_b64
    }

    /// The `Authorization` header value for a push to a service at `audience` (the endpoint's
    /// origin): `vapid t=<ES256 JWT>, k=<public key>`.
    pub fn authorization(&self, audience: &str, contact: &str) -> Result<String, String> {
        let claims =
            VapidClaims { aud: audience, exp: chrono::Utc::now().timestamp() + TOKEN_SECS, sub: contact };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing)
            .map_err(|e| format!("sign VAPID token: {e}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_b64))
    }
}

/// Writes a fresh key to a private temporary file, then links it into place only if no key
/// exists yet: two processes starting on one data dir end up with the same key, and a crash
/// never leaves a half-written key file behind.
fn create(data_dir: &Path, path: &Path) -> Result<(), String> {
    let secret = random_secret();
    let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| format!("encode VAPID key: {e}"))?;
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let temp = data_dir.join(format!(".{KEY_FILE}.{}.tmp", hex::encode(suffix)));
    write_private(&temp, pem.as_bytes())?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(()),
        // Another process won the race: its key is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("create {}: {e}", path.display())),
    }
}

fn random_secret() -> SecretKey {
    loop {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        // Fails only for zero or a value at or above the group order (about 2^-128 odds).
        if let Ok(secret) = SecretKey::from_slice(&bytes) {
            return secret;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = VapidKey::load_or_create(dir.path()).unwrap();
        let again = VapidKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_key_b64(), again.public_key_b64());
        let point = URL_SAFE_NO_PAD.decode(first.public_key_b64()).unwrap();
        assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
        // Only the key file is left (no temporary files).
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn a_key_written_meanwhile_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        create(dir.path(), &path).unwrap();
        let before = std::fs::read(&path).unwrap();
        create(dir.path(), &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before, "the second start does not replace the key");
    }
}
