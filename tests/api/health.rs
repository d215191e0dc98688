//! Liveness, readiness (including a database outage and recovery), metrics and shutdown.

use std::time::{Duration, Instant};

use crate::helpers::{OutageProxy, TestDb, database_url, eventually, spawn_app, spawn_app_with, test_settings};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_the_database_is_up() {
    let app = spawn_app().await;

    let live = app.get("/healthz").await;
    let ready = app.get("/readyz").await;

    assert_eq!(live.status(), 200);
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert!(app.store.tenants.list().await.expect("schema is there").is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn readyz_answers_503_within_2s_when_postgres_is_cut_off_and_recovers_by_itself() {
    let db = TestDb::empty().await;
    let proxy = OutageProxy::start().await;
    let settings = test_settings(&database_url(&db.name, Some(proxy.addr)));
    let app = spawn_app_with(db, settings).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    proxy.cut();
    let started = Instant::now();
    let during = app.get("/readyz").await;
    let elapsed = started.elapsed();

    assert_eq!(during.status(), 503);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let body: serde_json::Value = during.json().await.expect("json");
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("database")), "{body}");
    // The liveness probe must not restart a process just because its database is down.
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.restore();
    let recovered = eventually(Duration::from_secs(10), || async { app.get("/readyz").await.status() == 200 }).await;
    assert!(recovered, "readyz did not recover after the database came back");
    app.teardown().await;
}

#[tokio::test]
async fn readyz_answers_503_when_migrations_are_missing() {
    let app = spawn_app().await;
    let client = app.db.client().await;
    client.batch_execute("DELETE FROM refinery_schema_history").await.expect("forget migrations");

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("migrations not applied")), "{body}");
    app.teardown().await;
}

#[tokio::test]
async fn metrics_expose_http_process_and_pool_figures_in_prometheus_text() {
    let app = spawn_app().await;
    app.get("/healthz").await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let text = response.text().await.expect("text");
    assert!(text.contains("leadorch_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert!(text.contains("leadorch_db_pool_connections"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    app.teardown().await;
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;

    assert!(response.headers().get("x-request-id").is_some());
    app.teardown().await;
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_request_before_stopping() {
    let mut app = spawn_app().await;
    // A readiness check holds a pooled connection briefly; start several, then stop at once.
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let http = app.http.clone();
            let url = format!("{}/readyz", app.address);
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;

    app.stop().await;

    for request in in_flight {
        // Each request either completed with an answer or was never accepted; none is cut mid-way.
        if let Ok(status) = request.await.expect("task") {
            assert!(status == 200 || status == 503, "status {status}");
        }
    }
    app.db.drop_database().await;
}
