//! Cadences: a named, versioned list of follow-up steps. Each step says when (a delay from the
//! lead's arrival, optionally a local time of day), how (SMS or email, with a template) and
//! under which rule (inside business hours, or any time the law allows). A lead keeps the
//! version it started with: its plan is materialised when it is created.

use jiff::Span;
use jiff::civil::Time;
use serde::{Deserialize, Serialize};

use super::Channel;

/// When a step may go out, beyond the recipient's legal window (which always applies to SMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRule {
    /// Only while the location is open.
    BusinessHours,
    /// Whenever the recipient's allowed window permits (SMS) or at once (email).
    AnyTimeAllowed,
}

/// One step of a cadence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceStep {
    pub channel: Channel,
    /// Template name (`config/templates/{name}.sms` or `.email`).
    pub template: String,
    /// From the lead's arrival: "0s", "10m", "2d". Days are calendar days in the location's
    /// time zone (so "2d" keeps the local time across a DST change); smaller units are exact.
    pub delay: Span,
    /// If set, the step goes at the first occurrence of this local time (location's zone) at or
    /// after arrival + delay, e.g. "next business morning" is delay "1m", at "09:00".
    #[serde(default, rename = "at_local_time")]
    pub at_local_time_opt: Option<Time>,
    pub rule: StepRule,
}

/// A named, versioned cadence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    pub name: String,
    /// Bump when the steps change; leads keep the version they started with.
    pub version: i32,
    pub steps: Vec<CadenceStep>,
}

/// Every configured cadence and which one each tenant and location uses.
#[derive(Debug, Clone)]
pub struct CadenceBook {
    cadences: std::collections::HashMap<String, Cadence>,
    default_name: String,
    tenant_overrides: std::collections::HashMap<super::TenantId, String>,
    location_overrides: std::collections::HashMap<super::LocationId, String>,
}

/// Why a cadence book is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CadenceBookError {
    #[error("no cadence named `{0}`")]
    Unknown(String),
    #[error("cadence `{0}` is defined twice")]
    Duplicate(String),
    #[error("cadence `{0}` has no steps")]
    Empty(String),
    #[error("cadence `{name}` step {step}: delay must not be negative")]
    NegativeDelay { name: String, step: usize },
}

impl CadenceBook {
    /// Builds a book; every override must name a defined cadence.
    ///
    /// # Errors
    /// An unknown, duplicate or empty cadence, or a negative delay.
    pub fn new(
        cadences: Vec<Cadence>,
        default_name: &str,
        tenant_overrides: std::collections::HashMap<super::TenantId, String>,
        location_overrides: std::collections::HashMap<super::LocationId, String>,
    ) -> Result<CadenceBook, CadenceBookError> {
        let mut by_name = std::collections::HashMap::new();
        for cadence in cadences {
            if cadence.steps.is_empty() {
                return Err(CadenceBookError::Empty(cadence.name));
            }
            if let Some(step) = cadence.steps.iter().position(|s| s.delay.is_negative()) {
                return Err(CadenceBookError::NegativeDelay { name: cadence.name, step });
            }
            let name = cadence.name.clone();
            if by_name.insert(name.clone(), cadence).is_some() {
                return Err(CadenceBookError::Duplicate(name));
            }
        }
        let default_owned = default_name.to_owned();
        let named = tenant_overrides.values().chain(location_overrides.values()).chain(std::iter::once(&default_owned));
        for name in named {
            if !by_name.contains_key(name) {
                return Err(CadenceBookError::Unknown(name.clone()));
            }
        }
        Ok(CadenceBook {
            cadences: by_name,
            default_name: default_name.to_owned(),
            tenant_overrides,
            location_overrides,
        })
    }

    /// Returns the cadence for a location: its own override, else its tenant's, else the default.
    pub fn for_location(&self, tenant_id: super::TenantId, location_id: super::LocationId) -> &Cadence {
        let name = self
            .location_overrides
            .get(&location_id)
            .or_else(|| self.tenant_overrides.get(&tenant_id))
            .unwrap_or(&self.default_name);
        // `new` checked that every override and the default name a defined cadence.
        self.cadences.get(name).or_else(|| self.cadences.get(&self.default_name)).expect("checked in CadenceBook::new")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::{LocationId, TenantId};

    fn cadence(name: &str, version: i32) -> Cadence {
        let step = CadenceStep {
            channel: Channel::Sms,
            template: "first_sms".into(),
            delay: Span::new(),
            at_local_time_opt: None,
            rule: StepRule::AnyTimeAllowed,
        };
        Cadence { name: name.into(), version, steps: vec![step] }
    }

    #[test]
    fn a_location_override_beats_its_tenants_which_beats_the_default() {
        let (tenant, other_tenant, location) = (TenantId::new(), TenantId::new(), LocationId::new());
        let book = CadenceBook::new(
            vec![cadence("default", 1), cadence("tenant", 1), cadence("location", 1)],
            "default",
            HashMap::from([(tenant, "tenant".to_owned())]),
            HashMap::from([(location, "location".to_owned())]),
        )
        .expect("valid");
        assert_eq!(book.for_location(tenant, location).name, "location");
        assert_eq!(book.for_location(tenant, LocationId::new()).name, "tenant");
        assert_eq!(book.for_location(other_tenant, LocationId::new()).name, "default");
    }

    #[test]
    fn overrides_naming_unknown_cadences_and_empty_cadences_are_refused() {
        let unknown = CadenceBook::new(
            vec![cadence("default", 1)],
            "default",
            HashMap::from([(TenantId::new(), "nope".into())]),
            HashMap::new(),
        );
        assert_eq!(unknown.err(), Some(CadenceBookError::Unknown("nope".into())));
        let empty = CadenceBook::new(
            vec![Cadence { name: "x".into(), version: 1, steps: vec![] }],
            "x",
            HashMap::new(),
            HashMap::new(),
        );
        assert_eq!(empty.err(), Some(CadenceBookError::Empty("x".into())));
        let missing_default = CadenceBook::new(vec![cadence("a", 1)], "default", HashMap::new(), HashMap::new());
        assert!(missing_default.is_err());
    }
}
