//! Rocket.Chat Omnichannel webhooks ("CRM integration"): wire types and
//! their translation into an [`Event`].
//!
//! Every room event (`LivechatSession`, `LivechatSessionStart`, `…Queued`,
//! `…Taken`, `…Forwarded`, `LivechatEdit`, `Message`) carries the room, its
//! visitor, its agent and the room's messages so far; `LeadCapture` carries
//! the raw visitor document and what was captured; `LivechatOfflineMessage`
//! only the form. Servers before 3.x send the visitor's email and phone as
//! strings, newer ones as `[{"address"}]` / `[{"phoneNumber"}]`.
//!
//! Rocket.Chat sends no delivery id and retries the same body up to ten
//! times, so the idempotency key is derived from the content.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{body_hash, lenient};
use crate::event::{
    ConversationUpdate, Event, LeadSource, Message, Note, Sender, Visitor, normalize_rfc3339,
};

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, rename = "_id", deserialize_with = "lenient::string")]
    room: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    visitor: Option<RcVisitor>,
    #[serde(default, deserialize_with = "lenient::object")]
    agent: Option<Agent>,
    #[serde(default, deserialize_with = "lenient::list")]
    messages: Vec<RcMessage>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<Value>,
    #[serde(default, rename = "customFields")]
    custom_fields: Option<Value>,
    #[serde(default, rename = "crmData")]
    crm_data: Option<Value>,
    #[serde(default, deserialize_with = "lenient::object")]
    lead: Option<Lead>,
    #[serde(default, deserialize_with = "lenient::string")]
    message: Option<String>,
    #[serde(default, rename = "sentAt", deserialize_with = "lenient::string")]
    sent_at: Option<String>,
    /// The room's department (an id; older servers put it on the visitor).
    #[serde(default, rename = "departmentId", deserialize_with = "lenient::string")]
    department_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RcVisitor {
    #[serde(default, rename = "_id", deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    token: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
    /// A string (old servers) or `[{"address": …}]`.
    #[serde(default)]
    email: Option<Value>,
    /// The raw visitor document's name for the same list (`LeadCapture`).
    #[serde(default, rename = "visitorEmails")]
    visitor_emails: Option<Value>,
    /// A string (old servers), `[{"phoneNumber": …}]`, or null.
    #[serde(default)]
    phone: Option<Value>,
    #[serde(default, rename = "customFields")]
    custom_fields: Option<Value>,
    /// The raw visitor document's name for the custom fields (`LeadCapture`).
    #[serde(default, rename = "livechatData")]
    livechat_data: Option<Value>,
    /// The department the visitor chose (older servers).
    #[serde(default, deserialize_with = "lenient::string")]
    department: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RcMessage {
    #[serde(default, rename = "_id", deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    msg: Option<String>,
    #[serde(default)]
    ts: Option<Value>,
    #[serde(default, rename = "agentId", deserialize_with = "lenient::string")]
    agent_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    u: Option<Author>,
    #[serde(default, rename = "fileUpload", deserialize_with = "lenient::object")]
    file_upload: Option<FileUpload>,
}

#[derive(Debug, Deserialize)]
struct Author {
    #[serde(default, rename = "_id", deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FileUpload {
    #[serde(
        default,
        rename = "publicFilePath",
        deserialize_with = "lenient::string"
    )]
    public_file_path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Lead {
    #[serde(default)]
    email: Option<Value>,
    #[serde(default)]
    phone: Option<Value>,
}

/// Reads the event type of a body that may not parse, for the inbox.
pub fn event_name(body: &[u8]) -> String {
    lenient::json_object(body)
        .ok()
        .and_then(|m| m.get("type").and_then(lenient::as_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Translates a Rocket.Chat body into an event and its idempotency key;
/// `Err` carries the reason for a 400.
pub fn parse(body: &[u8]) -> Result<(Event, String), String> {
    let map = lenient::json_object(body)?;
    let raw: Body = Body::deserialize(Value::Object(map)).map_err(|e| e.to_string())?;
    let name = raw
        .kind
        .clone()
        .ok_or("missing type: not a Rocket.Chat webhook")?;
    let mut event = Event {
        name: name.clone(),
        chat_id: raw.room.clone(),
        visitor: visitor(&raw),
        lead_hint: raw.crm_data.as_ref().and_then(lead_hint),
        tags: raw.tags.iter().filter_map(lenient::as_string).collect(),
        fields: fields(&raw),
        source: LeadSource {
            department: raw
                .visitor
                .as_ref()
                .and_then(|v| v.department.clone())
                .or_else(|| raw.department_id.clone()),
            ..LeadSource::default()
        }
        .known(),
        ..Event::default()
    };
    let agent = raw
        .agent
        .as_ref()
        .and_then(|a| a.name.clone().or_else(|| a.username.clone()));
    let room_event = |closed: bool| {
        raw.room.as_ref().map(|room| ConversationUpdate {
            chat_id: room.clone(),
            agent: agent.clone(),
            messages: transcript(&raw),
            closed,
        })
    };
    match name.as_str() {
        "LivechatSession" => {
            event.conversation = room_event(true);
            event.record = Some(match &agent {
                Some(a) => format!("chat closed (agent {a})"),
                None => "chat closed".into(),
            });
        }
        "Message" => event.conversation = room_event(false),
        "LivechatSessionStart"
        | "LivechatSessionQueued"
        | "LivechatSessionTaken"
        | "LivechatSessionForwarded"
        | "LivechatEdit" => {
            event.conversation = room_event(false);
            let what = match name.as_str() {
                "LivechatSessionStart" => "chat started",
                "LivechatSessionQueued" => "chat queued",
                "LivechatSessionTaken" => "chat taken",
                "LivechatSessionForwarded" => "chat forwarded",
                _ => "chat details edited",
            };
            event.record = Some(match (&agent, name.as_str()) {
                (Some(a), "LivechatSessionTaken" | "LivechatSessionForwarded") => {
                    format!("{what} (agent {a})")
                }
                _ => what.into(),
            });
        }
        "LeadCapture" => {
            let captured = raw.lead.as_ref();
            let visitor = event.visitor.get_or_insert_with(Visitor::default);
            if let Some(lead) = captured {
                // What was captured comes first: it is the newest information.
                let mut emails = strings(lead.email.as_ref(), "address");
                emails.append(&mut visitor.emails);
                visitor.emails = emails;
                let mut phones = strings(lead.phone.as_ref(), "phoneNumber");
                phones.append(&mut visitor.phones);
                visitor.phones = phones;
            }
            dedup(&mut visitor.emails);
            dedup(&mut visitor.phones);
            if visitor.is_empty() {
                event.visitor = None;
            }
            event.record = Some("lead captured from the chat".into());
        }
        "LivechatOfflineMessage" => {
            if let Some(text) = raw.message.clone().filter(|t| !t.trim().is_empty()) {
                event.note = Some(Note {
                    ext_id: body_hash(body),
                    kind: "offline_message".into(),
                    text,
                    at: raw.sent_at.as_deref().and_then(normalize_rfc3339),
                });
            }
        }
        _ => {}
    }
    let key = idempotency_key(&name, &raw, body);
    Ok((event, key))
}

/// `LivechatSession` and `Message` are the same delivery when they name the
/// same room and messages (by id, or by content on servers that give none),
/// whatever else changed, such as the `crmData` saved since the first try.
/// Other types are keyed by the body, since two of them (a chat forwarded
/// twice) may differ only in details.
fn idempotency_key(name: &str, raw: &Body, body: &[u8]) -> String {
    match (name, &raw.room) {
        ("LivechatSession" | "Message", Some(room)) if !raw.messages.is_empty() => {
            let signature: Vec<String> = raw
                .messages
                .iter()
                .map(|m| match &m.id {
                    Some(id) => id.clone(),
                    None => format!(
                        "{}\u{1f}{}\u{1f}{}",
                        m.username.as_deref().unwrap_or(""),
                        m.ts.as_ref().map(Value::to_string).unwrap_or_default(),
                        m.msg.as_deref().unwrap_or("")
                    ),
                })
                .collect();
            format!(
                "{name}:{room}:{}",
                body_hash(signature.join("\u{1e}").as_bytes())
            )
        }
        _ => format!("{name}:{}", body_hash(body)),
    }
}

fn visitor(raw: &Body) -> Option<Visitor> {
    let v = raw.visitor.as_ref()?;
    let mut visitor = Visitor {
        name: v.name.clone(),
        emails: strings(v.email.as_ref().or(v.visitor_emails.as_ref()), "address"),
        phones: strings(v.phone.as_ref(), "phoneNumber"),
        ..Visitor::default()
    };
    if let Some(id) = &v.id {
        visitor.ids.push(format!("id:{id}"));
    }
    if let Some(token) = &v.token {
        visitor.ids.push(format!("token:{token}"));
    }
    (!visitor.is_empty()).then_some(visitor)
}

/// A string, a list of strings, or a list of objects holding the value under `key`.
fn strings(value: Option<&Value>, key: &str) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::Object(o) => o.get(key).and_then(lenient::as_string),
        other => lenient::as_string(other),
    };
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn dedup(values: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    values.retain(|v| seen.insert(v.trim().to_lowercase()));
}

/// Room custom fields, then the visitor's (which win on a clash).
fn fields(raw: &Body) -> Vec<(String, String)> {
    let visitor = raw.visitor.as_ref();
    [
        raw.custom_fields.as_ref(),
        visitor.and_then(|v| v.custom_fields.as_ref().or(v.livechat_data.as_ref())),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_object)
    .flat_map(Map::iter)
    .filter_map(|(k, v)| Some((k.clone(), lenient::as_string(v)?)))
    .collect()
}

/// The lead id from what we answered earlier, as Rocket.Chat echoes it:
/// our whole answer, its `data` member, or either as a JSON string.
fn lead_hint(crm_data: &Value) -> Option<i64> {
    match crm_data {
        Value::Object(o) => o
            .get("lead_id")
            .and_then(|v| lenient::as_string(v)?.parse().ok())
            .or_else(|| o.get("data").and_then(lead_hint)),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .as_ref()
            .and_then(lead_hint),
        _ => None,
    }
}

fn transcript(raw: &Body) -> Vec<Message> {
    raw.messages
        .iter()
        .filter_map(|m| {
            let text = m.msg.clone().filter(|t| !t.trim().is_empty()).or_else(|| {
                m.file_upload
                    .as_ref()
                    .and_then(|f| f.public_file_path.clone())
            })?;
            let author_id = m.u.as_ref().and_then(|u| u.id.as_deref());
            // Rocket.Chat marks every message not written by the visitor
            // with `agentId`; what has an author and no mark is the visitor's.
            let from = if m.agent_id.is_some() {
                Sender::Agent
            } else if m.username.is_some() || author_id.is_some() {
                Sender::Visitor
            } else {
                Sender::System
            };
            let author =
                m.u.as_ref()
                    .and_then(|u| u.name.clone())
                    .or_else(|| m.username.clone());
            Some(Message {
                ext_id: m.id.clone(),
                from,
                author,
                text,
                at: m.ts.as_ref().and_then(timestamp),
            })
        })
        .collect()
}

/// An RFC 3339 string, or the `{"$date": ms}` of older servers.
fn timestamp(ts: &Value) -> Option<String> {
    match ts {
        Value::String(s) => normalize_rfc3339(s),
        Value::Object(o) => o
            .get("$date")
            .and_then(|d| d.as_i64())
            .and_then(|ms| crate::event::unix_to_rfc3339(ms / 1000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones_are_read_from_strings_and_lists() {
        let body = br#"{"type":"LivechatSessionStart","_id":"r1",
            "visitor":{"_id":"v1","token":"t1","email":[{"address":"a@b.c"},{"address":null}],
                       "phone":[{"phoneNumber":"+1 408 498 7855"}]}}"#;
        let (e, _) = parse(body).unwrap();
        let v = e.visitor.unwrap();
        assert_eq!(v.emails, ["a@b.c"]);
        assert_eq!(v.phones, ["+1 408 498 7855"]);
        assert_eq!(v.ids, ["id:v1", "token:t1"]);
        let body = br#"{"type":"LivechatSession","_id":"r1","code":5,
            "visitor":{"email":"a@b.c","phone":"555-0199","_id":""},"agent":null}"#;
        let (e, _) = parse(body).unwrap();
        let v = e.visitor.unwrap();
        assert_eq!(
            (v.emails, v.phones),
            (vec!["a@b.c".into()], vec!["555-0199".into()])
        );
        assert!(v.ids.is_empty());
        assert!(e.conversation.unwrap().closed);
    }

    #[test]
    fn crm_data_is_read_in_every_shape_we_may_get_back() {
        for crm in [
            r#"{"result":"ok","lead_id":7}"#,
            r#"{"data":{"lead_id":"7"}}"#,
            r#""{\"lead_id\":7}""#,
        ] {
            let body = format!(r#"{{"type":"Message","_id":"r","crmData":{crm}}}"#);
            assert_eq!(
                parse(body.as_bytes()).unwrap().0.lead_hint,
                Some(7),
                "{crm}"
            );
        }
    }

    #[test]
    fn session_key_depends_on_room_and_message_ids_not_bytes() {
        let a = br#"{"type":"LivechatSession","_id":"r","messages":[{"_id":"m1","msg":"hi"}]}"#;
        let b = br#"{"type":"LivechatSession","_id":"r","crmData":{},"messages":[{"_id":"m1","msg":"hi"}]}"#;
        assert_eq!(parse(a).unwrap().1, parse(b).unwrap().1);
        let c = br#"{"type":"LivechatSession","_id":"r","messages":[{"_id":"m2","msg":"hi"}]}"#;
        assert_ne!(parse(a).unwrap().1, parse(c).unwrap().1);
        assert!(parse(br#"{"_id":"r"}"#).unwrap_err().contains("type"));
    }

    #[test]
    fn the_department_is_the_source() {
        let body = include_bytes!("../../tests/fixtures/rocketchat/LivechatSession.legacy.json");
        let source = parse(body).unwrap().0.source.unwrap();
        assert_eq!(source.department.as_deref(), Some("department"));
        let body = br#"{"type":"LivechatSessionStart","_id":"r","departmentId":"d1"}"#;
        let source = parse(body).unwrap().0.source.unwrap();
        assert_eq!(source.department.as_deref(), Some("d1"));
        let body = include_bytes!("../../tests/fixtures/rocketchat/LivechatSession.json");
        assert!(parse(body).unwrap().0.source.is_none());
    }
}
