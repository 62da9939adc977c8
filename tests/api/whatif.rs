//! Merge-policy what-if: the explanation stored with each decision,
//! `explain` (writes nothing) and `preview` (agrees with a real replay).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crm_responder::config::{ContactPolicy, Identifier, Primary};
use crm_responder::store::sql::Sql;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const C: &str = "+14084987855";
const B: &str = "+16502530000";

/// The explanation of the newest history row of `lead` with `field`.
fn why(lead: &Value, field: &str) -> Value {
    let row = lead["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|h| h["field"] == field)
        .unwrap_or_else(|| panic!("no {field:?} row in {}", lead["history"]));
    row["explanation"].clone()
}

/// The seed scenario (lead holds email A + phone C; chat 2 says A + B)
/// under a phone policy; returns the lead.
async fn seed(policy: ContactPolicy, primary: Primary) -> Value {
    let app = spawn_app_with(|c| {
        c.merge.phone = policy;
        c.merge.primary = primary;
    })
    .await;
    app.jivo(&accepted(
        1,
        "100",
        "Seed",
        Some("a@example.com"),
        Some("+1 408-498-7855"),
    ))
    .await;
    let (_, answer) = app
        .jivo(&accepted(
            2,
            "101",
            "Seed",
            Some("a@example.com"),
            Some("+1 650-253-0000"),
        ))
        .await;
    app.lead(lead_id(&answer)).await
}

/// What every seed explanation says about the identifiers and the decision.
fn assert_seed_identity(e: &Value, lead: i64) {
    let why = &e["why"];
    assert_eq!(why["decision"], "matched by email");
    assert_eq!(why["lead"], lead);
    assert_eq!(why["created"], false);
    assert_eq!(
        why["seen"],
        json!([
            {"kind": "email", "raw": "a@example.com", "normalized": "a@example.com", "owner": lead},
            {"kind": "phone", "raw": "+1 650-253-0000", "normalized": B, "owner": null},
        ])
    );
    assert_eq!(why["known"], Value::Null);
    assert_eq!(why["policy"]["match_order"], json!(["email", "phone"]));
}

#[tokio::test]
async fn explanation_keep_existing_records_the_dropped_phone() {
    let lead = seed(ContactPolicy::KeepExisting, Primary::Existing).await;
    let e = why(&lead, "phone not taken");
    assert_seed_identity(&e, lead["id"].as_i64().unwrap());
    assert_eq!(e["why"]["policy"]["phone"], "keep_existing");
    assert_eq!(
        e["change"],
        json!({"change": "kept", "field": "phone", "incoming": "+1 650-253-0000", "rule": "phone = keep_existing"})
    );
    assert_eq!(e["why"]["changes"], json!([e["change"]]));
}

#[tokio::test]
async fn explanation_take_incoming_records_the_replacement() {
    let lead = seed(ContactPolicy::TakeIncoming, Primary::Existing).await;
    let e = why(&lead, "phone");
    assert_seed_identity(&e, lead["id"].as_i64().unwrap());
    assert_eq!(e["why"]["policy"]["phone"], "take_incoming");
    assert_eq!(
        e["why"]["changes"],
        json!([
            {"change": "remove", "kind": "phone", "value": C, "rule": "phone = take_incoming"},
            {"change": "add", "kind": "phone", "value": B, "raw": "+1 650-253-0000", "primary": true, "rule": "phone = take_incoming"},
        ])
    );
    assert_eq!(e["change"], e["why"]["changes"][1]);
}

#[tokio::test]
async fn explanation_keep_both_primary_existing() {
    let lead = seed(ContactPolicy::KeepBoth, Primary::Existing).await;
    let e = why(&lead, "phone");
    assert_seed_identity(&e, lead["id"].as_i64().unwrap());
    assert_eq!(e["why"]["policy"]["phone"], "keep_both");
    assert_eq!(e["why"]["policy"]["primary"], "existing");
    assert_eq!(
        e["change"],
        json!({"change": "add", "kind": "phone", "value": B, "raw": "+1 650-253-0000", "primary": false, "rule": "keep_both, primary = existing"})
    );
}

#[tokio::test]
async fn explanation_keep_both_primary_incoming() {
    let lead = seed(ContactPolicy::KeepBoth, Primary::Incoming).await;
    let e = why(&lead, "phone");
    assert_seed_identity(&e, lead["id"].as_i64().unwrap());
    assert_eq!(e["why"]["policy"]["primary"], "incoming");
    assert_eq!(
        e["change"],
        json!({"change": "add", "kind": "phone", "value": B, "raw": "+1 650-253-0000", "primary": true, "rule": "keep_both, primary = incoming"})
    );
}

/// Lead 1 owns an email, lead 2 a phone; chat 3 brings both (and another
/// name, which keep_existing refuses, so the decision has a history row).
async fn conflicting(order: Vec<Identifier>) -> (i64, i64, Value, Value) {
    let app = spawn_app_with(|c| c.merge.match_order = order).await;
    let (_, one) = app
        .jivo(&accepted(
            1,
            "1",
            "Mail Owner",
            Some("e1@example.com"),
            None,
        ))
        .await;
    let (_, two) = app
        .jivo(&accepted(
            2,
            "2",
            "Phone Owner",
            None,
            Some("+1 408-498-7855"),
        ))
        .await;
    let (_, three) = app
        .jivo(&accepted(
            3,
            "3",
            "Someone Else",
            Some("e1@example.com"),
            Some("+1 408-498-7855"),
        ))
        .await;
    let target = app.lead(lead_id(&three)).await;
    let (one, two) = (lead_id(&one), lead_id(&two));
    (one, two, why(&target, "name not taken"), target)
}

#[tokio::test]
async fn explanation_match_order_email_first() {
    let (one, two, e, target) = conflicting(vec![Identifier::Email, Identifier::Phone]).await;
    assert_eq!(target["id"], one);
    let why = &e["why"];
    assert_eq!(
        why["decision"],
        "email and phone point at different leads; match_order picks the email"
    );
    assert_eq!(why["seen"][0]["owner"], one);
    assert_eq!(why["seen"][1]["owner"], two);
    assert_eq!(
        why["duplicates"],
        json!([{"lead": two, "reason": format!("email belongs to lead {one}, phone to lead {two}")}])
    );
    assert_eq!(e["change"]["rule"], "name = keep_existing");
}

#[tokio::test]
async fn explanation_match_order_phone_first() {
    let (one, two, e, target) = conflicting(vec![Identifier::Phone, Identifier::Email]).await;
    assert_eq!(target["id"], two);
    let why = &e["why"];
    assert_eq!(
        why["decision"],
        "email and phone point at different leads; match_order picks the phone"
    );
    assert_eq!(why["lead"], two);
    assert_eq!(why["policy"]["match_order"], json!(["phone", "email"]));
    assert_eq!(why["duplicates"][0]["lead"], one);
}

#[tokio::test]
async fn explanation_fold_names_the_anonymous_lead() {
    let app = spawn_app().await;
    let (_, known) = app
        .jivo(&accepted(1, "10", "Known", Some("known@example.com"), None))
        .await;
    let (_, anon) = app.jivo(&accepted(2, "20", "", None, None)).await;
    let (_, answer) = app
        .jivo(&accepted(3, "20", "", Some("known@example.com"), None))
        .await;
    let (known, anon) = (lead_id(&known), lead_id(&anon));
    assert_eq!(lead_id(&answer), known);
    let lead = app.lead(known).await;
    let why = &why(&lead, "folded")["why"];
    assert_eq!(why["folded"], anon);
    assert_eq!(why["known"], json!({"lead": anon, "anonymous": true}));
    assert_eq!(why["seen"][0]["owner"], known);
    assert_eq!(
        why["decision"],
        format!(
            "matched by email; anonymous lead {anon} (known by visitor id or chat) folded into it"
        )
    );
}

#[tokio::test]
async fn explanation_flags_a_similar_new_lead() {
    let app = spawn_app().await;
    let (_, a) = app
        .jivo(&accepted(
            1,
            "1",
            "Johnathan Smith",
            Some("john.smith@acme.com"),
            None,
        ))
        .await;
    let (_, b) = app
        .jivo(&accepted(
            2,
            "2",
            "Jonathan Smith",
            Some("john.smyth@acme.com"),
            None,
        ))
        .await;
    let lead = app.lead(lead_id(&b)).await;
    let e = why(&lead, "created");
    let why = &e["why"];
    assert_eq!(why["created"], true);
    assert_eq!(why["decision"], "no lead matched; created");
    assert_eq!(why["duplicates"][0]["lead"], lead_id(&a));
    let reason = why["duplicates"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("similar"), "{reason}");
    // Every row of the delivery carries the same decision, stored once.
    assert_eq!(why, &self::why(&lead, "name")["why"]);
    let (rows, decisions): (i64, i64) = app.store(|db| {
        db.query_row(
            "SELECT count(*), count(DISTINCT decision_id) FROM history
             WHERE lead_id = ?1 AND decision_id IS NOT NULL",
            crm_responder::args![lead_id(&b)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    });
    // A new lead's initial values are held by its one `created` row, and
    // read back as entries of their own (the name's, above; the email's).
    assert_eq!(rows, 1, "one row holds created, name and email");
    assert_eq!(decisions, 1);
    let fields = each(&lead["history"], "field");
    assert_eq!(fields[..3], ["created", "name", "email"]);
    let stored: i64 = app.sql("SELECT count(*) FROM decisions");
    assert_eq!(stored, 2, "one decision per lead-creating delivery");
}

/// SHA-256 of the database file and its WAL (when present).
fn hashes(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for suffix in ["", "-wal"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, Sha256::digest(&bytes).to_vec()));
        }
    }
    out
}

/// What must stay the same when a command writes nothing: the SQLite file
/// and its WAL byte for byte, or every row of the PostgreSQL database at `url`.
fn unwritten(db: &Path, url: Option<&str>) -> Vec<String> {
    match url {
        None => hashes(db)
            .into_iter()
            .map(|(path, hash)| format!("{} {hash:02x?}", path.display()))
            .collect(),
        Some(_) => with_store(db, url, contents),
    }
}

#[tokio::test]
async fn explain_prints_the_decision_and_answer_and_writes_nothing() {
    let app = spawn_app_with(|c| c.merge.phone = ContactPolicy::KeepExisting).await;
    let (_, first) = app
        .jivo(&accepted(
            1,
            "100",
            "Seed",
            Some("a@example.com"),
            Some("+1 408-498-7855"),
        ))
        .await;
    let lead = lead_id(&first);
    let url = app.db_url.clone();
    let url = url.as_deref();
    let dir = app.stop().await;
    let db = dir.path().join("crm.sqlite3");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        store_config_text(&db, url).replace(r#"phone = "keep_both""#, r#"phone = "keep_existing""#),
    )
    .unwrap();
    let body = dir.path().join("chat.json");
    let chat = accepted(
        2,
        "101",
        "Seed",
        Some("A@Example.com"),
        Some("+1 650-253-0000"),
    );
    std::fs::write(&body, chat.to_string()).unwrap();

    let before = unwritten(&db, url);
    assert!(!before.is_empty());
    let out = cli(&config, &["explain", body.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["platform"], "jivo");
    assert_eq!(report["lead"], lead);
    let why = &report["explanation"];
    assert_eq!(why["decision"], "matched by email");
    assert_eq!(why["seen"][0]["raw"], "A@Example.com");
    assert_eq!(why["seen"][0]["normalized"], "a@example.com");
    assert_eq!(why["changes"][0]["rule"], "phone = keep_existing");
    assert_eq!(
        report["answer"]["crm_link"],
        format!("http://crm.test/leads/{lead}")
    );
    assert_eq!(report["answer"]["contact_info"]["phone"], "+1 408-498-7855");
    let text = cli(
        &config,
        &["explain", body.to_str().unwrap(), "--platform", "jivo"],
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("phone \"+1 650-253-0000\" not taken, dropped (phone = keep_existing)"),
        "{text}"
    );
    assert!(text.contains("answer (200):"), "{text}");
    assert_eq!(unwritten(&db, url), before, "explain wrote to the database");
}

/// A lead's state in a database, by the idempotency key of the delivery
/// that created it: (name, primary email, primary phone, phones).
type States = BTreeMap<
    String,
    (
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        BTreeSet<String>,
    ),
>;

fn states(db: &dyn Sql) -> States {
    let sql = format!(
        "SELECT l.id, l.name,
           (SELECT d.idem_key FROM deliveries d WHERE d.lead_id = l.id ORDER BY d.id LIMIT 1),
           (SELECT value FROM lead_emails WHERE lead_id = l.id AND is_primary = 1),
           (SELECT value FROM lead_phones WHERE lead_id = l.id AND is_primary = 1),
           (SELECT {} FROM lead_phones WHERE lead_id = l.id)
         FROM leads l",
        db.dialect()
            .pick("group_concat(value)", "string_agg(value, ',')")
    );
    db.query_all(&sql, &[], |r| {
        let phones: Option<String> = r.get(5)?;
        let phones = phones
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok((
            r.get::<String>(2)?,
            (r.get(0)?, r.get(1)?, r.get(3)?, r.get(4)?, phones),
        ))
    })
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn preview_reports_exactly_what_a_real_replay_changes() {
    let app = spawn_app_with(|c| c.merge.phone = ContactPolicy::KeepExisting).await;
    let chats = [
        (
            1,
            "1",
            "Ann Lee",
            Some("ann@example.com"),
            Some("+1 408-498-7855"),
        ),
        (
            2,
            "1",
            "Ann Lee",
            Some("ann@example.com"),
            Some("+1 650-253-0000"),
        ),
        (
            3,
            "2",
            "Bob Stone",
            Some("bob@example.com"),
            Some("+1 212-555-0147"),
        ),
        (
            4,
            "2",
            "Bob Stone",
            Some("bob@example.com"),
            Some("+1 305-555-0188"),
        ),
        (
            5,
            "3",
            "Carl Marx",
            Some("carl@example.com"),
            Some("+1 617-555-0123"),
        ),
        // Only Ann's second phone: a new lead while that phone is dropped.
        (6, "4", "Dee Ward", None, Some("+1 650-253-0000")),
    ];
    for (chat, number, name, email, phone) in chats {
        let (status, _) = app.jivo(&accepted(chat, number, name, email, phone)).await;
        assert_eq!(status, 200);
    }
    let url = app.db_url.clone();
    let url = url.as_deref();
    let dir = app.stop().await;
    let live = dir.path().join("crm.sqlite3");
    let current = dir.path().join("current.toml");
    std::fs::write(
        &current,
        store_config_text(&live, url)
            .replace(r#"phone = "keep_both""#, r#"phone = "keep_existing""#),
    )
    .unwrap();
    let new = dir.path().join("new.toml");
    std::fs::write(&new, store_config_text(&live, url)).unwrap();
    let before = unwritten(&live, url);

    let out = cli(
        &current,
        &["preview", "--new-config", new.to_str().unwrap(), "--json"],
    );
    let preview: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        unwritten(&live, url),
        before,
        "preview wrote to the live database"
    );

    // The real thing: a fresh database replayed under the new policy.
    // `replay --from` reads a SQLite file; from PostgreSQL, the same
    // deliveries are sent again, in order, to a fresh service under it.
    let now = with_store(&live, url, states);
    let then = match url {
        None => {
            let fresh = dir.path().join("fresh.sqlite3");
            let fresh_config = dir.path().join("fresh.toml");
            std::fs::write(&fresh_config, config_text(&fresh)).unwrap();
            cli(
                &fresh_config,
                &["replay", "--all", "--from", live.to_str().unwrap()],
            );
            with_store(&fresh, None, states)
        }
        Some(_) => {
            let fresh = spawn_app().await;
            for (chat, number, name, email, phone) in chats {
                let (status, _) = fresh
                    .jivo(&accepted(chat, number, name, email, phone))
                    .await;
                assert_eq!(status, 200);
            }
            fresh.store(states)
        }
    };
    let mut changed: BTreeSet<i64> = BTreeSet::new();
    for (anchor, state) in &now {
        match then.get(anchor) {
            Some(other)
                if (&other.1, &other.2, &other.3, &other.4)
                    == (&state.1, &state.2, &state.3, &state.4) => {}
            _ => {
                changed.insert(state.0);
            }
        }
    }
    let newly = then.keys().filter(|k| !now.contains_key(*k)).count();
    let reported: BTreeSet<i64> = preview["leads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["lead"].as_i64())
        .collect();
    assert_eq!(reported, changed, "{preview:#}");
    let counts = &preview["counts"];
    assert_eq!(counts["newly_created"], newly);
    assert_eq!(preview["deliveries"], 6);
    // Ann and Bob keep their second phone; Dee's chat lands on Ann.
    assert_eq!(counts["contacts_kept"], 2);
    assert_eq!(counts["not_created"], 1);
    assert_eq!(counts["leads_before"], 4);
    assert_eq!(counts["leads_after"], 3);
    assert_eq!(changed.len(), 3);

    let text = cli(
        &current,
        &[
            "preview",
            "--new-config",
            new.to_str().unwrap(),
            "--last",
            "2",
        ],
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("replayed 2 deliveries"), "{text}");
}

#[tokio::test]
async fn the_lead_page_shows_the_decision_in_words_next_to_the_change() {
    let app = spawn_app_with(|c| c.merge.phone = ContactPolicy::KeepExisting).await;
    app.jivo(&accepted(
        1,
        "100",
        "Seed",
        Some("a@example.com"),
        Some("+1 408-498-7855"),
    ))
    .await;
    let (_, answer) = app
        .jivo(&accepted(
            2,
            "101",
            "Seed",
            Some("a@example.com"),
            Some("+1 650-253-0000"),
        ))
        .await;
    let html = app
        .client
        .get(app.url(&format!("/leads/{}", lead_id(&answer))))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = html
        .find("phone not taken")
        .expect("the dropped phone has a row");
    let why = &html[row..];
    for words in [
        "<dt>this row</dt><dd>phone &#34;+1 650-253-0000&#34; not taken, dropped (phone = keep_existing)</dd>",
        "<dd>matched by email</dd>",
        "<dt>phone &#34;+1 650-253-0000&#34; (normalised +16502530000)</dt><dd>no lead</dd>",
        "phone=keep_existing",
    ] {
        assert!(why.contains(words), "{words} not in {why}");
    }
}

#[tokio::test]
async fn explain_tells_rocketchat_and_livechat_bodies_apart_and_answers_like_them() {
    let app = spawn_app().await;
    let url = app.db_url.clone();
    let url = url.as_deref();
    let dir = app.stop().await;
    let db = dir.path().join("crm.sqlite3");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, store_config_text(&db, url)).unwrap();
    let before = unwritten(&db, url);
    for (name, platform) in [
        ("rocketchat/LivechatSession.json", "rocketchat"),
        ("livechat/v3/incoming_chat.json", "livechat"),
    ] {
        let body = dir.path().join("body.json");
        std::fs::write(&body, fixture(name).to_string()).unwrap();
        let out = cli(&config, &["explain", body.to_str().unwrap(), "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["platform"], platform, "{name}");
        let lead = report["lead"].as_i64().expect("a lead");
        assert_eq!(report["explanation"]["created"], true, "{name}");
        assert_eq!(report["answer"]["lead_id"], lead, "{name}");
        if platform == "rocketchat" {
            assert_eq!(report["answer"]["data"]["lead_id"], lead);
        }
    }
    assert_eq!(unwritten(&db, url), before, "explain wrote to the database");
}
