//! `LeadActor`: drives one lead's touchpoint timeline. It is virtual: activated (by its
//! location) when the lead needs work — a new lead, a due touch, an event — it rebuilds its
//! state from the store, holds in-memory timers only for touches due within a short horizon,
//! and stops itself once idle. A million leads in cadence must not mean a million live actors.
//!
//! Sending one touch: claim (pending -> sending, with an attempt id) -> provider call -> record
//! (sent / failed / back to pending for a retry). SMS go through the location actor, which
//! paces the location's number; email goes straight out. A provider timeout is ambiguous, so
//! it is reconciled against the provider before anything is sent again.

mod send;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::location::LocationMsg;
use crate::compliance::ComplianceRules;
use crate::domain::{Lead, LeadId, Location, TenantId, Touchpoint, TouchpointId};
use crate::ports::{
    Clock, ConsentStore, EmailSender, LeadStore, SendError, SentMessage, SmsSender, TouchRenderer, TouchStore,
};

/// Timings and limits of lead actors.
#[derive(Debug, Clone)]
pub struct LeadPolicy {
    /// A lead actor with no work for this long stops itself.
    pub idle_after: Duration,
    /// Touches due within this are held as in-memory timers; later ones wait for the scheduler.
    pub horizon: Duration,
    /// Provider attempts per touch before it fails for good.
    pub max_attempts: u32,
    /// Back-off before the first retry; doubles per attempt.
    pub retry_backoff: Duration,
    pub max_backoff: Duration,
    /// Twilio's `StatusCallback` for our messages, when the public URL is known.
    pub sms_status_callback_opt: Option<String>,
}

impl Default for LeadPolicy {
    fn default() -> Self {
        LeadPolicy {
            idle_after: Duration::from_secs(60),
            horizon: Duration::from_secs(5),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            sms_status_callback_opt: None,
        }
    }
}

impl LeadPolicy {
    fn backoff(&self, attempts: u32) -> Duration {
        self.retry_backoff.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(self.max_backoff)
    }
}

/// What every lead actor needs; shared by all of them.
#[derive(Debug)]
pub struct LeadDeps {
    pub leads: Arc<dyn LeadStore>,
    pub touches: Arc<dyn TouchStore>,
    pub consent: Arc<dyn ConsentStore>,
    pub sms: Arc<dyn SmsSender>,
    pub email: Arc<dyn EmailSender>,
    pub renderer: Arc<dyn TouchRenderer>,
    pub clock: Arc<dyn Clock>,
    pub compliance: Arc<ComplianceRules>,
    pub policy: LeadPolicy,
}

/// The actor.
#[derive(Debug)]
pub struct LeadActor {
    deps: Arc<LeadDeps>,
}

impl LeadActor {
    /// Creates the actor behaviour over shared dependencies.
    pub fn new(deps: Arc<LeadDeps>) -> Self {
        LeadActor { deps }
    }
}

/// Which lead to activate, and where it lives.
#[derive(Debug, Clone)]
pub struct LeadArgs {
    pub tenant_id: TenantId,
    pub lead_id: LeadId,
    pub location: Arc<Location>,
    /// The parent location actor, which paces SMS.
    pub location_actor: ActorRef<LocationMsg>,
}

/// The end of one provider call, as reported back to the lead actor.
#[derive(Debug, Clone)]
pub struct SendFinished {
    /// The touch as claimed (with its attempt id).
    pub touch: Touchpoint,
    pub result: Result<SentMessage, SendError>,
    /// The recipient and body, to reconcile a timeout against the provider's records.
    pub recipient: String,
    /// The sending number for SMS (the provider lists messages by To and From).
    pub sender_opt: Option<String>,
    pub body: String,
    /// When the call started; reconciliation looks for provider records from then on.
    pub started_at: jiff::Timestamp,
    /// True once a timeout has been checked against the provider (never reconcile twice).
    pub reconciled: bool,
}

/// Messages to a lead actor.
#[derive(Debug)]
pub enum LeadMsg {
    /// From its location: the lead was created or something about it changed; re-read it and
    /// arm timers for touches due soon.
    Wake,
    /// From the scheduler or its own timer: this touch is due at the given time (armed as a
    /// timer if that is still ahead).
    TouchDue(TouchpointId, jiff::Timestamp),
    /// From a provider call (directly, or through the location's SMS pacer).
    SendFinished(Box<SendFinished>),
    /// From the location's SMS pacer: this queued send was dropped because its claim was no
    /// longer current; the touch is someone else's to send now.
    SendAbandoned(TouchpointId),
    /// From itself, on a timer: stop if nothing happened for `idle_after`.
    IdleCheck,
    /// Query (tests, staff views): the lead as this actor sees it.
    GetLead(ractor::RpcReplyPort<Lead>),
}

/// What a live lead actor holds.
#[derive(Debug)]
pub struct LeadState {
    lead: Lead,
    location: Arc<Location>,
    location_actor: ActorRef<LocationMsg>,
    last_activity: Instant,
    /// Touches with an armed timer.
    timers: HashSet<TouchpointId>,
    /// Touches claimed and at the provider.
    in_flight: HashSet<TouchpointId>,
}

impl LeadState {
    fn is_busy(&self) -> bool {
        !self.timers.is_empty() || !self.in_flight.is_empty()
    }
}

impl Actor for LeadActor {
    type Msg = LeadMsg;
    type State = LeadState;
    type Arguments = LeadArgs;

    async fn pre_start(&self, myself: ActorRef<LeadMsg>, args: LeadArgs) -> Result<LeadState, ActorProcessingErr> {
        let lead = self.deps.leads.get_lead(args.tenant_id, args.lead_id).await?;
        metrics::gauge!("leadorch_actors_alive", "kind" => "lead").increment(1.0);
        metrics::counter!("leadorch_actor_activations_total", "kind" => "lead").increment(1);
        myself.send_after(self.deps.policy.idle_after, || LeadMsg::IdleCheck);
        Ok(LeadState {
            lead,
            location: args.location,
            location_actor: args.location_actor,
            last_activity: Instant::now(),
            timers: HashSet::new(),
            in_flight: HashSet::new(),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<LeadMsg>, _state: &mut LeadState) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("leadorch_actors_alive", "kind" => "lead").decrement(1.0);
        metrics::counter!("leadorch_actor_passivations_total", "kind" => "lead").increment(1);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<LeadMsg>,
        msg: LeadMsg,
        state: &mut LeadState,
    ) -> Result<(), ActorProcessingErr> {
        let started = Instant::now();
        if !matches!(msg, LeadMsg::IdleCheck) {
            state.last_activity = started;
        }
        match msg {
            LeadMsg::Wake => self.wake(&myself, state).await,
            LeadMsg::TouchDue(touchpoint_id, scheduled_at) => {
                state.timers.remove(&touchpoint_id);
                let now = self.deps.clock.now();
                self.arm(&myself, state, touchpoint_id, scheduled_at, now).await;
            }
            LeadMsg::SendFinished(finished) => self.send_finished(&myself, state, *finished).await,
            LeadMsg::SendAbandoned(touchpoint_id) => {
                state.in_flight.remove(&touchpoint_id);
            }
            LeadMsg::IdleCheck => {
                let idle_for = state.last_activity.elapsed();
                if !state.is_busy() && idle_for >= self.deps.policy.idle_after {
                    myself.stop(Some("idle".to_owned()));
                } else {
                    let wait = self.deps.policy.idle_after.saturating_sub(idle_for).max(Duration::from_millis(100));
                    myself.send_after(wait, || LeadMsg::IdleCheck);
                }
            }
            LeadMsg::GetLead(reply) => {
                // The asker may have timed out; nothing to do then.
                let _ = reply.send(state.lead.clone());
            }
        }
        metrics::histogram!("leadorch_actor_message_seconds", "kind" => "lead").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl LeadActor {
    /// Re-reads the lead and arms timers for its pending touches due within the horizon.
    async fn wake(&self, myself: &ActorRef<LeadMsg>, state: &mut LeadState) {
        match self.deps.leads.get_lead(state.lead.tenant_id, state.lead.id).await {
            Ok(lead) => state.lead = lead,
            // The store being briefly unavailable is not the actor's failure; the scheduler
            // wakes the lead again for anything due.
            Err(err) => {
                tracing::warn!(lead_id = %state.lead.id, error = %err, "lead reload failed");
                return;
            }
        }
        let touches = match self.deps.touches.touches_of(state.lead.tenant_id, state.lead.id).await {
            Ok(touches) => touches,
            Err(err) => {
                tracing::warn!(lead_id = %state.lead.id, error = %err, "touches could not be read");
                return;
            }
        };
        let now = self.deps.clock.now();
        for touch in touches.iter().filter(|t| t.status == crate::domain::TouchpointStatus::Pending) {
            self.arm(myself, state, touch.id, touch.scheduled_at, now).await;
        }
    }

    /// Sends a touch now if it is due, or arms a timer if it is due within the horizon.
    async fn arm(
        &self,
        myself: &ActorRef<LeadMsg>,
        state: &mut LeadState,
        touchpoint_id: TouchpointId,
        scheduled_at: jiff::Timestamp,
        now: jiff::Timestamp,
    ) {
        if state.timers.contains(&touchpoint_id) || state.in_flight.contains(&touchpoint_id) {
            return;
        }
        let wait = now.duration_until(scheduled_at);
        if wait.is_negative() || wait.is_zero() {
            self.send_touch(myself, state, touchpoint_id).await;
            return;
        }
        let Ok(wait) = Duration::try_from(wait) else { return };
        if wait <= self.deps.policy.horizon {
            state.timers.insert(touchpoint_id);
            myself.send_after(wait, move || LeadMsg::TouchDue(touchpoint_id, scheduled_at));
        }
    }
}

#[cfg(test)]
mod tests;
