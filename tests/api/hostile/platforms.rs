//! Rows for `POST /webhooks/rocketchat` and `POST /webhooks/livechat`.

use serde_json::{Value, json};

use super::{Case, HTML_NAME, SQL_NAME, basic, huge_name};
use crate::helpers::*;

const RC: &str = "/webhooks/rocketchat";
const LC: &str = "/webhooks/livechat";

/// A Rocket.Chat `LivechatSession` for room `room`, changed by `edit`.
fn session(room: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = fixture("rocketchat/LivechatSession.json");
    body["_id"] = room.into();
    body["visitor"]["_id"] = format!("v-{room}").into();
    body["visitor"]["token"] = format!("t-{room}").into();
    body["messages"] = json!([]);
    edit(&mut body);
    body.to_string().into_bytes()
}

/// A LiveChat v3 `incoming_chat` with the right secret, changed by `edit`.
fn incoming(chat: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = fixture("livechat/v3/incoming_chat.json");
    body["webhook_id"] = format!("wh-{chat}").into();
    body["payload"]["chat"]["id"] = chat.into();
    body["payload"]["chat"]["users"][0]["id"] = format!("c-{chat}").into();
    body["payload"]["chat"]["users"][0]["email"] = Value::Null;
    body["payload"]["chat"]["users"][0]["phone_number"] = Value::Null;
    edit(&mut body);
    body.to_string().into_bytes()
}

fn rc(name: &'static str, body: impl Into<Vec<u8>>, expect: u16) -> Case {
    Case::post(name, RC, body, expect).header("x-rocketchat-livechat-token", ROCKETCHAT_TOKEN)
}

fn lc_v2(name: &'static str, body: impl Into<Vec<u8>>, expect: u16) -> Case {
    Case::post(name, LC, body, expect)
        .header("authorization", basic(LIVECHAT_USER, LIVECHAT_PASSWORD))
}

/// Rows for the Rocket.Chat and LiveChat webhooks.
pub fn cases() -> Vec<Case> {
    let thousand_phones: Vec<Value> = (0..1000)
        .map(|i| json!({"phoneNumber": format!("+1 408 555 {i:04}")}))
        .collect();
    vec![
        // Rocket.Chat: credentials.
        Case::post("rocketchat without token", RC, session("r1", |_| {}), 401),
        Case::post("rocketchat wrong token", RC, session("r2", |_| {}), 401)
            .header("x-rocketchat-livechat-token", "wrong"),
        Case::post(
            "rocketchat token of invalid UTF-8",
            RC,
            session("r3", |_| {}),
            401,
        )
        .header("x-rocketchat-livechat-token", b"\xff\xfe".to_vec()),
        Case::post(
            "rocketchat jivo token in header",
            RC,
            session("r4", |_| {}),
            401,
        )
        .header("x-rocketchat-livechat-token", JIVO_TOKEN),
        // Rocket.Chat: bodies.
        rc("rocketchat not JSON", "not json", 400),
        rc("rocketchat JSON array", "[]", 400),
        rc("rocketchat nested 10,000 deep", "[".repeat(10_000), 400),
        rc(
            "rocketchat invalid UTF-8",
            b"{\"type\":\"\xff\"}".to_vec(),
            400,
        ),
        rc(
            "rocketchat visitor of the wrong type",
            session("r5", |b| b["visitor"] = json!("a string")),
            200,
        ),
        rc(
            "rocketchat email of the wrong type",
            session("r6", |b| b["visitor"]["email"] = json!({"address": 5})),
            200,
        ),
        rc(
            "rocketchat 1,000 phones",
            session("r7", |b| {
                b["visitor"]["phone"] = Value::Array(thousand_phones)
            }),
            200,
        ),
        rc(
            "rocketchat SQL and HTML in names",
            session("r8", |b| {
                b["visitor"]["name"] = SQL_NAME.into();
                b["agent"]["name"] = HTML_NAME.into();
            }),
            200,
        ),
        rc(
            "rocketchat crmData with a lead id beyond 64 bits",
            session("r9", |b| {
                b["crmData"] = json!({"lead_id": 123456789012345678901234567890u128})
            }),
            200,
        ),
        rc(
            "rocketchat crmData with a negative float lead id",
            session("r10", |b| b["crmData"] = json!({"lead_id": -1.5})),
            200,
        ),
        rc(
            "rocketchat 900 KB visitor name",
            session("r11", |b| b["visitor"]["name"] = huge_name('r').into()),
            200,
        ),
        Case::new("rocketchat GET", "GET", RC, 405),
        // LiveChat: credentials.
        Case::post(
            "livechat v3 wrong secret",
            LC,
            incoming("l1", |b| b["secret_key"] = "nope".into()),
            401,
        ),
        Case::post(
            "livechat v3 secret of the wrong type",
            LC,
            incoming("l2", |b| b["secret_key"] = json!(["x"])),
            401,
        ),
        Case::post(
            "livechat v2 without credentials",
            LC,
            fixture("livechat/v2/chat_started.json").to_string(),
            401,
        ),
        Case::post(
            "livechat v2 wrong password",
            LC,
            fixture("livechat/v2/chat_started.json").to_string(),
            401,
        )
        .header("authorization", basic(LIVECHAT_USER, "wrong")),
        Case::post(
            "livechat garbage authorization",
            LC,
            fixture("livechat/v2/chat_started.json").to_string(),
            401,
        )
        .header("authorization", b"Basic \xff\xfe==".to_vec()),
        Case::post(
            "livechat no envelope, no credentials",
            LC,
            r#"{"hello":"world"}"#,
            401,
        ),
        // LiveChat: bodies.
        lc_v2("livechat not JSON", "not json", 400),
        lc_v2(
            "livechat authenticated body of no known envelope",
            r#"{"hello":"world"}"#,
            400,
        ),
        Case::post(
            "livechat v3 payload of the wrong type",
            LC,
            incoming("l3", |b| b["payload"] = json!(42)),
            200,
        ),
        Case::post(
            "livechat v3 customer email of 10,000 characters",
            LC,
            incoming("l4", |b| {
                b["payload"]["chat"]["users"][0]["email"] =
                    format!("{}@example.com", "a".repeat(10_000)).into()
            }),
            200,
        ),
        Case::post(
            "livechat v3 license_id beyond 64 bits",
            LC,
            incoming("l5", |b| {
                b["license_id"] = json!(123456789012345678901234567890u128)
            }),
            200,
        ),
        Case::new("livechat PUT", "PUT", LC, 405),
    ]
}
