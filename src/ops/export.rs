//! `export`: every lead (folded ones excepted) with its contacts and custom
//! fields, streamed from one read transaction (a consistent snapshot in
//! constant memory), as CSV that `import` reads back, or as JSON lines.
//!
//! CSV columns: `id,name,status,description,emails,phones`, then one column
//! per custom field in name order. Emails and phones are the normalised
//! values, primary first, joined with `;`.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::crm::merge::ContactKind;
use crate::store::leads;
use crate::store::sql::{Dialect, Sql};
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
    // Streamed: one lead in memory at a time, its contacts and fields read
    // while the scan of leads goes on.
    conn.each_row(
        "SELECT id, name, status, description FROM leads WHERE merged_into IS NULL ORDER BY id",
        &[],
        &mut |r| {
            let id: i64 = r.get(0)?;
            let lead = Exported {
                id,
                name: r.get(1)?,
                status: r.get(2)?,
                description: r.get(3)?,
                emails: values(conn, ContactKind::Email, id)?,
                phones: values(conn, ContactKind::Phone, id)?,
                fields: crate::store::view::fields(conn, id)?,
            };
            n += 1;
            let Some(csv) = csv.as_mut() else {
                if let Some(out) = json.as_mut() {
                    serde_json::to_writer(&mut *out, &lead)
                        .map_err(|e| DbError::Internal(e.to_string()))?;
                    out.write_all(b"\n").map_err(io)?;
                }
                return Ok(());
            };
            record.clear();
            record.push(id.to_string());
            record.push(lead.name.unwrap_or_default());
            record.push(lead.status);
            record.push(lead.description.unwrap_or_default());
            record.push(lead.emails.join(";"));
            record.push(lead.phones.join(";"));
            for key in &keys {
                record.push(lead.fields.get(key).cloned().unwrap_or_default());
            }
            csv.write_record(&record).map_err(csv_error)
        },
    )?;
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

fn values(conn: &dyn Sql, kind: ContactKind, id: i64) -> Result<Vec<String>, DbError> {
    Ok(leads::contacts(conn, kind, id)?
        .into_iter()
        .map(|c| c.value)
        .collect())
}
