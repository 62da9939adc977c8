//! `preview`: what a merge-policy change would do to the leads, before it
//! is made. The stored deliveries are replayed twice, into two scratch
//! databases in a temporary directory: once under the current policy and
//! once under the new one; the two results are then compared lead by lead.
//! The live database is only read, so the service keeps serving.
//!
//! Leads are matched across the replays by the delivery that created them
//! (its idempotency key), not by row id, and reported with their id in the
//! live database when it has the same lead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;

use super::replay::{self, Selection};
use crate::store::apply::Policy;
use crate::store::{Db, DbError};

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

/// A scratch directory removed when dropped, whatever happens.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replays the deliveries selected from `live` under `current` and `new`
/// and compares the two results.
pub async fn run(
    live: &Path,
    busy: Duration,
    current: &Policy,
    new: &Policy,
    selection: &Selection,
) -> Result<Preview, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("crm-preview-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let scratch = Scratch(dir);
    let selection = Selection {
        failed_only: false,
        from: Some(live.to_owned()),
        ..selection.clone()
    };
    let before = replay_into(
        &scratch.0.join("current.sqlite3"),
        busy,
        current,
        &selection,
    )
    .await?;
    let after = replay_into(&scratch.0.join("new.sqlite3"), busy, new, &selection).await?;
    let path = live.to_owned();
    let live_ids = tokio::task::spawn_blocking(move || {
        let conn = replay::open_source(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let by_anchor = anchors(&conn).map_err(|e| e.to_string())?;
        Ok::<_, String>(by_anchor.into_iter().map(|(id, a)| (a, id)).collect())
    })
    .await
    .map_err(|e| format!("read task failed: {e}"))??;
    Ok(compare(before.1, &after.1, &live_ids, before.0))
}

/// Replays into a fresh database at `path`; returns the deliveries seen and
/// the leads by anchor.
async fn replay_into(
    path: &Path,
    busy: Duration,
    policy: &Policy,
    selection: &Selection,
) -> Result<(u64, BTreeMap<String, LeadState>), String> {
    let db = Db::open(path, busy).map_err(|e| format!("{}: {e}", path.display()))?;
    let result = async {
        let summary = replay::run(&db, policy, selection).await?;
        let leads = db.read(states).await.map_err(|e| e.to_string())?;
        Ok((summary.seen, leads))
    }
    .await;
    db.close();
    result
}

/// Each lead's anchor: the idempotency key of the first delivery applied to
/// it (the one that created it), else its id for leads no delivery made.
fn anchors(conn: &Connection) -> Result<BTreeMap<i64, String>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT l.id, (SELECT d.idem_key FROM deliveries d WHERE d.lead_id = l.id ORDER BY d.id LIMIT 1)
         FROM leads l",
    )?;
    let rows = stmt.query_map([], |r| {
        let id: i64 = r.get(0)?;
        let key: Option<String> = r.get(1)?;
        Ok((id, key.unwrap_or_else(|| format!("lead {id}"))))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every lead of a replayed database, by anchor.
fn states(conn: &Connection) -> Result<BTreeMap<String, LeadState>, DbError> {
    let anchor = anchors(conn)?;
    let name = |id: i64| anchor.get(&id).cloned().unwrap_or_default();
    let mut out: BTreeMap<i64, LeadState> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT id, name, merged_into FROM leads")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let into: Option<i64> = r.get(2)?;
        out.insert(
            r.get(0)?,
            LeadState {
                name: r.get(1)?,
                folded_into: into.map(name),
                ..LeadState::default()
            },
        );
    }
    for (table, is_email) in [("lead_emails", true), ("lead_phones", false)] {
        let sql = format!("SELECT lead_id, value, is_primary FROM {table}");
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, value, primary): (i64, String, bool) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let Some(lead) = out.get_mut(&id) else {
                continue;
            };
            let (all, first) = if is_email {
                (&mut lead.emails, &mut lead.email)
            } else {
                (&mut lead.phones, &mut lead.phone)
            };
            if primary {
                *first = Some(value.clone());
            }
            all.insert(value);
        }
    }
    let mut stmt = conn.prepare("SELECT lead_a, lead_b FROM duplicate_links")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (a, b): (i64, i64) = (r.get(0)?, r.get(1)?);
        if let Some(lead) = out.get_mut(&a) {
            lead.duplicates.insert(name(b));
        }
        if let Some(lead) = out.get_mut(&b) {
            lead.duplicates.insert(name(a));
        }
    }
    Ok(out.into_iter().map(|(id, s)| (name(id), s)).collect())
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
