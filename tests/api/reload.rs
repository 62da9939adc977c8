//! Live reload: the real binary, SIGHUP, a changed and a broken config file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// The real binary serving on a free port, its log collected.
pub(crate) struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// Everything it wrote to stderr.
    pub(crate) log: Arc<Mutex<String>>,
}

impl Served {
    pub(crate) fn start(config: &Path, port: u16) -> Served {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub(crate) fn wait_for_log(&self, needle: &str, occurrences: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log.lock().unwrap().matches(needle).count() < occurrences {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `GET /api/leads/{id}` as `user` with the test password; the status.
    async fn api(&self, user: &str, id: i64) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/api/leads/{id}", self.base))
            .basic_auth(user, Some(SALES_PASSWORD))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn jivo(&self, token: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/jivo/{token}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_applies_a_new_merge_policy_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base_config = store_config_text(&db, fresh_store().as_deref())
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &base_config).unwrap();
    let served = Served::start(&config, port);
    served.wait_for_log("serving", 1);

    let (status, first) = served
        .jivo(
            JIVO_TOKEN,
            &accepted(1, "1", "Nina Page", Some("nina@example.com"), None),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let (_, kept) = served
        .jivo(
            JIVO_TOKEN,
            &accepted(2, "1", "Nina Paige", Some("nina@example.com"), None),
        )
        .await;
    assert_eq!(
        kept["contact_info"]["name"], "Nina Page",
        "name = keep_existing"
    );

    // A new policy, a new token and a new custom_data row.
    let changed = base_config
        .replace("name = \"keep_existing\"", "name = \"take_incoming\"")
        .replace(JIVO_TOKEN, "rotated-jivo-token")
        .replace("name = \"sales\"", "name = \"renamed\"")
        + "\n[[jivo.custom_data]]\ntitle = \"Only row\"\nsource = \"lead\"\n";
    std::fs::write(&config, &changed).unwrap();
    served.hup();
    served.wait_for_log("configuration reloaded", 1);
    let (status, _) = served
        .jivo(
            JIVO_TOKEN,
            &accepted(3, "1", "Nina Paige", Some("nina@example.com"), None),
        )
        .await;
    assert_eq!(status, 401, "the old token no longer works");
    let (status, taken) = served
        .jivo(
            "rotated-jivo-token",
            &accepted(4, "1", "Nina Paige", Some("nina@example.com"), None),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        taken["contact_info"]["name"], "Nina Paige",
        "name = take_incoming"
    );
    let rows = taken["custom_data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["title"], "Only row");
    let lead = lead_id(&taken);
    assert_eq!(served.api("sales", lead).await, 401, "the old user is gone");
    assert_eq!(served.api("renamed", lead).await, 200, "the new user is in");

    // A broken file (back to keep_existing, plus an unknown key) is refused.
    let broken = base_config.replace("[duplicates]", "[duplicates]\nbogus = 1");
    std::fs::write(&config, &broken).unwrap();
    served.hup();
    served.wait_for_log("reload refused", 1);
    assert!(
        served.log.lock().unwrap().contains("bogus"),
        "the reason names the key"
    );
    let (status, still) = served
        .jivo(
            "rotated-jivo-token",
            &accepted(5, "1", "Nina P. Page", Some("nina@example.com"), None),
        )
        .await;
    assert_eq!(status, 200, "the reloaded token stays");
    assert_eq!(
        still["contact_info"]["name"], "Nina P. Page",
        "take_incoming stays"
    );
}
