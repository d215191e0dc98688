//! The ShopMonkey v3 HTTP client: implements the core's [`Crm`] port over reqwest. It owns the
//! HTTP behaviour: the bearer key per tenant, the mapping of statuses to [`CrmError`], retries
//! with backoff, paging loops and a cap on requests in flight per tenant. Every fact about
//! ShopMonkey's paths, queries and JSON lives in [`super::wire`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use dashmap::DashMap;
use jiff::Timestamp;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use leadorch_actors::domain::{
    CrmAppointment, CrmCannedService, CrmCustomer, CrmLocation, CrmOrder, CrmPage, CrmVehicle, NewCrmAppointment,
    TenantId,
};
use leadorch_actors::ports::{Crm, CrmError, error_chain};

use super::wire::{self, Query};
use crate::vendor_http::{self, REDACTED, RawResponse, RetryPolicy, parse_retry_after};

/// How many pages a full-list call reads at most; a guard against a `hasMore` that never ends.
const MAX_PAGES: u32 = 50;

/// How the client talks to ShopMonkey: where, how long it waits and how hard it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopMonkeyConfig {
    /// The API host without `/v3`, e.g. `https://api.shopmonkey.cloud`; paths are appended.
    pub base_url: String,
    /// Budget of one attempt, from sending the request to reading the whole body.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx, timeouts and connection failures.
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles per retry, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff. A 429 whose `Retry-After` is longer is not waited for: the call
    /// fails at once with `RateLimited` and the hint, so the caller can reschedule.
    pub max_backoff: Duration,
    /// Requests on the wire at once for one tenant (one API key); 0 is treated as 1.
    pub max_in_flight_per_tenant: usize,
}

impl Default for ShopMonkeyConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.shopmonkey.cloud".to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_in_flight_per_tenant: 4,
        }
    }
}

impl ShopMonkeyConfig {
    /// Returns the retry budget and backoff of these settings.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
        }
    }
}

/// Where the client gets each tenant's ShopMonkey API key.
#[async_trait]
pub trait CrmKeySource: Send + Sync + fmt::Debug {
    /// Returns the tenant's API key.
    ///
    /// # Errors
    /// `NotConfigured` when the tenant has none; any other `CrmError` the source hits.
    async fn api_key(&self, tenant_id: TenantId) -> Result<SecretString, CrmError>;
}

/// One API key for every tenant (single-shop deployments, demos and tests).
pub struct StaticCrmKey(pub SecretString);

impl StaticCrmKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }
}

impl fmt::Debug for StaticCrmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticCrmKey({REDACTED})")
    }
}

#[async_trait]
impl CrmKeySource for StaticCrmKey {
    async fn api_key(&self, _tenant_id: TenantId) -> Result<SecretString, CrmError> {
        if self.0.expose_secret().trim().is_empty() {
            return Err(CrmError::NotConfigured);
        }
        Ok(self.0.clone())
    }
}

/// Why a [`ShopMonkeyClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ShopMonkeyBuildError {
    #[error("invalid shopmonkey base url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("failed to build the http client")]
    Http(#[source] reqwest::Error),
}

/// The ShopMonkey v3 client; cheap to clone (clones share the connection pool and the
/// per-tenant limits).
#[derive(Debug, Clone)]
pub struct ShopMonkeyClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Parsed once in `new`, which also checks it can take path segments.
    base_url: Url,
    config: ShopMonkeyConfig,
    keys: Arc<dyn CrmKeySource>,
    /// One semaphore per tenant, made on first use and never removed: the map is bounded by the
    /// number of tenants.
    in_flight: DashMap<TenantId, Arc<Semaphore>>,
}

/// A failure that may be retried.
#[derive(Debug)]
enum Failure {
    RateLimited {
        retry_after_opt: Option<Duration>,
    },
    Server(StatusCode),
    /// A transport error; `maybe_sent` is false when the connection was never made.
    Transport {
        message: String,
        maybe_sent: bool,
    },
    Timeout {
        maybe_sent: bool,
    },
}

impl Failure {
    fn from_transport(err: reqwest::Error) -> Self {
        let maybe_sent = !err.is_connect();
        if err.is_timeout() {
            return Failure::Timeout { maybe_sent };
        }
        Failure::Transport { message: error_chain(&err.without_url()), maybe_sent }
    }

    /// Returns true when ShopMonkey may have acted on the request, so resending a
    /// non-idempotent one could repeat its effect.
    fn may_have_been_processed(&self) -> bool {
        match self {
            Failure::RateLimited { .. } => false,
            Failure::Server(_) => true,
            Failure::Transport { maybe_sent, .. } | Failure::Timeout { maybe_sent } => *maybe_sent,
        }
    }

    fn status_opt(&self) -> Option<u16> {
        match self {
            Failure::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS.as_u16()),
            Failure::Server(status) => Some(status.as_u16()),
            Failure::Transport { .. } | Failure::Timeout { .. } => None,
        }
    }

    fn into_error(self) -> CrmError {
        match self {
            Failure::RateLimited { retry_after_opt } => CrmError::RateLimited { retry_after_opt },
            Failure::Server(status) => CrmError::Unavailable(format!("status {}", status.as_u16())),
            Failure::Transport { message, .. } => CrmError::Unavailable(message),
            Failure::Timeout { .. } => CrmError::Timeout,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::RateLimited { .. } => f.write_str("rate limited"),
            Failure::Server(status) => write!(f, "server error {}", status.as_u16()),
            Failure::Transport { message, .. } => f.write_str(message),
            Failure::Timeout { .. } => f.write_str("timed out"),
        }
    }
}

impl ShopMonkeyClient {
    /// Builds a client; no request is made until the first call.
    ///
    /// # Errors
    /// The base URL is not an absolute http(s) URL, or the TLS backend fails to initialise.
    pub fn new(config: ShopMonkeyConfig, keys: Arc<dyn CrmKeySource>) -> Result<Self, ShopMonkeyBuildError> {
        let base_url = vendor_http::parse_base_url(&config.base_url)
            .map_err(|err| ShopMonkeyBuildError::InvalidBaseUrl { url: config.base_url.clone(), reason: err.reason })?;
        let http = vendor_http::build_client(config.request_timeout, config.connect_timeout)
            .map_err(ShopMonkeyBuildError::Http)?;
        Ok(Self { inner: Arc::new(Inner { http, base_url, config, keys, in_flight: DashMap::new() }) })
    }

    /// Returns the URL of a collection, or of one record in it, with the query appended.
    fn url(&self, collection: [&str; 2], id_opt: Option<&str>, query: &Query) -> Url {
        let mut url = self.inner.base_url.clone();
        {
            let mut segments = url.path_segments_mut().expect("new() checked that the base url can be a base");
            segments.pop_if_empty().extend(collection);
            if let Some(id) = id_opt {
                segments.push(id);
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(name, value)| (*name, value.as_str())));
        }
        url
    }

    fn limiter(&self, tenant_id: TenantId) -> Arc<Semaphore> {
        let permits = self.inner.config.max_in_flight_per_tenant.max(1);
        // Cloned out so the map's shard lock is released before any await.
        self.inner.in_flight.entry(tenant_id).or_insert_with(|| Arc::new(Semaphore::new(permits))).clone()
    }

    /// Sends one attempt and reads the whole answer; the caller holds the tenant's permit
    /// meanwhile.
    async fn send_once(
        &self,
        key: &SecretString,
        method: &Method,
        url: &Url,
        body_opt: Option<&[u8]>,
    ) -> Result<RawResponse, reqwest::Error> {
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(key.expose_secret())
            .header(ACCEPT, "application/json");
        if let Some(body) = body_opt {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
        }
        vendor_http::send_and_read(request).await
    }

    /// Sends one call with retries and returns its parsed answer.
    async fn call<T: DeserializeOwned>(
        &self,
        tenant_id: TenantId,
        method: Method,
        url: Url,
        body_opt: Option<Vec<u8>>,
    ) -> Result<wire::Answer<T>, CrmError> {
        let key = self.inner.keys.api_key(tenant_id).await?;
        let retry = self.inner.config.retry_policy();
        let path = url.path().to_owned();
        // A POST creates a record: resending it after ShopMonkey may have acted on it could
        // create a second one, so only failures that prove it did not (429, no connection) are
        // retried for it.
        let idempotent = method != Method::POST;
        let limiter = self.limiter(tenant_id);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let sent = {
                let _permit = limiter
                    .acquire()
                    .await
                    .map_err(|_| CrmError::Unavailable("the tenant's request limiter is closed".to_owned()))?;
                self.send_once(&key, &method, &url, body_opt.as_deref()).await
            };
            let failure = match sent {
                Ok(raw) => {
                    debug!(%tenant_id, path, status = raw.status.as_u16(), attempt, "shopmonkey answered");
                    match classify::<T>(&raw) {
                        Ok(result) => return result,
                        Err(failure) => failure,
                    }
                }
                Err(err) => Failure::from_transport(err),
            };
            let unsafe_to_resend = !idempotent && failure.may_have_been_processed();
            let wait_opt =
                if let Failure::RateLimited { retry_after_opt } = &failure { *retry_after_opt } else { None };
            let delay_opt = if unsafe_to_resend { None } else { retry.delay_before_retry(attempt, wait_opt) };
            match delay_opt {
                Some(delay) => {
                    warn!(
                        %tenant_id, path, status = failure.status_opt(), attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %failure, "shopmonkey call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    warn!(
                        %tenant_id, path, status = failure.status_opt(), attempt,
                        error = %failure, "shopmonkey call failed"
                    );
                    return Err(failure.into_error());
                }
            }
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        tenant_id: TenantId,
        collection: [&str; 2],
        id: &str,
    ) -> Result<T, CrmError> {
        let url = self.url(collection, Some(id), &Query::new());
        Ok(self.call(tenant_id, Method::GET, url, None).await?.data)
    }

    /// Reads every page of a list, following `hasMore`, and keeps the first row of each id
    /// (paging is not deterministic, so a row can come twice).
    async fn list_all<W, Q, I>(
        &self,
        tenant_id: TenantId,
        collection: [&str; 2],
        query_for_skip: Q,
        id_of: I,
    ) -> Result<Vec<W>, CrmError>
    where
        W: DeserializeOwned + Send,
        Q: Fn(u32) -> Query + Send + Sync,
        I: Fn(&W) -> &str + Send + Sync,
    {
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        let mut skip: u32 = 0;
        for _ in 0..MAX_PAGES {
            let url = self.url(collection, None, &query_for_skip(skip));
            let answer: wire::Answer<Vec<W>> = self.call(tenant_id, Method::GET, url, None).await?;
            let fetched = answer.data.len();
            for row in answer.data {
                if seen.insert(id_of(&row).to_owned()) {
                    rows.push(row);
                }
            }
            if !answer.meta.has_more || fetched == 0 {
                return Ok(rows);
            }
            skip = skip.saturating_add(u32::try_from(fetched).unwrap_or(u32::MAX));
        }
        warn!(
            %tenant_id, path = collection.join("/"), pages = MAX_PAGES,
            "shopmonkey list still has more after the page cap; keeping what was read"
        );
        Ok(rows)
    }
}

/// Sorts a response into a final result or a retryable failure.
fn classify<T: DeserializeOwned>(raw: &RawResponse) -> Result<Result<wire::Answer<T>, CrmError>, Failure> {
    let status = raw.status;
    let final_result = match status {
        s if s.is_success() => wire::parse_answer(&raw.body),
        StatusCode::UNAUTHORIZED => Err(CrmError::Unauthorized),
        StatusCode::FORBIDDEN => Err(CrmError::Forbidden),
        StatusCode::NOT_FOUND => Err(CrmError::NotFound),
        StatusCode::TOO_MANY_REQUESTS => {
            let retry_after_opt =
                raw.retry_after_opt.as_ref().and_then(|value| parse_retry_after(value, SystemTime::now()));
            return Err(Failure::RateLimited { retry_after_opt });
        }
        s if s.is_server_error() => return Err(Failure::Server(s)),
        s if s.is_client_error() => {
            let body = wire::parse_error(&raw.body);
            let message = body.message_opt.map_or_else(
                || s.canonical_reason().unwrap_or("client error").to_owned(),
                |m| vendor_http::truncate_message(&m),
            );
            Err(CrmError::Rejected { status: s.as_u16(), code_opt: body.code_opt, message })
        }
        s => Err(CrmError::InvalidResponse(format!("unexpected status {}", s.as_u16()))),
    };
    Ok(final_result)
}

/// Returns true when a row's location is the one asked for, or it names none.
fn in_location(row_location_opt: Option<&str>, location_id: &str) -> bool {
    row_location_opt.is_none_or(|row| row == location_id)
}

#[async_trait]
impl Crm for ShopMonkeyClient {
    async fn get_order(&self, tenant_id: TenantId, order_id: &str) -> Result<CrmOrder, CrmError> {
        let order: wire::Order = self.get(tenant_id, wire::ORDER_PATH, order_id).await?;
        order.into_domain()
    }

    async fn get_customer(&self, tenant_id: TenantId, customer_id: &str) -> Result<CrmCustomer, CrmError> {
        let customer: wire::Customer = self.get(tenant_id, wire::CUSTOMER_PATH, customer_id).await?;
        Ok(customer.into_domain())
    }

    async fn get_vehicle(&self, tenant_id: TenantId, vehicle_id: &str) -> Result<CrmVehicle, CrmError> {
        let vehicle: wire::Vehicle = self.get(tenant_id, wire::VEHICLE_PATH, vehicle_id).await?;
        Ok(vehicle.into_domain())
    }

    async fn list_orders_updated_since(
        &self,
        tenant_id: TenantId,
        since: Timestamp,
        skip: u32,
        limit: u32,
    ) -> Result<CrmPage<CrmOrder>, CrmError> {
        let query = wire::orders_updated_since_query(since, skip, limit);
        let url = self.url(wire::ORDER_PATH, None, &query);
        let answer: wire::Answer<Vec<wire::Order>> = self.call(tenant_id, Method::GET, url, None).await?;
        let items = answer.data.into_iter().map(wire::Order::into_domain).collect::<Result<Vec<_>, _>>()?;
        Ok(CrmPage { items, has_more: answer.meta.has_more })
    }

    async fn list_canned_services(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
    ) -> Result<Vec<CrmCannedService>, CrmError> {
        let rows: Vec<wire::CannedService> = self
            .list_all(
                tenant_id,
                wire::CANNED_SERVICE_PATH,
                |skip| wire::canned_services_query(crm_location_id, skip),
                |row: &wire::CannedService| row.id.as_str(),
            )
            .await?;
        // The location filter is re-applied because whether ShopMonkey honours it is not known.
        Ok(rows
            .into_iter()
            .filter(|row| !row.deleted && in_location(row.location_id.as_deref(), crm_location_id))
            .map(wire::CannedService::into_domain)
            .collect())
    }

    async fn list_locations(&self, tenant_id: TenantId) -> Result<Vec<CrmLocation>, CrmError> {
        let rows: Vec<wire::Location> = self
            .list_all(tenant_id, wire::LOCATION_PATH, wire::locations_query, |row: &wire::Location| row.id.as_str())
            .await?;
        Ok(rows.into_iter().map(wire::Location::into_domain).collect())
    }

    async fn list_appointments(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<CrmAppointment>, CrmError> {
        let rows: Vec<wire::Appointment> = self
            .list_all(
                tenant_id,
                wire::APPOINTMENT_PATH,
                |skip| wire::appointments_query(crm_location_id, from, to, skip),
                |row: &wire::Appointment| row.id.as_str(),
            )
            .await?;
        let mut appointments = Vec::with_capacity(rows.len());
        for row in rows {
            let appointment = row.into_domain()?;
            // Re-filtered because whether ShopMonkey honours `startDate` operators is not known.
            if appointment.start >= from
                && appointment.start < to
                && in_location(appointment.location_id_opt.as_deref(), crm_location_id)
            {
                appointments.push(appointment);
            }
        }
        Ok(appointments)
    }

    async fn create_appointment(
        &self,
        tenant_id: TenantId,
        appointment: &NewCrmAppointment,
    ) -> Result<CrmAppointment, CrmError> {
        let body = serde_json::to_vec(&wire::NewAppointmentBody::from_domain(appointment))
            .map_err(|err| CrmError::InvalidResponse(format!("failed to encode the appointment: {err}")))?;
        let url = self.url(wire::APPOINTMENT_PATH, None, &Query::new());
        let answer: wire::Answer<wire::Appointment> = self.call(tenant_id, Method::POST, url, Some(body)).await?;
        answer.data.into_domain()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use reqwest::header::HeaderValue;
    use serde_json::{Value, json};
    use wiremock::matchers::{body_partial_json, header, method, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const KEY: &str = "sm_test_key_123";

    fn test_config(server: &MockServer) -> ShopMonkeyConfig {
        ShopMonkeyConfig {
            base_url: server.uri(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_retries: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(2),
            max_in_flight_per_tenant: 4,
        }
    }

    fn client_with(config: ShopMonkeyConfig) -> ShopMonkeyClient {
        ShopMonkeyClient::new(config, Arc::new(StaticCrmKey::new(KEY))).expect("client builds")
    }

    fn client(server: &MockServer) -> ShopMonkeyClient {
        client_with(test_config(server))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp is valid")
    }

    fn order_json(id: &str, number: Value) -> Value {
        json!({
            "id": id, "number": number, "locationId": "loc_1", "customerId": "cus_1",
            "status": "Estimate", "totalCostCents": 45900, "createdDate": "2026-05-01T17:00:00Z",
            "updatedDate": "2026-05-01T17:02:11Z", "meta": { "version": 3 }
        })
    }

    fn ok(data: Value) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({ "success": true, "data": data }))
    }

    fn backoff(config: &ShopMonkeyConfig, retry: u32) -> Duration {
        config.retry_policy().backoff(retry)
    }

    fn page(data: Value, has_more: bool) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "data": data, "meta": { "total": 99, "hasMore": has_more }
        }))
    }

    #[tokio::test]
    async fn get_order_sends_the_bearer_key_to_the_order_path() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v3/order/ord_1"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .and(header("accept", "application/json"))
            .respond_with(ok(order_json("ord_1", json!(1042))))
            .expect(1)
            .mount(&server)
            .await;

        let order = client(&server).get_order(TenantId::new(), "ord_1").await.expect("order");

        assert_eq!(order.id, "ord_1");
        assert_eq!(order.total_cost_cents, 45900);
        assert_eq!(order.version_opt, Some(3));
    }

    #[tokio::test]
    async fn get_order_percent_encodes_the_id_in_the_path() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v3/order/a%2Fb%20c"))
            .respond_with(ok(order_json("a/b c", json!(1))))
            .expect(1)
            .mount(&server)
            .await;

        let order = client(&server).get_order(TenantId::new(), "a/b c").await;

        assert_eq!(order.expect("order").id, "a/b c");
    }

    #[tokio::test]
    async fn order_number_parses_as_a_string_and_as_an_integer() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_s"))
            .respond_with(ok(order_json("ord_s", json!("RO-77"))))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v3/order/ord_i"))
            .respond_with(ok(order_json("ord_i", json!(77))))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server);

        let as_string = client.get_order(TenantId::new(), "ord_s").await.expect("order");
        let as_int = client.get_order(TenantId::new(), "ord_i").await.expect("order");

        assert_eq!(as_string.number_opt.as_deref(), Some("RO-77"));
        assert_eq!(as_int.number_opt.as_deref(), Some("77"));
    }

    #[tokio::test]
    async fn rate_limited_call_waits_for_retry_after_and_succeeds_on_the_retry() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(ok(order_json("ord_1", json!(1))))
            .expect(1)
            .mount(&server)
            .await;
        let started = Instant::now();

        let order = client(&server).get_order(TenantId::new(), "ord_1").await;

        assert!(order.is_ok(), "{order:?}");
        assert!(started.elapsed() >= Duration::from_millis(950));
    }

    #[tokio::test]
    async fn rate_limit_that_never_lifts_is_rate_limited_with_the_hint() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
            .expect(4)
            .mount(&server)
            .await;

        let result = client(&server).get_order(TenantId::new(), "ord_1").await;

        assert!(matches!(
            result,
            Err(CrmError::RateLimited { retry_after_opt: Some(d) }) if d == Duration::ZERO
        ));
    }

    #[tokio::test]
    async fn retry_after_longer_than_max_backoff_fails_at_once_with_the_hint() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "120"))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).get_order(TenantId::new(), "ord_1").await;

        assert!(matches!(
            result,
            Err(CrmError::RateLimited { retry_after_opt: Some(d) }) if d == Duration::from_secs(120)
        ));
    }

    #[tokio::test]
    async fn two_server_errors_then_success_takes_three_requests() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/customer/cus_1"))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(path("/v3/customer/cus_1"))
            .respond_with(ok(json!({ "id": "cus_1", "firstName": "Pat" })))
            .expect(1)
            .mount(&server)
            .await;

        let customer = client(&server).get_customer(TenantId::new(), "cus_1").await.expect("customer");

        assert_eq!(customer.first_name_opt.as_deref(), Some("Pat"));
        assert!(customer.emails.is_empty());
    }

    #[tokio::test]
    async fn server_error_that_persists_is_unavailable_after_max_retries_plus_one_requests() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/vehicle/veh_1")).respond_with(ResponseTemplate::new(503)).expect(4).mount(&server).await;

        let result = client(&server).get_vehicle(TenantId::new(), "veh_1").await;

        assert!(matches!(result, Err(CrmError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn not_found_is_returned_without_retry() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/missing"))
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(json!({ "success": false, "code": "NOT_FOUND", "message": "no such order" })),
            )
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).get_order(TenantId::new(), "missing").await;

        assert!(matches!(result, Err(CrmError::NotFound)), "{result:?}");
    }

    #[tokio::test]
    async fn unauthorized_and_forbidden_map_to_their_errors_without_retry() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/a")).respond_with(ResponseTemplate::new(401)).expect(1).mount(&server).await;
        Mock::given(path("/v3/order/b")).respond_with(ResponseTemplate::new(403)).expect(1).mount(&server).await;
        let client = client(&server);

        let a = client.get_order(TenantId::new(), "a").await;
        let b = client.get_order(TenantId::new(), "b").await;

        assert!(matches!(a, Err(CrmError::Unauthorized)), "{a:?}");
        assert!(matches!(b, Err(CrmError::Forbidden)), "{b:?}");
    }

    #[tokio::test]
    async fn bad_request_is_rejected_with_the_code_and_message_without_retry() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(
                ResponseTemplate::new(400).set_body_json(json!({ "success": false, "code": "BAD", "message": "nope" })),
            )
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).get_order(TenantId::new(), "ord_1").await;

        let Err(CrmError::Rejected { status, code_opt, message }) = result else {
            panic!("expected rejected, got {result:?}");
        };
        assert_eq!(status, 400);
        assert_eq!(code_opt.as_deref(), Some("BAD"));
        assert_eq!(message, "nope");
    }

    #[tokio::test]
    async fn success_false_or_garbage_on_2xx_is_an_invalid_response_without_retry() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/a"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "success": false, "code": "ODD", "message": "odd" })),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v3/order/b"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server);

        let a = client.get_order(TenantId::new(), "a").await;
        let b = client.get_order(TenantId::new(), "b").await;

        assert!(matches!(a, Err(CrmError::InvalidResponse(_))), "{a:?}");
        assert!(matches!(b, Err(CrmError::InvalidResponse(_))), "{b:?}");
    }

    #[tokio::test]
    async fn answer_slower_than_the_request_timeout_is_a_timeout_after_retries() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(ok(order_json("ord_1", json!(1))).set_delay(Duration::from_secs(2)))
            .expect(2)
            .mount(&server)
            .await;
        let config =
            ShopMonkeyConfig { request_timeout: Duration::from_millis(200), max_retries: 1, ..test_config(&server) };

        let result = client_with(config).get_order(TenantId::new(), "ord_1").await;

        assert!(matches!(result, Err(CrmError::Timeout)), "{result:?}");
    }

    #[tokio::test]
    async fn unreachable_host_is_unavailable() {
        // wiremock pools its servers, so a dropped one keeps listening; a closed port does not.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let uri = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let config = ShopMonkeyConfig {
            base_url: uri,
            max_retries: 1,
            initial_backoff: Duration::from_millis(1),
            ..ShopMonkeyConfig::default()
        };

        let result = client_with(config).get_order(TenantId::new(), "ord_1").await;

        assert!(matches!(result, Err(CrmError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn list_canned_services_follows_has_more_dedupes_and_drops_deleted_rows() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v3/canned_service"))
            .and(query_param("where", r#"{"locationId":"loc_1"}"#))
            .and(query_param("locationId", "loc_1"))
            .and(query_param("limit", "100"))
            .and(query_param("skip", "0"))
            .respond_with(page(
                json!([
                    { "id": "s1", "locationId": "loc_1", "name": "Oil change", "pricing": "FixedPrice",
                      "totalCents": 5000, "fixedPriceCents": 3999, "bookable": true },
                    { "id": "s2", "locationId": "loc_1", "name": "Old", "totalCents": 100, "deleted": true },
                    { "id": "s3", "locationId": "loc_1", "name": "Brakes", "pricing": "LineItem",
                      "totalCents": 25000, "fixedPriceCents": 1 }
                ]),
                true,
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v3/canned_service"))
            .and(query_param("skip", "3"))
            .respond_with(page(
                json!([
                    { "id": "s3", "locationId": "loc_1", "name": "Brakes", "totalCents": 25000 },
                    { "id": "s4", "locationId": "loc_1", "name": "Tires", "totalCents": 60000 },
                    { "id": "s5", "locationId": "loc_2", "name": "Elsewhere", "totalCents": 1 }
                ]),
                false,
            ))
            .expect(1)
            .mount(&server)
            .await;

        let services = client(&server).list_canned_services(TenantId::new(), "loc_1").await.expect("services");

        let summary: Vec<(&str, i64)> = services.iter().map(|s| (s.id.as_str(), s.price_cents)).collect();
        assert_eq!(summary, vec![("s1", 3999), ("s3", 25000), ("s4", 60000)]);
        assert!(services[0].bookable);
    }

    #[tokio::test]
    async fn list_orders_updated_since_sends_bare_gte_camel_case_order_by_and_clamps_limit() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v3/order"))
            .and(query_param("where", r#"{"updatedDate":{"gte":"2026-05-01T17:00:00Z"}}"#))
            .and(query_param("orderBy", r#"{"id":"asc"}"#))
            .and(query_param_is_missing("orderby"))
            .and(query_param("limit", "100"))
            .and(query_param("skip", "200"))
            .respond_with(page(json!([order_json("ord_1", json!(1)), order_json("ord_2", json!("2"))]), true))
            .expect(1)
            .mount(&server)
            .await;

        let page = client(&server)
            .list_orders_updated_since(TenantId::new(), ts("2026-05-01T17:00:00Z"), 200, 500)
            .await
            .expect("page");

        assert_eq!(page.items.len(), 2);
        assert!(page.has_more);
    }

    #[tokio::test]
    async fn list_locations_reads_every_page() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/location"))
            .and(query_param("skip", "0"))
            .respond_with(page(json!([{ "id": "loc_1", "name": "Main", "city": "Austin", "state": "TX" }]), true))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v3/location"))
            .and(query_param("skip", "1"))
            .respond_with(page(json!([{ "id": "loc_2", "name": "North" }]), false))
            .expect(1)
            .mount(&server)
            .await;

        let locations = client(&server).list_locations(TenantId::new()).await.expect("locations");

        assert_eq!(locations.len(), 2);
        assert_eq!(locations[0].address_opt.as_deref(), Some("Austin, TX"));
        assert_eq!(locations[1].address_opt, None);
    }

    #[tokio::test]
    async fn list_appointments_filters_by_start_window_and_keeps_what_falls_inside() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/appointment"))
            .and(query_param(
                "where",
                r#"{"locationId":"loc_1","startDate":{"gte":"2026-05-01T00:00:00Z","lt":"2026-05-02T00:00:00Z"}}"#,
            ))
            .and(query_param("limit", "100"))
            .and(query_param("skip", "0"))
            .respond_with(page(
                json!([
                    { "id": "a1", "locationId": "loc_1", "name": "Oil", "startDate": "2026-05-01T15:00:00Z",
                      "endDate": "2026-05-01T16:00:00Z" },
                    { "id": "a2", "locationId": "loc_1", "name": "Late", "startDate": "2026-05-02T00:00:00Z",
                      "endDate": "2026-05-02T01:00:00Z" }
                ]),
                false,
            ))
            .expect(1)
            .mount(&server)
            .await;

        let appointments = client(&server)
            .list_appointments(TenantId::new(), "loc_1", ts("2026-05-01T00:00:00Z"), ts("2026-05-02T00:00:00Z"))
            .await
            .expect("appointments");

        let ids: Vec<&str> = appointments.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, vec!["a1"]);
    }

    fn new_appointment() -> NewCrmAppointment {
        NewCrmAppointment {
            location_id: "loc_1".into(),
            customer_id_opt: Some("cus_1".into()),
            vehicle_id_opt: Some("veh_1".into()),
            order_id_opt: Some("ord_1".into()),
            name: "Oil change".into(),
            note_opt: Some("booked by leadorch".into()),
            start: ts("2026-05-01T15:00:00Z"),
            end: ts("2026-05-01T16:00:00Z"),
        }
    }

    #[tokio::test]
    async fn create_appointment_posts_the_name_and_a_color() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/appointment"))
            .and(header("content-type", "application/json"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .and(body_partial_json(json!({
                "locationId": "loc_1", "customerId": "cus_1", "vehicleId": "veh_1", "orderId": "ord_1",
                "name": "Oil change", "note": "booked by leadorch", "color": "blue",
                "startDate": "2026-05-01T15:00:00Z", "endDate": "2026-05-01T16:00:00Z"
            })))
            .respond_with(ok(json!({
                "id": "apt_1", "locationId": "loc_1", "customerId": "cus_1", "orderId": "ord_1",
                "name": "Oil change", "color": "blue", "startDate": "2026-05-01T15:00:00Z",
                "endDate": "2026-05-01T16:00:00Z"
            })))
            .expect(1)
            .mount(&server)
            .await;

        let created = client(&server).create_appointment(TenantId::new(), &new_appointment()).await.expect("created");

        assert_eq!(created.id, "apt_1");
        assert_eq!(created.start, ts("2026-05-01T15:00:00Z"));
    }

    #[tokio::test]
    async fn create_appointment_is_not_resent_after_a_server_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/appointment"))
            .respond_with(ResponseTemplate::new(502))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).create_appointment(TenantId::new(), &new_appointment()).await;

        assert!(matches!(result, Err(CrmError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn requests_of_one_tenant_wait_for_the_in_flight_cap() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/order/ord_1"))
            .respond_with(ok(order_json("ord_1", json!(1))).set_delay(Duration::from_millis(150)))
            .expect(3)
            .mount(&server)
            .await;
        let client = client_with(ShopMonkeyConfig { max_in_flight_per_tenant: 1, ..test_config(&server) });
        let tenant_id = TenantId::new();
        let started = Instant::now();

        let (a, b, c) = tokio::join!(
            client.get_order(tenant_id, "ord_1"),
            client.get_order(tenant_id, "ord_1"),
            client.get_order(tenant_id, "ord_1"),
        );

        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(440));
    }

    #[tokio::test]
    async fn empty_static_key_is_not_configured() {
        let server = MockServer::start().await;
        let client =
            ShopMonkeyClient::new(test_config(&server), Arc::new(StaticCrmKey::new(""))).expect("client builds");

        let result = client.get_order(TenantId::new(), "ord_1").await;

        assert!(matches!(result, Err(CrmError::NotConfigured)), "{result:?}");
    }

    #[test]
    fn static_key_debug_does_not_print_the_key() {
        let printed = format!("{:?}", StaticCrmKey::new(KEY));
        assert!(!printed.contains(KEY), "{printed}");
    }

    #[test]
    fn base_url_that_is_not_http_is_refused() {
        let config = ShopMonkeyConfig { base_url: "mailto:ops@example.com".into(), ..ShopMonkeyConfig::default() };
        let result = ShopMonkeyClient::new(config, Arc::new(StaticCrmKey::new(KEY)));
        assert!(matches!(result, Err(ShopMonkeyBuildError::InvalidBaseUrl { .. })));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let value = |s: &str| HeaderValue::from_str(s).expect("header value");
        assert_eq!(parse_retry_after(&value("7"), now), Some(Duration::from_secs(7)));
        let in_30s = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&value(&in_30s), now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&value(&past), now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&value("soon"), now), None);
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let config = ShopMonkeyConfig::default();
        for retry in 1..=40 {
            let delay = backoff(&config, retry);
            assert!(delay <= config.max_backoff, "{retry}: {delay:?}");
        }
        let first = backoff(&config, 1);
        assert!(first >= config.initial_backoff / 2 && first <= config.initial_backoff);
    }
}
