//! The touchpoint timeline end to end: webhook in, SMS and email out at the Twilio and SendGrid
//! fakes, retries recorded on the row, pacing per location, exact timers, and idle leads that
//! cost no live actors.

use std::time::{Duration, Instant};

use leadorch::sim::twilio::TwilioFault;
use leadorch_actors::actors::location::live_leads;
use leadorch_actors::domain::{Channel, TouchpointStatus};

use crate::helpers::{COMPANY, CrmWorld, eventually, spawn_crm_world};

/// Sent, or already reported delivered by the provider's callback.
fn went_out(status: TouchpointStatus) -> bool {
    matches!(status, TouchpointStatus::Sent | TouchpointStatus::Delivered)
}

async fn sms_to(world: &CrmWorld, phone_e164: &str) -> Vec<leadorch::sim::twilio::SimSms> {
    world.app.twilio.sent().into_iter().filter(|m| m.to == phone_e164).collect()
}

#[tokio::test]
async fn a_webhook_becomes_one_sms_and_one_email_at_the_fakes_within_one_second() {
    let world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    let customer = world.sim.customer(COMPANY, 0);
    let phone = leadorch_actors::domain::Phone::parse(&customer.phone).expect("phone").to_string();
    let started = Instant::now();

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer.id));

    let both = eventually(Duration::from_secs(1), || async {
        !sms_to(&world, &phone).await.is_empty() && world.app.sendgrid.sent().iter().any(|m| m.to == customer.email)
    })
    .await;
    assert!(both, "sms and email within 1 s (took {:?})", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sms = sms_to(&world, &phone).await;
    assert_eq!(sms.len(), 1, "exactly one sms");
    assert!(sms[0].body.contains(&format!("Hi {}", customer.first_name)), "{}", sms[0].body);
    let token = sms[0].body.split("/c/").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("chat link");
    let links = leadorch::links::LinkSigner::new(
        &secrecy::SecretString::from(crate::helpers::SECRET_KEY.to_owned()),
        "http://127.0.0.1:3000",
        jiff::SignedDuration::from_hours(24),
    );
    assert!(links.verify(token, jiff::Timestamp::now()).is_ok(), "the sms carries a valid chat link: {}", sms[0].body);
    assert_eq!(sms[0].from, world.locations[0].sms_from_opt.as_ref().expect("number").as_str());
    let emails: Vec<_> = world.app.sendgrid.sent().into_iter().filter(|m| m.to == customer.email).collect();
    assert_eq!(emails.len(), 1, "exactly one email");
    let lead = world.lead_for(&order.id, Duration::from_secs(1)).await.expect("lead");
    assert_eq!(emails[0].custom_args.get("lead_id"), Some(&lead.id.to_string()));
    assert!(lead.first_touch_at_opt.is_some(), "speed-to-lead is stored on the lead");
    let touches = world.app.store.touchpoints.for_lead(world.tenant.id, lead.id).await.expect("touches");
    assert_eq!(touches.len(), 7, "the whole default cadence is materialised");
    let sent: Vec<_> = touches.iter().filter(|t| went_out(t.status)).collect();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .any(|t| t.channel == Channel::Sms && t.provider_message_id_opt.as_deref() == Some(sms[0].sid.as_str()))
    );
    let metrics = world.app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("leadorch_speed_to_lead_seconds_bucket"), "speed-to-lead histogram is exported");
    world.teardown().await;
}

#[tokio::test]
async fn twilio_answering_500_twice_then_201_delivers_the_sms_once_after_three_attempts() {
    let world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    world.app.twilio.set_fault(TwilioFault::Status500 { times: 2 });
    let customer = world.sim.customer(COMPANY, 1);
    let phone = leadorch_actors::domain::Phone::parse(&customer.phone).expect("phone").to_string();

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer.id));

    let lead = world.lead_for(&order.id, Duration::from_secs(2)).await.expect("lead");
    let sent = eventually(Duration::from_secs(5), || async {
        let touches = world.app.store.touchpoints.for_lead(world.tenant.id, lead.id).await.expect("touches");
        touches.iter().any(|t| t.step_index == 0 && went_out(t.status))
    })
    .await;
    assert!(sent);
    let touches = world.app.store.touchpoints.for_lead(world.tenant.id, lead.id).await.expect("touches");
    assert_eq!(touches[0].attempts, 3, "{:?}", touches[0]);
    assert_eq!(sms_to(&world, &phone).await.len(), 1);
    world.teardown().await;
}

#[tokio::test]
async fn two_hundred_leads_in_one_second_at_one_location_are_all_texted_paced_at_its_rate() {
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.ingress.max_in_flight = 64;
    })
    .await;
    let mut phones = Vec::new();
    for i in 0..200 {
        let phone = format!("512555{:04}", 2000 + i);
        let customer_id = world.sim.add_customer(COMPANY, &format!("Cust{i}"), &phone, &format!("c{i}@example.com"));
        phones.push(format!("+1{phone}"));
        world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer_id));
    }

    let all = eventually(Duration::from_secs(20), || async {
        let sent = world.app.twilio.sent();
        phones.iter().all(|p| sent.iter().any(|m| &m.to == p))
    })
    .await;

    assert!(all, "every lead got its first sms");
    let sent: Vec<_> = world.app.twilio.sent().into_iter().filter(|m| phones.contains(&m.to)).collect();
    assert_eq!(sent.len(), 200, "none twice, none lost");
    let span = sent[199].received_at.duration_since(sent[0].received_at);
    // 50 per second at this location: 200 messages need at least 199 intervals of 20 ms.
    assert!(span >= Duration::from_millis(199 * 20 - 50), "not paced: {span:?}");
    assert_eq!(world.app.twilio.request_count(), 200, "no rejected attempts");
    world.teardown().await;
}

#[tokio::test]
async fn a_touch_due_in_a_few_seconds_leaves_within_one_second_of_its_time() {
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.cadences = leadorch::config::parse_cadences(
            r#"default = "quick"
               [[cadence]]
               name = "quick"
               version = 1
               steps = [
                 { channel = "sms", template = "first_sms", delay = "0s", rule = "any_time_allowed" },
                 { channel = "sms", template = "quick_follow_up", delay = "4s", rule = "any_time_allowed" },
               ]"#,
        )
        .expect("cadence");
    })
    .await;
    let customer = world.sim.customer(COMPANY, 2);
    let phone = leadorch_actors::domain::Phone::parse(&customer.phone).expect("phone").to_string();

    let order = world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer.id));

    let lead = world.lead_for(&order.id, Duration::from_secs(2)).await.expect("lead");
    let both = eventually(Duration::from_secs(8), || async {
        let touches = world.app.store.touchpoints.for_lead(world.tenant.id, lead.id).await.expect("touches");
        touches.iter().all(|t| went_out(t.status))
    })
    .await;
    assert!(both);
    assert_eq!(sms_to(&world, &phone).await.len(), 2);
    let touches = world.app.store.touchpoints.for_lead(world.tenant.id, lead.id).await.expect("touches");
    let due = touches[1].scheduled_at;
    let sent_at = touches[1].sent_at_opt.expect("sent");
    let late = due.duration_until(sent_at);
    assert!(!late.is_negative(), "never early: {late:?}");
    assert!(late < jiff::SignedDuration::from_secs(1), "late by {late:?}");
    world.teardown().await;
}

#[tokio::test]
async fn a_hundred_thousand_pending_leads_keep_almost_no_lead_actors_alive() {
    let world = spawn_crm_world(1, 1, |s| s.poller.enabled = false).await;
    let location = &world.locations[0];
    let client = world.app.db.client().await;
    client
        .execute(
            "INSERT INTO leads (id, tenant_id, location_id, crm_source, crm_order_id, status, first_name, phone, received_at)
             SELECT gen_random_uuid(), $1, $2, 'shopmonkey', 'bulk-' || g, 'in_cadence', 'Bulk', '+15125550199', now()
             FROM generate_series(1, 100000) g",
            &[&world.tenant.id.as_uuid(), &location.id.as_uuid()],
        )
        .await
        .expect("seed leads");
    client
        .execute(
            "INSERT INTO touchpoints (id, tenant_id, lead_id, step_index, channel, template, intended_at, scheduled_at)
             SELECT gen_random_uuid(), tenant_id, id, 0, 'sms', 'day2', now() + interval '1 day', now() + interval '1 day'
             FROM leads WHERE tenant_id = $1",
            &[&world.tenant.id.as_uuid()],
        )
        .await
        .expect("seed touches");
    let actor = world.app.registry.get(location.id).expect("location actor runs");

    // Several scheduler ticks pass with nothing due.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let live = live_leads(&actor).await.expect("answers");
    assert!(live < 1000, "{live} lead actors alive");
    assert_eq!(live, 0);
    assert!(world.app.twilio.sent().is_empty());
    world.teardown().await;
}

#[tokio::test]
async fn an_unreachable_redis_has_no_effect_on_sending() {
    let world = spawn_crm_world(1, 1, |s| {
        s.poller.enabled = false;
        s.redis.url_opt = Some(secrecy::SecretString::from("redis://127.0.0.1:1".to_owned()));
    })
    .await;
    let customer = world.sim.customer(COMPANY, 3);
    let phone = leadorch_actors::domain::Phone::parse(&customer.phone).expect("phone").to_string();

    world.sim.create_order(COMPANY, &world.sim_locations[0].id, Some(&customer.id));

    let both = eventually(Duration::from_secs(2), || async {
        !sms_to(&world, &phone).await.is_empty() && world.app.sendgrid.sent().iter().any(|m| m.to == customer.email)
    })
    .await;
    assert!(both, "sms and email go out with redis down");
    world.teardown().await;
}
