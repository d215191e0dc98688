//! SendGrid's signed Event Webhook (reference §3.4): checks that a POSTed event batch was signed
//! by the account's verification key, and, for the local fake and tests, signs batches the same
//! way.
//!
//! It owns the signature scheme only: ECDSA over P-256 with SHA-256, where the signed bytes are
//! the `X-Twilio-Email-Event-Webhook-Timestamp` header string followed by the raw request body,
//! and the `X-Twilio-Email-Event-Webhook-Signature` header is the base64 of a DER signature.
//! Rejecting stale timestamps, parsing the events and de-duplicating them on `sg_event_id` are
//! left to the webhook handler.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

/// The header carrying the base64 DER ECDSA signature of an event batch.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
/// The header carrying the decimal Unix timestamp that is signed together with the body.
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// Why a verification key could not be loaded. Messages never echo the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventKeyError {
    /// The key text is not standard base64 (or a PEM block of it).
    #[error("sendgrid verification key is not base64")]
    NotBase64,
    /// The decoded bytes are not a DER SubjectPublicKeyInfo of a P-256 public key.
    #[error("sendgrid verification key is not a p-256 subjectpublickeyinfo")]
    NotP256PublicKey,
}

/// Verifies signed Event Webhook batches against the account's verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct EventVerifier {
    key: VerifyingKey,
}

impl fmt::Debug for EventVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventVerifier").field("public_key", &public_key_base64(&self.key)).finish()
    }
}

impl EventVerifier {
    /// Loads the "verification key" shown in SendGrid's settings: the base64 of a DER
    /// SubjectPublicKeyInfo for P-256. A PEM block (`-----BEGIN PUBLIC KEY-----` ...) of the same
    /// key is accepted too; surrounding whitespace and line breaks are ignored.
    ///
    /// # Errors
    /// [`EventKeyError`] when the text is not base64 or not a P-256 public key.
    pub fn from_base64_spki(key: &str) -> Result<Self, EventKeyError> {
        let base64_text: String = key
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("-----"))
            .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let der = BASE64.decode(base64_text.as_bytes()).map_err(|_| EventKeyError::NotBase64)?;
        let key = VerifyingKey::from_public_key_der(&der).map_err(|_| EventKeyError::NotP256PublicKey)?;
        Ok(Self { key })
    }

    /// Returns true when `signature_header_b64_der` is a valid signature of
    /// `timestamp_header + raw_body` by this key.
    ///
    /// Both headers are used exactly as received, and `raw_body` must be the body bytes exactly
    /// as received (SendGrid's own test payload ends with `\r\n`, which is signed too). A
    /// signature that is not base64 or not DER is simply invalid. This does not judge the
    /// timestamp's age.
    pub fn verify(&self, timestamp_header: &str, signature_header_b64_der: &str, raw_body: &[u8]) -> bool {
        let Ok(der) = BASE64.decode(signature_header_b64_der.trim().as_bytes()) else {
            return false;
        };
        let Ok(signature) = Signature::from_der(&der) else {
            return false;
        };
        self.key.verify(&signed_bytes(timestamp_header, raw_body), &signature).is_ok()
    }

    /// Returns the key as base64 DER SubjectPublicKeyInfo, the form it was loaded from.
    pub fn public_key_base64_spki(&self) -> String {
        public_key_base64(&self.key)
    }
}

/// Signs event batches the way SendGrid does, with a P-256 key made at random on creation.
/// Used by the local fake and by tests; production only verifies.
#[derive(Clone)]
pub struct EventSigner {
    key: SigningKey,
}

impl fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key never leaves the struct; the public half identifies it.
        f.debug_struct("EventSigner").field("public_key", &self.public_key_base64_spki()).finish_non_exhaustive()
    }
}

impl Default for EventSigner {
    fn default() -> Self {
        Self::generate()
    }
}

impl EventSigner {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self { key: SigningKey::random(&mut OsRng) }
    }

    /// Returns the public key as base64 DER SubjectPublicKeyInfo, the form SendGrid shows as
    /// the verification key and [`EventVerifier::from_base64_spki`] reads.
    pub fn public_key_base64_spki(&self) -> String {
        public_key_base64(self.key.verifying_key())
    }

    /// Returns a verifier for this signer's public key.
    pub fn verifier(&self) -> EventVerifier {
        EventVerifier { key: *self.key.verifying_key() }
    }

    /// Signs `timestamp + body` and returns the base64 DER signature, the value of
    /// [`SIGNATURE_HEADER`]; `timestamp` is sent unchanged as [`TIMESTAMP_HEADER`].
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let signature: Signature = self.key.sign(&signed_bytes(timestamp, body));
        BASE64.encode(signature.to_der().as_bytes())
    }
}

/// Returns the bytes SendGrid signs: the timestamp header, then the body, with no separator.
fn signed_bytes(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(timestamp.len() + body.len());
    bytes.extend_from_slice(timestamp.as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn public_key_base64(key: &VerifyingKey) -> String {
    let der = key.to_public_key_der().expect("a p-256 public key always encodes as subjectpublickeyinfo der");
    BASE64.encode(der.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Public test data from sendgrid/sendgrid-python `test/unit/test_eventwebhook.py`.
    const SG_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const SG_SIGNATURE: &str =
        "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const SG_TIMESTAMP: &str = "1600112502";
    /// `json.dumps([...], sort_keys=True, separators=(',', ':')) + '\r\n'` of the Python test.
    const SG_PAYLOAD: &str = concat!(
        r#"[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address","#,
        r#""sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA","#,
        r#""sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0","#,
        r#""smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]"#,
        "\r\n"
    );
    const SG_OTHER_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const SG_OTHER_SIGNATURE: &str =
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";

    fn sendgrid_verifier() -> EventVerifier {
        EventVerifier::from_base64_spki(SG_PUBLIC_KEY).expect("sendgrid's test key loads")
    }

    #[test]
    fn sendgrid_python_known_answer_verifies() {
        assert!(sendgrid_verifier().verify(SG_TIMESTAMP, SG_SIGNATURE, SG_PAYLOAD.as_bytes()));
    }

    #[test]
    fn sendgrid_python_known_answer_fails_with_another_key() {
        let other = EventVerifier::from_base64_spki(SG_OTHER_PUBLIC_KEY).expect("other key loads");
        assert!(!other.verify(SG_TIMESTAMP, SG_SIGNATURE, SG_PAYLOAD.as_bytes()));
    }

    #[test]
    fn sendgrid_python_known_answer_fails_with_a_changed_payload_signature_or_timestamp() {
        let verifier = sendgrid_verifier();
        assert!(!verifier.verify(SG_TIMESTAMP, SG_SIGNATURE, b"payload"));
        assert!(!verifier.verify(SG_TIMESTAMP, SG_OTHER_SIGNATURE, SG_PAYLOAD.as_bytes()));
        assert!(!verifier.verify("timestamp", SG_SIGNATURE, SG_PAYLOAD.as_bytes()));
    }

    #[test]
    fn dropping_the_trailing_crlf_breaks_the_known_answer() {
        let trimmed = SG_PAYLOAD.trim_end();
        assert!(!sendgrid_verifier().verify(SG_TIMESTAMP, SG_SIGNATURE, trimmed.as_bytes()));
    }

    #[test]
    fn signer_output_verifies_with_its_public_key() {
        let signer = EventSigner::generate();
        let body = br#"[{"event":"processed"}]"#;

        let signature = signer.sign("1767225600", body);
        let verifier = EventVerifier::from_base64_spki(&signer.public_key_base64_spki()).expect("key loads");

        assert!(verifier.verify("1767225600", &signature, body));
        assert!(signer.verifier().verify("1767225600", &signature, body));
        assert_eq!(verifier, signer.verifier());
    }

    #[test]
    fn tampered_body_or_timestamp_fails() {
        let signer = EventSigner::generate();
        let signature = signer.sign("1767225600", b"[1]");
        let verifier = signer.verifier();

        assert!(!verifier.verify("1767225600", &signature, b"[2]"));
        assert!(!verifier.verify("1767225601", &signature, b"[1]"));
        // The timestamp and body are concatenated without a separator, so moving bytes across
        // the boundary keeps the signed bytes equal: that is SendGrid's scheme, not a bug here.
        assert!(verifier.verify("17672256", &signature, b"00[1]"));
    }

    #[test]
    fn signature_of_another_key_fails() {
        let signature = EventSigner::generate().sign("1767225600", b"[]");
        assert!(!EventSigner::generate().verifier().verify("1767225600", &signature, b"[]"));
    }

    #[test]
    fn garbage_signatures_are_invalid_rather_than_errors() {
        let verifier = EventSigner::generate().verifier();
        for signature in ["", "not base64!", "AAAA", "MEUCIA=="] {
            assert!(!verifier.verify("1767225600", signature, b"[]"), "{signature:?}");
        }
    }

    #[test]
    fn pem_armoured_key_loads_like_the_bare_base64() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &SG_PUBLIC_KEY[..64],
            &SG_PUBLIC_KEY[64..]
        );
        assert_eq!(EventVerifier::from_base64_spki(&pem), Ok(sendgrid_verifier()));
    }

    #[test]
    fn keys_that_are_not_base64_p256_spki_are_refused() {
        assert_eq!(EventVerifier::from_base64_spki("%%%"), Err(EventKeyError::NotBase64));
        assert_eq!(EventVerifier::from_base64_spki("AAAA"), Err(EventKeyError::NotP256PublicKey));
        assert_eq!(EventVerifier::from_base64_spki(""), Err(EventKeyError::NotP256PublicKey));
    }

    #[test]
    fn public_key_round_trips_and_debug_shows_no_private_key() {
        let signer = EventSigner::generate();
        let public = signer.public_key_base64_spki();
        assert_eq!(EventVerifier::from_base64_spki(&public).expect("key loads").public_key_base64_spki(), public);
        let printed = format!("{signer:?}");
        assert!(printed.contains(&public), "{printed}");
        assert!(!printed.contains("SigningKey"), "{printed}");
    }
}
