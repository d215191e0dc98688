//! Tenants: the franchisors one deployment serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use dashmap::DashMap;
use deadpool_postgres::Pool;
use leadorch_actors::domain::{Tenant, TenantId};
use leadorch_actors::ports::StoreError;
use rand::RngCore;
use serde::Serialize;
use tokio_postgres::Row;

use super::{pg_error, pool_error};

/// A tenant just created, with its webhook secret (shown to the operator once).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub webhook_secret: String,
}

/// How long a webhook secret read from the database is trusted without reading it again. The
/// webhook route asks on every request; this saves that round trip under load. A tenant
/// deactivated directly in the database stops being accepted within this time.
const SECRET_TTL: Duration = Duration::from_secs(10);

/// Reads and writes `tenants`.
#[derive(Clone, Debug)]
pub struct TenantRepo {
    pool: Pool,
    /// Webhook secrets of active tenants, with when they were read.
    secrets: Arc<DashMap<TenantId, (Arc<str>, Instant)>>,
}

fn tenant_from_row(row: &Row) -> Tenant {
    Tenant {
        id: TenantId::from_uuid(row.get("id")),
        name: row.get("name"),
        active: row.get("active"),
        created_at: row.get("created_at"),
    }
}

/// Returns a fresh random secret: 32 random bytes, URL-safe base64.
pub(crate) fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TenantRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        TenantRepo { pool, secrets: Arc::default() }
    }

    /// Creates a tenant; generates its webhook secret when none is given.
    ///
    /// # Errors
    /// `Invalid` for an empty name or a secret shorter than 16 characters.
    pub async fn create(&self, name: &str, webhook_secret_opt: Option<&str>) -> Result<CreatedTenant, StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("tenant name must not be empty".to_owned()));
        }
        let secret = match webhook_secret_opt {
            Some(secret) if secret.len() < 16 => {
                return Err(StoreError::Invalid("webhook secret must be at least 16 characters".to_owned()));
            }
            Some(secret) => secret.to_owned(),
            None => generate_secret(),
        };
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "INSERT INTO tenants (id, name, webhook_secret) VALUES ($1, $2, $3)
                 RETURNING id, name, active, created_at",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&TenantId::new().as_uuid(), &name, &secret],
            )
            .await
            .map_err(pg_error)?;
        Ok(CreatedTenant { tenant: tenant_from_row(&row), webhook_secret: secret })
    }

    /// Returns one tenant.
    ///
    /// # Errors
    /// `NotFound` when there is no such tenant.
    pub async fn get(&self, tenant_id: TenantId) -> Result<Tenant, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT id, name, active, created_at FROM tenants WHERE id = $1")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(tenant_from_row(&row))
    }

    /// Lists every tenant (an operator query: the deployment's own list of franchisors).
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn list(&self) -> Result<Vec<Tenant>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached("SELECT id, name, active, created_at FROM tenants ORDER BY created_at, id")
                    .await
                    .map_err(pg_error)?,
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(tenant_from_row).collect())
    }

    /// Stores the tenant's CRM API key, already encrypted by the caller.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn set_crm_key_enc(&self, tenant_id: TenantId, encrypted: &[u8]) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached("UPDATE tenants SET crm_api_key_enc = $2, updated_at = now() WHERE id = $1")
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &encrypted],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Returns the tenant's encrypted CRM API key, if one is set.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn crm_key_enc(&self, tenant_id: TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT crm_api_key_enc FROM tenants WHERE id = $1").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get(0))
    }

    /// Returns the secret the tenant's CRM webhooks are signed with, if the tenant is active.
    ///
    /// # Errors
    /// `NotFound` for an unknown or inactive tenant.
    pub async fn webhook_secret(&self, tenant_id: TenantId) -> Result<Arc<str>, StoreError> {
        if let Some(entry) = self.secrets.get(&tenant_id)
            && entry.1.elapsed() < SECRET_TTL
        {
            return Ok(entry.0.clone());
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached("SELECT webhook_secret FROM tenants WHERE id = $1 AND active")
            .await
            .map_err(pg_error)?;
        let row_opt = client.query_opt(&statement, &[&tenant_id.as_uuid()]).await.map_err(pg_error)?;
        let Some(row) = row_opt else {
            self.secrets.remove(&tenant_id);
            return Err(StoreError::NotFound);
        };
        let secret: Arc<str> = Arc::from(row.get::<_, String>(0));
        self.secrets.insert(tenant_id, (secret.clone(), Instant::now()));
        Ok(secret)
    }
}
