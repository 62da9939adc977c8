//! What every platform parser must hold for any body: no panic, and a body
//! it accepts translates the same way twice, into a named event.

use crm_responder::event::Platform;
use crm_responder::platforms;

/// Checks the parser of `platform` on one body.
pub fn check(platform: Platform, body: &[u8]) {
    let first = platforms::translate(platform, body);
    // The inbox names refused bodies too; it must not panic either.
    let _ = platforms::event_name(platform, body);
    if let Ok((event, key)) = &first {
        assert!(
            !event.name.trim().is_empty(),
            "accepted event without a name"
        );
        assert!(!key.is_empty(), "accepted event without an idempotency key");
        let (again, again_key) =
            platforms::translate(platform, body).expect("same body, same verdict");
        assert_eq!(&again_key, key, "idempotency key is not stable");
        assert_eq!(again.name, event.name);
    }
}
