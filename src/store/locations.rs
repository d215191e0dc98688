//! Locations and their weekly opening hours.

use deadpool_postgres::Pool;
use jiff::civil::{Time, Weekday};
use leadorch_actors::domain::{
    DayHours, Email, Location, LocationId, NewLocation, Phone, TenantId, TimeZoneName, WeeklyHours,
};
use leadorch_actors::ports::StoreError;
use tokio_postgres::Row;

use super::error::bad_value;
use super::{pg_error, pool_error};

const LOCATION_COLUMNS: &str = "id, tenant_id, crm_location_id, name, address, phone, timezone, sms_from, \
     sms_rate_per_sec, email_from, active, created_at";

/// Reads and writes `locations` and `location_hours`.
#[derive(Clone, Debug)]
pub struct LocationRepo {
    pool: Pool,
}

fn location_from_row(row: &Row) -> Result<Location, StoreError> {
    let phone_opt = |column: &str| -> Result<Option<Phone>, StoreError> {
        row.get::<_, Option<String>>(column).map(|p| Phone::parse(&p).map_err(|e| bad_value(column, e))).transpose()
    };
    let timezone: String = row.get("timezone");
    Ok(Location {
        id: LocationId::from_uuid(row.get("id")),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        crm_location_id: row.get("crm_location_id"),
        name: row.get("name"),
        address_opt: row.get("address"),
        phone_opt: phone_opt("phone")?,
        timezone: TimeZoneName::parse(&timezone).map_err(|e| bad_value("timezone", e))?,
        sms_from_opt: phone_opt("sms_from")?,
        sms_rate_per_sec: row.get("sms_rate_per_sec"),
        email_from_opt: row
            .get::<_, Option<String>>("email_from")
            .map(|e| Email::parse(&e).map_err(|err| bad_value("email_from", err)))
            .transpose()?,
        active: row.get("active"),
        created_at: row.get("created_at"),
    })
}

fn weekday_from_iso(day: i16) -> Result<Weekday, StoreError> {
    Weekday::from_monday_one_offset(day as i8).map_err(|e| bad_value("weekday", e))
}

/// Maps the last representable stored instant of a day back to [`Time::MAX`], the domain's
/// "closes at midnight" marker.
fn end_of_day_aware(time: Time) -> Time {
    if time >= Time::constant(23, 59, 59, 0) { Time::MAX } else { time }
}

impl LocationRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        LocationRepo { pool }
    }

    /// Creates a location of `new.tenant_id`.
    ///
    /// # Errors
    /// `Conflict` when the tenant already has a location with that CRM id; `Conflict` on
    /// `locations_tenant_id_fkey` when the tenant does not exist; `Invalid` for a bad rate.
    pub async fn create(&self, new: &NewLocation) -> Result<Location, StoreError> {
        if !(new.sms_rate_per_sec.is_finite() && new.sms_rate_per_sec > 0.0) {
            return Err(StoreError::Invalid("sms rate must be a positive number".to_owned()));
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(&format!(
                        "INSERT INTO locations (id, tenant_id, crm_location_id, name, address, phone, timezone,
                                            sms_from, sms_rate_per_sec, email_from)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     RETURNING {LOCATION_COLUMNS}"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[
                    &LocationId::new().as_uuid(),
                    &new.tenant_id.as_uuid(),
                    &new.crm_location_id.trim(),
                    &new.name.trim(),
                    &new.address_opt,
                    &new.phone_opt.as_ref().map(Phone::as_str),
                    &new.timezone.as_str(),
                    &new.sms_from_opt.as_ref().map(Phone::as_str),
                    &new.sms_rate_per_sec,
                    &new.email_from_opt.as_ref().map(Email::as_str),
                ],
            )
            .await
            .map_err(pg_error)?;
        location_from_row(&row)
    }

    /// Returns one location of the tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Location, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT {LOCATION_COLUMNS} FROM locations WHERE tenant_id = $1 AND id = $2"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        location_from_row(&row)
    }

    /// Finds the tenant's location by its id in the CRM.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such location.
    pub async fn find_by_crm_id(&self, tenant_id: TenantId, crm_location_id: &str) -> Result<Location, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT {LOCATION_COLUMNS} FROM locations WHERE tenant_id = $1 AND crm_location_id = $2"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &crm_location_id],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        location_from_row(&row)
    }

    /// Finds the location that texts from `sms_from` (the number an inbound SMS was sent to).
    /// Numbers are unique across tenants, so this is how an inbound message finds its tenant.
    ///
    /// # Errors
    /// `NotFound` when no location uses that number.
    pub async fn find_by_sms_from(&self, sms_from: &Phone) -> Result<Location, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!("SELECT {LOCATION_COLUMNS} FROM locations WHERE sms_from = $1"))
                    .await
                    .map_err(pg_error)?,
                &[&sms_from.as_str()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        location_from_row(&row)
    }

    /// Returns the tenant that owns a location. An operator lookup, for CLI commands that name
    /// only the location; request paths always know their tenant and never call it.
    ///
    /// # Errors
    /// `NotFound` when there is no such location.
    pub async fn owner_of(&self, location_id: LocationId) -> Result<TenantId, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT tenant_id FROM locations WHERE id = $1").await.map_err(pg_error)?,
                &[&location_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(TenantId::from_uuid(row.get(0)))
    }

    /// Lists the tenant's locations by name.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn list(&self, tenant_id: TenantId) -> Result<Vec<Location>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {LOCATION_COLUMNS} FROM locations WHERE tenant_id = $1 ORDER BY name, id"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(location_from_row).collect()
    }

    /// Replaces the location's weekly hours in one transaction.
    ///
    /// # Errors
    /// `NotFound` when the location does not exist or belongs to another tenant.
    pub async fn set_hours(
        &self,
        tenant_id: TenantId,
        location_id: LocationId,
        hours: &WeeklyHours,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let owned = tx
            .query_opt(
                &tx.prepare_cached("SELECT 1 FROM locations WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        if owned.is_none() {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            &tx.prepare_cached("DELETE FROM location_hours WHERE tenant_id = $1 AND location_id = $2")
                .await
                .map_err(pg_error)?,
            &[&tenant_id.as_uuid(), &location_id.as_uuid()],
        )
        .await
        .map_err(pg_error)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO location_hours (tenant_id, location_id, weekday, opens, closes) VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(pg_error)?;
        for day in hours.days() {
            let weekday = i16::from(day.weekday.to_monday_one_offset());
            tx.execute(&insert, &[&tenant_id.as_uuid(), &location_id.as_uuid(), &weekday, &day.opens, &day.closes])
                .await
                .map_err(pg_error)?;
        }
        tx.execute(
            &tx.prepare_cached("UPDATE locations SET updated_at = now() WHERE tenant_id = $1 AND id = $2")
                .await
                .map_err(pg_error)?,
            &[&tenant_id.as_uuid(), &location_id.as_uuid()],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    /// Returns the location's weekly hours (empty when none are set).
    ///
    /// # Errors
    /// The database is unavailable, or stored hours no longer validate.
    pub async fn hours(&self, tenant_id: TenantId, location_id: LocationId) -> Result<WeeklyHours, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                // PostgreSQL keeps "24:00" (an end-of-day close), which has no jiff Time: read it as
                // the last microsecond, then map that back to the domain's end-of-day marker.
                &client
                    .prepare_cached(
                        "SELECT weekday, opens, LEAST(closes, time '23:59:59.999999') AS closes FROM location_hours
                         WHERE tenant_id = $1 AND location_id = $2 ORDER BY weekday, opens",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &location_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        let days = rows
            .iter()
            .map(|row| {
                Ok(DayHours {
                    weekday: weekday_from_iso(row.get("weekday"))?,
                    opens: row.get::<_, Time>("opens"),
                    closes: end_of_day_aware(row.get::<_, Time>("closes")),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        WeeklyHours::from_days(days).map_err(|e| bad_value("location_hours", e))
    }
}
