//! A delivery's decision as it is stored: serialised once into one
//! `decisions` row however many history rows point at it, each row adding
//! its own change; long values clipped to [`EXPLAINED_CHARS`].

use crate::args;
use crate::crm::explain::Explanation;
use crate::crm::merge::Change;
use crate::store::DbError;
use crate::store::sql::Sql;

/// A delivery's decision, serialised once and stored once (in `decisions`,
/// when the first history row that needs it is written), however many
/// history rows the delivery writes: a new lead writes four or more.
///
/// Values in it are clipped to [`EXPLAINED_CHARS`]: the full values are the
/// history rows' own `old`/`new`. Only the structured decision is stored:
/// its words (the `summary` lines, each change's `change_text`) are made
/// from it when it is read ([`explanation`]).
pub struct Decision {
    pub(super) text: String,
    id: std::cell::Cell<Option<i64>>,
}

impl Decision {
    /// Serialises `why`, long values clipped.
    pub fn new(why: &Explanation) -> Decision {
        let text = format!(
            r#"{{"decision":{},"why":{}}}"#,
            clipped_json(&why.decision),
            clipped_json(why),
        );
        Decision {
            text,
            id: std::cell::Cell::new(None),
        }
    }

    /// Why a history row was written: this decision, and the row's own
    /// change if it records one.
    pub fn row<'a>(&'a self, change: Option<&'a Change>) -> Why<'a> {
        Why {
            decision: self,
            change,
        }
    }

    /// The `decisions` row, written the first time it is asked for. The
    /// caller's transaction holds it; a `Decision` never outlives the
    /// delivery (and the transaction) it was made for.
    pub(super) fn id(&self, conn: &dyn Sql) -> Result<i64, DbError> {
        if let Some(id) = self.id.get() {
            return Ok(id);
        }
        let id = conn
            .insert_id(
                "INSERT INTO decisions (explanation) VALUES (?1)",
                args![self.text],
            )?
            .ok_or_else(|| DbError::Internal("decision not inserted".into()))?;
        self.id.set(Some(id));
        Ok(id)
    }
}

/// The decision behind one history row.
#[derive(Clone, Copy)]
pub struct Why<'a> {
    pub(super) decision: &'a Decision,
    pub(super) change: Option<&'a Change>,
}

impl Why<'_> {
    /// The row's own `explanation` column: its change; none for a row that
    /// records no change of a value.
    pub(super) fn change_json(&self) -> Option<String> {
        let change = self.change?;
        Some(format!(r#"{{"change":{}}}"#, clipped_json(change)))
    }
}

/// `text` clipped as [`clipped_json`] clips each string.
pub(super) fn clipped(text: String) -> String {
    if text.len() <= EXPLAINED_CHARS {
        return text;
    }
    let mut value = serde_json::Value::String(text);
    clip_strings(&mut value);
    match value {
        serde_json::Value::String(text) => text,
        _ => unreachable!("a string stays a string"),
    }
}

/// `value` as JSON with strings longer than [`EXPLAINED_CHARS`] clipped.
/// Serialised straight to text, which is all it takes unless some string
/// is long: then through a `Value` that is clipped first.
pub(super) fn clipped_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    if !has_long_string(&text) {
        return text;
    }
    let mut value = serde_json::to_value(value).unwrap_or_default();
    clip_strings(&mut value);
    value.to_string()
}

/// Whether a JSON text may hold a string of more than [`EXPLAINED_CHARS`]
/// characters. Bytes are counted, never fewer than the characters they
/// encode, and an escape never fewer than the character it stands for, so a
/// `false` is certain (a `true` for a string of many non-ASCII characters
/// only sends it the slow way, which clips nothing). Strings are found with
/// `memchr` (every explanation passes through here: a byte-at-a-time loop
/// was 3 % of a new lead's writer time).
pub(super) fn has_long_string(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut at = 0;
    while let Some(open) = memchr::memchr(b'"', &bytes[at..]) {
        let start = at + open + 1;
        let mut end = start;
        // To the closing quote, stepping over escapes (`\"` included).
        loop {
            match memchr::memchr2(b'"', b'\\', &bytes[end..]) {
                None => return bytes.len() - start > EXPLAINED_CHARS,
                Some(i) if bytes[end + i] == b'\\' => end = (end + i + 2).min(bytes.len()),
                Some(i) => {
                    end += i;
                    break;
                }
            }
        }
        if end - start > EXPLAINED_CHARS {
            return true;
        }
        at = end + 1;
    }
    false
}

/// Longest string kept whole in a stored explanation.
pub const EXPLAINED_CHARS: usize = 200;

pub(super) fn clip_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Some((cut, _)) = s.char_indices().nth(EXPLAINED_CHARS) {
                let total = s.chars().count();
                s.truncate(cut);
                s.push_str(&format!("… ({total} characters)"));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clip_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(clip_strings),
        _ => {}
    }
}
