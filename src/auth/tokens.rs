//! Access tokens (EdDSA JWTs, 15 minutes) and refresh tokens (32 random bytes as hex,
//! stored only as a SHA-256 hash).

use std::path::Path;
use std::sync::Arc;

use super::create_private_once;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Access-token lifetime (wire: 900 s).
pub const ACCESS_TOKEN_SECS: i64 = 900;
/// Refresh-token lifetime (wire: 30 days).
pub const REFRESH_TOKEN_DAYS: i64 = 30;
/// Seconds an expired access token is still accepted (clock skew).
pub const LEEWAY_SECS: i64 = 60;
/// The JWT audience every client expects.
pub const AUDIENCE: &str = "chatalot";
/// Verified tokens remembered (a few MB at most): enough for every client active within a
/// token's 15 minutes on a large instance; beyond it the least useful are forgotten.
const VERIFIED_TOKENS: usize = 32_768;
/// Longer tokens are verified every time and never remembered (ours are ~400 bytes).
const MAX_REMEMBERED_TOKEN: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub username: String,
    pub is_admin: bool,
    pub is_owner: bool,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub aud: String,
    /// The login (refresh-token family) the token was minted for, so revoking that login can
    /// close the sockets it opened. Added later: older tokens lack it and still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
}

/// The instance's signing key pair, loaded from (or created in) the data dir.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// SHA-256 of a whole token → its claims, for tokens whose signature was checked. A
    /// client presents the same access token on every request and every reconnect for 15
    /// minutes; an Ed25519 verification costs tens of microseconds, a hash and a lookup about
    /// one. Keyed by the whole token: any change to header, payload or signature misses.
    /// Only valid tokens get in, so a client cannot fill it with garbage.
    verified: quick_cache::sync::Cache<[u8; 32], Arc<Claims>>,
}

impl TokenKeys {
    /// Loads `signing_key.pem` from the data dir, generating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("signing_key.pem");
        let signing = if path.exists() {
            let pem = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("parse {}: {e}", path.display()))?
        } else {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let key = SigningKey::from_bytes(&seed);
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| format!("encode key: {e}"))?;
            // Another node sharing the data dir may have created it first: use theirs.
            let pem = create_private_once(&path, pem.as_bytes())?;
            let pem = String::from_utf8(pem).map_err(|_| format!("{} is not PEM", path.display()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("parse {}: {e}", path.display()))?
        };
        Self::from_signing_key(&signing)
    }

    fn from_signing_key(signing: &SigningKey) -> Result<Self, String> {
        // jsonwebtoken takes the PKCS#8 document for signing and the raw 32-byte key for verifying.
        let private_der = signing.to_pkcs8_der().map_err(|e| format!("encode key: {e}"))?;
        let encoding = EncodingKey::from_ed_der(private_der.as_bytes());
        let decoding = DecodingKey::from_ed_der(signing.verifying_key().as_bytes());
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = LEEWAY_SECS as u64;
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        Ok(Self { encoding, decoding, validation, verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS) })
    }

    /// Signs an access token for the user that names no login.
    pub fn issue(
        &self,
        user_id: Uuid,
        username: &str,
        is_admin: bool,
        is_owner: bool,
    ) -> Result<String, String> {
        self.issue_for_login(user_id, username, is_admin, is_owner, None)
    }

    /// Signs an access token for the user's login `login` (its refresh-token family).
    pub fn issue_for_login(
        &self,
        user_id: Uuid,
        username: &str,
        is_admin: bool,
        is_owner: bool,
        login: Option<Uuid>,
    ) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            username: username.to_string(),
            is_admin,
            is_owner,
            iat: now,
            exp: now + ACCESS_TOKEN_SECS,
            jti: Uuid::new_v4(),
            aud: AUDIENCE.to_string(),
            sid: login,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// Checks signature, audience and expiry (60 s leeway).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        self.verify_at(token, chrono::Utc::now().timestamp())
    }

    /// `verify` at Unix time `now` (jsonwebtoken reads the clock itself; `now` decides for
    /// remembered tokens, which expire exactly as jsonwebtoken would expire them).
    fn verify_at(&self, token: &str, now: i64) -> Option<Claims> {
        if token.len() > MAX_REMEMBERED_TOKEN {
            return jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                .ok()
                .map(|d| d.claims);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.get(&key) {
            if claims.exp.saturating_add(LEEWAY_SECS) >= now {
                return Some(Claims::clone(&claims));
            }
            self.verified.remove(&key);
            return None;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?.claims;
        self.verified.insert(key, Arc::new(claims.clone()));
        Some(claims)
    }
}

/// A fresh refresh token: 32 random bytes as 64 lowercase hex characters.
pub fn new_refresh_token() -> String {
    random_hex(32)
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// What is stored for a secret token: its SHA-256, hex. (The token has 256 bits of entropy,
/// so a fast hash is enough; a database leak does not reveal usable tokens.)
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Random code of `len` characters from an unambiguous alphabet (A–Z without I and O, 2–9).
pub fn random_code(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char).collect()
}

/// Random `[A-Za-z0-9]` string (invite codes, webhook tokens).
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    // 62 does not divide 2^32 evenly; the bias of modulo on u32 is below 2^-26, negligible here.
    (0..len).map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_verifies_and_tampered_token_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let id = Uuid::now_v7();
        let token = keys.issue(id, "alice", true, false).unwrap();
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(claims.sub, id);
        assert_eq!(claims.aud, AUDIENCE);
        assert!(claims.is_admin && !claims.is_owner);
        let mut bad = token.clone();
        bad.pop();
        assert!(keys.verify(&bad).is_none());
        // The same key is read back on restart.
        let again = TokenKeys::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&token).is_some());
    }

    #[test]
    fn tokens_name_their_login_and_tokens_without_one_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let login = Uuid::new_v4();
        let token = keys.issue_for_login(Uuid::now_v7(), "alice", false, false, Some(login)).unwrap();
        assert_eq!(keys.verify(&token).expect("valid").sid, Some(login));
        // A token signed before the claim existed (no `sid` at all).
        let old = serde_json::json!({
            "sub": Uuid::now_v7(), "username": "bob", "is_admin": false, "is_owner": false,
            "iat": chrono::Utc::now().timestamp(), "exp": chrono::Utc::now().timestamp() + 60,
            "jti": Uuid::new_v4(), "aud": AUDIENCE,
        });
        let old = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &old, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&old).expect("old token still valid").sid, None);
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_forged_one_is_not_taken_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = keys.issue(Uuid::now_v7(), "alice", false, false).unwrap();
        let first = keys.verify_at(&token, now).expect("valid");
        // Remembered: the same claims again, until the token's expiry plus the leeway.
        let again = keys.verify_at(&token, now + ACCESS_TOKEN_SECS + LEEWAY_SECS).expect("still valid");
        assert_eq!((again.sub, again.jti), (first.sub, first.jti));
        assert!(keys.verify_at(&token, now + ACCESS_TOKEN_SECS + LEEWAY_SECS + 2).is_none(), "expired");
        // A payload swapped under the remembered token's signature (admin: true) is refused.
        let mut parts: Vec<&str> = token.split('.').collect();
        let admin = serde_json::json!({
            "sub": first.sub, "username": "alice", "is_admin": true, "is_owner": false,
            "iat": first.iat, "exp": first.exp, "jti": first.jti, "aud": AUDIENCE,
        });
        use base64::Engine as _;
        let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(admin.to_string());
        parts[1] = &forged_payload;
        let other = keys.issue(Uuid::now_v7(), "bob", false, false).unwrap();
        keys.verify_at(&other, now).expect("valid");
        assert!(keys.verify_at(&parts.join("."), now).is_none(), "forged payload refused");
        // Over-long tokens are checked, never remembered.
        assert!(keys.verify_at(&"x".repeat(MAX_REMEMBERED_TOKEN + 1), now).is_none());
    }

    #[test]
    fn refresh_tokens_are_64_hex_chars() {
        let t = new_refresh_token();
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(hash_token(&t), t);
    }
}
