//! The audit log: each kind of staff action is recorded with who, when and
//! from where; `/api/audit` and `/audit` are for admins only; `crm-responder
//! audit --since` prints it. On either store.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A test app with an admin, `root`, beside the sales user.
async fn app_with_admin() -> TestApp {
    spawn_app_with(|config| {
        let mut admin = config.sales.users[0].clone();
        admin.name = "root".into();
        admin.role = crm_responder::staff::Role::Admin;
        config.sales.users.push(admin);
    })
    .await
}

/// A config file naming the app's database, for the binary's commands.
fn config_file(app: &TestApp, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        store_config_text(&app.db_path, app.db_url.as_deref()),
    )
    .unwrap();
    path
}

/// GET `path` with Basic credentials of `user`; status and JSON body.
async fn get_as(app: &TestApp, user: &str, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path))
        .basic_auth(user, Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every entry of the log, as the admin reads it through `/api/audit`.
async fn events(app: &TestApp) -> Vec<Value> {
    let (status, body) = get_as(app, "root", "/api/audit?since=2000-01-01&limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// The entries of `action`.
fn of<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// POSTs the sign-in form, redirects not followed; the status.
async fn sign_in(app: &TestApp, name: &str, password: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url("/login"))
        .form(&[("name", name), ("password", password), ("next", "/leads")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sign_ins_lead_views_and_searches_are_audited_with_who_and_where() {
    let app = app_with_admin().await;
    let (_, answer) = app
        .jivo(&accepted(1, "1", "Ann Lee", Some("ann@example.com"), None))
        .await;
    let lead = lead_id(&answer);

    assert_eq!(sign_in(&app, "sales", "wrong password").await, 200);
    assert_eq!(sign_in(&app, "my password typed as a name", "x").await, 200);
    assert_eq!(sign_in(&app, "sales", SALES_PASSWORD).await, 303);
    assert_eq!(
        get_as(&app, "sales", &format!("/api/leads/{lead}")).await.0,
        200
    );
    let page = app
        .client
        .get(app.url(&format!("/leads/{lead}")))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let (status, found) = get_as(&app, "sales", "/api/leads?q=ann%40example.com").await;
    assert_eq!(status, 200, "{found}");
    let page = app
        .client
        .get(app.url("/leads?q=Ann&status=new"))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    let events = events(&app).await;
    let failed = of(&events, "sign_in_failed");
    assert_eq!(failed.len(), 2, "{events:#?}");
    assert_eq!(failed[0]["actor"], "sales");
    assert_eq!(failed[0]["target"], "wrong name or password");
    assert_eq!(failed[0]["address"], "127.0.0.1");
    // A name that is nobody's may be a password typed in the wrong box.
    assert_eq!(failed[1]["actor"], "(unknown user)");
    let signed_in = of(&events, "sign_in");
    assert_eq!(signed_in.len(), 1);
    assert_eq!(signed_in[0]["actor"], "sales");
    assert_eq!(signed_in[0]["address"], "127.0.0.1");
    let views = of(&events, "lead_view");
    assert_eq!(views.len(), 2, "the API and the page: {events:#?}");
    for view in &views {
        assert_eq!(view["actor"], "sales");
        assert_eq!(view["target"], format!("lead {lead}"));
        assert_eq!(view["address"], "127.0.0.1");
        assert!(view["at"].as_str().unwrap().ends_with('Z'));
    }
    let searches = of(&events, "search");
    assert_eq!(searches.len(), 2);
    assert_eq!(searches[0]["target"], format!("q=…: leads {lead}"));
    assert_eq!(
        searches[1]["target"],
        format!("q=… status=new: leads {lead}")
    );
    // What was typed to find someone is not kept.
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains("ann@example.com") && !all.contains("Ann"),
        "{all}"
    );
}

#[tokio::test]
async fn token_creation_use_and_exports_are_audited() {
    let app = app_with_admin().await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let lead = lead_id(&answer);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&app, &dir);
    let out = cli(&config, &["token", "create", "nightly", "--scope", "read"]);
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();

    // Three requests within a minute: one use noted, each view recorded.
    for _ in 0..3 {
        let r = app
            .client
            .get(app.url(&format!("/api/leads/{lead}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let export = dir.path().join("leads.csv");
    cli(&config, &["export", "--output", export.to_str().unwrap()]);

    // The use is noted beside the request, not before its answer.
    let mut events = events(&app).await;
    for _ in 0..100 {
        if !of(&events, "token_use").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        events = self::events(&app).await;
    }
    let created = of(&events, "token_create");
    assert_eq!(created.len(), 1);
    assert!(created[0]["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(created[0]["target"], "token nightly (scope read)");
    assert_eq!(created[0]["address"], "local");
    let used = of(&events, "token_use");
    assert_eq!(used.len(), 1, "{events:#?}");
    assert_eq!(used[0]["actor"], "token:nightly");
    assert_eq!(used[0]["address"], "127.0.0.1");
    let views = of(&events, "lead_view");
    assert_eq!(views.len(), 3);
    assert!(views.iter().all(|v| v["actor"] == "token:nightly"));
    let exports = of(&events, "export");
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["target"], "1 leads as csv");
    assert!(exports[0]["actor"].as_str().unwrap().starts_with("cli:"));
    let last_used: Option<String> = app.sql("SELECT last_used_at FROM api_tokens");
    assert!(last_used.is_some());
}

#[tokio::test]
async fn the_audit_log_is_for_admins_only() {
    let app = app_with_admin().await;
    assert_eq!(get_as(&app, "sales", "/api/audit").await.0, 403);
    assert_eq!(get_as(&app, "root", "/api/audit").await.0, 200);
    let anonymous = app.client.get(app.url("/api/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let page = |user: &'static str| {
        let url = app.url("/audit");
        let client = app.client.clone();
        async move {
            let r = client
                .get(url)
                .basic_auth(user, Some(SALES_PASSWORD))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(page("sales").await.0, 403);
    let (status, html) = page("root").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Audit log") && html.contains("audit_read"),
        "{html}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&app, &dir);
    let token = |scope: &str| {
        let out = cli(&config, &["token", "create", scope, "--scope", scope]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    for (scope, expected) in [("read", 403), ("write", 403), ("admin", 200)] {
        let r = app
            .client
            .get(app.url("/api/audit"))
            .bearer_auth(token(scope))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "a {scope} token");
    }
    let (status, body) = get_as(&app, "root", "/api/audit?since=yesterday").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["result"], "error");
}

#[tokio::test]
async fn the_audit_log_pages_oldest_first_without_repeats() {
    let app = app_with_admin().await;
    for _ in 0..5 {
        sign_in(&app, "sales", "wrong password").await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/audit?since=2000-01-01&limit=2".to_owned();
    loop {
        let (status, body) = get_as(&app, "root", &path).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "sign_in_failed")
                .map(|e| e["at"].as_str().unwrap().to_owned()),
        );
        match body["next"].as_str() {
            Some(next) => path = format!("/api/audit?since=2000-01-01&limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}

#[tokio::test]
async fn audit_since_prints_the_entries_from_a_date_on() {
    let app = app_with_admin().await;
    sign_in(&app, "sales", SALES_PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&app, &dir);
    let out = cli(&config, &["audit", "--since", "2000-01-01"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(" sign_in "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("  sales  sign_in  -  from 127.0.0.1"),
        "{line}"
    );
    // Reading the log is recorded too, by the operator at the command line.
    assert!(
        text.contains(" audit_read  since 2000-01-01T00:00:00.000Z  from local"),
        "{text}"
    );

    let out = cli(&config, &["audit", "--since", "2999-01-01", "--json"]);
    assert!(out.stdout.is_empty(), "nothing is that new");
    let out = cli(&config, &["audit", "--since", "2000-01-01", "--json"]);
    let first: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["action"], "sign_in");
    let bad = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["audit", "--since", "last week"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
