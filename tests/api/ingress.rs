//! Lead ingress over real HTTP and PostgreSQL against the ShopMonkey fake: webhooks (signed,
//! committed before the 202, de-duplicated), the backup poller, replay after a crash, and bad
//! input that gets its status code and writes nothing.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use leadorch::sim::shopmonkey::Fault;
use serde_json::json;

use crate::helpers::{COMPANY, OutageProxy, TestDb, database_url, eventually, spawn_crm_world};

fn order_body(order_id: &str, version: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "3", "operation": "INSERT", "table": "order",
        "data": { "id": order_id, "status": "Estimate", "meta": { "version": version } }
    }))
    .expect("json")
}

#[tokio::test]
async fn a_signed_webhook_for_a_new_estimate_becomes_a_lead_within_one_second() {
    let world = spawn_crm_world(2, 2, |s| s.poller.enabled = false).await;
    let customer = world.sim.customer(COMPANY, 0);
    let started = Instant::now();

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer.id));

    let lead = world.lead_for(&order.id, Duration::from_secs(1)).await.expect("lead within 1 s");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(lead.location_id, world.locations[0].id);
    assert_eq!(lead.first_name_opt.as_deref(), Some(customer.first_name.as_str()));
    let expected_phone = leadorch_actors::domain::Phone::parse(&customer.phone).expect("fake phones are valid");
    assert_eq!(lead.phone_opt, Some(expected_phone));
    assert_eq!(lead.vehicle_opt.and_then(|v| v.describe()).as_deref(), Some(customer.vehicle.as_str()));
    assert_eq!(lead.crm_customer_id_opt.as_deref(), Some(customer.id.as_str()));
    let delivery = world.sim.webhook_deliveries().into_iter().find(|d| d.order_id_opt.as_deref() == Some(&order.id));
    assert_eq!(delivery.and_then(|d| d.status_opt), Some(202));
    world.teardown().await;
}

#[tokio::test]
async fn the_same_webhook_delivered_five_times_concurrently_is_one_inbox_row_and_one_lead() {
    let world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    world.sim.set_fault(Fault::DropWebhooks { times: 1 });
    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);
    let body = order_body(&order.id, order.version as i64);
    let now = Timestamp::now().as_second();

    let deliveries = (0..5).map(|_| world.post_signed(&body, &world.webhook_secret, now, "req-same"));
    let responses = futures::future::join_all(deliveries).await;

    assert!(
        responses.iter().all(|r| r.status() == 202),
        "{:?}",
        responses.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    assert!(world.lead_for(&order.id, Duration::from_secs(3)).await.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.count("inbox_events").await, 1);
    assert_eq!(world.count("leads").await, 1);
    world.teardown().await;
}

#[tokio::test]
async fn a_dropped_webhook_is_caught_by_the_poller_and_the_late_webhook_changes_nothing() {
    let world = spawn_crm_world(1, 1, |_| {}).await;
    world.sim.set_fault(Fault::DropWebhooks { times: 1 });
    let started = Instant::now();

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);

    // One poll period is 1 s here; allow for a run that had just started.
    let lead = world.lead_for(&order.id, Duration::from_secs(3)).await.expect("the poller created the lead");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(world.count("inbox_events").await, 0, "no webhook arrived");
    let late = world
        .post_signed(
            &order_body(&order.id, order.version as i64),
            &world.webhook_secret,
            Timestamp::now().as_second(),
            "req-late",
        )
        .await;
    assert_eq!(late.status(), 202);
    let processed = eventually(Duration::from_secs(5), || async {
        let client = world.app.db.client().await;
        let row = client
            .query_opt("SELECT outcome FROM inbox_events WHERE processed_at IS NOT NULL AND source = 'shopmonkey'", &[])
            .await
            .expect("q");
        row.map(|r| r.get::<_, Option<String>>(0)) == Some(Some("already_a_lead".to_owned()))
    })
    .await;
    assert!(processed, "the late webhook was recognised as an existing lead");
    assert_eq!(world.count("leads").await, 1);
    assert_eq!(world.app.store.leads.get(world.tenant.id, lead.id).await.expect("lead").id, lead.id);
    let client = world.app.db.client().await;
    let runs: i64 =
        client.query_one("SELECT count(*) FROM job_executions WHERE items_new = 1", &[]).await.expect("q").get(0);
    assert_eq!(runs, 1, "the poller's run recorded the lead it created");
    world.teardown().await;
}

#[tokio::test]
async fn an_inbox_row_committed_before_a_crash_is_processed_after_restart() {
    let mut world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    world.app.stop().await;
    world.sim.set_fault(Fault::DropWebhooks { times: 1 });
    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);
    // What the webhook route commits before answering 202, left unprocessed by a dead process.
    let payload: serde_json::Value = serde_json::from_slice(&order_body(&order.id, 1)).expect("json");
    let store = world.app.db.store();
    store
        .inbox
        .insert(world.tenant.id, "shopmonkey", "order:committed:v1", &payload, Timestamp::now())
        .await
        .expect("commit");

    let mut settings = crate::helpers::test_settings(&world.app.db.url);
    settings.shopmonkey.base_url = world.sim.base_url();
    settings.secrets.shopmonkey_api_key_opt = Some(secrecy::SecretString::from(crate::helpers::COMPANY_KEY.to_owned()));
    settings.poller.enabled = false;
    let db = TestDb { name: world.app.db.name.clone(), url: world.app.db.url.clone() };
    let restarted = crate::helpers::spawn_app_with(db, settings).await;

    let lead = eventually(Duration::from_secs(5), || async {
        restarted.store.leads.find_by_crm_order(world.tenant.id, "shopmonkey", &order.id).await.is_ok()
    })
    .await;
    assert!(lead, "the committed event was replayed after the restart");
    restarted.teardown().await;
    world.sim.shutdown().await;
}

#[tokio::test]
async fn an_intake_only_node_commits_and_acknowledges_and_a_processing_node_makes_the_lead() {
    let mut world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.ingress.enabled = false;
    })
    .await;
    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);
    let body = order_body(&order.id, order.version as i64);

    let response = world.post_signed(&body, &world.webhook_secret, Timestamp::now().as_second(), "req-intake").await;

    assert_eq!(response.status(), 202);
    assert!(eventually(Duration::from_secs(3), || async { world.count("inbox_events").await >= 1 }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        world.app.store.leads.find_by_crm_order(world.tenant.id, "shopmonkey", &order.id).await.is_err(),
        "an intake-only node processes nothing"
    );
    world.app.stop().await;

    let mut settings = crate::helpers::test_settings(&world.app.db.url);
    settings.shopmonkey.base_url = world.sim.base_url();
    settings.secrets.shopmonkey_api_key_opt = Some(secrecy::SecretString::from(crate::helpers::COMPANY_KEY.to_owned()));
    settings.poller.enabled = false;
    let db = TestDb { name: world.app.db.name.clone(), url: world.app.db.url.clone() };
    let processing = crate::helpers::spawn_app_with(db, settings).await;

    let lead = eventually(Duration::from_secs(5), || async {
        processing.store.leads.find_by_crm_order(world.tenant.id, "shopmonkey", &order.id).await.is_ok()
    })
    .await;
    assert!(lead, "the processing node's sweep made the lead");
    processing.teardown().await;
    world.sim.shutdown().await;
}

#[tokio::test]
async fn an_order_at_a_location_leadorch_does_not_have_is_kept_with_its_reason_and_not_retried() {
    let world = spawn_crm_world(2, 1, |s| s.poller.enabled = false).await;

    let order = world.sim.create_order(COMPANY, &world.sim_locations[1].id, None);

    let recorded = eventually(Duration::from_secs(3), || async {
        let client = world.app.db.client().await;
        let row = client
            .query_opt(
                "SELECT outcome, attempts FROM inbox_events WHERE processed_at IS NOT NULL AND source = 'shopmonkey'",
                &[],
            )
            .await
            .expect("q");
        row.is_some_and(|r| {
            r.get::<_, Option<String>>(0).as_deref() == Some("unknown_location") && r.get::<_, i32>(1) == 1
        })
    })
    .await;
    assert!(recorded);
    assert!(world.lead_for(&order.id, Duration::from_millis(100)).await.is_none());
    world.teardown().await;
}

#[tokio::test]
async fn a_crm_outage_is_recorded_on_the_inbox_row_and_retried_until_the_lead_is_created() {
    let world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    // max_retries = 1 in these tests: the first processing attempt sees two 500s and gives up.
    world.sim.set_fault(Fault::Status500 { times: 2 });

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);

    let failed_once = eventually(Duration::from_secs(3), || async {
        let client = world.app.db.client().await;
        let row =
            client.query_one("SELECT attempts, last_error FROM inbox_events WHERE source = 'shopmonkey'", &[]).await;
        row.is_ok_and(|r| {
            r.get::<_, i32>(0) >= 1 && r.get::<_, Option<String>>(1).is_some_and(|e| e.contains("unavailable"))
        })
    })
    .await;
    assert!(failed_once, "the failed attempt was recorded");
    assert!(world.lead_for(&order.id, Duration::from_secs(5)).await.is_some(), "the retry created the lead");
    world.teardown().await;
}

#[tokio::test]
async fn bad_webhooks_get_their_status_codes_and_write_nothing() {
    let world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    let now = Timestamp::now().as_second();
    let body = order_body("ord_whatever", 1);
    let url = |tenant: &str| format!("{}/webhooks/shopmonkey/{tenant}", world.app.address);

    let wrong_secret = world.post_signed(&body, "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY", now, "r1").await;
    let stale = world.post_signed(&body, &world.webhook_secret, now - 3600, "r2").await;
    let unsigned =
        world.app.http.post(url(&world.tenant.id.to_string())).body(body.clone()).send().await.expect("sent");
    let unknown_tenant =
        world.app.http.post(url(&uuid::Uuid::new_v4().to_string())).body(body.clone()).send().await.expect("sent");
    let not_a_tenant = world.app.http.post(url("not-a-uuid")).body(body.clone()).send().await.expect("sent");
    let malformed = world.post_signed(b"{\"table\": \"order\", ", &world.webhook_secret, now, "r3").await;
    let not_an_object = world.post_signed(b"[1, 2, 3]", &world.webhook_secret, now, "r4").await;
    let oversized_body = format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024));
    let oversized = world.post_signed(oversized_body.as_bytes(), &world.webhook_secret, now, "r5").await;

    assert_eq!(wrong_secret.status(), 401);
    assert_eq!(stale.status(), 401);
    assert_eq!(unsigned.status(), 401);
    assert_eq!(unknown_tenant.status(), 404);
    assert_eq!(not_a_tenant.status(), 404);
    assert_eq!(malformed.status(), 400);
    let reason: serde_json::Value = malformed.json().await.expect("json error body");
    assert!(reason["error"].as_str().is_some_and(|e| e.contains("not valid json")), "{reason}");
    assert_eq!(not_an_object.status(), 400);
    assert_eq!(oversized.status(), 413);
    assert_eq!(world.count("inbox_events").await, 0);
    assert_eq!(world.count("leads").await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn a_webhook_is_answered_503_while_postgres_is_down_and_accepted_on_redelivery() {
    let proxy = OutageProxy::start().await;
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.database.url = secrecy::SecretString::from(database_url(&url_db_name(s), Some(proxy.addr)));
    })
    .await;
    world.sim.set_fault(Fault::DropWebhooks { times: 1 });
    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);
    let body = order_body(&order.id, 1);

    proxy.cut();
    let during = world.post_signed(&body, &world.webhook_secret, Timestamp::now().as_second(), "req-outage").await;
    proxy.restore();
    let accepted = eventually(Duration::from_secs(10), || async {
        world.post_signed(&body, &world.webhook_secret, Timestamp::now().as_second(), "req-outage").await.status()
            == 202
    })
    .await;

    assert_eq!(during.status(), 503);
    assert!(during.headers().contains_key("retry-after"));
    assert!(accepted, "the sender's retry is accepted once postgres is back");
    assert!(world.lead_for(&order.id, Duration::from_secs(5)).await.is_some());
    world.teardown().await;
}

fn url_db_name(settings: &leadorch::config::Settings) -> String {
    use secrecy::ExposeSecret;
    let url = reqwest::Url::parse(settings.database.url.expose_secret()).expect("url");
    url.path().trim_start_matches('/').to_owned()
}

#[tokio::test]
async fn a_tenant_crm_key_stored_encrypted_is_used_for_its_crm_calls() {
    use leadorch::crm::keys::SecretBox;
    let secret = secrecy::SecretString::from("deployment-secret-for-tests".to_owned());
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.secrets.shopmonkey_api_key_opt = None;
        s.secrets.secret_key_opt = Some(secret.clone());
    })
    .await;
    leadorch::ops::set_crm_key(
        &world.app.store,
        Some(&SecretBox::new(&secret)),
        world.tenant.id,
        crate::helpers::COMPANY_KEY,
    )
    .await
    .expect("stored");
    let stored: Vec<u8> =
        world.app.db.client().await.query_one("SELECT crm_api_key_enc FROM tenants", &[]).await.expect("q").get(0);
    assert!(!stored.windows(crate::helpers::COMPANY_KEY.len()).any(|w| w == crate::helpers::COMPANY_KEY.as_bytes()));

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, None);

    assert!(world.lead_for(&order.id, Duration::from_secs(3)).await.is_some());
    world.teardown().await;
}

#[tokio::test]
async fn location_sync_imports_the_crm_locations_once() {
    let world = spawn_crm_world(3, 1, |s| s.poller.enabled = false).await;
    let crm = leadorch::startup::crm_client(&test_settings_for(&world), &world.app.store).expect("client");

    let first = leadorch::ops::sync_locations(&world.app.store, &crm, world.tenant.id, None).await.expect("sync");
    let second = leadorch::ops::sync_locations(&world.app.store, &crm, world.tenant.id, None).await.expect("sync");

    assert_eq!(first.created.len(), 2);
    assert_eq!(first.existing, vec![world.sim_locations[0].id.clone()]);
    let imported = first.created.iter().find(|l| l.crm_location_id == world.sim_locations[1].id).expect("imported");
    assert_eq!(imported.name, world.sim_locations[1].name);
    assert_eq!(imported.timezone.as_str(), world.sim_locations[1].timezone);
    assert!(imported.address_opt.as_deref().is_some_and(|a| a.contains(&world.sim_locations[1].city)));
    assert!(imported.phone_opt.is_some());
    assert!(second.created.is_empty());
    assert_eq!(second.existing.len(), 3);
    world.teardown().await;
}

fn test_settings_for(world: &crate::helpers::CrmWorld) -> leadorch::config::Settings {
    let mut settings = crate::helpers::test_settings(&world.app.db.url);
    settings.shopmonkey.base_url = world.sim.base_url();
    settings.secrets.shopmonkey_api_key_opt = Some(secrecy::SecretString::from(crate::helpers::COMPANY_KEY.to_owned()));
    settings
}
