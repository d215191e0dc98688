use std::time::Instant;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::testing::{FakeCrm, InMemoryStore, ManualClock, RecordingRouter, fixtures, intake_deps};

struct World {
    store: InMemoryStore,
    crm: FakeCrm,
    clock: ManualClock,
    tenant_id: TenantId,
    handle: IngressHandle,
}

fn deps(store: &InMemoryStore, crm: &FakeCrm, clock: &ManualClock) -> IntakeDeps {
    intake_deps(store, crm, clock, &RecordingRouter::default())
}

async fn start(world: &World, policy: IngressPolicy) -> ActorRef<IngressMsg> {
    let behaviour = WebhookIngress::new(
        deps(&world.store, &world.crm, &world.clock),
        Arc::new(world.store.clone()),
        policy,
        world.handle.clone(),
    );
    let (actor, _join) = Actor::spawn(None, behaviour, ()).await.expect("ingress starts");
    actor
}

fn world_with_orders(order_ids: &[&str]) -> World {
    let store = InMemoryStore::default();
    let crm = FakeCrm::default();
    let tenant_id = TenantId::new();
    store.add_location(fixtures::location(tenant_id, "loc_1"));
    for id in order_ids {
        crm.add_order(
            fixtures::estimate(id, "loc_1", Timestamp::UNIX_EPOCH),
            fixtures::customer(id),
            Some(fixtures::vehicle(id)),
        );
    }
    World { store, crm, clock: ManualClock::new(Timestamp::now()), tenant_id, handle: IngressHandle::default() }
}

fn commit(world: &World, order_id: &str) -> i64 {
    match world.store.commit_event(
        world.tenant_id,
        order_id,
        json!({"table": "order", "data": {"id": order_id}}),
        Timestamp::now(),
    ) {
        crate::domain::InboxInsert::Inserted(id) => id,
        crate::domain::InboxInsert::Duplicate => panic!("duplicate"),
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn quick() -> IngressPolicy {
    IngressPolicy { sweep_every: Duration::from_millis(50), ..IngressPolicy::default() }
}

#[tokio::test]
async fn a_committed_event_announced_through_the_handle_becomes_a_lead() {
    let world = world_with_orders(&["ord_1"]);
    let actor =
        start(&world, IngressPolicy { sweep_every: Duration::from_secs(3600), ..IngressPolicy::default() }).await;
    let id = commit(&world, "ord_1");

    assert!(world.handle.event_committed(world.tenant_id, id));

    wait_until(|| world.store.leads().len() == 1).await;
    wait_until(|| world.store.events()[0].outcome_opt.as_deref() == Some("lead_created")).await;
    actor.stop(None);
}

#[tokio::test]
async fn events_committed_before_the_ingress_started_are_replayed_at_start() {
    let world = world_with_orders(&["ord_1", "ord_2"]);
    commit(&world, "ord_1");
    commit(&world, "ord_2");

    let actor = start(&world, quick()).await;

    wait_until(|| world.store.leads().len() == 2).await;
    actor.stop(None);
}

#[tokio::test]
async fn a_panic_while_processing_loses_nothing_and_the_event_is_processed_again() {
    let world = world_with_orders(&["ord_1"]);
    world.crm.panic_next(1);
    commit(&world, "ord_1");

    let actor = start(&world, quick()).await;

    wait_until(|| world.store.leads().len() == 1).await;
    assert!(world.crm.calls() >= 2, "the order was fetched again after the panic");
    actor.stop(None);
}

#[tokio::test]
async fn a_crm_outage_is_recorded_on_the_row_and_retried_after_its_backoff() {
    let world = world_with_orders(&["ord_1"]);
    world.crm.fail_next(1);
    commit(&world, "ord_1");

    let actor = start(&world, quick()).await;

    wait_until(|| world.store.events()[0].attempts == 1).await;
    let event = world.store.events()[0].clone();
    assert!(event.processed_at_opt.is_none());
    assert!(event.last_error_opt.as_deref().is_some_and(|e| e.contains("unavailable")), "{event:?}");
    // Nothing happens before the retry time, however often the sweep runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(world.store.leads().is_empty());
    world.clock.advance(jiff::SignedDuration::from_secs(5));
    wait_until(|| world.store.leads().len() == 1).await;
    actor.stop(None);
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_closed_after_its_attempts_and_kept() {
    let world = world_with_orders(&["ord_1"]);
    world.crm.fail_next(usize::MAX);
    commit(&world, "ord_1");

    let actor = start(&world, IngressPolicy { max_attempts: 3, ..quick() }).await;
    for _ in 0..3 {
        world.clock.advance(jiff::SignedDuration::from_secs(600));
        tokio::time::sleep(Duration::from_millis(120)).await;
    }

    wait_until(|| world.store.events()[0].processed_at_opt.is_some()).await;
    let event = world.store.events()[0].clone();
    assert!(event.outcome_opt.as_deref().is_some_and(|o| o.starts_with("failed")), "{event:?}");
    assert_eq!(event.attempts, 3);
    assert!(world.store.leads().is_empty());
    actor.stop(None);
}

#[test]
fn the_retry_backoff_doubles_and_is_capped() {
    let policy = IngressPolicy { max_backoff: Duration::from_secs(10), ..IngressPolicy::default() };
    assert_eq!(policy.backoff(0), Duration::from_secs(1));
    assert_eq!(policy.backoff(2), Duration::from_secs(4));
    assert_eq!(policy.backoff(9), Duration::from_secs(10));
}
