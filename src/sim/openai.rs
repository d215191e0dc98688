//! A faithful local fake of OpenAI Chat Completions and the servers compatible with it (reference
//! §5, especially §5.6), served by axum on `127.0.0.1:0`.
//!
//! It owns: `POST /v1/chat/completions` with optional Bearer auth (none configured = Ollama mode),
//! the validation of `model` and `messages`, the non-streaming completion and the data-only
//! stream (a first chunk with the role, content chunks, a finish chunk, the usage chunk when the
//! request asked for it and the profile honours that, then `data: [DONE]`), the `x-request-id`
//! header, run-time faults ([`AiFault`]) and the recording of every request. Replies and token
//! counts follow the Anthropic fake's rules (scripted or built from the last user message; one
//! token per word).
//!
//! It leaves to others: the client (`ai::openai`) and every business rule. Tools, `n` > 1,
//! logprobs and rate-limit headers are not modelled.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub use super::anthropic::{AiEmission, AiFault, RecordedAiRequest};
use super::anthropic::{
    AiRefusal, AiSimCore, ScriptedFrame, ai_sim_controls, content_text, count_tokens, reply_pieces,
};
use super::server::SimServer;

/// The `created` of every answer: a fixed time keeps answers deterministic.
const CREATED: i64 = 1_767_225_600;

/// The roles Chat Completions accepts.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// How the fake behaves.
#[derive(Clone)]
pub struct OpenAiSimConfig {
    /// The only Bearer token accepted; `None` accepts any request, as Ollama does.
    pub api_key_opt: Option<String>,
    /// Whether the server honours `stream_options.include_usage` (OpenAI does; older compatible
    /// servers never send the usage chunk). It also adds `system_fingerprint` to chunks.
    pub include_usage_profile: bool,
}

impl std::fmt::Debug for OpenAiSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSimConfig")
            .field("has_api_key", &self.api_key_opt.is_some())
            .field("include_usage_profile", &self.include_usage_profile)
            .finish()
    }
}

/// A running fake OpenAI-compatible server. Dropping it (or [`OpenAiSim::shutdown`]) stops it.
#[derive(Debug)]
pub struct OpenAiSim {
    server: SimServer,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: OpenAiSimConfig,
    core: AiSimCore,
}

impl OpenAiSim {
    /// Binds `127.0.0.1:0` and serves Chat Completions in a tokio task.
    ///
    /// # Errors
    /// The listener cannot bind.
    pub async fn start(config: OpenAiSimConfig) -> io::Result<OpenAiSim> {
        let shared = Arc::new(Shared { config, core: AiSimCore::default() });
        let server = SimServer::start("openai", router(Arc::clone(&shared))).await?;
        Ok(OpenAiSim { server, shared })
    }

    /// Returns `http://127.0.0.1:PORT/v1`, the base clients append `/chat/completions` to.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.base_url())
    }
}

ai_sim_controls!(OpenAiSim, "Waits this long before each content chunk (slow tokens).");

fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/v1/chat/completions", post(create_completion)).with_state(shared)
}

async fn create_completion(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = shared.core.next_id("req_");
    let body_json = shared.core.record(&headers, &body);
    let mut response = answer(&shared, &headers, &body_json);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn answer(shared: &Shared, headers: &HeaderMap, body: &Value) -> Response {
    if let Some(api_key) = &shared.config.api_key_opt {
        let bearer_opt = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if bearer_opt != Some(api_key.as_str()) {
            let message = "Incorrect API key provided. You can find your API key in your account settings.";
            return error_answer(StatusCode::UNAUTHORIZED, message, "invalid_request_error", Some("invalid_api_key"));
        }
    }
    let request = match ValidRequest::parse(body) {
        Ok(request) => request,
        Err(message) => {
            return error_answer(StatusCode::BAD_REQUEST, &message, "invalid_request_error", None);
        }
    };
    if let Some(refusal) = shared.core.take_refusal() {
        return refusal_answer(refusal);
    }
    let reply = shared.core.reply(&request.last_user_text);
    let completion_id = shared.core.next_id("chatcmpl-");
    let usage = json!({
        "prompt_tokens": request.prompt_tokens,
        "completion_tokens": count_tokens(&reply),
        "total_tokens": request.prompt_tokens.saturating_add(count_tokens(&reply)),
    });
    if !request.stream {
        let completion = json!({
            "id": completion_id, "object": "chat.completion", "created": CREATED, "model": request.model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
            "usage": usage,
        });
        return Json(completion).into_response();
    }
    let sends_usage = request.include_usage && shared.config.include_usage_profile;
    let chunk = |choices: Value, usage_opt: Option<&Value>| {
        let mut chunk = json!({
            "id": completion_id, "object": "chat.completion.chunk", "created": CREATED, "model": request.model,
            "choices": choices,
        });
        if shared.config.include_usage_profile {
            chunk["system_fingerprint"] = json!("fp_sim");
        }
        // With include_usage, every chunk carries `usage`: null except the last one.
        if request.include_usage {
            chunk["usage"] = usage_opt.cloned().unwrap_or(Value::Null);
        }
        chunk
    };
    let content_choice = |delta: Value, finish_reason: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }]);
    let mut frames =
        vec![data_frame(&chunk(content_choice(json!({ "role": "assistant", "content": "" }), Value::Null), None))];
    for piece in reply_pieces(&reply) {
        let wire = data_wire(&chunk(content_choice(json!({ "content": piece }), Value::Null), None));
        frames.push(ScriptedFrame { wire, is_delta: true });
    }
    frames.push(data_frame(&chunk(content_choice(json!({}), json!("stop")), None)));
    if sends_usage {
        frames.push(data_frame(&chunk(json!([]), Some(&usage))));
    }
    frames.push(ScriptedFrame { wire: "data: [DONE]\n\n".to_owned(), is_delta: false });
    let error_wire = data_wire(&json!({ "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": null, "code": null,
    }}));
    let user_id = body.get("user").and_then(Value::as_str).unwrap_or_default();
    shared.core.stream_answer(frames, error_wire, user_id)
}

/// The parts of a valid request the fake answers from.
#[derive(Debug)]
struct ValidRequest {
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u32,
    last_user_text: String,
}

impl ValidRequest {
    /// Validates a request body like the API does; the error is OpenAI's message.
    fn parse(body: &Value) -> Result<ValidRequest, String> {
        if !body.is_object() {
            return Err("We could not parse the JSON body of your request.".to_owned());
        }
        let Some(model) = body.get("model").and_then(Value::as_str).filter(|model| !model.is_empty()) else {
            return Err("you must provide a model parameter".to_owned());
        };
        let Some(messages) = body.get("messages").and_then(Value::as_array).filter(|messages| !messages.is_empty())
        else {
            return Err("[] is too short - 'messages'".to_owned());
        };
        let mut text = String::new();
        let mut last_user_text = String::new();
        for (index, message) in messages.iter().enumerate() {
            let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
            if !ROLES.contains(&role) {
                return Err(format!("Invalid value for 'messages[{index}].role'"));
            }
            let content = content_text(message.get("content").unwrap_or(&Value::Null));
            text.push(' ');
            text.push_str(&content);
            if role == "user" {
                last_user_text = content;
            }
        }
        Ok(ValidRequest {
            model: model.to_owned(),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false),
            prompt_tokens: count_tokens(&text),
            last_user_text,
        })
    }
}

fn data_wire(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn data_frame(data: &Value) -> ScriptedFrame {
    ScriptedFrame { wire: data_wire(data), is_delta: false }
}

fn refusal_answer(refusal: AiRefusal) -> Response {
    match refusal {
        AiRefusal::TooManyRequests { retry_after_secs } => {
            let message = "Rate limit reached for requests. Please try again later.";
            let mut response =
                error_answer(StatusCode::TOO_MANY_REQUESTS, message, "requests", Some("rate_limit_exceeded"));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        AiRefusal::Internal => error_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "server_error",
            None,
        ),
        AiRefusal::Overloaded => error_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
    }
}

fn error_answer(status: StatusCode, message: &str, kind: &str, code_opt: Option<&str>) -> Response {
    let body = json!({ "error": { "message": message, "type": kind, "param": null, "code": code_opt } });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::ai::sse::{self, SseFrame};

    const KEY: &str = "sk-sim";

    async fn start_sim(api_key_opt: Option<&str>, include_usage_profile: bool) -> OpenAiSim {
        OpenAiSim::start(OpenAiSimConfig { api_key_opt: api_key_opt.map(str::to_owned), include_usage_profile })
            .await
            .expect("sim starts")
    }

    fn valid_body(include_usage: bool) -> Value {
        json!({
            "model": "gpt-4o", "stream": true, "stream_options": { "include_usage": include_usage },
            "messages": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Sedan tint?" }],
        })
    }

    async fn post(sim: &OpenAiSim, key_opt: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = reqwest::Client::new().post(format!("{}/chat/completions", sim.base_url())).json(body);
        if let Some(key) = key_opt {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("answer")
    }

    async fn read_frames(response: reqwest::Response) -> Vec<SseFrame> {
        let frames = sse::frames(Box::pin(response.bytes_stream()));
        tokio::time::timeout(Duration::from_secs(5), frames.map(|frame| frame.expect("frame")).collect::<Vec<_>>())
            .await
            .expect("the stream ends")
    }

    fn chunks(frames: &[SseFrame]) -> Vec<Value> {
        frames
            .iter()
            .filter(|frame| frame.data != "[DONE]")
            .map(|frame| serde_json::from_str(&frame.data).expect("json"))
            .collect()
    }

    #[tokio::test]
    async fn stream_sends_role_content_finish_and_usage_chunks_then_done() {
        let sim = start_sim(Some(KEY), true).await;
        sim.set_reply("A sedan is $300 with our ceramic film.");

        let response = post(&sim, Some(KEY), &valid_body(true)).await;
        let has_request_id = response.headers().contains_key("x-request-id");
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let frames = read_frames(response).await;

        assert!(has_request_id);
        assert_eq!(content_type, Some(HeaderValue::from_static("text/event-stream")));
        assert!(frames.iter().all(|frame| frame.event_opt.is_none()));
        assert_eq!(frames.last().map(|frame| frame.data.as_str()), Some("[DONE]"));
        let chunks = chunks(&frames);
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
        let text: String = chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "A sedan is $300 with our ceramic film.");
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["usage"], Value::Null);
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 4);
        assert_eq!(last["usage"]["completion_tokens"], 8);
        assert!(chunks.iter().all(|chunk| chunk["object"] == "chat.completion.chunk"));
    }

    #[tokio::test]
    async fn usage_chunk_comes_only_when_asked_for_and_the_profile_honours_it() {
        let usage_server = start_sim(None, true).await;
        let plain_server = start_sim(None, false).await;

        let not_asked = chunks(&read_frames(post(&usage_server, None, &valid_body(false)).await).await);
        let not_honoured = chunks(&read_frames(post(&plain_server, None, &valid_body(true)).await).await);

        for stream in [not_asked, not_honoured] {
            assert!(stream.iter().all(|chunk| chunk["usage"].is_null()), "{stream:?}");
            assert_eq!(stream.last().map(|chunk| &chunk["choices"][0]["finish_reason"]), Some(&json!("stop")));
        }
    }

    #[tokio::test]
    async fn keyed_server_refuses_a_missing_or_wrong_key_with_401() {
        let sim = start_sim(Some(KEY), true).await;

        let missing = post(&sim, None, &valid_body(true)).await;
        let wrong = post(&sim, Some("sk-other"), &valid_body(true)).await;

        for response in [missing, wrong] {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "invalid_api_key");
        }
    }

    #[tokio::test]
    async fn missing_model_or_messages_is_400() {
        let sim = start_sim(None, true).await;
        let mut no_model = valid_body(true);
        no_model.as_object_mut().expect("object").remove("model");
        let mut no_messages = valid_body(true);
        no_messages["messages"] = json!([]);

        for body in [no_model, no_messages] {
            let response = post(&sim, None, &body).await;

            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let error: Value = response.json().await.expect("json");
            assert_eq!(error["error"]["type"], "invalid_request_error");
        }
    }

    #[tokio::test]
    async fn status429_carries_retry_after_and_rate_limit_exceeded() {
        let sim = start_sim(None, true).await;
        sim.set_fault(AiFault::Status429 { times: 1, retry_after_secs: 2 });

        let refused = post(&sim, None, &valid_body(true)).await;
        let served = post(&sim, None, &valid_body(true)).await;

        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers().get(header::RETRY_AFTER), Some(&HeaderValue::from_static("2")));
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(sim.requests().len(), 2);
    }

    #[tokio::test]
    async fn error_mid_stream_sends_an_error_chunk_after_two_content_chunks_and_no_done() {
        let sim = start_sim(None, true).await;
        sim.set_fault(AiFault::ErrorMidStream { times: 1 });

        let frames = read_frames(post(&sim, None, &valid_body(true)).await).await;

        assert!(frames.iter().all(|frame| frame.data != "[DONE]"));
        let chunks = chunks(&frames);
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert_eq!(chunks[3]["error"]["type"], "server_error");
    }

    #[tokio::test]
    async fn non_streaming_request_gets_a_completion() {
        let sim = start_sim(None, true).await;
        let mut body = valid_body(false);
        body["stream"] = json!(false);

        let completion: Value = post(&sim, None, &body).await.json().await.expect("json");

        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["choices"][0]["message"]["content"], "You asked: Sedan tint?. A sedan is $300.");
        assert_eq!(completion["usage"]["total_tokens"], 12);
    }
}
