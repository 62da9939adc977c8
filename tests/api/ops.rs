//! Operator commands run as real processes on the test store (real SQLite
//! files, or PostgreSQL databases): import, export, replay, backup.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A config file in `dir` for the SQLite file `db` or, when `url` is given,
/// that PostgreSQL database; returns its path.
fn write_config(dir: &Path, db: &Path, url: Option<&str>) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, store_config_text(db, url)).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A count on the SQLite file `db` or, when `url` is given, that PostgreSQL database.
fn count(db: &Path, url: Option<&str>, sql: &str) -> i64 {
    query_store(db, url, sql)
}

/// The messy file: a BOM, duplicates inside the file, phones in many
/// formats, several emails in a cell and several phone columns, and five bad
/// rows (bad email, nothing identifying, short row, invalid UTF-8, bad phone).
fn messy_csv(delimiter: u8, bom: bool) -> Vec<u8> {
    let rows: Vec<Vec<&[u8]>> = vec![
        vec![
            b"Full Name",
            b"E-mail",
            b"Phone",
            b"Mobile",
            b"Status",
            b"Notes",
            b"Source",
        ],
        vec![
            b"Ann Lee",
            b"ann@example.com",
            b"+1 408-498-7855",
            b"",
            b"customer",
            b"Met at the fair",
            b"fair",
        ],
        vec![
            b"ANN LEE",
            b"Ann@Example.com ",
            b"(408) 498-7855",
            b"",
            b"",
            b"",
            b"",
        ],
        vec![
            b"Bob Stone",
            b"bob@example.com; bob@work.example",
            b"1 (650) 253 0000",
            b"650.253.0001",
            b"",
            b"",
            b"web",
        ],
        vec![
            b"Bob Stone",
            b"bob@work.example",
            b"",
            b"+1 650 253 0002",
            b"",
            b"",
            b"",
        ],
        vec![b"Carol King", b"carol@", b"", b"", b"", b"", b""],
        vec![b"", b"", b"", b"", b"", b"", b"orphan"],
        vec![b"Dan Brown", b"dan@example.com", b"5550100"],
        vec![
            b"Ann Lee",
            b"ann@example.com",
            b"+1 408-498-7855",
            b"",
            b"customer",
            b"Met at the fair",
            b"fair",
        ],
        vec![b"Eve Adams", b"eve@one.example", b"", b"", b"", b"", b""],
        vec![
            b"Eve Adams",
            b"adams.e@two.example",
            b"",
            b"",
            b"",
            b"",
            b"",
        ],
        vec![
            b"Frank \xff Ortiz",
            b"frank@example.com",
            b"",
            b"",
            b"",
            b"",
            b"",
        ],
        vec![b"Gina Ross", b"", b"12", b"", b"", b"", b""],
        vec![b"Hal Kim", b"", b"+44 20 7946 0958", b"", b"lead", b"", b""],
        vec![
            b"Bob Stone",
            b"bob@example.com",
            b"",
            b"",
            b"customer",
            b"",
            b"",
        ],
    ];
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(b"\xef\xbb\xbf");
    }
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            if cell.contains(&b',') || cell.contains(&b';') {
                out.push(b'"');
                out.extend_from_slice(cell);
                out.push(b'"');
            } else {
                out.extend_from_slice(cell);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

const MESSY_SUMMARY: &str =
    "14 rows: 5 created, 2 merged, 2 unchanged, 1 flagged as possible duplicates, 5 rejected";
const MESSY_REJECTED: &str = "line 6: invalid email \"carol@\"
line 7: no name, email or phone
line 8: expected 7 fields, found 3
line 12: field 1 is not valid UTF-8
line 13: invalid phone \"12\"
";

#[test]
fn importing_a_messy_csv_gives_exact_counts_and_twice_changes_nothing() {
    for (delimiter, bom) in [(b',', true), (b';', false)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crm.sqlite3");
        let url = fresh_store();
        let url = url.as_deref();
        let config = write_config(dir.path(), &db, url);
        let file = dir.path().join("leads.csv");
        std::fs::write(&file, messy_csv(delimiter, bom)).unwrap();
        let file_arg = file.to_str().unwrap();

        let first = stdout(&cli(&config, &["import", file_arg]));
        assert!(first.contains(MESSY_SUMMARY), "{first}");
        assert!(first.ends_with(MESSY_REJECTED), "{first}");
        assert_eq!(count(&db, url, "SELECT count(*) FROM leads"), 5);
        let bob = "(SELECT lead_id FROM lead_emails WHERE value = 'bob@example.com')";
        assert_eq!(
            count(
                &db,
                url,
                &format!("SELECT count(*) FROM lead_phones WHERE lead_id = {bob}")
            ),
            3
        );
        assert_eq!(
            count(
                &db,
                url,
                &format!("SELECT count(*) FROM leads WHERE id = {bob} AND status = 'customer'")
            ),
            1
        );
        assert_eq!(
            count(
                &db,
                url,
                "SELECT count(*) FROM lead_phones WHERE value IN ('+14084987855', '+442079460958')"
            ),
            2
        );
        assert_eq!(count(&db, url, "SELECT count(*) FROM duplicate_links"), 1);
        let history = count(&db, url, "SELECT count(*) FROM history");

        let second = stdout(&cli(&config, &["import", file_arg]));
        assert!(
            second.contains("14 rows: 0 created, 0 merged, 9 unchanged, 0 flagged as possible duplicates, 5 rejected"),
            "{second}"
        );
        assert_eq!(count(&db, url, "SELECT count(*) FROM leads"), 5);
        assert_eq!(count(&db, url, "SELECT count(*) FROM history"), history);
    }
}

/// The export with the id column removed: equal across databases.
fn without_ids(csv: &str) -> Vec<String> {
    csv.lines()
        .map(|l| {
            l.split_once(',')
                .map(|(_, rest)| rest)
                .unwrap_or(l)
                .to_owned()
        })
        .collect()
}

#[test]
fn import_export_import_round_trip_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.sqlite3");
    let url = fresh_store();
    let url = url.as_deref();
    let config = write_config(dir.path(), &db, url);
    let file = dir.path().join("leads.csv");
    std::fs::write(&file, messy_csv(b',', true)).unwrap();
    cli(&config, &["import", file.to_str().unwrap()]);

    let exported = dir.path().join("export.csv");
    cli(&config, &["export", "--output", exported.to_str().unwrap()]);
    let first = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(first.lines().count(), 6, "header and five leads:\n{first}");
    assert!(first.starts_with("id,name,status,description,emails,phones,Source\n"));
    assert!(first.contains(
        ",Bob Stone,customer,,bob@example.com;bob@work.example,+16502530000;+16502530001;+16502530002,web\n"
    ));
    let (leads, history) = (
        count(&db, url, "SELECT count(*) FROM leads"),
        count(&db, url, "SELECT count(*) FROM history"),
    );

    // Back into the same database: every row matches and changes nothing.
    let again = stdout(&cli(&config, &["import", exported.to_str().unwrap()]));
    assert!(
        again.contains(
            "5 rows: 0 created, 0 merged, 5 unchanged, 0 flagged as possible duplicates, 0 rejected"
        ),
        "{again}"
    );
    assert_eq!(count(&db, url, "SELECT count(*) FROM leads"), leads);
    assert_eq!(count(&db, url, "SELECT count(*) FROM history"), history);
    let second = stdout(&cli(&config, &["export"]));
    assert_eq!(second, first);

    // Into a fresh database: the same export, ids aside.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh_url = fresh_store();
    let fresh = write_config(
        fresh_dir.path(),
        &fresh_dir.path().join("b.sqlite3"),
        fresh_url.as_deref(),
    );
    let into_fresh = stdout(&cli(&fresh, &["import", exported.to_str().unwrap()]));
    assert!(into_fresh.contains("5 created, 0 merged"), "{into_fresh}");
    assert_eq!(
        without_ids(&stdout(&cli(&fresh, &["export"]))),
        without_ids(&first)
    );

    // JSON lines carry the same leads.
    let jsonl = stdout(&cli(&config, &["export", "--format", "jsonl"]));
    let leads: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(leads.len(), 5);
    let bob = leads.iter().find(|l| l["name"] == "Bob Stone").unwrap();
    assert_eq!(bob["emails"][0], "bob@example.com");
    assert_eq!(bob["fields"]["Source"], "web");
}

#[test]
fn an_export_longer_than_a_page_lists_every_lead_once_with_its_own_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.sqlite3");
    let url = fresh_store();
    let url = url.as_deref();
    let config = write_config(dir.path(), &db, url);
    // 2,500 people (more than two pages of the export), then 50 rows that
    // repeat an earlier person's email: merged into that lead, not new.
    let mut csv = String::from("Name,Email,Phone,Plan\n");
    for i in 0..2500 {
        csv.push_str(&format!(
            "Person {i},person{i}@example.com,+1650253{i:04},plan-{i}\n"
        ));
    }
    for i in (0..2500).step_by(50) {
        csv.push_str(&format!(
            "Person {i},person{i}@example.com,+1408498{i:04},\n"
        ));
    }
    let file = dir.path().join("people.csv");
    std::fs::write(&file, csv).unwrap();
    let imported = stdout(&cli(&config, &["import", file.to_str().unwrap()]));
    assert!(imported.contains("2500 created, 50 merged"), "{imported}");

    let jsonl = stdout(&cli(&config, &["export", "--format", "jsonl"]));
    let leads: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(leads.len(), 2500);
    let ids: Vec<i64> = leads.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in id order, once each"
    );
    for lead in &leads {
        let i: usize = lead["name"].as_str().unwrap()["Person ".len()..]
            .parse()
            .unwrap();
        assert_eq!(
            lead["emails"],
            serde_json::json!([format!("person{i}@example.com")])
        );
        let mut phones = vec![format!("+1650253{i:04}")];
        if i.is_multiple_of(50) {
            phones.push(format!("+1408498{i:04}"));
        }
        assert_eq!(lead["phones"], serde_json::json!(phones), "{lead}");
        assert_eq!(
            lead["fields"],
            serde_json::json!({ "Plan": format!("plan-{i}") })
        );
    }
    let csv = stdout(&cli(&config, &["export"]));
    assert_eq!(csv.lines().count(), 2501, "a header and every lead");
}

#[tokio::test]
async fn replay_applies_a_delivery_that_failed_before_a_fix() {
    let app = spawn_app().await;
    // A body this version cannot parse: stored as failed, answered 400.
    let response = app
        .post_raw(&format!("/webhooks/jivo/{JIVO_TOKEN}"), "not json")
        .await;
    assert_eq!(response.status(), 400);
    // A body an older version failed on and this one understands, stored the
    // way the inbox keeps failures.
    let body = accepted(9001, "4242", "Rita Late", Some("rita@example.com"), None).to_string();
    app.execute(
        "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status, error)
         VALUES ('jivo', 'chat_accepted', 'jivo:failed:old-parser', '2026-01-02T03:04:05.000Z', ?1, 'failed', 'old parser')",
        crm_responder::args![body.as_bytes()],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &app.db_path, app.db_url.as_deref());

    let out = stdout(&cli(&config, &["replay", "--failed"]));
    assert!(out.contains("replayed 2 deliveries: 1 applied (1 leads created, 0 merged), 0 unchanged, 1 still failing"), "{out}");
    let (status, found) = app.api("/api/leads?email=rita@example.com").await;
    assert_eq!(status, 200);
    let lead = &found["leads"][0];
    assert_eq!(lead["name"], "Rita Late");
    // The failed row became the applied delivery: no second row beside it.
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 2);
    assert_eq!(
        app.sql::<i64>(
            "SELECT count(*) FROM deliveries WHERE status = 'applied' AND lead_id IS NOT NULL"
        ),
        1
    );

    // The live redelivery of the same body is recognised.
    let (status, answer) = app.jivo(&serde_json::from_str(&body).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["crm_link"],
        format!("http://crm.test/leads/{}", lead["id"])
    );
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 2);

    // Replaying everything again changes nothing.
    let history = app.sql::<i64>("SELECT count(*) FROM history");
    let all = stdout(&cli(&config, &["replay", "--all"]));
    assert!(all.contains("0 applied"), "{all}");
    assert!(all.contains("1 unchanged, 1 still failing"), "{all}");
    let since = stdout(&cli(&config, &["replay", "--all", "--since", "2030-01-01"]));
    assert!(since.contains("replayed 0 deliveries"), "{since}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM history"), history);

    // All history into a fresh database, e.g. under a new policy. `--from`
    // reads a SQLite file, which a run on PostgreSQL has not.
    if app.db_url.is_some() {
        return;
    }
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh_db = fresh_dir.path().join("fresh.sqlite3");
    let fresh = write_config(fresh_dir.path(), &fresh_db, None);
    let from = stdout(&cli(
        &fresh,
        &["replay", "--all", "--from", app.db_path.to_str().unwrap()],
    ));
    assert!(
        from.contains("replayed 2 deliveries: 1 applied (1 leads created"),
        "{from}"
    );
    assert_eq!(
        count(
            &fresh_db,
            None,
            "SELECT count(*) FROM lead_emails WHERE value = 'rita@example.com'"
        ),
        1
    );
    assert_eq!(
        count(
            &fresh_db,
            None,
            "SELECT count(*) FROM deliveries WHERE status = 'failed'"
        ),
        1
    );
}

#[tokio::test]
async fn a_backup_taken_under_write_load_opens_and_passes_integrity_check() {
    if skipped_on_postgres(
        "backup copies the SQLite file (online backup API); PostgreSQL's is pg_dump",
    ) {
        return;
    }
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &app.db_path, None);
    let app = Arc::new(app);
    let load = Load::start(&app, 4);
    // Let the load build up, then copy while it goes on.
    while app.sql::<i64>("SELECT count(*) FROM leads") < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = dir.path().join("backup.sqlite3");
    let out = {
        let (config, copy) = (config.clone(), copy.clone());
        tokio::task::spawn_blocking(move || cli(&config, &["backup", copy.to_str().unwrap()]))
            .await
            .unwrap()
    };
    let sent = load.stop().await;
    assert!(
        stdout(&out).contains("integrity_check ok"),
        "{}",
        stdout(&out)
    );
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let leads: i64 = conn
        .query_row("SELECT count(*) FROM leads", [], |r| r.get(0))
        .unwrap();
    let emails: i64 = conn
        .query_row("SELECT count(*) FROM lead_emails", [], |r| r.get(0))
        .unwrap();
    assert!(leads >= 50 && leads <= sent, "{leads} leads of {sent} sent");
    assert_eq!(
        emails, leads,
        "a consistent snapshot: every lead with its email"
    );

    // An existing file is not overwritten without --force.
    let refused = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["backup", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    cli(&config, &["backup", "--force", copy.to_str().unwrap()]);
}

/// Clients sending `chat_accepted` for new visitors (each its own email)
/// back to back, every answer 200, until stopped.
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    fn start(app: &Arc<TestApp>, clients: u64) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let (app, stop) = (app.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let n = c * 1_000_000 + sent;
                        let email = format!("load{n}@example.com");
                        let body = accepted(n, &n.to_string(), "Load Test", Some(&email), None);
                        let (status, answer) = app.jivo(&body).await;
                        assert_eq!(status, 200, "{answer}");
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; returns how many deliveries they sent.
    async fn stop(self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut sent = 0;
        for client in self.clients {
            sent += client.await.unwrap();
        }
        sent as i64
    }
}

/// An import run while the service serves: the two processes take turns
/// at the database (the import sees the service's locks and writes in
/// short transactions), every delivery is answered 200 and nothing of
/// either is lost.
#[tokio::test]
async fn an_import_into_the_running_service_shares_the_database() {
    let app = Arc::new(spawn_app().await);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &app.db_path, app.db_url.as_deref());
    let rows = 3000;
    let file = dir.path().join("many.csv");
    let mut csv = String::from("name,email,phone\n");
    for i in 0..rows {
        csv.push_str(&format!("Imported Person {i},imp{i}@example.org,\n"));
    }
    std::fs::write(&file, csv).unwrap();

    let load = Load::start(&app, 2);
    let out = {
        let file = file.to_str().unwrap().to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .args(["import", &file])
                .env("RUST_LOG", "info")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let sent = load.stop().await;
    assert!(out.status.success(), "{out:?}");
    if app.db_url.is_none() {
        // SQLite's file locks tell the import the service has the file open.
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("another process has the database open"),
            "the import saw the service: {log}"
        );
    }
    let summary = stdout(&out);
    assert!(
        summary.contains(&format!(
            "{rows} rows: {rows} created, 0 merged, 0 unchanged"
        )),
        "{summary}"
    );
    assert!(sent > 0, "deliveries were sent during the import");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), rows + sent);
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM deliveries WHERE platform = 'jivo'"),
        sent
    );
}
