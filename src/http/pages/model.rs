//! What each page template shows, shaped for reading: times in a short
//! UTC form, platforms by their product names, decisions flattened into
//! `key: value` lines. The templates (`templates/*.html`) only lay it out.

use askama::Template;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use warp::http::StatusCode;

use crate::http::error::ApiError;
use crate::http::session::PageUser;
use crate::store::view::LeadView;

/// Who is signed in, for the header of every page: the name and, with a
/// session, the sign-out form's CSRF token (HTTP Basic has nothing to sign
/// out of).
pub struct Account {
    /// The user's name.
    pub name: String,
    /// The session's CSRF token; empty without a session.
    pub csrf: String,
}

impl Account {
    /// The header's account of `user`.
    pub fn of(user: &PageUser) -> Option<Account> {
        Some(Account {
            name: user.staff.name.clone(),
            csrf: user.csrf.clone(),
        })
    }
}

/// `GET /leads/{id}`.
#[derive(Template)]
#[template(path = "lead.html")]
pub struct LeadPage<'a> {
    /// The search box's text (empty here).
    q: &'a str,
    /// Who is signed in.
    account: Option<Account>,
    /// The lead.
    lead: &'a LeadView,
    /// Its name, or a stand-in for an anonymous visitor.
    title: String,
    /// The folded lead the visitor was redirected from.
    merged_from: Option<i64>,
    created: String,
    updated: String,
    conversations: Vec<Transcript<'a>>,
    notes: Vec<NoteLine<'a>>,
    duplicates: Vec<DuplicateLine<'a>>,
    history: Vec<ChangeLine<'a>>,
    /// Where the lead came from, as `label: value` lines.
    source: Vec<(&'static str, String)>,
    /// The forms, when the user may work leads.
    work: Option<Work>,
    /// Why the last form was refused, shown above the lead.
    problem: Option<Problem>,
    /// Whether the user owns the lead already (no "take it").
    mine: bool,
    /// The session's CSRF token, when the user may administer (the
    /// export link and the erase form).
    admin: Option<String>,
    /// The leads merged or folded into this one, each with an unmerge
    /// button: id and title.
    absorbed: Vec<(i64, String)>,
}

/// What the lead page's forms need: who posts them and the choices.
pub struct Work {
    /// The session's CSRF token (empty for HTTP Basic).
    pub csrf: String,
    /// The user's own name, for "take it".
    pub me: String,
    /// The pipeline's statuses, in order.
    pub statuses: Vec<String>,
    /// The users who may own a lead.
    pub users: Vec<String>,
}

/// A refused form: what to tell the user, and the other lead when a value
/// belongs to one.
pub struct Problem {
    /// The message, in words.
    pub message: String,
    /// The lead holding the value, linked from the message.
    pub lead: Option<i64>,
}

/// One conversation as a transcript.
struct Transcript<'a> {
    platform: &'a str,
    chat_id: &'a str,
    agent: Option<&'a str>,
    closed: bool,
    started_at: &'a str,
    started: String,
    lines: Vec<Line<'a>>,
}

/// One message: who said it, when, what.
struct Line<'a> {
    /// `visitor`, `agent` or `system`: the CSS class that places the bubble.
    side: &'static str,
    who: String,
    datetime: &'a str,
    at: Option<String>,
    text: &'a str,
}

struct NoteLine<'a> {
    kind: String,
    platform: &'a str,
    /// Who wrote it, for a staff note.
    author: Option<&'a str>,
    datetime: &'a str,
    at: String,
    text: &'a str,
}

struct DuplicateLine<'a> {
    id: i64,
    title: String,
    percent: u32,
    reason: &'a str,
}

struct ChangeLine<'a> {
    datetime: &'a str,
    at: String,
    field: &'a str,
    old: Option<&'a str>,
    new: Option<&'a str>,
    source: &'a str,
    delivery_id: Option<i64>,
    /// The decision behind the change, flattened.
    why: Vec<(String, String)>,
}

impl<'a> LeadPage<'a> {
    /// The page of `lead`.
    pub fn new(lead: &'a LeadView, merged_from: Option<i64>) -> Self {
        let conversations = lead
            .conversations
            .iter()
            .map(|c| Transcript {
                platform: platform_name(&c.platform),
                chat_id: &c.chat_id,
                agent: c.agent.as_deref(),
                closed: c.closed,
                started_at: &c.started_at,
                started: when(&c.started_at),
                lines: c
                    .messages
                    .iter()
                    .map(|m| {
                        let (side, role) = match m.from.as_str() {
                            "agent" => ("agent", "Agent"),
                            "system" => ("system", "System"),
                            _ => ("visitor", "Visitor"),
                        };
                        let who = match m.author.as_deref().filter(|a| !a.trim().is_empty()) {
                            Some(author) => format!("{author} ({})", role.to_lowercase()),
                            None => role.to_owned(),
                        };
                        Line {
                            side,
                            who,
                            datetime: m.at.as_deref().unwrap_or(""),
                            at: m.at.as_deref().map(when),
                            text: &m.text,
                        }
                    })
                    .collect(),
            })
            .collect();
        let notes = lead
            .notes
            .iter()
            .map(|n| NoteLine {
                kind: n.kind.replace('_', " "),
                platform: platform_name(&n.platform),
                author: n.author.as_deref(),
                datetime: &n.at,
                at: when(&n.at),
                text: &n.text,
            })
            .collect();
        let duplicates = lead
            .duplicate_details
            .iter()
            .map(|d| DuplicateLine {
                id: d.id,
                title: title(d.id, d.name.as_deref()),
                percent: (d.score * 100.0).round().clamp(0.0, 100.0) as u32,
                reason: &d.reason,
            })
            .collect();
        let history = lead
            .history
            .iter()
            .map(|h| {
                let mut why = Vec::new();
                if let Some(explanation) = &h.explanation {
                    readable(explanation, &mut why);
                }
                ChangeLine {
                    datetime: &h.at,
                    at: when(&h.at),
                    field: &h.field,
                    old: h.old.as_deref(),
                    new: h.new.as_deref(),
                    source: &h.source,
                    delivery_id: h.delivery_id,
                    why,
                }
            })
            .collect();
        LeadPage {
            q: "",
            account: None,
            lead,
            title: title(lead.id, lead.name.as_deref()),
            merged_from,
            created: when(&lead.created_at),
            updated: when(&lead.updated_at),
            conversations,
            notes,
            duplicates,
            history,
            source: source_lines(lead.source.as_ref()),
            work: None,
            problem: None,
            mine: false,
            admin: None,
            absorbed: Vec::new(),
        }
    }

    /// The page with the leads merged into this one (`(id, name)`).
    pub fn absorbed(mut self, absorbed: Vec<(i64, Option<String>)>) -> Self {
        self.absorbed = absorbed
            .into_iter()
            .map(|(id, name)| (id, title(id, name.as_deref())))
            .collect();
        self
    }

    /// The page as `user` sees it (their name and sign-out in the header).
    pub fn signed_in(mut self, user: &PageUser) -> Self {
        self.account = Account::of(user);
        self
    }

    /// The page with its forms (for a user who may work leads).
    pub fn working(mut self, work: Option<Work>) -> Self {
        self.mine = work
            .as_ref()
            .is_some_and(|w| self.lead.owner.as_deref() == Some(w.me.as_str()));
        self.work = work;
        self
    }

    /// The page with the admin's privacy forms, under the session's CSRF
    /// token (for a user who may administer).
    pub fn administering(mut self, csrf: Option<String>) -> Self {
        self.admin = csrf;
        self
    }

    /// The page with why the last form was refused.
    pub fn refused(mut self, problem: Problem) -> Self {
        self.problem = Some(problem);
        self
    }
}

/// A lead's `source` object as lines a person reads, known keys only, in
/// a fixed order (the JSON's own order is the store's).
fn source_lines(source: Option<&Value>) -> Vec<(&'static str, String)> {
    let Some(source) = source else {
        return Vec::new();
    };
    [
        ("platform", "Platform"),
        ("channel", "Channel"),
        ("department", "Department"),
        ("group", "Group"),
        ("utm_campaign", "UTM campaign"),
        ("landing_page", "Landing page"),
    ]
    .into_iter()
    .filter_map(|(key, label)| {
        let value = match source.get(key)? {
            Value::String(s) if key == "platform" => platform_name(s).to_owned(),
            Value::Null => return None,
            other => scalar(other),
        };
        Some((label, value))
    })
    .collect()
}

/// `POST /leads/{id}/erase`, done: what was removed.
#[derive(Template)]
#[template(path = "erased.html")]
pub struct ErasedPage {
    q: &'static str,
    account: Option<Account>,
    /// The leads erased.
    leads: String,
    /// `(what, rows)` removed.
    removed: Vec<(&'static str, u64)>,
    /// Tombstones kept.
    tombstones: u64,
}

impl ErasedPage {
    /// The page after `erased`, for `user`.
    pub fn new(user: &PageUser, erased: &crate::store::erase::Erased) -> Self {
        ErasedPage {
            q: "",
            account: Account::of(user),
            leads: (erased.lead_ids.iter())
                .map(|id| format!("#{id}"))
                .collect::<Vec<_>>()
                .join(", "),
            removed: (erased.removed.iter())
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (*k, *n))
                .collect(),
            tombstones: erased.tombstones,
        }
    }
}

/// An error, as a page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    q: &'static str,
    account: Option<Account>,
    status: u16,
    title: &'static str,
    message: String,
}

impl ErrorPage {
    /// The page for `error`.
    pub fn new(status: StatusCode, error: &ApiError) -> Self {
        let message = match error {
            ApiError::NotFound => "There is no lead here. It may have been mistyped; search for it by name, email or phone.".to_owned(),
            ApiError::Unauthorized { .. } => "Sign in with your sales account to see lead pages.".to_owned(),
            ApiError::Unavailable => "The lead database is busy or unavailable right now. Try again in a few seconds.".to_owned(),
            other => other.to_string(),
        };
        ErrorPage {
            q: "",
            account: None,
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message,
        }
    }
}

/// A lead's name, or a stand-in when the visitor never gave one.
pub(crate) fn title(id: i64, name: Option<&str>) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => format!("Unnamed visitor #{id}"),
    }
}

/// The product name of a platform key.
pub(crate) fn platform_name(key: &str) -> &str {
    match key {
        "jivo" => "Jivo",
        "rocketchat" => "Rocket.Chat",
        "livechat" => "LiveChat",
        "staff" => "Staff",
        "import" => "Import",
        other => other,
    }
}

/// A stored RFC 3339 time as `2026-11-21 14:20 UTC`; anything else as it is.
pub(crate) fn when(at: &str) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    OffsetDateTime::parse(at, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| at.to_owned())
}

/// Flattens a decision's JSON into `a.b: value` lines a person can read.
/// A decision in words when it carries its summary (one `key: value` line
/// each), else every member flattened (rows stored before summaries).
fn readable(explanation: &Value, out: &mut Vec<(String, String)>) {
    let Some(lines) = explanation.get("summary").and_then(Value::as_array) else {
        flatten("", explanation, out);
        return;
    };
    if let Some(change) = explanation.get("change_text").and_then(Value::as_str) {
        out.push(("this row".to_owned(), change.to_owned()));
    }
    for line in lines.iter().filter_map(Value::as_str) {
        match line.split_once(": ") {
            Some((k, v)) => out.push((k.to_owned(), v.to_owned())),
            None => out.push((String::new(), line.to_owned())),
        }
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let items: Vec<String> = items.iter().map(scalar).collect();
            out.push((prefix.to_owned(), items.join(", ")));
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        other => out.push((prefix.to_owned(), scalar(other))),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_flatten_into_readable_lines() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({"decision": "matched by email", "change": {"kind": "phone", "values": ["a", "b"], "n": null}}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                ("change.kind".to_owned(), "phone".to_owned()),
                ("change.n".to_owned(), "none".to_owned()),
                ("change.values".to_owned(), "a, b".to_owned()),
                ("decision".to_owned(), "matched by email".to_owned()),
            ]
        );
    }

    #[test]
    fn times_read_short_and_junk_stays_as_is() {
        assert_eq!(when("2026-11-21T14:20:03.123Z"), "2026-11-21 14:20 UTC");
        assert_eq!(when("yesterday"), "yesterday");
        assert_eq!(title(3, Some("  ")), "Unnamed visitor #3");
    }
}
