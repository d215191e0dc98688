//! The catalog service: a location's services and prices for the staff API (and, later, the
//! chat), read through the cache with stale-while-revalidate, refreshed from the CRM, and backed
//! by the last good catalog in PostgreSQL.
//!
//! A read, in order:
//! 1. A fresh cache entry (stored less than the TTL ago) is returned.
//! 2. A stale entry is returned at once, and one background refresh of the location starts
//!    (unless one is running, or the last one failed less than the failure backoff ago).
//! 3. On a miss the reader joins the location's refresh (starting it if none runs): however many
//!    readers miss at once, the CRM is asked once per location. A refresh writes the CRM's
//!    services to `service_catalog` (keeping staff overrides) and then the cache.
//! 4. When the CRM fails, the last good catalog from PostgreSQL is served with its age.
//! 5. With neither, the read fails with [`CatalogError::Unavailable`]: prices are never invented.
//!
//! Design note: DESIGN.md names the LocationActor as the single-flight point of its catalog
//! refresh. This service does it instead, with a map of in-flight refreshes (one shared future
//! per location, run in its own task), because reads are request/response from HTTP and from any
//! node's chat, a price read must not queue behind a location's paced SMS work in its mailbox, and
//! the guarantee (one CRM call per location at a time) is the same. The location actor can call
//! this service when it needs prices.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use leadorch_actors::catalog::{CatalogCache, CatalogRead, CatalogSource};
use leadorch_actors::domain::{LocationId, TenantId};
use leadorch_actors::ports::{Clock, Crm, StoreError, error_chain};

use crate::store::Store;

/// Why a catalog read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The tenant has no such location.
    #[error("location not found")]
    NotFound,
    /// No cache has the catalog, the CRM failed and PostgreSQL has no last good catalog (or is
    /// down): there is nothing true to show.
    #[error("catalog unavailable")]
    Unavailable,
}

/// How reads treat age and failures.
#[derive(Debug, Clone, Copy)]
pub struct CatalogPolicy {
    /// How long a cached catalog is fresh.
    pub ttl: Duration,
    /// After a failed refresh, how long the location is served from what is stored before the
    /// CRM is asked again.
    pub failure_backoff: Duration,
}

impl Default for CatalogPolicy {
    fn default() -> Self {
        CatalogPolicy { ttl: Duration::from_secs(300), failure_backoff: Duration::from_secs(10) }
    }
}

type FlightKey = (TenantId, LocationId);
/// A refresh of one location, awaited by every reader that missed while it runs.
type Flight = Shared<BoxFuture<'static, Result<CatalogRead, CatalogError>>>;

/// Reads catalogs. Cheap to clone.
#[derive(Clone)]
pub struct CatalogService {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Arc<dyn CatalogCache>,
    crm: Arc<dyn Crm>,
    store: Store,
    clock: Arc<dyn Clock>,
    policy: CatalogPolicy,
    /// The refresh running per location; an entry lives exactly as long as its refresh.
    flights: DashMap<FlightKey, Flight>,
    /// When each location's last refresh failed; cleared by a success.
    failed_at: DashMap<FlightKey, Instant>,
}

impl fmt::Debug for CatalogService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogService")
            .field("cache", &self.inner.cache)
            .field("policy", &self.inner.policy)
            .field("refreshing", &self.inner.flights.len())
            .finish_non_exhaustive()
    }
}

impl CatalogService {
    /// Creates the service over a cache, the CRM and the store.
    pub fn new(
        cache: Arc<dyn CatalogCache>,
        crm: Arc<dyn Crm>,
        store: Store,
        clock: Arc<dyn Clock>,
        policy: CatalogPolicy,
    ) -> Self {
        CatalogService {
            inner: Arc::new(Inner {
                cache,
                crm,
                store,
                clock,
                policy,
                flights: DashMap::new(),
                failed_at: DashMap::new(),
            }),
        }
    }

    /// Returns the tenant's location's catalog, with where it came from and how old it is.
    ///
    /// # Errors
    /// [`CatalogError::NotFound`] when the tenant has no such location;
    /// [`CatalogError::Unavailable`] when no cache, CRM or stored catalog can answer.
    pub async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<CatalogRead, CatalogError> {
        // A cached entry exists only for a location the tenant owns (keys carry the tenant), so a
        // hit needs no database lookup.
        match self.inner.cache.get(tenant_id, location_id).await {
            Ok(Some(hit)) => {
                let now = self.inner.clock.now();
                let read = CatalogRead::new(hit.catalog, hit.layer, hit.stored_at, now, self.inner.policy.ttl);
                count_read(read.source, if read.stale { "stale" } else { "hit" });
                if read.stale {
                    self.refresh_in_background(tenant_id, location_id);
                }
                return Ok(read);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%tenant_id, %location_id, error = %error_chain(&err), "catalog cache failed; refreshing");
            }
        }
        self.flight(tenant_id, location_id).await
    }

    /// Starts a refresh of a stale catalog unless one runs or the last one failed recently; the
    /// reader does not wait for it.
    fn refresh_in_background(&self, tenant_id: TenantId, location_id: LocationId) {
        if self.inner.failed_recently(&(tenant_id, location_id)) {
            return;
        }
        // The refresh runs in its own task: dropping the flight does not cancel it.
        drop(self.flight(tenant_id, location_id));
    }

    /// Returns the location's running refresh, starting one if none runs.
    fn flight(&self, tenant_id: TenantId, location_id: LocationId) -> Flight {
        let key = (tenant_id, location_id);
        match self.inner.flights.entry(key) {
            Entry::Occupied(running) => running.get().clone(),
            Entry::Vacant(slot) => {
                let inner = self.inner.clone();
                let task = tokio::spawn(async move {
                    let _landing = Landing { inner: inner.clone(), key };
                    inner.load(tenant_id, location_id).await
                });
                let flight = async move {
                    task.await.unwrap_or_else(|err| {
                        tracing::error!(%tenant_id, %location_id, error = %err, "catalog refresh task failed");
                        Err(CatalogError::Unavailable)
                    })
                }
                .boxed()
                .shared();
                slot.insert(flight.clone());
                flight
            }
        }
    }
}

/// Ends a location's flight when its task ends, however it ends (a panic included), so the next
/// miss starts a new refresh rather than joining a dead one. The flights map's shard lock, held
/// while a flight is inserted, orders this removal after the insertion.
struct Landing {
    inner: Arc<Inner>,
    key: FlightKey,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.inner.flights.remove(&self.key);
    }
}

impl Inner {
    fn failed_recently(&self, key: &FlightKey) -> bool {
        self.failed_at.get(key).is_some_and(|at| at.elapsed() < self.policy.failure_backoff)
    }

    /// The body of a refresh: the cache again (a refresh that just ended may have filled it),
    /// then the CRM, then the last good catalog.
    async fn load(&self, tenant_id: TenantId, location_id: LocationId) -> Result<CatalogRead, CatalogError> {
        let key = (tenant_id, location_id);
        if let Ok(Some(hit)) = self.cache.get(tenant_id, location_id).await {
            let read = CatalogRead::new(hit.catalog, hit.layer, hit.stored_at, self.clock.now(), self.policy.ttl);
            if !read.stale {
                count_read(read.source, "hit");
                return Ok(read);
            }
        }
        let location = match self.store.locations.get(tenant_id, location_id).await {
            Ok(location) => location,
            Err(StoreError::NotFound) => return Err(CatalogError::NotFound),
            Err(err) => {
                tracing::warn!(%tenant_id, %location_id, error = %error_chain(&err), "catalog: location lookup failed");
                return Err(CatalogError::Unavailable);
            }
        };
        if self.failed_recently(&key) {
            return self.last_good(tenant_id, location_id, "backoff").await;
        }
        match self.refresh(tenant_id, location_id, &location.crm_location_id).await {
            Some(read) => {
                self.failed_at.remove(&key);
                Ok(read)
            }
            None => {
                self.failed_at.insert(key, Instant::now());
                self.last_good(tenant_id, location_id, "refresh_failed").await
            }
        }
    }

    /// Fetches the location's services from the CRM, records them (keeping overrides) and caches
    /// the resulting catalog; `None` when that failed (logged and counted here).
    async fn refresh(
        &self,
        tenant_id: TenantId,
        location_id: LocationId,
        crm_location_id: &str,
    ) -> Option<CatalogRead> {
        let started = Instant::now();
        let fetched = self.crm.list_canned_services(tenant_id, crm_location_id).await;
        let services = match fetched {
            Ok(services) => services,
            Err(err) => {
                metrics::histogram!("leadorch_catalog_refresh_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("leadorch_catalog_refresh_errors_total", "stage" => "crm").increment(1);
                tracing::warn!(%tenant_id, %location_id, error = %err, "catalog refresh from the crm failed");
                return None;
            }
        };
        let (valid, invalid): (Vec<_>, Vec<_>) = services.into_iter().partition(|service| service.price_cents >= 0);
        for service in &invalid {
            tracing::warn!(%tenant_id, %location_id, service_id = %service.id, price_cents = service.price_cents,
                "crm service with a negative price left out of the catalog");
        }
        let now = self.clock.now();
        let saved = self.store.catalog.save_refresh(tenant_id, location_id, &valid, now).await;
        metrics::histogram!("leadorch_catalog_refresh_seconds").record(started.elapsed().as_secs_f64());
        let catalog = match saved {
            Ok(catalog) => catalog,
            Err(err) => {
                // Without the stored overrides the CRM's prices may not be the ones to quote.
                metrics::counter!("leadorch_catalog_refresh_errors_total", "stage" => "store").increment(1);
                tracing::warn!(%tenant_id, %location_id, error = %error_chain(&err), "catalog refresh could not be stored");
                return None;
            }
        };
        // The layered cache does not fail (it falls back to memory); any other cache's failure
        // only costs a refresh on the next read.
        if let Err(err) = self.cache.put(&catalog, now).await {
            tracing::warn!(%tenant_id, %location_id, error = %error_chain(&err), "refreshed catalog not cached");
        }
        tracing::debug!(%tenant_id, %location_id, services = catalog.items.len(), "catalog refreshed");
        Some(CatalogRead::new(catalog, CatalogSource::Crm, now, now, self.policy.ttl))
    }

    /// Serves the last good catalog from PostgreSQL, with its age, when the CRM cannot.
    async fn last_good(
        &self,
        tenant_id: TenantId,
        location_id: LocationId,
        reason: &'static str,
    ) -> Result<CatalogRead, CatalogError> {
        match self.store.catalog.latest(tenant_id, location_id).await {
            Ok(Some(catalog)) => {
                metrics::counter!("leadorch_catalog_fallbacks_total", "from" => "crm", "to" => "db").increment(1);
                let fetched_at = catalog.fetched_at;
                let read = CatalogRead::new(catalog, CatalogSource::Db, fetched_at, self.clock.now(), self.policy.ttl);
                count_read(CatalogSource::Db, if read.stale { "stale" } else { "hit" });
                tracing::info!(%tenant_id, %location_id, reason, age_secs = read.age.as_secs(),
                    "catalog served from the last good copy in the database");
                Ok(read)
            }
            Ok(None) => {
                count_read(CatalogSource::Db, "miss");
                metrics::counter!("leadorch_catalog_fallbacks_total", "from" => "crm", "to" => "unavailable")
                    .increment(1);
                tracing::warn!(%tenant_id, %location_id, reason, "catalog unavailable: the crm failed and none is stored");
                Err(CatalogError::Unavailable)
            }
            Err(err) => {
                metrics::counter!("leadorch_catalog_fallbacks_total", "from" => "crm", "to" => "unavailable")
                    .increment(1);
                tracing::warn!(%tenant_id, %location_id, reason, error = %error_chain(&err),
                    "catalog unavailable: the crm failed and the database too");
                Err(CatalogError::Unavailable)
            }
        }
    }
}

fn count_read(layer: CatalogSource, result: &'static str) {
    metrics::counter!("leadorch_catalog_reads_total", "layer" => layer.as_str(), "result" => result).increment(1);
}
