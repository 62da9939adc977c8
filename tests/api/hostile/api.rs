//! Rows for the JSON API, health, metrics and paths that do not exist.

use base64::Engine;

use super::{Case, basic};
use crate::helpers::*;

/// Rows for the JSON API.
pub fn cases() -> Vec<Case> {
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
        // Erasing is for admins (tests/api/privacy.rs).
        Case::new("DELETE a lead as sales", "DELETE", "/api/leads/1", 403).authed(),
        Case::new("PUT a lead without credentials", "PUT", "/api/leads/1", 405).body("{}"),
    ]
}

/// Rows for health, metrics and paths that do not exist.
pub fn service_cases() -> Vec<Case> {
    vec![
        Case::new("healthz with a query", "GET", "/healthz?x=%00", 200),
        Case::new("POST on healthz", "POST", "/healthz", 405).body("{}"),
        Case::new("DELETE on metrics", "DELETE", "/metrics", 405),
        Case::new("metrics with garbage Authorization", "GET", "/metrics", 200)
            .header("authorization", b"\xff\xfe".to_vec()),
        Case::new("unknown path", "GET", "/nope", 404),
        Case::new("root: to the leads", "GET", "/", 303),
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
