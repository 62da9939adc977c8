//! `/metrics` read as Prometheus text by a strict parser.

use std::collections::BTreeMap;

use crate::helpers::*;

/// A strict reader of the Prometheus text format: every sample belongs to a
/// family declared by `# TYPE`, label values are quoted and escaped, values
/// are numbers. Returns `name{labels}` (labels sorted) → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            if kind == "TYPE" {
                let t = tail.unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_owned(), t.to_owned()).is_none(),
                    "TYPE twice: {line}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line}");
            }
            continue;
        }
        assert!(!line.is_empty(), "blank line");
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{line}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            loop {
                let start = chars.peek().unwrap().0;
                while chars.peek().unwrap().1 != '=' {
                    chars.next();
                }
                let key = &inner[start..chars.peek().unwrap().0];
                chars.next();
                assert_eq!(chars.next().unwrap().1, '"', "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap().1 {
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        '"' => break,
                        '\n' => panic!("raw newline in {line}"),
                        c => value.push(c),
                    }
                }
                labels.push(format!("{key}={value:?}"));
                match chars.next().unwrap() {
                    (_, ',') => continue,
                    (i, '}') => {
                        rest = &inner[i + 1..];
                        break;
                    }
                    (_, c) => panic!("unexpected {c} in {line}"),
                }
            }
        }
        let value: f64 = rest
            .trim_start_matches(' ')
            .parse()
            .unwrap_or_else(|_| panic!("value of {line}"));
        labels.sort();
        samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let app = spawn_app().await;
    let ann = accepted(1, "1", "Ann Metric", Some("ann@metrics.example"), None);
    assert_eq!(app.jivo(&ann).await.0, 200);
    assert_eq!(app.jivo(&ann).await.0, 200, "a redelivery");
    let bob = accepted(2, "2", "Bob Metric", Some("bob@metrics.example"), None);
    assert_eq!(app.jivo(&bob).await.0, 200);
    let ann_phone = accepted(
        3,
        "1",
        "Ann Metric",
        Some("ann@metrics.example"),
        Some("+1 408 498 7855"),
    );
    assert_eq!(app.jivo(&ann_phone).await.0, 200, "merged: a phone added");
    let response = app
        .post_raw(&format!("/webhooks/jivo/{JIVO_TOKEN}"), "{\"broken\":")
        .await;
    assert_eq!(response.status(), 400);

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let m = parse_prometheus(&response.text().await.unwrap());
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:#?}"));
    assert_eq!(
        get(r#"crm_deliveries_total{event="chat_accepted",outcome="applied",platform="jivo"}"#),
        3.0
    );
    assert_eq!(
        get(r#"crm_deliveries_total{event="chat_accepted",outcome="redelivery",platform="jivo"}"#),
        1.0
    );
    assert_eq!(
        get(r#"crm_deliveries_total{event="unknown",outcome="rejected",platform="jivo"}"#),
        1.0
    );
    assert_eq!(get("crm_leads_created_total{}"), 2.0);
    assert_eq!(get("crm_leads_merged_total{}"), 1.0);
    assert_eq!(get("crm_leads_folded_total{}"), 0.0);
    assert_eq!(get("crm_inbox_failures_total{}"), 1.0);
    assert_eq!(get("crm_answer_seconds_count{}"), 5.0);
    assert_eq!(get(r#"crm_answer_seconds_bucket{le="+Inf"}"#), 5.0);
    assert!(get("crm_answer_seconds_sum{}") > 0.0);
    assert_eq!(get("crm_spool_depth{}"), 0.0);
    if app.db_url.is_none() {
        // The size of the SQLite file and its WAL (no file on PostgreSQL).
        assert!(get("crm_database_bytes{}") > 0.0);
    } else {
        // PostgreSQL's connection pool, which SQLite has not.
        let open = get(r#"crm_db_pool_connections{state="open"}"#);
        assert!(open >= 1.0, "{open} connections open");
        assert!(get(r#"crm_db_pool_connections{state="busy"}"#) <= open);
    }
}
