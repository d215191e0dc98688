//! Email addresses. Owns syntax checking (via `email_address`) and normalising the domain to
//! lower case; whether the mailbox exists is left to the email adapter's bounce handling.

use std::fmt;

use email_address::{EmailAddress, Options};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
const MAX_LEN: usize = 254;

/// Describes why a string is not a usable email address.
///
/// Messages never echo the input, because an email address is personal data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// The input is empty or only whitespace.
    #[error("email address is empty")]
    Empty,
    /// The input is longer than 254 bytes.
    #[error("email address is longer than {MAX_LEN} characters")]
    TooLong,
    /// The domain has no dot, e.g. "user@localhost".
    #[error("email address domain must contain a dot")]
    DomainWithoutDot,
    /// The input is not a syntactically valid address.
    #[error("email address is not valid")]
    Invalid,
}

/// Holds a syntactically valid email address with a lower-case domain.
///
/// The local part keeps its case, since RFC 5321 lets servers treat it case-sensitively.
///
/// `Debug` shows only the redacted form, since an address is PII and `Debug` ends up in traces.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email {
    address: String,
    /// Byte offset of the `@` that separates local part and domain.
    at: usize,
}

impl Email {
    /// Parses an email address, trimming surrounding whitespace and lower-casing the domain.
    ///
    /// Display names ("Ann <ann@example.com>") and IP-literal domains are rejected.
    ///
    /// # Errors
    /// Returns an [`EmailError`] naming what is wrong, without echoing the input.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(EmailError::Empty);
        }
        if input.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let options = Options::default().without_display_text().without_domain_literal();
        let parsed = EmailAddress::parse_with_options(input, options).map_err(|_| EmailError::Invalid)?;
        let domain = parsed.domain().to_lowercase();
        if !domain.contains('.') {
            return Err(EmailError::DomainWithoutDot);
        }
        let local = parsed.local_part();
        let address = format!("{local}@{domain}");
        // Lower-casing some non-ASCII letters lengthens them.
        if address.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        Ok(Self { at: local.len(), address })
    }

    /// Returns the normalised address.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// Returns the address with the local part masked but its first character ("p***@example.com"),
    /// for logs and traces.
    pub fn redacted(&self) -> String {
        let local = self.local_part();
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{}", self.domain())
    }

    /// Returns the lower-case domain, the part after the last `@`.
    pub fn domain(&self) -> &str {
        self.address.get(self.at + 1..).unwrap_or_default()
    }

    /// Returns the local part, the part before the last `@`, in its original case.
    pub fn local_part(&self) -> &str {
        self.address.get(..self.at).unwrap_or_default()
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.redacted()).finish()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.address
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.address)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_output_is_redacted() {
        let email = super::Email::parse("pat.lee@example.com").expect("valid");
        assert_eq!(format!("{email:?}"), "Email(\"p***@example.com\")");
    }

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn valid_addresses_are_trimmed_and_get_a_lower_case_domain() {
        let cases = [
            ("ann@example.com", "ann@example.com"),
            ("  Ann.Lee@Example.COM \n", "Ann.Lee@example.com"),
            ("bob+leads@mail.shop.co.uk", "bob+leads@mail.shop.co.uk"),
            ("\"odd local\"@example.org", "\"odd local\"@example.org"),
        ];
        for (input, expected) in cases {
            let email = Email::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(email.as_str(), expected);
            assert_eq!(email.to_string(), expected);
        }
    }

    #[test]
    fn domain_and_local_part_split_at_the_last_at_sign() {
        let email = Email::parse("Ann.Lee@Example.COM").unwrap();
        assert_eq!(email.domain(), "example.com");
        assert_eq!(email.local_part(), "Ann.Lee");

        let quoted = Email::parse("\"a@b\"@example.com").unwrap();
        assert_eq!(quoted.domain(), "example.com");
        assert_eq!(quoted.local_part(), "\"a@b\"");
    }

    #[test]
    fn bad_addresses_are_rejected_with_a_specific_error() {
        let too_long = format!("{}@example.com", "a".repeat(250));
        let cases = [
            ("", EmailError::Empty),
            ("  \t ", EmailError::Empty),
            (too_long.as_str(), EmailError::TooLong),
            ("ann@localhost", EmailError::DomainWithoutDot),
            ("ann", EmailError::Invalid),
            ("ann@", EmailError::Invalid),
            ("@example.com", EmailError::Invalid),
            ("ann@@example.com", EmailError::Invalid),
            ("ann lee@example.com", EmailError::Invalid),
            ("ann@example..com", EmailError::Invalid),
            ("ann@.example.com", EmailError::Invalid),
            ("Ann <ann@example.com>", EmailError::Invalid),
            ("ann@[127.0.0.1]", EmailError::Invalid),
        ];
        for (input, expected) in cases {
            assert_eq!(Email::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn error_messages_never_echo_the_input() {
        for input in ["secret.person@localhost", "secret.person", "Secret <x@y.com>"] {
            let message = Email::parse(input).unwrap_err().to_string();
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn serde_uses_the_address_string_and_validates_on_the_way_in() {
        let email = Email::parse("ann@example.com").unwrap();
        assert_eq!(serde_json::to_string(&email).unwrap(), "\"ann@example.com\"");
        let back: Email = serde_json::from_str("\" ann@EXAMPLE.com\"").unwrap();
        assert_eq!(back, email);
        assert!(serde_json::from_str::<Email>("\"ann@localhost\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(input in ".*") {
            let _ = Email::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_email_shaped_strings(input in "[a-zA-Z0-9.+\"<> @\\[\\]]{0,30}") {
            let _ = Email::parse(&input);
        }

        #[test]
        fn normalising_is_idempotent(
            local in "[a-zA-Z0-9][a-zA-Z0-9.+_-]{0,10}[a-zA-Z0-9]",
            domain in "[a-zA-Z0-9]{1,8}\\.[a-zA-Z]{2,4}",
        ) {
            if let Ok(email) = Email::parse(&format!("{local}@{domain}")) {
                prop_assert_eq!(email.domain(), domain.to_lowercase());
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email));
            }
        }
    }
}
