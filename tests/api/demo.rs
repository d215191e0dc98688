//! `leadorch demo` as a newcomer runs it: the real binary, offline, against its own database.
//! It must print a banner and chat links that open, stop cleanly on SIGTERM, and seed
//! idempotently so that a second run on the same database works and duplicates nothing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use leadorch::config::Settings;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::helpers::{TestDb, offline_binary};

/// From start to the first chat link.
const FIRST_LEAD_WITHIN: Duration = Duration::from_secs(60);
const STOPS_WITHIN: Duration = Duration::from_secs(15);

/// A running `leadorch demo` and what it printed so far.
struct Demo {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Vec<String>,
    log_path: PathBuf,
}

/// What one run showed.
#[derive(Debug)]
struct Seen {
    public_url: String,
    staff_key: String,
    /// The first `new lead:` line.
    lead_line: String,
    chat_link: String,
}

impl Demo {
    fn start(db: &TestDb, run: usize) -> Demo {
        let log_path = std::env::temp_dir().join(format!("leadorch-demo-{}-{run}.log", db.name));
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut command = offline_binary(db);
        command
            .args(["demo", "--addr", "127.0.0.1:0", "--every-secs", "1"])
            .env("LEADORCH_LOG", if std::env::var_os("TEST_LOG").is_some() { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().expect("leadorch demo spawns");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        // Reads until the process closes stdout, so it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines, transcript: Vec::new(), log_path }
    }

    fn explain(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{log}", self.transcript.join("\n"))
    }

    /// Returns the next stdout line that satisfies `wanted`, failing at `deadline`.
    async fn line_where(&mut self, deadline: Instant, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.transcript.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!("leadorch demo closed stdout before {what}\n{}", self.explain()),
                Err(_) => panic!("no {what} within {FIRST_LEAD_WITHIN:?}\n{}", self.explain()),
            }
        }
    }

    /// Reads the banner and the first chat link.
    async fn first_lead(&mut self) -> Seen {
        let deadline = Instant::now() + FIRST_LEAD_WITHIN;
        let dashboard = self.line_where(deadline, "banner", |l| l.trim_start().starts_with("dashboard:")).await;
        // "  dashboard:     {public_url}/dashboard   (staff API key: {key})"
        let mut words = dashboard.split_whitespace();
        let url = words.nth(1).expect("dashboard url");
        let public_url = url.strip_suffix("/dashboard").expect("dashboard path").to_owned();
        let staff_key =
            dashboard.rsplit("staff API key: ").next().and_then(|k| k.strip_suffix(')')).expect("key").to_owned();
        let lead_line = self.line_where(deadline, "new lead", |l| l.starts_with("new lead:")).await;
        let chat_link = lead_line.rsplit("chat: ").next().expect("chat link").trim().to_owned();
        assert!(chat_link.starts_with(&format!("{public_url}/c/")), "{lead_line}");
        Seen { public_url, staff_key, lead_line, chat_link }
    }

    /// Sends SIGTERM and asserts a clean exit in time.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let exited = tokio::time::timeout(STOPS_WITHIN, self.child.wait()).await;
        while let Ok(line) = self.lines.try_recv() {
            self.transcript.push(line);
        }
        match exited {
            Ok(Ok(status)) => {
                assert!(status.success(), "leadorch demo exited with {status}\n{}", self.explain());
                let _ = std::fs::remove_file(&self.log_path);
            }
            Ok(Err(err)) => panic!("waiting for leadorch demo failed: {err}"),
            Err(_) => panic!("leadorch demo still running {STOPS_WITHIN:?} after SIGTERM\n{}", self.explain()),
        }
    }
}

/// Runs the demo, checks what a newcomer would open, stops it; returns the lead it showed.
async fn run_once(db: &TestDb, run: usize, http: &reqwest::Client) -> (Seen, String) {
    let mut demo = Demo::start(db, run);
    let seen = demo.first_lead().await;
    let Seen { public_url, staff_key, lead_line, chat_link } = &seen;

    // The chat page (the link a customer taps in the SMS).
    let page = http.get(chat_link).send().await.expect("chat page");
    assert_eq!(page.status(), 200, "GET {chat_link}\n{}", demo.explain());
    let content_type = page.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("text/html"), "content-type {content_type}");

    // The printed lead, found through the staff API with the printed key.
    let leads: serde_json::Value = http
        .get(format!("{public_url}/api/leads?limit=5"))
        .bearer_auth(staff_key)
        .send()
        .await
        .expect("leads")
        .error_for_status()
        .expect("leads 200")
        .json()
        .await
        .expect("leads json");
    let listed = leads["leads"].as_array().expect("leads array");
    assert!(!listed.is_empty(), "{leads}");
    // Newest first; leads keep arriving every second, so pick the printed one by name and car.
    let printed = listed
        .iter()
        .find(|lead| {
            let (name, vehicle) = (lead["first_name"].as_str().unwrap_or(""), lead["vehicle"].as_str().unwrap_or(""));
            lead_line.starts_with(&format!("new lead: {name} ({vehicle}) at "))
        })
        .unwrap_or(&listed[0]);
    let lead_id = printed["id"].as_str().expect("lead id").to_owned();

    let token = chat_link.rsplit('/').next().expect("token");
    let history =
        http.get(format!("{public_url}/api/chat/{lead_id}/history")).bearer_auth(token).send().await.expect("history");
    assert_eq!(history.status(), 200, "history of {lead_id}");
    let history: serde_json::Value = history.json().await.expect("history json");
    assert!(history["messages"].is_array(), "{history}");

    let health = http.get(format!("{public_url}/api/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.expect("health json");
    let providers = health["ai"].as_array().expect("ai array");
    assert!(providers.iter().any(|p| p["name"] == "scripted"), "{health}");

    demo.stop().await;
    (seen, lead_id)
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.expect("count").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_feeds_leads_whose_chat_links_open_the_chat() {
    let db = TestDb::empty().await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let (first, first_lead) = run_once(&db, 1, &http).await;
    let leads_after_first: Vec<String> = db
        .client()
        .await
        .query("SELECT id::text FROM leads", &[])
        .await
        .expect("leads")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(leads_after_first.contains(&first_lead));

    // Again on the same database: nothing seeded twice, and the new run's estimates are new leads.
    let (second, second_lead) = run_once(&db, 2, &http).await;

    assert_eq!(count(&db, "SELECT count(*) FROM tenants WHERE name = 'Demo Tint Co'").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM locations").await, 3);
    assert_eq!(count(&db, "SELECT count(*) FROM api_keys").await, 2, "one new staff key per run");
    assert!(!leads_after_first.contains(&second_lead), "the second run showed an old lead: {}", second.lead_line);
    assert_ne!(first.staff_key, second.staff_key);
    db.drop_database().await;
}

#[test]
fn the_demo_profile_opens_the_sms_window_all_day_and_leaves_no_stricter_state_rule() {
    let demo = Settings::load(Some("demo"), Some(include_str!("../../config/demo.toml")), &Default::default())
        .expect("demo profile loads");
    let rules = &demo.compliance;
    for time in [jiff::civil::time(0, 0, 0, 0), jiff::civil::time(3, 30, 0, 0), jiff::civil::time(23, 59, 59, 0)] {
        assert!(rules.default_window.contains(time), "{time} outside {}", rules.default_window);
        for (state, rule) in &rules.states {
            if let Some(window) = rule.window_opt {
                assert!(window.contains(time), "{state}: {time} outside {window}");
            }
            assert!(
                rule.max_sms_per_24h_opt.is_none_or(|cap| cap >= 100),
                "{state}: cap {:?}",
                rule.max_sms_per_24h_opt
            );
        }
    }
    // The rest of the profile is the same as the defaults'.
    let defaults = Settings::load(None, None, &Default::default()).expect("defaults load");
    assert_eq!(demo.compliance.staleness, defaults.compliance.staleness);
    assert_eq!(demo.qualification, defaults.qualification);
}
