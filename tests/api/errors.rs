//! Status codes and error bodies, health, and the storage-failure path.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("error bodies are JSON");
    assert_eq!(body["result"], "error", "{body}");
    assert!(body["error"].is_string());
    (status, body)
}

#[tokio::test]
async fn bad_token_is_401_with_a_json_error() {
    let app = spawn_app().await;
    let r = app
        .post_raw(
            "/webhooks/jivo/wrong-token",
            fixture("jivo/chat_accepted.json").to_string(),
        )
        .await;
    assert_eq!(error_of(r).await.0, 401);
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM deliveries"),
        0,
        "unauthenticated bodies are not stored"
    );
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let app = spawn_app().await;
    let r = app
        .post_raw(&format!("/webhooks/jivo/{JIVO_TOKEN}"), "{\"event_name\": ")
        .await;
    let (status, body) = error_of(r).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("JSON"));
}

#[tokio::test]
async fn oversized_body_is_413_with_a_json_error() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 4096).await;
    let path = format!("/webhooks/jivo/{JIVO_TOKEN}");
    let big = format!(
        "{{\"event_name\":\"chat_accepted\",\"pad\":\"{}\"}}",
        "x".repeat(5000)
    );
    assert_eq!(
        error_of(app.post_raw(&path, big.clone()).await).await.0,
        413
    );
    // Without a Content-Length (chunked), the limit holds too.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let r = app
        .post_raw(&path, reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(error_of(r).await.0, 413);
}

#[tokio::test]
async fn unknown_paths_and_disabled_platforms_are_404() {
    let app = spawn_app_with(|c| {
        c.rocketchat = None;
        c.livechat = None;
    })
    .await;
    assert_eq!(error_of(app.post_raw("/nope", "{}").await).await.0, 404);
    assert_eq!(
        error_of(app.post_raw("/webhooks/rocketchat", "{}").await)
            .await
            .0,
        404
    );
    assert_eq!(
        error_of(app.post_raw("/webhooks/livechat", "{}").await)
            .await
            .0,
        404
    );
    let r = app
        .client
        .get(app.url(&format!("/webhooks/jivo/{JIVO_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert!([404, 405].contains(&error_of(r).await.0));
}

#[tokio::test]
async fn healthz_is_ok_when_the_database_answers() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn a_locked_database_gives_503_then_recovers_without_losing_the_retry() {
    if skipped_on_postgres("a SQLite write lock held by a test connection") {
        return;
    }
    let app = spawn_app_with(|c| c.database.busy_timeout_ms = 200).await;
    let locker = rusqlite::Connection::open(&app.db_path).unwrap();
    locker
        .execute_batch(
            "BEGIN EXCLUSIVE; INSERT INTO leads (created_at, updated_at) VALUES ('x', 'x');",
        )
        .unwrap();

    // chat_finished: nobody waits for it, so the sender is told to retry.
    let body = fixture("jivo/chat_finished.json");
    let (status, answer) = app.jivo(&body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["result"], "error");
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // The sender retries: accepted, and the service is healthy again.
    let (status, answer) = app.jivo(&body).await;
    assert_eq!(status, 200, "{answer}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
}

#[tokio::test]
async fn metrics_count_deliveries_in_prometheus_text() {
    let app = spawn_app().await;
    app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"crm_deliveries_total{platform="jivo",event="chat_accepted",outcome="applied"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("crm_leads_created_total 1"));
    assert!(text.contains("crm_answer_seconds_count 1"));
}

#[tokio::test]
async fn graceful_shutdown_keeps_every_acknowledged_delivery() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let body = accepted(
            i,
            &format!("g{i}"),
            "Graceful",
            Some(&format!("g{i}@example.com")),
            None,
        );
        let client = app.client.clone();
        let url = app.url(&format!("/webhooks/jivo/{JIVO_TOKEN}"));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut acknowledged = 0;
    for t in tasks {
        if let Ok(Ok(200)) = t.await {
            acknowledged += 1;
        }
    }
    let (db, url) = (app.db_path.clone(), app.db_url.clone());
    let _dir = app.stop().await;
    let stored: i64 = query_store(&db, url.as_deref(), "SELECT count(*) FROM deliveries");
    assert_eq!(stored, acknowledged);
    assert_eq!(acknowledged, 20);
}

#[tokio::test]
async fn under_a_long_lock_chat_accepted_is_answered_from_the_payload_and_spooled_then_applied() {
    if skipped_on_postgres("a SQLite write lock held by a test connection") {
        return;
    }
    let app = spawn_app_with(|c| {
        c.database.busy_timeout_ms = 300;
        c.jivo.answer_deadline_ms = 100;
    })
    .await;
    let locker = rusqlite::Connection::open(&app.db_path).unwrap();
    locker
        .execute_batch(
            "BEGIN EXCLUSIVE; INSERT INTO leads (created_at, updated_at) VALUES ('x', 'x');",
        )
        .unwrap();

    // The agent gets an answer built from the payload, within the deadline.
    let (status, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "ok");
    assert_eq!(answer["contact_info"]["email"], "email@example.com");
    assert_eq!(answer["contact_info"]["phone"], "+14084987855");
    assert!(answer.get("crm_link").is_none(), "no lead id yet: {answer}");
    let spooled = std::fs::read_dir(app.db_path.parent().unwrap().join("spool"))
        .unwrap()
        .count();
    assert_eq!(spooled, 1);

    // Events nobody waits for get 503, so the sender retries; never a 4xx.
    let (status, _) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 503);
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("crm_spool_depth 1"), "{metrics}");

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // Storage is back: the spooled delivery is applied once, by the drainer.
    let mut leads = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leads = app.sql::<i64>("SELECT count(*) FROM leads");
        let left = std::fs::read_dir(app.db_path.parent().unwrap().join("spool"))
            .unwrap()
            .count();
        if leads == 1 && left == 0 {
            break;
        }
    }
    assert_eq!(leads, 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 1);
    // The next answer has the real lead.
    let (status, answer) = app.jivo(&fixture("jivo/chat_updated.json")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["crm_link"], "http://crm.test/leads/1");
}
