use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::ai::{ChatRole, ChatTurn};

/// A provider that fails its first `fail_first` calls with `error`, then streams `reply`.
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    fail_first: usize,
    error: AiError,
    calls: AtomicUsize,
    break_after_first_delta: bool,
}

impl Scripted {
    fn new(name: &'static str, fail_first: usize, error: AiError) -> Arc<Scripted> {
        Arc::new(Scripted { name, fail_first, error, calls: AtomicUsize::new(0), break_after_first_delta: false })
    }
}

#[async_trait::async_trait]
impl AiProvider for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    fn model(&self) -> &str {
        "test-model"
    }

    async fn stream(&self, _request: &ChatRequest) -> Result<mpsc::Receiver<Result<StreamEvent, AiError>>, AiError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(self.error.clone());
        }
        let (tx, rx) = mpsc::channel(8);
        let broken = self.break_after_first_delta;
        let name = self.name;
        tokio::spawn(async move {
            let _ = tx.send(Ok(StreamEvent::Delta(format!("hello from {name}")))).await;
            if broken {
                let _ = tx.send(Err(AiError::Stream("overloaded_error".into()))).await;
            } else {
                let _ = tx.send(Ok(StreamEvent::Done(Usage { input_tokens: 1_000, output_tokens: 500 }))).await;
            }
        });
        Ok(rx)
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        system: "sys".into(),
        turns: vec![ChatTurn { role: ChatRole::User, content: "hi".into() }],
        max_tokens: 100,
        temperature: 0.3,
        user_id_opt: None,
        grounding_opt: None,
    }
}

async fn collect(mut stream: RoutedStream) -> Vec<Result<StreamEvent, AiError>> {
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event);
    }
    events
}

const PRICE: ModelPrice = ModelPrice { input_per_mtok_micros: 3_000_000, output_per_mtok_micros: 15_000_000 };

#[tokio::test]
async fn a_529_before_the_first_token_fails_over_to_the_next_provider_seamlessly() {
    let a = Scripted::new("anthropic", 1, AiError::Overloaded);
    let b = Scripted::new("openai", 0, AiError::Overloaded);
    let router = ProviderRouter::new(vec![(a.clone(), PRICE), (b.clone(), PRICE)], BreakerPolicy::default());

    let stream = router.stream(&request()).await.expect("routed");

    assert_eq!(stream.provider, "openai");
    let events = collect(stream).await;
    assert_eq!(events[0], Ok(StreamEvent::Delta("hello from openai".into())));
    let health = router.health();
    assert!(health[0].error_rate > 0.0, "the failing provider's errors show");
    assert_eq!(health[1].output_tokens, 500);
}

#[tokio::test]
async fn an_error_after_the_first_token_ends_the_stream_without_failover() {
    let a = Arc::new(Scripted {
        break_after_first_delta: true,
        ..Arc::try_unwrap(Scripted::new("anthropic", 0, AiError::Overloaded)).expect("unique")
    });
    let b = Scripted::new("openai", 0, AiError::Overloaded);
    let router = ProviderRouter::new(vec![(a, PRICE), (b.clone(), PRICE)], BreakerPolicy::default());

    let events = collect(router.stream(&request()).await.expect("routed")).await;

    assert_eq!(events.len(), 2);
    assert!(matches!(events[1], Err(AiError::Stream(_))));
    assert_eq!(b.calls.load(Ordering::SeqCst), 0, "no silent switch mid-reply");
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cool_down() {
    let a = Scripted::new("anthropic", 3, AiError::Unavailable("500".into()));
    let b = Scripted::new("openai", 0, AiError::Overloaded);
    let policy = BreakerPolicy { failures_to_open: 3, cool_down: Duration::from_millis(200) };
    let router = ProviderRouter::new(vec![(a.clone(), PRICE), (b, PRICE)], policy);

    for _ in 0..3 {
        collect(router.stream(&request()).await.expect("fails over")).await;
    }
    assert_eq!(router.health()[0].state, BreakerState::Open);
    collect(router.stream(&request()).await.expect("b")).await;
    assert_eq!(a.calls.load(Ordering::SeqCst), 3, "an open breaker is skipped");

    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(router.health()[0].state, BreakerState::HalfOpen);
    let stream = router.stream(&request()).await.expect("half-open try");
    assert_eq!(stream.provider, "anthropic");
    collect(stream).await;
    assert_eq!(router.health()[0].state, BreakerState::Closed, "a success closes it");
}

#[tokio::test]
async fn a_non_retryable_error_is_returned_without_trying_others() {
    let a = Scripted::new("anthropic", 1, AiError::InvalidRequest("bad".into()));
    let b = Scripted::new("openai", 0, AiError::Overloaded);
    let router = ProviderRouter::new(vec![(a, PRICE), (b.clone(), PRICE)], BreakerPolicy::default());

    let result = router.stream(&request()).await;

    assert!(matches!(result, Err(AiError::InvalidRequest(_))));
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn cost_is_computed_in_micro_dollars_from_per_million_prices() {
    // 1,000 input at $3/Mtok = $0.003; 500 output at $15/Mtok = $0.0075; total 10,500 micros.
    assert_eq!(PRICE.cost_micros(Usage { input_tokens: 1_000, output_tokens: 500 }), 10_500);
    assert_eq!(PRICE.cost_micros(Usage { input_tokens: 1, output_tokens: 0 }), 3);
}
