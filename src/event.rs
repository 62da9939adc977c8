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

fn format_time(t: time::OffsetDateTime) -> String {
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
