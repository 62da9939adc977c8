//! Values deliveries changed on the survivor after a merge (its name,
//! description, custom fields and tags), sorted by the delivery that wrote
//! each history row, as `arrivals.rs` sorts rows: through the absorbed
//! lead's identifiers only, the value goes to the restored lead and the
//! survivor's reverts to what it was before, unless it changed since;
//! through both, or through neither (or a delivery that cannot be read
//! again), it stays and is listed; through the survivor's own, it stays.

use std::collections::{BTreeMap, BTreeSet};

use super::arrivals::{Reread, Unattributed, Via};
use super::undo::Record;
use super::{set_values, values};
use crate::args;
use crate::store::DbError;
use crate::store::leads::{self, Source};
use crate::store::sql::Sql;

/// A history row a delivery after the merge wrote on the survivor.
pub(super) struct Change {
    delivery: i64,
    /// `name`, `description`, `tags` or `field <key>`.
    field: String,
    old: Option<String>,
    new: Option<String>,
}

/// The changes of name, description, custom fields and tags deliveries
/// made on `survivor` after the merge, oldest first.
pub(super) fn changes(conn: &dyn Sql, survivor: i64, rec: &Record) -> Result<Vec<Change>, DbError> {
    conn.query_all(
        "SELECT delivery_id, field, old, new FROM history
         WHERE lead_id = ?1 AND delivery_id > ?2
           AND (field IN ('name', 'description', 'tags') OR field LIKE 'field %')
         ORDER BY id",
        args![survivor, rec.marks.delivery],
        |r| {
            Ok(Change {
                delivery: r.get(0)?,
                field: r.get(1)?,
                old: r.get(2)?,
                new: r.get(3)?,
            })
        },
    )
}

/// What goes back to the restored lead, on top of its recorded values.
#[derive(Debug, Default)]
pub(super) struct Late {
    /// Its name, when a delivery of its own changed it.
    pub(super) name: Option<String>,
    /// Its description, likewise.
    pub(super) description: Option<String>,
    /// Custom fields such deliveries set.
    pub(super) fields: BTreeMap<String, String>,
    /// Tags they added.
    pub(super) tags: BTreeSet<String>,
    /// What went back, in words for both histories (`name`, `field City`,
    /// `tag vip`).
    pub(super) said: Vec<String>,
}

impl Late {
    fn say(&mut self, what: String) {
        if !self.said.contains(&what) {
            self.said.push(what);
        }
    }
}

/// Sorts `changes` by how their deliveries came (`deliveries`, from
/// `arrivals::attribute`), reverts on `survivor` what goes back, and
/// returns it with what stays listed. `source` is the unmerge's.
pub(super) fn sort(
    conn: &dyn Sql,
    survivor: i64,
    rec: &Record,
    changes: &[Change],
    deliveries: &BTreeMap<i64, Reread>,
    source: &Source,
) -> Result<(Late, Vec<Unattributed>), DbError> {
    let mut late = Late::default();
    let mut listed = Vec::new();
    let via = |delivery: i64| deliveries.get(&delivery).map_or(Via::Neither, |r| r.via);
    let mut list = |kind: &'static str, value: String, delivery_id: i64| {
        listed.push(Unattributed {
            kind,
            value,
            delivery_id,
        })
    };

    // Name, description and custom fields: the history row says what each
    // delivery changed.
    let mut back: Vec<&Change> = Vec::new();
    for change in changes.iter().filter(|c| c.field != "tags") {
        let Some(new) = change.new.clone() else {
            continue;
        };
        let key = change.field.strip_prefix("field ");
        match via(change.delivery) {
            Via::Theirs => {
                match (change.field.as_str(), key) {
                    (_, Some(key)) => {
                        late.fields.insert(key.to_owned(), new);
                    }
                    ("name", None) => late.name = Some(new),
                    _ => late.description = Some(new),
                }
                late.say(change.field.clone());
                back.push(change);
            }
            Via::Ours => {}
            Via::Both | Via::Neither => match key {
                Some(key) => list("field", format!("{key}={new}"), change.delivery),
                None if change.field == "name" => list("name", new, change.delivery),
                None => list("description", new, change.delivery),
            },
        }
    }
    // The survivor's values go back to what each change replaced, newest
    // change first, where nothing changed them since.
    let now = values(conn, survivor)?;
    let mut reverted = now.clone();
    let mut fields: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for change in back.iter().rev() {
        let slot = match change.field.strip_prefix("field ") {
            Some(key) => {
                if !fields.contains_key(key) {
                    let value: Option<String> = conn.query_opt(
                        "SELECT value FROM lead_fields WHERE lead_id = ?1 AND key = ?2",
                        args![survivor, key],
                        |r| r.get(0),
                    )?;
                    fields.insert(key.to_owned(), (value.clone(), value));
                }
                &mut fields.get_mut(key).expect("just read").1
            }
            None if change.field == "name" => &mut reverted.name,
            None => &mut reverted.description,
        };
        if *slot == change.new {
            *slot = change.old.clone();
        }
    }
    set_values(conn, survivor, &now, &reverted, source)?;
    for (key, (was, value)) in fields.iter().filter(|(_, (was, now))| was != now) {
        match value {
            Some(value) => conn.execute(
                "UPDATE lead_fields SET value = ?3, updated_at = ?4 WHERE lead_id = ?1 AND key = ?2",
                args![survivor, key, value, source.at],
            )?,
            None => conn.execute(
                "DELETE FROM lead_fields WHERE lead_id = ?1 AND key = ?2",
                args![survivor, key],
            )?,
        };
        leads::history(
            conn,
            survivor,
            &format!("field {key}"),
            was.as_deref(),
            value.as_deref(),
            source,
            None,
        )?;
    }

    // Tags: a `tags` row lists every tag of the event; the tags it added
    // are those the survivor did not hold yet.
    let tagged: BTreeSet<i64> = changes
        .iter()
        .filter(|c| c.field == "tags")
        .map(|c| c.delivery)
        .collect();
    let mut held: Option<BTreeSet<String>> = rec
        .snapshot
        .survivor_tags
        .as_ref()
        .map(|t| t.iter().cloned().collect());
    let mut named_by_others: BTreeSet<&str> = BTreeSet::new();
    for (&delivery, reread) in deliveries {
        if reread.via != Via::Theirs {
            named_by_others.extend(reread.tags.iter().map(String::as_str));
        }
        if !tagged.contains(&delivery) {
            continue;
        }
        let added: Vec<&String> = match held.as_mut() {
            Some(held) => reread
                .tags
                .iter()
                .filter(|t| held.insert((*t).clone()))
                .collect(),
            // A record that did not keep the survivor's tags: whether a
            // tag was new cannot be told.
            None => reread.tags.iter().collect(),
        };
        for tag in added {
            match reread.via {
                Via::Theirs if held.is_some() => {
                    late.tags.insert(tag.clone());
                    late.say(format!("tag {tag}"));
                }
                Via::Ours => {}
                _ => list("tag", tag.clone(), delivery),
            }
        }
    }
    // A `tags` row of a delivery that cannot be read again.
    for change in changes.iter().filter(|c| c.field == "tags") {
        if !deliveries.contains_key(&change.delivery)
            && let Some(new) = &change.new
        {
            list("tag", new.clone(), change.delivery);
        }
    }
    // A tag that went back leaves the survivor, unless another delivery
    // named it too.
    for tag in late
        .tags
        .iter()
        .filter(|t| !named_by_others.contains(t.as_str()))
    {
        conn.execute(
            "DELETE FROM lead_tags WHERE lead_id = ?1 AND tag = ?2",
            args![survivor, tag],
        )?;
    }
    Ok((late, listed))
}
