//! The in-process catalog cache: serves when Redis is not configured or not answering. Bounded:
//! past its capacity the entry stored longest ago is evicted. Entries expire like Redis's (the
//! TTL plus the time a stale entry may still be served), so both layers serve the same window.

use std::time::Duration;

use dashmap::DashMap;
use jiff::{SignedDuration, Timestamp};
use leadorch_actors::catalog::{CacheError, CachedCatalog, Catalog, CatalogCache, CatalogSource};
use leadorch_actors::domain::{LocationId, TenantId};

/// One cached catalog.
#[derive(Debug, Clone)]
struct Entry {
    catalog: Catalog,
    stored_at: Timestamp,
}

/// A bounded map of catalogs per tenant and location.
pub struct MemoryCatalogCache {
    entries: DashMap<(TenantId, LocationId), Entry>,
    capacity: usize,
    /// How long after it was stored an entry is dropped rather than served.
    keep_for: SignedDuration,
}

impl std::fmt::Debug for MemoryCatalogCache {
    // The catalogs themselves would drown any log line that prints the state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCatalogCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
            .field("keep_for", &self.keep_for)
            .finish()
    }
}

impl MemoryCatalogCache {
    /// Creates an empty cache holding at most `capacity` catalogs (at least one), each for
    /// `keep_for` after it was stored.
    pub fn new(capacity: usize, keep_for: Duration) -> Self {
        MemoryCatalogCache {
            entries: DashMap::new(),
            capacity: capacity.max(1),
            keep_for: SignedDuration::try_from(keep_for).unwrap_or(SignedDuration::MAX),
        }
    }

    /// Returns how many catalogs are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns true when no catalog is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps a copy of a catalog another layer served, unless the copy held is as recent, so this
    /// cache can take over with current data when that layer becomes unreachable.
    pub fn remember(&self, hit: &CachedCatalog) {
        let key = (hit.catalog.tenant_id, hit.catalog.location_id);
        let is_current = self.entries.get(&key).is_some_and(|held| held.stored_at >= hit.stored_at);
        if !is_current {
            self.insert(key, Entry { catalog: hit.catalog.clone(), stored_at: hit.stored_at });
        }
    }

    fn insert(&self, key: (TenantId, LocationId), entry: Entry) {
        self.entries.insert(key, entry);
        while self.entries.len() > self.capacity {
            // The iterator's shard locks are released before the removal takes a write lock.
            let oldest_opt = self.entries.iter().min_by_key(|entry| entry.stored_at).map(|entry| *entry.key());
            match oldest_opt {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }

    fn is_expired(&self, stored_at: Timestamp, now: Timestamp) -> bool {
        now.duration_since(stored_at) >= self.keep_for
    }
}

#[async_trait::async_trait]
impl CatalogCache for MemoryCatalogCache {
    async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Option<CachedCatalog>, CacheError> {
        let key = (tenant_id, location_id);
        let Some(entry) = self.entries.get(&key).map(|entry| entry.clone()) else {
            return Ok(None);
        };
        if self.is_expired(entry.stored_at, Timestamp::now()) {
            self.entries.remove_if(&key, |_, held| held.stored_at == entry.stored_at);
            return Ok(None);
        }
        Ok(Some(CachedCatalog { catalog: entry.catalog, stored_at: entry.stored_at, layer: CatalogSource::Memory }))
    }

    async fn put(&self, catalog: &Catalog, stored_at: Timestamp) -> Result<(), CacheError> {
        self.insert((catalog.tenant_id, catalog.location_id), Entry { catalog: catalog.clone(), stored_at });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use leadorch_actors::catalog::CatalogItem;
    use leadorch_actors::domain::Money;

    use super::*;

    fn catalog_of(tenant_id: TenantId, cents: i64) -> Catalog {
        Catalog {
            tenant_id,
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

    #[tokio::test]
    async fn a_stored_catalog_reads_back_from_memory_and_other_keys_miss() {
        let cache = MemoryCatalogCache::new(10, Duration::from_secs(60));
        let catalog = catalog_of(TenantId::new(), 30_000);
        let stored_at = Timestamp::now();

        cache.put(&catalog, stored_at).await.expect("put");

        let hit = cache.get(catalog.tenant_id, catalog.location_id).await.expect("get").expect("hit");
        assert_eq!((hit.catalog, hit.stored_at, hit.layer), (catalog.clone(), stored_at, CatalogSource::Memory));
        // Another tenant asking for the same location misses.
        assert!(cache.get(TenantId::new(), catalog.location_id).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn past_its_capacity_the_cache_evicts_the_entry_stored_longest_ago() {
        let cache = MemoryCatalogCache::new(2, Duration::from_secs(3600));
        let tenant_id = TenantId::new();
        let (oldest, middle, newest) = (catalog_of(tenant_id, 1), catalog_of(tenant_id, 2), catalog_of(tenant_id, 3));
        let now = Timestamp::now();

        cache.put(&middle, now - SignedDuration::from_secs(10)).await.expect("put");
        cache.put(&oldest, now - SignedDuration::from_secs(20)).await.expect("put");
        cache.put(&newest, now).await.expect("put");

        assert_eq!(cache.len(), 2);
        assert!(cache.get(tenant_id, oldest.location_id).await.expect("get").is_none());
        assert!(cache.get(tenant_id, middle.location_id).await.expect("get").is_some());
        assert!(cache.get(tenant_id, newest.location_id).await.expect("get").is_some());
    }

    #[tokio::test]
    async fn an_entry_past_its_keep_time_is_a_miss() {
        let cache = MemoryCatalogCache::new(10, Duration::from_secs(60));
        let catalog = catalog_of(TenantId::new(), 30_000);

        cache.put(&catalog, Timestamp::now() - SignedDuration::from_secs(61)).await.expect("put");

        assert!(cache.get(catalog.tenant_id, catalog.location_id).await.expect("get").is_none());
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn remembering_keeps_only_the_more_recent_copy() {
        let cache = MemoryCatalogCache::new(10, Duration::from_secs(3600));
        let catalog = catalog_of(TenantId::new(), 30_000);
        let now = Timestamp::now();
        cache.put(&catalog, now).await.expect("put");
        let mut older = catalog.clone();
        older.items[0].price = Money::from_cents(1);

        cache.remember(&CachedCatalog {
            catalog: older,
            stored_at: now - SignedDuration::from_secs(5),
            layer: CatalogSource::Redis,
        });

        let hit = cache.get(catalog.tenant_id, catalog.location_id).await.expect("get").expect("hit");
        assert_eq!(hit.catalog, catalog);
    }
}
