//! LiveChat webhooks v3: `webhook_id`, `secret_key`, `action`, `payload`
//! (and `organization_id`, or `license_id` before v3.5, neither of which we need).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{key_values, lenient};
use crate::event::{ConversationUpdate, Event, Message, Sender, Visitor, normalize_rfc3339};
use crate::platforms::body_hash;

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default, deserialize_with = "lenient::string")]
    webhook_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    action: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    payload: Option<Payload>,
}

#[derive(Debug, Default, Deserialize)]
struct Payload {
    #[serde(default, deserialize_with = "lenient::object")]
    chat: Option<Chat>,
    #[serde(default, deserialize_with = "lenient::string")]
    chat_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    thread_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    event: Option<ThreadEvent>,
    #[serde(default, deserialize_with = "lenient::string")]
    tag: Option<String>,
    /// `customer_session_fields_updated`: the customer's id.
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default)]
    session_fields: Option<Value>,
    #[serde(default, deserialize_with = "lenient::object")]
    customer: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Chat {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    users: Vec<User>,
    #[serde(default, deserialize_with = "lenient::object")]
    thread: Option<Thread>,
    /// Before v3.3 a chat carried a list of threads.
    #[serde(default, deserialize_with = "lenient::list")]
    threads: Vec<Thread>,
    #[serde(default, deserialize_with = "lenient::object")]
    access: Option<Access>,
}

/// Who may see a chat or thread: its groups.
#[derive(Debug, Deserialize)]
struct Access {
    #[serde(default, deserialize_with = "lenient::list")]
    group_ids: Vec<Value>,
}

/// A customer's current visit.
#[derive(Debug, Deserialize)]
struct Visit {
    #[serde(default, deserialize_with = "lenient::list")]
    last_pages: Vec<super::Page>,
}

#[derive(Debug, Deserialize)]
struct User {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    phone_number: Option<String>,
    #[serde(default)]
    session_fields: Option<Value>,
    #[serde(default, deserialize_with = "lenient::object")]
    visit: Option<Visit>,
    #[serde(default, deserialize_with = "lenient::list")]
    group_ids: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Thread {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    events: Vec<ThreadEvent>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<Value>,
    #[serde(default, deserialize_with = "lenient::object")]
    access: Option<Access>,
}

#[derive(Debug, Deserialize)]
struct ThreadEvent {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    author_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    text: Option<String>,
    /// A `filled_form` event's answers (the pre-chat survey).
    #[serde(default, deserialize_with = "lenient::list")]
    fields: Vec<FormField>,
}

#[derive(Debug, Deserialize)]
struct FormField {
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    label: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    answer: Option<String>,
}

/// Translates a v3 body (already known to carry `action`).
pub fn parse(map: Map<String, Value>, body: &[u8]) -> Result<(Event, String), String> {
    let raw: Body = Body::deserialize(Value::Object(map)).map_err(|e| e.to_string())?;
    let action = raw
        .action
        .clone()
        .ok_or("action is not a string: not a LiveChat v3 webhook")?;
    let payload = raw.payload.unwrap_or_default();
    let mut event = Event {
        name: action.clone(),
        chat_id: payload
            .chat_id
            .clone()
            .or_else(|| payload.chat.as_ref().and_then(|c| c.id.clone())),
        ..Event::default()
    };
    // The id that makes this delivery the one it is, beside webhook_id.
    let mut id = None;
    match action.as_str() {
        "incoming_chat" => {
            if let Some(chat) = &payload.chat {
                id = incoming_chat(&mut event, chat);
            }
        }
        "incoming_event" => {
            if let (Some(chat), Some(e)) = (&event.chat_id, &payload.event) {
                id = e.id.clone().map(|e| format!("{chat}/{e}"));
                let messages = message(e, &HashMap::new()).into_iter().collect();
                event.conversation = Some(ConversationUpdate {
                    chat_id: chat.clone(),
                    messages,
                    ..ConversationUpdate::default()
                });
            }
        }
        "chat_deactivated" => {
            if let Some(chat) = &event.chat_id {
                id = Some(format!(
                    "{chat}/{}",
                    payload.thread_id.as_deref().unwrap_or("")
                ));
                event.conversation = Some(ConversationUpdate {
                    chat_id: chat.clone(),
                    closed: true,
                    ..ConversationUpdate::default()
                });
                event.record = Some("chat closed".into());
            }
        }
        "thread_tagged" => event.tags.extend(payload.tag.clone()),
        "customer_session_fields_updated" => {
            event.visitor = payload.id.as_ref().map(|id| Visitor {
                ids: vec![format!("customer:{id}")],
                ..Visitor::default()
            });
            event.fields = key_values(payload.session_fields.as_ref());
        }
        "incoming_customer" | "customer_created" => {
            if let Some(customer) = &payload.customer {
                event.visitor = customer_visitor(customer);
                event.fields = key_values(customer.session_fields.as_ref());
                let landing = customer
                    .visit
                    .as_ref()
                    .and_then(|v| super::first_url(&v.last_pages));
                event.source = super::source(super::first_group(&customer.group_ids), landing);
            }
        }
        _ => {}
    }
    let id = id.unwrap_or_else(|| body_hash(body));
    let key = match &raw.webhook_id {
        Some(webhook) => format!("v3:{webhook}:{action}:{id}"),
        None => format!("v3:{action}:{id}"),
    };
    Ok((event, key))
}

/// The customer becomes the visitor, the agents the conversation's agent,
/// the thread's messages its transcript. Returns the chat and thread ids.
fn incoming_chat(event: &mut Event, chat: &Chat) -> Option<String> {
    let customer = chat
        .users
        .iter()
        .find(|u| u.kind.as_deref() == Some("customer"));
    if let Some(customer) = customer {
        event.visitor = customer_visitor(customer);
        event.fields = key_values(customer.session_fields.as_ref());
    }
    event.source = chat_source(chat, customer);
    let kinds: HashMap<&str, &User> = chat
        .users
        .iter()
        .filter_map(|u| Some((u.id.as_deref()?, u)))
        .collect();
    let agents: Vec<String> = chat
        .users
        .iter()
        .filter(|u| u.kind.as_deref() == Some("agent"))
        .filter_map(|u| u.name.clone().or_else(|| u.id.clone()))
        .collect();
    let threads: Vec<&Thread> = chat.thread.iter().chain(&chat.threads).collect();
    let forms = threads
        .iter()
        .flat_map(|t| &t.events)
        .filter(|e| e.kind.as_deref() == Some("filled_form"))
        .flat_map(|e| &e.fields);
    for field in forms {
        let Some(answer) = field.answer.clone() else {
            continue;
        };
        let visitor = event.visitor.get_or_insert_with(Visitor::default);
        super::survey_answer(
            visitor,
            field.kind.as_deref(),
            field.label.as_deref(),
            answer,
        );
    }
    let mut messages = Vec::new();
    // Event ids are unique in LiveChat's data; when a body repeats one
    // anyway, the repeats are kept as messages of their own.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for thread in &threads {
        event
            .tags
            .extend(thread.tags.iter().filter_map(lenient::as_string));
        for e in &thread.events {
            if let Some(mut m) = message(e, &kinds) {
                if let Some(ext) = &m.ext_id {
                    let n = seen.entry(ext.clone()).or_default();
                    *n += 1;
                    if *n > 1 {
                        m.ext_id = Some(format!("{ext}#{n}"));
                    }
                }
                messages.push(m);
            }
        }
    }
    let chat_id = chat.id.clone()?;
    event.conversation = Some(ConversationUpdate {
        chat_id: chat_id.clone(),
        agent: (!agents.is_empty()).then(|| agents.join(", ")),
        messages,
        closed: false,
    });
    let thread_ids: Vec<&str> = threads.iter().filter_map(|t| t.id.as_deref()).collect();
    Some(format!("{chat_id}/{}", thread_ids.join(",")))
}

/// Where the customer came from: the chat's group (else the thread's,
/// else the customer's) and the first page of the visit.
fn chat_source(chat: &Chat, customer: Option<&User>) -> Option<crate::event::LeadSource> {
    let access = |a: &Option<Access>| a.as_ref().and_then(|a| super::first_group(&a.group_ids));
    let group = access(&chat.access)
        .or_else(|| chat.thread.as_ref().and_then(|t| access(&t.access)))
        .or_else(|| customer.and_then(|c| super::first_group(&c.group_ids)));
    let landing = customer
        .and_then(|c| c.visit.as_ref())
        .and_then(|v| super::first_url(&v.last_pages));
    super::source(group, landing)
}

fn customer_visitor(user: &User) -> Option<Visitor> {
    let visitor = Visitor {
        ids: user.id.iter().map(|id| format!("customer:{id}")).collect(),
        name: user.name.clone(),
        emails: user.email.iter().cloned().collect(),
        phones: user.phone_number.iter().cloned().collect(),
        description: None,
    };
    (!visitor.is_empty()).then_some(visitor)
}

/// A thread event that is a message, with its sender: known from the
/// chat's users when we have them, else agents are the ids that are emails
/// (which is how LiveChat names agents).
fn message(e: &ThreadEvent, users: &HashMap<&str, &User>) -> Option<Message> {
    if e.kind.as_deref() != Some("message") {
        return None;
    }
    let author = e.author_id.as_deref();
    let user = author.and_then(|a| users.get(a));
    let from = match (user.and_then(|u| u.kind.as_deref()), author) {
        (Some("customer"), _) => Sender::Visitor,
        (Some("agent"), _) => Sender::Agent,
        (Some(_), _) => Sender::System,
        (None, Some(a)) if a.contains('@') => Sender::Agent,
        (None, Some(_)) => Sender::Visitor,
        (None, None) => Sender::System,
    };
    Some(Message {
        ext_id: e.id.clone(),
        from,
        author: user.and_then(|u| u.name.clone()),
        text: e.text.clone()?,
        at: e.created_at.as_deref().and_then(normalize_rfc3339),
    })
}
