//! A per-key fixed-window rate limiter ([`RateLimiter`]): at most [`Limit::max`] requests per key
//! in each window of [`Limit::window`], windows aligned to the Unix epoch (window index =
//! unix millis / window millis). It answers with a [`Decision`]; [`too_many`] turns a refusal into
//! the 429 response. Which key to limit (a client address, a token, a tenant) and which routes to
//! guard are the caller's business.
//!
//! With Redis, the count is shared by every node: one key per limiter key and window,
//! `{prefix}rl:{key}:{window_index}`, incremented with `INCR` and given an expiry with `PEXPIRE`
//! in the same pipeline (one round trip). Redis must never hold a request up: when it fails or
//! exceeds the command timeout, that request is counted in process instead (the same counter an
//! in-memory limiter uses), counted in `leadorch_rate_limit_fallbacks_total` and logged (at warn
//! once per outage, at debug after that). During an outage each node therefore enforces the
//! limit on its own. Refusals are counted in `leadorch_rate_limited_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use fred::clients::Client;
use fred::prelude::{ClientLike, KeysInterface, Options};
use leadorch_actors::ports::error_chain;

use crate::http::ApiError;

/// How many checks pass between two prunings of the in-process counters of past windows.
const PRUNE_EVERY: u64 = 1024;
/// Slack over the Redis command timeout before the limiter gives up on its own, so the client's
/// error (more precise) usually wins.
const REDIS_TIMEOUT_SLACK: Duration = Duration::from_millis(50);

/// How many requests a key may make per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per key and window; the next one is limited.
    pub max: u32,
    /// The window length; windows are aligned to the Unix epoch. Counted in whole milliseconds,
    /// at least one.
    pub window: Duration,
}

impl Limit {
    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed; `remaining` more are allowed in this window.
    Allowed { remaining: u32 },
    /// The request is refused until the window ends, `retry_after` from now.
    Limited { retry_after: Duration },
}

impl Decision {
    /// Returns whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// Returns the `Retry-After` value in whole seconds: the wait rounded up, at least 1; 0 when
    /// the request is allowed.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Decision::Allowed { .. } => 0,
            Decision::Limited { retry_after } => retry_after_header_secs(*retry_after),
        }
    }
}

/// Returns the 429 response for a limited request: `Retry-After` in whole seconds (rounded up,
/// at least 1) and the JSON error body of [`ApiError`].
pub fn too_many(retry_after: Duration) -> Response {
    ApiError::RateLimited { retry_after_secs: retry_after_header_secs(retry_after) }.into_response()
}

/// Rounds a wait up to whole seconds, at least 1 (a `Retry-After: 0` invites an immediate retry).
fn retry_after_header_secs(retry_after: Duration) -> u64 {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    secs.max(1)
}

/// A fixed-window rate limiter, in process or shared through Redis. Cheap to clone (the clones
/// share their counters).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limit: Limit,
    /// The in-process counts: key to (window index, requests in that window). Serves every check
    /// without Redis, and the checks Redis fails to answer.
    memory: DashMap<String, (u64, u32)>,
    /// Checks so far, to prune `memory` every [`PRUNE_EVERY`] of them.
    checks: AtomicU64,
    redis_opt: Option<RedisCounter>,
}

impl std::fmt::Debug for RateLimiter {
    // The Redis client is left out: its configuration may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("RateLimiter");
        debug.field("limit", &self.inner.limit).field("tracked_keys", &self.inner.memory.len());
        if let Some(redis) = &self.inner.redis_opt {
            debug.field("key_prefix", &redis.key_prefix).field("command_timeout", &redis.command_timeout);
        }
        debug.finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Creates a limiter that counts in process only (each node on its own).
    pub fn in_memory(limit: Limit) -> Self {
        RateLimiter::with_redis_opt(limit, None)
    }

    /// Creates a limiter that counts in Redis, under keys `{key_prefix}rl:{key}:{window_index}`,
    /// so every node shares the count. A check Redis fails to answer within `command_timeout` is
    /// counted in process instead. The client is used as it is: it should be connecting (or
    /// connected) already and fail commands at once while it has no connection, as the catalog
    /// cache's client does.
    pub fn redis(client: Client, key_prefix: String, command_timeout: Duration, limit: Limit) -> Self {
        let redis = RedisCounter { client, key_prefix, command_timeout, is_down: AtomicBool::new(false) };
        RateLimiter::with_redis_opt(limit, Some(redis))
    }

    fn with_redis_opt(limit: Limit, redis_opt: Option<RedisCounter>) -> Self {
        RateLimiter { inner: Arc::new(Inner { limit, memory: DashMap::new(), checks: AtomicU64::new(0), redis_opt }) }
    }

    /// Returns the limit this limiter enforces.
    pub fn limit(&self) -> Limit {
        self.inner.limit
    }

    /// Counts one request of `key` and decides whether it may proceed. Never fails; with Redis it
    /// takes at most about the command timeout. `key` ends up in a Redis key: it should not be a
    /// secret (hash a token first).
    pub async fn check(&self, key: &str) -> Decision {
        self.check_at(key, unix_millis()).await
    }

    /// [`Self::check`] at a given time (unix milliseconds).
    async fn check_at(&self, key: &str, now_ms: u64) -> Decision {
        let limit = self.inner.limit;
        let window_ms = limit.window_ms();
        let window_index = now_ms / window_ms;
        let window_end_ms = window_index.saturating_add(1).saturating_mul(window_ms);
        let until_window_end = Duration::from_millis(window_end_ms.saturating_sub(now_ms));
        if self.inner.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune(window_index);
        }
        let count = match &self.inner.redis_opt {
            // The Redis key outlives its window by one more window, in case the nodes' clocks
            // disagree a little about when it ends.
            Some(redis) => match redis.count(key, window_index, until_window_end + limit.window).await {
                Ok(count) => count,
                Err(err) => {
                    redis.failed(err.as_ref());
                    self.count_in_memory(key, window_index)
                }
            },
            None => self.count_in_memory(key, window_index),
        };
        match u64::from(limit.max).checked_sub(count) {
            // `remaining` is at most `max`, a u32: the conversion never saturates.
            Some(remaining) => Decision::Allowed { remaining: u32::try_from(remaining).unwrap_or(u32::MAX) },
            None => {
                metrics::counter!("leadorch_rate_limited_total").increment(1);
                Decision::Limited { retry_after: until_window_end }
            }
        }
    }

    /// Counts one request of `key` in the in-process map; returns the count in this window.
    fn count_in_memory(&self, key: &str, window_index: u64) -> u64 {
        let mut entry = self.inner.memory.entry(key.to_owned()).or_insert((window_index, 0));
        let (counted_window, count) = entry.value_mut();
        if *counted_window != window_index {
            *counted_window = window_index;
            *count = 0;
        }
        *count = count.saturating_add(1);
        u64::from(*count)
    }

    /// Drops the in-process counts of past windows, so the map holds only keys seen lately.
    fn prune(&self, current_window: u64) {
        // No entry of the map is held here (`retain` locks every shard in turn).
        self.inner.memory.retain(|_, (counted_window, _)| *counted_window >= current_window);
    }
}

/// The shared count in Redis.
struct RedisCounter {
    client: Client,
    key_prefix: String,
    command_timeout: Duration,
    /// True while Redis is failing, so an outage is logged at warn once rather than per request.
    is_down: AtomicBool,
}

impl RedisCounter {
    /// Counts one request of `key` in Redis; returns the count in this window. The key expires
    /// `keep_for` from now.
    async fn count(
        &self,
        key: &str,
        window_index: u64,
        keep_for: Duration,
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let redis_key = format!("{}rl:{key}:{window_index}", self.key_prefix);
        let keep_for_ms = i64::try_from(keep_for.as_millis()).unwrap_or(i64::MAX).max(1);
        // Fail at once without a healthy connection, never retry, time out.
        let options = Options {
            max_attempts: Some(1),
            timeout: Some(self.command_timeout),
            fail_fast: true,
            ..Options::default()
        };
        let pipeline = self.client.pipeline().with_options(&options);
        let increment_and_expire = async {
            // Queuing answers at once; `all` sends both commands in one round trip. The expiry is
            // set on every hit, to the same deadline: the first hit sets it, the others change
            // nothing (and repair a key whose expiry was lost).
            pipeline.incr::<(), _>(&redis_key).await?;
            pipeline.pexpire::<(), _>(&redis_key, keep_for_ms, None).await?;
            pipeline.all::<(u64, i64)>().await
        };
        let result = match tokio::time::timeout(self.command_timeout + REDIS_TIMEOUT_SLACK, increment_and_expire).await
        {
            Ok(Ok((count, _expiry_set))) => Ok(count),
            Ok(Err(err)) => Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>),
            Err(elapsed) => Err(Box::new(elapsed) as Box<dyn std::error::Error + Send + Sync>),
        };
        if result.is_ok() && self.is_down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis answers again; rate limits are counted in redis");
        }
        result
    }

    fn failed(&self, err: &(dyn std::error::Error + 'static)) {
        metrics::counter!("leadorch_rate_limit_fallbacks_total").increment(1);
        if !self.is_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error_chain(err), "redis unreachable; rate limits are counted in process");
        } else {
            tracing::debug!(error = %error_chain(err), "redis still unreachable; rate limit counted in process");
        }
    }
}

/// Returns the time as unix milliseconds; a clock before 1970 counts as the epoch.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::{StatusCode, header};
    use fred::prelude::{Config, ReconnectPolicy};
    use fred::types::Builder;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    const HUNDRED_PER_MINUTE: Limit = Limit { max: 100, window: Duration::from_secs(60) };

    /// The Redis the tests use; `LEADORCH_TEST_REDIS_URL` overrides it (as in `tests/api`).
    fn test_redis_url() -> String {
        std::env::var("LEADORCH_TEST_REDIS_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
    }

    /// Returns a Redis key prefix no other test uses.
    fn unique_redis_prefix() -> String {
        format!("leadorch-test:{}:", uuid::Uuid::new_v4().simple())
    }

    /// A client configured like the catalog cache's: connects in the background, keeps
    /// reconnecting, fails commands at once while it has no connection.
    fn start_client(url: &str, command_timeout: Duration) -> Client {
        let mut config = Config::from_url(url).expect("redis url parses");
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|performance| performance.default_command_timeout = command_timeout)
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(2);
                connection.internal_command_timeout = Duration::from_secs(2);
                connection.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            .build()
            .expect("client builds");
        drop(client.connect());
        client
    }

    /// A client of the test Redis, connected; fails the test when that Redis is unreachable.
    async fn test_redis_client() -> Client {
        let client = start_client(&test_redis_url(), Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(5), client.wait_for_connect())
            .await
            .expect("test redis reachable in time")
            .expect("test redis reachable");
        client
    }

    /// A moment in the middle of a window of [`HUNDRED_PER_MINUTE`].
    fn mid_window_ms() -> u64 {
        let window_ms = HUNDRED_PER_MINUTE.window_ms();
        (unix_millis() / window_ms) * window_ms + window_ms / 2
    }

    /// Waits until a window of `window` has just begun.
    async fn sleep_until_a_window_starts(window: Duration) {
        let window_ms = Limit { max: 0, window }.window_ms();
        let wait_ms = window_ms - unix_millis() % window_ms;
        tokio::time::sleep(Duration::from_millis(wait_ms + 5)).await;
    }

    #[tokio::test]
    async fn in_memory_allows_the_max_then_limits_until_the_window_ends() {
        let limiter = RateLimiter::in_memory(HUNDRED_PER_MINUTE);
        let now_ms = mid_window_ms();

        let mut decisions = Vec::new();
        for _ in 0..101 {
            decisions.push(limiter.check_at("client-a", now_ms).await);
        }

        for (i, decision) in decisions[..100].iter().enumerate() {
            let remaining = 99 - u32::try_from(i).expect("small");
            assert_eq!(*decision, Decision::Allowed { remaining }, "request {}", i + 1);
        }
        assert_eq!(decisions[100], Decision::Limited { retry_after: Duration::from_secs(30) });
        assert_eq!(decisions[100].retry_after_secs(), 30);
    }

    #[tokio::test]
    async fn in_memory_allows_again_when_a_new_window_begins() {
        let window = Duration::from_millis(200);
        let limiter = RateLimiter::in_memory(Limit { max: 100, window });
        sleep_until_a_window_starts(window).await;
        for i in 0..100 {
            assert!(limiter.check("client-a").await.is_allowed(), "request {} of the first window", i + 1);
        }

        let limited = limiter.check("client-a").await;
        let Decision::Limited { retry_after } = limited else {
            panic!("the 101st request of a window is limited, got {limited:?}");
        };
        assert!(retry_after <= window, "retry after {retry_after:?} is within the window");
        assert_eq!(limited.retry_after_secs(), 1);
        tokio::time::sleep(retry_after + Duration::from_millis(5)).await;

        assert_eq!(limiter.check("client-a").await, Decision::Allowed { remaining: 99 });
    }

    #[tokio::test]
    async fn in_memory_counts_each_key_on_its_own() {
        let limiter = RateLimiter::in_memory(Limit { max: 2, window: Duration::from_secs(60) });
        let now_ms = mid_window_ms();
        limiter.check_at("client-a", now_ms).await;
        limiter.check_at("client-a", now_ms).await;

        let a = limiter.check_at("client-a", now_ms).await;
        let b = limiter.check_at("client-b", now_ms).await;

        assert!(!a.is_allowed());
        assert_eq!(b, Decision::Allowed { remaining: 1 });
    }

    #[tokio::test]
    async fn clones_share_their_counts() {
        let limiter = RateLimiter::in_memory(Limit { max: 1, window: Duration::from_secs(60) });
        let clone = limiter.clone();
        let now_ms = mid_window_ms();

        assert!(limiter.check_at("client-a", now_ms).await.is_allowed());

        assert!(!clone.check_at("client-a", now_ms).await.is_allowed());
    }

    #[tokio::test]
    async fn in_memory_prunes_the_counts_of_past_windows() {
        let limiter = RateLimiter::in_memory(HUNDRED_PER_MINUTE);
        let window_ms = HUNDRED_PER_MINUTE.window_ms();
        let earlier_ms = mid_window_ms();
        for i in 0..10 {
            limiter.check_at(&format!("client-{i}"), earlier_ms).await;
        }
        assert_eq!(limiter.inner.memory.len(), 10);

        let later_ms = earlier_ms + window_ms;
        for _ in 0..PRUNE_EVERY {
            limiter.check_at("client-now", later_ms).await;
        }

        assert_eq!(limiter.inner.memory.len(), 1, "only the key of the current window is left");
        assert!(limiter.inner.memory.contains_key("client-now"));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let limited = |millis| Decision::Limited { retry_after: Duration::from_millis(millis) };

        assert_eq!(limited(0).retry_after_secs(), 1);
        assert_eq!(limited(200).retry_after_secs(), 1);
        assert_eq!(limited(1_000).retry_after_secs(), 1);
        assert_eq!(limited(1_001).retry_after_secs(), 2);
        assert_eq!(limited(59_500).retry_after_secs(), 60);
        assert_eq!(Decision::Allowed { remaining: 3 }.retry_after_secs(), 0);
    }

    #[tokio::test]
    async fn too_many_answers_429_with_retry_after_and_a_json_error() {
        let response = too_many(Duration::from_millis(1_500));

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).expect("retry-after"), "2");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json body");
        assert_eq!(body, serde_json::json!({ "error": "too many requests" }));
    }

    #[tokio::test]
    async fn limited_requests_are_counted() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        // The test runs on one thread: the local recorder sees every check.
        let _recorder_guard = metrics::set_default_local_recorder(&recorder);
        let limiter = RateLimiter::in_memory(Limit { max: 1, window: Duration::from_secs(60) });
        let now_ms = mid_window_ms();

        for _ in 0..4 {
            limiter.check_at("client-a", now_ms).await;
        }

        assert!(metrics.render().contains("leadorch_rate_limited_total 3"), "{}", metrics.render());
    }

    #[tokio::test]
    async fn redis_limiters_with_the_same_prefix_share_the_count() {
        let prefix = unique_redis_prefix();
        let node_a =
            RateLimiter::redis(test_redis_client().await, prefix.clone(), Duration::from_secs(2), HUNDRED_PER_MINUTE);
        let node_b = RateLimiter::redis(test_redis_client().await, prefix, Duration::from_secs(2), HUNDRED_PER_MINUTE);
        let now_ms = mid_window_ms();

        for i in 0..60 {
            assert!(node_a.check_at("client-a", now_ms).await.is_allowed(), "request {} on node a", i + 1);
        }
        for i in 60..99 {
            assert!(node_b.check_at("client-a", now_ms).await.is_allowed(), "request {} on node b", i + 1);
        }
        assert_eq!(node_b.check_at("client-a", now_ms).await, Decision::Allowed { remaining: 0 });

        let limited_on_a = node_a.check_at("client-a", now_ms).await;
        let limited_on_b = node_b.check_at("client-a", now_ms).await;
        let other_key = node_a.check_at("client-b", now_ms).await;

        assert_eq!(limited_on_a, Decision::Limited { retry_after: Duration::from_secs(30) });
        assert_eq!(limited_on_b, Decision::Limited { retry_after: Duration::from_secs(30) });
        assert_eq!(other_key, Decision::Allowed { remaining: 99 });
        assert!(node_a.inner.memory.is_empty() && node_b.inner.memory.is_empty(), "redis counted every request");
    }

    #[tokio::test]
    async fn redis_counts_expire_after_their_window() {
        let prefix = unique_redis_prefix();
        let client = test_redis_client().await;
        let limiter = RateLimiter::redis(client.clone(), prefix.clone(), Duration::from_secs(2), HUNDRED_PER_MINUTE);
        let now_ms = mid_window_ms();
        let window_index = now_ms / HUNDRED_PER_MINUTE.window_ms();

        limiter.check_at("client-a", now_ms).await;

        let key = format!("{prefix}rl:client-a:{window_index}");
        let count: u64 = client.get(&key).await.expect("get");
        let expires_in_ms: i64 = client.pttl(&key).await.expect("pttl");
        assert_eq!(count, 1);
        // Half a window left, plus one window of grace.
        assert!((1..=90_000).contains(&expires_in_ms), "the count expires, in {expires_in_ms} ms");
        let _: i64 = client.del(&key).await.expect("del");
    }

    #[tokio::test]
    async fn without_redis_a_limiter_limits_in_process_within_the_command_timeout() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        // The test runs on one thread: the local recorder sees every check.
        let _recorder_guard = metrics::set_default_local_recorder(&recorder);
        let command_timeout = Duration::from_millis(300);
        let unreachable = start_client("redis://127.0.0.1:1", command_timeout);
        let limiter = RateLimiter::redis(
            unreachable,
            unique_redis_prefix(),
            command_timeout,
            Limit { max: 5, window: Duration::from_secs(60) },
        );
        let now_ms = mid_window_ms();

        let mut decisions = Vec::new();
        for _ in 0..6 {
            let started = Instant::now();
            decisions.push(limiter.check_at("client-a", now_ms).await);
            let took = started.elapsed();
            assert!(
                took <= command_timeout + REDIS_TIMEOUT_SLACK + Duration::from_millis(100),
                "a check took {took:?}"
            );
        }

        assert_eq!(decisions[0], Decision::Allowed { remaining: 4 });
        assert_eq!(decisions[4], Decision::Allowed { remaining: 0 });
        assert_eq!(decisions[5], Decision::Limited { retry_after: Duration::from_secs(30) });
        let rendered = metrics.render();
        assert!(rendered.contains("leadorch_rate_limit_fallbacks_total 6"), "{rendered}");
        assert!(rendered.contains("leadorch_rate_limited_total 1"), "{rendered}");
    }
}
