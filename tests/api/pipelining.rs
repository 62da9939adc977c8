//! The store seam's held-back writes (`execute_later`), which PostgreSQL
//! sends with the next statement: whatever the store, a failing one fails
//! the job it belongs to, nothing of that job is kept, and the jobs around
//! it are not touched.

use std::time::Duration;

use crm_responder::args;
use crm_responder::store::{Db, DbError, Location, PostgresSettings};

use crate::helpers::{fresh_postgres_database, postgres_server};

async fn store(dir: &tempfile::TempDir) -> Db {
    let location = match postgres_server() {
        Some(server) => Location::Postgres(PostgresSettings {
            url: fresh_postgres_database(&server).await,
            pool_size: 4,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        }),
        None => Location::Sqlite {
            path: dir.path().join("crm.sqlite3"),
            busy_timeout: Duration::from_secs(5),
        },
    };
    // Connecting waits for the server: not on a runtime thread.
    tokio::task::block_in_place(|| Db::connect(&location)).expect("store")
}

fn add_tag(
    lead: i64,
    tag: &'static str,
) -> impl FnOnce(&dyn crm_responder::store::sql::Sql) -> Result<(), DbError> {
    move |conn| {
        conn.execute_later(
            "INSERT INTO lead_tags (lead_id, tag) VALUES (?1, ?2)",
            args![lead, tag],
        )
    }
}

async fn tags(db: &Db, lead: i64) -> Vec<String> {
    db.read(move |conn| {
        conn.query_all(
            "SELECT tag FROM lead_tags WHERE lead_id = ?1 ORDER BY tag",
            args![lead],
            |r| r.get(0),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_write_that_fails_fails_its_own_job_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir).await;
    let lead = db
        .write(|conn| {
            conn.insert_id(
                "INSERT INTO leads (created_at, updated_at) VALUES ('now', 'now')",
                &[],
            )
            .map(|id| id.expect("inserted"))
        })
        .await
        .unwrap();

    // Submitted together, so that they are likely to share a batch: the
    // middle job's second tag is the first one again (a unique violation
    // that only the next round trip reports).
    let before = db.write(add_tag(lead, "before"));
    let failing = db.write(move |conn| {
        add_tag(lead, "twice")(conn)?;
        add_tag(lead, "twice")(conn)
    });
    let after = db.write(add_tag(lead, "after"));
    let (before, failing, after) = tokio::join!(before, failing, after);

    assert!(before.is_ok(), "{before:?}");
    assert!(failing.is_err(), "the duplicate tag must fail its job");
    assert!(after.is_ok(), "{after:?}");
    assert_eq!(tags(&db, lead).await, ["after", "before"]);
    tokio::task::block_in_place(|| db.close());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_held_back_write_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(&dir).await;
    let seen = db
        .write(|conn| {
            let lead = conn
                .insert_id(
                    "INSERT INTO leads (created_at, updated_at) VALUES ('now', 'now')",
                    &[],
                )?
                .expect("inserted");
            add_tag(lead, "first")(conn)?;
            add_tag(lead, "second")(conn)?;
            conn.query_all(
                "SELECT tag FROM lead_tags WHERE lead_id = ?1 ORDER BY tag",
                args![lead],
                |r| r.get::<String>(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(seen, ["first", "second"]);
    tokio::task::block_in_place(|| db.close());
}
