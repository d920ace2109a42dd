//! Passwords: argon2id hashes (PHC strings) and the wire's password rules.
//!
//! The hashing runs on the bounded pool of `auth::hashing` (`state.hashing`), which hands
//! these functions a reused memory block instead of letting argon2 allocate 19 MiB per call.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::auth::totp::constant_time_eq;
use crate::error::ApiError;

/// Bytes of random salt per hash (argon2's recommendation).
const SALT_LEN: usize = 16;

/// Hashes with argon2id (default parameters) and a random salt, using `blocks` as argon2's
/// memory (at least the default parameters' block count). CPU-heavy: runs on the hash pool.
pub fn hash_with_memory(password: &str, blocks: &mut [Block]) -> Result<String, ApiError> {
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(format!("argon2 hash: {e}"));
    let argon2 = Argon2::default();
    let salt_bytes: [u8; SALT_LEN] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password.as_bytes(), &salt_bytes, &mut out, blocks)
        .map_err(|e| internal(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt_bytes).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(phc.to_string())
}

/// True when `password` matches the stored PHC string, computed in `blocks` (a hash made
/// with more memory than that gets its own). CPU-heavy: runs on the hash pool.
pub fn verify_with_memory(password: &str, stored: &str, blocks: &mut [Block]) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else { return false };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else { return false };
    let Ok(version) = phc.version.map_or(Ok(Version::default()), Version::try_from) else { return false };
    let Ok(params) = Params::try_from(&phc) else { return false };
    let needed = params.block_count();
    let mut own = Vec::new();
    let memory = if needed <= blocks.len() {
        blocks
    } else {
        own.resize(needed, Block::default());
        own.as_mut_slice()
    };
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, memory)
        .is_ok()
        && constant_time_eq(&out, expected.as_bytes())
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

    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn memory() -> Vec<Block> {
        vec![Block::default(); Argon2::default().params().block_count()]
    }

    #[test]
    fn hash_round_trips_and_matches_the_high_level_api() {
        let mut blocks = memory();
        let h = hash_with_memory("Secret-Passw0rd", &mut blocks).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_with_memory("Secret-Passw0rd", &h, &mut blocks));
        assert!(!verify_with_memory("secret-Passw0rd", &h, &mut blocks));
        assert!(!verify_with_memory("x", "not a hash", &mut blocks));
        // Same strings as argon2's own API, both ways (hashes stored before the pool).
        assert!(Argon2::default().verify_password(b"Secret-Passw0rd", h.as_str()).is_ok());
        let old = Argon2::default().hash_password(b"Old-Passw0rd!").unwrap().to_string();
        assert!(verify_with_memory("Old-Passw0rd!", &old, &mut blocks));
        // A hash made with more memory than the buffer still verifies.
        let big = Params::new(Params::DEFAULT_M_COST * 2, 1, 1, None).unwrap();
        let bigger = Argon2::new(Algorithm::Argon2id, Version::V0x13, big)
            .hash_password(b"Big-Passw0rd!")
            .unwrap()
            .to_string();
        assert!(verify_with_memory("Big-Passw0rd!", &bigger, &mut blocks));
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
