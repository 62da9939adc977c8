//! The Rocket.Chat webhook, fixture by fixture, the shapes real servers
//! send, and its delivery guarantees.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn livechat_session_fixture_stores_the_transcript_on_the_visitors_lead() {
    let app = spawn_app().await;
    let (status, answer) = app
        .rocketchat(&fixture("rocketchat/LivechatSession.json"))
        .await;
    assert_eq!(status, 200);
    let id = answered_lead(&answer);
    assert_eq!(answer["data"]["lead_id"], id);
    let lead = app.lead(id).await;
    assert_eq!(lead["name"], "James");
    assert_eq!(
        contacts(&lead, "emails"),
        [("abc.xyz+local-on@rocket.chat".to_owned(), true)]
    );
    assert!(lead["phones"].as_array().unwrap().is_empty());
    assert_eq!(lead["tags"], json!(["self"]));
    let ids = lead["visitor_ids"].as_array().unwrap();
    assert!(ids.contains(&json!("rocketchat:id:63db8d4990fe6eda42ad429a")));
    assert!(
        ids.iter()
            .any(|i| i.as_str().unwrap().starts_with("rocketchat:token:e36e"))
    );
    let chat = &lead["conversations"][0];
    assert_eq!(chat["platform"], "rocketchat");
    assert_eq!(chat["chat_id"], "Tc5SyBZHovD4k8BXv");
    assert_eq!(chat["agent"], "User One");
    assert_eq!(chat["closed"], true);
    let messages = chat["messages"].as_array().unwrap();
    let said: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("visitor", "Hi"),
            ("agent", "How can I help you today?"),
            ("visitor", "don't worry,thank you"),
            ("agent", "Thank you for visiting"),
        ]
    );
    assert_eq!(messages[0]["at"], "2023-02-02T10:16:09.615Z");
    assert!(history_has(&lead, "event", "chat closed (agent User One)"));
}

#[tokio::test]
async fn legacy_session_fixture_keeps_tags_custom_fields_and_string_contacts() {
    let app = spawn_app().await;
    let (status, answer) = app
        .rocketchat(&fixture("rocketchat/LivechatSession.legacy.json"))
        .await;
    assert_eq!(status, 200);
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(lead["name"], "visitor name");
    assert_eq!(
        contacts(&lead, "emails"),
        [("email@address.com".to_owned(), true)]
    );
    assert_eq!(lead["phones"].as_array().unwrap().len(), 1);
    assert_eq!(lead["tags"], json!(["tag1", "tag2", "tag3"]));
    assert_eq!(
        lead["custom_fields"],
        json!({"productId": "123456", "customerId": "123456"})
    );
    let chat = &lead["conversations"][0];
    assert_eq!(chat["chat_id"], "fasd6f5a4sd6f8a4sdf");
    assert_eq!(chat["agent"], "Agent Name");
    let from = each(&chat["messages"], "from");
    assert_eq!(from, ["visitor", "agent"]);
}

#[tokio::test]
async fn message_then_closing_session_stores_each_message_once() {
    let app = spawn_app().await;
    let (status, first) = app.rocketchat(&fixture("rocketchat/Message.json")).await;
    assert_eq!(status, 200);
    let lead = app.lead(answered_lead(&first)).await;
    let chat = &lead["conversations"][0];
    assert_eq!(chat["closed"], false);
    assert_eq!(chat["messages"].as_array().unwrap().len(), 1);
    assert_eq!(chat["messages"][0]["from"], "agent");

    let (_, closed) = app
        .rocketchat(&fixture("rocketchat/LivechatSession.json"))
        .await;
    assert_eq!(answered_lead(&closed), answered_lead(&first));
    let lead = app.lead(answered_lead(&first)).await;
    assert_eq!(lead["conversations"].as_array().unwrap().len(), 1);
    let chat = &lead["conversations"][0];
    assert_eq!(chat["closed"], true);
    let texts: Vec<&str> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "Hi",
            "How can I help you today?",
            "don't worry,thank you",
            "Thank you for visiting"
        ]
    );
}

#[tokio::test]
async fn offline_message_fixture_becomes_a_note_on_the_lead() {
    let app = spawn_app().await;
    let (status, answer) = app
        .rocketchat(&fixture("rocketchat/LivechatOfflineMessage.json"))
        .await;
    assert_eq!(status, 200);
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(lead["name"], "name from the form");
    assert_eq!(
        contacts(&lead, "emails"),
        [("email@fromtheform.com".to_owned(), true)]
    );
    assert_eq!(lead["notes"][0]["text"], "message from the form");
    assert_eq!(lead["notes"][0]["kind"], "offline_message");
    assert_eq!(lead["notes"][0]["platform"], "rocketchat");
    assert_eq!(lead["notes"][0]["at"], "2016-06-01T19:55:53.867Z");
    assert!(lead["conversations"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn lifecycle_events_are_recorded_and_lead_capture_merges_contacts() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (kind, line) in [
        ("LivechatSessionStart", "chat started"),
        ("LivechatSessionQueued", "chat queued"),
        ("LivechatSessionTaken", "chat taken (agent User One)"),
        (
            "LivechatSessionForwarded",
            "chat forwarded (agent User One)",
        ),
        ("LivechatEdit", "chat details edited"),
    ] {
        let mut body = fixture("rocketchat/Message.json");
        body["type"] = kind.into();
        body["messages"] = json!([]);
        let (status, answer) = app.rocketchat(&body).await;
        assert_eq!(status, 200, "{kind}: {answer}");
        let id = answered_lead(&answer);
        assert!(history_has(&app.lead(id).await, "event", line), "{kind}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every lifecycle event lands on one lead");

    // LeadCapture: the raw visitor document and what was captured in a message.
    let capture = json!({
        "type": "LeadCapture", "_id": "Tc5SyBZHovD4k8BXv",
        "visitor": {"_id": "63db8d4990fe6eda42ad429a", "token": "e36e", "name": "James",
                    "username": "guest-3", "visitorEmails": [{"address": "abc.xyz+local-on@rocket.chat"}],
                    "phone": [{"phoneNumber": "(408) 498-7855"}], "livechatData": {"plan": "pro"}},
        "lead": {"email": ["james.new@example.com"], "phone": ["+1 408 498 7855"]}
    });
    let (status, answer) = app.rocketchat(&capture).await;
    assert_eq!(status, 200);
    assert_eq!(answered_lead(&answer), ids[0]);
    let lead = app.lead(ids[0]).await;
    let mut emails = contacts(&lead, "emails");
    emails.sort();
    assert_eq!(
        emails,
        [
            ("abc.xyz+local-on@rocket.chat".to_owned(), true),
            ("james.new@example.com".to_owned(), false)
        ]
    );
    assert_eq!(
        contacts(&lead, "phones"),
        [("+14084987855".to_owned(), true)]
    );
    assert_eq!(lead["custom_fields"]["plan"], "pro");
    assert!(history_has(&lead, "event", "lead captured"));
}

#[tokio::test]
async fn crm_data_echoed_back_links_a_room_to_its_lead() {
    let app = spawn_app().await;
    let (_, answer) = app
        .rocketchat(&fixture("rocketchat/LivechatSession.legacy.json"))
        .await;
    let id = answered_lead(&answer);
    // A later webhook of another room whose visitor we cannot recognise,
    // but which carries what we answered (whole, or only its `data`).
    for crm_data in [answer.clone(), answer["data"].clone()] {
        let body = json!({"type": "LivechatEdit", "_id": format!("room-{}", crm_data.is_object()),
                          "visitor": {"username": "guest-9"}, "crmData": crm_data});
        let (status, again) = app.rocketchat(&body).await;
        assert_eq!(status, 200);
        assert_eq!(answered_lead(&again), id);
    }
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
}

#[tokio::test]
async fn messy_real_world_shapes_are_accepted() {
    let app = spawn_app().await;
    // String email, null phone, no agent, numeric ids, extra keys, an old
    // `{"$date"}` timestamp, a file upload without text.
    let body = json!({
        "type": "LivechatSession", "_id": 12345, "code": 7, "brandNew": {"x": [1]},
        "tags": ["a", 5, null], "customFields": {"score": 9, "nested": {"no": 1}},
        "visitor": {"_id": 777, "token": "tok", "name": "Ana", "username": "guest-1",
                    "email": "Ana@Example.com", "phone": null, "customFields": null},
        "messages": [
            {"_id": 1, "username": "guest-1", "msg": "hello", "ts": {"$date": 1665396476000i64}},
            {"_id": "m2", "u": {"_id": "ag", "username": "bob"}, "agentId": "ag", "msg": "",
             "ts": "2022-10-10T10:08:00Z",
             "fileUpload": {"publicFilePath": "https://chat.example/file.pdf"}},
            {"_id": "m3", "msg": null}
        ]
    });
    let (status, answer) = app.rocketchat(&body).await;
    assert_eq!(status, 200, "{answer}");
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(
        contacts(&lead, "emails"),
        [("ana@example.com".to_owned(), true)]
    );
    assert_eq!(lead["tags"], json!(["5", "a"]));
    assert_eq!(lead["custom_fields"], json!({"score": "9"}));
    let chat = &lead["conversations"][0];
    assert_eq!(chat["chat_id"], "12345");
    assert_eq!(chat["agent"], Value::Null);
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["at"], "2022-10-10T10:07:56.000Z");
    assert_eq!(messages[1]["from"], "agent");
    assert_eq!(messages[1]["text"], "https://chat.example/file.pdf");

    // Phone as a list of objects, email as a list of strings, no visitor name.
    let body = json!({"type": "LivechatSessionStart", "_id": "r2",
        "visitor": {"_id": "v2", "email": ["x@y.z"], "phone": [{"phoneNumber": "+1 408-498-7855"}]}});
    let (status, answer) = app.rocketchat(&body).await;
    assert_eq!(status, 200);
    let lead = app.lead(answered_lead(&answer)).await;
    assert_eq!(contacts(&lead, "emails"), [("x@y.z".to_owned(), true)]);
    assert_eq!(
        contacts(&lead, "phones"),
        [("+14084987855".to_owned(), true)]
    );
}

#[tokio::test]
async fn redelivered_session_ten_times_stores_one_transcript() {
    let app = spawn_app().await;
    for name in [
        "rocketchat/LivechatSession.json",
        "rocketchat/LivechatSession.legacy.json",
    ] {
        let body = fixture(name);
        let (_, first) = app.rocketchat(&body).await;
        let before = app.lead(answered_lead(&first)).await;
        for _ in 0..9 {
            let (status, again) = app.rocketchat(&body).await;
            assert_eq!(status, 200);
            assert_eq!(again["lead_id"], first["lead_id"]);
        }
        // A retry after Rocket.Chat saved our answer carries it as crmData.
        let mut with_crm_data = body.clone();
        with_crm_data["crmData"] = first.clone();
        let (status, _) = app.rocketchat(&with_crm_data).await;
        assert_eq!(status, 200);
        assert_eq!(app.lead(answered_lead(&first)).await, before, "{name}");
    }
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM conversations"), 2);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 6);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 2);
}

#[tokio::test]
async fn wrong_or_missing_token_is_401_and_stores_nothing() {
    let app = spawn_app().await;
    let body = fixture("rocketchat/LivechatSession.json");
    for token in [Some("wrong"), Some(""), None] {
        let (status, error) = app.rocketchat_with(&body, token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(error["result"], "error");
    }
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 0);
}

#[tokio::test]
async fn unknown_types_are_kept_and_bodies_without_type_are_400() {
    let app = spawn_app().await;
    let (status, answer) = app
        .rocketchat(&json!({"type": "LivechatSomethingNew", "_id": "r9"}))
        .await;
    assert_eq!((status, answer), (200, json!({"result": "ok"})));
    let (status, error) = app.rocketchat(&json!({"_id": "r9"})).await;
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("type"));
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM deliveries WHERE status = 'failed'"),
        1
    );
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 0);
}
