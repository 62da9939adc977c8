//! Why a delivery landed where it did: one identity and merge decision as a
//! structured value (identifiers seen, which lead each matched, the
//! `match_order` rule, the policy per field, what changed or was dropped).
//! Pure; storage keeps it once per delivery, and every history row the
//! decision writes points at it.

use serde::{Deserialize, Serialize};

use super::merge::{Change, ContactKind};
use super::resolve::{Known, Resolution};
use crate::config::{
    ContactPolicy, DescriptionPolicy, FieldPolicy, Identifier, MergePolicy, Primary,
};

/// One email or phone the delivery carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Email or phone.
    pub kind: ContactKind,
    /// As received.
    pub raw: String,
    /// Normalised (the identity key).
    pub normalized: String,
    /// The lead that already owned it, if any.
    pub owner: Option<i64>,
}

/// The policy in force for each field when the decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// `merge.match_order`.
    pub match_order: Vec<Identifier>,
    /// `merge.name`.
    pub name: FieldPolicy,
    /// `merge.description`.
    pub description: DescriptionPolicy,
    /// `merge.email`.
    pub email: ContactPolicy,
    /// `merge.phone`.
    pub phone: ContactPolicy,
    /// `merge.primary` (matters under `keep_both`).
    pub primary: Primary,
}

impl Policies {
    /// The policies a `[merge]` section sets.
    pub fn of(merge: &MergePolicy) -> Policies {
        Policies {
            match_order: merge.match_order.clone(),
            name: merge.name,
            description: merge.description,
            email: merge.email,
            phone: merge.phone,
            primary: merge.primary,
        }
    }
}

/// A lead linked to the target as a possible duplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// The other lead.
    pub lead: i64,
    /// Why.
    pub reason: String,
}

/// The whole decision for one delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The identity rule that picked the lead (readable).
    pub decision: String,
    /// The lead the delivery was applied to.
    pub lead: i64,
    /// Whether that lead was created by this delivery.
    pub created: bool,
    /// Emails and phones seen, with the lead owning each.
    pub seen: Vec<Seen>,
    /// The lead known by the platform's visitor id, chat or lead hint.
    pub known: Option<Known>,
    /// The anonymous lead folded into the target.
    pub folded: Option<i64>,
    /// Possible duplicates flagged (conflicting identifiers, visitor id, similarity).
    pub duplicates: Vec<Flag>,
    /// The policy that applied.
    pub policy: Policies,
    /// Every change decided, including incoming values that were not taken.
    pub changes: Vec<Change>,
}

impl Explanation {
    /// Puts the parts of a decision together.
    pub fn new(
        merge: &MergePolicy,
        seen: Vec<Seen>,
        known: Option<Known>,
        resolution: &Resolution,
        lead: i64,
        similar: Vec<Flag>,
        changes: Vec<Change>,
    ) -> Explanation {
        let mut duplicates: Vec<Flag> = resolution
            .duplicates
            .iter()
            .map(|(lead, reason)| Flag {
                lead: *lead,
                reason: reason.clone(),
            })
            .collect();
        duplicates.extend(similar);
        Explanation {
            decision: resolution.rule.clone(),
            lead,
            created: matches!(resolution.target, super::resolve::Target::Create),
            seen,
            known,
            folded: resolution.fold,
            duplicates,
            policy: Policies::of(merge),
            changes,
        }
    }

    /// The decision as readable lines, for a terminal and the lead page.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.seen {
            let owner = match s.owner {
                Some(id) => format!("lead {id}"),
                None => "no lead".to_owned(),
            };
            out.push(format!(
                "{} {:?} (normalised {}): {owner}",
                s.kind.as_str(),
                s.raw,
                s.normalized
            ));
        }
        if let Some(k) = &self.known {
            let anon = if k.anonymous { ", anonymous" } else { "" };
            out.push(format!(
                "visitor id / chat / lead hint: lead {}{anon}",
                k.lead
            ));
        }
        let order: Vec<&str> = self
            .policy
            .match_order
            .iter()
            .map(|i| match i {
                Identifier::Email => "email",
                Identifier::Phone => "phone",
            })
            .collect();
        out.push(format!(
            "decision ({}): {}",
            order.join(" > "),
            self.decision
        ));
        let verb = if self.created { "created" } else { "existing" };
        out.push(format!("lead: {} ({verb})", self.lead));
        if let Some(f) = self.folded {
            out.push(format!("folded: anonymous lead {f}"));
        }
        for d in &self.duplicates {
            out.push(format!(
                "possible duplicate: lead {} ({})",
                d.lead, d.reason
            ));
        }
        let p = &self.policy;
        out.push(format!(
            "policy: name={} description={} email={} phone={} primary={}",
            word(&p.name),
            word(&p.description),
            word(&p.email),
            word(&p.phone),
            word(&p.primary)
        ));
        if self.changes.is_empty() {
            out.push("changes: none".to_owned());
        }
        for c in &self.changes {
            out.push(format!("change: {}", describe(c)));
        }
        out
    }
}

/// A policy enum's config spelling.
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .map(|s| s.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// One change in words.
pub fn describe(change: &Change) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
    match change {
        Change::Name { old, new, rule } => format!("name {} → {new:?} ({rule})", opt(old)),
        Change::Description { old, new, rule } => {
            format!("description {:?} → {new:?} ({rule})", opt(old))
        }
        Change::Add {
            kind,
            value,
            primary,
            rule,
            ..
        } => {
            let role = if *primary { "primary" } else { "secondary" };
            format!("{} {value} added as {role} ({rule})", kind.as_str())
        }
        Change::Remove { kind, value, rule } => {
            format!("{} {value} removed ({rule})", kind.as_str())
        }
        Change::MakePrimary {
            kind,
            value,
            old,
            rule,
        } => format!("primary {} {} → {value} ({rule})", kind.as_str(), opt(old)),
        Change::Kept {
            field,
            incoming,
            rule,
        } => format!("{field} {incoming:?} not taken, dropped ({rule})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Identifier;
    use crate::crm::resolve::{Matches, resolve};

    fn merge() -> MergePolicy {
        MergePolicy {
            match_order: vec![Identifier::Phone, Identifier::Email],
            default_region: phonenumber::country::Id::US,
            phone: ContactPolicy::KeepExisting,
            email: ContactPolicy::KeepBoth,
            primary: Primary::Existing,
            name: FieldPolicy::KeepExisting,
            description: DescriptionPolicy::Append,
        }
    }

    #[test]
    fn a_conflict_is_explained_with_owners_rule_policy_and_dropped_values() {
        let m = merge();
        let resolution = resolve(
            &Matches {
                by_email: Some(1),
                by_phone: Some(2),
                known: None,
                kept_apart: Vec::new(),
            },
            &m.match_order,
        );
        let seen = vec![
            Seen {
                kind: ContactKind::Email,
                raw: "A@x.io".into(),
                normalized: "a@x.io".into(),
                owner: Some(1),
            },
            Seen {
                kind: ContactKind::Phone,
                raw: "(408) 498-7855".into(),
                normalized: "+14084987855".into(),
                owner: Some(2),
            },
        ];
        let kept = Change::Kept {
            field: "name".into(),
            incoming: "Johnny".into(),
            rule: "name = keep_existing".into(),
        };
        let why = Explanation::new(&m, seen, None, &resolution, 2, vec![], vec![kept]);
        assert_eq!(why.lead, 2);
        assert!(!why.created);
        assert_eq!(why.duplicates[0].lead, 1);
        assert_eq!(why.policy.phone, ContactPolicy::KeepExisting);
        assert_eq!(why.policy.description, DescriptionPolicy::Append);
        let lines = why.lines();
        assert_eq!(
            lines[..3],
            [
                "email \"A@x.io\" (normalised a@x.io): lead 1",
                "phone \"(408) 498-7855\" (normalised +14084987855): lead 2",
                "decision (phone > email): email and phone point at different leads; match_order picks the phone",
            ]
        );
        assert!(lines.contains(&"policy: name=keep_existing description=append email=keep_both phone=keep_existing primary=existing".to_owned()));
        assert_eq!(
            lines.last().unwrap(),
            "change: name \"Johnny\" not taken, dropped (name = keep_existing)"
        );
    }
}
