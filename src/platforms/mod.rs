//! One module per chat platform: its wire types and their translation into
//! the internal [`crate::event::Event`]. Nothing platform-specific goes
//! further than this folder.

pub mod jivo;
pub mod lenient;
pub mod livechat;
pub mod rocketchat;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a body: the idempotency key of platforms that send no
/// delivery id and resend the same bytes.
pub fn body_hash(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut out = String::with_capacity(2 * digest.len());
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

use crate::event::{Event, Platform};

/// Translates a stored or incoming body of `platform` into an event and its
/// idempotency key (without the platform prefix). `Err` is the reason the
/// body is refused (a 400, or a delivery kept as failed). Authentication is
/// the HTTP layer's business and is not repeated here, so that stored
/// deliveries can be replayed.
pub fn translate(platform: Platform, body: &[u8]) -> Result<(Event, String), String> {
    match platform {
        Platform::Jivo => jivo::parse(body).map(|event| (event, body_hash(body))),
        Platform::RocketChat => rocketchat::parse(body),
        Platform::LiveChat => livechat::parse(body),
    }
}

/// The event name of a body that may not parse, for the inbox.
pub fn event_name(platform: Platform, body: &[u8]) -> String {
    match platform {
        Platform::Jivo => jivo::event_name(body),
        Platform::RocketChat => rocketchat::event_name(body),
        Platform::LiveChat => livechat::event_name(body),
    }
}
