//! `LeadActor`: drives one lead. It is virtual: activated (by its location) when the lead needs
//! work, it rebuilds its state from the store, and it stops itself once idle, because the lead's
//! state lives in Postgres and a million leads in cadence must not mean a million live actors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::{Lead, LeadId, TenantId};
use crate::ports::LeadStore;

/// What every lead actor needs; shared by all of them.
#[derive(Debug)]
pub struct LeadDeps {
    pub leads: Arc<dyn LeadStore>,
    /// How long a lead actor stays alive without work before it stops itself.
    pub idle_after: Duration,
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

/// Which lead to activate.
#[derive(Debug, Clone, Copy)]
pub struct LeadArgs {
    pub tenant_id: TenantId,
    pub lead_id: LeadId,
}

/// Messages to a lead actor.
#[derive(Debug)]
pub enum LeadMsg {
    /// From its location: the lead was just created, or something happened to it; re-read it.
    Wake,
    /// From itself, on a timer: stop if nothing happened for `idle_after`.
    IdleCheck,
    /// Query (tests, staff views): the lead as this actor sees it.
    GetLead(ractor::RpcReplyPort<Lead>),
}

/// What a live lead actor holds.
#[derive(Debug)]
pub struct LeadState {
    lead: Lead,
    last_activity: Instant,
}

impl Actor for LeadActor {
    type Msg = LeadMsg;
    type State = LeadState;
    type Arguments = LeadArgs;

    async fn pre_start(&self, myself: ActorRef<LeadMsg>, args: LeadArgs) -> Result<LeadState, ActorProcessingErr> {
        let lead = self.deps.leads.get_lead(args.tenant_id, args.lead_id).await?;
        metrics::gauge!("leadorch_actors_alive", "kind" => "lead").increment(1.0);
        metrics::counter!("leadorch_actor_activations_total", "kind" => "lead").increment(1);
        myself.send_after(self.deps.idle_after, || LeadMsg::IdleCheck);
        Ok(LeadState { lead, last_activity: Instant::now() })
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
        match msg {
            LeadMsg::Wake => {
                state.last_activity = Instant::now();
                match self.deps.leads.get_lead(state.lead.tenant_id, state.lead.id).await {
                    Ok(lead) => state.lead = lead,
                    // The store being briefly unavailable is not the actor's failure; the next
                    // wake-up reads again.
                    Err(err) => tracing::warn!(lead_id = %state.lead.id, error = %err, "lead reload failed"),
                }
            }
            LeadMsg::IdleCheck => {
                let idle_for = state.last_activity.elapsed();
                if idle_for >= self.deps.idle_after {
                    myself.stop(Some("idle".to_owned()));
                } else {
                    myself.send_after(self.deps.idle_after - idle_for, || LeadMsg::IdleCheck);
                }
            }
            LeadMsg::GetLead(reply) => {
                state.last_activity = Instant::now();
                // The asker may have timed out; nothing to do then.
                let _ = reply.send(state.lead.clone());
            }
        }
        Ok(())
    }
}
