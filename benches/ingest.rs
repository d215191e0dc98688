//! Webhook ingest against the real PostgreSQL: signed ShopMonkey order webhooks in, leads out.
//!
//! Once per run: a fresh database `bench_ingest_<uuid>` (created and migrated as the API tests
//! do, dropped at the end), a ShopMonkey fake with a ten-shop franchise, a tenant mirroring
//! those shops (open all day, SMS paced at 1,000/s so pacing never holds a first touch back),
//! and the whole application on a loopback port — the production default profile (pool of 16,
//! 32 events in flight in the ingress), the poller off, the compliance window open all day,
//! Twilio and SendGrid as the in-process fakes (`VendorMode::SimWhereMissing`), as `leadorch
//! loadgen` runs it.
//!
//! Each iteration first creates B = 500 new estimates at the fake without the fake delivering
//! anything (`create_order_silently`, round robin over the shops, every order for a customer
//! of its own with its own phone and email) and signs their `INSERT` webhooks (untimed);
//! then, timed, POSTs them to `/webhooks/shopmonkey/{tenant}` over loopback HTTP, 32 in
//! flight (reqwest):
//!
//! - `ingest/webhook_202`: until every POST has answered 202, i.e. every event is committed to
//!   `inbox_events` (the route commits before answering): accepted webhooks per second.
//! - `ingest/webhook_to_lead`: until the tenant has B more rows in `leads` (polling
//!   `SELECT count(*) FROM leads WHERE tenant_id = $1` every 20 ms on a connection of its
//!   own): HTTP, signature, inbox commit, the ingress actor, three CRM reads from the fake
//!   (order, customer, vehicle), qualification, planning, the lead and plan insert, and
//!   routing to the location actor. Throughput is leads per second, +-20 ms of polling.
//!
//! Between iterations (untimed) the bench waits for every lead to be created and first-touched
//! (the SMS to the Twilio fake) and for the inbox to drain of the fakes' delivery callbacks,
//! then runs `VACUUM ANALYZE` (autovacuum's job in production; the shared test server runs
//! with autovacuum off), so an iteration does not pay for the previous one's tail.
//! The load generator, the fakes and the app share this process and its cores: the figures are
//! a lower bound of the server alone on the same machine.
//!
//! `cargo bench --bench ingest` (needs PostgreSQL; `LEADORCH_TEST_DATABASE_URL` overrides
//! `postgres://postgres@127.0.0.1:5432/postgres`, as for the API tests)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use leadorch::config::Settings;
use leadorch::ops::{self, LocationInput};
use leadorch::sim::shopmonkey::{ShopMonkeySim, SimSeed};
use leadorch::startup::Application;
use leadorch::vendors::VendorMode;
use leadorch_actors::domain::TenantId;

/// Webhooks (new orders) per iteration.
const BATCH: usize = 500;
/// POSTs in flight at once.
const CONCURRENCY: usize = 32;
const SHOPS: usize = 10;
/// Generated customers per shop, each with its own phone and email: a full run's orders
/// (about 22 iterations of `BATCH`) each get a customer of their own: no phone or customer
/// piles up hundreds of leads, as none would in production.
const CUSTOMERS_PER_SHOP: usize = 2_000;
const COMPANY: &str = "co_bench";
const COMPANY_KEY: &str = "sm_bench_key";
const POLL: Duration = Duration::from_millis(20);
/// The longest an iteration may wait for its leads (or first touches) before the run fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn base_database_url() -> String {
    std::env::var("LEADORCH_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn database_url(name: &str) -> String {
    let mut url = reqwest::Url::parse(&base_database_url()).expect("database url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The running app, the fake behind it and what a webhook needs.
struct World {
    db_name: String,
    sim: ShopMonkeySim,
    tenant_id: TenantId,
    webhook_secret: String,
    webhook_url: String,
    shops: Vec<String>,
    /// The fake's customers of each shop (customer i belongs to shop i mod `SHOPS`).
    customers: Vec<Vec<String>>,
    /// Orders created so far.
    orders: std::cell::Cell<usize>,
    http: reqwest::Client,
    /// A connection of the bench's own, for counting.
    counter: tokio_postgres::Client,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start() -> World {
    let db_name = format!("bench_ingest_{}", uuid::Uuid::new_v4().simple());
    let db_url = database_url(&db_name);
    let config: tokio_postgres::Config = db_url.parse().expect("database url");
    leadorch::store::ensure_database(&config).await.expect("create the bench database");
    leadorch::store::migrate(&config).await.expect("migrate the bench database");

    let seed = SimSeed::franchise(COMPANY, COMPANY_KEY, SHOPS, SHOPS * CUSTOMERS_PER_SHOP);
    let sim_shops = seed.companies[0].locations.clone();
    let sim = ShopMonkeySim::start(seed).await.expect("the shopmonkey fake starts");

    let env: HashMap<String, String> = [
        ("LEADORCH_DATABASE_URL".to_owned(), db_url.clone()),
        ("LEADORCH_SECRET_KEY".to_owned(), "bench-deployment-secret".to_owned()),
    ]
    .into_iter()
    .collect();
    let mut settings = Settings::load(None, None, &env).expect("default settings");
    let store = leadorch::store::Store::new(&settings.database).expect("pool");
    let created = ops::add_tenant(&store, "Bench Tint Co", None).await.expect("tenant");
    let tenant_id = created.tenant.id;
    for (index, shop) in sim_shops.iter().enumerate() {
        let input = LocationInput {
            tenant_id,
            crm_location_id: shop.id.clone(),
            name: shop.name.clone(),
            timezone: shop.timezone.clone(),
            phone_opt: Some(shop.phone.clone()),
            sms_from_opt: Some(format!("+1737555{:04}", 100 + index)),
            sms_rate_per_sec: 1000.0,
            email_from_opt: Some(format!("shop{index}@bench.example")),
            ..LocationInput::default()
        };
        let location = ops::add_location(&store, input).await.expect("location");
        ops::set_location_hours(&store, tenant_id, location.id, "mon-sun 00:00-24:00").await.expect("hours");
    }
    drop(store);

    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    settings.http.addr = probe.local_addr().expect("addr");
    drop(probe);
    settings.http.public_url = format!("http://{}", settings.http.addr);
    settings.shopmonkey.base_url = sim.base_url();
    settings.secrets.shopmonkey_api_key_opt = Some(secrecy::SecretString::from(COMPANY_KEY.to_owned()));
    settings.poller.enabled = false;
    settings.compliance.default_window =
        leadorch_actors::compliance::Window { start: jiff::civil::Time::midnight(), end: jiff::civil::Time::MAX };
    settings.compliance.states.clear();
    let app = Application::build_with(settings, VendorMode::SimWhereMissing).await.expect("the app builds");
    let base_url = format!("http://{}", app.local_addr());
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let customers = (0..SHOPS)
        .map(|shop| (0..CUSTOMERS_PER_SHOP).map(|k| sim.customer(COMPANY, shop + k * SHOPS).id).collect())
        .collect();
    let (counter, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    World {
        db_name,
        sim,
        tenant_id,
        webhook_secret: created.webhook_secret,
        webhook_url: format!("{base_url}/webhooks/shopmonkey/{tenant_id}"),
        shops: sim_shops.into_iter().map(|shop| shop.id).collect(),
        customers,
        orders: std::cell::Cell::new(0),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(CONCURRENCY)
            .tcp_nodelay(true)
            .build()
            .expect("http client"),
        counter,
        shutdown,
        server,
    }
}

impl World {
    /// Stops the app and the fake and drops the database.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(20), self.server).await {
            Ok(Ok(Ok(()))) => {}
            other => eprintln!("ingest bench: the app did not stop cleanly: {other:?}"),
        }
        self.sim.shutdown().await;
        drop(self.counter);
        let (admin, connection) =
            tokio_postgres::connect(&database_url("postgres"), tokio_postgres::NoTls).await.expect("connect admin");
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name))
            .await
            .expect("drop the bench database");
    }

    /// Creates `BATCH` orders at the fake, silently, round robin over the shops and each
    /// shop's customers, and returns their signed webhook POSTs.
    fn next_batch(&self) -> Vec<reqwest::RequestBuilder> {
        let timestamp = jiff::Timestamp::now().as_second();
        let first = self.orders.replace(self.orders.get() + BATCH);
        (first..first + BATCH)
            .map(|n| {
                let (shop, round) = (n % SHOPS, n / SHOPS);
                let customer = &self.customers[shop][round % CUSTOMERS_PER_SHOP];
                let (_, body) = self.sim.create_order_silently(COMPANY, &self.shops[shop], Some(customer));
                let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
                let signature =
                    leadorch::crm::shopmonkey::signature::sign(&self.webhook_secret, &webhook_id, timestamp, &body);
                self.http
                    .post(&self.webhook_url)
                    .header("content-type", "application/json")
                    .header("x-request-id", uuid::Uuid::new_v4().to_string())
                    .header("webhook-id", webhook_id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .header("webhook-version", "3")
                    .body(body)
            })
            .collect()
    }

    /// (leads, leads with a first touch) of the tenant.
    async fn counts(&self) -> (i64, i64) {
        let row = self
            .counter
            .query_one(
                "SELECT count(*), count(first_touch_at) FROM leads WHERE tenant_id = $1",
                &[&self.tenant_id.as_uuid()],
            )
            .await
            .expect("count leads");
        (row.get(0), row.get(1))
    }

    async fn leads(&self) -> i64 {
        self.counter
            .query_one("SELECT count(*) FROM leads WHERE tenant_id = $1", &[&self.tenant_id.as_uuid()])
            .await
            .expect("count leads")
            .get(0)
    }

    /// Waits until the tenant has `expected` leads.
    async fn wait_for_leads(&self, expected: i64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leads = self.leads().await;
            if leads >= expected {
                return;
            }
            assert!(Instant::now() < deadline, "only {leads} of {expected} leads after {PATIENCE:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the tenant has `expected` leads, all first-touched, and then (at most 5 s)
    /// until the vendors' callbacks about those touches are processed too: the inbox has
    /// nothing unprocessed twice in a row, 250 ms apart.
    async fn settle(&self, expected: i64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (leads, touched) = self.counts().await;
            if leads >= expected && touched >= leads {
                break;
            }
            assert!(Instant::now() < deadline, "{leads} leads of {expected}, {touched} first-touched");
            tokio::time::sleep(POLL).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let unprocessed: i64 = self
                .counter
                .query_one("SELECT count(*) FROM inbox_events WHERE processed_at IS NULL", &[])
                .await
                .expect("count unprocessed events")
                .get(0);
            quiet = if unprocessed == 0 { quiet + 1 } else { 0 };
        }
        // What autovacuum would have done by now in production (the shared test server runs
        // with autovacuum off): without it every iteration pays for the dead row versions and
        // stale statistics of all the earlier ones.
        self.counter.batch_execute("VACUUM ANALYZE").await.expect("vacuum");
    }
}

/// POSTs every request, `CONCURRENCY` at a time, and checks that each answered 202.
async fn post_all(requests: Vec<reqwest::RequestBuilder>) {
    let statuses: Vec<reqwest::StatusCode> = futures::stream::iter(requests)
        .map(|request| async move {
            let response = request.send().await.expect("webhook sent");
            let status = response.status();
            // Read to the end, so the connection goes back to the pool.
            let _ = response.bytes().await;
            status
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let refused: Vec<_> = statuses.iter().filter(|s| **s != reqwest::StatusCode::ACCEPTED).collect();
    assert!(refused.is_empty(), "{} of {} webhooks refused: {:?}", refused.len(), statuses.len(), &refused[..1]);
}

/// What an iteration times.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Every POST answered 202.
    Accepted,
    /// Every webhook is a lead.
    Leads,
}

async fn iteration(world: &World, until: Until) -> Duration {
    let before = world.leads().await;
    let requests = world.next_batch();
    let expected = before + BATCH as i64;
    let started = Instant::now();
    post_all(requests).await;
    if matches!(until, Until::Leads) {
        world.wait_for_leads(expected).await;
    }
    let elapsed = started.elapsed();
    world.settle(expected).await;
    elapsed
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let world = rt.block_on(start());

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, until) in [("webhook_202", Until::Accepted), ("webhook_to_lead", Until::Leads)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(iteration(&world, until))).sum());
        });
    }
    group.finish();

    rt.block_on(world.stop());
}

criterion_group!(benches, ingest);
criterion_main!(benches);
