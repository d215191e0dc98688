//! Webhooks from the messaging providers. Twilio (form posts signed with X-Twilio-Signature over
//! the public URL, since we sit behind a proxy): inbound SMS (`/webhooks/twilio/inbound`) and
//! delivery reports (`/webhooks/twilio/status`). SendGrid: signed event batches
//! (`/webhooks/sendgrid/events`). Every event is de-duplicated through the inbox before it acts.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use leadorch_actors::domain::{Email, InboxInsert, Phone, TenantId, TouchpointStatus};
use leadorch_actors::inbound::{InboundIntent, classify};
use leadorch_actors::ports::StoreError;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::messaging::sendgrid::message_id_prefix;
use crate::messaging::{sendgrid_events, twilio_signature};
use crate::outcomes;

/// Twilio error codes after which a number will not take SMS again (unreachable is not here:
/// 30003 may pass).
const PERMANENT_SMS_ERRORS: &[&str] = &["21211", "21612", "21614", "21610", "30004", "30005", "30006", "30007"];
/// Twilio codes meaning the recipient blocked us or opted out at the carrier.
const OPT_OUT_SMS_ERRORS: &[&str] = &["21610", "30004"];

fn twiml(message_opt: Option<&str>) -> Response {
    let body = match message_opt {
        Some(text) => {
            let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{escaped}</Message></Response>")
        }
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_owned(),
    };
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// Checks a Twilio post and returns its form fields.
fn verified_form(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| ApiError::BadRequest(format!("body is not a form: {e}")))?;
    let signature = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    let url = format!("{}{path}", state.settings.http.public_url);
    if !twilio_signature::validate(state.twilio_auth_token.expose_secret(), &url, &params, signature) {
        tracing::warn!(%path, "twilio signature refused");
        metrics::counter!("leadorch_webhooks_total", "source" => "twilio", "outcome" => "bad_signature").increment(1);
        return Err(ApiError::Forbidden);
    }
    Ok(params)
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn count(source: &'static str, outcome: &'static str) {
    metrics::counter!("leadorch_webhooks_total", "source" => source, "outcome" => outcome).increment(1);
}

/// POST /webhooks/twilio/inbound
pub(crate) async fn receive_twilio_inbound(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_form(&state, "/webhooks/twilio/inbound", &headers, &body)?;
    let (Some(from_raw), Some(to_raw), Some(sid)) =
        (field(&params, "From"), field(&params, "To"), field(&params, "MessageSid"))
    else {
        return Err(ApiError::BadRequest("From, To and MessageSid are required".to_owned()));
    };
    let text = field(&params, "Body").unwrap_or("");
    let (Ok(from), Ok(to)) = (Phone::parse(from_raw), Phone::parse(to_raw)) else {
        return Err(ApiError::BadRequest("From and To must be phone numbers".to_owned()));
    };
    let location = match state.store.locations.find_by_sms_from(&to).await {
        Ok(location) => location,
        Err(StoreError::NotFound) => {
            tracing::warn!(to = %to.redacted(), "inbound sms to a number no location uses");
            count("twilio", "unknown_number");
            return Ok(twiml(None));
        }
        Err(err) => return Err(err.into()),
    };
    let tenant_id = location.tenant_id;
    let payload: Value =
        params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>().into();
    if state.store.inbox.insert(tenant_id, "twilio", sid, &payload, Timestamp::now()).await? == InboxInsert::Duplicate {
        count("twilio", "duplicate");
        return Ok(twiml(None));
    }
    let intent = classify(text, field(&params, "OptOutType"));
    let opted_out = state.store.consent.is_opted_out(tenant_id, "sms", from.as_str()).await?;
    let (outcome, reply_opt) = match intent {
        InboundIntent::OptOut(_) => {
            outcomes::opt_out_phone(&state.store, tenant_id, &from, "sms_keyword").await?;
            ("opt_out", None)
        }
        InboundIntent::OptIn if opted_out => {
            outcomes::opt_in_phone(&state.store, tenant_id, &from, "sms_keyword").await?;
            ("opt_in", None)
        }
        InboundIntent::Help => {
            let phone = location.phone_opt.as_ref().map(|p| p.to_string()).unwrap_or_default();
            let help = format!("{}: reply STOP to stop messages. Questions? Call {phone}.", location.name);
            ("help", Some(help))
        }
        InboundIntent::OptIn | InboundIntent::Message => {
            let leads = state.store.leads.by_phone(tenant_id, &from).await?;
            match leads.first() {
                Some(lead) => {
                    outcomes::customer_replied(&state.store, tenant_id, lead.id, text).await?;
                    ("reply", None)
                }
                None => ("no_lead", None),
            }
        }
    };
    mark_inbox(&state, tenant_id, "twilio", sid, outcome).await?;
    count("twilio", outcome);
    Ok(twiml(reply_opt.as_deref()))
}

async fn mark_inbox(
    state: &AppState,
    tenant_id: TenantId,
    source: &str,
    event_id: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    state.store.inbox.mark_processed_by_event(tenant_id, source, event_id, outcome).await
}

/// POST /webhooks/twilio/status
pub(crate) async fn receive_twilio_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_form(&state, "/webhooks/twilio/status", &headers, &body)?;
    let (Some(sid), Some(status), Some(from_raw)) =
        (field(&params, "MessageSid"), field(&params, "MessageStatus"), field(&params, "From"))
    else {
        return Err(ApiError::BadRequest("MessageSid, MessageStatus and From are required".to_owned()));
    };
    let from = Phone::parse(from_raw).map_err(|_| ApiError::BadRequest("From must be a phone number".to_owned()))?;
    let location = match state.store.locations.find_by_sms_from(&from).await {
        Ok(location) => location,
        Err(StoreError::NotFound) => return Ok(StatusCode::OK.into_response()),
        Err(err) => return Err(err.into()),
    };
    let error_code_opt = field(&params, "ErrorCode").filter(|c| !c.is_empty());
    let outcome_opt = match status {
        "delivered" => Some(TouchpointStatus::Delivered),
        "undelivered" | "failed" => Some(TouchpointStatus::Failed),
        _ => None,
    };
    let error_opt = error_code_opt.map(|code| format!("twilio {status} {code}"));
    let touch_opt = record_delivery(&state, location.tenant_id, sid, status, outcome_opt, error_opt.as_deref()).await?;
    count("twilio_status", "accepted");
    let Some(touch) = touch_opt else { return Ok(StatusCode::OK.into_response()) };
    if let Some(code) = error_code_opt {
        if PERMANENT_SMS_ERRORS.contains(&code) {
            // This number will not take SMS: stop texting this lead (email continues).
            let reason = format!("twilio reported {code}");
            state
                .store
                .touchpoints
                .cancel_pending_channel(touch.tenant_id, touch.lead_id, leadorch_actors::domain::Channel::Sms, &reason)
                .await?;
        }
        if OPT_OUT_SMS_ERRORS.contains(&code) {
            if let Some(to) = field(&params, "To").and_then(|t| Phone::parse(t).ok()) {
                outcomes::opt_out_phone(&state.store, touch.tenant_id, &to, "carrier").await?;
            }
        }
    }
    Ok(StatusCode::OK.into_response())
}

/// How long a delivery report waits for its touch to be recorded as sent. Providers can report
/// within milliseconds of accepting a message, before our own record of the acceptance lands.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Applies a delivery report to the touch the provider id belongs to, waiting briefly for the
/// send to be recorded if the report overtook it. `None` when no touch has that id.
async fn record_delivery(
    state: &AppState,
    tenant_id: TenantId,
    provider_message_id: &str,
    provider_status: &str,
    outcome_opt: Option<TouchpointStatus>,
    error_opt: Option<&str>,
) -> Result<Option<leadorch_actors::domain::Touchpoint>, StoreError> {
    let deadline = std::time::Instant::now() + REPORT_WAIT;
    loop {
        let touch_opt = state
            .store
            .touchpoints
            .record_delivery(tenant_id, provider_message_id, provider_status, outcome_opt, error_opt)
            .await?;
        if touch_opt.is_some() || std::time::Instant::now() >= deadline {
            if touch_opt.is_none() {
                tracing::warn!(%tenant_id, provider_status, "delivery report for a message we have no record of");
            }
            return Ok(touch_opt);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// POST /webhooks/sendgrid/events
pub(crate) async fn receive_sendgrid_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(verifier) = state.sendgrid_verifier_opt.as_ref() else {
        tracing::warn!("sendgrid event received but no verification key is configured");
        return Err(ApiError::Forbidden);
    };
    let header_value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let timestamp = header_value(sendgrid_events::TIMESTAMP_HEADER);
    let signature = header_value(sendgrid_events::SIGNATURE_HEADER);
    if !verifier.verify(timestamp, signature, &body) {
        count("sendgrid", "bad_signature");
        return Err(ApiError::Forbidden);
    }
    let events: Vec<Value> =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body is not a json array: {e}")))?;
    for event in &events {
        apply_sendgrid_event(&state, event).await?;
    }
    count("sendgrid", "accepted");
    Ok(StatusCode::OK.into_response())
}

async fn apply_sendgrid_event(state: &AppState, event: &Value) -> Result<(), ApiError> {
    let text = |name: &str| event.get(name).and_then(Value::as_str);
    let (Some(kind), Some(event_id)) = (text("event"), text("sg_event_id")) else { return Ok(()) };
    // Our custom_args name the tenant; an event without them is not about one of our touches.
    let Some(tenant_id) = text("tenant_id").and_then(|t| t.parse::<TenantId>().ok()) else { return Ok(()) };
    match state.store.inbox.insert(tenant_id, "sendgrid", event_id, event, Timestamp::now()).await {
        Ok(InboxInsert::Duplicate) => return Ok(()),
        Ok(InboxInsert::Inserted(_)) => {}
        // A tenant id that does not exist (forged custom args are impossible: the batch is signed).
        Err(StoreError::Conflict { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    let outcome_opt = match kind {
        "delivered" => Some(TouchpointStatus::Delivered),
        "bounce" | "dropped" => Some(TouchpointStatus::Failed),
        _ => None,
    };
    if let Some(message_id) = text("sg_message_id") {
        let error_opt = text("reason").map(|r| format!("sendgrid {kind}: {r}"));
        record_delivery(state, tenant_id, message_id_prefix(message_id), kind, outcome_opt, error_opt.as_deref())
            .await?;
    }
    if matches!(kind, "bounce" | "dropped" | "spamreport" | "unsubscribe" | "group_unsubscribe") {
        if let Some(email) = text("email").and_then(|e| Email::parse(e).ok()) {
            outcomes::stop_email(&state.store, tenant_id, &email, &format!("sendgrid {kind}")).await?;
        }
    }
    mark_inbox(state, tenant_id, "sendgrid", event_id, kind).await?;
    Ok(())
}
