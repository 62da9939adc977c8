//! Step 1, 2 and 4 of the contract's identity rules: which lead a delivery
//! belongs to, which leads get linked as possible duplicates, and which
//! anonymous lead is folded. Pure: storage looks the matches up.

use serde::{Deserialize, Serialize};

use crate::config::Identifier;

/// A lead found through a platform visitor id or the chat it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The lead.
    pub lead: i64,
    /// Whether it has no email and no phone (so it may be folded).
    pub anonymous: bool,
}

/// Which leads the delivery's identifiers point at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matches {
    /// The lead owning one of the incoming emails.
    pub by_email: Option<i64>,
    /// The lead owning one of the incoming phones.
    pub by_phone: Option<i64>,
    /// The lead linked to the platform's visitor id, or else owning the chat.
    pub known: Option<Known>,
    /// Leads the known lead was unmerged from by staff: it is never folded
    /// into one of them again, only linked as a possible duplicate.
    pub kept_apart: Vec<i64>,
}

/// Where the delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An existing lead.
    Existing(i64),
    /// A new lead.
    Create,
}

/// The decision, with the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The lead the delivery is applied to.
    pub target: Target,
    /// Why that lead.
    pub rule: String,
    /// Leads to link to the target as possible duplicates, with the reason.
    pub duplicates: Vec<(i64, String)>,
    /// An anonymous lead to fold into the target.
    pub fold: Option<i64>,
}

/// Decides the target lead from the matches and `merge.match_order`.
pub fn resolve(matches: &Matches, match_order: &[Identifier]) -> Resolution {
    let mut duplicates = Vec::new();
    let (by_identifier, mut rule) = match (matches.by_email, matches.by_phone) {
        (Some(e), Some(p)) if e != p => {
            let email_first = match_order.first() != Some(&Identifier::Phone);
            let (winner, loser, by) = if email_first {
                (e, p, "email")
            } else {
                (p, e, "phone")
            };
            let reason = format!("email belongs to lead {e}, phone to lead {p}");
            duplicates.push((loser, reason));
            (
                Some(winner),
                format!("email and phone point at different leads; match_order picks the {by}"),
            )
        }
        (Some(e), _) => (Some(e), "matched by email".to_owned()),
        (None, Some(p)) => (Some(p), "matched by phone".to_owned()),
        (None, None) => (None, String::new()),
    };
    let mut fold = None;
    let target = match (by_identifier, matches.known) {
        (Some(lead), Some(known)) if known.lead != lead => {
            if known.anonymous && matches.kept_apart.contains(&lead) {
                duplicates.push((
                    known.lead,
                    format!("unmerged from lead {lead} by staff; kept apart"),
                ));
                rule.push_str(&format!(
                    "; anonymous lead {} was unmerged from it, linked as possible duplicate",
                    known.lead
                ));
            } else if known.anonymous {
                fold = Some(known.lead);
                rule.push_str(&format!(
                    "; anonymous lead {} (known by visitor id or chat) folded into it",
                    known.lead
                ));
            } else {
                duplicates.push((
                    known.lead,
                    "the platform's visitor id belongs to this lead".to_owned(),
                ));
                rule.push_str(&format!(
                    "; lead {} (known by visitor id) has other contacts, linked as possible duplicate",
                    known.lead
                ));
            }
            Target::Existing(lead)
        }
        (Some(lead), _) => Target::Existing(lead),
        (None, Some(known)) => {
            rule = "matched by platform visitor id or chat".to_owned();
            Target::Existing(known.lead)
        }
        (None, None) => {
            rule = "no lead matched; created".to_owned();
            Target::Create
        }
    };
    Resolution {
        target,
        rule,
        duplicates,
        fold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL_FIRST: &[Identifier] = &[Identifier::Email, Identifier::Phone];
    const PHONE_FIRST: &[Identifier] = &[Identifier::Phone, Identifier::Email];

    #[test]
    fn match_order_decides_between_conflicting_leads() {
        let m = Matches {
            by_email: Some(1),
            by_phone: Some(2),
            known: None,
            kept_apart: Vec::new(),
        };
        let r = resolve(&m, EMAIL_FIRST);
        assert_eq!(r.target, Target::Existing(1));
        assert_eq!(r.duplicates.len(), 1);
        assert_eq!(r.duplicates[0].0, 2);
        let r = resolve(&m, PHONE_FIRST);
        assert_eq!(r.target, Target::Existing(2));
        assert_eq!(r.duplicates[0].0, 1);
    }

    #[test]
    fn nothing_matched_creates() {
        let r = resolve(&Matches::default(), EMAIL_FIRST);
        assert_eq!(r.target, Target::Create);
        assert!(r.duplicates.is_empty() && r.fold.is_none());
    }

    #[test]
    fn anonymous_visitor_lead_is_folded_into_the_identified_one() {
        let m = Matches {
            by_email: Some(7),
            by_phone: None,
            known: Some(Known {
                lead: 9,
                anonymous: true,
            }),
            kept_apart: Vec::new(),
        };
        let r = resolve(&m, EMAIL_FIRST);
        assert_eq!(r.target, Target::Existing(7));
        assert_eq!(r.fold, Some(9));
    }

    #[test]
    fn an_unmerged_visitor_lead_is_linked_not_folded_again() {
        let m = Matches {
            by_email: Some(7),
            by_phone: None,
            known: Some(Known {
                lead: 9,
                anonymous: true,
            }),
            kept_apart: vec![7],
        };
        let r = resolve(&m, EMAIL_FIRST);
        assert_eq!(r.target, Target::Existing(7));
        assert_eq!(r.fold, None);
        assert_eq!(r.duplicates[0].0, 9);
    }

    #[test]
    fn identified_visitor_lead_is_linked_not_folded() {
        let m = Matches {
            by_email: None,
            by_phone: Some(7),
            known: Some(Known {
                lead: 9,
                anonymous: false,
            }),
            kept_apart: Vec::new(),
        };
        let r = resolve(&m, EMAIL_FIRST);
        assert_eq!(r.target, Target::Existing(7));
        assert_eq!(r.fold, None);
        assert_eq!(r.duplicates[0].0, 9);
    }

    #[test]
    fn visitor_id_alone_finds_the_lead() {
        let m = Matches {
            known: Some(Known {
                lead: 3,
                anonymous: true,
            }),
            ..Default::default()
        };
        assert_eq!(resolve(&m, EMAIL_FIRST).target, Target::Existing(3));
    }
}
