//! `LocationActor`: one per active location. It is the parent of that location's live lead
//! actors: it activates a lead actor on demand (a message to an inactive lead starts it first),
//! forgets it when it stops, and is found through the id-keyed [`LocationRegistry`].

mod router;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::lead::{LeadActor, LeadArgs, LeadDeps, LeadMsg};
use crate::domain::{LeadId, Location, LocationId};

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
    /// Query: how many lead actors of this location are live.
    GetLiveLeads(RpcReplyPort<usize>),
}

/// What a location actor holds.
#[derive(Debug)]
pub struct LocationState {
    location: Location,
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
        let args = LeadArgs { tenant_id: self.location.tenant_id, lead_id };
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
        Ok(LocationState { location, live: HashMap::new(), lead_of_actor: HashMap::new() })
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
            LocationMsg::GetLiveLeads(reply) => {
                let _ = reply.send(state.live.len());
            }
        }
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

/// Asks a location actor how many of its leads are live; `None` if it did not answer in time.
pub async fn live_leads(actor: &ActorRef<LocationMsg>) -> Option<usize> {
    match actor.call(LocationMsg::GetLiveLeads, Some(Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(count)) => Some(count),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
