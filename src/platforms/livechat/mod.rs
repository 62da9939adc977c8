//! LiveChat webhooks, in both envelopes LiveChat has shipped: v2
//! (`event_type`, authenticated by HTTP Basic credentials in the webhook
//! URL) and v3 (`action` and `payload`, authenticated by a `secret_key` in
//! the body). The body says which one it is.
//!
//! Both bodies carry credentials of their own (v2's `token` is a LiveChat
//! API token, v3's `secret_key` ours): they are stored with the raw
//! delivery but never copied into an event or a log line.

pub mod v2;
pub mod v3;

use serde_json::{Map, Value};

use serde::Deserialize;

use super::lenient;
use crate::event::{Event, LeadSource, Visitor, query_value};

/// Which envelope a body uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `event_type`, `token`, `license_id`, data types at the top level.
    V2,
    /// `webhook_id`, `secret_key`, `action`, `payload`.
    V3,
}

/// The envelope of an already parsed body: `action` means v3, `event_type` v2.
pub fn envelope(map: &Map<String, Value>) -> Option<Envelope> {
    if map.contains_key("action") {
        Some(Envelope::V3)
    } else if map.contains_key("event_type") {
        Some(Envelope::V2)
    } else {
        None
    }
}

/// The `secret_key` of a v3 body, if the body is one.
pub fn v3_secret(body: &[u8]) -> Option<String> {
    let map = lenient::json_object(body).ok()?;
    match envelope(&map) {
        Some(Envelope::V3) => map.get("secret_key").and_then(lenient::as_string),
        _ => None,
    }
}

/// Reads the event name (v2 `event_type`, v3 `action`) of a body that may
/// not parse, for the inbox.
pub fn event_name(body: &[u8]) -> String {
    lenient::json_object(body)
        .ok()
        .and_then(|m| {
            m.get("action")
                .or_else(|| m.get("event_type"))
                .and_then(lenient::as_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Translates a LiveChat body of either envelope into an event and its
/// idempotency key; `Err` carries the reason for a 400.
pub fn parse(body: &[u8]) -> Result<(Event, String), String> {
    let map = lenient::json_object(body)?;
    match envelope(&map) {
        Some(Envelope::V3) => v3::parse(map, body),
        Some(Envelope::V2) => v2::parse(map, body),
        None => Err("neither event_type nor action: not a LiveChat webhook".into()),
    }
}

/// `custom_variables` (`[{"key", "value"}]`) and `session_fields`
/// (`[{"name": "value"}, …]`) as custom fields.
fn key_values(list: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|o| match (o.get("key"), o.get("value")) {
            (Some(k), Some(v)) => lenient::as_string(k)
                .zip(lenient::as_string(v))
                .into_iter()
                .collect::<Vec<_>>(),
            _ => o
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), lenient::as_string(v)?)))
                .collect(),
        })
        .collect()
}

/// A page of a visit (`last_pages` in both envelopes).
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default, deserialize_with = "lenient::string")]
    url: Option<String>,
}

/// The first page of a visit that has an address: where the visitor landed.
fn first_url(pages: &[Page]) -> Option<String> {
    pages.iter().find_map(|p| p.url.clone())
}

/// The first group of a list of ids or `{"id", "name"}` objects: its
/// name, else its id.
fn first_group(groups: &[Value]) -> Option<String> {
    groups.iter().find_map(|g| match g {
        Value::Object(o) => o
            .get("name")
            .and_then(lenient::as_string)
            .or_else(|| o.get("id").and_then(lenient::as_string)),
        other => lenient::as_string(other),
    })
}

/// A LiveChat lead's source: its group and landing page, and the landing
/// page's UTM campaign.
fn source(group: Option<String>, landing_page: Option<String>) -> Option<LeadSource> {
    LeadSource {
        group,
        utm_campaign: landing_page
            .as_deref()
            .and_then(|url| query_value(url, "utm_campaign")),
        landing_page,
        ..LeadSource::default()
    }
    .known()
}

/// A pre-chat survey answer (v2 `pre_chat_survey`, v3 `filled_form`): the
/// name fills a missing name, emails and phones are added; by the field's
/// type, or by its label for free-form questions. Other answers are left in
/// the raw delivery.
fn survey_answer(visitor: &mut Visitor, kind: Option<&str>, label: Option<&str>, answer: String) {
    let label = label.unwrap_or("").to_lowercase();
    match kind {
        Some("name") => {
            visitor.name.get_or_insert(answer);
        }
        Some("email") => push_new(&mut visitor.emails, answer),
        Some("phone") => push_new(&mut visitor.phones, answer),
        _ if label.contains("mail") => push_new(&mut visitor.emails, answer),
        _ if label.contains("phone") => push_new(&mut visitor.phones, answer),
        _ => {}
    }
}

fn push_new(values: &mut Vec<String>, value: String) {
    if !values.contains(&value) {
        values.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_decides_the_envelope() {
        assert_eq!(
            event_name(br#"{"action":"incoming_chat","event_type":"x"}"#),
            "incoming_chat"
        );
        assert_eq!(
            event_name(br#"{"event_type":"chat_started"}"#),
            "chat_started"
        );
        assert_eq!(event_name(b"nope"), "unknown");
        assert_eq!(
            v3_secret(br#"{"action":"a","secret_key":"s"}"#).as_deref(),
            Some("s")
        );
        assert_eq!(v3_secret(br#"{"event_type":"a","secret_key":"s"}"#), None);
        assert!(parse(br#"{"hello":1}"#).unwrap_err().contains("LiveChat"));
    }

    #[test]
    fn custom_variables_and_session_fields_become_fields() {
        let list = serde_json::json!([{"key": "Customer ID", "value": 42}, {"plan": "pro", "seats": null}, 5]);
        assert_eq!(
            key_values(Some(&list)),
            [
                ("Customer ID".into(), "42".into()),
                ("plan".into(), "pro".into())
            ]
        );
        assert!(key_values(Some(&serde_json::json!({"a": 1}))).is_empty());
    }

    #[test]
    fn v3_filled_form_completes_the_customer() {
        let body = br#"{"webhook_id":"w","action":"incoming_chat","payload":{"chat":{"id":"C",
            "users":[{"id":"u1","type":"customer"}],
            "thread":{"id":"T","events":[{"id":"f","type":"filled_form","fields":[
                {"type":"name","label":"Name:","answer":"Ann"},
                {"type":"email","label":"E-mail:","answer":"ann@example.com"},
                {"type":"question","label":"Phone number","answer":"555 0100 77"}]}]}}}}"#;
        let (event, key) = parse(body).unwrap();
        let v = event.visitor.unwrap();
        assert_eq!(v.name.as_deref(), Some("Ann"));
        assert_eq!(v.emails, ["ann@example.com"]);
        assert_eq!(v.phones, ["555 0100 77"]);
        assert_eq!(v.ids, ["customer:u1"]);
        assert_eq!(key, "v3:w:incoming_chat:C/T");
        assert!(event.conversation.unwrap().messages.is_empty());
    }

    #[test]
    fn the_source_is_the_group_and_the_first_page_of_the_visit() {
        let body = include_bytes!("../../../tests/fixtures/livechat/v3/incoming_chat.json");
        let source = parse(body).unwrap().0.source.unwrap();
        assert_eq!(source.group.as_deref(), Some("1"), "the thread's group");
        assert_eq!(
            source.landing_page.as_deref(),
            Some("https://www.livechat.com/")
        );
        let body = br#"{"event_type":"chat_started","visitor":{"id":"v",
            "last_visit":{"last_pages":[{"url":"https://s.example/p?utm_campaign=c1"}]}},
            "chat":{"id":"C","groups":[{"id":2,"name":"Sales"}]}}"#;
        let source = parse(body).unwrap().0.source.unwrap();
        assert_eq!(source.group.as_deref(), Some("Sales"));
        assert_eq!(source.utm_campaign.as_deref(), Some("c1"));
        let body = include_bytes!("../../../tests/fixtures/livechat/v2/ticket_created.json");
        let source = parse(body).unwrap().0.source.unwrap();
        assert_eq!(source.group.as_deref(), Some("All operators"));
    }
}
