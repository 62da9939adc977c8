//! What webhooks make of staff's work: a pinned name survives
//! `take_incoming`; the next Jivo answer shows the status, owner and
//! contacts staff set; new leads start in the pipeline's first status; a
//! lead keeps the source of the delivery that created it.

use crm_responder::config::FieldPolicy;
use reqwest::Method;
use serde_json::json;

use super::{jivo_lead, send};
use crate::helpers::*;

#[tokio::test]
async fn a_pinned_name_survives_a_take_incoming_webhook_and_the_history_says_why() {
    let app = spawn_app_with(|config| {
        config.merge.name = FieldPolicy::TakeIncoming;
    })
    .await;
    let pinned = jivo_lead(&app, 1, "Ann Lee", "ann@example.com", None).await;
    let free = jivo_lead(&app, 2, "Bob Ray", "bob@example.com", None).await;
    let r = send(
        &app,
        Method::PATCH,
        &format!("/api/leads/{pinned}"),
        Some(json!({"name": "Ann Lee-Smith"})),
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    let (_, answer) = app
        .jivo(&accepted(3, "1", "Annie", Some("ann@example.com"), None))
        .await;
    assert_eq!(lead_id(&answer), pinned);
    assert_eq!(answer["contact_info"]["name"], "Ann Lee-Smith");
    let lead = app.lead(pinned).await;
    assert_eq!(lead["name"], "Ann Lee-Smith");
    let refused = lead["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["field"] == "name not taken")
        .unwrap_or_else(|| panic!("{}", lead["history"]));
    assert_eq!(refused["new"], "Annie");
    assert_eq!(refused["source"], "jivo chat_accepted 3");
    assert_eq!(
        refused["explanation"]["change"]["rule"],
        "name pinned by staff sales"
    );
    assert!(
        refused["explanation"]["change_text"]
            .as_str()
            .unwrap()
            .contains("pinned by staff sales")
    );
    // The policy still decides for a lead staff did not touch.
    app.jivo(&accepted(
        4,
        "2",
        "Robert Ray",
        Some("bob@example.com"),
        None,
    ))
    .await;
    assert_eq!(app.lead(free).await["name"], "Robert Ray");
}

#[tokio::test]
async fn the_next_chat_accepted_shows_what_staff_set() {
    let app = spawn_app().await;
    let (_, first) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let id = lead_id(&first);
    let path = format!("/api/leads/{id}");
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"status": "qualified", "owner": "sales", "description": "Budget approved"})),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &app,
        Method::POST,
        &format!("{path}/phones"),
        Some(json!({"value": "+1 650 555 0199", "primary": true})),
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    let (status, answer) = app.jivo(&fixture("jivo/chat_updated.json")).await;
    assert_eq!(status, 200);
    assert_eq!(lead_id(&answer), id);
    let rows = answer["custom_data"].as_array().unwrap();
    let row = |title: &str| {
        rows.iter()
            .find(|r| r["title"] == title)
            .unwrap_or_else(|| panic!("no {title} row: {answer}"))["content"]
            .clone()
    };
    assert_eq!(row("Status"), "qualified");
    assert_eq!(row("Owner"), "sales");
    assert_eq!(answer["contact_info"]["phone"], "+1 650 555 0199");
    assert_eq!(answer["contact_info"]["description"], "Budget approved");
    // A lead nobody owns has no Owner row.
    assert!(
        first["custom_data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["title"] != "Owner")
    );
}

#[tokio::test]
async fn new_leads_start_in_the_first_status_of_the_pipeline() {
    let app = spawn_app_with(|config| {
        config.pipeline.statuses = ["fresh", "working", "done"].map(String::from).to_vec();
    })
    .await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let status = answer["custom_data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["title"] == "Status")
        .unwrap()["content"]
        .clone();
    assert_eq!(status, "fresh");
    let id = lead_id(&answer);
    assert_eq!(app.lead(id).await["status"], "fresh");
    let path = format!("/api/leads/{id}");
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"status": "new"})),
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"status": "working"})),
        None,
    )
    .await;
    assert_eq!(r.body["status"], "working");
}

#[tokio::test]
async fn a_leads_source_is_kept_from_the_delivery_that_created_it() {
    let app = spawn_app().await;
    let (_, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let id = lead_id(&answer);
    let expected = json!({"platform": "jivo", "channel": "3948", "department": "Sales",
                          "utm_campaign": "campaign_name", "landing_page": "http://example.com/"});
    assert_eq!(app.lead(id).await["source"], expected);
    // A later delivery from elsewhere changes nothing of it.
    let mut again = fixture("jivo/chat_updated.json");
    again["widget_id"] = "9999".into();
    again["page"] = json!({"url": "https://other.example/?utm_campaign=later"});
    app.jivo(&again).await;
    assert_eq!(app.lead(id).await["source"], expected);

    let (status, answer) = app
        .livechat(&fixture("livechat/v3/incoming_chat.json"))
        .await;
    assert_eq!(status, 200);
    let livechat = answered_lead(&answer);
    assert_eq!(
        app.lead(livechat).await["source"],
        json!({"platform": "livechat", "group": "1", "landing_page": "https://www.livechat.com/"})
    );
    let (status, answer) = app
        .rocketchat(&fixture("rocketchat/LivechatSession.legacy.json"))
        .await;
    assert_eq!(status, 200);
    let rocket = answered_lead(&answer);
    assert_eq!(
        app.lead(rocket).await["source"],
        json!({"platform": "rocketchat", "department": "department"})
    );
    let (_, found) = app.api("/api/leads?platform=livechat").await;
    assert_eq!(each(&found["leads"], "name"), ["Thomas Anderson"]);
}
