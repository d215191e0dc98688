//! `WebhookIngress`: takes committed inbox events (told by the webhook route, and found by a
//! periodic sweep that also replays everything left unprocessed by a crash) through the intake
//! path, a bounded number at a time. CRM calls run in spawned tasks; their end comes back as a
//! message. A retryable failure is recorded on the row with a back-off; after `max_attempts`
//! the event is closed with its last error, kept, and not retried forever.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::TenantId;
use crate::intake::{IntakeDeps, process_event};
use crate::ports::{Directory, error_chain};

/// Limits and timings of the ingress.
#[derive(Debug, Clone, Copy)]
pub struct IngressPolicy {
    /// Events processed at once.
    pub max_in_flight: usize,
    /// Events waiting in memory beyond that; more are left to the next sweep (they are safe in
    /// Postgres), so a burst cannot grow memory without bound.
    pub max_queued: usize,
    /// How often the inbox is swept for unprocessed or due-for-retry events.
    pub sweep_every: Duration,
    /// Attempts before an event is closed as failed.
    pub max_attempts: u32,
    pub max_backoff: Duration,
}

impl Default for IngressPolicy {
    fn default() -> Self {
        IngressPolicy {
            max_in_flight: 32,
            max_queued: 10_000,
            sweep_every: Duration::from_secs(2),
            max_attempts: 12,
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl IngressPolicy {
    fn backoff(&self, attempts: u32) -> Duration {
        Duration::from_secs(1u64 << attempts.min(16)).min(self.max_backoff)
    }
}

/// Where the running ingress can be reached; the actor puts its reference here on every
/// (re)start, so the webhook route never holds a stale one.
#[derive(Debug, Clone, Default)]
pub struct IngressHandle {
    slot: Arc<RwLock<Option<ActorRef<IngressMsg>>>>,
}

impl IngressHandle {
    /// Tells the ingress that an event was committed. Returns false when no ingress runs; the
    /// event is durable either way and the sweep finds it.
    pub fn event_committed(&self, tenant_id: TenantId, event_id: i64) -> bool {
        let actor_opt = self.slot.read().ok().and_then(|slot| slot.clone());
        actor_opt.is_some_and(|actor| actor.cast(IngressMsg::EventCommitted { tenant_id, event_id }).is_ok())
    }

    fn set(&self, actor_opt: Option<ActorRef<IngressMsg>>) {
        if let Ok(mut slot) = self.slot.write() {
            *slot = actor_opt;
        }
    }
}

/// The actor.
#[derive(Debug)]
pub struct WebhookIngress {
    deps: IntakeDeps,
    directory: Arc<dyn Directory>,
    policy: IngressPolicy,
    handle: IngressHandle,
}

impl WebhookIngress {
    /// Creates the behaviour; it registers itself in `handle` when it starts.
    pub fn new(deps: IntakeDeps, directory: Arc<dyn Directory>, policy: IngressPolicy, handle: IngressHandle) -> Self {
        WebhookIngress { deps, directory, policy, handle }
    }
}

/// Messages to the ingress.
#[derive(Debug)]
pub enum IngressMsg {
    /// From the webhook route: this inbox row was just committed.
    EventCommitted { tenant_id: TenantId, event_id: i64 },
    /// From its timer: look for unprocessed or due-for-retry events.
    Sweep,
    /// From a processing task: it is done with this event (whatever the outcome).
    Finished { tenant_id: TenantId, event_id: i64 },
    /// From a sweep task: the sweep is over.
    SweepFinished,
}

/// What the ingress tracks.
#[derive(Debug, Default)]
pub struct IngressState {
    in_flight: HashSet<(TenantId, i64)>,
    queued: VecDeque<(TenantId, i64)>,
    queued_set: HashSet<(TenantId, i64)>,
    sweeping: bool,
}

impl Actor for WebhookIngress {
    type Msg = IngressMsg;
    type State = IngressState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<IngressMsg>, _args: ()) -> Result<IngressState, ActorProcessingErr> {
        self.handle.set(Some(myself.clone()));
        metrics::gauge!("leadorch_actors_alive", "kind" => "ingress").increment(1.0);
        // Replays whatever a crash left unprocessed, then keeps sweeping.
        let _ = myself.cast(IngressMsg::Sweep);
        myself.send_interval(self.policy.sweep_every, || IngressMsg::Sweep);
        Ok(IngressState::default())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<IngressMsg>,
        _state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        let mine = self.handle.slot.read().ok().and_then(|s| s.as_ref().map(|a| a.get_id())) == Some(myself.get_id());
        if mine {
            self.handle.set(None);
        }
        metrics::gauge!("leadorch_actors_alive", "kind" => "ingress").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<IngressMsg>,
        msg: IngressMsg,
        state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IngressMsg::EventCommitted { tenant_id, event_id } => self.admit(&myself, state, (tenant_id, event_id)),
            IngressMsg::Finished { tenant_id, event_id } => {
                state.in_flight.remove(&(tenant_id, event_id));
                while state.in_flight.len() < self.policy.max_in_flight {
                    let Some(next) = state.queued.pop_front() else { break };
                    state.queued_set.remove(&next);
                    self.start(&myself, state, next);
                }
            }
            IngressMsg::Sweep => {
                if !state.sweeping {
                    state.sweeping = true;
                    self.sweep(&myself);
                }
            }
            IngressMsg::SweepFinished => state.sweeping = false,
        }
        metrics::gauge!("leadorch_ingress_in_flight").set(state.in_flight.len() as f64);
        metrics::gauge!("leadorch_mailbox_depth", "kind" => "ingress").set(state.queued.len() as f64);
        Ok(())
    }
}

impl WebhookIngress {
    fn admit(&self, myself: &ActorRef<IngressMsg>, state: &mut IngressState, key: (TenantId, i64)) {
        if state.in_flight.contains(&key) || state.queued_set.contains(&key) {
            return;
        }
        if state.in_flight.len() < self.policy.max_in_flight {
            self.start(myself, state, key);
        } else if state.queued.len() < self.policy.max_queued {
            state.queued.push_back(key);
            state.queued_set.insert(key);
        }
        // Else: dropped from memory only; the row is committed and the next sweep takes it.
    }

    fn start(&self, myself: &ActorRef<IngressMsg>, state: &mut IngressState, key: (TenantId, i64)) {
        state.in_flight.insert(key);
        let deps = self.deps.clone();
        let policy = self.policy;
        let myself = myself.clone();
        tokio::spawn(async move {
            let (tenant_id, event_id) = key;
            // A panic in processing must not leak the in-flight slot: the work runs in its own
            // task and `Finished` is sent whatever became of it.
            let work = tokio::spawn(handle_event(deps, policy, tenant_id, event_id));
            if let Err(err) = work.await {
                tracing::error!(%tenant_id, event_id, error = %err, "inbox event processing panicked");
            }
            let _ = myself.cast(IngressMsg::Finished { tenant_id, event_id });
        });
    }

    fn sweep(&self, myself: &ActorRef<IngressMsg>) {
        let deps = self.deps.clone();
        let directory = self.directory.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let now = deps.clock.now();
            match directory.active_tenants().await {
                Ok(tenants) => {
                    let mut oldest_opt: Option<Timestamp> = None;
                    for tenant_id in tenants {
                        match deps.inbox.unprocessed_events(tenant_id, now, 500).await {
                            Ok(events) => {
                                for event in events {
                                    oldest_opt =
                                        Some(oldest_opt.map_or(event.received_at, |o| o.min(event.received_at)));
                                    let _ = myself.cast(IngressMsg::EventCommitted { tenant_id, event_id: event.id });
                                }
                            }
                            Err(err) => tracing::warn!(%tenant_id, error = %err, "inbox sweep failed"),
                        }
                    }
                    let lag = oldest_opt.map_or(0.0, |oldest| now.duration_since(oldest).as_secs_f64().max(0.0));
                    metrics::gauge!("leadorch_inbox_lag_seconds").set(lag);
                }
                Err(err) => tracing::warn!(error = %err, "inbox sweep could not list tenants"),
            }
            let _ = myself.cast(IngressMsg::SweepFinished);
        });
    }
}

async fn handle_event(deps: IntakeDeps, policy: IngressPolicy, tenant_id: TenantId, event_id: i64) {
    let event = match deps.inbox.get_event(tenant_id, event_id).await {
        Ok(event) if event.processed_at_opt.is_none() => event,
        Ok(_) => return,
        Err(err) => {
            tracing::warn!(%tenant_id, event_id, error = %err, "inbox event could not be read");
            return;
        }
    };
    let result = process_event(&deps, &event).await;
    let recorded = match result {
        Ok(outcome) => {
            metrics::counter!("leadorch_inbox_events_total", "outcome" => outcome.label()).increment(1);
            deps.inbox.mark_event_processed(tenant_id, event_id, outcome.label()).await
        }
        Err(err) if err.is_retryable() && event.attempts + 1 < policy.max_attempts => {
            let wait = policy.backoff(event.attempts);
            tracing::warn!(%tenant_id, event_id, attempt = event.attempts + 1, error = %err, retry_in_s = wait.as_secs(), "inbox event will be retried");
            metrics::counter!("leadorch_inbox_events_total", "outcome" => "retry").increment(1);
            let next = deps.clock.now() + SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_secs(60));
            deps.inbox.record_event_failure(tenant_id, event_id, &error_chain(&err), next).await
        }
        Err(err) => {
            tracing::error!(%tenant_id, event_id, error = %err, "inbox event failed for good");
            metrics::counter!("leadorch_inbox_events_total", "outcome" => "failed").increment(1);
            deps.inbox.mark_event_processed(tenant_id, event_id, &format!("failed: {}", error_chain(&err))).await
        }
    };
    if let Err(err) = recorded {
        // Not recorded: the row stays unprocessed and the sweep takes it again.
        tracing::warn!(%tenant_id, event_id, error = %err, "inbox outcome could not be recorded");
    }
}

#[cfg(test)]
mod tests;
