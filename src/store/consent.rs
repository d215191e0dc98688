//! The consent ledger: opt-outs (and opt-ins back) per tenant, channel and address (E.164 phone
//! or lower-cased email), honoured across every location of the tenant.

use deadpool_postgres::Pool;
use leadorch_actors::domain::TenantId;
use leadorch_actors::ports::StoreError;

use super::{pg_error, pool_error};

/// Reads and writes `consent`.
#[derive(Clone, Debug)]
pub struct ConsentRepo {
    pool: Pool,
}

impl ConsentRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        ConsentRepo { pool }
    }

    /// Records that `address` opted out of (or back into) `channel`.
    ///
    /// # Errors
    /// `Invalid` for an unknown channel; the database is unavailable.
    pub async fn set(
        &self,
        tenant_id: TenantId,
        channel: &str,
        address: &str,
        opted_out: bool,
        source: &str,
        reason_opt: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let status = if opted_out { "opted_out" } else { "opted_in" };
        client
            .execute(
                &client.prepare_cached("INSERT INTO consent (tenant_id, channel, address, status, source, reason) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant_id, address, channel)
                 DO UPDATE SET status = EXCLUDED.status, source = EXCLUDED.source, reason = EXCLUDED.reason, updated_at = now()").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &channel, &address, &status, &source, &reason_opt],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Returns true when `address` opted out of `channel` with this tenant.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn is_opted_out(&self, tenant_id: TenantId, channel: &str, address: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT status FROM consent WHERE tenant_id = $1 AND address = $2 AND channel = $3")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &address, &channel],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.is_some_and(|r| r.get::<_, String>(0) == "opted_out"))
    }
}
