//! What the chat needs from a language model: a streaming completion over a system prompt and
//! the conversation, with token usage at the end. Providers (Anthropic, any OpenAI-compatible
//! server, the offline scripted one) implement [`AiProvider`] in the `leadorch` crate.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTurn {
    pub role: ChatRole,
    pub content: String,
}

/// A completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Grounding: the customer, vehicle, location, prices, hours and rules.
    pub system: String,
    /// Oldest first; starts with a user turn and alternates.
    pub turns: Vec<ChatTurn>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// An opaque id for the provider's abuse monitoring (the lead id), never PII.
    pub user_id_opt: Option<String>,
    /// The facts `system` was rendered from. Vendor providers send only `system`; the offline
    /// scripted provider answers from these facts directly.
    pub grounding_opt: Option<std::sync::Arc<Grounding>>,
}

/// What the assistant may say about one lead, gathered fresh for every reply: only this lead's
/// and its location's facts, never another lead's or tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grounding {
    #[serde(rename = "first_name")]
    pub first_name_opt: Option<String>,
    /// "2021 Tesla Model 3".
    #[serde(rename = "vehicle")]
    pub vehicle_opt: Option<String>,
    pub requested_services: Vec<String>,
    pub location_name: String,
    #[serde(rename = "location_phone")]
    pub location_phone_opt: Option<String>,
    #[serde(rename = "location_address")]
    pub location_address_opt: Option<String>,
    /// IANA zone of the location; every time shown is in it.
    pub timezone: String,
    /// "Thursday, November 26, 2026 3:05 PM" in the location's zone.
    pub now_label: String,
    /// One line per weekday: "Monday: 8:00 AM - 6:00 PM" or "Sunday: closed".
    pub hours: Vec<String>,
    /// The location's catalog, the only prices the assistant may quote.
    pub prices: Vec<PriceLine>,
    /// Free appointment slots inside the location's hours, soonest first.
    pub slots: Vec<OfferedSlot>,
    /// The lead's booked appointment, if any.
    #[serde(rename = "appointment")]
    pub appointment_opt: Option<OfferedSlot>,
    /// What became of a booking the customer asked for with the message being answered.
    #[serde(rename = "booking")]
    pub booking_opt: Option<BookingOutcome>,
}

/// One service and its price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceLine {
    pub name: String,
    pub price_cents: i64,
    /// "$249.00".
    pub price: String,
}

/// An appointment time, as offered to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedSlot {
    /// The start instant (RFC 3339, UTC): what the chat page sends back to book it.
    pub id: String,
    pub starts_at: jiff::Timestamp,
    pub ends_at: jiff::Timestamp,
    /// "Fri Nov 27, 10:00 AM" in the location's zone.
    pub label: String,
}

/// The result of a booking request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BookingOutcome {
    /// Booked; the slot is the appointment.
    Booked { slot: OfferedSlot },
    /// The time is no longer free (or never was): offer others.
    Unavailable { requested: String },
    /// The booking could not be completed now; staff will follow up.
    Failed,
}

/// Tokens a completion used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// More text.
    Delta(String),
    /// The end, with the usage the provider reported (or an estimate when it reports none).
    Done(Usage),
}

/// Why a completion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AiError {
    #[error("provider rate limited")]
    RateLimited { retry_after_opt: Option<std::time::Duration> },
    /// Anthropic's 529 / overloaded_error.
    #[error("provider overloaded")]
    Overloaded,
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider timed out")]
    Timeout,
    #[error("provider refused our credentials")]
    Unauthorized,
    #[error("provider rejected the request: {0}")]
    InvalidRequest(String),
    /// An error after the stream started (an `error` event, a dropped connection).
    #[error("stream broke: {0}")]
    Stream(String),
}

impl AiError {
    /// Returns true when another provider (or a later retry) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AiError::RateLimited { .. }
                | AiError::Overloaded
                | AiError::Unavailable(_)
                | AiError::Timeout
                | AiError::Stream(_)
        )
    }
}

/// A streaming language model.
#[async_trait::async_trait]
pub trait AiProvider: Send + Sync + std::fmt::Debug {
    /// Returns the provider's name (`anthropic`, `openai`, `scripted`), for metrics and storage.
    fn name(&self) -> &str;

    /// Returns the model id in use.
    fn model(&self) -> &str;

    /// Starts a completion. An error before the first event is returned here (so the caller can
    /// fail over seamlessly); after that, errors arrive in the stream. The stream ends after
    /// `Done` or an error.
    async fn stream(&self, request: &ChatRequest) -> Result<mpsc::Receiver<Result<StreamEvent, AiError>>, AiError>;
}
