//! Rows for `POST /webhooks/jivo/{token}`.

use serde_json::{Value, json};

use super::{Case, HTML_NAME, NUL_NAME, SQL_NAME, huge_name};
use crate::helpers::*;

/// The Jivo webhook path with the right token.
pub fn path() -> String {
    format!("/webhooks/jivo/{JIVO_TOKEN}")
}

/// A `chat_accepted` body with a fresh visitor, changed by `edit`.
fn accepted_with(chat: u64, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = accepted(chat, &format!("h{chat}"), "Hostile Visitor", None, None);
    edit(&mut body);
    body.to_string().into_bytes()
}
/// Deeply nested JSON: `depth` arrays inside a Jivo envelope.
fn nested(depth: usize) -> Vec<u8> {
    format!(
        r#"{{"event_name":"chat_finished","chat_id":1,"x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes()
}

/// Rows for `POST /webhooks/jivo/{token}`.
pub fn cases() -> Vec<Case> {
    let p = path;
    let thousand_phones: Vec<String> = (0..1000).map(|i| format!("+1 408 555 {i:04}")).collect();
    vec![
        Case::post("not JSON", p(), "hello, world", 400),
        Case::post("empty body", p(), "", 400),
        Case::post("truncated JSON", p(), r#"{"event_name": "#, 400),
        Case::post("a JSON array", p(), "[1,2,3]", 400),
        Case::post("a JSON number", p(), "42", 400),
        Case::post("a JSON string", p(), r#""chat_accepted""#, 400),
        Case::post("JSON null", p(), "null", 400),
        Case::post("arrays nested 10,000 deep", p(), "[".repeat(10_000), 400),
        Case::post(
            "envelope with 10,000-deep nesting",
            p(),
            nested(10_000),
            400,
        ),
        Case::post("envelope with 100-deep nesting", p(), nested(100), 200),
        Case::post(
            "invalid UTF-8",
            p(),
            b"{\"event_name\":\"chat_finished\",\"chat_id\":2,\"x\":\"\xff\xfe\xc0\"}".to_vec(),
            400,
        ),
        Case::post(
            "raw NUL byte",
            p(),
            b"{\"event_name\":\"chat\x00finished\"}".to_vec(),
            400,
        ),
        Case::post(
            "UTF-8 BOM before JSON",
            p(),
            b"\xef\xbb\xbf{\"event_name\":\"chat_finished\"}".to_vec(),
            400,
        ),
        Case::post("missing envelope keys: {}", p(), "{}", 400),
        Case::post(
            "missing event_name",
            p(),
            r#"{"chat_id":7,"visitor":{"name":"x"}}"#,
            400,
        ),
        Case::post(
            "event_name null",
            p(),
            r#"{"event_name":null,"chat_id":7}"#,
            400,
        ),
        Case::post(
            "event_name an object",
            p(),
            r#"{"event_name":{"a":1},"chat_id":7}"#,
            400,
        ),
        Case::post(
            "event_name an array",
            p(),
            r#"{"event_name":["chat_accepted"]}"#,
            400,
        ),
        Case::post("event_name blank", p(), r#"{"event_name":"   "}"#, 400),
        Case::post(
            "event_name a number (unknown event)",
            p(),
            r#"{"event_name":42,"chat_id":7}"#,
            200,
        ),
        Case::post(
            "unknown event name",
            p(),
            r#"{"event_name":"'; DROP TABLE deliveries;--"}"#,
            200,
        ),
        Case::post(
            "chat_id beyond 64 bits",
            p(),
            accepted_with(1, |b| {
                b["chat_id"] = json!(123456789012345678901234567890u128)
            }),
            200,
        ),
        Case::post(
            "negative chat_id",
            p(),
            accepted_with(2, |b| b["chat_id"] = json!(-5)),
            200,
        ),
        Case::post(
            "float chat_id",
            p(),
            accepted_with(3, |b| b["chat_id"] = json!(1.5)),
            200,
        ),
        Case::post(
            "exponent chat_id",
            p(),
            br#"{"event_name":"chat_finished","chat_id":1e400}"#.to_vec(),
            200,
        ),
        Case::post(
            "visitor number beyond 64 bits",
            p(),
            accepted_with(4, |b| {
                b["visitor"]["number"] = json!(-98765432109876543210987654321i128)
            }),
            200,
        ),
        Case::post(
            "visitor a string",
            p(),
            accepted_with(5, |b| b["visitor"] = json!("me")),
            200,
        ),
        Case::post(
            "visitor an array",
            p(),
            accepted_with(6, |b| b["visitor"] = json!([1, 2])),
            200,
        ),
        Case::post(
            "visitor name an object",
            p(),
            accepted_with(7, |b| b["visitor"]["name"] = json!({"a": 1})),
            200,
        ),
        Case::post(
            "visitor email a number",
            p(),
            accepted_with(8, |b| b["visitor"]["email"] = json!(12345)),
            200,
        ),
        Case::post(
            "visitor email an array",
            p(),
            accepted_with(9, |b| b["visitor"]["email"] = json!(["a@b.c"])),
            200,
        ),
        Case::post(
            "visitor phone a bool",
            p(),
            accepted_with(10, |b| b["visitor"]["phone"] = json!(true)),
            200,
        ),
        Case::post(
            "chat a string",
            p(),
            accepted_with(11, |b| b["chat"] = json!("x")),
            200,
        ),
        Case::post(
            "messages an object",
            p(),
            accepted_with(12, |b| b["chat"] = json!({"messages": {"a": 1}})),
            200,
        ),
        Case::post(
            "message timestamps of the wrong type",
            p(),
            accepted_with(13, |b| {
                b["event_name"] = json!("chat_finished");
                b["chat"] = json!({"messages": [
                    {"message": "a", "timestamp": "yesterday", "type": "visitor"},
                    {"message": "b", "timestamp": -99999999999999999999i128, "type": 5},
                    {"message": "c", "timestamp": 1e300},
                    {"message": ["d"], "timestamp": null},
                    7
                ]});
            }),
            200,
        ),
        Case::post(
            "tags a string",
            p(),
            accepted_with(14, |b| b["tags"] = json!("vip")),
            200,
        ),
        Case::post(
            "agents a number",
            p(),
            accepted_with(15, |b| b["agents"] = json!(3)),
            200,
        ),
        Case::post(
            "SQL injection name",
            p(),
            accepted_with(16, |b| b["visitor"]["name"] = json!(SQL_NAME)),
            200,
        ),
        Case::post(
            "HTML injection name",
            p(),
            accepted_with(17, |b| b["visitor"]["name"] = json!(HTML_NAME)),
            200,
        ),
        Case::post(
            "escaped NUL in name",
            p(),
            accepted_with(18, |b| b["visitor"]["name"] = json!(NUL_NAME)),
            200,
        ),
        Case::post(
            "900 KB name",
            p(),
            accepted_with(19, |b| b["visitor"]["name"] = json!(huge_name('a'))),
            200,
        ),
        Case::post(
            "a second, similar 900 KB name",
            p(),
            accepted_with(20, |b| b["visitor"]["name"] = json!(huge_name('b'))),
            200,
        ),
        Case::post(
            "email of 10,000 characters",
            p(),
            accepted_with(21, |b| {
                b["visitor"]["email"] = json!(format!("{}@example.com", "e".repeat(9_988)))
            }),
            200,
        ),
        Case::post(
            "1,000 phones in one string",
            p(),
            accepted_with(22, |b| {
                b["visitor"]["phone"] = json!(thousand_phones.join(", "))
            }),
            200,
        ),
        Case::post(
            "1,000 phones as a list",
            p(),
            accepted_with(23, |b| b["visitor"]["phone"] = json!(thousand_phones)),
            200,
        ),
        Case::post(
            "SQL injection in email and phone",
            p(),
            accepted_with(24, |b| {
                b["visitor"]["email"] = json!("x'--@example.com");
                b["visitor"]["phone"] = json!("1'; DELETE FROM leads; --5551234");
            }),
            200,
        ),
        Case::post(
            "text/plain content type",
            p(),
            accepted_with(25, |_| ()),
            200,
        )
        .header("content-type", "text/plain"),
        Case::post(
            "body over max_body_bytes",
            p(),
            format!(
                r#"{{"event_name":"chat_finished","pad":"{}"}}"#,
                "x".repeat(1_100_000)
            ),
            413,
        ),
        Case::post(
            "wrong token",
            "/webhooks/jivo/wrong-token",
            accepted_with(26, |_| ()),
            401,
        ),
        Case::post(
            "token as an encoded traversal",
            "/webhooks/jivo/..%2f..%2fx",
            accepted_with(27, |_| ()),
            401,
        ),
        Case::post(
            "token with a NUL",
            "/webhooks/jivo/%00",
            accepted_with(28, |_| ()),
            401,
        ),
        Case::post(
            "token of invalid UTF-8",
            "/webhooks/jivo/%ff%fe",
            accepted_with(29, |_| ()),
            401,
        ),
        Case::post(
            "path traversal",
            "/webhooks/jivo/../../x",
            accepted_with(30, |_| ()),
            404,
        ),
        Case::post(
            "no token",
            "/webhooks/jivo/",
            accepted_with(31, |_| ()),
            404,
        ),
        Case::post(
            "no token, no slash",
            "/webhooks/jivo",
            accepted_with(32, |_| ()),
            404,
        ),
        Case::post(
            "extra path segment",
            format!("{}/extra", path()),
            accepted_with(33, |_| ()),
            404,
        ),
        Case::new("GET on the webhook", "GET", p(), 405),
        Case::post("PUT on the webhook", p(), accepted_with(34, |_| ()), 405).method("PUT"),
        Case::new("DELETE on the webhook", "DELETE", p(), 405),
        Case::new("made-up method on the webhook", "BREW", p(), 405),
    ]
}
