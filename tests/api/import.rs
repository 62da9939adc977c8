//! `import`'s bulk path against the row-by-row path: a messy file, applied
//! by the real command and, row by row through `import::import_row`, into a
//! second database holding the same leads, gives the same database and the
//! same counts; importing it again changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crm_responder::config::Config;
use crm_responder::ops::import::{self, Column};
use crm_responder::store::apply::Policy;
use crm_responder::store::sql::Sql;
use crm_responder::store::{Db, Location};

use crate::helpers::*;

/// A config for the SQLite file `db` (or, when `url` is given, that
/// PostgreSQL database) under a merge policy other than the default one, so
/// that merges replace names, phones and primaries and append descriptions.
fn write_config(dir: &Path, db: &Path, url: Option<&str>) -> PathBuf {
    let text = store_config_text(db, url)
        .replace(
            r#"match_order = ["email", "phone"]"#,
            r#"match_order = ["phone", "email"]"#,
        )
        .replace(r#"phone = "keep_both""#, r#"phone = "take_incoming""#)
        .replace(r#"primary = "existing""#, r#"primary = "incoming""#)
        .replace(r#"name = "keep_existing""#, r#"name = "take_incoming""#)
        .replace(
            r#"description = "keep_existing""#,
            r#"description = "append""#,
        );
    assert!(text.contains(r#"name = "take_incoming""#));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

const NAMES: &[&str] = &[
    "Ann Lee",
    "Ann Leigh",
    "ANN LEE",
    "Bob Stone",
    "Rob Stone",
    "Carla Diaz",
    "Karla Diaz",
    "Dmitri Ivanov",
    "Zoë Müller",
    "Zoe Muller",
    "O'Brien, Pat",
    "Wei",
];

/// `rows` rows about `people` people (so most people come back, written
/// differently): namesakes, phones of several countries in several formats,
/// cells with two emails, a phone of one person beside the email of
/// another, similar emails and phones, custom fields, and bad rows.
fn messy_rows(seed: u64, rows: usize, people: u64) -> String {
    let mut rng = Rng(seed);
    let mut out = String::from("\u{feff}Name,Email,Phone,Mobile,Status,Notes,Company\r\n");
    let phone = |p: u64, style: u64| match style % 5 {
        0 => format!("+1 408-555-{:04}", p % 10_000),
        1 => format!("(408) 555-{:04}", p % 10_000),
        2 => format!("408.555.{:04}", p % 10_000),
        3 => format!("+44 20 7946 {:04}", p % 10_000),
        _ => format!("+49 151 2345{:04}", p % 10_000),
    };
    let email = |p: u64, style: u64| match style % 4 {
        0 => format!("person{p}@gmail.com"),
        1 => format!("Person{p}@Gmail.com"),
        2 => format!("p.{p}@acme.io"),
        _ => format!("person{p}@yahoo.com"),
    };
    for _ in 0..rows {
        let p = rng.below(people);
        let name = NAMES[((p + rng.below(2)) % NAMES.len() as u64) as usize];
        let cells: Vec<String> = match rng.below(40) {
            0 => vec![name.into(), "broken@".into(), String::new()],
            1 => vec![
                name.into(),
                "broken@".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
            2 => vec![
                "".into(),
                "".into(),
                "12".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
            3 => vec![
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "lead".into(),
                "".into(),
                "X".into(),
            ],
            n => {
                let style = rng.below(20);
                let emails = match n % 4 {
                    0 => String::new(),
                    1 => format!("{}; {}", email(p, style), email(p + 1, style + 1)),
                    _ => email(p, style),
                };
                // Now and then the phone of someone else, or a digit off.
                let number = match rng.below(12) {
                    0 => p + 1,
                    1 => p + 10_000 * 3,
                    _ => p,
                };
                let phones = if n % 5 == 0 {
                    String::new()
                } else {
                    phone(number, style)
                };
                let mobile = if n % 7 == 0 {
                    phone(p + 5000, style + 2)
                } else {
                    String::new()
                };
                let status = ["", "", "lead", "customer", "new"][rng.below(5) as usize];
                let notes = ["", "", "", "called", "wants a quote"][rng.below(5) as usize];
                let company = ["", "Acme", "Globex"][rng.below(3) as usize];
                vec![
                    if n % 9 == 0 {
                        String::new()
                    } else {
                        name.into()
                    },
                    emails,
                    phones,
                    mobile,
                    status.into(),
                    notes.into(),
                    company.into(),
                ]
            }
        };
        let line: Vec<String> = cells
            .iter()
            .map(|c| {
                if c.contains([',', ';', '"']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.clone()
                }
            })
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Applies `csv` to `db` (or the PostgreSQL database at `url`) one row at a
/// time through `import::import_row`, each row in its own transaction;
/// returns the summary line's counts.
fn import_row_by_row(config: &Path, db: &Path, url: Option<&str>, csv: &str) -> String {
    with_store(db, url, |conn| row_by_row(config, conn, csv))
}

fn row_by_row(config: &Path, conn: &dyn Sql, csv: &str) -> String {
    let config = Config::load(config).unwrap();
    let policy = Policy::of(&config);
    let received_at = "2026-01-01T00:00:00.000Z";
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(csv.trim_start_matches('\u{feff}').as_bytes());
    let columns: Vec<Column> = reader
        .byte_headers()
        .unwrap()
        .iter()
        .map(|h| Column::of(&String::from_utf8_lossy(h)))
        .collect();
    let (mut rows, mut created, mut merged, mut unchanged, mut flagged, mut rejected) =
        (0, 0, 0, 0, 0, 0);
    let begin = conn.dialect().pick("BEGIN IMMEDIATE", "BEGIN");
    for record in reader.byte_records() {
        rows += 1;
        let Ok((row, key)) = import::parse_record(&columns, &record.unwrap(), &policy) else {
            rejected += 1;
            continue;
        };
        conn.batch(begin).unwrap();
        let outcome = import::import_row(conn, &policy, &row, &key, received_at).unwrap();
        conn.batch("COMMIT").unwrap();
        flagged += outcome.flagged;
        if outcome.created {
            created += 1;
        } else if outcome.merged || outcome.folded {
            merged += 1;
        } else {
            unchanged += 1;
        }
    }
    format!(
        "{rows} rows: {created} created, {merged} merged, {unchanged} unchanged, \
         {flagged} flagged as possible duplicates, {rejected} rejected"
    )
}

/// Everything the import writes, times aside.
fn dump(db: &Path, url: Option<&str>) -> Vec<String> {
    with_store(db, url, |conn| {
        let mut out = Vec::new();
        for sql in DUMP {
            out.extend(shown_rows(conn, sql));
        }
        out
    })
}

/// The queries of [`dump`].
const DUMP: [&str; 8] = [
    "SELECT id, name, name_key, name_rev, description, status, merged_into FROM leads ORDER BY id",
    "SELECT id, lead_id, value, raw, is_primary FROM lead_emails ORDER BY id",
    "SELECT id, lead_id, value, raw, is_primary FROM lead_phones ORDER BY id",
    "SELECT lead_id, key, value FROM lead_fields ORDER BY lead_id, key",
    "SELECT lead_a, lead_b, score, reason FROM duplicate_links ORDER BY lead_a, lead_b",
    "SELECT id, platform, event, idem_key, body, status, lead_id FROM deliveries ORDER BY id",
    "SELECT id, lead_id, field, old, new, delivery_id, source, explanation, decision_id FROM history ORDER BY id",
    "SELECT id, explanation FROM decisions ORDER BY id",
];

/// Rows of the compared file.
const ROWS: usize = 4_000;

fn counts(summary: &str) -> &str {
    let start = summary.find(": ").unwrap() + 2;
    summary[start..].lines().next().unwrap()
}

/// Enough rows for several write jobs, so that the duplicate-detection
/// indexes carry over from one job to the next.
#[test]
fn bulk_import_gives_the_database_row_by_row_import_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (bulk_db, by_row_db) = (
        dir.path().join("bulk.sqlite3"),
        dir.path().join("row.sqlite3"),
    );
    let (bulk_dir, by_row_dir) = (dir.path().join("bulk"), dir.path().join("row"));
    std::fs::create_dir_all(&bulk_dir).unwrap();
    std::fs::create_dir_all(&by_row_dir).unwrap();
    let (bulk_url, by_row_url) = (fresh_store(), fresh_store());
    let (bulk_url, by_row_url) = (bulk_url.as_deref(), by_row_url.as_deref());
    let bulk_config = write_config(&bulk_dir, &bulk_db, bulk_url);
    let by_row_config = write_config(&by_row_dir, &by_row_db, by_row_url);

    // Both databases first hold the same leads, some of which the file's
    // rows match with other names, phones and descriptions.
    let existing = dir.path().join("existing.csv");
    std::fs::write(&existing, messy_rows(7, 400, 300)).unwrap();
    for config in [&bulk_config, &by_row_config] {
        cli(config, &["import", existing.to_str().unwrap()]);
    }
    assert_eq!(
        dump(&bulk_db, bulk_url).len(),
        dump(&by_row_db, by_row_url).len()
    );

    let file = dir.path().join("leads.csv");
    let csv = messy_rows(11, ROWS, 2_500);
    std::fs::write(&file, &csv).unwrap();
    let bulk =
        String::from_utf8(cli(&bulk_config, &["import", file.to_str().unwrap()]).stdout).unwrap();
    let by_row = import_row_by_row(&by_row_config, &by_row_db, by_row_url, &csv);
    assert_eq!(counts(&bulk), by_row, "{bulk}");
    assert!(by_row.contains(" merged, "), "{by_row}");

    let (bulk_dump, by_row_dump) = (dump(&bulk_db, bulk_url), dump(&by_row_db, by_row_url));
    for (i, (a, b)) in bulk_dump.iter().zip(&by_row_dump).enumerate() {
        assert_eq!(a, b, "row {i} of the dump differs");
    }
    assert_eq!(bulk_dump.len(), by_row_dump.len());
    // The file does what it is meant to: merges, flags, and conflicts.
    let count = |sql: &str| -> i64 { query_store(&bulk_db, bulk_url, sql) };
    assert!(count("SELECT count(*) FROM duplicate_links WHERE reason LIKE 'similar%'") > 100);
    assert!(count("SELECT count(*) FROM duplicate_links WHERE reason LIKE 'email belongs%'") > 10);
    assert!(count("SELECT count(*) FROM history WHERE field = 'name' AND old IS NOT NULL") > 10);
    assert!(
        count("SELECT count(*) FROM history WHERE field = 'phone' AND old IS NULL AND new IS NULL")
            == 0
    );

    // Twice changes nothing, and says every row is unchanged.
    let again =
        String::from_utf8(cli(&bulk_config, &["import", file.to_str().unwrap()]).stdout).unwrap();
    let rejected: u64 = counts(&bulk)
        .rsplit(", ")
        .next()
        .unwrap()
        .trim_end_matches(" rejected")
        .parse()
        .unwrap();
    assert_eq!(
        counts(&again),
        format!(
            "{ROWS} rows: 0 created, 0 merged, {} unchanged, 0 flagged as possible duplicates, {rejected} rejected",
            ROWS as u64 - rejected
        )
    );
    assert_eq!(dump(&bulk_db, bulk_url), bulk_dump);
}

/// A row the store refuses (here a trigger standing for any failure) is
/// rejected alone, with its line; the rows around it are imported.
#[test]
fn a_row_the_store_refuses_is_the_only_one_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let url = fresh_store();
    let url = url.as_deref();
    let config = write_config(dir.path(), &db, url);
    match url {
        None => Db::open(&db, Duration::from_secs(5)).unwrap().close(),
        Some(_) => {
            let database = Config::load(&config).unwrap().database;
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let _entered = runtime.enter();
            Db::connect(&Location::of(&database)).unwrap().close();
        }
    }
    with_store(&db, url, |conn| {
        conn.batch(conn.dialect().pick(
            "CREATE TRIGGER refuse BEFORE INSERT ON lead_emails WHEN NEW.value = 'refused@example.com'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON lead_emails FOR EACH ROW
             WHEN (NEW.value = 'refused@example.com') EXECUTE FUNCTION refuse();",
        ))
        .unwrap()
    });
    let file = dir.path().join("leads.csv");
    std::fs::write(
        &file,
        "name,email\nAnn Lee,ann@example.com\nRay Fused,refused@example.com\nBob Stone,bob@example.com\n",
    )
    .unwrap();
    let out = String::from_utf8(cli(&config, &["import", file.to_str().unwrap()]).stdout).unwrap();
    assert!(
        out.contains(
            "3 rows: 2 created, 0 merged, 0 unchanged, 0 flagged as possible duplicates, 1 rejected"
        ),
        "{out}"
    );
    // PostgreSQL's error carries its code (P0001, raise_exception).
    let reason = match url {
        None => "refused by the test",
        Some(_) => "P0001: refused by the test",
    };
    assert!(
        out.contains(&format!("line 3: storage error: {reason}")),
        "{out}"
    );
    let emails: Vec<String> = with_store(&db, url, |conn| {
        conn.query_all("SELECT value FROM lead_emails ORDER BY id", &[], |r| {
            r.get(0)
        })
        .unwrap()
    });
    assert_eq!(emails, ["ann@example.com", "bob@example.com"]);
    let refused: i64 = query_store(
        &db,
        url,
        "SELECT count(*) FROM deliveries WHERE body LIKE '%refused%'",
    );
    assert_eq!(refused, 0, "the refused row left nothing behind");
}
