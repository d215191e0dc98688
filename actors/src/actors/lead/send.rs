//! The sending half of the lead actor: claim, checks (status, staleness, consent, the
//! recipient's window), hand-off to the provider, and recording what came back.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use ractor::ActorRef;

use super::{LeadActor, LeadMsg, LeadState, SendFinished};
use crate::actors::location::{LocationMsg, SmsJob};
use crate::compliance::{RecipientProfile, recipient_profile};
use crate::domain::{Channel, Touchpoint, TouchpointId, TouchpointStatus};
use crate::ports::{OutboundEmail, OutboundSms, SendError, SentMessage, error_chain};
use crate::timeline::{is_stale, sms_allowed_now};

fn count(channel: Channel, status: &'static str) {
    metrics::counter!("leadorch_touches_total", "channel" => channel.as_str(), "status" => status).increment(1);
}

/// Runs a store call, retrying while the store is unavailable for up to about 8 s.
async fn with_store_retries<T, F, Fut>(mut call: F) -> Result<T, crate::ports::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::ports::StoreError>>,
{
    let mut wait = std::time::Duration::from_millis(100);
    for _ in 0..7 {
        match call().await {
            Err(err) if err.is_unavailable() => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            result => return result,
        }
    }
    call().await
}

/// Returns the next instant at or after `now` inside the recipient's allowed window.
fn next_allowed(profile: &RecipientProfile, now: Timestamp) -> Timestamp {
    let local = now.to_zoned(profile.time_zone.clone());
    let today_start = local.date().to_datetime(profile.window.start);
    let candidate = if local.time() < profile.window.start {
        today_start
    } else {
        today_start.checked_add(jiff::Span::new().days(1)).unwrap_or(today_start)
    };
    candidate.to_zoned(profile.time_zone.clone()).map(|z| z.timestamp()).unwrap_or(now + SignedDuration::from_hours(1))
}

impl LeadActor {
    /// Claims and sends one touch, unless a stop condition, staleness, consent or the
    /// recipient's window says otherwise.
    pub(super) async fn send_touch(
        &self,
        myself: &ActorRef<LeadMsg>,
        state: &mut LeadState,
        touchpoint_id: TouchpointId,
    ) {
        let deps = &self.deps;
        // The lead may have changed since this actor loaded it (a staff pause, a reply seen by
        // another path): decide on what the store says now.
        match deps.leads.get_lead(state.lead.tenant_id, state.lead.id).await {
            Ok(fresh) => state.lead = fresh,
            Err(err) => {
                tracing::warn!(lead_id = %state.lead.id, error = %err, "lead could not be re-read; the touch waits");
                return;
            }
        }
        let lead = &state.lead;
        let tenant_id = lead.tenant_id;
        if lead.status.stops_cadence() || lead.status == crate::domain::LeadStatus::Paused {
            if lead.status.stops_cadence() {
                let reason = format!("lead is {}", lead.status);
                if let Err(err) = deps.touches.cancel_pending_touches(tenant_id, lead.id, None, &reason).await {
                    tracing::warn!(lead_id = %lead.id, error = %err, "pending touches could not be cancelled");
                }
            }
            return;
        }
        // A timer may fire a hair before the wall clock reaches the time; allow for that only.
        let due_by = deps.clock.now() + SignedDuration::from_millis(50);
        let claimed = match deps.touches.claim_touch(tenant_id, touchpoint_id, due_by).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(lead_id = %lead.id, %touchpoint_id, error = %err, "touch could not be claimed");
                return;
            }
        };
        let now = deps.clock.now();
        if is_stale(claimed.scheduled_at, now, &deps.compliance) {
            let reason = format!("stale: was due at {}, it is {now}", claimed.scheduled_at);
            self.close(&claimed, TouchpointStatus::Skipped, &reason).await;
            count(claimed.channel, "skipped");
            return;
        }
        let lag = now.duration_since(claimed.scheduled_at).as_secs_f64().max(0.0);
        metrics::histogram!("leadorch_scheduler_lag_seconds").record(lag);
        match claimed.channel {
            Channel::Sms => self.send_sms(myself, state, claimed, now).await,
            Channel::Email => self.send_email(myself, state, claimed, now).await,
        }
    }

    async fn close(&self, touch: &Touchpoint, status: TouchpointStatus, reason: &str) {
        if let Err(err) = self.deps.touches.close_touch(touch.tenant_id, touch.id, status, reason).await {
            tracing::warn!(touchpoint_id = %touch.id, error = %err, "touch could not be closed");
        }
    }

    async fn release(&self, touch: &Touchpoint, reason: &str, retry_at_opt: Option<Timestamp>) {
        let Some(attempt_id) = touch.attempt_id_opt else { return };
        let recorded =
            self.deps.touches.record_touch_failed(touch.tenant_id, touch.id, attempt_id, reason, retry_at_opt).await;
        if let Err(err) = recorded {
            tracing::warn!(touchpoint_id = %touch.id, error = %err, "touch outcome could not be recorded");
        }
    }

    /// Returns whether the recipient opted out, or `None` (after giving the touch back for a
    /// retry) when consent cannot be read: unknown consent means no send now, but it is not an
    /// opt-out either, so the touch must not be cancelled for it.
    async fn opted_out(&self, touch: &Touchpoint, channel: &str, address: &str) -> Option<bool> {
        match self.deps.consent.is_opted_out(touch.tenant_id, channel, address).await {
            Ok(opted_out) => Some(opted_out),
            Err(err) => {
                tracing::warn!(touchpoint_id = %touch.id, error = %err, "consent could not be read; will retry");
                let retry_at = self.deps.clock.now() + SignedDuration::from_secs(5);
                self.release(touch, "consent could not be read", Some(retry_at)).await;
                None
            }
        }
    }

    async fn send_sms(&self, myself: &ActorRef<LeadMsg>, state: &mut LeadState, touch: Touchpoint, now: Timestamp) {
        let lead = &state.lead;
        let Some(to) = lead.phone_opt.clone() else {
            self.close(&touch, TouchpointStatus::Skipped, "lead has no phone").await;
            return;
        };
        let Some(from) = state.location.sms_from_opt.clone() else {
            self.close(&touch, TouchpointStatus::Failed, "location has no sms number").await;
            count(Channel::Sms, "failed");
            return;
        };
        match self.opted_out(&touch, "sms", to.as_str()).await {
            None => return,
            Some(true) => {
                self.close(&touch, TouchpointStatus::Cancelled, "recipient opted out of sms").await;
                count(Channel::Sms, "cancelled");
                return;
            }
            Some(false) => {}
        }
        let location_tz = state.location.timezone.to_time_zone();
        let profile = recipient_profile(&self.deps.compliance, Some(&to), &location_tz, None);
        if !sms_allowed_now(&profile, now) {
            // Delayed into the recipient's quiet hours (an outage, a retry): wait for the window.
            let retry_at = next_allowed(&profile, now);
            self.release(&touch, "outside the recipient's allowed hours at send time", Some(retry_at)).await;
            return;
        }
        let body = match self.deps.renderer.render_sms(&touch.template, lead, &state.location, touch.intended_at) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(touchpoint_id = %touch.id, template = %touch.template, error = %err, "sms template failed");
                self.release(&touch, &format!("template failed: {err}"), None).await;
                count(Channel::Sms, "failed");
                return;
            }
        };
        let attempt = touch.attempt_id_opt.map(|a| a.to_string()).unwrap_or_default();
        let sms = OutboundSms {
            to,
            from,
            body,
            status_callback_opt: self.deps.policy.sms_status_callback_opt.clone(),
            idempotency_key: format!("{}:{}", touch.id, attempt),
        };
        let first_touch = lead.first_touch_at_opt.is_none();
        state.in_flight.insert(touch.id);
        let job = SmsJob { reply_to: myself.clone(), touch, sms, first_touch, started_at: now };
        if let Err(err) = state.location_actor.cast(LocationMsg::EnqueueSms(Box::new(job))) {
            // The location actor is gone (shutdown): give the touch back for the next start.
            let ractor::MessagingErr::SendErr(LocationMsg::EnqueueSms(job)) = err else { return };
            state.in_flight.remove(&job.touch.id);
            self.release(&job.touch, "location actor unavailable", Some(now)).await;
        }
    }

    async fn send_email(&self, myself: &ActorRef<LeadMsg>, state: &mut LeadState, touch: Touchpoint, now: Timestamp) {
        let lead = &state.lead;
        let Some(to) = lead.email_opt.clone() else {
            self.close(&touch, TouchpointStatus::Skipped, "lead has no email").await;
            return;
        };
        let Some(from) = state.location.email_from_opt.clone() else {
            self.close(&touch, TouchpointStatus::Failed, "location has no sender address").await;
            count(Channel::Email, "failed");
            return;
        };
        match self.opted_out(&touch, "email", to.as_str()).await {
            None => return,
            Some(true) => {
                self.close(&touch, TouchpointStatus::Cancelled, "recipient opted out of email").await;
                count(Channel::Email, "cancelled");
                return;
            }
            Some(false) => {}
        }
        let rendered = match self.deps.renderer.render_email(&touch.template, lead, &state.location, touch.intended_at)
        {
            Ok(rendered) => rendered,
            Err(err) => {
                tracing::error!(touchpoint_id = %touch.id, template = %touch.template, error = %err, "email template failed");
                self.release(&touch, &format!("template failed: {err}"), None).await;
                count(Channel::Email, "failed");
                return;
            }
        };
        let attempt = touch.attempt_id_opt.map(|a| a.to_string()).unwrap_or_default();
        let custom_args = BTreeMap::from([
            ("tenant_id".to_owned(), touch.tenant_id.to_string()),
            ("lead_id".to_owned(), touch.lead_id.to_string()),
            ("touchpoint_id".to_owned(), touch.id.to_string()),
            ("attempt_id".to_owned(), attempt.clone()),
        ]);
        let full_name = [lead.first_name_opt.as_deref(), lead.last_name_opt.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let email = OutboundEmail {
            to: to.clone(),
            to_name_opt: (!full_name.is_empty()).then_some(full_name),
            from,
            from_name_opt: Some(state.location.name.clone()),
            subject: rendered.subject.clone(),
            text: rendered.text,
            html: rendered.html,
            custom_args,
            idempotency_key: format!("{}:{}", touch.id, attempt),
        };
        state.in_flight.insert(touch.id);
        let sender = self.deps.email.clone();
        let reply_to = myself.clone();
        tokio::spawn(async move {
            let result = sender.send_email(&email).await;
            let finished = SendFinished {
                touch,
                result,
                recipient: to.as_str().to_owned(),
                sender_opt: None,
                body: rendered.subject,
                started_at: now,
                reconciled: false,
            };
            // A stopped lead actor leaves the touch in `sending`; start-up reconciles it.
            let _ = reply_to.cast(LeadMsg::SendFinished(Box::new(finished)));
        });
    }

    /// Records what a provider call came back with.
    pub(super) async fn send_finished(
        &self,
        myself: &ActorRef<LeadMsg>,
        state: &mut LeadState,
        finished: SendFinished,
    ) {
        let deps = &self.deps;
        let touch = &finished.touch;
        let channel = touch.channel;
        state.in_flight.remove(&touch.id);
        let Some(attempt_id) = touch.attempt_id_opt else { return };
        match &finished.result {
            Ok(sent) => {
                // Our clock, not the provider's: Twilio dates have whole-second precision.
                let accepted_at = deps.clock.now();
                // The provider has it: recording that must survive a short database outage, or
                // the row stays `sending` until the reconciler finds it at the provider.
                let recorded = with_store_retries(|| {
                    deps.touches.record_touch_sent(
                        touch.tenant_id,
                        touch.id,
                        attempt_id,
                        &sent.provider_id,
                        accepted_at,
                    )
                })
                .await;
                if let Err(err) = recorded {
                    tracing::warn!(touchpoint_id = %touch.id, error = %err, "sent touch could not be recorded yet; retrying in the background");
                    let touches = deps.touches.clone();
                    let (tenant_id, touchpoint_id, provider_id) = (touch.tenant_id, touch.id, sent.provider_id.clone());
                    tokio::spawn(async move {
                        // Every 5 s for 10 minutes; after that the start-up reconciler finds it.
                        for _ in 0..120 {
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            match touches
                                .record_touch_sent(tenant_id, touchpoint_id, attempt_id, &provider_id, accepted_at)
                                .await
                            {
                                Err(err) if err.is_unavailable() => continue,
                                _ => return,
                            }
                        }
                    });
                }
                count(channel, "sent");
                match with_store_retries(|| deps.touches.mark_first_touch(touch.tenant_id, touch.lead_id, accepted_at))
                    .await
                {
                    Ok(true) => {
                        let speed = state.lead.received_at.duration_until(accepted_at).as_secs_f64().max(0.0);
                        metrics::histogram!("leadorch_speed_to_lead_seconds").record(speed);
                        state.lead.first_touch_at_opt = Some(accepted_at);
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(lead_id = %touch.lead_id, error = %err, "first touch could not be recorded")
                    }
                }
            }
            Err(SendError::Timeout) if !finished.reconciled => {
                // The provider may have taken it: look before sending again.
                state.in_flight.insert(touch.id);
                self.reconcile(myself, finished);
            }
            Err(err) if err.is_retryable() && touch.attempts < deps.policy.max_attempts => {
                let wait = deps.policy.backoff(touch.attempts);
                let retry_at =
                    deps.clock.now() + SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_secs(60));
                tracing::warn!(touchpoint_id = %touch.id, attempt = touch.attempts, error = %err, "send failed; will retry");
                self.release(touch, &error_chain(err), Some(retry_at)).await;
                count(channel, "retry");
                let now = deps.clock.now();
                self.arm(myself, state, touch.id, retry_at, now).await;
            }
            Err(err) => {
                tracing::warn!(touchpoint_id = %touch.id, attempt = touch.attempts, error = %err, "send failed for good");
                self.release(touch, &error_chain(err), None).await;
                count(channel, "failed");
                let reason = match err {
                    SendError::OptedOut => {
                        let channel_name = channel.as_str();
                        if let Err(store_err) = deps
                            .consent
                            .record_opt_out(touch.tenant_id, channel_name, &finished.recipient, "provider")
                            .await
                        {
                            tracing::warn!(touchpoint_id = %touch.id, error = %store_err, "opt-out could not be recorded");
                        }
                        Some("recipient opted out at the provider")
                    }
                    SendError::InvalidRecipient { .. } => Some("recipient cannot receive this channel"),
                    _ => None,
                };
                if let Some(reason) = reason {
                    let cancelled = deps
                        .touches
                        .cancel_pending_touches(touch.tenant_id, touch.lead_id, Some(channel), reason)
                        .await;
                    if let Err(err) = cancelled {
                        tracing::warn!(lead_id = %touch.lead_id, error = %err, "pending touches could not be cancelled");
                    }
                }
            }
        }
    }

    /// Asks the provider whether a timed-out send went out, and reports back as a reconciled
    /// [`SendFinished`].
    fn reconcile(&self, myself: &ActorRef<LeadMsg>, mut finished: SendFinished) {
        let deps = self.deps.clone();
        let reply_to = myself.clone();
        let from_opt = finished.sender_opt.as_deref().and_then(|from| crate::domain::Phone::parse(from).ok());
        tokio::spawn(async move {
            let since = finished.started_at - SignedDuration::from_mins(1);
            let found: Result<Option<SentMessage>, SendError> = match finished.touch.channel {
                Channel::Sms => match (crate::domain::Phone::parse(&finished.recipient), from_opt) {
                    (Ok(to), Some(from)) => deps.sms.sent_messages(&to, &from, since).await.map(|messages| {
                        messages
                            .into_iter()
                            .find(|m| m.body == finished.body)
                            .map(|m| SentMessage { provider_id: m.provider_id, accepted_at: m.created_at })
                    }),
                    _ => Ok(None),
                },
                Channel::Email => {
                    deps.email.find_by_custom_arg("touchpoint_id", &finished.touch.id.to_string()).await.map(
                        |messages| {
                            messages
                                .into_iter()
                                .next()
                                .map(|m| SentMessage { provider_id: m.provider_id, accepted_at: m.created_at })
                        },
                    )
                }
            };
            finished.result = match found {
                Ok(Some(sent)) => Ok(sent),
                Ok(None) => Err(SendError::Unavailable("timed out and the provider has no record of it".to_owned())),
                Err(err) => Err(err),
            };
            finished.reconciled = true;
            let _ = reply_to.cast(LeadMsg::SendFinished(Box::new(finished)));
        });
    }
}
