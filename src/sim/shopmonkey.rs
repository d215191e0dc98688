//! A faithful local fake of the ShopMonkey v3 API (reference §1, especially §1.9), served by axum
//! on `127.0.0.1:0`.
//!
//! It owns: the `/v3/...` routes leadorch's client uses, with ShopMonkey's envelopes, camelCase
//! records and list quirks (`limit` clamped to 100, bare `where` operators, `$` operators
//! silently ignored, lowercase `orderby` refused); signed order webhooks with retries; run-time
//! fault switches ([`Fault`]); and observation of received requests and sent deliveries.
//!
//! It leaves to others: the client (`crm::shopmonkey`), signature rules (`crm::shopmonkey::
//! signature`, which this fake calls so both sides agree), and every business rule.
//!
//! Data is deterministic for a given [`SimSeed`] and call sequence: ids come from a random
//! generator seeded by the company id, so two runs of the demo see the same ids and names.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use super::server::{ApiFaults, ApiRefusal, SimServer, lock, run_with_faults, take_one};
use crate::crm::shopmonkey::signature;

/// Largest page a list endpoint returns; larger `limit`s are clamped silently (§1.4).
const MAX_LIMIT: usize = 100;
/// Webhook delivery attempts before the fake gives up on one delivery.
const MAX_DELIVERY_ATTEMPTS: u32 = 5;
/// Back-off before the second attempt; it doubles before each later one.
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Per-attempt timeout of a webhook POST, so a hung receiver cannot hold a delivery forever.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How far back [`Fault::StaleTimestamp`] dates a delivery.
const STALE_BY_SECS: i64 = 3600;
/// The secret [`Fault::BadSignature`] signs with instead of the configured one.
const WRONG_SECRET: &str = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==";
/// First order number of every company; numbers then count up by one.
const FIRST_ORDER_NUMBER: u64 = 1001;
const ID_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const VIN_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

// ---------------------------------------------------------------------------------------------
// Seed
// ---------------------------------------------------------------------------------------------

/// The companies a [`ShopMonkeySim`] starts with.
#[derive(Debug, Clone, Default)]
pub struct SimSeed {
    pub companies: Vec<SimCompany>,
}

/// One ShopMonkey company (a franchise), reachable with its own API key.
#[derive(Debug, Clone)]
pub struct SimCompany {
    pub company_id: String,
    /// The bearer token that selects this company; data of other companies stays invisible.
    pub api_key: String,
    pub locations: Vec<SimLocation>,
    /// How many customers to generate, each with one vehicle, one mobile phone and one email.
    pub customers: usize,
    /// Multiplier on canned-service prices, by location index; missing entries mean 1.0.
    pub price_factor_per_location: Vec<f64>,
}

/// One shop of a company.
#[derive(Debug, Clone)]
pub struct SimLocation {
    pub id: String,
    pub name: String,
    /// IANA time zone name, e.g. `America/Chicago`.
    pub timezone: String,
    pub address1: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    /// National 10-digit form, like customer phones.
    pub phone: String,
}

/// City, state, time zone, street, postal code, area code of the franchise's shops.
const FRANCHISE_CITIES: [(&str, &str, &str, &str, &str, &str); 10] = [
    ("Austin", "TX", "America/Chicago", "2400 S Lamar Blvd", "78704", "512"),
    ("Miami", "FL", "America/New_York", "3201 NW 7th Ave", "33127", "305"),
    ("Phoenix", "AZ", "America/Phoenix", "4410 N 7th St", "85014", "602"),
    ("Los Angeles", "CA", "America/Los_Angeles", "5820 W Pico Blvd", "90019", "213"),
    ("Denver", "CO", "America/Denver", "1550 S Broadway", "80210", "303"),
    ("Dallas", "TX", "America/Chicago", "4801 Greenville Ave", "75206", "214"),
    ("Atlanta", "GA", "America/New_York", "1230 Howell Mill Rd NW", "30318", "404"),
    ("Las Vegas", "NV", "America/Los_Angeles", "3950 S Valley View Blvd", "89103", "702"),
    ("Salt Lake City", "UT", "America/Denver", "2250 S State St", "84115", "801"),
    ("Chicago", "IL", "America/Chicago", "2845 N Clybourn Ave", "60618", "312"),
];

impl SimSeed {
    /// Returns a seed with one window-tint franchise; see [`SimCompany::franchise`].
    pub fn franchise(company_id: &str, api_key: &str, n_locations: usize, n_customers: usize) -> SimSeed {
        SimSeed { companies: vec![SimCompany::franchise(company_id, api_key, n_locations, n_customers)] }
    }
}

impl SimCompany {
    /// Returns a plausible window-tint franchise: shops in several US states and time zones
    /// (Austin, Miami, Phoenix, Los Angeles, Denver, ...), all at list price (factor 1.0).
    pub fn franchise(company_id: &str, api_key: &str, n_locations: usize, n_customers: usize) -> SimCompany {
        let mut rng = StdRng::seed_from_u64(fnv1a(company_id) ^ 0x10ca_710e);
        let locations = (0..n_locations)
            .map(|index| {
                let (city, state, timezone, address1, postal_code, area_code) =
                    FRANCHISE_CITIES[index % FRANCHISE_CITIES.len()];
                let round = index / FRANCHISE_CITIES.len();
                let name = if round == 0 {
                    format!("Sunline Tint {city}")
                } else {
                    format!("Sunline Tint {city} #{}", round + 1)
                };
                SimLocation {
                    id: random_id(&mut rng, "loc"),
                    name,
                    timezone: timezone.to_owned(),
                    address1: address1.to_owned(),
                    city: city.to_owned(),
                    state: state.to_owned(),
                    postal_code: postal_code.to_owned(),
                    phone: format!("{area_code}555{:04}", 100 + round),
                }
            })
            .collect();
        SimCompany {
            company_id: company_id.to_owned(),
            api_key: api_key.to_owned(),
            locations,
            customers: n_customers,
            price_factor_per_location: Vec::new(),
        }
    }
}

/// Name, list price in cents and whether the row is a fixed-price package. Min 10900, max 60000.
const CANNED_SERVICES: [(&str, i64, bool); 23] = [
    ("Ultimate Tint Package — XPEL XR Plus Nano-Ceramic", 60000, true),
    ("Supreme Tint Package — XPEL XR Black Ceramic", 45000, true),
    ("Premium Tint Package — XPEL CS Black Carbon", 30000, true),
    ("Ultimate Truck Package — XPEL XR Plus Nano-Ceramic", 52000, true),
    ("Supreme Truck Package — XPEL XR Black Ceramic", 39000, true),
    ("Premium Truck Package — XPEL CS Black Carbon", 26000, true),
    ("Windshield Tint — XPEL XR Plus", 29900, false),
    ("Windshield Tint — XPEL XR Black", 24900, false),
    ("Front Two Windows — XPEL XR Plus", 19900, false),
    ("Front Two Windows — XPEL XR Black", 16900, false),
    ("Front Two Windows — XPEL CS Black", 12900, false),
    ("Rear Windshield — XPEL XR Plus", 17900, false),
    ("Rear Windshield — XPEL XR Black", 14900, false),
    ("Rear Windshield — XPEL CS Black", 11900, false),
    ("Rear Quarter Windows — XPEL CS Black", 12900, false),
    ("Sunroof Strip", 11900, false),
    ("Sunroof — XPEL XR Black", 15900, false),
    ("Panoramic Sunroof — XPEL XR Plus", 24900, false),
    ("Windshield Visor Strip — XPEL CS Black", 11900, false),
    ("Headlight Tint — XPEL Smoke", 17900, false),
    ("Side Windows Touch-Up — XPEL CS Black", 13900, false),
    ("Tint Removal — Rear Windshield", 14900, false),
    ("Tint Removal", 10900, false),
];

const FIRST_NAMES: [&str; 16] = [
    "Maria", "James", "Aisha", "Diego", "Emily", "Kevin", "Priya", "Marcus", "Sofia", "Tyler", "Hannah", "Luis",
    "Grace", "Andre", "Chloe", "Ethan",
];
const LAST_NAMES: [&str; 13] = [
    "Garcia", "Nguyen", "Johnson", "Patel", "Smith", "Rivera", "Brown", "Kim", "Lopez", "Davis", "Martinez", "Wilson",
    "Chen",
];

/// Year, make, model, submodel of generated vehicles.
const VEHICLES: [(i32, &str, &str, &str); 10] = [
    (2021, "Toyota", "Camry", "SE"),
    (2019, "Honda", "Civic", "EX"),
    (2022, "Tesla", "Model 3", "Long Range"),
    (2020, "Ford", "F-150", "XLT"),
    (2023, "Chevrolet", "Silverado 1500", "LT"),
    (2018, "BMW", "3 Series", "330i"),
    (2024, "Hyundai", "Ioniq 5", "SEL"),
    (2017, "Jeep", "Wrangler", "Sport"),
    (2022, "Kia", "Telluride", "EX"),
    (2020, "Subaru", "Outback", "Premium"),
];
const COLORS: [&str; 6] = ["White", "Black", "Silver", "Gray", "Blue", "Red"];

// ---------------------------------------------------------------------------------------------
// Faults and observation
// ---------------------------------------------------------------------------------------------

/// A misbehaviour switched on at run time with [`ShopMonkeySim::set_fault`].
///
/// `times` applies the fault to the next N matching API requests (or webhook deliveries) and
/// then stops; `usize::MAX` means always. Setting a fault replaces an earlier one of the same
/// kind. API requests are authenticated first, so a 401 never consumes a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers API requests with 429, a `Retry-After` header and an error envelope.
    Status429 { retry_after_secs: u64, times: usize },
    /// Answers API requests with 500 and an error envelope.
    Status500 { times: usize },
    /// Delays API requests, then serves them normally.
    Slow { delay: Duration, times: usize },
    /// Skips webhook deliveries; each is recorded with attempt 0 and no status.
    DropWebhooks { times: usize },
    /// Sends every webhook delivery twice at once, with the same ids.
    DuplicateWebhooks,
    /// Signs webhooks with a wrong secret.
    BadSignature,
    /// Dates webhooks an hour in the past (`webhook-timestamp` = now - 3600).
    StaleTimestamp,
}

/// One API request the fake received, authenticated or not.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, still percent-encoded; empty when there was none.
    pub query: String,
    pub at: Instant,
}

/// One webhook delivery attempt (or a dropped delivery).
#[derive(Debug, Clone)]
pub struct RecordedDelivery {
    /// `X-Request-Id`; the same for every attempt and copy of one delivery.
    pub request_id: String,
    /// `webhook-id`; the same for every attempt and copy of one delivery.
    pub webhook_id: String,
    /// `X-Attempt`, from 1; 0 means [`Fault::DropWebhooks`] skipped the delivery.
    pub attempt: u32,
    /// The receiver's status; `None` on a connection error, a timeout or a dropped delivery.
    pub status_opt: Option<u16>,
    pub table: String,
    pub operation: String,
    pub order_id_opt: Option<String>,
    pub at: Instant,
}

/// An order as the fake created or changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOrder {
    pub id: String,
    pub number: u64,
    pub company_id: String,
    pub customer_id: String,
    pub vehicle_id: String,
    pub location_id: String,
    /// `Estimate`, `RepairOrder` or `Invoice`.
    pub status: String,
    pub total_cost_cents: i64,
    /// `meta.version`; 1 on creation, one more on every change.
    pub version: u64,
}

/// A customer with its primary contact points and its vehicle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCustomer {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    /// As stored, normally national 10 digits like `5125550123`; tests may store junk.
    pub phone: String,
    pub email: String,
    pub location_id_opt: Option<String>,
    pub vehicle_id: String,
    /// Year, make and model, e.g. `2021 Toyota Camry`.
    pub vehicle: String,
}

// ---------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------

/// A running fake ShopMonkey. Dropping it (or [`ShopMonkeySim::shutdown`]) stops the server and
/// any webhook retries still pending.
pub struct ShopMonkeySim {
    server: SimServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShopMonkeySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopMonkeySim").field("addr", &self.server.addr()).finish_non_exhaustive()
    }
}

impl ShopMonkeySim {
    /// Binds `127.0.0.1:0`, loads the seed and serves the API in a tokio task.
    ///
    /// # Errors
    /// The listener cannot bind, two companies share an API key, or the webhook HTTP client
    /// cannot be built.
    pub async fn start(seed: SimSeed) -> io::Result<ShopMonkeySim> {
        let shared = Arc::new(Shared::new(seed)?);
        let server = SimServer::start("shopmonkey", router(Arc::clone(&shared))).await?;
        Ok(ShopMonkeySim { server, shared })
    }

    /// Returns `http://127.0.0.1:PORT`; clients append `/v3/...`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops accepting requests, cancels pending webhook retries, and waits (at most 5 s) for
    /// open connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.stopped.store(true, AtomicOrdering::SeqCst);
        self.server.shutdown().await;
    }

    /// Creates an `Estimate` order for a customer (by default the next customer of that
    /// location, round robin) quoting one of the location's canned services, and delivers an
    /// `INSERT` webhook if the company has a webhook target.
    ///
    /// # Panics
    /// The company or location is unknown, the customer is unknown, or the company has no
    /// customers: all mistakes of the calling test or demo.
    pub fn create_order(&self, company_id: &str, location_id: &str, customer_id_opt: Option<&str>) -> SimOrder {
        self.shared
            .create_order(company_id, location_id, customer_id_opt)
            .unwrap_or_else(|err| panic!("create_order failed: {}", err.message))
    }

    /// Creates an order like [`ShopMonkeySim::create_order`] but delivers no webhook, even when
    /// the company has a target, and returns the body of the `INSERT` webhook a delivery would
    /// carry, for a caller that sends it itself (`leadorch loadgen`).
    ///
    /// # Panics
    /// As [`ShopMonkeySim::create_order`].
    pub fn create_order_silently(
        &self,
        company_id: &str,
        location_id: &str,
        customer_id_opt: Option<&str>,
    ) -> (SimOrder, Vec<u8>) {
        let order = self
            .shared
            .with_company(company_id, |company| company.insert_order(location_id, customer_id_opt, now_ms()))
            .unwrap_or_else(|err| panic!("create_order_silently failed: {}", err.message));
        let body = order_envelope("INSERT", to_json(&order), None).to_string().into_bytes();
        (order.sim_order(), body)
    }

    /// Sets an order's status (`Estimate`, `RepairOrder` or `Invoice`) with the same effect as
    /// `PUT /v3/order/{id}`: `authorized`/`invoiced`/`paid` follow the status, `meta.version` and
    /// `updatedDate` move on, and an `UPDATE` webhook with a `diff` is delivered.
    ///
    /// # Panics
    /// The company or order is unknown, or the status is not one of the three.
    pub fn update_order_status(&self, company_id: &str, order_id: &str, status: &str) -> SimOrder {
        let Some(status) = OrderStatus::parse(status) else {
            panic!("update_order_status: unknown status {status:?}");
        };
        self.shared
            .change_order_status(company_id, order_id, status)
            .unwrap_or_else(|err| panic!("update_order_status failed: {}", err.message))
    }

    /// Returns the company's `idx`-th customer (generated ones first, then added ones).
    ///
    /// # Panics
    /// The company is unknown or `idx` is out of range.
    pub fn customer(&self, company_id: &str, idx: usize) -> SimCustomer {
        let world = lock(&self.shared.world);
        let Some(company) = world.companies.get(company_id) else {
            panic!("customer: unknown company {company_id}");
        };
        let Some(customer_id) = company.customer_order.get(idx) else {
            panic!("customer: company {company_id} has no customer #{idx}");
        };
        company.sim_customer(customer_id)
    }

    /// Adds a customer with the given contact points (stored verbatim, so tests can use junk
    /// phones) and one generated vehicle, and returns the customer's id.
    ///
    /// # Panics
    /// The company is unknown.
    pub fn add_customer(&self, company_id: &str, first_name: &str, phone: &str, email: &str) -> String {
        let mut world = lock(&self.shared.world);
        let Some(company) = world.companies.get_mut(company_id) else {
            panic!("add_customer: unknown company {company_id}");
        };
        let contact = Contact {
            first_name: first_name.to_owned(),
            last_name: "Test".to_owned(),
            phone: phone.to_owned(),
            email: email.to_owned(),
        };
        let location_id_opt = company.locations.first().map(|location| location.id.clone());
        company.insert_customer(contact, location_id_opt, now_ms())
    }

    /// Sends the company's later order webhooks to `url`, signed with `secret`.
    ///
    /// # Panics
    /// The company is unknown.
    pub fn set_webhook_target(&self, company_id: &str, url: String, secret: String) {
        let mut world = lock(&self.shared.world);
        let Some(company) = world.companies.get_mut(company_id) else {
            panic!("set_webhook_target: unknown company {company_id}");
        };
        company.webhook_target_opt = Some(WebhookTarget { url, secret });
    }

    /// Switches a fault on, replacing an earlier fault of the same kind.
    pub fn set_fault(&self, fault: Fault) {
        let mut faults = lock(&self.shared.faults);
        match fault {
            Fault::Status429 { retry_after_secs, times } => faults.api.status_429_opt = Some((retry_after_secs, times)),
            Fault::Status500 { times } => faults.api.status_500_remaining = times,
            Fault::Slow { delay, times } => faults.api.slow_opt = Some((delay, times)),
            Fault::DropWebhooks { times } => faults.drop_webhooks_remaining = times,
            Fault::DuplicateWebhooks => faults.duplicate_webhooks = true,
            Fault::BadSignature => faults.bad_signature = true,
            Fault::StaleTimestamp => faults.stale_timestamp = true,
        }
    }

    /// Switches every fault off.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = FaultState::default();
    }

    /// Returns every API request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Counts received API requests whose path starts with `path_prefix`.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        lock(&self.shared.requests).iter().filter(|request| request.path.starts_with(path_prefix)).count()
    }

    /// Returns every webhook delivery attempt so far, in the order they finished.
    pub fn webhook_deliveries(&self) -> Vec<RecordedDelivery> {
        lock(&self.shared.deliveries).clone()
    }

    /// Returns the company's appointments (created through `POST /v3/appointment`) as served,
    /// oldest first.
    ///
    /// # Panics
    /// The company is unknown.
    pub fn appointments(&self, company_id: &str) -> Vec<Value> {
        let world = lock(&self.shared.world);
        let Some(company) = world.companies.get(company_id) else {
            panic!("appointments: unknown company {company_id}");
        };
        company.appointments.iter().map(to_json).collect()
    }
}

impl Drop for ShopMonkeySim {
    /// Cancels pending webhook retries; dropping `server` afterwards starts the server's shutdown.
    fn drop(&mut self) {
        self.shared.stopped.store(true, AtomicOrdering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state and records
// ---------------------------------------------------------------------------------------------

/// State shared by the handle, the handlers and the delivery tasks. Every mutex is a std mutex,
/// never held across `.await`, and each guards one concern so observation does not wait on data.
#[derive(Debug)]
struct Shared {
    world: Mutex<World>,
    /// API key to company id; fixed at start, so it needs no lock.
    company_by_key: HashMap<String, String>,
    faults: Mutex<FaultState>,
    requests: Mutex<Vec<RecordedRequest>>,
    deliveries: Mutex<Vec<RecordedDelivery>>,
    /// Set on shutdown so pending webhook retries stop instead of outliving the fake.
    stopped: AtomicBool,
    webhook_client: reqwest::Client,
    /// Lets the synchronous data methods spawn deliveries from any thread.
    runtime: tokio::runtime::Handle,
}

#[derive(Debug)]
struct World {
    companies: HashMap<String, Company>,
}

/// Remaining counts of each fault; 0 means off and `usize::MAX` never runs out.
#[derive(Debug, Default)]
struct FaultState {
    /// A 429 carries its `Retry-After` seconds.
    api: ApiFaults<u64>,
    drop_webhooks_remaining: usize,
    duplicate_webhooks: bool,
    bad_signature: bool,
    stale_timestamp: bool,
}

#[derive(Clone)]
struct WebhookTarget {
    url: String,
    secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget").field("url", &self.url).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Company {
    company_id: String,
    locations: Vec<LocationRow>,
    /// Keyed by id, so iteration is already in the default list order.
    customers: BTreeMap<String, CustomerRow>,
    /// Customer ids in creation order, for [`ShopMonkeySim::customer`] and round robin.
    customer_order: Vec<String>,
    vehicles: BTreeMap<String, VehicleRow>,
    canned_services: BTreeMap<String, CannedServiceRow>,
    /// Canned service ids per location, in id order (what a filtered list would give), so a
    /// new order finds its quoted service without scanning every location's catalogue.
    canned_by_location: BTreeMap<String, Vec<String>>,
    orders: BTreeMap<String, OrderRow>,
    /// In creation order for [`ShopMonkeySim::appointments`]; a test creates only a few.
    appointments: Vec<AppointmentRow>,
    webhook_target_opt: Option<WebhookTarget>,
    next_order_number: u64,
    /// Seeded by the company id so ids are the same on every run.
    rng: StdRng,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum OrderStatus {
    Estimate,
    RepairOrder,
    Invoice,
}

impl OrderStatus {
    fn parse(text: &str) -> Option<OrderStatus> {
        match text {
            "Estimate" => Some(OrderStatus::Estimate),
            "RepairOrder" => Some(OrderStatus::RepairOrder),
            "Invoice" => Some(OrderStatus::Invoice),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Estimate => "Estimate",
            OrderStatus::RepairOrder => "RepairOrder",
            OrderStatus::Invoice => "Invoice",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct RowMeta {
    version: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct LocationRow {
    id: String,
    company_id: String,
    name: String,
    address1: String,
    address2: Option<String>,
    city: String,
    state: String,
    postal_code: String,
    country: &'static str,
    phone: String,
    email: String,
    timezone: String,
    #[serde(serialize_with = "rfc3339_ms")]
    created_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    updated_date: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct EmailRow {
    id: String,
    customer_id: String,
    email: String,
    primary: bool,
    subscribed: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PhoneRow {
    id: String,
    customer_id: String,
    number: String,
    extension: Option<String>,
    primary: bool,
    #[serde(rename = "type")]
    kind: &'static str,
    opt_in: bool,
    country: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomerRow {
    id: String,
    company_id: String,
    location_ids: Vec<String>,
    customer_type: &'static str,
    first_name: String,
    last_name: String,
    company_name: Option<String>,
    note: Option<String>,
    marketing_opt_in: bool,
    emails: Vec<EmailRow>,
    phone_numbers: Vec<PhoneRow>,
    #[serde(serialize_with = "rfc3339_ms")]
    created_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    updated_date: Timestamp,
    meta: RowMeta,
    /// Ownership is a separate relation in ShopMonkey (`vehicle_owner`), so it is not served.
    #[serde(skip)]
    vehicle_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct VehicleRow {
    id: String,
    company_id: String,
    year: i32,
    make: String,
    model: String,
    submodel: String,
    vin: String,
    color: String,
    size: &'static str,
    #[serde(serialize_with = "rfc3339_ms")]
    created_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    updated_date: Timestamp,
    meta: RowMeta,
}

impl VehicleRow {
    fn description(&self) -> String {
        format!("{} {} {}", self.year, self.make, self.model)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct CannedServiceRow {
    id: String,
    company_id: String,
    location_id: String,
    name: String,
    pricing: &'static str,
    total_cents: i64,
    fixed_price_cents: Option<i64>,
    bookable: bool,
    deleted: bool,
    #[serde(serialize_with = "rfc3339_ms")]
    created_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    updated_date: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderRow {
    id: String,
    public_id: String,
    company_id: String,
    location_id: String,
    /// A JSON number on odd orders and a string on even ones: live data has both (§1.5).
    number: Value,
    name: String,
    status: OrderStatus,
    customer_id: String,
    vehicle_id: String,
    complaint: String,
    authorized: bool,
    invoiced: bool,
    paid: bool,
    archived: bool,
    deleted: bool,
    total_cost_cents: i64,
    #[serde(serialize_with = "rfc3339_ms")]
    created_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    updated_date: Timestamp,
    meta: RowMeta,
    generated_customer_name: String,
    generated_vehicle_name: String,
    #[serde(skip)]
    number_value: u64,
}

impl OrderRow {
    fn sim_order(&self) -> SimOrder {
        SimOrder {
            id: self.id.clone(),
            number: self.number_value,
            company_id: self.company_id.clone(),
            customer_id: self.customer_id.clone(),
            vehicle_id: self.vehicle_id.clone(),
            location_id: self.location_id.clone(),
            status: self.status.as_str().to_owned(),
            total_cost_cents: self.total_cost_cents,
            version: self.meta.version,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct AppointmentRow {
    id: String,
    company_id: String,
    location_id: String,
    customer_id: Option<String>,
    vehicle_id: Option<String>,
    order_id: Option<String>,
    name: String,
    color: String,
    note: Option<String>,
    #[serde(serialize_with = "rfc3339_ms")]
    start_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    end_date: Timestamp,
    all_day: bool,
    confirmed: bool,
    #[serde(serialize_with = "rfc3339_ms")]
    created_date: Timestamp,
    #[serde(serialize_with = "rfc3339_ms")]
    updated_date: Timestamp,
    meta: RowMeta,
}

/// Contact points of a customer about to be inserted.
#[derive(Debug)]
struct Contact {
    first_name: String,
    last_name: String,
    phone: String,
    email: String,
}

impl Shared {
    fn new(seed: SimSeed) -> io::Result<Shared> {
        let created = now_ms();
        let mut companies = HashMap::new();
        let mut company_by_key = HashMap::new();
        for sim_company in seed.companies {
            let previous_opt = company_by_key.insert(sim_company.api_key.clone(), sim_company.company_id.clone());
            if previous_opt.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("two companies share api key of {}", sim_company.company_id),
                ));
            }
            let company = Company::seeded(&sim_company, created);
            companies.insert(sim_company.company_id.clone(), company);
        }
        let webhook_client =
            reqwest::Client::builder().no_proxy().timeout(DELIVERY_TIMEOUT).build().map_err(io::Error::other)?;
        Ok(Shared {
            world: Mutex::new(World { companies }),
            company_by_key,
            faults: Mutex::new(FaultState::default()),
            requests: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            webhook_client,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Runs `action` on the company's data under the world lock.
    fn with_company<T>(
        &self,
        company_id: &str,
        action: impl FnOnce(&mut Company) -> Result<T, SimApiError>,
    ) -> Result<T, SimApiError> {
        let mut world = lock(&self.world);
        let company = world.companies.get_mut(company_id).ok_or_else(|| SimApiError::not_found("company"))?;
        action(company)
    }

    fn create_order(
        self: &Arc<Self>,
        company_id: &str,
        location_id: &str,
        customer_id_opt: Option<&str>,
    ) -> Result<SimOrder, SimApiError> {
        let (order, target_opt) = self.with_company(company_id, |company| {
            let order = company.insert_order(location_id, customer_id_opt, now_ms())?;
            Ok((order, company.webhook_target_opt.clone()))
        })?;
        if let Some(target) = target_opt {
            self.send_order_webhook(target, "INSERT", to_json(&order), None);
        }
        Ok(order.sim_order())
    }

    fn change_order_status(
        self: &Arc<Self>,
        company_id: &str,
        order_id: &str,
        status: OrderStatus,
    ) -> Result<SimOrder, SimApiError> {
        let (before, after, target_opt) = self.with_company(company_id, |company| {
            let order = company.orders.get_mut(order_id).ok_or_else(|| SimApiError::not_found("order"))?;
            let before = order.clone();
            order.status = status;
            order.authorized = status != OrderStatus::Estimate;
            order.invoiced = status == OrderStatus::Invoice;
            order.paid = status == OrderStatus::Invoice;
            order.meta.version += 1;
            order.updated_date = now_ms();
            Ok((before, order.clone(), company.webhook_target_opt.clone()))
        })?;
        let after_json = to_json(&after);
        if let Some(target) = target_opt {
            let diff = changed_fields(&to_json(&before), &after_json);
            self.send_order_webhook(target, "UPDATE", after_json, Some(diff));
        }
        Ok(after.sim_order())
    }

    fn record_request(&self, request: &Request) {
        let recorded = RecordedRequest {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            at: Instant::now(),
        };
        lock(&self.requests).push(recorded);
    }

    fn record_delivery(&self, delivery: RecordedDelivery) {
        lock(&self.deliveries).push(delivery);
    }
}

impl Company {
    fn seeded(sim_company: &SimCompany, created: Timestamp) -> Company {
        let mut company = Company {
            company_id: sim_company.company_id.clone(),
            locations: Vec::new(),
            customers: BTreeMap::new(),
            customer_order: Vec::new(),
            vehicles: BTreeMap::new(),
            canned_services: BTreeMap::new(),
            canned_by_location: BTreeMap::new(),
            orders: BTreeMap::new(),
            appointments: Vec::new(),
            webhook_target_opt: None,
            next_order_number: FIRST_ORDER_NUMBER,
            rng: StdRng::seed_from_u64(fnv1a(&sim_company.company_id)),
        };
        for (index, location) in sim_company.locations.iter().enumerate() {
            let price_factor = sim_company.price_factor_per_location.get(index).copied().unwrap_or(1.0);
            company.insert_location(location, price_factor, created);
        }
        for index in 0..sim_company.customers {
            let location_opt = (!sim_company.locations.is_empty())
                .then(|| &sim_company.locations[index % sim_company.locations.len()]);
            let contact = generated_contact(index, location_opt);
            let location_id_opt = location_opt.map(|location| location.id.clone());
            company.insert_customer(contact, location_id_opt, created);
        }
        company
    }

    fn insert_location(&mut self, location: &SimLocation, price_factor: f64, created: Timestamp) {
        let email_local: String = location.city.to_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
        self.locations.push(LocationRow {
            id: location.id.clone(),
            company_id: self.company_id.clone(),
            name: location.name.clone(),
            address1: location.address1.clone(),
            address2: None,
            city: location.city.clone(),
            state: location.state.clone(),
            postal_code: location.postal_code.clone(),
            country: "US",
            phone: location.phone.clone(),
            email: format!("{email_local}@sunlinetint.example"),
            timezone: location.timezone.clone(),
            created_date: created,
            updated_date: created,
        });
        for (name, list_cents, is_package) in CANNED_SERVICES {
            let total_cents = price_at_location(list_cents, price_factor);
            let row = CannedServiceRow {
                id: random_id(&mut self.rng, "cs"),
                company_id: self.company_id.clone(),
                location_id: location.id.clone(),
                name: name.to_owned(),
                pricing: if is_package { "FixedPrice" } else { "LineItem" },
                total_cents,
                fixed_price_cents: is_package.then_some(total_cents),
                bookable: true,
                deleted: false,
                created_date: created,
                updated_date: created,
            };
            let ids = self.canned_by_location.entry(row.location_id.clone()).or_default();
            if let Err(at) = ids.binary_search(&row.id) {
                ids.insert(at, row.id.clone());
            }
            self.canned_services.insert(row.id.clone(), row);
        }
    }

    /// Inserts a customer with one email, one mobile phone and one generated vehicle.
    fn insert_customer(&mut self, contact: Contact, location_id_opt: Option<String>, created: Timestamp) -> String {
        let index = self.customer_order.len();
        let customer_id = random_id(&mut self.rng, "cus");
        let (year, make, model, submodel) = VEHICLES[index % VEHICLES.len()];
        let vehicle = VehicleRow {
            id: random_id(&mut self.rng, "veh"),
            company_id: self.company_id.clone(),
            year,
            make: make.to_owned(),
            model: model.to_owned(),
            submodel: submodel.to_owned(),
            vin: random_vin(&mut self.rng),
            color: COLORS[index % COLORS.len()].to_owned(),
            size: "LightDuty",
            created_date: created,
            updated_date: created,
            meta: RowMeta { version: 1 },
        };
        let email = EmailRow {
            id: random_id(&mut self.rng, "em"),
            customer_id: customer_id.clone(),
            email: contact.email,
            primary: true,
            subscribed: true,
        };
        let phone = PhoneRow {
            id: random_id(&mut self.rng, "ph"),
            customer_id: customer_id.clone(),
            number: contact.phone,
            extension: None,
            primary: true,
            kind: "Mobile",
            opt_in: true,
            country: "US",
        };
        let customer = CustomerRow {
            id: customer_id.clone(),
            company_id: self.company_id.clone(),
            location_ids: location_id_opt.into_iter().collect(),
            customer_type: "Customer",
            first_name: contact.first_name,
            last_name: contact.last_name,
            company_name: None,
            note: None,
            marketing_opt_in: true,
            emails: vec![email],
            phone_numbers: vec![phone],
            created_date: created,
            updated_date: created,
            meta: RowMeta { version: 1 },
            vehicle_ids: vec![vehicle.id.clone()],
        };
        self.vehicles.insert(vehicle.id.clone(), vehicle);
        self.customers.insert(customer_id.clone(), customer);
        self.customer_order.push(customer_id.clone());
        customer_id
    }

    fn insert_order(
        &mut self,
        location_id: &str,
        customer_id_opt: Option<&str>,
        created: Timestamp,
    ) -> Result<OrderRow, SimApiError> {
        if !self.locations.iter().any(|location| location.id == location_id) {
            return Err(SimApiError::not_found("location"));
        }
        let number = self.next_order_number;
        let sequence = usize::try_from(number - FIRST_ORDER_NUMBER).unwrap_or(usize::MAX);
        let customer_id = match customer_id_opt {
            Some(customer_id) => customer_id.to_owned(),
            None => self.round_robin_customer(location_id, sequence)?,
        };
        let customer = self.customers.get(&customer_id).ok_or_else(|| SimApiError::not_found("customer"))?;
        let vehicle = customer
            .vehicle_ids
            .first()
            .and_then(|vehicle_id| self.vehicles.get(vehicle_id))
            .ok_or_else(|| SimApiError::not_found("vehicle"))?;
        let service_ids = self.canned_by_location.get(location_id).map_or(&[][..], Vec::as_slice);
        // Every location is seeded with the full catalogue, so this is never empty.
        let quoted = service_ids
            .get(sequence % service_ids.len().max(1))
            .and_then(|id| self.canned_services.get(id))
            .ok_or_else(|| SimApiError::not_found("canned service"))?;
        let customer_name = format!("{} {}", customer.first_name, customer.last_name);
        let vehicle_id = vehicle.id.clone();
        let vehicle_name = vehicle.description();
        let quoted_name = quoted.name.clone();
        let quoted_cents = quoted.total_cents;
        let order = OrderRow {
            id: random_id(&mut self.rng, "ord"),
            public_id: random_suffix(&mut self.rng, 10),
            company_id: self.company_id.clone(),
            location_id: location_id.to_owned(),
            number: if number % 2 == 1 { json!(number) } else { json!(number.to_string()) },
            complaint: format!("Customer asked for a quote: {quoted_name} on a {vehicle_name}"),
            name: quoted_name,
            status: OrderStatus::Estimate,
            customer_id,
            vehicle_id,
            authorized: false,
            invoiced: false,
            paid: false,
            archived: false,
            deleted: false,
            total_cost_cents: quoted_cents,
            created_date: created,
            updated_date: created,
            meta: RowMeta { version: 1 },
            generated_customer_name: customer_name,
            generated_vehicle_name: vehicle_name,
            number_value: number,
        };
        self.next_order_number += 1;
        self.orders.insert(order.id.clone(), order.clone());
        Ok(order)
    }

    /// Picks the customers of the location in turn, or of the whole company if it has none.
    fn round_robin_customer(&self, location_id: &str, sequence: usize) -> Result<String, SimApiError> {
        let at_location: Vec<&String> = self
            .customer_order
            .iter()
            .filter(|customer_id| {
                self.customers
                    .get(*customer_id)
                    .is_some_and(|customer| customer.location_ids.iter().any(|id| id == location_id))
            })
            .collect();
        let candidates: Vec<&String> =
            if at_location.is_empty() { self.customer_order.iter().collect() } else { at_location };
        candidates
            .get(sequence % candidates.len().max(1))
            .map(|customer_id| (*customer_id).clone())
            .ok_or_else(|| SimApiError::not_found("customer"))
    }

    fn sim_customer(&self, customer_id: &str) -> SimCustomer {
        let customer = &self.customers[customer_id];
        let vehicle_opt = customer.vehicle_ids.first().and_then(|vehicle_id| self.vehicles.get(vehicle_id));
        SimCustomer {
            id: customer.id.clone(),
            first_name: customer.first_name.clone(),
            last_name: customer.last_name.clone(),
            phone: customer.phone_numbers.first().map(|phone| phone.number.clone()).unwrap_or_default(),
            email: customer.emails.first().map(|email| email.email.clone()).unwrap_or_default(),
            location_id_opt: customer.location_ids.first().cloned(),
            vehicle_id: vehicle_opt.map(|vehicle| vehicle.id.clone()).unwrap_or_default(),
            vehicle: vehicle_opt.map(VehicleRow::description).unwrap_or_default(),
        }
    }

    fn insert_appointment(&mut self, body: &Value) -> Result<AppointmentRow, SimApiError> {
        let name = required_str(body, "name")?;
        let color = required_str(body, "color")?;
        let location_id = required_str(body, "locationId")?;
        let start_date = parse_date_field(required_str(body, "startDate")?, "startDate")?;
        let end_date = parse_date_field(required_str(body, "endDate")?, "endDate")?;
        if !self.locations.iter().any(|location| location.id == location_id) {
            return Err(SimApiError::validation("locationId is not a location of this company"));
        }
        if end_date <= start_date {
            return Err(SimApiError::validation("endDate must be after startDate"));
        }
        let optional_str = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
        let created = now_ms();
        let appointment = AppointmentRow {
            id: random_id(&mut self.rng, "apt"),
            company_id: self.company_id.clone(),
            location_id: location_id.to_owned(),
            customer_id: optional_str("customerId"),
            vehicle_id: optional_str("vehicleId"),
            order_id: optional_str("orderId"),
            name: name.to_owned(),
            color: color.to_owned(),
            note: optional_str("note"),
            start_date,
            end_date,
            all_day: body.get("allDay").and_then(Value::as_bool).unwrap_or(false),
            confirmed: body.get("confirmed").and_then(Value::as_bool).unwrap_or(false),
            created_date: created,
            updated_date: created,
            meta: RowMeta { version: 1 },
        };
        self.appointments.push(appointment.clone());
        Ok(appointment)
    }
}

fn generated_contact(index: usize, location_opt: Option<&SimLocation>) -> Contact {
    let first_name = FIRST_NAMES[index % FIRST_NAMES.len()];
    // 16 first names against 13 last names: a full name repeats only after 208 customers.
    let last_name = LAST_NAMES[index % LAST_NAMES.len()];
    let area_code = location_opt
        .map(|location| location.phone.get(..3).unwrap_or("512"))
        .filter(|code| code.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("512");
    Contact {
        first_name: first_name.to_owned(),
        last_name: last_name.to_owned(),
        // 555 numbers are fictional; 10 000 per area code before they repeat.
        phone: format!("{area_code}555{:04}", index % 10_000),
        email: format!("{}.{}{index}@example.com", first_name.to_lowercase(), last_name.to_lowercase()),
    }
}

/// Applies a location's price factor to a list price, rounded to whole dollars.
fn price_at_location(list_cents: i64, price_factor: f64) -> i64 {
    let dollars = (list_cents as f64 / 100.0 * price_factor).round();
    dollars as i64 * 100
}

/// Returns the top-level fields whose values differ, in `after`'s field order.
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let Some(after_fields) = after.as_object() else {
        return Vec::new();
    };
    after_fields
        .iter()
        .filter(|(field, value)| before.get(field.as_str()) != Some(*value))
        .map(|(field, _)| field.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// The company selected by the request's API key.
#[derive(Debug, Clone)]
struct CompanyId(String);

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v3/order", get(list_orders))
        .route("/v3/order/{id}", get(get_order).put(put_order))
        .route("/v3/customer/{id}", get(get_customer))
        .route("/v3/customer/{id}/vehicle", get(list_customer_vehicles))
        .route("/v3/vehicle/{id}", get(get_vehicle))
        .route("/v3/canned_service", get(list_canned_services))
        .route("/v3/location", get(list_locations))
        .route("/v3/appointment", get(list_appointments).post(post_appointment))
        .route("/v3/appointment/{id}", get(get_appointment))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), api_gate))
        .with_state(shared)
}

/// Records the request, authenticates it (401 first), then applies API faults.
async fn api_gate(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    shared.record_request(&request);
    let company_id_opt =
        bearer_token(request.headers()).and_then(|api_key| shared.company_by_key.get(api_key)).cloned();
    let Some(company_id) = company_id_opt else {
        return SimApiError::unauthorized().into_response();
    };
    request.extensions_mut().insert(CompanyId(company_id));
    let drawn = lock(&shared.faults).api.take();
    run_with_faults(drawn, refusal_answer, request, next).await
}

/// Answers a refusal drawn from the API faults with ShopMonkey's error envelope.
fn refusal_answer(refusal: ApiRefusal<u64>) -> Response {
    let error = match refusal {
        ApiRefusal::TooManyRequests(retry_after_secs) => SimApiError::rate_limited(retry_after_secs),
        ApiRefusal::Internal => SimApiError::internal(),
    };
    error.into_response()
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

type ApiResult = Result<Json<Value>, SimApiError>;

async fn list_orders(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = ListQuery::parse(&params)?;
    let rows = shared.with_company(&company_id, |company| Ok(company.orders.values().map(to_json).collect()))?;
    Ok(list_envelope(&query, rows))
}

async fn get_order(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Path(order_id): Path<String>,
) -> ApiResult {
    let order = shared.with_company(&company_id, |company| {
        company.orders.get(&order_id).map(to_json).ok_or_else(|| SimApiError::not_found("order"))
    })?;
    Ok(one_envelope(order))
}

async fn put_order(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Path(order_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = parse_json_body(&body)?;
    let status_text = required_str(&body, "status")?;
    let status = OrderStatus::parse(status_text)
        .ok_or_else(|| SimApiError::validation("status must be Estimate, RepairOrder or Invoice"))?;
    shared.change_order_status(&company_id, &order_id, status)?;
    get_order(State(shared), Extension(CompanyId(company_id)), Path(order_id)).await
}

async fn get_customer(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Path(customer_id): Path<String>,
) -> ApiResult {
    let customer = shared.with_company(&company_id, |company| {
        company.customers.get(&customer_id).map(to_json).ok_or_else(|| SimApiError::not_found("customer"))
    })?;
    Ok(one_envelope(customer))
}

async fn list_customer_vehicles(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Path(customer_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = ListQuery::parse(&params)?;
    let rows = shared.with_company(&company_id, |company| {
        let customer = company.customers.get(&customer_id).ok_or_else(|| SimApiError::not_found("customer"))?;
        Ok(customer.vehicle_ids.iter().filter_map(|vehicle_id| company.vehicles.get(vehicle_id)).map(to_json).collect())
    })?;
    Ok(list_envelope(&query, rows))
}

async fn get_vehicle(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Path(vehicle_id): Path<String>,
) -> ApiResult {
    let vehicle = shared.with_company(&company_id, |company| {
        company.vehicles.get(&vehicle_id).map(to_json).ok_or_else(|| SimApiError::not_found("vehicle"))
    })?;
    Ok(one_envelope(vehicle))
}

async fn list_canned_services(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = ListQuery::parse(&params)?;
    let rows =
        shared.with_company(&company_id, |company| Ok(company.canned_services.values().map(to_json).collect()))?;
    Ok(list_envelope(&query, rows))
}

async fn list_locations(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = ListQuery::parse(&params)?;
    let rows = shared.with_company(&company_id, |company| Ok(company.locations.iter().map(to_json).collect()))?;
    Ok(list_envelope(&query, rows))
}

async fn list_appointments(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = ListQuery::parse(&params)?;
    let rows = shared.with_company(&company_id, |company| Ok(company.appointments.iter().map(to_json).collect()))?;
    Ok(list_envelope(&query, rows))
}

async fn get_appointment(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    Path(appointment_id): Path<String>,
) -> ApiResult {
    let appointment = shared.with_company(&company_id, |company| {
        company
            .appointments
            .iter()
            .find(|appointment| appointment.id == appointment_id)
            .map(to_json)
            .ok_or_else(|| SimApiError::not_found("appointment"))
    })?;
    Ok(one_envelope(appointment))
}

async fn post_appointment(
    State(shared): State<Arc<Shared>>,
    Extension(CompanyId(company_id)): Extension<CompanyId>,
    body: Bytes,
) -> ApiResult {
    let body = parse_json_body(&body)?;
    let appointment =
        shared.with_company(&company_id, |company| company.insert_appointment(&body).map(|row| to_json(&row)))?;
    Ok(one_envelope(appointment))
}

async fn unknown_route() -> SimApiError {
    SimApiError::not_found("route")
}

fn one_envelope(data: Value) -> Json<Value> {
    Json(json!({ "success": true, "data": data }))
}

fn list_envelope(query: &ListQuery, rows: Vec<Value>) -> Json<Value> {
    let page = query.page(rows);
    Json(json!({
        "success": true,
        "data": page.rows,
        "meta": { "total": page.total, "hasMore": page.has_more },
    }))
}

fn parse_json_body(body: &[u8]) -> Result<Value, SimApiError> {
    serde_json::from_slice(body).map_err(|_| SimApiError::bad_request("body is not valid JSON"))
}

fn required_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, SimApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| SimApiError::validation(&format!("{field} is required")))
}

fn parse_date_field(text: &str, field: &str) -> Result<Timestamp, SimApiError> {
    parse_timestamp(text).ok_or_else(|| SimApiError::validation(&format!("{field} is not an RFC 3339 date")))
}

/// Parses an RFC 3339 instant, or a bare date as midnight UTC.
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp);
    }
    let date: jiff::civil::Date = text.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|zoned| zoned.timestamp())
}

/// An error answer in ShopMonkey's envelope. The real `code` catalogue is unpublished (§1.2);
/// these codes are the fake's own, and clients must not depend on them.
#[derive(Debug, Clone)]
struct SimApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs_opt: Option<u64>,
}

impl SimApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> SimApiError {
        SimApiError { status, code, message, retry_after_secs_opt: None }
    }

    fn unauthorized() -> SimApiError {
        let message = "missing or invalid api key".to_owned();
        SimApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    fn not_found(what: &str) -> SimApiError {
        SimApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("{what} not found"))
    }

    fn bad_request(message: &str) -> SimApiError {
        SimApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message.to_owned())
    }

    fn validation(message: &str) -> SimApiError {
        SimApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message.to_owned())
    }

    fn rate_limited(retry_after_secs: u64) -> SimApiError {
        let message = "too many requests".to_owned();
        SimApiError {
            retry_after_secs_opt: Some(retry_after_secs),
            ..SimApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", message)
        }
    }

    fn internal() -> SimApiError {
        let message = "internal server error".to_owned();
        SimApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }
}

impl IntoResponse for SimApiError {
    fn into_response(self) -> Response {
        let body = json!({ "success": false, "code": self.code, "message": self.message });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(retry_after_secs) = self.retry_after_secs_opt {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// List queries (§1.4)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
}

impl Operator {
    fn parse(text: &str) -> Option<Operator> {
        match text {
            "gt" => Some(Operator::Gt),
            "gte" => Some(Operator::Gte),
            "lt" => Some(Operator::Lt),
            "lte" => Some(Operator::Lte),
            "eq" => Some(Operator::Eq),
            _ => None,
        }
    }

    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Operator::Gt => ordering.is_gt(),
            Operator::Gte => ordering.is_ge(),
            Operator::Lt => ordering.is_lt(),
            Operator::Lte => ordering.is_le(),
            Operator::Eq => ordering.is_eq(),
        }
    }
}

/// One condition on a top-level field of a record.
#[derive(Debug, Clone)]
struct Filter {
    field: String,
    operator: Operator,
    value: Value,
}

impl Filter {
    fn matches(&self, record: &Value) -> bool {
        record
            .get(&self.field)
            .and_then(|actual| compare(&self.field, actual, &self.value))
            .is_some_and(|ordering| self.operator.accepts(ordering))
    }
}

/// Orders two JSON values of the same kind; fields named `...Date` compare as instants.
/// Different kinds (or nulls) do not compare, so the filter excludes the record.
fn compare(field: &str, actual: &Value, expected: &Value) -> Option<Ordering> {
    match (actual, expected) {
        (Value::String(actual), Value::String(expected)) if field.ends_with("Date") => {
            Some(parse_timestamp(actual)?.cmp(&parse_timestamp(expected)?))
        }
        (Value::String(actual), Value::String(expected)) => Some(actual.cmp(expected)),
        (Value::Number(actual), Value::Number(expected)) => actual.as_f64()?.partial_cmp(&expected.as_f64()?),
        (Value::Bool(actual), Value::Bool(expected)) => Some(actual.cmp(expected)),
        _ => None,
    }
}

#[derive(Debug)]
struct ListQuery {
    limit: usize,
    skip: usize,
    filters: Vec<Filter>,
    id_descending: bool,
}

#[derive(Debug)]
struct Page {
    rows: Vec<Value>,
    total: usize,
    has_more: bool,
}

impl ListQuery {
    fn parse(params: &HashMap<String, String>) -> Result<ListQuery, SimApiError> {
        if params.contains_key("orderby") {
            return Err(SimApiError::bad_request("unknown query parameter orderby (did you mean orderBy?)"));
        }
        let limit = match params.get("limit") {
            Some(text) => parse_count(text, "limit")?.min(MAX_LIMIT),
            None => MAX_LIMIT,
        };
        let skip = match params.get("skip") {
            Some(text) => parse_count(text, "skip")?,
            None => 0,
        };
        let mut filters = match params.get("where") {
            Some(text) => parse_where(text)?,
            None => Vec::new(),
        };
        if let Some(location_id) = params.get("locationId") {
            filters.push(Filter {
                field: "locationId".to_owned(),
                operator: Operator::Eq,
                value: Value::String(location_id.clone()),
            });
        }
        let id_descending = match params.get("orderBy") {
            Some(text) => parse_order_by(text)?,
            None => false,
        };
        Ok(ListQuery { limit, skip, filters, id_descending })
    }

    fn page(&self, mut rows: Vec<Value>) -> Page {
        rows.retain(|row| self.filters.iter().all(|filter| filter.matches(row)));
        rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        if self.id_descending {
            rows.reverse();
        }
        let total = rows.len();
        let page_rows: Vec<Value> = rows.into_iter().skip(self.skip).take(self.limit).collect();
        let has_more = self.skip.saturating_add(page_rows.len()) < total;
        Page { rows: page_rows, total, has_more }
    }
}

fn parse_count(text: &str, name: &str) -> Result<usize, SimApiError> {
    text.trim().parse().map_err(|_| SimApiError::bad_request(&format!("{name} must be a non-negative integer")))
}

/// Parses `where`: bare operators filter, `$` operators (and `$` top-level keys) are ignored
/// silently like the live API, and a plain value means `eq`.
fn parse_where(text: &str) -> Result<Vec<Filter>, SimApiError> {
    let parsed: Value = serde_json::from_str(text).map_err(|_| SimApiError::bad_request("where is not valid JSON"))?;
    let Value::Object(conditions) = parsed else {
        return Err(SimApiError::bad_request("where must be a JSON object"));
    };
    let mut filters = Vec::new();
    for (field, condition) in conditions {
        if field.starts_with('$') {
            continue;
        }
        let pairs: Vec<(Operator, Value)> = match condition {
            Value::Object(operators) => {
                let mut pairs = Vec::new();
                for (name, value) in operators {
                    if name.starts_with('$') {
                        continue;
                    }
                    let operator = Operator::parse(&name)
                        .ok_or_else(|| SimApiError::bad_request(&format!("unsupported where operator {name}")))?;
                    pairs.push((operator, value));
                }
                pairs
            }
            plain => vec![(Operator::Eq, plain)],
        };
        for (operator, value) in pairs {
            let is_bad_date =
                field.ends_with("Date") && value.as_str().is_some_and(|text| parse_timestamp(text).is_none());
            if is_bad_date {
                return Err(SimApiError::bad_request(&format!("where.{field} is not an RFC 3339 date")));
            }
            filters.push(Filter { field: field.clone(), operator, value });
        }
    }
    Ok(filters)
}

/// Parses `orderBy`; only `id` is honoured (other fields are ignored, as live), and the result
/// says whether ids sort descending.
fn parse_order_by(text: &str) -> Result<bool, SimApiError> {
    let parsed: Value =
        serde_json::from_str(text).map_err(|_| SimApiError::bad_request("orderBy is not valid JSON"))?;
    let Value::Object(fields) = parsed else {
        return Err(SimApiError::bad_request("orderBy must be a JSON object"));
    };
    match fields.get("id").and_then(Value::as_str) {
        None | Some("asc") => Ok(false),
        Some("desc") => Ok(true),
        Some(_) => Err(SimApiError::bad_request("orderBy.id must be asc or desc")),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks (§1.7)
// ---------------------------------------------------------------------------------------------

/// Everything fixed for all attempts and copies of one delivery.
#[derive(Debug)]
struct DeliveryPlan {
    target: WebhookTarget,
    request_id: String,
    webhook_id: String,
    body: Bytes,
    operation: &'static str,
    order_id_opt: Option<String>,
    bad_signature: bool,
    stale_timestamp: bool,
}

impl Shared {
    /// Builds one `order` webhook and spawns its delivery, as the webhook faults say.
    fn send_order_webhook(
        self: &Arc<Self>,
        target: WebhookTarget,
        operation: &'static str,
        data: Value,
        diff_opt: Option<Vec<String>>,
    ) {
        let order_id_opt = data["id"].as_str().map(str::to_owned);
        let envelope = order_envelope(operation, data, diff_opt);
        let (dropped, copies, bad_signature, stale_timestamp) = {
            let mut faults = lock(&self.faults);
            let dropped = take_one(&mut faults.drop_webhooks_remaining);
            let copies = if faults.duplicate_webhooks { 2 } else { 1 };
            (dropped, copies, faults.bad_signature, faults.stale_timestamp)
        };
        let plan = Arc::new(DeliveryPlan {
            target,
            request_id: uuid::Uuid::new_v4().to_string(),
            webhook_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            body: Bytes::from(envelope.to_string()),
            operation,
            order_id_opt,
            bad_signature,
            stale_timestamp,
        });
        if dropped {
            self.record_delivery(plan.recorded(0, None));
            return;
        }
        for _ in 0..copies {
            let shared = Arc::clone(self);
            let plan = Arc::clone(&plan);
            self.runtime.spawn(async move { shared.deliver(&plan).await });
        }
    }

    /// POSTs one delivery until the receiver answers 2xx, up to [`MAX_DELIVERY_ATTEMPTS`].
    async fn deliver(&self, plan: &DeliveryPlan) {
        let mut backoff = FIRST_RETRY_BACKOFF;
        for attempt in 1..=MAX_DELIVERY_ATTEMPTS {
            if self.stopped.load(AtomicOrdering::SeqCst) {
                return;
            }
            let status_opt = self.post_attempt(plan, attempt).await;
            self.record_delivery(plan.recorded(attempt, status_opt));
            if status_opt.is_some_and(|status| (200..300).contains(&status)) {
                return;
            }
            if attempt < MAX_DELIVERY_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        tracing::warn!(
            request_id = %plan.request_id,
            url = %plan.target.url,
            "shopmonkey sim webhook delivery gave up"
        );
    }

    /// Sends one attempt, signed at the moment of sending; returns the receiver's status.
    async fn post_attempt(&self, plan: &DeliveryPlan, attempt: u32) -> Option<u16> {
        let now_secs = Timestamp::now().as_second();
        let timestamp = if plan.stale_timestamp { now_secs - STALE_BY_SECS } else { now_secs };
        let secret = if plan.bad_signature { WRONG_SECRET } else { plan.target.secret.as_str() };
        let signature = signature::sign(secret, &plan.webhook_id, timestamp, &plan.body);
        let result = self
            .webhook_client
            .post(&plan.target.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "Shopmonkey (+https://shopmonkey.io)")
            .header("X-Attempt", attempt.to_string())
            .header("X-Request-Id", &plan.request_id)
            .header("webhook-id", &plan.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("webhook-version", "3")
            .body(plan.body.clone())
            .send()
            .await;
        match result {
            Ok(response) => Some(response.status().as_u16()),
            Err(err) => {
                tracing::debug!(
                    request_id = %plan.request_id,
                    attempt,
                    error = %err,
                    "shopmonkey sim webhook attempt failed"
                );
                None
            }
        }
    }
}

/// Returns the body of an `order` webhook: `{apiVersion, operation, table, data[, diff]}`.
fn order_envelope(operation: &str, data: Value, diff_opt: Option<Vec<String>>) -> Value {
    let mut envelope = json!({
        "apiVersion": "3",
        "operation": operation,
        "table": "order",
        "data": data,
    });
    if let Some(diff) = diff_opt {
        envelope["diff"] = json!(diff);
    }
    envelope
}

impl DeliveryPlan {
    fn recorded(&self, attempt: u32, status_opt: Option<u16>) -> RecordedDelivery {
        RecordedDelivery {
            request_id: self.request_id.clone(),
            webhook_id: self.webhook_id.clone(),
            attempt,
            status_opt,
            table: "order".to_owned(),
            operation: self.operation.to_owned(),
            order_id_opt: self.order_id_opt.clone(),
            at: Instant::now(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Serializes a record. The rows hold only strings, numbers, bools and timestamps.
fn to_json<T: Serialize>(row: &T) -> Value {
    serde_json::to_value(row).expect("sim rows hold only plain json values")
}

/// Returns the current time truncated to milliseconds, the precision the fake serves, so a
/// served date used in a `where` matches the stored one exactly.
fn now_ms() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond())
        .expect("the current time in milliseconds is a valid timestamp")
}

/// Serializes a timestamp as RFC 3339 UTC with milliseconds, e.g. `2026-05-01T17:02:11.000Z`.
fn rfc3339_ms<S: Serializer>(timestamp: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{timestamp:.3}"))
}

fn random_suffix(rng: &mut StdRng, len: usize) -> String {
    (0..len).map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())])).collect()
}

/// Returns `prefix_` plus 20 lowercase alphanumerics, the shape of ShopMonkey ids.
fn random_id(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}_{}", random_suffix(rng, 20))
}

/// Returns 17 VIN characters (no I, O or Q); the check digit is not computed.
fn random_vin(rng: &mut StdRng) -> String {
    (0..17).map(|_| char::from(VIN_ALPHABET[rng.random_range(0..VIN_ALPHABET.len())])).collect()
}

/// FNV-1a, a stable hash for seeding; std's hasher is randomized per process.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use axum::routing::post;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    const KEY_A: &str = "key-company-a";
    const KEY_B: &str = "key-company-b";
    const SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY";

    /// Company `cmp_a` (two shops, 10 customers) and company `cmp_b` (one shop, 3 customers).
    fn two_company_seed() -> SimSeed {
        let mut seed = SimSeed::franchise("cmp_a", KEY_A, 2, 10);
        seed.companies.push(SimCompany::franchise("cmp_b", KEY_B, 1, 3));
        seed
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().expect("reqwest client builds")
    }

    /// GETs `path_and_query` with the key and returns the status and the JSON body.
    /// GETs `path` with the query pairs (encoded here) and returns the status and JSON body.
    async fn get_json_query(
        sim: &ShopMonkeySim,
        key_opt: Option<&str>,
        path: &str,
        query: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = http().get(format!("{}{path}", sim.base_url())).query(query);
        if let Some(key) = key_opt {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("sim answers");
        let status = response.status();
        (status, response.json().await.expect("sim answers json"))
    }

    async fn get_json(sim: &ShopMonkeySim, key_opt: Option<&str>, path: &str) -> (StatusCode, Value) {
        get_json_query(sim, key_opt, path, &[]).await
    }

    fn first_location_id(sim: &ShopMonkeySim, company_id: &str) -> String {
        lock(&sim.shared.world).companies[company_id].locations[0].id.clone()
    }

    fn location_ids(sim: &ShopMonkeySim, company_id: &str) -> Vec<String> {
        lock(&sim.shared.world).companies[company_id].locations.iter().map(|location| location.id.clone()).collect()
    }

    #[derive(Debug)]
    struct ReceivedWebhook {
        headers: HeaderMap,
        body: Bytes,
    }

    impl ReceivedWebhook {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|value| value.to_str().ok())
        }
    }

    /// Serves `POST /hook` on `127.0.0.1:0`, answering 500 to the first `failures` requests and
    /// 200 after that; every request arrives on the returned channel.
    async fn spawn_receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<ReceivedWebhook>) {
        let (received_tx, received_rx) = mpsc::unbounded_channel();
        let failures_left = Arc::new(AtomicUsize::new(failures));
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let received_tx = received_tx.clone();
                let failures_left = Arc::clone(&failures_left);
                async move {
                    received_tx.send(ReceivedWebhook { headers, body }).ok();
                    let fail = failures_left
                        .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |left| left.checked_sub(1))
                        .is_ok();
                    if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (url, received_rx)
    }

    async fn next_webhook(received_rx: &mut mpsc::UnboundedReceiver<ReceivedWebhook>) -> ReceivedWebhook {
        tokio::time::timeout(Duration::from_secs(5), received_rx.recv())
            .await
            .expect("a webhook arrives within 5 s")
            .expect("the receiver is still running")
    }

    /// Waits (at most 5 s) until the sim has recorded `count` delivery attempts.
    async fn deliveries_after(sim: &ShopMonkeySim, count: usize) -> Vec<RecordedDelivery> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let deliveries = sim.webhook_deliveries();
            if deliveries.len() >= count || Instant::now() > deadline {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn requests_without_a_valid_api_key_get_a_401_envelope() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");

        let (missing_status, missing_body) = get_json(&sim, None, "/v3/order").await;
        let (unknown_status, unknown_body) = get_json(&sim, Some("nope"), "/v3/location").await;

        assert_eq!(missing_status, StatusCode::UNAUTHORIZED);
        assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
        for body in [missing_body, unknown_body] {
            assert_eq!(body["success"], json!(false));
            assert!(body["code"].is_string());
            assert!(body["message"].is_string());
        }
        assert_eq!(sim.request_count("/v3/"), 2);
    }

    #[tokio::test]
    async fn a_company_cannot_see_another_companys_order() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let order = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);

        let (own_status, own_body) = get_json(&sim, Some(KEY_A), &format!("/v3/order/{}", order.id)).await;
        let (other_status, other_body) = get_json(&sim, Some(KEY_B), &format!("/v3/order/{}", order.id)).await;
        let (_, other_list) = get_json(&sim, Some(KEY_B), "/v3/order").await;

        assert_eq!(own_status, StatusCode::OK);
        assert_eq!(own_body["success"], json!(true));
        assert_eq!(own_body["data"]["id"], json!(order.id));
        assert_eq!(own_body["data"]["status"], json!("Estimate"));
        assert_eq!(own_body["data"]["meta"]["version"], json!(1));
        assert_eq!(other_status, StatusCode::NOT_FOUND);
        assert_eq!(other_body["success"], json!(false));
        assert_eq!(other_list["meta"]["total"], json!(0));
    }

    #[tokio::test]
    async fn records_use_the_documented_camel_case_shapes() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let first = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let second = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let customer = sim.customer("cmp_a", 0);

        let (_, first_body) = get_json(&sim, Some(KEY_A), &format!("/v3/order/{}", first.id)).await;
        let (_, second_body) = get_json(&sim, Some(KEY_A), &format!("/v3/order/{}", second.id)).await;
        let (_, customer_body) = get_json(&sim, Some(KEY_A), &format!("/v3/customer/{}", customer.id)).await;
        let (_, vehicles_body) = get_json(&sim, Some(KEY_A), &format!("/v3/customer/{}/vehicle", customer.id)).await;

        let order = &first_body["data"];
        assert!(order["id"].as_str().is_some_and(|id| id.len() == 24 && id.starts_with("ord_")));
        assert!(order["number"].is_number());
        assert!(second_body["data"]["number"].is_string());
        let created_date = order["createdDate"].as_str().expect("createdDate");
        assert_eq!(created_date.len(), "2026-05-01T17:02:11.000Z".len(), "{created_date}");
        assert!(created_date.ends_with('Z') && created_date.parse::<Timestamp>().is_ok());
        assert!(order["totalCostCents"].is_i64());
        assert_eq!(order["customerId"], json!(first.customer_id));
        let customer_json = &customer_body["data"];
        assert_eq!(customer_json["firstName"], json!(customer.first_name));
        assert_eq!(customer_json["phoneNumbers"][0]["number"], json!(customer.phone));
        assert_eq!(customer_json["phoneNumbers"][0]["type"], json!("Mobile"));
        assert_eq!(customer_json["emails"][0]["email"], json!(customer.email));
        assert_eq!(customer.phone.len(), 10);
        assert_eq!(vehicles_body["data"][0]["id"], json!(customer.vehicle_id));
        assert_eq!(vehicles_body["data"][0]["size"], json!("LightDuty"));
        assert_eq!(vehicles_body["meta"]["total"], json!(1));
    }

    #[tokio::test]
    async fn limit_is_clamped_to_100_and_skip_pages_through_150_orders() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let location_id = first_location_id(&sim, "cmp_a");
        for _ in 0..150 {
            sim.create_order("cmp_a", &location_id, None);
        }

        let (status, first_page) = get_json_query(&sim, Some(KEY_A), "/v3/order", &[("limit", "500")]).await;
        let (_, second_page) = get_json_query(
            &sim,
            Some(KEY_A),
            "/v3/order",
            &[("limit", "100"), ("skip", "100"), ("orderBy", r#"{"id":"asc"}"#)],
        )
        .await;

        assert_eq!(status, StatusCode::OK);
        let first_rows = first_page["data"].as_array().expect("data is a list");
        let second_rows = second_page["data"].as_array().expect("data is a list");
        assert_eq!(first_rows.len(), 100);
        assert_eq!(first_page["meta"], json!({ "total": 150, "hasMore": true }));
        assert_eq!(second_rows.len(), 50);
        assert_eq!(second_page["meta"], json!({ "total": 150, "hasMore": false }));
        let mut ids: Vec<&str> = first_rows.iter().chain(second_rows).filter_map(|row| row["id"].as_str()).collect();
        assert!(ids.is_sorted(), "default and asc order are by id");
        ids.dedup();
        assert_eq!(ids.len(), 150);
    }

    #[tokio::test]
    async fn where_filters_updated_date_with_gte_and_ignores_dollar_gte() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let location_id = first_location_id(&sim, "cmp_a");
        let orders: Vec<SimOrder> = (0..5).map(|_| sim.create_order("cmp_a", &location_id, None)).collect();
        // Dates are served with millisecond precision; the pause makes the updates strictly later.
        tokio::time::sleep(Duration::from_millis(5)).await;
        sim.update_order_status("cmp_a", &orders[1].id, "RepairOrder");
        sim.update_order_status("cmp_a", &orders[3].id, "Invoice");
        let (_, updated) = get_json(&sim, Some(KEY_A), &format!("/v3/order/{}", orders[1].id)).await;
        let cutoff = updated["data"]["updatedDate"].as_str().expect("updatedDate").to_owned();

        let bare = json!({ "updatedDate": { "gte": cutoff } }).to_string();
        let dollar = json!({ "updatedDate": { "$gte": cutoff } }).to_string();
        let (bare_status, bare_body) = get_json_query(&sim, Some(KEY_A), "/v3/order", &[("where", &bare)]).await;
        let (dollar_status, dollar_body) = get_json_query(&sim, Some(KEY_A), "/v3/order", &[("where", &dollar)]).await;

        assert_eq!(bare_status, StatusCode::OK);
        assert_eq!(bare_body["meta"]["total"], json!(2));
        let mut filtered: Vec<&str> =
            bare_body["data"].as_array().expect("data is a list").iter().filter_map(|row| row["id"].as_str()).collect();
        filtered.sort_unstable();
        let mut expected = vec![orders[1].id.as_str(), orders[3].id.as_str()];
        expected.sort_unstable();
        assert_eq!(filtered, expected);
        assert_eq!(dollar_status, StatusCode::OK);
        assert_eq!(dollar_body["meta"]["total"], json!(5));
    }

    #[tokio::test]
    async fn lowercase_orderby_is_rejected_with_400() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");

        let (status, body) = get_json_query(&sim, Some(KEY_A), "/v3/order", &[("orderby", r#"{"id":"asc"}"#)]).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["success"], json!(false));
    }

    #[tokio::test]
    async fn a_location_has_23_canned_services_from_109_to_600_dollars_and_a_price_factor_changes_them() {
        let mut seed = two_company_seed();
        seed.companies[0].price_factor_per_location = vec![1.0, 1.1];
        let sim = ShopMonkeySim::start(seed).await.expect("sim starts");
        let locations = location_ids(&sim, "cmp_a");

        let (status, list_price) =
            get_json_query(&sim, Some(KEY_A), "/v3/canned_service", &[("locationId", &locations[0])]).await;
        let by_where = json!({ "locationId": locations[1] }).to_string();
        let (_, factored) = get_json_query(&sim, Some(KEY_A), "/v3/canned_service", &[("where", &by_where)]).await;

        assert_eq!(status, StatusCode::OK);
        let cents = |body: &Value| -> Vec<i64> {
            let mut cents: Vec<i64> = body["data"]
                .as_array()
                .expect("data is a list")
                .iter()
                .filter_map(|row| row["totalCents"].as_i64())
                .collect();
            cents.sort_unstable();
            cents
        };
        let list_cents = cents(&list_price);
        let factored_cents = cents(&factored);
        assert_eq!(list_cents.len(), 23);
        assert_eq!(list_price["meta"], json!({ "total": 23, "hasMore": false }));
        assert_eq!(list_cents.first(), Some(&10900));
        assert_eq!(list_cents.last(), Some(&60000));
        assert_eq!(factored_cents.len(), 23);
        assert_eq!(factored_cents.last(), Some(&66000));
        assert!(factored_cents.iter().all(|cents| cents % 100 == 0), "whole dollars");
        assert_ne!(list_cents, factored_cents);
        let package = list_price["data"]
            .as_array()
            .expect("data is a list")
            .iter()
            .find(|row| row["name"] == json!("Ultimate Tint Package — XPEL XR Plus Nano-Ceramic"))
            .expect("the ultimate package is on the list");
        assert_eq!(package["pricing"], json!("FixedPrice"));
        assert_eq!(package["fixedPriceCents"], json!(60000));
    }

    #[tokio::test]
    async fn create_order_delivers_a_signed_insert_webhook() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let (url, mut received_rx) = spawn_receiver(0).await;
        sim.set_webhook_target("cmp_a", url, SECRET.to_owned());

        let order = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let webhook = next_webhook(&mut received_rx).await;

        let verified = signature::verify(
            SECRET,
            webhook.header("webhook-id"),
            webhook.header("webhook-timestamp"),
            webhook.header("webhook-signature"),
            &webhook.body,
            Timestamp::now().as_second(),
        );
        assert_eq!(verified, Ok(()));
        assert_eq!(webhook.header("content-type"), Some("application/json"));
        assert_eq!(webhook.header("user-agent"), Some("Shopmonkey (+https://shopmonkey.io)"));
        assert_eq!(webhook.header("x-attempt"), Some("1"));
        assert_eq!(webhook.header("webhook-version"), Some("3"));
        assert!(webhook.header("x-request-id").is_some());
        let body: Value = serde_json::from_slice(&webhook.body).expect("json body");
        assert_eq!(body["apiVersion"], json!("3"));
        assert_eq!(body["operation"], json!("INSERT"));
        assert_eq!(body["table"], json!("order"));
        assert_eq!(body["data"]["id"], json!(order.id));
        assert!(body.get("diff").is_none());
        let deliveries = deliveries_after(&sim, 1).await;
        assert_eq!(deliveries[0].status_opt, Some(200));
        assert_eq!(deliveries[0].order_id_opt.as_deref(), Some(order.id.as_str()));
    }

    #[tokio::test]
    async fn update_order_status_sends_an_update_webhook_with_a_diff() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let order = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let (url, mut received_rx) = spawn_receiver(0).await;
        sim.set_webhook_target("cmp_a", url, SECRET.to_owned());

        let updated = sim.update_order_status("cmp_a", &order.id, "RepairOrder");
        let webhook = next_webhook(&mut received_rx).await;

        assert_eq!(updated.version, 2);
        assert_eq!(updated.status, "RepairOrder");
        let body: Value = serde_json::from_slice(&webhook.body).expect("json body");
        assert_eq!(body["operation"], json!("UPDATE"));
        assert_eq!(body["data"]["status"], json!("RepairOrder"));
        assert_eq!(body["data"]["authorized"], json!(true));
        assert_eq!(body["data"]["meta"]["version"], json!(2));
        let diff = body["diff"].as_array().expect("diff is a list");
        for field in ["status", "authorized", "meta"] {
            assert!(diff.contains(&json!(field)), "diff names {field}");
        }
    }

    #[tokio::test]
    async fn a_receiver_answering_500_once_gets_a_second_attempt_with_the_same_request_id() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let (url, mut received_rx) = spawn_receiver(1).await;
        sim.set_webhook_target("cmp_a", url, SECRET.to_owned());

        sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let first = next_webhook(&mut received_rx).await;
        let second = next_webhook(&mut received_rx).await;

        assert_eq!(first.header("x-attempt"), Some("1"));
        assert_eq!(second.header("x-attempt"), Some("2"));
        assert_eq!(first.header("x-request-id"), second.header("x-request-id"));
        assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
        let attempts: Vec<(u32, Option<u16>)> =
            deliveries_after(&sim, 2).await.iter().map(|delivery| (delivery.attempt, delivery.status_opt)).collect();
        assert_eq!(attempts, vec![(1, Some(500)), (2, Some(200))]);
    }

    #[tokio::test]
    async fn drop_webhooks_records_the_delivery_without_sending_it() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let (url, mut received_rx) = spawn_receiver(0).await;
        sim.set_webhook_target("cmp_a", url, SECRET.to_owned());
        sim.set_fault(Fault::DropWebhooks { times: 1 });

        let dropped = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let delivered = sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let webhook = next_webhook(&mut received_rx).await;

        let body: Value = serde_json::from_slice(&webhook.body).expect("json body");
        assert_eq!(body["data"]["id"], json!(delivered.id));
        let deliveries = deliveries_after(&sim, 2).await;
        assert_eq!(deliveries[0].order_id_opt.as_deref(), Some(dropped.id.as_str()));
        assert_eq!((deliveries[0].attempt, deliveries[0].status_opt), (0, None));
    }

    #[tokio::test]
    async fn signature_faults_fail_verification_and_duplicates_share_their_ids() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let (url, mut received_rx) = spawn_receiver(0).await;
        sim.set_webhook_target("cmp_a", url, SECRET.to_owned());
        sim.set_fault(Fault::DuplicateWebhooks);
        sim.set_fault(Fault::BadSignature);

        sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let first_copy = next_webhook(&mut received_rx).await;
        let second_copy = next_webhook(&mut received_rx).await;
        sim.clear_faults();
        sim.set_fault(Fault::StaleTimestamp);
        sim.create_order("cmp_a", &first_location_id(&sim, "cmp_a"), None);
        let stale = next_webhook(&mut received_rx).await;

        let verify = |webhook: &ReceivedWebhook| {
            signature::verify(
                SECRET,
                webhook.header("webhook-id"),
                webhook.header("webhook-timestamp"),
                webhook.header("webhook-signature"),
                &webhook.body,
                Timestamp::now().as_second(),
            )
        };
        assert_eq!(first_copy.header("x-request-id"), second_copy.header("x-request-id"));
        assert_eq!(first_copy.header("webhook-id"), second_copy.header("webhook-id"));
        assert_eq!(first_copy.body, second_copy.body);
        assert_eq!(verify(&first_copy), Err(signature::SignatureError::Mismatch));
        assert_eq!(verify(&stale), Err(signature::SignatureError::Stale));
    }

    #[tokio::test]
    async fn slow_fault_delays_the_answer() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        sim.set_fault(Fault::Slow { delay: Duration::from_millis(200), times: 1 });

        let started = Instant::now();
        let (slow_status, _) = get_json(&sim, Some(KEY_A), "/v3/location").await;
        let slow_elapsed = started.elapsed();

        assert_eq!(slow_status, StatusCode::OK);
        assert!(slow_elapsed >= Duration::from_millis(200), "{slow_elapsed:?}");
    }

    #[tokio::test]
    async fn status500_fault_answers_once_then_recovers() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        sim.set_fault(Fault::Status500 { times: 1 });

        let (failed_status, failed_body) = get_json(&sim, Some(KEY_A), "/v3/location").await;
        let (recovered_status, recovered_body) = get_json(&sim, Some(KEY_A), "/v3/location").await;

        assert_eq!(failed_status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(failed_body["success"], json!(false));
        assert_eq!(recovered_status, StatusCode::OK);
        assert_eq!(recovered_body["meta"]["total"], json!(2));
        assert_eq!(sim.request_count("/v3/location"), 2);
    }

    #[tokio::test]
    async fn status429_fault_carries_retry_after() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        sim.set_fault(Fault::Status429 { retry_after_secs: 7, times: usize::MAX });

        let response =
            http().get(format!("{}/v3/order", sim.base_url())).bearer_auth(KEY_A).send().await.expect("sim answers");
        let unauthenticated = get_json(&sim, None, "/v3/order").await;
        sim.clear_faults();
        let (cleared_status, _) = get_json(&sim, Some(KEY_A), "/v3/order").await;

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|value| value.to_str().ok()), Some("7"));
        let body: Value = response.json().await.expect("json body");
        assert_eq!(body["success"], json!(false));
        assert_eq!(unauthenticated.0, StatusCode::UNAUTHORIZED, "auth is checked before faults");
        assert_eq!(cleared_status, StatusCode::OK);
    }

    #[tokio::test]
    async fn posting_an_appointment_without_color_is_rejected_with_400() {
        let sim = ShopMonkeySim::start(two_company_seed()).await.expect("sim starts");
        let location_id = first_location_id(&sim, "cmp_a");
        let mut appointment = json!({
            "name": "Premium Tint Package",
            "locationId": location_id,
            "startDate": "2026-06-01T15:00:00Z",
            "endDate": "2026-06-01T17:00:00Z",
        });
        let post_appointment = |body: Value| {
            http().post(format!("{}/v3/appointment", sim.base_url())).bearer_auth(KEY_A).json(&body).send()
        };

        let rejected = post_appointment(appointment.clone()).await.expect("sim answers");
        appointment["color"] = json!("blue");
        let created = post_appointment(appointment).await.expect("sim answers");

        assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
        let rejected_body: Value = rejected.json().await.expect("json body");
        assert_eq!(rejected_body["success"], json!(false));
        assert!(rejected_body["message"].as_str().is_some_and(|message| message.contains("color")));
        assert_eq!(created.status(), StatusCode::OK);
        let created_body: Value = created.json().await.expect("json body");
        assert!(created_body["data"]["id"].as_str().is_some_and(|id| id.starts_with("apt_")));
        assert_eq!(sim.appointments("cmp_a").len(), 1);
        let june_first = json!({
            "startDate": { "gte": "2026-06-01T00:00:00Z", "lt": "2026-06-02T00:00:00Z" },
        })
        .to_string();
        let (_, listed) = get_json_query(&sim, Some(KEY_A), "/v3/appointment", &[("where", &june_first)]).await;
        assert_eq!(listed["meta"]["total"], json!(1));
    }
}
