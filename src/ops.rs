//! Operator commands behind the CLI (onboarding tenants, locations, hours and staff keys). Each
//! validates all of its input before it writes anything, and returns the record it created.

use leadorch_actors::domain::{
    Email, Location, LocationId, NewLocation, Phone, Tenant, TenantId, TimeZoneName, WeeklyHours,
};
use leadorch_actors::ports::{Crm, CrmError, StoreError};
use serde::Serialize;

use crate::crm::keys::SecretBox;
use crate::store::{CreatedApiKey, CreatedTenant, Store};

/// Why an operator command was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("no tenant with id {0}")]
    UnknownTenant(TenantId),
    #[error("no location with id {0}")]
    UnknownLocation(LocationId),
    #[error("tenant already has a location with crm id `{0}`")]
    DuplicateLocation(String),
    #[error("LEADORCH_SECRET_KEY must be set to store CRM keys encrypted")]
    NoSecretKey,
    #[error("crm call failed: {0}")]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, err: impl std::fmt::Display) -> OpsError {
    OpsError::Invalid { field, message: err.to_string() }
}

/// What `leadorch location add` asks for, as typed by the operator.
#[derive(Debug, Clone, Default)]
pub struct LocationInput {
    pub tenant_id: TenantId,
    pub crm_location_id: String,
    pub name: String,
    pub timezone: String,
    pub address_opt: Option<String>,
    pub phone_opt: Option<String>,
    pub sms_from_opt: Option<String>,
    pub sms_rate_per_sec: f64,
    pub email_from_opt: Option<String>,
}

/// Creates a tenant (with a generated webhook secret unless one is given).
///
/// # Errors
/// Invalid name or secret, or the database is unavailable.
pub async fn add_tenant(
    store: &Store,
    name: &str,
    webhook_secret_opt: Option<&str>,
) -> Result<CreatedTenant, OpsError> {
    if name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if webhook_secret_opt.is_some_and(|s| s.len() < 16) {
        return Err(invalid("webhook secret", "must be at least 16 characters"));
    }
    Ok(store.tenants.create(name, webhook_secret_opt).await?)
}

/// Lists every tenant.
///
/// # Errors
/// The database is unavailable.
pub async fn list_tenants(store: &Store) -> Result<Vec<Tenant>, OpsError> {
    Ok(store.tenants.list().await?)
}

async fn require_tenant(store: &Store, tenant_id: TenantId) -> Result<(), OpsError> {
    match store.tenants.get(tenant_id).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err(OpsError::UnknownTenant(tenant_id)),
        Err(err) => Err(err.into()),
    }
}

/// Creates a location after validating every field.
///
/// # Errors
/// A bad timezone, phone, email or rate; an unknown tenant; a duplicate CRM location id.
pub async fn add_location(store: &Store, input: LocationInput) -> Result<Location, OpsError> {
    let timezone = TimeZoneName::parse(&input.timezone).map_err(|e| invalid("timezone", e))?;
    let parse_phone = |field, value: &Option<String>| {
        value.as_deref().map(|p| Phone::parse(p).map_err(|e| invalid(field, e))).transpose()
    };
    let phone_opt = parse_phone("phone", &input.phone_opt)?;
    let sms_from_opt = parse_phone("sms-from", &input.sms_from_opt)?;
    let email_from_opt = input
        .email_from_opt
        .as_deref()
        .map(|e| Email::parse(e).map_err(|err| invalid("email-from", err)))
        .transpose()?;
    if input.crm_location_id.trim().is_empty() {
        return Err(invalid("crm-location-id", "must not be empty"));
    }
    if input.name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if !(input.sms_rate_per_sec.is_finite() && input.sms_rate_per_sec > 0.0) {
        return Err(invalid("sms-rate", "must be a positive number of messages per second"));
    }
    require_tenant(store, input.tenant_id).await?;
    let new = NewLocation {
        tenant_id: input.tenant_id,
        crm_location_id: input.crm_location_id.trim().to_owned(),
        name: input.name.trim().to_owned(),
        address_opt: input.address_opt.filter(|a| !a.trim().is_empty()),
        phone_opt,
        timezone,
        sms_from_opt,
        sms_rate_per_sec: input.sms_rate_per_sec,
        email_from_opt,
    };
    match store.locations.create(&new).await {
        Ok(location) => Ok(location),
        Err(StoreError::Conflict { constraint }) if constraint.contains("crm_location_id") => {
            Err(OpsError::DuplicateLocation(new.crm_location_id))
        }
        Err(err) => Err(err.into()),
    }
}

/// Lists the tenant's locations.
///
/// # Errors
/// Unknown tenant, or the database is unavailable.
pub async fn list_locations(store: &Store, tenant_id: TenantId) -> Result<Vec<Location>, OpsError> {
    require_tenant(store, tenant_id).await?;
    Ok(store.locations.list(tenant_id).await?)
}

/// Replaces a location's weekly hours with `spec` ("mon-fri 08:00-18:00, sat 09:00-14:00").
///
/// # Errors
/// Unparsable or overlapping hours (nothing is written), or no such location of the tenant.
pub async fn set_location_hours(
    store: &Store,
    tenant_id: TenantId,
    location_id: LocationId,
    spec: &str,
) -> Result<WeeklyHours, OpsError> {
    let hours = WeeklyHours::parse(spec).map_err(|e| invalid("hours", e))?;
    match store.locations.set_hours(tenant_id, location_id, &hours).await {
        Ok(()) => Ok(hours),
        Err(StoreError::NotFound) => Err(OpsError::UnknownLocation(location_id)),
        Err(err) => Err(err.into()),
    }
}

/// Returns the tenant owning `location_id`, for commands that name only the location.
///
/// # Errors
/// No such location, or the database is unavailable.
pub async fn location_owner(store: &Store, location_id: LocationId) -> Result<TenantId, OpsError> {
    match store.locations.owner_of(location_id).await {
        Ok(tenant_id) => Ok(tenant_id),
        Err(StoreError::NotFound) => Err(OpsError::UnknownLocation(location_id)),
        Err(err) => Err(err.into()),
    }
}

/// Creates a staff API key for the tenant; the returned key is the only copy.
///
/// # Errors
/// Unknown tenant, empty name, or the database is unavailable.
pub async fn add_api_key(store: &Store, tenant_id: TenantId, name: &str) -> Result<CreatedApiKey, OpsError> {
    if name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    require_tenant(store, tenant_id).await?;
    Ok(store.api_keys.create(tenant_id, name).await?)
}

/// Stores the tenant's ShopMonkey API key, encrypted with the deployment's secret key.
///
/// # Errors
/// No secret key configured, an empty key, or an unknown tenant.
pub async fn set_crm_key(
    store: &Store,
    secret_box_opt: Option<&SecretBox>,
    tenant_id: TenantId,
    api_key: &str,
) -> Result<(), OpsError> {
    let secret_box = secret_box_opt.ok_or(OpsError::NoSecretKey)?;
    let api_key = api_key.trim();
    if api_key.is_empty() {
        return Err(invalid("crm key", "must not be empty"));
    }
    match store.tenants.set_crm_key_enc(tenant_id, &secret_box.seal(api_key)).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(OpsError::UnknownTenant(tenant_id)),
        Err(err) => Err(err.into()),
    }
}

/// What `leadorch location sync` did with each CRM location.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub created: Vec<Location>,
    /// CRM ids already present as locations (left as they are: operators may have edited them).
    pub existing: Vec<String>,
    /// CRM ids that could not be imported, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Imports the tenant's locations from the CRM: name, address, phone and time zone. A location
/// whose CRM record has no valid time zone gets `default_timezone_opt`, or is skipped.
///
/// # Errors
/// Unknown tenant, or the CRM call failed.
pub async fn sync_locations(
    store: &Store,
    crm: &dyn Crm,
    tenant_id: TenantId,
    default_timezone_opt: Option<&str>,
) -> Result<SyncReport, OpsError> {
    require_tenant(store, tenant_id).await?;
    let mut report = SyncReport::default();
    for crm_location in crm.list_locations(tenant_id).await? {
        match store.locations.find_by_crm_id(tenant_id, &crm_location.id).await {
            Ok(_) => {
                report.existing.push(crm_location.id);
                continue;
            }
            Err(StoreError::NotFound) => {}
            Err(err) => return Err(err.into()),
        }
        let timezone_opt = crm_location.timezone_opt.as_deref().or(default_timezone_opt);
        let Some(timezone) = timezone_opt else {
            report.skipped.push((crm_location.id, "no time zone in the crm; pass --default-timezone".to_owned()));
            continue;
        };
        let input = LocationInput {
            tenant_id,
            crm_location_id: crm_location.id.clone(),
            name: crm_location.name.clone(),
            timezone: timezone.to_owned(),
            address_opt: crm_location.address_opt.clone(),
            // A phone the CRM holds in a form we cannot parse is left out rather than failing the import.
            phone_opt: crm_location.phone_opt.clone().filter(|p| Phone::parse(p).is_ok()),
            sms_from_opt: None,
            sms_rate_per_sec: 1.0,
            email_from_opt: crm_location.email_opt.clone().filter(|e| Email::parse(e).is_ok()),
        };
        match add_location(store, input).await {
            Ok(location) => report.created.push(location),
            Err(OpsError::Invalid { field, message }) => {
                report.skipped.push((crm_location.id, format!("invalid {field}: {message}")));
            }
            Err(err) => return Err(err),
        }
    }
    Ok(report)
}
