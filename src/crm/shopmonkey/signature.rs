//! ShopMonkey webhook signatures. ShopMonkey's own page on the scheme could not be read; its
//! header names are exactly those of Standard Webhooks, so this module implements that scheme
//! (reference §1.7, marked assumed). Everything ShopMonkey-specific about signing lives here, so
//! it is one place to correct.
//!
//! `signed = webhook-id + "." + webhook-timestamp + "." + raw body`;
//! `webhook-signature = "v1," + base64(HMAC-SHA256(key, signed))` (space-separated list);
//! the key is the base64 after `whsec_` when the secret has that prefix, else the secret's bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a webhook's timestamp may be from our clock.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the {TOLERANCE_SECS} s tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

fn key_bytes(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_").map(|b64| STANDARD.decode(b64)) {
        Some(Ok(bytes)) => bytes,
        _ => secret.as_bytes().to_vec(),
    }
}

fn mac(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes(secret)).expect("hmac takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Returns the `webhook-signature` header value for a delivery.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, id, &timestamp.to_string(), body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Verifies a delivery's headers against the raw body, at time `now_secs`.
///
/// # Errors
/// A missing header, a stale or malformed timestamp, or no matching `v1` signature.
pub fn verify(
    secret: &str,
    id_opt: Option<&str>,
    timestamp_opt: Option<&str>,
    signature_opt: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let id = id_opt.ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp_opt.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signatures = signature_opt.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let sent_at: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now_secs - sent_at).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, id, timestamp.trim(), body);
    let matched = signatures.split_whitespace().filter_map(|item| item.split_once(',')).any(|(version, b64)| {
        version == "v1" && STANDARD.decode(b64).is_ok_and(|tag| expected.clone().verify_slice(&tag).is_ok())
    });
    if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY";
    const BODY: &[u8] = br#"{"apiVersion":"3","operation":"INSERT","table":"order","data":{"id":"ord_1"}}"#;
    const TS: i64 = 1_767_225_600;

    #[test]
    fn the_reference_test_vector_signs_as_documented() {
        assert_eq!(sign(SECRET, "msg_test_0001", TS, BODY), "v1,z1HDloxqCnq3cVTomy13LoOgu8GhsNlc9xqUVRdynXI=");
    }

    #[test]
    fn a_valid_signature_among_several_verifies() {
        let header = format!("v0,bogus {} v1,AAAA", sign(SECRET, "msg_test_0001", TS, BODY));
        assert_eq!(verify(SECRET, Some("msg_test_0001"), Some("1767225600"), Some(&header), BODY, TS + 10), Ok(()));
    }

    #[test]
    fn tampering_with_body_id_or_secret_fails() {
        let header = sign(SECRET, "msg_test_0001", TS, BODY);
        let verify_with = |secret, id, body| verify(secret, Some(id), Some("1767225600"), Some(&header), body, TS);
        assert_eq!(verify_with(SECRET, "msg_test_0001", b"{}"), Err(SignatureError::Mismatch));
        assert_eq!(verify_with(SECRET, "msg_test_0002", BODY), Err(SignatureError::Mismatch));
        assert_eq!(verify_with("whsec_AAAA", "msg_test_0001", BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn stale_or_missing_parts_are_refused() {
        let header = sign(SECRET, "m", TS, BODY);
        assert_eq!(
            verify(SECRET, Some("m"), Some("1767225600"), Some(&header), BODY, TS + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, None, Some("1"), Some(&header), BODY, TS),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        assert_eq!(verify(SECRET, Some("m"), Some("soon"), Some(&header), BODY, TS), Err(SignatureError::BadTimestamp));
        assert_eq!(
            verify(SECRET, Some("m"), Some("1767225600"), None, BODY, TS),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
    }

    #[test]
    fn a_plain_secret_without_prefix_is_used_as_bytes() {
        let header = sign("plain-secret-of-some-length", "m", TS, BODY);
        assert_eq!(
            verify("plain-secret-of-some-length", Some("m"), Some("1767225600"), Some(&header), BODY, TS),
            Ok(())
        );
    }
}
