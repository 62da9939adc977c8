//! `migrate-store --to URL`: a SQLite database the service built moves to
//! PostgreSQL with every row, reads the same there, keeps numbering ids
//! after the copied ones, and is copied into an empty database only.
//!
//! The source is a SQLite file whatever store the suite runs on; the tests
//! that copy need PostgreSQL and say so when `CRM_TEST_POSTGRES` is unset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crm_responder::config::DatabaseUrl;
use serde_json::{Value, json};

use crate::helpers::*;

/// Every table of the SQLite database at `db`.
fn tables(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The tables the service fills from webhooks alone.
const FILLED: [&str; 13] = [
    "leads",
    "lead_emails",
    "lead_phones",
    "lead_visitors",
    "lead_fields",
    "lead_tags",
    "conversations",
    "messages",
    "notes",
    "deliveries",
    "decisions",
    "history",
    "duplicate_links",
];

/// The PostgreSQL server, or `None` after saying the test is skipped.
fn server() -> Option<String> {
    let server = postgres_server();
    if server.is_none() {
        eprintln!("skipped: set CRM_TEST_POSTGRES to run");
    }
    server
}

/// The service on a SQLite file, whatever store the suite runs on.
async fn spawn_sqlite_app() -> TestApp {
    spawn_app_with(|config| config.database.url = None).await
}

/// A config file naming the SQLite file `db`.
fn sqlite_config(dir: &Path, db: &Path) -> PathBuf {
    let path = dir.join("migrate.toml");
    std::fs::write(&path, config_text(db)).unwrap();
    path
}

/// Runs `crm-responder --config CONFIG migrate-store --to URL`, off the
/// runtime (the service under test may be serving on it).
async fn migrate(config: &Path, to: &str) -> Output {
    let (config, to) = (config.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["migrate-store", "--to", &to])
            .env("RUST_LOG", "warn")
            .env_remove("CRM_DATABASE_URL")
            .output()
            .expect("binary runs")
    })
    .await
    .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn count(db: &Path, url: Option<&str>, table: &str) -> i64 {
    query_store(db, url, &format!("SELECT count(*) FROM {table}"))
}

/// Leads from all three platforms, with chats, notes, tags, custom fields,
/// a folded anonymous visitor and a possible duplicate; answers the id of
/// the lead that absorbed the anonymous one and of the anonymous one.
async fn populate(app: &TestApp) -> (i64, i64) {
    let ok = |(status, answer): (u16, Value)| {
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let known = lead_id(&ok(app
        .jivo(&accepted(
            1,
            "10",
            "Known Person",
            Some("known@example.com"),
            Some("+1 408-498-7855"),
        ))
        .await));
    // An anonymous visitor chats, then gives the known email: folded.
    let anon = lead_id(&ok(app.jivo(&accepted(2, "20", "", None, None)).await));
    let mut finished = fixture("jivo/chat_finished.json");
    finished["chat_id"] = 2.into();
    finished["visitor"] = json!({"number": "20"});
    ok(app.jivo(&finished).await);
    let answer = ok(app
        .jivo(&accepted(3, "20", "", Some("known@example.com"), None))
        .await);
    assert_eq!(lead_id(&answer), known);
    // Two similar names: linked as possible duplicates, not merged.
    ok(app
        .jivo(&accepted(
            4,
            "30",
            "Johnathan Smith",
            Some("john.smith@acme.com"),
            None,
        ))
        .await);
    let smith = lead_id(&ok(app
        .jivo(&accepted(
            5,
            "31",
            "Jonathan Smith",
            Some("john.smyth@acme.com"),
            None,
        ))
        .await));
    assert_eq!(
        app.lead(smith).await["possible_duplicates"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    for name in [
        "chat_finished",
        "offline_message",
        "client_updated",
        "chat_updated",
    ] {
        ok(app.jivo(&fixture(&format!("jivo/{name}.json"))).await);
    }
    for name in ["LivechatSession", "LivechatOfflineMessage"] {
        ok(app
            .rocketchat(&fixture(&format!("rocketchat/{name}.json")))
            .await);
    }
    for name in ["v2/chat_started", "v2/chat_changed", "v2/ticket_created"] {
        ok(app
            .livechat(&fixture(&format!("livechat/{name}.json")))
            .await);
    }
    ok(app
        .livechat_with(&fixture("livechat/v3/incoming_chat.json"), None)
        .await);
    (known, anon)
}

/// Every lead id's `GET /api/leads/{id}` (folded leads answer where they went).
async fn every_lead(app: &TestApp, last: i64) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    for id in 1..=last {
        out.push(app.api(&format!("/api/leads/{id}")).await);
    }
    out
}

#[tokio::test]
async fn a_sqlite_database_moves_to_an_empty_postgres_database_whole_and_only_once() {
    let Some(server) = server() else { return };
    let app = spawn_sqlite_app().await;
    let (known, anon) = populate(&app).await;
    let db = app.db_path.clone();
    let last: i64 = query_store(&db, None, "SELECT max(id) FROM leads");
    let before = every_lead(&app, last).await;
    assert_eq!(
        before[anon as usize - 1],
        (200, json!({"id": anon, "merged_into": known}))
    );
    for table in FILLED {
        assert!(count(&db, None, table) > 0, "the source has no {table}");
    }
    let tables = tables(&db);

    // Copied while the service still has the file open.
    let url = fresh_postgres_database(&server).await;
    let config = sqlite_config(db.parent().unwrap(), &db);
    let out = migrate(&config, &url).await;
    assert!(out.status.success(), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("verified: {} tables,", tables.len()))
            && stdout.contains("leads sampled"),
        "{stdout}"
    );
    for table in &tables {
        assert_eq!(
            count(&db, Some(&url), table),
            count(&db, None, table),
            "{table}"
        );
    }
    let _dir = app.stop().await;

    // The service on PostgreSQL answers every lead as it did on SQLite.
    let moved = spawn_app_with(|config| config.database.url = Some(DatabaseUrl::new(&url))).await;
    let after = every_lead(&moved, last).await;
    for (id, (was, is)) in (1..).zip(before.iter().zip(&after)) {
        assert_eq!(was, is, "lead {id}");
    }

    // Ids go on after the copied ones, in every table a delivery writes.
    let (status, answer) = moved
        .jivo(&accepted(
            90,
            "900",
            "Brand New",
            Some("brand.new@example.com"),
            Some("+44 20 7946 0958"),
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let new = lead_id(&answer);
    assert!(new > last, "new lead {new} after {last}");
    let (status, answer) = moved
        .jivo(&accepted(
            91,
            "10",
            "Known Person",
            Some("known.work@example.com"),
            None,
        ))
        .await;
    assert_eq!((status, lead_id(&answer)), (200, known), "{answer}");
    assert!(history_has(
        &moved.lead(known).await,
        "email",
        "known.work@example.com"
    ));

    // A second run is refused and changes nothing.
    let leads = count(&db, Some(&url), "leads");
    let out = migrate(&config, &url).await;
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains(&format!(
            "the target database is not empty: leads has {leads} rows; migrate-store copies into an empty database only"
        )),
        "{}",
        said(&out)
    );
    assert_eq!(count(&db, Some(&url), "leads"), leads);
    assert_eq!(moved.lead(new).await["name"], "Brand New");
}

#[tokio::test]
async fn text_postgres_cannot_hold_is_stored_as_the_service_would_or_named_and_nothing_copied() {
    let Some(server) = server() else { return };
    let app = spawn_sqlite_app().await;
    populate(&app).await;
    let db = app.db_path.clone();
    let dir = app.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (first, last): (i64, i64) = conn
        .query_row("SELECT min(id), max(id) FROM notes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_ne!(first, last);
    // A U+0000 (a webhook may send one escaped), and bytes that are not
    // UTF-8 (the service never writes them; a hand-edited file might).
    conn.execute(
        "UPDATE notes SET text = 'before' || char(0) || 'after' WHERE id = ?1",
        [last],
    )
    .unwrap();
    conn.execute(
        "UPDATE notes SET text = CAST(x'6f6b20ff' AS TEXT) WHERE id = ?1",
        [first],
    )
    .unwrap();

    let url = fresh_postgres_database(&server).await;
    let config = sqlite_config(dir.path(), &db);
    let out = migrate(&config, &url).await;
    assert!(!out.status.success());
    let text = said(&out);
    assert!(
        text.contains(&format!("notes row id {first}, column text"))
            && text.contains("not valid UTF-8"),
        "{text}"
    );
    for table in tables(&db) {
        assert_eq!(
            count(&db, Some(&url), &table),
            0,
            "{table} after a failed copy"
        );
    }

    // Fixed, the same command copies into the same, still empty, database;
    // the U+0000 is stored as the service stores one on PostgreSQL.
    conn.execute("UPDATE notes SET text = 'ok' WHERE id = ?1", [first])
        .unwrap();
    drop(conn);
    let out = migrate(&config, &url).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("1 text values held U+0000"),
        "{}",
        said(&out)
    );
    let stored: String = query_store(
        &db,
        Some(&url),
        &format!("SELECT text FROM notes WHERE id = {last}"),
    );
    assert_eq!(stored, "before\u{FFFD}after");
    assert_eq!(count(&db, Some(&url), "notes"), count(&db, None, "notes"));
}

#[tokio::test]
async fn migrate_store_refuses_a_postgres_config_and_a_missing_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sqlite3");
    let to = "postgres://nobody@127.0.0.1:1/none";

    let config = sqlite_config(dir.path(), &missing);
    let out = migrate(&config, to).await;
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("no such SQLite database"),
        "{}",
        said(&out)
    );
    assert!(!missing.exists(), "the source is never created");

    let config = dir.path().join("postgres.toml");
    std::fs::write(
        &config,
        store_config_text(&missing, Some("postgres://crm:secret@127.0.0.1:1/crm")),
    )
    .unwrap();
    let out = migrate(&config, to).await;
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let text = said(&out);
    assert!(text.contains("already PostgreSQL"), "{text}");
    assert!(
        !text.contains("secret"),
        "the password is not shown: {text}"
    );
}
