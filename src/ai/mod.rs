//! The language-model adapters: implement the core's [`AiProvider`] port over reqwest and
//! server-sent events (reference §4, §5, §6).
//!
//! - [`anthropic`]: the Anthropic Messages API.
//! - [`openai`]: OpenAI Chat Completions and compatible servers (Ollama, vLLM, llama.cpp).
//! - [`sse`]: the event-stream reader both use.
//!
//! This module holds what the two share: opening a stream with retries until its first event,
//! the mapping of refused requests to [`AiError`], and the task that forwards the rest of the
//! stream into the channel the port returns, with an idle timeout between events.
//!
//! A request is resent only before its first event reached the caller: after that, text may be
//! on the customer's screen, so any failure ends the stream with an error and the caller decides.
//! Choosing a provider, failing over and pricing are left to others.
//!
//! [`AiProvider`]: leadorch_actors::ai::AiProvider

pub mod anthropic;
pub mod openai;
pub mod providers;
pub mod scripted;
pub mod sse;

use std::fmt;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use leadorch_actors::ai::{AiError, StreamEvent};
use leadorch_actors::ports::error_chain;

use crate::vendor_http::{self, RetryPolicy, debug_timeouts_and_retries, parse_retry_after, truncate_message};
use sse::{SseError, SseFrame};

/// Events buffered between the reading task and the consumer.
const STREAM_CHANNEL_CAPACITY: usize = 64;

/// The longest a whole streamed completion may take: a backstop against a stream that keeps
/// sending pings (so the idle timeout never fires) but never ends.
const MAX_STREAM_DURATION: Duration = Duration::from_secs(600);

/// What a provider's stream yields to the caller of [`AiProvider::stream`](leadorch_actors::ai::AiProvider::stream).
type EventReceiver = mpsc::Receiver<Result<StreamEvent, AiError>>;

type Frames = Pin<Box<dyn Stream<Item = Result<SseFrame, SseError>> + Send>>;

/// Maps a provider's SSE frames to stream events.
trait StreamDecoder: Send + 'static {
    /// Returns the event or error a frame carries, or `None` for frames without one (pings,
    /// unknown events, bookkeeping).
    fn decode(&mut self, frame: SseFrame) -> Option<Result<StreamEvent, AiError>>;
}

/// How a provider opens and reads streams, copied out of its config.
#[derive(Debug, Clone, Copy)]
struct StreamSettings {
    /// `anthropic` or `openai`, for logs.
    vendor: &'static str,
    /// Budget from sending a request to its answer's headers (and a refusal's body).
    request_timeout: Duration,
    /// Budget between two frames of a stream.
    idle_timeout: Duration,
    retry: RetryPolicy,
}

impl StreamSettings {
    /// Copies a config's timeouts and retries.
    fn new(
        vendor: &'static str,
        request_timeout: Duration,
        idle_timeout: Duration,
        max_retries: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        let retry = RetryPolicy { max_retries, initial_backoff, max_backoff };
        StreamSettings { vendor, request_timeout, idle_timeout, retry }
    }

    /// Ends a config's `Debug` with its timeouts and retries (the key is the caller's to redact).
    fn finish_debug(&self, fields: &mut fmt::DebugStruct<'_, '_>) -> fmt::Result {
        debug_timeouts_and_retries(fields, self.request_timeout, self.request_timeout, self.retry);
        fields.field("idle_timeout", &self.idle_timeout).finish()
    }
}

/// Returns `base_url` with `segments` appended, or why the base is not an absolute http(s) URL.
fn endpoint_url(base_url: &str, segments: [&str; 2]) -> Result<Url, String> {
    let mut url = vendor_http::parse_base_url(base_url).map_err(|err| err.reason)?;
    url.path_segments_mut().expect("parse_base_url checked that the url can be a base").pop_if_empty().extend(segments);
    Ok(url)
}

/// Builds the HTTP client of a streaming provider. Its own timeout bounds a whole stream, so it
/// is only the backstop; the request and idle timeouts are applied around each read.
fn stream_client(request_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    vendor_http::build_client(MAX_STREAM_DURATION, request_timeout)
}

/// Why one attempt failed before its first event.
#[derive(Debug)]
struct Failure {
    error: AiError,
    retryable: bool,
    /// The wait the provider asked for (`retry-after-ms` or `retry-after`).
    wait_opt: Option<Duration>,
}

impl Failure {
    fn retryable(error: AiError) -> Self {
        Failure { error, retryable: true, wait_opt: None }
    }

    fn from_transport(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return Failure::retryable(AiError::Timeout);
        }
        // Resending is safe: no event reached the caller, and a completion has no side effects.
        Failure::retryable(AiError::Unavailable(error_chain(&err.without_url())))
    }
}

/// The error body both vendors use: `{"error": {"type", "message", "code"?}}` (Anthropic adds
/// a top-level `type` and `request_id`).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// OpenAI's code (`rate_limit_exceeded`, `insufficient_quota`, ..); a string, a number or null.
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ErrorDetail {
    fn parse(body: &[u8]) -> ErrorDetail {
        serde_json::from_slice::<ErrorBody>(body).map(|body| body.error).unwrap_or_default()
    }

    fn code_is(&self, code: &str) -> bool {
        self.code.as_ref().and_then(serde_json::Value::as_str) == Some(code)
    }

    /// Returns `type: message` cut to the usual length, or the status's reason.
    fn describe(&self, status: StatusCode) -> String {
        let message = self.message.as_deref().filter(|message| !message.is_empty());
        let text = match (self.kind.as_deref(), message) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            (None, Some(message)) => message.to_owned(),
            (Some(kind), None) => kind.to_owned(),
            (None, None) => format!("status {}", status.as_u16()),
        };
        truncate_message(&text)
    }
}

/// Maps a refused request (any non-2xx) to an error, and says whether to resend it (reference
/// §4.3, §5.3): 408, 409, 429 and 5xx (529 included) are retried unless `x-should-retry` says
/// otherwise; a 429 for `insufficient_quota` is billing and is not.
fn classify_refusal(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
    let detail = ErrorDetail::parse(body);
    let wait_opt = provider_wait(headers);
    let (error, retryable_by_status) = match status.as_u16() {
        429 if detail.code_is("insufficient_quota") => (AiError::InvalidRequest(detail.describe(status)), false),
        429 => (AiError::RateLimited { retry_after_opt: wait_opt }, true),
        529 => (AiError::Overloaded, true),
        401 | 403 => (AiError::Unauthorized, false),
        408 | 409 => (AiError::Unavailable(detail.describe(status)), true),
        code if code >= 500 => (AiError::Unavailable(detail.describe(status)), true),
        _ => (AiError::InvalidRequest(detail.describe(status)), false),
    };
    let retryable = should_retry_header(headers).unwrap_or(retryable_by_status);
    Failure { error, retryable, wait_opt }
}

/// Reads the wait a provider asked for: `retry-after-ms` first, then `retry-after`.
fn provider_wait(headers: &HeaderMap) -> Option<Duration> {
    let millis_opt = headers
        .get("retry-after-ms")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .and_then(|millis| Duration::try_from_secs_f64(millis / 1000.0).ok());
    millis_opt.or_else(|| headers.get(RETRY_AFTER).and_then(|value| parse_retry_after(value, SystemTime::now())))
}

/// Reads `x-should-retry: true|false`, the providers' explicit word on resending.
fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Opens a stream, resending on retryable failures until its first event arrives, then hands
/// the rest of the stream to a reading task. `build` makes a fresh request per attempt.
async fn open_stream<D: StreamDecoder>(
    settings: StreamSettings,
    build: impl Fn() -> RequestBuilder,
    new_decoder: impl Fn() -> D,
) -> Result<EventReceiver, AiError> {
    let vendor = settings.vendor;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let failure = match attempt_stream(settings, build(), new_decoder()).await {
            Ok(receiver) => return Ok(receiver),
            Err(failure) => failure,
        };
        let delay_opt =
            if failure.retryable { settings.retry.delay_before_retry(attempt, failure.wait_opt) } else { None };
        let Some(delay) = delay_opt else {
            warn!(vendor, attempt, error = %failure.error, "model stream failed before its first event");
            return Err(failure.error);
        };
        warn!(
            vendor, attempt, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), error = %failure.error,
            "model stream failed before its first event, retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Makes one attempt: sends, checks the status, reads up to the first event.
async fn attempt_stream<D: StreamDecoder>(
    settings: StreamSettings,
    request: RequestBuilder,
    mut decoder: D,
) -> Result<EventReceiver, Failure> {
    let response = match tokio::time::timeout(settings.request_timeout, request.send()).await {
        Err(_elapsed) => return Err(Failure::retryable(AiError::Timeout)),
        Ok(Err(err)) => return Err(Failure::from_transport(err)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    debug!(vendor = settings.vendor, status = status.as_u16(), "model provider answered");
    if !status.is_success() {
        let headers = response.headers().clone();
        // Without a readable body the status alone decides.
        let body = match tokio::time::timeout(settings.request_timeout, response.bytes()).await {
            Ok(Ok(body)) => body.to_vec(),
            Ok(Err(_)) | Err(_) => Vec::new(),
        };
        return Err(classify_refusal(status, &headers, &body));
    }
    let mut frames: Frames = Box::pin(sse::frames(Box::pin(response.bytes_stream())));
    match next_event(&mut frames, &mut decoder, settings.idle_timeout).await {
        Ok(first) => Ok(spawn_reader(settings, first, frames, decoder)),
        // Nothing reached the caller yet, so even an `error` event may be retried.
        Err(error) => Err(Failure { retryable: error.is_retryable(), error, wait_opt: None }),
    }
}

/// Reads frames until one carries an event or an error; a silence longer than `idle_timeout` is
/// [`AiError::Timeout`], and an end before the provider's end marker is [`AiError::Stream`].
async fn next_event<D: StreamDecoder>(
    frames: &mut Frames,
    decoder: &mut D,
    idle_timeout: Duration,
) -> Result<StreamEvent, AiError> {
    loop {
        let Ok(next_opt) = tokio::time::timeout(idle_timeout, frames.next()).await else {
            return Err(AiError::Timeout);
        };
        match next_opt {
            None => return Err(AiError::Stream("connection closed before the end of the stream".to_owned())),
            Some(Err(err)) => return Err(AiError::Stream(err.to_string())),
            Some(Ok(frame)) => {
                if let Some(result) = decoder.decode(frame) {
                    return result;
                }
            }
        }
    }
}

/// Spawns the task that forwards `first` and the rest of the stream into a channel; it stops
/// after `Done` or an error, or when the receiver is dropped (which closes the connection).
fn spawn_reader<D: StreamDecoder>(
    settings: StreamSettings,
    first: StreamEvent,
    mut frames: Frames,
    mut decoder: D,
) -> EventReceiver {
    let (events_tx, events_rx) = mpsc::channel(STREAM_CHANNEL_CAPACITY);
    let vendor = settings.vendor;
    tokio::spawn(async move {
        let mut next = Ok(first);
        loop {
            let is_last = !matches!(next, Ok(StreamEvent::Delta(_)));
            if let Err(err) = &next {
                warn!(vendor, error = %err, "model stream broke");
            }
            if events_tx.send(next).await.is_err() {
                debug!(vendor, "model stream abandoned by its receiver");
                return;
            }
            if is_last {
                return;
            }
            next = tokio::select! {
                event = next_event(&mut frames, &mut decoder, settings.idle_timeout) => event,
                () = events_tx.closed() => {
                    debug!(vendor, "model stream abandoned by its receiver");
                    return;
                }
            };
        }
    });
    events_rx
}

/// Returns a temperature as the JSON number a person would write (`0.3`, not `0.30000001`).
fn wire_temperature(temperature: f32) -> f64 {
    (f64::from(temperature) * 1000.0).round() / 1000.0
}

/// Estimates tokens from characters (about four per token) when a provider reports none.
fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Requests and stream readers the clients' tests share.
#[cfg(test)]
mod test_support {
    use std::time::Duration;

    use leadorch_actors::ai::{AiError, ChatRequest, ChatRole, ChatTurn, StreamEvent};

    pub(super) const SYSTEM: &str = "You are the assistant for Tint Co Austin.";

    pub(super) fn chat(question: &str) -> ChatRequest {
        ChatRequest {
            system: SYSTEM.to_owned(),
            turns: vec![ChatTurn { role: ChatRole::User, content: question.to_owned() }],
            max_tokens: 256,
            temperature: 0.3,
            user_id_opt: Some("lead-123".to_owned()),
            grounding_opt: None,
        }
    }

    /// Reads a stream to its end under a deadline.
    pub(super) async fn collect(
        mut events: tokio::sync::mpsc::Receiver<Result<StreamEvent, AiError>>,
    ) -> Vec<Result<StreamEvent, AiError>> {
        let mut collected = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.recv().await {
                collected.push(event);
            }
        })
        .await
        .expect("the stream ends");
        collected
    }

    pub(super) fn text_of(events: &[Result<StreamEvent, AiError>]) -> String {
        events
            .iter()
            .filter_map(|event| if let Ok(StreamEvent::Delta(text)) = event { Some(text.as_str()) } else { None })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn refusals_map_to_errors_and_retry_decisions() {
        let quota = br#"{"error":{"message":"You exceeded your quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let invalid = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#;

        let rate_limited = classify_refusal(StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "3")]), b"");
        let no_quota = classify_refusal(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), quota);
        let overloaded = classify_refusal(StatusCode::from_u16(529).expect("status"), &HeaderMap::new(), b"");
        let bad_request = classify_refusal(StatusCode::BAD_REQUEST, &HeaderMap::new(), invalid);
        let unauthorized = classify_refusal(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"");
        let vetoed = classify_refusal(StatusCode::BAD_GATEWAY, &headers(&[("x-should-retry", "false")]), b"");

        assert_eq!(rate_limited.error, AiError::RateLimited { retry_after_opt: Some(Duration::from_secs(3)) });
        assert!(rate_limited.retryable);
        assert!(matches!(no_quota.error, AiError::InvalidRequest(ref m) if m.contains("quota")), "{no_quota:?}");
        assert!(!no_quota.retryable);
        assert_eq!((overloaded.error, overloaded.retryable), (AiError::Overloaded, true));
        assert_eq!(
            bad_request.error,
            AiError::InvalidRequest("invalid_request_error: max_tokens: required".to_owned())
        );
        assert!(!bad_request.retryable);
        assert_eq!((unauthorized.error, unauthorized.retryable), (AiError::Unauthorized, false));
        assert!(matches!(vetoed.error, AiError::Unavailable(_)) && !vetoed.retryable, "{vetoed:?}");
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let both = headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]);

        assert_eq!(provider_wait(&both), Some(Duration::from_millis(1500)));
        assert_eq!(provider_wait(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(provider_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn temperature_and_token_estimate_are_round_numbers() {
        assert_eq!(wire_temperature(0.3), 0.3);
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(9), 3);
    }
}
