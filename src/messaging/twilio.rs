//! The Twilio Programmable Messaging client: implements the core's [`SmsSender`] port over
//! reqwest (reference §2.1, §2.2). It owns the wire format of `Messages.json` (form fields, the
//! Message JSON, the error body), the mapping of Twilio's error codes to [`SendError`], retries
//! with backoff, and the paging loop of the message list used for reconciliation.
//!
//! It leaves to others: signature checks of the webhooks Twilio sends us
//! ([`super::twilio_signature`]), per-number send pacing (the location actor) and every decision
//! about what to do with a failure.
//!
//! Resending is the dangerous case: a send that may have reached Twilio is never sent again here.
//! A 5xx, a 429 and a refused connection mean Twilio did not take the message, so those are
//! retried; a timeout or a connection lost mid-request may hide an accepted message, so those
//! come back as [`SendError::Timeout`] and the caller reconciles through
//! [`SmsSender::sent_messages`] before resending.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::fmt::rfc2822::DateTimeParser;
use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::{debug, warn};

use leadorch_actors::domain::Phone;
use leadorch_actors::ports::{OutboundSms, ProviderMessage, SendError, SentMessage, SmsSender, error_chain};

use crate::vendor_http::{
    self, MAX_MESSAGE_CHARS, REDACTED, RawResponse, RetryPolicy, debug_timeouts_and_retries, parse_retry_after,
};

/// The API version segment of every Programmable Messaging path.
const API_VERSION: &str = "2010-04-01";

/// Rows per page of the message list; Twilio's default is 50.
const PAGE_SIZE: &str = "50";

/// How many pages `sent_messages` reads at most; a guard against a `next_page_uri` that never
/// ends. Reconciliation looks at one recipient over a day or two, far below 10 × 50 messages.
const MAX_PAGES: usize = 10;

/// Runs of at least this many digits in a Twilio error message are masked: Twilio echoes the
/// phone number it refused ("The 'To' number +15125550100 is not ..."), and a `SendError` ends
/// up in logs.
const MIN_MASKED_DIGITS: usize = 7;

static RFC2822: DateTimeParser = DateTimeParser::new();

/// How the client talks to Twilio: where, as whom, how long it waits and how hard it retries.
#[derive(Clone)]
pub struct TwilioConfig {
    /// The API host without the version, e.g. `https://api.twilio.com`; paths are appended.
    pub base_url: String,
    /// `AC` + 32 hex; the Basic-auth user and a path segment of every URL.
    pub account_sid: String,
    /// The Basic-auth password (the Account's Auth Token, or an API key secret).
    pub auth_token: SecretString,
    /// Budget of one attempt, from sending the request to reading the whole body.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx and refused connections (and, for the
    /// message list only, timeouts).
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles per retry, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff. A 429 whose `Retry-After` is longer is not waited for: the call
    /// fails at once with `RateLimited` and the hint, so the caller can reschedule.
    pub max_backoff: Duration,
}

impl TwilioConfig {
    /// Returns the configuration for this account with the default host, timeouts and retries.
    pub fn new(account_sid: impl Into<String>, auth_token: SecretString) -> Self {
        Self {
            base_url: "https://api.twilio.com".to_owned(),
            account_sid: account_sid.into(),
            auth_token,
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

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = f.debug_struct("TwilioConfig");
        fields.field("base_url", &self.base_url).field("account_sid", &self.account_sid).field("auth_token", &REDACTED);
        debug_timeouts_and_retries(&mut fields, self.request_timeout, self.connect_timeout, self.retry_policy());
        fields.finish()
    }
}

/// Why a [`TwilioSms`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TwilioBuildError {
    #[error("invalid twilio base url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("twilio account sid or auth token is empty")]
    MissingCredentials,
    #[error("failed to build the http client")]
    Http(#[source] reqwest::Error),
}

/// The Twilio SMS adapter; cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct TwilioSms {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Parsed once in `new`, which also checks it can take path segments.
    base_url: Url,
    /// `{base}/2010-04-01/Accounts/{sid}/Messages.json`, built once.
    messages_url: Url,
    config: TwilioConfig,
}

/// Whether a call may be sent again after a failure that Twilio may have acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Creating a message: resent only after failures proving Twilio did not take it.
    OnlyIfNotTaken,
    /// Reading: always safe to resend.
    Always,
}

/// A failure that may be retried.
#[derive(Debug)]
enum Failure {
    RateLimited {
        retry_after_opt: Option<Duration>,
    },
    /// A 5xx: per Twilio, the request was not processed.
    Server(StatusCode),
    /// The connection was never made, so the request never reached Twilio.
    Connect(String),
    /// The connection failed after the request may have been sent.
    Transport(String),
    Timeout,
}

impl Failure {
    fn from_transport(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return Failure::Timeout;
        }
        let is_connect = err.is_connect();
        // The URL names the account and, for the message list, phone numbers: keep it out.
        let message = error_chain(&err.without_url());
        if is_connect { Failure::Connect(message) } else { Failure::Transport(message) }
    }

    /// Returns true when Twilio may have acted on the request.
    fn may_have_been_taken(&self) -> bool {
        match self {
            Failure::RateLimited { .. } | Failure::Server(_) | Failure::Connect(_) => false,
            Failure::Transport(_) | Failure::Timeout => true,
        }
    }

    fn status_opt(&self) -> Option<u16> {
        match self {
            Failure::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS.as_u16()),
            Failure::Server(status) => Some(status.as_u16()),
            Failure::Connect(_) | Failure::Transport(_) | Failure::Timeout => None,
        }
    }

    fn into_error(self, resend: Resend) -> SendError {
        match self {
            Failure::RateLimited { retry_after_opt } => SendError::RateLimited { retry_after_opt },
            Failure::Server(status) => SendError::Unavailable(format!("status {}", status.as_u16())),
            Failure::Connect(message) => SendError::Unavailable(message),
            // For a send, a connection lost mid-request is as ambiguous as a timeout, and
            // `Timeout` is the port's "may have been taken, reconcile first" answer.
            Failure::Transport(_) if resend == Resend::OnlyIfNotTaken => SendError::Timeout,
            Failure::Transport(message) => SendError::Unavailable(message),
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

/// A Message resource as Twilio returns it (§2.1); only the fields leadorch reads.
#[derive(Debug, Deserialize)]
struct MessageResource {
    sid: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    body: Option<String>,
    /// RFC 2822, e.g. `Thu, 01 May 2026 17:02:11 +0000`.
    #[serde(default)]
    date_created: Option<String>,
}

/// One page of `GET .../Messages.json`.
#[derive(Debug, Deserialize)]
struct MessagePage {
    #[serde(default)]
    messages: Vec<MessageResource>,
    /// A path with query, relative to the API host; null on the last page.
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// Twilio's error body: the 2010 API's `{code, message, more_info, status}` or RFC 9457's
/// `{type, title, status, code, detail}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_default()
    }

    fn code_opt(&self) -> Option<i64> {
        match self.code.as_ref()? {
            serde_json::Value::Number(number) => number.as_i64(),
            serde_json::Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn message_opt(&self) -> Option<&str> {
        [&self.message, &self.detail, &self.title].into_iter().flatten().map(String::as_str).find(|m| !m.is_empty())
    }
}

impl TwilioSms {
    /// Builds a client; no request is made until the first call.
    ///
    /// # Errors
    /// The base URL is not an absolute http(s) URL, the account SID or auth token is empty, or
    /// the TLS backend fails to initialise.
    pub fn new(config: TwilioConfig) -> Result<Self, TwilioBuildError> {
        let base_url = vendor_http::parse_base_url(&config.base_url)
            .map_err(|err| TwilioBuildError::InvalidBaseUrl { url: config.base_url.clone(), reason: err.reason })?;
        if config.account_sid.trim().is_empty() || config.auth_token.expose_secret().is_empty() {
            return Err(TwilioBuildError::MissingCredentials);
        }
        let mut messages_url = base_url.clone();
        messages_url
            .path_segments_mut()
            .expect("checked above that the base url can be a base")
            .pop_if_empty()
            .extend([API_VERSION, "Accounts", config.account_sid.trim(), "Messages.json"]);
        let http = vendor_http::build_client(config.request_timeout, config.connect_timeout)
            .map_err(TwilioBuildError::Http)?;
        Ok(Self { inner: Arc::new(Inner { http, base_url, messages_url, config }) })
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        let config = &self.inner.config;
        request
            .basic_auth(config.account_sid.trim(), Some(config.auth_token.expose_secret()))
            .header(ACCEPT, "application/json")
    }

    /// Sends a request with retries and returns the first final answer. `build` makes a fresh
    /// request per attempt; `classify` sorts an answer into a final result or a failure.
    async fn call<T>(
        &self,
        operation: &'static str,
        resend: Resend,
        build: impl Fn() -> RequestBuilder + Send + Sync,
        classify: impl Fn(&RawResponse) -> Result<Result<T, SendError>, Failure> + Send + Sync,
    ) -> Result<T, SendError> {
        let retry = self.inner.config.retry_policy();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match vendor_http::send_and_read(self.authorized(build())).await {
                Ok(raw) => {
                    debug!(operation, status = raw.status.as_u16(), attempt, "twilio answered");
                    match classify(&raw) {
                        Ok(result) => return result,
                        Err(failure) => failure,
                    }
                }
                Err(err) => Failure::from_transport(err),
            };
            let unsafe_to_resend = resend == Resend::OnlyIfNotTaken && failure.may_have_been_taken();
            let wait_opt =
                if let Failure::RateLimited { retry_after_opt } = &failure { *retry_after_opt } else { None };
            let delay_opt = if unsafe_to_resend { None } else { retry.delay_before_retry(attempt, wait_opt) };
            match delay_opt {
                Some(delay) => {
                    warn!(
                        operation, status = failure.status_opt(), attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %failure, "twilio call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    warn!(operation, status = failure.status_opt(), attempt, error = %failure, "twilio call failed");
                    return Err(failure.into_error(resend));
                }
            }
        }
    }

    /// Returns the URL of the first page of messages from `from` to `to` sent on or after the
    /// UTC date of `since`.
    fn list_url(&self, to: &Phone, from: &Phone, since: Timestamp) -> Url {
        let since_date = since.to_zoned(jiff::tz::TimeZone::UTC).date();
        let mut url = self.inner.messages_url.clone();
        url.query_pairs_mut()
            .append_pair("To", to.as_str())
            .append_pair("From", from.as_str())
            .append_pair("DateSent>", &since_date.to_string())
            .append_pair("PageSize", PAGE_SIZE);
        url
    }

    /// Resolves a `next_page_uri` against the API host; `None` when it points at another
    /// origin, which must not receive our credentials.
    fn next_page_url(&self, next_page_uri: &str) -> Option<Url> {
        let url = self.inner.base_url.join(next_page_uri).ok()?;
        (url.origin() == self.inner.base_url.origin()).then_some(url)
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send_sms(&self, sms: &OutboundSms) -> Result<SentMessage, SendError> {
        let mut form: Vec<(&str, &str)> =
            vec![("To", sms.to.as_str()), ("From", sms.from.as_str()), ("Body", sms.body.as_str())];
        if let Some(status_callback) = &sms.status_callback_opt {
            form.push(("StatusCallback", status_callback.as_str()));
        }
        let url = &self.inner.messages_url;
        let result = self
            .call("send_sms", Resend::OnlyIfNotTaken, || self.inner.http.post(url.clone()).form(&form), classify_send)
            .await;
        match &result {
            Ok(sent) => debug!(
                to = %sms.to.redacted(), idempotency_key = %sms.idempotency_key, sid = %sent.provider_id,
                "twilio took the sms"
            ),
            Err(err) => warn!(
                to = %sms.to.redacted(), idempotency_key = %sms.idempotency_key, error = %err,
                "twilio sms send failed"
            ),
        }
        result
    }

    async fn sent_messages(
        &self,
        to: &Phone,
        from: &Phone,
        since: Timestamp,
    ) -> Result<Vec<ProviderMessage>, SendError> {
        // Twilio's dates have whole seconds, so a message created in the same second as a
        // sub-second `since` must still count.
        let since_second = Timestamp::from_second(since.as_second()).unwrap_or(since);
        let mut messages = Vec::new();
        let mut next_url_opt = Some(self.list_url(to, from, since));
        let mut pages = 0;
        while let Some(url) = next_url_opt.take() {
            if pages == MAX_PAGES {
                warn!(
                    to = %to.redacted(), pages = MAX_PAGES,
                    "twilio message list still has more after the page cap; keeping what was read"
                );
                break;
            }
            pages += 1;
            let page: MessagePage =
                self.call("sent_messages", Resend::Always, || self.inner.http.get(url.clone()), classify_list).await?;
            for resource in page.messages {
                let created_at_opt = resource.date_created.as_deref().and_then(parse_rfc2822);
                let Some(created_at) = created_at_opt else {
                    warn!(sid = %resource.sid, "twilio message has no readable date_created; skipped");
                    continue;
                };
                if created_at < since_second {
                    continue;
                }
                messages.push(ProviderMessage {
                    provider_id: resource.sid,
                    to: resource.to.unwrap_or_default(),
                    body: resource.body.unwrap_or_default(),
                    created_at,
                });
            }
            next_url_opt = match page.next_page_uri.as_deref().filter(|uri| !uri.is_empty()) {
                None => None,
                Some(uri) => {
                    let Some(next_url) = self.next_page_url(uri) else {
                        return Err(SendError::Unavailable("twilio next_page_uri points at another host".to_owned()));
                    };
                    Some(next_url)
                }
            };
        }
        // Newest first, as the port promises; the sort is stable, so ties keep Twilio's order.
        messages.sort_by_key(|message| std::cmp::Reverse(message.created_at));
        Ok(messages)
    }
}

/// Sorts the answer to a send into a final result or a retryable failure.
fn classify_send(raw: &RawResponse) -> Result<Result<SentMessage, SendError>, Failure> {
    if !raw.status.is_success() {
        return classify_error(raw).map(Err);
    }
    let Ok(resource) = serde_json::from_slice::<MessageResource>(&raw.body) else {
        // Twilio took the message but the answer cannot be read: as ambiguous as a timeout.
        warn!(status = raw.status.as_u16(), "twilio accepted a message with an unreadable body");
        return Ok(Err(SendError::Timeout));
    };
    if resource.sid.is_empty() {
        warn!(status = raw.status.as_u16(), "twilio accepted a message without a sid");
        return Ok(Err(SendError::Timeout));
    }
    let accepted_at = resource.date_created.as_deref().and_then(parse_rfc2822).unwrap_or_else(Timestamp::now);
    Ok(Ok(SentMessage { provider_id: resource.sid, accepted_at }))
}

/// Sorts the answer to a list request into a page or a retryable failure.
fn classify_list(raw: &RawResponse) -> Result<Result<MessagePage, SendError>, Failure> {
    if !raw.status.is_success() {
        return classify_error(raw).map(Err);
    }
    // Only the position of a parse error is kept: its text can quote a value, such as a number.
    Ok(serde_json::from_slice::<MessagePage>(&raw.body).map_err(|err| {
        SendError::Unavailable(format!("unreadable twilio message list at line {} column {}", err.line(), err.column()))
    }))
}

/// Maps a non-2xx answer to a final error or a retryable failure, by Twilio's error code first
/// and the HTTP status second (§2.2).
fn classify_error(raw: &RawResponse) -> Result<SendError, Failure> {
    let status = raw.status;
    let body = ErrorBody::parse(&raw.body);
    let code_opt = body.code_opt();
    if status == StatusCode::TOO_MANY_REQUESTS || code_opt == Some(20429) {
        let retry_after_opt =
            raw.retry_after_opt.as_ref().and_then(|value| parse_retry_after(value, SystemTime::now()));
        return Err(Failure::RateLimited { retry_after_opt });
    }
    if status.is_server_error() {
        return Err(Failure::Server(status));
    }
    let message = body
        .message_opt()
        .map_or_else(|| status.canonical_reason().unwrap_or("client error").to_owned(), vendor_message);
    let error = match code_opt {
        Some(21211 | 21214 | 21612 | 21614 | 21635 | 21408) => SendError::InvalidRecipient { code_opt, message },
        Some(21610) => SendError::OptedOut,
        Some(20003 | 21606 | 21603 | 21604 | 21608) => misconfigured(code_opt, &message),
        _ if status == StatusCode::UNAUTHORIZED => misconfigured(code_opt, &message),
        _ if status.is_client_error() => SendError::Rejected { code_opt, message },
        // A 1xx or 3xx (redirects are not followed): Twilio did not process the request.
        _ => SendError::Unavailable(format!("unexpected status {}", status.as_u16())),
    };
    Ok(error)
}

fn misconfigured(code_opt: Option<i64>, message: &str) -> SendError {
    match code_opt {
        Some(code) => SendError::Misconfigured(format!("twilio error {code}: {message}")),
        None => SendError::Misconfigured(message.to_owned()),
    }
}

/// Returns Twilio's error message cut to [`MAX_MESSAGE_CHARS`], with phone-number-like digit
/// runs masked.
fn vendor_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS));
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.chars().filter(char::is_ascii_digit).count() >= MIN_MASKED_DIGITS {
            out.push_str("[number]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for ch in message.chars().take(MAX_MESSAGE_CHARS) {
        if ch.is_ascii_digit() || (ch == '+' && digits.is_empty()) {
            digits.push(ch);
        } else {
            flush(&mut digits, &mut out);
            out.push(ch);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Reads an RFC 2822 date such as `Thu, 01 May 2026 17:02:11 +0000`.
fn parse_rfc2822(text: &str) -> Option<Timestamp> {
    RFC2822.parse_timestamp(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use reqwest::header::HeaderValue;
    use serde_json::{Value, json};
    use wiremock::matchers::{body_string, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "twilio-test-token-123";
    const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

    fn test_config(server: &MockServer) -> TwilioConfig {
        TwilioConfig {
            base_url: server.uri(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(2),
            ..TwilioConfig::new(SID, SecretString::from(TOKEN))
        }
    }

    fn client_with(config: TwilioConfig) -> TwilioSms {
        TwilioSms::new(config).expect("client builds")
    }

    fn client(server: &MockServer) -> TwilioSms {
        client_with(test_config(server))
    }

    fn phone(text: &str) -> Phone {
        Phone::parse(text).expect("test phone is valid")
    }

    fn sms() -> OutboundSms {
        OutboundSms {
            to: phone("+15125550100"),
            from: phone("+15125550199"),
            body: "Hi Pat, your quote is ready & waiting: 100% tint".to_owned(),
            status_callback_opt: Some("https://hooks.example.com/twilio/status?t=1".to_owned()),
            idempotency_key: "tp_1:1".to_owned(),
        }
    }

    fn message_json(sid: &str, to: &str, body: &str, date_created: &str) -> Value {
        json!({
            "sid": sid, "account_sid": SID, "messaging_service_sid": null, "from": "+15125550199", "to": to,
            "body": body, "status": "queued", "direction": "outbound-api", "num_segments": "1",
            "num_media": "0", "price": null, "price_unit": null, "error_code": null, "error_message": null,
            "api_version": "2010-04-01", "date_created": date_created, "date_updated": date_created,
            "date_sent": null, "uri": format!("{MESSAGES_PATH}/{sid}.json")
        })
    }

    fn created() -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(message_json(
            "SM0123456789abcdef0123456789abcdef",
            "+15125550100",
            "Hi Pat",
            "Thu, 30 Apr 2026 17:02:11 +0000",
        ))
    }

    fn twilio_error(status: u16, code: i64, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({
            "code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status
        }))
    }

    fn basic_auth_header() -> String {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}")))
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp is valid")
    }

    #[tokio::test]
    async fn send_posts_exact_form_fields_with_basic_auth_and_reads_the_sid() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .and(header("authorization", basic_auth_header().as_str()))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(header("accept", "application/json"))
            .and(body_string(
                "To=%2B15125550100&From=%2B15125550199&Body=Hi+Pat%2C+your+quote+is+ready+%26+waiting%3A+100%25+tint\
                 &StatusCallback=https%3A%2F%2Fhooks.example.com%2Ftwilio%2Fstatus%3Ft%3D1",
            ))
            .respond_with(created())
            .expect(1)
            .mount(&server)
            .await;

        let sent = client(&server).send_sms(&sms()).await.expect("sent");

        assert_eq!(sent.provider_id, "SM0123456789abcdef0123456789abcdef");
        assert_eq!(sent.accepted_at, ts("2026-04-30T17:02:11Z"));
    }

    #[tokio::test]
    async fn send_without_status_callback_leaves_the_field_out() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .and(body_string("To=%2B15125550100&From=%2B15125550199&Body=hello"))
            .respond_with(created())
            .expect(1)
            .mount(&server)
            .await;
        let message = OutboundSms { body: "hello".to_owned(), status_callback_opt: None, ..sms() };

        let sent = client(&server).send_sms(&message).await;

        assert!(sent.is_ok(), "{sent:?}");
    }

    #[tokio::test]
    async fn two_server_errors_then_created_succeeds_after_three_requests() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(500, 20500, "An internal server error has occurred"))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(method("POST")).and(path(MESSAGES_PATH)).respond_with(created()).expect(1).mount(&server).await;

        let sent = client(&server).send_sms(&sms()).await;

        assert!(sent.is_ok(), "{sent:?}");
    }

    #[tokio::test]
    async fn server_error_that_persists_is_unavailable_after_max_retries_plus_one_requests() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(503))
            .expect(3)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        assert!(matches!(result, Err(SendError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn rate_limited_send_waits_for_retry_after_then_succeeds() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "1"))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST")).and(path(MESSAGES_PATH)).respond_with(created()).expect(1).mount(&server).await;
        let started = Instant::now();

        let sent = client(&server).send_sms(&sms()).await;

        assert!(sent.is_ok(), "{sent:?}");
        assert!(started.elapsed() >= Duration::from_millis(950));
    }

    #[tokio::test]
    async fn rate_limit_that_never_lifts_is_rate_limited_with_the_hint() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "0"))
            .expect(3)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        assert!(matches!(
            result,
            Err(SendError::RateLimited { retry_after_opt: Some(d) }) if d == Duration::ZERO
        ));
    }

    #[tokio::test]
    async fn retry_after_longer_than_max_backoff_fails_at_once_with_the_hint() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "60"))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        assert!(matches!(
            result,
            Err(SendError::RateLimited { retry_after_opt: Some(d) }) if d == Duration::from_secs(60)
        ));
    }

    #[tokio::test]
    async fn invalid_to_number_is_invalid_recipient_without_retry_and_masks_the_number() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(400, 21211, "The 'To' number +15125550100 is not a valid phone number."))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        let Err(SendError::InvalidRecipient { code_opt, message }) = result else {
            panic!("expected invalid recipient, got {result:?}");
        };
        assert_eq!(code_opt, Some(21211));
        assert_eq!(message, "The 'To' number [number] is not a valid phone number.");
    }

    #[tokio::test]
    async fn unsubscribed_recipient_is_opted_out_without_retry() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        assert_eq!(result, Err(SendError::OptedOut));
    }

    #[tokio::test]
    async fn bad_credentials_and_unusable_from_are_misconfigured_without_retry() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(401, 20003, "Authenticate"))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(400, 21606, "The From phone number is not a valid, SMS-capable number"))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server);

        let unauthorized = client.send_sms(&sms()).await;
        let bad_from = client.send_sms(&sms()).await;

        assert!(matches!(unauthorized, Err(SendError::Misconfigured(_))), "{unauthorized:?}");
        assert!(matches!(bad_from, Err(SendError::Misconfigured(_))), "{bad_from:?}");
    }

    #[tokio::test]
    async fn rfc_9457_error_body_is_read_by_its_code_and_detail() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "type": "https://www.twilio.com/docs/errors/21635", "title": "Landline",
                "status": 400, "code": 21635, "detail": "The 'To' number is a landline"
            })))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        assert_eq!(
            result,
            Err(SendError::InvalidRecipient {
                code_opt: Some(21635),
                message: "The 'To' number is a landline".to_owned()
            })
        );
    }

    #[tokio::test]
    async fn other_client_error_is_rejected_with_code_and_message() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit"))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        let Err(SendError::Rejected { code_opt, message }) = result else {
            panic!("expected rejected, got {result:?}");
        };
        assert_eq!(code_opt, Some(21617));
        assert!(message.contains("1600"), "{message}");
    }

    #[tokio::test]
    async fn slow_answer_is_a_timeout_after_one_request_because_twilio_may_have_taken_it() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(created().set_delay(Duration::from_secs(2)))
            .expect(1)
            .mount(&server)
            .await;
        let config = TwilioConfig { request_timeout: Duration::from_millis(200), ..test_config(&server) };

        let result = client_with(config).send_sms(&sms()).await;

        assert_eq!(result, Err(SendError::Timeout));
    }

    #[tokio::test]
    async fn unreadable_created_answer_is_a_timeout_so_the_caller_reconciles() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(201).set_body_string("<html>ok</html>"))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).send_sms(&sms()).await;

        assert_eq!(result, Err(SendError::Timeout));
    }

    #[tokio::test]
    async fn unreachable_host_is_unavailable_after_retries() {
        // wiremock pools its servers, so a dropped one keeps listening; a closed port does not.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let uri = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let config = TwilioConfig {
            base_url: uri,
            initial_backoff: Duration::from_millis(1),
            ..TwilioConfig::new(SID, SecretString::from(TOKEN))
        };

        let result = client_with(config).send_sms(&sms()).await;

        assert!(matches!(result, Err(SendError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn sent_messages_filters_by_pair_and_date_and_follows_next_page_uri() {
        let server = MockServer::start().await;
        let next_page_uri = format!("{MESSAGES_PATH}?To=%2B15125550100&PageSize=50&Page=1&PageToken=PASM2");
        Mock::given(method("GET"))
            .and(path(MESSAGES_PATH))
            .and(header("authorization", basic_auth_header().as_str()))
            .and(query_param("To", "+15125550100"))
            .and(query_param("From", "+15125550199"))
            .and(query_param("DateSent>", "2026-04-30"))
            .and(query_param("PageSize", "50"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messages": [
                    message_json("SM3", "+15125550100", "third", "Thu, 30 Apr 2026 18:00:00 +0000"),
                    message_json("SM2", "+15125550100", "second", "Thu, 30 Apr 2026 17:02:11 +0000"),
                ],
                "next_page_uri": next_page_uri, "page": 0, "page_size": 2
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(MESSAGES_PATH))
            .and(query_param("Page", "1"))
            .and(query_param("PageToken", "PASM2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messages": [message_json("SM1", "+15125550100", "first", "Thu, 30 Apr 2026 09:00:00 +0000")],
                "next_page_uri": null, "page": 1, "page_size": 2
            })))
            .expect(1)
            .mount(&server)
            .await;

        let messages = client(&server)
            .sent_messages(&phone("+15125550100"), &phone("+15125550199"), ts("2026-04-30T17:02:11.400Z"))
            .await
            .expect("messages");

        let summary: Vec<(&str, &str, &str)> =
            messages.iter().map(|m| (m.provider_id.as_str(), m.to.as_str(), m.body.as_str())).collect();
        assert_eq!(summary, vec![("SM3", "+15125550100", "third"), ("SM2", "+15125550100", "second")]);
        assert_eq!(messages[1].created_at, ts("2026-04-30T17:02:11Z"));
    }

    #[tokio::test]
    async fn sent_messages_stops_at_the_page_cap() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messages": [message_json("SM1", "+15125550100", "again", "Thu, 30 Apr 2026 18:00:00 +0000")],
                "next_page_uri": format!("{MESSAGES_PATH}?Page=1&PageToken=PASM1")
            })))
            .expect(10)
            .mount(&server)
            .await;

        let messages = client(&server)
            .sent_messages(&phone("+15125550100"), &phone("+15125550199"), ts("2026-04-30T00:00:00Z"))
            .await
            .expect("messages");

        assert_eq!(messages.len(), 10);
    }

    #[tokio::test]
    async fn sent_messages_refuses_a_next_page_on_another_host() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messages": [], "next_page_uri": "https://evil.example.com/steal"
            })))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server)
            .sent_messages(&phone("+15125550100"), &phone("+15125550199"), ts("2026-04-30T00:00:00Z"))
            .await;

        assert!(matches!(result, Err(SendError::Unavailable(_))), "{result:?}");
    }

    #[tokio::test]
    async fn sent_messages_retries_a_timeout_because_reading_is_safe() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(MESSAGES_PATH))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "messages": [], "next_page_uri": null }))
                    .set_delay(Duration::from_secs(2)),
            )
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "messages": [], "next_page_uri": null })))
            .expect(1)
            .mount(&server)
            .await;
        let config = TwilioConfig { request_timeout: Duration::from_millis(200), ..test_config(&server) };

        let result = client_with(config)
            .sent_messages(&phone("+15125550100"), &phone("+15125550199"), ts("2026-04-30T00:00:00Z"))
            .await;

        assert_eq!(result, Ok(Vec::new()));
    }

    #[test]
    fn config_debug_does_not_print_the_token() {
        let printed = format!("{:?}", TwilioConfig::new(SID, SecretString::from(TOKEN)));
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(printed.contains(SID), "{printed}");
    }

    #[test]
    fn empty_credentials_and_non_http_base_url_are_refused() {
        let empty_token = TwilioSms::new(TwilioConfig::new(SID, SecretString::from("")));
        let bad_url = TwilioSms::new(TwilioConfig {
            base_url: "mailto:ops@example.com".into(),
            ..TwilioConfig::new(SID, SecretString::from(TOKEN))
        });

        assert!(matches!(empty_token, Err(TwilioBuildError::MissingCredentials)));
        assert!(matches!(bad_url, Err(TwilioBuildError::InvalidBaseUrl { .. })));
    }

    #[test]
    fn vendor_message_masks_long_digit_runs_only() {
        assert_eq!(vendor_message("To 5125550100 and +15125550100 bad"), "To [number] and [number] bad");
        assert_eq!(vendor_message("error 21211 at 12:30"), "error 21211 at 12:30");
        assert_eq!(vendor_message(&"x".repeat(400)).len(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let value = |s: &str| HeaderValue::from_str(s).expect("header value");
        assert_eq!(parse_retry_after(&value("7"), now), Some(Duration::from_secs(7)));
        let in_30s = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&value(&in_30s), now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(&value("soon"), now), None);
    }
}
