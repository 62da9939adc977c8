//! History rows read back as readers see them: a packed `created` row
//! unpacked into one entry per change it holds, and each entry's
//! explanation made whole from the delivery's decision (its words, the
//! `summary` and `change_text`, made from the stored decision on reading).

use std::borrow::Cow;

use super::decision::clipped;
use crate::crm::explain::Explanation;
use crate::crm::merge::Change;

/// A history row's explanation as readers see it: the delivery's decision
/// (`decision`, `why`, and `summary`: the decision in words) with the
/// row's own `change` and `change_text` (the change in words), as one
/// object. `row` is the history row's `explanation` column, `decision` its
/// `decisions` row; rows written before decisions were stored apart hold
/// the whole object in `row`, and rows written before the words were made
/// on reading hold their words.
pub(super) fn explanation(row: Option<&str>, decision: Option<&str>) -> Option<serde_json::Value> {
    use serde_json::{Map, Value};
    let parse = |text: &str| serde_json::from_str::<Map<String, Value>>(text).ok();
    let Some(decision) = decision else {
        return row.and_then(parse).map(Value::Object);
    };
    let object = decision_object(decision)?;
    let mut own = row.and_then(parse).unwrap_or_default();
    let change = own.remove("change").unwrap_or(Value::Null);
    Some(with_change(object, change, own.remove("change_text")))
}

/// A `decisions` row as an object, with its words ([`worded`]).
fn decision_object(decision: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut object = serde_json::from_str(decision).ok()?;
    worded(&mut object);
    Some(object)
}

/// A decision with one history entry's own `change` and `change_text`
/// (made from the change unless the row stored its words).
fn with_change(
    mut decision: serde_json::Map<String, serde_json::Value>,
    change: serde_json::Value,
    text: Option<serde_json::Value>,
) -> serde_json::Value {
    let text = text.unwrap_or_else(|| change_text(&change));
    decision.insert("change".into(), change);
    decision.insert("change_text".into(), text);
    serde_json::Value::Object(decision)
}

/// Adds the `summary` lines of a stored decision, made from its `why` as
/// they were made when the decision was stored with them: each line
/// [`clipped`], from the clipped values the decision holds.
fn worded(decision: &mut serde_json::Map<String, serde_json::Value>) {
    use serde::Deserialize;
    if decision.contains_key("summary") {
        return;
    }
    let Some(why) = decision
        .get("why")
        .and_then(|why| Explanation::deserialize(why).ok())
    else {
        return;
    };
    let lines: Vec<serde_json::Value> =
        why.lines().into_iter().map(|l| clipped(l).into()).collect();
    decision.insert("summary".into(), lines.into());
}

/// A stored change in words ([`crate::crm::explain::describe`], clipped);
/// null for no change.
fn change_text(change: &serde_json::Value) -> serde_json::Value {
    use serde::Deserialize;
    match Change::deserialize(change) {
        Ok(change) => clipped(crate::crm::explain::describe(&change)).into(),
        Err(_) => serde_json::Value::Null,
    }
}

/// One entry of a lead's history as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// What changed.
    pub field: String,
    /// From.
    pub old: Option<String>,
    /// To.
    pub new: Option<String>,
    /// The decision behind it (see [`explanation`]).
    pub explanation: Option<serde_json::Value>,
}

/// The history entries one stored row stands for: the row itself and, for
/// a new lead's `created` row written with [`Record::Created`], each change
/// it holds, as [`Record::Rows`] would have written them. `row` is the
/// row's `explanation` column, `decision` its `decisions` row.
pub fn entries(
    (field, old, new): (String, Option<String>, Option<String>),
    row: Option<&str>,
    decision: Option<&str>,
) -> Vec<Entry> {
    let packed = row
        .filter(|r| r.starts_with(r#"{"entries":"#))
        .and_then(|r| serde_json::from_str::<Packed<'_>>(r).ok());
    let Some(packed) = packed else {
        return vec![Entry {
            field,
            old,
            new,
            explanation: explanation(row, decision),
        }];
    };
    let mut out = Vec::with_capacity(1 + packed.entries.len());
    let decision = decision.and_then(decision_object);
    out.push(Entry {
        field,
        old,
        new,
        explanation: decision
            .clone()
            .map(|d| with_change(d, serde_json::Value::Null, None)),
    });
    for entry in packed.entries {
        let explanation = entry.change.and_then(|change| {
            decision.clone().map(|object| {
                // `Map` indexing panics on a missing key; `Value` indexing
                // gives null.
                let change = object.get("why").map_or(serde_json::Value::Null, |why| {
                    why["changes"][change].clone()
                });
                with_change(object, change, entry.change_text.map(Into::into))
            })
        });
        out.push(Entry {
            field: entry.field.into_owned(),
            old: entry.old.map(Cow::into_owned),
            new: entry.new.map(Cow::into_owned),
            explanation,
        });
    }
    out
}

/// The `explanation` column of a packed `created` row.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Packed<'a> {
    #[serde(borrow)]
    pub(super) entries: Vec<PackedEntry<'a>>,
}

/// One entry a packed `created` row holds: the history entry it stands
/// for, and for a change of the decision its place in `why.changes` (none
/// for a custom field, tags or an event, which had no decision).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct PackedEntry<'a> {
    #[serde(borrow)]
    pub(super) field: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) old: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) new: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) change: Option<usize>,
    /// The change in words, in rows written before words were made on
    /// reading ([`explanation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) change_text: Option<String>,
}
