//! The core's store ports implemented over PostgreSQL, by delegating to the repositories.

use async_trait::async_trait;
use jiff::Timestamp;
use leadorch_actors::domain::{
    CadenceRef, InboxEvent, JobRun, Lead, LeadCreated, LeadId, Location, NewLead, NewTouchpoint, TenantId,
};
use leadorch_actors::ports::{Directory, InboxStore, JobStore, LeadStore, StoreError};

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
                "SELECT cursor FROM job_executions
                 WHERE tenant_id = $1 AND job = $2 AND error IS NULL AND cursor IS NOT NULL
                 ORDER BY started_at DESC, id DESC LIMIT 1",
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
                "INSERT INTO job_executions (tenant_id, job, started_at, finished_at, cursor, items_seen, items_new, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&tenant_id.as_uuid(), &run.job, &run.started_at, &run.finished_at, &run.cursor_opt, &seen, &new, &run.error_opt],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}
