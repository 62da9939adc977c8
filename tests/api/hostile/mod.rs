//! Hostile input: one table of bad bodies and requests on every endpoint,
//! sent as raw bytes over a real socket (so nothing is cleaned up on the
//! way), each with the exact status it must get. Every error is a JSON error,
//! nothing panics, the service stays healthy, and what is stored is stored
//! verbatim and harmless.
//!
//! New endpoints add rows as plain data: a file here with a function
//! returning `Vec<Case>`, appended in [`table`].

mod api;
mod jivo;
mod platforms;
mod wire;

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;
use serde_json::Value;

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

    /// With another method (same body).
    pub fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
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

/// Strings that must be stored as the literal text they are.
const SQL_NAME: &str = "Robert'); DROP TABLE leads;-- \" OR 1=1 --";
/// HTML that must come back as a JSON string, never as markup.
const HTML_NAME: &str = "<script>alert('x')</script><img src=x onerror=alert(1)>";
/// A NUL inside a name (escaped in the JSON).
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

/// The whole table. Rows for new endpoints are appended here.
fn table() -> Vec<Case> {
    let mut table = jivo::cases();
    table.extend(api::cases());
    table.extend(api::service_cases());
    table.extend(platforms::cases());
    table
}

/// Every table, index and constraint with its definition, to prove nothing
/// was dropped or altered: SQLite's schema table, or PostgreSQL's catalog.
fn schema(app: &TestApp) -> Vec<(String, String)> {
    app.store(|db| {
        let sql = db.dialect().pick(
            "SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name",
            "SELECT 'table ' || table_name::text,
                    string_agg(column_name::text || ' ' || data_type::text || ' '
                               || is_nullable::text || ' ' || coalesce(column_default::text, ''),
                               ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_schema = 'public'
             GROUP BY table_name
             UNION ALL
             SELECT 'index ' || indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public'
             UNION ALL
             SELECT 'constraint ' || c.conname::text, pg_get_constraintdef(c.oid)
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname = 'public'
             ORDER BY 1, 2",
        );
        db.query_all(sql, &[], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    })
}

fn deliveries(app: &TestApp) -> i64 {
    app.sql("SELECT count(*) FROM deliveries")
}

fn stored_verbatim(app: &TestApp, body: &[u8]) -> bool {
    app.sql_with::<i64>(
        "SELECT count(*) FROM deliveries WHERE body = ?1",
        crm_responder::args![body],
    ) > 0
}

#[tokio::test]
async fn every_hostile_request_gets_its_defined_status_and_a_json_error() {
    let app = spawn_app().await;
    let schema_before = schema(&app);
    assert!(!schema_before.is_empty());
    let table = table();
    assert!(table.len() >= 40, "the table has {} rows", table.len());
    let mut failures = Vec::new();
    for (i, case) in table.iter().enumerate() {
        // One loopback address per row, so that rows with bad credentials do
        // not get the rows after them throttled.
        let source = IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
        let before = deliveries(&app);
        let raw = match wire::send(app.addr, source, case).await {
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
            // An accepted body is stored, and so is one refused with 400
            // (marked failed, for a replay); nothing else is stored.
            let kept = matches!(raw.status, 200 | 400);
            if kept && !stored_verbatim(&app, &case.body) {
                problems.push("body not stored verbatim".into());
            }
            if !kept && after != before {
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
    if app.db_url.is_none() {
        assert_eq!(app.sql::<String>("PRAGMA integrity_check"), "ok");
    }

    // Injection strings are stored as the literal text they are, and come
    // back as JSON strings.
    for name in [
        SQL_NAME,
        HTML_NAME,
        NUL_NAME,
        &huge_name('a'),
        &huge_name('b'),
    ] {
        let id: i64 = app
            .store(|db| {
                db.query_opt(
                    "SELECT id FROM leads WHERE name = ?1",
                    crm_responder::args![name],
                    |r| r.get(0),
                )
                .unwrap()
            })
            .unwrap_or_else(|| panic!("{:?} not stored verbatim", &name[..name.len().min(40)]));
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
        // PostgreSQL text holds no U+0000: it is stored as U+FFFD there.
        let expected = match app.db_url {
            Some(_) => name.replace('\0', "\u{FFFD}"),
            None => name.to_owned(),
        };
        assert_eq!(lead["name"], expected);
    }
    // Oversized identifiers identify nobody, and one delivery adds at most 10 phones.
    let long_emails: i64 = app.sql("SELECT count(*) FROM lead_emails WHERE length(raw) > 254");
    assert_eq!(long_emails, 0);
    let most_phones: i64 = app.sql(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM lead_phones GROUP BY lead_id) AS counts",
    );
    assert!(most_phones <= 10, "a lead got {most_phones} phones");
}
