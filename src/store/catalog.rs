//! `service_catalog`: the last good catalog of each location, written on every successful CRM
//! refresh and read when the CRM fails and no cache has the catalog. A refresh upserts each
//! service and keeps its staff override; the effective price is the override when set, else the
//! CRM's price. Rows a refresh did not return (services the CRM dropped) stay in the table, with
//! their overrides, but are no longer part of the catalog: a read takes the rows of the latest
//! refresh only.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use jiff::Timestamp;
use leadorch_actors::catalog::{Catalog, CatalogItem};
use leadorch_actors::domain::{CrmCannedService, LocationId, Money, TenantId};
use leadorch_actors::ports::StoreError;
use tokio_postgres::Row;

use super::{pg_error, pool_error};

/// Reads and writes `service_catalog`.
#[derive(Clone, Debug)]
pub struct CatalogRepo {
    pool: Pool,
}

fn item_from_row(row: &Row) -> CatalogItem {
    let override_opt: Option<i64> = row.get("override_price_cents");
    let crm_cents: i64 = row.get("price_cents");
    CatalogItem {
        service_id: row.get("crm_service_id"),
        name: row.get("name"),
        price: Money::from_cents(override_opt.unwrap_or(crm_cents)),
        bookable: row.get("bookable"),
        overridden: override_opt.is_some(),
    }
}

/// Orders items the way every reader sees them: by name, then id.
fn sorted(mut items: Vec<CatalogItem>) -> Vec<CatalogItem> {
    items.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.service_id.cmp(&b.service_id)));
    items
}

impl CatalogRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        CatalogRepo { pool }
    }

    /// Records a refresh of the location's catalog from the CRM: upserts every service (name,
    /// price, bookable, `fetched_at`), keeping staff overrides, and returns the catalog with the
    /// effective prices. `fetched_at` is stored at microsecond precision, and the returned
    /// catalog carries that stored value.
    ///
    /// # Errors
    /// `Conflict` when the location is not the tenant's; `Invalid` for a negative price; the
    /// database is unavailable.
    pub async fn save_refresh(
        &self,
        tenant_id: TenantId,
        location_id: LocationId,
        services: &[CrmCannedService],
        fetched_at: Timestamp,
    ) -> Result<Catalog, StoreError> {
        // One row per id (the last one wins): an upsert may not touch the same row twice.
        let unique: BTreeMap<&str, &CrmCannedService> = services.iter().map(|s| (s.id.as_str(), s)).collect();
        let ids: Vec<&str> = unique.keys().copied().collect();
        let names: Vec<&str> = unique.values().map(|s| s.name.as_str()).collect();
        let prices: Vec<i64> = unique.values().map(|s| s.price_cents).collect();
        let bookable: Vec<bool> = unique.values().map(|s| s.bookable).collect();
        let fetched_at = Timestamp::from_microsecond(fetched_at.as_microsecond())
            .map_err(|err| StoreError::Invalid(format!("fetched_at out of range: {err}")))?;
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client.prepare_cached("INSERT INTO service_catalog (tenant_id, location_id, crm_service_id, name, price_cents, bookable, fetched_at)
                 SELECT $1, $2, s.id, s.name, s.price, s.bookable, $7
                 FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::boolean[]) AS s (id, name, price, bookable)
                 ON CONFLICT (location_id, crm_service_id) DO UPDATE
                 SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, bookable = EXCLUDED.bookable,
                     fetched_at = EXCLUDED.fetched_at, updated_at = now()
                 RETURNING crm_service_id, name, price_cents, override_price_cents, bookable").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid(), &ids, &names, &prices, &bookable, &fetched_at],
            )
            .await
            .map_err(pg_error)?;
        Ok(Catalog { tenant_id, location_id, items: sorted(rows.iter().map(item_from_row).collect()), fetched_at })
    }

    /// Returns the location's catalog as of its latest refresh, or `None` when it was never
    /// refreshed (or the location is not the tenant's).
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn latest(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Option<Catalog>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT crm_service_id, name, price_cents, override_price_cents, bookable, fetched_at
                 FROM service_catalog
                 WHERE tenant_id = $1 AND location_id = $2
                   AND fetched_at = (SELECT max(fetched_at) FROM service_catalog
                                     WHERE tenant_id = $1 AND location_id = $2)",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let fetched_at: Timestamp = first.get("fetched_at");
        Ok(Some(Catalog {
            tenant_id,
            location_id,
            items: sorted(rows.iter().map(item_from_row).collect()),
            fetched_at,
        }))
    }

    /// Sets (or, with `None`, clears) the staff override of one service's price. It takes effect
    /// for readers at the next refresh of the location's catalog.
    ///
    /// # Errors
    /// `NotFound` when the tenant's location has no such service; `Invalid` for a negative
    /// price; the database is unavailable.
    pub async fn set_override(
        &self,
        tenant_id: TenantId,
        location_id: LocationId,
        service_id: &str,
        price_opt: Option<Money>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE service_catalog SET override_price_cents = $4, updated_at = now()
                 WHERE tenant_id = $1 AND location_id = $2 AND crm_service_id = $3",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid(), &service_id, &price_opt.map(|p| p.cents())],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
