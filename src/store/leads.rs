//! Leads, created idempotently per (tenant, CRM source, CRM order id) together with their
//! materialised plan of touchpoints, in one transaction.

use deadpool_postgres::Pool;
use jiff::Timestamp;
use leadorch_actors::domain::{
    CadenceRef, Email, Lead, LeadCreated, LeadId, LeadStatus, LocationId, NewLead, NewTouchpoint, Phone, TenantId,
    TouchpointId, Vehicle,
};
use leadorch_actors::ports::StoreError;
use tokio_postgres::Row;

use super::error::bad_value;
use super::{pg_error, pool_error};

pub(crate) const LEAD_COLUMNS: &str = "id, tenant_id, location_id, crm_source, crm_order_id, crm_customer_id, status, \
     first_name, last_name, phone, email, vehicle, requested_services, cadence_name, cadence_version, received_at, \
     first_touch_at, created_at, updated_at";

/// Reads and writes `leads` (and `touchpoints` when a lead is created).
#[derive(Clone, Debug)]
pub struct LeadRepo {
    pool: Pool,
}

pub(crate) fn lead_from_row(row: &Row) -> Result<Lead, StoreError> {
    let status: String = row.get("status");
    let vehicle_opt = row
        .get::<_, Option<serde_json::Value>>("vehicle")
        .map(serde_json::from_value::<Vehicle>)
        .transpose()
        .map_err(|e| bad_value("vehicle", e))?;
    let requested_services: Vec<String> =
        serde_json::from_value(row.get("requested_services")).map_err(|e| bad_value("requested_services", e))?;
    Ok(Lead {
        id: LeadId::from_uuid(row.get("id")),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        location_id: LocationId::from_uuid(row.get("location_id")),
        crm_source: row.get("crm_source"),
        crm_order_id: row.get("crm_order_id"),
        crm_customer_id_opt: row.get("crm_customer_id"),
        status: LeadStatus::parse(&status).ok_or_else(|| bad_value("status", &status))?,
        first_name_opt: row.get("first_name"),
        last_name_opt: row.get("last_name"),
        phone_opt: row
            .get::<_, Option<String>>("phone")
            .map(|p| Phone::parse(&p).map_err(|e| bad_value("phone", e)))
            .transpose()?,
        email_opt: row
            .get::<_, Option<String>>("email")
            .map(|e| Email::parse(&e).map_err(|err| bad_value("email", err)))
            .transpose()?,
        vehicle_opt,
        requested_services,
        cadence_name_opt: row.get("cadence_name"),
        cadence_version_opt: row.get("cadence_version"),
        received_at: row.get("received_at"),
        first_touch_at_opt: row.get("first_touch_at"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

impl LeadRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        LeadRepo { pool }
    }

    /// Creates the lead and its touchpoints in one transaction, unless the tenant already has a
    /// lead for that CRM order, in which case the existing lead is returned and nothing is written.
    ///
    /// # Errors
    /// `Conflict` when the location is not the tenant's; `Unavailable` when the database is down.
    pub async fn create_with_plan(
        &self,
        new: &NewLead,
        cadence_opt: Option<CadenceRef<'_>>,
        plan: &[NewTouchpoint],
    ) -> Result<LeadCreated, StoreError> {
        let vehicle = new
            .vehicle_opt
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("vehicle: {e}")))?;
        let services = serde_json::to_value(&new.requested_services).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let status = if plan.is_empty() { LeadStatus::New } else { LeadStatus::InCadence };
        // The plan goes in as arrays, so the lead and all its touches are one statement: one
        // round trip and one commit, atomic without a transaction block.
        let mut ids = Vec::with_capacity(plan.len());
        let mut step_indexes = Vec::with_capacity(plan.len());
        let mut channels = Vec::with_capacity(plan.len());
        let mut templates = Vec::with_capacity(plan.len());
        let mut intended = Vec::with_capacity(plan.len());
        let mut scheduled = Vec::with_capacity(plan.len());
        let mut reasons = Vec::with_capacity(plan.len());
        for step in plan {
            ids.push(TouchpointId::new().as_uuid());
            step_indexes.push(i32::try_from(step.step_index).map_err(|e| StoreError::Invalid(e.to_string()))?);
            channels.push(step.channel.as_str());
            templates.push(step.template.as_str());
            intended.push(step.intended_at);
            scheduled.push(step.scheduled_at);
            reasons.push(step.placement_reason_opt.as_deref());
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&format!(
                "WITH lead AS (
                     INSERT INTO leads (id, tenant_id, location_id, crm_source, crm_order_id, crm_customer_id, status,
                                        first_name, last_name, phone, email, vehicle, requested_services,
                                        cadence_name, cadence_version, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                     ON CONFLICT (tenant_id, crm_source, crm_order_id) DO NOTHING
                     RETURNING {LEAD_COLUMNS}),
                 plan AS (
                     INSERT INTO touchpoints (id, tenant_id, lead_id, step_index, channel, template, intended_at,
                                              scheduled_at, placement_reason)
                     SELECT p.id, lead.tenant_id, lead.id, p.step_index, p.channel, p.template, p.intended_at,
                            p.scheduled_at, p.placement_reason
                     FROM lead, unnest($17::uuid[], $18::int4[], $19::text[], $20::text[], $21::timestamptz[],
                                       $22::timestamptz[], $23::text[])
                          AS p(id, step_index, channel, template, intended_at, scheduled_at, placement_reason))
                 SELECT * FROM lead"
            ))
            .await
            .map_err(pg_error)?;
        let inserted = client
            .query_opt(
                &statement,
                &[
                    &LeadId::new().as_uuid(),
                    &new.tenant_id.as_uuid(),
                    &new.location_id.as_uuid(),
                    &new.crm_source,
                    &new.crm_order_id,
                    &new.crm_customer_id_opt,
                    &status.as_str(),
                    &new.first_name_opt,
                    &new.last_name_opt,
                    &new.phone_opt.as_ref().map(Phone::as_str),
                    &new.email_opt.as_ref().map(Email::as_str),
                    &vehicle,
                    &services,
                    &cadence_opt.map(|c| c.name),
                    &cadence_opt.map(|c| c.version),
                    &new.received_at,
                    &ids,
                    &step_indexes,
                    &channels,
                    &templates,
                    &intended,
                    &scheduled,
                    &reasons,
                ],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = inserted else {
            drop(client);
            let existing = self.find_by_crm_order(new.tenant_id, &new.crm_source, &new.crm_order_id).await?;
            return Ok(LeadCreated::Existing(existing));
        };
        Ok(LeadCreated::Created(lead_from_row(&row)?))
    }

    /// Returns one lead of the tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Lead, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!("SELECT {LEAD_COLUMNS} FROM leads WHERE tenant_id = $1 AND id = $2"))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        lead_from_row(&row)
    }

    /// Finds the tenant's lead for a CRM order.
    ///
    /// # Errors
    /// `NotFound` when the order is not a lead of this tenant.
    pub async fn find_by_crm_order(
        &self,
        tenant_id: TenantId,
        crm_source: &str,
        crm_order_id: &str,
    ) -> Result<Lead, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client.prepare_cached(&format!(
                    "SELECT {LEAD_COLUMNS} FROM leads WHERE tenant_id = $1 AND crm_source = $2 AND crm_order_id = $3"
                )).await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &crm_source, &crm_order_id],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        lead_from_row(&row)
    }

    /// Lists the tenant's leads, newest first, optionally of one location and status, created at
    /// or after `since_opt` and strictly before `before_opt` (for paging), at most `limit`.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn list(
        &self,
        tenant_id: TenantId,
        location_opt: Option<LocationId>,
        status_opt: Option<LeadStatus>,
        since_opt: Option<Timestamp>,
        before_opt: Option<Timestamp>,
        limit: i64,
    ) -> Result<Vec<Lead>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {LEAD_COLUMNS} FROM leads
                     WHERE tenant_id = $1
                       AND ($2::uuid IS NULL OR location_id = $2)
                       AND ($3::text IS NULL OR status = $3)
                       AND ($4::timestamptz IS NULL OR created_at >= $4)
                       AND ($5::timestamptz IS NULL OR created_at < $5)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $6"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[
                    &tenant_id.as_uuid(),
                    &location_opt.map(|l| l.as_uuid()),
                    &status_opt.map(LeadStatus::as_str),
                    &since_opt,
                    &before_opt,
                    &limit.clamp(1, 500),
                ],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(lead_from_row).collect()
    }

    /// Returns the tenant's leads with this phone, newest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn by_phone(&self, tenant_id: TenantId, phone: &Phone) -> Result<Vec<Lead>, StoreError> {
        self.by_column(tenant_id, "phone", phone.as_str()).await
    }

    /// Returns the tenant's leads with this email, newest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn by_email(&self, tenant_id: TenantId, email: &str) -> Result<Vec<Lead>, StoreError> {
        self.by_column(tenant_id, "email", email).await
    }

    /// Returns the tenant's leads of a CRM customer, newest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn by_crm_customer(&self, tenant_id: TenantId, crm_customer_id: &str) -> Result<Vec<Lead>, StoreError> {
        self.by_column(tenant_id, "crm_customer_id", crm_customer_id).await
    }

    async fn by_column(&self, tenant_id: TenantId, column: &'static str, value: &str) -> Result<Vec<Lead>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client.prepare_cached(&format!(
                    "SELECT {LEAD_COLUMNS} FROM leads WHERE tenant_id = $1 AND {column} = $2 ORDER BY created_at DESC, id DESC"
                )).await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &value],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(lead_from_row).collect()
    }

    /// Moves the lead to `to` unless it already ended (a terminal status other than `to`);
    /// returns whether it changed. Used by stop conditions: a reply, an opt-out, a booking, a win.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn stop_with(&self, tenant_id: TenantId, lead_id: LeadId, to: LeadStatus) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let open: Vec<&str> = [LeadStatus::New, LeadStatus::InCadence, LeadStatus::Paused, LeadStatus::Replied]
            .into_iter()
            .filter(|s| *s != to)
            .map(LeadStatus::as_str)
            .collect();
        let updated = client
            .execute(
                &client.prepare_cached("UPDATE leads SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2 AND status = ANY($4)").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &to.as_str(), &open],
            )
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    /// Moves the lead to `to` only if its status is one of `from`, in one statement, so two
    /// concurrent changes cannot both apply. Returns the updated lead, or `Err(current)` with the
    /// status that refused the change.
    ///
    /// # Errors
    /// `NotFound` when the lead does not exist or belongs to another tenant.
    pub async fn transition(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        from: &[LeadStatus],
        to: LeadStatus,
    ) -> Result<Result<Lead, LeadStatus>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let from_names: Vec<&str> = from.iter().copied().map(LeadStatus::as_str).collect();
        let updated = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "UPDATE leads SET status = $4, updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 AND status = ANY($3)
                     RETURNING {LEAD_COLUMNS}"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &from_names, &to.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if let Some(row) = updated {
            return lead_from_row(&row).map(Ok);
        }
        // Nothing matched: either the lead is not the tenant's, or its status refused the change.
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT status FROM leads WHERE tenant_id = $1 AND id = $2")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        let current_name: String = row.get("status");
        let current = LeadStatus::parse(&current_name).ok_or_else(|| bad_value("status", &current_name))?;
        Ok(Err(current))
    }

    /// Sets the lead's first-touch time unless it has one; returns true when set now.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn mark_first_touch(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE leads SET first_touch_at = $3, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND first_touch_at IS NULL",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &at],
            )
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    /// Sets the lead's status.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn set_status(&self, tenant_id: TenantId, lead_id: LeadId, status: LeadStatus) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached("UPDATE leads SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &status.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Revokes every chat link of the lead issued up to `at`; returns the instant stored.
    ///
    /// # Errors
    /// `NotFound` when the lead does not exist or belongs to another tenant.
    pub async fn revoke_links(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        at: Timestamp,
    ) -> Result<Timestamp, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE leads SET links_revoked_at = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &at],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(at) }
    }

    /// Returns when the lead's chat links were last revoked, if ever.
    ///
    /// # Errors
    /// `NotFound` when the lead does not exist or belongs to another tenant.
    pub async fn links_revoked_at(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
    ) -> Result<Option<Timestamp>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT links_revoked_at FROM leads WHERE tenant_id = $1 AND id = $2")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get(0))
    }

    /// Ends the lead's cadence with `to` and cancels its pending touches in one transaction
    /// (so nobody ever sees the lead stopped with touches still pending); returns whether the
    /// status changed. Touches are only cancelled when it did.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn stop_and_cancel(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        to: LeadStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let open: Vec<&str> = [LeadStatus::New, LeadStatus::InCadence, LeadStatus::Paused, LeadStatus::Replied]
            .into_iter()
            .filter(|s| *s != to)
            .map(LeadStatus::as_str)
            .collect();
        let updated = tx
            .execute(
                &tx.prepare_cached("UPDATE leads SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2 AND status = ANY($4)").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &to.as_str(), &open],
            )
            .await
            .map_err(pg_error)?;
        if updated == 1 {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE touchpoints SET status = 'cancelled', last_error = $3, updated_at = now()
                 WHERE tenant_id = $1 AND lead_id = $2 AND status = 'pending'",
                )
                .await
                .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &reason],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(updated == 1)
    }
}
