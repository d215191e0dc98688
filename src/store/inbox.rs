//! The inbox: raw webhook events committed before they are acknowledged, unique per
//! (tenant, source, event id), so a redelivery is recognised and a crash loses nothing.

use deadpool_postgres::Pool;
use jiff::Timestamp;
use leadorch_actors::domain::{InboxEvent, InboxInsert, TenantId};
use leadorch_actors::ports::StoreError;
use tokio_postgres::Row;

use super::error::bad_value;
use super::{pg_error, pool_error};

const INBOX_COLUMNS: &str =
    "id, tenant_id, source, event_id, payload, received_at, processed_at, outcome, attempts, last_error";

/// Reads and writes `inbox_events`.
#[derive(Clone, Debug)]
pub struct InboxRepo {
    pool: Pool,
}

fn event_from_row(row: &Row) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        id: row.get("id"),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        source: row.get("source"),
        event_id: row.get("event_id"),
        payload: row.get("payload"),
        received_at: row.get("received_at"),
        processed_at_opt: row.get("processed_at"),
        outcome_opt: row.get("outcome"),
        attempts: u32::try_from(row.get::<_, i32>("attempts")).map_err(|e| bad_value("attempts", e))?,
        last_error_opt: row.get("last_error"),
    })
}

impl InboxRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        InboxRepo { pool }
    }

    /// Commits one raw event; a repeat of (tenant, source, event id) is a no-op.
    ///
    /// # Errors
    /// `Unavailable` when the database is down (the sender must retry); `Conflict` when the
    /// tenant does not exist.
    pub async fn insert(
        &self,
        tenant_id: TenantId,
        source: &str,
        event_id: &str,
        payload: &serde_json::Value,
        received_at: Timestamp,
    ) -> Result<InboxInsert, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                "INSERT INTO inbox_events (tenant_id, source, event_id, payload, received_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, source, event_id) DO NOTHING
                 RETURNING id",
                &[&tenant_id.as_uuid(), &source, &event_id, payload, &received_at],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map_or(InboxInsert::Duplicate, |row| InboxInsert::Inserted(row.get(0))))
    }

    /// Returns one event of the tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, tenant_id: TenantId, id: i64) -> Result<InboxEvent, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &format!("SELECT {INBOX_COLUMNS} FROM inbox_events WHERE tenant_id = $1 AND id = $2"),
                &[&tenant_id.as_uuid(), &id],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        event_from_row(&row)
    }

    /// Returns the tenant's unprocessed events whose retry time has come, oldest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn unprocessed(
        &self,
        tenant_id: TenantId,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {INBOX_COLUMNS} FROM inbox_events
                     WHERE processed_at IS NULL AND tenant_id = $1 AND (next_attempt_at IS NULL OR next_attempt_at <= $2)
                     ORDER BY received_at, id LIMIT $3"
                ),
                &[&tenant_id.as_uuid(), &now, &limit],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(event_from_row).collect()
    }

    /// Marks an event processed with its outcome (`lead_created`, `duplicate`, `unknown_location`, ...).
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn mark_processed(&self, tenant_id: TenantId, id: i64, outcome: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                "UPDATE inbox_events SET processed_at = now(), outcome = $3, attempts = attempts + 1, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id.as_uuid(), &id, &outcome],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Marks an event, found by its sender's id, processed with its outcome.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such event.
    pub async fn mark_processed_by_event(
        &self,
        tenant_id: TenantId,
        source: &str,
        event_id: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                "UPDATE inbox_events SET processed_at = now(), outcome = $4, attempts = attempts + 1, updated_at = now()
                 WHERE tenant_id = $1 AND source = $2 AND event_id = $3",
                &[&tenant_id.as_uuid(), &source, &event_id, &outcome],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Records a failed processing attempt and when to try again.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn record_failure(
        &self,
        tenant_id: TenantId,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                "UPDATE inbox_events SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id.as_uuid(), &id, &error, &next_attempt_at],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Returns when the tenant's oldest unprocessed event arrived, for the inbox-lag metric.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn oldest_unprocessed(&self, tenant_id: TenantId) -> Result<Option<Timestamp>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one(
                "SELECT min(received_at) FROM inbox_events WHERE processed_at IS NULL AND tenant_id = $1",
                &[&tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }
}
