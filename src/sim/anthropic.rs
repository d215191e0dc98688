//! A faithful local fake of the Anthropic Messages API (reference §4, especially §4.5), served by
//! axum on `127.0.0.1:0`.
//!
//! It owns: `POST /v1/messages` with `x-api-key` auth, `anthropic-version`, the validation of
//! `model`, `max_tokens` and `messages`, the non-streaming Message JSON and the streamed events
//! in Anthropic's order (with a `ping`, text split into several `text_delta`s, cumulative usage in
//! `message_delta`), the `request-id` header, run-time faults ([`AiFault`]) and the recording of
//! every request. Replies are scripted ([`AnthropicSim::set_reply`]) or built from the last user
//! message; tokens are counted as whitespace-separated words.
//!
//! It also holds what the OpenAI-compatible fake ([`super::openai`]) shares with it: the fault
//! switches, the request log, the reply script, the streaming of a scripted body with faults,
//! and the emission log a load test matches its received deltas against ([`AiEmission`]).
//!
//! It leaves to others: the client (`ai::anthropic`) and every business rule. Tools, images,
//! thinking and prompt caching are not modelled.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::server::{ApiFaults, ApiRefusal, SimServer, lock, take_one};

// ---------------------------------------------------------------------------------------------
// Shared with the OpenAI-compatible fake
// ---------------------------------------------------------------------------------------------

/// A misbehaviour switched on at run time with `set_fault` on either model fake.
///
/// `times` applies the fault to the next N requests (or streams) and then stops; `usize::MAX`
/// means always. Setting a fault replaces an earlier one of the same kind. A 401 and a 400 never
/// consume a fault. Refusals are drawn first (429, then 500, then 529); a stream draws at most
/// one stream fault (error, then stall, then drop). Stream faults that need more deltas than
/// the reply has do not fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiFault {
    /// Answers 429 with `retry-after: retry_after_secs` and the vendor's rate-limit body.
    Status429 { times: usize, retry_after_secs: u64 },
    /// Answers 500 with the vendor's server-error body.
    Status500 { times: usize },
    /// Answers Anthropic's 529 `overloaded_error`; the OpenAI fake answers 503 `server_error`.
    Overloaded529 { times: usize },
    /// Sends two text deltas, then the vendor's error event (or error chunk), then closes.
    ErrorMidStream { times: usize },
    /// Sends the headers, the stream's opening and one delta, then nothing (the connection stays
    /// open), for idle-timeout tests.
    Stall { times: usize },
    /// Sends two deltas, then aborts the connection without the end of the stream.
    DropMidStream { times: usize },
}

/// One request a model fake received, refused or not.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedAiRequest {
    /// Every header, names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Value::Null` when it was not JSON.
    pub body: Value,
}

impl RecordedAiRequest {
    /// Returns the first value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// One text delta a model fake handed to a streamed answer's body, logged while
/// `record_emissions(true)` is on, so that a load test can tell how long the server under test
/// took to relay each delta to its own client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiEmission {
    /// The request's end user: Anthropic's `metadata.user_id`, OpenAI's `user`; empty when the
    /// request named none. leadorch sends the lead id there.
    pub user_id: Arc<str>,
    /// The delta's place in its answer: 0 for the first text delta, then 1, 2, ...
    pub index: u32,
    /// Taken just before the delta's bytes were handed to the response body.
    pub at: Instant,
}

/// Where one streamed answer logs its text deltas.
#[derive(Debug, Clone)]
pub(super) struct EmissionLog {
    user_id: Arc<str>,
    log: Arc<Mutex<Vec<AiEmission>>>,
}

impl EmissionLog {
    fn record(&self, index: u32) {
        let at = Instant::now();
        lock(&self.log).push(AiEmission { user_id: Arc::clone(&self.user_id), index, at });
    }
}

/// A refusal drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AiRefusal {
    TooManyRequests { retry_after_secs: u64 },
    Internal,
    Overloaded,
}

/// A stream fault drawn for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamFault {
    ErrorMidStream,
    Stall,
    DropMidStream,
}

#[derive(Debug, Default)]
struct FaultCounts {
    api: ApiFaults<u64>,
    overloaded_remaining: usize,
    error_mid_stream_remaining: usize,
    stall_remaining: usize,
    drop_remaining: usize,
}

/// The state both model fakes keep beside their vendor specifics.
#[derive(Debug, Default)]
pub(super) struct AiSimCore {
    requests: Mutex<Vec<RecordedAiRequest>>,
    faults: Mutex<FaultCounts>,
    reply_opt: Mutex<Option<String>>,
    chunk_delay: Mutex<Duration>,
    /// Source of message and request ids, so two answers never share one.
    next_id: AtomicU64,
    /// Whether streams log their deltas in `emissions`; off by default, since the log only
    /// grows.
    records_emissions: AtomicBool,
    /// Shared with the streams in flight, which append to it as they emit.
    emissions: Arc<Mutex<Vec<AiEmission>>>,
}

impl AiSimCore {
    /// Records a request and returns its JSON body (`Value::Null` when unreadable).
    pub(super) fn record(&self, headers: &HeaderMap, body: &[u8]) -> Value {
        let body_json = serde_json::from_slice(body).unwrap_or(Value::Null);
        let headers = headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        lock(&self.requests).push(RecordedAiRequest { headers, body: body_json.clone() });
        body_json
    }

    pub(super) fn requests(&self) -> Vec<RecordedAiRequest> {
        lock(&self.requests).clone()
    }

    pub(super) fn set_fault(&self, fault: AiFault) {
        let mut faults = lock(&self.faults);
        match fault {
            AiFault::Status429 { times, retry_after_secs } => {
                faults.api.status_429_opt = Some((retry_after_secs, times))
            }
            AiFault::Status500 { times } => faults.api.status_500_remaining = times,
            AiFault::Overloaded529 { times } => faults.overloaded_remaining = times,
            AiFault::ErrorMidStream { times } => faults.error_mid_stream_remaining = times,
            AiFault::Stall { times } => faults.stall_remaining = times,
            AiFault::DropMidStream { times } => faults.drop_remaining = times,
        }
    }

    /// Uses up the refusal that applies to this request, if any.
    pub(super) fn take_refusal(&self) -> Option<AiRefusal> {
        let mut faults = lock(&self.faults);
        match faults.api.take() {
            (_, Some(ApiRefusal::TooManyRequests(retry_after_secs))) => {
                Some(AiRefusal::TooManyRequests { retry_after_secs })
            }
            (_, Some(ApiRefusal::Internal)) => Some(AiRefusal::Internal),
            (_, None) => take_one(&mut faults.overloaded_remaining).then_some(AiRefusal::Overloaded),
        }
    }

    /// Uses up the stream fault that applies to this stream, if any.
    pub(super) fn take_stream_fault(&self) -> Option<StreamFault> {
        let mut faults = lock(&self.faults);
        if take_one(&mut faults.error_mid_stream_remaining) {
            return Some(StreamFault::ErrorMidStream);
        }
        if take_one(&mut faults.stall_remaining) {
            return Some(StreamFault::Stall);
        }
        take_one(&mut faults.drop_remaining).then_some(StreamFault::DropMidStream)
    }

    pub(super) fn set_reply(&self, text: &str) {
        *lock(&self.reply_opt) = Some(text.to_owned());
    }

    /// Returns the scripted reply, or one built from the last user message.
    pub(super) fn reply(&self, last_user_text: &str) -> String {
        lock(&self.reply_opt)
            .clone()
            .unwrap_or_else(|| format!("You asked: {}. A sedan is $300.", last_user_text.trim()))
    }

    pub(super) fn set_chunk_delay(&self, delay: Duration) {
        *lock(&self.chunk_delay) = delay;
    }

    pub(super) fn chunk_delay(&self) -> Duration {
        *lock(&self.chunk_delay)
    }

    pub(super) fn record_emissions(&self, on: bool) {
        self.records_emissions.store(on, Ordering::SeqCst);
    }

    pub(super) fn emissions(&self) -> Vec<AiEmission> {
        lock(&self.emissions).clone()
    }

    /// Returns the log a stream for `user_id` writes to, or `None` while logging is off.
    fn emission_log(&self, user_id: &str) -> Option<EmissionLog> {
        self.records_emissions
            .load(Ordering::SeqCst)
            .then(|| EmissionLog { user_id: Arc::from(user_id), log: Arc::clone(&self.emissions) })
    }

    /// Returns `{prefix}{24 hex}`, unique within this fake.
    pub(super) fn next_id(&self, prefix: &str) -> String {
        let serial = self.next_id.fetch_add(1, Ordering::SeqCst);
        format!("{prefix}{serial:024x}")
    }
}

/// How long a dropped stream pauses before the cut, so what it sent reaches the client.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// One SSE frame of a scripted stream, already in wire form.
#[derive(Debug, Clone)]
pub(super) struct ScriptedFrame {
    pub(super) wire: String,
    /// Whether it carries reply text; chunk delays and stream faults count these.
    pub(super) is_delta: bool,
}

/// One step of playing a scripted stream.
#[derive(Debug)]
enum Step {
    /// Wire bytes, with the text delta's index when they carry one.
    Send(String, Option<u32>),
    Wait(Duration),
    Stall,
    Abort,
}

/// Returns a streaming body that plays `frames`, waiting `chunk_delay` before each delta and
/// applying `fault_opt` (`error_wire` is what [`StreamFault::ErrorMidStream`] sends); each delta
/// is logged in `emissions_opt` as it goes out.
pub(super) fn scripted_body(
    frames: Vec<ScriptedFrame>,
    fault_opt: Option<StreamFault>,
    error_wire: String,
    chunk_delay: Duration,
    emissions_opt: Option<EmissionLog>,
) -> Body {
    let mut steps = Vec::new();
    let mut deltas_sent: u32 = 0;
    for frame in frames {
        if frame.is_delta && !chunk_delay.is_zero() {
            steps.push(Step::Wait(chunk_delay));
        }
        if !frame.is_delta {
            steps.push(Step::Send(frame.wire, None));
            continue;
        }
        steps.push(Step::Send(frame.wire, Some(deltas_sent)));
        deltas_sent += 1;
        match (fault_opt, deltas_sent) {
            (Some(StreamFault::Stall), 1) => {
                steps.push(Step::Stall);
                break;
            }
            (Some(StreamFault::ErrorMidStream), 2) => {
                steps.push(Step::Send(error_wire, None));
                break;
            }
            (Some(StreamFault::DropMidStream), 2) => {
                // hyper discards unflushed bytes when a body fails; a pause lets the deltas out.
                steps.push(Step::Wait(FLUSH_PAUSE));
                steps.push(Step::Abort);
                break;
            }
            _ => {}
        }
    }
    let stream = futures::stream::unfold((steps.into_iter(), emissions_opt), |(mut steps, emissions_opt)| async move {
        loop {
            match steps.next()? {
                Step::Send(wire, delta_index_opt) => {
                    if let (Some(index), Some(emissions)) = (delta_index_opt, &emissions_opt) {
                        emissions.record(index);
                    }
                    return Some((Ok(Bytes::from(wire)), (steps, emissions_opt)));
                }
                Step::Wait(delay) => tokio::time::sleep(delay).await,
                // Held until the client gives up and closes the connection.
                Step::Stall => std::future::pending::<()>().await,
                // An error from the body makes hyper cut the connection without the last chunk.
                Step::Abort => return Some((Err(io::Error::other("sim dropped the stream")), (steps, emissions_opt))),
            }
        }
    });
    Body::from_stream(stream)
}

/// Returns a reply cut into the pieces the fakes stream: two words each, spaces kept, so the
/// pieces concatenate to the reply.
pub(super) fn reply_pieces(reply: &str) -> Vec<String> {
    let words: Vec<&str> = reply.split_inclusive(' ').collect();
    words.chunks(2).map(|pair| pair.concat()).collect()
}

/// Counts tokens the way both fakes do: one per whitespace-separated word.
pub(super) fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Returns the text of a message `content`: a string, or the `text` of an array's blocks.
pub(super) fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|block| block.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

impl AiSimCore {
    /// Streams `frames` with the event-stream headers, applying the next stream fault (whose
    /// error frame is `error_wire`) and the chunk delay; the deltas are logged under `user_id`
    /// while emission logging is on.
    pub(super) fn stream_answer(&self, frames: Vec<ScriptedFrame>, error_wire: String, user_id: &str) -> Response {
        let emissions_opt = self.emission_log(user_id);
        let body = scripted_body(frames, self.take_stream_fault(), error_wire, self.chunk_delay(), emissions_opt);
        (event_stream_headers(), body).into_response()
    }
}

/// Returns the answer headers of a stream.
pub(super) fn event_stream_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// Writes the run-time controls both AI fakes expose on `$sim`, a struct with a `server:
/// SimServer` and a `shared` holding an [`AiSimCore`] as `core`; `$delay_doc` documents
/// `set_chunk_delay`.
macro_rules! ai_sim_controls {
    ($sim:ty, $delay_doc:literal) => {
        impl $sim {
            /// Stops accepting requests and waits (at most 5 s) for open connections to finish.
            pub async fn shutdown(mut self) {
                self.server.shutdown().await;
            }

            /// Returns every request received, refused ones included, in arrival order.
            pub fn requests(&self) -> Vec<RecordedAiRequest> {
                self.shared.core.requests()
            }

            /// Switches a fault on; see [`AiFault`] for how faults combine and count down.
            pub fn set_fault(&self, fault: AiFault) {
                self.shared.core.set_fault(fault);
            }

            /// Makes every later answer this text.
            pub fn set_reply(&self, text: &str) {
                self.shared.core.set_reply(text);
            }

            #[doc = $delay_doc]
            pub fn set_chunk_delay(&self, delay: Duration) {
                self.shared.core.set_chunk_delay(delay);
            }

            /// Switches the emission log on or off for streams that start later; see
            /// [`AiEmission`]. Off by default.
            pub fn record_emissions(&self, on: bool) {
                self.shared.core.record_emissions(on);
            }

            /// Returns every text delta logged so far, in emission order.
            pub fn emissions(&self) -> Vec<AiEmission> {
                self.shared.core.emissions()
            }
        }
    };
}
pub(super) use ai_sim_controls;

// ---------------------------------------------------------------------------------------------
// The Anthropic fake
// ---------------------------------------------------------------------------------------------

/// The account the fake serves.
#[derive(Clone)]
pub struct AnthropicSimConfig {
    /// The only `x-api-key` accepted.
    pub api_key: String,
}

impl std::fmt::Debug for AnthropicSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicSimConfig").finish_non_exhaustive()
    }
}

/// A running fake Anthropic API. Dropping it (or [`AnthropicSim::shutdown`]) stops the server.
#[derive(Debug)]
pub struct AnthropicSim {
    server: SimServer,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    api_key: String,
    core: AiSimCore,
}

impl AnthropicSim {
    /// Binds `127.0.0.1:0` and serves the Messages API in a tokio task.
    ///
    /// # Errors
    /// The listener cannot bind.
    pub async fn start(config: AnthropicSimConfig) -> io::Result<AnthropicSim> {
        let shared = Arc::new(Shared { api_key: config.api_key, core: AiSimCore::default() });
        let server = SimServer::start("anthropic", router(Arc::clone(&shared))).await?;
        Ok(AnthropicSim { server, shared })
    }

    /// Returns `http://127.0.0.1:PORT`; clients append `/v1/messages`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
}

ai_sim_controls!(AnthropicSim, "Waits this long before each text delta (slow tokens).");

fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/v1/messages", post(create_message)).with_state(shared)
}

async fn create_message(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = shared.core.next_id("req_");
    let body_json = shared.core.record(&headers, &body);
    let mut response = answer(&shared, &headers, &body_json, &request_id);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

fn answer(shared: &Shared, headers: &HeaderMap, body: &Value, request_id: &str) -> Response {
    let key_opt = headers.get("x-api-key").and_then(|value| value.to_str().ok());
    if key_opt != Some(shared.api_key.as_str()) {
        return error_answer(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key", request_id);
    }
    if !headers.contains_key("anthropic-version") {
        let message = "anthropic-version: header is required";
        return error_answer(StatusCode::BAD_REQUEST, "invalid_request_error", message, request_id);
    }
    let request = match ValidRequest::parse(body) {
        Ok(request) => request,
        Err(message) => return error_answer(StatusCode::BAD_REQUEST, "invalid_request_error", &message, request_id),
    };
    if let Some(refusal) = shared.core.take_refusal() {
        return refusal_answer(refusal, request_id);
    }
    let reply = shared.core.reply(&request.last_user_text);
    let message_id = shared.core.next_id("msg_");
    let output_tokens = count_tokens(&reply);
    if !request.stream {
        let message = json!({
            "id": message_id, "type": "message", "role": "assistant", "model": request.model,
            "content": [{ "type": "text", "text": reply }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": request.input_tokens, "output_tokens": output_tokens },
        });
        return Json(message).into_response();
    }
    let frames = stream_frames(&request, &message_id, &reply);
    let error_wire = event_wire(
        "error",
        &json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
    );
    let user_id = body.pointer("/metadata/user_id").and_then(Value::as_str).unwrap_or_default();
    shared.core.stream_answer(frames, error_wire, user_id)
}

/// The parts of a valid Messages request the fake answers from.
#[derive(Debug)]
struct ValidRequest {
    model: String,
    stream: bool,
    input_tokens: u32,
    last_user_text: String,
}

impl ValidRequest {
    /// Validates a request body like the API does; the error is Anthropic's message.
    fn parse(body: &Value) -> Result<ValidRequest, String> {
        if !body.is_object() {
            return Err("request body must be a JSON object".to_owned());
        }
        let Some(model) = body.get("model").and_then(Value::as_str).filter(|model| !model.is_empty()) else {
            return Err("model: Field required".to_owned());
        };
        if body.get("max_tokens").and_then(Value::as_u64).is_none_or(|max_tokens| max_tokens == 0) {
            return Err("max_tokens: Field required".to_owned());
        }
        let Some(messages) = body.get("messages").and_then(Value::as_array).filter(|messages| !messages.is_empty())
        else {
            return Err("messages: Field required".to_owned());
        };
        let mut expected_role = "user";
        let mut text = content_text(body.get("system").unwrap_or(&Value::Null));
        let mut last_user_text = String::new();
        for (index, message) in messages.iter().enumerate() {
            let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
            if role != expected_role {
                return Err(if index == 0 {
                    "messages: first message must use the \"user\" role".to_owned()
                } else {
                    format!("messages.{index}: roles must alternate between \"user\" and \"assistant\"")
                });
            }
            let content = content_text(message.get("content").unwrap_or(&Value::Null));
            text.push(' ');
            text.push_str(&content);
            if role == "user" {
                last_user_text = content;
            }
            expected_role = if role == "user" { "assistant" } else { "user" };
        }
        Ok(ValidRequest {
            model: model.to_owned(),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            input_tokens: count_tokens(&text),
            last_user_text,
        })
    }
}

/// Returns the events of one streamed answer in Anthropic's order (§4.2).
fn stream_frames(request: &ValidRequest, message_id: &str, reply: &str) -> Vec<ScriptedFrame> {
    let frame = |name: &str, data: Value| ScriptedFrame { wire: event_wire(name, &data), is_delta: false };
    let mut frames = vec![
        frame(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": request.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": request.input_tokens, "output_tokens": 1 },
            }}),
        ),
        frame(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        frame("ping", json!({ "type": "ping" })),
    ];
    for piece in reply_pieces(reply) {
        let data = json!({ "type": "content_block_delta", "index": 0,
            "delta": { "type": "text_delta", "text": piece } });
        frames.push(ScriptedFrame { wire: event_wire("content_block_delta", &data), is_delta: true });
    }
    frames.push(frame("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })));
    frames.push(frame(
        "message_delta",
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null },
            "usage": { "output_tokens": count_tokens(reply) } }),
    ));
    frames.push(frame("message_stop", json!({ "type": "message_stop" })));
    frames
}

fn event_wire(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn refusal_answer(refusal: AiRefusal, request_id: &str) -> Response {
    match refusal {
        AiRefusal::TooManyRequests { retry_after_secs } => {
            let message = "Number of request tokens has exceeded your per-minute rate limit";
            let mut response = error_answer(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message, request_id);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        AiRefusal::Internal => {
            error_answer(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error", request_id)
        }
        AiRefusal::Overloaded => {
            let status = StatusCode::from_u16(529).expect("529 is a valid status code");
            error_answer(status, "overloaded_error", "Overloaded", request_id)
        }
    }
}

fn error_answer(status: StatusCode, kind: &str, message: &str, request_id: &str) -> Response {
    let body = json!({ "type": "error", "error": { "type": kind, "message": message }, "request_id": request_id });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::ai::sse::{self, SseFrame};

    const KEY: &str = "sk-ant-sim";

    async fn start_sim() -> AnthropicSim {
        AnthropicSim::start(AnthropicSimConfig { api_key: KEY.to_owned() }).await.expect("sim starts")
    }

    fn valid_body(stream: bool) -> Value {
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "system": "Be brief.",
            "messages": [{ "role": "user", "content": "Sedan tint?" }], "stream": stream,
        })
    }

    async fn post(sim: &AnthropicSim, key_opt: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/messages", sim.base_url()))
            .header("anthropic-version", "2023-06-01")
            .json(body);
        if let Some(key) = key_opt {
            request = request.header("x-api-key", key);
        }
        request.send().await.expect("answer")
    }

    async fn read_frames(response: reqwest::Response) -> Vec<SseFrame> {
        let frames = sse::frames(Box::pin(response.bytes_stream()));
        tokio::time::timeout(Duration::from_secs(5), frames.map(|frame| frame.expect("frame")).collect::<Vec<_>>())
            .await
            .expect("the stream ends")
    }

    #[tokio::test]
    async fn stream_sends_the_documented_event_order_with_a_ping_and_a_request_id() {
        let sim = start_sim().await;
        sim.set_reply("A sedan is $300 with our ceramic film.");

        let response = post(&sim, Some(KEY), &valid_body(true)).await;
        let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let frames = read_frames(response).await;

        assert!(request_id.is_some_and(|id| id.starts_with("req_")));
        assert_eq!(content_type, Some(HeaderValue::from_static("text/event-stream")));
        let names: Vec<&str> = frames.iter().map(|frame| frame.event_opt.as_deref().unwrap_or("")).collect();
        let mut deduped = names.clone();
        deduped.dedup();
        assert_eq!(
            deduped,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(names.iter().filter(|name| **name == "content_block_delta").count(), 4);
        let data: Vec<Value> = frames.iter().map(|frame| serde_json::from_str(&frame.data).expect("json")).collect();
        for (frame, value) in frames.iter().zip(&data) {
            assert_eq!(value["type"].as_str(), frame.event_opt.as_deref());
        }
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 4);
        let text: String = data.iter().filter_map(|value| value["delta"]["text"].as_str()).collect();
        assert_eq!(text, "A sedan is $300 with our ceramic film.");
        assert_eq!(data[data.len() - 2]["usage"]["output_tokens"], 8);
    }

    #[tokio::test]
    async fn non_streaming_request_gets_a_message() {
        let sim = start_sim().await;

        let message: Value = post(&sim, Some(KEY), &valid_body(false)).await.json().await.expect("json");

        assert_eq!(message["type"], "message");
        assert_eq!(message["content"][0]["text"], "You asked: Sedan tint?. A sedan is $300.");
        assert_eq!(message["usage"], json!({ "input_tokens": 4, "output_tokens": 8 }));
    }

    #[tokio::test]
    async fn missing_or_wrong_key_is_401_with_an_authentication_error_body() {
        let sim = start_sim().await;

        let missing = post(&sim, None, &valid_body(true)).await;
        let wrong = post(&sim, Some("sk-ant-other"), &valid_body(true)).await;

        for response in [missing, wrong] {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().contains_key("request-id"));
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], "authentication_error");
            assert!(body["request_id"].as_str().is_some_and(|id| id.starts_with("req_")));
        }
        assert_eq!(sim.requests().len(), 2);
    }

    #[tokio::test]
    async fn invalid_requests_get_400_invalid_request_error() {
        let sim = start_sim().await;
        let without = |field: &str| {
            let mut body = valid_body(true);
            body.as_object_mut().expect("object").remove(field);
            body
        };
        let mut assistant_first = valid_body(true);
        assistant_first["messages"] =
            json!([{ "role": "assistant", "content": "Hi" }, { "role": "user", "content": "Hi" }]);
        let mut empty_messages = valid_body(true);
        empty_messages["messages"] = json!([]);

        for body in [without("model"), without("max_tokens"), without("messages"), empty_messages, assistant_first] {
            let response = post(&sim, Some(KEY), &body).await;

            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            let error: Value = response.json().await.expect("json");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        }
    }

    #[tokio::test]
    async fn faults_answer_429_with_retry_after_then_500_then_529_and_run_out() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::Status429 { times: 1, retry_after_secs: 7 });
        sim.set_fault(AiFault::Status500 { times: 1 });
        sim.set_fault(AiFault::Overloaded529 { times: 1 });

        let rate_limited = post(&sim, Some(KEY), &valid_body(false)).await;
        let internal = post(&sim, Some(KEY), &valid_body(false)).await;
        let overloaded = post(&sim, Some(KEY), &valid_body(false)).await;
        let fine = post(&sim, Some(KEY), &valid_body(false)).await;

        assert_eq!(rate_limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rate_limited.headers().get(header::RETRY_AFTER), Some(&HeaderValue::from_static("7")));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(overloaded.status().as_u16(), 529);
        let body: Value = overloaded.json().await.expect("json");
        assert_eq!(body["error"]["type"], "overloaded_error");
        assert_eq!(fine.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn error_mid_stream_sends_an_error_event_after_two_deltas() {
        let sim = start_sim().await;
        sim.set_fault(AiFault::ErrorMidStream { times: 1 });

        let frames = read_frames(post(&sim, Some(KEY), &valid_body(true)).await).await;

        let names: Vec<&str> = frames.iter().filter_map(|frame| frame.event_opt.as_deref()).collect();
        assert_eq!(names.iter().filter(|name| **name == "content_block_delta").count(), 2);
        assert_eq!(names.last(), Some(&"error"));
        assert!(!names.contains(&"message_stop"));
    }

    #[tokio::test]
    async fn chunk_delay_slows_each_delta() {
        let sim = start_sim().await;
        sim.set_reply("one two three four");
        sim.set_chunk_delay(Duration::from_millis(50));
        let started = std::time::Instant::now();

        let frames = read_frames(post(&sim, Some(KEY), &valid_body(true)).await).await;

        assert_eq!(frames.last().and_then(|frame| frame.event_opt.as_deref()), Some("message_stop"));
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn emissions_are_logged_per_user_and_delta_only_while_switched_on() {
        let sim = start_sim().await;
        sim.set_reply("one two three four five six");
        let mut body = valid_body(true);
        body["metadata"] = json!({ "user_id": "lead-1" });
        read_frames(post(&sim, Some(KEY), &body).await).await;
        assert!(sim.emissions().is_empty(), "off by default");

        sim.record_emissions(true);
        let before = Instant::now();
        read_frames(post(&sim, Some(KEY), &body).await).await;

        let emissions = sim.emissions();
        assert_eq!(emissions.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(emissions.iter().all(|e| &*e.user_id == "lead-1"), "{emissions:?}");
        assert!(emissions.windows(2).all(|pair| pair[0].at <= pair[1].at));
        assert!(emissions[0].at >= before);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let sim = start_sim().await;
        let url = format!("{}/v1/messages", sim.base_url());

        sim.shutdown().await;
        let result = reqwest::Client::new().post(url).send().await;

        assert!(result.is_err(), "{result:?}");
    }
}
