//! Typed identifiers for tenants, locations, leads, touchpoints and API keys. Each is a UUID v7
//! newtype so ids of different kinds can't be mixed up; storage and routing are left to callers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Describes an id string that is not a UUID.
///
/// The message names the kind of id and the UUID parser's complaint. The underlying
/// `uuid::Error` is folded into the message rather than exposed as a source, so a printed error
/// chain doesn't repeat it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdParseError {
    kind: &'static str,
    reason: uuid::Error,
}

impl IdParseError {
    /// Returns the kind of id that failed to parse, e.g. "tenant id".
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// Defines a UUID v7 newtype with the common constructors, conversions and trait impls.
macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            #[doc = concat!("Creates a fresh ", $kind, " from a UUID v7, so ids sort by creation time.")]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            #[doc = concat!("Wraps an existing UUID as a ", $kind, " without checking its version.")]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            #[doc = concat!("Returns the UUID inside this ", $kind, ".")]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|reason| IdParseError { kind: $kind, reason })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id!(
    /// Identifies a tenant: one auto-service franchise and everything it owns.
    TenantId,
    "tenant id"
);
uuid_id!(
    /// Identifies one shop location of a tenant.
    LocationId,
    "location id"
);
uuid_id!(
    /// Identifies a lead: one prospective customer at one location.
    LeadId,
    "lead id"
);
uuid_id!(
    /// Identifies one planned or sent touchpoint (SMS, email or call) of a lead.
    TouchpointId,
    "touchpoint id"
);
uuid_id!(
    /// Identifies an API key a tenant uses to call the service.
    ApiKeyId,
    "api key id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_uuid_v7() {
        let id = LeadId::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn ids_created_later_sort_after_earlier_ones() {
        let ids: Vec<TouchpointId> = (0..100).map(|_| TouchpointId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn display_then_parse_round_trips() {
        let id = TenantId::new();
        let parsed: TenantId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
    }

    #[test]
    fn display_is_the_hyphenated_uuid() {
        let uuid = Uuid::parse_str("0190b4a2-7c1e-7d3a-9f00-123456789abc").unwrap();
        assert_eq!(LocationId::from_uuid(uuid).to_string(), "0190b4a2-7c1e-7d3a-9f00-123456789abc");
    }

    #[test]
    fn parse_error_names_the_kind_of_id() {
        let err = "not-a-uuid".parse::<TenantId>().unwrap_err();
        assert_eq!(err.kind(), "tenant id");
        assert!(err.to_string().starts_with("invalid tenant id: "), "{err}");

        let err = "".parse::<ApiKeyId>().unwrap_err();
        assert!(err.to_string().starts_with("invalid api key id: "), "{err}");
    }

    #[test]
    fn serde_uses_the_bare_uuid_string() {
        let id = LeadId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: LeadId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn from_uuid_and_as_uuid_are_inverse() {
        let uuid = Uuid::new_v4();
        assert_eq!(TouchpointId::from_uuid(uuid).as_uuid(), uuid);
        assert_eq!(Uuid::from(ApiKeyId::from(uuid)), uuid);
    }
}
