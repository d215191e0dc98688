//! Magic links: `{public_url}/c/{token}`, where the token carries the tenant, the lead and an
//! expiry, authenticated with HMAC-SHA256 under a key derived from `LEADORCH_SECRET_KEY`. The
//! token opens only its own lead's chat; a tampered or expired one is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use leadorch_actors::domain::{LeadId, TenantId};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Bytes of the HMAC tag kept in a token (96 bits: forgery needs 2^96 tries).
const TAG_LEN: usize = 12;
/// Tenant id, lead id, expiry in whole minutes since the Unix epoch (u32: good until 10136).
const BODY_LEN: usize = 16 + 16 + 4;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link is malformed")]
    Malformed,
    #[error("link signature does not match")]
    BadSignature,
    #[error("link has expired")]
    Expired,
}

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkClaims {
    pub tenant_id: TenantId,
    pub lead_id: LeadId,
    pub expires_at: Timestamp,
}

/// Signs and verifies magic links.
#[derive(Clone)]
pub struct LinkSigner {
    key: [u8; 32],
    public_url: String,
    valid_for: SignedDuration,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// Derives the signing key from the deployment secret (separated from the encryption key by
    /// a label, so one never serves as the other).
    pub fn new(secret_key: &SecretString, public_url: &str, valid_for: SignedDuration) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"leadorch magic link v1\0");
        hasher.update(secret_key.expose_secret().as_bytes());
        LinkSigner { key: hasher.finalize().into(), public_url: public_url.trim_end_matches('/').to_owned(), valid_for }
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Returns when a verified token was issued (to the minute: expiry is stored in minutes).
    pub fn issued_at(&self, claims: &LinkClaims) -> Timestamp {
        claims.expires_at.saturating_sub(self.valid_for).unwrap_or(claims.expires_at)
    }

    /// Returns a token for the lead, valid until `now + valid_for`.
    pub fn token(&self, tenant_id: TenantId, lead_id: LeadId, now: Timestamp) -> String {
        let expires_minutes = u32::try_from((now + self.valid_for).as_second().div_euclid(60)).unwrap_or(u32::MAX);
        let mut bytes = Vec::with_capacity(BODY_LEN + TAG_LEN);
        bytes.extend_from_slice(tenant_id.as_uuid().as_bytes());
        bytes.extend_from_slice(lead_id.as_uuid().as_bytes());
        bytes.extend_from_slice(&expires_minutes.to_be_bytes());
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Returns the full link for the lead.
    pub fn link(&self, tenant_id: TenantId, lead_id: LeadId, now: Timestamp) -> String {
        format!("{}/c/{}", self.public_url, self.token(tenant_id, lead_id, now))
    }

    /// Checks a token at `now`.
    ///
    /// # Errors
    /// Malformed, forged or expired.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<LinkClaims, LinkError> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| LinkError::Malformed)?;
        if bytes.len() != BODY_LEN + TAG_LEN {
            return Err(LinkError::Malformed);
        }
        let (body, tag) = bytes.split_at(BODY_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(body);
        mac.verify_truncated_left(tag).map_err(|_| LinkError::BadSignature)?;
        let uuid_at = |from: usize| Uuid::from_slice(&body[from..from + 16]).map_err(|_| LinkError::Malformed);
        let mut expires = [0u8; 4];
        expires.copy_from_slice(&body[32..36]);
        let expires_at =
            Timestamp::from_second(i64::from(u32::from_be_bytes(expires)) * 60).map_err(|_| LinkError::Malformed)?;
        if expires_at <= now {
            return Err(LinkError::Expired);
        }
        Ok(LinkClaims {
            tenant_id: TenantId::from_uuid(uuid_at(0)?),
            lead_id: LeadId::from_uuid(uuid_at(16)?),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(
            &SecretString::from("test secret"),
            "https://leads.example.com/",
            SignedDuration::from_hours(24 * 14),
        )
    }

    #[test]
    fn a_link_verifies_to_its_tenant_and_lead_until_it_expires() {
        let (tenant, lead, now) = (TenantId::new(), LeadId::new(), Timestamp::now());
        let link = signer().link(tenant, lead, now);
        let token = link.strip_prefix("https://leads.example.com/c/").expect("prefix");

        let claims = signer().verify(token, now).expect("valid");

        assert_eq!((claims.tenant_id, claims.lead_id), (tenant, lead));
        assert!(token.len() <= 64, "short enough for an sms: {}", token.len());
        assert_eq!(signer().verify(token, now + SignedDuration::from_hours(24 * 15)), Err(LinkError::Expired));
    }

    #[test]
    fn tampered_foreign_or_garbage_tokens_are_refused() {
        let token = signer().token(TenantId::new(), LeadId::new(), Timestamp::now());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("b64");
        bytes[20] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        let other = LinkSigner::new(&SecretString::from("other"), "https://x", SignedDuration::from_hours(1));

        assert_eq!(signer().verify(&tampered, Timestamp::now()), Err(LinkError::BadSignature));
        assert_eq!(other.verify(&token, Timestamp::now()), Err(LinkError::BadSignature));
        assert_eq!(signer().verify("not a token!", Timestamp::now()), Err(LinkError::Malformed));
        assert_eq!(signer().verify("AAAA", Timestamp::now()), Err(LinkError::Malformed));
    }
}
