//! Step 5: how alike two leads look. Storage finds a small candidate set
//! through sorted indexes (neighbours of the new lead's name, reversed name,
//! emails and phones); this module scores each candidate value.

use strsim::{damerau_levenshtein, generic_jaro_winkler, jaro_winkler};

/// Which attribute made two leads look alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// Names.
    Name,
    /// Emails.
    Email,
    /// Phones.
    Phone,
}

/// Similarity of two names (normalised with [`super::identity::name_key`]).
/// Single-word names are too weak to flag anyone and score 0. A pair that
/// provably scores below `floor` may score 0 instead (see `can_reach`):
/// callers that keep only scores at or above a threshold pass it, the
/// others 0.
pub fn name_similarity(a: &str, b: &str, floor: f64) -> f64 {
    if !a.contains(' ') || !b.contains(' ') {
        return 0.0;
    }
    similarity_from(a, b, floor)
}

/// [`similarity`], or 0 when [`can_reach`] shows it is below `floor`.
fn similarity_from(a: &str, b: &str, floor: f64) -> f64 {
    if floor > 0.0 && !can_reach(a, b, floor) {
        return 0.0;
    }
    similarity(a, b)
}

/// Whether the Jaro-Winkler similarity of ASCII `a` and `b` can be `floor`
/// or more, from a bound that costs a pass over each string (Jaro-Winkler
/// itself compares each character with a window of the other's). Jaro is
/// `(m/|a| + m/|b| + (m - t/2)/m) / 3` for `m` matching characters and `t`
/// transpositions; a match pairs equal characters, each used once, so `m`
/// is at most the characters the two have in common counted with
/// multiplicity, and the last term at most 1. Winkler's boost
/// `j + 0.1 l (1 - j)`, for a common prefix of `l <= 4`, grows with `j`.
/// The neighbours of a name in the sorted index mostly share its first
/// letters and little else: most are dismissed here. Text other than ASCII
/// is never dismissed.
fn can_reach(a: &str, b: &str, floor: f64) -> bool {
    if a == b || !(a.is_ascii() && b.is_ascii()) || a.is_empty() || b.is_empty() {
        return true;
    }
    let mut counts = [0u32; 128];
    for c in a.bytes() {
        counts[usize::from(c)] += 1;
    }
    let mut common = 0u32;
    for c in b.bytes() {
        let n = &mut counts[usize::from(c)];
        if *n > 0 {
            *n -= 1;
            common += 1;
        }
    }
    let m = f64::from(common);
    let jaro = (m / a.len() as f64 + m / b.len() as f64 + 1.0) / 3.0;
    let prefix = (a.bytes().zip(b.bytes()).take(4))
        .take_while(|(x, y)| x == y)
        .count();
    let bound = jaro + 0.1 * prefix as f64 * (1.0 - jaro);
    // A margin for rounding: the bound and the score are computed in
    // different orders.
    bound >= floor - 1e-9
}

/// Jaro-Winkler, skipping the work for the common case of equal values
/// (namesakes are the nearest neighbours of a new lead's name). ASCII text
/// (most names and emails) is compared byte by byte: the same algorithm
/// and arithmetic as over characters, without decoding UTF-8 again for
/// every pair of positions.
fn similarity(a: &str, b: &str) -> f64 {
    if a == b {
        1.0
    } else if a.is_ascii() && b.is_ascii() {
        generic_jaro_winkler(&AsciiBytes(a.as_bytes()), &AsciiBytes(b.as_bytes()))
    } else {
        jaro_winkler(a, b)
    }
}

/// An ASCII string as the sequence of its bytes (each one character).
struct AsciiBytes<'a>(&'a [u8]);

impl<'b> IntoIterator for &AsciiBytes<'b> {
    type Item = u8;
    type IntoIter = std::iter::Copied<std::slice::Iter<'b, u8>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().copied()
    }
}

/// Similarity of two normalised emails. Local parts are compared within one
/// domain; the same mailbox name (4+ characters) at another domain is a
/// strong hint too; different mailboxes at different domains score 0.
/// Like [`name_similarity`], a pair that provably scores below `floor` may
/// score 0.
pub fn email_similarity(a: &str, b: &str, floor: f64) -> f64 {
    let (Some((la, da)), Some((lb, db))) = (a.rsplit_once('@'), b.rsplit_once('@')) else {
        return 0.0;
    };
    if da == db {
        if la.len() < 3 || lb.len() < 3 {
            return 0.0;
        }
        similarity_from(la, lb, floor)
    } else if la == lb && la.len() >= 4 {
        0.95
    } else {
        0.0
    }
}

/// Similarity of two normalised phones: the same number with one digit
/// mistyped, missing, extra or two digits swapped scores 0.96, two such
/// slips 0.90, anything else 0. Numbers are dense: a string similarity over
/// their digits would call every neighbour on the same exchange alike.
/// Short numbers score 0.
pub fn phone_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (a.trim_start_matches('+'), b.trim_start_matches('+'));
    if a.len() < 7 || b.len() < 7 || !within_two_edits(a, b) {
        return 0.0;
    }
    match affix_damerau_levenshtein(a, b) {
        0 => 1.0,
        1 => 0.96,
        2 => 0.90,
        _ => 0.0,
    }
}

/// The (unrestricted) Damerau-Levenshtein distance, computed on what is
/// left once the common prefix and suffix are set aside (they never change
/// the distance). Sorted neighbours in the phone index share most of their
/// digits, so this leaves strsim a few cells where it had a hundred.
fn affix_damerau_levenshtein(a: &str, b: &str) -> usize {
    let prefix: usize = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix: usize = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum();
    damerau_levenshtein(&a[..a.len() - suffix], &b[..b.len() - suffix])
}

/// A cheap test that passes every pair at most two edits apart (and most
/// neighbours on one exchange fail): each edit (insertion, deletion,
/// substitution, transposition) changes the length by at most one and the
/// count of each character by at most two in total, so two strings whose
/// lengths differ by more than 2, or whose character counts differ by more
/// than 4 in total, are at least three edits apart.
fn within_two_edits(a: &str, b: &str) -> bool {
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    if !(a.is_ascii() && b.is_ascii()) {
        return true;
    }
    let mut counts = [0i32; 128];
    for c in a.bytes() {
        counts[usize::from(c)] += 1;
    }
    for c in b.bytes() {
        counts[usize::from(c)] -= 1;
    }
    counts.iter().map(|n| n.unsigned_abs()).sum::<u32>() <= 4
}

/// Reverses a string by characters (the index that finds suffix neighbours).
pub fn reversed(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    reverse_into(s, &mut out);
    out
}

/// [`reversed`], into `out` (cleared first): a buffer reused for many
/// strings allocates once.
pub fn reverse_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        // ASCII reversed byte by byte is the same ASCII characters.
        out.extend(s.bytes().rev().map(char::from));
    } else {
        out.extend(s.chars().rev());
    }
}

/// Appends `s` as `{s:?}` writes it, without the escaping machinery for the
/// printable ASCII that names and emails nearly always are.
pub fn push_quoted(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_score_high_and_strangers_low() {
        assert!(name_similarity("john smith", "jon smith", 0.0) > 0.92);
        assert!(name_similarity("john smith", "mary brown", 0.0) < 0.7);
        assert_eq!(name_similarity("john", "john", 0.0), 0.0);
        assert!(email_similarity("john.smith@acme.com", "john.smyth@acme.com", 0.0) > 0.92);
        assert!(email_similarity("ann@gmail.com", "bob@gmail.com", 0.0) < 0.7);
        assert_eq!(
            email_similarity("jsmith@gmail.com", "jsmith@yahoo.com", 0.0),
            0.95
        );
        assert_eq!(email_similarity("a@gmail.com", "b@yahoo.com", 0.0), 0.0);
        assert!(phone_similarity("+14084987855", "+14084987856") > 0.92);
        assert!(phone_similarity("+14084987855", "+14084987585") > 0.92);
        assert!(phone_similarity("+14084987855", "+447700900123") < 0.8);
        // Neighbours on one exchange are different people.
        assert!(phone_similarity("+14085550123", "+14085550987") < 0.8);
    }

    #[test]
    fn quoting_and_reversing_agree_with_the_general_ways() {
        for s in [
            "john smith",
            "o'brien",
            "a\"b",
            "a\\b",
            "tab\there",
            "new\nline",
            "zoë",
            "\u{7f}",
            "~!@#$%^&*()_+{}|:<>?`-=[];',./",
            "",
        ] {
            let mut quoted = String::new();
            push_quoted(&mut quoted, s);
            assert_eq!(quoted, format!("{s:?}"));
            assert_eq!(reversed(s), s.chars().rev().collect::<String>());
        }
    }

    #[test]
    fn byte_wise_jaro_winkler_equals_the_character_one() {
        let words = [
            "john smith",
            "jon smith",
            "johnathan smith",
            "jonathan smyth",
            "smith john",
            "mary brown",
            "a b",
            "ann lee",
            "anne leigh",
            "x",
            "cheeseburger",
            "cheese fries",
            "martha",
            "marhta",
            "dixon",
            "dicksonx",
            "jellyfish",
            "smellyfish",
            "aaaaaaaaab",
            "baaaaaaaaa",
            "",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    similarity(a, b).to_bits(),
                    if a == b { 1.0f64 } else { jaro_winkler(a, b) }.to_bits(),
                    "{a:?} {b:?}"
                );
            }
        }
        // Other text still goes by characters.
        assert_eq!(
            similarity("josé smith", "jose smith"),
            jaro_winkler("josé smith", "jose smith")
        );
    }

    /// The bound never dismisses a pair that reaches the floor, and with a
    /// floor of 0 nothing is dismissed: every pair of short strings over a
    /// small alphabet (repeats, transpositions, spaces), and names.
    #[test]
    fn a_dismissed_pair_is_always_below_the_floor() {
        let mut words = every_string(['a', 'b', ' '], 5);
        words.extend(
            [
                "john smith",
                "jon smith",
                "johnathan smith",
                "jonathan smyth",
                "ana moore",
                "anna moore",
                "ana morales",
                "anthony brooks",
                "martha stewart",
                "marhta stewart",
                "josé smith",
                "jose smith",
            ]
            .map(String::from),
        );
        let mut dismissed = 0;
        for a in &words {
            for b in &words {
                let exact = name_similarity(a, b, 0.0);
                for floor in [0.5, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95, 1.0] {
                    let quick = name_similarity(a, b, floor);
                    if quick != exact {
                        assert_eq!(quick, 0.0, "{a:?} {b:?} at {floor}");
                        assert!(exact < floor, "{a:?} {b:?} ({exact}) dismissed at {floor}");
                        dismissed += 1;
                    }
                }
            }
        }
        // The bound does dismiss pairs (it is not a test of nothing).
        assert!(dismissed > 10_000, "{dismissed}");
        assert_eq!(
            email_similarity("ann.lee@acme.com", "bob.stone@acme.com", 0.9),
            0.0
        );
        assert!(email_similarity("ann.lee@acme.com", "ann.leigh@acme.com", 0.85) > 0.85);
    }

    /// Every string over `alphabet` of at most `longest` characters.
    fn every_string<const N: usize>(alphabet: [char; N], longest: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = all.clone();
        for _ in 0..longest {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn damerau_levenshtein_without_common_affixes_equals_strsims() {
        // Every string of up to 6 letters over a small alphabet (so that
        // transpositions and repeats are common), against each other, and
        // phone-like numbers.
        let words = every_string(['a', 'b', 'c'], 6);
        for a in &words {
            for b in &words {
                assert_eq!(
                    affix_damerau_levenshtein(a, b),
                    damerau_levenshtein(a, b),
                    "{a:?} {b:?}"
                );
            }
        }
        let phones = [
            "14084987855",
            "14084987585",
            "1408498785",
            "140849878555",
            "41408498785",
            "14804987855",
            "447700900123",
            "4915123456789",
            "ca",
            "abc",
            "éa",
            "aé",
            "ééb",
        ];
        for a in phones {
            for b in phones {
                assert_eq!(
                    affix_damerau_levenshtein(a, b),
                    damerau_levenshtein(a, b),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn the_phone_prefilter_never_hides_a_pair_two_edits_apart() {
        // Every pair from a small alphabet, 5 and 6 digits long: the
        // prefilter must pass whatever the full distance keeps.
        let numbers = every_string(['1', '2', '3'], 6);
        let long: Vec<_> = numbers.iter().filter(|n| n.len() >= 5).collect();
        for a in &long {
            for b in &long {
                if damerau_levenshtein(a, b) <= 2 {
                    assert!(within_two_edits(a, b), "{a} {b}");
                }
            }
        }
        assert!(within_two_edits("4084987855", "4084987585"));
        assert!(!within_two_edits("4084987855", "4084981234"));
    }
}
