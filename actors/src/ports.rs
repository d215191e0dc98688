//! What the core needs from the world, as traits: a clock now, and the stores, CRM, senders and
//! AI providers as the actors that use them land. Adapters in the `leadorch` crate implement them;
//! `testing` (feature `test-util`) has in-memory doubles.

use std::error::Error as StdError;

use jiff::Timestamp;

use crate::domain::{
    CadenceRef, CrmAppointment, CrmCannedService, CrmCustomer, CrmLocation, CrmOrder, CrmPage, CrmVehicle, InboxEvent,
    JobRun, Lead, LeadCreated, LeadId, Location, NewCrmAppointment, NewLead, NewTouchpoint, TenantId,
};

/// A boxed underlying error, kept as the `source` of a port error.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Renders an error with its whole source chain ("a: b: c"), for logs and stored reasons.
pub fn error_chain(err: &dyn StdError) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// Why a store call failed. Adapters translate driver errors into these at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist, or belongs to another tenant (indistinguishable on purpose).
    #[error("not found")]
    NotFound,
    /// A uniqueness or foreign-key rule refused the write.
    #[error("conflict on {constraint}")]
    Conflict { constraint: String },
    /// The database could not be reached in time; the caller may retry or answer 503.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// The data broke a rule the database checks (a CHECK constraint or a bad stored value).
    #[error("invalid data: {0}")]
    Invalid(String),
    /// Anything else: a bug or an unexpected database answer.
    #[error("store error")]
    Other(#[source] BoxError),
}

impl StoreError {
    /// Returns true when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The source of "now". Production uses the system clock; tests use a manual one so timelines
/// are deterministic.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Returns the current instant.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Why a CRM call failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The tenant has no CRM key configured.
    #[error("no crm key configured for this tenant")]
    NotConfigured,
    /// The key was refused (401).
    #[error("crm refused the credentials")]
    Unauthorized,
    /// The key lacks permission (403).
    #[error("crm denied access")]
    Forbidden,
    #[error("not found in the crm")]
    NotFound,
    /// 429 after the client's own retries; `retry_after_opt` is the server's hint.
    #[error("crm rate limited")]
    RateLimited { retry_after_opt: Option<std::time::Duration> },
    /// 5xx or a connection failure after the client's own retries.
    #[error("crm unavailable: {0}")]
    Unavailable(String),
    #[error("crm timed out")]
    Timeout,
    /// Another 4xx: the request itself was wrong; retrying will not help.
    #[error("crm rejected the request ({status}): {message}")]
    Rejected { status: u16, code_opt: Option<String>, message: String },
    /// The answer did not have the expected shape.
    #[error("unexpected crm response: {0}")]
    InvalidResponse(String),
}

impl CrmError {
    /// Returns true when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::RateLimited { .. } | CrmError::Unavailable(_) | CrmError::Timeout)
    }
}

/// The shop CRM (ShopMonkey), per tenant: each call names the tenant whose key it uses.
#[async_trait::async_trait]
pub trait Crm: Send + Sync + std::fmt::Debug {
    /// Returns one order.
    async fn get_order(&self, tenant_id: TenantId, order_id: &str) -> Result<CrmOrder, CrmError>;

    /// Returns one customer with their emails and phone numbers.
    async fn get_customer(&self, tenant_id: TenantId, customer_id: &str) -> Result<CrmCustomer, CrmError>;

    /// Returns one vehicle.
    async fn get_vehicle(&self, tenant_id: TenantId, vehicle_id: &str) -> Result<CrmVehicle, CrmError>;

    /// Returns one page of orders whose `updatedDate` is at or after `since` (the caller overlaps
    /// windows and de-duplicates: the CRM's paging is not reliable).
    async fn list_orders_updated_since(
        &self,
        tenant_id: TenantId,
        since: Timestamp,
        skip: u32,
        limit: u32,
    ) -> Result<CrmPage<CrmOrder>, CrmError>;

    /// Returns the canned services (price list) of one CRM location, every page.
    async fn list_canned_services(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
    ) -> Result<Vec<CrmCannedService>, CrmError>;

    /// Returns the tenant's locations.
    async fn list_locations(&self, tenant_id: TenantId) -> Result<Vec<CrmLocation>, CrmError>;

    /// Returns the appointments of a CRM location that start in `[from, to)`.
    async fn list_appointments(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<CrmAppointment>, CrmError>;

    /// Creates an appointment.
    async fn create_appointment(
        &self,
        tenant_id: TenantId,
        appointment: &NewCrmAppointment,
    ) -> Result<CrmAppointment, CrmError>;
}

/// Leads and the locations they belong to, as the intake and the lead actors need them.
#[async_trait::async_trait]
pub trait LeadStore: Send + Sync + std::fmt::Debug {
    /// Returns the tenant's location with this CRM id, if any.
    async fn location_by_crm_id(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
    ) -> Result<Option<Location>, StoreError>;

    /// Returns the tenant's lead for a CRM order, if the order is already a lead.
    async fn lead_by_crm_order(
        &self,
        tenant_id: TenantId,
        crm_source: &str,
        crm_order_id: &str,
    ) -> Result<Option<Lead>, StoreError>;

    /// Creates the lead with its plan in one transaction, or returns the existing lead of that
    /// CRM order untouched.
    async fn create_lead(
        &self,
        new: &NewLead,
        cadence_opt: Option<CadenceRef<'_>>,
        plan: &[NewTouchpoint],
    ) -> Result<LeadCreated, StoreError>;

    /// Returns one lead of the tenant.
    async fn get_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Lead, StoreError>;

    /// Ends the lead's cadence with `status` (a win, a booking) and cancels its pending touches,
    /// unless it already ended; returns whether it changed.
    async fn stop_lead(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        status: crate::domain::LeadStatus,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// Returns the tenant's leads of a CRM customer.
    async fn leads_of_customer(&self, tenant_id: TenantId, crm_customer_id: &str) -> Result<Vec<Lead>, StoreError>;

    /// Returns a location's weekly opening hours (empty when none are set).
    async fn location_hours(
        &self,
        tenant_id: TenantId,
        location_id: crate::domain::LocationId,
    ) -> Result<crate::domain::WeeklyHours, StoreError>;
}

/// The inbox of committed webhook events.
#[async_trait::async_trait]
pub trait InboxStore: Send + Sync + std::fmt::Debug {
    /// Returns one event of the tenant.
    async fn get_event(&self, tenant_id: TenantId, id: i64) -> Result<InboxEvent, StoreError>;

    /// Returns unprocessed events whose retry time has come, oldest first.
    async fn unprocessed_events(
        &self,
        tenant_id: TenantId,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError>;

    /// Marks an event done with its outcome.
    async fn mark_event_processed(&self, tenant_id: TenantId, id: i64, outcome: &str) -> Result<(), StoreError>;

    /// Records a failed attempt and when to try again.
    async fn record_event_failure(
        &self,
        tenant_id: TenantId,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError>;
}

/// Who the deployment serves: the tenants and their locations, for starting actors.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Returns every active tenant.
    async fn active_tenants(&self) -> Result<Vec<TenantId>, StoreError>;

    /// Returns the tenant's active locations.
    async fn active_locations(&self, tenant_id: TenantId) -> Result<Vec<Location>, StoreError>;
}

/// Runs and cursors of periodic jobs.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Returns the cursor the last successful run of `job` left, if any.
    async fn last_cursor(&self, tenant_id: TenantId, job: &str) -> Result<Option<String>, StoreError>;

    /// Records one run.
    async fn record_run(&self, tenant_id: TenantId, run: &JobRun) -> Result<(), StoreError>;
}

/// A committed CRM webhook event, decoded just enough to route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmEvent {
    /// An order was created or changed.
    OrderChanged { order_id: String, created: bool },
    /// An appointment was created in the CRM (the customer booked there).
    AppointmentCreated { customer_id_opt: Option<String>, order_id_opt: Option<String> },
    /// Anything else (customers, vehicles, ...): acknowledged and ignored.
    Other { table: String },
}

/// Turns a raw inbox payload of a CRM into a [`CrmEvent`]; vendor formats live in the adapter.
pub trait CrmEventDecoder: Send + Sync + std::fmt::Debug {
    /// Decodes the payload, or says why it cannot be used (kept as the event's outcome).
    fn decode(&self, payload: &serde_json::Value) -> Result<CrmEvent, String>;
}

/// An SMS to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSms {
    pub to: crate::domain::Phone,
    pub from: crate::domain::Phone,
    pub body: String,
    /// Where the provider posts delivery updates, if anywhere.
    pub status_callback_opt: Option<String>,
    /// Stable per touch attempt; sent wherever the provider accepts one.
    pub idempotency_key: String,
}

/// An email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEmail {
    pub to: crate::domain::Email,
    pub to_name_opt: Option<String>,
    pub from: crate::domain::Email,
    pub from_name_opt: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Echoed back by the provider on every event (lead id, touchpoint id, attempt).
    pub custom_args: std::collections::BTreeMap<String, String>,
    pub idempotency_key: String,
}

/// What the provider said when it took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Twilio's message SID, or SendGrid's `X-Message-Id`.
    pub provider_id: String,
    pub accepted_at: Timestamp,
}

/// A message the provider has on record, for reconciling touches a crash left in `sending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMessage {
    pub provider_id: String,
    pub to: String,
    pub body: String,
    pub created_at: Timestamp,
}

/// Why a send failed. Permanent failures are not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The recipient cannot receive this channel (invalid number, landline, bad address).
    #[error("invalid recipient ({code_opt:?}): {message}")]
    InvalidRecipient { code_opt: Option<i64>, message: String },
    /// The recipient opted out at the provider (Twilio 21610, SendGrid suppression).
    #[error("recipient opted out at the provider")]
    OptedOut,
    #[error("provider rate limited")]
    RateLimited { retry_after_opt: Option<std::time::Duration> },
    /// 5xx, connection failure: the message was not taken; retry later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// No answer in time: the provider may or may not have taken it (reconcile before resending).
    #[error("provider timed out")]
    Timeout,
    /// Our credentials or configuration were refused.
    #[error("provider refused our credentials or configuration: {0}")]
    Misconfigured(String),
    /// Any other refusal of the request itself.
    #[error("provider rejected the message ({code_opt:?}): {message}")]
    Rejected { code_opt: Option<i64>, message: String },
}

impl SendError {
    /// Returns true when sending the same message again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::RateLimited { .. } | SendError::Unavailable(_) | SendError::Timeout)
    }
}

/// Sends SMS (Twilio).
#[async_trait::async_trait]
pub trait SmsSender: Send + Sync + std::fmt::Debug {
    /// Sends one SMS.
    async fn send_sms(&self, sms: &OutboundSms) -> Result<SentMessage, SendError>;

    /// Lists messages sent from `from` to `to` since `since`, newest first.
    async fn sent_messages(
        &self,
        to: &crate::domain::Phone,
        from: &crate::domain::Phone,
        since: Timestamp,
    ) -> Result<Vec<ProviderMessage>, SendError>;
}

/// Sends email (SendGrid).
#[async_trait::async_trait]
pub trait EmailSender: Send + Sync + std::fmt::Debug {
    /// Sends one email.
    async fn send_email(&self, email: &OutboundEmail) -> Result<SentMessage, SendError>;

    /// Finds messages sent with this `custom_args` key/value (e.g. the touchpoint id), for
    /// reconciliation.
    async fn find_by_custom_arg(&self, key: &str, value: &str) -> Result<Vec<ProviderMessage>, SendError>;
}

/// A pending touch that is due, with where its lead lives.
#[derive(Debug, Clone, PartialEq)]
pub struct DueTouch {
    pub location_id: crate::domain::LocationId,
    pub touch: crate::domain::Touchpoint,
}

/// The touchpoints of leads: the claim -> send -> record protocol.
#[async_trait::async_trait]
pub trait TouchStore: Send + Sync + std::fmt::Debug {
    /// Returns the lead's plan in step order.
    async fn touches_of(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
    ) -> Result<Vec<crate::domain::Touchpoint>, StoreError>;

    /// Returns the tenant's pending touches due at or before `until`, earliest first, with the
    /// location of their lead (to route them).
    async fn due_touches(&self, tenant_id: TenantId, until: Timestamp, limit: i64)
    -> Result<Vec<DueTouch>, StoreError>;

    /// Claims a pending touch due by `due_by` (pending -> sending, new attempt id); `None` if it
    /// is not pending or not yet due, so nothing is ever sent early.
    async fn claim_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: crate::domain::TouchpointId,
        due_by: Timestamp,
    ) -> Result<Option<crate::domain::Touchpoint>, StoreError>;

    /// Records the provider's acceptance of the claimed attempt.
    async fn record_touch_sent(
        &self,
        tenant_id: TenantId,
        touchpoint_id: crate::domain::TouchpointId,
        attempt_id: uuid::Uuid,
        provider_message_id: &str,
        sent_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Records a failed attempt: pending again at `retry_at_opt`, or failed for good.
    async fn record_touch_failed(
        &self,
        tenant_id: TenantId,
        touchpoint_id: crate::domain::TouchpointId,
        attempt_id: uuid::Uuid,
        error: &str,
        retry_at_opt: Option<Timestamp>,
    ) -> Result<(), StoreError>;

    /// Ends a claimed or pending touch without sending it (`skipped` or `cancelled`, with why).
    async fn close_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: crate::domain::TouchpointId,
        status: crate::domain::TouchpointStatus,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Cancels the lead's pending touches (of one channel, or all) and returns how many.
    async fn cancel_pending_touches(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        channel_opt: Option<crate::domain::Channel>,
        reason: &str,
    ) -> Result<u64, StoreError>;

    /// Confirms a claim just before the provider call: true (and the claim's clock restarted)
    /// when the touch is still `sending` under this attempt, false when it was released or
    /// finished meanwhile — then the caller must not send.
    async fn confirm_claim(
        &self,
        tenant_id: TenantId,
        touchpoint_id: crate::domain::TouchpointId,
        attempt_id: uuid::Uuid,
    ) -> Result<bool, StoreError>;

    /// Sets the lead's first-touch time if it has none; returns true when it was set now.
    async fn mark_first_touch(&self, tenant_id: TenantId, lead_id: LeadId, at: Timestamp) -> Result<bool, StoreError>;
}

/// The tenant-wide consent ledger (opt-outs by phone or email).
#[async_trait::async_trait]
pub trait ConsentStore: Send + Sync + std::fmt::Debug {
    /// Returns true when `address` opted out of `channel` with this tenant.
    async fn is_opted_out(&self, tenant_id: TenantId, channel: &str, address: &str) -> Result<bool, StoreError>;

    /// Records that `address` opted out of `channel` (e.g. the provider reported it).
    async fn record_opt_out(
        &self,
        tenant_id: TenantId,
        channel: &str,
        address: &str,
        source: &str,
    ) -> Result<(), StoreError>;
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders a touch's template for a lead (names, vehicle, the location, the chat link).
/// Rendering is deterministic for a given touch (`issued_at` is the touch's intended time, and
/// its chat link expires relative to it), so an interrupted send can be recognised in the
/// provider's records by its body.
pub trait TouchRenderer: Send + Sync + std::fmt::Debug {
    /// Returns the SMS body.
    fn render_sms(
        &self,
        template: &str,
        lead: &Lead,
        location: &Location,
        issued_at: Timestamp,
    ) -> Result<String, String>;

    /// Returns the email parts.
    fn render_email(
        &self,
        template: &str,
        lead: &Lead,
        location: &Location,
        issued_at: Timestamp,
    ) -> Result<RenderedEmail, String>;
}

/// One stored message of a conversation, as the chat session replays it to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChatTurn {
    pub id: uuid::Uuid,
    /// `user`, `assistant`, `staff` or `system`.
    pub role: String,
    pub content: String,
    /// `complete`, `partial` or `error`.
    pub status: String,
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyEnd {
    Complete,
    /// The stream broke after some text; the text so far is kept as such.
    Partial,
    /// No text at all.
    Error,
}

/// A finished assistant reply with its accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedReply {
    pub content: String,
    pub end: ReplyEnd,
    pub provider_opt: Option<String>,
    pub model_opt: Option<String>,
    pub usage: crate::ai::Usage,
    pub cost_micros: u64,
    pub first_token_ms_opt: Option<u32>,
    pub total_ms: u32,
}

/// A lead's conversation in the store.
#[async_trait::async_trait]
pub trait ChatStore: Send + Sync + std::fmt::Debug {
    /// Returns the conversation, oldest first.
    async fn history(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<StoredChatTurn>, StoreError>;

    /// Stores a customer message and, in the same transaction, marks the lead replied and
    /// cancels its pending touches. Returns the message id.
    async fn record_customer_message(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        text: &str,
    ) -> Result<uuid::Uuid, StoreError>;

    /// Stores an empty assistant message (status partial) that a reply will fill; returns its id.
    async fn start_reply(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<uuid::Uuid, StoreError>;

    /// Stores the end of a reply.
    async fn finish_reply(
        &self,
        tenant_id: TenantId,
        message_id: uuid::Uuid,
        reply: &FinishedReply,
    ) -> Result<(), StoreError>;
}

/// Why a booking did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// The time is not (or no longer) a free slot of the location.
    #[error("that time is not available")]
    Unavailable,
    /// The lead already has an appointment.
    #[error("the lead already has an appointment")]
    AlreadyBooked,
    /// The store or the CRM failed.
    #[error("booking failed: {0}")]
    Failed(String),
}

/// What a chat session needs beyond its messages: the lead's facts, booking, and the prompt.
#[async_trait::async_trait]
pub trait ChatBackend: Send + Sync + std::fmt::Debug {
    /// Gathers the lead's facts (its location's hours, prices and free slots) for a reply.
    async fn grounding(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        now: Timestamp,
    ) -> Result<crate::ai::Grounding, StoreError>;

    /// Books the slot starting at `starts_at` for the lead: checks it is still free and inside
    /// the location's hours, stores the appointment (the lead becomes `booked`, its cadence
    /// stops) and creates it in the CRM.
    async fn book(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        starts_at: Timestamp,
        now: Timestamp,
    ) -> Result<crate::ai::OfferedSlot, BookingError>;

    /// Renders the system prompt from the facts.
    fn render_system(&self, grounding: &crate::ai::Grounding) -> Result<String, String>;
}
