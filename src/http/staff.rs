//! The staff API: a tenant's leads with their timelines, and the staff actions on one lead
//! (pause, resume, close). Every route authenticates an API key sent as
//! `Authorization: Bearer <key>` and sees only that key's tenant: another tenant's lead is
//! answered 404, exactly like an unknown one. Handlers call the store ports directly; waking the
//! lead's actor after a staff action is left to the actor layer.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use jiff::Timestamp;
use leadorch_actors::domain::{
    Channel, Lead, LeadId, LeadStatus, LocationId, Touchpoint, TouchpointId, TouchpointStatus,
};
use leadorch_actors::ports::TouchRenderer;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::store::StaffKey;

/// How many leads a page holds when the client does not say.
const DEFAULT_PAGE_SIZE: i64 = 50;
/// The largest page a client may ask for.
const MAX_PAGE_SIZE: i64 = 500;

/// Statuses a lead can be paused from: only a cadence that may still send is worth pausing.
const PAUSABLE: [LeadStatus; 2] = [LeadStatus::New, LeadStatus::InCadence];
/// Statuses a lead can be resumed from.
const RESUMABLE: [LeadStatus; 1] = [LeadStatus::Paused];
/// Statuses a lead can be closed from: every non-terminal one, and `closed` itself, so a retried
/// close answers 200 and cancels again any touch a failed first attempt left pending.
const CLOSABLE: [LeadStatus; 4] = [LeadStatus::New, LeadStatus::InCadence, LeadStatus::Paused, LeadStatus::Closed];

/// The reason recorded on touches cancelled by a staff close.
const CLOSE_REASON: &str = "closed by staff";

/// Builds the staff routes; the caller adds the state and the layers.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/leads", get(list_leads))
        .route("/api/leads/{id}", get(get_lead))
        .route("/api/leads/{id}/pause", post(pause_lead))
        .route("/api/leads/{id}/resume", post(resume_lead))
        .route("/api/leads/{id}/close", post(close_lead))
        .route("/api/leads/{id}/chat", get(lead_chat))
        .route("/api/leads/{id}/revoke-links", post(revoke_links))
        .route("/api/locations", get(list_locations))
}

/// The staff key a request authenticated with. Extracting it answers 401 (with
/// `WWW-Authenticate: Bearer`) for a missing, malformed, unknown or revoked key, and 503 when the
/// key store is unavailable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StaffAuth(pub(crate) StaffKey);

impl FromRequestParts<AppState> for StaffAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(presented) = bearer_token(&parts.headers) else {
            return Err(ApiError::Unauthorized);
        };
        match state.store.api_keys.authenticate(presented).await? {
            Some(key) => Ok(StaffAuth(key)),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, per RFC 9110), or `None` when there is no such header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The raw query of `GET /api/leads`; every value is parsed by hand so a bad one is answered 400
/// with the parameter's name.
#[derive(Debug, Deserialize)]
struct ListLeadsQuery {
    location: Option<String>,
    status: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// The parsed filter of `GET /api/leads`.
#[derive(Debug)]
struct LeadFilter {
    location_opt: Option<LocationId>,
    status_opt: Option<LeadStatus>,
    since_opt: Option<Timestamp>,
    before_opt: Option<Timestamp>,
    limit: i64,
}

impl ListLeadsQuery {
    fn parse(self) -> Result<LeadFilter, ApiError> {
        let location_opt = self
            .location
            .map(|raw| raw.parse::<LocationId>().map_err(|_| bad_param("location", "must be a location id (uuid)")))
            .transpose()?;
        let status_opt = self
            .status
            .map(|raw| {
                LeadStatus::parse(&raw).ok_or_else(|| {
                    let known: Vec<&str> = LeadStatus::ALL.into_iter().map(LeadStatus::as_str).collect();
                    bad_param("status", &format!("must be one of {}", known.join(", ")))
                })
            })
            .transpose()?;
        let since_opt = self.since.map(|raw| parse_timestamp("since", &raw)).transpose()?;
        let before_opt = self.before.map(|raw| parse_timestamp("before", &raw)).transpose()?;
        let limit = match self.limit {
            None => DEFAULT_PAGE_SIZE,
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
                .ok_or_else(|| bad_param("limit", &format!("must be an integer from 1 to {MAX_PAGE_SIZE}")))?,
        };
        Ok(LeadFilter { location_opt, status_opt, since_opt, before_opt, limit })
    }
}

fn parse_timestamp(name: &str, raw: &str) -> Result<Timestamp, ApiError> {
    raw.parse::<Timestamp>().map_err(|_| bad_param(name, "must be an RFC 3339 timestamp, e.g. 2026-01-31T17:00:00Z"))
}

fn bad_param(name: &str, problem: &str) -> ApiError {
    ApiError::BadRequest(format!("invalid query parameter {name}: {problem}"))
}

/// Parses a lead id from the path; anything that is not one is a lead that does not exist.
fn parse_lead_id(raw: &str) -> Result<LeadId, ApiError> {
    raw.parse::<LeadId>().map_err(|_| ApiError::NotFound)
}

/// How long the first touch took after the lead arrived; `None` until the first touch.
fn speed_to_lead_ms(lead: &Lead) -> Option<i64> {
    let first_touch_at = lead.first_touch_at_opt?;
    i64::try_from(first_touch_at.duration_since(lead.received_at).as_millis()).ok()
}

/// One lead in a list, with its contact details redacted.
#[derive(Debug, Serialize)]
struct LeadSummary {
    id: LeadId,
    location_id: LocationId,
    status: LeadStatus,
    #[serde(rename = "first_name")]
    first_name_opt: Option<String>,
    /// "2021 Toyota Camry"-style text.
    #[serde(rename = "vehicle")]
    vehicle_opt: Option<String>,
    /// Redacted ("+1512*****42"): a list travels further than a single lead's page.
    #[serde(rename = "phone")]
    phone_opt: Option<String>,
    /// Redacted ("p***@example.com").
    #[serde(rename = "email")]
    email_opt: Option<String>,
    received_at: Timestamp,
    #[serde(rename = "first_touch_at")]
    first_touch_at_opt: Option<Timestamp>,
    #[serde(rename = "speed_to_lead_ms")]
    speed_to_lead_ms_opt: Option<i64>,
    created_at: Timestamp,
}

impl From<&Lead> for LeadSummary {
    fn from(lead: &Lead) -> Self {
        LeadSummary {
            id: lead.id,
            location_id: lead.location_id,
            status: lead.status,
            first_name_opt: lead.first_name_opt.clone(),
            vehicle_opt: lead.vehicle_opt.as_ref().and_then(|v| v.describe()),
            phone_opt: lead.phone_opt.as_ref().map(|p| p.redacted()),
            email_opt: lead.email_opt.as_ref().map(|e| e.redacted()),
            received_at: lead.received_at,
            first_touch_at_opt: lead.first_touch_at_opt,
            speed_to_lead_ms_opt: speed_to_lead_ms(lead),
            created_at: lead.created_at,
        }
    }
}

/// A page of leads, newest first.
#[derive(Debug, Serialize)]
struct LeadPage {
    leads: Vec<LeadSummary>,
    /// The `before` that fetches the next page: the last lead's `created_at` when the page is
    /// full, `null` when this page is the last.
    #[serde(rename = "next_before")]
    next_before_opt: Option<Timestamp>,
}

impl LeadPage {
    fn new(leads: &[Lead], limit: i64) -> Self {
        let is_full = i64::try_from(leads.len()).is_ok_and(|len| len >= limit);
        let next_before_opt = if is_full { leads.last().map(|lead| lead.created_at) } else { None };
        LeadPage { leads: leads.iter().map(LeadSummary::from).collect(), next_before_opt }
    }
}

/// One lead with full contact details and its timeline, for staff working that lead.
#[derive(Debug, Serialize)]
struct LeadDetail {
    id: LeadId,
    location_id: LocationId,
    status: LeadStatus,
    crm_source: String,
    crm_order_id: String,
    #[serde(rename = "crm_customer_id")]
    crm_customer_id_opt: Option<String>,
    #[serde(rename = "first_name")]
    first_name_opt: Option<String>,
    #[serde(rename = "last_name")]
    last_name_opt: Option<String>,
    /// E.164.
    #[serde(rename = "phone")]
    phone_opt: Option<String>,
    #[serde(rename = "email")]
    email_opt: Option<String>,
    #[serde(rename = "vehicle")]
    vehicle_opt: Option<String>,
    requested_services: Vec<String>,
    #[serde(rename = "cadence_name")]
    cadence_name_opt: Option<String>,
    #[serde(rename = "cadence_version")]
    cadence_version_opt: Option<i32>,
    received_at: Timestamp,
    #[serde(rename = "first_touch_at")]
    first_touch_at_opt: Option<Timestamp>,
    #[serde(rename = "speed_to_lead_ms")]
    speed_to_lead_ms_opt: Option<i64>,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// Every planned touch, in step order.
    timeline: Vec<TimelineEntry>,
}

impl LeadDetail {
    fn new(lead: Lead, touchpoints: Vec<Touchpoint>, previews: Vec<Option<String>>) -> Self {
        let speed_to_lead_ms_opt = speed_to_lead_ms(&lead);
        let timeline = touchpoints
            .into_iter()
            .zip(previews.into_iter().chain(std::iter::repeat(None)))
            .map(|(touch, preview)| TimelineEntry { preview, ..TimelineEntry::from(touch) })
            .collect();
        LeadDetail {
            id: lead.id,
            location_id: lead.location_id,
            status: lead.status,
            crm_source: lead.crm_source,
            crm_order_id: lead.crm_order_id,
            crm_customer_id_opt: lead.crm_customer_id_opt,
            first_name_opt: lead.first_name_opt,
            last_name_opt: lead.last_name_opt,
            phone_opt: lead.phone_opt.map(|p| p.as_str().to_owned()),
            email_opt: lead.email_opt.map(|e| e.as_str().to_owned()),
            vehicle_opt: lead.vehicle_opt.and_then(|v| v.describe()),
            requested_services: lead.requested_services,
            cadence_name_opt: lead.cadence_name_opt,
            cadence_version_opt: lead.cadence_version_opt,
            received_at: lead.received_at,
            first_touch_at_opt: lead.first_touch_at_opt,
            speed_to_lead_ms_opt,
            created_at: lead.created_at,
            updated_at: lead.updated_at,
            timeline,
        }
    }
}

/// One touch of a lead's timeline. The attempt id (the provider idempotency key) stays internal.
#[derive(Debug, Serialize)]
struct TimelineEntry {
    id: TouchpointId,
    step_index: u32,
    channel: Channel,
    template: String,
    status: TouchpointStatus,
    intended_at: Timestamp,
    scheduled_at: Timestamp,
    #[serde(rename = "placement_reason")]
    placement_reason_opt: Option<String>,
    attempts: u32,
    #[serde(rename = "provider_message_id")]
    provider_message_id_opt: Option<String>,
    #[serde(rename = "provider_status")]
    provider_status_opt: Option<String>,
    #[serde(rename = "last_error")]
    last_error_opt: Option<String>,
    #[serde(rename = "sent_at")]
    sent_at_opt: Option<Timestamp>,
    /// The message as it was (or will be) sent: rendering is deterministic for a touch.
    preview: Option<String>,
}

impl From<Touchpoint> for TimelineEntry {
    fn from(touch: Touchpoint) -> Self {
        TimelineEntry {
            id: touch.id,
            step_index: touch.step_index,
            channel: touch.channel,
            template: touch.template,
            status: touch.status,
            intended_at: touch.intended_at,
            scheduled_at: touch.scheduled_at,
            placement_reason_opt: touch.placement_reason_opt,
            attempts: touch.attempts,
            provider_message_id_opt: touch.provider_message_id_opt,
            provider_status_opt: touch.provider_status_opt,
            last_error_opt: touch.last_error_opt,
            sent_at_opt: touch.sent_at_opt,
            preview: None,
        }
    }
}

/// GET /api/leads?location=&status=&since=&before=&limit=
async fn list_leads(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    query: Result<Query<ListLeadsQuery>, QueryRejection>,
) -> Result<Json<LeadPage>, ApiError> {
    let Query(raw) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let filter = raw.parse()?;
    let leads = state
        .store
        .leads
        .list(key.tenant_id, filter.location_opt, filter.status_opt, filter.since_opt, filter.before_opt, filter.limit)
        .await?;
    Ok(Json(LeadPage::new(&leads, filter.limit)))
}

/// GET /api/leads/{id}
async fn get_lead(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<LeadDetail>, ApiError> {
    let lead_id = parse_lead_id(&raw_id)?;
    let lead = state.store.leads.get(key.tenant_id, lead_id).await?;
    let touchpoints = state.store.touchpoints.for_lead(key.tenant_id, lead_id).await?;
    let location = state.store.locations.get(key.tenant_id, lead.location_id).await?;
    let previews = touchpoints
        .iter()
        .map(|touch| match touch.channel {
            Channel::Sms => state.renderer.render_sms(&touch.template, &lead, &location, touch.intended_at).ok(),
            Channel::Email => state
                .renderer
                .render_email(&touch.template, &lead, &location, touch.intended_at)
                .ok()
                .map(|email| format!("Subject: {}\n\n{}", email.subject, email.text)),
        })
        .collect();
    Ok(Json(LeadDetail::new(lead, touchpoints, previews)))
}

#[derive(Debug, Serialize)]
struct LocationList {
    locations: Vec<LocationItem>,
}

#[derive(Debug, Serialize)]
struct LocationItem {
    id: LocationId,
    name: String,
    timezone: String,
    phone: Option<String>,
    active: bool,
}

/// GET /api/locations: the key's tenant's locations.
async fn list_locations(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
) -> Result<Json<LocationList>, ApiError> {
    let locations = state.store.locations.list(key.tenant_id).await?;
    Ok(Json(LocationList {
        locations: locations
            .into_iter()
            .map(|l| LocationItem {
                id: l.id,
                name: l.name,
                timezone: l.timezone.as_str().to_owned(),
                phone: l.phone_opt.map(|p| p.as_str().to_owned()),
                active: l.active,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
struct Transcript {
    messages: Vec<crate::store::ChatMessage>,
    appointment: Option<crate::store::Appointment>,
}

/// GET /api/leads/{id}/chat: the lead's conversation with its accounting, and its appointment.
async fn lead_chat(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<Transcript>, ApiError> {
    let lead_id = parse_lead_id(&raw_id)?;
    // 404 for another tenant's lead, like every staff route.
    state.store.leads.get(key.tenant_id, lead_id).await?;
    let messages = state.store.chat.history(key.tenant_id, lead_id).await?;
    let appointment = state.store.appointments.of_lead(key.tenant_id, lead_id).await?;
    Ok(Json(Transcript { messages, appointment }))
}

#[derive(Debug, Serialize)]
struct Revoked {
    lead_id: LeadId,
    links_revoked_at: Timestamp,
}

/// POST /api/leads/{id}/revoke-links: every chat link of the lead issued until now stops
/// working (its page says so; the API answers 401).
async fn revoke_links(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let lead_id = parse_lead_id(&raw_id)?;
    let at = state.store.leads.revoke_links(key.tenant_id, lead_id, Timestamp::now()).await?;
    tracing::info!(%lead_id, "chat links revoked by staff");
    Ok(Json(Revoked { lead_id, links_revoked_at: at }))
}

/// POST /api/leads/{id}/pause: 409 unless the lead is `new` or `in_cadence`.
async fn pause_lead(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<LeadSummary>, ApiError> {
    let lead = transition(&state, key, &raw_id, &PAUSABLE, LeadStatus::Paused, "pause").await?;
    // Notify the lead's actor of the staff action here once actor notifications are wired.
    Ok(Json(LeadSummary::from(&lead)))
}

/// POST /api/leads/{id}/resume: 409 unless the lead is `paused`.
async fn resume_lead(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<LeadSummary>, ApiError> {
    let lead = transition(&state, key, &raw_id, &RESUMABLE, LeadStatus::InCadence, "resume").await?;
    // Notify the lead's actor of the staff action here once actor notifications are wired.
    Ok(Json(LeadSummary::from(&lead)))
}

/// POST /api/leads/{id}/close: closes the lead and cancels its pending touches; 200 again for a
/// lead already closed, 409 for one that ended otherwise (replied, booked, ...).
async fn close_lead(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<LeadSummary>, ApiError> {
    let lead = transition(&state, key, &raw_id, &CLOSABLE, LeadStatus::Closed, "close").await?;
    state.store.touchpoints.cancel_pending(key.tenant_id, lead.id, CLOSE_REASON).await?;
    // Notify the lead's actor of the staff action here once actor notifications are wired.
    Ok(Json(LeadSummary::from(&lead)))
}

/// Moves the key's tenant's lead to `to` if its status is one of `from`; a refusal is a 409
/// naming the current status, an unknown or foreign lead a 404.
async fn transition(
    state: &AppState,
    key: StaffKey,
    raw_id: &str,
    from: &[LeadStatus],
    to: LeadStatus,
    action: &str,
) -> Result<Lead, ApiError> {
    let lead_id = parse_lead_id(raw_id)?;
    state.store.leads.transition(key.tenant_id, lead_id, from, to).await?.map_err(|current| {
        let allowed: Vec<&str> = from.iter().copied().map(LeadStatus::as_str).collect();
        ApiError::Conflict(format!("cannot {action} a lead that is {current}; allowed from {}", allowed.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers_with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).expect("header value"));
        headers
    }

    #[test]
    fn a_bearer_token_is_read_whatever_the_scheme_case() {
        assert_eq!(bearer_token(&headers_with("Bearer lok_abc")), Some("lok_abc"));
        assert_eq!(bearer_token(&headers_with("bearer lok_abc")), Some("lok_abc"));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_not_bearer_tokens() {
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert_eq!(bearer_token(&headers_with("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_token(&headers_with("Bearer ")), None);
        assert_eq!(bearer_token(&headers_with("Bearer")), None);
        assert_eq!(bearer_token(&headers_with("lok_abc")), None);
    }

    #[test]
    fn a_limit_outside_one_to_five_hundred_is_refused_with_the_parameter_name() {
        for raw in ["0", "501", "-1", "ten"] {
            let query =
                ListLeadsQuery { location: None, status: None, since: None, before: None, limit: Some(raw.into()) };
            let Err(ApiError::BadRequest(message)) = query.parse() else { panic!("limit {raw} was accepted") };
            assert!(message.contains("limit"), "{message}");
        }
    }
}
