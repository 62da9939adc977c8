//! The lead pages in a real browser: headless Chromium, driven by
//! `chromedriver` over the W3C WebDriver protocol, opens pages of the running
//! service, and the tests assert on what it rendered and ran.
//!
//! Needs Debian's `chromium` and `chromium-driver` (nothing is downloaded at
//! run time), so the tests are ignored by a plain `cargo test`; `.ci/run`
//! installs both and runs them with `--include-ignored`. Screenshots go to
//! the test's temporary directory; set `KEEP_SCREENSHOTS=1` to keep it (its
//! path is printed).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::*;

const NEEDS: &str = "needs Chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs them with --include-ignored";

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// Where screenshots go.
    dir: tempfile::TempDir,
    /// Chromium's profile, fresh for every run.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    async fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_bin} ({e}): {NEEDS}"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let status: Value = r.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                // Without these Chromium stalls reaching out to a network that is not there.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        });
        let chromium = std::env::var("CHROMIUM").ok().or_else(|| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .map(str::to_owned)
        });
        if let Some(binary) = chromium {
            options["binary"] = binary.into();
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            dir: tempfile::tempdir().unwrap(),
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let r: Value = request
            .send()
            .await
            .expect("webdriver command")
            .json()
            .await
            .unwrap();
        if r["value"]["error"].is_string() {
            panic!("webdriver {path}: {r}");
        }
        r["value"].clone()
    }

    /// Opens a URL and waits for the page to load.
    async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The text the page shows, as a reader sees it.
    async fn text(&self) -> String {
        self.eval("return document.body.innerText;")
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sets the window size (a phone, a laptop).
    async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Saves a PNG screenshot of the viewport under the test's directory.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; a blocking call is fine in a drop at test end.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = reqwest::Client::new().delete(url).send().await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if std::env::var_os("KEEP_SCREENSHOTS").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("screenshots kept in {}", dir.keep().display());
        }
    }
}

impl Browser {
    /// The element `css` selects on the page.
    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no {css}: {found}"))
            .to_owned()
    }

    /// Types `text` into the element `css` selects.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks the element `css` selects.
    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Clicks the submit button `css` selects and waits for the page the
    /// form's answer leads to: a click returns once the event is sent, and
    /// the old page may still be there for a moment.
    async fn submit(&self, css: &str) {
        self.eval("window.__old_page = true; return null;").await;
        self.click(css).await;
        let started = Instant::now();
        loop {
            let loaded = self
                .eval("return window.__old_page !== true && document.readyState === 'complete';")
                .await;
            if loaded == true {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no new page after {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `path`, which sends a browser without a session to the
    /// sign-in form; signs in there as the sales user, and lands on `path`.
    async fn sign_in(&self, app: &TestApp, path: &str) {
        self.open(&app.url(path)).await;
        let at = self.eval("return location.pathname;").await;
        assert_eq!(at, "/login", "no session: the sign-in form");
        self.type_into("#name", "sales").await;
        self.type_into("#password", SALES_PASSWORD).await;
        self.submit("form.stacked button[type=submit]").await;
        let at = self
            .eval("return location.pathname + location.search;")
            .await;
        assert_eq!(at, path, "back where the user was going");
    }
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000,
        "{} is not a PNG screenshot",
        path.display()
    );
}

#[tokio::test]
#[ignore = "needs Chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs them with --include-ignored"]
async fn a_salesperson_sees_the_lead_its_transcript_and_finds_it_by_search() {
    let app = spawn_app().await;
    let (_, answer) = app
        .jivo(&accepted(
            501,
            "501",
            "Maria Fernanda Costa",
            Some("maria.costa@example.com"),
            Some("+1 415 555 0199"),
        ))
        .await;
    let id = lead_id(&answer);
    let messages = [
        "Hi! Do you deliver to Porto?",
        "We do, in two to three days.",
        "Great, and is there a warranty?",
        "Two years on every order.",
    ];
    let mut finished = fixture("jivo/chat_finished.json");
    finished["chat_id"] = 501.into();
    finished["visitor"] = json!({"number": "501"});
    finished["chat"]["messages"] = messages
        .iter()
        .enumerate()
        .map(|(i, text)| {
            json!({
                "message": text,
                "timestamp": 1_700_000_000 + 30 * i as i64,
                "type": if i % 2 == 0 { "visitor" } else { "agent" },
                "agent_id": 1,
            })
        })
        .collect();
    app.jivo(&finished).await;

    let browser = Browser::start().await;
    let link = answer["crm_link"].as_str().unwrap();
    let path = link.strip_prefix("http://crm.test").unwrap();
    assert_eq!(path, format!("/leads/{id}"));
    browser.sign_in(&app, path).await;
    let text = browser.text().await;
    assert!(text.contains("Maria Fernanda Costa"), "{text}");
    assert!(text.contains("+1 415 555 0199"), "{text}");
    assert!(text.contains("maria.costa@example.com"), "{text}");
    let shown = browser
        .eval("return Array.from(document.querySelectorAll('.transcript .text')).map(e => e.innerText);")
        .await;
    assert_eq!(shown, json!(messages));
    let sides = browser
        .eval("return Array.from(document.querySelectorAll('.transcript .msg')).map(e => e.className);")
        .await;
    assert_eq!(
        sides,
        json!(["msg visitor", "msg agent", "msg visitor", "msg agent"])
    );
    // The stylesheet loaded under the CSP: agents' bubbles sit on the right.
    let styled = browser
        .eval("return getComputedStyle(document.querySelector('.msg.agent')).alignSelf;")
        .await;
    assert_eq!(styled, "flex-end");
    let phone = browser
        .eval("return document.querySelector('a.phone').getAttribute('href');")
        .await;
    assert_eq!(phone, "tel:+14155550199");
    assert_png(&browser.screenshot("lead.png").await);
    browser
        .eval("document.getElementById('history').scrollIntoView(); return null;")
        .await;
    let history = browser
        .eval("return document.getElementById('history').innerText;")
        .await;
    assert!(
        history.as_str().unwrap().contains("+14155550199"),
        "{history}"
    );
    assert_png(&browser.screenshot("history.png").await);
    browser.resize(390, 844).await;
    let overflow = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(overflow, true, "the page fits a phone's width");
    assert_png(&browser.screenshot("lead-phone.png").await);
    browser.resize(1280, 1000).await;

    browser.open(&app.url("/leads?q=maria%20fernanda")).await;
    let names = browser
        .eval("return Array.from(document.querySelectorAll('.result-name')).map(e => e.innerText);")
        .await;
    assert_eq!(names, json!(["Maria Fernanda Costa"]));
    browser.open(&app.url("/leads?q=4155550199")).await;
    assert!(browser.text().await.contains("Maria Fernanda Costa"));
    assert_png(&browser.screenshot("search.png").await);

    // Signing out ends the session: pages send to the sign-in form again.
    browser.submit("form.account button").await;
    assert_eq!(browser.eval("return location.pathname;").await, "/login");
    assert_png(&browser.screenshot("login.png").await);
    browser.open(&app.url(path)).await;
    assert_eq!(browser.eval("return location.pathname;").await, "/login");
}

#[tokio::test]
#[ignore = "needs Chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs them with --include-ignored"]
async fn a_hostile_visitor_name_is_shown_as_text_and_runs_nothing() {
    let app = spawn_app().await;
    let hostile = r#"<img src=x onerror="document.title='pwned'">"#;
    let (_, answer) = app
        .jivo(&accepted(
            7,
            "7",
            hostile,
            Some("mallory@example.com"),
            None,
        ))
        .await;
    let mut finished = fixture("jivo/chat_finished.json");
    finished["chat_id"] = 7.into();
    finished["visitor"] = json!({"number": "7"});
    finished["chat"]["messages"] = json!([{"message": "<script>window.pwned=1</script>", "timestamp": 1700000000, "type": "visitor"}]);
    app.jivo(&finished).await;

    let browser = Browser::start().await;
    browser.sign_in(&app, "/leads").await;
    for path in [
        format!("/leads/{}", lead_id(&answer)),
        "/leads?q=mallory@example.com".to_owned(),
    ] {
        browser.open(&app.url(&path)).await;
        let title = browser.eval("return document.title;").await;
        assert_ne!(title, "pwned", "{path}");
        assert_eq!(
            browser.eval("return typeof window.pwned;").await,
            "undefined"
        );
        let images = browser
            .eval("return document.querySelectorAll('img, main script').length;")
            .await;
        assert_eq!(images, 0, "{path}");
        assert!(browser.text().await.contains(hostile), "{path}");
    }
    assert!(browser.text().await.contains("mallory@example.com"));
    let lead = format!("/leads/{}", lead_id(&answer));
    browser.open(&app.url(&lead)).await;
    let title = browser.eval("return document.title;").await;
    assert_eq!(title, json!(format!("{hostile} · crm-responder")));
    assert!(
        browser
            .text()
            .await
            .contains("<script>window.pwned=1</script>")
    );
    assert_eq!(
        browser.eval("return typeof window.pwned;").await,
        "undefined"
    );
    assert_png(&browser.screenshot("hostile.png").await);
}

#[tokio::test]
#[ignore = "needs Chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs them with --include-ignored"]
async fn a_salesperson_works_a_lead_through_its_forms() {
    let app = spawn_app().await;
    let (_, answer) = app
        .jivo(&accepted(
            601,
            "601",
            "Joana Ribeiro",
            Some("joana@example.com"),
            None,
        ))
        .await;
    let id = lead_id(&answer);
    let path = format!("/leads/{id}");
    let browser = Browser::start().await;
    // Without a session the lead page is the sign-in form, then the lead.
    browser.sign_in(&app, &path).await;
    let shown = |css: &'static str| {
        let browser = &browser;
        async move {
            browser
                .eval(&format!(
                    "return document.querySelector('{css}').innerText;"
                ))
                .await
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(shown("#lead-status").await, "new");
    assert_eq!(shown("#lead-owner").await, "nobody");

    // Status.
    browser
        .eval("document.getElementById('status').value = 'qualified'; return null;")
        .await;
    browser.submit("#status-form button").await;
    assert_eq!(browser.eval("return location.pathname;").await, json!(path));
    assert_eq!(shown("#lead-status").await, "qualified");

    // Owner: take it.
    browser.submit("#take-form button").await;
    assert_eq!(shown("#lead-owner").await, "sales");
    let take_forms = browser
        .eval("return document.querySelectorAll('#take-form').length;")
        .await;
    assert_eq!(take_forms, 0, "nothing to take once it is mine");

    // A note, shown with its author.
    browser
        .type_into("#note", "Wants a quote for 40 chairs")
        .await;
    browser.submit("#note-form button").await;
    let notes = shown("#notes").await;
    assert!(notes.contains("Wants a quote for 40 chairs"), "{notes}");
    assert!(notes.contains("staff sales"), "{notes}");

    // A phone, added then removed.
    browser
        .type_into("#add-phone input[name=value]", "(415) 555-0142")
        .await;
    browser.submit("#add-phone button").await;
    let contacts = shown("#contacts").await;
    assert!(
        contacts.contains("(415) 555-0142"),
        "{contacts}\n{}",
        browser.text().await
    );
    assert_png(&browser.screenshot("working.png").await);
    browser.resize(390, 844).await;
    let fits = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the forms fit a phone's width");
    assert_png(&browser.screenshot("working-phone.png").await);
    browser.resize(1280, 1000).await;
    browser
        .submit("#contacts form[action$='/phones/remove'] button")
        .await;
    let contacts = shown("#contacts").await;
    assert!(!contacts.contains("(415) 555-0142"), "{contacts}");

    // Each change is in the history, by the staff member.
    let history = shown("#history").await;
    for line in [
        "status\tnew\tqualified\tstaff sales",
        "owner\t—\tsales\tstaff sales",
        "note\t—\tWants a quote for 40 chairs\tstaff sales",
        "phone\t—\t+14155550142\tstaff sales",
        "phone\t+14155550142\t—\tstaff sales",
    ] {
        assert!(history.contains(line), "{line:?} not in\n{history}");
    }

    // The list finds it under my open leads (qualified is open).
    browser.submit("a.mine").await;
    let names = browser
        .eval("return Array.from(document.querySelectorAll('.result-name')).map(e => e.innerText);")
        .await;
    assert_eq!(names, json!(["Joana Ribeiro"]));

    // Signing out: the lead page sends to the sign-in form again.
    browser.submit("form.account button").await;
    assert_eq!(browser.eval("return location.pathname;").await, "/login");
    browser.open(&app.url(&path)).await;
    assert_eq!(browser.eval("return location.pathname;").await, "/login");
}

#[tokio::test]
#[ignore = "needs Chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs them with --include-ignored"]
async fn a_salesperson_clears_a_pair_from_the_queue_and_undoes_the_merge() {
    let app = spawn_app().await;
    let (_, first) = app
        .jivo(&accepted(
            701,
            "701",
            "Maria Garcia",
            Some("maria@example.com"),
            Some("+1 408 498 7001"),
        ))
        .await;
    let (_, second) = app
        .jivo(&accepted(
            702,
            "702",
            "Maria G.",
            Some("mg@example.com"),
            Some("+1 408 498 7002"),
        ))
        .await;
    let (older, newer) = (lead_id(&first), lead_id(&second));
    // One chat gives the first one's email and the second one's phone.
    app.jivo(&accepted(
        703,
        "703",
        "",
        Some("maria@example.com"),
        Some("+1 408 498 7002"),
    ))
    .await;
    let browser = Browser::start().await;
    browser.sign_in(&app, "/duplicates").await;
    let pair = format!("[data-pair='{older}-{newer}']");
    let text = browser
        .eval(&format!(
            "return document.querySelector(\"{pair}\").innerText;"
        ))
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("Maria Garcia") && text.contains("Maria G."),
        "{text}"
    );
    assert!(text.contains("mg@example.com"), "{text}");

    // The preview: keep the newer lead's name.
    browser.submit(&format!("{pair} a.preview")).await;
    assert_eq!(
        browser.eval("return location.pathname;").await,
        json!(format!("/leads/{older}/merge"))
    );
    browser
        .click("tr[data-field=name] input[value=other]")
        .await;
    browser.submit("#update-preview").await;
    let merged = browser
        .eval("return document.querySelector('tr[data-field=name] .merged-value').innerText;")
        .await;
    assert!(merged.as_str().unwrap().starts_with("Maria G."), "{merged}");
    let moves = browser
        .eval("return document.querySelector('#moves').innerText;")
        .await;
    assert!(
        moves.as_str().unwrap().contains("mg@example.com"),
        "{moves}"
    );
    assert_png(&browser.screenshot("merge-preview.png").await);

    // Merge: the survivor's page, with the other lead's contacts.
    browser.submit("#merge-form button").await;
    assert_eq!(
        browser.eval("return location.pathname;").await,
        json!(format!("/leads/{older}"))
    );
    let contacts = browser
        .eval("return document.querySelector('#contacts').innerText;")
        .await;
    assert!(
        contacts.as_str().unwrap().contains("mg@example.com"),
        "{contacts}"
    );
    assert_eq!(
        browser
            .eval("return document.querySelector('#lead-name').innerText;")
            .await,
        "Maria G."
    );
    assert_eq!(
        app.api(&format!("/api/leads/{newer}")).await.1["merged_into"],
        older
    );

    // Unmerge from the survivor's page: both leads as they were.
    browser
        .submit(&format!("button[data-unmerge='{newer}']"))
        .await;
    assert_eq!(
        browser.eval("return location.pathname;").await,
        json!(format!("/leads/{newer}"))
    );
    assert_eq!(
        browser
            .eval("return document.querySelector('#lead-name').innerText;")
            .await,
        "Maria G."
    );
    assert_eq!(app.lead(older).await["name"], "Maria Garcia");
    assert!(
        !app.lead(older).await["emails"]
            .to_string()
            .contains("mg@example.com")
    );
    browser.open(&app.url("/duplicates")).await;
    let queue = browser.text().await;
    assert!(
        queue.contains("Maria G."),
        "the pair is back in the queue: {queue}"
    );
}
