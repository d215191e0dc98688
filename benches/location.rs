//! Lead events per second through location actors to their lead actors, in memory: the actor
//! tree's own cost (mailboxes, activation, message handling), no database or provider.
//!
//! Each iteration delivers N = 10,000 lead events over a pool of 2,000 leads: every lead gets
//! `LocationMsg::LeadCreated` (its actor is inactive, so the location activates it: spawns a
//! `LeadActor` linked to itself, whose `pre_start` loads the lead and arms its idle timer, then
//! casts it `Wake`) followed by four `LocationMsg::ToLead(lead, LeadMsg::Wake)` (a live actor:
//! a map lookup and a forwarded message). Events for one lead are interleaved with everyone
//! else's (round robin over the pool), as traffic arrives. Every `Wake` re-reads the lead and
//! its seven-step plan, all pending and due hours to days ahead — beyond the in-memory timer
//! horizon, so nothing is armed or sent: the handling a lead in cadence gets when the CRM
//! tells us something about it. 20% of events thus activate an actor, 80% hit a live one.
//!
//! - `location/one_location`: all N events to ONE location actor (the target is
//!   >= 100,000 lead events/s through one location actor).
//! - `location/spread/{1,10,200}`: the same N events over 1, 10 or 200 location actors, lead j
//!   belonging to location j mod M, so consecutive events go round robin over the locations.
//! - `location/one_location_cold` and `location/one_location_warm`: the two extremes through
//!   one location — N fresh leads, every event an activation; N `Wake`s to 2,000 already-live
//!   actors, none.
//!
//! Completion: every `Wake` ends with exactly one `touches_of` call (the last store read of
//! the handler; the arming loop after it finds nothing due soon), so the store counts them
//! and the iteration ends when the N-th arrives — i.e. when every event has gone through its
//! location and been handled by its lead actor. No extra round trip is added to the timed
//! part; afterwards (untimed) each location is asked `GetLiveLeads` and must report all its
//! leads live. The clock runs from the first `cast` (from the benchmark thread, as the intake
//! or scheduler would cast) to that N-th `Wake`.
//!
//! The leads and plans are created in the `InMemoryStore`, but lead actors read them through
//! a hash-map index of it: the double's `get_lead`/`touches_of` scan a `Vec` under one mutex,
//! O(leads) per read, which would measure the test double rather than the actors. Each
//! iteration runs on a fresh two-worker tokio runtime (this machine's cores), built and
//! dropped outside the timed part: the previous iteration's lead actors and their 60 s idle
//! timers vanish with it. The production Prometheus recorder is installed, so the actors'
//! per-message metrics cost what they cost in the service.
//!
//! `cargo bench --bench location`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use leadorch_actors::actors::lead::{LeadDeps, LeadMsg, LeadPolicy};
use leadorch_actors::actors::location::{LocationActor, LocationMsg, LocationRegistry, live_leads};
use leadorch_actors::domain::{
    CadenceRef, Channel, Email, Lead, LeadCreated, LeadId, LeadStatus, Location, LocationId, NewLead, NewTouchpoint,
    Phone, TenantId, Touchpoint, TouchpointId, TouchpointStatus, WeeklyHours,
};
use leadorch_actors::ports::{DueTouch, LeadStore, StoreError, SystemClock, TouchStore};
use leadorch_actors::testing::{InMemoryStore, PlainRenderer, RecordingSender, fixtures};
use ractor::{Actor, ActorRef};
use tokio::sync::Notify;

/// Lead events per iteration.
const EVENTS: usize = 10_000;
/// Events per lead in the mixed workload: one `LeadCreated`, then `Wake`s.
const EVENTS_PER_LEAD: usize = 5;

/// Counts handled `Wake`s and signals when the expected number is reached.
#[derive(Debug, Default)]
struct Progress {
    handled: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

impl Progress {
    fn expect(&self, target: usize) {
        self.handled.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }

    fn handled_one(&self) {
        if self.handled.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            // Stores a permit if nobody waits yet: the signal cannot be lost.
            self.done.notify_one();
        }
    }
}

/// The `InMemoryStore` with hash-map reads of leads and plans (read-only after seeding) and a
/// count of `touches_of` calls; every other call goes to the `InMemoryStore`.
#[derive(Debug)]
struct IndexedStore {
    inner: InMemoryStore,
    leads: HashMap<LeadId, Lead>,
    plans: HashMap<LeadId, Vec<Touchpoint>>,
    progress: Arc<Progress>,
}

impl IndexedStore {
    fn index(inner: InMemoryStore) -> IndexedStore {
        let leads: HashMap<LeadId, Lead> = inner.leads().into_iter().map(|lead| (lead.id, lead)).collect();
        let mut plans: HashMap<LeadId, Vec<Touchpoint>> = HashMap::new();
        for touch in inner.touches() {
            plans.entry(touch.lead_id).or_default().push(touch);
        }
        for plan in plans.values_mut() {
            plan.sort_by_key(|t| t.step_index);
        }
        IndexedStore { inner, leads, plans, progress: Arc::default() }
    }
}

#[async_trait::async_trait]
impl LeadStore for IndexedStore {
    async fn location_by_crm_id(&self, tenant_id: TenantId, crm_id: &str) -> Result<Option<Location>, StoreError> {
        self.inner.location_by_crm_id(tenant_id, crm_id).await
    }

    async fn lead_by_crm_order(
        &self,
        tenant_id: TenantId,
        crm_source: &str,
        crm_order_id: &str,
    ) -> Result<Option<Lead>, StoreError> {
        self.inner.lead_by_crm_order(tenant_id, crm_source, crm_order_id).await
    }

    async fn create_lead(
        &self,
        new: &NewLead,
        cadence_opt: Option<CadenceRef<'_>>,
        plan: &[NewTouchpoint],
    ) -> Result<LeadCreated, StoreError> {
        self.inner.create_lead(new, cadence_opt, plan).await
    }

    async fn get_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Lead, StoreError> {
        self.leads.get(&lead_id).filter(|lead| lead.tenant_id == tenant_id).cloned().ok_or(StoreError::NotFound)
    }

    async fn stop_lead(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        status: LeadStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.inner.stop_lead(tenant_id, lead_id, status, reason).await
    }

    async fn leads_of_customer(&self, tenant_id: TenantId, crm_customer_id: &str) -> Result<Vec<Lead>, StoreError> {
        self.inner.leads_of_customer(tenant_id, crm_customer_id).await
    }

    async fn location_hours(&self, tenant_id: TenantId, location_id: LocationId) -> Result<WeeklyHours, StoreError> {
        self.inner.location_hours(tenant_id, location_id).await
    }
}

#[async_trait::async_trait]
impl TouchStore for IndexedStore {
    async fn touches_of(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<Touchpoint>, StoreError> {
        let touches = self
            .plans
            .get(&lead_id)
            .map(|plan| plan.iter().filter(|t| t.tenant_id == tenant_id).cloned().collect())
            .unwrap_or_default();
        self.progress.handled_one();
        Ok(touches)
    }

    async fn due_touches(
        &self,
        tenant_id: TenantId,
        until: Timestamp,
        limit: i64,
    ) -> Result<Vec<DueTouch>, StoreError> {
        self.inner.due_touches(tenant_id, until, limit).await
    }

    async fn claim_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        due_by: Timestamp,
    ) -> Result<Option<Touchpoint>, StoreError> {
        self.inner.claim_touch(tenant_id, touchpoint_id, due_by).await
    }

    async fn record_touch_sent(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
        provider_message_id: &str,
        sent_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.record_touch_sent(tenant_id, touchpoint_id, attempt_id, provider_message_id, sent_at).await
    }

    async fn record_touch_failed(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
        error: &str,
        retry_at_opt: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.inner.record_touch_failed(tenant_id, touchpoint_id, attempt_id, error, retry_at_opt).await
    }

    async fn close_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        status: TouchpointStatus,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.inner.close_touch(tenant_id, touchpoint_id, status, reason).await
    }

    async fn cancel_pending_touches(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        channel_opt: Option<Channel>,
        reason: &str,
    ) -> Result<u64, StoreError> {
        self.inner.cancel_pending_touches(tenant_id, lead_id, channel_opt, reason).await
    }

    async fn confirm_claim(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        self.inner.confirm_claim(tenant_id, touchpoint_id, attempt_id).await
    }

    async fn mark_first_touch(&self, tenant_id: TenantId, lead_id: LeadId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.mark_first_touch(tenant_id, lead_id, at).await
    }
}

/// A seven-step plan starting an hour out: every touch pending, none within the horizon.
fn plan(now: Timestamp) -> Vec<NewTouchpoint> {
    [1, 4, 24, 48, 96, 168, 336]
        .into_iter()
        .enumerate()
        .map(|(i, hours)| {
            let at = now + SignedDuration::from_hours(hours);
            NewTouchpoint {
                step_index: i as u32,
                channel: if i % 2 == 0 { Channel::Sms } else { Channel::Email },
                template: format!("step{i}"),
                intended_at: at,
                scheduled_at: at,
                placement_reason_opt: None,
            }
        })
        .collect()
}

/// `locations` locations of one tenant with `leads` leads between them (lead j at location
/// j mod `locations`), and the lead-actor dependencies over them.
struct World {
    locations: Vec<Location>,
    /// Each lead with its location's index.
    leads: Vec<(LeadId, usize)>,
    deps: Arc<LeadDeps>,
    progress: Arc<Progress>,
}

fn world(locations: usize, leads: usize) -> World {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let store = InMemoryStore::default();
    let tenant_id = TenantId::new();
    let locations: Vec<Location> = (0..locations)
        .map(|i| {
            let mut location = fixtures::location(tenant_id, &format!("loc_{i}"));
            location.sms_from_opt = Some(Phone::parse("5125550100").expect("phone"));
            location.email_from_opt = Some(Email::parse("shop@example.com").expect("email"));
            location.sms_rate_per_sec = 50.0;
            store.add_location(location.clone());
            location
        })
        .collect();
    let now = Timestamp::now();
    let plan = plan(now);
    let mut created = Vec::with_capacity(leads);
    for j in 0..leads {
        let at = j % locations.len();
        let new = NewLead {
            tenant_id,
            location_id: locations[at].id,
            crm_source: "shopmonkey".into(),
            crm_order_id: format!("ord_{j}"),
            crm_customer_id_opt: Some(format!("cus_{j}")),
            first_name_opt: Some("Pat".into()),
            last_name_opt: Some("Lee".into()),
            phone_opt: Some(Phone::parse("2125550142").expect("phone")),
            email_opt: Some(Email::parse("pat@example.com").expect("email")),
            vehicle_opt: None,
            requested_services: vec!["Ceramic tint".into()],
            received_at: now,
        };
        let lead = rt.block_on(store.create_lead(&new, None, &plan)).expect("created").lead().clone();
        created.push((lead.id, at));
    }
    let indexed = Arc::new(IndexedStore::index(store.clone()));
    let progress = indexed.progress.clone();
    let sender = RecordingSender::default();
    let deps = Arc::new(LeadDeps {
        leads: indexed.clone(),
        touches: indexed,
        consent: Arc::new(store),
        sms: Arc::new(sender.clone()),
        email: Arc::new(sender),
        renderer: Arc::new(PlainRenderer),
        clock: Arc::new(SystemClock),
        compliance: Arc::new(leadorch_actors::compliance::ComplianceRules::default()),
        policy: LeadPolicy::default(),
    });
    World { locations, leads: created, deps, progress }
}

/// Which events an iteration delivers.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Per lead: `LeadCreated` then `EVENTS_PER_LEAD - 1` `Wake`s, interleaved over the pool.
    Mixed,
    /// One `LeadCreated` per lead (every event an activation).
    Cold,
    /// `Wake`s only, after every lead was activated (untimed).
    Warm,
}

/// Runs `iters` iterations, each on a fresh runtime, and returns the summed time from the first
/// cast to the last `Wake` handled.
fn run(world: &World, workload: Workload, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        total += rt.block_on(one_iteration(world, workload));
        rt.shutdown_background();
    }
    total
}

async fn one_iteration(world: &World, workload: Workload) -> Duration {
    let registry = LocationRegistry::default();
    let mut actors: Vec<ActorRef<LocationMsg>> = Vec::with_capacity(world.locations.len());
    for location in &world.locations {
        let behaviour = LocationActor::new(world.deps.clone(), registry.clone());
        let (actor, _join) = Actor::spawn(None, behaviour, location.clone()).await.expect("location starts");
        actors.push(actor);
    }
    let rounds = match workload {
        Workload::Mixed => EVENTS_PER_LEAD,
        Workload::Cold => 1,
        Workload::Warm => {
            // Activate every lead first, untimed.
            world.progress.expect(world.leads.len());
            for &(lead_id, at) in &world.leads {
                actors[at].cast(LocationMsg::LeadCreated(lead_id)).expect("location alive");
            }
            wait(&world.progress).await;
            EVENTS / world.leads.len()
        }
    };
    let mut events = Vec::with_capacity(rounds * world.leads.len());
    for round in 0..rounds {
        for &(lead_id, at) in &world.leads {
            let event = if round == 0 && !matches!(workload, Workload::Warm) {
                LocationMsg::LeadCreated(lead_id)
            } else {
                LocationMsg::ToLead(lead_id, LeadMsg::Wake)
            };
            events.push((&actors[at], event));
        }
    }
    assert_eq!(events.len(), EVENTS);
    world.progress.expect(events.len());

    let started = Instant::now();
    for (actor, event) in events {
        actor.cast(event).expect("location alive");
    }
    wait(&world.progress).await;
    let elapsed = started.elapsed();

    let mut live = 0;
    for actor in &actors {
        live += live_leads(actor).await.expect("location answers");
    }
    assert_eq!(live, world.leads.len(), "every lead has a live actor");
    elapsed
}

async fn wait(progress: &Progress) {
    tokio::time::timeout(Duration::from_secs(120), progress.done.notified())
        .await
        .unwrap_or_else(|_| panic!("only {} events handled", progress.handled.load(Ordering::SeqCst)));
}

fn lead_events(c: &mut Criterion) {
    // The service's recorder: the actors' gauges, counters and histograms are live.
    let _metrics = leadorch::http::metrics::recorder();

    let mut group = c.benchmark_group("location");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(EVENTS as u64));

    let one = world(1, EVENTS / EVENTS_PER_LEAD);
    group.bench_function("one_location", |b| b.iter_custom(|iters| run(&one, Workload::Mixed, iters)));
    group.bench_function("one_location_warm", |b| b.iter_custom(|iters| run(&one, Workload::Warm, iters)));
    drop(one);
    let cold = world(1, EVENTS);
    group.bench_function("one_location_cold", |b| b.iter_custom(|iters| run(&cold, Workload::Cold, iters)));
    drop(cold);
    for locations in [1, 10, 200] {
        let spread = world(locations, EVENTS / EVENTS_PER_LEAD);
        group.bench_with_input(BenchmarkId::new("spread", locations), &spread, |b, spread| {
            b.iter_custom(|iters| run(spread, Workload::Mixed, iters));
        });
    }
    group.finish();
}

criterion_group!(benches, lead_events);
criterion_main!(benches);
