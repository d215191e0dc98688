//! The core's store ports implemented over PostgreSQL, by delegating to the repositories.

use async_trait::async_trait;
use jiff::Timestamp;
use leadorch_actors::domain::{
    CadenceRef, Channel, InboxEvent, JobRun, Lead, LeadCreated, LeadId, LeadStatus, Location, LocationId, NewLead,
    NewTouchpoint, TenantId, Touchpoint, TouchpointId, TouchpointStatus, WeeklyHours,
};
use leadorch_actors::ports::{
    ConsentStore, Directory, DueTouch, InboxStore, JobStore, LeadStore, StoreError, TouchStore,
};

use super::{Store, pg_error, pool_error};

fn found<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::NotFound) => Ok(None),
        Err(err) => Err(err),
    }
}

#[async_trait]
impl LeadStore for Store {
    async fn location_by_crm_id(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
    ) -> Result<Option<Location>, StoreError> {
        found(self.locations.find_by_crm_id(tenant_id, crm_location_id).await)
    }

    async fn lead_by_crm_order(
        &self,
        tenant_id: TenantId,
        crm_source: &str,
        crm_order_id: &str,
    ) -> Result<Option<Lead>, StoreError> {
        found(self.leads.find_by_crm_order(tenant_id, crm_source, crm_order_id).await)
    }

    async fn create_lead(
        &self,
        new: &NewLead,
        cadence_opt: Option<CadenceRef<'_>>,
        plan: &[NewTouchpoint],
    ) -> Result<LeadCreated, StoreError> {
        self.leads.create_with_plan(new, cadence_opt, plan).await
    }

    async fn get_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Lead, StoreError> {
        self.leads.get(tenant_id, lead_id).await
    }

    async fn stop_lead(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        status: LeadStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.leads.stop_and_cancel(tenant_id, lead_id, status, reason).await
    }

    async fn leads_of_customer(&self, tenant_id: TenantId, crm_customer_id: &str) -> Result<Vec<Lead>, StoreError> {
        self.leads.by_crm_customer(tenant_id, crm_customer_id).await
    }

    async fn location_hours(&self, tenant_id: TenantId, location_id: LocationId) -> Result<WeeklyHours, StoreError> {
        self.locations.hours(tenant_id, location_id).await
    }
}

#[async_trait]
impl InboxStore for Store {
    async fn get_event(&self, tenant_id: TenantId, id: i64) -> Result<InboxEvent, StoreError> {
        self.inbox.get(tenant_id, id).await
    }

    async fn unprocessed_events(
        &self,
        tenant_id: TenantId,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        self.inbox.unprocessed(tenant_id, now, limit).await
    }

    async fn mark_event_processed(&self, tenant_id: TenantId, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.inbox.mark_processed(tenant_id, id, outcome).await
    }

    async fn record_event_failure(
        &self,
        tenant_id: TenantId,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.inbox.record_failure(tenant_id, id, error, next_attempt_at).await
    }
}

#[async_trait]
impl Directory for Store {
    async fn active_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(self.tenants.list().await?.into_iter().filter(|t| t.active).map(|t| t.id).collect())
    }

    async fn active_locations(&self, tenant_id: TenantId) -> Result<Vec<Location>, StoreError> {
        Ok(self.locations.list(tenant_id).await?.into_iter().filter(|l| l.active).collect())
    }
}

#[async_trait]
impl JobStore for Store {
    async fn last_cursor(&self, tenant_id: TenantId, job: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT cursor FROM job_executions
                 WHERE tenant_id = $1 AND job = $2 AND error IS NULL AND cursor IS NOT NULL
                 ORDER BY started_at DESC, id DESC LIMIT 1",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &job],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn record_run(&self, tenant_id: TenantId, run: &JobRun) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let seen = i32::try_from(run.items_seen).unwrap_or(i32::MAX);
        let new = i32::try_from(run.items_new).unwrap_or(i32::MAX);
        client
            .execute(
                &client.prepare_cached("INSERT INTO job_executions (tenant_id, job, started_at, finished_at, cursor, items_seen, items_new, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &run.job, &run.started_at, &run.finished_at, &run.cursor_opt, &seen, &new, &run.error_opt],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}

#[async_trait]
impl TouchStore for Store {
    async fn touches_of(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<Touchpoint>, StoreError> {
        self.touchpoints.for_lead(tenant_id, lead_id).await
    }

    async fn due_touches(
        &self,
        tenant_id: TenantId,
        until: Timestamp,
        limit: i64,
    ) -> Result<Vec<DueTouch>, StoreError> {
        self.touchpoints.due(tenant_id, until, limit).await
    }

    async fn claim_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        due_by: Timestamp,
    ) -> Result<Option<Touchpoint>, StoreError> {
        self.touchpoints.claim(tenant_id, touchpoint_id, due_by).await
    }

    async fn record_touch_sent(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
        provider_message_id: &str,
        sent_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.touchpoints.record_sent(tenant_id, touchpoint_id, attempt_id, provider_message_id, sent_at).await
    }

    async fn record_touch_failed(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
        error: &str,
        retry_at_opt: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.touchpoints.record_failed(tenant_id, touchpoint_id, attempt_id, error, retry_at_opt).await
    }

    async fn close_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        status: TouchpointStatus,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.touchpoints.close(tenant_id, touchpoint_id, status, reason).await
    }

    async fn cancel_pending_touches(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        channel_opt: Option<Channel>,
        reason: &str,
    ) -> Result<u64, StoreError> {
        match channel_opt {
            Some(channel) => self.touchpoints.cancel_pending_channel(tenant_id, lead_id, channel, reason).await,
            None => self.touchpoints.cancel_pending(tenant_id, lead_id, reason).await,
        }
    }

    async fn confirm_claim(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        self.touchpoints.confirm_claim(tenant_id, touchpoint_id, attempt_id).await
    }

    async fn mark_first_touch(&self, tenant_id: TenantId, lead_id: LeadId, at: Timestamp) -> Result<bool, StoreError> {
        self.leads.mark_first_touch(tenant_id, lead_id, at).await
    }
}

#[async_trait]
impl ConsentStore for Store {
    async fn is_opted_out(&self, tenant_id: TenantId, channel: &str, address: &str) -> Result<bool, StoreError> {
        self.consent.is_opted_out(tenant_id, channel, address).await
    }

    async fn record_opt_out(
        &self,
        tenant_id: TenantId,
        channel: &str,
        address: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        self.consent.set(tenant_id, channel, address, true, source, None).await
    }
}
