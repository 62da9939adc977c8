//! Reading leads back: the short card a platform answer is built from, and the
//! full lead shown by the JSON API and the lead pages.

use std::collections::BTreeMap;

use serde::Serialize;

use super::DbError;
use super::leads;
use super::sql::{Query, Row, Sql, Value};
use crate::args;
pub use crate::crm::card::LeadCard;
use crate::crm::merge::{Contact, ContactKind, Current};

/// Loads the card of `id`; `current_chat` is left out of "last chat".
pub fn card(
    conn: &dyn Sql,
    id: i64,
    current_chat: Option<(&str, &str)>,
) -> Result<LeadCard, DbError> {
    card_of(conn, id, current_chat, None)
}

/// [`card`], given the lead's name, description and contacts when they
/// were just read in the same transaction.
pub fn card_of(
    conn: &dyn Sql,
    id: i64,
    current_chat: Option<(&str, &str)>,
    known: Option<Current>,
) -> Result<LeadCard, DbError> {
    let (platform, chat) = current_chat.unwrap_or(("", ""));
    let id_arg = args![id];
    let chat_args = args![id, platform, chat];
    // Independent reads, sent together (one round trip on PostgreSQL).
    let mut queries = vec![
        Query::new(
            "SELECT name, description, status, owner FROM leads WHERE id = ?1",
            id_arg,
        ),
        Query::new(
            "SELECT count(*) FROM conversations WHERE lead_id = ?1",
            id_arg,
        ),
        Query::new(
            "SELECT platform, chat_id, started_at FROM conversations
             WHERE lead_id = ?1 AND NOT (platform = ?2 AND chat_id = ?3)
             ORDER BY started_at DESC LIMIT 1",
            chat_args,
        ),
        Query::new(DUPLICATE_LINKS, id_arg),
        Query::new(TAGS, id_arg),
        Query::new(FIELDS, id_arg),
    ];
    if known.is_none() {
        queries.push(Query::new(leads::contacts_sql(ContactKind::Email), id_arg));
        queries.push(Query::new(leads::contacts_sql(ContactKind::Phone), id_arg));
    }
    let mut row = None;
    let mut read = Current::default();
    let mut chats = 0;
    let mut last_chat = None;
    let mut duplicates = Vec::new();
    let mut tags = Vec::new();
    let mut fields = BTreeMap::new();
    conn.each_row_of(&queries, &mut |query, r| {
        match query {
            0 => {
                read.name = r.get(0)?;
                read.description = r.get(1)?;
                row = Some((r.get::<String>(2)?, r.get::<Option<String>>(3)?));
            }
            1 => chats = r.get(0)?,
            2 => last_chat = Some((r.get(0)?, r.get(1)?, r.get(2)?)),
            3 if duplicates.len() < 3 => {
                let link = duplicate_link(r)?;
                duplicates.push((link.id, link.name));
            }
            3 => {}
            4 => tags.push(r.get(0)?),
            5 => {
                fields.insert(r.get(0)?, r.get(1)?);
            }
            6 => read.emails.push(leads::contact_row(r)?),
            _ => read.phones.push(leads::contact_row(r)?),
        }
        Ok(())
    })?;
    let (status, owner) = row.ok_or_else(|| DbError::Internal(format!("no lead {id}")))?;
    let known = known.unwrap_or(read);
    Ok(LeadCard {
        id,
        name: known.name,
        description: known.description,
        status,
        owner,
        emails: known.emails,
        phones: known.phones,
        chats,
        last_chat,
        tags,
        fields,
        duplicates,
    })
}

/// The card of a lead the current delivery created, from what the writer
/// knows without reading it back: its values as the merge plan set them,
/// the conversation this delivery opened (if any: it has no other, so no
/// "last chat"), the delivery's tags and fields, and the duplicate links it
/// made (`(lead, score)`). Only the names of the linked leads are read.
pub struct NewLead<'a> {
    /// Name, description and contacts in the order they were added.
    pub values: Current,
    /// Whether the delivery stored a conversation (the event's own chat).
    pub chatted: bool,
    /// The delivery's tags, as given.
    pub tags: &'a [String],
    /// The delivery's custom fields, as given.
    pub fields: &'a [(String, String)],
    /// The duplicate links made: other lead and score.
    pub links: Vec<(i64, f64)>,
    /// The status it was created in (the pipeline's first).
    pub status: &'a str,
}

/// [`card`] of a lead created in this transaction, built from `new`.
pub fn new_lead_card<'a>(conn: &dyn Sql, id: i64, new: NewLead<'a>) -> Result<LeadCard, DbError> {
    let NewLead {
        values,
        chatted,
        tags,
        fields,
        mut links,
        status,
    } = new;
    // Primary first, then in the order added, as `leads::contacts` reads them.
    let ordered = |mut contacts: Vec<Contact>| {
        contacts.sort_by_key(|c| !c.primary);
        contacts
    };
    // The order of `duplicate_links`: best score first, then lead id.
    links.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<[Value<'_>; 1]> = links
        .iter()
        .take(3)
        .map(|(other, _)| [Value::Int(*other)])
        .collect();
    let queries: Vec<Query<'_>> = shown
        .iter()
        .map(|args| Query::new("SELECT name FROM leads WHERE id = ?1", args))
        .collect();
    let mut duplicates: Vec<(i64, Option<String>)> = Vec::with_capacity(shown.len());
    conn.each_row_of(&queries, &mut |query, r| {
        duplicates.push((links[query].0, r.get(0)?));
        Ok(())
    })?;
    // Text as the store gives it back: PostgreSQL keeps a U+0000 as U+FFFD.
    let postgres = conn.dialect() == super::sql::Dialect::Postgres;
    let stored = |s: &str| {
        if postgres && s.contains('\0') {
            s.replace('\0', "\u{FFFD}")
        } else {
            s.to_owned()
        }
    };
    let trimmed = |s: &'a str| Some(s.trim()).filter(|s| !s.is_empty());
    let tags: std::collections::BTreeSet<String> =
        tags.iter().filter_map(|t| trimmed(t)).map(stored).collect();
    let fields = fields
        .iter()
        .filter_map(|(k, v)| Some((stored(trimmed(k)?), stored(trimmed(v)?))))
        .collect();
    Ok(LeadCard {
        id,
        name: values
            .name
            .map(|n| if n.contains('\0') { stored(&n) } else { n }),
        description: values
            .description
            .map(|d| if d.contains('\0') { stored(&d) } else { d }),
        status: status.to_owned(),
        // Nobody owns a lead before staff take it.
        owner: None,
        emails: ordered(values.emails),
        phones: ordered(values.phones),
        chats: i64::from(chatted),
        last_chat: None,
        tags: tags.into_iter().collect(),
        fields,
        duplicates,
    })
}

const TAGS: &str = "SELECT tag FROM lead_tags WHERE lead_id = ?1 ORDER BY tag";

const FIELDS: &str = "SELECT key, value FROM lead_fields WHERE lead_id = ?1 ORDER BY key";

fn tags(conn: &dyn Sql, id: i64) -> Result<Vec<String>, DbError> {
    conn.query_all(TAGS, args![id], |r| r.get(0))
}

/// A lead's custom fields, by key.
pub fn fields(conn: &dyn Sql, id: i64) -> Result<BTreeMap<String, String>, DbError> {
    let mut out = BTreeMap::new();
    conn.each_row(FIELDS, args![id], &mut |r| {
        out.insert(r.get(0)?, r.get(1)?);
        Ok(())
    })?;
    Ok(out)
}

/// A possible duplicate of a lead, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateLink {
    /// The other lead.
    pub id: i64,
    /// Its name.
    pub name: Option<String>,
    /// Similarity, 0..1 (1 for identifier conflicts).
    pub score: f64,
    /// Why the pair was flagged.
    pub reason: String,
}

/// The possible duplicates of a lead, best first. Two index seeks (pairs
/// are stored once, lead_a < lead_b); an OR across both columns would cost
/// several times more on every answer.
const DUPLICATE_LINKS: &str = "SELECT l.id, l.name, d.score, d.reason FROM (
         SELECT lead_b AS other, score, reason FROM duplicate_links WHERE lead_a = ?1
         UNION ALL
         SELECT lead_a, score, reason FROM duplicate_links WHERE lead_b = ?1
     ) d JOIN leads l ON l.id = d.other
     ORDER BY d.score DESC, l.id";

fn duplicate_link(r: &Row<'_>) -> Result<DuplicateLink, DbError> {
    Ok(DuplicateLink {
        id: r.get(0)?,
        name: r.get(1)?,
        score: r.get(2)?,
        reason: r.get(3)?,
    })
}

/// The possible duplicates of lead `id`, best first.
pub(super) fn duplicate_links(conn: &dyn Sql, id: i64) -> Result<Vec<DuplicateLink>, DbError> {
    conn.query_all(DUPLICATE_LINKS, args![id], duplicate_link)
}

/// An email or phone in the JSON lead.
#[derive(Debug, Clone, Serialize)]
pub struct ContactView {
    /// Normalised value.
    pub value: String,
    /// As received.
    pub raw: String,
    /// Whether primary.
    pub primary: bool,
}

/// A message in the JSON lead.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// `visitor`, `agent` or `system`.
    pub from: String,
    /// Author name, if known.
    pub author: Option<String>,
    /// Text.
    pub text: String,
    /// When.
    pub at: Option<String>,
}

/// A conversation in the JSON lead.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationView {
    /// Platform.
    pub platform: String,
    /// Platform chat id.
    pub chat_id: String,
    /// Agent.
    pub agent: Option<String>,
    /// Whether closed.
    pub closed: bool,
    /// First message or first sight.
    pub started_at: String,
    /// Messages in order.
    pub messages: Vec<MessageView>,
}

/// A note in the JSON lead.
#[derive(Debug, Clone, Serialize)]
pub struct NoteView {
    /// Platform.
    pub platform: String,
    /// `offline_message`, `ticket`, `note` (staff), …
    pub kind: String,
    /// Text.
    pub text: String,
    /// When.
    pub at: String,
    /// Who wrote a staff note (`staff NAME`, `token NAME`); null for the
    /// platforms' notes.
    pub author: Option<String>,
}

/// A history entry in the JSON lead.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// When.
    pub at: String,
    /// What changed.
    pub field: String,
    /// From.
    pub old: Option<String>,
    /// To.
    pub new: Option<String>,
    /// Which delivery (platform, event, chat).
    pub source: String,
    /// The stored raw delivery's id.
    pub delivery_id: Option<i64>,
    /// The decision behind the change.
    pub explanation: Option<serde_json::Value>,
}

/// The whole lead, as `GET /api/leads/{id}` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct LeadView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Status.
    pub status: String,
    /// The sales user who owns the lead, if one does.
    pub owner: Option<String>,
    /// Grows by one with every change of the lead: the `ETag`, and what
    /// `If-Match` and the forms compare.
    pub version: i64,
    /// Where the lead came from (`platform`, and `channel`, `department`,
    /// `group`, `utm_campaign`, `landing_page` when known); null for leads
    /// older than sources.
    pub source: Option<serde_json::Value>,
    /// Emails, primary first.
    pub emails: Vec<ContactView>,
    /// Phones, primary first.
    pub phones: Vec<ContactView>,
    /// Tags.
    pub tags: Vec<String>,
    /// Custom fields.
    pub custom_fields: BTreeMap<String, String>,
    /// Platform visitor ids linked to the lead.
    pub visitor_ids: Vec<String>,
    /// Conversations, oldest first.
    pub conversations: Vec<ConversationView>,
    /// Notes, oldest first.
    pub notes: Vec<NoteView>,
    /// Ids of possible duplicates.
    pub possible_duplicates: Vec<i64>,
    /// Possible duplicates with reasons.
    pub duplicate_details: Vec<DuplicateLink>,
    /// Every change, oldest first.
    pub history: Vec<HistoryView>,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
}

/// What an id answers with.
#[derive(Debug, Clone)]
pub enum Found {
    /// The lead.
    Lead(Box<LeadView>),
    /// The id belongs to a lead folded into this one.
    MergedInto(i64),
    /// No such id.
    Missing,
}

/// Loads the whole lead.
pub fn lead(conn: &dyn Sql, id: i64) -> Result<Found, DbError> {
    let row = conn.query_opt(
        "SELECT name, description, status, merged_into, created_at, updated_at,
                owner, version, source
         FROM leads WHERE id = ?1",
        args![id],
        |r| {
            Ok((
                (
                    r.get::<Option<String>>(0)?,
                    r.get::<Option<String>>(1)?,
                    r.get::<String>(2)?,
                    r.get::<Option<i64>>(3)?,
                    r.get::<String>(4)?,
                    r.get::<String>(5)?,
                ),
                (
                    r.get::<Option<String>>(6)?,
                    r.get::<i64>(7)?,
                    r.get::<Option<String>>(8)?,
                ),
            ))
        },
    )?;
    let Some((
        (name, description, status, merged_into, created_at, updated_at),
        (owner, version, source),
    )) = row
    else {
        return Ok(Found::Missing);
    };
    if merged_into.is_some() {
        return Ok(Found::MergedInto(leads::survivor(conn, id)?));
    }
    let contacts = |kind| -> Result<Vec<ContactView>, DbError> {
        Ok(leads::contacts(conn, kind, id)?
            .into_iter()
            .map(|c| ContactView {
                value: c.value,
                raw: c.raw,
                primary: c.primary,
            })
            .collect())
    };
    let duplicate_details = duplicate_links(conn, id)?;
    Ok(Found::Lead(Box::new(LeadView {
        id,
        name,
        description,
        status,
        owner,
        version,
        source: source.and_then(|s| serde_json::from_str(&s).ok()),
        emails: contacts(ContactKind::Email)?,
        phones: contacts(ContactKind::Phone)?,
        tags: tags(conn, id)?,
        custom_fields: fields(conn, id)?,
        visitor_ids: visitor_ids(conn, id)?,
        conversations: conversations(conn, id)?,
        notes: notes(conn, id)?,
        possible_duplicates: duplicate_details.iter().map(|d| d.id).collect(),
        duplicate_details,
        history: history(conn, id)?,
        created_at,
        updated_at,
    })))
}

fn visitor_ids(conn: &dyn Sql, id: i64) -> Result<Vec<String>, DbError> {
    conn.query_all(
        "SELECT platform || ':' || visitor_id FROM lead_visitors WHERE lead_id = ?1 ORDER BY created_at",
        args![id],
        |r| r.get(0),
    )
}

fn conversations(conn: &dyn Sql, id: i64) -> Result<Vec<ConversationView>, DbError> {
    let rows: Vec<(i64, ConversationView)> = conn.query_all(
        "SELECT id, platform, chat_id, agent, closed, started_at FROM conversations
         WHERE lead_id = ?1 ORDER BY started_at, id",
        args![id],
        |r| {
            Ok((
                r.get(0)?,
                ConversationView {
                    platform: r.get(1)?,
                    chat_id: r.get(2)?,
                    agent: r.get(3)?,
                    closed: r.get(4)?,
                    started_at: r.get(5)?,
                    messages: Vec::new(),
                },
            ))
        },
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (conversation_id, mut view) in rows {
        view.messages = conn.query_all(
            "SELECT sender, author, text, at FROM messages WHERE conversation_id = ?1
             ORDER BY coalesce(at, ''), id",
            args![conversation_id],
            |r| {
                Ok(MessageView {
                    from: r.get(0)?,
                    author: r.get(1)?,
                    text: r.get(2)?,
                    at: r.get(3)?,
                })
            },
        )?;
        out.push(view);
    }
    Ok(out)
}

fn notes(conn: &dyn Sql, id: i64) -> Result<Vec<NoteView>, DbError> {
    conn.query_all(
        "SELECT platform, kind, text, at, author FROM notes WHERE lead_id = ?1 ORDER BY at, id",
        args![id],
        |r| {
            Ok(NoteView {
                platform: r.get(0)?,
                kind: r.get(1)?,
                text: r.get(2)?,
                at: r.get(3)?,
                author: r.get(4)?,
            })
        },
    )
}

fn history(conn: &dyn Sql, id: i64) -> Result<Vec<HistoryView>, DbError> {
    let mut out = Vec::new();
    conn.each_row(
        "SELECT h.at, h.field, h.old, h.new, h.source, h.delivery_id, h.explanation, d.explanation
         FROM history h LEFT JOIN decisions d ON d.id = h.decision_id
         WHERE h.lead_id = ?1 ORDER BY h.id",
        args![id],
        &mut |r| {
            let row: Option<String> = r.get(6)?;
            let decision: Option<String> = r.get(7)?;
            let (at, source, delivery_id): (String, String, Option<i64>) =
                (r.get(0)?, r.get(4)?, r.get(5)?);
            let entries = leads::entries(
                (r.get(1)?, r.get(2)?, r.get(3)?),
                row.as_deref(),
                decision.as_deref(),
            );
            out.extend(entries.into_iter().map(|e| HistoryView {
                at: at.clone(),
                field: e.field,
                old: e.old,
                new: e.new,
                source: source.clone(),
                delivery_id,
                explanation: e.explanation,
            }));
            Ok(())
        },
    )?;
    Ok(out)
}
