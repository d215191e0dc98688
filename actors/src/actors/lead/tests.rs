use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::actors::location::{LocationActor, LocationRegistry};
use crate::domain::{Channel, LeadStatus, NewLead, NewTouchpoint, Phone, TouchpointStatus};
use crate::ports::SendError;
use crate::testing::{InMemoryStore, RecordingSender, fixtures, lead_deps};

struct World {
    store: InMemoryStore,
    sender: RecordingSender,
    location: Location,
    actor: ActorRef<LocationMsg>,
}

fn quick_policy() -> LeadPolicy {
    LeadPolicy {
        retry_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        ..LeadPolicy::default()
    }
}

async fn world(sms_rate_per_sec: f64, policy: LeadPolicy) -> World {
    let store = InMemoryStore::default();
    let sender = RecordingSender::default();
    let mut location = fixtures::location(TenantId::new(), "loc_1");
    location.sms_from_opt = Some(Phone::parse("5125550100").expect("phone"));
    location.email_from_opt = Some(crate::domain::Email::parse("shop@example.com").expect("email"));
    location.sms_rate_per_sec = sms_rate_per_sec;
    store.add_location(location.clone());
    let deps = lead_deps(&store, &sender, Arc::new(crate::ports::SystemClock), policy);
    let (actor, _join) = Actor::spawn(None, LocationActor::new(deps, LocationRegistry::default()), location.clone())
        .await
        .expect("starts");
    World { store, sender, location, actor }
}

fn step(index: u32, channel: Channel, at: Timestamp) -> NewTouchpoint {
    NewTouchpoint {
        step_index: index,
        channel,
        template: format!("step{index}"),
        intended_at: at,
        scheduled_at: at,
        placement_reason_opt: None,
    }
}

async fn add_lead(world: &World, order: &str, phone: &str, plan: &[NewTouchpoint]) -> Lead {
    let new = NewLead {
        tenant_id: world.location.tenant_id,
        location_id: world.location.id,
        crm_source: "shopmonkey".into(),
        crm_order_id: order.into(),
        crm_customer_id_opt: None,
        first_name_opt: Some("Pat".into()),
        last_name_opt: None,
        phone_opt: Some(Phone::parse(phone).expect("phone")),
        email_opt: Some(crate::domain::Email::parse("pat@example.com").expect("email")),
        vehicle_opt: None,
        requested_services: vec![],
        received_at: Timestamp::now(),
    };
    world.store.create_lead(&new, None, plan).await.expect("created").lead().clone()
}

fn touches_of(world: &World, lead: &Lead) -> Vec<Touchpoint> {
    let mut touches: Vec<_> = world.store.touches().into_iter().filter(|t| t.lead_id == lead.id).collect();
    touches.sort_by_key(|t| t.step_index);
    touches
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_new_leads_due_sms_and_email_go_out_at_once_and_later_ones_wait() {
    let world = world(10.0, quick_policy()).await;
    let now = Timestamp::now();
    let plan = [
        step(0, Channel::Sms, now),
        step(1, Channel::Email, now),
        step(2, Channel::Sms, now + SignedDuration::from_hours(1)),
    ];
    let lead = add_lead(&world, "o1", "2125550142", &plan).await;

    world.actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");

    wait_until("both first touches sent", || world.sender.sent().len() == 2).await;
    let touches = touches_of(&world, &lead);
    wait_until("recorded", || touches_of(&world, &lead)[..2].iter().all(|t| t.status == TouchpointStatus::Sent)).await;
    assert_eq!(touches[2].status, TouchpointStatus::Pending);
    assert!(world.store.leads()[0].first_touch_at_opt.is_some(), "speed-to-lead is recorded on the lead");
    world.actor.stop(None);
}

#[tokio::test]
async fn a_provider_failing_twice_then_succeeding_sends_once_after_three_attempts() {
    let world = world(10.0, quick_policy()).await;
    world.sender.fail_with(vec![SendError::Unavailable("500".into()), SendError::Unavailable("500".into())]);
    let lead = add_lead(&world, "o1", "2125550142", &[step(0, Channel::Sms, Timestamp::now())]).await;

    world.actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");

    wait_until("sent", || touches_of(&world, &lead)[0].status == TouchpointStatus::Sent).await;
    assert_eq!(touches_of(&world, &lead)[0].attempts, 3);
    assert_eq!(world.sender.sent().len(), 1);
    world.actor.stop(None);
}

#[tokio::test]
async fn nothing_leaves_for_a_lead_that_replied_and_its_pending_touches_are_cancelled() {
    let world = world(10.0, quick_policy()).await;
    let lead = add_lead(&world, "o1", "2125550142", &[step(0, Channel::Sms, Timestamp::now())]).await;
    world.store.set_lead_status(lead.id, LeadStatus::Replied);

    world
        .actor
        .cast(LocationMsg::ToLead(lead.id, LeadMsg::TouchDue(touches_of(&world, &lead)[0].id, Timestamp::now())))
        .expect("alive");

    wait_until("cancelled", || touches_of(&world, &lead)[0].status == TouchpointStatus::Cancelled).await;
    assert!(world.sender.sent().is_empty());
    world.actor.stop(None);
}

#[tokio::test]
async fn an_opted_out_phone_gets_no_sms() {
    let world = world(10.0, quick_policy()).await;
    let lead = add_lead(&world, "o1", "2125550142", &[step(0, Channel::Sms, Timestamp::now())]).await;
    world.store.opt_out(world.location.tenant_id, "sms", "+12125550142");

    world.actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");

    wait_until("cancelled", || touches_of(&world, &lead)[0].status == TouchpointStatus::Cancelled).await;
    assert!(world.sender.sent().is_empty());
    world.actor.stop(None);
}

#[tokio::test]
async fn a_touch_that_would_go_out_stale_is_skipped_and_recorded() {
    let world = world(10.0, quick_policy()).await;
    let long_ago = Timestamp::now() - SignedDuration::from_hours(5);
    let lead = add_lead(&world, "o1", "2125550142", &[step(0, Channel::Email, long_ago)]).await;

    world.actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");

    wait_until("skipped", || touches_of(&world, &lead)[0].status == TouchpointStatus::Skipped).await;
    assert!(touches_of(&world, &lead)[0].last_error_opt.as_deref().is_some_and(|e| e.starts_with("stale")));
    assert!(world.sender.sent().is_empty());
    world.actor.stop(None);
}

#[tokio::test]
async fn an_invalid_number_fails_the_touch_and_cancels_the_leads_other_sms() {
    let world = world(10.0, quick_policy()).await;
    world.sender.fail_with(vec![SendError::InvalidRecipient { code_opt: Some(21211), message: "bad".into() }]);
    let now = Timestamp::now();
    let plan = [
        step(0, Channel::Sms, now),
        step(1, Channel::Sms, now + SignedDuration::from_hours(30)),
        step(2, Channel::Email, now + SignedDuration::from_hours(30)),
    ];
    let lead = add_lead(&world, "o1", "2125550142", &plan).await;

    world.actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");

    wait_until("failed", || touches_of(&world, &lead)[0].status == TouchpointStatus::Failed).await;
    wait_until("later sms cancelled", || touches_of(&world, &lead)[1].status == TouchpointStatus::Cancelled).await;
    assert_eq!(touches_of(&world, &lead)[2].status, TouchpointStatus::Pending, "email still goes");
    world.actor.stop(None);
}

#[tokio::test]
async fn a_burst_of_leads_is_paced_at_the_locations_rate_with_first_touches_first() {
    let rate = 50.0;
    let world = world(rate, quick_policy()).await;
    let now = Timestamp::now();
    let mut leads = Vec::new();
    for i in 0..40 {
        leads.push(add_lead(&world, &format!("o{i}"), &format!("21255501{i:02}"), &[step(0, Channel::Sms, now)]).await);
    }

    for lead in &leads {
        world.actor.cast(LocationMsg::LeadCreated(lead.id)).expect("alive");
    }

    wait_until("all sent", || world.sender.sent().len() == 40).await;
    let sent = world.sender.sent();
    let span = sent[0].2.duration_until(sent[39].2);
    // 40 messages at 50/s cannot take less than 39 intervals of 20 ms.
    assert!(span >= SignedDuration::from_millis(39 * 20 - 5), "too fast: {span:?}");
    assert!(world.store.touches().iter().all(|t| t.status == TouchpointStatus::Sent && t.attempts == 1));
    world.actor.stop(None);
}

#[tokio::test]
async fn a_lead_paused_after_its_actor_loaded_it_sends_nothing_until_resumed() {
    let world = world(10.0, quick_policy()).await;
    let now = Timestamp::now();
    let lead = add_lead(&world, "o1", "2125550142", &[step(0, Channel::Sms, now)]).await;
    // Activate the actor while the lead is still in cadence, then pause it behind its back.
    world
        .actor
        .cast(LocationMsg::ToLead(
            lead.id,
            LeadMsg::GetLead(ractor::RpcReplyPort::from(tokio::sync::oneshot::channel().0)),
        ))
        .expect("alive");
    world.store.set_lead_status(lead.id, LeadStatus::Paused);

    world
        .actor
        .cast(LocationMsg::ToLead(lead.id, LeadMsg::TouchDue(touches_of(&world, &lead)[0].id, now)))
        .expect("alive");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(world.sender.sent().is_empty(), "a paused lead gets nothing");
    assert_eq!(touches_of(&world, &lead)[0].status, TouchpointStatus::Pending, "the touch waits for a resume");
    world.store.set_lead_status(lead.id, LeadStatus::InCadence);
    world
        .actor
        .cast(LocationMsg::ToLead(lead.id, LeadMsg::TouchDue(touches_of(&world, &lead)[0].id, now)))
        .expect("alive");
    wait_until("sent after resume", || world.sender.sent().len() == 1).await;
    world.actor.stop(None);
}
