//! The operator CLI as an operator runs it: the real binary against a fresh database.

use std::process::Output;

use crate::helpers::TestDb;

async fn leadorch(db: &TestDb, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_leadorch"))
        .args(args)
        .env("LEADORCH_DATABASE_URL", &db.url)
        .env("LEADORCH_LOG", "warn")
        .output()
        .await
        .expect("leadorch runs")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is json")
}

#[tokio::test]
async fn an_operator_onboards_a_tenant_location_hours_and_key_from_the_cli() {
    let db = TestDb::migrated().await;

    let tenant = json(&leadorch(&db, &["tenant", "add", "--name", "Tint Co", "--json"]).await);
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    assert!(tenant["webhook_secret"].as_str().is_some_and(|s| s.len() >= 32));
    let location = json(
        &leadorch(
            &db,
            &[
                "location",
                "add",
                "--tenant",
                &tenant_id,
                "--crm-location-id",
                "sm-1",
                "--name",
                "Austin",
                "--timezone",
                "America/Chicago",
                "--sms-from",
                "512.555.0100",
                "--json",
            ],
        )
        .await,
    );
    let location_id = location["id"].as_str().expect("id").to_owned();
    assert_eq!(location["sms_from"], "+15125550100");
    let hours = json(
        &leadorch(
            &db,
            &[
                "location",
                "hours",
                "--location",
                &location_id,
                "--set",
                "mon-fri 08:00-18:00, sat 09:00-14:00",
                "--json",
            ],
        )
        .await,
    );
    assert!(hours["hours"].as_str().is_some_and(|h| h.contains("sat 09:00-14:00")), "{hours}");
    let key = json(&leadorch(&db, &["apikey", "add", "--tenant", &tenant_id, "--name", "front desk", "--json"]).await);
    assert!(key["key"].as_str().is_some_and(|k| k.starts_with("lok_")));
    let tenants = json(&leadorch(&db, &["tenant", "list", "--json"]).await);
    assert_eq!(tenants.as_array().map(Vec::len), Some(1));
    let locations = json(&leadorch(&db, &["location", "list", "--tenant", &tenant_id, "--json"]).await);
    assert_eq!(locations[0]["name"], "Austin");
    db.drop_database().await;
}

#[tokio::test]
async fn the_cli_rejects_an_unknown_timezone_with_a_clear_message_and_a_failing_exit_code() {
    let db = TestDb::migrated().await;
    let tenant = json(&leadorch(&db, &["tenant", "add", "--name", "Tint Co", "--json"]).await);
    let tenant_id = tenant["id"].as_str().expect("id");

    let output = leadorch(
        &db,
        &[
            "location",
            "add",
            "--tenant",
            tenant_id,
            "--crm-location-id",
            "sm-1",
            "--name",
            "Austin",
            "--timezone",
            "Central",
        ],
    )
    .await;

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timezone"), "{stderr}");
    let count: i64 = db.client().await.query_one("SELECT count(*) FROM locations", &[]).await.expect("q").get(0);
    assert_eq!(count, 0);
    db.drop_database().await;
}

#[tokio::test]
async fn a_bad_setting_fails_start_up_naming_the_variable() {
    let db = TestDb::migrated().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadorch"))
        .args(["serve"])
        .env("LEADORCH_DATABASE_URL", &db.url)
        .env("LEADORCH_HTTP_ADDR", "nowhere")
        .output()
        .await
        .expect("runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LEADORCH_HTTP_ADDR") && stderr.contains("http.addr"), "{stderr}");
    db.drop_database().await;
}

#[tokio::test]
async fn serve_refuses_to_start_without_vendor_credentials_unless_told_to_use_fakes() {
    let db = TestDb::migrated().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadorch"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("LEADORCH_DATABASE_URL", &db.url)
        .env("LEADORCH_SECRET_KEY", "some-secret")
        .env_remove("LEADORCH_TWILIO_ACCOUNT_SID")
        .env_remove("LEADORCH_TWILIO_AUTH_TOKEN")
        .env("LEADORCH_LOG", "warn")
        .output()
        .await
        .expect("runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LEADORCH_TWILIO_ACCOUNT_SID") && stderr.contains("--sim"), "{stderr}");
    db.drop_database().await;
}
