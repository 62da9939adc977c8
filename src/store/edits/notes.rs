//! Staff notes: free text with an author and a time, stored with the
//! platforms' notes (`platform = 'staff'`, `kind = 'note'`).

use super::{EditError, Expect, MAX_TEXT_CHARS, checked, refused, source};
use crate::args;
use crate::outbound::EventKind;
use crate::store::Db;
use crate::store::leads;
use crate::store::outbox::{self, OutboundEvent};
use crate::store::sql::Sql;

/// Stores a staff note on lead `id` (see [`Db::add_staff_note`]).
fn note(
    conn: &dyn Sql,
    id: i64,
    author: &str,
    text: &str,
    expect: &Expect,
) -> Result<(), EditError> {
    checked(conn, id, expect)?;
    let source = source(author);
    // Staff notes have no platform id; this one is unique per lead and
    // instant (and the counter tells apart two in the same nanosecond).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ext_id = format!("staff-{id}-{nanos}-{n}");
    conn.execute(
        "INSERT INTO notes (lead_id, platform, ext_id, kind, text, at, author)
         VALUES (?1, 'staff', ?2, 'note', ?3, ?4, ?5)",
        args![id, ext_id, text, source.at, author],
    )?;
    leads::history(conn, id, "note", None, Some(text), &source, None)?;
    leads::touch(conn, id, &source.at)?;
    let shown = serde_json::json!({
        "platform": "staff",
        "kind": "note",
        "text": text,
        "at": source.at,
        "author": author,
    });
    outbox::enqueue(
        conn,
        &OutboundEvent::new(EventKind::NoteAdded, id).with("note", shown),
    )?;
    Ok(())
}

impl Db {
    /// Adds a staff note by `author` (`Staff::label`) to lead `id`: shown
    /// with the platforms' notes, with its author.
    pub async fn add_staff_note(
        &self,
        id: i64,
        author: String,
        text: String,
        expect: Expect,
    ) -> Result<(), EditError> {
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err(EditError::Invalid("text must not be empty".into()));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(EditError::Invalid(format!(
                "text must be at most {MAX_TEXT_CHARS} characters"
            )));
        }
        self.write(move |conn| refused(note(conn, id, &author, &text, &expect)))
            .await?
    }
}
