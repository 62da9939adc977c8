//! Signing in and out, sessions, CSRF, slowed failures, and the config
//! checks that go with staff: over a real socket, on either store.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crm_responder::app::Application;
use crm_responder::config::Config;
use reqwest::header::{LOCATION, SET_COOKIE};

use crate::helpers::*;
use crate::reload::Served;

/// A browser-like client: keeps cookies, does not follow redirects, and
/// sends from `ip` when given (any 127.x address is loopback).
fn browser(ip: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ip) = ip {
        builder = builder.local_address(ip.parse::<IpAddr>().unwrap());
    }
    builder.build().unwrap()
}

/// POSTs the sign-in form.
async fn sign_in(
    base: &str,
    client: &reqwest::Client,
    name: &str,
    password: &str,
    next: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/login"))
        .form(&[("name", name), ("password", password), ("next", next)])
        .send()
        .await
        .unwrap()
}

/// GETs a path; status and `Location`.
async fn visit(base: &str, client: &reqwest::Client, path: &str) -> (u16, Option<String>) {
    let r = client.get(format!("{base}{path}")).send().await.unwrap();
    let location = r
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_owned());
    (r.status().as_u16(), location)
}

fn base(app: &TestApp) -> String {
    app.url("")
}

fn location(r: &reqwest::Response) -> &str {
    r.headers()[LOCATION].to_str().unwrap()
}

#[tokio::test]
async fn a_page_without_a_session_sends_to_login_and_back_after_signing_in() {
    let app = spawn_app().await;
    let base = base(&app);
    let client = browser(None);
    assert_eq!(
        visit(&base, &client, "/").await,
        (303, Some("/leads".into())),
        "/ goes to the leads"
    );
    let (status, to_login) = visit(&base, &client, "/leads?q=ann%20lee").await;
    assert_eq!(status, 303);
    let to_login = to_login.unwrap();
    assert_eq!(to_login, "/login?next=/leads%3Fq%3Dann%2520lee");

    let form = client
        .get(format!("{base}{to_login}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let csp = form.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = form.text().await.unwrap();
    assert!(
        html.contains(r#"<form class="stacked" action="/login" method="post">"#),
        "{html}"
    );
    assert!(
        html.contains(r#"name="next" value="/leads?q=ann%20lee""#),
        "{html}"
    );
    assert!(!html.contains("<script"), "no script");

    // A wrong password: the form again, with a message and no session.
    let wrong = sign_in(&base, &client, "sales", "not-it", "/leads?q=ann%20lee").await;
    assert_eq!(wrong.status(), 200);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let html = wrong.text().await.unwrap();
    assert!(html.contains("Wrong name or password."), "{html}");
    assert!(
        html.contains(r#"value="sales""#),
        "the name stays filled in"
    );
    assert_eq!(app.sql::<i64>("SELECT COUNT(*) FROM sessions"), 0);
    assert_eq!(visit(&base, &client, "/leads").await.0, 303);

    // The right one: a session, and back where the user was going.
    let right = sign_in(
        &base,
        &client,
        "sales",
        SALES_PASSWORD,
        "/leads?q=ann%20lee",
    )
    .await;
    assert_eq!(right.status(), 303);
    assert_eq!(location(&right), "/leads?q=ann%20lee");
    let cookie = right.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["crm_session=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "public_url is http: {cookie}");
    assert_eq!(visit(&base, &client, "/leads?q=ann%20lee").await.0, 200);
    let (status, _) = visit(&base, &client, "/login").await;
    assert_eq!(status, 303, "signed in already: straight on");

    // The store keeps the id's hash, never the id.
    let id = cookie
        .trim_start_matches("crm_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let stored: String = app.sql("SELECT id_hash FROM sessions");
    assert_ne!(stored, id);
    assert_eq!(stored.len(), 64);
    assert_eq!(app.sql::<String>("SELECT user_name FROM sessions"), "sales");

    // The session opens the JSON API too.
    let r = client
        .get(format!("{base}/api/leads"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn signing_in_never_sends_the_user_to_another_site() {
    let app = spawn_app().await;
    for next in [
        "//evil.example/leads",
        "https://evil.example/",
        "/\\evil.example",
        "evil.example",
        "",
    ] {
        let r = sign_in(&base(&app), &browser(None), "sales", SALES_PASSWORD, next).await;
        assert_eq!(r.status(), 303, "{next}");
        assert_eq!(location(&r), "/leads", "{next}");
    }
}

#[tokio::test]
async fn signing_out_ends_the_session_for_every_copy_of_its_cookie() {
    let app = spawn_app().await;
    let base = base(&app);
    let client = browser(None);
    let r = sign_in(&base, &client, "sales", SALES_PASSWORD, "/leads").await;
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let csrf: String = app.sql("SELECT csrf FROM sessions");
    let page = client.get(format!("{base}/leads")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<form class="account" action="/logout" method="post">"#),
        "{html}"
    );
    assert!(
        html.contains(&format!(r#"name="csrf" value="{csrf}""#)),
        "{html}"
    );

    // Without the token, or with another's, nothing happens.
    for fields in [vec![], vec![("csrf", "forged")]] {
        let r = client
            .post(format!("{base}/logout"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{fields:?}");
        assert!(r.text().await.unwrap().contains("security token"));
    }
    assert_eq!(
        visit(&base, &client, "/leads").await.0,
        200,
        "still signed in"
    );

    let r = client
        .post(format!("{base}/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(app.sql::<i64>("SELECT COUNT(*) FROM sessions"), 0);

    // A copy of the old cookie (another tab, a thief) opens nothing.
    let stale = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = stale
        .get(format!("{base}/leads/1"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?next=/leads/1");
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "the stale cookie is cleared"
    );
    let r = stale
        .get(format!("{base}/api/leads"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_form_from_another_site_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let base = base(&app);
    let client = browser(None);
    sign_in(&base, &client, "sales", SALES_PASSWORD, "/leads").await;
    let csrf: String = app.sql("SELECT csrf FROM sessions");

    // Even with the right token, a foreign Origin is refused.
    let r = client
        .post(format!("{base}/logout"))
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.sql::<i64>("SELECT COUNT(*) FROM sessions"), 1);

    // No other site can sign a browser in (into the attacker's account).
    let fresh = browser(None);
    let r = fresh
        .post(format!("{base}/login"))
        .header("origin", "http://evil.example")
        .form(&[("name", "sales"), ("password", SALES_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(app.sql::<i64>("SELECT COUNT(*) FROM sessions"), 1);

    // Our own origins pass: public_url's, and the host the request went to.
    for origin in ["http://crm.test", base.as_str()] {
        let r = browser(None)
            .post(format!("{base}/login"))
            .header("origin", origin)
            .form(&[("name", "sales"), ("password", SALES_PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{origin}");
    }

    // HTTP Basic has no session token: a foreign Origin is refused all the same.
    let r = reqwest::Client::new()
        .post(format!("{base}/logout"))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn failed_sign_ins_are_slowed_per_name_and_per_address() {
    let app = spawn_app().await;
    let base = base(&app);
    let timed = |ip: &'static str, name: &'static str, password: &'static str| {
        let base = base.clone();
        async move {
            let started = Instant::now();
            let r = sign_in(&base, &browser(Some(ip)), name, password, "/leads").await;
            (r.status().as_u16(), started.elapsed())
        }
    };
    // A fresh name from a fresh address is not slowed.
    let (status, fast) = timed("127.5.0.9", "sales", SALES_PASSWORD).await;
    assert_eq!(status, 303);

    // Three failures on a name slow it down from any address, a second
    // for the next attempt; the right password still gets in.
    for _ in 0..3 {
        assert_eq!(timed("127.5.0.1", "sales", "guess").await.0, 200);
    }
    let (status, slowed) = timed("127.5.0.2", "sales", SALES_PASSWORD).await;
    assert_eq!(status, 303);
    assert!(
        slowed >= Duration::from_millis(800) && slowed > fast,
        "{slowed:?} vs {fast:?}"
    );

    // Three failures from an address slow down any name from it.
    for name in ["x1", "x2", "x3"] {
        assert_eq!(timed("127.5.0.3", name, "guess").await.0, 200);
    }
    let (status, slowed) = timed("127.5.0.3", "sales", SALES_PASSWORD).await;
    assert_eq!(status, 303);
    assert!(slowed >= Duration::from_millis(800), "{slowed:?}");

    // Others are not affected.
    let (status, other) = timed("127.5.0.4", "sales", SALES_PASSWORD).await;
    assert_eq!(status, 303);
    assert!(other < Duration::from_millis(700), "{other:?}");
}

#[tokio::test]
async fn an_idle_or_too_old_session_ends() {
    let app = spawn_app().await;
    let base = base(&app);
    for column in ["seen_at", "created_at"] {
        let client = browser(None);
        sign_in(&base, &client, "sales", SALES_PASSWORD, "/leads").await;
        assert_eq!(visit(&base, &client, "/leads").await.0, 200);
        let sql = format!("UPDATE sessions SET {column} = ?1");
        app.execute(&sql, crm_responder::args!["2001-01-01T00:00:00.000Z"]);
        assert_eq!(
            visit(&base, &client, "/leads").await,
            (303, Some("/login?next=/leads".into())),
            "{column}"
        );
        assert_eq!(app.sql::<i64>("SELECT COUNT(*) FROM sessions"), 0);
    }
}

#[tokio::test]
async fn a_pipeline_without_a_status_leads_have_is_refused_at_start_naming_it() {
    let app = spawn_app().await;
    let (status, _) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    assert_eq!(status, 200);
    let (path, url) = (app.db_path.clone(), app.db_url.clone());
    let dir = app.stop().await;
    let text = store_config_text(&path, url.as_deref())
        + "\n[pipeline]\nstatuses = [\"open\", \"won\", \"lost\"]\n";
    let mut config = Config::parse(&text).expect("the file itself is valid");
    config.database.spool_dir = Some(dir.path().join("spool"));
    let refused = Application::build(config).await.err().expect("refused");
    assert_eq!(
        refused.to_string(),
        r#"pipeline.statuses: "new" is used by 1 lead; keep it in the list (or move those leads first)"#
    );
}

#[tokio::test]
async fn config_checks_roles_statuses_and_lifetimes_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = config_text(&dir.path().join("crm.sqlite3"));
    let ok = Config::parse(&base).unwrap();
    assert_eq!(
        ok.pipeline.statuses,
        ["new", "contacted", "qualified", "won", "lost"]
    );
    assert_eq!(ok.sessions.idle_minutes, 480);
    assert_eq!(ok.sessions.absolute_hours, 72);
    assert_eq!(ok.sales.users[0].role, crm_responder::staff::Role::Sales);
    for (extra, key) in [
        ("[pipeline]\nstatuses = []\n", "pipeline.statuses"),
        (
            "[pipeline]\nstatuses = [\"new\", \"new\"]\n",
            "pipeline.statuses[1]",
        ),
        (
            "[pipeline]\nstatuses = [\" new\"]\n",
            "pipeline.statuses[0]",
        ),
        ("[sessions]\nidle_minutes = 0\n", "sessions.idle_minutes"),
        (
            "[sessions]\nabsolute_hours = 0\n",
            "sessions.absolute_hours",
        ),
        ("[sessions]\nforever = true\n", "forever"),
    ] {
        let e = Config::parse(&format!("{base}\n{extra}")).unwrap_err();
        assert!(e.to_string().contains(key), "{extra}: {e}");
    }
    let e = Config::parse(&base.replace("name = \"sales\"", "name = \"sales\"\nrole = \"boss\""))
        .unwrap_err();
    assert!(e.to_string().contains("role"), "{e}");
    let viewer =
        Config::parse(&base.replace("name = \"sales\"", "name = \"sales\"\nrole = \"viewer\""))
            .unwrap();
    assert_eq!(
        viewer.sales.users[0].role,
        crm_responder::staff::Role::Viewer
    );
}

#[tokio::test]
async fn a_user_removed_on_reload_loses_their_session_and_a_status_in_use_stays() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let url = fresh_store();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let two_users = store_config_text(&db, url.as_deref())
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &format!("\n[[sales.users]]\nname = \"ann\"\npassword_hash = \"{SALES_HASH}\"\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &two_users).unwrap();
    let served = Served::start(&config, port);
    served.wait_for_log("serving", 1);
    let base = served.base.clone();
    let r = reqwest::Client::new()
        .post(format!("{base}/webhooks/jivo/{JIVO_TOKEN}"))
        .body(fixture("jivo/chat_accepted.json").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (ann, sales) = (browser(None), browser(None));
    assert_eq!(
        sign_in(&base, &ann, "ann", SALES_PASSWORD, "/")
            .await
            .status(),
        303
    );
    assert_eq!(
        sign_in(&base, &sales, "sales", SALES_PASSWORD, "/")
            .await
            .status(),
        303
    );
    assert_eq!(visit(&base, &ann, "/leads").await.0, 200);

    // A pipeline without "new", which the lead has: refused, naming it.
    std::fs::write(
        &config,
        format!("{two_users}\n[pipeline]\nstatuses = [\"open\", \"closed\"]\n"),
    )
    .unwrap();
    served.hup();
    served.wait_for_log("reload refused", 1);
    assert!(
        served
            .log
            .lock()
            .unwrap()
            .contains(r#"\"new\" is used by 1 lead"#)
            || served
                .log
                .lock()
                .unwrap()
                .contains(r#""new" is used by 1 lead"#),
        "{}",
        served.log.lock().unwrap()
    );

    // Ann removed: her session ends at once; the other one lives on.
    let one_user = two_users.replace(
        &format!("\n[[sales.users]]\nname = \"ann\"\npassword_hash = \"{SALES_HASH}\"\n"),
        "",
    );
    std::fs::write(&config, &one_user).unwrap();
    served.hup();
    served.wait_for_log("configuration reloaded", 1);
    assert_eq!(
        visit(&base, &ann, "/leads").await,
        (303, Some("/login?next=/leads".into()))
    );
    assert_eq!(visit(&base, &sales, "/leads").await.0, 200);
    let left: String = query_store(&db, url.as_deref(), "SELECT user_name FROM sessions");
    assert_eq!(left, "sales");
    assert_eq!(
        query_store::<i64>(&db, url.as_deref(), "SELECT COUNT(*) FROM sessions"),
        1
    );
}

/// POSTs a staff note to the lead `id` with `configure` setting the
/// credentials; the status.
pub(crate) async fn post_note(
    app: &TestApp,
    client: &reqwest::Client,
    id: i64,
    configure: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> u16 {
    let request = client
        .post(app.url(&format!("/api/leads/{id}/notes")))
        .json(&serde_json::json!({"text": "called back"}));
    configure(request).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_change_through_the_api_by_session_must_come_from_our_pages() {
    let app = spawn_app().await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let id = lead_id(&answer);
    let client = browser(None);
    sign_in(&base(&app), &client, "sales", SALES_PASSWORD, "/leads").await;
    let csrf: String = app.sql("SELECT csrf FROM sessions");
    let staff_notes =
        |app: &TestApp| app.sql::<i64>("SELECT COUNT(*) FROM notes WHERE platform = 'staff'");
    assert_eq!(
        post_note(&app, &client, id, |r| r).await,
        403,
        "no Origin, no token"
    );
    let foreign = post_note(&app, &client, id, |r| {
        r.header("origin", "http://evil.example")
    })
    .await;
    assert_eq!(foreign, 403);
    assert_eq!(staff_notes(&app), 0, "nothing changed");
    let ours = post_note(&app, &client, id, |r| r.header("origin", "http://crm.test")).await;
    assert_eq!(ours, 201);
    let by_token = post_note(&app, &client, id, |r| r.header("x-csrf-token", &csrf)).await;
    assert_eq!(by_token, 201);
    assert_eq!(staff_notes(&app), 2);
}
