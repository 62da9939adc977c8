//! Hostile input: one table of bad bodies and requests on every endpoint,
//! sent as raw bytes over a real socket (so nothing is cleaned up on the
//! way), each with the exact status it must get. Every error is a JSON error,
//! nothing panics, the service stays healthy, and what is stored is stored
//! verbatim and harmless.
//!
//! New endpoints add rows as plain data: a function returning `Vec<Case>`,
//! appended in [`table`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// One hostile request and the status it must get.
pub struct Case {
    /// What the row tries, for failure messages.
    pub name: &'static str,
    /// The request method, sent as is.
    pub method: &'static str,
    /// The request target, sent as is (no normalisation of `..` or `%`).
    pub path: String,
    /// Extra headers; values are raw bytes.
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// The body, sent with a Content-Length.
    pub body: Vec<u8>,
    /// The exact status expected.
    pub expect: u16,
}

impl Case {
    /// A request without body or headers.
    pub fn new(
        name: &'static str,
        method: &'static str,
        path: impl Into<String>,
        expect: u16,
    ) -> Case {
        Case {
            name,
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            expect,
        }
    }

    /// A POST of `body`.
    pub fn post(
        name: &'static str,
        path: impl Into<String>,
        body: impl Into<Vec<u8>>,
        expect: u16,
    ) -> Case {
        Case::new(name, "POST", path, expect).body(body)
    }

    /// With this body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.body = body.into();
        self
    }

    /// With this header.
    pub fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    /// With the test sales user's credentials.
    pub fn authed(self) -> Case {
        self.header("authorization", basic("sales", SALES_PASSWORD))
    }

    fn is_webhook(&self) -> bool {
        self.path.starts_with("/webhooks/")
    }
}

/// An HTTP Basic header value.
pub fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The Jivo webhook path with the right token.
fn jivo_path() -> String {
    format!("/webhooks/jivo/{JIVO_TOKEN}")
}

/// A `chat_accepted` body with a fresh visitor, changed by `edit`.
fn accepted_with(chat: u64, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = accepted(chat, &format!("h{chat}"), "Hostile Visitor", None, None);
    edit(&mut body);
    body.to_string().into_bytes()
}

/// Strings that must be stored as the literal text they are.
const SQL_NAME: &str = "Robert'); DROP TABLE leads;-- \" OR 1=1 --";
const HTML_NAME: &str = "<script>alert('x')</script><img src=x onerror=alert(1)>";
const NUL_NAME: &str = "Nul\u{0}Byte Name";

/// A multi-word name of about 900 KB: long enough to hurt any quadratic step.
fn huge_name(seed: char) -> String {
    let word: String = std::iter::repeat_n(seed, 9).collect();
    let mut name = String::with_capacity(900_000);
    while name.len() < 900_000 {
        name.push_str(&word);
        name.push(' ');
    }
    // Ends in a letter: names are stored trimmed.
    name.truncate(899_999);
    name.push('z');
    name
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
fn jivo_cases() -> Vec<Case> {
    let p = jivo_path;
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
            format!("{}/extra", jivo_path()),
            accepted_with(33, |_| ()),
            404,
        ),
        Case::new("GET on the webhook", "GET", p(), 405),
        Case::post("PUT on the webhook", p(), accepted_with(34, |_| ()), 405).method("PUT"),
        Case::new("DELETE on the webhook", "DELETE", p(), 405),
        Case::new("made-up method on the webhook", "BREW", p(), 405),
    ]
}

/// Rows for the JSON API.
fn api_cases() -> Vec<Case> {
    let long_phone: String = (0..1000).map(|i| format!("+1408555{i:04},")).collect();
    vec![
        Case::new("lead without credentials", "GET", "/api/leads/1", 401),
        Case::new("search without credentials", "GET", "/api/leads?q=a", 401),
        Case::new("bearer token", "GET", "/api/leads/1", 401)
            .header("authorization", "Bearer abc.def.ghi"),
        Case::new("Basic of non-base64", "GET", "/api/leads/1", 401)
            .header("authorization", "Basic !!!***"),
        Case::new("Basic without a colon", "GET", "/api/leads/1", 401).header(
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("salesonly")
            ),
        ),
        Case::new("Basic of invalid UTF-8", "GET", "/api/leads/1", 401).header(
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b"sales:\xff\xfe")
            ),
        ),
        Case::new(
            "Authorization of raw non-ASCII bytes",
            "GET",
            "/api/leads/1",
            401,
        )
        .header("authorization", b"Basic \xff\xfe\xfd".to_vec()),
        Case::new("empty Authorization", "GET", "/api/leads/1", 401).header("authorization", ""),
        Case::new("8 KB Authorization", "GET", "/api/leads/1", 401)
            .header("authorization", format!("Basic {}", "A".repeat(8192))),
        Case::new("wrong password", "GET", "/api/leads/1", 401)
            .header("authorization", basic("sales", "guess")),
        Case::new("unknown user", "GET", "/api/leads/1", 401)
            .header("authorization", basic("root", SALES_PASSWORD)),
        Case::new("SQL injection user", "GET", "/api/leads/1", 401)
            .header("authorization", basic("' OR '1'='1", "' OR '1'='1")),
        Case::new(
            "lead id traversal without credentials",
            "GET",
            "/api/leads/..%2f..%2fetc%2fpasswd",
            401,
        ),
        Case::new(
            "lead id traversal",
            "GET",
            "/api/leads/..%2f..%2fetc%2fpasswd",
            404,
        )
        .authed(),
        Case::new("raw traversal", "GET", "/api/leads/../../etc/passwd", 404).authed(),
        Case::new(
            "id beyond 64 bits",
            "GET",
            "/api/leads/99999999999999999999999",
            404,
        )
        .authed(),
        Case::new("negative id", "GET", "/api/leads/-1", 404).authed(),
        Case::new("zero id", "GET", "/api/leads/0", 404).authed(),
        Case::new("float id", "GET", "/api/leads/1.5", 404).authed(),
        Case::new("exponent id", "GET", "/api/leads/1e3", 404).authed(),
        Case::new("id with a NUL", "GET", "/api/leads/1%00", 404).authed(),
        Case::new("id of invalid UTF-8", "GET", "/api/leads/%ff", 404).authed(),
        Case::new("SQL injection id", "GET", "/api/leads/1%20OR%201=1", 404).authed(),
        Case::new("unknown id", "GET", "/api/leads/987654", 404).authed(),
        Case::new("limit=-1", "GET", "/api/leads?limit=-1", 400).authed(),
        Case::new(
            "limit beyond 64 bits",
            "GET",
            "/api/leads?limit=99999999999999999999",
            400,
        )
        .authed(),
        Case::new("limit=abc", "GET", "/api/leads?limit=abc", 400).authed(),
        Case::new("limit=0 (clamped)", "GET", "/api/leads?limit=0", 200).authed(),
        Case::new(
            "limit=1e9 (clamped)",
            "GET",
            "/api/leads?limit=1000000000",
            200,
        )
        .authed(),
        Case::new("cursor=abc", "GET", "/api/leads?cursor=abc", 400).authed(),
        Case::new(
            "cursor beyond 64 bits",
            "GET",
            "/api/leads?cursor=99999999999999999999",
            400,
        )
        .authed(),
        Case::new("negative cursor", "GET", "/api/leads?cursor=-5", 200).authed(),
        Case::new("repeated limit", "GET", "/api/leads?limit=1&limit=2", 400).authed(),
        Case::new("bad percent-encoding", "GET", "/api/leads?q=%zz%", 200).authed(),
        Case::new("query of invalid UTF-8", "GET", "/api/leads?q=%ff%fe", 200).authed(),
        Case::new(
            "SQL injection query",
            "GET",
            "/api/leads?q=%27%20OR%201%3D1%20--&email=x%27--%40example.com",
            200,
        )
        .authed(),
        Case::new("LIKE wildcards", "GET", "/api/leads?q=%25_%25", 200).authed(),
        Case::new(
            "1,000 phones in phone=",
            "GET",
            format!("/api/leads?phone={long_phone}"),
            200,
        )
        .authed(),
        Case::new(
            "10,000-character email=",
            "GET",
            format!("/api/leads?email={}%40x.io", "e".repeat(10_000)),
            200,
        )
        .authed(),
        Case::new("POST on leads", "POST", "/api/leads", 405)
            .authed()
            .body("{}"),
        Case::new("DELETE a lead", "DELETE", "/api/leads/1", 405).authed(),
        Case::new("PUT a lead without credentials", "PUT", "/api/leads/1", 405).body("{}"),
    ]
}

/// Rows for health, metrics and paths that do not exist.
fn service_cases() -> Vec<Case> {
    vec![
        Case::new("healthz with a query", "GET", "/healthz?x=%00", 200),
        Case::new("POST on healthz", "POST", "/healthz", 405).body("{}"),
        Case::new("DELETE on metrics", "DELETE", "/metrics", 405),
        Case::new("metrics with garbage Authorization", "GET", "/metrics", 200)
            .header("authorization", b"\xff\xfe".to_vec()),
        Case::new("unknown path", "GET", "/nope", 404),
        Case::new("root", "GET", "/", 404),
        Case::new("traversal to /etc/passwd", "GET", "/../../etc/passwd", 404),
        Case::new("encoded traversal", "GET", "/%2e%2e/%2e%2e/etc/passwd", 404),
        Case::new("unknown webhook platform", "POST", "/webhooks/msn", 404).body("{}"),
        Case::new("long path", "GET", format!("/{}", "a/".repeat(2000)), 404),
        Case::new(
            "absolute-form target",
            "GET",
            "http://evil.example/healthz",
            200,
        ),
    ]
}

/// The whole table. Rows for new endpoints are appended here.
fn table() -> Vec<Case> {
    let mut table = jivo_cases();
    table.extend(api_cases());
    table.extend(service_cases());
    table
}

impl Case {
    /// With another method (same body).
    pub fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
    }
}

/// A response read off the wire.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `case` as raw bytes from `source`, one connection per request.
async fn send(addr: SocketAddr, source: IpAddr, case: &Case) -> Result<Raw, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let mut request = format!(
        "{} {} HTTP/1.1\r\nhost: crm.test\r\nconnection: close\r\n",
        case.method, case.path
    )
    .into_bytes();
    for (name, value) in &case.headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    if !case.body.is_empty() || case.method == "POST" {
        request.extend_from_slice(format!("content-length: {}\r\n", case.body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&case.body);
    // The server may answer (413) before reading the whole body; that is fine.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
        .await
        .map_err(|_| "no answer within 60 s".to_owned())?
        .map_err(|e| format!("reading the answer: {e}"))?;
    parse_response(&response)
}

fn parse_response(bytes: &[u8]) -> Result<Raw, String> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete answer: {:?}", String::from_utf8_lossy(bytes)))?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Raw {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .map_err(|e| format!("bad chunk size: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

/// Table names and their SQL, to prove nothing was dropped or altered.
fn schema(app: &TestApp) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn deliveries(app: &TestApp) -> i64 {
    app.sql("SELECT count(*) FROM deliveries")
}

fn stored_verbatim(app: &TestApp, body: &[u8]) -> bool {
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    conn.query_row(
        "SELECT count(*) FROM deliveries WHERE body = ?1",
        [body],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

#[tokio::test]
async fn every_hostile_request_gets_its_defined_status_and_a_json_error() {
    let app = spawn_app().await;
    let schema_before = schema(&app);
    let table = table();
    assert!(table.len() >= 40, "the table has {} rows", table.len());
    let mut failures = Vec::new();
    for (i, case) in table.iter().enumerate() {
        // One loopback address per row, so that rows with bad credentials do
        // not get the rows after them throttled.
        let source = IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
        let before = deliveries(&app);
        let raw = match send(app.addr, source, case).await {
            Ok(raw) => raw,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let after = deliveries(&app);
        let mut problems = Vec::new();
        if raw.status != case.expect {
            problems.push(format!("status {} (expected {})", raw.status, case.expect));
        }
        if raw.status >= 400 {
            match serde_json::from_slice::<Value>(&raw.body) {
                Ok(body) if body["result"] == "error" && body["error"].is_string() => {}
                _ => problems.push(format!(
                    "error body is not a JSON error: {:?}",
                    String::from_utf8_lossy(&raw.body[..raw.body.len().min(200)])
                )),
            }
            if !raw
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json"))
            {
                problems.push(format!("content-type {:?}", raw.header("content-type")));
            }
        }
        if case.is_webhook() {
            let reached_ingest = case.path == jivo_path() && matches!(raw.status, 200 | 400);
            if reached_ingest && !stored_verbatim(&app, &case.body) {
                problems.push("body not stored verbatim".into());
            }
            if !reached_ingest && after != before {
                problems.push("a refused request was stored".into());
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}",
                case.name,
                case.method,
                case.path.chars().take(80).collect::<String>(),
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );

    assert!(app.is_running(), "the server task ended");
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "healthy after the table");
    assert_eq!(schema(&app), schema_before, "the schema is untouched");
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");

    // Injection strings are stored as the literal text they are, and come
    // back as JSON strings.
    for name in [
        SQL_NAME,
        HTML_NAME,
        NUL_NAME,
        &huge_name('a'),
        &huge_name('b'),
    ] {
        let id: i64 = conn
            .query_row("SELECT id FROM leads WHERE name = ?1", [name], |r| r.get(0))
            .unwrap_or_else(|e| {
                panic!("{:?} not stored verbatim: {e}", &name[..name.len().min(40)])
            });
        let r = app
            .client
            .get(app.url(&format!("/api/leads/{id}")))
            .basic_auth("sales", Some(SALES_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let lead: Value = r.json().await.unwrap();
        assert_eq!(lead["name"], name);
    }
    // Oversized identifiers identify nobody, and one delivery adds at most 10 phones.
    let long_emails: i64 = conn
        .query_row(
            "SELECT count(*) FROM lead_emails WHERE length(raw) > 254",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(long_emails, 0);
    let most_phones: i64 = conn
        .query_row("SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM lead_phones GROUP BY lead_id)", [], |r| r.get(0))
        .unwrap();
    assert!(most_phones <= 10, "a lead got {most_phones} phones");
}
