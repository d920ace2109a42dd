//! Passwords: argon2id hashes (PHC strings) and the wire's password rules.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::ApiError;

/// Hashes with argon2id and a random salt. CPU-heavy: call from `spawn_blocking`.
pub fn hash(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("argon2 hash: {e}")))
}

/// True when `password` matches the stored PHC string. CPU-heavy: call from `spawn_blocking`.
pub fn verify(password: &str, stored: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), stored).is_ok()
}

/// Runs `hash` off the async runtime.
pub async fn hash_async(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash(&password)).await.map_err(ApiError::internal)?
}

/// Runs `verify` off the async runtime.
pub async fn verify_async(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&password, &stored)).await.unwrap_or(false)
}

/// 8–128 bytes with an uppercase letter, a lowercase letter, a digit and a symbol.
pub fn check_rules(password: &str) -> Result<(), ApiError> {
    if password.len() < 8 || password.len() > 128 {
        return Err(ApiError::validation("password must be 8 to 128 characters long"));
    }
    let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
    if !has(char::is_ascii_uppercase)
        || !has(char::is_ascii_lowercase)
        || !has(char::is_ascii_digit)
        || !has(|c| !c.is_alphanumeric())
    {
        return Err(ApiError::validation(
            "password needs an uppercase letter, a lowercase letter, a digit and a symbol",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips() {
        let h = hash("Secret-Passw0rd").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("Secret-Passw0rd", &h));
        assert!(!verify("secret-Passw0rd", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn rules_need_every_class() {
        assert!(check_rules("Abcdef1!").is_ok());
        assert!(check_rules("abcdef1!").is_err());
        assert!(check_rules("ABCDEF1!").is_err());
        assert!(check_rules("Abcdefg!").is_err());
        assert!(check_rules("Abcdefg1").is_err());
        assert!(check_rules("Ab1!").is_err());
    }
}
