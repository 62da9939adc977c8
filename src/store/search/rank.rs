//! How well a lead matches a query, and where a page of hits ends.

use std::fmt;

use strsim::jaro_winkler;

/// Near matches below this similarity are noise.
pub(super) const NEAR_MIN: f64 = 0.85;
/// Scores are kept in millionths so that a cursor compares exactly.
const SCALE: f64 = 1_000_000.0;

/// How a hit matched, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The whole email, phone or name equals the query.
    Exact = 0,
    /// The email, phone or name starts with the query, or the name ends with it.
    Prefix = 1,
    /// Similar, within a few typos.
    Near = 2,
}

/// One lead a search found, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The lead.
    pub id: i64,
    /// How it matched.
    pub tier: Tier,
    /// Similarity to the query in millionths (0 when listing without a query).
    pub score: u32,
    /// What matched, for people: `email`, `name starts with`, `similar phone`, ….
    pub why: &'static str,
}

impl Hit {
    /// The hit's place in the ranking: tier, then score (higher first), then newest.
    pub(super) fn key(&self) -> (Tier, std::cmp::Reverse<u32>, std::cmp::Reverse<i64>) {
        (
            self.tier,
            std::cmp::Reverse(self.score),
            std::cmp::Reverse(self.id),
        )
    }

    /// Similarity as a fraction of 1.
    pub fn similarity(&self) -> f64 {
        f64::from(self.score) / SCALE
    }
}

/// Where the previous page ended: the sort key of its last hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    tier: Tier,
    score: u32,
    /// The last hit's lead.
    pub(super) id: i64,
}

impl Cursor {
    /// Parses a `next` value; a bare lead id is accepted too (a listing
    /// without a query ranks by id alone).
    pub fn parse(s: &str) -> Option<Cursor> {
        let parts: Vec<&str> = s.split('.').collect();
        let (tier, score, id) = match parts.as_slice() {
            [id] => (Tier::Exact, 0, id.parse().ok()?),
            [tier, score, id] => {
                let tier = match *tier {
                    "0" => Tier::Exact,
                    "1" => Tier::Prefix,
                    "2" => Tier::Near,
                    _ => return None,
                };
                (tier, score.parse().ok()?, id.parse().ok()?)
            }
            _ => return None,
        };
        Some(Cursor { tier, score, id })
    }

    pub(super) fn of(hit: &Hit) -> Cursor {
        Cursor {
            tier: hit.tier,
            score: hit.score,
            id: hit.id,
        }
    }

    /// Whether `hit` comes after this cursor in the ranking.
    pub(super) fn precedes(&self, hit: &Hit) -> bool {
        let me = Hit {
            id: self.id,
            tier: self.tier,
            score: self.score,
            why: "",
        };
        hit.key() > me.key()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tier == Tier::Exact && self.score == 0 {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}.{}.{}", self.tier as u8, self.score, self.id)
        }
    }
}

fn millionths(score: f64) -> u32 {
    (score.clamp(0.0, 1.0) * SCALE).round() as u32
}

pub(super) fn exact(id: i64, why: &'static str) -> Hit {
    Hit {
        id,
        tier: Tier::Exact,
        score: millionths(1.0),
        why,
    }
}

pub(super) fn prefix(id: i64, score: f64, why: &'static str) -> Hit {
    Hit {
        id,
        tier: Tier::Prefix,
        // A prefix match is a match however long the rest: never 0.
        score: millionths(score).max(1),
        why,
    }
}

/// A near match, or a score of 0 (dropped) below `min`.
pub(super) fn near(id: i64, score: f64, min: f64, why: &'static str) -> Hit {
    Hit {
        id,
        tier: Tier::Near,
        score: if score >= min { millionths(score) } else { 0 },
        why,
    }
}

/// Ranks a lead's normalised name against the normalised query.
pub(super) fn rank_name(id: i64, key: &str, theirs: &str) -> Hit {
    if theirs == key {
        return exact(id, "name");
    }
    let whole = jaro_winkler(key, theirs);
    if theirs.starts_with(key) {
        return prefix(id, whole, "name starts with");
    }
    // The last name alone, say: the query must end the name at a word boundary.
    if theirs
        .strip_suffix(key)
        .is_some_and(|rest| rest.ends_with(' '))
    {
        return prefix(id, whole, "name ends with");
    }
    // A one-word query is usually a first or last name: compare it word by word too.
    let by_word = if key.contains(' ') {
        0.0
    } else {
        theirs
            .split(' ')
            .map(|w| jaro_winkler(key, w))
            .fold(0.0, f64::max)
    };
    near(id, whole.max(by_word), NEAR_MIN, "similar name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rank_exact_then_prefix_then_typos() {
        assert_eq!(rank_name(1, "john smith", "john smith").tier, Tier::Exact);
        assert_eq!(rank_name(1, "john", "john smith").tier, Tier::Prefix);
        assert_eq!(rank_name(1, "smith", "john smith").tier, Tier::Prefix);
        let typo = rank_name(1, "jon smith", "john smith");
        assert_eq!(typo.tier, Tier::Near);
        assert!(typo.similarity() > 0.9);
        assert_eq!(rank_name(1, "smyth", "john smith").tier, Tier::Near);
        assert_eq!(rank_name(1, "john smith", "mary brown").score, 0);
    }

    #[test]
    fn cursors_parse_only_what_they_print() {
        assert_eq!(Cursor::parse("42").unwrap().id, 42);
        let c = Cursor::parse("2.930000.7").unwrap();
        assert_eq!(c.to_string(), "2.930000.7");
        for bad in ["", "x", "3.1.1", "1.2", "1.-1.2", "1.2.3.4"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
