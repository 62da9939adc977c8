//! Working a lead through its pages, as a browser without script would:
//! the forms' per-field stale check (409 with the current value), CSRF
//! (403 and nothing changed), viewers (no forms, 403), and the list's
//! filters and counts. Over a real socket, on either store.

use crate::helpers::*;

/// A browser-like client: keeps cookies, does not follow redirects.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client signed in as `name` (password [`SALES_PASSWORD`]).
pub(crate) async fn signed_in(app: &TestApp, name: &str) -> reqwest::Client {
    let client = client();
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("name", name),
            ("password", SALES_PASSWORD),
            ("next", "/leads"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{name} signs in");
    client
}

/// GETs a page: status and HTML.
pub(crate) async fn get(app: &TestApp, client: &reqwest::Client, path: &str) -> (u16, String) {
    let r = client.get(app.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// POSTs a form: status, `Location` and HTML.
pub(crate) async fn post(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let r = client
        .post(app.url(path))
        .form(fields)
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (r.status().as_u16(), location, r.text().await.unwrap())
}

/// The value of the first hidden input named `name` on a page.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in the page:\n{html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// A lead made by a Jivo chat; its id.
async fn lead(app: &TestApp, chat: u64, name: &str, email: &str) -> i64 {
    let (status, answer) = app
        .jivo(&accepted(chat, &chat.to_string(), name, Some(email), None))
        .await;
    assert_eq!(status, 200, "{answer}");
    lead_id(&answer)
}

fn status_of(app: &TestApp, id: i64) -> String {
    app.sql(&format!("SELECT status FROM leads WHERE id = {id}"))
}

#[tokio::test]
async fn a_stale_form_gets_409_with_the_current_value_and_untouched_fields_still_apply() {
    let app = spawn_app().await;
    let id = lead(&app, 1, "Ann Lee", "ann@example.com").await;
    let path = format!("/leads/{id}");
    let ann = signed_in(&app, "sales").await;
    let bob = signed_in(&app, "sales").await;
    let (_, page) = get(&app, &ann, &path).await;
    let csrf = hidden(&page, "csrf");
    let version = hidden(&page, "version");
    assert_eq!(hidden(&page, "was_status"), "new");
    let (_, bob_page) = get(&app, &bob, &path).await;
    let bob_csrf = hidden(&bob_page, "csrf");

    // Bob moves it on first.
    let (status, location, _) = post(
        &app,
        &bob,
        &format!("{path}/edit"),
        &[
            ("csrf", &bob_csrf),
            ("version", &version),
            ("was_status", "new"),
            ("status", "contacted"),
        ],
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some(path.as_str())));

    // Ann's page still says "new": her change is refused, the page shows
    // the current value.
    let (status, _, html) = post(
        &app,
        &ann,
        &format!("{path}/edit"),
        &[
            ("csrf", &csrf),
            ("version", &version),
            ("was_status", "new"),
            ("status", "won"),
        ],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("someone else changed the status"), "{html}");
    assert!(html.contains("“contacted”"), "{html}");
    assert!(
        html.contains(r#"<option value="contacted" selected>"#),
        "{html}"
    );
    assert_eq!(hidden(&html, "was_status"), "contacted");
    assert_eq!(status_of(&app, id), "contacted");

    // A field nobody else touched applies, though the version moved.
    let (status, _, html) = post(
        &app,
        &ann,
        &format!("{path}/edit"),
        &[
            ("csrf", &csrf),
            ("version", &version),
            ("was_name", "Ann Lee"),
            ("name", "Ann B. Lee"),
            ("was_description", ""),
            ("description", ""),
        ],
    )
    .await;
    assert_eq!(status, 303, "{html}");
    let (_, page) = get(&app, &ann, &path).await;
    assert!(page.contains("Ann B. Lee"), "{page}");
    assert!(
        page.contains("staff sales"),
        "the history names who: {page}"
    );

    // A value another lead holds: 409, with a link to it.
    let other = lead(&app, 2, "Bo", "bo@example.com").await;
    let (status, _, html) = post(
        &app,
        &ann,
        &format!("{path}/emails"),
        &[("csrf", &csrf), ("value", "BO@example.com")],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(
        html.contains(&format!(r#"<a href="/leads/{other}">"#)),
        "{html}"
    );
    // A bad value: 400 with a message.
    let (status, _, html) = post(
        &app,
        &ann,
        &format!("{path}/phones"),
        &[("csrf", &csrf), ("value", "not a phone")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("is not a phone number"), "{html}");
}

#[tokio::test]
async fn a_cross_site_form_changes_nothing() {
    let app = spawn_app().await;
    let id = lead(&app, 3, "Cy", "cy@example.com").await;
    let path = format!("/leads/{id}");
    let client = signed_in(&app, "sales").await;
    let (_, page) = get(&app, &client, &path).await;
    let csrf = hidden(&page, "csrf");
    let history: i64 = app.sql(&format!("SELECT version FROM leads WHERE id = {id}"));
    let fields = [("was_status", "new"), ("status", "won")];
    // Another site's page, even with the token (it cannot have it, but
    // the Origin alone refuses).
    let r = client
        .post(app.url(&format!("{path}/edit")))
        .header("origin", "https://evil.example")
        .form(&[fields[0], fields[1], ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No token, or a wrong one.
    for token in [None, Some("forged")] {
        let mut form = fields.to_vec();
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let (status, _, _) = post(&app, &client, &format!("{path}/edit"), &form).await;
        assert_eq!(status, 403, "csrf {token:?}");
        let (status, _, _) = post(
            &app,
            &client,
            &format!("{path}/notes"),
            &[("text", "from elsewhere")],
        )
        .await;
        assert_eq!(status, 403);
    }
    assert_eq!(status_of(&app, id), "new");
    let after: i64 = app.sql(&format!("SELECT version FROM leads WHERE id = {id}"));
    assert_eq!(after, history, "nothing changed");
    // Without a session at all: to the sign-in form, back to the lead.
    let (status, location, _) = post(&app, &self::client(), &format!("{path}/take"), &[]).await;
    assert_eq!(status, 303);
    assert_eq!(location.unwrap(), format!("/login?next=/leads/{id}"));
}

#[tokio::test]
async fn a_viewer_sees_no_forms_and_cannot_post() {
    let app = spawn_app_with(|config| {
        let mut viewer = config.sales.users[0].clone();
        viewer.name = "vic".into();
        viewer.role = crm_responder::staff::Role::Viewer;
        config.sales.users.push(viewer);
    })
    .await;
    let id = lead(&app, 4, "Di", "di@example.com").await;
    let path = format!("/leads/{id}");
    let vic = signed_in(&app, "vic").await;
    let (status, page) = get(&app, &vic, &path).await;
    assert_eq!(status, 200);
    assert!(page.contains("Di"), "{page}");
    assert!(!page.contains(&format!("action=\"{path}/")), "{page}");
    assert!(!page.contains("id=\"work\""), "{page}");
    // The sign-out form's token is the session's.
    let csrf = hidden(&page, "csrf");
    let (status, _, _) = post(
        &app,
        &vic,
        &format!("{path}/take"),
        &[("csrf", &csrf), ("was_owner", "")],
    )
    .await;
    assert_eq!(status, 403);
    let owner: Option<String> = app.sql(&format!("SELECT owner FROM leads WHERE id = {id}"));
    assert_eq!(owner, None);
    // A sales user gets the forms.
    let sales = signed_in(&app, "sales").await;
    let (_, page) = get(&app, &sales, &path).await;
    assert!(page.contains(&format!("action=\"{path}/edit\"")), "{page}");
}

#[tokio::test]
async fn the_list_filters_counts_and_pages_keeping_its_filters() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..24u64 {
        ids.push(
            lead(
                &app,
                100 + i,
                &format!("Lead {i}"),
                &format!("l{i}@example.com"),
            )
            .await,
        );
    }
    // Three contacted, of which two are sales's; one won.
    for id in &ids[..3] {
        app.execute(
            &format!("UPDATE leads SET status = 'contacted' WHERE id = {id}"),
            &[],
        );
    }
    for id in &ids[..2] {
        app.execute(
            &format!("UPDATE leads SET owner = 'sales' WHERE id = {id}"),
            &[],
        );
    }
    app.execute(
        &format!("UPDATE leads SET status = 'won' WHERE id = {}", ids[3]),
        &[],
    );
    let client = signed_in(&app, "sales").await;

    let (status, html) = get(&app, &client, "/leads").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"href="/leads?status=contacted" data-status="contacted">contacted <span class="n">3</span>"#), "{html}");
    assert!(
        html.contains(r#"data-status="new">new <span class="n">20</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-status="lost">lost <span class="n">0</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"all <span class="n">24</span>"#), "{html}");
    assert!(
        html.contains(r#"href="/leads?owner=me&amp;open=1">My open leads<"#),
        "the header's link to my open leads"
    );

    let (_, html) = get(&app, &client, "/leads?status=contacted&owner=me").await;
    assert_eq!(html.matches("class=\"result-name\"").count(), 2, "{html}");
    assert!(
        html.contains("Lead 0") && html.contains("Lead 1") && !html.contains("Lead 2<"),
        "{html}"
    );
    // Counts under the owner filter; the status links keep it.
    assert!(html.contains(r#"href="/leads?status=new&#38;owner=me" data-status="new">new <span class="n">0</span>"#), "{html}");
    assert!(html.contains(r#"<option value="me" selected>"#), "{html}");

    let (_, html) = get(
        &app,
        &client,
        "/leads?owner=none&status=&platform=jivo&created_since=",
    )
    .await;
    assert_eq!(
        html.matches("class=\"result-name\"").count(),
        20,
        "a page of twenty"
    );
    assert!(
        html.contains(r#"data-status="contacted">contacted <span class="n">1</span>"#),
        "{html}"
    );
    let marker = "rel=\"next\" href=\"";
    let start = html.find(marker).unwrap_or_else(|| panic!("{html}")) + marker.len();
    let next = html[start..start + html[start..].find('"').unwrap()].replace("&#38;", "&");
    assert!(
        next.starts_with("/leads?owner=none&platform=jivo&cursor="),
        "{next}"
    );
    let (_, html) = get(&app, &client, &next).await;
    assert_eq!(html.matches("class=\"result-name\"").count(), 2, "{html}");
    assert!(!html.contains("rel=\"next\""));

    // Created since tomorrow: nothing; a malformed day: a 400 page.
    let tomorrow = time::OffsetDateTime::now_utc().date().next_day().unwrap();
    let (_, html) = get(&app, &client, &format!("/leads?created_since={tomorrow}")).await;
    assert!(html.contains("No lead under these filters."), "{html}");
    let (status, _) = get(&app, &client, "/leads?created_since=someday").await;
    assert_eq!(status, 400);
    // With a search.
    let (_, html) = get(&app, &client, "/leads?q=l2%40example.com&status=contacted").await;
    assert_eq!(html.matches("class=\"result-name\"").count(), 1, "{html}");
}
