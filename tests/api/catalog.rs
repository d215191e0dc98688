//! The location catalog over real HTTP, PostgreSQL and Redis, with the ShopMonkey fake as the
//! CRM: single flight on a cold location, stale-while-revalidate, the in-process fallback when
//! Redis is absent or goes away (and Redis again when it is back), the last good catalog from
//! PostgreSQL when the CRM fails, location-specific prices, staff overrides, tenant isolation and
//! the 503 when there is no true price to show. Each test has its own Redis key prefix.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config, KeysInterface};
use leadorch::config::Settings;
use leadorch::ops;
use leadorch::sim::shopmonkey::{Fault, SimSeed};
use leadorch_actors::domain::{LocationId, Money};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    COMPANY, COMPANY_KEY, CrmWorld, OutageProxy, eventually, spawn_crm_world, spawn_crm_world_with_seed,
    test_redis_url, unique_redis_prefix,
};

/// The fake's canned-service listing: one request per catalog fetch of one location.
const CANNED: &str = "/v3/canned_service";
/// A package every location of the fake offers, at $300.00 list price.
const PREMIUM: &str = "Premium Tint Package — XPEL CS Black Carbon";

/// Settings for catalog tests: no poller (its CRM calls would blur the counts), Redis at
/// `redis_url` under `prefix`, the given TTL, and entries kept briefly past it.
fn catalog_settings(prefix: &str, redis_url: String, ttl: Duration) -> impl FnOnce(&mut Settings) {
    let prefix = prefix.to_owned();
    move |settings: &mut Settings| {
        settings.poller.enabled = false;
        settings.redis.url_opt = Some(secrecy::SecretString::from(redis_url));
        settings.redis.key_prefix = prefix;
        settings.catalog.ttl = ttl;
        settings.catalog.max_stale = Duration::from_secs(120);
    }
}

/// A staff key of the world's tenant.
async fn staff_key(world: &CrmWorld) -> String {
    world.app.store.api_keys.create(world.tenant.id, "front desk").await.expect("api key").key
}

/// GETs a location's catalog as `key`, returning the status and the JSON body.
async fn read(world: &CrmWorld, key: &str, location_id: LocationId) -> (StatusCode, Value) {
    let response = world
        .app
        .http
        .get(format!("{}/api/locations/{location_id}/catalog", world.app.address))
        .bearer_auth(key)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("json body"))
}

/// GETs a catalog that must be served, returning its body.
async fn read_ok(world: &CrmWorld, key: &str, location_id: LocationId) -> Value {
    let (status, body) = read(world, key, location_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn source(body: &Value) -> &str {
    body["source"].as_str().expect("source")
}

/// The catalog's prices in cents by service name.
fn prices_by_name(body: &Value) -> BTreeMap<String, i64> {
    body["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| (s["name"].as_str().expect("name").to_owned(), s["price_cents"].as_i64().expect("price_cents")))
        .collect()
}

/// The service of that name in a catalog body.
fn service<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["services"].as_array().expect("services").iter().find(|s| s["name"] == name).expect("service listed")
}

/// The host:port of the test Redis.
fn redis_addr() -> String {
    let url = reqwest::Url::parse(&test_redis_url()).expect("LEADORCH_TEST_REDIS_URL is a URL");
    format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(6379))
}

/// Deletes one key from the test Redis (what an eviction or a flush would do).
async fn redis_del(key: &str) {
    let client = fred::clients::Client::new(Config::from_url(&test_redis_url()).expect("url"), None, None, None);
    client.init().await.expect("test redis reachable");
    let _: i64 = client.del(key).await.expect("del");
    client.quit().await.expect("quit");
}

#[tokio::test]
async fn a_hundred_concurrent_reads_of_a_cold_location_make_one_crm_call() {
    let prefix = unique_redis_prefix();
    let world = spawn_crm_world(2, 2, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(300))).await;
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;
    assert_eq!(world.sim.request_count(CANNED), 0);

    let reads = (0..100).map(|_| read(&world, &key, location_id));
    let answers = futures::future::join_all(reads).await;

    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["services"].as_array().expect("services").len(), 23, "{body}");
    }
    assert_eq!(world.sim.request_count(CANNED), 1, "one crm call for the location");
    assert!(answers.iter().any(|(_, body)| source(body) == "crm"));
    assert!(answers.iter().all(|(_, body)| matches!(source(body), "crm" | "redis")));
    let first = prices_by_name(&answers[0].1);
    assert!(answers.iter().all(|(_, body)| prices_by_name(body) == first), "every reader sees the same prices");
    world.teardown().await;
}

#[tokio::test]
async fn after_the_ttl_a_read_returns_the_old_catalog_at_once_and_one_refresh_runs() {
    let prefix = unique_redis_prefix();
    let world = spawn_crm_world(1, 1, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(1))).await;
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;
    let first = read_ok(&world, &key, location_id).await;
    assert_eq!((source(&first), first["stale"].as_bool()), ("crm", Some(false)));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The refresh will take at least 800 ms: a read that waited for it would show it.
    world.sim.set_fault(Fault::Slow { delay: Duration::from_millis(800), times: 1 });

    let started = Instant::now();
    let second = read_ok(&world, &key, location_id).await;
    let elapsed = started.elapsed();

    assert_eq!((source(&second), second["stale"].as_bool()), ("redis", Some(true)), "{second}");
    assert!(elapsed < Duration::from_millis(600), "the stale read waited {elapsed:?}");
    assert_eq!(prices_by_name(&second), prices_by_name(&first));
    assert_eq!(second["fetched_at"], first["fetched_at"], "the old value");
    assert!(
        eventually(Duration::from_secs(5), || async { world.sim.request_count(CANNED) == 2 }).await,
        "the stale read started a refresh"
    );
    // Reads while the refresh runs serve the stale copy and start nothing more.
    let last = RefCell::new(None);
    let refreshed = eventually(Duration::from_secs(5), || async {
        let body = read_ok(&world, &key, location_id).await;
        let is_fresh = body["stale"] == false;
        *last.borrow_mut() = Some(body);
        is_fresh
    })
    .await;
    assert!(refreshed, "the refreshed catalog is served: {:?}", last.borrow());
    assert_eq!(world.sim.request_count(CANNED), 2, "exactly one refresh");
    let fresh = last.into_inner().expect("a fresh read");
    assert_ne!(fresh["fetched_at"], first["fetched_at"]);
    world.teardown().await;
}

#[tokio::test]
async fn with_redis_at_a_closed_port_reads_still_succeed_from_memory() {
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").port()
    };
    let prefix = unique_redis_prefix();
    let started = Instant::now();
    let world = spawn_crm_world(
        1,
        1,
        catalog_settings(&prefix, format!("redis://127.0.0.1:{closed_port}"), Duration::from_secs(300)),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(20), "start-up did not wait for redis");
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;

    let first = read_ok(&world, &key, location_id).await;
    let second = read_ok(&world, &key, location_id).await;

    assert_eq!(source(&first), "crm");
    assert_eq!(source(&second), "memory", "{second}");
    assert_eq!(prices_by_name(&first), prices_by_name(&second));
    assert_eq!(world.sim.request_count(CANNED), 1);
    world.teardown().await;
}

#[tokio::test]
async fn a_redis_that_goes_away_is_replaced_by_memory_and_used_again_when_it_is_back() {
    let proxy = OutageProxy::start_to(redis_addr()).await;
    let prefix = unique_redis_prefix();
    let world =
        spawn_crm_world(1, 1, catalog_settings(&prefix, format!("redis://{}", proxy.addr), Duration::from_secs(300)))
            .await;
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;
    // The client connects in the background: the first reads may come from memory.
    assert!(
        eventually(Duration::from_secs(10), || async { source(&read_ok(&world, &key, location_id).await) == "redis" })
            .await,
        "redis serves once connected"
    );

    proxy.cut();
    let from_memory = eventually(Duration::from_secs(5), || async {
        // Every read succeeds during the outage.
        source(&read_ok(&world, &key, location_id).await) == "memory"
    })
    .await;
    assert!(from_memory, "memory serves while redis is away");
    let during = read_ok(&world, &key, location_id).await;
    assert_eq!(source(&during), "memory");

    proxy.restore();
    let back =
        eventually(Duration::from_secs(10), || async { source(&read_ok(&world, &key, location_id).await) == "redis" })
            .await;

    assert!(back, "redis is used again without a restart");
    assert_eq!(world.sim.request_count(CANNED), 1, "the outage cost no crm call");
    world.teardown().await;
}

#[tokio::test]
async fn when_the_crm_answers_500_the_last_good_catalog_is_served_from_postgres_with_its_age() {
    let prefix = unique_redis_prefix();
    let world = spawn_crm_world(1, 1, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(300))).await;
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;
    let first = read_ok(&world, &key, location_id).await;
    assert_eq!(source(&first), "crm");
    // The stored copy is ten minutes old, and the cache lost its copy (evicted, flushed).
    let client = world.app.db.client().await;
    client
        .execute(
            "UPDATE service_catalog SET fetched_at = fetched_at - interval '10 minutes' WHERE tenant_id = $1",
            &[&world.tenant.id.as_uuid()],
        )
        .await
        .expect("backdate");
    redis_del(&format!("{prefix}catalog:{}:{location_id}", world.tenant.id)).await;
    world.sim.set_fault(Fault::Status500 { times: usize::MAX });

    let fallback = read_ok(&world, &key, location_id).await;

    assert_eq!(source(&fallback), "db", "{fallback}");
    assert_eq!(fallback["stale"], true);
    let age = fallback["age_secs"].as_i64().expect("age_secs");
    assert!((600..660).contains(&age), "age {age}");
    assert_eq!(prices_by_name(&fallback), prices_by_name(&first));
    assert!(world.sim.request_count(CANNED) >= 2, "the crm was asked first");
    world.teardown().await;
}

#[tokio::test]
async fn two_locations_return_their_own_prices_for_the_same_service() {
    let mut seed = SimSeed::franchise(COMPANY, COMPANY_KEY, 2, 6);
    seed.companies[0].price_factor_per_location = vec![1.0, 1.1];
    let prefix = unique_redis_prefix();
    let world =
        spawn_crm_world_with_seed(seed, 2, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(300))).await;
    let key = staff_key(&world).await;

    let austin = read_ok(&world, &key, world.locations[0].id).await;
    let miami = read_ok(&world, &key, world.locations[1].id).await;

    assert_eq!(austin["location_id"], world.locations[0].id.to_string());
    assert_eq!(miami["location_id"], world.locations[1].id.to_string());
    assert_eq!(service(&austin, PREMIUM)["price_cents"], 30_000);
    assert_eq!(service(&austin, PREMIUM)["price"], "$300.00");
    assert_eq!(service(&miami, PREMIUM)["price_cents"], 33_000);
    assert_eq!(service(&miami, PREMIUM)["price"], "$330.00");
    assert_ne!(service(&austin, PREMIUM)["service_id"], service(&miami, PREMIUM)["service_id"]);
    let (list, factored) = (prices_by_name(&austin), prices_by_name(&miami));
    assert_eq!(list.len(), 23);
    for (name, cents) in &list {
        // The fake rounds each location's price to whole dollars.
        let expected = ((*cents as f64) * 1.1 / 100.0).round() as i64 * 100;
        assert_eq!(factored.get(name), Some(&expected), "{name}");
    }
    assert_eq!(world.sim.request_count(CANNED), 2, "one fetch per location");
    world.teardown().await;
}

#[tokio::test]
async fn a_staff_override_beats_the_crm_price_from_the_next_refresh_on() {
    let prefix = unique_redis_prefix();
    let world = spawn_crm_world(1, 1, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(1))).await;
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;
    let first = read_ok(&world, &key, location_id).await;
    let premium_id = service(&first, PREMIUM)["service_id"].as_str().expect("service_id").to_owned();

    world
        .app
        .store
        .catalog
        .set_override(world.tenant.id, location_id, &premium_id, Some(Money::from_cents(27_500)))
        .await
        .expect("override set");

    let last = RefCell::new(None);
    let overridden = eventually(Duration::from_secs(6), || async {
        let body = read_ok(&world, &key, location_id).await;
        let done = service(&body, PREMIUM)["price_cents"] == 27_500;
        *last.borrow_mut() = Some(body);
        done
    })
    .await;
    assert!(overridden, "the override is served: {:?}", last.borrow());
    let body = last.into_inner().expect("a read");
    assert_eq!(service(&body, PREMIUM)["price"], "$275.00");
    assert_eq!(service(&body, PREMIUM)["overridden"], true);
    let others_overridden =
        body["services"].as_array().expect("services").iter().filter(|s| s["overridden"] == true).count();
    assert_eq!(others_overridden, 1, "only the overridden service");
    // The CRM still quotes its own price; the override outlives refreshes.
    assert_eq!(service(&first, PREMIUM)["price_cents"], 30_000);
    world.teardown().await;
}

#[tokio::test]
async fn another_tenants_key_gets_404_and_a_missing_key_401() {
    let prefix = unique_redis_prefix();
    let world = spawn_crm_world(1, 1, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(300))).await;
    let key = staff_key(&world).await;
    let location_id = world.locations[0].id;
    read_ok(&world, &key, location_id).await;
    let other = ops::add_tenant(&world.app.store, "Other Tint", None).await.expect("tenant").tenant;
    let other_key = world.app.store.api_keys.create(other.id, "front desk").await.expect("api key").key;

    let (foreign, body) = read(&world, &other_key, location_id).await;
    let (unknown, _) = read(&world, &key, LocationId::new()).await;
    let garbage = world
        .app
        .http
        .get(format!("{}/api/locations/not-a-uuid/catalog", world.app.address))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request sent")
        .status();
    let anonymous = world.app.get(&format!("/api/locations/{location_id}/catalog")).await.status();

    assert_eq!(foreign, StatusCode::NOT_FOUND, "{body}");
    assert!(body.get("services").is_none(), "no prices leak: {body}");
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(garbage, StatusCode::NOT_FOUND);
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(world.sim.request_count(CANNED), 1, "a foreign read reaches no crm");
    world.teardown().await;
}

#[tokio::test]
async fn with_the_crm_down_and_nothing_stored_the_answer_is_503_without_prices() {
    let prefix = unique_redis_prefix();
    let world = spawn_crm_world(1, 1, catalog_settings(&prefix, test_redis_url(), Duration::from_secs(300))).await;
    let key = staff_key(&world).await;
    world.sim.set_fault(Fault::Status500 { times: usize::MAX });

    let (status, body) = read(&world, &key, world.locations[0].id).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("catalog unavailable")), "{body}");
    assert!(body.get("services").is_none());
    world.teardown().await;
}
