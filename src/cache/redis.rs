//! The Redis catalog cache (fred): one string per tenant and location under
//! `{prefix}catalog:{tenant}:{location}`, holding the versioned value of
//! [`leadorch_actors::catalog::encode_cached`]. Entries expire well after the TTL (TTL plus the
//! stale window), so a stale catalog can be served while it refreshes; freshness is judged by the
//! caller from the stored time inside the value.
//!
//! Redis must never hold the service up: the client connects in the background (start-up does
//! not wait, and keeps reconnecting with backoff while Redis is down), and every command fails at
//! once when there is no connection, or after the command timeout, so the caller can fall back.

use std::time::Duration;

use fred::prelude::{ClientLike, Config, Expiration, KeysInterface, Options, ReconnectPolicy, TcpConfig};
use fred::types::Builder;
use jiff::Timestamp;
use leadorch_actors::catalog::{
    CacheError, CachedCatalog, Catalog, CatalogCache, CatalogSource, DecodeError, decode_cached, encode_cached,
};
use leadorch_actors::domain::{LocationId, TenantId};
use secrecy::{ExposeSecret, SecretString};

/// How long a TCP connect to Redis may take (in the background: nobody waits on it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: from 100 ms, doubling, at most 1 s, forever; a Redis that comes back is
/// used again within about a second.
const RECONNECT_MIN_DELAY_MS: u32 = 100;
const RECONNECT_MAX_DELAY_MS: u32 = 1_000;

/// A catalog cache in Redis. Cheap to clone (the client is a handle).
#[derive(Clone)]
pub struct RedisCatalogCache {
    client: fred::clients::Client,
    key_prefix: String,
    /// The hard expiry of every entry: the TTL plus the time a stale entry may still be served.
    keep_for: Duration,
    command_timeout: Duration,
}

impl std::fmt::Debug for RedisCatalogCache {
    // The URL may carry a password: only the prefix is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCatalogCache")
            .field("key_prefix", &self.key_prefix)
            .field("keep_for", &self.keep_for)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// Why the Redis client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// The URL does not parse (its text is not repeated: it may carry a password).
    #[error("redis url is invalid: {0}")]
    InvalidUrl(String),
    /// `rediss://` asks for TLS, which this build leaves out.
    #[error(
        "redis over TLS (rediss://) is not supported by this build; use redis:// (e.g. through a local TLS tunnel)"
    )]
    TlsUnsupported,
}

impl RedisCatalogCache {
    /// Configures the client and starts connecting in the background; returns at once, whether
    /// Redis is up or not. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The URL is invalid or asks for TLS.
    pub fn start(
        url: &SecretString,
        key_prefix: &str,
        keep_for: Duration,
        command_timeout: Duration,
    ) -> Result<RedisCatalogCache, RedisConfigError> {
        let url = url.expose_secret();
        if url.starts_with("rediss://") {
            return Err(RedisConfigError::TlsUnsupported);
        }
        let mut config = Config::from_url(url).map_err(|err| RedisConfigError::InvalidUrl(err.details().to_owned()))?;
        // Connect failures at start-up follow the reconnect policy instead of failing the client.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|performance| performance.default_command_timeout = command_timeout)
            .with_connection_config(|connection| {
                connection.connection_timeout = CONNECT_TIMEOUT;
                connection.internal_command_timeout = CONNECT_TIMEOUT;
                // A command lost with its connection fails instead of waiting for the next one.
                connection.max_command_attempts = 1;
                connection.tcp = TcpConfig { nodelay: Some(true), ..TcpConfig::default() };
            })
            .set_policy(ReconnectPolicy::new_exponential(0, RECONNECT_MIN_DELAY_MS, RECONNECT_MAX_DELAY_MS, 2))
            .build()
            .map_err(|err| RedisConfigError::InvalidUrl(err.details().to_owned()))?;
        // The connection task runs (and reconnects) until `close`; its handle is not needed.
        drop(client.connect());
        Ok(RedisCatalogCache { client, key_prefix: key_prefix.to_owned(), keep_for, command_timeout })
    }

    /// Waits at most `within` for the first connection; returns whether Redis is connected.
    /// Start-up gives Redis this grace so the first reads and writes reach it, and carries on
    /// without it (the client keeps reconnecting) when it is down.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        matches!(tokio::time::timeout(within, self.client.wait_for_connect()).await, Ok(Ok(())))
    }

    /// Returns whether the client is connected now (for `/api/health`).
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Returns the client, to share its connection (the chat's rate limiter).
    pub fn client(&self) -> &fred::clients::Client {
        &self.client
    }

    /// Returns the key of a tenant's location.
    pub fn key(&self, tenant_id: TenantId, location_id: LocationId) -> String {
        format!("{}catalog:{tenant_id}:{location_id}", self.key_prefix)
    }

    /// Closes the connection and stops reconnecting (best effort, bounded by the command timeout).
    pub async fn close(&self) {
        // An unreachable Redis has nothing to close.
        let _ = tokio::time::timeout(self.command_timeout, self.client.quit()).await;
    }

    /// Per-command options: fail at once without a healthy connection, never retry, time out.
    fn options(&self) -> Options {
        Options { max_attempts: Some(1), timeout: Some(self.command_timeout), fail_fast: true, ..Options::default() }
    }

    /// Bounds a command by the timeout even if the client queued it.
    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, CacheError> {
        // A little slack over the client's own timeout, so the client's error (more precise) wins.
        match tokio::time::timeout(self.command_timeout + Duration::from_millis(50), command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(CacheError::Unavailable(Box::new(err))),
            Err(elapsed) => Err(CacheError::Unavailable(Box::new(elapsed))),
        }
    }
}

#[async_trait::async_trait]
impl CatalogCache for RedisCatalogCache {
    async fn get(&self, tenant_id: TenantId, location_id: LocationId) -> Result<Option<CachedCatalog>, CacheError> {
        let key = self.key(tenant_id, location_id);
        let raw_opt: Option<String> = self.bounded(self.client.with_options(&self.options()).get(&key)).await?;
        let Some(raw) = raw_opt else {
            return Ok(None);
        };
        match decode_cached(&raw) {
            Ok((catalog, stored_at)) if catalog.tenant_id == tenant_id && catalog.location_id == location_id => {
                Ok(Some(CachedCatalog { catalog, stored_at, layer: CatalogSource::Redis }))
            }
            Ok(_) => {
                tracing::warn!(%tenant_id, %location_id, "cached catalog belongs to another key; treated as a miss");
                Ok(None)
            }
            Err(DecodeError::UnknownVersion(version)) => {
                tracing::debug!(%tenant_id, %location_id, version, "cached catalog has another schema version; a miss");
                Ok(None)
            }
            Err(err @ DecodeError::Malformed(_)) => {
                tracing::warn!(%tenant_id, %location_id, error = %err, "cached catalog unreadable; treated as a miss");
                Ok(None)
            }
        }
    }

    async fn put(&self, catalog: &Catalog, stored_at: Timestamp) -> Result<(), CacheError> {
        let key = self.key(catalog.tenant_id, catalog.location_id);
        let value = encode_cached(catalog, stored_at);
        let expiry_secs = i64::try_from(self.keep_for.as_secs().max(1)).unwrap_or(i64::MAX);
        self.bounded(self.client.with_options(&self.options()).set::<(), _, _>(
            &key,
            value,
            Some(Expiration::EX(expiry_secs)),
            None,
            false,
        ))
        .await
    }
}
