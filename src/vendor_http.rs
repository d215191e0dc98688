//! What the vendor HTTP clients ([`crate::crm::shopmonkey`], [`crate::messaging::twilio`],
//! [`crate::messaging::sendgrid`]) share: base-URL validation, the reqwest client they build, the
//! jittered exponential backoff and the wait before a retry, `Retry-After` parsing, the cut of
//! vendor error text, and the fields and secret marker of their configs' `Debug` output. (They
//! flatten transport errors with [`leadorch_actors::ports::error_chain`].)
//!
//! It leaves to each client everything that differs by vendor: auth, paths and wire format, which
//! failures may be resent, and how statuses and error codes map to the port's error type.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};

/// How much of a vendor's error text goes into a port error.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Stands in for a secret (API key, auth token) in `Debug` output.
pub const REDACTED: &str = "[redacted]";

/// Why a vendor base URL was refused; the clients carry `reason` in their own build error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidBaseUrl {
    /// The URL parser's message, or `not an http(s) base url`.
    pub reason: String,
}

/// Parses a vendor API host such as `https://api.twilio.com`.
///
/// # Errors
/// The text is not an absolute http(s) URL that can take path segments.
pub fn parse_base_url(text: &str) -> Result<Url, InvalidBaseUrl> {
    let base_url = Url::parse(text).map_err(|err| InvalidBaseUrl { reason: err.to_string() })?;
    if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
        return Err(InvalidBaseUrl { reason: "not an http(s) base url".to_owned() });
    }
    Ok(base_url)
}

/// Builds the HTTP client of a vendor adapter: `request_timeout` bounds one attempt, from sending
/// the request to reading the whole body, and redirects are not followed.
///
/// # Errors
/// The TLS backend fails to initialise.
pub fn build_client(request_timeout: Duration, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(connect_timeout)
        // A vendor API has no reason to redirect, and a redirect must not carry the credentials
        // elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The parts of an answer the ShopMonkey and Twilio clients classify. (SendGrid's client reads
/// other headers and sorts out 429 and 5xx before reading the body, so it has its own.)
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `Retry-After` header, for [`parse_retry_after`] when the answer is a 429.
    pub retry_after_opt: Option<HeaderValue>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// Sends a request and reads the status, `Retry-After` and the whole body of its answer.
///
/// # Errors
/// The request fails or times out before the whole body is read.
pub async fn send_and_read(request: RequestBuilder) -> reqwest::Result<RawResponse> {
    let response = request.send().await?;
    let status = response.status();
    let retry_after_opt = response.headers().get(RETRY_AFTER).cloned();
    let body = response.bytes().await?.to_vec();
    Ok(RawResponse { status, retry_after_opt, body })
}

/// How hard a vendor client retries, copied out of its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles per retry, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff, and the longest rate-limit wait the client sleeps through.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Returns the delay before retry number `retry` (from 1): exponential, capped, with jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let ceiling = self.initial_backoff.saturating_mul(1_u32 << exponent).min(self.max_backoff);
        // Half fixed so retries still spread out, half random so callers hit by one outage don't
        // retry in lockstep.
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Returns the wait before retrying after failed attempt number `attempt` (from 1): the
    /// vendor's rate-limit wait when it gave one, else [`RetryPolicy::backoff`].
    ///
    /// Returns `None`, meaning give up, when the retries are spent or the rate-limit wait is
    /// longer than `max_backoff`: the caller then fails at once with the wait, so it can
    /// reschedule instead of sleeping.
    pub fn delay_before_retry(&self, attempt: u32, rate_limit_wait_opt: Option<Duration>) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        match rate_limit_wait_opt {
            Some(wait) if wait > self.max_backoff => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff(attempt)),
        }
    }
}

/// Adds the timeout and retry fields every vendor config has to its `Debug` output, after the
/// fields that differ (base URL, credentials).
pub fn debug_timeouts_and_retries(
    debug: &mut fmt::DebugStruct<'_, '_>,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
) {
    debug
        .field("request_timeout", &request_timeout)
        .field("connect_timeout", &connect_timeout)
        .field("max_retries", &retry.max_retries)
        .field("initial_backoff", &retry.initial_backoff)
        .field("max_backoff", &retry.max_backoff);
}

/// Reads `Retry-After` as delay seconds or as an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Returns a vendor's error text cut to [`MAX_MESSAGE_CHARS`] characters.
pub fn truncate_message(message: &str) -> String {
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_before_retry_gives_up_when_retries_are_spent_or_the_rate_limit_wait_is_too_long() {
        let policy = RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };

        assert_eq!(policy.delay_before_retry(1, Some(Duration::from_millis(700))), Some(Duration::from_millis(700)));
        assert_eq!(policy.delay_before_retry(1, Some(Duration::from_secs(2))), None);
        assert_eq!(policy.delay_before_retry(3, None), None);
        let backoff = policy.delay_before_retry(2, None).expect("a retry is left");
        assert!(backoff >= Duration::from_millis(100) && backoff <= Duration::from_millis(200), "{backoff:?}");
    }
}
