//! Routes new leads to their location actor, starting that actor under the root supervisor when
//! the location was added after boot.

use std::sync::{Arc, OnceLock};

use super::{LocationActor, LocationMsg, LocationRegistry};
use crate::actors::lead::LeadDeps;
use crate::actors::supervisor::{ChildSpec, RootHandle};
use crate::domain::{Lead, Location};
use crate::intake::LeadRouter;

/// Returns the root supervisor's child spec of a location actor.
pub fn location_child_spec(location: Location, lead_deps: Arc<LeadDeps>, registry: LocationRegistry) -> ChildSpec {
    ChildSpec {
        name: format!("location:{}", location.id),
        kind: "location",
        spawn: Arc::new(move |supervisor| {
            let behaviour = LocationActor::new(lead_deps.clone(), registry.clone());
            let location = location.clone();
            Box::pin(async move {
                let (actor, _join) = ractor::Actor::spawn_linked(None, behaviour, location, supervisor).await?;
                Ok(actor.get_cell())
            })
        }),
    }
}

/// The [`LeadRouter`] over the actor tree.
#[derive(Debug)]
pub struct ActorLeadRouter {
    registry: LocationRegistry,
    lead_deps: Arc<LeadDeps>,
    /// Set once the root supervisor runs (it is built after the intake that uses this router).
    root: OnceLock<RootHandle>,
}

impl ActorLeadRouter {
    /// Creates a router over the registry; call [`ActorLeadRouter::attach_root`] once the root runs.
    pub fn new(registry: LocationRegistry, lead_deps: Arc<LeadDeps>) -> Self {
        ActorLeadRouter { registry, lead_deps, root: OnceLock::new() }
    }

    /// Gives the router the root supervisor, to start location actors on demand.
    pub fn attach_root(&self, root: RootHandle) {
        let _ = self.root.set(root);
    }
}

#[async_trait::async_trait]
impl LeadRouter for ActorLeadRouter {
    async fn lead_created(&self, lead: &Lead, location: &Location) {
        if self.registry.get(location.id).is_none() {
            if let Some(root) = self.root.get() {
                let spec = location_child_spec(location.clone(), self.lead_deps.clone(), self.registry.clone());
                root.add_child(spec).await;
            }
        }
        match self.registry.get(location.id) {
            Some(actor) => {
                if actor.cast(LocationMsg::LeadCreated(lead.id)).is_err() {
                    tracing::warn!(lead_id = %lead.id, location_id = %location.id, "location actor stopped; lead waits for the scheduler");
                }
            }
            None => {
                tracing::warn!(lead_id = %lead.id, location_id = %location.id, "no location actor; lead waits for the scheduler")
            }
        }
    }
}
