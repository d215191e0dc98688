//! Prometheus exposition: one process-wide registry (the `metrics` facade with the Prometheus
//! exporter), HTTP request counts and latencies by route and status, process figures, and the
//! database pool's state sampled at scrape time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle. Several apps in one
/// process (tests) share it.
pub fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
                .and_then(|builder| builder.install_recorder());
            match handle {
                Ok(handle) => handle,
                // Another recorder is installed (a test harness): keep a detached one so /metrics works.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Actor kinds, as the `kind` label of the actor families.
const ACTOR_KINDS: [&str; 6] = ["location", "lead", "chat", "ingress", "poller", "scheduler"];

/// Describes every family an operator's dashboards and alerts use, and registers at zero the
/// series that otherwise appear only after their first event (a restart, a passivation), so
/// that a query or an alert over them works from the first scrape. Idempotent; zero increments
/// never change a value another app in the process recorded.
pub fn announce() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("leadorch_actors_alive", "Actors running, by kind.");
    describe_counter!("leadorch_actor_activations_total", "Actors started on demand (lead, chat), by kind.");
    describe_counter!("leadorch_actor_passivations_total", "Idle actors stopped, by kind.");
    describe_gauge!("leadorch_mailbox_depth", "Work waiting in an actor, by kind.");
    describe_histogram!(
        "leadorch_actor_message_seconds",
        Unit::Seconds,
        "Time an actor spends on one message, by kind."
    );
    describe_counter!("leadorch_supervisor_restarts_total", "Actors restarted after a failure, by kind.");
    describe_counter!("leadorch_webhooks_total", "CRM webhooks received, by source and outcome.");
    describe_gauge!(
        "leadorch_inbox_lag_seconds",
        Unit::Seconds,
        "Age of the oldest unprocessed inbox event at the last sweep."
    );
    describe_histogram!("leadorch_inbox_batch_size", "Inbox events committed per group commit.");
    describe_histogram!(
        "leadorch_speed_to_lead_seconds",
        Unit::Seconds,
        "From a lead's arrival to its first touch leaving."
    );
    describe_counter!("leadorch_touches_total", "Touches by channel and status.");
    describe_histogram!(
        "leadorch_scheduler_lag_seconds",
        Unit::Seconds,
        "Send time minus scheduled time of each touch."
    );
    describe_counter!("leadorch_catalog_reads_total", "Catalog reads by cache layer and result.");
    describe_counter!("leadorch_ai_tokens_total", "Model tokens by provider and direction.");
    describe_counter!("leadorch_ai_cost_micros_total", "Model cost in micro-dollars, by provider.");
    describe_histogram!(
        "leadorch_ai_first_token_seconds",
        Unit::Seconds,
        "Time to a reply's first token, by provider."
    );
    describe_counter!("leadorch_ai_errors_total", "Model calls that failed, by provider and kind.");
    describe_gauge!("leadorch_db_pool_connections", "Database connections by state (in_use, idle).");
    describe_gauge!("leadorch_db_pool_waiting", "Requests waiting for a database connection.");
    describe_counter!("leadorch_http_requests_total", "HTTP requests by route and status.");
    describe_histogram!("leadorch_http_request_duration_seconds", Unit::Seconds, "HTTP request time by route.");
    for kind in ACTOR_KINDS {
        metrics::gauge!("leadorch_actors_alive", "kind" => kind).increment(0.0);
        metrics::gauge!("leadorch_mailbox_depth", "kind" => kind).increment(0.0);
        metrics::counter!("leadorch_supervisor_restarts_total", "kind" => kind).increment(0);
    }
    for kind in ["lead", "chat"] {
        metrics::counter!("leadorch_actor_activations_total", "kind" => kind).increment(0);
        metrics::counter!("leadorch_actor_passivations_total", "kind" => kind).increment(0);
    }
}

/// GET /metrics
pub(crate) async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let collector = PROCESS.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    });
    collector.collect();
    let status = state.store.pool.status();
    let in_use = status.size.saturating_sub(status.available);
    metrics::gauge!("leadorch_db_pool_connections", "state" => "in_use").set(in_use as f64);
    metrics::gauge!("leadorch_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("leadorch_db_pool_max_connections").set(status.max_size as f64);
    metrics::gauge!("leadorch_db_pool_waiting").set(status.waiting as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Middleware: counts every request and times it, by matched route (never the raw path, which
/// would carry ids and explode the label space) and status.
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("leadorch_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("leadorch_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
