//! The lead as a chat agent sees it beside the chat: what every platform's
//! answer is built from. Storage reads it; platforms render it.

use std::collections::BTreeMap;

use crate::crm::merge::Contact;

/// The lead as a chat agent sees it beside the chat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadCard {
    /// Lead id.
    pub id: i64,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Status.
    pub status: String,
    /// The sales user who owns the lead, if one does.
    pub owner: Option<String>,
    /// Emails, primary first.
    pub emails: Vec<Contact>,
    /// Phones, primary first.
    pub phones: Vec<Contact>,
    /// Number of conversations.
    pub chats: i64,
    /// The latest conversation other than the current one: platform, chat id, start.
    pub last_chat: Option<(String, String, String)>,
    /// Tags.
    pub tags: Vec<String>,
    /// Custom fields.
    pub fields: BTreeMap<String, String>,
    /// Possible duplicates: id and name.
    pub duplicates: Vec<(i64, Option<String>)>,
}
