//! Validated sign-up input (`POST /auth/register`, rest-auth-account-users.md): username,
//! email, password, display name and the initial E2E keys.

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::auth::password;
use crate::domain::keys::{self, OneTimePrekeyInput, SignedPrekeyInput};
use crate::error::{ApiError, ApiResult};

/// Longest registration invite code accepted (admins' codes are 12 characters).
pub const INVITE_CODE_MAX: usize = 64;

/// Longest display name, in bytes after trimming.
pub const DISPLAY_NAME_MAX: usize = 64;

/// The register body as clients send it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub identity_key: Vec<u8>,
    pub signed_prekey: SignedPrekeyInput,
    #[serde(default)]
    pub one_time_prekeys: Vec<OneTimePrekeyInput>,
    #[serde(default)]
    pub invite_code: Option<String>,
}

/// Everything a registration needs, checked.
#[derive(Debug)]
pub struct Registration {
    pub username: Username,
    pub email: Email,
    pub password: String,
    pub display_name: String,
    pub identity_key: VerifyingKey,
    pub signed_prekey: SignedPrekeyInput,
    pub one_time_prekeys: Vec<OneTimePrekeyInput>,
    /// Trimmed; `None` when absent or blank.
    pub invite_code: Option<String>,
}

impl Registration {
    pub fn parse(req: RegisterRequest) -> ApiResult<Self> {
        let username = Username::parse(&req.username)?;
        let email = Email::parse(&req.email)?;
        password::check_rules(&req.password)?;
        // The mirror stores whatever it gets (and fails on > 64); a blank name falls back to
        // the username, a long one is refused.
        let display_name = match req.display_name.as_deref().map(str::trim) {
            None | Some("") => username.as_str().to_string(),
            Some(name) => display_name(name)?,
        };
        let identity_key = keys::identity_key(&req.identity_key)?;
        keys::verify_signed_prekey(&identity_key, &req.signed_prekey)?;
        let one_time_prekeys = keys::one_time_prekeys(req.one_time_prekeys)?;
        let invite_code = req.invite_code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
        // Codes are 12 characters; a longer one names no invite and is not worth a query.
        if invite_code.as_ref().is_some_and(|c| c.len() > INVITE_CODE_MAX) {
            return Err(ApiError::validation("invite code is invalid, expired or used up"));
        }
        Ok(Self {
            username,
            email,
            password: req.password,
            display_name,
            identity_key,
            signed_prekey: req.signed_prekey,
            one_time_prekeys,
            invite_code,
        })
    }
}

/// A display name: 1–64 bytes after trimming, no control characters.
pub fn display_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > DISPLAY_NAME_MAX {
        return Err(ApiError::validation(format!("display_name must be 1 to {DISPLAY_NAME_MAX} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::validation("display_name must not contain control characters"));
    }
    Ok(name.to_string())
}

/// 3–32 bytes of ASCII letters, digits, `_`, `-`, `.`; starts with a letter or digit; does
/// not end with `.`; no `..`. Case is kept, but uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Longest name the rule allows, in bytes.
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> ApiResult<Self> {
        let name = raw.trim();
        if name.len() < 3 || name.len() > Self::MAX_LEN {
            return Err(ApiError::validation("username must be 3 to 32 characters long"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
            return Err(ApiError::validation("username may only contain letters, digits, '_', '-' and '.'"));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(ApiError::validation("username must start with a letter or a digit"));
        }
        if name.ends_with('.') || name.contains("..") {
            return Err(ApiError::validation("username must not end with '.' or contain '..'"));
        }
        Ok(Self(name.to_string()))
    }

    /// A name as typed to log in or recover (trimmed). One longer than the rule can name no
    /// account: it is refused before any lookup, lockout entry or audit row, so a client
    /// cannot make the server store megabytes per request. Other rules are not applied here
    /// (an unknown name must look like a wrong password, 401).
    pub fn lookup_name(raw: &str) -> ApiResult<&str> {
        let name = raw.trim();
        if name.len() > Self::MAX_LEN {
            return Err(ApiError::validation("username must be 3 to 32 characters long"));
        }
        Ok(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An email address: ≤254 bytes, `local@domain` with a non-empty local part and a dotted
/// domain. Stored in lower case so uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let email = raw.trim();
        let invalid = || ApiError::validation("email address is not valid");
        if email.is_empty() || email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A recovery code as typed: `XXXX-XXXX-XXXX-XXXX` (19 characters), compared in upper case.
pub fn normalize_recovery_code(raw: &str) -> ApiResult<String> {
    let code = raw.trim();
    if code.chars().count() != 19 {
        return Err(ApiError::validation("recovery_code must be 19 characters (XXXX-XXXX-XXXX-XXXX)"));
    }
    Ok(code.to_ascii_uppercase())
}

/// A fresh recovery code, `XXXX-XXXX-XXXX-XXXX` from the unambiguous alphabet (80 bits).
pub fn new_recovery_code() -> String {
    let raw = crate::auth::tokens::random_code(16);
    format!("{}-{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12], &raw[12..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_wire_rules() {
        for ok in ["abc", "Alice_1", "a.b-c", "9lives", &"x".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", &"x".repeat(33), "_alice", ".alice", "alice.", "al..ice", "al ice", "alïce", "a@b"]
        {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(Email::parse(" Bob@Example.COM ").unwrap().as_str(), "bob@example.com");
        for bad in ["", "bob", "@example.com", "bob@example", "bob@.com", "bob@example.", "b ob@example.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn recovery_codes_have_the_wire_format() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        assert_eq!(normalize_recovery_code(&code.to_lowercase()).unwrap(), code);
        assert!(normalize_recovery_code("ABCD-EFGH").is_err());
    }
}

/// What a recovery (or a regenerated code) answers: the new code, shown once.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct RecoveryCodeResponse {
    /// The new recovery code.
    pub recovery_code: String,
}
