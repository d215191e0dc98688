//! `leadorch loadgen`: drives the real server with signed ShopMonkey webhooks at a target rate
//! for a bounded time, then prints one JSON summary on stdout.
//!
//! It is self-contained. In one process it starts a ShopMonkey fake (a franchise of
//! `--locations` shops), makes a fresh tenant "Loadgen <time>" in the database of
//! `LEADORCH_DATABASE_URL` (created and migrated as `leadorch migrate` does) mirroring those
//! shops, and builds the leadorch application on `127.0.0.1` (Twilio and SendGrid as local
//! fakes, the poller off, the SMS window open all day). Then, every `1/rate` seconds, it creates
//! an order at the fake without the fake delivering anything, and POSTs that order's signed
//! `INSERT` webhook (the fake's own body) to `/webhooks/shopmonkey/{tenant}` over loopback HTTP,
//! with at most `--concurrency` requests in flight. Sending stops at `--duration-secs` whatever
//! is left; a sender that cannot keep up sends less and says so (`sent` below the target).
//!
//! What is measured is the server's own code path (HTTP, signature, inbox commit, ingress, CRM
//! fetch from the fake, qualification, lead and plan insert, lead actor, first SMS to the Twilio
//! fake), but the load generator and the fakes share the process and its cores with it: the
//! figures are a lower bound of what the server alone would do on the same machine, and the
//! RSS is that of the whole process.
//!
//! After sending it waits (at most [`SETTLE_MAX`]) for the accepted webhooks to become leads
//! with a first touch, then reads speed-to-lead (`first_touch_at - received_at`) from Postgres,
//! the scheduler lag from the app's `/metrics`, and the RSS.
//!
//! `--pending N` is the scale test: before the app starts, N leads with one pending SMS each are
//! bulk-inserted (multi-row `INSERT ... SELECT generate_series`), most due days from now and
//! `--pending-due` of them due 20-40 s after seeding; the summary then says how long the app
//! took from build to ready over that backlog, and how late the due ones went out.
//!
//! `--chat-streams N` (N > 0) is another mode ([`run_chat`]): instead of the webhook phase, it opens
//! N customer chat streams at once over a fake model vendor and measures the latency the server
//! adds relaying the model's deltas to them; it prints a [`ChatSummary`] instead of a
//! [`Summary`].
//!
//! Earlier loadgen tenants (named "Loadgen ...") are deactivated at start and this run's at the
//! end, so their follow-ups and location actors never load a later run; their rows stay for
//! inspection.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use leadorch_actors::domain::{Location, TenantId};
use leadorch_actors::ports::StoreError;
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::{LogFormat, LogSettings, Settings};
use crate::crm::shopmonkey::signature;
use crate::ops::{self, LocationInput, OpsError};
use crate::sim::shopmonkey::{ShopMonkeySim, SimLocation, SimSeed};
use crate::startup::{self, Application};
use crate::store::Store;
use crate::vendors::VendorMode;

mod chat;

pub use chat::{CONNECT_WITHIN, ChatSummary, REPLIES_WITHIN, run_chat};

/// The fake's company.
const COMPANY: &str = "co_loadgen";
/// Tenants this tool made start with this.
const TENANT_PREFIX: &str = "Loadgen ";
/// Per-location SMS rate: high, so that the location's pacing never holds a first touch back.
const SMS_RATE_PER_SEC: f64 = 1000.0;
/// Open around the clock (the SMS window is opened in the settings too).
const HOURS: &str = "mon-sun 00:00-24:00";
/// Customers per shop at most; orders cycle through a shop's customers.
const MAX_CUSTOMERS_PER_LOCATION: usize = 100;
/// One webhook POST may take this long before it counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for the app to answer /readyz after it is built.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The longest wait after sending for accepted webhooks to become first-touched leads.
pub const SETTLE_MAX: Duration = Duration::from_secs(30);
/// Settling also ends when the counts have not moved for this long.
const SETTLE_STALL: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(250);
/// Seeded leads go in by this many per statement.
const SEED_CHUNK: u64 = 50_000;
/// Due seeded touches are spread over this window, starting this long after seeding ends.
const DUE_AFTER_SECS: f64 = 20.0;
const DUE_SPREAD_SECS: f64 = 20.0;
/// Seeded leads' order ids start with this; webhook leads never do.
const SEED_ORDER_PREFIX: &str = "seed_";
/// Plain progress lines (stderr not a terminal) come this often.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
const BAR_REFRESH: Duration = Duration::from_millis(200);

/// What `leadorch loadgen` was asked for.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Webhooks per second; 0 skips the webhook phase.
    pub rate: u32,
    /// How long to send; zero skips the webhook phase.
    pub duration: Duration,
    /// Webhook requests in flight at most.
    pub concurrency: usize,
    /// Shops of the fake franchise (and locations of the tenant).
    pub locations: usize,
    /// Leads with a pending touch to seed before the app starts (0: none).
    pub pending: u64,
    /// How many of the seeded touches fall due during the run (at most `pending`).
    pub pending_due: u64,
    /// Chat mode: customer chat streams to open at once (0: off, the webhook mode runs).
    pub chat_streams: usize,
    /// Chat mode: words of the fake model's reply; it streams them two to a delta.
    pub chat_reply_words: usize,
    /// Chat mode: the fake model's pause before each delta.
    pub chat_delta_interval: Duration,
}

/// p50/p95/p99/max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// What `--pending` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PendingReport {
    /// Leads (each with one pending SMS) inserted before start.
    pub seeded: u64,
    pub seed_ms: f64,
    /// Seeded touches due 20-40 s after seeding.
    pub due: u64,
    /// Of those, sent by the end of the run.
    pub due_sent: i64,
    /// `sent_at - scheduled_at` of the due touches that were sent.
    pub due_lateness_ms: Option<Percentiles>,
}

/// The one JSON object `leadorch loadgen` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rate_target: u32,
    pub duration_secs: u64,
    pub sent: u64,
    /// Answered 202.
    pub accepted: u64,
    /// `accepted` over the time from the first send to the last answer.
    pub accepted_per_sec: f64,
    /// Failed requests by kind: `status_NNN`, `timeout`, `connect`, `request`.
    pub errors: BTreeMap<String, u64>,
    /// The tenant's leads from this run's webhooks.
    pub leads_created: i64,
    /// `first_touch_at - received_at` over this run's leads that have a first touch.
    pub speed_to_lead_ms: Option<Percentiles>,
    /// p99 of `leadorch_scheduler_lag_seconds` (claim time - scheduled time of every touch the
    /// process sent), interpolated within its Prometheus bucket. A first touch is scheduled at
    /// the webhook's arrival, so this includes the time the lead waited for the ingress.
    pub scheduler_lag_p99_ms: Option<f64>,
    /// The bucket that holds that p99, `[lower, upper]` (`upper` null: above the last bucket):
    /// the figure's resolution.
    pub scheduler_lag_p99_bucket_ms: Option<(f64, Option<f64>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_lag_note: Option<String>,
    /// Resident memory of the whole process (app, fakes and load generator) at the end.
    pub rss_mb_end: Option<f64>,
    /// Leads of this run without a first touch when measured (not in `speed_to_lead_ms`).
    pub leads_without_first_touch: i64,
    /// Round trip of the webhook POSTs that were answered.
    pub webhook_latency_ms: Option<Percentiles>,
    /// From `Application::build_with` to the first 200 from /readyz.
    pub startup_ms: f64,
    pub concurrency: usize,
    pub locations: usize,
    pub tenant_id: TenantId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingReport>,
}

/// Installs a log subscriber that writes to stderr (stdout carries only the summary): `RUST_LOG`
/// wins, then `LEADORCH_LOG`, else `warn`, so the progress display stays readable.
pub fn init_logs(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let configured = std::env::var_os("LEADORCH_LOG").is_some_and(|v| !v.is_empty());
    let fallback = if configured { settings.filter.as_str() } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(fallback));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Runs the load and returns the summary (the caller prints it).
///
/// # Errors
/// The database cannot be prepared, seeding fails, the fake or the app cannot start, or a
/// measurement query fails.
pub async fn run(settings: Settings, options: LoadgenOptions) -> anyhow::Result<Summary> {
    let total_target = u64::from(options.rate) * options.duration.as_secs();
    let per_location = usize::try_from(total_target.div_ceil(options.locations.max(1) as u64))
        .unwrap_or(MAX_CUSTOMERS_PER_LOCATION)
        .clamp(1, MAX_CUSTOMERS_PER_LOCATION);
    let rig = prepare(&settings, options.locations, per_location).await?;
    let (store, tenant_id) = (&rig.store, rig.tenant_id);

    let pending_opt = if options.pending > 0 {
        let due = options.pending_due.min(options.pending);
        let started = Instant::now();
        seed_pending(store, tenant_id, &rig.locations, options.pending, due).await?;
        let seed_ms = ms(started.elapsed());
        note(&format!("seeded {} leads with a pending touch ({due} due in 20-40 s) in {seed_ms} ms", options.pending));
        Some((due, seed_ms))
    } else {
        None
    };

    let app = start_app(settings, &rig, options.concurrency).await?;
    let (http, base_url, startup_ms) = (&app.http, app.base_url.as_str(), app.startup_ms);
    let measured = async {
        let customers = customers_by_location(&rig.sim, options.locations, per_location);
        let target = Target {
            sim: &rig.sim,
            http: http.clone(),
            url: format!("{base_url}/webhooks/shopmonkey/{tenant_id}"),
            secret: rig.webhook_secret.clone(),
            locations: rig.shops.iter().map(|s| s.id.clone()).collect(),
            customers,
        };
        let sent = send_phase(&target, &options).await;
        let (leads_created, touched) = settle(store, tenant_id, sent.accepted).await?;
        let pending = match pending_opt {
            Some((due, seed_ms)) => Some(pending_report(store, tenant_id, options.pending, due, seed_ms).await?),
            None => None,
        };
        let speed_to_lead_ms = speed_to_lead(store, tenant_id).await?;
        let metrics_text = scrape(http, base_url).await;
        let (scheduler_lag_p99_ms, scheduler_lag_p99_bucket_ms, scheduler_lag_note) =
            match histogram_quantile(&metrics_text, "leadorch_scheduler_lag_seconds", 0.99) {
                Ok(quantile) => {
                    let (lower, upper_opt) = quantile.bucket;
                    let note_opt = upper_opt
                        .is_none()
                        .then(|| format!("p99 is above the largest bucket ({lower} s): the figure is a lower bound"));
                    let bucket = (round1(lower * 1000.0), upper_opt.map(|upper| round1(upper * 1000.0)));
                    (Some(round1(quantile.value * 1000.0)), Some(bucket), note_opt)
                }
                Err(reason) => (None, None, Some(reason)),
            };
        anyhow::Ok(Summary {
            rate_target: options.rate,
            duration_secs: options.duration.as_secs(),
            sent: sent.sent,
            accepted: sent.accepted,
            accepted_per_sec: sent.accepted_per_sec,
            errors: sent.errors,
            leads_created,
            speed_to_lead_ms,
            scheduler_lag_p99_ms,
            scheduler_lag_p99_bucket_ms,
            scheduler_lag_note,
            rss_mb_end: rss_mb(&metrics_text),
            leads_without_first_touch: leads_created - touched,
            webhook_latency_ms: sent.latency_ms,
            startup_ms,
            concurrency: options.concurrency,
            locations: options.locations,
            tenant_id,
            pending,
        })
    }
    .await;

    stop_app(app).await;
    retire(rig).await;
    measured
}

/// What every mode sets up before the app starts: the ShopMonkey fake, and a fresh tenant in
/// the database whose locations mirror the fake's shops.
struct Rig {
    sim: ShopMonkeySim,
    /// The fake's API key, which the app is configured with.
    crm_key: String,
    store: Store,
    tenant_id: TenantId,
    webhook_secret: String,
    /// The fake's shops; `locations[i]` mirrors `shops[i]`.
    shops: Vec<SimLocation>,
    locations: Vec<Location>,
}

/// Starts the ShopMonkey fake (a franchise of `locations` shops with `per_location` customers
/// each), prepares the database, deactivates earlier loadgen tenants and creates this run's.
async fn prepare(settings: &Settings, locations: usize, per_location: usize) -> anyhow::Result<Rig> {
    let crm_key = format!("sm_loadgen_{}", uuid::Uuid::new_v4().simple());
    let seed = SimSeed::franchise(COMPANY, &crm_key, locations, locations * per_location);
    let shops = seed.companies[0].locations.clone();
    let sim = ShopMonkeySim::start(seed).await.context("failed to start the shopmonkey fake")?;
    note(&format!("shopmonkey fake at {} (api key {crm_key})", sim.base_url()));

    startup::prepare_database(settings).await?;
    let store = Store::new(&settings.database).context("failed to build the database pool")?;
    let retired = retire_earlier_tenants(&store).await?;
    if retired > 0 {
        note(&format!("deactivated {retired} earlier loadgen tenant(s)"));
    }
    let tenant_name = format!("{TENANT_PREFIX}{:.0}", Timestamp::now());
    let created = ops::add_tenant(&store, &tenant_name, None).await?;
    let tenant_id = created.tenant.id;
    let mut tenant_locations = Vec::with_capacity(shops.len());
    for (index, shop) in shops.iter().enumerate() {
        let location = add_location(&store, tenant_id, index, shop).await?;
        ops::set_location_hours(&store, tenant_id, location.id, HOURS).await?;
        tenant_locations.push(location);
    }
    note(&format!("tenant {tenant_id} \"{tenant_name}\" with {} locations", tenant_locations.len()));
    Ok(Rig {
        sim,
        crm_key,
        store,
        tenant_id,
        webhook_secret: created.webhook_secret,
        shops,
        locations: tenant_locations,
    })
}

/// Deactivates the run's tenant and stops the ShopMonkey fake.
async fn retire(rig: Rig) {
    if let Err(err) = deactivate(&rig.store, rig.tenant_id).await {
        tracing::warn!(error = format!("{err:#}"), "could not deactivate the loadgen tenant");
    }
    rig.sim.shutdown().await;
}

/// The app serving on loopback, and the handle that stops it.
struct RunningApp {
    /// `http://127.0.0.1:PORT`.
    base_url: String,
    /// For /readyz, /metrics and the webhook POSTs: each request times out after
    /// [`REQUEST_TIMEOUT`].
    http: reqwest::Client,
    /// From `Application::build_with` to the first 200 from /readyz.
    startup_ms: f64,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Builds the app on a free loopback port and waits for it to be ready: the fake as its CRM,
/// local Twilio and SendGrid fakes, no poller, SMS all day. `idle_connections` sizes the pool
/// of its [`RunningApp::http`] client.
async fn start_app(mut settings: Settings, rig: &Rig, idle_connections: usize) -> anyhow::Result<RunningApp> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    let addr: SocketAddr = probe.local_addr().context("failed to read the probed address")?;
    drop(probe);
    settings.http.addr = addr;
    settings.http.public_url = format!("http://{addr}");
    settings.shopmonkey.base_url = rig.sim.base_url();
    settings.secrets.shopmonkey_api_key_opt = Some(SecretString::from(rig.crm_key.clone()));
    // Never text or email anyone real from a load test.
    settings.secrets.twilio_account_sid_opt = None;
    settings.secrets.twilio_auth_token_opt = None;
    settings.secrets.sendgrid_api_key_opt = None;
    settings.secrets.sendgrid_verification_key_opt = None;
    if settings.secrets.secret_key_opt.is_none() {
        settings.secrets.secret_key_opt = Some(random_secret());
    }
    settings.poller.enabled = false;
    settings.compliance.default_window =
        leadorch_actors::compliance::Window { start: jiff::civil::Time::midnight(), end: jiff::civil::Time::MAX };
    settings.compliance.states.clear();

    let build_started = Instant::now();
    let app = Application::build_with(settings, VendorMode::SimWhereMissing).await?;
    let base_url = format!("http://{}", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(idle_connections)
        .tcp_nodelay(true)
        .build()
        .context("failed to build the http client")?;
    let startup_ms = wait_ready(&http, &base_url, build_started).await?;
    note(&format!("app ready at {base_url} in {startup_ms} ms"));
    Ok(RunningApp { base_url, http, startup_ms, stop_tx, server })
}

/// Stops the app and waits (at most 20 s) for it to drain.
async fn stop_app(app: RunningApp) {
    let RunningApp { stop_tx, mut server, .. } = app;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(20), &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = format!("{err:#}"), "the app stopped with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "the app task failed"),
        Err(_) => {
            tracing::warn!("the app did not stop within 20 s");
            server.abort();
        }
    }
}

/// A fresh deployment secret, for a run whose configuration has none.
fn random_secret() -> SecretString {
    SecretString::from(uuid::Uuid::new_v4().simple().to_string())
}

/// The resident memory of the whole process in MiB: the app's gauge, else `/proc`.
fn rss_mb(metrics_text: &str) -> Option<f64> {
    let rss_bytes_opt = gauge(metrics_text, "process_resident_memory_bytes").or_else(vm_rss_bytes);
    rss_bytes_opt.map(|bytes| round1(bytes / (1024.0 * 1024.0)))
}

/// A progress or status line on stderr.
fn note(line: &str) {
    eprintln!("loadgen: {line}");
}

fn ms(elapsed: Duration) -> f64 {
    round1(elapsed.as_secs_f64() * 1000.0)
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Deactivates every active tenant an earlier run made; returns how many.
async fn retire_earlier_tenants(store: &Store) -> anyhow::Result<u64> {
    let client = store.pool.get().await.context("database unavailable")?;
    let pattern = format!("{TENANT_PREFIX}%");
    client
        .execute("UPDATE tenants SET active = false, updated_at = now() WHERE active AND name LIKE $1", &[&pattern])
        .await
        .context("failed to deactivate earlier loadgen tenants")
}

async fn deactivate(store: &Store, tenant_id: TenantId) -> anyhow::Result<()> {
    let client = store.pool.get().await.context("database unavailable")?;
    client
        .execute("UPDATE tenants SET active = false, updated_at = now() WHERE id = $1", &[&tenant_id.as_uuid()])
        .await
        .context("failed to deactivate the tenant")?;
    Ok(())
}

/// Creates the tenant's location for a shop, with an SMS number no location uses yet (numbers
/// are unique across tenants, and earlier runs' numbers stay taken).
async fn add_location(
    store: &Store,
    tenant_id: TenantId,
    index: usize,
    shop: &SimLocation,
) -> anyhow::Result<Location> {
    let mut last_error = None;
    for _ in 0..20 {
        let input = LocationInput {
            tenant_id,
            crm_location_id: shop.id.clone(),
            name: shop.name.clone(),
            timezone: shop.timezone.clone(),
            address_opt: Some(format!("{}, {}, {} {}", shop.address1, shop.city, shop.state, shop.postal_code)),
            phone_opt: Some(shop.phone.clone()),
            sms_from_opt: Some(random_sms_number()),
            sms_rate_per_sec: SMS_RATE_PER_SEC,
            email_from_opt: Some(format!("shop{index}@loadgen.leadorch.local")),
        };
        match ops::add_location(store, input).await {
            Ok(location) => return Ok(location),
            // A number taken by another location: draw again.
            Err(OpsError::Store(StoreError::Conflict { constraint })) if constraint.contains("sms_from") => {
                last_error = Some(constraint);
            }
            Err(err) => return Err(err).with_context(|| format!("failed to create location {}", shop.name)),
        }
    }
    anyhow::bail!("no free sms number for location {} ({last_error:?})", shop.name)
}

/// A random Austin (737) number with an exchange from 200 to 999 that is not N11.
fn random_sms_number() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let exchange = loop {
        let candidate: u32 = rng.random_range(200..1000);
        if candidate % 100 != 11 {
            break candidate;
        }
    };
    format!("+1737{exchange:03}{:04}", rng.random_range(0..10_000u32))
}

/// The ids of each shop's customers, in the fake's order (customer `i` belongs to shop
/// `i % shops`).
fn customers_by_location(sim: &ShopMonkeySim, locations: usize, per_location: usize) -> Vec<Vec<String>> {
    (0..locations)
        .map(|shop| (0..per_location).map(|k| sim.customer(COMPANY, shop + k * locations).id).collect())
        .collect()
}

/// Polls /readyz until 200; returns the milliseconds since `since`.
async fn wait_ready(http: &reqwest::Client, base_url: &str, since: Instant) -> anyhow::Result<f64> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let ready = http
            .get(format!("{base_url}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
        if ready {
            return Ok(ms(since.elapsed()));
        }
        anyhow::ensure!(Instant::now() < deadline, "the app was not ready within {} s", READY_WITHIN.as_secs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

/// Where and what to send.
struct Target<'a> {
    sim: &'a ShopMonkeySim,
    http: reqwest::Client,
    url: String,
    secret: String,
    /// The fake's location ids.
    locations: Vec<String>,
    customers: Vec<Vec<String>>,
}

/// Shared by the sender, the request tasks and the progress display.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Round trips of answered requests, in microseconds.
    latencies_us: Mutex<Vec<u64>>,
}

/// What the webhook phase did.
#[derive(Debug)]
struct Sent {
    sent: u64,
    accepted: u64,
    accepted_per_sec: f64,
    errors: BTreeMap<String, u64>,
    latency_ms: Option<Percentiles>,
}

/// Sends for `options.duration` at `options.rate`, then waits for the requests in flight.
async fn send_phase(target: &Target<'_>, options: &LoadgenOptions) -> Sent {
    let counters = Arc::new(Counters::default());
    let total_target = u64::from(options.rate) * options.duration.as_secs();
    if total_target == 0 {
        return Sent { sent: 0, accepted: 0, accepted_per_sec: 0.0, errors: BTreeMap::new(), latency_ms: None };
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let progress = tokio::spawn(show_progress(Arc::clone(&counters), total_target, done_rx));
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let mut in_flight = tokio::task::JoinSet::new();
    let started = Instant::now();
    let end = started + options.duration;
    let period = Duration::from_secs_f64(1.0 / f64::from(options.rate));
    for index in 0..total_target {
        let due = started + period.mul_f64(index as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(Ok(permit)) = tokio::time::timeout_at(end, Arc::clone(&permits).acquire_owned()).await else {
            break;
        };
        while in_flight.try_join_next().is_some() {}
        let shop = usize::try_from(index).unwrap_or(0) % target.locations.len();
        let round = usize::try_from(index).unwrap_or(0) / target.locations.len();
        let customers = &target.customers[shop];
        let customer_id = &customers[round % customers.len()];
        let (_, body) = target.sim.create_order_silently(COMPANY, &target.locations[shop], Some(customer_id));
        let request = signed_request(&target.http, &target.url, &target.secret, body);
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::clone(&counters);
        in_flight.spawn(async move {
            let sent_at = Instant::now();
            let result = send_for_status(request).await;
            let elapsed = sent_at.elapsed();
            drop(permit);
            record(&counters, result, elapsed);
        });
    }
    while in_flight.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let _ = done_tx.send(());
    let _ = progress.await;
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *counters.latencies_us.lock().expect("latency mutex"));
    let errors = std::mem::take(&mut *counters.errors.lock().expect("errors mutex"));
    Sent {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted,
        accepted_per_sec: round1(accepted as f64 / elapsed.as_secs_f64().max(1e-9)),
        errors,
        latency_ms: percentiles_us(&mut latencies),
    }
}

/// Sends `request` and returns its status, reading the body to its end so that the connection
/// goes back to the pool.
pub(crate) async fn send_for_status(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::StatusCode> {
    let response = request.send().await?;
    let status = response.status();
    response.bytes().await.map(|_| status)
}

/// A webhook POST as ShopMonkey sends it (headers of `tests/api/helpers.rs` `post_signed`).
fn signed_request(http: &reqwest::Client, url: &str, secret: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    let request_id = uuid::Uuid::new_v4().to_string();
    let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let timestamp = Timestamp::now().as_second();
    let signature = signature::sign(secret, &webhook_id, timestamp, &body);
    http.post(url)
        .header("content-type", "application/json")
        .header("user-agent", "Shopmonkey (+https://shopmonkey.io)")
        .header("x-request-id", request_id)
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("webhook-version", "3")
        .body(body)
}

fn record(counters: &Counters, result: reqwest::Result<reqwest::StatusCode>, elapsed: Duration) {
    let kind = match result {
        Ok(status) => {
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            counters.latencies_us.lock().expect("latency mutex").push(micros);
            if status == reqwest::StatusCode::ACCEPTED {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            format!("status_{}", status.as_u16())
        }
        Err(err) if err.is_timeout() => "timeout".to_owned(),
        Err(err) if err.is_connect() => "connect".to_owned(),
        Err(_) => "request".to_owned(),
    };
    counters.failed.fetch_add(1, Ordering::Relaxed);
    *counters.errors.lock().expect("errors mutex").entry(kind).or_default() += 1;
}

/// A progress bar on a terminal, plain lines every few seconds otherwise; both on stderr.
async fn show_progress(counters: Arc<Counters>, total: u64, mut done: tokio::sync::oneshot::Receiver<()>) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let started = Instant::now();
    let status = |counters: &Counters| {
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let per_sec = accepted as f64 / started.elapsed().as_secs_f64().max(1e-9);
        format!("accepted {accepted} ({per_sec:.1}/s), errors {}", counters.failed.load(Ordering::Relaxed))
    };
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} sent, {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        loop {
            bar.set_position(counters.sent.load(Ordering::Relaxed));
            bar.set_message(status(&counters));
            tokio::select! {
                _ = &mut done => break,
                () = tokio::time::sleep(BAR_REFRESH) => {}
            }
        }
        bar.set_position(counters.sent.load(Ordering::Relaxed));
        bar.finish_with_message(status(&counters));
    } else {
        loop {
            tokio::select! {
                _ = &mut done => break,
                () = tokio::time::sleep(PLAIN_PROGRESS_EVERY) => {}
            }
            note(&format!(
                "{:.0} s: sent {}/{total}, {}",
                started.elapsed().as_secs_f64(),
                counters.sent.load(Ordering::Relaxed),
                status(&counters)
            ));
        }
        note(&format!("sending done: sent {}/{total}, {}", counters.sent.load(Ordering::Relaxed), status(&counters)));
    }
}

/// Nearest-rank percentiles of microsecond samples, in milliseconds.
fn percentiles_us(samples: &mut [u64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = (q * samples.len() as f64).ceil() as usize;
        round1(samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0)
    };
    Some(Percentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) })
}

// ---------------------------------------------------------------------------------------------
// Measuring in Postgres
// ---------------------------------------------------------------------------------------------

/// Waits until the run's leads number `accepted` and all have a first touch, the counts stop
/// moving, or [`SETTLE_MAX`] passes; returns (leads, leads with a first touch).
async fn settle(store: &Store, tenant_id: TenantId, accepted: u64) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last = (-1, -1);
    let mut moved_at = Instant::now();
    loop {
        let counts = run_lead_counts(store, tenant_id).await?;
        let (leads, touched) = counts;
        if u64::try_from(leads).unwrap_or(0) >= accepted && touched >= leads {
            return Ok(counts);
        }
        if counts != last {
            last = counts;
            moved_at = Instant::now();
        } else if moved_at.elapsed() >= SETTLE_STALL {
            note(&format!("leads stopped moving at {leads} ({touched} first-touched) of {accepted} accepted"));
            return Ok(counts);
        }
        if Instant::now() >= deadline {
            note(&format!(
                "settling gave up after {} s at {leads} leads ({touched} first-touched)",
                SETTLE_MAX.as_secs()
            ));
            return Ok(counts);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// (leads, leads with a first touch) of the tenant, seeded ones excluded.
async fn run_lead_counts(store: &Store, tenant_id: TenantId) -> anyhow::Result<(i64, i64)> {
    let client = store.pool.get().await.context("database unavailable")?;
    let row = client
        .query_one(
            "SELECT count(*), count(first_touch_at) FROM leads
             WHERE tenant_id = $1 AND crm_order_id NOT LIKE $2",
            &[&tenant_id.as_uuid(), &format!("{SEED_ORDER_PREFIX}%")],
        )
        .await
        .context("failed to count leads")?;
    Ok((row.get(0), row.get(1)))
}

/// Percentiles of `first_touch_at - received_at` over the run's first-touched leads.
async fn speed_to_lead(store: &Store, tenant_id: TenantId) -> anyhow::Result<Option<Percentiles>> {
    let client = store.pool.get().await.context("database unavailable")?;
    let row = client
        .query_one(
            "WITH s AS (
                 SELECT extract(epoch FROM first_touch_at - received_at)::float8 * 1000 AS ms FROM leads
                 WHERE tenant_id = $1 AND crm_order_id NOT LIKE $2 AND first_touch_at IS NOT NULL)
             SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY ms),
                    percentile_disc(0.99) WITHIN GROUP (ORDER BY ms),
                    max(ms)
             FROM s",
            &[&tenant_id.as_uuid(), &format!("{SEED_ORDER_PREFIX}%")],
        )
        .await
        .context("failed to compute speed-to-lead")?;
    Ok(percentiles_row(&row))
}

fn percentiles_row(row: &tokio_postgres::Row) -> Option<Percentiles> {
    let value = |i: usize| row.get::<_, Option<f64>>(i).map(round1);
    Some(Percentiles { p50: value(0)?, p95: value(1)?, p99: value(2)?, max: value(3)? })
}

// ---------------------------------------------------------------------------------------------
// --pending: the scale test
// ---------------------------------------------------------------------------------------------

/// Inserts `count` leads of the tenant, spread over its locations, each `in_cadence` with one
/// pending SMS (the standard cadence's `quick_follow_up` step). Leads `0..due` go in last, their
/// touches due 20-40 s later; the others' touches are due in 1 to 6 days. Leads get a first
/// touch in the past so that they stay out of speed-to-lead.
async fn seed_pending(
    store: &Store,
    tenant_id: TenantId,
    locations: &[Location],
    count: u64,
    due: u64,
) -> anyhow::Result<()> {
    let location_ids: Vec<uuid::Uuid> = locations.iter().map(|l| l.id.as_uuid()).collect();
    let client = store.pool.get().await.context("database unavailable")?;
    let insert = |scheduled: &str| {
        format!(
            "WITH new_leads AS (
                 INSERT INTO leads (id, tenant_id, location_id, crm_source, crm_order_id, crm_customer_id, status,
                                    first_name, last_name, phone, email, cadence_name, cadence_version,
                                    received_at, first_touch_at)
                 SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + (g % cardinality($2::uuid[]))::int], 'shopmonkey',
                        '{SEED_ORDER_PREFIX}' || g, 'seed_cus_' || g, 'in_cadence', 'Seed', 'Lead',
                        '+1737555' || lpad((g % 10000)::text, 4, '0'), 'seed' || g || '@example.com',
                        'standard', 1, now() - interval '1 hour', now() - interval '1 hour' + interval '2 seconds'
                 FROM generate_series($3::bigint, $4::bigint) AS g
                 RETURNING id, tenant_id, substr(crm_order_id, {skip})::bigint AS g)
             INSERT INTO touchpoints (id, tenant_id, lead_id, step_index, channel, template, status,
                                      intended_at, scheduled_at)
             SELECT gen_random_uuid(), tenant_id, id, 2, 'sms', 'quick_follow_up', 'pending', at, at
             FROM new_leads, LATERAL (SELECT {scheduled} AS at) AS t",
            skip = SEED_ORDER_PREFIX.len() + 1,
        )
    };
    let far = insert("now() + interval '1 day' + make_interval(secs => (g % 432000)::float8)");
    let soon = insert(&format!(
        "now() + make_interval(secs => {DUE_AFTER_SECS} + g::float8 * {DUE_SPREAD_SECS} / greatest($5::bigint, 1))"
    ));
    let tenant = tenant_id.as_uuid();
    let mut from = due;
    while from < count {
        let to = (from + SEED_CHUNK).min(count) - 1;
        let (first, last) = (i64::try_from(from)?, i64::try_from(to)?);
        client.execute(&far, &[&tenant, &location_ids, &first, &last]).await.context("failed to seed leads")?;
        note(&format!("seeded {}/{count}", to + 1 - due));
        from = to + 1;
    }
    if due > 0 {
        let (last, due_i) = (i64::try_from(due - 1)?, i64::try_from(due)?);
        client
            .execute(&soon, &[&tenant, &location_ids, &0_i64, &last, &due_i])
            .await
            .context("failed to seed the due leads")?;
    }
    client.batch_execute("ANALYZE leads; ANALYZE touchpoints").await.context("failed to analyze")?;
    Ok(())
}

/// Waits (at most [`SETTLE_MAX`] past the last due time) for the due seeded touches to leave
/// `pending`, then reports how late they were sent.
async fn pending_report(
    store: &Store,
    tenant_id: TenantId,
    seeded: u64,
    due: u64,
    seed_ms: f64,
) -> anyhow::Result<PendingReport> {
    let client = store.pool.get().await.context("database unavailable")?;
    let due_filter = "FROM touchpoints t JOIN leads l ON l.tenant_id = t.tenant_id AND l.id = t.lead_id
         WHERE t.tenant_id = $1 AND l.crm_order_id LIKE $2 AND t.scheduled_at < now() + interval '1 hour'";
    let seed_like = format!("{SEED_ORDER_PREFIX}%");
    let tenant = tenant_id.as_uuid();
    let last_due: Option<Timestamp> = client
        .query_one(&format!("SELECT max(t.scheduled_at) {due_filter}"), &[&tenant, &seed_like])
        .await
        .context("failed to read the due touches")?
        .get(0);
    if let Some(last_due) = last_due {
        let wait_until = last_due + jiff::SignedDuration::try_from(SETTLE_MAX).unwrap_or_default();
        loop {
            let pending: i64 = client
                .query_one(
                    &format!("SELECT count(*) {due_filter} AND t.status IN ('pending', 'sending')"),
                    &[&tenant, &seed_like],
                )
                .await
                .context("failed to count the due touches")?
                .get(0);
            if pending == 0 || Timestamp::now() >= wait_until {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let row = client
        .query_one(
            &format!(
                "WITH s AS (SELECT extract(epoch FROM t.sent_at - t.scheduled_at)::float8 * 1000 AS ms
                             {due_filter} AND t.sent_at IS NOT NULL)
                 SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),
                        percentile_disc(0.95) WITHIN GROUP (ORDER BY ms),
                        percentile_disc(0.99) WITHIN GROUP (ORDER BY ms),
                        max(ms), count(*)
                 FROM s"
            ),
            &[&tenant, &seed_like],
        )
        .await
        .context("failed to measure the due touches")?;
    Ok(PendingReport { seeded, seed_ms, due, due_sent: row.get(4), due_lateness_ms: percentiles_row(&row) })
}

// ---------------------------------------------------------------------------------------------
// Reading /metrics
// ---------------------------------------------------------------------------------------------

async fn scrape(http: &reqwest::Client, base_url: &str) -> String {
    match http.get(format!("{base_url}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(err) => {
            tracing::warn!(error = %err, "could not scrape /metrics");
            String::new()
        }
    }
}

/// The value of an unlabelled gauge in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('{').and_then(|r| r.split_once("} ")).map(|(_, v)| v))?;
        value.trim().parse().ok()
    })
}

/// The process's resident memory from `/proc/self/status` (Linux), in bytes.
fn vm_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// A quantile read from `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    pub value: f64,
    /// The bucket that holds it: lower and upper bound, `None` above the last finite bound.
    pub bucket: (f64, Option<f64>),
}

/// The `q` quantile of a Prometheus histogram, interpolated linearly within the bucket that
/// holds it (as PromQL's `histogram_quantile`; above the last finite bucket, that bucket's
/// bound); a summary's own quantile line when the metric is a summary.
///
/// # Errors
/// A sentence saying why there is no figure: the metric is absent or has no observation.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Result<Quantile, String> {
    let bucket_prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&bucket_prefix) else { continue };
        let Some((labels, value)) = rest.split_once("} ") else { continue };
        let Some(le) = labels.split(',').find_map(|label| label.trim().strip_prefix("le=\"")?.strip_suffix('"')) else {
            continue;
        };
        let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().map_err(|_| format!("bad bucket {le}"))? };
        let count: f64 = value.trim().parse().map_err(|_| format!("bad bucket count {value}"))?;
        buckets.push((bound, count));
    }
    if buckets.is_empty() {
        let quantile_prefix = format!("{name}{{quantile=\"{q}\"}} ");
        return match text.lines().find_map(|line| line.strip_prefix(&quantile_prefix)) {
            Some(value) => {
                let value: f64 = value.trim().parse().map_err(|_| format!("bad quantile value {value}"))?;
                Ok(Quantile { value, bucket: (value, Some(value)) })
            }
            None => Err(format!("{name} is not in /metrics: no touch was sent")),
        };
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return Err(format!("{name} has no observation: no touch was sent"));
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Above the largest finite bucket: that bound is all that is known.
                return Ok(Quantile { value: lower.0, bucket: (lower.0, None) });
            }
            let width = count - lower.1;
            let within = if width > 0.0 { (rank - lower.1) / width } else { 1.0 };
            return Ok(Quantile { value: lower.0 + (bound - lower.0) * within, bucket: (lower.0, Some(bound)) });
        }
        lower = (bound, count);
    }
    Ok(Quantile { value: lower.0, bucket: (lower.0, None) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTOGRAM: &str = "# TYPE leadorch_scheduler_lag_seconds histogram
leadorch_scheduler_lag_seconds_bucket{le=\"0.001\"} 50
leadorch_scheduler_lag_seconds_bucket{le=\"0.01\"} 90
leadorch_scheduler_lag_seconds_bucket{le=\"0.1\"} 100
leadorch_scheduler_lag_seconds_bucket{le=\"+Inf\"} 100
leadorch_scheduler_lag_seconds_sum 1.5
leadorch_scheduler_lag_seconds_count 100
process_resident_memory_bytes 104857600
";

    #[test]
    fn the_quantile_is_interpolated_within_its_bucket() {
        let p50 = histogram_quantile(HISTOGRAM, "leadorch_scheduler_lag_seconds", 0.5).expect("p50");
        assert!((p50.value - 0.001).abs() < 1e-12, "{p50:?}");
        assert_eq!(p50.bucket, (0.0, Some(0.001)));
        let p99 = histogram_quantile(HISTOGRAM, "leadorch_scheduler_lag_seconds", 0.99).expect("p99");
        assert!((p99.value - (0.01 + 0.09 * 0.9)).abs() < 1e-9, "{p99:?}");
        assert_eq!(p99.bucket, (0.01, Some(0.1)));
    }

    #[test]
    fn a_quantile_in_the_infinite_bucket_is_the_largest_finite_bound() {
        let text = "x_bucket{le=\"1\"} 1\nx_bucket{le=\"+Inf\"} 10\n";
        assert_eq!(histogram_quantile(text, "x", 0.99), Ok(Quantile { value: 1.0, bucket: (1.0, None) }));
    }

    #[test]
    fn an_absent_or_empty_histogram_gives_a_reason() {
        assert!(histogram_quantile("", "x", 0.99).is_err_and(|r| r.contains("not in /metrics")));
        let empty = "x_bucket{le=\"1\"} 0\nx_bucket{le=\"+Inf\"} 0\n";
        assert!(histogram_quantile(empty, "x", 0.99).is_err_and(|r| r.contains("no observation")));
        let summary = histogram_quantile("x{quantile=\"0.99\"} 0.25\n", "x", 0.99).expect("summary");
        assert_eq!(summary.value, 0.25);
    }

    #[test]
    fn gauges_are_read_with_or_without_labels() {
        assert_eq!(gauge(HISTOGRAM, "process_resident_memory_bytes"), Some(104_857_600.0));
        assert_eq!(gauge("g{a=\"b\"} 3\n", "g"), Some(3.0));
        assert_eq!(gauge("gx 3\n", "g"), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let p = percentiles_us(&mut samples).expect("some");
        assert_eq!(p, Percentiles { p50: 50.0, p95: 95.0, p99: 99.0, max: 100.0 });
        assert_eq!(percentiles_us(&mut []), None);
    }

    #[test]
    fn sms_numbers_are_valid_phones() {
        for _ in 0..200 {
            let number = random_sms_number();
            assert!(leadorch_actors::domain::Phone::parse(&number).is_ok(), "{number}");
        }
    }
}
