//! One module per chat platform: its wire types and their translation into
//! the internal [`crate::event::Event`]. Nothing platform-specific goes
//! further than this folder.

pub mod jivo;
pub mod lenient;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a body: the idempotency key of platforms that send no
/// delivery id and resend the same bytes.
pub fn body_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
