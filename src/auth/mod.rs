//! Who is calling: bearer tokens → `Caller`, plus passwords, tokens, lockouts and TOTP.

pub mod hashing;
pub mod lockout;
pub mod password;
pub mod sessions;
pub mod signup;
pub mod tokens;
pub mod totp;

use uuid::Uuid;

use palaver_actors::Hub;

use self::tokens::TokenKeys;
use crate::error::ApiError;

/// The authenticated user of a request, from a verified access token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    pub username: String,
    /// Instance admin flag from the token (lags role changes until refresh, as the wire says).
    pub is_admin: bool,
    /// Instance owner flag from the token.
    pub is_owner: bool,
    /// The login (refresh-token family) the token was minted for; `None` for older tokens.
    pub login: Option<Uuid>,
}

impl Caller {
    /// Instance admin or owner.
    pub fn is_instance_staff(&self) -> bool {
        self.is_admin || self.is_owner
    }
}

/// 403 unless the token says instance admin or owner (every `/admin/*` route).
pub fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_instance_staff() { Ok(()) } else { Err(ApiError::Forbidden) }
}

/// 403 unless the token says instance owner.
pub fn owner_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_owner { Ok(()) } else { Err(ApiError::Forbidden) }
}

/// Verifies an `Authorization` header value (`Bearer <jwt>`).
pub fn caller_from_header(keys: &TokenKeys, hub: &Hub, header: Option<&str>) -> Result<Caller, ApiError> {
    let token = header.and_then(|h| h.strip_prefix("Bearer ")).ok_or(ApiError::Unauthorized)?;
    caller_from_token(keys, hub, token.trim())
}

/// Verifies a raw access token (also used by the WebSocket handshake).
pub fn caller_from_token(keys: &TokenKeys, hub: &Hub, token: &str) -> Result<Caller, ApiError> {
    let claims = keys.verify(token).ok_or(ApiError::Unauthorized)?;
    // Suspended and deleted users are refused at once, not when their token expires.
    if hub.users.is_barred(claims.sub) {
        return Err(ApiError::Unauthorized);
    }
    Ok(Caller {
        user_id: claims.sub,
        username: claims.username,
        is_admin: claims.is_admin,
        is_owner: claims.is_owner,
        login: claims.sid,
    })
}

/// Creates a secret file (0600) unless it exists, and answers what the file holds: ours, or
/// the bytes of whoever created it first. Written to a temporary file and linked into place,
/// so nodes starting together on one shared data dir never read a half-written key and all
/// end up with the same one.
pub(crate) fn create_private_once(path: &std::path::Path, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let temp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    write_private(&temp, bytes)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(bytes.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
        }
        Err(e) => Err(format!("create {}: {e}", path.display())),
    }
}

/// Writes a new secret file readable only by this user (0600 on Unix); never overwrites.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        file.write_all(bytes).map_err(|e| format!("write {}: {e}", path.display()))
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
    }
}
