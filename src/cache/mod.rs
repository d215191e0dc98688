//! The catalog cache: Redis ([`RedisCatalogCache`], fred) shared by every node, in front of an
//! in-process fallback ([`MemoryCatalogCache`]), combined by [`LayeredCache`]. Keys carry the
//! configurable prefix. Freshness (the TTL), refreshes and the database fallback are the catalog
//! service's business (`crate::catalog`); this module only stores and finds.

mod memory;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use leadorch_actors::catalog::{CacheError, CachedCatalog, Catalog, CatalogCache, CatalogSource};
use leadorch_actors::domain::{LocationId, TenantId};
use leadorch_actors::ports::error_chain;

pub use self::memory::MemoryCatalogCache;
pub use self::redis::{RedisCatalogCache, RedisConfigError};

/// Redis when it answers, the in-process cache when it does not (or when none is configured).
///
/// Every write goes to both, so the in-process copy is warm when Redis goes away; a Redis hit is
/// remembered in memory too (another node may have refreshed it). A read asks Redis and takes its
/// answer, a miss included; only when Redis fails does memory answer. There is no circuit
/// breaker: each call tries Redis again (a call without a connection fails at once), so Redis is
/// used again as soon as it answers. Each fallback is counted in
/// `leadorch_catalog_fallbacks_total{from="redis",to="memory"}`; the switch to and from memory is
/// logged once per outage (each single fallback at debug).
#[derive(Debug)]
pub struct LayeredCache {
    redis_opt: Option<Arc<dyn CatalogCache>>,
    memory: MemoryCatalogCache,
    /// True while Redis is failing, so an outage is logged once rather than per read.
    redis_down: AtomicBool,
}

impl LayeredCache {
    /// Layers `memory` under `redis_opt`; with `None`, memory alone serves.
    pub fn new(redis_opt: Option<Arc<dyn CatalogCache>>, memory: MemoryCatalogCache) -> Self {
        LayeredCache { redis_opt, memory, redis_down: AtomicBool::new(false) }
    }

    /// Returns the in-process layer (tests look at it).
    pub fn memory(&self) -> &MemoryCatalogCache {
        &self.memory
    }

    fn redis_failed(&self, operation: &str, err: &CacheError) {
        metrics::counter!("leadorch_catalog_fallbacks_total", "from" => "redis", "to" => "memory").increment(1);
        if !self.redis_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(operation, error = %error_chain(err), "redis unreachable; the catalog cache falls back to memory");
        } else {
            tracing::debug!(operation, error = %error_chain(err), "redis still unreachable; catalog served from memory");
        }
    }

    fn redis_answered(&self) {
        if self.redis_down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis answers again; the catalog cache uses it");
        }
    }

    fn count_miss(layer: CatalogSource) {
        metrics::counter!("leadorch_catalog_reads_total", "layer" => layer.as_str(), "result" => "miss").increment(1);
    }
}

#[async_trait::async_trait]
impl CatalogCache for LayeredCache {
    /// Misses are counted here, per layer (`leadorch_catalog_reads_total{result="miss"}`); hits
    /// are counted by the caller, which knows whether they are fresh or stale.
    async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Option<CachedCatalog>, CacheError> {
        if let Some(redis) = &self.redis_opt {
            match redis.get(tenant_id, location_id).await {
                Ok(Some(hit)) => {
                    self.redis_answered();
                    self.memory.remember(&hit);
                    return Ok(Some(hit));
                }
                Ok(None) => {
                    self.redis_answered();
                    Self::count_miss(CatalogSource::Redis);
                    return Ok(None);
                }
                Err(err) => self.redis_failed("get", &err),
            }
        }
        let found = self.memory.get(tenant_id, location_id).await?;
        if found.is_none() {
            Self::count_miss(CatalogSource::Memory);
        }
        Ok(found)
    }

    /// Never fails: the in-process copy is always written, and a Redis failure is a fallback.
    async fn put(&self, catalog: &Catalog, stored_at: Timestamp) -> Result<(), CacheError> {
        self.memory.put(catalog, stored_at).await?;
        if let Some(redis) = &self.redis_opt {
            match redis.put(catalog, stored_at).await {
                Ok(()) => self.redis_answered(),
                Err(err) => self.redis_failed("put", &err),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use leadorch_actors::catalog::CatalogItem;
    use leadorch_actors::domain::Money;

    use super::*;

    /// A stand-in for Redis that can be switched off, holding at most what was put while on.
    #[derive(Debug, Default)]
    struct SwitchableCache {
        down: AtomicBool,
        held: Mutex<Vec<(Catalog, Timestamp)>>,
    }

    impl SwitchableCache {
        fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }

        fn check(&self) -> Result<(), CacheError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(CacheError::Unavailable("connection refused".into()));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl CatalogCache for SwitchableCache {
        async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Option<CachedCatalog>, CacheError> {
            self.check()?;
            let held = self.held.lock().expect("lock");
            Ok(held.iter().rev().find(|(c, _)| c.tenant_id == tenant_id && c.location_id == location_id).map(
                |(catalog, stored_at)| CachedCatalog {
                    catalog: catalog.clone(),
                    stored_at: *stored_at,
                    layer: CatalogSource::Redis,
                },
            ))
        }

        async fn put(&self, catalog: &Catalog, stored_at: Timestamp) -> Result<(), CacheError> {
            self.check()?;
            self.held.lock().expect("lock").push((catalog.clone(), stored_at));
            Ok(())
        }
    }

    fn catalog(cents: i64) -> Catalog {
        Catalog {
            tenant_id: TenantId::new(),
            location_id: LocationId::new(),
            items: vec![CatalogItem {
                service_id: "cs_1".into(),
                name: "Tint".into(),
                price: Money::from_cents(cents),
                bookable: true,
                overridden: false,
            }],
            fetched_at: Timestamp::now(),
        }
    }

    fn layered() -> (Arc<SwitchableCache>, LayeredCache) {
        let redis = Arc::new(SwitchableCache::default());
        let cache = LayeredCache::new(Some(redis.clone()), MemoryCatalogCache::new(100, Duration::from_secs(3600)));
        (redis, cache)
    }

    async fn layer_of(cache: &LayeredCache, catalog: &Catalog) -> Option<CatalogSource> {
        cache.get(catalog.tenant_id, catalog.location_id).await.expect("layered get never fails").map(|hit| hit.layer)
    }

    #[tokio::test]
    async fn reads_come_from_redis_while_it_answers() {
        let (_redis, cache) = layered();
        let catalog = catalog(30_000);

        cache.put(&catalog, Timestamp::now()).await.expect("put");

        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Redis));
    }

    #[tokio::test]
    async fn when_redis_fails_memory_serves_what_was_written_before() {
        let (redis, cache) = layered();
        let catalog = catalog(30_000);
        cache.put(&catalog, Timestamp::now()).await.expect("put");

        redis.set_down(true);

        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Memory));
    }

    #[tokio::test]
    async fn writes_while_redis_is_down_succeed_into_memory() {
        let (redis, cache) = layered();
        redis.set_down(true);
        let catalog = catalog(30_000);

        cache.put(&catalog, Timestamp::now()).await.expect("a redis failure is not a put failure");

        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Memory));
        assert!(redis.held.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn redis_is_used_again_as_soon_as_it_answers() {
        let (redis, cache) = layered();
        let catalog = catalog(30_000);
        cache.put(&catalog, Timestamp::now()).await.expect("put");
        redis.set_down(true);
        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Memory));

        redis.set_down(false);

        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Redis));
    }

    #[tokio::test]
    async fn a_redis_miss_is_a_miss_even_when_memory_holds_a_copy() {
        let (redis, cache) = layered();
        let catalog = catalog(30_000);
        redis.set_down(true);
        cache.put(&catalog, Timestamp::now()).await.expect("put");

        redis.set_down(false);

        // Redis is the shared truth while it answers: a stale local copy must not mask its miss.
        assert_eq!(layer_of(&cache, &catalog).await, None);
    }

    #[tokio::test]
    async fn a_redis_hit_is_remembered_for_when_redis_goes_away() {
        let (redis, cache) = layered();
        let catalog = catalog(30_000);
        // Written by another node: only Redis has it.
        redis.put(&catalog, Timestamp::now()).await.expect("put");
        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Redis));

        redis.set_down(true);

        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Memory));
    }

    #[tokio::test]
    async fn without_redis_memory_alone_serves() {
        let cache = LayeredCache::new(None, MemoryCatalogCache::new(10, Duration::from_secs(60)));
        let catalog = catalog(30_000);
        assert_eq!(layer_of(&cache, &catalog).await, None);

        cache.put(&catalog, Timestamp::now()).await.expect("put");

        assert_eq!(layer_of(&cache, &catalog).await, Some(CatalogSource::Memory));
    }
}
