//! The subject export: everything held on a person, as one JSON document.

use std::collections::BTreeSet;

use phonenumber::country;

use super::{Person, Subject, internal, person, scan_all};
use crate::args;
use crate::store::sql::Sql;
use crate::store::view::{self, Found};
use crate::store::{Db, DbError};

/// Everything held on a person, as one JSON document: their leads as the
/// API shows them (without other leads' names), the leads folded into
/// them, and each raw delivery that carries their identifiers.
pub fn export(
    conn: &dyn Sql,
    person: &Person,
    deliveries: &[i64],
) -> Result<serde_json::Value, DbError> {
    let mut leads = Vec::new();
    let mut folded = Vec::new();
    for &id in &person.leads {
        match view::lead(conn, id)? {
            Found::Lead(mut lead) => {
                // Another person's name is not theirs to receive.
                lead.duplicate_details.clear();
                leads.push(serde_json::to_value(&lead).map_err(internal)?);
            }
            Found::MergedInto(_) => folded.push(folded_lead(conn, id)?),
            Found::Missing => {}
        }
    }
    let mut raw = Vec::new();
    for &id in deliveries {
        let row = conn.query_opt(
            "SELECT platform, event, received_at, status, body FROM deliveries WHERE id = ?1",
            args![id],
            |r| {
                let body: Vec<u8> = r.get(4)?;
                Ok(serde_json::json!({
                    "id": id,
                    "platform": r.get::<String>(0)?,
                    "event": r.get::<String>(1)?,
                    "received_at": r.get::<String>(2)?,
                    "status": r.get::<String>(3)?,
                    "body": serde_json::from_slice::<serde_json::Value>(&body)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned().into()),
                }))
            },
        )?;
        raw.extend(row);
    }
    let document = serde_json::json!({
        "exported_at": crate::event::now_rfc3339(),
        "leads": leads,
        "folded_leads": folded,
        "deliveries": raw,
    });
    // Decisions quote the names of the leads they flagged as possible
    // duplicates: another person's name is not theirs to receive.
    let others = other_names(conn, person)?;
    if others.is_empty() {
        return Ok(document);
    }
    let mut text = document.to_string();
    for name in others {
        text = text.replace(&name, "[another lead]");
    }
    serde_json::from_str(&text).map_err(internal)
}

/// The names (as written and as compared) of the leads linked to the
/// person's as possible duplicates, except names the person has too.
fn other_names(conn: &dyn Sql, person: &Person) -> Result<Vec<String>, DbError> {
    let own: BTreeSet<String> = person.names.iter().map(|n| n.to_lowercase()).collect();
    let mut names = BTreeSet::new();
    for &lead in &person.leads {
        let linked: Vec<(Option<String>, Option<String>)> = conn.query_all(
            "SELECT name, name_key FROM leads WHERE id IN
             (SELECT lead_b FROM duplicate_links WHERE lead_a = ?1
              UNION SELECT lead_a FROM duplicate_links WHERE lead_b = ?1)",
            args![lead],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for name in linked.into_iter().flat_map(|(n, k)| n.into_iter().chain(k)) {
            if name.trim().chars().count() >= 3 && !own.contains(&name.to_lowercase()) {
                // As serde_json writes it inside a string.
                let quoted = serde_json::to_string(&name).map_err(internal)?;
                names.insert(quoted[1..quoted.len() - 1].to_owned());
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// A lead folded or merged into another: what stays on it.
fn folded_lead(conn: &dyn Sql, id: i64) -> Result<serde_json::Value, DbError> {
    let (name, description, merged_into, created_at, updated_at, source) = conn.query_row(
        "SELECT name, description, merged_into, created_at, updated_at, source
         FROM leads WHERE id = ?1",
        args![id],
        |r| {
            Ok((
                r.get::<Option<String>>(0)?,
                r.get::<Option<String>>(1)?,
                r.get::<Option<i64>>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<Option<String>>(5)?,
            ))
        },
    )?;
    let history = conn.query_all(
        "SELECT at, field, old, new, source FROM history WHERE lead_id = ?1 ORDER BY id",
        args![id],
        |r| {
            Ok(serde_json::json!({
                "at": r.get::<String>(0)?,
                "field": r.get::<String>(1)?,
                "old": r.get::<Option<String>>(2)?,
                "new": r.get::<Option<String>>(3)?,
                "source": r.get::<String>(4)?,
            }))
        },
    )?;
    Ok(serde_json::json!({
        "id": id,
        "merged_into": merged_into,
        "name": name,
        "description": description,
        "source": source.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()),
        "created_at": created_at,
        "updated_at": updated_at,
        "history": history,
    }))
}

impl Db {
    /// Everything held on `subject` as one JSON document (see [`export`]);
    /// `None` when no lead or delivery of theirs is held.
    pub async fn export_person(
        &self,
        subject: Subject,
        region: country::Id,
    ) -> Result<Option<serde_json::Value>, DbError> {
        self.read(move |conn| {
            let person = person(conn, &subject)?;
            let (deliveries, _) = scan_all(conn, &person, region, 0)?;
            if person.leads.is_empty() && deliveries.is_empty() {
                return Ok(None);
            }
            export(conn, &person, &deliveries).map(Some)
        })
        .await
    }
}
