//! Identifiers parsed at the edge: an [`Email`] or a [`Phone`] always holds
//! both the value as received and the normalised key that identity uses.

use phonenumber::country;

/// Longest email accepted as an identifier (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Longest phone string accepted as an identifier.
const MAX_PHONE_LEN: usize = 64;
/// A phone with fewer digits than this identifies nobody.
const MIN_PHONE_DIGITS: usize = 5;
/// Numbers that cannot be parsed keep at most this many digits.
const MAX_PHONE_DIGITS: usize = 20;
/// Compiled number patterns the phone parser keeps. The `phonenumber`
/// crate keeps 100 in an LRU cache, fewer than the patterns of about twenty
/// countries use: past that, every phone recompiled patterns (measured: 0.3
/// to 0.6 ms a phone instead of 3 to 6 µs, `cargo bench --bench phones`).
/// Numbers of every region use about 600 (some 30 MB once all are used).
pub const PHONE_PATTERNS: usize = 1024;

/// Raises the parser's pattern cache to [`PHONE_PATTERNS`], once.
fn phone_patterns() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(mut cache) = phonenumber::metadata::DATABASE.cache().lock() {
            cache.set_capacity(PHONE_PATTERNS);
        }
    });
}

/// Longest name key, in characters. Duplicate scoring is quadratic in the
/// key's length, so a hostile 900 KB name must not reach it whole; no real
/// name is this long.
pub const MAX_NAME_KEY_CHARS: usize = 200;

/// An email address: matched after trimming and lowercasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Trimmed and lowercased: the identity key.
    pub normalized: String,
    /// Trimmed, as the visitor wrote it.
    pub raw: String,
}

impl Email {
    /// Parses an email; `None` for values that cannot identify anyone
    /// (empty, no `@`, too long, control characters).
    pub fn parse(raw: &str) -> Option<Email> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > MAX_EMAIL_LEN || raw.chars().any(char::is_control) {
            return None;
        }
        let (local, domain) = raw.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() || raw.chars().any(char::is_whitespace) {
            return None;
        }
        // Lowercasing can lengthen a string (`İ` takes 2 bytes, `i̇` 3): the
        // key itself must fit, or it would not parse as an email again.
        let normalized = raw.to_lowercase();
        if normalized.len() > MAX_EMAIL_LEN {
            return None;
        }
        Some(Email {
            normalized,
            raw: raw.to_owned(),
        })
    }

    /// The part before the last `@`.
    pub fn local(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map(|(l, _)| l)
            .unwrap_or("")
    }

    /// The part after the last `@`.
    pub fn domain(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("")
    }
}

/// A phone number: matched in E.164 form, or on its digits when it cannot be
/// parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// E.164 (`+14084987855`), or the bare digits of an unparseable number.
    pub normalized: String,
    /// Trimmed, as the visitor wrote it.
    pub raw: String,
}

impl Phone {
    /// Parses a phone number, reading numbers without a country code as
    /// numbers of `region`. `None` for values with too few digits.
    pub fn parse(raw: &str, region: country::Id) -> Option<Phone> {
        phone_patterns();
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > MAX_PHONE_LEN || raw.chars().any(char::is_control) {
            return None;
        }
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < MIN_PHONE_DIGITS {
            return None;
        }
        let digits: String = digits.chars().take(MAX_PHONE_DIGITS).collect();
        // The digits get a second reading: the key is shown (API, pages) and
        // searched for, so the key itself must parse to the same key.
        let normalized = e164(raw, region)
            .or_else(|| e164(&digits, region))
            .unwrap_or(digits);
        Some(Phone {
            normalized,
            raw: raw.to_owned(),
        })
    }

    /// The digits of the normalised form, without the `+`.
    pub fn digits(&self) -> &str {
        self.normalized.trim_start_matches('+')
    }
}

/// `text` in E.164, when it parses as a number with enough digits and that
/// E.164 form parses to itself.
fn e164(text: &str, region: country::Id) -> Option<String> {
    let key = e164_once(text, region)?;
    // Written as its own E.164 form, the number was read as the key will
    // be: no second reading (half the cost of a phone, most of them
    // international).
    if written_as(text, &key) {
        return Some(key);
    }
    settle(key, region)
}

/// Whether `text` is `key` (`+` and digits) with at most spaces, hyphens,
/// dots and parentheses between its digits. The parser reads such a text
/// exactly as the key: it drops that punctuation before anything else.
fn written_as(text: &str, key: &str) -> bool {
    let (Some(text), Some(digits)) = (text.trim().strip_prefix('+'), key.strip_prefix('+')) else {
        return false;
    };
    text.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'.' | b'(' | b')'))
        && text.bytes().filter(u8::is_ascii_digit).eq(digits.bytes())
}

/// The form of `key` that reads as itself, when there is one.
fn settle(mut key: String, region: country::Id) -> Option<String> {
    // The E.164 form of an odd national number (leading zeros: "0002 102" in
    // DE gives +4902102) may read differently when parsed again (+492102):
    // settle on the form that does not change.
    for _ in 0..3 {
        let again = e164_once(&key, region)?;
        if again == key {
            return Some(key);
        }
        key = again;
    }
    None
}

/// One reading of `text` as a number, in E.164.
fn e164_once(text: &str, region: country::Id) -> Option<String> {
    // A number written with its country code is read by its own country's
    // rules. Given a default region, the parser strips that region's
    // national prefix from any number: with US (prefix 1) the German mobile
    // +49 151 23456789 became +495123456789, another number.
    let region = (!text.trim_start().starts_with('+')).then_some(region);
    let number = phonenumber::parse(region, text).ok()?;
    if number.national().value() == 0 {
        return None;
    }
    let formatted = e164_of(&number)?;
    (formatted.chars().filter(char::is_ascii_digit).count() >= MIN_PHONE_DIGITS)
        .then_some(formatted)
}

/// The E.164 form of a parsed number: `+`, its country code, its national
/// number (with the leading zeros it keeps). This is what the parser
/// crate's formatter writes in E.164 mode, without the work it does first
/// for the other modes (it looks for the country's display format,
/// matching the number against each of its patterns: a third of the cost
/// of reading a phone). `None` for a country code the metadata does not
/// know, where that formatter fails.
fn e164_of(number: &phonenumber::PhoneNumber) -> Option<String> {
    let code = number.code().value();
    phonenumber::metadata::DATABASE
        .by_code(&code)
        .is_some_and(|regions| !regions.is_empty())
        .then(|| format!("+{code}{}", number.national()))
}

/// Normalises a name for comparison: lowercase, single spaces, no
/// punctuation, at most [`MAX_NAME_KEY_CHARS`] characters.
pub fn name_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(4 * MAX_NAME_KEY_CHARS));
    let mut chars = 0;
    // Lowercase before splitting: lowercasing can yield characters that are
    // not alphanumeric (`İ` gives `i` and a combining dot), and the key must
    // be a key of itself.
    let lower = name.chars().flat_map(char::to_lowercase);
    let mut pending_space = false;
    for c in lower {
        if !c.is_alphanumeric() {
            pending_space = !out.is_empty();
            continue;
        }
        if chars + usize::from(pending_space) >= MAX_NAME_KEY_CHARS {
            break;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: country::Id = country::Id::US;

    #[test]
    fn emails_match_after_trim_and_lowercase() {
        let a = Email::parse("  Email@Example.COM ").unwrap();
        assert_eq!(a.normalized, "email@example.com");
        assert_eq!(a.raw, "Email@Example.COM");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.local(), "email");
    }

    #[test]
    fn junk_is_not_an_email() {
        for bad in [
            "",
            "  ",
            "no-at-sign",
            "@example.com",
            "a@",
            "a b@c.d",
            "a\0@b.c",
        ] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Email::parse(&format!("{}@x.io", "a".repeat(10_000))), None);
    }

    #[test]
    fn us_formats_are_one_number() {
        for raw in [
            "+1 408-498-7855",
            "1 (408) 498 7855",
            "(408) 498-7855",
            "408.498.7855",
            "+14084987855",
            "tel:+1-408-498-7855",
        ] {
            assert_eq!(
                Phone::parse(raw, US).unwrap().normalized,
                "+14084987855",
                "{raw}"
            );
        }
    }

    #[test]
    fn region_applies_only_without_country_code() {
        let de = Phone::parse("030 1234567", country::Id::DE).unwrap();
        assert_eq!(de.normalized, "+49301234567");
        let intl = Phone::parse("+49 30 1234567", US).unwrap();
        assert_eq!(intl.normalized, "+49301234567");
    }

    #[test]
    fn unparseable_numbers_match_on_digits() {
        let a = Phone::parse("ext 12-34-56-78-90-12-34-56", US).unwrap();
        let b = Phone::parse("12 34 56 78 90 12 34 56", US).unwrap();
        assert_eq!(a.normalized, b.normalized);
    }

    #[test]
    fn a_normalised_key_parses_to_itself() {
        // The invariant the `identity` fuzz target checks; these broke it.
        for region in [
            US,
            country::Id::DE,
            country::Id::IT,
            country::Id::GB,
            country::Id::RU,
        ] {
            for raw in [
                "+0 12345",
                "1 ext 2345",
                "+1 000 000 0000",
                "+44 12345",
                "0 123 45",
                // Found by the `identity` fuzz target: an E.164 form that
                // parsed to another one in DE and GB.
                "0002 102",
                // Found by it too, when a second reading was tried only for
                // numbers with leading zeros: in RU, +7 848 87 87 reads
                // again as +7 488 787 (8 is RU's national prefix).
                "(V8)y8848tl`8+7:87t",
            ] {
                let phone = Phone::parse(raw, region).unwrap();
                let again = Phone::parse(&phone.normalized, region).unwrap();
                assert_eq!(again.normalized, phone.normalized, "{raw} in {region:?}");
            }
        }
        // Lowercasing lengthens `İ`: an email that fits raw may not fit lowercased.
        let email = format!("{}@x.io", "İ".repeat(120));
        assert_eq!(Email::parse(&email), None);
        let fits = format!("{}@x.io", "İ".repeat(80));
        let parsed = Email::parse(&fits).unwrap();
        assert_eq!(
            Email::parse(&parsed.normalized).unwrap().normalized,
            parsed.normalized
        );
    }

    #[test]
    fn a_number_with_its_country_code_keeps_its_national_digits_in_any_region() {
        for region in [US, country::Id::DE, country::Id::GB, country::Id::RU] {
            for (raw, key) in [
                // German mobiles begin with 1, the US national prefix.
                ("+49 151 23456789", "+4915123456789"),
                ("+4915123456789", "+4915123456789"),
                ("+49 170 1234567", "+491701234567"),
                // Rome numbers keep their leading 0 after the country code.
                ("+39 06 6982 1234", "+390669821234"),
                ("+1 (408) 498-7855", "+14084987855"),
            ] {
                let phone = Phone::parse(raw, region).unwrap();
                assert_eq!(phone.normalized, key, "{raw} in {region:?}");
            }
        }
        // Written nationally, a number is read in the default region.
        assert_eq!(
            Phone::parse("0151 23456789", country::Id::DE)
                .unwrap()
                .normalized,
            "+4915123456789"
        );
    }

    #[test]
    fn a_number_written_as_its_key_is_read_once_with_the_same_result() {
        let regions = [
            US,
            country::Id::DE,
            country::Id::GB,
            country::Id::RU,
            country::Id::IT,
        ];
        let written = [
            "+1 408-498-7855",
            "+1 (408) 498.7855",
            "+14084987855",
            "+49 151 23456789",
            "+49 (0) 151 23456789",
            "+39 06 6982 1234",
            "+7 848 87 87",
            "+7 8 495 123-45-67",
            "+44 20 7946 0958",
            "+44 020 7946 0958",
            "+0 12345",
            "+1 000 000 0000",
            "+44 12345",
            "+380 44 123 4567",
            "+86 10 1234 5678",
            "+353 1 234 5678",
            "+1 242 357 1234",
        ];
        for region in regions {
            for raw in written {
                let once = e164_once(raw, region);
                let slow = once.clone().and_then(|key| settle(key, region));
                assert_eq!(e164(raw, region), slow, "{raw} in {region:?}");
                if let Some(key) = &once
                    && written_as(raw, key)
                {
                    // The shortcut was taken: the key reads as itself.
                    assert_eq!(e164_once(key, region).as_ref(), Some(key), "{raw}");
                }
            }
        }
        assert!(written_as(" +1 (408) 498-7855 ", "+14084987855"));
        assert!(!written_as("(408) 498-7855", "+14084987855"));
        assert!(!written_as("+1 408 498 7855 ext 1", "+14084987855"));
        assert!(!written_as("+1+4084987855", "+14084987855"));
        assert!(!written_as("+7 848 87 87", "+7488787"));
    }

    #[test]
    fn international_numbers_in_any_spacing_read_as_keys_that_read_as_themselves() {
        // Generated numbers: `+`, 1-3 digit country code, 4-12 digits (with
        // runs of 0s and 8s, national prefixes of many countries), spacing
        // and punctuation between any two.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let digits = b"0123456789008";
        let gaps = [" ", "", "", "-", ".", "(", ")", "  "];
        for _ in 0..2_000 {
            let mut raw = String::from("+");
            for i in 0..(2 + next(14)) {
                raw.push(char::from(digits[next(digits.len() as u64) as usize]));
                if i > 0 && next(3) == 0 {
                    raw.push_str(gaps[next(gaps.len() as u64) as usize]);
                }
            }
            for region in [US, country::Id::DE, country::Id::RU, country::Id::IT] {
                let Some(phone) = Phone::parse(&raw, region) else {
                    continue;
                };
                let again = Phone::parse(&phone.normalized, region).unwrap();
                assert_eq!(again.normalized, phone.normalized, "{raw:?} in {region:?}");
            }
        }
    }

    /// Our E.164 form is the parser crate's own, for numbers of every
    /// region written every usual way (leading zeros kept included).
    #[test]
    fn e164_forms_are_the_formatters() {
        let mut compared = 0;
        for region in phonenumber::metadata::DATABASE.iter() {
            let descriptors = region.descriptors();
            let id: Option<country::Id> = region.id().parse().ok();
            for descriptor in [
                descriptors.fixed_line(),
                descriptors.mobile(),
                descriptors.toll_free(),
            ]
            .into_iter()
            .flatten()
            {
                let Some(example) = descriptor.example() else {
                    continue;
                };
                let prefix = region.national_prefix().unwrap_or("");
                for (raw, within) in [
                    (format!("+{} {example}", region.country_code()), None),
                    (format!("00{}{example}", region.country_code()), id),
                    (format!("{prefix}{example}"), id),
                    (format!("0{example}"), id),
                    (example.to_owned(), id),
                ] {
                    let Ok(number) = phonenumber::parse(within, &raw) else {
                        continue;
                    };
                    let Ok(formatter) = std::panic::catch_unwind(|| {
                        number.format().mode(phonenumber::Mode::E164).to_string()
                    }) else {
                        assert_eq!(e164_of(&number), None, "{raw:?}");
                        continue;
                    };
                    assert_eq!(e164_of(&number), Some(formatter), "{raw:?} in {within:?}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 1000, "{compared} numbers compared");
    }

    #[test]
    fn every_regions_example_numbers_read_as_keys_that_read_as_themselves() {
        let mut read = 0;
        for region in phonenumber::metadata::DATABASE.iter() {
            let descriptors = region.descriptors();
            for descriptor in [descriptors.fixed_line(), descriptors.mobile()]
                .into_iter()
                .flatten()
            {
                let Some(example) = descriptor.example() else {
                    continue;
                };
                let raw = format!("+{} {example}", region.country_code());
                let phone = Phone::parse(&raw, US).unwrap();
                assert!(phone.normalized.starts_with('+'), "{raw}: {phone:?}");
                let again = Phone::parse(&phone.normalized, US).unwrap();
                assert_eq!(again.normalized, phone.normalized, "{raw}");
                read += 1;
            }
        }
        assert!(read > 400, "{read} example numbers");
    }

    #[test]
    fn the_parser_keeps_the_patterns_of_every_region() {
        Phone::parse("+1 408 498 7855", US).unwrap();
        let cache = phonenumber::metadata::DATABASE.cache();
        assert_eq!(cache.lock().unwrap().capacity(), PHONE_PATTERNS);
    }

    #[test]
    fn too_short_is_not_a_phone() {
        assert_eq!(Phone::parse("12", US), None);
        assert_eq!(Phone::parse("call me", US), None);
        assert_eq!(Phone::parse("", US), None);
    }

    #[test]
    fn name_key_folds_case_and_punctuation() {
        assert_eq!(name_key("  John   SMITH, jr. "), "john smith jr");
        assert_eq!(name_key("Zoë O'Brien"), "zoë o brien");
    }

    #[test]
    fn name_key_is_short_and_a_key_of_itself() {
        let huge = "Aaaaaaaaa ".repeat(90_000);
        let key = name_key(&huge);
        // 20 words of 9 letters; a 21st would not fit.
        assert_eq!(key.chars().count(), 20 * 10 - 1);
        assert!(!key.ends_with(' '));
        assert_eq!(name_key(&key), key);
        // Lowercasing `İ` yields a combining dot, which is not alphanumeric.
        let dotted = name_key("İstanbul Öz");
        assert_eq!(dotted, "i stanbul öz");
        assert_eq!(name_key(&dotted), dotted);
    }
}
