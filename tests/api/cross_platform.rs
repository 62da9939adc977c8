//! One visitor across Jivo, Rocket.Chat and LiveChat: one lead, under
//! concurrency and under each platform's way of retrying.

use serde_json::{Value, json};

use crate::helpers::*;

/// A Rocket.Chat `LivechatSession` for a visitor, with its own room and message ids.
fn rocketchat_session(room: &str, visitor: &str, email: &str, phone: &str) -> Value {
    named_rocketchat_session("Rita Cross", room, visitor, email, phone)
}

/// [`rocketchat_session`] for a visitor of another name.
fn named_rocketchat_session(
    name: &str,
    room: &str,
    visitor: &str,
    email: &str,
    phone: &str,
) -> Value {
    json!({
        "type": "LivechatSession", "_id": room,
        "visitor": {"_id": visitor, "token": format!("tok-{visitor}"), "name": name,
                    "username": format!("guest-{visitor}"), "email": [{"address": email}],
                    "phone": [{"phoneNumber": phone}]},
        "agent": {"_id": "ag1", "username": "agent1", "name": "Agent One"},
        "messages": [
            {"_id": format!("{room}-1"), "username": format!("guest-{visitor}"), "msg": "hi",
             "ts": "2026-01-01T10:00:00.000Z"},
            {"_id": format!("{room}-2"), "username": "agent1", "agentId": "ag1", "msg": "hello",
             "ts": "2026-01-01T10:00:05.000Z"}
        ]
    })
}

/// A LiveChat v3 `incoming_chat` for a customer, with its own chat and event ids.
fn livechat_chat(chat: &str, customer: &str, email: &str, phone: &str) -> Value {
    named_livechat_chat("Rita Cross", chat, customer, email, phone)
}

/// [`livechat_chat`] for a customer of another name.
fn named_livechat_chat(name: &str, chat: &str, customer: &str, email: &str, phone: &str) -> Value {
    json!({
        "webhook_id": "wh1", "secret_key": LIVECHAT_SECRET, "action": "incoming_chat",
        "organization_id": "org",
        "payload": {"chat": {"id": chat, "users": [
            {"id": customer, "type": "customer", "name": name, "email": email,
             "phone_number": phone},
            {"id": "agent@example.com", "type": "agent", "name": "Agent Two"}],
          "thread": {"id": format!("{chat}-T"), "events": [
            {"id": format!("{chat}-e1"), "type": "message", "author_id": customer, "text": "hey",
             "created_at": "2026-01-01T11:00:00Z"}]}}}
    })
}

/// A Jivo `chat_finished` for a visitor.
fn jivo_finished(name: &str, chat: u64, number: &str, email: &str, phone: &str) -> Value {
    let mut body = fixture("jivo/chat_finished.json");
    body["chat_id"] = chat.into();
    body["visitor"]["number"] = number.into();
    body["visitor"]["name"] = name.into();
    body["visitor"]["email"] = email.into();
    body["visitor"]["phone"] = phone.into();
    body
}

/// Posts one delivery of `platform` (0 Jivo, 1 Rocket.Chat, 2 LiveChat)
/// from a spawned task; returns status and answer.
async fn post(client: reqwest::Client, base: String, platform: usize, body: Value) -> (u16, Value) {
    let request = match platform {
        0 => client.post(format!("{base}/webhooks/jivo/{JIVO_TOKEN}")),
        1 => client
            .post(format!("{base}/webhooks/rocketchat"))
            .header("X-RocketChat-Livechat-Token", ROCKETCHAT_TOKEN),
        // v2 bodies need the Basic credentials; v3 bodies carry their secret.
        _ => client
            .post(format!("{base}/webhooks/livechat"))
            .basic_auth(LIVECHAT_USER, Some(LIVECHAT_PASSWORD)),
    };
    let response = request
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_visitor_on_jivo_then_rocketchat_then_livechat_is_one_lead() {
    let app = spawn_app().await;
    let (status, jivo) = app
        .jivo(&accepted(
            7001,
            "31",
            "Rita Cross",
            Some("rita@example.com"),
            None,
        ))
        .await;
    assert_eq!(status, 200);
    let id = lead_id(&jivo);
    let (status, rc) = app
        .rocketchat(&rocketchat_session(
            "room-1",
            "rc-v1",
            "RITA@example.com",
            "+1 408-498-7855",
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(rc["lead_id"], id);
    // LiveChat knows her only by the phone, written another way.
    let (status, lc) = app
        .livechat(&livechat_chat("LC-1", "cust-1", "", "(408) 498-7855"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(lc["lead_id"], id);

    let lead = app.lead(id).await;
    let mut chats: Vec<(String, String)> = lead["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["platform"].as_str().unwrap().to_owned(),
                c["chat_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    chats.sort();
    assert_eq!(
        chats,
        [
            ("jivo".to_owned(), "7001".to_owned()),
            ("livechat".to_owned(), "LC-1".to_owned()),
            ("rocketchat".to_owned(), "room-1".to_owned()),
        ]
    );
    assert_eq!(
        contacts(&lead, "emails"),
        [("rita@example.com".to_owned(), true)]
    );
    assert_eq!(
        contacts(&lead, "phones"),
        [("+14084987855".to_owned(), true)]
    );
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_deliveries_across_platforms_make_one_lead_per_person() {
    // A generous deadline: this test is about identity, not the busy answer.
    let app = spawn_app_with(|c| c.jivo.answer_deadline_ms = 60_000).await;
    const PEOPLE: usize = 4;
    let mut tasks = Vec::new();
    for k in 0..200usize {
        let person = k % PEOPLE;
        let platform = (k / PEOPLE) % 3;
        let email = format!("person{person}@example.com");
        let formats = [
            format!("+1 408-498-785{person}"),
            format!("(408) 498-785{person}"),
            format!("1 (408) 498 785{person}"),
        ];
        let phone = formats[k % 3].clone();
        let body = match platform {
            0 => {
                let mut body = accepted(
                    10_000 + k as u64,
                    &format!("n{k}"),
                    &format!("Person {person}"),
                    Some(&email),
                    Some(&phone),
                );
                body["user_token"] = Value::Null;
                body
            }
            1 => rocketchat_session(&format!("room-{k}"), &format!("v{k}"), &email, &phone),
            _ => livechat_chat(&format!("LC-{k}"), &format!("c{k}"), &email, &phone),
        };
        tasks.push(tokio::spawn(post(
            app.client.clone(),
            app.url(""),
            platform,
            body,
        )));
    }
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(answer["crm_link"].is_string(), "{answer}");
    }
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), PEOPLE as i64);
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM lead_emails"),
        PEOPLE as i64
    );
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM lead_phones"),
        PEOPLE as i64
    );
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM conversations"), 200);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 200);
    // Rocket.Chat transcripts have two messages, LiveChat's one, Jivo's none.
    let expected: i64 = (0..200usize)
        .map(|k| match (k / PEOPLE) % 3 {
            1 => 2,
            2 => 1,
            _ => 0,
        })
        .sum();
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), expected);
    for person in 0..PEOPLE {
        let (_, found) = app
            .api(&format!("/api/leads?email=person{person}@example.com"))
            .await;
        let lead = &found["leads"][0];
        assert_eq!(
            lead["conversations"].as_array().unwrap().len(),
            200 / PEOPLE
        );
        assert_eq!(
            contacts(lead, "phones"),
            [(format!("+1408498785{person}"), true)]
        );
    }
}

#[tokio::test]
async fn each_platforms_retries_interleaved_with_other_traffic_change_nothing() {
    let app = spawn_app_with(|c| c.jivo.answer_deadline_ms = 60_000).await;
    let email = "retry.rita@example.com";
    let firsts = vec![
        (
            0,
            jivo_finished("Rita Cross", 8001, "41", email, "+1 408-498-7800"),
        ),
        (
            1,
            rocketchat_session("room-r", "rc-r", email, "(408) 498-7800"),
        ),
        (2, livechat_chat("LC-R", "cust-r", email, "4084987800")),
        (2, {
            let mut v2 = fixture("livechat/v2/chat_changed.json");
            v2["event_type"] = "chat_ended".into();
            v2["visitor"]["email"] = email.into();
            v2["visitor"]["id"] = "S-retry".into();
            v2["chat"]["id"] = "V2-R".into();
            v2
        }),
    ];
    let mut ids = Vec::new();
    for (platform, body) in &firsts {
        let (status, answer) = post(app.client.clone(), app.url(""), *platform, body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        // Jivo answers chat_finished with a bare {"result":"ok"}.
        ids.extend(answer["lead_id"].as_i64());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids[0];
    let before = app.lead(id).await;
    assert_eq!(before["conversations"].as_array().unwrap().len(), 4);

    // Rocket.Chat resends the same body up to 10 times, Jivo and LiveChat a
    // few; meanwhile other visitors keep chatting.
    let mut tasks = Vec::new();
    for round in 0..10u64 {
        for (n, (platform, body)) in firsts.iter().enumerate() {
            if *platform != 1 && round >= 3 {
                continue;
            }
            tasks.push(tokio::spawn(post(
                app.client.clone(),
                app.url(""),
                *platform,
                body.clone(),
            )));
            let other = round * 10 + n as u64;
            let noise = match n % 3 {
                0 => jivo_finished(
                    &format!("Zed Noise{other}"),
                    20_000 + other,
                    &format!("z{other}"),
                    &format!("zed{other}@elsewhere.org"),
                    &format!("+44 20 7946 {:04}", other),
                ),
                1 => named_rocketchat_session(
                    &format!("Quinn Other{other}"),
                    &format!("noise-{other}"),
                    &format!("nv{other}"),
                    &format!("quinn{other}@elsewhere.org"),
                    &format!("+44 20 7946 {:04}", 5000 + other),
                ),
                _ => named_livechat_chat(
                    &format!("Yu Else{other}"),
                    &format!("NOISE-{other}"),
                    &format!("nc{other}"),
                    &format!("yu{other}@elsewhere.org"),
                    &format!("+44 20 7946 {:04}", 8000 + other),
                ),
            };
            tasks.push(tokio::spawn(post(
                app.client.clone(),
                app.url(""),
                n % 3,
                noise,
            )));
        }
    }
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(app.lead(id).await, before);
    let deliveries: i64 = app.sql(&format!(
        "SELECT count(*) FROM deliveries WHERE lead_id = {id}"
    ));
    assert_eq!(deliveries, 4);
}

#[tokio::test]
async fn a_locked_database_is_503_for_rocketchat_and_livechat_and_the_retry_is_applied() {
    if skipped_on_postgres("a SQLite write lock held by a test connection") {
        return;
    }
    let app = spawn_app_with(|c| c.database.busy_timeout_ms = 200).await;
    let locker = rusqlite::Connection::open(&app.db_path).unwrap();
    locker
        .execute_batch(
            "BEGIN EXCLUSIVE; INSERT INTO leads (created_at, updated_at) VALUES ('x', 'x');",
        )
        .unwrap();
    let rc = fixture("rocketchat/LivechatSession.json");
    let lc = fixture("livechat/v3/incoming_chat.json");
    let (status, answer) = app.rocketchat(&rc).await;
    assert_eq!(
        (status, &answer["result"]),
        (503, &json!("error")),
        "{answer}"
    );
    let (status, answer) = app.livechat(&lc).await;
    assert_eq!(
        (status, &answer["result"]),
        (503, &json!("error")),
        "{answer}"
    );

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // Both platforms retry a 5xx with the same body: applied once now.
    let (status, answer) = app.rocketchat(&rc).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = app.livechat(&lc).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 2);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 6);
}
