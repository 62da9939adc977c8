//! Staff working a lead through the JSON write API: status, owner, name
//! and description, notes, emails and phones; versions, `If-Match` and
//! conflicts. What webhooks make of it (pins, the next Jivo answer, the
//! pipeline's first status, the lead's source) is in `webhooks.rs`; lists,
//! filters and their query plans in `lists.rs`.

mod lists;
mod webhooks;

use crm_responder::config::Secret;
use crm_responder::staff::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// An answer: status, `ETag`, JSON body.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

/// Sends `method path` with `body` as `user` (the sales password) and
/// `If-Match` when given.
async fn send_as(
    app: &TestApp,
    user: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Answer {
    let mut request = app
        .client
        .request(method, app.url(path))
        .basic_auth(user, Some(SALES_PASSWORD));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, etag, body }
}

/// [`send_as`] the test sales user `sales`.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Answer {
    send_as(app, "sales", method, path, body, if_match).await
}

/// A lead made by a Jivo `chat_accepted`; its id.
async fn jivo_lead(app: &TestApp, chat: u64, name: &str, email: &str, phone: Option<&str>) -> i64 {
    let (status, answer) = app
        .jivo(&accepted(chat, &chat.to_string(), name, Some(email), phone))
        .await;
    assert_eq!(status, 200, "{answer}");
    lead_id(&answer)
}

/// The history entries of `field`, as `(old, new, source)`.
fn entries(lead: &Value, field: &str) -> Vec<(Value, Value, String)> {
    lead["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["field"] == field)
        .map(|h| {
            (
                h["old"].clone(),
                h["new"].clone(),
                h["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn patch_sets_status_owner_name_and_description_as_history_by_the_staff_member() {
    let app = spawn_app().await;
    let id = jivo_lead(&app, 1, "John Smith", "john@example.com", None).await;
    let before = app.lead(id).await;
    assert_eq!(before["status"], "new");
    assert_eq!(before["owner"], Value::Null);
    let version = before["version"].as_i64().unwrap();

    let path = format!("/api/leads/{id}");
    let patch = json!({"status": "contacted", "owner": "sales", "name": "John S.",
                       "description": "Wants a demo"});
    let tag = format!("\"{version}\"");
    let r = send(&app, Method::PATCH, &path, Some(patch.clone()), Some(&tag)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let lead = r.body;
    assert_eq!(lead["status"], "contacted");
    assert_eq!(lead["owner"], "sales");
    assert_eq!(lead["name"], "John S.");
    assert_eq!(lead["description"], "Wants a demo");
    assert_eq!(lead["version"], version + 1, "one edit, one version");
    assert_eq!(r.etag, Some(format!("\"{}\"", version + 1)));
    let by = "staff sales".to_owned();
    assert_eq!(
        entries(&lead, "status"),
        [(json!("new"), json!("contacted"), by.clone())]
    );
    assert_eq!(
        entries(&lead, "owner"),
        [(Value::Null, json!("sales"), by.clone())]
    );
    assert_eq!(
        entries(&lead, "name").last().unwrap(),
        &(json!("John Smith"), json!("John S."), by.clone())
    );
    // The GET answers the same, with the same ETag.
    let r = send(&app, Method::GET, &path, None, None).await;
    assert_eq!(r.etag, Some(format!("\"{}\"", version + 1)));
    assert_eq!(r.body["owner"], "sales");

    // The same values again change nothing, not even the version.
    let r = send(&app, Method::PATCH, &path, Some(patch), None).await;
    assert_eq!((r.status, &r.body["version"]), (200, &json!(version + 1)));
    // Null empties: nobody owns the lead.
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"owner": null})),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["owner"], Value::Null);
    assert_eq!(r.body["version"], version + 2);
    assert_eq!(
        entries(&r.body, "owner").last().unwrap(),
        &(json!("sales"), Value::Null, by)
    );
}

#[tokio::test]
async fn a_staff_note_is_created_and_shown_with_its_author() {
    let app = spawn_app().await;
    let id = jivo_lead(&app, 1, "Ann Lee", "ann@example.com", None).await;
    let path = format!("/api/leads/{id}/notes");
    let r = send(
        &app,
        Method::POST,
        &path,
        Some(json!({"text": " Called back; wants pricing. "})),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let notes = r.body["notes"].as_array().unwrap();
    let note = notes.iter().find(|n| n["platform"] == "staff").unwrap();
    assert_eq!(note["text"], "Called back; wants pricing.");
    assert_eq!(note["author"], "staff sales");
    assert_eq!(note["kind"], "note");
    assert!(note["at"].is_string());
    assert_eq!(
        entries(&r.body, "note"),
        [(
            Value::Null,
            json!("Called back; wants pricing."),
            "staff sales".to_owned()
        )]
    );
    assert_eq!(
        r.etag,
        Some(format!("\"{}\"", r.body["version"].as_i64().unwrap()))
    );
    for bad in [json!({"text": "  "}), json!({"note": "x"}), json!([1])] {
        let r = send(&app, Method::POST, &path, Some(bad.clone()), None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["result"], "error");
    }
}

#[tokio::test]
async fn emails_and_phones_are_added_normalised_made_primary_and_removed() {
    let app = spawn_app().await;
    let id = jivo_lead(
        &app,
        1,
        "Ann Lee",
        "ann@example.com",
        Some("+1 408 498 7855"),
    )
    .await;
    let phones = format!("/api/leads/{id}/phones");
    let r = send(
        &app,
        Method::POST,
        &phones,
        Some(json!({"value": "(408) 555-0100"})),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        contacts(&r.body, "phones"),
        [
            ("+14084987855".into(), true),
            ("+14085550100".into(), false)
        ]
    );
    // The same number written otherwise is the one the lead holds: asked
    // to, it becomes primary.
    let r = send(
        &app,
        Method::POST,
        &phones,
        Some(json!({"value": "408.555.0100", "primary": true})),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        contacts(&r.body, "phones"),
        [
            ("+14085550100".into(), true),
            ("+14084987855".into(), false)
        ]
    );
    assert_eq!(
        entries(&r.body, "primary phone"),
        [(
            json!("+14084987855"),
            json!("+14085550100"),
            "staff sales".into()
        )]
    );
    // Removing the primary: the history keeps it, the oldest left takes over.
    let r = send(
        &app,
        Method::DELETE,
        &format!("{phones}/%2B14085550100"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(contacts(&r.body, "phones"), [("+14084987855".into(), true)]);
    assert!(
        entries(&r.body, "phone").contains(&(
            json!("+14085550100"),
            Value::Null,
            "staff sales".into()
        )),
        "{}",
        r.body["history"]
    );
    assert_eq!(
        entries(&r.body, "primary phone").last().unwrap(),
        &(
            json!("+14085550100"),
            json!("+14084987855"),
            "staff sales".into()
        )
    );
    let r = send(
        &app,
        Method::DELETE,
        &format!("{phones}/%2B19995550100"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    let emails = format!("/api/leads/{id}/emails");
    let r = send(
        &app,
        Method::POST,
        &emails,
        Some(json!({"value": " Ann.Work@Example.COM "})),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let added = r.body["emails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["value"] == "ann.work@example.com")
        .unwrap();
    assert_eq!(added["raw"], "Ann.Work@Example.COM");
    assert_eq!(added["primary"], false);
    // Removed by its value in any case.
    let r = send(
        &app,
        Method::DELETE,
        &format!("{emails}/ANN.WORK%40example.com"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        contacts(&r.body, "emails"),
        [("ann@example.com".into(), true)]
    );
    for (path, value) in [(&emails, "not an email"), (&phones, "12")] {
        let r = send(
            &app,
            Method::POST,
            path,
            Some(json!({ "value": value })),
            None,
        )
        .await;
        assert_eq!(r.status, 400, "{value}: {}", r.body);
    }
}

#[tokio::test]
async fn a_value_another_lead_holds_is_a_409_naming_that_lead() {
    let app = spawn_app().await;
    let ann = jivo_lead(
        &app,
        1,
        "Ann Lee",
        "ann@example.com",
        Some("(408) 498-7855"),
    )
    .await;
    let bob = jivo_lead(&app, 2, "Bob Ray", "bob@example.com", None).await;
    for (kind, value) in [("emails", "ANN@example.com"), ("phones", "+1 408 498 7855")] {
        let r = send(
            &app,
            Method::POST,
            &format!("/api/leads/{bob}/{kind}"),
            Some(json!({ "value": value })),
            None,
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.body["result"], "error");
        assert_eq!(r.body["lead"], ann);
        assert_eq!(r.body["link"], format!("/leads/{ann}"));
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("lead {ann}")),
            "{}",
            r.body
        );
    }
    let lead = app.lead(bob).await;
    assert_eq!(contacts(&lead, "emails").len(), 1);
    assert!(contacts(&lead, "phones").is_empty());
}

#[tokio::test]
async fn a_stale_if_match_is_a_412_and_changes_nothing() {
    let app = spawn_app().await;
    let id = jivo_lead(&app, 1, "Ann Lee", "ann@example.com", None).await;
    let path = format!("/api/leads/{id}");
    let seen = app.lead(id).await["version"].as_i64().unwrap();
    let tag = format!("\"{seen}\"");
    // Someone else edits first.
    let first = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"status": "won"})),
        Some(&tag),
    )
    .await;
    assert_eq!(first.status, 200);
    for (method, path, body) in [
        (Method::PATCH, path.clone(), json!({"status": "lost"})),
        (
            Method::POST,
            format!("{path}/notes"),
            json!({"text": "late"}),
        ),
        (
            Method::POST,
            format!("{path}/phones"),
            json!({"value": "+1 650 555 0100"}),
        ),
    ] {
        let r = send(&app, method, &path, Some(body), Some(&tag)).await;
        assert_eq!(r.status, 412, "{path}: {}", r.body);
        assert_eq!(r.body["version"], seen + 1);
        assert_eq!(r.etag, Some(format!("\"{}\"", seen + 1)));
    }
    let lead = app.lead(id).await;
    assert_eq!(lead["status"], "won");
    assert_eq!(lead["version"], seen + 1);
    assert!(lead["notes"].as_array().unwrap().is_empty());

    // A delivery that changes the lead moves its version too.
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"owner": "sales"})),
        Some(&format!("{}", seen + 1)),
    )
    .await;
    assert_eq!(r.status, 200, "a bare version matches as well");
    let now = r.body["version"].as_i64().unwrap();
    app.jivo(&accepted(
        2,
        "1",
        "Ann Lee",
        Some("ann@example.com"),
        Some("+1 650 555 0100"),
    ))
    .await;
    assert_eq!(app.lead(id).await["version"], now + 1);
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"status": "lost"})),
        Some(&format!("\"{now}\"")),
    )
    .await;
    assert_eq!(r.status, 412);
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"status": "lost"})),
        Some("yesterday"),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn bad_fields_are_400_unknown_leads_404_and_viewers_403() {
    let app = spawn_app_with(|config| {
        let mut viewer = config.sales.users[0].clone();
        viewer.name = "vic".into();
        viewer.password_hash = Secret::new(SALES_HASH);
        viewer.role = Role::Viewer;
        config.sales.users.push(viewer);
    })
    .await;
    let id = jivo_lead(&app, 1, "Ann Lee", "ann@example.com", None).await;
    let path = format!("/api/leads/{id}");
    for (body, says) in [
        (json!({"status": "maybe"}), "status must be one of"),
        (json!({"status": null}), "status must be one of"),
        (json!({"owner": "nobody"}), "owner must be one of"),
        // A viewer may not work leads, so may not own one.
        (json!({"owner": "vic"}), "owner must be one of"),
        (json!({"colour": "red"}), "unknown field"),
        (json!({"name": 5}), "body"),
    ] {
        let r = send(&app, Method::PATCH, &path, Some(body.clone()), None).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains(says),
            "{body}: {}",
            r.body
        );
    }
    let version = app.lead(id).await["version"].clone();
    let r = send(
        &app,
        Method::PATCH,
        "/api/leads/9999",
        Some(json!({"status": "won"})),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send(
        &app,
        Method::POST,
        "/api/leads/9999/notes",
        Some(json!({"text": "x"})),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send_as(
        &app,
        "vic",
        Method::PATCH,
        &path,
        Some(json!({"status": "won"})),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = send_as(&app, "vic", Method::GET, &path, None, None).await;
    assert_eq!(r.status, 200, "a viewer reads");
    assert_eq!(app.lead(id).await["version"], version, "nothing changed");
}
