//! The Anthropic Messages API client: implements [`AiProvider`] by streaming `POST /v1/messages`
//! (reference §4). It owns the request body, the headers, and the reading of Anthropic's named
//! events (`message_start`, `content_block_delta`, `message_delta`, `message_stop`, `error`).
//!
//! Retries before the first event, the refusal mapping and the reading task live in the parent
//! module, shared with the OpenAI-compatible client.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use leadorch_actors::ai::{AiError, AiProvider, ChatRequest, StreamEvent, Usage};

use super::sse::SseFrame;
use super::{StreamDecoder, StreamSettings, endpoint_url, open_stream, stream_client, wire_temperature};
use crate::vendor_http::{REDACTED, truncate_message};

/// The API version this client speaks (the `anthropic-version` header).
const API_VERSION: &str = "2023-06-01";

/// Where and as whom the client talks to Anthropic, how long it waits and how hard it retries.
#[derive(Clone)]
pub struct AnthropicConfig {
    /// The API host without `/v1`, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    pub api_key: SecretString,
    /// The model id, e.g. `claude-sonnet-4-5`; kept in config because ids retire.
    pub model: String,
    /// Budget of connecting and receiving the answer's headers.
    pub request_timeout: Duration,
    /// Budget between two events of a stream (pings count), instead of a total deadline.
    pub idle_timeout: Duration,
    /// Retries before the first event, for 429, 5xx, 529, timeouts and refused connections.
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles per retry, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff; a longer `retry-after` fails at once with `RateLimited`.
    pub max_backoff: Duration,
}

impl AnthropicConfig {
    /// Returns the configuration for this key and model with the default host, timeouts and
    /// retries (the official SDK's: 2 retries from 0.5 s up to 8 s).
    pub fn new(api_key: SecretString, model: impl Into<String>) -> Self {
        Self {
            base_url: "https://api.anthropic.com".to_owned(),
            api_key,
            model: model.into(),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }

    fn stream_settings(&self) -> StreamSettings {
        StreamSettings::new(
            "anthropic",
            self.request_timeout,
            self.idle_timeout,
            self.max_retries,
            self.initial_backoff,
            self.max_backoff,
        )
    }
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = f.debug_struct("AnthropicConfig");
        fields.field("base_url", &self.base_url).field("api_key", &REDACTED).field("model", &self.model);
        self.stream_settings().finish_debug(&mut fields)
    }
}

/// Why an [`AnthropicProvider`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AnthropicBuildError {
    #[error("invalid anthropic base url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("anthropic api key or model is empty")]
    MissingSettings,
    #[error("failed to build the http client")]
    Http(#[source] reqwest::Error),
}

/// The Anthropic adapter; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `{base}/v1/messages`, built once.
    messages_url: Url,
    config: AnthropicConfig,
}

impl AnthropicProvider {
    /// Builds a provider; no request is made until the first stream.
    ///
    /// # Errors
    /// The base URL is not an absolute http(s) URL, the key or model is empty, or the TLS
    /// backend fails to initialise.
    pub fn new(config: AnthropicConfig) -> Result<Self, AnthropicBuildError> {
        let messages_url = endpoint_url(&config.base_url, ["v1", "messages"])
            .map_err(|reason| AnthropicBuildError::InvalidBaseUrl { url: config.base_url.clone(), reason })?;
        if config.api_key.expose_secret().is_empty() || config.model.trim().is_empty() {
            return Err(AnthropicBuildError::MissingSettings);
        }
        let http = stream_client(config.request_timeout).map_err(AnthropicBuildError::Http)?;
        Ok(Self { inner: Arc::new(Inner { http, messages_url, config }) })
    }

    fn settings(&self) -> StreamSettings {
        self.inner.config.stream_settings()
    }
}

/// Returns the Messages API body of a request (§4.1).
fn request_body(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> =
        request.turns.iter().map(|turn| json!({ "role": turn.role, "content": turn.content })).collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "stream": true,
        "temperature": wire_temperature(request.temperature),
    });
    // An empty system text block is refused, and an absent one means the same.
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if let Some(user_id) = &request.user_id_opt {
        body["metadata"] = json!({ "user_id": user_id });
    }
    body
}

#[async_trait]
impl AiProvider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.inner.config.model
    }

    async fn stream(
        &self,
        request: &ChatRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<StreamEvent, AiError>>, AiError> {
        let body = request_body(&self.inner.config.model, request);
        let build = || {
            self.inner
                .http
                .post(self.inner.messages_url.clone())
                .header("x-api-key", self.inner.config.api_key.expose_secret())
                .header("anthropic-version", API_VERSION)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream")
                .json(&body)
        };
        open_stream(self.settings(), build, AnthropicDecoder::default).await
    }
}

/// Reads Anthropic's named events (§4.2), keeping the usage they report.
#[derive(Debug, Default)]
struct AnthropicDecoder {
    usage: Usage,
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    message: MessageStartMessage,
}

#[derive(Debug, Deserialize)]
struct MessageStartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Usage as Anthropic sends it; every count is cumulative, and `message_delta` may omit some.
#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ContentBlockDelta {
    delta: Delta,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct ErrorEvent {
    #[serde(default)]
    error: super::ErrorDetail,
}

impl AnthropicDecoder {
    fn add_usage(&mut self, usage_opt: Option<WireUsage>) {
        let Some(usage) = usage_opt else {
            return;
        };
        if let Some(input_tokens) = usage.input_tokens {
            self.usage.input_tokens = input_tokens;
        }
        if let Some(output_tokens) = usage.output_tokens {
            self.usage.output_tokens = output_tokens;
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(event: &str, data: &str) -> Result<T, AiError> {
    // Only the position of a parse error is kept: its text could quote the model's output.
    serde_json::from_str(data).map_err(|err| {
        AiError::Stream(format!("unreadable anthropic {event} event at line {} column {}", err.line(), err.column()))
    })
}

impl StreamDecoder for AnthropicDecoder {
    fn decode(&mut self, frame: SseFrame) -> Option<Result<StreamEvent, AiError>> {
        // The event name and the data's `type` agree; the name is cheaper to read.
        let event = match frame.event_opt {
            Some(name) => name,
            None => serde_json::from_str::<Value>(&frame.data)
                .ok()
                .and_then(|data| data.get("type").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default(),
        };
        match event.as_str() {
            "message_start" => match parse::<MessageStart>(&event, &frame.data) {
                Ok(start) => {
                    self.add_usage(start.message.usage);
                    None
                }
                Err(err) => Some(Err(err)),
            },
            "content_block_delta" => match parse::<ContentBlockDelta>(&event, &frame.data) {
                Ok(ContentBlockDelta { delta: Delta { kind, text: Some(text) } })
                    if kind == "text_delta" && !text.is_empty() =>
                {
                    Some(Ok(StreamEvent::Delta(text)))
                }
                // Thinking, tool-input and signature deltas are not text for the customer.
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            },
            "message_delta" => match parse::<MessageDelta>(&event, &frame.data) {
                Ok(delta) => {
                    self.add_usage(delta.usage);
                    None
                }
                Err(err) => Some(Err(err)),
            },
            "message_stop" => Some(Ok(StreamEvent::Done(self.usage))),
            "error" => {
                let detail =
                    serde_json::from_str::<ErrorEvent>(&frame.data).map(|event| event.error).unwrap_or_default();
                let kind = detail.kind.as_deref().unwrap_or("error");
                let message = detail.message.as_deref().unwrap_or("");
                Some(Err(AiError::Stream(truncate_message(&format!("{kind}: {message}")))))
            }
            // `ping`, `content_block_start`, `content_block_stop` and events added later.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use leadorch_actors::ai::{ChatRole, ChatTurn};

    use super::super::test_support::{SYSTEM, chat, collect, text_of};

    use super::*;
    use crate::sim::anthropic::{AiFault, AnthropicSim, AnthropicSimConfig};

    const KEY: &str = "sk-ant-test-key";
    const MODEL: &str = "claude-sonnet-4-5";

    async fn start_sim() -> AnthropicSim {
        AnthropicSim::start(AnthropicSimConfig { api_key: KEY.to_owned() }).await.expect("sim starts")
    }

    fn test_config(sim: &AnthropicSim) -> AnthropicConfig {
        AnthropicConfig {
            base_url: sim.base_url(),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
            ..AnthropicConfig::new(SecretString::from(KEY), MODEL)
        }
    }

    fn provider(sim: &AnthropicSim) -> AnthropicProvider {
        AnthropicProvider::new(test_config(sim)).expect("provider")
    }

    #[tokio::test]
    async fn stream_round_trips_through_the_fake_with_text_usage_and_headers() {
        let sim = start_sim().await;
        sim.set_reply("A sedan is $300. Want Friday at 9?");

        let events = collect(provider(&sim).stream(&chat("How much for a sedan?")).await.expect("stream")).await;

        let deltas = events.iter().filter(|event| matches!(event, Ok(StreamEvent::Delta(_)))).count();
        assert!(deltas > 1, "{events:?}");
        assert_eq!(text_of(&events), "A sedan is $300. Want Friday at 9?");
        assert_eq!(events.last(), Some(&Ok(StreamEvent::Done(Usage { input_tokens: 13, output_tokens: 8 }))));
        let requests = sim.requests();
        assert_eq!(requests.len(), 1);
        let header = |name: &str| requests[0].header(name).map(str::to_owned);
        assert_eq!(header("x-api-key").as_deref(), Some(KEY));
        assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
        assert_eq!(header("accept").as_deref(), Some("text/event-stream"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let body = &requests[0].body;
        assert_eq!(body["model"], MODEL);
        assert_eq!(body["system"], SYSTEM);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.3);
        assert_eq!(body["metadata"]["user_id"], "lead-123");
        assert_eq!(body["messages"], json!([{ "role": "user", "content": "How much for a sedan?" }]));
    }

    #[tokio::test]
    async fn overloaded_529_then_success_is_retried_before_the_stream() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::Overloaded529 { times: 1 });

        let events = collect(provider(&sim).stream(&chat("Tint price?")).await.expect("stream")).await;

        assert_eq!(text_of(&events), "You asked: Tint price?. A sedan is $300.");
        assert!(matches!(events.last(), Some(Ok(StreamEvent::Done(_)))), "{events:?}");
        assert_eq!(sim.requests().len(), 2);
    }

    #[tokio::test]
    async fn persistent_529_is_overloaded_after_max_retries_plus_one_requests() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::Overloaded529 { times: usize::MAX });

        let result = provider(&sim).stream(&chat("Hi")).await;

        assert_eq!(result.err(), Some(AiError::Overloaded));
        assert_eq!(sim.requests().len(), 3);
    }

    #[tokio::test]
    async fn rate_limit_beyond_the_retries_is_rate_limited_with_the_hint() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::Status429 { times: 3, retry_after_secs: 0 });

        let result = provider(&sim).stream(&chat("Hi")).await;

        assert_eq!(result.err(), Some(AiError::RateLimited { retry_after_opt: Some(Duration::ZERO) }));
        assert_eq!(sim.requests().len(), 3);
    }

    #[tokio::test]
    async fn wrong_key_is_unauthorized_without_retry() {
        let sim = start_sim().await;
        let config = AnthropicConfig { api_key: SecretString::from("sk-ant-wrong"), ..test_config(&sim) };

        let result = AnthropicProvider::new(config).expect("provider").stream(&chat("Hi")).await;

        assert_eq!(result.err(), Some(AiError::Unauthorized));
        assert_eq!(sim.requests().len(), 1);
    }

    #[tokio::test]
    async fn conversation_starting_with_the_assistant_is_invalid_request_with_the_message() {
        let sim = start_sim().await;
        let mut request = chat("Hi");
        request.turns.insert(0, ChatTurn { role: ChatRole::Assistant, content: "Hello!".to_owned() });

        let result = provider(&sim).stream(&request).await;

        let Err(AiError::InvalidRequest(message)) = result else {
            panic!("expected an invalid request, got {result:?}");
        };
        assert!(message.starts_with("invalid_request_error: "), "{message}");
        assert!(message.contains("user"), "{message}");
        assert_eq!(sim.requests().len(), 1);
    }

    #[tokio::test]
    async fn error_event_mid_stream_comes_after_two_deltas() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::ErrorMidStream { times: 1 });

        let events = collect(provider(&sim).stream(&chat("Hi")).await.expect("stream")).await;

        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(events[0], Ok(StreamEvent::Delta(_))));
        assert!(matches!(events[1], Ok(StreamEvent::Delta(_))));
        assert!(matches!(&events[2], Err(AiError::Stream(message)) if message.contains("overloaded_error")));
        assert_eq!(sim.requests().len(), 1);
    }

    #[tokio::test]
    async fn stalled_stream_times_out_after_the_idle_timeout() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::Stall { times: 1 });
        let config = AnthropicConfig { idle_timeout: Duration::from_millis(200), ..test_config(&sim) };
        let started = Instant::now();

        let events =
            collect(AnthropicProvider::new(config).expect("provider").stream(&chat("Hi")).await.expect("stream")).await;

        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(events[0], Ok(StreamEvent::Delta(_))));
        assert_eq!(events[1], Err(AiError::Timeout));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn dropped_connection_mid_stream_is_a_stream_error() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::DropMidStream { times: 1 });

        let events = collect(provider(&sim).stream(&chat("Hi")).await.expect("stream")).await;

        assert!(matches!(events.first(), Some(Ok(StreamEvent::Delta(_)))), "{events:?}");
        assert!(matches!(events.last(), Some(Err(AiError::Stream(_)))), "{events:?}");
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(sim.requests().len(), 1);
    }

    #[test]
    fn decoder_ignores_pings_unknown_events_and_other_delta_types() {
        let mut decoder = AnthropicDecoder::default();
        let frame = |event: &str, data: &str| SseFrame { event_opt: Some(event.to_owned()), data: data.to_owned() };

        let decoded: Vec<_> = [
            frame(
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":40,"output_tokens":1}}}"#,
            ),
            frame("ping", r#"{"type":"ping"}"#),
            frame(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
            ),
            frame(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            frame("brand_new_event", r#"{"type":"brand_new_event"}"#),
            frame(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
            ),
            frame("message_delta", r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":7}}"#),
            frame("message_stop", r#"{"type":"message_stop"}"#),
        ]
        .into_iter()
        .filter_map(|frame| decoder.decode(frame))
        .collect();

        assert_eq!(
            decoded,
            vec![
                Ok(StreamEvent::Delta("Hi".to_owned())),
                Ok(StreamEvent::Done(Usage { input_tokens: 40, output_tokens: 7 }))
            ]
        );
    }

    #[test]
    fn config_debug_does_not_print_the_key() {
        let printed = format!("{:?}", AnthropicConfig::new(SecretString::from(KEY), MODEL));

        assert!(!printed.contains(KEY), "{printed}");
        assert!(printed.contains(MODEL), "{printed}");
    }
}
