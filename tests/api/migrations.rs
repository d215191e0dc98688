//! The schema: applied once, tracked, safe to run twice and from two processes at once.

use std::process::Stdio;

use crate::helpers::TestDb;

/// Every migration shipped in `migrations/`, by version.
fn all_versions() -> Vec<i32> {
    let mut versions: Vec<i32> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix('V')?.split("__").next()?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}

async fn applied_versions(db: &TestDb) -> Vec<i32> {
    let client = db.client().await;
    let rows =
        client.query("SELECT version FROM refinery_schema_history ORDER BY version", &[]).await.expect("history");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn running_migrations_twice_applies_them_once() {
    let db = TestDb::empty().await;
    let config: tokio_postgres::Config = db.url.parse().expect("url");

    let first = leadorch::store::migrate(&config).await.expect("first run");
    let second = leadorch::store::migrate(&config).await.expect("second run");

    assert_eq!(first, all_versions().len());
    assert_eq!(second, 0);
    assert_eq!(applied_versions(&db).await, all_versions());
    db.drop_database().await;
}

#[tokio::test]
async fn two_leadorch_migrate_processes_at_once_leave_one_consistent_schema() {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let url = crate::helpers::database_url(&name, None);
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_leadorch"))
            .arg("migrate")
            .env("LEADORCH_DATABASE_URL", &url)
            .env("LEADORCH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
    };

    let (a, b) = tokio::join!(spawn(), spawn());

    let (a, b) = (a.expect("run a"), b.expect("run b"));
    assert!(a.status.success(), "a failed: {}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "b failed: {}", String::from_utf8_lossy(&b.stderr));
    let db = TestDb { name, url };
    assert_eq!(applied_versions(&db).await, all_versions());
    let client = db.client().await;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = ANY($1)",
            &[&vec![
                "tenants",
                "locations",
                "location_hours",
                "service_catalog",
                "leads",
                "touchpoints",
                "consent",
                "inbox_events",
                "job_executions",
                "chat_sessions",
                "chat_messages",
                "appointments",
                "api_keys",
            ]],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(tables, 13);
    db.drop_database().await;
}

#[tokio::test]
async fn the_due_touchpoints_query_uses_the_status_and_time_index() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client.batch_execute("SET enable_seqscan = off").await.expect("set");

    let plan = client
        .query("EXPLAIN SELECT id FROM touchpoints WHERE status = 'pending' AND scheduled_at <= now() ORDER BY scheduled_at LIMIT 100", &[])
        .await
        .expect("explain");

    let text: Vec<String> = plan.iter().map(|r| r.get(0)).collect();
    assert!(text.iter().any(|l| l.contains("touchpoints_due_idx")), "{text:?}");
    db.drop_database().await;
}
