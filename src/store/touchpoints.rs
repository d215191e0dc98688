//! Touchpoints: the materialised plan of each lead, and the claim -> send -> record protocol
//! that keeps a touch from going out twice.

use deadpool_postgres::Pool;
use jiff::Timestamp;
use leadorch_actors::domain::{Channel, LeadId, LocationId, TenantId, Touchpoint, TouchpointId, TouchpointStatus};
use leadorch_actors::ports::DueTouch;
use leadorch_actors::ports::StoreError;
use tokio_postgres::Row;
use uuid::Uuid;

use super::error::bad_value;
use super::{pg_error, pool_error};

const TOUCHPOINT_COLUMNS: &str = "id, tenant_id, lead_id, step_index, channel, template, status, intended_at, \
     scheduled_at, placement_reason, attempts, attempt_id, provider_message_id, provider_status, last_error, sent_at";

/// Reads and writes `touchpoints`.
#[derive(Clone, Debug)]
pub struct TouchpointRepo {
    pool: Pool,
}

fn touchpoint_from_row(row: &Row) -> Result<Touchpoint, StoreError> {
    let channel: String = row.get("channel");
    let status: String = row.get("status");
    Ok(Touchpoint {
        id: TouchpointId::from_uuid(row.get("id")),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        lead_id: LeadId::from_uuid(row.get("lead_id")),
        step_index: u32::try_from(row.get::<_, i32>("step_index")).map_err(|e| bad_value("step_index", e))?,
        channel: Channel::parse(&channel).ok_or_else(|| bad_value("channel", &channel))?,
        template: row.get("template"),
        status: TouchpointStatus::parse(&status).ok_or_else(|| bad_value("status", &status))?,
        intended_at: row.get("intended_at"),
        scheduled_at: row.get("scheduled_at"),
        placement_reason_opt: row.get("placement_reason"),
        attempts: u32::try_from(row.get::<_, i32>("attempts")).map_err(|e| bad_value("attempts", e))?,
        attempt_id_opt: row.get("attempt_id"),
        provider_message_id_opt: row.get("provider_message_id"),
        provider_status_opt: row.get("provider_status"),
        last_error_opt: row.get("last_error"),
        sent_at_opt: row.get("sent_at"),
    })
}

impl TouchpointRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        TouchpointRepo { pool }
    }

    /// Returns the lead's plan in step order.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn for_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<Touchpoint>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client.prepare_cached(&format!(
                    "SELECT {TOUCHPOINT_COLUMNS} FROM touchpoints WHERE tenant_id = $1 AND lead_id = $2 ORDER BY step_index"
                )).await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(touchpoint_from_row).collect()
    }

    /// Returns the tenant's pending touches due before `until`, earliest first, at most `limit`,
    /// each with its lead's location (an index scan on `(status, scheduled_at)`).
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn due(&self, tenant_id: TenantId, until: Timestamp, limit: i64) -> Result<Vec<DueTouch>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let columns = TOUCHPOINT_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {columns}, l.location_id FROM touchpoints t
                     JOIN leads l ON l.tenant_id = t.tenant_id AND l.id = t.lead_id
                     WHERE t.status = 'pending' AND t.scheduled_at <= $2 AND t.tenant_id = $1
                     ORDER BY t.scheduled_at LIMIT $3"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &until, &limit],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                Ok(DueTouch {
                    location_id: LocationId::from_uuid(row.get("location_id")),
                    touch: touchpoint_from_row(row)?,
                })
            })
            .collect()
    }

    /// Claims a pending touch due by `due_by` for sending (pending -> sending) under a fresh
    /// attempt id, which doubles as the provider idempotency key. Returns `None` when it is no
    /// longer pending (already claimed, sent, or cancelled) or not yet due, so two claimers can
    /// never both send it and nothing goes out early.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn claim(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        due_by: Timestamp,
    ) -> Result<Option<Touchpoint>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "UPDATE touchpoints
                     SET status = 'sending', attempt_id = $3, attempts = attempts + 1, updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND scheduled_at <= $4
                     RETURNING {TOUCHPOINT_COLUMNS}"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &touchpoint_id.as_uuid(), &Uuid::new_v4(), &due_by],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(touchpoint_from_row).transpose()
    }

    /// Confirms a claim right before the provider call and restarts its clock (so the
    /// reconciler measures from here); false when the attempt is no longer current.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn confirm_claim(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE touchpoints SET updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND attempt_id = $3 AND status = 'sending'",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &touchpoint_id.as_uuid(), &attempt_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    /// Records that the provider accepted the claimed attempt.
    ///
    /// # Errors
    /// `NotFound` when the touch is not in `sending` under that attempt.
    pub async fn record_sent(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: Uuid,
        provider_message_id: &str,
        sent_at: Timestamp,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE touchpoints
                 SET status = 'sent', provider_message_id = $4, sent_at = $5, last_error = NULL, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND attempt_id = $3 AND status = 'sending'",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &touchpoint_id.as_uuid(), &attempt_id, &provider_message_id, &sent_at],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Records a failed attempt: back to pending at `retry_at_opt`, or failed for good.
    ///
    /// # Errors
    /// `NotFound` when the touch is not in `sending` under that attempt.
    pub async fn record_failed(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: Uuid,
        error: &str,
        retry_at_opt: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE touchpoints
                 SET status = CASE WHEN $5::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
                     scheduled_at = COALESCE($5, scheduled_at), last_error = $4, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND attempt_id = $3 AND status = 'sending'",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &touchpoint_id.as_uuid(), &attempt_id, &error, &retry_at_opt],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Ends a pending or claimed touch without sending it, with the reason.
    ///
    /// # Errors
    /// `NotFound` when it is not pending or sending (already finished) or not the tenant's.
    pub async fn close(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        status: TouchpointStatus,
        reason: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE touchpoints SET status = $3, last_error = $4, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND status IN ('pending', 'sending')",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &touchpoint_id.as_uuid(), &status.as_str(), &reason],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Cancels the lead's pending touches of one channel and returns how many.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn cancel_pending_channel(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        channel: Channel,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE touchpoints SET status = 'cancelled', last_error = $4, updated_at = now()
                 WHERE tenant_id = $1 AND lead_id = $2 AND channel = $3 AND status = 'pending'",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &channel.as_str(), &reason],
            )
            .await
            .map_err(pg_error)
    }

    /// Applies a provider's delivery report to the touch it sent: stores the provider status
    /// and moves `sent` to `delivered` or `failed`, never backwards (reports arrive out of
    /// order). Returns the touch, or `None` when no touch has that provider id.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn record_delivery(
        &self,
        tenant_id: TenantId,
        provider_message_id: &str,
        provider_status: &str,
        outcome_opt: Option<TouchpointStatus>,
        error_opt: Option<&str>,
    ) -> Result<Option<Touchpoint>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client.prepare_cached(&format!(
                    "UPDATE touchpoints
                     SET provider_status = CASE WHEN status IN ('delivered', 'failed') AND $3::text IS NULL
                                                THEN provider_status ELSE $2 END,
                         status = CASE WHEN $3::text IS NOT NULL AND status IN ('sent', 'delivered') THEN $3 ELSE status END,
                         last_error = COALESCE($4, last_error),
                         updated_at = now()
                     WHERE provider_message_id = $1 AND tenant_id = $5
                     RETURNING {TOUCHPOINT_COLUMNS}"
                )).await.map_err(pg_error)?,
                &[&provider_message_id, &provider_status, &outcome_opt.map(TouchpointStatus::as_str), &error_opt, &tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(touchpoint_from_row).transpose()
    }

    /// Returns the tenant's touches left in `sending` (a crash between claim and record), with
    /// when they were claimed.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn in_flight(&self, tenant_id: TenantId) -> Result<Vec<(Touchpoint, Timestamp)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client.prepare_cached(&format!("SELECT {TOUCHPOINT_COLUMNS}, updated_at FROM touchpoints WHERE tenant_id = $1 AND status = 'sending'")).await.map_err(pg_error)?,
                &[&tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(|row| Ok((touchpoint_from_row(row)?, row.get::<_, Timestamp>("updated_at")))).collect()
    }

    /// Cancels every pending touch of the lead (a stop condition) and returns how many.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn cancel_pending(&self, tenant_id: TenantId, lead_id: LeadId, reason: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE touchpoints SET status = 'cancelled', last_error = $3, updated_at = now()
                 WHERE tenant_id = $1 AND lead_id = $2 AND status = 'pending'",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &reason],
            )
            .await
            .map_err(pg_error)
    }
}
