//! The SendGrid v3 client: implements the core's [`EmailSender`] port over reqwest (reference §3.1
//! and §3.2). It owns the Mail Send request body, the bearer key, the mapping of SendGrid's
//! statuses and `errors[]` to [`SendError`], and retries with backoff.
//!
//! It leaves to others: verifying the signed Event Webhook ([`super::sendgrid_events`]), acting
//! on events (bounces, spam reports and unsubscribes arrive there, not here: SendGrid answers 202
//! even for a suppressed address and then emits `dropped`), and deciding whether to resend after
//! an ambiguous failure (the caller reconciles with [`EmailSender::find_by_custom_arg`] first).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use leadorch_actors::ports::{EmailSender, OutboundEmail, ProviderMessage, SendError, SentMessage, error_chain};

use crate::vendor_http::{self, REDACTED, RetryPolicy, debug_timeouts_and_retries};

/// The `custom_args` key under which every mail carries the caller's idempotency key, so events
/// and [`EmailSender::find_by_custom_arg`] can tie a message back to one send attempt.
pub const IDEMPOTENCY_KEY_ARG: &str = "idempotency_key";

/// How many messages one `find_by_custom_arg` asks for; the activity API's maximum [assumption].
const MESSAGES_LIMIT: u32 = 1000;

/// How the client talks to SendGrid: where, with which key, how long it waits and how hard it
/// retries.
#[derive(Clone)]
pub struct SendGridConfig {
    /// The API host without `/v3`, e.g. `https://api.sendgrid.com` (EU subusers:
    /// `https://api.eu.sendgrid.com`); paths are appended.
    pub base_url: String,
    pub api_key: SecretString,
    /// Budget of one attempt, from sending the request to reading the whole answer.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx and failed connections; a timed-out mail
    /// send is never retried because SendGrid may have queued it.
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles per retry, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff. A 429 whose `X-RateLimit-Reset` is further away is not waited for:
    /// the call fails at once with `RateLimited` and the wait, so the caller can reschedule.
    pub max_backoff: Duration,
}

impl SendGridConfig {
    /// Returns the production defaults with this key: api.sendgrid.com, 10 s per attempt, 5 s to
    /// connect, 2 retries, backoff from 250 ms up to 8 s.
    pub fn new(api_key: SecretString) -> Self {
        Self {
            base_url: "https://api.sendgrid.com".to_owned(),
            api_key,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_retries: 2,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }

    /// Returns the retry budget and backoff of these settings.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
        }
    }
}

impl fmt::Debug for SendGridConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = f.debug_struct("SendGridConfig");
        fields.field("base_url", &self.base_url).field("api_key", &REDACTED);
        debug_timeouts_and_retries(&mut fields, self.request_timeout, self.connect_timeout, self.retry_policy());
        fields.finish()
    }
}

/// Why a [`SendGridEmail`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SendGridBuildError {
    #[error("invalid sendgrid base url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("sendgrid api key is empty")]
    EmptyApiKey,
    #[error("failed to build the http client")]
    Http(#[source] reqwest::Error),
}

/// The SendGrid v3 email adapter; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct SendGridEmail {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Parsed once in `new`, which also checks it can take path segments.
    base_url: Url,
    config: SendGridConfig,
}

/// The parts of an answer the client needs.
#[derive(Debug)]
struct RawResponse {
    status: StatusCode,
    message_id_opt: Option<String>,
    body: Vec<u8>,
}

/// A failure that may be retried.
#[derive(Debug)]
enum Failure {
    RateLimited {
        retry_after_opt: Option<Duration>,
    },
    Server(StatusCode),
    /// No connection was made, so SendGrid never saw the request.
    Connect(String),
    /// The request may have reached SendGrid, but the answer was lost.
    Transport(String),
    /// No full answer in time; the request may have reached SendGrid.
    Timeout,
}

impl Failure {
    fn from_transport(err: reqwest::Error) -> Self {
        // A connect timeout is also `is_timeout`, but nothing was sent, so it is checked first.
        if err.is_connect() {
            return Failure::Connect(error_chain(&err.without_url()));
        }
        if err.is_timeout() {
            return Failure::Timeout;
        }
        Failure::Transport(error_chain(&err.without_url()))
    }

    /// Returns true when SendGrid may have acted on the request although we got no answer.
    fn is_ambiguous(&self) -> bool {
        matches!(self, Failure::Transport(_) | Failure::Timeout)
    }

    fn status_opt(&self) -> Option<u16> {
        match self {
            Failure::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS.as_u16()),
            Failure::Server(status) => Some(status.as_u16()),
            Failure::Connect(_) | Failure::Transport(_) | Failure::Timeout => None,
        }
    }

    fn into_error(self) -> SendError {
        match self {
            Failure::RateLimited { retry_after_opt } => SendError::RateLimited { retry_after_opt },
            Failure::Server(status) => SendError::Unavailable(format!("status {}", status.as_u16())),
            Failure::Connect(message) | Failure::Transport(message) => SendError::Unavailable(message),
            Failure::Timeout => SendError::Timeout,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::RateLimited { .. } => f.write_str("rate limited"),
            Failure::Server(status) => write!(f, "server error {}", status.as_u16()),
            Failure::Connect(message) | Failure::Transport(message) => f.write_str(message),
            Failure::Timeout => f.write_str("timed out"),
        }
    }
}

impl SendGridEmail {
    /// Builds a client; no request is made until the first call.
    ///
    /// # Errors
    /// The base URL is not an absolute http(s) URL, the key is empty, or the TLS backend fails
    /// to initialise.
    pub fn new(config: SendGridConfig) -> Result<Self, SendGridBuildError> {
        let base_url = vendor_http::parse_base_url(&config.base_url)
            .map_err(|err| SendGridBuildError::InvalidBaseUrl { url: config.base_url.clone(), reason: err.reason })?;
        if config.api_key.expose_secret().trim().is_empty() {
            return Err(SendGridBuildError::EmptyApiKey);
        }
        let http = vendor_http::build_client(config.request_timeout, config.connect_timeout)
            .map_err(SendGridBuildError::Http)?;
        Ok(Self { inner: Arc::new(Inner { http, base_url, config }) })
    }

    /// Returns `{base}/v3/{segments...}`.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base_url.clone();
        url.path_segments_mut()
            .expect("new() checked that the base url can be a base")
            .pop_if_empty()
            .extend(std::iter::once("v3").chain(segments.iter().copied()));
        url
    }

    async fn send_once(&self, method: &Method, url: &Url, body_opt: Option<&[u8]>) -> Result<RawResponse, Failure> {
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(self.inner.config.api_key.expose_secret())
            .header(ACCEPT, "application/json");
        if let Some(body) = body_opt {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
        }
        let response = request.send().await.map_err(Failure::from_transport)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after_opt = rate_limit_wait(response.headers(), SystemTime::now());
            return Err(Failure::RateLimited { retry_after_opt });
        }
        if status.is_server_error() {
            return Err(Failure::Server(status));
        }
        let message_id_opt = response
            .headers()
            .get("x-message-id")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let body = match response.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            // An error answer is decided by its status and a mail send by its status and
            // `X-Message-Id`, so a lost body only costs the error's wording there.
            Err(err) if !status.is_success() || *method == Method::POST => {
                debug!(error = %error_chain(&err.without_url()), "sendgrid answer body could not be read");
                Vec::new()
            }
            Err(err) => return Err(Failure::from_transport(err)),
        };
        Ok(RawResponse { status, message_id_opt, body })
    }

    /// Sends one request with retries and returns the first answer that is not 429 or 5xx.
    ///
    /// `idempotent` is false for the mail send: after a timeout or a lost answer SendGrid may
    /// have queued the mail, so such a failure is returned at once as `Timeout` (the port's
    /// "may or may not have been taken") and never retried.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body_opt: Option<Vec<u8>>,
        idempotent: bool,
    ) -> Result<RawResponse, SendError> {
        let retry = self.inner.config.retry_policy();
        let path = url.path().to_owned();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match self.send_once(&method, &url, body_opt.as_deref()).await {
                Ok(raw) => {
                    debug!(path, status = raw.status.as_u16(), attempt, "sendgrid answered");
                    return Ok(raw);
                }
                Err(failure) => failure,
            };
            if !idempotent && failure.is_ambiguous() {
                warn!(path, attempt, error = %failure, "sendgrid call got no answer, not retrying");
                return Err(SendError::Timeout);
            }
            let wait_opt =
                if let Failure::RateLimited { retry_after_opt } = &failure { *retry_after_opt } else { None };
            match retry.delay_before_retry(attempt, wait_opt) {
                Some(delay) => {
                    warn!(
                        path, status = failure.status_opt(), attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %failure, "sendgrid call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    warn!(path, status = failure.status_opt(), attempt, error = %failure, "sendgrid call failed");
                    return Err(failure.into_error());
                }
            }
        }
    }
}

#[async_trait]
impl EmailSender for SendGridEmail {
    async fn send_email(&self, email: &OutboundEmail) -> Result<SentMessage, SendError> {
        let body = mail_send_body(email)?;
        let body = serde_json::to_vec(&body).map_err(|err| SendError::Rejected {
            code_opt: None,
            message: format!("failed to encode the mail: {err}"),
        })?;
        let raw = self.call(Method::POST, self.url(&["mail", "send"]), Some(body), false).await?;
        let result = mail_send_result(raw, Timestamp::now());
        match &result {
            Ok(sent) => debug!(to = %email.to.redacted(), provider_id = %sent.provider_id, "sendgrid accepted mail"),
            Err(err) => warn!(to = %email.to.redacted(), error = %err, "sendgrid refused mail"),
        }
        result
    }

    /// Finds mails whose `custom_args` hold `key` = `value`, newest first.
    ///
    /// SendGrid has no such search in Mail Send; against the real service this needs the paid
    /// Email Activity API (`GET /v3/messages`, a separate add-on and key scope), and the query
    /// syntax `custom_args.KEY="VALUE"` and the response shape
    /// `{"messages":[{"msg_id","to_email","subject","last_event_time",..}]}` are taken from that
    /// API's `messages` list [assumption: not in the verified reference; the live activity API
    /// may spell the filter `unique_args['KEY']="VALUE"`]. Our fake (`sim::sendgrid`) serves
    /// exactly this shape. `msg_id` is cut at its first `.` so it matches `X-Message-Id`;
    /// [`ProviderMessage::body`] carries the subject, and `created_at` the last event time.
    async fn find_by_custom_arg(&self, key: &str, value: &str) -> Result<Vec<ProviderMessage>, SendError> {
        let query = custom_arg_query(key, value)?;
        let mut url = self.url(&["messages"]);
        url.query_pairs_mut().append_pair("query", &query).append_pair("limit", &MESSAGES_LIMIT.to_string());
        let raw = self.call(Method::GET, url, None, true).await?;
        messages_result(&raw)
    }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (reference §3.1, §3.2)
// ---------------------------------------------------------------------------------------------

/// The Mail Send body: one personalization with one recipient.
#[derive(Debug, Serialize)]
struct MailSendBody<'a> {
    personalizations: [Personalization<'a>; 1],
    from: Address<'a>,
    subject: &'a str,
    content: Vec<Content<'a>>,
}

#[derive(Debug, Serialize)]
struct Personalization<'a> {
    to: [Address<'a>; 1],
    /// Values are strings, as SendGrid requires; they come back on every event.
    custom_args: BTreeMap<&'a str, &'a str>,
}

#[derive(Debug, Serialize)]
struct Address<'a> {
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    mime_type: &'static str,
    value: &'a str,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessagesBody {
    #[serde(default)]
    messages: Vec<MessageRow>,
}

#[derive(Debug, Deserialize)]
struct MessageRow {
    msg_id: String,
    #[serde(default)]
    to_email: String,
    #[serde(default)]
    subject: String,
    last_event_time: Timestamp,
}

/// Builds the Mail Send body. Empty parts are left out of `content` (SendGrid refuses an empty
/// value); `text/plain` comes first, then `text/html`.
///
/// # Errors
/// `Rejected` when the mail has neither text nor html, without a request.
fn mail_send_body(email: &OutboundEmail) -> Result<MailSendBody<'_>, SendError> {
    let mut custom_args: BTreeMap<&str, &str> =
        email.custom_args.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    custom_args.insert(IDEMPOTENCY_KEY_ARG, email.idempotency_key.as_str());
    let mut content = Vec::with_capacity(2);
    if !email.text.is_empty() {
        content.push(Content { mime_type: "text/plain", value: &email.text });
    }
    if !email.html.is_empty() {
        content.push(Content { mime_type: "text/html", value: &email.html });
    }
    if content.is_empty() {
        return Err(SendError::Rejected {
            code_opt: None,
            message: "mail has neither text nor html content".to_owned(),
        });
    }
    Ok(MailSendBody {
        personalizations: [Personalization {
            to: [Address { email: email.to.as_str(), name: display_name(email.to_name_opt.as_deref()) }],
            custom_args,
        }],
        from: Address { email: email.from.as_str(), name: display_name(email.from_name_opt.as_deref()) },
        subject: &email.subject,
        content,
    })
}

/// Returns a trimmed display name, or none for a blank one.
fn display_name(name_opt: Option<&str>) -> Option<&str> {
    name_opt.map(str::trim).filter(|name| !name.is_empty())
}

/// Maps a final Mail Send answer. SendGrid has no numeric error codes, so `code_opt` carries the
/// HTTP status.
fn mail_send_result(raw: RawResponse, now: Timestamp) -> Result<SentMessage, SendError> {
    let status = raw.status;
    if status.is_success() {
        let Some(provider_id) = raw.message_id_opt else {
            return Err(SendError::Unavailable("no X-Message-Id".to_owned()));
        };
        return Ok(SentMessage { provider_id, accepted_at: now });
    }
    let errors = serde_json::from_slice::<ErrorBody>(&raw.body).unwrap_or_default().errors;
    let message = error_message(&errors, status);
    let code_opt = Some(i64::from(status.as_u16()));
    Err(match status {
        StatusCode::BAD_REQUEST if errors.iter().any(|e| e.field.as_deref().is_some_and(is_recipient_field)) => {
            SendError::InvalidRecipient { code_opt, message }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => SendError::Misconfigured(message),
        _ => SendError::Rejected { code_opt, message },
    })
}

/// Maps a final activity-search answer.
fn messages_result(raw: &RawResponse) -> Result<Vec<ProviderMessage>, SendError> {
    let status = raw.status;
    if !status.is_success() {
        let errors = serde_json::from_slice::<ErrorBody>(&raw.body).unwrap_or_default().errors;
        let message = error_message(&errors, status);
        return Err(match status {
            // 404 is what an account without the Email Activity add-on gets [assumption].
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                SendError::Misconfigured(message)
            }
            _ => SendError::Rejected { code_opt: Some(i64::from(status.as_u16())), message },
        });
    }
    let body: MessagesBody = serde_json::from_slice(&raw.body)
        .map_err(|err| SendError::Unavailable(format!("sendgrid messages answer is not the expected json: {err}")))?;
    Ok(body
        .messages
        .into_iter()
        .map(|row| ProviderMessage {
            provider_id: message_id_prefix(&row.msg_id).to_owned(),
            to: row.to_email,
            body: row.subject,
            created_at: row.last_event_time,
        })
        .collect())
}

/// Returns true for `personalizations.N.to` and anything under it (`personalizations.N.to.M.email`).
fn is_recipient_field(field: &str) -> bool {
    let mut parts = field.split('.');
    parts.next() == Some("personalizations")
        && parts.next().is_some_and(|index| index.bytes().all(|b| b.is_ascii_digit()))
        && parts.next() == Some("to")
}

/// Joins `errors[]` into one line ("field: message; ..."), or the status reason when there are none.
fn error_message(errors: &[ErrorItem], status: StatusCode) -> String {
    let joined = errors
        .iter()
        .map(|item| {
            let message = item.message.as_deref().unwrap_or("no message");
            match item.field.as_deref() {
                Some(field) => format!("{field}: {message}"),
                None => message.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if joined.is_empty() {
        return format!("status {}", status.as_u16());
    }
    vendor_http::truncate_message(&joined)
}

/// Returns the part of a message id before the first `.`: events and the activity API append a
/// suffix to the `X-Message-Id` (reference §3.1).
pub fn message_id_prefix(id: &str) -> &str {
    id.split_once('.').map_or(id, |(prefix, _)| prefix)
}

/// Builds `custom_args.KEY="VALUE"`, escaping `\` and `"` in the value.
///
/// # Errors
/// `Rejected` when the key is empty or holds anything but ASCII letters, digits, `_` and `-`,
/// which the query syntax has no quoting for.
fn custom_arg_query(key: &str, value: &str) -> Result<String, SendError> {
    let key_is_plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !key_is_plain {
        return Err(SendError::Rejected {
            code_opt: None,
            message: "custom arg key must be ascii letters, digits, '_' or '-'".to_owned(),
        });
    }
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!("custom_args.{key}=\"{escaped}\""))
}

/// Reads `X-RateLimit-Reset` (Unix seconds) as the wait from `now`; a reset in the past means now.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let reset_secs: u64 = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim().parse().ok()?;
    let reset = UNIX_EPOCH.checked_add(Duration::from_secs(reset_secs))?;
    Some(reset.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::{Value, json};
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use leadorch_actors::domain::Email;

    use super::*;

    const KEY: &str = "SG.test-key.abc123";

    fn test_config(server: &MockServer) -> SendGridConfig {
        SendGridConfig {
            base_url: server.uri(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(2),
            ..SendGridConfig::new(SecretString::from(KEY))
        }
    }

    fn backoff(config: &SendGridConfig, retry: u32) -> Duration {
        config.retry_policy().backoff(retry)
    }

    fn client_with(config: SendGridConfig) -> SendGridEmail {
        SendGridEmail::new(config).expect("client builds")
    }

    fn client(server: &MockServer) -> SendGridEmail {
        client_with(test_config(server))
    }

    fn outbound() -> OutboundEmail {
        OutboundEmail {
            to: Email::parse("pat.lee@example.com").expect("valid"),
            to_name_opt: Some("Pat Lee".into()),
            from: Email::parse("austin@tint.example.com").expect("valid"),
            from_name_opt: Some("Tint Co Austin".into()),
            subject: "Your window tint quote".into(),
            text: "Hi Pat, ...".into(),
            html: "<p>Hi Pat, ...</p>".into(),
            custom_args: BTreeMap::from([("lead_id".into(), "L-123".into()), ("touchpoint_id".into(), "T-9".into())]),
            idempotency_key: "T-9:1".into(),
        }
    }

    fn accepted(id: &str) -> ResponseTemplate {
        ResponseTemplate::new(202).insert_header("X-Message-Id", id)
    }

    fn errors(status: u16, field: Value, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({ "errors": [{ "field": field, "message": message }] }))
    }

    /// Returns the X-RateLimit-Reset value `secs` seconds from now.
    fn reset_in(secs: u64) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        (now + secs).to_string()
    }

    #[tokio::test]
    async fn send_email_posts_the_documented_body_with_bearer_auth() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "personalizations": [{
                    "to": [{ "email": "pat.lee@example.com", "name": "Pat Lee" }],
                    "custom_args": { "idempotency_key": "T-9:1", "lead_id": "L-123", "touchpoint_id": "T-9" }
                }],
                "from": { "email": "austin@tint.example.com", "name": "Tint Co Austin" },
                "subject": "Your window tint quote",
                "content": [
                    { "type": "text/plain", "value": "Hi Pat, ..." },
                    { "type": "text/html", "value": "<p>Hi Pat, ...</p>" }
                ]
            })))
            .respond_with(accepted("LRzXl_NHStOGhQ4kofSm_A"))
            .expect(1)
            .mount(&server)
            .await;

        let sent = client(&server).send_email(&outbound()).await.expect("accepted");

        assert_eq!(sent.provider_id, "LRzXl_NHStOGhQ4kofSm_A");
    }

    #[tokio::test]
    async fn names_are_left_out_when_absent_and_empty_content_parts_are_skipped() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .and(body_json(json!({
                "personalizations": [{
                    "to": [{ "email": "pat.lee@example.com" }],
                    "custom_args": { "idempotency_key": "k" }
                }],
                "from": { "email": "austin@tint.example.com" },
                "subject": "Quote",
                "content": [{ "type": "text/html", "value": "<p>hi</p>" }]
            })))
            .respond_with(accepted("id1"))
            .expect(1)
            .mount(&server)
            .await;
        let email = OutboundEmail {
            to_name_opt: None,
            from_name_opt: Some("  ".into()),
            subject: "Quote".into(),
            text: String::new(),
            html: "<p>hi</p>".into(),
            custom_args: BTreeMap::new(),
            idempotency_key: "k".into(),
            ..outbound()
        };

        let sent = client(&server).send_email(&email).await;

        assert!(sent.is_ok(), "{sent:?}");
    }

    #[tokio::test]
    async fn mail_without_text_or_html_is_rejected_without_a_request() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send")).respond_with(accepted("x")).expect(0).mount(&server).await;
        let email = OutboundEmail { text: String::new(), html: String::new(), ..outbound() };

        let result = client(&server).send_email(&email).await;

        assert!(matches!(result, Err(SendError::Rejected { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn accepted_mail_without_x_message_id_is_unavailable() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send")).respond_with(ResponseTemplate::new(202)).expect(1).mount(&server).await;

        let result = client(&server).send_email(&outbound()).await;

        assert_eq!(result, Err(SendError::Unavailable("no X-Message-Id".into())));
    }

    #[tokio::test]
    async fn two_server_errors_then_accepted_takes_three_requests() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .respond_with(errors(500, Value::Null, "internal error"))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(path("/v3/mail/send")).respond_with(accepted("id3")).expect(1).mount(&server).await;

        let sent = client(&server).send_email(&outbound()).await.expect("accepted on the third try");

        assert_eq!(sent.provider_id, "id3");
    }

    #[tokio::test]
    async fn server_error_that_persists_is_unavailable_after_max_retries_plus_one_requests() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send")).respond_with(ResponseTemplate::new(503)).expect(3).mount(&server).await;

        let result = client(&server).send_email(&outbound()).await;

        assert_eq!(result, Err(SendError::Unavailable("status 503".into())));
    }

    #[tokio::test]
    async fn rate_limited_then_accepted_takes_two_requests() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .respond_with(
                errors(429, Value::Null, "too many requests")
                    .insert_header("X-RateLimit-Limit", "600")
                    .insert_header("X-RateLimit-Remaining", "0")
                    .insert_header("X-RateLimit-Reset", reset_in(0).as_str()),
            )
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v3/mail/send")).respond_with(accepted("id2")).expect(1).mount(&server).await;

        let sent = client(&server).send_email(&outbound()).await;

        assert_eq!(sent.map(|sent| sent.provider_id), Ok("id2".to_owned()));
    }

    #[tokio::test]
    async fn rate_limit_reset_beyond_max_backoff_is_rate_limited_at_once_with_the_wait() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .respond_with(
                errors(429, Value::Null, "too many requests").insert_header("X-RateLimit-Reset", reset_in(60)),
            )
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_email(&outbound()).await;

        let Err(SendError::RateLimited { retry_after_opt: Some(wait) }) = result else {
            panic!("expected rate limited with a wait, got {result:?}");
        };
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60), "{wait:?}");
    }

    #[tokio::test]
    async fn rate_limit_that_never_lifts_is_rate_limited_after_max_retries_plus_one_requests() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .respond_with(errors(429, Value::Null, "too many requests"))
            .expect(3)
            .mount(&server)
            .await;

        let result = client(&server).send_email(&outbound()).await;

        assert_eq!(result, Err(SendError::RateLimited { retry_after_opt: None }));
    }

    #[tokio::test]
    async fn bad_request_naming_the_recipient_is_invalid_recipient_without_retry() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .respond_with(errors(400, json!("personalizations.0.to"), "Does not contain a valid address."))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_email(&outbound()).await;

        assert_eq!(
            result,
            Err(SendError::InvalidRecipient {
                code_opt: Some(400),
                message: "personalizations.0.to: Does not contain a valid address.".into()
            })
        );
    }

    #[tokio::test]
    async fn other_client_errors_map_to_misconfigured_or_rejected_without_retry() {
        let cases = [
            (400, json!("subject"), "rejected"),
            (401, Value::Null, "misconfigured"),
            (403, Value::Null, "misconfigured"),
            (413, Value::Null, "rejected"),
        ];
        for (status, field, expected) in cases {
            let server = MockServer::start().await;
            Mock::given(path("/v3/mail/send"))
                .respond_with(errors(status, field, "nope"))
                .expect(1)
                .mount(&server)
                .await;

            let result = client(&server).send_email(&outbound()).await;

            let kind = match result {
                Err(SendError::Misconfigured(_)) => "misconfigured",
                Err(SendError::Rejected { code_opt, .. }) if code_opt == Some(i64::from(status)) => "rejected",
                _ => "other",
            };
            assert_eq!(kind, expected, "{status}: {result:?}");
        }
    }

    #[tokio::test]
    async fn slow_answer_is_a_timeout_after_one_request() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/mail/send"))
            .respond_with(accepted("late").set_delay(Duration::from_secs(2)))
            .expect(1)
            .mount(&server)
            .await;
        let config = SendGridConfig { request_timeout: Duration::from_millis(200), ..test_config(&server) };
        let started = Instant::now();

        let result = client_with(config).send_email(&outbound()).await;

        assert_eq!(result, Err(SendError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn unreachable_host_is_unavailable() {
        // wiremock pools its servers, so a dropped one keeps listening; a closed port does not.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let uri = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let config = SendGridConfig {
            base_url: uri,
            initial_backoff: Duration::from_millis(1),
            ..SendGridConfig::new(SecretString::from(KEY))
        };

        let result = client_with(config).send_email(&outbound()).await;

        assert!(matches!(result, Err(SendError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn find_by_custom_arg_queries_messages_and_cuts_msg_id_at_the_first_dot() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v3/messages"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .and(query_param("query", r#"custom_args.touchpoint_id="T-9 \"x\"""#))
            .and(query_param("limit", "1000"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messages": [{
                    "from_email": "austin@tint.example.com",
                    "msg_id": "abc123.filter0001.16648.5515E0B88.0",
                    "subject": "Your window tint quote",
                    "to_email": "pat.lee@example.com",
                    "status": "delivered",
                    "opens_count": 0,
                    "clicks_count": 0,
                    "last_event_time": "2026-05-01T17:02:11Z"
                }]
            })))
            .expect(1)
            .mount(&server)
            .await;

        let found = client(&server).find_by_custom_arg("touchpoint_id", "T-9 \"x\"").await.expect("found");

        assert_eq!(
            found,
            vec![ProviderMessage {
                provider_id: "abc123".into(),
                to: "pat.lee@example.com".into(),
                body: "Your window tint quote".into(),
                created_at: "2026-05-01T17:02:11Z".parse().expect("timestamp"),
            }]
        );
    }

    #[tokio::test]
    async fn find_by_custom_arg_retries_a_server_error_and_refuses_odd_keys() {
        let server = MockServer::start().await;
        Mock::given(path("/v3/messages"))
            .respond_with(ResponseTemplate::new(502))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v3/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "messages": [] })))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server);

        let found = client.find_by_custom_arg("lead_id", "L-1").await;
        let odd = client.find_by_custom_arg("lead id\"", "L-1").await;

        assert_eq!(found, Ok(Vec::new()));
        assert!(matches!(odd, Err(SendError::Rejected { .. })), "{odd:?}");
    }

    #[test]
    fn config_debug_does_not_print_the_key() {
        let printed = format!("{:?}", SendGridConfig::new(SecretString::from(KEY)));
        assert!(!printed.contains(KEY), "{printed}");
        assert!(printed.contains("https://api.sendgrid.com"), "{printed}");
    }

    #[test]
    fn empty_key_and_non_http_base_url_are_refused() {
        let empty = SendGridEmail::new(SendGridConfig::new(SecretString::from(" ")));
        let mailto = SendGridEmail::new(SendGridConfig {
            base_url: "mailto:ops@example.com".into(),
            ..SendGridConfig::new(SecretString::from(KEY))
        });
        assert!(matches!(empty, Err(SendGridBuildError::EmptyApiKey)), "{empty:?}");
        assert!(matches!(mailto, Err(SendGridBuildError::InvalidBaseUrl { .. })), "{mailto:?}");
    }

    #[test]
    fn recipient_fields_are_personalizations_n_to_and_below() {
        assert!(is_recipient_field("personalizations.0.to"));
        assert!(is_recipient_field("personalizations.12.to.0.email"));
        assert!(!is_recipient_field("personalizations.0.cc"));
        assert!(!is_recipient_field("personalizations"));
        assert!(!is_recipient_field("from.email"));
        assert!(!is_recipient_field("personalizations.x.to"));
    }

    #[test]
    fn rate_limit_reset_is_read_as_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let headers = |reset: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-ratelimit-reset", reset.parse().expect("header value"));
            headers
        };
        assert_eq!(rate_limit_wait(&headers("1767225607"), now), Some(Duration::from_secs(7)));
        assert_eq!(rate_limit_wait(&headers("1767225000"), now), Some(Duration::ZERO));
        assert_eq!(rate_limit_wait(&headers("soon"), now), None);
        assert_eq!(rate_limit_wait(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let config = SendGridConfig::new(SecretString::from(KEY));
        for retry in 1..=40 {
            assert!(backoff(&config, retry) <= config.max_backoff, "{retry}");
        }
        let first = backoff(&config, 1);
        assert!(first >= config.initial_backoff / 2 && first <= config.initial_backoff);
    }

    #[test]
    fn message_id_prefix_cuts_at_the_first_dot() {
        assert_eq!(message_id_prefix("LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1.0"), "LRzXl_NHStOGhQ4kofSm_A");
        assert_eq!(message_id_prefix("plain"), "plain");
    }
}
