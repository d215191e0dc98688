//! The customer chat API (DESIGN.md "HTTP contract"): send a message, stream the conversation
//! over SSE, read its history; and `GET /api/health` with the AI providers' state and cost.
//!
//! Customer routes take the lead's magic-link token as `Authorization: Bearer <token>` or, for
//! EventSource which cannot set headers, `?token=<token>`: a missing, forged or expired token is
//! 401; a valid token of another lead is 403. Each lead gets `ai.rate_limit_per_minute`
//! requests a minute across the three routes (Redis-backed, so the limit holds across nodes)
//! and then 429 with `Retry-After`. A message longer than `ai.max_message_chars` is 413.
//!
//! SSE events: `user` (a customer message, from any tab), `delta` `{"message_id","text"}`,
//! `done` `{"message_id","provider","model","usage","cost_micros","slots"}`, `error`
//! `{"message"}`, `booked` `{"appointment"}`, and `reset` (reload the history: the session
//! restarted or the `Last-Event-ID` is older than its backlog). Every event has an id; a
//! reconnect with `Last-Event-ID` (or `?last_event_id=`) resumes right after it.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use jiff::Timestamp;
use leadorch_actors::actors::chat::{ChatError, ChatEvent, CustomerMessage, Subscription};
use leadorch_actors::domain::{LeadId, LocationId, TenantId};
use leadorch_actors::inbound::{InboundIntent, classify};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::rate_limit::Decision;
use super::{ApiError, AppState};
use crate::links::{LinkClaims, LinkError};

const HEARTBEAT: Duration = Duration::from_secs(15);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat/{lead_id}", post(send_message))
        .route("/api/chat/{lead_id}/stream", get(stream))
        .route("/api/chat/{lead_id}/history", get(history))
        .route("/api/health", get(api_health))
}

/// A customer authenticated by their lead's link token, and within the rate limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Customer {
    pub(crate) tenant_id: TenantId,
    pub(crate) lead_id: LeadId,
    pub(crate) location_id: LocationId,
}

fn token_of(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(key, value)| (key == "token" && !value.is_empty()).then_some(value))
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let path_lead = parts
            .uri
            .path()
            .strip_prefix("/api/chat/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|id| id.parse::<Uuid>().ok())
            .map(LeadId::from_uuid)
            .ok_or(ApiError::NotFound)?;
        let token = token_of(parts).ok_or(ApiError::Unauthorized)?;
        let claims = verify_link(state, &token).await.map_err(|denied| match denied {
            LinkDenied::Store(err) => ApiError::from(err),
            _ => ApiError::Unauthorized,
        })?;
        if claims.lead_id != path_lead {
            return Err(ApiError::Forbidden);
        }
        if let Decision::Limited { retry_after } = state.chat_limiter.check(&claims.lead_id.to_string()).await {
            return Err(ApiError::RateLimited { retry_after_secs: retry_after.as_secs().max(1) });
        }
        let lead = state.store.leads.get(claims.tenant_id, claims.lead_id).await?;
        Ok(Customer { tenant_id: claims.tenant_id, lead_id: claims.lead_id, location_id: lead.location_id })
    }
}

/// Why a magic link does not open its chat.
#[derive(Debug)]
pub(crate) enum LinkDenied {
    Expired,
    Invalid,
    /// Staff revoked the lead's links after this one was issued.
    Revoked,
    Store(leadorch_actors::ports::StoreError),
}

/// Checks a link token: signature, expiry, and that staff have not revoked it since it was
/// issued (the lead's `links_revoked_at`). The one check behind the chat page and the API.
pub(crate) async fn verify_link(state: &AppState, token: &str) -> Result<LinkClaims, LinkDenied> {
    let claims = state.links.verify(token, Timestamp::now()).map_err(|err| {
        let reason = match err {
            LinkError::Expired => "expired",
            LinkError::BadSignature => "bad_signature",
            LinkError::Malformed => "malformed",
        };
        metrics::counter!("leadorch_chat_auth_failures_total", "reason" => reason).increment(1);
        if err == LinkError::Expired { LinkDenied::Expired } else { LinkDenied::Invalid }
    })?;
    match state.store.leads.links_revoked_at(claims.tenant_id, claims.lead_id).await {
        Ok(Some(revoked_at)) if state.links.issued_at(&claims) <= revoked_at => {
            metrics::counter!("leadorch_chat_auth_failures_total", "reason" => "revoked").increment(1);
            Err(LinkDenied::Revoked)
        }
        Ok(_) => Ok(claims),
        Err(leadorch_actors::ports::StoreError::NotFound) => Err(LinkDenied::Invalid),
        Err(err) => Err(LinkDenied::Store(err)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    message: String,
    /// The id of an offered slot the customer tapped.
    #[serde(default)]
    slot: Option<String>,
}

#[derive(Debug, Serialize)]
struct Accepted {
    message_id: Uuid,
}

fn chat_error(err: ChatError) -> ApiError {
    match err {
        ChatError::Busy => ApiError::RateLimited { retry_after_secs: 5 },
        ChatError::NotFound => ApiError::NotFound,
        ChatError::Store(message) => ApiError::Unavailable(message.into()),
        ChatError::Unavailable => ApiError::Unavailable("the chat session did not answer".into()),
    }
}

async fn send_message(State(state): State<AppState>, customer: Customer, body: Bytes) -> Result<Response, ApiError> {
    let body: SendBody =
        serde_json::from_slice(&body).map_err(|err| ApiError::BadRequest(format!("invalid JSON body: {err}")))?;
    let text = body.message.trim();
    if text.is_empty() {
        return Err(ApiError::Unprocessable("message must not be empty".to_owned()));
    }
    if text.chars().count() > state.settings.ai.max_message_chars {
        return Err(ApiError::PayloadTooLarge);
    }
    let slot_opt = match body.slot.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(slot) => Some(
            slot.parse::<Timestamp>()
                .map_err(|_| ApiError::Unprocessable("slot must be the id of an offered time".to_owned()))?,
        ),
        None => None,
    };
    if let InboundIntent::OptOut(_) = classify(text, None) {
        let message_id = opt_out(&state, customer, text).await?;
        return Ok((StatusCode::ACCEPTED, Json(Accepted { message_id })).into_response());
    }
    let message = CustomerMessage { text: text.to_owned(), slot_opt };
    let message_id = state
        .chat
        .send(customer.tenant_id, customer.lead_id, customer.location_id, message)
        .await
        .map_err(chat_error)?;
    metrics::counter!("leadorch_chat_messages_total").increment(1);
    Ok((StatusCode::ACCEPTED, Json(Accepted { message_id })).into_response())
}

/// A customer who writes STOP in the chat is opted out everywhere, like an SMS STOP, and gets
/// a confirmation instead of a model's answer.
async fn opt_out(state: &AppState, customer: Customer, text: &str) -> Result<Uuid, ApiError> {
    let stored = state.store.chat.append_customer_message(customer.tenant_id, customer.lead_id, text).await?;
    let lead = state.store.leads.get(customer.tenant_id, customer.lead_id).await?;
    match &lead.phone_opt {
        Some(phone) => {
            crate::outcomes::opt_out_phone(&state.store, customer.tenant_id, phone, "chat").await?;
        }
        None => {
            state
                .store
                .leads
                .stop_with(customer.tenant_id, customer.lead_id, leadorch_actors::domain::LeadStatus::OptedOut)
                .await?;
            state.store.touchpoints.cancel_pending(customer.tenant_id, customer.lead_id, "customer opted out").await?;
        }
    }
    if let Some(email) = &lead.email_opt {
        crate::outcomes::stop_email(&state.store, customer.tenant_id, email, "chat").await?;
    }
    state
        .store
        .chat
        .append_assistant(
            customer.tenant_id,
            customer.lead_id,
            "You're unsubscribed: we won't text or email you again. You can still chat here any time.",
        )
        .await?;
    Ok(stored.id)
}

fn last_event_id(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
        return Some(id.to_owned());
    }
    serde_urlencoded::from_str::<Vec<(String, String)>>(uri.query()?)
        .ok()?
        .into_iter()
        .find_map(|(key, value)| (key == "last_event_id" && !value.is_empty()).then_some(value))
}

fn sse_event(event: &ChatEvent) -> Event {
    let data = serde_json::to_value(&event.kind).ok().and_then(|mut v| v.get_mut("data").map(serde_json::Value::take));
    let data = data.map(|d| d.to_string()).unwrap_or_else(|| "{}".to_owned());
    Event::default().id(event.id.clone()).event(event.kind.name()).data(data)
}

struct StreamState {
    state: AppState,
    customer: Customer,
    pending: std::collections::VecDeque<Event>,
    subscription: Subscription,
    last_id_opt: Option<String>,
    done: bool,
    shutting_down: tokio::sync::watch::Receiver<bool>,
}

async fn stream(
    State(state): State<AppState>,
    customer: Customer,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after_opt = last_event_id(&headers, &uri);
    let subscription = state
        .chat
        .subscribe(customer.tenant_id, customer.lead_id, customer.location_id, after_opt.clone())
        .await
        .map_err(chat_error)?;
    metrics::gauge!("leadorch_chat_streams").increment(1.0);
    let mut pending = std::collections::VecDeque::new();
    if subscription.reset {
        pending.push_back(Event::default().event("reset").data("{}"));
    }
    let mut last_id_opt = after_opt;
    for event in &subscription.backlog {
        pending.push_back(sse_event(event));
        last_id_opt = Some(event.id.clone());
    }
    let shutting_down = state.shutting_down.clone();
    let start = StreamState { state, customer, pending, subscription, last_id_opt, done: false, shutting_down };
    let events = futures::stream::unfold(start, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.done {
                metrics::gauge!("leadorch_chat_streams").decrement(1.0);
                return None;
            }
            if *s.shutting_down.borrow() {
                s.done = true;
                continue;
            }
            let received = tokio::select! {
                received = s.subscription.live.recv() => received,
                // Shutting down (or the process is going away): end the stream; the page's
                // EventSource reconnects to a running node and resumes from its last id.
                _ = s.shutting_down.changed() => {
                    s.done = true;
                    continue;
                }
            };
            match received {
                Ok(event) => {
                    s.last_id_opt = Some(event.id.clone());
                    return Some((Ok(sse_event(&event)), s));
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the live feed: pick up again from the last event sent.
                    let c = s.customer;
                    match s.state.chat.subscribe(c.tenant_id, c.lead_id, c.location_id, s.last_id_opt.clone()).await {
                        Ok(fresh) => {
                            if fresh.reset {
                                s.pending.push_back(Event::default().event("reset").data("{}"));
                            }
                            for event in &fresh.backlog {
                                s.pending.push_back(sse_event(event));
                                s.last_id_opt = Some(event.id.clone());
                            }
                            s.subscription = fresh;
                        }
                        Err(_) => s.done = true,
                    }
                }
                // The session stopped: the client reconnects (EventSource does) and resumes.
                Err(RecvError::Closed) => s.done = true,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

#[derive(Debug, Serialize)]
struct HistoryBody {
    lead_id: LeadId,
    location: LocationSummary,
    messages: Vec<crate::store::ChatMessage>,
}

#[derive(Debug, Serialize)]
struct LocationSummary {
    name: String,
    phone: Option<String>,
}

async fn history(State(state): State<AppState>, customer: Customer) -> Result<Json<HistoryBody>, ApiError> {
    let messages = state.store.chat.history(customer.tenant_id, customer.lead_id).await?;
    let location = state.store.locations.get(customer.tenant_id, customer.location_id).await?;
    Ok(Json(HistoryBody {
        lead_id: customer.lead_id,
        location: LocationSummary { name: location.name, phone: location.phone_opt.map(|p| p.as_str().to_owned()) },
        messages,
    }))
}

#[derive(Debug, Serialize)]
struct ApiHealth {
    status: &'static str,
    database: &'static str,
    redis: &'static str,
    ai: Vec<leadorch_actors::ai_router::ProviderHealth>,
    chat_sessions: usize,
}

async fn api_health(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(Duration::from_millis(1500), state.store.pool.get()).await {
        Ok(Ok(client)) => match client.simple_query("SELECT 1").await {
            Ok(_) => "up",
            Err(_) => "down",
        },
        _ => "down",
    };
    let redis = match &state.redis_health_opt {
        None => "not_configured",
        Some(redis) if redis.is_connected() => "up",
        Some(_) => "down",
    };
    let body = ApiHealth {
        status: if database == "up" { "ok" } else { "degraded" },
        database,
        redis,
        ai: state.chat.deps().router.health(),
        chat_sessions: state.chat.live_sessions(),
    };
    let status = if database == "up" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
