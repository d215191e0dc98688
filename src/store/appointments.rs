//! Appointments booked for leads at a location. Booking is serialised per location by a
//! transaction-scoped advisory lock, so two customers racing for one slot yield one
//! appointment, and a booking moves its lead to `booked` and stops its cadence atomically.

use deadpool_postgres::Pool;
use jiff::Timestamp;
use leadorch_actors::domain::{LeadId, LeadStatus, LocationId, TenantId};
use leadorch_actors::ports::StoreError;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{pg_error, pool_error};

const APPOINTMENT_COLUMNS: &str =
    "id, tenant_id, location_id, lead_id, starts_at, ends_at, service, crm_appointment_id, status, created_at";

/// The first key of the two-key advisory lock that serialises bookings of one location ("appt"
/// in ASCII). The two-int4 key space never overlaps the single-bigint one the migration lock
/// uses.
const BOOKING_LOCK_CLASS: i32 = 0x6170_7074;

/// Statuses a booking moves to `booked`.
const BOOKING_STOPS: [LeadStatus; 4] =
    [LeadStatus::New, LeadStatus::InCadence, LeadStatus::Paused, LeadStatus::Replied];

/// Reads and writes `appointments`.
#[derive(Clone, Debug)]
pub struct AppointmentRepo {
    pool: Pool,
}

/// One stored appointment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Appointment {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub location_id: LocationId,
    pub lead_id: LeadId,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    #[serde(rename = "service")]
    pub service_opt: Option<String>,
    #[serde(rename = "crm_appointment_id")]
    pub crm_appointment_id_opt: Option<String>,
    /// `booked` or `cancelled`.
    pub status: String,
    pub created_at: Timestamp,
}

/// An appointment to book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAppointment {
    pub location_id: LocationId,
    pub lead_id: LeadId,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub service_opt: Option<String>,
}

fn appointment_from_row(row: &Row) -> Appointment {
    Appointment {
        id: row.get("id"),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        location_id: LocationId::from_uuid(row.get("location_id")),
        lead_id: LeadId::from_uuid(row.get("lead_id")),
        starts_at: row.get("starts_at"),
        ends_at: row.get("ends_at"),
        service_opt: row.get("service"),
        crm_appointment_id_opt: row.get("crm_appointment_id"),
        status: row.get("status"),
        created_at: row.get("created_at"),
    }
}

impl AppointmentRepo {
    /// `StoreError::Conflict` constraint when the lead already has a booked appointment.
    pub const LEAD_ALREADY_BOOKED: &'static str = "lead already booked";
    /// `StoreError::Conflict` constraint when a booked appointment overlaps the slot.
    pub const SLOT_TAKEN: &'static str = "slot taken";

    pub(crate) fn new(pool: Pool) -> Self {
        AppointmentRepo { pool }
    }

    /// Returns the (start, end) of the location's booked appointments overlapping
    /// `[from, to)`, earliest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn booked_between(
        &self,
        tenant_id: TenantId,
        location_id: LocationId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, Timestamp)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT starts_at, ends_at FROM appointments
                 WHERE tenant_id = $1 AND location_id = $2 AND status = 'booked' AND starts_at < $4 AND ends_at > $3
                 ORDER BY starts_at, ends_at",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid(), &from, &to],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| (r.get("starts_at"), r.get("ends_at"))).collect())
    }

    /// Returns the lead's latest booked appointment, if any.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn of_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Option<Appointment>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT {APPOINTMENT_COLUMNS} FROM appointments
                     WHERE tenant_id = $1 AND lead_id = $2 AND status = 'booked'
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(appointment_from_row))
    }

    /// Books an appointment in one transaction, under an advisory lock on the location so
    /// concurrent bookings of it are serialised: checks the lead, refuses a second booking of
    /// the lead or a slot overlapping a booked one, inserts the appointment, moves the lead to
    /// `booked` (from new, in cadence, paused or replied) and cancels its pending touches.
    ///
    /// # Errors
    /// `Invalid` when the slot is empty or the lead belongs to another location; `NotFound`
    /// when the lead does not exist or belongs to another tenant; `Conflict` with
    /// [`AppointmentRepo::LEAD_ALREADY_BOOKED`] or [`AppointmentRepo::SLOT_TAKEN`].
    pub async fn book(&self, tenant_id: TenantId, new: &NewAppointment) -> Result<Appointment, StoreError> {
        if new.starts_at >= new.ends_at {
            return Err(StoreError::Invalid("an appointment must end after it starts".to_owned()));
        }
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))").await.map_err(pg_error)?,
            &[&BOOKING_LOCK_CLASS, &new.location_id.as_uuid()],
        )
        .await
        .map_err(pg_error)?;
        let lead = tx
            .query_opt(
                &tx.prepare_cached("SELECT location_id FROM leads WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &new.lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        let lead_location: Uuid = lead.get("location_id");
        if lead_location != new.location_id.as_uuid() {
            return Err(StoreError::Invalid("the lead belongs to another location".to_owned()));
        }
        let already = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT 1 FROM appointments WHERE tenant_id = $1 AND lead_id = $2 AND status = 'booked' LIMIT 1",
                )
                .await
                .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &new.lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        if already.is_some() {
            return Err(StoreError::Conflict { constraint: Self::LEAD_ALREADY_BOOKED.to_owned() });
        }
        let overlapping = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT 1 FROM appointments
                 WHERE tenant_id = $1 AND location_id = $2 AND status = 'booked' AND starts_at < $4 AND ends_at > $3
                 LIMIT 1",
                )
                .await
                .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &new.location_id.as_uuid(), &new.starts_at, &new.ends_at],
            )
            .await
            .map_err(pg_error)?;
        if overlapping.is_some() {
            return Err(StoreError::Conflict { constraint: Self::SLOT_TAKEN.to_owned() });
        }
        let row = tx
            .query_one(
                &tx.prepare_cached(&format!(
                    "INSERT INTO appointments (id, tenant_id, location_id, lead_id, starts_at, ends_at, service)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     RETURNING {APPOINTMENT_COLUMNS}"
                ))
                .await
                .map_err(pg_error)?,
                &[
                    &Uuid::now_v7(),
                    &tenant_id.as_uuid(),
                    &new.location_id.as_uuid(),
                    &new.lead_id.as_uuid(),
                    &new.starts_at,
                    &new.ends_at,
                    &new.service_opt,
                ],
            )
            .await
            .map_err(pg_error)?;
        let open: Vec<&str> = BOOKING_STOPS.into_iter().map(LeadStatus::as_str).collect();
        let updated = tx
            .execute(
                &tx.prepare_cached("UPDATE leads SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2 AND status = ANY($4)").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &new.lead_id.as_uuid(), &LeadStatus::Booked.as_str(), &open],
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            &tx.prepare_cached(
                "UPDATE touchpoints SET status = 'cancelled', last_error = $3, updated_at = now()
             WHERE tenant_id = $1 AND lead_id = $2 AND status = 'pending'",
            )
            .await
            .map_err(pg_error)?,
            &[&tenant_id.as_uuid(), &new.lead_id.as_uuid(), &"booked"],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        if updated == 1 {
            metrics::counter!("leadorch_lead_outcomes_total", "outcome" => "booked").increment(1);
        }
        Ok(appointment_from_row(&row))
    }

    /// Records the CRM's id for an appointment.
    ///
    /// # Errors
    /// `NotFound` when the appointment does not exist or belongs to another tenant.
    pub async fn set_crm_id(
        &self,
        tenant_id: TenantId,
        appointment_id: Uuid,
        crm_appointment_id: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client.prepare_cached("UPDATE appointments SET crm_appointment_id = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &appointment_id, &crm_appointment_id],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Returns every appointment of the lead (booked and cancelled), latest start first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn list_for_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<Appointment>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE tenant_id = $1 AND lead_id = $2
                     ORDER BY starts_at DESC, id DESC"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(appointment_from_row).collect())
    }
}
