//! SQL on leads and what hangs off them. Every function takes a connection
//! already inside the caller's transaction.

use std::borrow::Cow;

use super::DbError;
use super::sql::{Query, Row, Sql, Value};
use crate::args;
use crate::crm::duplicates::reversed;
use crate::crm::explain::Explanation;
use crate::crm::identity::name_key;
use crate::crm::merge::{Change, Contact, ContactKind, Current};

/// How many `merged_into` hops are followed before giving up (cycles cannot
/// happen, since only anonymous leads are folded, but never loop forever).
const MAX_FOLD_HOPS: usize = 16;

/// Where a history row comes from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The delivery that caused the change (none for imports and people).
    pub delivery_id: Option<i64>,
    /// Readable origin, e.g. `jivo chat_updated 7636`.
    pub label: String,
    /// When.
    pub at: String,
}

/// The lead a possibly folded id now lives on.
pub fn survivor(conn: &dyn Sql, mut id: i64) -> Result<i64, DbError> {
    for _ in 0..MAX_FOLD_HOPS {
        let next: Option<Option<i64>> = conn.query_opt(
            "SELECT merged_into FROM leads WHERE id = ?1",
            args![id],
            |r| r.get(0),
        )?;
        match next.flatten() {
            Some(into) => id = into,
            None => return Ok(id),
        }
    }
    Ok(id)
}

/// Whether the lead exists.
pub fn exists(conn: &dyn Sql, id: i64) -> Result<bool, DbError> {
    conn.exists("SELECT 1 FROM leads WHERE id = ?1", args![id])
}

/// The table holding a lead's emails or phones.
pub(super) fn table(kind: ContactKind) -> &'static str {
    match kind {
        ContactKind::Email => "lead_emails",
        ContactKind::Phone => "lead_phones",
    }
}

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
pub(super) fn contacts_sql(kind: ContactKind) -> &'static str {
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
pub(super) fn contact_row(r: &Row<'_>) -> Result<Contact, DbError> {
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

/// Where a new lead starts: its status (the pipeline's first) and where
/// it came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The status a new lead starts in.
    pub status: &'a str,
    /// The platform (or `import`) of the delivery that created it.
    pub platform: &'a str,
    /// What else the delivery says of where the visitor came from.
    pub source: Option<&'a crate::event::LeadSource>,
}

/// Creates an empty lead; the caller fills it through [`write_changes`].
/// Its source is written here, once: no later delivery changes it.
pub fn create(conn: &dyn Sql, at: &str, origin: Origin<'_>) -> Result<i64, DbError> {
    let source = crate::event::LeadSource::json(origin.platform, origin.source);
    let channel = origin.source.and_then(|s| s.channel());
    let campaign = origin.source.and_then(|s| s.utm_campaign.as_deref());
    conn.insert_id(
        "INSERT INTO leads (created_at, updated_at, status, source, source_platform,
                            source_channel, source_campaign)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6)",
        args![
            at,
            origin.status,
            source,
            origin.platform,
            channel,
            campaign
        ],
    )?
    .ok_or_else(|| DbError::Internal("lead not inserted".into()))
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

/// Writes a history row; `why`, when given, is the decision behind it.
pub fn history(
    conn: &dyn Sql,
    lead: i64,
    field: &str,
    old: Option<&str>,
    new: Option<&str>,
    source: &Source,
    why: Option<Why<'_>>,
) -> Result<(), DbError> {
    let (decision, explanation) = match why {
        Some(why) => (Some(why.decision.id(conn)?), why.change_json()),
        None => (None, None),
    };
    insert_history(
        conn,
        lead,
        (field, old, new),
        source,
        decision,
        explanation.as_deref(),
    )
}

/// The history row itself: `(field, old, new)`, the decision's id and the
/// row's own `explanation` column.
fn insert_history(
    conn: &dyn Sql,
    lead: i64,
    (field, old, new): (&str, Option<&str>, Option<&str>),
    source: &Source,
    decision: Option<i64>,
    explanation: Option<&str>,
) -> Result<(), DbError> {
    conn.execute_later(
        "INSERT INTO history (lead_id, at, field, old, new, delivery_id, source, explanation, decision_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            lead,
            source.at,
            field,
            old,
            new,
            source.delivery_id,
            source.label,
            explanation,
            decision
        ],
    )?;
    Ok(())
}

/// Marks the lead changed: `updated_at`, and its `version` (the API's
/// ETag, what forms carry) in the same statement, so that no change goes
/// unseen and none costs a statement more.
pub(super) fn touch(conn: &dyn Sql, lead: i64, at: &str) -> Result<(), DbError> {
    conn.execute_later(
        "UPDATE leads SET updated_at = ?2, version = version + 1 WHERE id = ?1",
        args![lead, at],
    )
}

/// A delivery's decision, serialised once and stored once (in `decisions`,
/// when the first history row that needs it is written), however many
/// history rows the delivery writes: a new lead writes four or more.
///
/// Values in it are clipped to [`EXPLAINED_CHARS`]: the full values are the
/// history rows' own `old`/`new`. Only the structured decision is stored:
/// its words (the `summary` lines, each change's `change_text`) are made
/// from it when it is read ([`explanation`]).
pub struct Decision {
    text: String,
    id: std::cell::Cell<Option<i64>>,
}

impl Decision {
    /// Serialises `why`, long values clipped.
    pub fn new(why: &Explanation) -> Decision {
        let text = format!(
            r#"{{"decision":{},"why":{}}}"#,
            clipped_json(&why.decision),
            clipped_json(why),
        );
        Decision {
            text,
            id: std::cell::Cell::new(None),
        }
    }

    /// Why a history row was written: this decision, and the row's own
    /// change if it records one.
    pub fn row<'a>(&'a self, change: Option<&'a Change>) -> Why<'a> {
        Why {
            decision: self,
            change,
        }
    }

    /// The `decisions` row, written the first time it is asked for. The
    /// caller's transaction holds it; a `Decision` never outlives the
    /// delivery (and the transaction) it was made for.
    fn id(&self, conn: &dyn Sql) -> Result<i64, DbError> {
        if let Some(id) = self.id.get() {
            return Ok(id);
        }
        let id = conn
            .insert_id(
                "INSERT INTO decisions (explanation) VALUES (?1)",
                args![self.text],
            )?
            .ok_or_else(|| DbError::Internal("decision not inserted".into()))?;
        self.id.set(Some(id));
        Ok(id)
    }
}

/// The decision behind one history row.
#[derive(Clone, Copy)]
pub struct Why<'a> {
    decision: &'a Decision,
    change: Option<&'a Change>,
}

impl Why<'_> {
    /// The row's own `explanation` column: its change; none for a row that
    /// records no change of a value.
    fn change_json(&self) -> Option<String> {
        let change = self.change?;
        Some(format!(r#"{{"change":{}}}"#, clipped_json(change)))
    }
}

/// A history row's explanation as readers see it: the delivery's decision
/// (`decision`, `why`, and `summary`: the decision in words) with the
/// row's own `change` and `change_text` (the change in words), as one
/// object. `row` is the history row's `explanation` column, `decision` its
/// `decisions` row; rows written before decisions were stored apart hold
/// the whole object in `row`, and rows written before the words were made
/// on reading hold their words.
fn explanation(row: Option<&str>, decision: Option<&str>) -> Option<serde_json::Value> {
    use serde_json::{Map, Value};
    let parse = |text: &str| serde_json::from_str::<Map<String, Value>>(text).ok();
    let Some(decision) = decision else {
        return row.and_then(parse).map(Value::Object);
    };
    let object = decision_object(decision)?;
    let mut own = row.and_then(parse).unwrap_or_default();
    let change = own.remove("change").unwrap_or(Value::Null);
    Some(with_change(object, change, own.remove("change_text")))
}

/// A `decisions` row as an object, with its words ([`worded`]).
fn decision_object(decision: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut object = serde_json::from_str(decision).ok()?;
    worded(&mut object);
    Some(object)
}

/// A decision with one history entry's own `change` and `change_text`
/// (made from the change unless the row stored its words).
fn with_change(
    mut decision: serde_json::Map<String, serde_json::Value>,
    change: serde_json::Value,
    text: Option<serde_json::Value>,
) -> serde_json::Value {
    let text = text.unwrap_or_else(|| change_text(&change));
    decision.insert("change".into(), change);
    decision.insert("change_text".into(), text);
    serde_json::Value::Object(decision)
}

/// Adds the `summary` lines of a stored decision, made from its `why` as
/// they were made when the decision was stored with them: each line
/// [`clipped`], from the clipped values the decision holds.
fn worded(decision: &mut serde_json::Map<String, serde_json::Value>) {
    use serde::Deserialize;
    if decision.contains_key("summary") {
        return;
    }
    let Some(why) = decision
        .get("why")
        .and_then(|why| Explanation::deserialize(why).ok())
    else {
        return;
    };
    let lines: Vec<serde_json::Value> =
        why.lines().into_iter().map(|l| clipped(l).into()).collect();
    decision.insert("summary".into(), lines.into());
}

/// A stored change in words ([`crate::crm::explain::describe`], clipped);
/// null for no change.
fn change_text(change: &serde_json::Value) -> serde_json::Value {
    use serde::Deserialize;
    match Change::deserialize(change) {
        Ok(change) => clipped(crate::crm::explain::describe(&change)).into(),
        Err(_) => serde_json::Value::Null,
    }
}

/// One entry of a lead's history as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// What changed.
    pub field: String,
    /// From.
    pub old: Option<String>,
    /// To.
    pub new: Option<String>,
    /// The decision behind it (see [`explanation`]).
    pub explanation: Option<serde_json::Value>,
}

/// The history entries one stored row stands for: the row itself and, for
/// a new lead's `created` row written with [`Record::Created`], each change
/// it holds, as [`Record::Rows`] would have written them. `row` is the
/// row's `explanation` column, `decision` its `decisions` row.
pub fn entries(
    (field, old, new): (String, Option<String>, Option<String>),
    row: Option<&str>,
    decision: Option<&str>,
) -> Vec<Entry> {
    let packed = row
        .filter(|r| r.starts_with(r#"{"entries":"#))
        .and_then(|r| serde_json::from_str::<Packed<'_>>(r).ok());
    let Some(packed) = packed else {
        return vec![Entry {
            field,
            old,
            new,
            explanation: explanation(row, decision),
        }];
    };
    let mut out = Vec::with_capacity(1 + packed.entries.len());
    let decision = decision.and_then(decision_object);
    out.push(Entry {
        field,
        old,
        new,
        explanation: decision
            .clone()
            .map(|d| with_change(d, serde_json::Value::Null, None)),
    });
    for entry in packed.entries {
        let explanation = entry.change.and_then(|change| {
            decision.clone().map(|object| {
                // `Map` indexing panics on a missing key; `Value` indexing
                // gives null.
                let change = object.get("why").map_or(serde_json::Value::Null, |why| {
                    why["changes"][change].clone()
                });
                with_change(object, change, entry.change_text.map(Into::into))
            })
        });
        out.push(Entry {
            field: entry.field.into_owned(),
            old: entry.old.map(Cow::into_owned),
            new: entry.new.map(Cow::into_owned),
            explanation,
        });
    }
    out
}

/// `text` clipped as [`clipped_json`] clips each string.
fn clipped(text: String) -> String {
    if text.len() <= EXPLAINED_CHARS {
        return text;
    }
    let mut value = serde_json::Value::String(text);
    clip_strings(&mut value);
    match value {
        serde_json::Value::String(text) => text,
        _ => unreachable!("a string stays a string"),
    }
}

/// `value` as JSON with strings longer than [`EXPLAINED_CHARS`] clipped.
/// Serialised straight to text, which is all it takes unless some string
/// is long: then through a `Value` that is clipped first.
fn clipped_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    if !has_long_string(&text) {
        return text;
    }
    let mut value = serde_json::to_value(value).unwrap_or_default();
    clip_strings(&mut value);
    value.to_string()
}

/// Whether a JSON text may hold a string of more than [`EXPLAINED_CHARS`]
/// characters. Bytes are counted, never fewer than the characters they
/// encode, and an escape never fewer than the character it stands for, so a
/// `false` is certain (a `true` for a string of many non-ASCII characters
/// only sends it the slow way, which clips nothing). Strings are found with
/// `memchr` (every explanation passes through here: a byte-at-a-time loop
/// was 3 % of a new lead's writer time).
fn has_long_string(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut at = 0;
    while let Some(open) = memchr::memchr(b'"', &bytes[at..]) {
        let start = at + open + 1;
        let mut end = start;
        // To the closing quote, stepping over escapes (`\"` included).
        loop {
            match memchr::memchr2(b'"', b'\\', &bytes[end..]) {
                None => return bytes.len() - start > EXPLAINED_CHARS,
                Some(i) if bytes[end + i] == b'\\' => end = (end + i + 2).min(bytes.len()),
                Some(i) => {
                    end += i;
                    break;
                }
            }
        }
        if end - start > EXPLAINED_CHARS {
            return true;
        }
        at = end + 1;
    }
    false
}

/// Longest string kept whole in a stored explanation.
pub const EXPLAINED_CHARS: usize = 200;

fn clip_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Some((cut, _)) = s.char_indices().nth(EXPLAINED_CHARS) {
                let total = s.chars().count();
                s.truncate(cut);
                s.push_str(&format!("… ({total} characters)"));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clip_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(clip_strings),
        _ => {}
    }
}

/// How [`write_changes`] records its changes in the history.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// One history row per change.
    Rows,
    /// The delivery created the lead by this rule: one `created` row that
    /// holds every change as an entry (read back as one history entry per
    /// change, exactly as [`Record::Rows`] would have written them; see
    /// [`entries`]), returned open as a [`Created`] for the rest of the
    /// delivery's entries. A new lead's initial values took four to eight
    /// rows, each with its index entries and three foreign-key checks.
    Created(&'a str),
}

/// A new lead's `created` history row ([`Record::Created`]), open while the
/// delivery that made the lead fills it: its custom fields, tags and event
/// are entries of it too, where each was a row of its own (read back the
/// same, see [`entries`]). [`Created::write`] stores it; the caller writes
/// it once the delivery's last entry is in, before anything reads the
/// lead's history.
#[must_use = "a new lead's history is stored by Created::write"]
#[derive(Debug)]
pub struct Created {
    lead: i64,
    rule: String,
    decision: i64,
    entries: Vec<PackedEntry<'static>>,
}

impl Created {
    /// Adds an entry that is not a change of the decision (a custom field,
    /// the tags, an event): read back as the row [`history`] would have
    /// written for it without a decision.
    pub fn add(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        old: Option<String>,
        new: Option<String>,
    ) {
        self.entries.push(PackedEntry {
            field: field.into(),
            old: old.map(Cow::Owned),
            new: new.map(Cow::Owned),
            change: None,
            change_text: None,
        });
    }

    /// Stores the row.
    pub fn write(self, conn: &dyn Sql, source: &Source) -> Result<(), DbError> {
        let text = serde_json::to_string(&Packed {
            entries: self.entries,
        })
        .map_err(|e| DbError::Internal(format!("history entries: {e}")))?;
        insert_history(
            conn,
            self.lead,
            ("created", None, Some(&self.rule)),
            source,
            Some(self.decision),
            Some(&text),
        )
    }
}

/// A history entry about to be written, in the order of the changes: its
/// field, old and new value.
type Pending<'a> = (Cow<'static, str>, Option<String>, Option<&'a str>);

/// Applies a merge plan made against `current` (what the lead held before
/// it), recording each change (a value the policy did not take included)
/// in the history as `record` says, pointing at the delivery's decision:
/// the open `created` row with [`Record::Created`] (for the caller to
/// write), none with [`Record::Rows`].
/// Which contact is primary is followed from `current` rather than read
/// back for each change; `current` of a new lead is empty, so its changes
/// only insert.
pub fn write_changes(
    conn: &dyn Sql,
    lead: i64,
    current: &Current,
    changes: &[Change],
    decision: &Decision,
    source: &Source,
    record: Record<'_>,
) -> Result<Option<Created>, DbError> {
    let primary_of =
        |contacts: &[Contact]| contacts.iter().find(|c| c.primary).map(|c| c.value.clone());
    // The primary email and phone as the changes so far left them.
    let mut primaries = [primary_of(&current.emails), primary_of(&current.phones)];
    let slot = |kind: ContactKind| match kind {
        ContactKind::Email => 0,
        ContactKind::Phone => 1,
    };
    let mut altered = false;
    let mut pending: Vec<Pending<'_>> = Vec::with_capacity(changes.len());
    for change in changes {
        #[cfg(debug_assertions)]
        for kind in [ContactKind::Email, ContactKind::Phone] {
            debug_assert_eq!(
                primaries[slot(kind)],
                primary_value(conn, kind, lead)?,
                "primary {kind:?} followed wrongly for lead {lead}"
            );
        }
        altered |= change.alters();
        match change {
            Change::Name { old, new, .. } => {
                let key = name_key(new);
                conn.execute_later(
                    "UPDATE leads SET name = ?2, name_key = ?3, name_rev = ?4 WHERE id = ?1",
                    args![
                        lead,
                        new,
                        (!key.is_empty()).then(|| key.clone()),
                        (!key.is_empty()).then(|| reversed(&key))
                    ],
                )?;
                pending.push(("name".into(), old.clone(), Some(new)));
            }
            Change::Description { old, new, .. } => {
                conn.execute_later(
                    "UPDATE leads SET description = ?2 WHERE id = ?1",
                    args![lead, new],
                )?;
                pending.push(("description".into(), old.clone(), Some(new)));
            }
            Change::Add {
                kind,
                value,
                raw,
                primary,
                ..
            } => {
                let old_primary = primaries[slot(*kind)].clone();
                if *primary {
                    if old_primary.is_some() {
                        clear_primary(conn, *kind, lead)?;
                    }
                    primaries[slot(*kind)] = Some(value.clone());
                }
                let sql = format!(
                    "INSERT INTO {} (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    table(*kind)
                );
                conn.execute_later(&sql, args![lead, value, raw, primary, source.at])?;
                let old = if *primary { old_primary } else { None };
                pending.push((kind.as_str().into(), old, Some(value)));
            }
            Change::Remove { kind, value, .. } => {
                let sql = format!(
                    "DELETE FROM {} WHERE lead_id = ?1 AND value = ?2",
                    table(*kind)
                );
                conn.execute_later(&sql, args![lead, value])?;
                if primaries[slot(*kind)].as_ref() == Some(value) {
                    primaries[slot(*kind)] = None;
                }
                pending.push((kind.as_str().into(), Some(value.clone()), None));
            }
            Change::MakePrimary {
                kind, value, old, ..
            } => {
                if primaries[slot(*kind)].is_some() {
                    clear_primary(conn, *kind, lead)?;
                }
                primaries[slot(*kind)] = Some(value.clone());
                let sql = format!(
                    "UPDATE {} SET is_primary = 1 WHERE lead_id = ?1 AND value = ?2",
                    table(*kind)
                );
                conn.execute_later(&sql, args![lead, value])?;
                let field = format!("primary {}", kind.as_str());
                pending.push((field.into(), old.clone(), Some(value)));
            }
            Change::Kept {
                field, incoming, ..
            } => {
                // Not a change of the lead, but the policy's decision to drop
                // a value: recorded so the operator can see what was lost.
                let field = format!("{field} not taken");
                pending.push((field.into(), None, Some(incoming)));
            }
        }
    }
    match record {
        Record::Rows => {
            for ((field, old, new), change) in pending.iter().zip(changes) {
                history(
                    conn,
                    lead,
                    field,
                    old.as_deref(),
                    *new,
                    source,
                    Some(decision.row(Some(change))),
                )?;
            }
        }
        Record::Created(rule) => {
            let entries = pending
                .into_iter()
                .enumerate()
                .map(|(change, (field, old, new))| PackedEntry {
                    field,
                    old: old.map(Cow::Owned),
                    new: new.map(|new| Cow::Owned(new.to_owned())),
                    change: Some(change),
                    change_text: None,
                })
                .collect();
            return Ok(Some(Created {
                lead,
                rule: rule.to_owned(),
                decision: decision.id(conn)?,
                entries,
            }));
        }
    }
    // A lead created by this delivery was updated when it was created.
    if altered {
        touch(conn, lead, &source.at)?;
    }
    Ok(None)
}

/// The `explanation` column of a packed `created` row.
#[derive(serde::Serialize, serde::Deserialize)]
struct Packed<'a> {
    #[serde(borrow)]
    entries: Vec<PackedEntry<'a>>,
}

/// One entry a packed `created` row holds: the history entry it stands
/// for, and for a change of the decision its place in `why.changes` (none
/// for a custom field, tags or an event, which had no decision).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PackedEntry<'a> {
    #[serde(borrow)]
    field: Cow<'a, str>,
    #[serde(borrow)]
    old: Option<Cow<'a, str>>,
    #[serde(borrow)]
    new: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<usize>,
    /// The change in words, in rows written before words were made on
    /// reading ([`explanation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change_text: Option<String>,
}

/// Read back only to check, in debug builds, the primaries `write_changes`
/// follows.
#[cfg(debug_assertions)]
fn primary_value(conn: &dyn Sql, kind: ContactKind, lead: i64) -> Result<Option<String>, DbError> {
    let sql = format!(
        "SELECT value FROM {} WHERE lead_id = ?1 AND is_primary = 1",
        table(kind)
    );
    conn.query_opt(&sql, args![lead], |r| r.get(0))
}

fn clear_primary(conn: &dyn Sql, kind: ContactKind, lead: i64) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE {} SET is_primary = 0 WHERE lead_id = ?1 AND is_primary = 1",
        table(kind)
    );
    conn.execute_later(&sql, args![lead])
}

/// Links a platform visitor id to a lead, unless it is linked already
/// (an identifier owned by one lead is never moved to another).
pub fn link_visitor(
    conn: &dyn Sql,
    platform: &str,
    visitor_id: &str,
    lead: i64,
    at: &str,
) -> Result<(), DbError> {
    conn.execute_later(
        "INSERT INTO lead_visitors (platform, visitor_id, lead_id, created_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        args![platform, visitor_id, lead, at],
    )
}

/// Links two leads as possible duplicates (once per pair; the first reason stays).
/// Returns whether a new link was made.
pub fn link_duplicate(
    conn: &dyn Sql,
    a: i64,
    b: i64,
    score: f64,
    reason: &str,
    at: &str,
) -> Result<bool, DbError> {
    if a == b {
        return Ok(false);
    }
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    // A pair staff dismissed is never linked again (one key lookup in a
    // table that is empty but for dismissals).
    let n = conn.execute(
        "INSERT INTO duplicate_links (lead_a, lead_b, score, reason, created_at)
         SELECT CAST(?1 AS BIGINT), CAST(?2 AS BIGINT), CAST(?3 AS DOUBLE PRECISION),
                CAST(?4 AS TEXT), CAST(?5 AS TEXT)
         WHERE NOT EXISTS (SELECT 1 FROM dismissed_duplicates WHERE lead_a = ?1 AND lead_b = ?2)
         ON CONFLICT DO NOTHING",
        args![lo, hi, score, reason, at],
    )?;
    Ok(n > 0)
}

/// Folds anonymous lead `from` into `into`: its visitor ids, conversations,
/// notes, tags and fields move; `from` keeps answering with a pointer
/// (see [`super::merges::absorb`], which also records it for an unmerge).
/// `explanation` is the decision the history rows point at.
pub fn fold(
    conn: &dyn Sql,
    from: i64,
    into: i64,
    source: &Source,
    explanation: Option<Why<'_>>,
) -> Result<(), DbError> {
    // Recorded in `merges` like staff's merges, so that it can be undone.
    super::merges::absorb(
        conn,
        into,
        from,
        &super::merges::Keep::default(),
        super::merges::Kind::Fold,
        source,
    )?;
    let (name, description): (Option<String>, Option<String>) = conn.query_row(
        "SELECT name, description FROM leads WHERE id = ?1",
        args![from],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let note = format!(
        "lead {from} folded in{}",
        name.map(|n| format!(" (was named {n:?})"))
            .unwrap_or_default()
    );
    history(
        conn,
        into,
        "folded",
        Some(&from.to_string()),
        Some(&note),
        source,
        explanation,
    )?;
    history(
        conn,
        from,
        "merged_into",
        None,
        Some(&into.to_string()),
        source,
        explanation,
    )?;
    if let Some(d) = description {
        history(
            conn,
            into,
            "folded description",
            None,
            Some(&d),
            source,
            explanation,
        )?;
    }
    touch(conn, into, &source.at)
}

/// Adds tags; returns how many were new.
pub fn add_tags(conn: &dyn Sql, lead: i64, tags: &[String]) -> Result<usize, DbError> {
    let mut added = 0;
    for tag in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        added += conn.execute(
            "INSERT INTO lead_tags (lead_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![lead, tag],
        )?;
    }
    Ok(added)
}

/// Records `new` under `field` (tags, an event: no decision): an entry of
/// the open `created` row of a lead this delivery made, else a history row.
pub fn entry(
    conn: &dyn Sql,
    lead: i64,
    created: Option<&mut Created>,
    field: &str,
    new: &str,
    source: &Source,
) -> Result<(), DbError> {
    match created {
        Some(created) => {
            created.add(field.to_owned(), None, Some(new.to_owned()));
            Ok(())
        }
        None => history(conn, lead, field, None, Some(new), source, None),
    }
}

/// Sets custom fields, recording each change in the history; returns how
/// many changed. `created` is the open `created` row of a lead this
/// delivery made: the lead has no fields yet, so the previous values need
/// not be read, and each change is an entry of that row.
pub fn set_fields(
    conn: &dyn Sql,
    lead: i64,
    fields: &[(String, String)],
    mut created: Option<&mut Created>,
    source: &Source,
) -> Result<usize, DbError> {
    let fresh = created.is_some();
    let mut changed = 0;
    let mut set: Vec<(&str, &str)> = Vec::new();
    for (key, value) in fields {
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            continue;
        }
        let old: Option<String> = if fresh {
            // Only what this call set before (a key given twice).
            set.iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        } else {
            field_value(conn, lead, key)?
        };
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            old,
            field_value(conn, lead, key)?,
            "field {key:?} of a fresh lead {lead}"
        );
        set.push((key, value));
        if old.as_deref() == Some(value) {
            continue;
        }
        conn.execute_later(
            "INSERT INTO lead_fields (lead_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (lead_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            args![lead, key, value, source.at],
        )?;
        let field = format!("field {key}");
        match created.as_deref_mut() {
            Some(created) => created.add(field, old, Some(value.to_owned())),
            None => history(
                conn,
                lead,
                &field,
                old.as_deref(),
                Some(value),
                source,
                None,
            )?,
        }
        changed += 1;
    }
    Ok(changed)
}

/// The value of custom field `key` of `lead`, if set.
fn field_value(conn: &dyn Sql, lead: i64, key: &str) -> Result<Option<String>, DbError> {
    conn.query_opt(
        "SELECT value FROM lead_fields WHERE lead_id = ?1 AND key = ?2",
        args![lead, key],
        |r| r.get(0),
    )
}

/// Sets the status when the lead still has the one new leads start in
/// (`initial`, the pipeline's first): an empty field is always filled, a
/// status someone chose is kept. Returns whether it changed.
pub fn fill_status(
    conn: &dyn Sql,
    lead: i64,
    status: &str,
    initial: &str,
    source: &Source,
) -> Result<bool, DbError> {
    let status = status.trim();
    let changed = conn.execute(
        "UPDATE leads SET status = ?2, updated_at = ?3, version = version + 1
         WHERE id = ?1 AND status = ?4 AND ?2 <> ?4 AND ?2 <> ''",
        args![lead, status, source.at, initial],
    )? > 0;
    if changed {
        history(
            conn,
            lead,
            "status",
            Some(initial),
            Some(status),
            source,
            None,
        )?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_decision_stored_once_reads_as_one_json_object_per_row() {
        use crate::crm::resolve::{Resolution, Target};
        let merge: crate::config::MergePolicy = crate::config::test_merge_policy("existing");
        let resolution = Resolution {
            target: Target::Existing(7),
            rule: "matched by email \"ann@example.com\"".into(),
            duplicates: vec![(9, "phone belongs to lead 9".into())],
            fold: None,
        };
        let change = Change::Kept {
            field: "name".into(),
            incoming: "x".repeat(500),
            rule: "keep_existing".into(),
        };
        let why = Explanation::new(
            &merge,
            Vec::new(),
            None,
            &resolution,
            7,
            Vec::new(),
            vec![change.clone()],
        );
        let long = Change::Kept {
            field: "name".into(),
            incoming: "é\\\"".repeat(150),
            rule: "keep_existing".into(),
        };
        // What is stored: values clipped.
        let stored = |value: serde_json::Value| {
            let mut value = value;
            clip_strings(&mut value);
            value
        };
        let stored_why = stored(serde_json::json!(why));
        for change in [None, Some(&change), Some(&long)] {
            let decision = Decision::new(&why);
            assert!(
                !decision.text.contains("summary"),
                "the words are not stored"
            );
            let row = decision.row(change).change_json();
            let parsed = explanation(row.as_deref(), Some(&decision.text)).unwrap();
            // The words are made from what is stored, each line clipped.
            use serde::Deserialize;
            let from_stored = Explanation::deserialize(&stored_why).unwrap();
            let stored_change = change.map(|c| stored(serde_json::json!(c)));
            let expected = serde_json::json!({
                "decision": why.decision,
                "change": stored_change,
                "change_text": stored_change.as_ref().map(|c| {
                    clipped(crate::crm::explain::describe(&Change::deserialize(c).unwrap()))
                }),
                "why": stored_why,
                "summary": from_stored.lines().into_iter().map(clipped).collect::<Vec<_>>(),
            });
            assert_eq!(parsed, expected);
            // And read as the words of the decision itself do, but for the
            // count of characters a clipped line gives.
            let head = |s: &str| s.chars().take(EXPLAINED_CHARS).collect::<String>();
            let words = why.lines();
            let summary = parsed["summary"].as_array().unwrap();
            assert_eq!(summary.len(), words.len());
            for (read, made) in summary.iter().zip(&words) {
                assert_eq!(head(read.as_str().unwrap()), head(made));
            }
            if let Some(c) = change {
                let text = parsed["change_text"].as_str().unwrap();
                assert_eq!(head(text), head(&crate::crm::explain::describe(c)));
            }
        }
    }

    /// A decision row that is not what this version writes (hand-edited,
    /// foreign) reads as what it holds, without words, and never panics.
    #[test]
    fn an_odd_decision_row_reads_without_words() {
        let packed = r#"{"entries":[{"field":"name","old":null,"new":"A","change":0}]}"#;
        for decision in [
            r#"{"decision":"d"}"#,
            r#"{"why":{"changes":"x"}}"#,
            "not json",
        ] {
            let read = entries(
                ("created".into(), None, Some("d".into())),
                Some(packed),
                Some(decision),
            );
            assert_eq!(read.len(), 2, "{decision}");
            if let Some(e) = &read[1].explanation {
                assert!(e["summary"].is_null(), "{decision}: {e}");
                assert!(e["change_text"].is_null(), "{decision}: {e}");
            }
        }
    }

    /// Rows written when the words were stored read as they were written.
    #[test]
    fn stored_words_are_read_as_stored() {
        let decision = r#"{"decision":"d","summary":["as stored"],"why":{"decision":"d"}}"#;
        let row = r#"{"change":{"change":"name","old":null,"new":"A","rule":"r"},"change_text":"stored words"}"#;
        let parsed = explanation(Some(row), Some(decision)).unwrap();
        assert_eq!(parsed["summary"], serde_json::json!(["as stored"]));
        assert_eq!(parsed["change_text"], "stored words");
        let packed = r#"{"entries":[{"field":"name","old":null,"new":"A","change":0,"change_text":"packed words"}]}"#;
        let decision = r#"{"decision":"d","summary":["as stored"],"why":{"changes":[{"change":"name","old":null,"new":"A","rule":"r"}]}}"#;
        let read = entries(
            ("created".into(), None, Some("d".into())),
            Some(packed),
            Some(decision),
        );
        assert_eq!(read.len(), 2);
        let second = read[1].explanation.as_ref().unwrap();
        assert_eq!(second["change_text"], "packed words");
        assert_eq!(second["summary"], serde_json::json!(["as stored"]));
    }

    /// A lead's initial values written as one packed `created` row read
    /// back as exactly the entries one row per change gives.
    #[test]
    fn a_packed_created_row_reads_as_one_row_per_change() {
        use crate::crm::resolve::{Resolution, Target};
        let dir = tempfile::tempdir().unwrap();
        let merge: crate::config::MergePolicy = crate::config::test_merge_policy("incoming");
        let long = "é\"\\".repeat(120);
        let changes = vec![
            Change::Name {
                old: None,
                new: format!("Ann {long}"),
                rule: "empty field filled".into(),
            },
            Change::Description {
                old: None,
                new: "Asked about prices".into(),
                rule: "empty field filled".into(),
            },
            Change::Add {
                kind: ContactKind::Email,
                value: "ann@example.com".into(),
                raw: "Ann@Example.com".into(),
                primary: true,
                rule: "keep_both".into(),
            },
            Change::Add {
                kind: ContactKind::Email,
                value: "a2@example.com".into(),
                raw: "a2@example.com".into(),
                primary: true,
                rule: "keep_both, primary incoming".into(),
            },
            Change::Add {
                kind: ContactKind::Phone,
                value: "+14084987855".into(),
                raw: "(408) 498-7855".into(),
                primary: true,
                rule: "keep_both".into(),
            },
            Change::Kept {
                field: "phone".into(),
                incoming: long.clone(),
                rule: "keep_existing".into(),
            },
        ];
        let resolution = Resolution {
            target: Target::Create,
            rule: "no lead matched; created".into(),
            duplicates: Vec::new(),
            fold: None,
        };
        let source = Source {
            delivery_id: None,
            label: "jivo chat_accepted 1".into(),
            at: "2026-11-30T10:00:00Z".into(),
        };
        let read = |conn: &Connection, lead: i64| -> Vec<Entry> {
            let mut stmt = conn
                .prepare(
                    "SELECT h.field, h.old, h.new, h.explanation, d.explanation
                     FROM history h LEFT JOIN decisions d ON d.id = h.decision_id
                     WHERE h.lead_id = ?1 ORDER BY h.id",
                )
                .unwrap();
            let rows = stmt
                .query_map([lead], |r| {
                    let row: Option<String> = r.get(3)?;
                    let decision: Option<String> = r.get(4)?;
                    Ok(entries(
                        (r.get(0)?, r.get(1)?, r.get(2)?),
                        row.as_deref(),
                        decision.as_deref(),
                    ))
                })
                .unwrap();
            rows.flat_map(Result::unwrap).collect()
        };
        // The same lead written both ways, each in a database of its own.
        let mut read_back = Vec::new();
        for packed in [false, true] {
            let conn = Connection::open(dir.path().join(format!("{packed}.sqlite3"))).unwrap();
            super::super::migrate::migrate(&conn).unwrap();
            let origin = Origin {
                status: "new",
                platform: "jivo",
                source: None,
            };
            let lead = create(&conn, &source.at, origin).unwrap();
            let why = Explanation::new(
                &merge,
                Vec::new(),
                None,
                &resolution,
                lead,
                Vec::new(),
                changes.clone(),
            );
            let decision = Decision::new(&why);
            let record = if packed {
                Record::Created(&resolution.rule)
            } else {
                history(
                    &conn,
                    lead,
                    "created",
                    None,
                    Some(&resolution.rule),
                    &source,
                    Some(decision.row(None)),
                )
                .unwrap();
                Record::Rows
            };
            let created = write_changes(
                &conn,
                lead,
                &Current::default(),
                &changes,
                &decision,
                &source,
                record,
            )
            .unwrap();
            // The delivery's other entries: custom fields (one given
            // twice) and an event.
            let fields = [("City", "Lyon"), ("Source", "web"), ("City", "Paris")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()));
            let event = "visitor queued";
            match created {
                Some(mut created) => {
                    set_fields(&conn, lead, &fields, Some(&mut created), &source).unwrap();
                    created.add("event", None, Some(event.into()));
                    created.write(&conn, &source).unwrap();
                }
                None => {
                    set_fields(&conn, lead, &fields, None, &source).unwrap();
                    history(&conn, lead, "event", None, Some(event), &source, None).unwrap();
                }
            }
            let rows: i64 = conn
                .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
                .unwrap();
            read_back.push((rows, read(&conn, lead)));
        }
        let [(rows, one), (packed_rows, packed)] = <[_; 2]>::try_from(read_back).unwrap();
        assert_eq!((rows, packed_rows), (11, 1));
        assert_eq!(one.len(), 11);
        assert_eq!(one, packed);
        assert_eq!(
            one[7..]
                .iter()
                .map(|e| (
                    &e.field[..],
                    e.old.as_deref(),
                    e.new.as_deref(),
                    &e.explanation
                ))
                .collect::<Vec<_>>(),
            [
                ("field City", None, Some("Lyon"), &None),
                ("field Source", None, Some("web"), &None),
                ("field City", Some("Lyon"), Some("Paris"), &None),
                ("event", None, Some("visitor queued"), &None),
            ]
        );
        assert!(
            one[1].new.as_ref().unwrap().ends_with(&long),
            "values are whole"
        );
        let text = one[6].explanation.as_ref().unwrap()["change_text"]
            .as_str()
            .unwrap();
        assert!(
            text.ends_with("characters)"),
            "explanations are clipped: {text}"
        );
    }

    #[test]
    fn long_strings_are_never_missed() {
        let at = |c: &str, n: usize| serde_json::to_string(&c.repeat(n)).unwrap();
        assert!(!has_long_string(&at("e", EXPLAINED_CHARS)));
        assert!(has_long_string(&at("e", EXPLAINED_CHARS + 1)));
        assert!(has_long_string(&at("é", EXPLAINED_CHARS + 1)));
        // Bytes are counted: a string of fewer but wider characters may
        // be reported (and then clipped exactly, i.e. not at all).
        let wide = "é".repeat(EXPLAINED_CHARS);
        assert!(has_long_string(&at(&wide, 1)));
        let mut value = serde_json::json!([wide]);
        clip_strings(&mut value);
        assert_eq!(value[0], wide);
        // Escapes count at least as the characters they stand for.
        let escaped = serde_json::to_string(&"\"\n\u{1}".repeat(70)).unwrap();
        assert!(has_long_string(&escaped));
        let keys =
            serde_json::json!({"k".repeat(10): "v", "list": ["a".repeat(150), "b".repeat(150)]});
        assert!(!has_long_string(&keys.to_string()));
    }

    /// The first version, a byte at a time: the reference for the one
    /// that jumps between quotes and backslashes.
    fn has_long_string_bytewise(json: &str) -> bool {
        let (mut inside, mut escaped, mut count) = (false, false, 0);
        for &b in json.as_bytes() {
            if !inside {
                if b == b'"' {
                    (inside, count) = (true, 0);
                }
                continue;
            }
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    inside = false;
                    continue;
                }
                _ => {}
            }
            count += 1;
            if count > EXPLAINED_CHARS {
                return true;
            }
        }
        false
    }

    #[test]
    fn long_strings_are_found_as_the_byte_wise_scan_finds_them() {
        let pieces = ["a", "é", "\"", "\\", "\n", "\u{1}", "😀", " "];
        let mut texts = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            for n in [0, 1, 66, 67, 99, 100, 101, 199, 200, 201, 202, 400] {
                let other = pieces[(i + 3) % pieces.len()];
                let value = format!("{}{}", piece.repeat(n), other.repeat(n % 7));
                texts.push(
                    serde_json::json!({"k": value, "list": [value, "x"], "n": n}).to_string(),
                );
                texts.push(serde_json::to_string(&value).unwrap());
            }
        }
        // Not JSON a serialiser writes, but the scan must not panic on it.
        texts.extend(["\"".into(), "\"\\".into(), format!("\"{}", "a".repeat(300))]);
        for text in &texts {
            assert_eq!(
                has_long_string(text),
                has_long_string_bytewise(text),
                "{text}"
            );
        }
    }

    #[test]
    fn explanations_clip_long_values_and_keep_short_ones() {
        let mut json = serde_json::json!({
            "short": "Ann",
            "list": ["x".repeat(1000)],
            "nested": {"name": "é".repeat(300)},
        });
        clip_strings(&mut json);
        assert_eq!(json["short"], "Ann");
        let long = json["list"][0].as_str().unwrap();
        assert!(long.starts_with(&"x".repeat(EXPLAINED_CHARS)));
        assert!(long.ends_with("… (1000 characters)"));
        let name = json["nested"]["name"].as_str().unwrap();
        assert_eq!(name.chars().filter(|c| *c == 'é').count(), EXPLAINED_CHARS);
    }
}
