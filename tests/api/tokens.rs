//! API tokens and roles: `crm-responder token create|list|revoke` run
//! beside the service, tokens used as `Authorization: Bearer`, and what a
//! read token or a viewer may not do. On either store.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::signin::post_note;

/// Runs the binary's `token` command; its output, whether it succeeded or not.
fn token_cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("token")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("binary runs")
}

#[tokio::test]
async fn tokens_are_created_shown_once_listed_used_and_revoked() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        store_config_text(&app.db_path, app.db_url.as_deref()),
    )
    .unwrap();
    let out = cli(&config, &["token", "create", "nightly", "--scope", "read"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("crm_") && token.len() == 47, "{stdout}");
    let again = token_cli(&config, &["create", "nightly", "--scope", "write"]);
    assert!(!again.status.success(), "a name is taken once");
    assert!(String::from_utf8_lossy(&again.stderr).contains("nightly"));
    let bad = token_cli(&config, &["create", "nightly2", "--scope", "root"]);
    assert!(!bad.status.success());

    // Stored hashed; it opens the API as a bearer token.
    let stored: String = app.sql("SELECT token_hash FROM api_tokens");
    assert_eq!(stored.len(), 64);
    assert!(!stored.contains(&token[4..]));
    let get = |bearer: String| {
        let url = app.url("/api/leads");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = get(token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(format!("{token}x")).await;
    assert_eq!(status, 401);
    assert_eq!(body["result"], "error");

    // The list names it, its scope and its use, never the token.
    let mut used = String::new();
    for _ in 0..50 {
        used = String::from_utf8(cli(&config, &["token", "list"]).stdout).unwrap();
        if !used.contains("never") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = used.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(row.contains("read"), "{used}");
    assert!(!row.contains("never"), "the use is noted: {used}");
    assert!(!used.contains(&token[4..]), "{used}");

    // Revoked, it opens nothing.
    let out = cli(&config, &["token", "revoke", "nightly"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nightly"));
    assert_eq!(get(token.clone()).await.0, 401);
    assert!(!token_cli(&config, &["revoke", "nightly"]).status.success());
    let listed = String::from_utf8(cli(&config, &["token", "list"]).stdout).unwrap();
    assert!(!listed.contains("nightly"), "{listed}");
}

#[tokio::test]
async fn a_read_token_or_a_viewer_cannot_write_and_a_write_token_can() {
    let app = spawn_app_with(|config| {
        let mut viewer = config.sales.users[0].clone();
        viewer.name = "vic".into();
        viewer.role = crm_responder::staff::Role::Viewer;
        config.sales.users.push(viewer);
    })
    .await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let id = lead_id(&answer);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        store_config_text(&app.db_path, app.db_url.as_deref()),
    )
    .unwrap();
    let token = |name: &str, scope: &str| {
        let out = cli(&config, &["token", "create", name, "--scope", scope]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    let (read, write) = (token("reader", "read"), token("writer", "write"));
    let client = reqwest::Client::new();

    let r = client
        .post(app.url(&format!("/api/leads/{id}/notes")))
        .bearer_auth(&read)
        .json(&serde_json::json!({"text": "called back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "error");
    assert!(body["error"].as_str().unwrap().contains("reader"), "{body}");
    let viewer = post_note(&app, &client, id, |r| {
        r.basic_auth("vic", Some(SALES_PASSWORD))
    })
    .await;
    assert_eq!(viewer, 403);
    assert!(
        app.lead(id).await["notes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["platform"] != "staff")
    );

    // Both may read.
    for r in [
        client
            .get(app.url(&format!("/api/leads/{id}")))
            .bearer_auth(&read),
        client
            .get(app.url(&format!("/api/leads/{id}")))
            .basic_auth("vic", Some(SALES_PASSWORD)),
    ] {
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    assert_eq!(
        post_note(&app, &client, id, |r| r.bearer_auth(&write)).await,
        201
    );
    let lead = app.lead(id).await;
    let note = lead["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["platform"] == "staff")
        .unwrap_or_else(|| panic!("{lead}"));
    // The note names the token that wrote it (the format is the notes' own).
    let author = note["author"].as_str().unwrap_or_default();
    assert!(
        author.contains("token") && author.contains("writer"),
        "{note}"
    );
}
