//! LiveChat webhooks v2: `event_type` with the data types `chat`,
//! `visitor`, `pre_chat_survey` and `ticket` at the top level.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{key_values, lenient};
use crate::event::{
    ConversationUpdate, Event, Message, Note, Sender, Visitor, normalize_rfc3339, unix_to_rfc3339,
};
use crate::platforms::body_hash;

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default, deserialize_with = "lenient::string")]
    event_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    event_unique_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    chat: Option<Chat>,
    #[serde(default, deserialize_with = "lenient::object")]
    visitor: Option<LcVisitor>,
    #[serde(default, deserialize_with = "lenient::list")]
    pre_chat_survey: Vec<Answer>,
    #[serde(default, deserialize_with = "lenient::object")]
    ticket: Option<Ticket>,
}

#[derive(Debug, Deserialize)]
struct Chat {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    messages: Vec<ChatMessage>,
    #[serde(default, deserialize_with = "lenient::list")]
    agents: Vec<Agent>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<Value>,
    /// Group ids, or `{"id", "name"}` objects.
    #[serde(default, deserialize_with = "lenient::list")]
    groups: Vec<Value>,
    /// The page the chat started on.
    #[serde(default, deserialize_with = "lenient::string")]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default, deserialize_with = "lenient::string")]
    user_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    author_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    text: Option<String>,
    #[serde(default, deserialize_with = "lenient::unix_time")]
    timestamp: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LcVisitor {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    phone: Option<String>,
    #[serde(default)]
    custom_variables: Option<Value>,
    #[serde(default, deserialize_with = "lenient::object")]
    last_visit: Option<Visit>,
    #[serde(default, deserialize_with = "lenient::string")]
    page_current: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Visit {
    #[serde(default, deserialize_with = "lenient::list")]
    last_pages: Vec<super::Page>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    label: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    answer: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Ticket {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    requester: Option<Requester>,
    #[serde(default, deserialize_with = "lenient::string")]
    subject: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    events: Vec<TicketEvent>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<Value>,
    #[serde(default, deserialize_with = "lenient::list")]
    groups: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Requester {
    #[serde(default, deserialize_with = "lenient::string")]
    mail: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TicketEvent {
    #[serde(default, deserialize_with = "lenient::string")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    date: Option<String>,
}

/// Translates a v2 body (already known to carry `event_type`).
pub fn parse(map: Map<String, Value>, body: &[u8]) -> Result<(Event, String), String> {
    let raw: Body = Body::deserialize(Value::Object(map)).map_err(|e| e.to_string())?;
    let name = raw
        .event_type
        .clone()
        .ok_or("event_type is not a string: not a LiveChat v2 webhook")?;
    let chat_id = raw.chat.as_ref().and_then(|c| c.id.clone());
    let mut event = Event {
        name: name.clone(),
        chat_id: chat_id.clone(),
        visitor: visitor(&raw),
        fields: raw
            .visitor
            .as_ref()
            .map(|v| key_values(v.custom_variables.as_ref()))
            .unwrap_or_default(),
        source: source(&raw),
        ..Event::default()
    };
    let agent = raw.chat.as_ref().and_then(|c| {
        let names: Vec<String> = c
            .agents
            .iter()
            .filter_map(|a| a.name.clone().or_else(|| a.login.clone()))
            .collect();
        (!names.is_empty()).then(|| names.join(", "))
    });
    let conversation = |closed: bool| {
        chat_id.as_ref().map(|id| ConversationUpdate {
            chat_id: id.clone(),
            agent: agent.clone(),
            messages: transcript(&raw),
            closed,
        })
    };
    if let Some(chat) = &raw.chat {
        event.tags = chat.tags.iter().filter_map(lenient::as_string).collect();
    }
    match name.as_str() {
        "chat_started" | "chat_changed" => event.conversation = conversation(false),
        "chat_ended" => event.conversation = conversation(true),
        "visitor_queued" => event.record = Some("visitor queued".into()),
        "ticket_created" => {
            if let Some(ticket) = &raw.ticket {
                ticket_note(&mut event, ticket, body);
            }
        }
        _ => {}
    }
    let key = match (&raw.event_unique_id, name.as_str(), &chat_id) {
        (Some(unique), _, _) => format!("v2:{unique}"),
        // A chat ends once; its transcript is the same whatever else changed.
        (None, "chat_ended", Some(chat)) => format!("v2:chat_ended:{chat}"),
        _ => format!("v2:{name}:{}", body_hash(body)),
    };
    Ok((event, key))
}

/// Where the visitor came from: the chat's (or ticket's) group and the
/// first page of the visit (else the chat's page), with its UTM campaign.
fn source(raw: &Body) -> Option<crate::event::LeadSource> {
    let visitor = raw.visitor.as_ref();
    let landing = visitor
        .and_then(|v| v.last_visit.as_ref())
        .and_then(|v| super::first_url(&v.last_pages))
        .or_else(|| raw.chat.as_ref().and_then(|c| c.url.clone()))
        .or_else(|| visitor.and_then(|v| v.page_current.clone()));
    let groups = raw
        .chat
        .as_ref()
        .map(|c| &c.groups[..])
        .filter(|g| !g.is_empty())
        .or_else(|| raw.ticket.as_ref().map(|t| &t.groups[..]));
    super::source(groups.and_then(super::first_group), landing)
}

/// The visitor, completed by the pre-chat survey's name, email and phone answers.
fn visitor(raw: &Body) -> Option<Visitor> {
    let v = raw.visitor.as_ref();
    let mut visitor = Visitor {
        ids: v
            .and_then(|v| v.id.clone())
            .map(|id| format!("visitor:{id}"))
            .into_iter()
            .collect(),
        name: v.and_then(|v| v.name.clone()),
        emails: v.and_then(|v| v.email.clone()).into_iter().collect(),
        phones: v.and_then(|v| v.phone.clone()).into_iter().collect(),
        description: None,
    };
    for answer in &raw.pre_chat_survey {
        if let Some(value) = answer.answer.clone() {
            super::survey_answer(
                &mut visitor,
                answer.kind.as_deref(),
                answer.label.as_deref(),
                value,
            );
        }
    }
    (!visitor.is_empty()).then_some(visitor)
}

fn transcript(raw: &Body) -> Vec<Message> {
    let Some(chat) = &raw.chat else {
        return Vec::new();
    };
    chat.messages
        .iter()
        .filter_map(|m| {
            let from = match m.user_type.as_deref() {
                Some("visitor") => Sender::Visitor,
                Some("agent") => Sender::Agent,
                _ => Sender::System,
            };
            Some(Message {
                ext_id: None,
                from,
                author: m.author_name.clone(),
                text: m.text.clone()?,
                at: m.timestamp.and_then(unix_to_rfc3339),
            })
        })
        .collect()
}

/// The ticket's requester becomes the visitor and the ticket a note.
fn ticket_note(event: &mut Event, ticket: &Ticket, body: &[u8]) {
    if let Some(r) = &ticket.requester {
        let visitor = event.visitor.get_or_insert_with(Visitor::default);
        if visitor.name.is_none() {
            visitor.name = r.name.clone();
        }
        visitor
            .emails
            .extend(r.mail.clone().or_else(|| r.email.clone()));
    }
    event
        .tags
        .extend(ticket.tags.iter().filter_map(lenient::as_string));
    let first = ticket.events.iter().find(|e| e.message.is_some());
    let text: Vec<&str> = [
        ticket.subject.as_deref(),
        first.and_then(|e| e.message.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    event.note = Some(Note {
        ext_id: ticket.id.clone().unwrap_or_else(|| body_hash(body)),
        kind: "ticket".into(),
        text: if text.is_empty() {
            "(empty ticket)".into()
        } else {
            text.join("\n\n")
        },
        at: first
            .and_then(|e| e.date.as_deref())
            .and_then(normalize_rfc3339),
    });
}
