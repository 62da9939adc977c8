//! Comparing the two replays of `preview` lead by lead: what differs, how
//! many leads differ in each way, and the text an operator reads.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Leads shown on a terminal; `--json` lists them all.
pub const SAMPLE: usize = 10;

/// A lead as far as a policy change can alter it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeadState {
    /// Name.
    pub name: Option<String>,
    /// Primary email.
    pub email: Option<String>,
    /// Primary phone.
    pub phone: Option<String>,
    /// Every email.
    pub emails: BTreeSet<String>,
    /// Every phone.
    pub phones: BTreeSet<String>,
    /// The lead (by anchor) it was folded into.
    pub folded_into: Option<String>,
    /// Leads (by anchor) linked as possible duplicates.
    pub duplicates: BTreeSet<String>,
}

/// One lead that would differ.
#[derive(Debug, Clone, Serialize)]
pub struct LeadDiff {
    /// Its id in the live database, when the live database has it.
    pub lead: Option<i64>,
    /// The delivery that creates it (idempotency key).
    pub anchor: String,
    /// What differs, one item per aspect.
    pub changes: Vec<String>,
    /// Under the current policy (none: not created under it).
    pub before: Option<LeadState>,
    /// Under the new policy (none: not created under it).
    pub after: Option<LeadState>,
}

/// How many leads differ in each way.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Leads under the current policy.
    pub leads_before: u64,
    /// Leads under the new policy.
    pub leads_after: u64,
    /// Leads that differ in any way.
    pub changed: u64,
    /// Primary email would change.
    pub primary_email: u64,
    /// Primary phone would change.
    pub primary_phone: u64,
    /// Name would change.
    pub name: u64,
    /// Would keep contacts they do not have now.
    pub contacts_kept: u64,
    /// Would lose (never get) contacts they have now.
    pub contacts_dropped: u64,
    /// Possible-duplicate links would differ.
    pub linked_differently: u64,
    /// Would be folded differently.
    pub folded_differently: u64,
    /// Exist now but would not be created.
    pub not_created: u64,
    /// Would be created but do not exist now.
    pub newly_created: u64,
}

/// The comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    /// Deliveries replayed (each time).
    pub deliveries: u64,
    /// Counts.
    pub counts: Counts,
    /// Every lead that would differ, live id order.
    pub leads: Vec<LeadDiff>,
}

/// Compares two replays lead by lead.
pub fn compare(
    before: BTreeMap<String, LeadState>,
    after: &BTreeMap<String, LeadState>,
    live: &BTreeMap<String, i64>,
    deliveries: u64,
) -> Preview {
    let mut counts = Counts {
        leads_before: before.values().filter(|l| l.folded_into.is_none()).count() as u64,
        leads_after: after.values().filter(|l| l.folded_into.is_none()).count() as u64,
        ..Counts::default()
    };
    let mut leads = Vec::new();
    let mut keys: BTreeSet<&String> = before.keys().collect();
    keys.extend(after.keys());
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        let changes = differences(b, a, &mut counts);
        if changes.is_empty() {
            continue;
        }
        counts.changed += 1;
        leads.push(LeadDiff {
            lead: live.get(key).copied(),
            anchor: key.clone(),
            changes,
            before: b.cloned(),
            after: a.cloned(),
        });
    }
    leads.sort_by_key(|l| (l.lead.is_none(), l.lead, l.anchor.clone()));
    Preview {
        deliveries,
        counts,
        leads,
    }
}

/// What differs for one lead, counting each aspect once.
fn differences(b: Option<&LeadState>, a: Option<&LeadState>, counts: &mut Counts) -> Vec<String> {
    let (b, a) = match (b, a) {
        (Some(b), Some(a)) => (b, a),
        (Some(_), None) => {
            counts.not_created += 1;
            return vec!["would not be created".to_owned()];
        }
        (None, Some(_)) => {
            counts.newly_created += 1;
            return vec!["would be created".to_owned()];
        }
        (None, None) => return Vec::new(),
    };
    let mut out = Vec::new();
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
    if b.email != a.email {
        counts.primary_email += 1;
        out.push(format!(
            "primary email {} → {}",
            show(&b.email),
            show(&a.email)
        ));
    }
    if b.phone != a.phone {
        counts.primary_phone += 1;
        out.push(format!(
            "primary phone {} → {}",
            show(&b.phone),
            show(&a.phone)
        ));
    }
    if b.name != a.name {
        counts.name += 1;
        out.push(format!("name {:?} → {:?}", show(&b.name), show(&a.name)));
    }
    let kept: Vec<&String> = a
        .emails
        .difference(&b.emails)
        .chain(a.phones.difference(&b.phones))
        .collect();
    if !kept.is_empty() {
        counts.contacts_kept += 1;
        out.push(format!("would keep {}", join(&kept)));
    }
    let dropped: Vec<&String> = b
        .emails
        .difference(&a.emails)
        .chain(b.phones.difference(&a.phones))
        .collect();
    if !dropped.is_empty() {
        counts.contacts_dropped += 1;
        out.push(format!("would drop {}", join(&dropped)));
    }
    if b.duplicates != a.duplicates {
        counts.linked_differently += 1;
        out.push(format!(
            "possible duplicates {} → {}",
            b.duplicates.len(),
            a.duplicates.len()
        ));
    }
    if b.folded_into != a.folded_into {
        counts.folded_differently += 1;
        out.push(format!(
            "folded into {} → {}",
            show(&b.folded_into),
            show(&a.folded_into)
        ));
    }
    out
}

fn join(values: &[&String]) -> String {
    values
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The comparison as readable lines: counts, then a sample of leads.
pub fn print(p: &Preview) {
    let c = &p.counts;
    println!("replayed {} deliveries under both policies", p.deliveries);
    println!(
        "leads: {} now, {} under the new policy",
        c.leads_before, c.leads_after
    );
    println!("leads that would differ: {}", c.changed);
    let rows = [
        ("primary email changes", c.primary_email),
        ("primary phone changes", c.primary_phone),
        ("name changes", c.name),
        ("contacts kept that are dropped now", c.contacts_kept),
        ("contacts dropped that are kept now", c.contacts_dropped),
        ("linked as duplicates differently", c.linked_differently),
        ("folded differently", c.folded_differently),
        ("no longer created", c.not_created),
        ("newly created", c.newly_created),
    ];
    for (what, n) in rows {
        println!("  {what:<36} {n}");
    }
    if !p.leads.is_empty() {
        println!("sample:");
    }
    for l in p.leads.iter().take(SAMPLE) {
        let who = match l.lead {
            Some(id) => format!("lead {id}"),
            None => format!("new lead ({})", l.anchor),
        };
        println!("  {who}: {}", l.changes.join("; "));
    }
    if p.leads.len() > SAMPLE {
        println!("  … and {} more (--json lists all)", p.leads.len() - SAMPLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(phone: &str, phones: &[&str]) -> LeadState {
        LeadState {
            name: Some("Ann".into()),
            phone: Some(phone.into()),
            phones: phones.iter().map(|p| p.to_string()).collect(),
            ..LeadState::default()
        }
    }

    #[test]
    fn leads_are_compared_by_anchor_and_counted_once_per_aspect() {
        let before = BTreeMap::from([
            ("jivo:1".to_owned(), lead("+1A", &["+1A"])),
            ("jivo:2".to_owned(), lead("+1C", &["+1C"])),
            ("jivo:3".to_owned(), lead("+1B", &["+1B"])),
        ]);
        let after = BTreeMap::from([
            ("jivo:1".to_owned(), lead("+1A", &["+1A", "+1B"])),
            ("jivo:2".to_owned(), lead("+1C", &["+1C"])),
            ("jivo:9".to_owned(), lead("+1D", &["+1D"])),
        ]);
        let live = BTreeMap::from([("jivo:1".to_owned(), 1), ("jivo:3".to_owned(), 3)]);
        let p = compare(before, &after, &live, 4);
        assert_eq!(p.counts.changed, 3);
        assert_eq!(p.counts.contacts_kept, 1);
        assert_eq!(p.counts.primary_phone, 0);
        assert_eq!(p.counts.not_created, 1);
        assert_eq!(p.counts.newly_created, 1);
        let ids: Vec<_> = p.leads.iter().map(|l| l.lead).collect();
        assert_eq!(ids, [Some(1), Some(3), None]);
        assert_eq!(p.leads[0].changes, ["would keep +1B"]);
    }
}
