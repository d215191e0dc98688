use jiff::{SignedDuration, Timestamp};

use crate::ports::Clock;

use super::*;
use crate::testing::{FakeCrm, InMemoryStore, ManualClock, RecordingRouter, fixtures, intake_deps};

struct World {
    deps: IntakeDeps,
    store: InMemoryStore,
    crm: FakeCrm,
    clock: ManualClock,
    tenant_id: TenantId,
}

fn world() -> World {
    let store = InMemoryStore::default();
    let crm = FakeCrm::default();
    let clock = ManualClock::new("2026-11-26T12:00:00Z".parse().expect("ts"));
    let tenant_id = TenantId::new();
    store.add_location(fixtures::location(tenant_id, "loc_1"));
    let deps = intake_deps(&store, &crm, &clock, &RecordingRouter::default());
    World { deps, store, crm, clock, tenant_id }
}

fn add(world: &World, id: &str, updated: Timestamp) {
    world.crm.add_order(fixtures::estimate(id, "loc_1", updated), fixtures::customer(id), Some(fixtures::vehicle(id)));
}

async fn poll(world: &World) -> JobRun {
    poll_once(world.deps.clone(), Arc::new(world.store.clone()), PollerPolicy::default(), world.tenant_id).await
}

#[tokio::test]
async fn a_first_poll_takes_recent_orders_and_records_its_run_and_cursor() {
    let world = world();
    let now = world.clock.now();
    add(&world, "ord_recent", now - SignedDuration::from_mins(10));
    add(&world, "ord_ancient", now - SignedDuration::from_hours(5));

    let run = poll(&world).await;

    assert_eq!(run.items_new, 1);
    assert_eq!(run.error_opt, None);
    assert_eq!(world.store.leads().len(), 1);
    assert_eq!(world.store.leads()[0].crm_order_id, "ord_recent");
    assert_eq!(run.cursor_opt, Some((now - SignedDuration::from_mins(10)).to_string()));
    assert_eq!(world.store.runs().len(), 1);
}

#[tokio::test]
async fn overlapping_windows_never_make_a_second_lead() {
    let world = world();
    let now = world.clock.now();
    add(&world, "ord_1", now - SignedDuration::from_mins(1));
    poll(&world).await;
    world.clock.advance(SignedDuration::from_secs(30));
    add(&world, "ord_2", world.clock.now());

    let second = poll(&world).await;

    assert_eq!(second.items_new, 1, "only the new order is new");
    assert!(second.items_seen >= 2, "the overlap re-read the first order");
    assert_eq!(world.store.leads().len(), 2);
}

#[tokio::test]
async fn more_than_one_page_is_followed() {
    let world = world();
    let now = world.clock.now();
    for i in 0..230 {
        add(&world, &format!("ord_{i:03}"), now - SignedDuration::from_secs(i));
    }

    let run = poll(&world).await;

    assert_eq!(run.items_new, 230);
    assert_eq!(world.store.leads().len(), 230);
}

#[tokio::test]
async fn a_failed_listing_keeps_the_old_cursor_so_the_window_is_read_again() {
    let world = world();
    let now = world.clock.now();
    add(&world, "ord_1", now - SignedDuration::from_mins(1));
    let first = poll(&world).await;
    world.crm.fail_next(1);

    let failed = poll(&world).await;

    assert!(failed.error_opt.is_some());
    assert_eq!(failed.cursor_opt, first.cursor_opt);
    let last_good = world.store.last_cursor(world.tenant_id, POLL_JOB).await.expect("cursor");
    assert_eq!(last_good, first.cursor_opt);
}

#[tokio::test]
async fn a_poller_actor_polls_at_start_and_on_its_interval() {
    let world = world();
    add(&world, "ord_1", world.clock.now());
    let policy = PollerPolicy { every: Duration::from_millis(50), ..PollerPolicy::default() };
    let (actor, _join) =
        Actor::spawn(None, Poller::new(world.deps.clone(), Arc::new(world.store.clone()), policy), world.tenant_id)
            .await
            .expect("starts");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while world.store.runs().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "poller did not run three times");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert_eq!(world.store.leads().len(), 1);
    actor.stop(None);
}
