use std::time::Instant;

use jiff::Timestamp;

use super::*;
use crate::actors::lead::LeadPolicy;
use crate::ports::LeadStore as _;
use crate::testing::{InMemoryStore, RecordingSender, fixtures, lead_deps};

async fn live(actor: &ActorRef<LocationMsg>) -> usize {
    live_leads(actor).await.expect("location answers")
}

async fn wait_for_live(actor: &ActorRef<LocationMsg>, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while live(actor).await != expected {
        assert!(Instant::now() < deadline, "live leads never became {expected}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_new_lead_activates_one_actor_that_stops_itself_when_idle() {
    let store = InMemoryStore::default();
    let location = fixtures::location(crate::domain::TenantId::new(), "loc_1");
    store.add_location(location.clone());
    let new = crate::domain::NewLead {
        tenant_id: location.tenant_id,
        location_id: location.id,
        crm_source: "shopmonkey".into(),
        crm_order_id: "ord_1".into(),
        crm_customer_id_opt: None,
        first_name_opt: Some("Pat".into()),
        last_name_opt: None,
        phone_opt: None,
        email_opt: None,
        vehicle_opt: None,
        requested_services: Vec::new(),
        received_at: Timestamp::now(),
    };
    let lead = store.create_lead(&new, None, &[]).await.expect("created").lead().clone();
    let policy = LeadPolicy { idle_after: Duration::from_millis(200), ..LeadPolicy::default() };
    let deps = lead_deps(&store, &RecordingSender::default(), Arc::new(crate::ports::SystemClock), policy);
    let registry = LocationRegistry::default();
    let (actor, _join) =
        Actor::spawn(None, LocationActor::new(deps, registry.clone()), location.clone()).await.expect("starts");
    assert!(registry.get(location.id).is_some(), "the location registers itself");

    actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");
    actor.cast(LocationMsg::ToLead(lead.id, LeadMsg::Wake)).expect("alive");

    wait_for_live(&actor, 1).await;
    wait_for_live(&actor, 0).await;
    actor.stop(None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(registry.get(location.id).is_none(), "a stopped location leaves the registry");
}

#[tokio::test]
async fn a_lead_that_cannot_be_loaded_leaves_no_actor_behind() {
    let store = InMemoryStore::default();
    let location = fixtures::location(crate::domain::TenantId::new(), "loc_1");
    let deps =
        lead_deps(&store, &RecordingSender::default(), Arc::new(crate::ports::SystemClock), LeadPolicy::default());
    let (actor, _join) =
        Actor::spawn(None, LocationActor::new(deps, LocationRegistry::default()), location).await.expect("starts");

    actor.cast(LocationMsg::LeadCreated(LeadId::new())).expect("alive");

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(live(&actor).await, 0);
    actor.stop(None);
}
