//! Crash safety for sends: a touch left in `sending` (the process died between claiming it and
//! recording what the provider said) is checked against the provider's own records — Twilio's
//! message list by To/From/time, SendGrid's activity by our `touchpoint_id` custom arg — and
//! marked sent, or released to be sent again if the provider never got it. Runs at start-up and
//! then periodically for touches stuck longer than a lead actor could take.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use leadorch_actors::domain::{Channel, Touchpoint};
use leadorch_actors::ports::{Directory, EmailSender, SendError, SmsSender, StoreError, TouchRenderer};

use crate::store::Store;

/// A touch in `sending` for longer than this (since its claim was last confirmed) is considered
/// abandoned by its actor. Generous, because an SMS may wait in a busy location's queue; a
/// released touch that was still queued is not sent twice (the pacer confirms the claim).
pub const STUCK_AFTER: Duration = Duration::from_secs(600);

/// What one reconciliation pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// The provider had it: recorded as sent.
    pub confirmed: usize,
    /// The provider did not have it: back to pending, to be sent again.
    pub released: usize,
    /// The provider could not be asked; left for the next pass.
    pub deferred: usize,
}

/// Reconciles every touch in `sending` claimed before `claimed_before`.
///
/// # Errors
/// The database is unavailable.
pub async fn reconcile_in_flight(
    store: &Store,
    sms: &dyn SmsSender,
    email: &dyn EmailSender,
    renderer: &dyn TouchRenderer,
    claimed_before: Timestamp,
) -> Result<Reconciled, StoreError> {
    let mut done = Reconciled::default();
    for tenant_id in store.active_tenants().await? {
        for (touch, claimed_at) in store.touchpoints.in_flight(tenant_id).await? {
            if claimed_at > claimed_before {
                continue;
            }
            match provider_has(store, sms, email, renderer, &touch, claimed_at).await {
                Ok(Some(provider_id)) => {
                    if let Some(attempt_id) = touch.attempt_id_opt {
                        store
                            .touchpoints
                            .record_sent(tenant_id, touch.id, attempt_id, &provider_id, claimed_at)
                            .await?;
                        // The lead's first touch may be this one.
                        store.leads.mark_first_touch(tenant_id, touch.lead_id, claimed_at).await?;
                    }
                    done.confirmed += 1;
                }
                Ok(None) => {
                    if let Some(attempt_id) = touch.attempt_id_opt {
                        let reason = "interrupted before the provider took it; sending again";
                        store
                            .touchpoints
                            .record_failed(tenant_id, touch.id, attempt_id, reason, Some(Timestamp::now()))
                            .await?;
                    }
                    done.released += 1;
                }
                Err(err) => {
                    tracing::warn!(%tenant_id, touchpoint_id = %touch.id, error = %err, "provider could not be asked; will retry");
                    done.deferred += 1;
                }
            }
        }
    }
    if done != Reconciled::default() {
        tracing::info!(
            confirmed = done.confirmed,
            released = done.released,
            deferred = done.deferred,
            "reconciled interrupted sends"
        );
    }
    Ok(done)
}

/// Returns the provider's id for the touch if the provider has it.
async fn provider_has(
    store: &Store,
    sms: &dyn SmsSender,
    email: &dyn EmailSender,
    renderer: &dyn TouchRenderer,
    touch: &Touchpoint,
    claimed_at: Timestamp,
) -> Result<Option<String>, SendError> {
    match touch.channel {
        Channel::Email => {
            let found = email.find_by_custom_arg("touchpoint_id", &touch.id.to_string()).await?;
            Ok(found.into_iter().next().map(|m| m.provider_id))
        }
        Channel::Sms => {
            let lead = store
                .leads
                .get(touch.tenant_id, touch.lead_id)
                .await
                .map_err(|e| SendError::Unavailable(e.to_string()))?;
            let location = store
                .locations
                .get(touch.tenant_id, lead.location_id)
                .await
                .map_err(|e| SendError::Unavailable(e.to_string()))?;
            let (Some(to), Some(from)) = (lead.phone_opt.clone(), location.sms_from_opt.clone()) else {
                return Ok(None);
            };
            // Rendering is deterministic per touch, so the provider's copy has exactly this body.
            let Ok(body) = renderer.render_sms(&touch.template, &lead, &location, touch.intended_at) else {
                return Ok(None);
            };
            let since = claimed_at - SignedDuration::from_secs(5);
            let found = sms.sent_messages(&to, &from, since).await?;
            let claimed_by_others: Vec<String> = store
                .touchpoints
                .for_lead(touch.tenant_id, touch.lead_id)
                .await
                .map_err(|e| SendError::Unavailable(e.to_string()))?
                .into_iter()
                .filter_map(|t| t.provider_message_id_opt)
                .collect();
            Ok(found
                .into_iter()
                .filter(|m| m.body == body && !claimed_by_others.contains(&m.provider_id))
                .min_by_key(|m| m.created_at)
                .map(|m| m.provider_id))
        }
    }
}
