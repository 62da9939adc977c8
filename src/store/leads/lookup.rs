//! Who owns the identifiers a delivery carries (emails, phones, visitor
//! ids, its chat, the lead id a platform echoes), looked up together, and
//! the facts the merge policy decides from: a lead's values, its contacts,
//! whether it is anonymous, its pins. Reads only.

use super::survivor;
use crate::args;
use crate::crm::merge::{Contact, ContactKind, Current};
use crate::store::DbError;
use crate::store::sql::{Query, Row, Sql, Value};

/// The lead owning a normalised email or phone.
pub fn contact_owner(
    conn: &dyn Sql,
    kind: ContactKind,
    value: &str,
) -> Result<Option<i64>, DbError> {
    let sql = match kind {
        ContactKind::Email => "SELECT lead_id FROM lead_emails WHERE value = ?1",
        ContactKind::Phone => "SELECT lead_id FROM lead_phones WHERE value = ?1",
    };
    conn.query_opt(sql, args![value], |r| r.get(0))
}

/// The lead linked to a platform's visitor id.
pub fn visitor_owner(
    conn: &dyn Sql,
    platform: &str,
    visitor_id: &str,
) -> Result<Option<i64>, DbError> {
    conn.query_opt(
        "SELECT lead_id FROM lead_visitors WHERE platform = ?1 AND visitor_id = ?2",
        args![platform, visitor_id],
        |r| r.get(0),
    )
}

/// The lead owning a platform's chat.
pub fn chat_owner(conn: &dyn Sql, platform: &str, chat_id: &str) -> Result<Option<i64>, DbError> {
    conn.query_opt(
        "SELECT lead_id FROM conversations WHERE platform = ?1 AND chat_id = ?2",
        args![platform, chat_id],
        |r| r.get(0),
    )
}

/// The identifiers one delivery carries, to look up together.
pub struct Lookup<'a> {
    /// The platform the visitor ids and chat belong to.
    pub platform: &'a str,
    /// Normalised emails.
    pub emails: &'a [(String, String)],
    /// Normalised phones.
    pub phones: &'a [(String, String)],
    /// The platform's visitor ids.
    pub visitors: &'a [String],
    /// The chat the event belongs to.
    pub chat: Option<&'a str>,
    /// A lead id the platform echoes back.
    pub hint: Option<i64>,
}

/// Who owns each identifier of a [`Lookup`]; emails and phones answered
/// with the lead they live on now (folds followed).
#[derive(Debug, Default)]
pub struct Owners {
    /// The owner of each email, in order.
    pub emails: Vec<Option<i64>>,
    /// The owner of each phone, in order.
    pub phones: Vec<Option<i64>>,
    /// The owner of each visitor id, in order.
    pub visitors: Vec<Option<i64>>,
    /// The owner of the chat.
    pub chat: Option<i64>,
    /// The lead the platform echoes back, if it exists.
    pub hint: Option<i64>,
}

/// Looks every identifier of a delivery up at once (one round trip on
/// PostgreSQL, where each used to be its own), each contact with the
/// `merged_into` of its lead so that only a folded owner costs more.
pub fn owners(conn: &dyn Sql, lookup: &Lookup<'_>) -> Result<Owners, DbError> {
    const EMAIL: &str = "SELECT e.lead_id, l.merged_into FROM lead_emails e
         JOIN leads l ON l.id = e.lead_id WHERE e.value = ?1";
    const PHONE: &str = "SELECT p.lead_id, l.merged_into FROM lead_phones p
         JOIN leads l ON l.id = p.lead_id WHERE p.value = ?1";
    const VISITOR: &str =
        "SELECT lead_id FROM lead_visitors WHERE platform = ?1 AND visitor_id = ?2";
    const CHAT: &str = "SELECT lead_id FROM conversations WHERE platform = ?1 AND chat_id = ?2";
    const HINT: &str = "SELECT 1 FROM leads WHERE id = ?1";
    let email_args: Vec<[Value<'_>; 1]> =
        lookup.emails.iter().map(|(v, _)| [Value::of(v)]).collect();
    let phone_args: Vec<[Value<'_>; 1]> =
        lookup.phones.iter().map(|(v, _)| [Value::of(v)]).collect();
    let visitor_args: Vec<[Value<'_>; 2]> = lookup
        .visitors
        .iter()
        .map(|v| [Value::of(lookup.platform), Value::of(v)])
        .collect();
    let chat_args = lookup
        .chat
        .map(|c| [Value::of(lookup.platform), Value::of(c)]);
    let hint_args = lookup.hint.map(|h| [Value::Int(h)]);
    // What each query's rows answer, in the order the queries are sent.
    enum Slot {
        Email(usize),
        Phone(usize),
        Visitor(usize),
        Chat,
        Hint,
    }
    let mut queries = Vec::new();
    let mut slots = Vec::new();
    for (i, args) in email_args.iter().enumerate() {
        queries.push(Query::new(EMAIL, args));
        slots.push(Slot::Email(i));
    }
    for (i, args) in phone_args.iter().enumerate() {
        queries.push(Query::new(PHONE, args));
        slots.push(Slot::Phone(i));
    }
    for (i, args) in visitor_args.iter().enumerate() {
        queries.push(Query::new(VISITOR, args));
        slots.push(Slot::Visitor(i));
    }
    if let Some(args) = &chat_args {
        queries.push(Query::new(CHAT, args));
        slots.push(Slot::Chat);
    }
    if let Some(args) = &hint_args {
        queries.push(Query::new(HINT, args));
        slots.push(Slot::Hint);
    }
    let mut owners = Owners {
        emails: vec![None; email_args.len()],
        phones: vec![None; phone_args.len()],
        visitors: vec![None; visitor_args.len()],
        ..Owners::default()
    };
    // Contacts whose lead was folded, to follow afterwards: `(email?, index, next)`.
    let mut folded = Vec::new();
    conn.each_row_of(&queries, &mut |query, r| {
        match slots[query] {
            Slot::Email(i) | Slot::Phone(i) => {
                let email = matches!(slots[query], Slot::Email(_));
                let lead: i64 = r.get(0)?;
                match r.get::<Option<i64>>(1)? {
                    Some(into) => folded.push((email, i, into)),
                    None if email => owners.emails[i] = Some(lead),
                    None => owners.phones[i] = Some(lead),
                }
            }
            Slot::Visitor(i) => owners.visitors[i] = Some(r.get(0)?),
            Slot::Chat => owners.chat = Some(r.get(0)?),
            Slot::Hint => owners.hint = lookup.hint,
        }
        Ok(())
    })?;
    for (email, i, into) in folded {
        let lead = Some(survivor(conn, into)?);
        if email {
            owners.emails[i] = lead;
        } else {
            owners.phones[i] = lead;
        }
    }
    Ok(owners)
}

/// Whether the lead has neither email nor phone.
pub fn is_anonymous(conn: &dyn Sql, id: i64) -> Result<bool, DbError> {
    let id_arg = args![id];
    let mut anonymous = true;
    conn.each_row_of(
        &[
            Query::new(
                "SELECT 1 FROM lead_emails WHERE lead_id = ?1 LIMIT 1",
                id_arg,
            ),
            Query::new(
                "SELECT 1 FROM lead_phones WHERE lead_id = ?1 LIMIT 1",
                id_arg,
            ),
        ],
        &mut |_, _| {
            anonymous = false;
            Ok(())
        },
    )?;
    Ok(anonymous)
}

/// The query of a lead's emails or phones, primary first.
pub(in crate::store) fn contacts_sql(kind: ContactKind) -> &'static str {
    match kind {
        ContactKind::Email => {
            "SELECT value, raw, is_primary FROM lead_emails WHERE lead_id = ?1 ORDER BY is_primary DESC, id"
        }
        ContactKind::Phone => {
            "SELECT value, raw, is_primary FROM lead_phones WHERE lead_id = ?1 ORDER BY is_primary DESC, id"
        }
    }
}

/// A row of [`contacts_sql`].
pub(in crate::store) fn contact_row(r: &Row<'_>) -> Result<Contact, DbError> {
    Ok(Contact {
        value: r.get(0)?,
        raw: r.get(1)?,
        primary: r.get(2)?,
    })
}

/// A lead's emails or phones, primary first.
pub fn contacts(conn: &dyn Sql, kind: ContactKind, id: i64) -> Result<Vec<Contact>, DbError> {
    conn.query_all(contacts_sql(kind), args![id], contact_row)
}

/// What the merge policy needs to know about a lead (in one round trip on
/// PostgreSQL).
pub fn current(conn: &dyn Sql, id: i64) -> Result<Current, DbError> {
    let id_arg = args![id];
    let mut found = false;
    let mut current = Current::default();
    conn.each_row_of(
        &[
            Query::new("SELECT name, description FROM leads WHERE id = ?1", id_arg),
            Query::new(contacts_sql(ContactKind::Email), id_arg),
            Query::new(contacts_sql(ContactKind::Phone), id_arg),
        ],
        &mut |query, r| {
            match query {
                0 => {
                    found = true;
                    current.name = r.get(0)?;
                    current.description = r.get(1)?;
                }
                1 => current.emails.push(contact_row(r)?),
                _ => current.phones.push(contact_row(r)?),
            }
            Ok(())
        },
    )?;
    if !found {
        return Err(DbError::Internal(format!("no lead {id}")));
    }
    Ok(current)
}

/// Who pinned which of a lead's fields (see [`crate::crm::merge::Pins`]).
pub fn pins(conn: &dyn Sql, lead: i64) -> Result<crate::crm::merge::Pins, DbError> {
    let mut pins = crate::crm::merge::Pins::default();
    conn.each_row(
        "SELECT field, pinned_by FROM lead_pins WHERE lead_id = ?1",
        args![lead],
        &mut |r| {
            pins.set(&r.get::<String>(0)?, r.get(1)?);
            Ok(())
        },
    )?;
    Ok(pins)
}
