//! Secrets and access: the real binary's log, at its most verbose, holds no
//! secret after deliveries and logins with right and wrong credentials;
//! failed logins are throttled per client; the API needs credentials.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::*;

/// The LiveChat-like `token` a body carries (LiveChat v3 puts one in each body).
const BODY_TOKEN: &str = "body-token-5f1e2d3c4b5a";
/// Wrong credentials are someone's mistyped secrets: they stay out of the log too.
const WRONG_TOKEN: &str = "wrong-jivo-token-7a6b5c";
const WRONG_PASSWORD: &str = "wrong-password-9e8d7c";

/// The binary, killed on drop if it is still running.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The password a run on PostgreSQL puts in the database URL when the test
/// server's URL has none (the test server trusts loopback connections, so
/// it never asks for it): a secret the log must not show either.
const DATABASE_PASSWORD: &str = "database-password-3c2b1a0f";

/// The password in the database URL of [`start`]'s config, on PostgreSQL.
fn database_password() -> Option<String> {
    let server = postgres_server()?;
    let userinfo = server.split_once("://")?.1.split_once('@')?.0;
    Some(match userinfo.split_once(':') {
        Some((_, password)) => password.to_owned(),
        None => DATABASE_PASSWORD.to_owned(),
    })
}

/// A fresh store (see [`fresh_store`]) whose URL, on PostgreSQL, carries
/// [`database_password`].
fn store_url() -> Option<String> {
    let url = fresh_store()?;
    let (scheme, rest) = url.split_once("://").expect("a URL");
    Some(match rest.split_once('@') {
        Some((user, host)) if !user.contains(':') => {
            format!("{scheme}://{user}:{DATABASE_PASSWORD}@{host}")
        }
        _ => url.clone(),
    })
}

/// Runs the binary with a test config in `dir` (on the test store),
/// logging at trace level to `log` (stdout goes next to it, as `.out`).
fn start(dir: &Path, log: &Path, args: &[&str]) -> Running {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        store_config_text(&dir.join("crm.sqlite3"), store_url().as_deref()),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_crm-responder"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the binary starts");
    Running { child }
}

/// Waits for the `serving` line and reads the bound address off it.
async fn bound_addr(log: &Path) -> SocketAddr {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("serving")) {
            let at = line
                .find("127.0.0.1:")
                .expect("address on the serving line");
            let addr: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return addr.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the binary did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let child = start(dir.path(), &log, &["serve"]);
    let addr = bound_addr(&log).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    // Jivo: right and wrong token in the path, one body that fails to parse,
    // and secrets inside body fields (payloads are not logged either).
    let accepted = fixture("jivo/chat_accepted.json");
    let mut with_token = accepted.clone();
    with_token["visitor"]["description"] = json!(BODY_TOKEN);
    for (token, body) in [
        (JIVO_TOKEN, accepted.to_string()),
        (JIVO_TOKEN, with_token.to_string()),
        (
            JIVO_TOKEN,
            format!(r#"{{"event_name":{{"token":"{BODY_TOKEN}"}}}}"#),
        ),
        (
            JIVO_TOKEN,
            format!(r#"{{"event_name":"chat_finished","chat_id":{{"{BODY_TOKEN}":1}}}}"#),
        ),
        (WRONG_TOKEN, accepted.to_string()),
    ] {
        let r = client
            .post(url(&format!("/webhooks/jivo/{token}")))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!([200, 400, 401].contains(&r.status().as_u16()));
    }
    // Rocket.Chat and LiveChat (v2 Basic, v3 secret_key and a body token).
    for token in [ROCKETCHAT_TOKEN, WRONG_TOKEN] {
        client
            .post(url("/webhooks/rocketchat"))
            .header("x-rocketchat-livechat-token", token)
            .body(fixture("rocketchat/LivechatSession.json").to_string())
            .send()
            .await
            .unwrap();
    }
    for password in [LIVECHAT_PASSWORD, WRONG_PASSWORD] {
        client
            .post(url("/webhooks/livechat"))
            .basic_auth(LIVECHAT_USER, Some(password))
            .body(fixture("livechat/v2/chat_started.json").to_string())
            .send()
            .await
            .unwrap();
    }
    let mut v3 = fixture("livechat/v3/incoming_chat.json");
    v3["token"] = json!(BODY_TOKEN);
    for secret in [LIVECHAT_SECRET, WRONG_PASSWORD] {
        v3["secret_key"] = json!(secret);
        client
            .post(url("/webhooks/livechat"))
            .body(v3.to_string())
            .send()
            .await
            .unwrap();
    }
    // The API: a good login, a wrong password, an unknown user.
    for (user, password, status) in [
        ("sales", SALES_PASSWORD, 200),
        ("sales", WRONG_PASSWORD, 401),
        (WRONG_TOKEN, SALES_PASSWORD, 401),
    ] {
        let r = client
            .get(url("/api/leads?limit=1"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }

    // The sign-in form: a wrong and a right password, a session's cookie
    // and its token in a sign-out form.
    let session = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut cookie = String::new();
    for (password, status) in [(WRONG_PASSWORD, 200), (SALES_PASSWORD, 303)] {
        let r = session
            .post(url("/login"))
            .form(&[
                ("name", "sales"),
                ("password", password),
                ("next", "/leads"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        if let Some(set) = r.headers().get("set-cookie") {
            cookie = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        }
    }
    let session_id = cookie.trim_start_matches("crm_session=").to_owned();
    assert!(session_id.len() > 20, "{cookie}");
    let r = session
        .post(url("/logout"))
        .form(&[("csrf", WRONG_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let _ = Command::new("kill")
        .args(["-TERM", &child.child.id().to_string()])
        .status();
    let exited = tokio::task::spawn_blocking(move || {
        let mut running = child;
        running.child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(exited.success(), "graceful exit: {exited}");

    let text = std::fs::read_to_string(&log).unwrap();
    // The capture works: deliveries and logins are in it.
    assert!(text.contains("serving"), "{text}");
    assert!(text.contains("delivery"), "{text}");
    assert!(text.contains("chat_accepted"), "{text}");
    let secrets = [
        JIVO_TOKEN,
        ROCKETCHAT_TOKEN,
        LIVECHAT_PASSWORD,
        LIVECHAT_SECRET,
        SALES_PASSWORD,
        SALES_HASH,
        // The salt and digest parts of the hash, each on its own.
        SALES_HASH.rsplit('$').next().unwrap(),
        SALES_HASH.rsplit('$').nth(1).unwrap(),
        BODY_TOKEN,
        WRONG_TOKEN,
        WRONG_PASSWORD,
    ];
    let encoded = [
        b64(&format!("sales:{SALES_PASSWORD}")),
        b64(&format!("sales:{WRONG_PASSWORD}")),
        b64(&format!("{LIVECHAT_USER}:{LIVECHAT_PASSWORD}")),
    ];
    let password = database_password();
    for secret in secrets
        .iter()
        .copied()
        .chain([session_id.as_str()])
        .chain(encoded.iter().map(String::as_str))
        .chain(password.as_deref())
    {
        assert!(
            !text.contains(secret),
            "{secret:?} is in the log:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn check_config_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("check.log");
    let mut child = start(dir.path(), &log, &["check-config"]);
    let status = child.child.wait().unwrap();
    assert!(status.success());
    let out = std::fs::read_to_string(log.with_extension("out")).unwrap()
        + &std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("jivo"), "{out}");
    let password = database_password();
    for secret in [
        JIVO_TOKEN,
        ROCKETCHAT_TOKEN,
        LIVECHAT_PASSWORD,
        LIVECHAT_SECRET,
        SALES_HASH,
    ]
    .into_iter()
    .chain(password.as_deref())
    {
        assert!(!out.contains(secret), "{secret:?} printed:\n{out}");
    }
}

/// A client whose requests come from `ip` (any 127.x address is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(app: &TestApp, client: &reqwest::Client, password: Option<&str>) -> (u16, Value) {
    let mut request = client.get(app.url("/api/leads?limit=1"));
    if let Some(password) = password {
        request = request.basic_auth("sales", Some(password));
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 401 {
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }
    if status == 429 {
        assert!(
            r.headers().contains_key("retry-after"),
            "429 says when to retry"
        );
    }
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_api_needs_credentials() {
    let app = spawn_app().await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let id = lead_id(&answer);
    for path in [
        format!("/api/leads/{id}"),
        "/api/leads".into(),
        "/api/leads?q=a".into(),
    ] {
        let r = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["result"], "error");
        assert!(
            !body.to_string().contains("@"),
            "no lead data without credentials"
        );
    }
    assert_eq!(app.api(&format!("/api/leads/{id}")).await.0, 200);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_per_client_even_with_the_right_password() {
    let app = spawn_app().await;
    let attacker = client_from("127.3.0.1");
    let colleague = client_from("127.3.0.2");

    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(login(&app, &attacker, Some("guess")).await.0);
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429; 2], "{statuses:?}");
    // Throttled means refused: were the right password let through, the
    // throttle would tell a guesser when a guess is right.
    let (status, body) = login(&app, &attacker, Some(SALES_PASSWORD)).await;
    assert_eq!(status, 429);
    assert_eq!(body["result"], "error");
    // Missing credentials are not failures (browsers ask first), but the
    // throttled client gets nothing either.
    assert_eq!(login(&app, &attacker, None).await.0, 429);

    // Another client is not affected.
    assert_eq!(login(&app, &colleague, Some(SALES_PASSWORD)).await.0, 200);
    assert_eq!(login(&app, &colleague, None).await.0, 401);
    assert_eq!(login(&app, &colleague, Some(SALES_PASSWORD)).await.0, 200);
}

/// The shipped `config.toml` with `listen` replaced.
fn shipped_config(dir: &Path, listen: &str) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml"))
            .expect("the shipped config.toml");
    let text = shipped
        .replacen(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"{listen}\""),
            1,
        )
        .replacen(
            "path = \"data/crm.sqlite3\"",
            &format!("path = \"{}\"", dir.join("crm.sqlite3").display()),
            1,
        );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_service_refuses_a_public_address_while_a_secret_has_its_shipped_value() {
    let dir = tempfile::tempdir().unwrap();
    let public = shipped_config(dir.path(), "0.0.0.0:0");
    let config = crm_responder::config::Config::load(&public).expect("the shipped file parses");
    let refused = crm_responder::app::Application::build(config)
        .await
        .err()
        .expect("a public address with shipped secrets is refused");
    let message = refused.to_string();
    for key in [
        "jivo.token",
        "rocketchat.token",
        "livechat.password",
        "livechat.secret_key",
        "privacy.secret",
        "sales.users[0].password_hash",
    ] {
        assert!(message.contains(key), "{key} not named in: {message}");
    }
    assert!(
        !dir.path().join("crm.sqlite3").exists(),
        "refused before anything is created"
    );

    // check-config says the same, and exits non-zero.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&public)
        .arg("check-config")
        .env_remove("CRM_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("jivo.token") && said.contains("ships with"),
        "{said}"
    );

    // On loopback: served, with a warning; check-config warns and passes.
    let loopback = shipped_config(dir.path(), "127.0.0.1:0");
    let config = crm_responder::config::Config::load(&loopback).unwrap();
    let app = crm_responder::app::Application::build(config)
        .await
        .expect("loopback serves with shipped secrets");
    drop(app);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&loopback)
        .arg("check-config")
        .env_remove("CRM_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("# warning: jivo.token still has the value config.toml ships with"),
        "{said}"
    );
}
