//! A faithful local fake of Twilio Programmable Messaging (reference §2, especially §2.7), served
//! by axum on `127.0.0.1:0`.
//!
//! It owns: `POST` and `GET /2010-04-01/Accounts/{sid}/Messages.json` with Twilio's Basic auth,
//! form fields, Message JSON, error bodies and paging; the asynchronous lifecycle of each accepted
//! message (`queued` → `sent` → `delivered` or `undelivered`) with signed status callbacks; a
//! scripted handset that posts signed inbound messages and applies Advanced Opt-Out (STOP blocks
//! the pair, START lifts it); run-time fault switches ([`TwilioFault`]); and observation of what
//! it received and sent.
//!
//! It leaves to others: the client (`messaging::twilio`), the signature scheme
//! (`messaging::twilio_signature`, which this fake calls so both sides agree) and every business
//! rule. Messaging Services, MMS and scheduling are not modelled.
//!
//! Assumptions where the reference is silent: the `DateSent` filters match a message not yet
//! sent by its `date_created`; the error codes 21602, 21609, 21612 and 21617 are used with
//! Twilio's published meanings, their HTTP status (400) is assumed.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::server::{ApiFaults, ApiRefusal, SimServer, lock, run_with_faults};
use crate::messaging::twilio_signature;

const API_VERSION: &str = "2010-04-01";
/// Twilio's cap on a message body, in characters (§2.1).
const MAX_BODY_CHARS: usize = 1600;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
/// How long after acceptance a message turns `sent`, and how long after that `delivered`.
const SENT_AFTER: Duration = Duration::from_millis(20);
const DELIVERED_AFTER: Duration = Duration::from_millis(20);
/// Per-request timeout of a callback or inbound webhook, so a hung receiver cannot hold the fake.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Keywords Twilio's Advanced Opt-Out acts on, matched against the whole trimmed body (§2.6).
const STOP_KEYWORDS: [&str; 8] = ["STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"];
const START_KEYWORDS: [&str; 3] = ["START", "YES", "UNSTOP"];
const HELP_KEYWORDS: [&str; 2] = ["HELP", "INFO"];
/// The GSM 03.38 default alphabet (one septet each) and its extension table (two septets each).
const GSM_BASIC: &str = concat!(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
);
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{c}";

// ---------------------------------------------------------------------------------------------
// Configuration, faults and observation
// ---------------------------------------------------------------------------------------------

/// The account the fake serves.
#[derive(Clone)]
pub struct TwilioSimConfig {
    /// `AC` + 32 hex; the Basic-auth user and the `{sid}` of every path.
    pub account_sid: String,
    /// The Basic-auth password, and the key every webhook the fake sends is signed with.
    pub auth_token: String,
}

impl std::fmt::Debug for TwilioSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSimConfig").field("account_sid", &self.account_sid).finish_non_exhaustive()
    }
}

/// A misbehaviour switched on at run time with [`TwilioSim::set_fault`].
///
/// `times` applies the fault to the next N authenticated API requests (sends and lists alike)
/// and then stops; `usize::MAX` means always. Setting a fault replaces an earlier one of the same
/// kind, except `InvalidNumber`, which adds a number. A 401 never consumes a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioFault {
    /// Answers with 500 and `{"code":20500,...}`.
    Status500 { times: usize },
    /// Answers with 429 and `{"code":20429,...}`, with `Retry-After` when given.
    Status429 { times: usize, retry_after_secs_opt: Option<u64> },
    /// Delays the answer, then serves the request normally.
    Slow { delay: Duration, times: usize },
    /// Refuses sends to this `To` with 400/21211, as for a number that cannot exist.
    InvalidNumber { to: String },
    /// Sends no status callbacks for messages accepted while set (they are still recorded).
    DropCallbacks,
    /// Ends messages accepted while set as `undelivered` with this `ErrorCode` (e.g. 30003).
    UndeliveredCallback { error_code: i64 },
}

/// One message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSms {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub received_at: Instant,
    /// The message's `date_created`.
    pub at: Timestamp,
}

/// One status callback the fake sent (or dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCallback {
    pub message_sid: String,
    /// `MessageStatus`: `sent`, `delivered` or `undelivered`.
    pub status: String,
    pub error_code_opt: Option<i64>,
    pub url: String,
    /// The receiver's status; `None` on a connection error, a timeout or a dropped callback.
    pub response_status_opt: Option<u16>,
    /// True when [`TwilioFault::DropCallbacks`] kept it from being sent.
    pub dropped: bool,
}

// ---------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------

/// A running fake Twilio. Dropping it (or [`TwilioSim::shutdown`]) stops the server and any
/// status callbacks still pending.
pub struct TwilioSim {
    server: SimServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TwilioSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSim").field("addr", &self.server.addr()).finish_non_exhaustive()
    }
}

impl TwilioSim {
    /// Binds `127.0.0.1:0` and serves the Messaging API in a tokio task.
    ///
    /// # Errors
    /// The listener cannot bind, or the webhook HTTP client cannot be built.
    pub async fn start(config: TwilioSimConfig) -> io::Result<TwilioSim> {
        let shared = Arc::new(Shared::new(config)?);
        let server = SimServer::start("twilio", router(Arc::clone(&shared))).await?;
        Ok(TwilioSim { server, shared })
    }

    /// Returns `http://127.0.0.1:PORT`; clients append `/2010-04-01/...`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops accepting requests, cancels pending callbacks, and waits (at most 5 s) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.server.shutdown().await;
    }

    /// Returns every message the fake accepted, in arrival order.
    pub fn sent(&self) -> Vec<SimSms> {
        lock(&self.shared.world)
            .messages
            .iter()
            .filter(|message| message.direction == Direction::OutboundApi)
            .map(|message| SimSms {
                sid: message.sid.clone(),
                to: message.to.clone(),
                from: message.from.clone(),
                body: message.body.clone(),
                received_at: message.received_at,
                at: message.date_created,
            })
            .collect()
    }

    /// Returns every status callback sent or dropped so far, in the order they finished.
    pub fn callbacks(&self) -> Vec<SimCallback> {
        lock(&self.shared.callbacks).clone()
    }

    /// Switches a fault on; see [`TwilioFault`] for how faults combine and count down.
    pub fn set_fault(&self, fault: TwilioFault) {
        let mut faults = lock(&self.shared.faults);
        match fault {
            TwilioFault::Status500 { times } => faults.api.status_500_remaining = times,
            TwilioFault::Status429 { times, retry_after_secs_opt } => {
                faults.api.status_429_opt = Some((retry_after_secs_opt, times));
            }
            TwilioFault::Slow { delay, times } => faults.api.slow_opt = Some((delay, times)),
            TwilioFault::InvalidNumber { to } => {
                faults.invalid_numbers.insert(to);
            }
            TwilioFault::DropCallbacks => faults.drop_callbacks = true,
            TwilioFault::UndeliveredCallback { error_code } => faults.undelivered_error_code_opt = Some(error_code),
        }
    }

    /// Switches every fault off.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = FaultState::default();
    }

    /// Blocks sends from `from` to `to`, as if the handset `to` had texted STOP to `from`:
    /// later sends of the pair get 400/21610 until the handset sends START.
    pub fn block(&self, to: &str, from: &str) {
        lock(&self.shared.world).blocked.insert((to.to_owned(), from.to_owned()));
    }

    /// Counts the API requests received so far, refused ones included.
    pub fn request_count(&self) -> usize {
        self.shared.request_count.load(Ordering::SeqCst)
    }

    /// Plays the handset `from` texting `body` to our number `to`: records the inbound message,
    /// applies Advanced Opt-Out when the body is a keyword (STOP blocks the pair, START lifts the
    /// block), and POSTs the signed inbound webhook to `url`, with `OptOutType` for a keyword.
    ///
    /// # Errors
    /// The webhook could not be delivered (connection error or timeout).
    pub async fn send_inbound(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let opt_out_type_opt = opt_out_type(body);
        let sid = message_sid();
        let num_segments = segments(body);
        {
            let mut world = lock(&self.shared.world);
            match opt_out_type_opt {
                Some("STOP") => {
                    world.blocked.insert((from.to_owned(), to.to_owned()));
                }
                Some("START") => {
                    world.blocked.remove(&(from.to_owned(), to.to_owned()));
                }
                _ => {}
            }
            let now = Timestamp::now();
            world.messages.push(StoredMessage {
                sid: sid.clone(),
                direction: Direction::Inbound,
                from: from.to_owned(),
                to: to.to_owned(),
                body: body.to_owned(),
                status: "received",
                error_code_opt: None,
                date_created: now,
                date_updated: now,
                date_sent_opt: Some(now),
                num_segments,
                received_at: Instant::now(),
            });
        }
        let mut params = vec![
            ("ToCountry", "US".to_owned()),
            ("SmsMessageSid", sid.clone()),
            ("NumMedia", "0".to_owned()),
            ("SmsSid", sid.clone()),
            ("SmsStatus", "received".to_owned()),
            ("Body", body.to_owned()),
            ("To", to.to_owned()),
            ("NumSegments", num_segments.to_string()),
            ("MessageSid", sid),
            ("AccountSid", self.shared.account_sid.clone()),
            ("From", from.to_owned()),
            ("ApiVersion", API_VERSION.to_owned()),
        ];
        if let Some(opt_out_type) = opt_out_type_opt {
            params.push(("OptOutType", opt_out_type.to_owned()));
        }
        self.shared.post_signed(url, &params).await
    }
}

impl Drop for TwilioSim {
    /// Cancels pending callbacks; dropping `server` afterwards starts the server's shutdown.
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

/// State shared by the handle, the handlers and the callback tasks. Every mutex is a std mutex,
/// never held across `.await`, and each guards one concern so observation does not wait on data.
struct Shared {
    account_sid: String,
    auth_token: String,
    world: Mutex<World>,
    faults: Mutex<FaultState>,
    callbacks: Mutex<Vec<SimCallback>>,
    request_count: AtomicUsize,
    /// Set on shutdown so pending callbacks stop instead of outliving the fake.
    stopped: AtomicBool,
    webhook_client: reqwest::Client,
}

#[derive(Debug, Default)]
struct World {
    /// Outbound and inbound messages in arrival order.
    messages: Vec<StoredMessage>,
    /// `(handset, our number)` pairs blocked by STOP.
    blocked: HashSet<(String, String)>,
}

/// Remaining counts of each fault; 0 means off and `usize::MAX` never runs out.
#[derive(Debug, Default)]
struct FaultState {
    /// A 429 carries its `Retry-After` seconds, if any.
    api: ApiFaults<Option<u64>>,
    invalid_numbers: HashSet<String>,
    drop_callbacks: bool,
    undelivered_error_code_opt: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    OutboundApi,
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::OutboundApi => "outbound-api",
            Direction::Inbound => "inbound",
        }
    }
}

#[derive(Debug, Clone)]
struct StoredMessage {
    sid: String,
    direction: Direction,
    from: String,
    to: String,
    body: String,
    status: &'static str,
    error_code_opt: Option<i64>,
    date_created: Timestamp,
    date_updated: Timestamp,
    date_sent_opt: Option<Timestamp>,
    num_segments: usize,
    received_at: Instant,
}

impl StoredMessage {
    /// Returns the Message JSON of §2.1.
    fn to_json(&self, account_sid: &str) -> Value {
        let uri = format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{}", self.sid);
        json!({
            "sid": self.sid,
            "account_sid": account_sid,
            "messaging_service_sid": null,
            "from": self.from,
            "to": self.to,
            "body": self.body,
            "status": self.status,
            "direction": self.direction.as_str(),
            "num_segments": self.num_segments.to_string(),
            "num_media": "0",
            "price": null,
            "price_unit": null,
            "error_code": self.error_code_opt,
            "error_message": null,
            "api_version": API_VERSION,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated),
            "date_sent": self.date_sent_opt.map(rfc2822),
            "uri": format!("{uri}.json"),
            "subresource_uris": { "media": format!("{uri}/Media.json") },
        })
    }

    /// The date the `DateSent` filters compare: `date_sent`, or `date_created` before sending.
    fn date_sent_or_created(&self) -> Timestamp {
        self.date_sent_opt.unwrap_or(self.date_created)
    }
}

/// How an accepted message's lifecycle ends, fixed by the faults set when it was accepted.
#[derive(Debug, Clone)]
struct Lifecycle {
    sid: String,
    from: String,
    to: String,
    callback_url_opt: Option<String>,
    drop_callbacks: bool,
    undelivered_error_code_opt: Option<i64>,
}

impl Shared {
    fn new(config: TwilioSimConfig) -> io::Result<Shared> {
        let webhook_client =
            reqwest::Client::builder().no_proxy().timeout(WEBHOOK_TIMEOUT).build().map_err(io::Error::other)?;
        Ok(Shared {
            account_sid: config.account_sid,
            auth_token: config.auth_token,
            world: Mutex::new(World::default()),
            faults: Mutex::new(FaultState::default()),
            callbacks: Mutex::new(Vec::new()),
            request_count: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            webhook_client,
        })
    }

    fn is_authorized(&self, headers: &HeaderMap) -> bool {
        let Some(credentials) = basic_credentials(headers) else {
            return false;
        };
        credentials == format!("{}:{}", self.account_sid, self.auth_token)
    }

    /// Moves a message to `sent`, then to `delivered` or `undelivered`, posting a callback for
    /// each step. Callbacks go one after the other, so they arrive in order.
    async fn run_lifecycle(&self, lifecycle: Lifecycle) {
        tokio::time::sleep(SENT_AFTER).await;
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        self.set_status(&lifecycle.sid, "sent", None);
        self.send_status_callback(&lifecycle, "sent", None).await;
        tokio::time::sleep(DELIVERED_AFTER).await;
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let (status, error_code_opt) = match lifecycle.undelivered_error_code_opt {
            Some(error_code) => ("undelivered", Some(error_code)),
            None => ("delivered", None),
        };
        self.set_status(&lifecycle.sid, status, error_code_opt);
        self.send_status_callback(&lifecycle, status, error_code_opt).await;
    }

    fn set_status(&self, sid: &str, status: &'static str, error_code_opt: Option<i64>) {
        let mut world = lock(&self.world);
        let Some(message) = world.messages.iter_mut().find(|message| message.sid == sid) else {
            return;
        };
        let now = Timestamp::now();
        message.status = status;
        message.error_code_opt = error_code_opt;
        message.date_updated = now;
        if status == "sent" {
            message.date_sent_opt = Some(now);
        }
    }

    async fn send_status_callback(&self, lifecycle: &Lifecycle, status: &str, error_code_opt: Option<i64>) {
        let Some(url) = lifecycle.callback_url_opt.as_deref() else {
            return;
        };
        let mut record = SimCallback {
            message_sid: lifecycle.sid.clone(),
            status: status.to_owned(),
            error_code_opt,
            url: url.to_owned(),
            response_status_opt: None,
            dropped: lifecycle.drop_callbacks,
        };
        if !lifecycle.drop_callbacks {
            let mut params = vec![
                ("SmsSid", lifecycle.sid.clone()),
                ("SmsStatus", status.to_owned()),
                ("MessageStatus", status.to_owned()),
                ("To", lifecycle.to.clone()),
                ("MessageSid", lifecycle.sid.clone()),
                ("AccountSid", self.account_sid.clone()),
                ("From", lifecycle.from.clone()),
                ("ApiVersion", API_VERSION.to_owned()),
            ];
            if let Some(error_code) = error_code_opt {
                params.push(("ErrorCode", error_code.to_string()));
            }
            if status != "sent" {
                params.push(("RawDlrDoneDate", Timestamp::now().strftime("%y%m%d%H%M").to_string()));
            }
            match self.post_signed(url, &params).await {
                Ok(response) => record.response_status_opt = Some(response.status().as_u16()),
                Err(err) => {
                    tracing::debug!(sid = %lifecycle.sid, status, error = %err, "twilio sim status callback failed");
                }
            }
        }
        lock(&self.callbacks).push(record);
    }

    /// POSTs form parameters to `url`, signed with `X-Twilio-Signature` over that exact URL.
    async fn post_signed(&self, url: &str, params: &[(&str, String)]) -> reqwest::Result<reqwest::Response> {
        let owned: Vec<(String, String)> =
            params.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        let signature = twilio_signature::compute(&self.auth_token, url, &owned);
        self.webhook_client
            .post(url)
            .header(header::USER_AGENT, "TwilioProxy/1.1")
            .header("X-Twilio-Signature", signature)
            .form(&owned)
            .send()
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2010-04-01/Accounts/{account_sid}/Messages.json", post(create_message).get(list_messages))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), api_gate))
        .with_state(shared)
}

/// Counts the request, authenticates it (401 first), then applies API faults.
async fn api_gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.request_count.fetch_add(1, Ordering::SeqCst);
    if !shared.is_authorized(request.headers()) {
        return TwilioError::unauthorized().into_response();
    }
    let drawn = lock(&shared.faults).api.take();
    run_with_faults(drawn, refusal_answer, request, next).await
}

/// Answers a refusal drawn from the API faults with Twilio's error body.
fn refusal_answer(refusal: ApiRefusal<Option<u64>>) -> Response {
    let error = match refusal {
        ApiRefusal::TooManyRequests(retry_after_secs_opt) => TwilioError::too_many_requests(retry_after_secs_opt),
        ApiRefusal::Internal => TwilioError::internal(),
    };
    error.into_response()
}

/// Returns `user:password` of a Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    if account_sid != shared.account_sid {
        return TwilioError::not_found().into_response();
    }
    // Twilio reads only form fields; a body of another type reads as no fields at all.
    let params = form.map(|Form(params)| params).unwrap_or_default();
    match accept_message(&shared, &params) {
        Ok((message, lifecycle)) => {
            let shared_for_task = Arc::clone(&shared);
            tokio::spawn(async move { shared_for_task.run_lifecycle(lifecycle).await });
            (StatusCode::CREATED, Json(message.to_json(&shared.account_sid))).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Validates a send like Twilio does and records the accepted message.
fn accept_message(shared: &Shared, params: &[(String, String)]) -> Result<(StoredMessage, Lifecycle), TwilioError> {
    let field = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let Some(to) = field("To").filter(|to| !to.trim().is_empty()) else {
        return Err(TwilioError::bad_request(21604, "A 'To' phone number is required."));
    };
    let Some(from) = field("From").filter(|from| !from.trim().is_empty()) else {
        return Err(TwilioError::bad_request(21603, "A 'From' phone number is required."));
    };
    if !is_e164(to) {
        return Err(TwilioError::bad_request(21211, &format!("The 'To' number {to} is not a valid phone number.")));
    }
    if !is_e164(from) {
        let message =
            format!("The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID.");
        return Err(TwilioError::bad_request(21212, &message));
    }
    let body = field("Body").unwrap_or_default();
    if body.is_empty() {
        return Err(TwilioError::bad_request(21602, "Message body is required."));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        let message = "The concatenated message body exceeds the 1600 character limit.";
        return Err(TwilioError::bad_request(21617, message));
    }
    let callback_url_opt = field("StatusCallback").filter(|url| !url.is_empty()).map(str::to_owned);
    if callback_url_opt.as_deref().is_some_and(|url| reqwest::Url::parse(url).is_err()) {
        return Err(TwilioError::bad_request(21609, "Invalid StatusCallback url."));
    }
    let (drop_callbacks, undelivered_error_code_opt) = {
        let faults = lock(&shared.faults);
        if faults.invalid_numbers.contains(to) {
            return Err(TwilioError::bad_request(21211, &format!("The 'To' number {to} is not a valid phone number.")));
        }
        (faults.drop_callbacks, faults.undelivered_error_code_opt)
    };
    let mut world = lock(&shared.world);
    if world.blocked.contains(&(to.to_owned(), from.to_owned())) {
        return Err(TwilioError::bad_request(21610, "Attempt to send to unsubscribed recipient"));
    }
    let now = Timestamp::now();
    let message = StoredMessage {
        sid: message_sid(),
        direction: Direction::OutboundApi,
        from: from.to_owned(),
        to: to.to_owned(),
        body: body.to_owned(),
        status: "queued",
        error_code_opt: None,
        date_created: now,
        date_updated: now,
        date_sent_opt: None,
        num_segments: segments(body),
        received_at: Instant::now(),
    };
    world.messages.push(message.clone());
    let lifecycle = Lifecycle {
        sid: message.sid.clone(),
        from: message.from.clone(),
        to: message.to.clone(),
        callback_url_opt,
        drop_callbacks,
        undelivered_error_code_opt,
    };
    Ok((message, lifecycle))
}

/// The filters and paging of one list request.
#[derive(Debug)]
struct ListQuery {
    to_opt: Option<String>,
    from_opt: Option<String>,
    date_sent_on_opt: Option<Date>,
    date_sent_from_opt: Option<Date>,
    date_sent_until_opt: Option<Date>,
    page_size: usize,
    page: usize,
    /// `PA` + the sid of the last message of the previous page.
    page_token_opt: Option<String>,
}

impl ListQuery {
    fn parse(params: &[(String, String)]) -> Result<ListQuery, TwilioError> {
        let field = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        let date = |name: &str| -> Result<Option<Date>, TwilioError> {
            field(name).map(|text| parse_date(&text, name)).transpose()
        };
        let count = |name: &str, default: usize| -> Result<usize, TwilioError> {
            field(name).map_or(Ok(default), |text| {
                text.trim().parse().map_err(|_| TwilioError::bad_request(20001, &format!("Invalid {name}")))
            })
        };
        Ok(ListQuery {
            to_opt: field("To"),
            from_opt: field("From"),
            date_sent_on_opt: date("DateSent")?,
            date_sent_from_opt: date("DateSent>")?,
            date_sent_until_opt: date("DateSent<")?,
            page_size: count("PageSize", DEFAULT_PAGE_SIZE)?.clamp(1, MAX_PAGE_SIZE),
            page: count("Page", 0)?,
            page_token_opt: field("PageToken"),
        })
    }

    fn matches(&self, message: &StoredMessage) -> bool {
        let sent_date = message.date_sent_or_created().to_zoned(jiff::tz::TimeZone::UTC).date();
        self.to_opt.as_ref().is_none_or(|to| *to == message.to)
            && self.from_opt.as_ref().is_none_or(|from| *from == message.from)
            && self.date_sent_on_opt.is_none_or(|date| sent_date == date)
            && self.date_sent_from_opt.is_none_or(|date| sent_date >= date)
            && self.date_sent_until_opt.is_none_or(|date| sent_date <= date)
    }

    /// Returns the list URI with these filters and the given page.
    fn uri(&self, account_sid: &str, page: usize, page_token_opt: Option<&str>) -> String {
        let mut url = reqwest::Url::parse("http://twilio.invalid/").expect("a constant url parses");
        {
            let mut query = url.query_pairs_mut();
            let filters = [
                ("To", self.to_opt.clone()),
                ("From", self.from_opt.clone()),
                ("DateSent", self.date_sent_on_opt.map(|date| date.to_string())),
                ("DateSent>", self.date_sent_from_opt.map(|date| date.to_string())),
                ("DateSent<", self.date_sent_until_opt.map(|date| date.to_string())),
            ];
            for (name, value_opt) in filters {
                if let Some(value) = value_opt {
                    query.append_pair(name, &value);
                }
            }
            query.append_pair("PageSize", &self.page_size.to_string());
            query.append_pair("Page", &page.to_string());
            if let Some(page_token) = page_token_opt {
                query.append_pair("PageToken", page_token);
            }
        }
        format!("/{API_VERSION}/Accounts/{account_sid}/Messages.json?{}", url.query().unwrap_or_default())
    }
}

async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if account_sid != shared.account_sid {
        return TwilioError::not_found().into_response();
    }
    let query = match ListQuery::parse(&params) {
        Ok(query) => query,
        Err(refusal) => return refusal.into_response(),
    };
    let mut matching: Vec<(usize, StoredMessage)> = {
        let world = lock(&shared.world);
        world.messages.iter().enumerate().filter(|(_, m)| query.matches(m)).map(|(i, m)| (i, m.clone())).collect()
    };
    // Newest first; among messages of the same instant the later arrival comes first.
    matching.sort_by(|(index_a, a), (index_b, b)| b.date_created.cmp(&a.date_created).then(index_b.cmp(index_a)));
    let start = match query.page_token_opt.as_deref().and_then(|token| token.strip_prefix("PA")) {
        Some(after_sid) => matching.iter().position(|(_, m)| m.sid == after_sid).map_or(matching.len(), |at| at + 1),
        None => query.page.saturating_mul(query.page_size).min(matching.len()),
    };
    let end = start.saturating_add(query.page_size).min(matching.len());
    let page_rows = &matching[start..end];
    let next_page_uri_opt = (end < matching.len()).then(|| {
        let last_sid = page_rows.last().map(|(_, m)| m.sid.as_str()).unwrap_or_default();
        query.uri(&shared.account_sid, query.page + 1, Some(&format!("PA{last_sid}")))
    });
    let messages: Vec<Value> = page_rows.iter().map(|(_, m)| m.to_json(&shared.account_sid)).collect();
    let body = json!({
        "messages": messages,
        "end": end.saturating_sub(1),
        "first_page_uri": query.uri(&shared.account_sid, 0, None),
        "next_page_uri": next_page_uri_opt,
        "page": query.page,
        "page_size": query.page_size,
        // Not modelled: leadorch only pages forward.
        "previous_page_uri": null,
        "start": start,
        "uri": query.uri(&shared.account_sid, query.page, query.page_token_opt.as_deref()),
    });
    Json(body).into_response()
}

async fn unknown_route() -> TwilioError {
    TwilioError::not_found()
}

/// An error answer in the 2010 API's shape: `{code, message, more_info, status}`.
#[derive(Debug, Clone)]
struct TwilioError {
    status: StatusCode,
    code: i64,
    message: String,
    retry_after_secs_opt: Option<u64>,
}

impl TwilioError {
    fn new(status: StatusCode, code: i64, message: &str) -> TwilioError {
        TwilioError { status, code, message: message.to_owned(), retry_after_secs_opt: None }
    }

    fn bad_request(code: i64, message: &str) -> TwilioError {
        TwilioError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn unauthorized() -> TwilioError {
        TwilioError::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    }

    fn not_found() -> TwilioError {
        TwilioError::new(StatusCode::NOT_FOUND, 20404, "The requested resource was not found")
    }

    fn too_many_requests(retry_after_secs_opt: Option<u64>) -> TwilioError {
        TwilioError {
            retry_after_secs_opt,
            ..TwilioError::new(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
        }
    }

    fn internal() -> TwilioError {
        TwilioError::new(StatusCode::INTERNAL_SERVER_ERROR, 20500, "An internal server error has occurred")
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(retry_after_secs) = self.retry_after_secs_opt {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Twilio API\""));
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Returns `SM` + 32 lowercase hex, the shape of an SMS message SID.
fn message_sid() -> String {
    format!("SM{}", uuid::Uuid::new_v4().simple())
}

/// Returns true for `+` then 7 to 15 digits, the first not 0.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit()) && !digits.starts_with('0')
}

/// Reads a `DateSent` filter value: `YYYY-MM-DD`, or an RFC 3339 instant taken at its UTC date.
fn parse_date(text: &str, name: &str) -> Result<Date, TwilioError> {
    let text = text.trim();
    if let Ok(date) = text.parse::<Date>() {
        return Ok(date);
    }
    text.parse::<Timestamp>()
        .map(|timestamp| timestamp.to_zoned(jiff::tz::TimeZone::UTC).date())
        .map_err(|_| TwilioError::bad_request(20001, &format!("Invalid {name}")))
}

/// Formats an instant as Twilio does, e.g. `Thu, 01 May 2026 17:02:11 +0000`.
fn rfc2822(timestamp: Timestamp) -> String {
    timestamp.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Returns the Advanced Opt-Out type of a body that is exactly one keyword (§2.6).
fn opt_out_type(body: &str) -> Option<&'static str> {
    let word = body.trim().to_ascii_uppercase();
    if STOP_KEYWORDS.contains(&word.as_str()) {
        Some("STOP")
    } else if START_KEYWORDS.contains(&word.as_str()) {
        Some("START")
    } else if HELP_KEYWORDS.contains(&word.as_str()) {
        Some("HELP")
    } else {
        None
    }
}

/// Counts SMS segments: GSM-7 bodies take 160 septets in one segment, 153 per segment when
/// split; anything else is UCS-2 with 70 and 67 UTF-16 units.
fn segments(body: &str) -> usize {
    let septets_opt = body.chars().try_fold(0_usize, |septets, ch| {
        if GSM_BASIC.contains(ch) {
            Some(septets + 1)
        } else if GSM_EXTENSION.contains(ch) {
            Some(septets + 2)
        } else {
            None
        }
    });
    let (length, single, per_part) = match septets_opt {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if length <= single { 1 } else { length.div_ceil(per_part) }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use leadorch_actors::domain::Phone;
    use leadorch_actors::ports::{OutboundSms, SendError, SmsSender};
    use secrecy::SecretString;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::messaging::twilio::{TwilioConfig, TwilioSms};

    const SID: &str = "AC00000000000000000000000000000001";
    const TOKEN: &str = "sim-auth-token-1";
    const CUSTOMER: &str = "+15125550100";
    const SHOP: &str = "+15125550199";

    async fn start_sim() -> TwilioSim {
        TwilioSim::start(TwilioSimConfig { account_sid: SID.to_owned(), auth_token: TOKEN.to_owned() })
            .await
            .expect("sim starts")
    }

    fn client_config(sim: &TwilioSim) -> TwilioConfig {
        TwilioConfig {
            base_url: sim.base_url(),
            initial_backoff: Duration::from_millis(5),
            ..TwilioConfig::new(SID, SecretString::from(TOKEN))
        }
    }

    fn client(sim: &TwilioSim) -> TwilioSms {
        TwilioSms::new(client_config(sim)).expect("client builds")
    }

    fn phone(text: &str) -> Phone {
        Phone::parse(text).expect("test phone is valid")
    }

    fn sms(to: &str, body: &str, status_callback_opt: Option<String>) -> OutboundSms {
        OutboundSms {
            to: phone(to),
            from: phone(SHOP),
            body: body.to_owned(),
            status_callback_opt,
            idempotency_key: "tp_1:1".to_owned(),
        }
    }

    fn messages_url(sim: &TwilioSim) -> String {
        format!("{}/2010-04-01/Accounts/{SID}/Messages.json", sim.base_url())
    }

    /// One webhook the tiny receiver got: the URL it was sent to, headers and form fields.
    #[derive(Debug)]
    struct ReceivedWebhook {
        url: String,
        headers: HeaderMap,
        params: Vec<(String, String)>,
    }

    impl ReceivedWebhook {
        fn param(&self, name: &str) -> Option<&str> {
            self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
        }

        fn is_signed_by(&self, auth_token: &str) -> bool {
            let signature = self.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
            twilio_signature::validate(auth_token, &self.url, &self.params, signature)
        }
    }

    /// Serves `POST /hook` on `127.0.0.1:0`, answering 200 with empty TwiML; returns the base
    /// URL (`http://127.0.0.1:PORT`) and the channel every request arrives on.
    async fn spawn_receiver() -> (String, mpsc::UnboundedReceiver<ReceivedWebhook>) {
        let (received_tx, received_rx) = mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let base_for_handler = base.clone();
        let app = Router::new().route(
            "/hook",
            post(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let received_tx = received_tx.clone();
                let url = format!("{base_for_handler}{uri}");
                async move {
                    let params: Vec<(String, String)> =
                        reqwest::Url::parse(&format!("http://form.invalid/?{}", String::from_utf8_lossy(&body)))
                            .expect("form parses")
                            .query_pairs()
                            .into_owned()
                            .collect();
                    received_tx.send(ReceivedWebhook { url, headers, params }).ok();
                    ([(header::CONTENT_TYPE, "text/xml")], "<Response></Response>")
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (base, received_rx)
    }

    async fn next_webhook(received_rx: &mut mpsc::UnboundedReceiver<ReceivedWebhook>) -> ReceivedWebhook {
        tokio::time::timeout(Duration::from_secs(5), received_rx.recv())
            .await
            .expect("a webhook arrives within 5 s")
            .expect("the receiver is still running")
    }

    /// Waits (at most 5 s) until the sim has recorded `count` callbacks.
    async fn callbacks_after(sim: &TwilioSim, count: usize) -> Vec<SimCallback> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let callbacks = sim.callbacks();
            if callbacks.len() >= count || Instant::now() > deadline {
                return callbacks;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn accepted_message_is_recorded_and_answered_with_the_full_message_json() {
        let sim = start_sim().await;
        let http = reqwest::Client::new();

        let response = http
            .post(messages_url(&sim))
            .basic_auth(SID, Some(TOKEN))
            .form(&[("To", CUSTOMER), ("From", SHOP), ("Body", "Hi Pat")])
            .send()
            .await
            .expect("answer");

        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        let sid = body["sid"].as_str().expect("sid");
        assert!(sid.starts_with("SM") && sid.len() == 34 && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
        assert_eq!(body["status"], "queued");
        assert_eq!(body["direction"], "outbound-api");
        assert_eq!(body["num_segments"], "1");
        assert_eq!(body["num_media"], "0");
        assert_eq!(body["error_code"], Value::Null);
        assert_eq!(body["date_sent"], Value::Null);
        assert_eq!(body["account_sid"], SID);
        let date_created = body["date_created"].as_str().expect("date_created");
        assert!(date_created.ends_with(" +0000"), "{date_created}");
        assert!(jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(date_created).is_ok());
        let sent = sim.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].sid.as_str(), sent[0].to.as_str(), sent[0].body.as_str()), (sid, CUSTOMER, "Hi Pat"));
    }

    #[tokio::test]
    async fn client_send_round_trips_through_the_fake() {
        let sim = start_sim().await;

        let accepted = client(&sim).send_sms(&sms(CUSTOMER, "Your tint quote is ready", None)).await.expect("sent");

        let sent = sim.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].sid, accepted.provider_id);
        assert_eq!(sent[0].from, SHOP);
        assert_eq!(sent[0].body, "Your tint quote is ready");
        assert_eq!(accepted.accepted_at, Timestamp::from_second(sent[0].at.as_second()).expect("second"));
        assert_eq!(sim.request_count(), 1);
    }

    #[tokio::test]
    async fn status_callbacks_arrive_signed_in_order_sent_then_delivered() {
        let sim = start_sim().await;
        let (base, mut received_rx) = spawn_receiver().await;
        let callback_url = format!("{base}/hook?tenant=t1&touch=tp_1");

        let accepted = client(&sim).send_sms(&sms(CUSTOMER, "Hi", Some(callback_url.clone()))).await.expect("sent");
        let first = next_webhook(&mut received_rx).await;
        let second = next_webhook(&mut received_rx).await;

        for webhook in [&first, &second] {
            assert_eq!(webhook.url, callback_url);
            assert!(webhook.is_signed_by(TOKEN), "{webhook:?}");
            assert!(!webhook.is_signed_by("another-token"));
            assert_eq!(webhook.param("MessageSid"), Some(accepted.provider_id.as_str()));
            assert_eq!(webhook.param("AccountSid"), Some(SID));
            assert_eq!(webhook.param("To"), Some(CUSTOMER));
            assert_eq!(webhook.param("From"), Some(SHOP));
            assert_eq!(webhook.param("ErrorCode"), None);
        }
        assert_eq!(first.param("MessageStatus"), Some("sent"));
        assert_eq!(first.param("SmsStatus"), Some("sent"));
        assert_eq!(second.param("MessageStatus"), Some("delivered"));
        assert_eq!(second.param("RawDlrDoneDate").map(str::len), Some(10));
        let callbacks = callbacks_after(&sim, 2).await;
        assert!(callbacks.iter().all(|c| c.response_status_opt == Some(200) && !c.dropped), "{callbacks:?}");
    }

    #[tokio::test]
    async fn undelivered_fault_reports_the_error_code_in_the_last_callback() {
        let sim = start_sim().await;
        let (base, mut received_rx) = spawn_receiver().await;
        sim.set_fault(TwilioFault::UndeliveredCallback { error_code: 30003 });

        client(&sim).send_sms(&sms(CUSTOMER, "Hi", Some(format!("{base}/hook")))).await.expect("sent");
        let first = next_webhook(&mut received_rx).await;
        let second = next_webhook(&mut received_rx).await;

        assert_eq!(first.param("MessageStatus"), Some("sent"));
        assert_eq!(second.param("MessageStatus"), Some("undelivered"));
        assert_eq!(second.param("ErrorCode"), Some("30003"));
        assert!(second.is_signed_by(TOKEN));
    }

    #[tokio::test]
    async fn drop_callbacks_records_them_without_sending() {
        let sim = start_sim().await;
        let (base, mut received_rx) = spawn_receiver().await;
        sim.set_fault(TwilioFault::DropCallbacks);

        client(&sim).send_sms(&sms(CUSTOMER, "Hi", Some(format!("{base}/hook")))).await.expect("sent");
        let callbacks = callbacks_after(&sim, 2).await;

        assert_eq!(callbacks.len(), 2);
        assert!(callbacks.iter().all(|c| c.dropped && c.response_status_opt.is_none()), "{callbacks:?}");
        assert!(received_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn stop_from_the_handset_blocks_later_sends_until_start() {
        let sim = start_sim().await;
        let (base, mut received_rx) = spawn_receiver().await;
        let inbound_url = format!("{base}/hook");
        let client = client(&sim);

        let answer = sim.send_inbound(&inbound_url, CUSTOMER, SHOP, "  stop ").await.expect("delivered");
        let stop = next_webhook(&mut received_rx).await;
        let blocked = client.send_sms(&sms(CUSTOMER, "Still there?", None)).await;
        sim.send_inbound(&inbound_url, CUSTOMER, SHOP, "START").await.expect("delivered");
        let start = next_webhook(&mut received_rx).await;
        let unblocked = client.send_sms(&sms(CUSTOMER, "Welcome back", None)).await;

        assert_eq!(answer.status(), StatusCode::OK);
        assert!(stop.is_signed_by(TOKEN), "{stop:?}");
        assert_eq!(stop.param("OptOutType"), Some("STOP"));
        assert_eq!(stop.param("Body"), Some("  stop "));
        assert_eq!(stop.param("From"), Some(CUSTOMER));
        assert_eq!(stop.param("To"), Some(SHOP));
        assert_eq!(stop.param("NumMedia"), Some("0"));
        assert!(stop.param("MessageSid").is_some_and(|sid| sid.starts_with("SM")));
        assert_eq!(blocked, Err(SendError::OptedOut));
        assert_eq!(start.param("OptOutType"), Some("START"));
        assert!(unblocked.is_ok(), "{unblocked:?}");
        assert_eq!(sim.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_normal_reply_or_a_sentence_with_stop_is_no_keyword() {
        let sim = start_sim().await;
        let (base, mut received_rx) = spawn_receiver().await;

        sim.send_inbound(&format!("{base}/hook"), CUSTOMER, SHOP, "please stop texting me").await.expect("sent");
        let reply = next_webhook(&mut received_rx).await;
        let later = client(&sim).send_sms(&sms(CUSTOMER, "Sorry!", None)).await;

        assert_eq!(reply.param("OptOutType"), None);
        assert!(reply.is_signed_by(TOKEN));
        assert!(later.is_ok(), "{later:?}");
    }

    #[tokio::test]
    async fn block_refuses_the_pair_only() {
        let sim = start_sim().await;
        let client = client(&sim);
        sim.block(CUSTOMER, SHOP);

        let blocked = client.send_sms(&sms(CUSTOMER, "Hi", None)).await;
        let other = client.send_sms(&sms("+15125550101", "Hi", None)).await;

        assert_eq!(blocked, Err(SendError::OptedOut));
        assert!(other.is_ok(), "{other:?}");
    }

    #[tokio::test]
    async fn invalid_number_fault_is_an_invalid_recipient() {
        let sim = start_sim().await;
        sim.set_fault(TwilioFault::InvalidNumber { to: CUSTOMER.to_owned() });

        let result = client(&sim).send_sms(&sms(CUSTOMER, "Hi", None)).await;

        assert!(matches!(result, Err(SendError::InvalidRecipient { code_opt: Some(21211), .. })), "{result:?}");
        assert!(sim.sent().is_empty());
        assert_eq!(sim.request_count(), 1);
    }

    #[tokio::test]
    async fn two_server_errors_then_success_accepts_one_message_after_three_requests() {
        let sim = start_sim().await;
        sim.set_fault(TwilioFault::Status500 { times: 2 });

        let result = client(&sim).send_sms(&sms(CUSTOMER, "Hi", None)).await;

        assert!(result.is_ok(), "{result:?}");
        assert_eq!(sim.request_count(), 3);
        assert_eq!(sim.sent().len(), 1);
    }

    #[tokio::test]
    async fn status429_fault_carries_retry_after_and_the_client_retries() {
        let sim = start_sim().await;
        sim.set_fault(TwilioFault::Status429 { times: 1, retry_after_secs_opt: Some(0) });
        let http = reqwest::Client::new();

        let refused = http
            .post(messages_url(&sim))
            .basic_auth(SID, Some(TOKEN))
            .form(&[("To", CUSTOMER), ("From", SHOP), ("Body", "Hi")])
            .send()
            .await
            .expect("answer");
        sim.set_fault(TwilioFault::Status429 { times: 1, retry_after_secs_opt: None });
        let retried = client(&sim).send_sms(&sms(CUSTOMER, "Hi", None)).await;

        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("0"));
        let body: Value = refused.json().await.expect("json");
        assert_eq!((body["code"].as_i64(), body["status"].as_i64()), (Some(20429), Some(429)));
        assert!(retried.is_ok(), "{retried:?}");
        assert_eq!(sim.request_count(), 3);
    }

    #[tokio::test]
    async fn slow_fault_makes_the_client_time_out_without_resending() {
        let sim = start_sim().await;
        sim.set_fault(TwilioFault::Slow { delay: Duration::from_millis(500), times: 1 });
        let config = TwilioConfig { request_timeout: Duration::from_millis(100), ..client_config(&sim) };

        let result = TwilioSms::new(config).expect("client").send_sms(&sms(CUSTOMER, "Hi", None)).await;

        assert_eq!(result, Err(SendError::Timeout));
        assert_eq!(sim.request_count(), 1);
    }

    #[tokio::test]
    async fn wrong_credentials_get_401_with_code_20003_and_the_client_reports_misconfigured() {
        let sim = start_sim().await;
        let config = TwilioConfig { auth_token: SecretString::from("wrong"), ..client_config(&sim) };
        sim.set_fault(TwilioFault::Status500 { times: 1 });

        let raw = reqwest::Client::new().get(messages_url(&sim)).send().await.expect("answer");
        let result = TwilioSms::new(config).expect("client").send_sms(&sms(CUSTOMER, "Hi", None)).await;

        assert_eq!(raw.status(), StatusCode::UNAUTHORIZED);
        let body: Value = raw.json().await.expect("json");
        assert_eq!(body["code"], 20003);
        assert!(matches!(result, Err(SendError::Misconfigured(_))), "{result:?}");
        // A 401 does not consume a fault.
        let after = client(&sim).send_sms(&sms(CUSTOMER, "Hi", None)).await;
        assert!(after.is_ok(), "{after:?}");
        assert_eq!(sim.request_count(), 4);
    }

    #[tokio::test]
    async fn sends_missing_fields_or_with_a_bad_to_get_twilios_codes() {
        let sim = start_sim().await;
        let http = reqwest::Client::new();
        let post = |form: Vec<(&'static str, &'static str)>| {
            http.post(messages_url(&sim)).basic_auth(SID, Some(TOKEN)).form(&form).send()
        };

        let cases = [
            (vec![("From", SHOP), ("Body", "Hi")], 21604),
            (vec![("To", CUSTOMER), ("Body", "Hi")], 21603),
            (vec![("To", "5125550100"), ("From", SHOP), ("Body", "Hi")], 21211),
            (vec![("To", CUSTOMER), ("From", SHOP)], 21602),
        ];
        for (form, code) in cases {
            let response = post(form).await.expect("answer");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["code"], code, "{body}");
            assert_eq!(body["status"], 400);
            assert_eq!(body["more_info"], format!("https://www.twilio.com/docs/errors/{code}"));
        }
        assert!(sim.sent().is_empty());
    }

    #[tokio::test]
    async fn sent_messages_lists_what_was_sent_to_the_pair_newest_first() {
        let sim = start_sim().await;
        let client = client(&sim);
        let since = Timestamp::now();
        let first = client.send_sms(&sms(CUSTOMER, "first", None)).await.expect("sent");
        client.send_sms(&sms("+15125550101", "someone else", None)).await.expect("sent");
        let second = client.send_sms(&sms(CUSTOMER, "second", None)).await.expect("sent");

        let listed = client.sent_messages(&phone(CUSTOMER), &phone(SHOP), since).await.expect("listed");

        let summary: Vec<(&str, &str, &str)> =
            listed.iter().map(|m| (m.provider_id.as_str(), m.to.as_str(), m.body.as_str())).collect();
        assert_eq!(
            summary,
            vec![(second.provider_id.as_str(), CUSTOMER, "second"), (first.provider_id.as_str(), CUSTOMER, "first")]
        );
    }

    #[tokio::test]
    async fn list_pages_follow_next_page_uri_and_filter_by_date_sent() {
        let sim = start_sim().await;
        let client = client(&sim);
        for index in 0..5 {
            client.send_sms(&sms(CUSTOMER, &format!("message {index}"), None)).await.expect("sent");
        }
        let http = reqwest::Client::new();
        let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let tomorrow = today.tomorrow().expect("tomorrow");

        let mut bodies = Vec::new();
        let mut url_opt = Some(format!("{}?To=%2B15125550100&DateSent%3E={today}&PageSize=2", messages_url(&sim)));
        let mut pages = 0;
        while let Some(url) = url_opt.take() {
            let page: Value =
                http.get(url).basic_auth(SID, Some(TOKEN)).send().await.expect("answer").json().await.expect("json");
            pages += 1;
            for message in page["messages"].as_array().expect("messages") {
                bodies.push(message["body"].as_str().expect("body").to_owned());
            }
            url_opt = page["next_page_uri"].as_str().map(|uri| format!("{}{uri}", sim.base_url()));
        }
        let future: Value = http
            .get(format!("{}?DateSent%3E={tomorrow}", messages_url(&sim)))
            .basic_auth(SID, Some(TOKEN))
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");

        assert_eq!(pages, 3);
        assert_eq!(bodies, ["message 4", "message 3", "message 2", "message 1", "message 0"]);
        assert_eq!(future["messages"].as_array().map(Vec::len), Some(0));
        assert_eq!(future["next_page_uri"], Value::Null);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let sim = start_sim().await;
        let url = messages_url(&sim);

        sim.shutdown().await;
        let result = reqwest::Client::new().get(url).basic_auth(SID, Some(TOKEN)).send().await;

        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn segments_count_gsm_and_unicode_bodies() {
        assert_eq!(segments("Hi Pat"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"{".repeat(80)), 1);
        assert_eq!(segments(&"{".repeat(81)), 2);
        assert_eq!(segments(&"é".repeat(160)), 1);
        assert_eq!(segments("Thanks 🙂"), 1);
        assert_eq!(segments(&"ü🙂".repeat(24)), 2);
    }

    #[test]
    fn opt_out_keywords_match_the_whole_trimmed_body_in_any_case() {
        assert_eq!(opt_out_type(" Stop "), Some("STOP"));
        assert_eq!(opt_out_type("unsubscribe"), Some("STOP"));
        assert_eq!(opt_out_type("Unstop"), Some("START"));
        assert_eq!(opt_out_type("info"), Some("HELP"));
        assert_eq!(opt_out_type("stop it"), None);
        assert_eq!(opt_out_type("yes please"), None);
    }

    #[test]
    fn e164_check_and_rfc2822_format() {
        assert!(is_e164("+15125550100"));
        assert!(!is_e164("15125550100"));
        assert!(!is_e164("+0125550100"));
        assert!(!is_e164("+1512555010a"));
        let at: Timestamp = "2026-05-01T17:02:11.750Z".parse().expect("timestamp");
        assert_eq!(rfc2822(at), "Fri, 01 May 2026 17:02:11 +0000");
    }
}
