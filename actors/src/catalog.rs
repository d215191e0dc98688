//! A location's service catalog (the CRM's canned services with their location-specific prices)
//! and the port of the cache in front of it. Owns the catalog's shape, the freshness rule (an
//! entry older than the TTL is stale but still served) and the cache's versioned wire format.
//! Fetching from the CRM, persisting the last good catalog and the Redis and in-process caches
//! are adapters in the `leadorch` crate.

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::{LocationId, Money, TenantId};
use crate::ports::BoxError;

/// The version of the cached value's layout. A value of any other version reads as a miss, so a
/// rolling deploy that changes the layout refetches instead of misreading.
pub const CACHE_SCHEMA_VERSION: u32 = 1;

/// One service a location offers, at that location's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// The CRM's id of the canned service.
    pub service_id: String,
    pub name: String,
    /// What the customer pays: the staff override when one is set, else the CRM's price.
    pub price: Money,
    /// Offered in online booking.
    pub bookable: bool,
    /// True when `price` is a staff override rather than the CRM's price.
    pub overridden: bool,
}

/// A location's whole catalog as of one fetch from the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub tenant_id: TenantId,
    pub location_id: LocationId,
    pub items: Vec<CatalogItem>,
    /// When the prices were read from the CRM: the catalog's age counts from here.
    pub fetched_at: Timestamp,
}

impl Catalog {
    /// Returns how old the prices are at `now` (never negative, whatever the clocks say).
    pub fn age_at(&self, now: Timestamp) -> SignedDuration {
        now.duration_since(self.fetched_at).max(SignedDuration::ZERO)
    }

    /// Returns the item with this CRM service id, if the location offers it.
    pub fn item(&self, service_id: &str) -> Option<&CatalogItem> {
        self.items.iter().find(|item| item.service_id == service_id)
    }
}

/// Where a read found the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogSource {
    /// The shared Redis cache.
    Redis,
    /// The in-process cache (Redis absent or unreachable).
    Memory,
    /// The last good catalog in PostgreSQL (the CRM failed and no cache had it).
    Db,
    /// Fetched from the CRM for this read.
    Crm,
}

impl CatalogSource {
    /// Returns the lowercase name used in the API and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            CatalogSource::Redis => "redis",
            CatalogSource::Memory => "memory",
            CatalogSource::Db => "db",
            CatalogSource::Crm => "crm",
        }
    }
}

impl fmt::Display for CatalogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A catalog as a read returns it: where it came from and how old it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRead {
    pub catalog: Catalog,
    pub source: CatalogSource,
    /// Time since the prices were fetched from the CRM.
    pub age: SignedDuration,
    /// Older than the TTL: served anyway (stale-while-revalidate, or the last good catalog).
    pub stale: bool,
}

impl CatalogRead {
    /// Describes `catalog` found in `source`, judging its freshness by `fresh_since` (when the
    /// cache stored it, or when it was fetched) against `ttl`.
    pub fn new(
        catalog: Catalog,
        source: CatalogSource,
        fresh_since: Timestamp,
        now: Timestamp,
        ttl: Duration,
    ) -> CatalogRead {
        let stale = is_stale(fresh_since, now, ttl);
        let age = catalog.age_at(now);
        CatalogRead { catalog, source, age, stale }
    }
}

/// Returns true when something stored at `stored_at` has outlived `ttl` at `now`.
pub fn is_stale(stored_at: Timestamp, now: Timestamp, ttl: Duration) -> bool {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    now.duration_since(stored_at) >= ttl
}

/// A catalog as a cache holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCatalog {
    pub catalog: Catalog,
    /// When the cache stored it: the TTL counts from here.
    pub stored_at: Timestamp,
    /// Which layer answered (a layered cache tells the caller which one it used).
    pub layer: CatalogSource,
}

/// Why a cache call failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache did not answer in time or refused the command; the caller may use another layer.
    #[error("catalog cache unavailable")]
    Unavailable(#[source] BoxError),
}

/// The cache of catalogs per tenant and location. Entries outlive their TTL (a stale entry is
/// still returned, with the time it was stored, so the caller can serve it while it refreshes).
#[async_trait::async_trait]
pub trait CatalogCache: Send + Sync + fmt::Debug {
    /// Returns the cached catalog of the tenant's location, or `None` on a miss (including a value
    /// written in an unknown layout).
    async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Option<CachedCatalog>, CacheError>;

    /// Stores the catalog under its tenant and location, as stored at `stored_at`.
    async fn put(&self, catalog: &Catalog, stored_at: Timestamp) -> Result<(), CacheError>;
}

/// Why a cached value could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by another version of the layout: a miss, not an error.
    #[error("unknown catalog cache schema version {0}")]
    UnknownVersion(u64),
    /// Not a catalog value at all.
    #[error("malformed catalog cache value: {0}")]
    Malformed(String),
}

/// The version-1 layout: short keys, items as arrays, instants as microseconds since the epoch.
#[derive(Serialize, Deserialize)]
struct WireV1 {
    v: u32,
    /// Tenant id.
    t: TenantId,
    /// Location id.
    l: LocationId,
    /// `fetched_at` in microseconds.
    f: i64,
    /// `stored_at` in microseconds.
    s: i64,
    /// (service id, name, price in cents, bookable, overridden).
    i: Vec<(String, String, i64, bool, bool)>,
}

/// Only the version, read first so a value of another layout is recognised without parsing it.
#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

/// Serialises a catalog for a cache, with the schema version and the time it is stored.
pub fn encode_cached(catalog: &Catalog, stored_at: Timestamp) -> String {
    let wire = WireV1 {
        v: CACHE_SCHEMA_VERSION,
        t: catalog.tenant_id,
        l: catalog.location_id,
        f: catalog.fetched_at.as_microsecond(),
        s: stored_at.as_microsecond(),
        i: catalog
            .items
            .iter()
            .map(|item| {
                (item.service_id.clone(), item.name.clone(), item.price.cents(), item.bookable, item.overridden)
            })
            .collect(),
    };
    // Serialising a struct of strings, integers and booleans into a String cannot fail.
    serde_json::to_string(&wire).expect("a catalog always serialises to JSON")
}

/// Reads back a value written by [`encode_cached`]: the catalog and when it was stored.
///
/// # Errors
/// [`DecodeError::UnknownVersion`] for another layout version, [`DecodeError::Malformed`] for
/// anything that is not a catalog value.
pub fn decode_cached(raw: &str) -> Result<(Catalog, Timestamp), DecodeError> {
    let probe: VersionProbe = serde_json::from_str(raw).map_err(|err| DecodeError::Malformed(err.to_string()))?;
    if probe.v != u64::from(CACHE_SCHEMA_VERSION) {
        return Err(DecodeError::UnknownVersion(probe.v));
    }
    let wire: WireV1 = serde_json::from_str(raw).map_err(|err| DecodeError::Malformed(err.to_string()))?;
    let instant = |micros: i64| {
        Timestamp::from_microsecond(micros).map_err(|err| DecodeError::Malformed(format!("bad instant: {err}")))
    };
    let catalog = Catalog {
        tenant_id: wire.t,
        location_id: wire.l,
        items: wire
            .i
            .into_iter()
            .map(|(service_id, name, cents, bookable, overridden)| CatalogItem {
                service_id,
                name,
                price: Money::from_cents(cents),
                bookable,
                overridden,
            })
            .collect(),
        fetched_at: instant(wire.f)?,
    };
    Ok((catalog, instant(wire.s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn catalog() -> Catalog {
        Catalog {
            tenant_id: TenantId::new(),
            location_id: LocationId::new(),
            items: vec![
                CatalogItem {
                    service_id: "cs_1".into(),
                    name: "Premium Tint Package — XPEL CS Black Carbon".into(),
                    price: Money::from_dollars(300),
                    bookable: true,
                    overridden: false,
                },
                CatalogItem {
                    service_id: "cs_2".into(),
                    name: "Windshield \"Tint\"".into(),
                    price: Money::from_cents(24_950),
                    bookable: false,
                    overridden: true,
                },
            ],
            fetched_at: ts("2026-05-01T17:00:00.123456Z"),
        }
    }

    #[test]
    fn a_cached_catalog_round_trips_with_its_stored_time() {
        let catalog = catalog();
        let stored_at = ts("2026-05-01T17:00:01.5Z");

        let (decoded, decoded_stored_at) = decode_cached(&encode_cached(&catalog, stored_at)).expect("decodes");

        assert_eq!(decoded, catalog);
        assert_eq!(decoded_stored_at, stored_at);
    }

    #[test]
    fn the_value_carries_its_schema_version() {
        let raw = encode_cached(&catalog(), Timestamp::UNIX_EPOCH);
        let value: serde_json::Value = serde_json::from_str(&raw).expect("json");
        assert_eq!(value["v"], serde_json::json!(CACHE_SCHEMA_VERSION));
    }

    #[test]
    fn a_value_of_an_unknown_schema_version_is_refused_as_such() {
        let raw = encode_cached(&catalog(), Timestamp::UNIX_EPOCH).replacen("{\"v\":1,", "{\"v\":2,", 1);
        assert_eq!(decode_cached(&raw), Err(DecodeError::UnknownVersion(2)));
        // A future layout need not resemble this one at all.
        assert_eq!(decode_cached(r#"{"v":7,"catalog":[]}"#), Err(DecodeError::UnknownVersion(7)));
    }

    #[test]
    fn garbage_and_values_without_a_version_are_malformed() {
        for raw in ["", "not json", "{}", r#"{"v":"1"}"#, r#"{"v":1,"t":"nope"}"#] {
            assert!(matches!(decode_cached(raw), Err(DecodeError::Malformed(_))), "{raw:?} decoded");
        }
    }

    #[test]
    fn an_entry_is_stale_from_the_ttl_on() {
        let stored_at = ts("2026-05-01T17:00:00Z");
        let ttl = Duration::from_secs(300);
        assert!(!is_stale(stored_at, ts("2026-05-01T17:04:59Z"), ttl));
        assert!(is_stale(stored_at, ts("2026-05-01T17:05:00Z"), ttl));
    }

    #[test]
    fn a_read_reports_the_age_of_the_prices_not_of_the_cache_entry() {
        let catalog = catalog();
        let fetched_at = catalog.fetched_at;
        let now = fetched_at + SignedDuration::from_secs(90);

        let read = CatalogRead::new(catalog, CatalogSource::Db, fetched_at, now, Duration::from_secs(60));

        assert_eq!(read.age, SignedDuration::from_secs(90));
        assert!(read.stale);
        assert_eq!(read.source.to_string(), "db");
    }

    #[test]
    fn a_clock_behind_the_fetch_time_gives_age_zero() {
        let catalog = catalog();
        let before = catalog.fetched_at - SignedDuration::from_secs(5);
        assert_eq!(catalog.age_at(before), SignedDuration::ZERO);
    }
}
