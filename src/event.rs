//! The internal event model: what every platform's payload is translated
//! into, and the only thing the CRM core and storage ever see.

use std::fmt;

/// A chat platform that calls us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// JivoChat.
    Jivo,
    /// Rocket.Chat Omnichannel.
    RocketChat,
    /// LiveChat (webhooks v2 and v3).
    LiveChat,
}

impl Platform {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Jivo => "jivo",
            Platform::RocketChat => "rocketchat",
            Platform::LiveChat => "livechat",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "jivo" => Some(Platform::Jivo),
            "rocketchat" => Some(Platform::RocketChat),
            "livechat" => Some(Platform::LiveChat),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery, translated. Every part is optional; storage applies what is
/// there, in the order: identity, conversation, note, tags and fields, record.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// The platform's own event name (`chat_accepted`, `LivechatSession`, …).
    pub name: String,
    /// The platform's chat or room id, when the event belongs to one.
    pub chat_id: Option<String>,
    /// Who the visitor says they are.
    pub visitor: Option<Visitor>,
    /// A lead id the platform echoes back to us (Rocket.Chat's `crmData`).
    pub lead_hint: Option<i64>,
    /// Messages of a conversation to store.
    pub conversation: Option<ConversationUpdate>,
    /// An offline message or ticket to store as a note.
    pub note: Option<Note>,
    /// Tags to add to the lead.
    pub tags: Vec<String>,
    /// Custom fields to set on the lead.
    pub fields: Vec<(String, String)>,
    /// A line for the lead's history (lifecycle events that change nothing else).
    pub record: Option<String>,
    /// Whether the platform waits for the lead card (Jivo's full answer).
    pub wants_card: bool,
    /// Where the visitor came from, as far as the payload says: kept on a
    /// lead the delivery creates, never changed afterwards.
    pub source: Option<LeadSource>,
}

/// Where a lead came from, beside its platform (which storage knows from
/// the delivery). Each part only when the payload carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeadSource {
    /// The platform's channel or widget (Jivo `widget_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The department the chat went to (Jivo, Rocket.Chat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// The group the chat went to (LiveChat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The first UTM campaign seen (`utm_campaign`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utm_campaign: Option<String>,
    /// The page the visitor arrived on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landing_page: Option<String>,
}

/// Longest part of a lead's source kept (a URL with a huge query string
/// is cut, never refused).
const MAX_SOURCE_CHARS: usize = 500;

impl LeadSource {
    /// The platform's own routing of the chat, whichever it has: Jivo's
    /// channel (widget), Rocket.Chat's department, LiveChat's group.
    pub fn channel(&self) -> Option<&str> {
        self.channel
            .as_deref()
            .or(self.department.as_deref())
            .or(self.group.as_deref())
    }

    /// `None` when nothing is known, so that a payload without any of it
    /// costs nothing; each part trimmed, empty parts dropped, long ones cut.
    pub fn known(mut self) -> Option<LeadSource> {
        for part in [
            &mut self.channel,
            &mut self.department,
            &mut self.group,
            &mut self.utm_campaign,
            &mut self.landing_page,
        ] {
            *part = part
                .take()
                .map(|s| s.trim().chars().take(MAX_SOURCE_CHARS).collect::<String>())
                .filter(|s| !s.is_empty());
        }
        (self != LeadSource::default()).then_some(self)
    }

    /// `source` as stored in `leads.source`: a JSON object with the
    /// platform and whatever else is known.
    pub fn json(platform: &str, source: Option<&LeadSource>) -> String {
        let mut object = match source.map(serde_json::to_value) {
            Some(Ok(serde_json::Value::Object(map))) => map,
            _ => serde_json::Map::new(),
        };
        object.insert("platform".into(), platform.into());
        serde_json::Value::Object(object).to_string()
    }
}

/// The value of `key` in a URL's query string (`utm_campaign` of a landing
/// page), percent-decoded; `None` when absent or empty.
pub fn query_value(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == key).then(|| {
                let v = v.replace('+', " ");
                percent_encoding::percent_decode_str(&v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
        .filter(|v| !v.trim().is_empty())
}

/// The visitor as the platform describes them; raw strings, parsed by the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visitor {
    /// The platform's own ids for this visitor (`number:2198`, `token:…`).
    pub ids: Vec<String>,
    /// Display name.
    pub name: Option<String>,
    /// Emails, first the one the visitor gave most recently.
    pub emails: Vec<String>,
    /// Phones, in any format.
    pub phones: Vec<String>,
    /// Free-text description.
    pub description: Option<String>,
}

impl Visitor {
    /// Whether the visitor carries nothing at all that could identify them.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.emails.is_empty()
            && self.phones.is_empty()
            && self.name.is_none()
            && self.description.is_none()
    }
}

/// Messages for the conversation keyed by platform and chat id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationUpdate {
    /// The platform's chat or room id.
    pub chat_id: String,
    /// The agent who served the chat.
    pub agent: Option<String>,
    /// Messages in the order they were said.
    pub messages: Vec<Message>,
    /// Whether this event closes the conversation.
    pub closed: bool,
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The website visitor.
    Visitor,
    /// An agent of the sales team.
    Agent,
    /// The platform itself (bots, system notices).
    System,
}

impl Sender {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Visitor => "visitor",
            Sender::Agent => "agent",
            Sender::System => "system",
        }
    }
}

/// One message of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The platform's message id; when it has none, one is derived from the content.
    pub ext_id: Option<String>,
    /// Who said it.
    pub from: Sender,
    /// The author's display name, when known.
    pub author: Option<String>,
    /// What was said.
    pub text: String,
    /// When, as RFC 3339 UTC; `None` when the platform did not say.
    pub at: Option<String>,
}

/// An offline message or ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The platform's id for it (dedupes redeliveries).
    pub ext_id: String,
    /// `offline_message`, `ticket`, …
    pub kind: String,
    /// The text.
    pub text: String,
    /// When, as RFC 3339 UTC.
    pub at: Option<String>,
}

/// Formats a Unix timestamp as RFC 3339 UTC with milliseconds.
pub fn unix_to_rfc3339(secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    Some(format_time(t))
}

/// Parses any RFC 3339 time and re-formats it as UTC with milliseconds.
pub fn normalize_rfc3339(s: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(format_time(t.to_offset(time::UtcOffset::UTC)))
}

/// The current time as stored: RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// `t` as times are stored (RFC 3339 UTC, milliseconds).
pub fn format_time(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_stored_as_utc_millis() {
        assert_eq!(
            unix_to_rfc3339(1665396476).as_deref(),
            Some("2022-10-10T10:07:56.000Z")
        );
        assert_eq!(
            normalize_rfc3339("2023-02-02T12:16:07.2301+02:00").as_deref(),
            Some("2023-02-02T10:16:07.230Z")
        );
        assert_eq!(normalize_rfc3339("yesterday"), None);
    }
}
