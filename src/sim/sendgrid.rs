//! A faithful local fake of SendGrid v3 (reference §3, especially §3.5), served by axum on
//! `127.0.0.1:0`.
//!
//! It owns: `POST /v3/mail/send` with SendGrid's bearer auth, field validation and
//! `{"errors":[{"field","message"}]}` answers, and `202` plus `X-Message-Id` on success; signed
//! Event Webhook batches (`processed`, then `delivered`) after each accepted mail, plus any event
//! a test asks for; an Email Activity-style search `GET /v3/messages?query=custom_args.KEY="VALUE"`
//! (the shape `messaging::sendgrid` documents as an assumption); run-time fault switches
//! ([`SendGridFault`]); and observation of the mail it accepted.
//!
//! It leaves to others: the client (`messaging::sendgrid`), the signature scheme
//! (`messaging::sendgrid_events`, which this fake calls so both sides agree) and every business
//! rule. Nothing is ever delivered to a mailbox.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use leadorch_actors::domain::Email;

use super::server::{ApiFaults, ApiRefusal, SimServer, lock, run_with_faults};
use crate::messaging::sendgrid::message_id_prefix;
use crate::messaging::sendgrid_events::{EventSigner, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Suffix of `sg_message_id` (and the activity `msg_id`) after the `X-Message-Id`.
const SG_MESSAGE_ID_SUFFIX: &str = ".filter0001";
/// Event batch delivery attempts before the fake gives up on one batch.
const MAX_DELIVERY_ATTEMPTS: u32 = 5;
/// Back-off before the second attempt; it doubles before each later one.
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Per-attempt timeout of an event POST, so a hung receiver cannot hold a batch forever.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// `X-RateLimit-Limit` advertised on 429 answers.
const RATE_LIMIT_PER_WINDOW: u64 = 10_000;
/// Rows `GET /v3/messages` returns without a `limit`, and the most it accepts.
const DEFAULT_MESSAGES_LIMIT: usize = 10;
const MAX_MESSAGES_LIMIT: usize = 1000;
const UNAUTHORIZED_MESSAGE: &str = "The provided authorization grant is invalid, expired, or revoked";
const INVALID_ADDRESS_MESSAGE: &str = "Does not contain a valid address.";

// ---------------------------------------------------------------------------------------------
// Configuration, faults and observation
// ---------------------------------------------------------------------------------------------

/// What a [`SendGridSim`] starts with.
#[derive(Clone)]
pub struct SendGridSimConfig {
    /// The only bearer token the fake accepts.
    pub api_key: String,
}

impl std::fmt::Debug for SendGridSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGridSimConfig").finish_non_exhaustive()
    }
}

/// A misbehaviour switched on at run time with [`SendGridSim::set_fault`].
///
/// `times` applies the fault to the next N API requests and then stops; `usize::MAX` means
/// always. Setting a counted fault replaces an earlier one of the same kind. Requests are
/// authenticated first, so a 401 never consumes a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendGridFault {
    /// Answers API requests with 500 and an `errors` body.
    Status500 { times: usize },
    /// Answers API requests with 429, the `X-RateLimit-*` headers (reset one second ahead) and
    /// `too many requests`.
    Status429 { times: usize },
    /// Delays API requests, then serves them normally.
    Slow { delay: Duration, times: usize },
    /// Refuses mail to this address (compared case-insensitively) with a 400 naming
    /// `personalizations.N.to`; adds to earlier `BadRecipient` faults.
    BadRecipient { email: String },
    /// Signs event batches with a key other than [`SendGridSim::public_key_base64`].
    BadEventSignature,
    /// Posts every event batch twice, with the same `sg_event_id`s.
    DuplicateEvents,
}

/// One recipient of a mail the fake accepted (a mail to two recipients is two `SimEmail`s with
/// one `message_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEmail {
    /// The `X-Message-Id` the fake answered.
    pub message_id: String,
    pub to: String,
    pub from: String,
    /// The personalization's subject if it has one, else the mail's.
    pub subject: String,
    /// The `text/plain` content, empty when there was none.
    pub text: String,
    /// The `text/html` content, empty when there was none.
    pub html: String,
    /// The mail's `custom_args` overlaid with the personalization's, as events carry them.
    pub custom_args: BTreeMap<String, String>,
    pub received_at: Instant,
    pub at: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------

/// A running fake SendGrid. Dropping it (or [`SendGridSim::shutdown`]) stops the server and any
/// event retries still pending.
pub struct SendGridSim {
    server: SimServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SendGridSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGridSim").field("addr", &self.server.addr()).finish_non_exhaustive()
    }
}

impl SendGridSim {
    /// Binds `127.0.0.1:0`, generates the event signing key and serves the API in a tokio task.
    ///
    /// # Errors
    /// The listener cannot bind or the event HTTP client cannot be built.
    pub async fn start(config: SendGridSimConfig) -> io::Result<SendGridSim> {
        let shared = Arc::new(Shared::new(config)?);
        let server = SimServer::start("sendgrid", router(Arc::clone(&shared))).await?;
        Ok(SendGridSim { server, shared })
    }

    /// Returns `http://127.0.0.1:PORT`; clients append `/v3/...`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops accepting requests, cancels pending event retries, and waits (at most 5 s) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.server.shutdown().await;
    }

    /// Returns the Event Webhook verification key (base64 DER SubjectPublicKeyInfo, P-256) that
    /// the app's config needs to verify this fake's batches.
    pub fn public_key_base64(&self) -> String {
        self.shared.signer.public_key_base64_spki()
    }

    /// Posts event batches for mail accepted from now on (and for [`SendGridSim::send_event`])
    /// to `url`.
    pub fn set_event_webhook(&self, url: impl Into<String>) {
        lock(&self.shared.mail).webhook_url_opt = Some(url.into());
    }

    /// Returns every recipient of every accepted mail, oldest first.
    pub fn sent(&self) -> Vec<SimEmail> {
        lock(&self.shared.mail).messages.iter().map(|stored| stored.email.clone()).collect()
    }

    /// Posts one signed batch holding an `event` (`bounce`, `dropped`, `spamreport`,
    /// `unsubscribe`, `open`, `click`, ...) for each recipient of the message, with the usual
    /// fields and custom args; the keys of `extra` (an object, e.g. `{"reason": "..."}`) are
    /// added last and win. The message id may carry the `.filter...` suffix.
    ///
    /// # Panics
    /// No event webhook is set, or no accepted mail has this message id: mistakes of the
    /// calling test or demo.
    pub fn send_event(&self, event: &str, message_id: &str, extra: Value) {
        let message_id = message_id_prefix(message_id);
        let (url, events) = {
            let mut mail = lock(&self.shared.mail);
            let Some(url) = mail.webhook_url_opt.clone() else {
                panic!("send_event: no event webhook is set");
            };
            let now = Timestamp::now();
            let events: Vec<Value> = mail
                .messages
                .iter_mut()
                .filter(|stored| stored.email.message_id == message_id)
                .map(|stored| {
                    stored.note_event(event, now);
                    let mut fields = event_fields(event, &stored.email, now);
                    if let Value::Object(extra) = &extra {
                        fields.extend(extra.iter().map(|(key, value)| (key.clone(), value.clone())));
                    }
                    Value::Object(fields)
                })
                .collect();
            if events.is_empty() {
                panic!("send_event: no accepted mail has message id {message_id}");
            }
            (url, events)
        };
        self.shared.post_events(url, events);
    }

    /// Switches a fault on; see [`SendGridFault`] for how faults combine.
    pub fn set_fault(&self, fault: SendGridFault) {
        let mut faults = lock(&self.shared.faults);
        match fault {
            SendGridFault::Status500 { times } => faults.api.status_500_remaining = times,
            SendGridFault::Status429 { times } => faults.api.status_429_opt = Some(((), times)),
            SendGridFault::Slow { delay, times } => faults.api.slow_opt = Some((delay, times)),
            SendGridFault::BadRecipient { email } => faults.bad_recipients.push(email.trim().to_lowercase()),
            SendGridFault::BadEventSignature => faults.bad_event_signature = true,
            SendGridFault::DuplicateEvents => faults.duplicate_events = true,
        }
    }

    /// Switches every fault off.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = FaultState::default();
    }

    /// Counts the API requests received so far, authenticated or not.
    pub fn request_count(&self) -> usize {
        self.shared.request_count.load(Ordering::SeqCst)
    }
}

impl Drop for SendGridSim {
    /// Cancels pending event retries; dropping `server` afterwards starts the server's shutdown.
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

/// State shared by the handle, the handlers and the delivery tasks. Every mutex is a std mutex,
/// never held across `.await`, and each guards one concern.
struct Shared {
    api_key: String,
    signer: EventSigner,
    /// Signs batches while [`SendGridFault::BadEventSignature`] is on: a valid signature by a
    /// key nobody was told about, which is what a forged batch looks like.
    wrong_signer: EventSigner,
    mail: Mutex<MailState>,
    faults: Mutex<FaultState>,
    request_count: AtomicUsize,
    /// Set on shutdown so pending event retries stop instead of outliving the fake.
    stopped: AtomicBool,
    webhook_client: reqwest::Client,
    /// Lets the synchronous handle methods spawn deliveries from any thread.
    runtime: tokio::runtime::Handle,
}

#[derive(Debug, Default)]
struct MailState {
    /// One row per recipient, oldest first.
    messages: Vec<StoredMessage>,
    webhook_url_opt: Option<String>,
}

/// An accepted recipient plus what the activity search shows about it.
#[derive(Debug)]
struct StoredMessage {
    email: SimEmail,
    /// The activity API's `status`: `processed`, `delivered` or `not_delivered`.
    status: &'static str,
    opens_count: u64,
    clicks_count: u64,
    last_event_at: Timestamp,
}

impl StoredMessage {
    fn note_event(&mut self, event: &str, at: Timestamp) {
        match event {
            "delivered" => self.status = "delivered",
            "bounce" | "dropped" | "blocked" => self.status = "not_delivered",
            "open" => self.opens_count += 1,
            "click" => self.clicks_count += 1,
            _ => {}
        }
        self.last_event_at = self.last_event_at.max(at);
    }
}

/// Remaining counts of each fault; 0 means off and `usize::MAX` never runs out.
#[derive(Debug, Default)]
struct FaultState {
    /// A 429 carries nothing: its rate-limit headers are made when it is sent.
    api: ApiFaults<()>,
    /// Lower-case addresses.
    bad_recipients: Vec<String>,
    bad_event_signature: bool,
    duplicate_events: bool,
}

impl Shared {
    fn new(config: SendGridSimConfig) -> io::Result<Shared> {
        let webhook_client =
            reqwest::Client::builder().no_proxy().timeout(DELIVERY_TIMEOUT).build().map_err(io::Error::other)?;
        Ok(Shared {
            api_key: config.api_key,
            signer: EventSigner::generate(),
            wrong_signer: EventSigner::generate(),
            mail: Mutex::new(MailState::default()),
            faults: Mutex::new(FaultState::default()),
            request_count: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            webhook_client,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Records an accepted mail and, if a webhook is set, posts its `processed` and `delivered`
    /// events. Returns the `X-Message-Id`.
    fn accept(self: &Arc<Self>, mail: ValidMail) -> String {
        let message_id = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        debug_assert_eq!(message_id.len(), 22);
        let received_at = Instant::now();
        let at = Timestamp::now();
        let (url_opt, events) = {
            let mut state = lock(&self.mail);
            let mut events = Vec::new();
            for recipient in mail.recipients {
                let mut stored = StoredMessage {
                    email: SimEmail {
                        message_id: message_id.clone(),
                        to: recipient.to,
                        from: mail.from.clone(),
                        subject: recipient.subject,
                        text: mail.text.clone(),
                        html: mail.html.clone(),
                        custom_args: recipient.custom_args,
                        received_at,
                        at,
                    },
                    status: "processed",
                    opens_count: 0,
                    clicks_count: 0,
                    last_event_at: at,
                };
                if state.webhook_url_opt.is_some() {
                    for event in ["processed", "delivered"] {
                        stored.note_event(event, at);
                        events.push(Value::Object(event_fields(event, &stored.email, at)));
                    }
                }
                state.messages.push(stored);
            }
            (state.webhook_url_opt.clone(), events)
        };
        if let Some(url) = url_opt {
            self.post_events(url, events);
        }
        message_id
    }

    /// Spawns the delivery of one batch (twice under [`SendGridFault::DuplicateEvents`]).
    fn post_events(self: &Arc<Self>, url: String, events: Vec<Value>) {
        // SendGrid's own signed test payload ends with CRLF; keeping it makes receivers prove
        // they verify the raw bytes rather than re-serialized JSON.
        let mut body = Value::Array(events).to_string().into_bytes();
        body.extend_from_slice(b"\r\n");
        let (copies, bad_signature) = {
            let faults = lock(&self.faults);
            (if faults.duplicate_events { 2 } else { 1 }, faults.bad_event_signature)
        };
        let batch = Arc::new(EventBatch { url, body: Bytes::from(body), bad_signature });
        for _ in 0..copies {
            let shared = Arc::clone(self);
            let batch = Arc::clone(&batch);
            self.runtime.spawn(async move { shared.deliver(&batch).await });
        }
    }

    /// POSTs one batch until the receiver answers 2xx, up to [`MAX_DELIVERY_ATTEMPTS`], signing
    /// each attempt with its own timestamp.
    async fn deliver(&self, batch: &EventBatch) {
        let mut backoff = FIRST_RETRY_BACKOFF;
        for attempt in 1..=MAX_DELIVERY_ATTEMPTS {
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let timestamp = Timestamp::now().as_second().to_string();
            let signer = if batch.bad_signature { &self.wrong_signer } else { &self.signer };
            let result = self
                .webhook_client
                .post(&batch.url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::USER_AGENT, "SendGrid Event API")
                .header(SIGNATURE_HEADER, signer.sign(&timestamp, &batch.body))
                .header(TIMESTAMP_HEADER, &timestamp)
                .body(batch.body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::debug!(attempt, status = response.status().as_u16(), "sendgrid sim event post refused");
                }
                Err(err) => tracing::debug!(attempt, error = %err, "sendgrid sim event post failed"),
            }
            if attempt < MAX_DELIVERY_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        tracing::warn!(url = %batch.url, "sendgrid sim event delivery gave up");
    }
}

/// One event batch, the same for every attempt and copy.
#[derive(Debug)]
struct EventBatch {
    url: String,
    body: Bytes,
    bad_signature: bool,
}

/// Returns one event's fields: the recipient's custom args as top-level keys, then the standard
/// fields (which win over a custom arg of the same name).
fn event_fields(event: &str, email: &SimEmail, at: Timestamp) -> Map<String, Value> {
    let mut fields: Map<String, Value> =
        email.custom_args.iter().map(|(key, value)| (key.clone(), Value::String(value.clone()))).collect();
    let sg_event_id = URL_SAFE_NO_PAD.encode(format!("{event}-{}-{}", email.message_id, uuid::Uuid::new_v4().simple()));
    fields.insert("email".to_owned(), json!(email.to));
    fields.insert("timestamp".to_owned(), json!(at.as_second()));
    fields.insert("event".to_owned(), json!(event));
    fields.insert("sg_event_id".to_owned(), json!(sg_event_id));
    fields.insert("sg_message_id".to_owned(), json!(format!("{}{SG_MESSAGE_ID_SUFFIX}", email.message_id)));
    fields.insert("smtp-id".to_owned(), json!(format!("<{}@ismtpd0001p1sim.sendgrid.net>", email.message_id)));
    if event == "delivered" {
        fields.insert("response".to_owned(), json!("250 2.0.0 OK"));
        fields.insert("ip".to_owned(), json!("127.0.0.1"));
    }
    fields
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v3/mail/send", post(mail_send))
        .route("/v3/messages", get(list_messages))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), api_gate))
        .with_state(shared)
}

/// Counts the request, authenticates it (401 first), then applies API faults: a delay, then a
/// refusal (429 before 500).
async fn api_gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.request_count.fetch_add(1, Ordering::SeqCst);
    let authorized = bearer_token(request.headers())
        .is_some_and(|token| constant_time_eq(token.as_bytes(), shared.api_key.as_bytes()));
    if !authorized {
        return error_answer(StatusCode::UNAUTHORIZED, None, UNAUTHORIZED_MESSAGE);
    }
    let drawn = lock(&shared.faults).api.take();
    run_with_faults(drawn, refusal_answer, request, next).await
}

/// Answers a refusal drawn from the API faults with SendGrid's headers and `errors` body.
fn refusal_answer(refusal: ApiRefusal<()>) -> Response {
    match refusal {
        ApiRefusal::TooManyRequests(()) => rate_limited(),
        ApiRefusal::Internal => error_answer(StatusCode::INTERNAL_SERVER_ERROR, None, "internal server error"),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without an early exit, as the real service would compare keys.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A 429 with SendGrid's rate-limit headers; the window resets at the next second.
fn rate_limited() -> Response {
    let reset = Timestamp::now().as_second() + 1;
    let mut response = error_answer(StatusCode::TOO_MANY_REQUESTS, None, "too many requests");
    let headers = response.headers_mut();
    headers.insert("X-RateLimit-Limit", HeaderValue::from(RATE_LIMIT_PER_WINDOW));
    headers.insert("X-RateLimit-Remaining", HeaderValue::from(0_u64));
    headers.insert("X-RateLimit-Reset", HeaderValue::from(reset));
    response
}

async fn mail_send(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error_answer(StatusCode::BAD_REQUEST, None, "Bad Request");
    };
    let bad_recipients = lock(&shared.faults).bad_recipients.clone();
    let mail = match validate_mail(&body, &bad_recipients) {
        Ok(mail) => mail,
        Err(errors) => return errors_answer(StatusCode::BAD_REQUEST, &errors),
    };
    let message_id = shared.accept(mail);
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&message_id) {
        response.headers_mut().insert("X-Message-Id", value);
    }
    response
}

async fn list_messages(State(shared): State<Arc<Shared>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some((key, value)) = params.get("query").and_then(|query| parse_custom_arg_query(query)) else {
        return error_answer(StatusCode::BAD_REQUEST, Some("query"), "query must be custom_args.KEY=\"VALUE\"");
    };
    let limit = match params.get("limit").map(|limit| limit.parse::<usize>()) {
        None => DEFAULT_MESSAGES_LIMIT,
        Some(Ok(limit)) if (1..=MAX_MESSAGES_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return error_answer(StatusCode::BAD_REQUEST, Some("limit"), "limit must be between 1 and 1000");
        }
    };
    let rows: Vec<Value> = lock(&shared.mail)
        .messages
        .iter()
        .rev()
        .filter(|stored| stored.email.custom_args.get(&key) == Some(&value))
        .take(limit)
        .map(|stored| {
            json!({
                "from_email": stored.email.from,
                "msg_id": format!("{}{SG_MESSAGE_ID_SUFFIX}", stored.email.message_id),
                "subject": stored.email.subject,
                "to_email": stored.email.to,
                "status": stored.status,
                "opens_count": stored.opens_count,
                "clicks_count": stored.clicks_count,
                "last_event_time": whole_seconds(stored.last_event_at).to_string(),
            })
        })
        .collect();
    Json(json!({ "messages": rows })).into_response()
}

async fn unknown_route() -> Response {
    error_answer(StatusCode::NOT_FOUND, None, "resource not found")
}

/// Reads `custom_args.KEY="VALUE"` with `\"` and `\\` escapes in the value.
fn parse_custom_arg_query(query: &str) -> Option<(String, String)> {
    let (key, quoted) = query.trim().strip_prefix("custom_args.")?.split_once('=')?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    let inner = quoted.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return None,
            _ => value.push(c),
        }
    }
    Some((key.to_owned(), value))
}

// ---------------------------------------------------------------------------------------------
// Mail Send validation (§3.1, §3.5)
// ---------------------------------------------------------------------------------------------

/// A mail that passed validation.
#[derive(Debug)]
struct ValidMail {
    recipients: Vec<Recipient>,
    from: String,
    text: String,
    html: String,
}

#[derive(Debug)]
struct Recipient {
    to: String,
    subject: String,
    custom_args: BTreeMap<String, String>,
}

/// One entry of SendGrid's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldError {
    field_opt: Option<String>,
    message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: &str) -> FieldError {
        FieldError { field_opt: Some(field.into()), message: message.to_owned() }
    }
}

/// Checks a Mail Send body the way SendGrid does and reports every problem at once.
fn validate_mail(body: &Value, bad_recipients: &[String]) -> Result<ValidMail, Vec<FieldError>> {
    let mut errors = Vec::new();
    let has_template = body.get("template_id").and_then(Value::as_str).is_some_and(|id| !id.is_empty());
    let mail_args = string_map(body.get("custom_args"), "custom_args", &mut errors);
    let top_subject = body.get("subject").and_then(Value::as_str).unwrap_or_default();

    let personalizations = match body.get("personalizations").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list.as_slice(),
        _ => {
            errors.push(FieldError::new(
                "personalizations",
                "The personalizations field is required and must have at least one personalization.",
            ));
            &[]
        }
    };
    let mut recipients = Vec::new();
    let mut every_personalization_has_subject = true;
    for (index, personalization) in personalizations.iter().enumerate() {
        let to_field = format!("personalizations.{index}.to");
        let subject_opt = personalization.get("subject").and_then(Value::as_str).filter(|s| !s.is_empty());
        every_personalization_has_subject &= subject_opt.is_some();
        let mut custom_args = mail_args.clone();
        custom_args.extend(string_map(
            personalization.get("custom_args"),
            &format!("personalizations.{index}.custom_args"),
            &mut errors,
        ));
        let to_list = match personalization.get("to").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list.as_slice(),
            _ => {
                errors.push(FieldError::new(
                    to_field,
                    "The to array is required for all personalization objects, and must have at least one email \
                     object with a valid email address.",
                ));
                continue;
            }
        };
        for address in to_list {
            let email_opt = address.get("email").and_then(Value::as_str);
            let refused = email_opt.is_none_or(|email| {
                Email::parse(email).is_err() || bad_recipients.contains(&email.trim().to_lowercase())
            });
            match email_opt {
                Some(email) if !refused => recipients.push(Recipient {
                    to: email.trim().to_owned(),
                    subject: subject_opt.unwrap_or(top_subject).to_owned(),
                    custom_args: custom_args.clone(),
                }),
                _ => errors.push(FieldError::new(to_field.clone(), INVALID_ADDRESS_MESSAGE)),
            }
        }
    }

    let from_opt = body.pointer("/from/email").and_then(Value::as_str).filter(|email| Email::parse(email).is_ok());
    if from_opt.is_none() {
        errors.push(FieldError::new(
            "from.email",
            "The from object must be provided for every email send. It is an object that requires the email \
             parameter, but may also contain a name parameter.",
        ));
    }
    if top_subject.is_empty() && !has_template && !every_personalization_has_subject {
        errors.push(FieldError::new(
            "subject",
            "The subject is required. You can get around this requirement if you use a template with a subject \
             defined or if every personalization has a subject defined.",
        ));
    }
    let (text, html) = validate_content(body.get("content"), has_template, &mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidMail { recipients, from: from_opt.unwrap_or_default().trim().to_owned(), text, html })
}

/// Checks `content` and returns its `text/plain` and `text/html` values (empty when absent).
fn validate_content(content_opt: Option<&Value>, has_template: bool, errors: &mut Vec<FieldError>) -> (String, String) {
    let blocks = content_opt.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if blocks.is_empty() {
        if !has_template {
            errors.push(FieldError::new(
                "content",
                "Unless a valid template_id is provided, the content parameter is required. There must be at least \
                 one defined content block. We typically suggest both text/plain and text/html blocks are included, \
                 but only one block is required.",
            ));
        }
        return (String::new(), String::new());
    }
    let mut text = String::new();
    let mut html = String::new();
    for (index, block) in blocks.iter().enumerate() {
        let mime_type = block.get("type").and_then(Value::as_str).unwrap_or_default();
        let value = block.get("value").and_then(Value::as_str).unwrap_or_default();
        if mime_type.is_empty() {
            errors.push(FieldError::new(format!("content.{index}.type"), "The content type is required."));
        }
        if value.is_empty() {
            errors.push(FieldError::new(
                format!("content.{index}.value"),
                "The content value must be a string at least one character in length.",
            ));
        }
        if mime_type == "text/plain" && index > 0 {
            errors.push(FieldError::new(
                "content.0.type",
                "If present, text/plain must be first, followed by text/html, followed by any other content.",
            ));
        }
        match mime_type {
            "text/plain" if text.is_empty() => value.clone_into(&mut text),
            "text/html" if html.is_empty() => value.clone_into(&mut html),
            _ => {}
        }
    }
    (text, html)
}

/// Reads an optional object of string values; anything else is an error on `field`.
fn string_map(value_opt: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> BTreeMap<String, String> {
    let Some(value) = value_opt.filter(|value| !value.is_null()) else {
        return BTreeMap::new();
    };
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(field, "Custom args must be an object."));
        return BTreeMap::new();
    };
    let mut map = BTreeMap::new();
    for (key, value) in object {
        match value.as_str() {
            Some(text) => {
                map.insert(key.clone(), text.to_owned());
            }
            None => errors.push(FieldError::new(field, "Custom args values must be strings.")),
        }
    }
    map
}

/// Answers SendGrid's error body, `{"errors":[{"field","message","help"}]}`.
fn errors_answer(status: StatusCode, errors: &[FieldError]) -> Response {
    let errors: Vec<Value> = errors
        .iter()
        .map(|error| json!({ "field": error.field_opt, "message": error.message, "help": null }))
        .collect();
    (status, Json(json!({ "errors": errors }))).into_response()
}

/// Answers an error body with one entry.
fn error_answer(status: StatusCode, field_opt: Option<&str>, message: &str) -> Response {
    let error = FieldError { field_opt: field_opt.map(str::to_owned), message: message.to_owned() };
    errors_answer(status, &[error])
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Drops the sub-second part; the activity API serves whole seconds.
fn whole_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use leadorch_actors::ports::{EmailSender, OutboundEmail, SendError};

    use super::*;
    use crate::messaging::sendgrid::{SendGridConfig, SendGridEmail};
    use crate::messaging::sendgrid_events::EventVerifier;

    const KEY: &str = "SG.sim-key";

    async fn start() -> SendGridSim {
        SendGridSim::start(SendGridSimConfig { api_key: KEY.into() }).await.expect("sim starts")
    }

    fn client_for(sim: &SendGridSim, key: &str) -> SendGridEmail {
        SendGridEmail::new(SendGridConfig {
            base_url: sim.base_url(),
            request_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(5),
            ..SendGridConfig::new(SecretString::from(key))
        })
        .expect("client builds")
    }

    fn outbound(to: &str, touchpoint_id: &str) -> OutboundEmail {
        OutboundEmail {
            to: Email::parse(to).expect("valid"),
            to_name_opt: Some("Pat Lee".into()),
            from: Email::parse("austin@tint.example.com").expect("valid"),
            from_name_opt: Some("Tint Co Austin".into()),
            subject: "Your window tint quote".into(),
            text: "Hi Pat".into(),
            html: "<p>Hi Pat</p>".into(),
            custom_args: BTreeMap::from([
                ("lead_id".into(), "L-1".into()),
                ("touchpoint_id".into(), touchpoint_id.into()),
            ]),
            idempotency_key: format!("{touchpoint_id}:1"),
        }
    }

    #[derive(Debug)]
    struct ReceivedBatch {
        headers: HeaderMap,
        body: Bytes,
    }

    impl ReceivedBatch {
        fn header(&self, name: &str) -> &str {
            self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default()
        }

        fn events(&self) -> Vec<Value> {
            serde_json::from_slice(&self.body).expect("batch is a json array")
        }
    }

    /// Serves `POST /events` on `127.0.0.1:0`, answering 200; every batch arrives on the channel.
    async fn spawn_receiver() -> (String, mpsc::UnboundedReceiver<ReceivedBatch>) {
        let (received_tx, received_rx) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/events",
            post(move |headers: HeaderMap, body: Bytes| {
                let received_tx = received_tx.clone();
                async move {
                    received_tx.send(ReceivedBatch { headers, body }).ok();
                    StatusCode::OK
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (url, received_rx)
    }

    async fn next_batch(received_rx: &mut mpsc::UnboundedReceiver<ReceivedBatch>) -> ReceivedBatch {
        tokio::time::timeout(Duration::from_secs(5), received_rx.recv())
            .await
            .expect("a batch arrives within 5 s")
            .expect("the receiver is still running")
    }

    async fn post_raw(sim: &SendGridSim, key: &str, body: &Value) -> (StatusCode, Value) {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client builds")
            .post(format!("{}/v3/mail/send", sim.base_url()))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("sim answers");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("json") })
    }

    fn fields(answer: &Value) -> Vec<&str> {
        answer["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect()
    }

    #[tokio::test]
    async fn accepted_mail_is_recorded_with_custom_args_and_a_22_char_message_id() {
        let sim = start().await;

        let sent = client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-1")).await.expect("accepted");

        let recorded = sim.sent();
        assert_eq!(recorded.len(), 1);
        let mail = &recorded[0];
        assert_eq!(mail.message_id, sent.provider_id);
        assert_eq!(mail.message_id.len(), 22);
        assert_eq!((mail.to.as_str(), mail.from.as_str()), ("pat@example.com", "austin@tint.example.com"));
        assert_eq!((mail.text.as_str(), mail.html.as_str()), ("Hi Pat", "<p>Hi Pat</p>"));
        assert_eq!(mail.subject, "Your window tint quote");
        assert_eq!(
            mail.custom_args,
            BTreeMap::from([
                ("idempotency_key".into(), "T-1:1".into()),
                ("lead_id".into(), "L-1".into()),
                ("touchpoint_id".into(), "T-1".into()),
            ])
        );
        assert_eq!(sim.request_count(), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn event_batch_arrives_signed_and_the_verifier_accepts_it() {
        let sim = start().await;
        let (url, mut received_rx) = spawn_receiver().await;
        sim.set_event_webhook(url);
        let verifier = EventVerifier::from_base64_spki(&sim.public_key_base64()).expect("key loads");

        let sent = client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-2")).await.expect("accepted");
        let batch = next_batch(&mut received_rx).await;

        assert!(verifier.verify(batch.header(TIMESTAMP_HEADER), batch.header(SIGNATURE_HEADER), &batch.body));
        assert!(batch.body.ends_with(b"]\r\n"));
        let events = batch.events();
        let kinds: Vec<&str> = events.iter().filter_map(|event| event["event"].as_str()).collect();
        assert_eq!(kinds, vec!["processed", "delivered"]);
        for event in &events {
            assert_eq!(event["sg_message_id"], json!(format!("{}.filter0001", sent.provider_id)));
            assert_eq!(event["email"], json!("pat@example.com"));
            assert_eq!(event["touchpoint_id"], json!("T-2"));
            assert_eq!(event["idempotency_key"], json!("T-2:1"));
            assert!(event["timestamp"].is_i64());
        }
        assert_ne!(events[0]["sg_event_id"], events[1]["sg_event_id"]);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn bad_event_signature_fails_verification_and_duplicate_events_share_their_ids() {
        let sim = start().await;
        let (url, mut received_rx) = spawn_receiver().await;
        sim.set_event_webhook(url);
        sim.set_fault(SendGridFault::BadEventSignature);
        sim.set_fault(SendGridFault::DuplicateEvents);
        let verifier = EventVerifier::from_base64_spki(&sim.public_key_base64()).expect("key loads");

        client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-3")).await.expect("accepted");
        let first = next_batch(&mut received_rx).await;
        let second = next_batch(&mut received_rx).await;

        assert!(!verifier.verify(first.header(TIMESTAMP_HEADER), first.header(SIGNATURE_HEADER), &first.body));
        assert_eq!(first.body, second.body);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn send_event_posts_a_signed_bounce_with_the_extra_fields() {
        let sim = start().await;
        let (url, mut received_rx) = spawn_receiver().await;
        let sent = client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-4")).await.expect("accepted");
        sim.set_event_webhook(url);
        let verifier = EventVerifier::from_base64_spki(&sim.public_key_base64()).expect("key loads");

        sim.send_event("bounce", &sent.provider_id, json!({ "reason": "550 5.1.1 unknown user", "type": "bounce" }));
        let batch = next_batch(&mut received_rx).await;

        assert!(verifier.verify(batch.header(TIMESTAMP_HEADER), batch.header(SIGNATURE_HEADER), &batch.body));
        let events = batch.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event"], json!("bounce"));
        assert_eq!(events[0]["reason"], json!("550 5.1.1 unknown user"));
        assert_eq!(events[0]["touchpoint_id"], json!("T-4"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn bad_recipient_fault_is_an_invalid_recipient_error() {
        let sim = start().await;
        sim.set_fault(SendGridFault::BadRecipient { email: "Gone@Example.com".into() });
        let client = client_for(&sim, KEY);

        let refused = client.send_email(&outbound("gone@example.com", "T-5")).await;
        let other = client.send_email(&outbound("pat@example.com", "T-6")).await;

        assert!(
            matches!(&refused, Err(SendError::InvalidRecipient { message, .. }) if message.starts_with("personalizations.0.to")),
            "{refused:?}"
        );
        assert!(other.is_ok(), "{other:?}");
        assert_eq!(sim.sent().len(), 1);
        assert_eq!(sim.request_count(), 2);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn find_by_custom_arg_finds_the_sent_mail() {
        let sim = start().await;
        let client = client_for(&sim, KEY);
        let sent = client.send_email(&outbound("pat@example.com", "T-7")).await.expect("accepted");
        client.send_email(&outbound("sam@example.com", "T-8")).await.expect("accepted");

        let found = client.find_by_custom_arg("touchpoint_id", "T-7").await.expect("search answers");
        let none = client.find_by_custom_arg("touchpoint_id", "T-404").await.expect("search answers");

        assert_eq!(found.len(), 1);
        assert_eq!(found[0].provider_id, sent.provider_id);
        assert_eq!(found[0].to, "pat@example.com");
        assert_eq!(found[0].body, "Your window tint quote");
        assert!(none.is_empty());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_api_key_is_misconfigured_and_gets_a_401_errors_body() {
        let sim = start().await;

        let result = client_for(&sim, "SG.wrong").send_email(&outbound("pat@example.com", "T-9")).await;
        let (status, answer) = post_raw(&sim, "SG.wrong", &json!({})).await;

        assert!(matches!(result, Err(SendError::Misconfigured(_))), "{result:?}");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer["errors"][0]["field"], Value::Null);
        assert!(sim.sent().is_empty());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn status500_twice_then_accepted_through_the_client_takes_three_requests() {
        let sim = start().await;
        sim.set_fault(SendGridFault::Status500 { times: 2 });

        let sent = client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-10")).await;

        assert!(sent.is_ok(), "{sent:?}");
        assert_eq!(sim.request_count(), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn status429_carries_the_rate_limit_headers_and_the_client_retries() {
        let sim = start().await;
        sim.set_fault(SendGridFault::Status429 { times: 1 });
        let raw = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client builds")
            .get(format!("{}/v3/messages?query=custom_args.a=\"b\"", sim.base_url()))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sim answers");
        assert_eq!(raw.status(), StatusCode::TOO_MANY_REQUESTS);
        for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            assert!(raw.headers().contains_key(name), "{name}");
        }
        sim.set_fault(SendGridFault::Status429 { times: 1 });

        let sent = client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-11")).await;

        assert!(sent.is_ok(), "{sent:?}");
        assert_eq!(sim.request_count(), 3);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn slow_fault_makes_the_client_time_out_after_one_request() {
        let sim = start().await;
        sim.set_fault(SendGridFault::Slow { delay: Duration::from_secs(3), times: 1 });

        let result = client_for(&sim, KEY).send_email(&outbound("pat@example.com", "T-12")).await;

        assert_eq!(result, Err(SendError::Timeout));
        assert_eq!(sim.request_count(), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn invalid_mail_is_refused_with_every_field_named() {
        let sim = start().await;

        let (status, answer) = post_raw(
            &sim,
            KEY,
            &json!({
                "personalizations": [{ "to": [{ "email": "not-an-address" }] }],
                "from": { "email": "" },
                "content": [{ "type": "text/html", "value": "<p>x</p>" }, { "type": "text/plain", "value": "" }]
            }),
        )
        .await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            fields(&answer),
            vec!["personalizations.0.to", "from.email", "subject", "content.1.value", "content.0.type"]
        );
        assert!(sim.sent().is_empty());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn accepted_mail_answers_202_with_an_empty_body() {
        let sim = start().await;

        let (status, answer) = post_raw(
            &sim,
            KEY,
            &json!({
                "personalizations": [{ "to": [{ "email": "a@example.com" }, { "email": "b@example.com" }],
                                       "custom_args": { "touch": "p" } }],
                "from": { "email": "austin@tint.example.com" },
                "subject": "Hi",
                "custom_args": { "tenant": "t42", "touch": "m" },
                "content": [{ "type": "text/plain", "value": "x" }]
            }),
        )
        .await;

        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(answer, Value::Null);
        let sent = sim.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].message_id, sent[1].message_id);
        assert_eq!(sent[1].custom_args.get("touch").map(String::as_str), Some("p"));
        assert_eq!(sent[1].custom_args.get("tenant").map(String::as_str), Some("t42"));
        sim.shutdown().await;
    }

    #[test]
    fn custom_arg_query_parses_escapes_and_refuses_other_shapes() {
        assert_eq!(parse_custom_arg_query(r#"custom_args.k="v \"q\" \\""#), Some(("k".into(), r#"v "q" \"#.into())));
        assert_eq!(parse_custom_arg_query("custom_args.k=v"), None);
        assert_eq!(parse_custom_arg_query(r#"unique_args.k="v""#), None);
        assert_eq!(parse_custom_arg_query(r#"custom_args.k="a"b""#), None);
    }
}
