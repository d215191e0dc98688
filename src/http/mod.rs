//! The HTTP surface (axum): routes per DESIGN.md, shared state, and the layers every request
//! passes (request id, tracing, timeout, body limit, metrics). Handlers stay thin: parse, one
//! call into a store or actor handle, map the result.

mod catalog;
mod chat;
mod error;
mod health;
pub mod metrics;
mod provider_hooks;
pub mod rate_limit;
mod staff;
mod web;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, StatusCode};
use axum::routing::{get, post};
use leadorch_actors::actors::ingress::IngressHandle;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use self::error::ApiError;
use crate::config::Settings;
use crate::store::Store;

/// What every handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub metrics: PrometheusHandle,
    /// Where committed webhook events are announced.
    pub ingress: IngressHandle,
    /// Validates Twilio's webhook signatures.
    pub twilio_auth_token: secrecy::SecretString,
    /// Verifies SendGrid's signed event batches; `None` refuses them.
    pub sendgrid_verifier_opt: Option<std::sync::Arc<crate::messaging::sendgrid_events::EventVerifier>>,
    /// Location catalogs (services and prices) through the cache.
    pub catalog: crate::catalog::CatalogService,
    /// Renders touch previews for staff (the same templates the sends use).
    pub renderer: std::sync::Arc<crate::templates::Templates>,
    /// Verifies customers' magic-link tokens.
    pub links: crate::links::LinkSigner,
    /// The live chat sessions.
    pub chat: leadorch_actors::actors::chat::ChatHub,
    /// Customer chat requests per lead.
    pub chat_limiter: rate_limit::RateLimiter,
    /// Redis as the health route reports it.
    pub redis_health_opt: Option<crate::cache::RedisCatalogCache>,
    /// Turns true when the process starts shutting down: long-lived responses (SSE) end then,
    /// so the graceful drain does not wait on them.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

/// Builds the whole router with its layers.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = state.settings.http.request_timeout;
    let body_limit = state.settings.http.body_limit_bytes;
    Router::new()
        .route("/healthz", get(health::liveness))
        .route("/readyz", get(health::readiness))
        .route("/metrics", get(metrics::scrape))
        .route("/webhooks/shopmonkey/{tenant_id}", post(webhooks::receive_shopmonkey_event))
        .route("/webhooks/twilio/inbound", post(provider_hooks::receive_twilio_inbound))
        .route("/webhooks/twilio/status", post(provider_hooks::receive_twilio_status))
        .route("/webhooks/sendgrid/events", post(provider_hooks::receive_sendgrid_events))
        .merge(staff::router())
        .merge(catalog::router())
        .merge(chat::router())
        .merge(web::router())
        .with_state(state)
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            // The path only: query strings may carry tokens.
            let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
