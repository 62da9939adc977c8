//! The LiveChat webhook, v2 and v3 envelopes, fixture by fixture, the shapes
//! real deliveries take, and its delivery guarantees.

use serde_json::{Value, json};

use crate::helpers::*;

/// A v2 `chat_ended`, assembled from the documented `chat` and `visitor` types.
fn chat_ended() -> Value {
    let mut body = fixture("livechat/v2/chat_changed.json");
    body["event_type"] = "chat_ended".into();
    body["chat"]["agents"] = json!([{"name": "Gregory", "login": "agent.gregory@email.com"}]);
    body["chat"]["messages"].as_array_mut().unwrap().push(
        json!({"user_type": "agent", "author_name": "Gregory", "text": "Fine, thanks",
                     "timestamp": 1358937670}),
    );
    body
}

#[tokio::test]
async fn v2_chat_started_fixture_creates_the_lead() {
    let app = spawn_app().await;
    let (status, answer) = app
        .livechat(&fixture("livechat/v2/chat_started.json"))
        .await;
    assert_eq!(status, 200);
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(lead["name"], "John");
    assert_eq!(
        contacts(&lead, "emails"),
        [("john.smith@gmail.com".to_owned(), true)]
    );
    assert_eq!(
        lead["visitor_ids"],
        json!(["livechat:visitor:S1354547427.0c151b0e1b"])
    );
}

#[tokio::test]
async fn v2_queued_changed_and_ticket_fixtures_build_one_lead() {
    let app = spawn_app().await;
    let (status, answer) = app
        .livechat(&fixture("livechat/v2/visitor_queued.json"))
        .await;
    assert_eq!(status, 200);
    let id = answered_lead(&answer);
    let lead = app.lead(id).await;
    assert_eq!(lead["custom_fields"], json!({"Customer ID": "POQ51023XZA"}));
    assert!(history_has(&lead, "event", "visitor queued"));

    let (status, answer) = app
        .livechat(&fixture("livechat/v2/chat_changed.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answered_lead(&answer), id);
    let lead = app.lead(id).await;
    assert_eq!(lead["tags"], json!(["feedback", "sales", "support"]));
    assert_eq!(lead["conversations"][0]["chat_id"], "MH022RD0K5");

    let (status, answer) = app
        .livechat(&fixture("livechat/v2/ticket_created.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answered_lead(&answer), id);
    let lead = app.lead(id).await;
    let note = &lead["notes"][0];
    assert_eq!(note["kind"], "ticket");
    assert_eq!(note["platform"], "livechat");
    assert_eq!(note["text"], "Welcome\n\nHow are you?");
    assert_eq!(note["at"], "2014-08-18T10:05:05.000Z");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
}

#[tokio::test]
async fn v2_chat_ended_stores_the_transcript_once_for_ten_deliveries() {
    let app = spawn_app().await;
    let body = chat_ended();
    let (status, first) = app.livechat(&body).await;
    assert_eq!(status, 200);
    let id = answered_lead(&first);
    let before = app.lead(id).await;
    let chat = &before["conversations"][0];
    assert_eq!(chat["closed"], true);
    assert_eq!(chat["agent"], "Gregory");
    let said: Vec<(&str, &str)> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [("visitor", "How are you?"), ("agent", "Fine, thanks")]
    );
    for _ in 0..9 {
        let (status, again) = app.livechat(&body).await;
        assert_eq!(status, 200);
        assert_eq!(again, first);
    }
    assert_eq!(app.lead(id).await, before);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 2);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 1);
}

#[tokio::test]
async fn v2_pre_chat_survey_answers_complete_the_visitor() {
    let app = spawn_app().await;
    let body = json!({
        "event_type": "chat_started", "token": "api-token", "license_id": 1025707,
        "chat": {"id": "CHAT1", "messages": [], "agents": [{"name": "Gregory"}]},
        "visitor": {"id": "S1.x", "name": "Client", "email": null},
        "pre_chat_survey": [
            {"id": "2001", "type": "name", "label": "Name:", "answer": "Lena Park"},
            {"id": "2002", "type": "email", "label": "E-mail:", "answer": "lena@example.com"},
            {"id": "2003", "type": "question", "label": "Your phone", "answer": "(408) 498-7855"},
            {"id": "2004", "type": "question", "label": "Question", "answer": "Pricing?"}
        ]
    });
    let (status, answer) = app.livechat(&body).await;
    assert_eq!(status, 200, "{answer}");
    let lead = app.lead(answered_lead(&answer)).await;
    // The visitor's own name comes first; the survey fills what is missing.
    assert_eq!(lead["name"], "Client");
    assert_eq!(
        contacts(&lead, "emails"),
        [("lena@example.com".to_owned(), true)]
    );
    assert_eq!(
        contacts(&lead, "phones"),
        [("+14084987855".to_owned(), true)]
    );
    assert_eq!(lead["conversations"][0]["agent"], "Gregory");
}

#[tokio::test]
async fn v3_incoming_chat_fixture_creates_the_lead_with_its_thread() {
    let app = spawn_app().await;
    let (status, answer) = app
        .livechat_with(&fixture("livechat/v3/incoming_chat.json"), None)
        .await;
    assert_eq!(status, 200, "{answer}");
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(lead["name"], "Thomas Anderson");
    assert_eq!(
        contacts(&lead, "emails"),
        [("t.anderson@example.com".to_owned(), true)]
    );
    assert_eq!(
        contacts(&lead, "phones"),
        [("+18008529001".to_owned(), true)]
    );
    assert_eq!(
        lead["custom_fields"],
        json!({"custom_key": "custom_value", "another_custom_key": "another_custom_value"})
    );
    assert_eq!(lead["tags"], json!(["sales"]));
    assert_eq!(
        lead["visitor_ids"],
        json!(["livechat:customer:b7eff798-f8df-4364-8059-649c35c9ed0c"])
    );
    let chat = &lead["conversations"][0];
    assert_eq!(chat["chat_id"], "PJ0MRSHTDG");
    assert_eq!(chat["agent"], "Agent Smith");
    assert_eq!(chat["closed"], false);
    let said: Vec<(&str, &str)> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(said, [("visitor", "Hello there"), ("visitor", "Thank you")]);
    // The secret travels in the body; the stored lead never shows it.
    assert!(!lead.to_string().contains(LIVECHAT_SECRET));
}

#[tokio::test]
async fn v3_incoming_event_appends_and_chat_deactivated_closes() {
    let app = spawn_app().await;
    let (_, answer) = app
        .livechat_with(&fixture("livechat/v3/incoming_chat.json"), None)
        .await;
    let id = answered_lead(&answer);

    // The fixture's event repeats an id already in the thread: stored once.
    let event = fixture("livechat/v3/incoming_event.json");
    let (status, again) = app.livechat_with(&event, None).await;
    assert_eq!(status, 200);
    assert_eq!(answered_lead(&again), id);
    let mut new_event = event.clone();
    new_event["payload"]["event"]["id"] = "new-event-1".into();
    new_event["payload"]["event"]["created_at"] = "2017-10-12T15:20:00.000000Z".into();
    new_event["payload"]["event"]["text"] = "and one more thing".into();
    let (status, _) = app.livechat_with(&new_event, None).await;
    assert_eq!(status, 200);
    let lead = app.lead(id).await;
    let messages = lead["conversations"][0]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2]["text"], "and one more thing");
    assert_eq!(messages[2]["from"], "visitor");

    let deactivated = fixture("livechat/v3/chat_deactivated.json");
    for _ in 0..10 {
        let (status, answer) = app.livechat_with(&deactivated, None).await;
        assert_eq!(status, 200);
        assert_eq!(answered_lead(&answer), id);
    }
    let lead = app.lead(id).await;
    assert_eq!(lead["conversations"][0]["closed"], true);
    assert_eq!(
        lead["conversations"][0]["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(history_has(&lead, "event", "chat closed"));
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM deliveries WHERE event = 'chat_deactivated'"),
        1
    );
}

#[tokio::test]
async fn v3_redelivered_incoming_chat_stores_one_transcript() {
    let app = spawn_app().await;
    let body = fixture("livechat/v3/incoming_chat.json");
    let (_, first) = app.livechat_with(&body, None).await;
    let before = app.lead(answered_lead(&first)).await;
    for _ in 0..9 {
        let (status, again) = app.livechat_with(&body, None).await;
        assert_eq!((status, &again), (200, &first));
    }
    assert_eq!(app.lead(answered_lead(&first)).await, before);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 2);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 1);
}

#[tokio::test]
async fn v3_messy_shapes_are_accepted() {
    let app = spawn_app().await;
    // license_id instead of organization_id (before v3.5), numbers for ids,
    // no phone, unknown keys, threads as a list (before v3.3).
    let body = json!({
        "webhook_id": 99, "secret_key": LIVECHAT_SECRET, "action": "incoming_chat",
        "license_id": 1025707, "brand_new": [1, 2],
        "payload": {"chat": {"id": 4242, "users": [
            {"id": 17, "type": "customer", "name": "Old Api", "email": "old.api@example.com",
             "session_fields": null},
            {"id": "agent@example.com", "type": "agent", "name": null}],
          "threads": [{"id": "T1", "events": [
            {"id": 1, "type": "message", "author_id": 17, "text": "hi", "created_at": "2020-01-01T00:00:00Z"},
            {"id": 2, "type": "system_message", "text": "chat started"},
            {"id": 3, "type": "message", "author_id": "agent@example.com", "text": "hello",
             "created_at": "2020-01-01T00:00:05Z"}]}]}}
    });
    let (status, answer) = app.livechat_with(&body, None).await;
    assert_eq!(status, 200, "{answer}");
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(
        contacts(&lead, "emails"),
        [("old.api@example.com".to_owned(), true)]
    );
    assert!(lead["phones"].as_array().unwrap().is_empty());
    let chat = &lead["conversations"][0];
    assert_eq!(chat["chat_id"], "4242");
    assert_eq!(chat["agent"], "agent@example.com");
    let from = each(&chat["messages"], "from");
    assert_eq!(from, ["visitor", "agent"]);

    // Actions we do not act on are stored and acknowledged.
    let other = json!({"webhook_id": "w", "secret_key": LIVECHAT_SECRET,
                       "action": "chat_access_updated", "payload": {"id": "x"}});
    let (status, answer) = app.livechat_with(&other, None).await;
    assert_eq!((status, answer), (200, json!({"result": "ok"})));
    // Closing a chat nobody knows makes no lead.
    let mut unknown = fixture("livechat/v3/chat_deactivated.json");
    unknown["payload"]["chat_id"] = "NEVER-SEEN".into();
    let (status, answer) = app.livechat_with(&unknown, None).await;
    assert_eq!((status, answer), (200, json!({"result": "ok"})));
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 3);
}

#[tokio::test]
async fn wrong_credentials_or_secret_are_401_and_store_nothing() {
    let app = spawn_app().await;
    let v2 = fixture("livechat/v2/chat_started.json");
    for basic in [
        None,
        Some((LIVECHAT_USER, "wrong")),
        Some(("someone", LIVECHAT_PASSWORD)),
    ] {
        let (status, error) = app.livechat_with(&v2, basic).await;
        assert_eq!(status, 401, "{basic:?}");
        assert_eq!(error["result"], "error");
    }
    let mut v3 = fixture("livechat/v3/incoming_chat.json");
    v3["secret_key"] = "wrong".into();
    // v3 is judged by its own secret, whatever Basic credentials come along.
    let (status, _) = app.livechat(&v3).await;
    assert_eq!(status, 401);
    v3.as_object_mut().unwrap().remove("secret_key");
    let (status, _) = app.livechat_with(&v3, None).await;
    assert_eq!(status, 401);
    // A body that is not JSON cannot prove anything without Basic credentials.
    let r = app.post_raw("/webhooks/livechat", "not json").await;
    assert_eq!(r.status(), 401);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 0);
}

#[tokio::test]
async fn authenticated_bodies_of_no_known_envelope_are_400_and_kept() {
    let app = spawn_app().await;
    let (status, error) = app.livechat(&json!({"hello": "world"})).await;
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("LiveChat"));
    let r = app
        .client
        .post(app.url("/webhooks/livechat"))
        .basic_auth(LIVECHAT_USER, Some(LIVECHAT_PASSWORD))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM deliveries WHERE status = 'failed'"),
        2
    );
}
