//! `leadorch demo`: the whole service on one machine with nothing to sign up for. A ShopMonkey
//! fake runs in process and a new estimate arrives every few seconds; Twilio and SendGrid
//! without credentials are local fakes too, and the chat answers with whatever `[ai]` says (the
//! offline scripted provider when no AI key is set). Each lead's chat link is printed, and it
//! opens on this machine.
//!
//! Seeding is idempotent, so the demo can be run again and again against one database: the
//! tenant "Demo Tint Co" is found by name, its locations by CRM location id, and only what is
//! missing is created. One catch comes from the fake: its ids are deterministic (seeded by the
//! company id), so a new run would hand out the order ids of the previous run's estimates again,
//! and leadorch would rightly call them duplicates. The fake's order sequence is therefore moved
//! past every order id the tenant has already seen before feeding starts
//! ([`orders_already_used`]).
//!
//! It leaves the HTTP routes, the dashboard and the chat page to `http`, and building the
//! process to `startup`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use leadorch_actors::domain::{Location, Phone, TenantId};
use leadorch_actors::ports::{Crm, StoreError};
use secrecy::SecretString;

use crate::config::Settings;
use crate::links::LinkSigner;
use crate::ops::{self, LocationInput, OpsError};
use crate::sim::shopmonkey::{ShopMonkeySim, SimOrder, SimSeed};
use crate::startup::{self, Application};
use crate::store::Store;
use crate::vendors::VendorMode;

/// The demo tenant's name; an existing tenant of that name is reused.
pub const DEMO_TENANT: &str = "Demo Tint Co";
/// The fake's company (one franchise).
pub const DEMO_COMPANY: &str = "co_demo";
/// Customers the fake generates; the feed cycles through them.
const DEMO_CUSTOMERS: usize = 40;
/// Opening hours of every demo location.
pub const DEMO_HOURS: &str = "mon-fri 08:00-18:00, sat 09:00-14:00";
/// The name of the staff API key made on every run.
const DEMO_KEY_NAME: &str = "demo dashboard";
/// Demo SMS numbers are +1 512 555 9000 and up (the fake's customers and shops use 555 0xxx).
const SMS_NUMBER_FIRST: u32 = 9000;
const SMS_NUMBER_LAST: u32 = 9999;
/// How long a fed order may take to become a lead before the demo stops watching it.
const LEAD_WAIT: Duration = Duration::from_secs(10);
const LEAD_POLL: Duration = Duration::from_millis(250);
/// Order ids of the fake generated past the last known one when looking for where the previous
/// runs stopped (covers orders that never reached leadorch).
const FAST_FORWARD_SLACK: usize = 64;
/// The CRM source name leads are stored under.
const CRM_SOURCE: &str = "shopmonkey";

/// What `leadorch demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Listen address; `None` keeps `http.addr`. Port 0 picks a free port.
    pub addr_opt: Option<SocketAddr>,
    /// Shops of the simulated franchise.
    pub locations: usize,
    /// Time between two new estimates.
    pub every: Duration,
}

/// One shop to mirror as a location.
#[derive(Debug, Clone)]
struct Shop {
    crm_id: String,
    name: String,
    timezone: String,
    address_opt: Option<String>,
    phone_opt: Option<String>,
}

/// What seeding found or made.
#[derive(Debug)]
struct Seeded {
    webhook_secret: String,
    /// The tenant's locations for the shops, in the shops' order.
    locations: Vec<Location>,
    staff_key: String,
}

/// Runs the demo until Ctrl-C or SIGTERM.
///
/// # Errors
/// The database cannot be prepared, seeding fails, the fake or the service cannot start.
pub async fn run(mut settings: Settings, options: DemoOptions) -> anyhow::Result<()> {
    // Listening from the start: a signal during start-up then stops the demo cleanly too.
    let mut stop_signal = tokio::spawn(startup::shutdown_signal());

    let addr = listen_addr(options.addr_opt.unwrap_or(settings.http.addr))?;
    settings.http.addr = addr;
    if std::env::var_os("LEADORCH_PUBLIC_URL").is_none_or(|url| url.is_empty()) {
        settings.http.public_url = format!("http://{}", public_socket(addr));
    }
    let public_url = settings.http.public_url.clone();

    // The key must be known here, not made up inside `build_with`: the demo signs chat links.
    let secret_key = match &settings.secrets.secret_key_opt {
        Some(key) => key.clone(),
        None => {
            tracing::warn!(
                "LEADORCH_SECRET_KEY not set: using a throwaway key; chat links stop working after a restart"
            );
            let key = SecretString::from(uuid::Uuid::new_v4().simple().to_string());
            settings.secrets.secret_key_opt = Some(key.clone());
            key
        }
    };
    let links = LinkSigner::new(&secret_key, &public_url, settings.links_valid_for);

    let real_crm = settings.secrets.shopmonkey_api_key_opt.is_some();
    let (sim_opt, seed_opt) = if real_crm {
        println!(
            "LEADORCH_SHOPMONKEY_API_KEY is set: using the ShopMonkey API at {}; the demo feeds no leads",
            settings.shopmonkey.base_url
        );
        if settings.profile == "demo" {
            // The demo profile opens the SMS window all day for fake customers; real ones keep
            // the legal window.
            settings.compliance = Settings::load(None, None, &HashMap::new())
                .context("failed to load the default compliance rules")?
                .compliance;
            tracing::warn!("real CRM: the demo profile's all-day SMS window is replaced by the default rules");
        }
        (None, None)
    } else {
        let crm_key = format!("sm_demo_{}", uuid::Uuid::new_v4().simple());
        let seed = SimSeed::franchise(DEMO_COMPANY, &crm_key, options.locations, DEMO_CUSTOMERS);
        let sim = ShopMonkeySim::start(seed.clone()).await.context("failed to start the shopmonkey fake")?;
        tracing::info!(base_url = %sim.base_url(), "shopmonkey: a local fake with {} shops", options.locations);
        settings.shopmonkey.base_url = sim.base_url();
        settings.secrets.shopmonkey_api_key_opt = Some(SecretString::from(crm_key));
        (Some(sim), Some(seed))
    };

    startup::prepare_database(&settings).await?;
    let store = Store::new(&settings.database).context("failed to build the database pool")?;
    let (tenant_id, webhook_secret) = demo_tenant(&store).await?;
    let shops = match &seed_opt {
        Some(seed) => seed.companies[0]
            .locations
            .iter()
            .map(|l| Shop {
                crm_id: l.id.clone(),
                name: l.name.clone(),
                timezone: l.timezone.clone(),
                address_opt: Some(format!("{}, {}, {} {}", l.address1, l.city, l.state, l.postal_code)),
                phone_opt: Some(l.phone.clone()),
            })
            .collect(),
        None => real_crm_shops(&settings, &store, tenant_id).await,
    };
    let seeded = seed(&store, tenant_id, webhook_secret, &shops).await?;

    let app = Application::build_with(settings, VendorMode::SimWhereMissing).await?;
    if let Some(sendgrid) = &app.vendors().sendgrid_sim_opt {
        sendgrid.set_event_webhook(format!("{public_url}/webhooks/sendgrid/events"));
    }
    let ai: Vec<String> =
        app.state().chat.deps().router.health().iter().map(|p| format!("{}:{}", p.name, p.model)).collect();
    match ai.first() {
        Some(first) if first.starts_with("scripted:") => {
            tracing::info!(providers = ?ai, "chat ai: the offline scripted provider (no AI key set)");
        }
        _ => tracing::info!(providers = ?ai, "chat ai: as configured in [ai]"),
    }

    let mut feed_opt = None;
    if let (Some(sim), Some(seed)) = (&sim_opt, &seed_opt) {
        let used = orders_already_used(seed, &store, tenant_id).await?;
        let feed = Arc::new(Feed {
            store: store.clone(),
            links,
            tenant_id,
            locations: seeded.locations.clone(),
            customer_ids: (0..DEMO_CUSTOMERS).map(|i| sim.customer(DEMO_COMPANY, i).id).collect(),
        });
        // Replays the earlier runs' orders without webhooks, so that the next ids are new.
        for index in 0..used {
            feed.create_order(sim, index);
        }
        if used > 0 {
            tracing::info!(used, "shopmonkey fake: skipped the order ids earlier runs used");
        }
        sim.set_webhook_target(
            DEMO_COMPANY,
            format!("{public_url}/webhooks/shopmonkey/{tenant_id}"),
            seeded.webhook_secret.clone(),
        );
        feed_opt = Some((feed, used));
    } else {
        println!("CRM order webhooks for \"{DEMO_TENANT}\" go to {public_url}/webhooks/shopmonkey/{tenant_id}");
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    println!("leadorch demo is running");
    println!("  dashboard:     {public_url}/dashboard   (staff API key: {})", seeded.staff_key);
    println!("  health:        {public_url}/api/health");
    if feed_opt.is_some() {
        println!("  a new lead arrives every {} s; each one's chat link is printed below.", seconds(options.every));
    }
    println!("  Ctrl-C stops it.");

    let feeding = async {
        match (&feed_opt, &sim_opt) {
            (Some((feed, used)), Some(sim)) => feed_loop(feed, sim, *used, options.every).await,
            _ => std::future::pending().await,
        }
    };
    // Feeding never ends on its own: the first of a signal and a failed server wins, and
    // dropping the feed stops it and its lead watchers.
    let server_result = tokio::select! {
        _ = &mut stop_signal => None,
        result = &mut server => Some(result),
        () = feeding => None,
    };
    let outcome = match server_result {
        Some(result) => result.context("the server task failed").and_then(|served| served),
        None => {
            let _ = stop_tx.send(());
            server.await.context("the server task failed").and_then(|served| served)
        }
    };
    if let Some(sim) = sim_opt {
        sim.shutdown().await;
    }
    stop_signal.abort();
    outcome
}

/// Returns the address to listen on; port 0 becomes a free port now, so that the public URL
/// (in every link) can name it before the service binds it.
fn listen_addr(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr).with_context(|| format!("failed to find a free port on {addr}"))?;
    probe.local_addr().context("failed to read the probed address")
}

/// Returns where this machine reaches `addr`: loopback when it listens on every interface.
fn public_socket(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()) } else { addr }
}

/// Formats a duration in seconds without a needless ".0".
fn seconds(every: Duration) -> String {
    if every.subsec_nanos() == 0 { every.as_secs().to_string() } else { format!("{:.1}", every.as_secs_f64()) }
}

/// Returns the demo tenant and its webhook secret: the oldest active tenant named
/// [`DEMO_TENANT`], else a new one.
async fn demo_tenant(store: &Store) -> anyhow::Result<(TenantId, String)> {
    let tenants = ops::list_tenants(store).await?;
    let named: Vec<_> = tenants.iter().filter(|t| t.name == DEMO_TENANT).collect();
    if let Some(tenant) = named.iter().find(|t| t.active) {
        let secret = store.tenants.webhook_secret(tenant.id).await.context("failed to read the demo tenant")?;
        tracing::info!(tenant_id = %tenant.id, "reusing the demo tenant");
        return Ok((tenant.id, secret.to_string()));
    }
    anyhow::ensure!(
        named.is_empty(),
        "tenant \"{DEMO_TENANT}\" exists but is inactive; reactivate it or run the demo on another database"
    );
    let created = ops::add_tenant(store, DEMO_TENANT, None).await?;
    tracing::info!(tenant_id = %created.tenant.id, "created the demo tenant");
    Ok((created.tenant.id, created.webhook_secret))
}

/// Returns the real CRM's locations that have a time zone (the demo never guesses one).
async fn real_crm_shops(settings: &Settings, store: &Store, tenant_id: TenantId) -> Vec<Shop> {
    let listed = match startup::crm_client(settings, store) {
        Ok(crm) => crm.list_locations(tenant_id).await.map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    match listed {
        Ok(locations) => locations
            .into_iter()
            .filter_map(|l| {
                Some(Shop {
                    timezone: l.timezone_opt?,
                    crm_id: l.id,
                    name: l.name,
                    address_opt: l.address_opt,
                    phone_opt: l.phone_opt.filter(|p| Phone::parse(p).is_ok()),
                })
            })
            .collect(),
        Err(err) => {
            tracing::warn!(error = format!("{err:#}"), "could not list the CRM's locations; keeping the tenant's");
            Vec::new()
        }
    }
}

/// Makes sure the tenant has a location per shop (found by CRM location id, created when
/// missing) with the demo hours, and makes a new staff API key.
async fn seed(store: &Store, tenant_id: TenantId, webhook_secret: String, shops: &[Shop]) -> anyhow::Result<Seeded> {
    let mut existing: HashMap<String, Location> =
        ops::list_locations(store, tenant_id).await?.into_iter().map(|l| (l.crm_location_id.clone(), l)).collect();
    let mut locations = Vec::with_capacity(shops.len());
    let mut next_number = SMS_NUMBER_FIRST;
    for shop in shops {
        let location = match existing.remove(&shop.crm_id) {
            Some(location) => location,
            None => {
                let (sms_from, after) = free_sms_number(store, next_number).await?;
                next_number = after;
                let input = LocationInput {
                    tenant_id,
                    crm_location_id: shop.crm_id.clone(),
                    name: shop.name.clone(),
                    timezone: shop.timezone.clone(),
                    address_opt: shop.address_opt.clone(),
                    phone_opt: shop.phone_opt.clone(),
                    sms_from_opt: Some(sms_from),
                    sms_rate_per_sec: 1.0,
                    email_from_opt: Some(format!("{}@demo.leadorch.local", slug(&shop.name))),
                };
                match ops::add_location(store, input).await {
                    Ok(location) => {
                        tracing::info!(location_id = %location.id, name = %location.name, "created a demo location");
                        location
                    }
                    // Another demo seeding the same database got there first.
                    Err(OpsError::DuplicateLocation(_)) => {
                        store.locations.find_by_crm_id(tenant_id, &shop.crm_id).await?
                    }
                    Err(err) => return Err(err).with_context(|| format!("failed to create location {}", shop.name)),
                }
            }
        };
        ops::set_location_hours(store, tenant_id, location.id, DEMO_HOURS).await?;
        locations.push(location);
    }
    let key = ops::add_api_key(store, tenant_id, DEMO_KEY_NAME).await?;
    Ok(Seeded { webhook_secret, locations, staff_key: key.key })
}

/// Returns the first demo SMS number from `from` on that no location uses, and the number to
/// try next.
async fn free_sms_number(store: &Store, from: u32) -> anyhow::Result<(String, u32)> {
    for n in from..=SMS_NUMBER_LAST {
        let number = format!("+1512555{n:04}");
        let phone = Phone::parse(&number).map_err(|e| anyhow::anyhow!("bad demo number {number}: {e}"))?;
        match store.locations.find_by_sms_from(&phone).await {
            Err(StoreError::NotFound) => return Ok((number, n + 1)),
            Ok(_) => continue,
            Err(err) => return Err(err).context("failed to look up sms numbers"),
        }
    }
    anyhow::bail!("every demo sms number (+1 512 555 {SMS_NUMBER_FIRST}-{SMS_NUMBER_LAST}) is taken")
}

/// "Sunline Tint Austin #2" -> "sunline-tint-austin-2".
fn slug(name: &str) -> String {
    let lowered: String =
        name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' }).collect();
    let slug = lowered.split_whitespace().collect::<Vec<_>>().join("-");
    if slug.is_empty() { "shop".to_owned() } else { slug }
}

/// Returns how many orders earlier runs created in the fake, so that this run skips their
/// (deterministic) ids: the position after the last order id the tenant has already seen, as a
/// lead or as a refused webhook event. Found on a scratch copy of the fake with the same seed,
/// so the real one gets exactly that many silent orders and no extra ones the poller would
/// turn into leads.
async fn orders_already_used(seed: &SimSeed, store: &Store, tenant_id: TenantId) -> anyhow::Result<usize> {
    let client = store.pool.get().await.context("database unavailable")?;
    let rows = client
        .query(
            "SELECT crm_order_id FROM leads WHERE tenant_id = $1 AND crm_source = $2
             UNION
             SELECT payload->'data'->>'id' FROM inbox_events
             WHERE tenant_id = $1 AND source = $2 AND payload->'data'->>'id' IS NOT NULL",
            &[&tenant_id.as_uuid(), &CRM_SOURCE],
        )
        .await
        .context("failed to read the demo's earlier orders")?;
    let seen: HashSet<String> = rows.iter().map(|row| row.get(0)).collect();
    if seen.is_empty() {
        return Ok(0);
    }
    let company = &seed.companies[0];
    let Some(location) = company.locations.first().filter(|_| company.customers > 0) else {
        return Ok(0);
    };
    let scratch = ShopMonkeySim::start(seed.clone()).await.context("failed to start a scratch shopmonkey fake")?;
    let customer_id = scratch.customer(DEMO_COMPANY, 0).id;
    let mut used = 0;
    for index in 0..seen.len() + FAST_FORWARD_SLACK {
        let order = scratch.create_order(DEMO_COMPANY, &location.id, Some(&customer_id));
        if seen.contains(&order.id) {
            used = index + 1;
        }
    }
    scratch.shutdown().await;
    Ok(used)
}

/// What feeding needs besides the fake.
#[derive(Debug)]
struct Feed {
    store: Store,
    links: LinkSigner,
    tenant_id: TenantId,
    locations: Vec<Location>,
    customer_ids: Vec<String>,
}

impl Feed {
    /// Creates the `index`-th order: locations and customers in turn.
    fn create_order(&self, sim: &ShopMonkeySim, index: usize) -> SimOrder {
        let location = &self.locations[index % self.locations.len()];
        let customer_id = &self.customer_ids[index % self.customer_ids.len()];
        sim.create_order(DEMO_COMPANY, &location.crm_location_id, Some(customer_id))
    }

    fn location_name(&self, crm_location_id: &str) -> &str {
        self.locations.iter().find(|l| l.crm_location_id == crm_location_id).map_or("?", |l| l.name.as_str())
    }

    /// Waits (at most [`LEAD_WAIT`]) for the order to become a lead and prints its line, or
    /// why it did not.
    async fn report(&self, order: SimOrder) {
        let started = tokio::time::Instant::now();
        let location = self.location_name(&order.location_id);
        loop {
            match self.store.leads.find_by_crm_order(self.tenant_id, CRM_SOURCE, &order.id).await {
                Ok(lead) => {
                    let link = self.links.link(self.tenant_id, lead.id, Timestamp::now());
                    let name = lead.first_name_opt.as_deref().unwrap_or("someone");
                    let vehicle =
                        lead.vehicle_opt.as_ref().and_then(|v| v.describe()).unwrap_or_else(|| "a car".into());
                    println!("new lead: {name} ({vehicle}) at {location} — chat: {link}");
                    return;
                }
                Err(StoreError::NotFound) => {}
                Err(err) => tracing::warn!(error = %err, order = %order.id, "could not look up the lead"),
            }
            match self.refusal(&order.id).await {
                Ok(Some(outcome)) => {
                    println!("not a lead: order #{} at {location} ({outcome})", order.number);
                    return;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = format!("{err:#}"), order = %order.id, "could not read the event"),
            }
            if started.elapsed() >= LEAD_WAIT {
                println!(
                    "no lead yet: order #{} at {location} after {} s (see the log)",
                    order.number,
                    LEAD_WAIT.as_secs()
                );
                return;
            }
            tokio::time::sleep(LEAD_POLL).await;
        }
    }

    /// Returns the outcome of the order's processed webhook event when it did not create a lead.
    async fn refusal(&self, order_id: &str) -> anyhow::Result<Option<String>> {
        let client = self.store.pool.get().await.context("database unavailable")?;
        let row = client
            .query_opt(
                "SELECT outcome FROM inbox_events
                 WHERE tenant_id = $1 AND source = $2 AND payload->'data'->>'id' = $3 AND processed_at IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                &[&self.tenant_id.as_uuid(), &CRM_SOURCE, &order_id],
            )
            .await
            .context("failed to read the order's event")?;
        Ok(row.and_then(|row| row.get::<_, Option<String>>(0)).filter(|outcome| outcome != "lead_created"))
    }
}

/// Creates an order every `every`, from the `start`-th on, each watched in its own task until
/// it is reported. Runs until dropped, which also stops the watchers.
async fn feed_loop(feed: &Arc<Feed>, sim: &ShopMonkeySim, start: usize, every: Duration) {
    let mut watchers = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for index in start.. {
        ticker.tick().await;
        while watchers.try_join_next().is_some() {}
        let order = feed.create_order(sim, index);
        tracing::info!(order = %order.id, number = order.number, "shopmonkey fake: new estimate");
        let feed = Arc::clone(feed);
        watchers.spawn(async move { feed.report(order).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_emails_use_a_slug_of_the_shop_name() {
        assert_eq!(slug("Sunline Tint Austin #2"), "sunline-tint-austin-2");
        assert_eq!(slug("  Ünïcode — Shop "), "n-code-shop");
        assert_eq!(slug("###"), "shop");
        assert!(
            leadorch_actors::domain::Email::parse(&format!("{}@demo.leadorch.local", slug("Sunline Tint Miami")))
                .is_ok()
        );
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_over_loopback() {
        let any: SocketAddr = "0.0.0.0:3000".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:3000".parse().expect("addr");
        assert_eq!(public_socket(any), local);
        assert_eq!(public_socket(local), local);
    }

    #[test]
    fn port_zero_becomes_a_real_port_and_other_ports_stay() {
        let picked = listen_addr("127.0.0.1:0".parse().expect("addr")).expect("free port");
        assert_ne!(picked.port(), 0);
        let fixed: SocketAddr = "127.0.0.1:3000".parse().expect("addr");
        assert_eq!(listen_addr(fixed).expect("kept"), fixed);
        assert_eq!(seconds(Duration::from_secs(8)), "8");
    }

    #[test]
    fn demo_sms_numbers_are_valid_phones() {
        for n in [SMS_NUMBER_FIRST, SMS_NUMBER_LAST] {
            assert!(Phone::parse(&format!("+1512555{n:04}")).is_ok(), "{n}");
        }
    }
}
