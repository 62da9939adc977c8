//! Applying one translated delivery, inside the writer's transaction:
//! inbox first, then identity and merge, then what the event carries.

use super::DbError;
use super::conversations;
use super::duplicates::{self, Profile};
use super::inbox::{self, Inserted, NewDelivery};
use super::leads::{self, Source};
use super::outbox::{self, OutboundEvent};
use super::sql::Sql;
use super::view::{self, LeadCard};
use crate::config::{DuplicatesConfig, MergePolicy};
use crate::crm::explain::{Explanation, Flag, Seen};
use crate::crm::identity::{Email, Phone, name_key};
use crate::crm::merge::{self, ContactKind, Incoming, IncomingContact};
use crate::crm::resolve::{self, Known, Matches, Target};
use crate::event::{Event, Visitor};
use crate::outbound::EventKind;

/// Most emails, phones and visitor ids taken from one delivery; the rest of
/// an abusive list stays in the raw delivery only.
pub const MAX_IDENTIFIERS: usize = 10;

/// The settings applying depends on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `[merge]`.
    pub merge: MergePolicy,
    /// `[duplicates]`.
    pub duplicates: DuplicatesConfig,
    /// The status a new lead starts in: the pipeline's first.
    pub new_status: String,
}

impl Policy {
    /// The policy a configuration sets.
    pub fn of(config: &crate::config::Config) -> Policy {
        Policy {
            merge: config.merge.clone(),
            duplicates: config.duplicates.clone(),
            new_status: config.pipeline.first().to_owned(),
        }
    }
}

/// What applying a delivery did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The lead the delivery belongs to, if any.
    pub lead_id: Option<i64>,
    /// Whether this delivery had been applied before (nothing changed now).
    pub redelivery: bool,
    /// Whether a lead was created.
    pub created: bool,
    /// Whether an existing lead matched and changed (contacts, name,
    /// description, tags or fields).
    pub merged: bool,
    /// Whether an anonymous lead was folded.
    pub folded: bool,
    /// Possible-duplicate links made.
    pub flagged: usize,
    /// Storage could not take the delivery in time; it waits in the spool.
    pub spooled: bool,
    /// The lead as the platform should show it, when the event wants it.
    pub card: Option<LeadCard>,
    /// Why the delivery landed on its lead and what the policy did.
    pub explanation: Option<Explanation>,
}

/// A visitor's emails and phones, normalised and deduplicated: `(value,
/// raw)`, first occurrence of each, at most [`MAX_IDENTIFIERS`] of a kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    /// Emails.
    pub emails: Vec<(String, String)>,
    /// Phones (read with `[merge] default_region` when written without a
    /// country code).
    pub phones: Vec<(String, String)>,
}

impl Identifiers {
    /// Normalises what `event` carries under `policy`. Pure and the costly
    /// part of identifying a visitor (the phone parser), so the service does
    /// it on the request's thread, not the writer's.
    pub fn of(event: &Event, policy: &Policy) -> Identifiers {
        let Some(visitor) = &event.visitor else {
            return Identifiers::default();
        };
        let region = policy.merge.default_region;
        Identifiers {
            emails: dedup(
                visitor
                    .emails
                    .iter()
                    .filter_map(|e| Email::parse(e))
                    .map(|e| (e.normalized, e.raw)),
            ),
            phones: dedup(
                visitor
                    .phones
                    .iter()
                    .filter_map(|p| Phone::parse(p, region))
                    .map(|p| (p.normalized, p.raw)),
            ),
        }
    }
}

/// Stores `delivery` and applies `event` once. A redelivery changes nothing
/// and answers with the lead as it is now.
pub fn receive(
    conn: &dyn Sql,
    policy: &Policy,
    delivery: &NewDelivery,
    event: &Event,
) -> Result<Outcome, DbError> {
    receive_identified(conn, policy, delivery, event, None)
}

/// [`receive`], with the event's identifiers already normalised under
/// `policy` by [`Identifiers::of`] (they are, when `None`).
pub fn receive_identified(
    conn: &dyn Sql,
    policy: &Policy,
    delivery: &NewDelivery,
    event: &Event,
    identifiers: Option<Identifiers>,
) -> Result<Outcome, DbError> {
    let delivery_id = match inbox::insert(conn, delivery)? {
        Inserted::New(id) | Inserted::Retry(id) => id,
        Inserted::Applied(lead) => {
            let lead = lead.map(|id| leads::survivor(conn, id)).transpose()?;
            let card = match (event.wants_card, lead) {
                (true, Some(id)) => Some(view::card(conn, id, event_chat(delivery, event))?),
                _ => None,
            };
            return Ok(Outcome {
                lead_id: lead,
                redelivery: true,
                card,
                ..Outcome::default()
            });
        }
    };
    write_received(conn, policy, delivery, delivery_id, event, identifiers)
}

/// [`receive_identified`] for a delivery [`inbox::insert`] has just stored
/// (new, or failed before) as `delivery_id`, in this transaction.
pub fn write_received(
    conn: &dyn Sql,
    policy: &Policy,
    delivery: &NewDelivery,
    delivery_id: i64,
    event: &Event,
    identifiers: Option<Identifiers>,
) -> Result<Outcome, DbError> {
    let source = Source {
        delivery_id: Some(delivery_id),
        label: label(delivery.platform, event),
        at: delivery.received_at.clone(),
    };
    let mut outcome = Outcome::default();
    let identifiers = identifiers.unwrap_or_else(|| Identifiers::of(event, policy));
    let identified = identify(
        conn,
        policy,
        delivery.platform,
        event,
        identifiers,
        &source,
        &mut outcome,
    )?;
    let lead = identified.as_ref().map(|i| i.lead);
    if let Some(Identified {
        lead,
        state: known,
        history: mut created,
    }) = identified
    {
        debug_assert_eq!(
            created.is_some(),
            outcome.created,
            "lead {lead}'s created row"
        );
        let mut closed = None;
        if let Some(conversation) = &event.conversation {
            let (_, closed_now) =
                conversations::store(conn, lead, delivery.platform, conversation, &source.at)?;
            closed = closed_now.then_some(conversation.chat_id.as_str());
        }
        let mut noted = None;
        if let Some(note) = &event.note
            && conversations::store_note(conn, lead, delivery.platform, note, &source.at)?
        {
            noted = Some(note);
        }
        let tagged = leads::add_tags(conn, lead, &event.tags)? > 0;
        if tagged {
            let tags = event.tags.join(", ");
            leads::entry(conn, lead, created.as_mut(), "tags", &tags, &source)?;
        }
        let fielded = leads::set_fields(conn, lead, &event.fields, created.as_mut(), &source)? > 0;
        outcome.merged |= !outcome.created && (tagged || fielded);
        if let Some(record) = &event.record {
            leads::entry(conn, lead, created.as_mut(), "event", record, &source)?;
        }
        if let Some(created) = created {
            created.write(conn, &source)?;
        }
        forward(
            conn,
            lead,
            &outcome,
            delivery.platform,
            (closed, noted),
            &source.at,
        )?;
        if event.wants_card {
            let chat = event_chat(delivery, event);
            // The conversation a new lead has is the event's own chat.
            let own_chat = event
                .conversation
                .as_ref()
                .is_none_or(|c| Some(&c.chat_id) == event.chat_id.as_ref());
            let card = match known {
                LeadState::Created(values, links) if own_chat => view::new_lead_card(
                    conn,
                    lead,
                    view::NewLead {
                        values,
                        chatted: event.conversation.is_some(),
                        tags: &event.tags,
                        fields: &event.fields,
                        links,
                        status: &policy.new_status,
                    },
                )?,
                LeadState::Unchanged(current) => view::card_of(conn, lead, chat, Some(current))?,
                LeadState::Created(..) | LeadState::Changed => {
                    view::card_of(conn, lead, chat, None)?
                }
            };
            #[cfg(debug_assertions)]
            debug_assert_eq!(card, view::card(conn, lead, chat)?, "card of lead {lead}");
            outcome.card = Some(card);
        }
    }
    inbox::set_lead(conn, delivery_id, lead)?;
    outcome.lead_id = lead;
    Ok(outcome)
}

/// Writes the outbound events of what the delivery did to `lead`, in its
/// transaction (nothing when no endpoint subscribes): the lead created or
/// changed, the chat it `closed`, the note it added (`noted`).
fn forward(
    conn: &dyn Sql,
    lead: i64,
    outcome: &Outcome,
    platform: &str,
    (closed, noted): (Option<&str>, Option<&crate::event::Note>),
    at: &str,
) -> Result<(), DbError> {
    if outcome.created {
        outbox::enqueue(conn, &OutboundEvent::new(EventKind::LeadCreated, lead))?;
    } else if outcome.merged || outcome.folded {
        outbox::enqueue(conn, &OutboundEvent::new(EventKind::LeadUpdated, lead))?;
    }
    if let Some(chat) = closed {
        let mut event = OutboundEvent::new(EventKind::ConversationClosed, lead);
        event.conversation = Some((platform.to_owned(), chat.to_owned()));
        outbox::enqueue(conn, &event)?;
    }
    if let Some(note) = noted.filter(|_| outbox::wanted(EventKind::NoteAdded)) {
        let shown = serde_json::json!({
            "platform": platform,
            "kind": note.kind,
            "text": note.text,
            "at": note.at.as_deref().unwrap_or(at),
            "author": null,
        });
        outbox::enqueue(
            conn,
            &OutboundEvent::new(EventKind::NoteAdded, lead).with("note", shown),
        )?;
    }
    Ok(())
}

fn event_chat<'a>(delivery: &'a NewDelivery, event: &'a Event) -> Option<(&'a str, &'a str)> {
    event.chat_id.as_deref().map(|c| (delivery.platform, c))
}

/// `jivo chat_updated 7636`: where a history row came from.
fn label(platform: &str, event: &Event) -> String {
    match &event.chat_id {
        Some(chat) => format!("{platform} {} {chat}", event.name),
        None => format!("{platform} {}", event.name),
    }
}

/// What identifying a visitor left known about its lead, so the agent's
/// card need not read it all back.
enum LeadState {
    /// Nothing changed the lead: its name and contacts as read.
    Unchanged(merge::Current),
    /// The delivery created it: its values as the plan set them, and the
    /// possible-duplicate links made (other lead, score).
    Created(merge::Current, Vec<(i64, f64)>),
    /// An existing lead changed.
    Changed,
}

/// The lead a delivery is about, once identified.
struct Identified {
    lead: i64,
    state: LeadState,
    /// The open `created` row of a lead the delivery made.
    history: Option<leads::Created>,
}

/// Steps 1 to 5 of the contract: finds or creates the lead and merges the
/// visitor into it. `None` when the event identifies nobody and carries
/// nothing to keep; else the lead and what is known of it.
fn identify(
    conn: &dyn Sql,
    policy: &Policy,
    platform: &str,
    event: &Event,
    identifiers: Identifiers,
    source: &Source,
    outcome: &mut Outcome,
) -> Result<Option<Identified>, DbError> {
    let empty = Visitor::default();
    let visitor = event.visitor.as_ref().unwrap_or(&empty);
    let Identifiers { emails, phones } = identifiers;

    let visitor_ids = &visitor.ids[..visitor.ids.len().min(MAX_IDENTIFIERS)];
    let owners = leads::owners(
        conn,
        &leads::Lookup {
            platform,
            emails: &emails,
            phones: &phones,
            visitors: visitor_ids,
            chat: event.chat_id.as_deref(),
            hint: event.lead_hint,
        },
    )?;
    let known = known_lead(conn, &owners)?;
    let leads::Owners {
        emails: email_owners,
        phones: phone_owners,
        ..
    } = owners;
    let by_email = email_owners.iter().flatten().copied().next();
    let by_phone = phone_owners.iter().flatten().copied().next();
    // Only a fold asks: an anonymous known lead meeting another lead.
    let kept_apart = match known {
        Some(k) if k.anonymous && [by_email, by_phone].iter().flatten().any(|&l| l != k.lead) => {
            super::merges::kept_apart(conn, k.lead)?
        }
        _ => Vec::new(),
    };
    let matches = Matches {
        by_email,
        by_phone,
        known,
        kept_apart,
    };
    // Closing a chat nobody is known for carries nothing worth a new lead.
    let has_content = event
        .conversation
        .as_ref()
        .is_some_and(|c| !c.messages.is_empty() || c.agent.is_some())
        || event.note.is_some();
    if matches == Matches::default() && visitor.is_empty() && !has_content && !event.wants_card {
        return Ok(None);
    }
    let resolution = resolve::resolve(&matches, &policy.merge.match_order);
    let lead = match resolution.target {
        Target::Existing(id) => id,
        Target::Create => {
            outcome.created = true;
            let origin = leads::Origin {
                status: &policy.new_status,
                platform,
                source: event.source.as_ref(),
            };
            leads::create(conn, &source.at, origin)?
        }
    };
    let seen = seen(ContactKind::Email, &emails, &email_owners)
        .chain(seen(ContactKind::Phone, &phones, &phone_owners))
        .collect();
    // Values owned by another lead are never moved; the rest go to the policy.
    let free = |values: Vec<(String, String)>, owners: Vec<Option<i64>>| -> Vec<IncomingContact> {
        values
            .into_iter()
            .zip(owners)
            .filter(|(_, owner)| owner.is_none_or(|o| o == lead))
            .map(|((value, raw), _)| IncomingContact { value, raw })
            .collect()
    };
    let incoming = Incoming {
        name: non_empty(visitor.name.as_deref()),
        description: non_empty(visitor.description.as_deref()),
        emails: free(emails, email_owners),
        phones: free(phones, phone_owners),
    };
    let current = if outcome.created {
        merge::Current::default()
    } else {
        leads::current(conn, lead)?
    };
    let mut changes = merge::plan(&policy.merge, &current, &incoming);
    // Staff pins matter only where the policy replaces a value, so only
    // then are they read: most deliveries never ask.
    if !outcome.created && merge::replaces(&policy.merge, &changes) {
        let pins = leads::pins(conn, lead)?;
        if !pins.is_empty() {
            changes = merge::plan_pinned(&policy.merge, &current, &incoming, &pins);
        }
    }
    // Similar leads are looked up before the new lead's own values are
    // written (it is excluded either way), so the explanation can name them.
    let created = outcome.created.then(|| merge::preview(&current, &changes));
    let mut similar = Vec::new();
    if let Some(after) = created.as_ref().filter(|_| policy.duplicates.enabled) {
        let values =
            |contacts: &[merge::Contact]| contacts.iter().map(|c| c.value.clone()).collect();
        let profile = Profile {
            name_key: after
                .name
                .as_deref()
                .map(name_key)
                .filter(|k| !k.is_empty()),
            emails: values(&after.emails),
            phones: values(&after.phones),
        };
        similar = duplicates::detect(
            conn,
            lead,
            &profile,
            policy.duplicates.threshold,
            &source.at,
        )?;
        outcome.flagged += similar.len();
    }
    let mut links: Vec<(i64, f64)> = similar.iter().map(|s| (s.lead, s.score)).collect();
    let similar = similar
        .into_iter()
        .map(|s| Flag {
            lead: s.lead,
            reason: s.reason,
        })
        .collect();
    let why = Explanation::new(
        &policy.merge,
        seen,
        known,
        &resolution,
        lead,
        similar,
        changes,
    );
    // Serialised and stored once for every history row it goes with, and
    // only if any.
    let written = outcome.created || resolution.fold.is_some() || !why.changes.is_empty();
    let decision = written.then(|| leads::Decision::new(&why));
    let why_row = decision.as_ref().map(|d| d.row(None));
    if let Some(from) = resolution.fold {
        leads::fold(conn, from, lead, source, why_row)?;
        outcome.folded = true;
    }
    for (other, reason) in &resolution.duplicates {
        if leads::link_duplicate(conn, lead, *other, 1.0, reason, &source.at)? {
            outcome.flagged += 1;
            links.push((*other, 1.0));
        }
    }
    let mut history = None;
    if let Some(decision) = &decision {
        // A new lead's initial values are held by its `created` row.
        let record = if outcome.created {
            leads::Record::Created(&resolution.rule)
        } else {
            leads::Record::Rows
        };
        history =
            leads::write_changes(conn, lead, &current, &why.changes, decision, source, record)?;
    }
    outcome.merged = !outcome.created && why.changes.iter().any(merge::Change::alters);
    for id in visitor.ids.iter().take(MAX_IDENTIFIERS) {
        leads::link_visitor(conn, platform, id, lead, &source.at)?;
    }
    let state = match created {
        Some(values) => LeadState::Created(values, links),
        None if !outcome.folded && !outcome.merged => LeadState::Unchanged(current),
        None => LeadState::Changed,
    };
    outcome.explanation = Some(why);
    Ok(Some(Identified {
        lead,
        state,
        history,
    }))
}

/// The lead the platform already knows this visitor as: by visitor id, else
/// by the chat the event belongs to, else by the lead id the platform echoes.
fn known_lead(conn: &dyn Sql, owners: &leads::Owners) -> Result<Option<Known>, DbError> {
    let found = owners
        .visitors
        .iter()
        .flatten()
        .copied()
        .next()
        .or(owners.chat)
        .or(owners.hint);
    match found {
        Some(lead) => {
            let lead = leads::survivor(conn, lead)?;
            Ok(Some(Known {
                lead,
                anonymous: leads::is_anonymous(conn, lead)?,
            }))
        }
        None => Ok(None),
    }
}

/// The identifiers seen, each with the lead owning it.
fn seen<'a>(
    kind: ContactKind,
    values: &'a [(String, String)],
    owners: &'a [Option<i64>],
) -> impl Iterator<Item = Seen> + 'a {
    values
        .iter()
        .zip(owners)
        .map(move |((normalized, raw), owner)| Seen {
            kind,
            raw: raw.clone(),
            normalized: normalized.clone(),
            owner: *owner,
        })
}

/// The first occurrence of each value, at most [`MAX_IDENTIFIERS`] of them.
pub fn dedup(values: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (value, raw) in values {
        if out.len() == MAX_IDENTIFIERS {
            break;
        }
        if !out.iter().any(|(v, _)| *v == value) {
            out.push((value, raw));
        }
    }
    out
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Stores a delivery that could not be parsed, marked failed.
pub fn record_failed(conn: &dyn Sql, delivery: &NewDelivery, error: &str) -> Result<(), DbError> {
    inbox::insert_failed(conn, delivery, error)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::event::ConversationUpdate;

    fn policy() -> Policy {
        Policy {
            merge: crate::config::test_merge_policy("incoming"),
            duplicates: DuplicatesConfig {
                enabled: true,
                threshold: 0.85,
            },
            new_status: "new".into(),
        }
    }

    fn delivery(n: usize) -> NewDelivery {
        NewDelivery {
            platform: "jivo",
            event: "chat_accepted".into(),
            idem_key: format!("key {n}"),
            body: bytes::Bytes::from_static(b"{}"),
            received_at: format!("2026-11-30T10:00:{n:02}Z"),
        }
    }

    fn accepted(chat: &str, stored_chat: &str, name: &str, emails: &[&str]) -> Event {
        Event {
            name: "chat_accepted".into(),
            chat_id: Some(chat.into()),
            visitor: Some(Visitor {
                ids: vec![format!("number:{chat}")],
                name: Some(name.into()),
                emails: emails.iter().map(|e| (*e).to_owned()).collect(),
                phones: vec!["(408) 498-7855".into(), "+44 20 7946 0958".into()],
                description: Some(" Asked about prices ".into()),
            }),
            conversation: Some(ConversationUpdate {
                chat_id: stored_chat.into(),
                agent: Some("Agent".into()),
                ..ConversationUpdate::default()
            }),
            tags: vec![" vip ".into(), "b".into(), "vip".into(), "  ".into()],
            fields: vec![
                ("plan".into(), " basic ".into()),
                ("plan".into(), "pro".into()),
                (" ".into(), "no key".into()),
                ("size".into(), "".into()),
            ],
            wants_card: true,
            ..Event::default()
        }
    }

    /// The card of a lead the delivery created is built from the merge
    /// plan, not read back; it must be the card a later read gives.
    #[test]
    fn a_new_leads_card_is_the_card_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("db.sqlite3")).unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        let policy = policy();
        let namesakes = [
            ("Ann Smith", "ann@one.example"),
            ("Ann Smith", "ann@two.example"),
            ("Anne Smith", "anne@three.example"),
            ("Ann Smithe", "a.s@four.example"),
        ];
        for (n, (name, email)) in namesakes.iter().enumerate() {
            let mut event = accepted(&format!("c{n}"), &format!("c{n}"), name, &[email]);
            event.visitor.as_mut().unwrap().phones.clear();
            receive(&conn, &policy, &delivery(n), &event).unwrap();
        }
        // The stored conversation is the event's chat (the card is built),
        // or another one (the card is read back).
        for (n, stored) in [(10, "c10"), (11, "other")] {
            let mut event = accepted(&format!("c{n}"), stored, "Ann  Smith", &[]);
            // Identifiers not seen before, so that a lead is created.
            let visitor = event.visitor.as_mut().unwrap();
            visitor.emails = vec![format!("x{n}@five.example"), format!("y{n}@six.example")];
            visitor.phones = vec![format!("(408) 498-78{n}"), format!("+44 20 7946 09{n}")];
            let outcome = receive(&conn, &policy, &delivery(n), &event).unwrap();
            assert!(outcome.created && outcome.flagged >= 3, "{outcome:?}");
            let card = outcome.card.unwrap();
            assert_eq!(
                card,
                view::card(&conn, card.id, Some(("jivo", &format!("c{n}")))).unwrap()
            );
            assert_eq!(card.duplicates.len(), 3);
            assert_eq!(card.tags, ["b", "vip"]);
            assert_eq!(card.fields.get("plan").map(String::as_str), Some("pro"));
            assert_eq!(card.fields.len(), 1);
            assert_eq!((card.emails.len(), card.phones.len()), (2, 2));
        }
    }
}
