//! `Scheduler`: wakes lead actors whose touches are due. Every tick it reads, per tenant, the
//! pending touches due within a short look-ahead (an index scan on `(status, scheduled_at)`)
//! and routes each to its location, which activates the lead actor; the lead arms a timer for
//! the exact time. Touches further out stay in Postgres only, so idle leads cost no memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::lead::LeadMsg;
use super::location::{LocationMsg, LocationRegistry};
use crate::domain::TouchpointId;
use crate::ports::{Clock, Directory, DueTouch, TouchStore};

/// Timings of the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerPolicy {
    pub tick: Duration,
    /// How far ahead touches are handed to their lead actors (who arm exact timers).
    pub lookahead: Duration,
    /// Due touches read per tenant per tick.
    pub batch: i64,
    /// A touch handed out is not handed out again for this long (its lead owns it meanwhile).
    pub redispatch_after: Duration,
}

impl Default for SchedulerPolicy {
    fn default() -> Self {
        SchedulerPolicy {
            tick: Duration::from_millis(250),
            lookahead: Duration::from_secs(2),
            batch: 5_000,
            redispatch_after: Duration::from_secs(15),
        }
    }
}

/// The actor.
#[derive(Debug)]
pub struct Scheduler {
    touches: Arc<dyn TouchStore>,
    directory: Arc<dyn Directory>,
    registry: LocationRegistry,
    clock: Arc<dyn Clock>,
    policy: SchedulerPolicy,
}

impl Scheduler {
    /// Creates the behaviour.
    pub fn new(
        touches: Arc<dyn TouchStore>,
        directory: Arc<dyn Directory>,
        registry: LocationRegistry,
        clock: Arc<dyn Clock>,
        policy: SchedulerPolicy,
    ) -> Self {
        Scheduler { touches, directory, registry, clock, policy }
    }
}

/// Messages to the scheduler.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// From its timer.
    Tick,
    /// From a scan task: these touches are due.
    Scanned(Vec<DueTouch>),
    /// From a scan task: the scan is over.
    ScanFinished,
}

/// What the scheduler remembers between ticks.
#[derive(Debug, Default)]
pub struct SchedulerState {
    scanning: bool,
    /// Touches handed out recently, with the scheduled time they were handed out for.
    dispatched: HashMap<TouchpointId, (Timestamp, Instant)>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<SchedulerMsg>, _args: ()) -> Result<SchedulerState, ActorProcessingErr> {
        metrics::gauge!("leadorch_actors_alive", "kind" => "scheduler").increment(1.0);
        myself.send_interval(self.policy.tick, || SchedulerMsg::Tick);
        Ok(SchedulerState::default())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        _state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("leadorch_actors_alive", "kind" => "scheduler").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Tick if !state.scanning => {
                state.scanning = true;
                let expiry = self.policy.redispatch_after;
                state.dispatched.retain(|_, (_, at)| at.elapsed() < expiry);
                self.scan(&myself);
            }
            SchedulerMsg::Tick => {}
            SchedulerMsg::Scanned(due) => {
                for item in due {
                    let key = item.touch.id;
                    if state.dispatched.get(&key).is_some_and(|(at, _)| *at == item.touch.scheduled_at) {
                        continue;
                    }
                    let Some(location) = self.registry.get(item.location_id) else {
                        tracing::warn!(location_id = %item.location_id, touchpoint_id = %key, "due touch has no running location");
                        continue;
                    };
                    if location
                        .cast(LocationMsg::ToLead(item.touch.lead_id, LeadMsg::TouchDue(key, item.touch.scheduled_at)))
                        .is_ok()
                    {
                        state.dispatched.insert(key, (item.touch.scheduled_at, Instant::now()));
                    }
                }
            }
            SchedulerMsg::ScanFinished => state.scanning = false,
        }
        Ok(())
    }
}

impl Scheduler {
    fn scan(&self, myself: &ActorRef<SchedulerMsg>) {
        let touches = self.touches.clone();
        let directory = self.directory.clone();
        let now = self.clock.now();
        let until = now + SignedDuration::try_from(self.policy.lookahead).unwrap_or(SignedDuration::from_secs(2));
        let batch = self.policy.batch;
        let myself = myself.clone();
        tokio::spawn(async move {
            match directory.active_tenants().await {
                Ok(tenants) => {
                    for tenant_id in tenants {
                        match touches.due_touches(tenant_id, until, batch).await {
                            Ok(due) if !due.is_empty() => {
                                let _ = myself.cast(SchedulerMsg::Scanned(due));
                            }
                            Ok(_) => {}
                            Err(err) => tracing::warn!(%tenant_id, error = %err, "due touches could not be read"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "scheduler could not list tenants"),
            }
            let _ = myself.cast(SchedulerMsg::ScanFinished);
        });
    }
}
