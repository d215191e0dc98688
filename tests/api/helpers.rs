//! Shared harness: fresh databases, a running app on port 0, and a TCP proxy that can cut the
//! app off from PostgreSQL. Logs print only when `TEST_LOG` is set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadorch::config::{LogFormat, LogSettings, Settings};
use leadorch::startup::Application;
use leadorch::store::{self, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// The server tests create their databases on; `LEADORCH_TEST_DATABASE_URL` overrides it.
pub(crate) fn base_database_url() -> String {
    std::env::var("LEADORCH_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Returns the base URL with its database (path) replaced, and its host:port replaced when given.
pub(crate) fn database_url(name: &str, host_port_opt: Option<SocketAddr>) -> String {
    let mut url = reqwest::Url::parse(&base_database_url()).expect("LEADORCH_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    if let Some(addr) = host_port_opt {
        url.set_host(Some(&addr.ip().to_string())).expect("host");
        url.set_port(Some(addr.port())).expect("port");
    }
    url.to_string()
}

/// Returns the host:port of the test PostgreSQL server.
pub(crate) fn database_addr() -> String {
    let url = reqwest::Url::parse(&base_database_url()).expect("url");
    format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432))
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        leadorch::telemetry::init(&LogSettings { format: LogFormat::Pretty, filter: "info".to_owned() });
    }
}

/// The deployment secret tests run with.
pub(crate) const SECRET_KEY: &str = "test-deployment-secret";

/// Settings for a test: the `test` profile, a fresh database name, port 0, a secret key.
pub(crate) fn test_settings(db_url: &str) -> Settings {
    let env: HashMap<String, String> = [
        ("LEADORCH_DATABASE_URL".to_owned(), db_url.to_owned()),
        ("LEADORCH_SECRET_KEY".to_owned(), SECRET_KEY.to_owned()),
    ]
    .into_iter()
    .collect();
    Settings::load(Some("test"), Some(include_str!("../../config/test.toml")), &env).expect("test settings are valid")
}

/// A database of its own for one test, dropped by `drop_database`.
#[derive(Debug)]
pub(crate) struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates an empty database (no migrations).
    pub(crate) async fn empty() -> TestDb {
        init_logs();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let url = database_url(&name, None);
        let config: tokio_postgres::Config = url.parse().expect("url");
        store::ensure_database(&config).await.expect("create test database");
        TestDb { name, url }
    }

    /// Creates a database and applies every migration.
    pub(crate) async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        let config: tokio_postgres::Config = db.url.parse().expect("url");
        store::migrate(&config).await.expect("migrate test database");
        db
    }

    /// A store over this database.
    pub(crate) fn store(&self) -> Store {
        Store::new(&test_settings(&self.url).database).expect("pool")
    }

    /// Connects one plain client, for assertions in SQL.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }

    /// Drops the database, closing any connection still open to it.
    pub(crate) async fn drop_database(self) {
        let admin = database_url("postgres", None);
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect admin");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
            .expect("drop test database");
    }
}

/// A running leadorch on a random port over a fresh database.
#[derive(Debug)]
pub(crate) struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub db: TestDb,
    /// The Twilio and SendGrid fakes this app sends through (configured like real vendors).
    pub twilio: leadorch::sim::twilio::TwilioSim,
    pub sendgrid: leadorch::sim::sendgrid::SendGridSim,
    /// The running location actors (to count live lead actors).
    pub registry: leadorch_actors::actors::location::LocationRegistry,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Credentials of the Twilio and SendGrid fakes.
pub(crate) const TWILIO_SID: &str = "AC00000000000000000000000000000001";
pub(crate) const TWILIO_TOKEN: &str = "twilio-test-token";
pub(crate) const SENDGRID_KEY: &str = "SG.test-key";

/// Starts the app over a fresh database.
pub(crate) async fn spawn_app() -> TestApp {
    let db = TestDb::empty().await;
    let settings = test_settings(&db.url);
    spawn_app_with(db, settings).await
}

/// Starts the app with the given settings over `db`.
pub(crate) async fn spawn_app_with(db: TestDb, settings: Settings) -> TestApp {
    let (twilio, sendgrid) = start_vendors().await;
    spawn_app_using(db, settings, twilio, sendgrid).await
}

/// Starts the Twilio and SendGrid fakes with the test credentials.
pub(crate) async fn start_vendors() -> (leadorch::sim::twilio::TwilioSim, leadorch::sim::sendgrid::SendGridSim) {
    use leadorch::sim::sendgrid::{SendGridSim, SendGridSimConfig};
    use leadorch::sim::twilio::{TwilioSim, TwilioSimConfig};
    let twilio =
        TwilioSim::start(TwilioSimConfig { account_sid: TWILIO_SID.to_owned(), auth_token: TWILIO_TOKEN.to_owned() })
            .await
            .expect("twilio fake starts");
    let sendgrid =
        SendGridSim::start(SendGridSimConfig { api_key: SENDGRID_KEY.to_owned() }).await.expect("sendgrid fake starts");
    (twilio, sendgrid)
}

/// Starts the app over `db`, sending through the given fakes (configured like real vendors).
pub(crate) async fn spawn_app_using(
    db: TestDb,
    mut settings: Settings,
    twilio: leadorch::sim::twilio::TwilioSim,
    sendgrid: leadorch::sim::sendgrid::SendGridSim,
) -> TestApp {
    settings.twilio_base_url = twilio.base_url();
    settings.sendgrid_base_url = sendgrid.base_url();
    settings.secrets.twilio_account_sid_opt = Some(secrecy::SecretString::from(TWILIO_SID.to_owned()));
    settings.secrets.twilio_auth_token_opt = Some(secrecy::SecretString::from(TWILIO_TOKEN.to_owned()));
    settings.secrets.sendgrid_api_key_opt = Some(secrecy::SecretString::from(SENDGRID_KEY.to_owned()));
    settings.secrets.sendgrid_verification_key_opt = Some(sendgrid.public_key_base64());
    // Vendors call back the public URL, so it must be the app's own address: pick a free port.
    if settings.http.addr.port() == 0 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        settings.http.addr = probe.local_addr().expect("addr");
    }
    settings.http.public_url = format!("http://{}", settings.http.addr);
    let app = Application::build(settings).await.expect("app builds");
    sendgrid.set_event_webhook(format!("http://{}/webhooks/sendgrid/events", app.local_addr()));
    let address = format!("http://{}", app.local_addr());
    let store = app.state().store.clone();
    let registry = app.registry().clone();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = shutdown_rx.await;
    }));
    TestApp {
        address,
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client"),
        store,
        db,
        twilio,
        sendgrid,
        registry,
        shutdown: Some(shutdown_tx),
        server,
    }
}

impl TestApp {
    /// GETs a path of the app.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.address)).send().await.expect("request sent")
    }

    /// Stops the app gracefully and drops its database.
    pub(crate) async fn teardown(mut self) {
        self.stop().await;
        self.db.drop_database().await;
    }

    /// Stops the app gracefully, keeping the database.
    pub(crate) async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(15), &mut self.server).await;
        result.expect("app stops within 15 s").expect("server task").expect("server ran cleanly");
    }
}

/// Polls `check` until it returns true or the deadline passes.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of PostgreSQL that a test can cut (dropping every connection and refusing
/// new ones) and restore, to play a database outage without touching the shared server.
#[derive(Debug, Clone)]
pub(crate) struct OutageProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl OutageProxy {
    /// Starts the proxy in front of the test PostgreSQL.
    pub(crate) async fn start() -> OutageProxy {
        OutageProxy::start_to(database_addr()).await
    }

    /// Starts the proxy in front of `upstream` (host:port), e.g. the test Redis.
    pub(crate) async fn start_to(upstream: String) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let proxy = OutageProxy { addr, up: Arc::new(AtomicBool::new(true)), connections: Arc::default() };
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accepting.connections.lock().expect("proxy mutex").push(task.abort_handle());
            }
        });
        proxy
    }

    /// Drops every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().expect("proxy mutex").drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A tenant with one location (America/Chicago), for tests that need somewhere to put leads.
pub(crate) async fn seed_tenant(
    store: &Store,
    name: &str,
) -> (leadorch_actors::domain::Tenant, leadorch_actors::domain::Location) {
    use leadorch::ops::{self, LocationInput};
    let tenant = ops::add_tenant(store, name, None).await.expect("tenant").tenant;
    let location = ops::add_location(
        store,
        LocationInput {
            tenant_id: tenant.id,
            crm_location_id: format!("loc-{}", uuid::Uuid::new_v4().simple()),
            name: format!("{name} Austin"),
            timezone: "America/Chicago".to_owned(),
            sms_from_opt: Some(unique_number()),
            sms_rate_per_sec: 1.0,
            email_from_opt: Some("austin@example.com".to_owned()),
            ..LocationInput::default()
        },
    )
    .await
    .expect("location");
    (tenant, location)
}

/// Returns a Twilio number no other test location uses (numbers are unique across tenants).
pub(crate) fn unique_number() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A random block per test process keeps parallel test binaries apart too.
    static BLOCK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let block = *BLOCK.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u32 % 90 + 10);
    format!("+1737{block:02}{:05}", n % 100_000)
}

/// A new lead of `location` for CRM order `order_id`.
pub(crate) fn new_lead(
    location: &leadorch_actors::domain::Location,
    order_id: &str,
) -> leadorch_actors::domain::NewLead {
    use leadorch_actors::domain::{Email, NewLead, Phone, Vehicle};
    NewLead {
        tenant_id: location.tenant_id,
        location_id: location.id,
        crm_source: "shopmonkey".to_owned(),
        crm_order_id: order_id.to_owned(),
        crm_customer_id_opt: Some("cus_1".to_owned()),
        first_name_opt: Some("Pat".to_owned()),
        last_name_opt: Some("Lee".to_owned()),
        phone_opt: Some(Phone::parse("(512) 555-0142").expect("phone")),
        email_opt: Some(Email::parse("pat@example.com").expect("email")),
        vehicle_opt: Some(Vehicle {
            year: Some(2021),
            make: Some("Toyota".into()),
            model: Some("Camry".into()),
            submodel: None,
        }),
        requested_services: vec!["Premium XPEL CS Black".to_owned()],
        received_at: jiff::Timestamp::now(),
    }
}

/// A two-step plan (SMS now, email in ten minutes).
pub(crate) fn two_step_plan() -> Vec<leadorch_actors::domain::NewTouchpoint> {
    use leadorch_actors::domain::{Channel, NewTouchpoint};
    let now = jiff::Timestamp::now();
    let later = now + jiff::SignedDuration::from_mins(10);
    vec![
        NewTouchpoint {
            step_index: 0,
            channel: Channel::Sms,
            template: "first_sms".into(),
            intended_at: now,
            scheduled_at: now,
            placement_reason_opt: None,
        },
        NewTouchpoint {
            step_index: 1,
            channel: Channel::Email,
            template: "first_email".into(),
            intended_at: later,
            scheduled_at: later,
            placement_reason_opt: Some("business hours".into()),
        },
    ]
}

/// The company every ShopMonkey-backed test uses at the fake.
pub(crate) const COMPANY: &str = "co_tintco";
/// Its API key at the fake.
pub(crate) const COMPANY_KEY: &str = "sm_test_key_tintco";

/// A running app wired to a ShopMonkey fake: one tenant whose first locations mirror the fake's.
#[derive(Debug)]
pub(crate) struct CrmWorld {
    pub(crate) app: TestApp,
    pub(crate) sim: leadorch::sim::shopmonkey::ShopMonkeySim,
    pub(crate) tenant: leadorch_actors::domain::Tenant,
    pub(crate) webhook_secret: String,
    /// leadorch's locations, in the fake's location order.
    pub(crate) locations: Vec<leadorch_actors::domain::Location>,
    /// The fake's locations (more than leadorch knows when `registered < total`).
    pub(crate) sim_locations: Vec<leadorch::sim::shopmonkey::SimLocation>,
}

/// Starts a ShopMonkey fake with `total` locations, a tenant with the first `registered` of
/// them, and the app (poller every second, CRM key from the environment fallback), then points
/// the fake's webhooks at the app. `configure` adjusts the settings before the app starts.
pub(crate) async fn spawn_crm_world(
    total: usize,
    registered: usize,
    configure: impl FnOnce(&mut Settings),
) -> CrmWorld {
    let seed = leadorch::sim::shopmonkey::SimSeed::franchise(COMPANY, COMPANY_KEY, total, 6);
    spawn_crm_world_with_seed(seed, registered, configure).await
}

/// Like [`spawn_crm_world`], over a given seed whose first company is the tenant's (e.g. with
/// `price_factor_per_location` set).
pub(crate) async fn spawn_crm_world_with_seed(
    seed: leadorch::sim::shopmonkey::SimSeed,
    registered: usize,
    configure: impl FnOnce(&mut Settings),
) -> CrmWorld {
    use leadorch::ops::{self, LocationInput};
    use leadorch::sim::shopmonkey::ShopMonkeySim;

    let sim_locations = seed.companies[0].locations.clone();
    let sim = ShopMonkeySim::start(seed).await.expect("fake starts");
    let db = TestDb::migrated().await;
    let store = db.store();
    let created = ops::add_tenant(&store, "Tint Co", None).await.expect("tenant");
    let mut locations = Vec::new();
    for sim_location in sim_locations.iter().take(registered) {
        let input = LocationInput {
            tenant_id: created.tenant.id,
            crm_location_id: sim_location.id.clone(),
            name: sim_location.name.clone(),
            timezone: sim_location.timezone.clone(),
            phone_opt: Some(sim_location.phone.clone()),
            sms_from_opt: Some(unique_number()),
            email_from_opt: Some(format!("shop{}@tintco.example", locations.len())),
            sms_rate_per_sec: 50.0,
            ..LocationInput::default()
        };
        let location = ops::add_location(&store, input).await.expect("location");
        ops::set_location_hours(&store, created.tenant.id, location.id, "mon-sun 00:00-24:00").await.expect("hours");
        locations.push(location);
    }
    let mut settings = test_settings(&db.url);
    settings.shopmonkey.base_url = sim.base_url();
    settings.shopmonkey.max_retries = 1;
    settings.shopmonkey.request_timeout = Duration::from_secs(2);
    settings.secrets.shopmonkey_api_key_opt = Some(secrecy::SecretString::from(COMPANY_KEY.to_owned()));
    settings.poller.interval = Duration::from_secs(1);
    settings.ingress.sweep_interval = Duration::from_millis(300);
    // Tests run at any hour: open the legal window all day here (the compliance clock itself is
    // covered by the timeline's unit and property tests).
    settings.compliance.default_window =
        leadorch_actors::compliance::Window { start: jiff::civil::Time::midnight(), end: jiff::civil::Time::MAX };
    settings.compliance.states.clear();
    settings.sending.retry_backoff = Duration::from_millis(50);
    configure(&mut settings);
    let app = spawn_app_with(db, settings).await;
    sim.set_webhook_target(
        COMPANY,
        format!("{}/webhooks/shopmonkey/{}", app.address, created.tenant.id),
        created.webhook_secret.clone(),
    );
    CrmWorld { app, sim, tenant: created.tenant, webhook_secret: created.webhook_secret, locations, sim_locations }
}

impl CrmWorld {
    /// Stops the app and the fake, and drops the database.
    pub(crate) async fn teardown(self) {
        self.sim.shutdown().await;
        self.app.teardown().await;
    }

    /// Counts rows of `table` for this tenant (inbox rows: ShopMonkey's only; Twilio and
    /// SendGrid events share the inbox).
    pub(crate) async fn count(&self, table: &str) -> i64 {
        let client = self.app.db.client().await;
        let only_crm = if table == "inbox_events" { " AND source = 'shopmonkey'" } else { "" };
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1{only_crm}");
        client.query_one(&sql, &[&self.tenant.id.as_uuid()]).await.expect("count").get(0)
    }

    /// Posts a webhook body to the app, signed with `secret` at `timestamp`.
    pub(crate) async fn post_signed(
        &self,
        body: &[u8],
        secret: &str,
        timestamp: i64,
        request_id: &str,
    ) -> reqwest::Response {
        let webhook_id = format!("msg_{request_id}");
        let signature = leadorch::crm::shopmonkey::signature::sign(secret, &webhook_id, timestamp, body);
        self.app
            .http
            .post(format!("{}/webhooks/shopmonkey/{}", self.app.address, self.tenant.id))
            .header("content-type", "application/json")
            .header("x-request-id", request_id)
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("webhook-version", "3")
            .body(body.to_vec())
            .send()
            .await
            .expect("request sent")
    }

    /// Waits until the tenant has a lead for `order_id`, returning it.
    pub(crate) async fn lead_for(&self, order_id: &str, within: Duration) -> Option<leadorch_actors::domain::Lead> {
        let deadline = Instant::now() + within;
        loop {
            match self.app.store.leads.find_by_crm_order(self.tenant.id, "shopmonkey", order_id).await {
                Ok(lead) => return Some(lead),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => return None,
            }
        }
    }
}

/// A time after every touch in a test's plan (to claim touches regardless of schedule).
pub(crate) fn far_future() -> jiff::Timestamp {
    jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365)
}

/// The Redis the tests use; `LEADORCH_TEST_REDIS_URL` overrides it.
pub(crate) fn test_redis_url() -> String {
    std::env::var("LEADORCH_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// Returns a Redis key prefix no other test uses.
pub(crate) fn unique_redis_prefix() -> String {
    format!("leadorch-test:{}:", uuid::Uuid::new_v4().simple())
}

/// Environment that would point the real binary at another setup or at real vendors.
const OPERATOR_ENV: &[&str] = &[
    "LEADORCH_PROFILE",
    "LEADORCH_CONFIG_DIR",
    "LEADORCH_HTTP_ADDR",
    "LEADORCH_PUBLIC_URL",
    "LEADORCH_REDIS_URL",
    "LEADORCH_SECRET_KEY",
    "LEADORCH_SHOPMONKEY_API_KEY",
    "LEADORCH_SHOPMONKEY_BASE_URL",
    "LEADORCH_TWILIO_ACCOUNT_SID",
    "LEADORCH_TWILIO_AUTH_TOKEN",
    "LEADORCH_SENDGRID_API_KEY",
    "LEADORCH_SENDGRID_VERIFICATION_KEY",
    "LEADORCH_ANTHROPIC_API_KEY",
    "LEADORCH_OPENAI_API_KEY",
    "LEADORCH_AI_PROVIDER",
    "LEADORCH_AI_FALLBACK",
    "LEADORCH_LOG",
    "RUST_LOG",
];

/// The real `leadorch` binary over `db`, as an operator runs it but offline: the repository's
/// config, none of the operator variables above, no stdin, killed when dropped.
pub(crate) fn offline_binary(db: &TestDb) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadorch"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).stdin(std::process::Stdio::null()).kill_on_drop(true);
    for var in OPERATOR_ENV {
        command.env_remove(var);
    }
    command.env("LEADORCH_DATABASE_URL", &db.url);
    command
}
