//! Resolving possible duplicates: the review queue, merge (with each
//! choice) and its preview, dismiss, and unmerge of any merge, staff's or
//! a delivery's fold; merges racing webhooks.

use crm_responder::config::{DescriptionPolicy, FieldPolicy, Secret};
use crm_responder::staff::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// Sends `method path` with `body` as `user`; status and JSON body.
async fn send_as(
    app: &TestApp,
    user: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .basic_auth(user, Some(SALES_PASSWORD));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    send_as(app, "sales", Method::POST, path, Some(body)).await
}

async fn patch(app: &TestApp, id: i64, body: Value) {
    let (status, answer) = send_as(
        app,
        "sales",
        Method::PATCH,
        &format!("/api/leads/{id}"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// A Jivo visitor's chat: the lead it landed on.
async fn chat(
    app: &TestApp,
    chat: u64,
    number: &str,
    name: &str,
    email: Option<&str>,
    phone: Option<&str>,
) -> i64 {
    let (status, answer) = app.jivo(&accepted(chat, number, name, email, phone)).await;
    assert_eq!(status, 200, "{answer}");
    lead_id(&answer)
}

/// A lead worked by staff: status, owner, description and a note set.
async fn worked_lead(app: &TestApp, n: u64, name: &str, status: &str, owner: Option<&str>) -> i64 {
    let id = chat(
        app,
        n,
        &format!("visitor-{n}"),
        name,
        Some(&format!("person{n}@example.com")),
        Some(&format!("+1 408 498 {:04}", 7000 + n)),
    )
    .await;
    patch(
        app,
        id,
        json!({"status": status, "owner": owner, "description": format!("{name}, worked")}),
    )
    .await;
    let (s, _) = post(
        app,
        &format!("/api/leads/{id}/notes"),
        json!({"text": format!("called {name}")}),
    )
    .await;
    assert_eq!(s, 201);
    id
}

/// Links `a` and `b` as possible duplicates the way a webhook does: one
/// chat giving `a`'s email and `b`'s phone.
async fn flag(app: &TestApp, chat_id: u64, a: i64, b: i64) {
    let (lead_a, lead_b) = (app.lead(a).await, app.lead(b).await);
    let email = lead_a["emails"][0]["value"].as_str().unwrap().to_owned();
    let phone = lead_b["phones"][0]["value"].as_str().unwrap().to_owned();
    chat(
        app,
        chat_id,
        &format!("flagger-{chat_id}"),
        "",
        Some(&email),
        Some(&phone),
    )
    .await;
    assert!(
        app.lead(a).await["possible_duplicates"]
            .as_array()
            .unwrap()
            .contains(&json!(b)),
        "{a} and {b} flagged"
    );
}

/// The lead's JSON without what any change moves on: its history, version
/// and update time.
fn state(lead: &Value) -> Value {
    let mut lead = lead.clone();
    for key in ["history", "version", "updated_at"] {
        lead.as_object_mut().unwrap().remove(key);
    }
    lead
}

async fn merge(app: &TestApp, survivor: i64, other: i64, keep: Value) -> Value {
    let (status, answer) = post(
        app,
        &format!("/api/leads/{survivor}/merge"),
        json!({"other": other, "keep": keep}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn unmerge(app: &TestApp, survivor: i64, absorbed: i64) -> Value {
    let (status, answer) = post(
        app,
        &format!("/api/leads/{survivor}/unmerge"),
        json!({"lead": absorbed}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn merge_with_each_choice_then_unmerge_gives_both_leads_back_as_they_were() {
    let app = spawn_app().await;
    let choices = [
        json!({}),
        json!({"name": "other", "description": "other", "status": "other", "owner": "other",
               "primary_email": "other", "primary_phone": "other"}),
        json!({"name": "other", "description": "this", "status": "other", "owner": "this",
               "primary_email": "this", "primary_phone": "other"}),
    ];
    for (round, keep) in choices.iter().enumerate() {
        let n = 10 * round as u64;
        let a = worked_lead(&app, n + 1, "Maria Garcia", "contacted", None).await;
        let b = worked_lead(&app, n + 2, "M. Garcia", "qualified", Some("sales")).await;
        flag(&app, n + 3, a, b).await;
        let (before_a, before_b) = (app.lead(a).await, app.lead(b).await);

        let (status, preview) = send_as(
            &app,
            "sales",
            Method::GET,
            &format!(
                "/api/leads/{a}/merge-preview?other={b}&{}",
                keep.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                    .collect::<Vec<_>>()
                    .join("&")
            ),
            None,
        )
        .await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(
            (preview["survivor"].as_i64(), preview["absorbed"].as_i64()),
            (Some(a), Some(b))
        );
        assert_eq!(
            state(&app.lead(a).await),
            state(&before_a),
            "a preview writes nothing"
        );
        assert_eq!(app.lead(b).await["version"], before_b["version"]);

        let merged = merge(&app, a, b, keep.clone()).await;
        let side = |key: &str| keep.get(key).and_then(Value::as_str).unwrap_or("this");
        let from = |key: &str| {
            if side(key) == "other" {
                &before_b
            } else {
                &before_a
            }
        };
        let not_from = |key: &str| {
            if side(key) == "other" {
                &before_a
            } else {
                &before_b
            }
        };
        for key in ["name", "description", "status", "owner"] {
            // An empty value is filled from the other side.
            let expected = match &from(key)[key] {
                Value::Null => &not_from(key)[key],
                value => value,
            };
            assert_eq!(&merged[key], expected, "{key} kept as {}", side(key));
        }
        let primary = |lead: &Value, kind: &str| {
            lead[kind]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["primary"] == true)
                .unwrap()["value"]
                .clone()
        };
        assert_eq!(
            primary(&merged, "emails"),
            primary(from("primary_email"), "emails")
        );
        assert_eq!(
            primary(&merged, "phones"),
            primary(from("primary_phone"), "phones")
        );
        // The preview was exactly the merge.
        assert_eq!(state(&preview["lead"]), state(&merged));
        // Everything of both is on the survivor.
        for kind in ["emails", "phones", "visitor_ids", "conversations", "notes"] {
            assert_eq!(
                merged[kind].as_array().unwrap().len(),
                before_a[kind].as_array().unwrap().len() + before_b[kind].as_array().unwrap().len(),
                "{kind}"
            );
        }
        assert!(merged["version"].as_i64() > before_a["version"].as_i64());
        let (status, gone) = app.api(&format!("/api/leads/{b}")).await;
        assert_eq!((status, gone["merged_into"].as_i64()), (200, Some(a)));
        assert!(history_has(
            &merged,
            "merged",
            &format!("lead {b} merged in")
        ));

        let undone = unmerge(&app, a, b).await;
        assert_eq!(undone["unattributed"], json!([]));
        let (after_a, after_b) = (app.lead(a).await, app.lead(b).await);
        assert_eq!(state(&after_a), state(&before_a), "round {round}: survivor");
        assert_eq!(state(&after_b), state(&before_b), "round {round}: restored");
        assert_eq!(state(&undone["restored"]), state(&before_b));
        assert!(history_has(
            &after_a,
            "unmerged",
            &format!("lead {b} restored")
        ));
        assert!(history_has(
            &after_b,
            "unmerged",
            &format!("restored from lead {a}")
        ));
        assert!(history_has(&after_b, "merged_into", &a.to_string()));
    }
}

#[tokio::test]
async fn an_automatic_fold_is_undone_and_the_pair_is_flagged_not_folded_again() {
    let app = spawn_app().await;
    let known = chat(
        &app,
        1,
        "known-1",
        "Kim Known",
        Some("kim@example.com"),
        None,
    )
    .await;
    let anon = chat(&app, 2, "anon-2", "", None, None).await;
    assert_ne!(known, anon);
    let before = app.lead(anon).await;
    // The anonymous visitor gives Kim's email: folded by the delivery.
    assert_eq!(
        chat(&app, 3, "anon-2", "", Some("kim@example.com"), None).await,
        known
    );
    let (_, gone) = app.api(&format!("/api/leads/{anon}")).await;
    assert_eq!(gone["merged_into"], known);

    let undone = unmerge(&app, known, anon).await;
    assert_eq!(state(&undone["restored"]), state(&before));
    let kim = app.lead(known).await;
    assert!(!kim["visitor_ids"].to_string().contains("anon-2"), "{kim}");
    assert_eq!(app.lead(anon).await["visitor_ids"], before["visitor_ids"]);

    // The same again: kept apart, flagged instead.
    assert_eq!(
        chat(&app, 4, "anon-2", "", Some("kim@example.com"), None).await,
        known
    );
    let (status, still) = app.api(&format!("/api/leads/{anon}")).await;
    assert_eq!(status, 200);
    assert!(still.get("merged_into").is_none(), "{still}");
    assert!(
        still["possible_duplicates"]
            .as_array()
            .unwrap()
            .contains(&json!(known)),
        "{still}"
    );
}

#[tokio::test]
async fn merge_chains_unmerge_link_by_link() {
    let app = spawn_app().await;
    let a = worked_lead(&app, 1, "Ann One", "new", None).await;
    let b = worked_lead(&app, 2, "Ann Two", "contacted", Some("sales")).await;
    let c = worked_lead(&app, 3, "Ann Three", "qualified", None).await;
    let (a0, b0, c0) = (app.lead(a).await, app.lead(b).await, app.lead(c).await);
    merge(&app, a, b, json!({"name": "other"})).await;
    let a1 = app.lead(a).await;
    merge(&app, c, a, json!({"status": "other"})).await;
    for gone in [a, b] {
        let (_, answer) = app.api(&format!("/api/leads/{gone}")).await;
        assert_eq!(answer["merged_into"], c, "{gone}");
    }
    // Link by link: A comes back as B's merge left it, then B.
    unmerge(&app, c, a).await;
    assert_eq!(state(&app.lead(a).await), state(&a1));
    unmerge(&app, a, b).await;
    for (id, before) in [(a, &a0), (b, &b0), (c, &c0)] {
        assert_eq!(state(&app.lead(id).await), state(before), "lead {id}");
    }

    // Out of order, B straight out of C, is refused: A first.
    merge(&app, a, b, json!({})).await;
    merge(&app, c, a, json!({})).await;
    let (status, answer) = post(&app, &format!("/api/leads/{c}/unmerge"), json!({"lead": b})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains(&format!("unmerge lead {a} first")),
        "{answer}"
    );
    unmerge(&app, c, a).await;
    unmerge(&app, a, b).await;
    for (id, before) in [(a, &a0), (b, &b0), (c, &c0)] {
        assert_eq!(
            state(&app.lead(id).await),
            state(before),
            "lead {id}, again"
        );
    }
}

#[tokio::test]
async fn what_arrives_for_the_absorbed_visitor_after_a_merge_goes_back_with_it() {
    let app = spawn_app().await;
    let a = worked_lead(&app, 1, "Pat Main", "new", None).await;
    let b = worked_lead(&app, 2, "Pat Other", "new", None).await;
    merge(&app, a, b, json!({})).await;
    // B's visitor chats again, now found on A through its visitor id, and
    // gives a new email; a third chat names both (A's email, B's visitor).
    assert_eq!(
        chat(&app, 20, "visitor-2", "", Some("pat.new@example.com"), None).await,
        a
    );
    let a_email = app.lead(a).await["emails"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        chat(&app, 21, "visitor-2", "", Some(&a_email), None).await,
        a
    );
    let undone = unmerge(&app, a, b).await;
    let restored = &undone["restored"];
    let chats = |lead: &Value| -> Vec<String> {
        lead["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["chat_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(chats(restored).contains(&"20".to_owned()), "{restored}");
    assert!(
        restored["emails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["value"] == "pat.new@example.com"),
        "{restored}"
    );
    let survivor = app.lead(a).await;
    assert!(!chats(&survivor).contains(&"20".to_owned()));
    // Chat 21 came through both leads' identifiers: it stays, listed.
    assert!(chats(&survivor).contains(&"21".to_owned()));
    assert_eq!(
        undone["unattributed"],
        json!([{"kind": "conversation", "value": "jivo:21", "delivery_id": undone["unattributed"][0]["delivery_id"]}]),
        "{undone}"
    );
}

/// A Rocket.Chat room of a new visitor giving `email`, with `crm_data`
/// echoed back as Rocket.Chat echoes our earlier answer: the lead it landed on.
async fn echoed_room(app: &TestApp, room: &str, email: &str, crm_data: Value) -> i64 {
    let body = json!({
        "type": "LivechatSession", "_id": room, "crmData": crm_data,
        "visitor": {"_id": format!("v-{room}"), "token": format!("t-{room}"),
                    "username": format!("guest-{room}"), "email": email},
        "messages": [{"_id": format!("m-{room}"), "username": format!("guest-{room}"),
                      "msg": "it's me again", "ts": "2026-12-01T10:00:00Z"}]
    });
    let (status, answer) = app.rocketchat(&body).await;
    assert_eq!(status, 200, "{answer}");
    answered_lead(&answer)
}

#[tokio::test]
async fn the_lead_id_a_platform_echoes_attributes_what_it_brought_and_a_delivery_naming_neither_lead_is_listed()
 {
    let app = spawn_app().await;
    let a = worked_lead(&app, 1, "Pat Main", "new", None).await;
    let b = worked_lead(&app, 2, "Pat Other", "new", None).await;
    merge(&app, a, b, json!({})).await;
    // Found only through the absorbed lead's id the platform echoes: B's.
    assert_eq!(
        echoed_room(
            &app,
            "echo-b",
            "pat.echo@example.com",
            json!({"lead_id": b})
        )
        .await,
        a
    );
    // Through the survivor's own echoed id: A's.
    assert_eq!(
        echoed_room(
            &app,
            "echo-a",
            "pat.main2@example.com",
            json!({"lead_id": a})
        )
        .await,
        a
    );
    // Through a phone staff gave the survivor after the merge: the delivery
    // names neither lead's identifiers, so what it names stays, listed.
    let (status, answer) = post(
        &app,
        &format!("/api/leads/{a}/phones"),
        json!({"value": "+1 650 253 0000"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        chat(&app, 30, "visitor-30", "", None, Some("+16502530000")).await,
        a
    );

    let undone = unmerge(&app, a, b).await;
    let emails = |lead: &Value| -> Vec<String> {
        lead["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(emails(&undone["restored"]).contains(&"pat.echo@example.com".to_owned()));
    let survivor = app.lead(a).await;
    assert!(!emails(&survivor).contains(&"pat.echo@example.com".to_owned()));
    assert!(emails(&survivor).contains(&"pat.main2@example.com".to_owned()));
    let listed: Vec<(String, String)> = undone["unattributed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["kind"].as_str().unwrap().to_owned(),
                u["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("visitor".to_owned(), "jivo:number:visitor-30".to_owned()),
            ("phone".to_owned(), "+16502530000".to_owned()),
            ("conversation".to_owned(), "jivo:30".to_owned()),
        ],
        "{undone}"
    );
}

/// An app whose chats replace a lead's name and description (the default
/// keeps them), so that a delivery after a merge changes them.
async fn app_taking_names() -> TestApp {
    spawn_app_with(|c| {
        c.merge.name = FieldPolicy::TakeIncoming;
        c.merge.description = DescriptionPolicy::TakeIncoming;
    })
    .await
}

/// A Jivo chat of visitor `number` with these tags (and description, when
/// given): the lead it landed on.
async fn tagged_chat(
    app: &TestApp,
    chat: u64,
    number: &str,
    name: &str,
    email: Option<&str>,
    (tags, description): (&[&str], Option<&str>),
) -> i64 {
    let mut body = accepted(chat, number, name, email, None);
    body["tags"] = tags.iter().map(|t| json!({"title": t})).collect();
    body["visitor"]["description"] = description.map(Value::from).unwrap_or(Value::Null);
    let (status, answer) = app.jivo(&body).await;
    assert_eq!(status, 200, "{answer}");
    lead_id(&answer)
}

/// A Rocket.Chat room of a visitor giving `email` and `phone`, with one
/// custom field: the lead it landed on.
async fn room_with_field(
    app: &TestApp,
    room: &str,
    email: &str,
    phone: Option<&str>,
    (key, value): (&str, &str),
) -> i64 {
    let body = json!({
        "type": "LivechatSession", "_id": room, "customFields": {key: value},
        "visitor": {"_id": format!("v-{room}"), "token": format!("t-{room}"),
                    "username": format!("guest-{room}"), "email": email, "phone": phone},
        "messages": [{"_id": format!("m-{room}"), "username": format!("guest-{room}"),
                      "msg": "hello again", "ts": "2026-12-01T10:00:00Z"}]
    });
    let (status, answer) = app.rocketchat(&body).await;
    assert_eq!(status, 200, "{answer}");
    answered_lead(&answer)
}

/// The JSON of `lead` without its conversations and visitor ids.
fn without_rows(lead: &Value) -> Value {
    let mut lead = state(lead);
    for key in ["conversations", "visitor_ids"] {
        lead.as_object_mut().unwrap().remove(key);
    }
    lead
}

/// `(kind, value)` of the unattributed values (not rows) of an unmerge.
fn listed_values(undone: &Value) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = undone["unattributed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| ["name", "description", "field", "tag"].contains(&u["kind"].as_str().unwrap()))
        .map(|u| {
            assert!(u["delivery_id"].as_i64().is_some(), "{u}");
            (
                u["kind"].as_str().unwrap().to_owned(),
                u["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    listed.sort();
    listed
}

#[tokio::test]
async fn a_name_tag_and_custom_field_brought_for_the_absorbed_visitor_after_a_merge_go_back_with_it()
 {
    let app = app_taking_names().await;
    let a = chat(
        &app,
        1,
        "visitor-1",
        "Pat Main",
        Some("pat.main@example.com"),
        None,
    )
    .await;
    let b = chat(
        &app,
        2,
        "visitor-2",
        "Pat Other",
        Some("pat.other@example.com"),
        None,
    )
    .await;
    let (a0, b0) = (app.lead(a).await, app.lead(b).await);
    merge(&app, a, b, json!({})).await;
    // B's visitor chats again in its own chat: found on A, it renames the
    // lead, describes it and tags it; a Rocket.Chat room through B's email
    // sets a custom field.
    let renamed = tagged_chat(
        &app,
        2,
        "visitor-2",
        "Patricia Other",
        None,
        (&["returning"], Some("moved to Lyon")),
    )
    .await;
    assert_eq!(renamed, a);
    assert_eq!(
        room_with_field(
            &app,
            "room-b",
            "pat.other@example.com",
            None,
            ("plan", "pro")
        )
        .await,
        a
    );
    let merged = app.lead(a).await;
    assert_eq!(merged["name"], "Patricia Other");
    assert_eq!(merged["description"], "moved to Lyon");
    assert_eq!(merged["custom_fields"]["plan"], "pro");
    assert!(
        merged["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("returning"))
    );

    let undone = unmerge(&app, a, b).await;
    assert_eq!(undone["unattributed"], json!([]), "{undone}");
    // The survivor is exactly as before the merge: its name, description,
    // fields and tags reverted.
    let after_a = app.lead(a).await;
    assert_eq!(state(&after_a), state(&a0));
    // The restored lead is as it was, with what its deliveries brought.
    let after_b = app.lead(b).await;
    let mut expected = without_rows(&b0);
    expected["name"] = json!("Patricia Other");
    expected["description"] = json!("moved to Lyon");
    expected["custom_fields"] = json!({"plan": "pro"});
    let mut tags: Vec<Value> = b0["tags"].as_array().unwrap().clone();
    tags.push(json!("returning"));
    tags.sort_by_key(|t| t.as_str().unwrap().to_owned());
    expected["tags"] = json!(tags);
    assert_eq!(without_rows(&after_b), expected);
    assert_eq!(state(&undone["restored"]), state(&after_b));
    let chats: Vec<&str> = after_b["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chat_id"].as_str().unwrap())
        .collect();
    assert!(
        chats.contains(&"2") && chats.contains(&"room-b"),
        "{after_b}"
    );
    // Both histories say what went back.
    for what in ["name", "description", "field plan", "tag returning"] {
        assert!(history_has(&after_a, "unmerged", what), "{what} on {a}");
        assert!(history_has(&after_b, "unmerged", what), "{what} on {b}");
    }
}

#[tokio::test]
async fn values_brought_through_both_leads_stay_listed_and_the_survivors_own_stay_unlisted() {
    let app = app_taking_names().await;
    let a = chat(
        &app,
        1,
        "visitor-1",
        "Sam Main",
        Some("sam.main@example.com"),
        None,
    )
    .await;
    let b = chat(
        &app,
        2,
        "visitor-2",
        "Sam Other",
        Some("sam.other@example.com"),
        Some("+1 408 498 7702"),
    )
    .await;
    let b0 = app.lead(b).await;
    merge(&app, a, b, json!({})).await;
    // Through both: B's visitor giving A's email; a room giving A's email
    // and B's phone.
    let both = (&["both-tag"][..], Some("told both"));
    assert_eq!(
        tagged_chat(
            &app,
            30,
            "visitor-2",
            "Sam Both",
            Some("sam.main@example.com"),
            both
        )
        .await,
        a
    );
    assert_eq!(
        room_with_field(
            &app,
            "room-both",
            "sam.main@example.com",
            Some("+1 408 498 7702"),
            ("tier", "gold")
        )
        .await,
        a
    );
    // Through A's own only: its visitor, its email.
    assert_eq!(
        tagged_chat(&app, 1, "visitor-1", "", None, (&["own-tag"], None)).await,
        a
    );
    assert_eq!(
        room_with_field(
            &app,
            "room-own",
            "sam.main@example.com",
            None,
            ("region", "west")
        )
        .await,
        a
    );
    let before = app.lead(a).await;

    let undone = unmerge(&app, a, b).await;
    assert_eq!(
        listed_values(&undone),
        [
            ("description".to_owned(), "told both".to_owned()),
            ("field".to_owned(), "tier=gold".to_owned()),
            ("name".to_owned(), "Sam Both".to_owned()),
            ("tag".to_owned(), "both-tag".to_owned()),
        ],
        "{undone}"
    );
    // The restored lead gets none of it; the survivor keeps it all.
    assert_eq!(state(&app.lead(b).await), state(&b0));
    let after_a = app.lead(a).await;
    for key in ["name", "description", "custom_fields", "tags"] {
        assert_eq!(after_a[key], before[key], "{key}");
    }
    assert_eq!(
        after_a["custom_fields"],
        json!({"region": "west", "tier": "gold"})
    );
}

fn write_config(app: &TestApp, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        store_config_text(&app.db_path, app.db_url.as_deref()),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_dismissed_pair_is_never_flagged_again_by_webhooks_or_replay() {
    let app = spawn_app().await;
    let a = worked_lead(&app, 1, "Lee Shore", "new", None).await;
    let b = worked_lead(&app, 2, "Lee Shaw", "new", None).await;
    flag(&app, 3, a, b).await;
    let (status, answer) = post(
        &app,
        &format!("/api/leads/{a}/duplicates/{b}/dismiss"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["possible_duplicates"], json!([]));
    assert_eq!(app.lead(b).await["possible_duplicates"], json!([]));
    let (_, queue) = app.api("/api/duplicates").await;
    assert_eq!(queue["pairs"], json!([]), "{queue}");

    // The same conflict again, from a new chat: not flagged.
    let (lead_a, lead_b) = (app.lead(a).await, app.lead(b).await);
    let email = lead_a["emails"][0]["value"].as_str().unwrap();
    let phone = lead_b["phones"][0]["value"].as_str().unwrap();
    chat(&app, 4, "flagger-4", "", Some(email), Some(phone)).await;
    assert_eq!(app.lead(a).await["possible_duplicates"], json!([]));

    // Nor by replaying every delivery, nor by one that failed before.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&app, dir.path());
    let body = accepted(9001, "flagger-9", "", Some(email), Some(phone)).to_string();
    app.execute(
        "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status, error)
         VALUES ('jivo', 'chat_accepted', 'jivo:failed:old', '2026-01-02T03:04:05.000Z', ?1, 'failed', 'old parser')",
        crm_responder::args![body.as_bytes()],
    );
    cli(&config, &["replay", "--failed"]);
    cli(&config, &["replay", "--all"]);
    // Nor by an import row naming both.
    let csv = dir.path().join("both.csv");
    std::fs::write(
        &csv,
        format!("name,emails,phones\nLee Both,{email},{phone}\n"),
    )
    .unwrap();
    cli(&config, &["import", csv.to_str().unwrap()]);
    assert_eq!(app.lead(a).await["possible_duplicates"], json!([]));
    assert_eq!(app.lead(b).await["possible_duplicates"], json!([]));
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM duplicate_links"),
        0,
        "no link anywhere"
    );
}

#[tokio::test]
async fn the_queue_lists_pairs_strongest_first_and_pages() {
    let app = spawn_app().await;
    let a = worked_lead(&app, 1, "Queue One", "new", None).await;
    let b = worked_lead(&app, 2, "Queue Two", "new", None).await;
    let c = worked_lead(&app, 3, "Queue Three", "new", None).await;
    flag(&app, 4, a, b).await;
    flag(&app, 5, a, c).await;
    // A page at a time, strongest first, each pair once.
    let mut seen: Vec<(i64, i64, f64)> = Vec::new();
    let mut path = "/api/duplicates?limit=1".to_owned();
    loop {
        let (status, page) = app.api(&path).await;
        assert_eq!(status, 200, "{page}");
        let pairs = page["pairs"].as_array().unwrap();
        assert!(pairs.len() <= 1, "{page}");
        for p in pairs {
            assert!(!p["reason"].as_str().unwrap().is_empty());
            seen.push((
                p["lead"].as_i64().unwrap(),
                p["other"].as_i64().unwrap(),
                p["score"].as_f64().unwrap(),
            ));
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/duplicates?limit=1&cursor={next}"),
            None => break,
        }
    }
    assert!(seen.windows(2).all(|w| w[0].2 >= w[1].2), "{seen:?}");
    for pair in [(a, b), (a, c)] {
        assert_eq!(
            seen.iter().filter(|s| (s.0, s.1) == pair).count(),
            1,
            "{pair:?} in {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|s| s.0 < s.1),
        "the older lead first: {seen:?}"
    );
    let (status, _) = app.api("/api/duplicates?cursor=nonsense").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn merging_a_lead_merged_away_is_a_409_naming_its_survivor_and_viewers_get_403() {
    let app = spawn_app_with(|config| {
        let mut viewer = config.sales.users[0].clone();
        viewer.name = "vic".into();
        viewer.password_hash = Secret::new(SALES_HASH);
        viewer.role = Role::Viewer;
        config.sales.users.push(viewer);
    })
    .await;
    let a = worked_lead(&app, 1, "Ray One", "new", None).await;
    let b = worked_lead(&app, 2, "Ray Two", "new", None).await;
    let c = worked_lead(&app, 3, "Ray Three", "new", None).await;
    for (path, body) in [
        (format!("/api/leads/{a}/merge"), json!({"other": b})),
        (format!("/api/leads/{a}/unmerge"), json!({"lead": b})),
        (format!("/api/leads/{a}/duplicates/{b}/dismiss"), json!({})),
    ] {
        let (status, answer) = send_as(&app, "vic", Method::POST, &path, Some(body)).await;
        assert_eq!(status, 403, "{path}: {answer}");
    }
    let (status, _) = send_as(&app, "vic", Method::GET, "/api/duplicates", None).await;
    assert_eq!(status, 200, "a viewer reads the queue");

    merge(&app, a, b, json!({})).await;
    for (survivor, other) in [(c, b), (b, c)] {
        let (status, answer) = post(
            &app,
            &format!("/api/leads/{survivor}/merge"),
            json!({"other": other}),
        )
        .await;
        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["merged_into"], a, "{answer}");
    }
    let (status, answer) = post(&app, &format!("/api/leads/{a}/merge"), json!({"other": a})).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post(
        &app,
        &format!("/api/leads/{a}/merge"),
        json!({"other": 999}),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = post(
        &app,
        &format!("/api/leads/{a}/merge"),
        json!({"other": c, "keep": {"name": "both"}}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post(&app, &format!("/api/leads/{c}/unmerge"), json!({"lead": b})).await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = post(&app, &format!("/api/leads/{a}/unmerge"), json!({"lead": c})).await;
    assert_eq!(status, 409, "{answer}");
}

/// Every email, phone and visitor id is on exactly one lead, a live one.
fn every_identifier_on_one_live_lead(app: &TestApp) {
    for table in ["lead_emails", "lead_phones", "lead_visitors"] {
        let on_merged: i64 = app.sql(&format!(
            "SELECT count(*) FROM {table} t JOIN leads l ON l.id = t.lead_id WHERE l.merged_into IS NOT NULL"
        ));
        assert_eq!(on_merged, 0, "{table} rows on merged leads");
    }
    let conversations: i64 = app.sql(
        "SELECT count(*) FROM conversations c JOIN leads l ON l.id = c.lead_id WHERE l.merged_into IS NOT NULL",
    );
    assert_eq!(conversations, 0, "conversations on merged leads");
}

#[tokio::test]
async fn merges_and_unmerges_racing_webhooks_lose_nothing_and_share_no_identifier() {
    let app = std::sync::Arc::new(spawn_app().await);
    let rounds: u64 = 12;
    for round in 0..rounds {
        let n = 100 * (round + 1);
        let a = worked_lead(&app, n + 1, "Race A", "new", None).await;
        let b = worked_lead(&app, n + 2, "Race B", "new", None).await;
        let mut tasks = Vec::new();
        for i in 0..6u64 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                // New chats for each visitor, each with a new email.
                let visitor = format!("visitor-{}", n + 1 + i % 2);
                chat(
                    &app,
                    n + 10 + i,
                    &visitor,
                    "",
                    Some(&format!("race{n}-{i}@example.com")),
                    None,
                )
                .await
            }));
        }
        let merged = {
            let app = app.clone();
            tokio::spawn(async move { merge(&app, a, b, json!({})).await })
        };
        for task in tasks {
            task.await.unwrap();
        }
        merged.await.unwrap();
        every_identifier_on_one_live_lead(&app);
        let lead = app.lead(a).await;
        for i in 0..6u64 {
            let email = format!("race{n}-{i}@example.com");
            assert!(
                lead["emails"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["value"] == email.as_str()),
                "round {round}: {email} lost"
            );
        }
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let visitor = format!("visitor-{}", n + 1 + i % 2);
                chat(&app, n + 30 + i, &visitor, "", None, None).await
            }));
        }
        let undone = {
            let app = app.clone();
            tokio::spawn(async move { unmerge(&app, a, b).await })
        };
        for task in tasks {
            task.await.unwrap();
        }
        undone.await.unwrap();
        every_identifier_on_one_live_lead(&app);
        let chats: i64 = app.sql_with(
            "SELECT count(*) FROM conversations WHERE chat_id IN (?1, ?2, ?3, ?4)",
            crm_responder::args![
                (n + 30).to_string(),
                (n + 31).to_string(),
                (n + 32).to_string(),
                (n + 33).to_string()
            ],
        );
        assert_eq!(chats, 4, "round {round}: every chat stored");
    }
}

#[tokio::test]
async fn the_pages_merge_dismiss_and_unmerge_only_with_the_forms_token_and_a_working_role() {
    use crate::working_pages::{get, hidden, post as post_form, signed_in};
    let app = spawn_app_with(|config| {
        let mut viewer = config.sales.users[0].clone();
        viewer.name = "vic".into();
        viewer.password_hash = Secret::new(SALES_HASH);
        viewer.role = Role::Viewer;
        config.sales.users.push(viewer);
    })
    .await;
    let a = worked_lead(&app, 1, "Page One", "new", None).await;
    let b = worked_lead(&app, 2, "Page Two", "new", None).await;
    let c = worked_lead(&app, 3, "Page Three", "new", None).await;
    flag(&app, 4, a, b).await;
    let sales = signed_in(&app, "sales").await;
    let (status, queue) = get(&app, &sales, "/duplicates").await;
    assert_eq!(status, 200);
    assert!(queue.contains(&format!("data-pair=\"{a}-{b}\"")), "{queue}");
    let csrf = hidden(&queue, "csrf");
    let (status, preview) = get(
        &app,
        &sales,
        &format!("/leads/{a}/merge?other={b}&name=other"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        preview.contains("Page Two") && preview.contains("id=\"merge-form\""),
        "{preview}"
    );

    let version = |id: i64| app.sql::<i64>(&format!("SELECT version FROM leads WHERE id = {id}"));
    let before = (version(a), version(b));
    for token in [None, Some("forged")] {
        for (path, field) in [
            (format!("/leads/{a}/merge"), ("other", b.to_string())),
            (
                format!("/leads/{a}/duplicates/{b}/dismiss"),
                ("x", String::new()),
            ),
        ] {
            let mut form = vec![(field.0, field.1.as_str())];
            form.extend(token.map(|t| ("csrf", t)));
            let (status, _, _) = post_form(&app, &sales, &path, &form).await;
            assert_eq!(status, 403, "{path} with {token:?}");
        }
    }
    assert_eq!((version(a), version(b)), before, "nothing changed");

    // A viewer reads the queue, without the forms, and may not post them.
    let vic = signed_in(&app, "vic").await;
    let (status, seen) = get(&app, &vic, "/duplicates").await;
    assert_eq!(status, 200);
    assert!(!seen.contains("Not the same person"), "{seen}");
    let (_, lead_page) = get(&app, &vic, &format!("/leads/{a}")).await;
    let vic_csrf = hidden(&lead_page, "csrf");
    let (status, _, _) = post_form(
        &app,
        &vic,
        &format!("/leads/{a}/merge"),
        &[("csrf", &vic_csrf), ("other", &b.to_string())],
    )
    .await;
    assert_eq!(status, 403);

    // With the token: merge, unmerge from the survivor's page, dismiss.
    let (status, location, _) = post_form(
        &app,
        &sales,
        &format!("/leads/{a}/merge"),
        &[
            ("csrf", &csrf),
            ("other", &b.to_string()),
            ("name", "other"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some(format!("/leads/{a}").as_str()))
    );
    assert_eq!(app.lead(a).await["name"], "Page Two");
    let (_, page) = get(&app, &sales, &format!("/leads/{a}")).await;
    assert!(page.contains(&format!("data-unmerge=\"{b}\"")), "{page}");
    let (status, location, _) = post_form(
        &app,
        &sales,
        &format!("/leads/{a}/unmerge"),
        &[("csrf", &csrf), ("lead", &b.to_string())],
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some(format!("/leads/{b}").as_str()))
    );
    assert_eq!(app.lead(a).await["name"], "Page One");
    let (status, location, _) = post_form(
        &app,
        &sales,
        &format!("/leads/{a}/duplicates/{c}/dismiss"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/duplicates")));
    assert!(history_has(
        &app.lead(c).await,
        "duplicate dismissed",
        "not the same person"
    ));
}

#[tokio::test]
async fn the_survivors_next_jivo_answer_shows_the_merged_card() {
    let app = spawn_app().await;
    let a = worked_lead(&app, 1, "Card One", "new", None).await;
    let b = worked_lead(&app, 2, "Card Two", "new", None).await;
    merge(
        &app,
        a,
        b,
        json!({"name": "other", "primary_phone": "other"}),
    )
    .await;
    // The absorbed visitor chats again: the answer is the merged lead.
    let (status, answer) = app.jivo(&accepted(9, "visitor-2", "", None, None)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(lead_id(&answer), a);
    assert_eq!(answer["contact_info"]["name"], "Card Two");
    assert_eq!(answer["contact_info"]["phone"], "+1 408 498 7002");
    assert_eq!(answer["contact_info"]["email"], "person1@example.com");
}

#[tokio::test]
async fn a_fold_made_before_merges_were_recorded_is_rebuilt_from_its_deliveries() {
    let app = spawn_app().await;
    let known = chat(
        &app,
        1,
        "known-1",
        "Kim Known",
        Some("kim@example.com"),
        None,
    )
    .await;
    let anon = chat(&app, 2, "anon-2", "", None, None).await;
    let before = app.lead(anon).await;
    assert_eq!(
        chat(&app, 3, "anon-2", "", Some("kim@example.com"), None).await,
        known
    );
    // As a database upgraded from version 7 has it: the fold, no record.
    app.execute(
        "DELETE FROM merges WHERE absorbed = ?1",
        crm_responder::args![anon],
    );
    let undone = unmerge(&app, known, anon).await;
    let restored = &undone["restored"];
    for key in ["visitor_ids", "conversations", "name", "status", "tags"] {
        assert_eq!(restored[key], before[key], "{key}");
    }
    assert!(
        !app.lead(known).await["visitor_ids"]
            .to_string()
            .contains("anon-2")
    );
    // Recorded now, undone: the pair stays apart.
    assert_eq!(
        chat(&app, 4, "anon-2", "", Some("kim@example.com"), None).await,
        known
    );
    assert!(
        app.lead(anon).await["possible_duplicates"]
            .as_array()
            .unwrap()
            .contains(&json!(known))
    );
}
