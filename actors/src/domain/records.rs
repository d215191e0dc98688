//! The aggregates the service stores: tenants, locations, leads and their touchpoints, and raw
//! inbox events. Field values are already validated ([`Phone`], [`Email`], [`TimeZoneName`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Email, LeadId, LocationId, Phone, TenantId, TimeZoneName, TouchpointId};

/// A franchisor: one deployment serves many.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub active: bool,
    pub created_at: Timestamp,
}

/// A location to be created.
#[derive(Debug, Clone)]
pub struct NewLocation {
    pub tenant_id: TenantId,
    pub crm_location_id: String,
    pub name: String,
    pub address_opt: Option<String>,
    pub phone_opt: Option<Phone>,
    pub timezone: TimeZoneName,
    /// The Twilio number this location texts from.
    pub sms_from_opt: Option<Phone>,
    /// How many SMS per second its number may send (a US long code: about 1).
    pub sms_rate_per_sec: f64,
    pub email_from_opt: Option<Email>,
}

/// One shop of a franchise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Location {
    pub id: LocationId,
    pub tenant_id: TenantId,
    pub crm_location_id: String,
    pub name: String,
    #[serde(rename = "address")]
    pub address_opt: Option<String>,
    #[serde(rename = "phone")]
    pub phone_opt: Option<Phone>,
    pub timezone: TimeZoneName,
    #[serde(rename = "sms_from")]
    pub sms_from_opt: Option<Phone>,
    pub sms_rate_per_sec: f64,
    #[serde(rename = "email_from")]
    pub email_from_opt: Option<Email>,
    pub active: bool,
    pub created_at: Timestamp,
}

/// Where a lead is in its life. Every state but `New`, `InCadence` and `Paused` is terminal for
/// the cadence: no further touch leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    New,
    InCadence,
    Replied,
    Booked,
    Won,
    OptedOut,
    Closed,
    Paused,
    Exhausted,
}

impl LeadStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [LeadStatus; 9] = [
        LeadStatus::New,
        LeadStatus::InCadence,
        LeadStatus::Replied,
        LeadStatus::Booked,
        LeadStatus::Won,
        LeadStatus::OptedOut,
        LeadStatus::Closed,
        LeadStatus::Paused,
        LeadStatus::Exhausted,
    ];

    /// Returns the stored name (`in_cadence`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::InCadence => "in_cadence",
            LeadStatus::Replied => "replied",
            LeadStatus::Booked => "booked",
            LeadStatus::Won => "won",
            LeadStatus::OptedOut => "opted_out",
            LeadStatus::Closed => "closed",
            LeadStatus::Paused => "paused",
            LeadStatus::Exhausted => "exhausted",
        }
    }

    /// Parses a stored name; `None` for anything else.
    pub fn parse(value: &str) -> Option<LeadStatus> {
        LeadStatus::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Returns true when no further touch may leave for a lead in this status.
    pub fn stops_cadence(self) -> bool {
        !matches!(self, LeadStatus::New | LeadStatus::InCadence | LeadStatus::Paused)
    }
}

impl std::fmt::Display for LeadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The customer's vehicle as the CRM describes it; every part may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vehicle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub make: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodel: Option<String>,
}

impl Vehicle {
    /// Returns "2021 Toyota Camry"-style text, or `None` when nothing is known.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [self.year.map(|y| y.to_string()), self.make.clone(), self.model.clone()]
            .into_iter()
            .flatten()
            .filter(|p| !p.trim().is_empty())
            .collect();
        if parts.is_empty() { None } else { Some(parts.join(" ")) }
    }
}

/// A lead to be created from a CRM order.
#[derive(Debug, Clone)]
pub struct NewLead {
    pub tenant_id: TenantId,
    pub location_id: LocationId,
    /// Which CRM the order came from (`shopmonkey`).
    pub crm_source: String,
    pub crm_order_id: String,
    pub crm_customer_id_opt: Option<String>,
    pub first_name_opt: Option<String>,
    pub last_name_opt: Option<String>,
    pub phone_opt: Option<Phone>,
    pub email_opt: Option<Email>,
    pub vehicle_opt: Option<Vehicle>,
    pub requested_services: Vec<String>,
    /// When the order reached us: the start of speed-to-lead.
    pub received_at: Timestamp,
}

/// A customer who asked for an estimate, and where their follow-up stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lead {
    pub id: LeadId,
    pub tenant_id: TenantId,
    pub location_id: LocationId,
    pub crm_source: String,
    pub crm_order_id: String,
    #[serde(rename = "crm_customer_id")]
    pub crm_customer_id_opt: Option<String>,
    pub status: LeadStatus,
    #[serde(rename = "first_name")]
    pub first_name_opt: Option<String>,
    #[serde(rename = "last_name")]
    pub last_name_opt: Option<String>,
    #[serde(rename = "phone")]
    pub phone_opt: Option<Phone>,
    #[serde(rename = "email")]
    pub email_opt: Option<Email>,
    #[serde(rename = "vehicle")]
    pub vehicle_opt: Option<Vehicle>,
    pub requested_services: Vec<String>,
    #[serde(rename = "cadence_name")]
    pub cadence_name_opt: Option<String>,
    #[serde(rename = "cadence_version")]
    pub cadence_version_opt: Option<i32>,
    pub received_at: Timestamp,
    #[serde(rename = "first_touch_at")]
    pub first_touch_at_opt: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How a touch reaches the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    /// Returns the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Channel> {
        match value {
            "sms" => Some(Channel::Sms),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one planned touch stands. A touch moves pending -> sending (claimed) -> sent ->
/// delivered, or ends failed, cancelled (a stop condition) or skipped (would have gone stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchpointStatus {
    Pending,
    Sending,
    Sent,
    Delivered,
    Failed,
    Cancelled,
    Skipped,
}

impl TouchpointStatus {
    /// Every status.
    pub const ALL: [TouchpointStatus; 7] = [
        TouchpointStatus::Pending,
        TouchpointStatus::Sending,
        TouchpointStatus::Sent,
        TouchpointStatus::Delivered,
        TouchpointStatus::Failed,
        TouchpointStatus::Cancelled,
        TouchpointStatus::Skipped,
    ];

    /// Returns the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TouchpointStatus::Pending => "pending",
            TouchpointStatus::Sending => "sending",
            TouchpointStatus::Sent => "sent",
            TouchpointStatus::Delivered => "delivered",
            TouchpointStatus::Failed => "failed",
            TouchpointStatus::Cancelled => "cancelled",
            TouchpointStatus::Skipped => "skipped",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<TouchpointStatus> {
        TouchpointStatus::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl std::fmt::Display for TouchpointStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a lead's plan, to be materialised with the lead.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTouchpoint {
    pub step_index: u32,
    pub channel: Channel,
    pub template: String,
    /// When the cadence meant it to go (lead creation + the step's offset).
    pub intended_at: Timestamp,
    /// When the compliance clock placed it (never earlier than `intended_at`).
    pub scheduled_at: Timestamp,
    /// Why it was moved, if it was ("quiet hours in America/New_York", ...).
    pub placement_reason_opt: Option<String>,
}

/// One planned touch of a lead, with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Touchpoint {
    pub id: TouchpointId,
    pub tenant_id: TenantId,
    pub lead_id: LeadId,
    pub step_index: u32,
    pub channel: Channel,
    pub template: String,
    pub status: TouchpointStatus,
    pub intended_at: Timestamp,
    pub scheduled_at: Timestamp,
    #[serde(rename = "placement_reason")]
    pub placement_reason_opt: Option<String>,
    pub attempts: u32,
    #[serde(rename = "attempt_id")]
    pub attempt_id_opt: Option<uuid::Uuid>,
    #[serde(rename = "provider_message_id")]
    pub provider_message_id_opt: Option<String>,
    #[serde(rename = "provider_status")]
    pub provider_status_opt: Option<String>,
    #[serde(rename = "last_error")]
    pub last_error_opt: Option<String>,
    #[serde(rename = "sent_at")]
    pub sent_at_opt: Option<Timestamp>,
}

/// A raw webhook event as committed before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxEvent {
    pub id: i64,
    pub tenant_id: TenantId,
    pub source: String,
    pub event_id: String,
    pub payload: serde_json::Value,
    pub received_at: Timestamp,
    #[serde(rename = "processed_at")]
    pub processed_at_opt: Option<Timestamp>,
    #[serde(rename = "outcome")]
    pub outcome_opt: Option<String>,
    pub attempts: u32,
    #[serde(rename = "last_error")]
    pub last_error_opt: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lead_status_round_trips_through_its_stored_name() {
        for status in LeadStatus::ALL {
            assert_eq!(LeadStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(LeadStatus::parse("bogus"), None);
    }

    #[test]
    fn every_touchpoint_status_round_trips_through_its_stored_name() {
        for status in TouchpointStatus::ALL {
            assert_eq!(TouchpointStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn only_active_statuses_let_the_cadence_continue() {
        let continuing: Vec<_> = LeadStatus::ALL.into_iter().filter(|s| !s.stops_cadence()).collect();
        assert_eq!(continuing, vec![LeadStatus::New, LeadStatus::InCadence, LeadStatus::Paused]);
    }

    #[test]
    fn a_vehicle_describes_itself_from_what_is_known() {
        let vehicle =
            Vehicle { year: Some(2021), make: Some("Toyota".into()), model: Some("Camry".into()), submodel: None };
        assert_eq!(vehicle.describe().as_deref(), Some("2021 Toyota Camry"));
        assert_eq!(Vehicle::default().describe(), None);
    }
}

/// The result of an idempotent lead create.
#[derive(Debug, Clone, PartialEq)]
pub enum LeadCreated {
    /// A new lead (and its plan) was written.
    Created(Lead),
    /// The order was already a lead (the webhook and the poller converge here); nothing written.
    Existing(Lead),
}

impl LeadCreated {
    /// Returns the lead either way.
    pub fn lead(&self) -> &Lead {
        match self {
            LeadCreated::Created(lead) | LeadCreated::Existing(lead) => lead,
        }
    }
}

/// Which cadence (name and version) a new lead's plan was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CadenceRef<'a> {
    pub name: &'a str,
    pub version: i32,
}

/// The result of committing an inbox event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxInsert {
    /// A new row with this id.
    Inserted(i64),
    /// The same event was committed before; nothing written.
    Duplicate,
}

/// One run of a periodic job (the poller), as recorded in `job_executions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub job: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The high-water mark after the run; the next run starts from it.
    pub cursor_opt: Option<String>,
    pub items_seen: u32,
    pub items_new: u32,
    pub error_opt: Option<String>,
}
