//! Fuzzes email and phone normalisation and the name key.
#![no_main]

use crm_responder::crm::identity::{Email, Phone, name_key};
use libfuzzer_sys::fuzz_target;
use phonenumber::country::Id;

/// Regions with different national formats (trunk prefixes, lengths).
const REGIONS: [Id; 5] = [Id::US, Id::DE, Id::GB, Id::RU, Id::IT];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(email) = Email::parse(text) {
        assert_eq!(email.raw, email.raw.trim(), "raw email is trimmed");
        assert_eq!(email.normalized, email.raw.to_lowercase());
        assert!(email.normalized.contains('@'));
        assert!(!email.local().is_empty() && !email.domain().is_empty());
        // A stored key, looked up again (search API, replay), is the same key.
        let again = Email::parse(&email.normalized).expect("a normalised email parses");
        assert_eq!(again.normalized, email.normalized);
    }
    for region in REGIONS {
        if let Some(phone) = Phone::parse(text, region) {
            assert_eq!(phone.raw, phone.raw.trim(), "raw phone is trimmed");
            assert!(
                phone.digits().chars().all(|c| c.is_ascii_digit()),
                "normalised phone {:?} is not + and digits",
                phone.normalized
            );
            let again = Phone::parse(&phone.normalized, region).expect("a normalised phone parses");
            assert_eq!(
                again.normalized, phone.normalized,
                "from {text:?} in {region:?}"
            );
        }
    }
    let key = name_key(text);
    assert_eq!(key, key.trim());
    assert!(!key.contains("  "));
    assert_eq!(name_key(&key), key, "name_key is idempotent");
});
