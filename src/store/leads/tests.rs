//! Tests of the module: decisions and packed rows written and read back,
//! long values clipped.

use super::changes::*;
use super::decision::*;
use super::entries::*;
use super::history::*;
use super::*;
use crate::crm::explain::Explanation;
use crate::crm::merge::{Change, ContactKind, Current};
use rusqlite::Connection;

#[test]
fn a_decision_stored_once_reads_as_one_json_object_per_row() {
    use crate::crm::resolve::{Resolution, Target};
    let merge: crate::config::MergePolicy = crate::config::test_merge_policy("existing");
    let resolution = Resolution {
        target: Target::Existing(7),
        rule: "matched by email \"ann@example.com\"".into(),
        duplicates: vec![(9, "phone belongs to lead 9".into())],
        fold: None,
    };
    let change = Change::Kept {
        field: "name".into(),
        incoming: "x".repeat(500),
        rule: "keep_existing".into(),
    };
    let why = Explanation::new(
        &merge,
        Vec::new(),
        None,
        &resolution,
        7,
        Vec::new(),
        vec![change.clone()],
    );
    let long = Change::Kept {
        field: "name".into(),
        incoming: "é\\\"".repeat(150),
        rule: "keep_existing".into(),
    };
    // What is stored: values clipped.
    let stored = |value: serde_json::Value| {
        let mut value = value;
        clip_strings(&mut value);
        value
    };
    let stored_why = stored(serde_json::json!(why));
    for change in [None, Some(&change), Some(&long)] {
        let decision = Decision::new(&why);
        assert!(
            !decision.text.contains("summary"),
            "the words are not stored"
        );
        let row = decision.row(change).change_json();
        let parsed = explanation(row.as_deref(), Some(&decision.text)).unwrap();
        // The words are made from what is stored, each line clipped.
        use serde::Deserialize;
        let from_stored = Explanation::deserialize(&stored_why).unwrap();
        let stored_change = change.map(|c| stored(serde_json::json!(c)));
        let expected = serde_json::json!({
            "decision": why.decision,
            "change": stored_change,
            "change_text": stored_change.as_ref().map(|c| {
                clipped(crate::crm::explain::describe(&Change::deserialize(c).unwrap()))
            }),
            "why": stored_why,
            "summary": from_stored.lines().into_iter().map(clipped).collect::<Vec<_>>(),
        });
        assert_eq!(parsed, expected);
        // And read as the words of the decision itself do, but for the
        // count of characters a clipped line gives.
        let head = |s: &str| s.chars().take(EXPLAINED_CHARS).collect::<String>();
        let words = why.lines();
        let summary = parsed["summary"].as_array().unwrap();
        assert_eq!(summary.len(), words.len());
        for (read, made) in summary.iter().zip(&words) {
            assert_eq!(head(read.as_str().unwrap()), head(made));
        }
        if let Some(c) = change {
            let text = parsed["change_text"].as_str().unwrap();
            assert_eq!(head(text), head(&crate::crm::explain::describe(c)));
        }
    }
}

/// A decision row that is not what this version writes (hand-edited,
/// foreign) reads as what it holds, without words, and never panics.
#[test]
fn an_odd_decision_row_reads_without_words() {
    let packed = r#"{"entries":[{"field":"name","old":null,"new":"A","change":0}]}"#;
    for decision in [
        r#"{"decision":"d"}"#,
        r#"{"why":{"changes":"x"}}"#,
        "not json",
    ] {
        let read = entries(
            ("created".into(), None, Some("d".into())),
            Some(packed),
            Some(decision),
        );
        assert_eq!(read.len(), 2, "{decision}");
        if let Some(e) = &read[1].explanation {
            assert!(e["summary"].is_null(), "{decision}: {e}");
            assert!(e["change_text"].is_null(), "{decision}: {e}");
        }
    }
}

/// Rows written when the words were stored read as they were written.
#[test]
fn stored_words_are_read_as_stored() {
    let decision = r#"{"decision":"d","summary":["as stored"],"why":{"decision":"d"}}"#;
    let row = r#"{"change":{"change":"name","old":null,"new":"A","rule":"r"},"change_text":"stored words"}"#;
    let parsed = explanation(Some(row), Some(decision)).unwrap();
    assert_eq!(parsed["summary"], serde_json::json!(["as stored"]));
    assert_eq!(parsed["change_text"], "stored words");
    let packed = r#"{"entries":[{"field":"name","old":null,"new":"A","change":0,"change_text":"packed words"}]}"#;
    let decision = r#"{"decision":"d","summary":["as stored"],"why":{"changes":[{"change":"name","old":null,"new":"A","rule":"r"}]}}"#;
    let read = entries(
        ("created".into(), None, Some("d".into())),
        Some(packed),
        Some(decision),
    );
    assert_eq!(read.len(), 2);
    let second = read[1].explanation.as_ref().unwrap();
    assert_eq!(second["change_text"], "packed words");
    assert_eq!(second["summary"], serde_json::json!(["as stored"]));
}

/// A lead's initial values written as one packed `created` row read
/// back as exactly the entries one row per change gives.
#[test]
fn a_packed_created_row_reads_as_one_row_per_change() {
    use crate::crm::resolve::{Resolution, Target};
    let dir = tempfile::tempdir().unwrap();
    let merge: crate::config::MergePolicy = crate::config::test_merge_policy("incoming");
    let long = "é\"\\".repeat(120);
    let changes = vec![
        Change::Name {
            old: None,
            new: format!("Ann {long}"),
            rule: "empty field filled".into(),
        },
        Change::Description {
            old: None,
            new: "Asked about prices".into(),
            rule: "empty field filled".into(),
        },
        Change::Add {
            kind: ContactKind::Email,
            value: "ann@example.com".into(),
            raw: "Ann@Example.com".into(),
            primary: true,
            rule: "keep_both".into(),
        },
        Change::Add {
            kind: ContactKind::Email,
            value: "a2@example.com".into(),
            raw: "a2@example.com".into(),
            primary: true,
            rule: "keep_both, primary incoming".into(),
        },
        Change::Add {
            kind: ContactKind::Phone,
            value: "+14084987855".into(),
            raw: "(408) 498-7855".into(),
            primary: true,
            rule: "keep_both".into(),
        },
        Change::Kept {
            field: "phone".into(),
            incoming: long.clone(),
            rule: "keep_existing".into(),
        },
    ];
    let resolution = Resolution {
        target: Target::Create,
        rule: "no lead matched; created".into(),
        duplicates: Vec::new(),
        fold: None,
    };
    let source = Source {
        delivery_id: None,
        label: "jivo chat_accepted 1".into(),
        at: "2026-11-30T10:00:00Z".into(),
    };
    let read = |conn: &Connection, lead: i64| -> Vec<Entry> {
        let mut stmt = conn
            .prepare(
                "SELECT h.field, h.old, h.new, h.explanation, d.explanation
                 FROM history h LEFT JOIN decisions d ON d.id = h.decision_id
                 WHERE h.lead_id = ?1 ORDER BY h.id",
            )
            .unwrap();
        let rows = stmt
            .query_map([lead], |r| {
                let row: Option<String> = r.get(3)?;
                let decision: Option<String> = r.get(4)?;
                Ok(entries(
                    (r.get(0)?, r.get(1)?, r.get(2)?),
                    row.as_deref(),
                    decision.as_deref(),
                ))
            })
            .unwrap();
        rows.flat_map(Result::unwrap).collect()
    };
    // The same lead written both ways, each in a database of its own.
    let mut read_back = Vec::new();
    for packed in [false, true] {
        let conn = Connection::open(dir.path().join(format!("{packed}.sqlite3"))).unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        let origin = Origin {
            status: "new",
            platform: "jivo",
            source: None,
        };
        let lead = create(&conn, &source.at, origin).unwrap();
        let why = Explanation::new(
            &merge,
            Vec::new(),
            None,
            &resolution,
            lead,
            Vec::new(),
            changes.clone(),
        );
        let decision = Decision::new(&why);
        let record = if packed {
            Record::Created(&resolution.rule)
        } else {
            history(
                &conn,
                lead,
                "created",
                None,
                Some(&resolution.rule),
                &source,
                Some(decision.row(None)),
            )
            .unwrap();
            Record::Rows
        };
        let created = write_changes(
            &conn,
            lead,
            &Current::default(),
            &changes,
            &decision,
            &source,
            record,
        )
        .unwrap();
        // The delivery's other entries: custom fields (one given
        // twice) and an event.
        let fields = [("City", "Lyon"), ("Source", "web"), ("City", "Paris")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let event = "visitor queued";
        match created {
            Some(mut created) => {
                set_fields(&conn, lead, &fields, Some(&mut created), &source).unwrap();
                created.add("event", None, Some(event.into()));
                created.write(&conn, &source).unwrap();
            }
            None => {
                set_fields(&conn, lead, &fields, None, &source).unwrap();
                history(&conn, lead, "event", None, Some(event), &source, None).unwrap();
            }
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
            .unwrap();
        read_back.push((rows, read(&conn, lead)));
    }
    let [(rows, one), (packed_rows, packed)] = <[_; 2]>::try_from(read_back).unwrap();
    assert_eq!((rows, packed_rows), (11, 1));
    assert_eq!(one.len(), 11);
    assert_eq!(one, packed);
    assert_eq!(
        one[7..]
            .iter()
            .map(|e| (
                &e.field[..],
                e.old.as_deref(),
                e.new.as_deref(),
                &e.explanation
            ))
            .collect::<Vec<_>>(),
        [
            ("field City", None, Some("Lyon"), &None),
            ("field Source", None, Some("web"), &None),
            ("field City", Some("Lyon"), Some("Paris"), &None),
            ("event", None, Some("visitor queued"), &None),
        ]
    );
    assert!(
        one[1].new.as_ref().unwrap().ends_with(&long),
        "values are whole"
    );
    let text = one[6].explanation.as_ref().unwrap()["change_text"]
        .as_str()
        .unwrap();
    assert!(
        text.ends_with("characters)"),
        "explanations are clipped: {text}"
    );
}

#[test]
fn long_strings_are_never_missed() {
    let at = |c: &str, n: usize| serde_json::to_string(&c.repeat(n)).unwrap();
    assert!(!has_long_string(&at("e", EXPLAINED_CHARS)));
    assert!(has_long_string(&at("e", EXPLAINED_CHARS + 1)));
    assert!(has_long_string(&at("é", EXPLAINED_CHARS + 1)));
    // Bytes are counted: a string of fewer but wider characters may
    // be reported (and then clipped exactly, i.e. not at all).
    let wide = "é".repeat(EXPLAINED_CHARS);
    assert!(has_long_string(&at(&wide, 1)));
    let mut value = serde_json::json!([wide]);
    clip_strings(&mut value);
    assert_eq!(value[0], wide);
    // Escapes count at least as the characters they stand for.
    let escaped = serde_json::to_string(&"\"\n\u{1}".repeat(70)).unwrap();
    assert!(has_long_string(&escaped));
    let keys = serde_json::json!({"k".repeat(10): "v", "list": ["a".repeat(150), "b".repeat(150)]});
    assert!(!has_long_string(&keys.to_string()));
}

/// The first version, a byte at a time: the reference for the one
/// that jumps between quotes and backslashes.
fn has_long_string_bytewise(json: &str) -> bool {
    let (mut inside, mut escaped, mut count) = (false, false, 0);
    for &b in json.as_bytes() {
        if !inside {
            if b == b'"' {
                (inside, count) = (true, 0);
            }
            continue;
        }
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => {
                inside = false;
                continue;
            }
            _ => {}
        }
        count += 1;
        if count > EXPLAINED_CHARS {
            return true;
        }
    }
    false
}

#[test]
fn long_strings_are_found_as_the_byte_wise_scan_finds_them() {
    let pieces = ["a", "é", "\"", "\\", "\n", "\u{1}", "😀", " "];
    let mut texts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        for n in [0, 1, 66, 67, 99, 100, 101, 199, 200, 201, 202, 400] {
            let other = pieces[(i + 3) % pieces.len()];
            let value = format!("{}{}", piece.repeat(n), other.repeat(n % 7));
            texts.push(serde_json::json!({"k": value, "list": [value, "x"], "n": n}).to_string());
            texts.push(serde_json::to_string(&value).unwrap());
        }
    }
    // Not JSON a serialiser writes, but the scan must not panic on it.
    texts.extend(["\"".into(), "\"\\".into(), format!("\"{}", "a".repeat(300))]);
    for text in &texts {
        assert_eq!(
            has_long_string(text),
            has_long_string_bytewise(text),
            "{text}"
        );
    }
}

#[test]
fn explanations_clip_long_values_and_keep_short_ones() {
    let mut json = serde_json::json!({
        "short": "Ann",
        "list": ["x".repeat(1000)],
        "nested": {"name": "é".repeat(300)},
    });
    clip_strings(&mut json);
    assert_eq!(json["short"], "Ann");
    let long = json["list"][0].as_str().unwrap();
    assert!(long.starts_with(&"x".repeat(EXPLAINED_CHARS)));
    assert!(long.ends_with("… (1000 characters)"));
    let name = json["nested"]["name"].as_str().unwrap();
    assert_eq!(name.chars().filter(|c| *c == 'é').count(), EXPLAINED_CHARS);
}
