//! `import FILE.csv`: leads from another CRM, through the same identity and
//! merge code as webhooks.
//!
//! Each row becomes a [`Row`], stored in the deliveries inbox (platform
//! `import`, the row as JSON) under a key derived from its normalised
//! content, then applied as an event: a row seen before is a recognised
//! redelivery, so importing a file twice changes nothing, and `replay` can
//! re-apply imports like any other delivery.
//!
//! A row of an erased person is skipped (and counted) when the file was
//! last written before their erasure: an old export must not bring them
//! back, while a file written since may hold them as they came back.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crm::identity::{Email, Phone};
use crate::event::{Event, Visitor, now_rfc3339};
use crate::platforms::body_hash;
use crate::store::apply::{self, Outcome, Policy};
use crate::store::bulk;
use crate::store::inbox::{self, Inserted, NewDelivery};
use crate::store::leads::{self, Source};
use crate::store::locks::OtherProcesses;
use crate::store::sql::Sql;
use crate::store::{Db, DbError};

/// The inbox platform name of imported rows.
pub const PLATFORM: &str = "import";
/// Rows per write job when a bulk job failed and its rows are applied one
/// by one, each in its own savepoint.
const BATCH: usize = 1000;
/// Rows gathered before they are written: large enough that identifiers
/// are looked up and written with warm caches, while the next rows parse.
const BULK: usize = 10_000;
/// Rows gathered before they are written while no other process has the
/// database open: a batch's jobs end with it, and fewer, longer jobs write
/// each changed page fewer times (see [`ALONE_JOB_TIME`]). Two batches are
/// in memory at a time: a million rows took 198 s with 50,000-row
/// batches (peak RSS 1.2 GiB), 177 s with 100,000 (1.4 GiB).
const ALONE_BULK: usize = 100_000;
/// How long one write job may run while another process (the service) has
/// the database open: the import holds the database's write lock for one
/// job at a time, so the service's own writes wait about this long at most
/// (they wait up to `database.busy_timeout_ms`). A batch takes as many jobs
/// as it needs, one after the other.
const JOB_TIME: Duration = Duration::from_millis(250);
/// How long one write job may run while no other process has the database
/// open. Each commit writes every page its job changed, and the random
/// index pages of a large database are changed again by every job: longer
/// jobs write each of them fewer times (300,000 rows: 72 s and 18 GB written
/// with 10,000-row batches in 250 ms jobs, 42 s and 4.5 GB with 50,000-row
/// batches in one job each). A process that opens the database meanwhile
/// (the service starting) waits for the job at hand, up to this long, and
/// the jobs after it are short again.
const ALONE_JOB_TIME: Duration = Duration::from_secs(15);

/// Rows a batch gathers and how long one write job may run: long while no
/// other process has the database open, short while one has.
fn pace(others: &Option<OtherProcesses>) -> (usize, Duration) {
    if others.as_ref().is_some_and(|o| !o.present()) {
        (ALONE_BULK, ALONE_JOB_TIME)
    } else {
        (BULK, JOB_TIME)
    }
}

/// Says which pace the import starts at.
fn log_pace(others: &Option<OtherProcesses>) {
    match pace(others) {
        (BULK, time) => tracing::info!(
            job_ms = time.as_millis() as u64,
            "another process has the database open: the import writes in short transactions"
        ),
        (rows, time) => tracing::info!(
            rows,
            job_ms = time.as_millis() as u64,
            "no other process has the database open: the import writes in long transactions"
        ),
    }
}

/// Page cache of the import's connection, in KiB: large enough to hold the
/// indexes an import inserts into at random (identifiers, names, keys) for
/// a few million leads, so that they are not read back from disk.
const IMPORT_CACHE_KIB: i64 = 512 * 1024;

/// One imported lead, as stored in the inbox: raw values, parsed on apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Emails, in the order given (the first becomes primary on a new lead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// Phones, in any format, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    /// Status; fills a lead whose status is still `new`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Custom fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl Row {
    /// The idempotency key: the same person written the same way, up to
    /// case, spacing and phone format, is the same row.
    pub fn key(&self, policy: &Policy) -> String {
        let region = policy.merge.default_region;
        self.key_of(
            (self.emails.iter())
                .filter_map(|e| Email::parse(e).map(|e| e.normalized))
                .collect(),
            (self.phones.iter())
                .filter_map(|p| Phone::parse(p, region).map(|p| p.normalized))
                .collect(),
        )
    }

    /// The key, given the row's emails and phones already normalised
    /// (phone parsing is the slowest part of an import: done once).
    fn key_of(&self, emails: Vec<String>, phones: Vec<String>) -> String {
        let normal = Row {
            name: self.name.as_deref().map(squash),
            emails,
            phones,
            status: self.status.as_deref().map(squash),
            description: self
                .description
                .as_deref()
                .map(str::trim)
                .map(str::to_owned),
            fields: self.fields.clone(),
        };
        let json = serde_json::to_vec(&normal).unwrap_or_default();
        format!("{PLATFORM}:{}", body_hash(&json))
    }

    fn event(&self) -> Event {
        Event {
            name: PLATFORM.into(),
            visitor: Some(Visitor {
                ids: Vec::new(),
                name: self.name.clone(),
                emails: self.emails.clone(),
                phones: self.phones.clone(),
                description: self.description.clone(),
            }),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Event::default()
        }
    }
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Stores and applies one row under `policy`, like a webhook delivery, with
/// idempotency key `key` ([`Row::key`]); the status then fills a lead still
/// at `new`.
pub fn import_row(
    conn: &dyn Sql,
    policy: &Policy,
    row: &Row,
    key: &str,
    received_at: &str,
) -> Result<Outcome, DbError> {
    let body = serde_json::to_vec(row).map_err(|e| DbError::Internal(e.to_string()))?;
    let delivery = NewDelivery {
        platform: PLATFORM,
        event: PLATFORM.into(),
        idem_key: key.to_owned(),
        body: Bytes::from(body),
        received_at: received_at.to_owned(),
    };
    let outcome = apply::receive(conn, policy, &delivery, &row.event())?;
    fill_status(conn, row, outcome, &policy.new_status, received_at)
}

/// The step after applying a row: its status fills a lead still in the
/// status new leads start in (`initial`).
fn fill_status(
    conn: &dyn Sql,
    row: &Row,
    mut outcome: Outcome,
    initial: &str,
    received_at: &str,
) -> Result<Outcome, DbError> {
    if let (false, Some(lead), Some(status)) = (outcome.redelivery, outcome.lead_id, &row.status) {
        let source = Source {
            delivery_id: None,
            label: PLATFORM.into(),
            at: received_at.to_owned(),
        };
        let changed = leads::fill_status(conn, lead, status, initial, &source)?;
        outcome.merged |= changed && !outcome.created;
    }
    Ok(outcome)
}

/// Applies one parsed row, as [`import_row`] does, taking the bulk path
/// ([`bulk::create`]) when no lead owns any of its emails or phones and it
/// was never imported before.
///
/// `mirror` holds the duplicate-detection indexes (read when stale) and
/// follows every change made here.
pub fn import_parsed(
    conn: &dyn Sql,
    policy: &Policy,
    parsed: &Parsed,
    received_at: &str,
    mirror: &mut bulk::Mirror,
) -> Result<Outcome, DbError> {
    let delivery = NewDelivery {
        platform: PLATFORM,
        event: PLATFORM.into(),
        idem_key: parsed.key.clone(),
        body: Bytes::copy_from_slice(&parsed.body),
        received_at: received_at.to_owned(),
    };
    // Stored first: the same row imported before is known by its key.
    let delivery_id = match inbox::insert(conn, &delivery)? {
        Inserted::New(id) | Inserted::Retry(id) => id,
        Inserted::Applied(lead) => {
            // What `apply` answers a redelivery, without parsing anything again.
            return Ok(Outcome {
                lead_id: lead.map(|id| leads::survivor(conn, id)).transpose()?,
                redelivery: true,
                ..Outcome::default()
            });
        }
    };
    let person = bulk::Person {
        name: parsed.row.name.as_deref(),
        description: parsed.row.description.as_deref(),
        emails: &parsed.emails,
        phones: &parsed.phones,
        fields: &parsed.fields,
    };
    if bulk::owned(conn, &person, mirror)? {
        // The general path reads and makes links.
        mirror.flush_links(conn)?;
        let outcome = apply::write_received(
            conn,
            policy,
            &delivery,
            delivery_id,
            &parsed.row.event(),
            None,
        )?;
        let outcome = fill_status(conn, &parsed.row, outcome, &policy.new_status, received_at)?;
        if let Some(why) = &outcome.explanation {
            mirror.follow(why.lead, &why.changes);
            if why.folded.is_some() {
                mirror.invalidate();
            }
        }
        return Ok(outcome);
    }
    if policy.duplicates.enabled && mirror.is_stale() {
        mirror.refresh(conn)?;
    }
    let outcome = bulk::create(conn, policy, &delivery, delivery_id, &person, mirror)?;
    fill_status(conn, &parsed.row, outcome, &policy.new_status, received_at)
}

/// What a CSV column holds, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// `name`, `full name`.
    Name,
    /// `email`, `emails`, `e-mail`, `email 2`, … (several per cell allowed).
    Email,
    /// `phone`, `phones`, `mobile`, `tel`, `telephone`, `cell`, ….
    Phone,
    /// `status`.
    Status,
    /// `description`, `notes`, `note`, `comment(s)`.
    Description,
    /// `id`: the lead id of an export; ids are the database's own, so ignored.
    Ignored,
    /// Anything else: a custom field under the header as written.
    Field(String),
}

impl Column {
    /// Classifies a header cell.
    pub fn of(header: &str) -> Column {
        let header = header.trim().trim_start_matches('\u{feff}').trim();
        let key: String = header
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let starts = |prefixes: &[&str]| prefixes.iter().any(|p| key.starts_with(p));
        match key.as_str() {
            "name" | "fullname" | "contactname" => Column::Name,
            "status" => Column::Status,
            "description" | "notes" | "note" | "comment" | "comments" => Column::Description,
            "id" => Column::Ignored,
            _ if starts(&["email", "mail"]) => Column::Email,
            _ if starts(&["phone", "mobile", "tel", "cell"]) => Column::Phone,
            _ => Column::Field(header.to_owned()),
        }
    }
}

/// A row parsed ahead of the writer: everything the writer needs, computed
/// once (phone parsing is the slowest part of an import).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The row, as stored in the inbox.
    pub row: Row,
    /// Its idempotency key ([`Row::key`]).
    pub key: String,
    /// The row as JSON, the inbox body.
    pub body: Vec<u8>,
    /// `(normalised, raw)` emails as `apply` reads them: first occurrence of
    /// each, at most [`apply::MAX_IDENTIFIERS`].
    pub emails: Vec<(String, String)>,
    /// `(normalised, raw)` phones, likewise.
    pub phones: Vec<(String, String)>,
    /// Custom fields in the order `apply` sets them.
    pub fields: Vec<(String, String)>,
}

/// Turns one record into a row and its idempotency key, or says why it is
/// rejected.
pub fn parse_record(
    columns: &[Column],
    record: &csv::ByteRecord,
    policy: &Policy,
) -> Result<(Row, String), String> {
    parse(columns, record, policy).map(|p| (p.row, p.key))
}

/// [`parse_record`], keeping the parsed values for the writer.
pub fn parse(
    columns: &[Column],
    record: &csv::ByteRecord,
    policy: &Policy,
) -> Result<Parsed, String> {
    if record.len() != columns.len() {
        return Err(format!(
            "expected {} fields, found {}",
            columns.len(),
            record.len()
        ));
    }
    let mut row = Row::default();
    let (mut emails, mut phones) = (Vec::new(), Vec::new());
    for (i, (column, cell)) in columns.iter().zip(record.iter()).enumerate() {
        let cell = std::str::from_utf8(cell)
            .map_err(|_| format!("field {} is not valid UTF-8", i + 1))?
            .trim();
        if cell.is_empty() {
            continue;
        }
        match column {
            Column::Name => {
                row.name.get_or_insert_with(|| cell.to_owned());
            }
            Column::Email => {
                for email in cell.split([',', ';', ' ', '\t']).filter(|e| !e.is_empty()) {
                    let Some(parsed) = Email::parse(email) else {
                        return Err(format!("invalid email {email:?}"));
                    };
                    emails.push((parsed.normalized, parsed.raw));
                    row.emails.push(email.to_owned());
                }
            }
            Column::Phone => {
                for phone in cell
                    .split([',', ';'])
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let Some(parsed) = Phone::parse(phone, policy.merge.default_region) else {
                        return Err(format!("invalid phone {phone:?}"));
                    };
                    phones.push((parsed.normalized, parsed.raw));
                    row.phones.push(phone.to_owned());
                }
            }
            Column::Status => row.status = Some(cell.to_owned()),
            Column::Description => row.description = Some(cell.to_owned()),
            Column::Ignored => {}
            Column::Field(name) => {
                row.fields.insert(name.clone(), cell.to_owned());
            }
        }
    }
    if row.name.is_none() && row.emails.is_empty() && row.phones.is_empty() {
        return Err("no name, email or phone".into());
    }
    let key = row.key_of(
        emails.iter().map(|(v, _)| v.clone()).collect(),
        phones.iter().map(|(v, _)| v.clone()).collect(),
    );
    let body = serde_json::to_vec(&row).map_err(|e| e.to_string())?;
    let fields = (row.fields.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Parsed {
        key,
        body,
        emails: apply::dedup(emails.into_iter()),
        phones: apply::dedup(phones.into_iter()),
        fields,
        row,
    })
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Data rows read (header excluded).
    pub rows: u64,
    /// New leads.
    pub created: u64,
    /// Rows that matched an existing lead and changed it.
    pub merged: u64,
    /// Rows that matched a lead and changed nothing (or were imported before).
    pub unchanged: u64,
    /// Possible-duplicate links made.
    pub flagged: u64,
    /// Rows refused: line number and reason.
    pub rejected: Vec<(u64, String)>,
    /// Rows of people erased after the file was written: not imported.
    pub skipped: u64,
}

impl Summary {
    fn count(&mut self, line: u64, result: Result<Outcome, String>) {
        match result {
            Ok(o) => {
                self.flagged += o.flagged as u64;
                if o.created {
                    self.created += 1;
                } else if o.merged || o.folded {
                    self.merged += 1;
                } else {
                    self.unchanged += 1;
                }
            }
            Err(reason) => self.rejected.push((line, reason)),
        }
    }
}

/// `,` or `;`, whichever the header line uses more (outside quotes).
fn sniff_delimiter(head: &[u8]) -> u8 {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let (mut commas, mut semicolons, mut quoted) = (0, 0, false);
    for b in line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas { b';' } else { b',' }
}

type Batch = Vec<(u64, Row, String)>;
type Applied = Vec<(u64, Result<Outcome, String>)>;
/// A run of consecutive records, parsed (or rejected with their line).
type Piece = Vec<Result<(u64, Parsed), (u64, String)>>;

/// Imports `path` into `db` under `policy`. Bad rows are counted and
/// skipped; only an unreadable file or a storage failure stops the import.
///
/// Records are read on one thread and parsed on [`PARSERS`] others (phone
/// parsing is most of the cost of a row), in pieces that are put back in
/// file order before the writer applies them, [`BULK`] rows per write job.
pub async fn run(
    db: &Db,
    policy: &Policy,
    path: &Path,
    key: Option<crate::privacy::Key>,
) -> Result<Summary, String> {
    let open = |path: &Path| File::open(path).map_err(|e| format!("{}: {e}", path.display()));
    let tombstones = db
        .read(move |conn| Ok(crate::privacy::Tombstones::load(conn, key.as_ref())))
        .await
        .map_err(|e| e.to_string())??;
    let written = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| crate::event::format_time(t.into()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let region = policy.merge.default_region;
    let mut head = Vec::with_capacity(64 * 1024);
    open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let file = open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let lines = Lines::new(file, head.starts_with(b"\xef\xbb\xbf"));
    let starts = lines.starts.clone();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniff_delimiter(&head))
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 16, lines));
    let columns: Vec<Column> = reader
        .byte_headers()
        .map_err(|e| format!("{}: cannot read the header: {e}", path.display()))?
        .iter()
        .map(|h| Column::of(&String::from_utf8_lossy(h)))
        .collect();
    if !columns
        .iter()
        .any(|c| matches!(c, Column::Name | Column::Email | Column::Phone))
    {
        return Err(format!(
            "{}: the header names no name, email or phone column",
            path.display()
        ));
    }
    let bar = super::progress(size, "{bytes}/{total_bytes}");
    let received_at = now_rfc3339();
    let mut summary = Summary::default();
    let mirror = Arc::new(Mutex::new(bulk::Mirror::default()));
    // Without a probe (the file cannot be opened a second time), jobs stay
    // short, as if the service were running. PostgreSQL has no file to
    // probe and is shared by the service's instances: jobs are always short.
    let others = Arc::new(
        db.sqlite_path()
            .and_then(|path| OtherProcesses::of(path).ok()),
    );
    if db.sqlite_path().is_some() {
        log_pace(&others);
    } else {
        tracing::info!(
            job_ms = JOB_TIME.as_millis() as u64,
            "PostgreSQL: the import writes in short transactions"
        );
    }

    let (pieces_tx, mut pieces) = tokio::sync::mpsc::channel::<Piece>(BULK / PIECE + 2 * PARSERS);
    let producer = {
        let (policy, bar, name) = (policy.clone(), bar.clone(), path.display().to_string());
        std::thread::Builder::new()
            .name("import-reader".into())
            .spawn(move || {
                produce(reader, &columns, &policy, &starts, &bar, pieces_tx)
                    .map_err(|e| format!("{name}: {e}"))
            })
            .map_err(|e| format!("cannot start the import reader: {e}"))?
    };
    // One batch is written while the next is gathered; batches are written
    // in file order, one after the other.
    let mut writing: Option<tokio::task::JoinHandle<Result<Applied, DbError>>> = None;
    let mut batch: Vec<(u64, Parsed)> = Vec::with_capacity(BULK);
    let mut more = true;
    while more {
        match pieces.recv().await {
            Some(piece) => {
                for item in piece {
                    summary.rows += 1;
                    match item {
                        Ok((_, parsed))
                            if tombstones.erases(
                                &crate::privacy::of_import_row(&parsed.row, region),
                                &written,
                            ) =>
                        {
                            summary.skipped += 1
                        }
                        Ok(parsed) => batch.push(parsed),
                        Err((line, reason)) => summary.rejected.push((line, reason)),
                    }
                }
            }
            None => more = false,
        }
        if (batch.len() >= BULK && batch.len() >= pace(&others).0) || !more {
            if let Some(previous) = writing.take() {
                let applied = previous
                    .await
                    .map_err(|e| format!("import task failed: {e}"))?
                    .map_err(|e| e.to_string())?;
                for (line, result) in applied {
                    summary.count(line, result);
                }
            }
            let rows = std::mem::replace(&mut batch, Vec::with_capacity(BULK));
            if !rows.is_empty() {
                writing = Some(tokio::spawn(write_bulk(
                    db.clone(),
                    policy.clone(),
                    rows,
                    received_at.clone(),
                    mirror.clone(),
                    others.clone(),
                )));
            }
        }
    }
    if let Some(last) = writing.take() {
        let applied = last
            .await
            .map_err(|e| format!("import task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        for (line, result) in applied {
            summary.count(line, result);
        }
    }
    // The reader ended (the channel closed): only an I/O error is left to hear.
    tokio::task::spawn_blocking(move || producer.join())
        .await
        .map_err(|e| format!("import reader failed: {e}"))?
        .map_err(|_| "import reader panicked".to_owned())??;
    bar.finish_and_clear();
    summary.rejected.sort();
    Ok(summary)
}

/// Threads parsing records besides the one reading them.
const PARSERS: usize = 2;
/// Records handed to a parser at a time.
const PIECE: usize = 512;

/// Reads the records, has them parsed on [`PARSERS`] threads, and sends the
/// pieces on in file order. Only an I/O error stops it (byte records and
/// flexible lengths accept anything else, checked row by row).
fn produce<R: Read>(
    mut reader: csv::Reader<R>,
    columns: &[Column],
    policy: &Policy,
    starts: &Mutex<VecDeque<(u64, u64)>>,
    bar: &indicatif::ProgressBar,
    out: tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), csv::Error> {
    use std::sync::mpsc::sync_channel;
    type Work = (u64, Vec<(u64, csv::ByteRecord)>);
    let (work_tx, work_rx) = sync_channel::<Work>(2 * PARSERS);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = sync_channel::<(u64, Piece)>(2 * PARSERS);
    std::thread::scope(|scope| {
        for _ in 0..PARSERS {
            let (work_rx, done_tx) = (&work_rx, done_tx.clone());
            scope.spawn(move || {
                loop {
                    let next = work_rx.lock().unwrap().recv();
                    let Ok((seq, records)) = next else { break };
                    let piece = (records.into_iter())
                        .map(|(line, record)| {
                            parse(columns, &record, policy)
                                .map(|p| (line, p))
                                .map_err(|reason| (line, reason))
                        })
                        .collect();
                    if done_tx.send((seq, piece)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Puts pieces back in order and passes them on.
        scope.spawn(move || {
            let mut waiting = BTreeMap::new();
            let mut next = 0;
            for (seq, piece) in done_rx {
                waiting.insert(seq, piece);
                while let Some(piece) = waiting.remove(&next) {
                    if out.blocking_send(piece).is_err() {
                        return;
                    }
                    next += 1;
                }
            }
        });
        let mut seq = 0;
        let mut rows = 0u64;
        let mut records = Vec::with_capacity(PIECE);
        let mut record = csv::ByteRecord::new();
        let result = loop {
            let more = match reader.read_byte_record(&mut record) {
                Ok(more) => more,
                Err(e) => break Err(e),
            };
            if more {
                rows += 1;
                let line = line_at(starts, record.position().map_or(0, |p| p.byte()));
                records.push((line, std::mem::take(&mut record)));
                if rows.is_multiple_of(4096) {
                    bar.set_position(reader.position().byte());
                }
            }
            if records.len() == PIECE || (!more && !records.is_empty()) {
                let work = std::mem::replace(&mut records, Vec::with_capacity(PIECE));
                if work_tx.send((seq, work)).is_err() {
                    break Ok(());
                }
                seq += 1;
            }
            if !more {
                break Ok(());
            }
        };
        drop(work_tx);
        result
    })
}

/// The file with a leading BOM removed, noting where each non-blank line
/// starts, so that a rejected row's line number is exact whatever the line
/// endings, blank lines, or lines a quoted cell spans (csv's own count is
/// off on `\r\n` files). Entries wait only until the reader has passed them:
/// memory stays bounded by the read buffer.
struct Lines {
    file: File,
    skip_bom: bool,
    offset: u64,
    line: u64,
    at_line_start: bool,
    starts: Arc<Mutex<VecDeque<(u64, u64)>>>,
}

impl Lines {
    fn new(file: File, skip_bom: bool) -> Lines {
        Lines {
            file,
            skip_bom,
            offset: 0,
            line: 1,
            at_line_start: true,
            starts: Arc::default(),
        }
    }
}

impl Read for Lines {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if std::mem::take(&mut self.skip_bom) {
            self.file.read_exact(&mut [0; 3])?;
        }
        let n = self.file.read(buf)?;
        let mut starts = self.starts.lock().unwrap();
        for (i, &b) in buf[..n].iter().enumerate() {
            if self.at_line_start && b != b'\n' && b != b'\r' {
                starts.push_back((self.offset + i as u64, self.line));
                self.at_line_start = false;
            }
            if b == b'\n' {
                self.line += 1;
                self.at_line_start = true;
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The line of the record csv says starts at byte `start`: the first
/// non-blank line starting there or after.
fn line_at(starts: &Mutex<VecDeque<(u64, u64)>>, start: u64) -> u64 {
    let mut starts = starts.lock().unwrap();
    while starts.front().is_some_and(|&(at, _)| at < start) {
        starts.pop_front();
    }
    starts.front().map_or(0, |&(_, line)| line)
}

/// Applies parsed rows in write jobs of at most about [`JOB_TIME`] each
/// ([`ALONE_JOB_TIME`] while `others` finds no other process),
/// without savepoints: a row either applies whole or fails its job. A failed
/// job has been rolled back entirely, and the rows from its first on are
/// then applied again by [`write_batch`], each in its own savepoint, so that
/// the row the store refuses is the only one rejected, as with the
/// row-by-row path.
async fn write_bulk(
    db: Db,
    policy: Policy,
    rows: Vec<(u64, Parsed)>,
    received_at: String,
    mirror: Arc<Mutex<bulk::Mirror>>,
    others: Arc<Option<OtherProcesses>>,
) -> Result<Applied, DbError> {
    let rows = Arc::new(rows);
    let mut out = Vec::with_capacity(rows.len());
    while out.len() < rows.len() {
        let from = out.len();
        let job = {
            let (rows, policy, received_at) = (rows.clone(), policy.clone(), received_at.clone());
            let mirror = mirror.clone();
            let others = others.clone();
            db.write(move |conn| {
                let conn: &dyn Sql = conn;
                let started = Instant::now();
                let (_, limit) = pace(&others);
                if let Some(sqlite) = conn.as_sqlite() {
                    // The page cache is SQLite's; a PostgreSQL server sizes its own.
                    sqlite.pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
                }
                let mut mirror = mirror.lock().unwrap();
                let mut applied = Vec::new();
                let mut run = || -> Result<(), DbError> {
                    // Read again (when first needed) if another process
                    // wrote since the last job.
                    mirror.check(conn)?;
                    for (line, parsed) in &rows[from..] {
                        let outcome =
                            import_parsed(conn, &policy, parsed, &received_at, &mut mirror)?;
                        applied.push((*line, Ok(outcome)));
                        if started.elapsed() >= limit {
                            break;
                        }
                    }
                    mirror.flush_links(conn)?;
                    mirror.settle(conn)
                };
                let result = run();
                if result.is_err() {
                    // The job is rolled back before the next one runs.
                    mirror.rolled_back();
                }
                result.map(|()| applied)
            })
        };
        match job.await {
            Ok(applied) => out.extend(applied),
            Err(e) => {
                // A failed commit rolls back a job that succeeded, too.
                mirror.lock().unwrap().rolled_back();
                if matches!(e, DbError::Unavailable(_)) {
                    return Err(e);
                }
                tracing::debug!(error = %e, "a row failed in a bulk job; applying the rest one by one");
                for chunk in rows[from..].chunks(BATCH) {
                    let batch = (chunk.iter())
                        .map(|(line, p)| (*line, p.row.clone(), p.key.clone()))
                        .collect();
                    out.extend(
                        write_batch(db.clone(), policy.clone(), batch, received_at.clone()).await?,
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Applies a batch in one write job, each row in its own savepoint so that
/// a row the store refuses does not take the others with it.
async fn write_batch(
    db: Db,
    policy: Policy,
    rows: Batch,
    received_at: String,
) -> Result<Applied, DbError> {
    db.write(move |conn| {
        let conn: &dyn Sql = conn;
        let mut out = Vec::with_capacity(rows.len());
        for (line, row, key) in rows {
            conn.batch("SAVEPOINT import_row")?;
            let result = import_row(conn, &policy, &row, &key, &received_at);
            let end = if result.is_ok() {
                "RELEASE import_row"
            } else {
                "ROLLBACK TO import_row; RELEASE import_row"
            };
            conn.batch(end)?;
            out.push((line, result.map_err(|e| e.to_string())));
        }
        Ok(out)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_recognised_in_their_usual_spellings() {
        assert_eq!(Column::of("\u{feff}Full Name"), Column::Name);
        assert_eq!(Column::of("E-mail"), Column::Email);
        assert_eq!(Column::of("email 2"), Column::Email);
        assert_eq!(Column::of("Mobile"), Column::Phone);
        assert_eq!(Column::of("Tel."), Column::Phone);
        assert_eq!(Column::of("Notes"), Column::Description);
        assert_eq!(Column::of("id"), Column::Ignored);
        assert_eq!(Column::of(" Source "), Column::Field("Source".into()));
    }

    #[test]
    fn the_delimiter_is_the_one_the_header_uses() {
        assert_eq!(sniff_delimiter(b"name;email;\"a,b\"\nx"), b';');
        assert_eq!(sniff_delimiter(b"name,email\n;;;;;"), b',');
    }
}
