//! Password hashes of `[[sales.users]]`: argon2id in PHC strings. Below
//! both the configuration (which checks them) and the HTTP layer (which
//! verifies against them).

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;

/// Parses a stored PHC hash.
pub fn parse_hash(hash: &str) -> Result<PasswordHash, String> {
    PasswordHash::new(hash).map_err(|e| e.to_string())
}

/// Hashes a password for `[[sales.users]]` (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}
