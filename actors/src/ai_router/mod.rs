//! Provider choice and failover for the chat: providers in configured order, each behind a
//! circuit breaker (opens after consecutive failures, half-opens after a cool-down). A failure
//! before the first token moves on to the next provider seamlessly; after the first token the
//! stream ends with the error (the caller stores the partial reply as such). Per provider it
//! keeps what `/api/health` shows: breaker state, latency to first token (p50/p95), error rate,
//! tokens and cost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::ai::{AiError, AiProvider, ChatRequest, StreamEvent, Usage};

/// Price of a model in micro-dollars per million tokens (so $3.00/Mtok is 3_000_000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ModelPrice {
    pub input_per_mtok_micros: u64,
    pub output_per_mtok_micros: u64,
}

impl ModelPrice {
    /// Returns the cost of `usage` in micro-dollars, rounded up.
    pub fn cost_micros(&self, usage: Usage) -> u64 {
        let input = u64::from(usage.input_tokens) * self.input_per_mtok_micros;
        let output = u64::from(usage.output_tokens) * self.output_per_mtok_micros;
        (input + output).div_ceil(1_000_000)
    }
}

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    pub failures_to_open: u32,
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { failures_to_open: 3, cool_down: Duration::from_secs(30) }
    }
}

/// A breaker's state, as the health route shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Stats {
    consecutive_failures: u32,
    opened_at_opt: Option<Instant>,
    /// Latencies to the first token of recent successes.
    first_token: VecDeque<Duration>,
    /// Recent outcomes (true = success), for the error rate.
    outcomes: VecDeque<bool>,
    usage: Usage,
    cost_micros: u64,
}

const WINDOW: usize = 200;

impl Stats {
    fn new() -> Self {
        Stats {
            consecutive_failures: 0,
            opened_at_opt: None,
            first_token: VecDeque::new(),
            outcomes: VecDeque::new(),
            usage: Usage::default(),
            cost_micros: 0,
        }
    }

    fn push_outcome(&mut self, ok: bool) {
        if self.outcomes.len() == WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(ok);
    }

    fn state(&self, policy: &BreakerPolicy) -> BreakerState {
        match self.opened_at_opt {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() >= policy.cool_down => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

/// One provider's figures for `/api/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderHealth {
    pub name: String,
    pub model: String,
    pub state: BreakerState,
    pub first_token_p50_ms: Option<u64>,
    pub first_token_p95_ms: Option<u64>,
    /// Failures among the recent requests, 0.0..=1.0.
    pub error_rate: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

#[derive(Debug)]
struct Slot {
    provider: Arc<dyn AiProvider>,
    price: ModelPrice,
    stats: Mutex<Stats>,
}

fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The outcome of a routed completion: which provider streams it, and its events through
/// [`RoutedStream::next`], which also records the provider's latency, usage, cost and failures.
/// The events come straight from the provider's reader: no task or channel per stream is added
/// on the way to the customer.
#[derive(Debug)]
pub struct RoutedStream {
    pub provider: String,
    pub model: String,
    pub price: ModelPrice,
    events: mpsc::Receiver<Result<StreamEvent, AiError>>,
    router: ProviderRouter,
    index: usize,
    started: Instant,
    first: bool,
}

impl RoutedStream {
    /// Returns the next event, or `None` at the end of the stream. A stream dropped before its
    /// end stops the provider's reader (and the vendor's billing); its usage is not counted.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, AiError>> {
        let event = self.events.recv().await?;
        match &event {
            Ok(StreamEvent::Delta(_)) if self.first => {
                self.first = false;
                self.router.record_first_token(self.index, self.started.elapsed());
            }
            Ok(StreamEvent::Done(usage)) => self.router.record_success(self.index, *usage),
            Err(_) => self.router.record_failure(self.index),
            Ok(StreamEvent::Delta(_)) => {}
        }
        Some(event)
    }
}

/// Providers in order of preference, with failover and breakers.
#[derive(Debug, Clone)]
pub struct ProviderRouter {
    slots: Arc<Vec<Slot>>,
    policy: BreakerPolicy,
}

impl ProviderRouter {
    /// Creates a router over `(provider, price)` in order of preference.
    pub fn new(providers: Vec<(Arc<dyn AiProvider>, ModelPrice)>, policy: BreakerPolicy) -> Self {
        let slots = providers
            .into_iter()
            .map(|(provider, price)| Slot { provider, price, stats: Mutex::new(Stats::new()) })
            .collect();
        ProviderRouter { slots: Arc::new(slots), policy }
    }

    /// Starts a completion on the first provider that accepts it. Providers with an open
    /// breaker are skipped (a half-open one gets one try).
    ///
    /// # Errors
    /// The last provider's error when every provider failed before its first token.
    pub async fn stream(&self, request: &ChatRequest) -> Result<RoutedStream, AiError> {
        let mut last_err = AiError::Unavailable("no ai provider configured".to_owned());
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if lock(&slot.stats).state(&self.policy) == BreakerState::Open {
                continue;
            }
            let started = Instant::now();
            match slot.provider.stream(request).await {
                Ok(events) => return Ok(self.watch(index, started, events)),
                Err(err) => {
                    tracing::warn!(provider = slot.provider.name(), error = %err, "ai provider failed before streaming");
                    self.record_failure(index);
                    metrics::counter!("leadorch_ai_errors_total", "provider" => slot.provider.name().to_owned())
                        .increment(1);
                    let retryable = err.is_retryable();
                    last_err = err;
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    /// Wraps a provider's events with this router's accounting.
    fn watch(
        &self,
        index: usize,
        started: Instant,
        events: mpsc::Receiver<Result<StreamEvent, AiError>>,
    ) -> RoutedStream {
        let slot = &self.slots[index];
        RoutedStream {
            provider: slot.provider.name().to_owned(),
            model: slot.provider.model().to_owned(),
            price: slot.price,
            events,
            router: self.clone(),
            index,
            started,
            first: true,
        }
    }

    fn record_first_token(&self, index: usize, latency: Duration) {
        let mut stats = lock(&self.slots[index].stats);
        if stats.first_token.len() == WINDOW {
            stats.first_token.pop_front();
        }
        stats.first_token.push_back(latency);
        metrics::histogram!("leadorch_ai_first_token_seconds", "provider" => self.slots[index].provider.name().to_owned())
            .record(latency.as_secs_f64());
    }

    fn record_success(&self, index: usize, usage: Usage) {
        let slot = &self.slots[index];
        let cost = slot.price.cost_micros(usage);
        let mut stats = lock(&slot.stats);
        stats.consecutive_failures = 0;
        stats.opened_at_opt = None;
        stats.push_outcome(true);
        stats.usage.input_tokens = stats.usage.input_tokens.saturating_add(usage.input_tokens);
        stats.usage.output_tokens = stats.usage.output_tokens.saturating_add(usage.output_tokens);
        stats.cost_micros = stats.cost_micros.saturating_add(cost);
        let name = slot.provider.name().to_owned();
        metrics::counter!("leadorch_ai_tokens_total", "provider" => name.clone(), "kind" => "input")
            .increment(u64::from(usage.input_tokens));
        metrics::counter!("leadorch_ai_tokens_total", "provider" => name.clone(), "kind" => "output")
            .increment(u64::from(usage.output_tokens));
        metrics::counter!("leadorch_ai_cost_micros_total", "provider" => name).increment(cost);
    }

    fn record_failure(&self, index: usize) {
        let mut stats = lock(&self.slots[index].stats);
        stats.consecutive_failures += 1;
        stats.push_outcome(false);
        if stats.consecutive_failures >= self.policy.failures_to_open || stats.opened_at_opt.is_some() {
            // A failure while half-open opens the breaker again for a full cool-down.
            stats.opened_at_opt = Some(Instant::now());
        }
    }

    /// Returns every provider's figures.
    pub fn health(&self) -> Vec<ProviderHealth> {
        self.slots
            .iter()
            .map(|slot| {
                let stats = lock(&slot.stats);
                let mut latencies: Vec<Duration> = stats.first_token.iter().copied().collect();
                latencies.sort_unstable();
                let percentile = |p: f64| {
                    (!latencies.is_empty()).then(|| {
                        let at = ((latencies.len() - 1) as f64 * p).round() as usize;
                        u64::try_from(latencies[at].as_millis()).unwrap_or(u64::MAX)
                    })
                };
                let failures = stats.outcomes.iter().filter(|ok| !**ok).count();
                ProviderHealth {
                    name: slot.provider.name().to_owned(),
                    model: slot.provider.model().to_owned(),
                    state: stats.state(&self.policy),
                    first_token_p50_ms: percentile(0.5),
                    first_token_p95_ms: percentile(0.95),
                    error_rate: if stats.outcomes.is_empty() {
                        0.0
                    } else {
                        failures as f64 / stats.outcomes.len() as f64
                    },
                    input_tokens: u64::from(stats.usage.input_tokens),
                    output_tokens: u64::from(stats.usage.output_tokens),
                    cost_micros: stats.cost_micros,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
