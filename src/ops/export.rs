//! `export`: every lead (folded ones excepted) with its contacts and custom
//! fields, streamed from one read transaction (a consistent snapshot in
//! constant memory), as CSV that `import` reads back, or as JSON lines.
//!
//! CSV columns: `id,name,status,description,emails,phones`, then one column
//! per custom field in name order. Emails and phones are the normalised
//! values, primary first, joined with `;`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde::Serialize;

use crate::args;
use crate::store::sql::{Dialect, Query, Sql};
use crate::store::{Db, DbError};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV with a header row, readable by `import`.
    Csv,
    /// One JSON object per lead per line.
    Jsonl,
}

impl Format {
    /// The name `--format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// One exported lead.
#[derive(Debug, Serialize)]
struct Exported {
    id: i64,
    name: Option<String>,
    status: String,
    description: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    fields: BTreeMap<String, String>,
}

/// Writes every lead to `out`; returns how many.
pub async fn run(db: &Db, format: Format, out: Box<dyn Write + Send>) -> Result<u64, DbError> {
    db.read(move |conn| {
        let conn: &dyn Sql = conn;
        // One read transaction: the export is a snapshot even while the
        // service keeps writing. A PostgreSQL read runs in one already (a
        // repeatable-read transaction the gateway opens and ends).
        let own = conn.dialect() == Dialect::Sqlite;
        if own {
            conn.batch("BEGIN")?;
        }
        let result = write_all(conn, format, out);
        if own {
            let _ = conn.batch("COMMIT");
        }
        result
    })
    .await
}

fn write_all(conn: &dyn Sql, format: Format, out: Box<dyn Write + Send>) -> Result<u64, DbError> {
    let io = |e: std::io::Error| DbError::Internal(format!("cannot write the export: {e}"));
    let keys: Vec<String> = conn.query_all(
        "SELECT DISTINCT key FROM lead_fields ORDER BY key",
        &[],
        |r| r.get(0),
    )?;
    let mut csv = None;
    let mut json = None;
    match format {
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            let fixed = ["id", "name", "status", "description", "emails", "phones"];
            let header = fixed.iter().copied().chain(keys.iter().map(String::as_str));
            writer.write_record(header).map_err(csv_error)?;
            csv = Some(writer);
        }
        Format::Jsonl => json = Some(std::io::BufWriter::with_capacity(1 << 16, out)),
    }
    let mut n = 0;
    let mut record = Vec::with_capacity(6 + keys.len());
    let mut after = 0;
    // A page of leads at a time, with their contacts and fields: memory
    // stays bounded, and PostgreSQL answers a page in one round trip
    // instead of three per lead.
    while let Some(page) = page_after(conn, after)? {
        after = page.last().map_or(after, |lead| lead.id);
        for lead in page {
            n += 1;
            let Some(csv) = csv.as_mut() else {
                if let Some(out) = json.as_mut() {
                    serde_json::to_writer(&mut *out, &lead)
                        .map_err(|e| DbError::Internal(e.to_string()))?;
                    out.write_all(b"\n").map_err(io)?;
                }
                continue;
            };
            record.clear();
            record.push(lead.id.to_string());
            record.push(lead.name.unwrap_or_default());
            record.push(lead.status);
            record.push(lead.description.unwrap_or_default());
            record.push(lead.emails.join(";"));
            record.push(lead.phones.join(";"));
            for key in &keys {
                record.push(lead.fields.get(key).cloned().unwrap_or_default());
            }
            csv.write_record(&record).map_err(csv_error)?;
        }
    }
    if let Some(mut csv) = csv {
        csv.flush().map_err(io)?;
    }
    if let Some(mut out) = json {
        out.flush().map_err(io)?;
    }
    Ok(n)
}

fn csv_error(e: csv::Error) -> DbError {
    DbError::Internal(format!("cannot write the export: {e}"))
}

/// Leads read per page.
const PAGE: i64 = 1000;

/// The next [`PAGE`] leads (folded ones excepted) with ids above `after`,
/// in id order; `None` when there are no more.
fn page_after(conn: &dyn Sql, after: i64) -> Result<Option<Vec<Exported>>, DbError> {
    let mut page: Vec<Exported> = conn.query_all(
        "SELECT id, name, status, description FROM leads
         WHERE merged_into IS NULL AND id > ?1 ORDER BY id LIMIT ?2",
        args![after, PAGE],
        |r| {
            Ok(Exported {
                id: r.get(0)?,
                name: r.get(1)?,
                status: r.get(2)?,
                description: r.get(3)?,
                emails: Vec::new(),
                phones: Vec::new(),
                fields: BTreeMap::new(),
            })
        },
    )?;
    let Some(last) = page.last().map(|lead| lead.id) else {
        return Ok(None);
    };
    let index: HashMap<i64, usize> = page.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
    let range = args![after, last];
    // Ordered as `leads::contacts` and `view::fields` order one lead's.
    conn.each_row_of(
        &[
            Query::new(
                "SELECT lead_id, value FROM lead_emails WHERE lead_id > ?1 AND lead_id <= ?2
                 ORDER BY lead_id, is_primary DESC, id",
                range,
            ),
            Query::new(
                "SELECT lead_id, value FROM lead_phones WHERE lead_id > ?1 AND lead_id <= ?2
                 ORDER BY lead_id, is_primary DESC, id",
                range,
            ),
            Query::new(
                "SELECT lead_id, key, value FROM lead_fields WHERE lead_id > ?1 AND lead_id <= ?2",
                range,
            ),
        ],
        &mut |query, r| {
            let Some(&i) = index.get(&r.get::<i64>(0)?) else {
                return Ok(());
            };
            let lead = &mut page[i];
            match query {
                0 => lead.emails.push(r.get(1)?),
                1 => lead.phones.push(r.get(1)?),
                _ => {
                    lead.fields.insert(r.get(1)?, r.get(2)?);
                }
            }
            Ok(())
        },
    )?;
    Ok(Some(page))
}
