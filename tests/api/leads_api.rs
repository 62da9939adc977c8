//! The JSON API: credentials, shape, search.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_api_needs_sales_credentials_and_webhook_tokens_do_not_open_it() {
    let app = spawn_app().await;
    app.jivo(&fixture("jivo/chat_accepted.json")).await;
    let r = app
        .client
        .get(app.url("/api/leads/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    for (user, pass) in [
        ("sales", "wrong"),
        ("nobody", SALES_PASSWORD),
        ("sales", JIVO_TOKEN),
    ] {
        let r = app
            .client
            .get(app.url("/api/leads/1"))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{user}:{pass}");
    }
    let r = app
        .client
        .get(app.url("/api/leads/1"))
        .header("authorization", "Basic %%%garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.api("/api/leads/1").await.0, 200);
}

#[tokio::test]
async fn lead_json_has_the_contract_shape() {
    let app = spawn_app().await;
    app.jivo(&fixture("jivo/chat_accepted.json")).await;
    app.jivo(&fixture("jivo/chat_finished.json")).await;
    let lead = app.lead(1).await;
    for key in [
        "id",
        "name",
        "description",
        "status",
        "emails",
        "phones",
        "conversations",
        "notes",
        "possible_duplicates",
        "history",
        "created_at",
        "updated_at",
    ] {
        assert!(lead.get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        lead["emails"][0],
        json!({"value": "email@example.com", "raw": "email@example.com", "primary": true})
    );
    assert_eq!(lead["phones"][0]["value"], "+14084987855");
    let conversation = lead["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chat_id"] == "7607")
        .unwrap();
    assert_eq!(conversation["platform"], "jivo");
    let message = &conversation["messages"][0];
    assert_eq!(message["from"], "visitor");
    assert!(message["text"].is_string() && message["at"].is_string());
    let h = &lead["history"][1];
    assert!(h["at"].is_string() && h["field"].is_string() && h["source"].is_string());
    assert!(h.get("old").is_some() && h.get("new").is_some());
    assert_eq!(app.api("/api/leads/999").await.0, 404);
    assert_eq!(app.api("/api/leads/abc").await.0, 404);
}

#[tokio::test]
async fn search_by_email_phone_and_text_with_a_cursor() {
    let app = spawn_app().await;
    for i in 0..5u64 {
        let phone = format!("+1 408 555 010{i}");
        app.jivo(&accepted(
            i,
            &i.to_string(),
            &format!("Person {i}"),
            Some(&format!("p{i}@example.com")),
            Some(&phone),
        ))
        .await;
    }
    let (_, r) = app.api("/api/leads?email=P3@EXAMPLE.COM").await;
    assert_eq!(r["leads"].as_array().unwrap().len(), 1);
    assert_eq!(r["leads"][0]["name"], "Person 3");
    let (_, r) = app.api("/api/leads?phone=(408)%20555-0102").await;
    assert_eq!(r["leads"][0]["name"], "Person 2");
    let (_, r) = app.api("/api/leads?q=person&limit=2").await;
    assert_eq!(r["leads"].as_array().unwrap().len(), 2);
    assert_eq!(r["leads"][0]["name"], "Person 4");
    let next = r["next"].as_str().unwrap().to_owned();
    let (_, r2) = app
        .api(&format!("/api/leads?q=person&limit=2&cursor={next}"))
        .await;
    assert_eq!(r2["leads"][0]["name"], "Person 2");
    let (_, all) = app.api("/api/leads?limit=10").await;
    assert_eq!(all["leads"].as_array().unwrap().len(), 5);
    assert!(all["next"].is_null());
    assert_eq!(app.api("/api/leads?cursor=zzz").await.0, 400);
}
