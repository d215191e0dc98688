//! Stop conditions that arrive from outside a lead's own timeline — a reply, an opt-out, a
//! provider reporting a dead number or a complaint — applied to the store at once. Cancelling
//! pending touches is enough to stop every later send: a touch is only sent after a successful
//! claim, and a claim needs it pending.

use leadorch_actors::domain::{Channel, Email, LeadId, LeadStatus, Phone, TenantId};
use leadorch_actors::ports::StoreError;

use crate::store::Store;

/// Records an opt-out of a phone across SMS, chat and the email of every lead with that phone,
/// for every location of the tenant, and ends those leads' cadences. Returns how many leads
/// were stopped.
///
/// # Errors
/// The database is unavailable.
pub async fn opt_out_phone(
    store: &Store,
    tenant_id: TenantId,
    phone: &Phone,
    source: &str,
) -> Result<usize, StoreError> {
    store.consent.set(tenant_id, "sms", phone.as_str(), true, source, None).await?;
    store.consent.set(tenant_id, "chat", phone.as_str(), true, source, None).await?;
    let mut stopped = 0;
    for lead in store.leads.by_phone(tenant_id, phone).await? {
        if let Some(email) = &lead.email_opt {
            store.consent.set(tenant_id, "email", email.as_str(), true, source, Some("opted out by phone")).await?;
        }
        store.leads.stop_with(tenant_id, lead.id, LeadStatus::OptedOut).await?;
        store.touchpoints.cancel_pending(tenant_id, lead.id, "customer opted out").await?;
        stopped += 1;
    }
    metrics::counter!("leadorch_opt_outs_total", "channel" => "sms", "source" => source.to_owned()).increment(1);
    tracing::info!(%tenant_id, phone = %phone.redacted(), leads = stopped, %source, "opted out");
    Ok(stopped)
}

/// Records that a phone opted back in to SMS (and chat).
///
/// # Errors
/// The database is unavailable.
pub async fn opt_in_phone(store: &Store, tenant_id: TenantId, phone: &Phone, source: &str) -> Result<(), StoreError> {
    store.consent.set(tenant_id, "sms", phone.as_str(), false, source, None).await?;
    store.consent.set(tenant_id, "chat", phone.as_str(), false, source, None).await
}

/// Stops email to an address (bounce, spam report, unsubscribe): consent, and every pending
/// email touch of the tenant's leads with that address. SMS and chat are untouched.
///
/// # Errors
/// The database is unavailable.
pub async fn stop_email(store: &Store, tenant_id: TenantId, email: &Email, source: &str) -> Result<(), StoreError> {
    store.consent.set(tenant_id, "email", email.as_str(), true, source, None).await?;
    for lead in store.leads.by_email(tenant_id, email.as_str()).await? {
        store.touchpoints.cancel_pending_channel(tenant_id, lead.id, Channel::Email, source).await?;
    }
    metrics::counter!("leadorch_opt_outs_total", "channel" => "email", "source" => source.to_owned()).increment(1);
    Ok(())
}

/// A customer wrote back: the lead is `replied`, its remaining touches are cancelled, and the
/// message joins the lead's conversation.
///
/// # Errors
/// The database is unavailable.
pub async fn customer_replied(
    store: &Store,
    tenant_id: TenantId,
    lead_id: LeadId,
    body: &str,
) -> Result<(), StoreError> {
    store.chat.append(tenant_id, lead_id, "user", body).await?;
    store.leads.stop_with(tenant_id, lead_id, LeadStatus::Replied).await?;
    store.touchpoints.cancel_pending(tenant_id, lead_id, "customer replied").await?;
    metrics::counter!("leadorch_lead_outcomes_total", "outcome" => "replied").increment(1);
    Ok(())
}
