//! Staff API keys: shown once at creation, stored only as a SHA-256 hash, and resolved to the
//! one tenant they belong to.

use deadpool_postgres::Pool;
use leadorch_actors::domain::{ApiKeyId, TenantId};
use leadorch_actors::ports::StoreError;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::tenants::generate_secret;
use super::{pg_error, pool_error};

/// Every key starts with this, so a leaked one is easy to recognise in a scan.
const KEY_PREFIX: &str = "lok_";

/// A key just created. `key` is the only copy of the secret.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub key: String,
}

/// Who a valid key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaffKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
}

/// Reads and writes `api_keys`.
#[derive(Clone, Debug)]
pub struct ApiKeyRepo {
    pool: Pool,
}

fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

impl ApiKeyRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        ApiKeyRepo { pool }
    }

    /// Creates a key for the tenant.
    ///
    /// # Errors
    /// `Conflict` when the tenant does not exist; `Invalid` for an empty name.
    pub async fn create(&self, tenant_id: TenantId, name: &str) -> Result<CreatedApiKey, StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("api key name must not be empty".to_owned()));
        }
        let key = format!("{KEY_PREFIX}{}", generate_secret());
        let id = ApiKeyId::new();
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&id.as_uuid(), &tenant_id.as_uuid(), &name, &hash_key(&key), &&key[..KEY_PREFIX.len() + 6]],
            )
            .await
            .map_err(pg_error)?;
        Ok(CreatedApiKey { id, tenant_id, name: name.to_owned(), key })
    }

    /// Resolves a presented key to its tenant; `None` for an unknown or revoked key.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<StaffKey>, StoreError> {
        if !presented.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        // Lookup by hash: equality on a SHA-256 digest leaks nothing useful through timing.
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "UPDATE api_keys SET last_used_at = now()
                 WHERE key_hash = $1 AND revoked_at IS NULL
                 RETURNING id, tenant_id",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&hash_key(presented)],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|row| StaffKey {
            id: ApiKeyId::from_uuid(row.get("id")),
            tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        }))
    }

    /// Revokes one of the tenant's keys.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn revoke(&self, tenant_id: TenantId, id: ApiKeyId) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE api_keys SET revoked_at = now(), updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}
