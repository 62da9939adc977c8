//! The bulk path of `import`: a row whose emails and phones no lead owns
//! creates a lead, and nothing else can happen to it (no visitor id, chat,
//! tag or fold). That case is applied here from values parsed ahead of the
//! writer, without the general event plumbing, through the same pure core
//! (`resolve`, `merge::plan`, `Explanation`) and the same storage functions
//! as [`super::apply::apply`], in the same order: the stored result is the
//! one the general path gives. Any other row takes the general path.

use rusqlite::Connection;

use super::DbError;
use super::apply::{Outcome, Policy};
use super::duplicates::{self, Profile};
use super::inbox::{self, Inserted, NewDelivery};
use super::leads::{self, Source};
use crate::crm::explain::{Explanation, Flag, Seen};
use crate::crm::identity::name_key;
use crate::crm::merge::{self, ContactKind, Incoming, IncomingContact};
use crate::crm::resolve::{self, Matches, Target};

/// A person as parsed ahead of the writer: identifiers normalised and
/// deduplicated the way [`super::apply::apply`] does it.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    /// Name, as given.
    pub name: Option<&'a str>,
    /// Description, as given.
    pub description: Option<&'a str>,
    /// `(normalised, raw)` emails, first occurrence of each, in order.
    pub emails: &'a [(String, String)],
    /// `(normalised, raw)` phones, likewise.
    pub phones: &'a [(String, String)],
    /// Custom fields.
    pub fields: &'a [(String, String)],
}

/// Whether a lead owns any of the person's emails or phones (then the row
/// takes the general path).
pub fn owned(conn: &Connection, person: &Person) -> Result<bool, DbError> {
    for (value, _) in person.emails {
        if leads::contact_owner(conn, ContactKind::Email, value)?.is_some() {
            return Ok(true);
        }
    }
    for (value, _) in person.phones {
        if leads::contact_owner(conn, ContactKind::Phone, value)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Applies `delivery` for a person no lead owns an identifier of ([`owned`]
/// said no): stores it in the inbox and creates the lead, exactly as
/// [`super::apply::apply`] would. A delivery applied before is a redelivery.
pub fn create(
    conn: &Connection,
    policy: &Policy,
    delivery: &NewDelivery,
    person: &Person,
) -> Result<Outcome, DbError> {
    let delivery_id = match inbox::insert(conn, delivery)? {
        Inserted::New(id) | Inserted::Retry(id) => id,
        Inserted::Applied(lead) => {
            return Ok(Outcome {
                lead_id: lead.map(|id| leads::survivor(conn, id)).transpose()?,
                redelivery: true,
                ..Outcome::default()
            });
        }
    };
    let source = Source {
        delivery_id: Some(delivery_id),
        // What `apply` labels an event without a chat: "{platform} {event}".
        label: format!("{} {}", delivery.platform, delivery.event),
        at: delivery.received_at.clone(),
    };
    let resolution = resolve::resolve(&Matches::default(), &policy.merge.match_order);
    debug_assert_eq!(resolution.target, Target::Create);
    let lead = leads::create(conn, &source.at)?;
    let contacts = |values: &[(String, String)]| -> Vec<IncomingContact> {
        values
            .iter()
            .map(|(value, raw)| IncomingContact {
                value: value.clone(),
                raw: raw.clone(),
            })
            .collect()
    };
    let incoming = Incoming {
        name: non_empty(person.name),
        description: non_empty(person.description),
        emails: contacts(person.emails),
        phones: contacts(person.phones),
    };
    let current = merge::Current::default();
    let changes = merge::plan(&policy.merge, &current, &incoming);
    let mut similar = Vec::new();
    if policy.duplicates.enabled {
        let after = merge::preview(&current, &changes);
        let profile = Profile {
            name_key: after
                .name
                .as_deref()
                .map(name_key)
                .filter(|k| !k.is_empty()),
            emails: after.emails.into_iter().map(|c| c.value).collect(),
            phones: after.phones.into_iter().map(|c| c.value).collect(),
        };
        similar = duplicates::detect(
            conn,
            lead,
            &profile,
            policy.duplicates.threshold,
            &source.at,
        )?;
    }
    let flagged = similar.len();
    let similar = similar
        .into_iter()
        .map(|(lead, reason)| Flag { lead, reason })
        .collect();
    let seen = seen(ContactKind::Email, person.emails)
        .chain(seen(ContactKind::Phone, person.phones))
        .collect();
    let why = Explanation::new(
        &policy.merge,
        seen,
        None,
        &resolution,
        lead,
        similar,
        changes,
    );
    let why_json = leads::explanation_json(&why, None);
    leads::history(
        conn,
        lead,
        "created",
        None,
        Some(&resolution.rule),
        &source,
        Some(&why_json),
    )?;
    leads::apply_changes(conn, lead, &why.changes, &why, &source)?;
    leads::set_fields(conn, lead, person.fields, &source)?;
    inbox::set_lead(conn, delivery_id, Some(lead))?;
    Ok(Outcome {
        lead_id: Some(lead),
        created: true,
        flagged,
        ..Outcome::default()
    })
}

fn seen(kind: ContactKind, values: &[(String, String)]) -> impl Iterator<Item = Seen> + '_ {
    values.iter().map(move |(normalized, raw)| Seen {
        kind,
        raw: raw.clone(),
        normalized: normalized.clone(),
        owner: None,
    })
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `Some(lead)` when a delivery with idempotency key `key` was applied
/// before (the lead it went to, if any): [`inbox::insert`] would call it a
/// redelivery.
pub fn applied_before(conn: &Connection, key: &str) -> Result<Option<Option<i64>>, DbError> {
    use rusqlite::OptionalExtension;
    let found: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT status, lead_id FROM deliveries WHERE idem_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.and_then(|(status, lead)| (status == "applied").then_some(lead)))
}
