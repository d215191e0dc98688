//! CRM webhooks. `POST /webhooks/shopmonkey/{tenant_id}`: verify the signature on the raw
//! bytes, parse, commit the raw event to the inbox, then answer 202 — only after the commit —
//! and tell the ingress. A redelivery is answered 202 and writes nothing. The handler makes no
//! CRM call: the ingress does that work after the answer.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use jiff::Timestamp;
use leadorch_actors::domain::{InboxInsert, TenantId};
use leadorch_actors::ports::StoreError;
use serde_json::json;

use super::{ApiError, AppState};
use crate::crm::shopmonkey::events::event_key;
use crate::crm::shopmonkey::signature;

const SOURCE: &str = "shopmonkey";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn count(outcome: &'static str) {
    metrics::counter!("leadorch_webhooks_total", "source" => SOURCE, "outcome" => outcome).increment(1);
}

/// POST /webhooks/shopmonkey/{tenant_id}
pub(crate) async fn receive_shopmonkey_event(
    State(state): State<AppState>,
    Path(tenant_raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let received_at = Timestamp::now();
    let Ok(tenant_id) = tenant_raw.parse::<TenantId>() else {
        count("unknown_tenant");
        return Err(ApiError::NotFound);
    };
    let secret = match state.store.tenants.webhook_secret(tenant_id).await {
        Ok(secret) => secret,
        Err(StoreError::NotFound) => {
            count("unknown_tenant");
            return Err(ApiError::NotFound);
        }
        Err(err) => {
            count("unavailable");
            return Err(err.into());
        }
    };
    let verified = signature::verify(
        &secret,
        header(&headers, "webhook-id"),
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
        &body,
        received_at.as_second(),
    );
    if let Err(reason) = verified {
        // The reason is about headers and clocks, never the secret.
        tracing::warn!(%tenant_id, %reason, "webhook signature refused");
        count("bad_signature");
        return Err(ApiError::Unauthorized);
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(payload @ serde_json::Value::Object(_)) => payload,
        Ok(_) => {
            count("malformed");
            return Err(ApiError::BadRequest("body must be a json object".to_owned()));
        }
        Err(err) => {
            count("malformed");
            return Err(ApiError::BadRequest(format!("body is not valid json: {err}")));
        }
    };
    let Some(event_id) = event_key(&payload, header(&headers, "x-request-id"), header(&headers, "webhook-id")) else {
        count("malformed");
        return Err(ApiError::BadRequest(
            "no event id: need data.id with data.meta.version, or X-Request-Id".to_owned(),
        ));
    };
    // The body is stored as it arrived (it parsed as a JSON object above).
    drop(payload);
    match state.store.inbox.insert_raw(tenant_id, SOURCE, &event_id, body, received_at).await {
        Ok(InboxInsert::Inserted(id)) => {
            count("accepted");
            // The event is durable; if the ingress is busy or absent, its sweep finds the row.
            state.ingress.event_committed(tenant_id, id);
            Ok((StatusCode::ACCEPTED, Json(json!({ "status": "accepted", "event_id": event_id }))))
        }
        Ok(InboxInsert::Duplicate) => {
            count("duplicate");
            Ok((StatusCode::ACCEPTED, Json(json!({ "status": "duplicate", "event_id": event_id }))))
        }
        Err(StoreError::Conflict { .. }) => {
            count("unknown_tenant");
            Err(ApiError::NotFound)
        }
        Err(err) => {
            count("unavailable");
            Err(err.into())
        }
    }
}
