//! Tenants' CRM API keys at rest: AES-256-GCM under a key derived from `LEADORCH_SECRET_KEY`
//! (stored as nonce || ciphertext), and the [`CrmKeySource`] that decrypts them for the client,
//! with a short in-memory cache. Keys never reach logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use dashmap::DashMap;
use leadorch_actors::domain::TenantId;
use leadorch_actors::ports::{CrmError, StoreError};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::shopmonkey::CrmKeySource;
use crate::store::TenantRepo;

const NONCE_LEN: usize = 12;
/// How long a decrypted key is reused before it is read again (a rotated key takes effect
/// within this).
const CACHE_FOR: Duration = Duration::from_secs(60);

/// Why a stored key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("LEADORCH_SECRET_KEY is not set; it is needed to store or read CRM keys")]
    NoSecretKey,
    #[error("stored crm key cannot be decrypted (wrong LEADORCH_SECRET_KEY?)")]
    Undecryptable,
}

/// Encrypts and decrypts small secrets with the deployment's secret key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    /// Derives the encryption key from the configured secret (SHA-256 of it).
    pub fn new(secret_key: &SecretString) -> Self {
        let key = Sha256::digest(secret_key.expose_secret().as_bytes());
        // A SHA-256 digest is exactly the 32 bytes AES-256 takes.
        let cipher = Aes256Gcm::new_from_slice(&key).expect("sha-256 output is a valid aes-256 key");
        SecretBox { cipher }
    }

    /// Returns nonce || ciphertext of `plaintext`.
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("aes-gcm encryption of an in-memory buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        sealed
    }

    /// Decrypts what [`SecretBox::seal`] produced.
    ///
    /// # Errors
    /// Tampered data or another secret key.
    pub fn open(&self, sealed: &[u8]) -> Result<SecretString, KeyError> {
        if sealed.len() <= NONCE_LEN {
            return Err(KeyError::Undecryptable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plaintext =
            self.cipher.decrypt(Nonce::from_slice(nonce), ciphertext).map_err(|_| KeyError::Undecryptable)?;
        let text = String::from_utf8(plaintext).map_err(|_| KeyError::Undecryptable)?;
        Ok(SecretString::from(text))
    }
}

/// CRM keys from the tenants table, falling back to one key from the environment
/// (`LEADORCH_SHOPMONKEY_API_KEY`) for single-company deployments.
#[derive(Debug, Clone)]
pub struct StoredCrmKeys {
    tenants: TenantRepo,
    secret_box_opt: Option<SecretBox>,
    fallback_opt: Option<SecretString>,
    cache: Arc<DashMap<TenantId, (Instant, SecretString)>>,
}

impl StoredCrmKeys {
    /// Creates the source.
    pub fn new(tenants: TenantRepo, secret_box_opt: Option<SecretBox>, fallback_opt: Option<SecretString>) -> Self {
        StoredCrmKeys { tenants, secret_box_opt, fallback_opt, cache: Arc::default() }
    }
}

#[async_trait::async_trait]
impl CrmKeySource for StoredCrmKeys {
    async fn api_key(&self, tenant_id: TenantId) -> Result<SecretString, CrmError> {
        if let Some(entry) = self.cache.get(&tenant_id) {
            if entry.0.elapsed() < CACHE_FOR {
                return Ok(entry.1.clone());
            }
        }
        let stored = match self.tenants.crm_key_enc(tenant_id).await {
            Ok(stored) => stored,
            Err(StoreError::NotFound) => return Err(CrmError::NotConfigured),
            Err(err) => return Err(CrmError::Unavailable(format!("crm key lookup: {err}"))),
        };
        let key = match (stored, &self.secret_box_opt, &self.fallback_opt) {
            (Some(sealed), Some(secret_box), _) => secret_box.open(&sealed).map_err(|err| {
                tracing::error!(%tenant_id, error = %err, "crm key unusable");
                CrmError::NotConfigured
            })?,
            (Some(_), None, _) => {
                tracing::error!(%tenant_id, "crm key stored but LEADORCH_SECRET_KEY is not set");
                return Err(CrmError::NotConfigured);
            }
            (None, _, Some(fallback)) => fallback.clone(),
            (None, _, None) => return Err(CrmError::NotConfigured),
        };
        self.cache.insert(tenant_id, (Instant::now(), key.clone()));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_the_same_secret_only() {
        let sealed = SecretBox::new(&SecretString::from("deployment secret")).seal("sm-api-key-123");
        let opened = SecretBox::new(&SecretString::from("deployment secret")).open(&sealed).expect("opens");
        assert_eq!(opened.expose_secret(), "sm-api-key-123");
        assert!(SecretBox::new(&SecretString::from("other secret")).open(&sealed).is_err());
        assert!(!sealed.windows(14).any(|w| w == b"sm-api-key-123"), "ciphertext must not contain the key");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let secret_box = SecretBox::new(&SecretString::from("s"));
        assert_ne!(secret_box.seal("k"), secret_box.seal("k"));
    }

    #[test]
    fn tampered_or_short_data_is_refused() {
        let secret_box = SecretBox::new(&SecretString::from("s"));
        let mut sealed = secret_box.seal("k");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(secret_box.open(&sealed).is_err());
        assert!(secret_box.open(&[1, 2, 3]).is_err());
    }
}
