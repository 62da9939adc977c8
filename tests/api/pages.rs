//! The lead pages (`/leads/{id}`, `/leads?q=`): login, headers, escaping,
//! folded leads, search ranking and pages, as HTML over a real socket.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;

/// GETs a page as the sales user without following redirects.
async fn page(app: &TestApp, path: &str) -> (u16, HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(app.url(path))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

/// Where `needle` first appears in `html`, failing the test if it does not.
fn at(html: &str, needle: &str) -> usize {
    html.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the page:\n{html}"))
}

fn assert_page_headers(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn pages_need_sales_credentials_and_webhook_tokens_do_not_open_them() {
    let app = spawn_app().await;
    app.jivo(&fixture("jivo/chat_accepted.json")).await;
    // No credentials at all: to the sign-in form, and back afterwards.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, next) in [
        ("/leads/1", "/leads/1"),
        ("/leads", "/leads"),
        ("/leads?q=john", "/leads%3Fq%3Djohn"),
        ("/leads/999", "/leads/999"),
    ] {
        let r = no_redirects.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], format!("/login?next={next}"));
        assert!(!r.text().await.unwrap().contains("John"), "{path}");
    }
    // Wrong Basic credentials: 401 with a challenge.
    for (user, pass) in [
        ("sales", JIVO_TOKEN),
        (JIVO_TOKEN, JIVO_TOKEN),
        ("sales", ""),
    ] {
        let r = app
            .client
            .get(app.url("/leads/1"))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{user}:{pass}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        assert_page_headers(r.headers());
        assert!(r.text().await.unwrap().contains("Sign in"));
    }
    let (status, headers, _) = page(&app, "/leads/1").await;
    assert_eq!(status, 200);
    assert_page_headers(&headers);
}

#[tokio::test]
async fn the_lead_page_shows_contacts_transcripts_notes_and_history() {
    let app = spawn_app().await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let mut finished = fixture("jivo/chat_finished.json");
    finished["chat"]["messages"] = json!([
        {"message": "Hello, do you ship to Lisbon?", "timestamp": 1665396476, "type": "visitor"},
        {"message": "Yes, in three days.", "timestamp": 1665396483, "type": "agent", "agent_id": 1},
        {"message": "Then I order now", "timestamp": 1665396490, "type": "visitor"}
    ]);
    app.jivo(&finished).await;
    app.jivo(&fixture("jivo/offline_message.json")).await;
    let mut changed = accepted(7700, "2198", "John Smith", None, Some("+1 650 253 0000"));
    changed["event_name"] = "chat_updated".into();
    app.jivo(&changed).await;

    // The page crm_link points at.
    let link = answer["crm_link"].as_str().unwrap();
    let path = link.strip_prefix("http://crm.test").unwrap();
    let (status, headers, html) = page(&app, path).await;
    assert_eq!(status, 200);
    assert_page_headers(&headers);
    at(&html, "<h1 id=\"lead-name\">John Smith</h1>");
    at(&html, "href=\"mailto:email@example.com\"");
    at(&html, "href=\"tel:+14084987855\"");
    at(&html, "href=\"tel:+16502530000\"");
    at(&html, "Description text");
    // The transcript, in order, who said what.
    at(&html, "Jivo chat 7607");
    let first = at(&html, "Hello, do you ship to Lisbon?");
    let second = at(&html, "Yes, in three days.");
    let third = at(&html, "Then I order now");
    assert!(first < second && second < third);
    assert!(at(&html, "class=\"msg agent\"") < second);
    // The offline message as a note, and the history with its delivery.
    at(&html, "offline message · Jivo");
    at(&html, "Message text");
    let history = &html[at(&html, "id=\"history\"")..];
    at(history, "+16502530000");
    at(history, "jivo chat_updated 7700");
    at(history, "(delivery #");
    assert!(!html.contains("<script"), "no script on a page");
    assert!(html.contains("<link rel=\"stylesheet\" href=\"/static/style.css\">"));
}

#[tokio::test]
async fn hostile_names_and_messages_are_shown_as_text() {
    let app = spawn_app().await;
    let hostile = r#"<img src=x onerror="document.title='pwned'">"#;
    let (_, answer) = app
        .jivo(&accepted(
            1,
            "1",
            hostile,
            Some("evil@example.com"),
            Some("+14155550100"),
        ))
        .await;
    let mut finished = fixture("jivo/chat_finished.json");
    finished["chat_id"] = 1.into();
    finished["visitor"] = json!({"number": "1"});
    finished["chat"]["messages"] = json!([
        {"message": "<script>window.pwned=1</script>", "timestamp": 1665396476, "type": "visitor"}
    ]);
    app.jivo(&finished).await;
    let id = lead_id(&answer);
    let escaped = "&#60;img src=x onerror=&#34;document.title=&#39;pwned&#39;&#34;&#62;";
    for path in [format!("/leads/{id}"), "/leads?q=evil@example.com".into()] {
        let (status, _, html) = page(&app, &path).await;
        assert_eq!(status, 200);
        assert!(!html.contains("<img"), "{path}: {html}");
        assert!(!html.contains("<script"), "{path}: {html}");
        at(&html, escaped);
    }
    let (_, _, html) = page(&app, &format!("/leads/{id}")).await;
    at(&html, "&#60;script&#62;window.pwned=1&#60;/script&#62;");
    // The search box echoes the query escaped too.
    let (_, _, html) = page(&app, "/leads?q=%22%3E%3Cscript%3E").await;
    assert!(!html.contains("<script"), "{html}");
    at(&html, "value=\"&#34;&#62;&#60;script&#62;\"");
}

#[tokio::test]
async fn a_folded_leads_page_redirects_to_its_survivor() {
    let app = spawn_app().await;
    let (_, known) = app
        .jivo(&accepted(1, "10", "Known", Some("known@example.com"), None))
        .await;
    let (_, anon) = app.jivo(&accepted(2, "20", "", None, None)).await;
    app.jivo(&accepted(3, "20", "", Some("known@example.com"), None))
        .await;
    let (anon, known) = (lead_id(&anon), lead_id(&known));
    let (status, headers, _) = page(&app, &format!("/leads/{anon}")).await;
    assert_eq!(status, 303);
    let location = headers["location"].to_str().unwrap();
    assert_eq!(location, format!("/leads/{known}?from={anon}"));
    let (status, _, html) = page(&app, location).await;
    assert_eq!(status, 200);
    at(&html, &format!("Lead #{anon} was folded into this lead"));
    at(&html, "lead 2 folded in");
    // A crafted link claims nothing.
    let (_, _, html) = page(&app, &format!("/leads/{known}?from=999")).await;
    assert!(!html.contains("was folded into this lead"));
}

#[tokio::test]
async fn unknown_leads_get_an_html_404_after_the_login() {
    let app = spawn_app().await;
    for path in ["/leads/999", "/leads/abc", "/leads/-1", "/leads/0"] {
        let (status, headers, html) = page(&app, path).await;
        assert_eq!(status, 404, "{path}");
        assert_page_headers(&headers);
        at(&html, "There is no lead here");
    }
    let (status, _, html) = page(&app, "/leads?cursor=zzz").await;
    assert_eq!(status, 400);
    at(&html, "cursor");
    let r = app
        .client
        .get(app.url("/static/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

/// The names in the order the page lists them.
fn listed_names(html: &str) -> Vec<String> {
    html.split("class=\"result-name\"")
        .skip(1)
        .map(|s| {
            let s = &s[s.find('>').unwrap() + 1..];
            s[..s.find('<').unwrap()].to_owned()
        })
        .collect()
}

fn names(r: &Value) -> Vec<&str> {
    r["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test]
async fn search_lists_exact_matches_before_near_ones_in_pages_and_api() {
    let app = spawn_app().await;
    let people = [
        ("John Smith", Some("john@acme.com"), Some("+14084987855")),
        ("Jon Smith", None, None),
        ("Johnny Smithers", None, None),
        ("Mary Brown", Some("mary@acme.com"), None),
    ];
    for (i, (name, email, phone)) in people.into_iter().enumerate() {
        let i = i as u64 + 1;
        app.jivo(&accepted(i, &i.to_string(), name, email, phone))
            .await;
    }
    let (_, _, html) = page(&app, "/leads?q=jon+smith").await;
    assert_eq!(listed_names(&html)[..2], ["Jon Smith", "John Smith"]);
    at(&html, "similar name");
    let (_, json) = app.api("/api/leads?q=jon%20smith").await;
    assert_eq!(names(&json)[..2], ["Jon Smith", "John Smith"]);
    let (_, _, html) = page(&app, "/leads?q=John+Smith").await;
    assert_eq!(listed_names(&html)[..2], ["John Smith", "Jon Smith"]);
    // Phones in any format, emails in any case, a typo in a surname.
    for q in ["(408)%20498-7855", "1%20408%20498%207855", "JOHN@ACME.COM"] {
        let (_, _, html) = page(&app, &format!("/leads?q={q}")).await;
        assert_eq!(listed_names(&html), ["John Smith"], "{q}");
    }
    let (_, _, html) = page(&app, "/leads?q=brwn").await;
    assert_eq!(listed_names(&html), ["Mary Brown"]);
    let (_, _, html) = page(&app, "/leads?q=nobody+here").await;
    assert!(listed_names(&html).is_empty());
    at(&html, "No lead matches");
}

#[tokio::test]
async fn search_pages_are_stable_and_an_empty_query_lists_the_newest() {
    let app = spawn_app().await;
    for i in 1..=25u64 {
        app.jivo(&accepted(
            i,
            &i.to_string(),
            &format!("Person {i:02}"),
            None,
            None,
        ))
        .await;
    }
    let (_, _, html) = page(&app, "/leads").await;
    let first = listed_names(&html);
    assert_eq!(first.len(), 20);
    assert_eq!(first[0], "Person 25");
    let marker = "rel=\"next\" href=\"";
    let next = &html[at(&html, marker) + marker.len()..];
    let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
    // A lead arriving between two pages does not shift the next one.
    app.jivo(&accepted(99, "99", "Person 99", None, None)).await;
    let (_, _, html) = page(&app, &next).await;
    let second = listed_names(&html);
    assert_eq!(
        second,
        [
            "Person 05",
            "Person 04",
            "Person 03",
            "Person 02",
            "Person 01"
        ]
    );
    assert!(!html.contains("rel=\"next\""));
    // The same through the API, with the ranking of a query.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, r) = app
            .api(&format!("/api/leads?q=person&limit=7&cursor={cursor}"))
            .await;
        assert_eq!(status, 200);
        seen.extend(names(&r).into_iter().map(str::to_owned));
        match r["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 26, "no lead twice: {seen:?}");
}
