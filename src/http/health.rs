//! Liveness and readiness: `/healthz` answers while the process runs; `/readyz` answers 200 only
//! when PostgreSQL answers and every migration is applied, and 503 with the reason otherwise,
//! within a bounded time even when the database hangs.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// How long /readyz waits for the database before answering 503.
const READINESS_BUDGET: Duration = Duration::from_millis(1500);

/// GET /healthz
pub(crate) async fn liveness() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// GET /readyz
pub(crate) async fn readiness(State(state): State<AppState>) -> impl IntoResponse {
    let verdict = match tokio::time::timeout(READINESS_BUDGET, state.store.readiness()).await {
        Ok(verdict) => verdict,
        Err(_) => Err(format!("database did not answer within {} ms", READINESS_BUDGET.as_millis())),
    };
    match verdict {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason })))
        }
    }
}
