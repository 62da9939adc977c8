//! The Jivo webhook, fixture by fixture, and its delivery guarantees.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn chat_accepted_fixture_gets_the_full_answer() {
    let app = spawn_app().await;
    let (status, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["result"], "ok");
    assert_eq!(answer["enable_assign"], true);
    let id = lead_id(&answer);
    assert_eq!(answer["crm_link"], format!("http://crm.test/leads/{id}"));
    assert_eq!(
        answer["contact_info"],
        json!({"name": "John Smith", "phone": "+14084987855", "email": "email@example.com",
               "description": "Description text"})
    );
    let rows = answer["custom_data"].as_array().unwrap();
    assert!((1..=10).contains(&rows.len()));
    assert_eq!(rows[0]["title"], "Lead");
    assert_eq!(rows[0]["link"], answer["crm_link"]);
    assert!(
        rows.iter()
            .all(|r| r["title"].is_string() && r["content"].is_string())
    );
    assert!(
        rows[1..].iter().all(|r| r.get("link").is_none()),
        "only linkable rows have a link"
    );
}

#[tokio::test]
async fn chat_updated_fixture_answers_the_same_lead_with_its_history() {
    let app = spawn_app().await;
    let (_, first) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let (status, answer) = app.jivo(&fixture("jivo/chat_updated.json")).await;
    assert_eq!(status, 200);
    assert_eq!(lead_id(&answer), lead_id(&first));
    let rows = answer["custom_data"].as_array().unwrap();
    let chats = rows.iter().find(|r| r["title"] == "Chats").unwrap();
    assert_eq!(chats["content"], "2");
    let last = rows.iter().find(|r| r["title"] == "Last chat").unwrap();
    assert!(last["content"].as_str().unwrap().contains("jivo 7636"));
}

#[tokio::test]
async fn every_other_jivo_fixture_is_stored_and_answered_ok() {
    let app = spawn_app().await;
    for name in [
        "chat_finished",
        "offline_message",
        "client_updated",
        "call_event",
    ] {
        let (status, answer) = app.jivo(&fixture(&format!("jivo/{name}.json"))).await;
        assert_eq!((status, &answer), (200, &json!({"result": "ok"})), "{name}");
    }
    let (status, answer) = app
        .jivo(&json!({"event_name": "chat_assigned", "chat_id": 5}))
        .await;
    assert_eq!((status, answer), (200, json!({"result": "ok"})));
    let (status, answer) = app
        .jivo(&json!({"event_name": "brand_new_event", "x": [1]}))
        .await;
    assert_eq!((status, answer), (200, json!({"result": "ok"})));
    let stored: i64 = app.sql("SELECT count(*) FROM deliveries WHERE status = 'applied'");
    assert_eq!(stored, 6);

    // chat_finished, offline_message and call_event share email@example.com: one lead.
    let (_, found) = app.api("/api/leads?email=EMAIL@example.com").await;
    let leads = found["leads"].as_array().unwrap();
    assert_eq!(leads.len(), 1);
    let lead = &leads[0];
    assert_eq!(lead["conversations"][0]["chat_id"], "7607");
    assert_eq!(
        lead["conversations"][0]["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(lead["conversations"][0]["messages"][0]["from"], "visitor");
    assert_eq!(lead["notes"][0]["text"], "Message text");
    assert_eq!(lead["notes"][0]["kind"], "offline_message");
    // client_updated is another visitor (Thomas).
    let (_, thomas) = app.api("/api/leads?email=thomas@gmail.com").await;
    assert_eq!(thomas["leads"][0]["phones"][0]["value"], "+458745457845");
}

#[tokio::test]
async fn redelivered_chat_finished_stores_one_transcript() {
    let app = spawn_app().await;
    let body = fixture("jivo/chat_finished.json");
    for _ in 0..10 {
        let (status, _) = app.jivo(&body).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM conversations"), 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 2);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
    let history: i64 = app.sql("SELECT count(*) FROM history");
    // A transcript of the same chat re-sent with other metadata adds no message.
    let mut changed = body.clone();
    changed["visitor"]["chats_count"] = 3.into();
    app.jivo(&changed).await;
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 2);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM history"), history);
}

#[tokio::test]
async fn redelivered_chat_accepted_answers_the_same_without_changing_anything() {
    let app = spawn_app().await;
    let body = fixture("jivo/chat_accepted.json");
    let (_, first) = app.jivo(&body).await;
    let history: i64 = app.sql("SELECT count(*) FROM history");
    let (status, again) = app.jivo(&body).await;
    assert_eq!(status, 200);
    assert_eq!(again["crm_link"], first["crm_link"]);
    assert_eq!(again["contact_info"], first["contact_info"]);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM history"), history);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 1);
}

#[tokio::test]
async fn fifty_concurrent_chat_accepted_for_one_new_visitor_make_one_lead() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        // Same person, phone written differently, different chats.
        let phone = ["+1 408-498-7855", "(408) 498-7855", "1 (408) 498 7855"][i as usize % 3];
        let body = accepted(
            9000 + i,
            "555",
            "Race Visitor",
            Some("race@example.com"),
            Some(phone),
        );
        let client = app.client.clone();
        let url = app.url(&format!("/webhooks/jivo/{JIVO_TOKEN}"));
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let (status, answer) = t.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        ids.push(lead_id(&answer));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same lead");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM lead_phones"), 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM conversations"), 50);
}

#[tokio::test]
async fn tolerant_parsing_of_real_jivo_shapes() {
    let app = spawn_app().await;
    // Numeric ids, a 13-digit offline_message_id, nulls where objects were documented,
    // unknown keys, a phone in local format.
    let body = json!({
        "event_name": "chat_accepted", "chat_id": "123", "widget_id": 3948,
        "user_token": "tok-1", "visitor": {"name": "Ann Lee", "number": 77, "phone": "(408) 555-0199",
        "email": null, "social": null, "chats_count": "2"},
        "agent": {"id": 2016, "name": "Tom"}, "analytics": null, "organization": null,
        "assigned_agent": null, "department": null, "tags": null, "brand_new": {"nested": [1, 2]}
    });
    let (status, answer) = app.jivo(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["contact_info"]["phone"], "(408) 555-0199");
    let lead = app.lead(lead_id(&answer)).await;
    assert_eq!(
        contacts(&lead, "phones"),
        [("+14085550199".to_owned(), true)]
    );
    let ids = lead["visitor_ids"].as_array().unwrap();
    assert!(ids.contains(&json!("jivo:number:77")) && ids.contains(&json!("jivo:token:tok-1")));

    // The same visitor known only by user_token later: same lead.
    let body = json!({"event_name": "chat_updated", "chat_id": 124, "user_token": "tok-1",
                      "visitor": {"name": "Ann Lee"}});
    let (_, again) = app.jivo(&body).await;
    assert_eq!(lead_id(&again), lead_id(&answer));

    let body = json!({"event_name": "offline_message", "offline_message_id": 1665399500726i64,
                      "message": "call me", "visitor": {"email": "Ann@Example.com", "number": "77"}});
    let (status, _) = app.jivo(&body).await;
    assert_eq!(status, 200);
    let lead = app.lead(lead_id(&answer)).await;
    assert_eq!(lead["notes"][0]["text"], "call me");
    assert_eq!(lead["notes"][0]["at"], "2022-10-10T10:58:20.000Z");
    assert_eq!(
        contacts(&lead, "emails"),
        [("ann@example.com".to_owned(), true)]
    );
}

#[tokio::test]
async fn unparseable_authenticated_bodies_are_kept_as_failed() {
    let app = spawn_app().await;
    let path = format!("/webhooks/jivo/{JIVO_TOKEN}");
    for body in ["not json", "[1,2,3]", r#"{"visitor": {}}"#] {
        let r = app.post_raw(&path, body).await;
        assert_eq!(r.status(), 400, "{body}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["result"], "error");
        assert!(error["error"].as_str().unwrap().len() > 5);
    }
    // A retry of the same bad body is kept once.
    app.post_raw(&path, "not json").await;
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM deliveries WHERE status = 'failed'"),
        3
    );
    assert_eq!(
        app.sql::<Vec<u8>>("SELECT body FROM deliveries WHERE id = 1"),
        b"not json"
    );
}
