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
