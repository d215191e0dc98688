//! `LocationActor`: one per active location. It is the parent of that location's live lead
//! actors: it activates a lead actor on demand (a message to an inactive lead starts it first),
//! forgets it when it stops, and is found through the id-keyed [`LocationRegistry`]. It also
//! paces the location's SMS number: sends queue here and leave at the number's rate, first
//! touches ahead of follow-ups, so a burst waits instead of being rejected by the carrier.

mod router;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::lead::{LeadActor, LeadArgs, LeadDeps, LeadMsg, SendFinished};
use crate::domain::{LeadId, Location, LocationId, Touchpoint};
use crate::ports::{OutboundSms, SendError};

/// SMS waiting at a location beyond which new ones are refused (and retried by their lead).
const MAX_QUEUED_SMS: usize = 50_000;

/// One claimed SMS touch waiting for its slot on the location's number.
#[derive(Debug)]
pub struct SmsJob {
    /// The lead actor to tell how it went.
    pub reply_to: ActorRef<LeadMsg>,
    pub touch: Touchpoint,
    pub sms: OutboundSms,
    /// A lead's first touch goes ahead of follow-ups.
    pub first_touch: bool,
    pub started_at: jiff::Timestamp,
}

pub use self::router::{ActorLeadRouter, location_child_spec};

/// Finds the live actor of a location by id. A restarted location actor registers its new
/// reference, so callers never hold one across restarts.
#[derive(Debug, Clone, Default)]
pub struct LocationRegistry {
    actors: Arc<DashMap<LocationId, ActorRef<LocationMsg>>>,
}

impl LocationRegistry {
    /// Returns the live actor of the location, if it runs.
    pub fn get(&self, location_id: LocationId) -> Option<ActorRef<LocationMsg>> {
        self.actors.get(&location_id).map(|entry| entry.value().clone())
    }

    /// Returns how many location actors run.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// Returns true when no location actor runs.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    fn register(&self, location_id: LocationId, actor: ActorRef<LocationMsg>) {
        self.actors.insert(location_id, actor);
    }

    fn unregister(&self, location_id: LocationId, actor_id: ActorId) {
        self.actors.remove_if(&location_id, |_, current| current.get_id() == actor_id);
    }
}

/// The actor.
#[derive(Debug)]
pub struct LocationActor {
    lead_deps: Arc<LeadDeps>,
    registry: LocationRegistry,
}

impl LocationActor {
    /// Creates the behaviour; `registry` is where it announces itself.
    pub fn new(lead_deps: Arc<LeadDeps>, registry: LocationRegistry) -> Self {
        LocationActor { lead_deps, registry }
    }
}

/// Messages to a location actor.
#[derive(Debug)]
pub enum LocationMsg {
    /// From the intake: a lead of this location was just created; activate its actor.
    LeadCreated(LeadId),
    /// Delivers a message to one of this location's lead actors, activating it first.
    ToLead(LeadId, LeadMsg),
    /// From a lead actor: a claimed SMS to send when the number's rate allows.
    EnqueueSms(Box<SmsJob>),
    /// From its own timer: the next SMS slot has come.
    ReleaseSms,
    /// Query: how many lead actors of this location are live.
    GetLiveLeads(RpcReplyPort<usize>),
}

/// What a location actor holds.
#[derive(Debug)]
pub struct LocationState {
    location: Arc<Location>,
    first_touches: VecDeque<Box<SmsJob>>,
    follow_ups: VecDeque<Box<SmsJob>>,
    /// A release is already scheduled.
    release_pending: bool,
    /// Earliest time the number may send again.
    next_slot: Instant,
    live: HashMap<LeadId, ActorRef<LeadMsg>>,
    /// Which child actor is which lead, to forget it when it stops.
    lead_of_actor: HashMap<ActorId, LeadId>,
}

impl LocationState {
    async fn lead_actor(
        &mut self,
        myself: &ActorRef<LocationMsg>,
        deps: &Arc<LeadDeps>,
        lead_id: LeadId,
    ) -> Option<ActorRef<LeadMsg>> {
        if let Some(actor) = self.live.get(&lead_id) {
            return Some(actor.clone());
        }
        let args = LeadArgs {
            tenant_id: self.location.tenant_id,
            lead_id,
            location: self.location.clone(),
            location_actor: myself.clone(),
        };
        match Actor::spawn_linked(None, LeadActor::new(deps.clone()), args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                self.lead_of_actor.insert(actor.get_id(), lead_id);
                self.live.insert(lead_id, actor.clone());
                Some(actor)
            }
            Err(err) => {
                tracing::warn!(%lead_id, location_id = %self.location.id, error = %err, "lead actor failed to start");
                None
            }
        }
    }

    fn forget(&mut self, actor_id: ActorId) -> Option<LeadId> {
        let lead_id = self.lead_of_actor.remove(&actor_id)?;
        self.live.remove(&lead_id);
        Some(lead_id)
    }
}

impl Actor for LocationActor {
    type Msg = LocationMsg;
    type State = LocationState;
    type Arguments = Location;

    async fn pre_start(
        &self,
        myself: ActorRef<LocationMsg>,
        location: Location,
    ) -> Result<LocationState, ActorProcessingErr> {
        self.registry.register(location.id, myself);
        metrics::gauge!("leadorch_actors_alive", "kind" => "location").increment(1.0);
        Ok(LocationState {
            location: Arc::new(location),
            first_touches: VecDeque::new(),
            follow_ups: VecDeque::new(),
            release_pending: false,
            next_slot: Instant::now(),
            live: HashMap::new(),
            lead_of_actor: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<LocationMsg>,
        state: &mut LocationState,
    ) -> Result<(), ActorProcessingErr> {
        self.registry.unregister(state.location.id, myself.get_id());
        metrics::gauge!("leadorch_actors_alive", "kind" => "location").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<LocationMsg>,
        msg: LocationMsg,
        state: &mut LocationState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LocationMsg::LeadCreated(lead_id) => {
                if let Some(actor) = state.lead_actor(&myself, &self.lead_deps, lead_id).await {
                    // A lead actor that stopped in between is re-activated by the next message.
                    let _ = actor.cast(LeadMsg::Wake);
                }
            }
            LocationMsg::ToLead(lead_id, msg) => {
                if let Some(actor) = state.lead_actor(&myself, &self.lead_deps, lead_id).await {
                    let _ = actor.cast(msg);
                }
            }
            LocationMsg::EnqueueSms(job) => self.enqueue_sms(&myself, state, job),
            LocationMsg::ReleaseSms => self.release_sms(&myself, state),
            LocationMsg::GetLiveLeads(reply) => {
                let _ = reply.send(state.live.len());
            }
        }
        metrics::gauge!("leadorch_sms_queue_depth").set((state.first_touches.len() + state.follow_ups.len()) as f64);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<LocationMsg>,
        event: SupervisionEvent,
        state: &mut LocationState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                // The lead's state is in the store: the next message about it activates a fresh
                // actor, so a failed lead actor is forgotten rather than restarted here.
                if let Some(lead_id) = state.forget(cell.get_id()) {
                    tracing::warn!(%lead_id, location_id = %state.location.id, error = %err, "lead actor failed");
                    metrics::counter!("leadorch_supervisor_restarts_total", "kind" => "lead").increment(1);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl LocationActor {
    fn interval(location: &Location) -> Duration {
        Duration::from_secs_f64(1.0 / location.sms_rate_per_sec.max(0.001))
    }

    fn enqueue_sms(&self, myself: &ActorRef<LocationMsg>, state: &mut LocationState, job: Box<SmsJob>) {
        if state.first_touches.len() + state.follow_ups.len() >= MAX_QUEUED_SMS {
            // Backpressure: the lead records a retryable failure and tries again later.
            let finished =
                finished(job, Err(SendError::RateLimited { retry_after_opt: Some(Duration::from_secs(30)) }));
            let _ = finished.0.cast(LeadMsg::SendFinished(Box::new(finished.1)));
            return;
        }
        if job.first_touch {
            state.first_touches.push_back(job);
        } else {
            state.follow_ups.push_back(job);
        }
        if !state.release_pending {
            state.release_pending = true;
            let wait = state.next_slot.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                let _ = myself.cast(LocationMsg::ReleaseSms);
            } else {
                myself.send_after(wait, || LocationMsg::ReleaseSms);
            }
        }
    }

    fn release_sms(&self, myself: &ActorRef<LocationMsg>, state: &mut LocationState) {
        state.release_pending = false;
        let now = Instant::now();
        if now < state.next_slot {
            state.release_pending = true;
            myself.send_after(state.next_slot - now, || LocationMsg::ReleaseSms);
            return;
        }
        let Some(job) = state.first_touches.pop_front().or_else(|| state.follow_ups.pop_front()) else { return };
        let interval = Self::interval(&state.location);
        state.next_slot = now + interval;
        let sender = self.lead_deps.sms.clone();
        let touches = self.lead_deps.touches.clone();
        tokio::spawn(async move {
            // A job may have waited in the queue: send only if its claim is still current (a
            // released and re-claimed touch must not go out twice). Unknown means no.
            let Some(attempt_id) = job.touch.attempt_id_opt else { return };
            let current = confirm_with_retries(touches.as_ref(), &job.touch, attempt_id).await;
            if !current {
                tracing::warn!(touchpoint_id = %job.touch.id, "queued sms no longer claimed; not sent");
                let _ = job.reply_to.cast(LeadMsg::SendAbandoned(job.touch.id));
                return;
            }
            let result = sender.send_sms(&job.sms).await;
            let (reply_to, finished) = finished(job, result);
            // A stopped lead actor leaves the touch in `sending`; start-up reconciles it.
            let _ = reply_to.cast(LeadMsg::SendFinished(Box::new(finished)));
        });
        if !state.first_touches.is_empty() || !state.follow_ups.is_empty() {
            state.release_pending = true;
            myself.send_after(interval, || LocationMsg::ReleaseSms);
        }
    }
}

/// Confirms a queued job's claim, riding out a short database outage (about 8 s); unknown
/// after that counts as not current, leaving the touch to the reconciler.
async fn confirm_with_retries(
    touches: &dyn crate::ports::TouchStore,
    touch: &Touchpoint,
    attempt_id: uuid::Uuid,
) -> bool {
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        match touches.confirm_claim(touch.tenant_id, touch.id, attempt_id).await {
            Ok(current) => return current,
            Err(err) if err.is_unavailable() => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(_) => return false,
        }
    }
    false
}

fn finished(
    job: Box<SmsJob>,
    result: Result<crate::ports::SentMessage, SendError>,
) -> (ActorRef<LeadMsg>, SendFinished) {
    let SmsJob { reply_to, touch, sms, started_at, .. } = *job;
    let finished = SendFinished {
        touch,
        result,
        recipient: sms.to.as_str().to_owned(),
        sender_opt: Some(sms.from.as_str().to_owned()),
        body: sms.body,
        started_at,
        reconciled: false,
    };
    (reply_to, finished)
}

/// Asks a location actor how many of its leads are live; `None` if it did not answer in time.
pub async fn live_leads(actor: &ActorRef<LocationMsg>) -> Option<usize> {
    match actor.call(LocationMsg::GetLiveLeads, Some(Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(count)) => Some(count),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
