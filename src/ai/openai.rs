//! The OpenAI Chat Completions client, for OpenAI and compatible servers (Ollama, vLLM,
//! llama.cpp): implements [`AiProvider`] by streaming `POST {base}/chat/completions` (reference
//! §5). It owns the request body, optional Bearer auth (none for a local server) and the reading
//! of data-only chunks up to `data: [DONE]`, with a local token estimate when the server sends no
//! usage chunk.
//!
//! Retries before the first event, the refusal mapping and the reading task live in the parent
//! module, shared with the Anthropic client.

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
use super::{
    ErrorDetail, StreamDecoder, StreamSettings, endpoint_url, estimate_tokens, open_stream, stream_client,
    wire_temperature,
};
use crate::vendor_http::REDACTED;

/// Where and as whom the client talks to an OpenAI-compatible server, how long it waits and how
/// hard it retries.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API base including the version, e.g. `https://api.openai.com/v1` or Ollama's
    /// `http://localhost:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// The Bearer token; `None` sends no `Authorization` header (a local server such as Ollama).
    pub api_key_opt: Option<SecretString>,
    /// The model id, e.g. `gpt-4o` or `llama3.2`.
    pub model: String,
    /// Budget of connecting and receiving the answer's headers.
    pub request_timeout: Duration,
    /// Budget between two chunks of a stream, instead of a total deadline.
    pub idle_timeout: Duration,
    /// Retries before the first event, for 429 (not `insufficient_quota`), 5xx, timeouts and
    /// refused connections.
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles per retry, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff; a longer `retry-after` fails at once with `RateLimited`.
    pub max_backoff: Duration,
}

impl OpenAiConfig {
    /// Returns the configuration for OpenAI itself with this key and model, and the default
    /// timeouts and retries (the official SDK's: 2 retries from 0.5 s up to 8 s).
    pub fn new(api_key_opt: Option<SecretString>, model: impl Into<String>) -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key_opt,
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
            "openai",
            self.request_timeout,
            self.idle_timeout,
            self.max_retries,
            self.initial_backoff,
            self.max_backoff,
        )
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = f.debug_struct("OpenAiConfig");
        fields
            .field("base_url", &self.base_url)
            .field("api_key_opt", &self.api_key_opt.as_ref().map(|_| REDACTED))
            .field("model", &self.model);
        self.stream_settings().finish_debug(&mut fields)
    }
}

/// Why an [`OpenAiProvider`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiBuildError {
    #[error("invalid openai base url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("openai model is empty")]
    MissingModel,
    #[error("failed to build the http client")]
    Http(#[source] reqwest::Error),
}

/// The OpenAI-compatible adapter; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `{base}/chat/completions`, built once.
    completions_url: Url,
    config: OpenAiConfig,
}

impl OpenAiProvider {
    /// Builds a provider; no request is made until the first stream.
    ///
    /// # Errors
    /// The base URL is not an absolute http(s) URL, the model is empty, or the TLS backend fails
    /// to initialise.
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiBuildError> {
        let completions_url = endpoint_url(&config.base_url, ["chat", "completions"])
            .map_err(|reason| OpenAiBuildError::InvalidBaseUrl { url: config.base_url.clone(), reason })?;
        if config.model.trim().is_empty() {
            return Err(OpenAiBuildError::MissingModel);
        }
        let http = stream_client(config.request_timeout).map_err(OpenAiBuildError::Http)?;
        Ok(Self { inner: Arc::new(Inner { http, completions_url, config }) })
    }

    fn settings(&self) -> StreamSettings {
        self.inner.config.stream_settings()
    }
}

/// Returns the Chat Completions body of a request (§5.1).
fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.turns.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({ "role": "system", "content": request.system }));
    }
    messages.extend(request.turns.iter().map(|turn| json!({ "role": turn.role, "content": turn.content })));
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
        // Not `max_completion_tokens`: local servers only know `max_tokens`.
        "max_tokens": request.max_tokens,
        "temperature": wire_temperature(request.temperature),
    });
    if let Some(user_id) = &request.user_id_opt {
        body["user"] = json!(user_id);
    }
    body
}

#[async_trait]
impl AiProvider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.inner.config.model
    }

    async fn stream(
        &self,
        request: &ChatRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<StreamEvent, AiError>>, AiError> {
        let body = request_body(&self.inner.config.model, request);
        let input_chars = request.system.chars().count()
            + request.turns.iter().map(|turn| turn.content.chars().count()).sum::<usize>();
        let build = || {
            let request = self
                .inner
                .http
                .post(self.inner.completions_url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream")
                .json(&body);
            match &self.inner.config.api_key_opt {
                Some(api_key) => request.bearer_auth(api_key.expose_secret()),
                None => request,
            }
        };
        open_stream(self.settings(), build, || OpenAiDecoder::new(input_chars)).await
    }
}

/// Reads data-only chunks (§5.2), keeping the reported usage or what an estimate needs.
#[derive(Debug)]
struct OpenAiDecoder {
    usage_opt: Option<Usage>,
    input_chars: usize,
    output_chars: usize,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<ChoiceDelta>,
}

#[derive(Debug, Deserialize)]
struct ChoiceDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl OpenAiDecoder {
    fn new(input_chars: usize) -> Self {
        Self { usage_opt: None, input_chars, output_chars: 0 }
    }

    /// Returns the reported usage, or an estimate from characters when none came.
    fn usage(&self) -> Usage {
        self.usage_opt.unwrap_or(Usage {
            input_tokens: estimate_tokens(self.input_chars),
            output_tokens: estimate_tokens(self.output_chars),
        })
    }
}

impl StreamDecoder for OpenAiDecoder {
    fn decode(&mut self, frame: SseFrame) -> Option<Result<StreamEvent, AiError>> {
        if frame.data.trim() == "[DONE]" {
            return Some(Ok(StreamEvent::Done(self.usage())));
        }
        let chunk = match serde_json::from_str::<Chunk>(&frame.data) {
            Ok(chunk) => chunk,
            // Only the position of a parse error is kept: its text could quote the model's output.
            Err(err) => {
                let message = format!("unreadable openai chunk at line {} column {}", err.line(), err.column());
                return Some(Err(AiError::Stream(message)));
            }
        };
        if let Some(error) = chunk.error {
            return Some(Err(AiError::Stream(error.describe(reqwest::StatusCode::OK))));
        }
        if let Some(usage) = chunk.usage {
            self.usage_opt = Some(Usage { input_tokens: usage.prompt_tokens, output_tokens: usage.completion_tokens });
        }
        // One completion is asked for (`n` = 1), so only choice 0 carries the reply.
        let text: String = chunk
            .choices
            .into_iter()
            .filter(|choice| choice.index == 0)
            .filter_map(|choice| choice.delta.and_then(|delta| delta.content))
            .collect();
        if text.is_empty() {
            return None;
        }
        self.output_chars += text.chars().count();
        Some(Ok(StreamEvent::Delta(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{SYSTEM, chat, collect, text_of};

    use super::*;
    use crate::sim::openai::{AiFault, OpenAiSim, OpenAiSimConfig};

    const KEY: &str = "sk-test-openai";
    const MODEL: &str = "gpt-4o";

    async fn start_sim(api_key_opt: Option<&str>, include_usage_profile: bool) -> OpenAiSim {
        OpenAiSim::start(OpenAiSimConfig { api_key_opt: api_key_opt.map(str::to_owned), include_usage_profile })
            .await
            .expect("sim starts")
    }

    fn test_config(sim: &OpenAiSim, api_key_opt: Option<&str>) -> OpenAiConfig {
        OpenAiConfig {
            base_url: sim.base_url(),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
            ..OpenAiConfig::new(api_key_opt.map(SecretString::from), MODEL)
        }
    }

    fn provider(sim: &OpenAiSim) -> OpenAiProvider {
        OpenAiProvider::new(test_config(sim, Some(KEY))).expect("provider")
    }

    #[tokio::test]
    async fn stream_round_trips_through_the_fake_with_bearer_auth_usage_and_the_system_prompt() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_reply("A sedan is $300. Want Friday at 9?");

        let events = collect(provider(&sim).stream(&chat("How much for a sedan?")).await.expect("stream")).await;

        assert!(events.iter().filter(|event| matches!(event, Ok(StreamEvent::Delta(_)))).count() > 1, "{events:?}");
        assert_eq!(text_of(&events), "A sedan is $300. Want Friday at 9?");
        assert_eq!(events.last(), Some(&Ok(StreamEvent::Done(Usage { input_tokens: 13, output_tokens: 8 }))));
        let requests = sim.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        let body = &requests[0].body;
        assert_eq!(body["model"], MODEL);
        assert_eq!(
            body["messages"],
            json!([{ "role": "system", "content": SYSTEM }, { "role": "user", "content": "How much for a sedan?" }])
        );
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["temperature"], 0.3);
        assert_eq!(body["user"], "lead-123");
    }

    #[tokio::test]
    async fn server_error_500_then_success_is_retried_before_the_stream() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_fault(AiFault::Status500 { times: 1 });

        let events = collect(provider(&sim).stream(&chat("Tint price?")).await.expect("stream")).await;

        assert_eq!(text_of(&events), "You asked: Tint price?. A sedan is $300.");
        assert!(matches!(events.last(), Some(Ok(StreamEvent::Done(_)))), "{events:?}");
        assert_eq!(sim.requests().len(), 2);
    }

    #[tokio::test]
    async fn rate_limit_beyond_the_retries_is_rate_limited() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_fault(AiFault::Status429 { times: usize::MAX, retry_after_secs: 0 });

        let result = provider(&sim).stream(&chat("Hi")).await;

        assert_eq!(result.err(), Some(AiError::RateLimited { retry_after_opt: Some(Duration::ZERO) }));
        assert_eq!(sim.requests().len(), 3);
    }

    #[tokio::test]
    async fn missing_key_against_a_keyed_server_is_unauthorized_without_retry() {
        let sim = start_sim(Some(KEY), true).await;

        let result = OpenAiProvider::new(test_config(&sim, None)).expect("provider").stream(&chat("Hi")).await;

        assert_eq!(result.err(), Some(AiError::Unauthorized));
        assert_eq!(sim.requests().len(), 1);
    }

    #[tokio::test]
    async fn error_chunk_mid_stream_comes_after_two_deltas() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_fault(AiFault::ErrorMidStream { times: 1 });

        let events = collect(provider(&sim).stream(&chat("Hi")).await.expect("stream")).await;

        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(events[0], Ok(StreamEvent::Delta(_))));
        assert!(matches!(events[1], Ok(StreamEvent::Delta(_))));
        assert!(matches!(&events[2], Err(AiError::Stream(message)) if message.contains("server_error")));
    }

    #[tokio::test]
    async fn stalled_stream_times_out_after_the_idle_timeout() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_fault(AiFault::Stall { times: 1 });
        let config = OpenAiConfig { idle_timeout: Duration::from_millis(200), ..test_config(&sim, Some(KEY)) };

        let stream = OpenAiProvider::new(config).expect("provider").stream(&chat("Hi")).await.expect("stream");
        let events = collect(stream).await;

        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(events[0], Ok(StreamEvent::Delta(_))));
        assert_eq!(events[1], Err(AiError::Timeout));
    }

    #[tokio::test]
    async fn stream_without_done_is_a_stream_error() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_fault(AiFault::DropMidStream { times: 1 });

        let events = collect(provider(&sim).stream(&chat("Hi")).await.expect("stream")).await;

        assert!(matches!(events.last(), Some(Err(AiError::Stream(_)))), "{events:?}");
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(sim.requests().len(), 1);
    }

    #[tokio::test]
    async fn server_without_a_usage_chunk_ends_with_an_estimate() {
        let sim = start_sim(Some(KEY), false).await;
        sim.set_reply("Sixteen chars!!!");

        let events = collect(provider(&sim).stream(&chat("Hi")).await.expect("stream")).await;

        let input_chars = SYSTEM.len() + "Hi".len();
        let expected = Usage { input_tokens: u32::try_from(input_chars.div_ceil(4)).expect("small"), output_tokens: 4 };
        assert_eq!(events.last(), Some(&Ok(StreamEvent::Done(expected))));
    }

    #[tokio::test]
    async fn ollama_mode_without_a_key_sends_no_authorization_and_streams() {
        let sim = start_sim(None, false).await;
        let ollama = OpenAiProvider::new(test_config(&sim, None)).expect("provider");

        let events = collect(ollama.stream(&chat("Hi")).await.expect("stream")).await;

        assert_eq!(text_of(&events), "You asked: Hi. A sedan is $300.");
        assert!(matches!(events.last(), Some(Ok(StreamEvent::Done(_)))), "{events:?}");
        assert_eq!(sim.requests()[0].header("authorization"), None);
    }

    #[test]
    fn decoder_skips_empty_and_null_content_and_reads_usage_and_error_chunks() {
        let mut decoder = OpenAiDecoder::new(0);
        let data = |data: &str| SseFrame { event_opt: None, data: data.to_owned() };

        let decoded: Vec<_> = [
            data(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#),
            data(r#"{"choices":[{"index":0,"delta":{"content":null}}]}"#),
            data(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"timings":{"predicted_ms":3}}"#),
            data(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
            data(r#"{"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":2,"total_tokens":42}}"#),
            data("[DONE]"),
        ]
        .into_iter()
        .filter_map(|frame| decoder.decode(frame))
        .collect();
        let error = OpenAiDecoder::new(0).decode(data(r#"{"error":{"message":"boom","type":"server_error"}}"#));

        assert_eq!(
            decoded,
            vec![
                Ok(StreamEvent::Delta("Hi".to_owned())),
                Ok(StreamEvent::Done(Usage { input_tokens: 40, output_tokens: 2 }))
            ]
        );
        assert_eq!(error, Some(Err(AiError::Stream("server_error: boom".to_owned()))));
    }

    #[test]
    fn config_debug_does_not_print_the_key() {
        let printed = format!("{:?}", OpenAiConfig::new(Some(SecretString::from(KEY)), MODEL));

        assert!(!printed.contains(KEY), "{printed}");
        assert!(printed.contains(MODEL), "{printed}");
    }
}
