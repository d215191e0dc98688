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
