//! JivoChat webhooks: wire types, their translation into an [`Event`], and
//! the answer Jivo shows the agent.
//!
//! Jivo sends no delivery id and resends the same body, so the idempotency
//! key is a hash of the body.

use serde::Deserialize;
use serde_json::{Value, json};

use super::lenient;
use crate::config::{Config, RowSource};
use crate::crm::card::LeadCard;
use crate::event::{
    ConversationUpdate, Event, LeadSource, Message, Note, Sender, Visitor, query_value,
    unix_to_rfc3339,
};

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default, deserialize_with = "lenient::string")]
    event_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    chat_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    user_token: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    visitor: Option<JivoVisitor>,
    #[serde(default, deserialize_with = "lenient::object")]
    agent: Option<Agent>,
    #[serde(default, deserialize_with = "lenient::list")]
    agents: Vec<Agent>,
    #[serde(default, deserialize_with = "lenient::object")]
    assigned_agent: Option<Agent>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<Tag>,
    #[serde(default, deserialize_with = "lenient::object")]
    chat: Option<Chat>,
    #[serde(default, deserialize_with = "lenient::string")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    offline_message_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    call: Option<Call>,
    #[serde(default, deserialize_with = "lenient::string")]
    widget_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    department: Option<Named>,
    #[serde(default, deserialize_with = "lenient::object")]
    session: Option<Session>,
    #[serde(default, deserialize_with = "lenient::object")]
    page: Option<Page>,
}

#[derive(Debug, Deserialize)]
struct Named {
    #[serde(default, deserialize_with = "lenient::string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Session {
    /// `source=google|medium=cpc|campaign=…`.
    #[serde(default, deserialize_with = "lenient::string")]
    utm: Option<String>,
    /// The same as an object.
    #[serde(default)]
    utm_json: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default, deserialize_with = "lenient::string")]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JivoVisitor {
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    phone: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    number: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    #[serde(default, deserialize_with = "lenient::string")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    #[serde(default, deserialize_with = "lenient::string")]
    title: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Chat {
    #[serde(default, deserialize_with = "lenient::list")]
    messages: Vec<ChatMessage>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default, deserialize_with = "lenient::string")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient::unix_time")]
    timestamp: Option<i64>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    agent_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Call {
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    phone: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    status: Option<String>,
}

/// Reads the event name of a body that may not parse, for the inbox.
pub fn event_name(body: &[u8]) -> String {
    lenient::json_object(body)
        .ok()
        .and_then(|m| m.get("event_name").and_then(lenient::as_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Translates a Jivo body; `Err` carries the reason for a 400.
pub fn parse(body: &[u8]) -> Result<Event, String> {
    let map = lenient::json_object(body)?;
    let body: Body = Body::deserialize(Value::Object(map)).map_err(|e| e.to_string())?;
    let name = body
        .event_name
        .clone()
        .ok_or("missing event_name: not a Jivo webhook")?;
    let visitor = visitor(&body);
    let agent_names = |agents: &[Agent]| {
        let names: Vec<String> = agents.iter().filter_map(|a| a.name.clone()).collect();
        (!names.is_empty()).then(|| names.join(", "))
    };
    let agent = body
        .agent
        .as_ref()
        .or(body.assigned_agent.as_ref())
        .map(std::slice::from_ref)
        .map(agent_names)
        .unwrap_or_else(|| agent_names(&body.agents));
    let mut event = Event {
        name: name.clone(),
        chat_id: body.chat_id.clone(),
        visitor,
        tags: body.tags.iter().filter_map(|t| t.title.clone()).collect(),
        source: source(&body),
        ..Event::default()
    };
    match name.as_str() {
        "chat_accepted" | "chat_updated" => {
            event.wants_card = true;
            if let Some(chat_id) = &body.chat_id {
                event.conversation = Some(ConversationUpdate {
                    chat_id: chat_id.clone(),
                    agent,
                    ..ConversationUpdate::default()
                });
            }
        }
        "chat_finished" => {
            if let Some(chat_id) = &body.chat_id {
                event.conversation = Some(ConversationUpdate {
                    chat_id: chat_id.clone(),
                    agent: agent.clone(),
                    messages: transcript(&body, agent.as_deref()),
                    closed: true,
                });
            }
        }
        "offline_message" => {
            if let Some(text) = body.message.clone() {
                let ext_id = body
                    .offline_message_id
                    .clone()
                    .or_else(|| body.chat_id.clone())
                    .unwrap_or_else(|| super::body_hash(text.as_bytes()));
                event.note = Some(Note {
                    ext_id,
                    kind: "offline_message".into(),
                    text,
                    at: body
                        .offline_message_id
                        .as_deref()
                        .and_then(|id| id.parse::<i64>().ok())
                        .filter(|ms| *ms > 100_000_000_000)
                        .and_then(|ms| unix_to_rfc3339(ms / 1000)),
                });
            }
        }
        "call_event" => {
            if let Some(call) = &body.call {
                let parts: Vec<&str> = [call.kind.as_deref(), call.status.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                event.record = Some(format!("call {}", parts.join(" ")));
            }
        }
        "chat_assigned" => {
            event.record = agent.map(|a| format!("chat assigned to {a}"));
        }
        _ => {}
    }
    Ok(event)
}

/// Where the visitor came from: the widget (Jivo's channel), the
/// department, the page the chat started on and its UTM campaign (from
/// `session.utm_json`, `session.utm`, or the page's own query string).
fn source(body: &Body) -> Option<LeadSource> {
    let landing_page = body.page.as_ref().and_then(|p| p.url.clone());
    let session = body.session.as_ref();
    let campaign = session
        .and_then(|s| s.utm_json.as_ref())
        .and_then(|u| u.get("campaign"))
        .and_then(lenient::as_string)
        .or_else(|| {
            session.and_then(|s| s.utm.as_deref()).and_then(|utm| {
                utm.split('|').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k.trim() == "campaign").then(|| v.to_owned())
                })
            })
        })
        .or_else(|| query_value(landing_page.as_deref()?, "utm_campaign"));
    LeadSource {
        channel: body.widget_id.clone(),
        department: body
            .department
            .as_ref()
            .and_then(|d| d.name.clone().or_else(|| d.id.clone())),
        utm_campaign: campaign,
        landing_page,
        ..LeadSource::default()
    }
    .known()
}

fn visitor(body: &Body) -> Option<Visitor> {
    let v = body.visitor.as_ref();
    let mut visitor = Visitor {
        name: v.and_then(|v| v.name.clone()),
        description: v.and_then(|v| v.description.clone()),
        ..Visitor::default()
    };
    if let Some(email) = v.and_then(|v| v.email.clone()) {
        visitor.emails.push(email);
    }
    let phone = v
        .and_then(|v| v.phone.clone())
        .or_else(|| body.call.as_ref().and_then(|c| c.phone.clone()));
    visitor.phones.extend(phone);
    // client_updated names the visitor by client_id, which is the visitor number.
    if let Some(number) = v
        .and_then(|v| v.number.clone())
        .or_else(|| body.client_id.clone())
    {
        visitor.ids.push(format!("number:{number}"));
    }
    if let Some(token) = body.user_token.clone() {
        visitor.ids.push(format!("token:{token}"));
    }
    (!visitor.is_empty()).then_some(visitor)
}

fn transcript(body: &Body, agent: Option<&str>) -> Vec<Message> {
    let Some(chat) = &body.chat else {
        return Vec::new();
    };
    let visitor_name = body.visitor.as_ref().and_then(|v| v.name.clone());
    chat.messages
        .iter()
        .filter_map(|m| {
            let text = m.message.clone()?;
            let from = match m.kind.as_deref() {
                Some("visitor") => Sender::Visitor,
                Some("agent") => Sender::Agent,
                _ if m.agent_id.is_some() => Sender::Agent,
                _ => Sender::System,
            };
            let author = match from {
                Sender::Visitor => visitor_name.clone(),
                Sender::Agent => agent.map(str::to_owned),
                Sender::System => None,
            };
            Some(Message {
                ext_id: None,
                from,
                author,
                text,
                at: m.timestamp.and_then(unix_to_rfc3339),
            })
        })
        .collect()
}

/// The full answer to `chat_accepted` and `chat_updated`.
pub fn answer(card: &LeadCard, config: &Config) -> Value {
    let crm_link = lead_link(config, card.id);
    let mut contact = serde_json::Map::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            contact.insert(key.into(), Value::String(v.into()));
        }
    };
    put("name", card.name.as_deref());
    put("phone", primary(&card.phones));
    put("email", primary(&card.emails));
    put("description", card.description.as_deref());
    json!({
        "result": "ok",
        "custom_data": custom_data(card, config),
        "contact_info": contact,
        "enable_assign": config.jivo.enable_assign,
        "crm_link": crm_link,
    })
}

/// The answer when storage could not answer in time: the visitor as the
/// payload describes them, and a row saying the lead is on its way. No
/// `crm_link`, since the lead id is not known yet.
pub fn provisional_answer(event: &Event, config: &Config) -> Value {
    let mut contact = serde_json::Map::new();
    if let Some(v) = &event.visitor {
        let fields = [
            ("name", v.name.as_deref()),
            ("phone", v.phones.first().map(String::as_str)),
            ("email", v.emails.first().map(String::as_str)),
            ("description", v.description.as_deref()),
        ];
        for (key, value) in fields {
            if let Some(value) = value.filter(|s| !s.trim().is_empty()) {
                contact.insert(key.into(), Value::String(value.into()));
            }
        }
    }
    json!({
        "result": "ok",
        "custom_data": [{"title": "CRM", "content": "busy: the lead is saved and will appear shortly"}],
        "contact_info": contact,
        "enable_assign": config.jivo.enable_assign,
    })
}

/// `{public_url}/leads/{id}`.
pub fn lead_link(config: &Config, id: i64) -> String {
    format!("{}/leads/{id}", config.server.public_url)
}

fn primary(contacts: &[crate::crm::merge::Contact]) -> Option<&str> {
    contacts.iter().find(|c| c.primary).map(|c| c.raw.as_str())
}

fn others(contacts: &[crate::crm::merge::Contact]) -> Option<String> {
    let list: Vec<&str> = contacts
        .iter()
        .filter(|c| !c.primary)
        .map(|c| c.raw.as_str())
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

fn custom_data(card: &LeadCard, config: &Config) -> Vec<Value> {
    let mut rows = Vec::new();
    let row = |title: &str, content: String, link: Option<String>| {
        let mut r = json!({ "title": title, "content": content });
        if let Some(link) = link {
            r["link"] = Value::String(link);
        }
        r
    };
    for configured in &config.jivo.custom_data {
        let title = configured.title.as_str();
        let content = match &configured.source {
            RowSource::Lead => {
                let name = card
                    .name
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default();
                rows.push(row(
                    title,
                    format!("#{}{name}", card.id),
                    Some(lead_link(config, card.id)),
                ));
                continue;
            }
            RowSource::Duplicates => {
                for (id, name) in &card.duplicates {
                    let name = name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
                    rows.push(row(
                        title,
                        format!("#{id}{name}"),
                        Some(lead_link(config, *id)),
                    ));
                }
                continue;
            }
            RowSource::Status => Some(card.status.clone()),
            RowSource::Owner => card.owner.clone(),
            RowSource::Chats => Some(card.chats.to_string()),
            RowSource::LastChat => card.last_chat.as_ref().map(|(platform, chat, at)| {
                let when = at.get(..16).unwrap_or(at).replace('T', " ");
                format!("{when} UTC ({platform} {chat})")
            }),
            RowSource::OtherEmails => others(&card.emails),
            RowSource::OtherPhones => others(&card.phones),
            RowSource::Description => card.description.clone(),
            RowSource::Tags => (!card.tags.is_empty()).then(|| card.tags.join(", ")),
            RowSource::Field(name) => card.fields.get(name).cloned(),
        };
        if let Some(content) = content.filter(|c| !c.is_empty()) {
            rows.push(row(title, content, None));
        }
    }
    rows.truncate(10);
    if rows.is_empty() {
        rows.push(row(
            "Lead",
            format!("#{}", card.id),
            Some(lead_link(config, card.id)),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_numbers_nulls_and_wrong_types() {
        let body = br#"{"event_name":"chat_accepted","chat_id":"77","user_token":null,
            "visitor":{"number":2198,"phone":"(408) 498-7855","email":null,"name":5},
            "agent":"not an object","tags":"nope","analytics":null,"extra":{"x":1}}"#;
        let e = parse(body).unwrap();
        assert!(e.wants_card);
        let v = e.visitor.unwrap();
        assert_eq!(v.ids, ["number:2198"]);
        assert_eq!(v.phones, ["(408) 498-7855"]);
        assert!(v.emails.is_empty());
        assert_eq!(v.name.as_deref(), Some("5"));
        assert_eq!(e.conversation.unwrap().chat_id, "77");
    }

    #[test]
    fn a_body_without_event_name_is_refused() {
        assert!(
            parse(br#"{"visitor":{}}"#)
                .unwrap_err()
                .contains("event_name")
        );
        assert!(parse(b"[]").is_err());
    }

    #[test]
    fn transcript_keeps_order_and_senders() {
        let body = br#"{"event_name":"chat_finished","chat_id":1,"visitor":{"name":"Ann"},
            "agents":[{"name":"Tom"}],
            "chat":{"messages":[{"message":"hi","timestamp":"1665396476","type":"visitor"},
                                {"message":"hello","timestamp":1665396483,"type":"agent","agent_id":1},
                                {"timestamp":1}]}}"#;
        let e = parse(body).unwrap();
        let c = e.conversation.unwrap();
        assert!(c.closed);
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.messages[0].from, Sender::Visitor);
        assert_eq!(c.messages[0].author.as_deref(), Some("Ann"));
        assert_eq!(c.messages[1].from, Sender::Agent);
        assert_eq!(c.messages[1].author.as_deref(), Some("Tom"));
    }

    #[test]
    fn the_source_is_read_from_widget_department_page_and_utm() {
        let body = include_bytes!("../../tests/fixtures/jivo/chat_accepted.json");
        let source = parse(body).unwrap().source.unwrap();
        assert_eq!(
            source,
            LeadSource {
                channel: Some("3948".into()),
                department: Some("Sales".into()),
                utm_campaign: Some("campaign_name".into()),
                landing_page: Some("http://example.com/".into()),
                ..LeadSource::default()
            }
        );
        // Without `utm_json`, from `utm`; without either, from the page.
        let body =
            br#"{"event_name":"chat_accepted","session":{"utm":"source=x|campaign=spring"}}"#;
        let source = parse(body).unwrap().source.unwrap();
        assert_eq!(source.utm_campaign.as_deref(), Some("spring"));
        let body = br#"{"event_name":"chat_accepted","page":{"url":"https://a.example/?utm_campaign=fall%20sale&x=1"}}"#;
        let source = parse(body).unwrap().source.unwrap();
        assert_eq!(source.utm_campaign.as_deref(), Some("fall sale"));
        assert!(
            parse(br#"{"event_name":"chat_accepted","widget_id":" "}"#)
                .unwrap()
                .source
                .is_none()
        );
    }
}
