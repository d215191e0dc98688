//! `leadorch loadgen` as an operator runs it: the real binary against a database of its own. It
//! must end by itself, print exactly one JSON object on stdout, and count every accepted
//! webhook as a lead with a speed-to-lead; in chat mode, relay every streamed reply whole and
//! report its relay latency.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TestDb, offline_binary};

const RATE: u64 = 20;
const DURATION_SECS: u64 = 3;
const EXITS_WITHIN: Duration = Duration::from_secs(60);

fn number(summary: &Value, pointer: &str) -> f64 {
    summary.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number at {pointer}: {summary}"))
}

/// Runs `leadorch loadgen` with `args` over `db` and returns its one-line JSON summary and its
/// stderr, after checking that it ended by itself, successfully.
async fn run_loadgen(db: &TestDb, args: &[&str]) -> (Value, String) {
    let mut command = offline_binary(db);
    command.arg("loadgen").args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("leadorch loadgen spawns");
    // Dropping the future on timeout drops the child, which kills it.
    let output = tokio::time::timeout(EXITS_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("leadorch loadgen still running after {EXITS_WITHIN:?}"))
        .expect("leadorch loadgen output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert_eq!(stdout.trim().lines().count(), 1, "stdout must be one JSON line\n{stdout}\nstderr:\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("stdout is a JSON object");
    (summary, stderr.into_owned())
}

#[tokio::test]
async fn loadgen_reports_every_accepted_webhook_as_a_lead_in_its_json_summary() {
    let db = TestDb::empty().await;
    let (rate, duration) = (RATE.to_string(), DURATION_SECS.to_string());

    let (summary, stderr) =
        run_loadgen(&db, &["--rate", &rate, "--duration-secs", &duration, "--locations", "5"]).await;

    let target = (RATE * DURATION_SECS) as f64;
    let sent = number(&summary, "/sent");
    assert!((sent - target).abs() <= target * 0.1, "sent {sent}, expected about {target}\n{summary}");
    assert_eq!(number(&summary, "/accepted"), sent, "{summary}\nstderr:\n{stderr}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
    assert_eq!(number(&summary, "/leads_created"), sent, "{summary}\nstderr:\n{stderr}");
    let p50 = number(&summary, "/speed_to_lead_ms/p50");
    let p95 = number(&summary, "/speed_to_lead_ms/p95");
    let p99 = number(&summary, "/speed_to_lead_ms/p99");
    let max = number(&summary, "/speed_to_lead_ms/max");
    assert!(0.0 <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{summary}");
    assert_eq!(number(&summary, "/rate_target"), RATE as f64);
    assert!(number(&summary, "/accepted_per_sec") > 0.0, "{summary}");
    assert!(number(&summary, "/rss_mb_end") > 0.0, "{summary}");
    // Every lead got its first SMS, so the scheduler claimed touches and its lag is known.
    assert!(number(&summary, "/scheduler_lag_p99_ms") >= 0.0, "{summary}");

    db.drop_database().await;
}

#[tokio::test]
async fn loadgen_chat_mode_relays_every_reply_and_reports_its_relay_latency() {
    let db = TestDb::empty().await;

    let (summary, stderr) =
        run_loadgen(&db, &["--chat-streams", "20", "--locations", "2", "--chat-delta-ms", "10"]).await;

    assert_eq!(number(&summary, "/chat_streams"), 20.0, "{summary}");
    assert_eq!(number(&summary, "/connected"), 20.0, "{summary}\nstderr:\n{stderr}");
    assert_eq!(number(&summary, "/messages_accepted"), 20.0, "{summary}\nstderr:\n{stderr}");
    assert_eq!(number(&summary, "/replies_completed"), 20.0, "{summary}\nstderr:\n{stderr}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
    let deltas = number(&summary, "/deltas");
    assert!(deltas > 0.0, "{summary}");
    assert_eq!(deltas, 20.0 * number(&summary, "/deltas_per_reply"), "{summary}");
    assert_eq!(number(&summary, "/deltas_matched"), deltas, "{summary}");
    let p50 = number(&summary, "/relay_latency_ms/p50");
    let p99 = number(&summary, "/relay_latency_ms/p99");
    let max = number(&summary, "/relay_latency_ms/max");
    assert!(p99.is_finite() && 0.0 <= p50 && p50 <= p99 && p99 <= max, "{summary}");
    assert!(summary.get("sent").is_none(), "no webhook phase in chat mode: {summary}");

    db.drop_database().await;
}
