//! Retention: `[retention]` limits applied by `crm-responder retention` and
//! by the service's own job (at a reload), deleting exactly what is older
//! than each limit while webhooks keep arriving; `--dry-run` changes
//! nothing. On either store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crm_responder::args;
use serde_json::Value;

use crate::helpers::*;
use crate::reload::Served;

/// The time `days` days ago (and `hours` more), as times are stored.
fn days_ago(days: i64, hours: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    crm_responder::event::unix_to_rfc3339(now - days * 86_400 - hours * 3600).unwrap()
}

/// A Jivo `chat_finished` with its transcript, for a visitor.
fn finished(chat: u64, number: &str, name: &str, email: &str) -> Value {
    let mut body = fixture("jivo/chat_finished.json");
    body["chat_id"] = chat.into();
    body["visitor"]["number"] = number.into();
    body["visitor"]["name"] = name.into();
    body["visitor"]["email"] = email.into();
    body["visitor"]["phone"] = Value::Null;
    body
}

/// Stores `n` raw deliveries received at `at`, keyed `prefix-i`, in one
/// transaction.
fn store_deliveries(path: &std::path::Path, url: Option<&str>, prefix: &str, at: &str, n: usize) {
    with_store(path, url, |db| {
        db.batch("BEGIN").unwrap();
        for i in 0..n {
            db.execute(
                "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status)
                 VALUES ('jivo', 'chat_accepted', ?1, ?2, ?3, 'applied')",
                args![format!("{prefix}-{i}"), at, b"{}".as_slice()],
            )
            .unwrap();
        }
        db.batch("COMMIT").unwrap();
    });
}

/// A visitor's chat: `chat_accepted` (which makes the lead), then
/// `chat_finished` with the transcript; the lead.
async fn chat(app: &TestApp, chat: u64, number: &str, name: &str, email: &str) -> i64 {
    let (status, answer) = app
        .jivo(&accepted(chat, number, name, Some(email), None))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, done) = app.jivo(&finished(chat, number, name, email)).await;
    assert_eq!(status, 200, "{done}");
    lead_id(&answer)
}

/// How many rows `sql` counts.
fn count(app: &TestApp, sql: &str) -> i64 {
    app.sql(sql)
}

/// Sends new visitors' `chat_accepted` until `stop`; every status seen.
fn deliver_until(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u16>> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) || n < 20 {
            n += 1;
            let body = accepted(
                900_000 + n,
                &format!("load-{n}"),
                &format!("Load Visitor {n}"),
                Some(&format!("load{n}@example.com")),
                None,
            );
            let r = client
                .post(format!("{base}/webhooks/jivo/{JIVO_TOKEN}"))
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        statuses
    })
}

#[tokio::test]
async fn retention_deletes_exactly_what_is_older_than_each_limit_while_webhooks_arrive() {
    let app = spawn_app().await;
    // Raw deliveries: 30 days. A backlog just past the limit, and some just inside it.
    store_deliveries(
        &app.db_path,
        app.db_url.as_deref(),
        "old",
        &days_ago(30, 1),
        1500,
    );
    store_deliveries(
        &app.db_path,
        app.db_url.as_deref(),
        "recent",
        &days_ago(29, 23),
        10,
    );

    // Transcripts: 60 days. One chat whose last message is older, one newer.
    let stale_lead = chat(&app, 101, "v101", "Tess Old", "tess@example.com").await;
    let fresh_lead = chat(&app, 102, "v102", "Fred New", "fred@example.com").await;
    app.execute(
        "UPDATE conversations SET updated_at = ?1 WHERE chat_id = '101'",
        args![days_ago(60, 1)],
    );
    app.execute(
        "UPDATE conversations SET updated_at = ?1 WHERE chat_id = '102'",
        args![days_ago(59, 23)],
    );

    // Inactive leads: 365 days. One lead untouched for longer (its chat
    // and deliveries too), one created as long ago but changed since.
    let idle_lead = chat(&app, 103, "v103", "Ida Idle", "ida@example.com").await;
    let (_, kept) = app
        .jivo(&accepted(
            104,
            "v104",
            "Kim Kept",
            Some("kim@example.com"),
            None,
        ))
        .await;
    let kept_lead = lead_id(&kept);
    let long_ago = days_ago(365, 1);
    for (lead, changed) in [(idle_lead, &long_ago), (kept_lead, &days_ago(364, 23))] {
        app.execute(
            "UPDATE leads SET created_at = ?2, updated_at = ?3 WHERE id = ?1",
            args![lead, long_ago, changed],
        );
        app.execute(
            "UPDATE deliveries SET received_at = ?2 WHERE lead_id = ?1",
            args![lead, long_ago],
        );
        app.execute(
            "UPDATE conversations SET updated_at = ?2 WHERE lead_id = ?1",
            args![lead, long_ago],
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        store_config_text(&app.db_path, app.db_url.as_deref())
            + "\n[retention]\nraw_deliveries_days = 30\ntranscripts_days = 60\ninactive_leads_days = 365\n",
    )
    .unwrap();

    // A dry run counts and changes nothing.
    let before = app.store(contents);
    let out = cli(&config, &["retention", "--dry-run"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(app.store(contents), before, "a dry run changes nothing");
    // 1500 backdated, and the two old leads' own deliveries.
    let old_own: i64 = app.sql_with(
        "SELECT count(*) FROM deliveries WHERE lead_id IN (?1, ?2)",
        args![idle_lead, kept_lead],
    );
    assert!(
        text.contains("retention dry run: nothing is deleted"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "raw_deliveries  would delete {} older than ",
            1500 + old_own
        )),
        "{text}"
    );
    // Tess's chat, and Ida's and Kim's (as old as their leads).
    let old_chats = count(
        &app,
        "SELECT count(*) FROM conversations WHERE chat_id IN ('101', '103', '104')",
    );
    assert!(
        text.contains(&format!(
            "transcripts     would delete {old_chats} older than "
        )),
        "{text}"
    );
    assert!(
        text.contains("inactive_leads  would delete 1 older than "),
        "{text}"
    );
    assert!(
        text.contains("(365 days)") && text.contains("audit           would delete 0"),
        "{text}"
    );

    // The real run, with deliveries arriving all along.
    let stop = Arc::new(AtomicBool::new(false));
    let load = deliver_until(app.url(""), stop.clone());
    let config_path = config.clone();
    let run = tokio::task::spawn_blocking(move || cli(&config_path, &["retention"]));
    let out = run.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("raw_deliveries  deleted {} ", 1500 + old_own)),
        "{text}"
    );
    assert!(text.contains("inactive_leads  deleted 1 "), "{text}");

    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM deliveries WHERE idem_key LIKE 'old-%'"
        ),
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM deliveries WHERE idem_key LIKE 'recent-%'"
        ),
        10
    );
    let load_leads = statuses.len() as i64;
    // The load's, the ten recent ones, Tess's and Fred's two each.
    assert_eq!(
        count(&app, "SELECT count(*) FROM deliveries"),
        load_leads + 10 + 4
    );

    // Tess keeps her lead, without the old transcript, and her history says so.
    let tess = app.lead(stale_lead).await;
    assert_eq!(tess["conversations"].as_array().unwrap().len(), 0, "{tess}");
    let line = tess["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["field"] == "transcript deleted")
        .unwrap_or_else(|| panic!("{}", tess["history"]));
    assert_eq!(line["old"], "jivo chat 101");
    assert_eq!(line["source"], "retention (older than 60 days)");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)"
        ),
        0
    );
    let fred = app.lead(fresh_lead).await;
    assert_eq!(fred["conversations"].as_array().unwrap().len(), 1);

    // Ida is gone with everything of hers; Kim, changed since, stays (her
    // old chat went with the transcripts).
    let (status, _) = app.api(&format!("/api/leads/{idle_lead}")).await;
    assert_eq!(status, 404);
    for sql in [
        "SELECT count(*) FROM lead_emails WHERE value = 'ida@example.com'",
        "SELECT count(*) FROM lead_visitors WHERE visitor_id LIKE '%v103%'",
        "SELECT count(*) FROM conversations WHERE chat_id = '103'",
    ] {
        assert_eq!(count(&app, sql), 0, "{sql}");
    }
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM history WHERE lead_id = {idle_lead}")
        ),
        0
    );
    let kim = app.lead(kept_lead).await;
    assert_eq!(contacts(&kim, "emails")[0].0, "kim@example.com");

    // The audit log says what retention did.
    let entries: i64 = count(
        &app,
        "SELECT count(*) FROM audit_log WHERE actor = 'retention'",
    );
    assert!(entries >= 3, "{entries}");
    let idle: i64 = app.sql_with(
        "SELECT count(*) FROM audit_log WHERE actor = 'retention' AND target LIKE ?1",
        args![format!("lead {idle_lead}: inactive since %")],
    );
    assert_eq!(idle, 1);

    // Once more: nothing left to delete.
    let out = cli(&config, &["retention"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("raw_deliveries  deleted 0 "), "{text}");
    assert!(text.contains("transcripts     deleted 0 "), "{text}");
}

#[tokio::test]
async fn the_service_applies_retention_set_by_a_reload_and_counts_it_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let url = fresh_store();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text =
        store_config_text(&db, url.as_deref()).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    let served = Served::start(&config, port);
    served.wait_for_log("serving", 1);
    store_deliveries(&db, url.as_deref(), "old", &days_ago(8, 0), 1200);

    let stop = Arc::new(AtomicBool::new(false));
    let load = deliver_until(served.base.clone(), stop.clone());
    std::fs::write(&config, text + "\n[retention]\nraw_deliveries_days = 7\n").unwrap();
    served.hup();
    let metrics = || {
        let url = format!("{}/metrics", served.base);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let mut shown = String::new();
    for _ in 0..400 {
        shown = metrics().await;
        if shown.contains("crm_retention_deleted_total{kind=\"raw_deliveries\"} 1200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        shown.contains("crm_retention_deleted_total{kind=\"raw_deliveries\"} 1200"),
        "{shown}"
    );
    assert!(shown.contains("crm_retention_deleted_total{kind=\"transcripts\"} 0"));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let left: i64 = query_store(
        &db,
        url.as_deref(),
        "SELECT count(*) FROM deliveries WHERE idem_key LIKE 'old-%'",
    );
    assert_eq!(left, 0);
    let others: i64 = query_store(&db, url.as_deref(), "SELECT count(*) FROM deliveries");
    assert_eq!(
        others,
        statuses.len() as i64,
        "every delivery of the load stays"
    );
    served.wait_for_log("retention", 1);
}
