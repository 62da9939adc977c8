//! The contract's identity and merge rules, through the Jivo webhook.

use crm_responder::config::{ContactPolicy, DescriptionPolicy, FieldPolicy, Identifier, Primary};
use serde_json::json;

use crate::helpers::*;

/// The seed scenario: the CRM holds email A + phone C; the chat says A + B.
/// Returns the answer's contact_info and the stored lead.
async fn seed_scenario(
    policy: ContactPolicy,
    primary: Primary,
) -> (serde_json::Value, serde_json::Value) {
    let app = spawn_app_with(|c| {
        c.merge.phone = policy;
        c.merge.email = policy;
        c.merge.primary = primary;
    })
    .await;
    let (_, first) = app
        .jivo(&accepted(
            1,
            "100",
            "Seed",
            Some("a@example.com"),
            Some("+1 408-498-7855"),
        ))
        .await;
    let (status, answer) = app
        .jivo(&accepted(
            2,
            "101",
            "Seed",
            Some("a@example.com"),
            Some("+1 650-253-0000"),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(lead_id(&answer), lead_id(&first), "email A finds the lead");
    let lead = app.lead(lead_id(&answer)).await;
    (answer["contact_info"].clone(), lead)
}

const C: &str = "+14084987855";
const B: &str = "+16502530000";

#[tokio::test]
async fn seed_keep_existing_keeps_phone_c() {
    let (info, lead) = seed_scenario(ContactPolicy::KeepExisting, Primary::Existing).await;
    assert_eq!(info["phone"], "+1 408-498-7855");
    assert_eq!(contacts(&lead, "phones"), [(C.to_owned(), true)]);
}

#[tokio::test]
async fn seed_take_incoming_replaces_c_with_b_and_keeps_c_in_history() {
    let (info, lead) = seed_scenario(ContactPolicy::TakeIncoming, Primary::Existing).await;
    assert_eq!(info["phone"], "+1 650-253-0000");
    assert_eq!(contacts(&lead, "phones"), [(B.to_owned(), true)]);
    let history = lead["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["field"] == "phone" && h["old"] == C && h["new"].is_null())
    );
    assert!(
        history.iter().any(|h| h["field"] == "phone"
            && h["new"] == B
            && h["source"] == "jivo chat_accepted 2")
    );
}

#[tokio::test]
async fn seed_keep_both_primary_existing_adds_b_as_secondary() {
    let (info, lead) = seed_scenario(ContactPolicy::KeepBoth, Primary::Existing).await;
    assert_eq!(info["phone"], "+1 408-498-7855");
    assert_eq!(
        contacts(&lead, "phones"),
        [(C.to_owned(), true), (B.to_owned(), false)]
    );
}

#[tokio::test]
async fn seed_keep_both_primary_incoming_makes_b_primary() {
    let (info, lead) = seed_scenario(ContactPolicy::KeepBoth, Primary::Incoming).await;
    assert_eq!(info["phone"], "+1 650-253-0000");
    assert_eq!(
        contacts(&lead, "phones"),
        [(B.to_owned(), true), (C.to_owned(), false)]
    );
}

/// Lead 1 owns the email, lead 2 the phone; a chat brings both.
async fn conflicting(order: Vec<Identifier>) -> (i64, i64, i64, TestApp) {
    let app = spawn_app_with(|c| c.merge.match_order = order).await;
    let (_, one) = app
        .jivo(&accepted(
            1,
            "1",
            "Email Owner",
            Some("e@example.com"),
            None,
        ))
        .await;
    let (_, two) = app
        .jivo(&accepted(
            2,
            "2",
            "Phone Owner",
            None,
            Some("(408) 498-7855"),
        ))
        .await;
    let (status, both) = app
        .jivo(&accepted(
            3,
            "3",
            "Both",
            Some("E@example.com"),
            Some("+14084987855"),
        ))
        .await;
    assert_eq!(status, 200);
    (lead_id(&one), lead_id(&two), lead_id(&both), app)
}

#[tokio::test]
async fn email_first_match_order_picks_the_email_owner_and_links_the_other() {
    let (one, two, chosen, app) = conflicting(vec![Identifier::Email, Identifier::Phone]).await;
    assert_eq!(chosen, one);
    let lead = app.lead(one).await;
    assert_eq!(lead["possible_duplicates"], json!([two]));
    // The phone stays with its owner: identifiers never move.
    assert!(contacts(&lead, "phones").is_empty());
    assert_eq!(
        contacts(&app.lead(two).await, "phones"),
        [(C.to_owned(), true)]
    );
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 2);
}

#[tokio::test]
async fn phone_first_match_order_picks_the_phone_owner() {
    let (one, two, chosen, app) = conflicting(vec![Identifier::Phone, Identifier::Email]).await;
    assert_eq!(chosen, two);
    let lead = app.lead(two).await;
    assert_eq!(lead["possible_duplicates"], json!([one]));
    assert!(contacts(&lead, "emails").is_empty());
}

#[tokio::test]
async fn phone_formats_match_one_another() {
    let app = spawn_app().await;
    let (_, first) = app
        .jivo(&accepted(1, "1", "Fmt", None, Some("+1 408-498-7855")))
        .await;
    for (i, phone) in [
        "1 (408) 498 7855",
        "(408) 498-7855",
        "408.498.7855",
        "+14084987855",
    ]
    .iter()
    .enumerate()
    {
        let (_, answer) = app
            .jivo(&accepted(
                10 + i as u64,
                &format!("v{i}"),
                "Fmt",
                None,
                Some(phone),
            ))
            .await;
        assert_eq!(lead_id(&answer), lead_id(&first), "{phone}");
    }
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
}

#[tokio::test]
async fn empty_or_null_incoming_values_erase_nothing() {
    let app = spawn_app_with(|c| {
        c.merge.name = FieldPolicy::TakeIncoming;
        c.merge.description = DescriptionPolicy::TakeIncoming;
        c.merge.phone = ContactPolicy::TakeIncoming;
        c.merge.email = ContactPolicy::TakeIncoming;
    })
    .await;
    let mut body = accepted(
        1,
        "1",
        "Keep Me",
        Some("keep@example.com"),
        Some("+14084987855"),
    );
    body["visitor"]["description"] = "VIP".into();
    let (_, first) = app.jivo(&body).await;
    let mut empty = accepted(2, "1", "", Some(""), None);
    empty["visitor"]["description"] = "   ".into();
    let (_, answer) = app.jivo(&empty).await;
    assert_eq!(lead_id(&answer), lead_id(&first));
    assert_eq!(
        answer["contact_info"],
        json!({"name": "Keep Me", "email": "keep@example.com", "phone": "+14084987855", "description": "VIP"})
    );
}

#[tokio::test]
async fn name_and_description_policies_apply() {
    let app = spawn_app_with(|c| {
        c.merge.name = FieldPolicy::TakeIncoming;
        c.merge.description = DescriptionPolicy::Append;
    })
    .await;
    let mut body = accepted(1, "1", "Jon", Some("jon@example.com"), None);
    body["visitor"]["description"] = "first".into();
    app.jivo(&body).await;
    body["chat_id"] = 2.into();
    body["visitor"]["name"] = "Jonathan".into();
    body["visitor"]["description"] = "second".into();
    let (_, answer) = app.jivo(&body).await;
    assert_eq!(answer["contact_info"]["name"], "Jonathan");
    assert_eq!(answer["contact_info"]["description"], "first\nsecond");
}

#[tokio::test]
async fn anonymous_lead_is_folded_into_the_lead_owning_its_email() {
    let app = spawn_app().await;
    let (_, known) = app
        .jivo(&accepted(1, "10", "Known", Some("known@example.com"), None))
        .await;
    // A visitor known only by visitor number chats and leaves a transcript.
    let (_, anon) = app.jivo(&accepted(2, "20", "", None, None)).await;
    let anon_id = lead_id(&anon);
    assert_ne!(anon_id, lead_id(&known));
    let mut finished = fixture("jivo/chat_finished.json");
    finished["chat_id"] = 2.into();
    finished["visitor"] = json!({"number": "20"});
    app.jivo(&finished).await;
    // Later the same visitor number gives the known email.
    let (_, answer) = app
        .jivo(&accepted(3, "20", "", Some("known@example.com"), None))
        .await;
    assert_eq!(lead_id(&answer), lead_id(&known));
    let lead = app.lead(lead_id(&known)).await;
    let chats: Vec<_> = lead["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chat_id"].clone())
        .collect();
    assert!(
        chats.contains(&json!("2")),
        "the anonymous lead's conversation moved: {chats:?}"
    );
    let (_, old) = app.api(&format!("/api/leads/{anon_id}")).await;
    assert_eq!(old, json!({"id": anon_id, "merged_into": lead_id(&known)}));
    // The folded lead's visitor number now finds the survivor.
    let (_, again) = app.jivo(&accepted(4, "20", "", None, None)).await;
    assert_eq!(lead_id(&again), lead_id(&known));
}

#[tokio::test]
async fn new_leads_similar_to_existing_ones_are_flagged_not_merged() {
    let app = spawn_app().await;
    let (_, a) = app
        .jivo(&accepted(
            1,
            "1",
            "Johnathan Smith",
            Some("john.smith@acme.com"),
            None,
        ))
        .await;
    let (_, b) = app
        .jivo(&accepted(
            2,
            "2",
            "Jonathan Smith",
            Some("john.smyth@acme.com"),
            None,
        ))
        .await;
    assert_ne!(lead_id(&a), lead_id(&b));
    let lead = app.lead(lead_id(&b)).await;
    assert_eq!(lead["possible_duplicates"], json!([lead_id(&a)]));
    let reason = lead["duplicate_details"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("similar"), "{reason}");
    // The agent sees it beside the chat, linked.
    let (_, again) = app
        .jivo(&accepted(3, "2", "Jonathan Smith", None, None))
        .await;
    let rows = again["custom_data"].as_array().unwrap();
    let dup = rows
        .iter()
        .find(|r| r["title"] == "Possible duplicate")
        .unwrap();
    assert_eq!(
        dup["link"],
        format!("http://crm.test/leads/{}", lead_id(&a))
    );
    // A stranger is not flagged.
    let (_, c) = app
        .jivo(&accepted(
            4,
            "3",
            "Mary Brown",
            Some("mary@other.org"),
            None,
        ))
        .await;
    assert_eq!(
        app.lead(lead_id(&c)).await["possible_duplicates"],
        json!([])
    );
}
