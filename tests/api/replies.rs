//! Closing every loop of the timeline: replies, opt-outs (keywords and plain language), help,
//! delivery reports from Twilio and SendGrid, and CRM outcomes. Each stop condition is shown to
//! let no further message leave.

use std::time::Duration;

use jiff::Timestamp;
use leadorch_actors::domain::{Lead, LeadStatus, TouchpointStatus};

use crate::helpers::{COMPANY, CrmWorld, eventually, spawn_crm_world};

/// A cadence with an SMS now and one a few seconds later, so a stop in between is observable.
const QUICK: &str = r#"default = "quick"
[[cadence]]
name = "quick"
version = 1
steps = [
  { channel = "sms", template = "first_sms", delay = "0s", rule = "any_time_allowed" },
  { channel = "email", template = "first_email", delay = "0s", rule = "any_time_allowed" },
  { channel = "sms", template = "quick_follow_up", delay = "4s", rule = "any_time_allowed" },
  { channel = "email", template = "final_email", delay = "4s", rule = "any_time_allowed" },
]"#;

async fn world() -> CrmWorld {
    spawn_crm_world(2, 2, |s| {
        s.poller.enabled = false;
        s.cadences = leadorch::config::parse_cadences(QUICK).expect("cadence");
    })
    .await
}

/// Creates a lead at location `idx` for customer `customer` and waits for its first SMS.
async fn lead_with_first_sms(world: &CrmWorld, idx: usize, customer: usize) -> (Lead, String) {
    let customer = world.sim.customer(COMPANY, customer);
    let order = world.sim.create_order(COMPANY, &world.sim_locations[idx].id, Some(&customer.id));
    let lead = world.lead_for(&order.id, Duration::from_secs(3)).await.expect("lead");
    let phone = lead.phone_opt.clone().expect("phone").to_string();
    let texted = eventually(Duration::from_secs(3), || async { sms_count(world, &phone) >= 1 }).await;
    assert!(texted, "first sms");
    (lead, phone)
}

fn sms_count(world: &CrmWorld, phone: &str) -> usize {
    world.app.twilio.sent().iter().filter(|m| m.to == phone).count()
}

async fn inbound(world: &CrmWorld, from: &str, location_idx: usize, body: &str) -> reqwest::Response {
    let to = world.locations[location_idx].sms_from_opt.as_ref().expect("number").to_string();
    world
        .app
        .twilio
        .send_inbound(&format!("{}/webhooks/twilio/inbound", world.app.address), from, &to, body)
        .await
        .expect("posted")
}

async fn touches(world: &CrmWorld, lead: &Lead) -> Vec<leadorch_actors::domain::Touchpoint> {
    world.app.store.touchpoints.for_lead(world.tenant.id, lead.id).await.expect("touches")
}

async fn lead_now(world: &CrmWorld, lead: &Lead) -> Lead {
    world.app.store.leads.get(world.tenant.id, lead.id).await.expect("lead")
}

/// Waits past the later steps and asserts nothing more reached `phone`.
async fn assert_no_more_sms(world: &CrmWorld, phone: &str, expected: usize) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sms_count(world, phone), expected, "no sms after the stop");
}

#[tokio::test]
async fn stop_opts_the_phone_out_for_every_location_of_the_tenant_and_nothing_more_is_sent() {
    let world = world().await;
    let (lead_a, phone) = lead_with_first_sms(&world, 0, 0).await;
    // The same customer also asked the second location.
    let customer = world.sim.customer(COMPANY, 0);
    let order_b = world.sim.create_order(COMPANY, &world.sim_locations[1].id, Some(&customer.id));
    let lead_b = world.lead_for(&order_b.id, Duration::from_secs(3)).await.expect("second lead");
    assert!(eventually(Duration::from_secs(3), || async { sms_count(&world, &phone) == 2 }).await);

    let response = inbound(&world, &phone, 0, "STOP").await;

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/xml"));
    assert!(response.text().await.expect("body").contains("<Response>"));
    for lead in [&lead_a, &lead_b] {
        assert_eq!(lead_now(&world, lead).await.status, LeadStatus::OptedOut);
        assert!(touches(&world, lead).await.iter().all(|t| t.status != TouchpointStatus::Pending));
    }
    assert!(world.app.store.consent.is_opted_out(world.tenant.id, "sms", &phone).await.expect("consent"));
    assert!(world.app.store.consent.is_opted_out(world.tenant.id, "chat", &phone).await.expect("consent"));
    let email = lead_a.email_opt.clone().expect("email").to_string();
    assert!(world.app.store.consent.is_opted_out(world.tenant.id, "email", &email).await.expect("consent"));
    assert_no_more_sms(&world, &phone, 2).await;
    world.teardown().await;
}

#[tokio::test]
async fn a_plain_language_revocation_is_an_opt_out_and_start_opts_back_in() {
    let world = world().await;
    let (lead, phone) = lead_with_first_sms(&world, 0, 1).await;

    inbound(&world, &phone, 0, "please stop texting me").await;

    assert_eq!(lead_now(&world, &lead).await.status, LeadStatus::OptedOut);
    assert!(world.app.store.consent.is_opted_out(world.tenant.id, "sms", &phone).await.expect("consent"));
    inbound(&world, &phone, 0, "START").await;
    assert!(!world.app.store.consent.is_opted_out(world.tenant.id, "sms", &phone).await.expect("consent"));
    assert_no_more_sms(&world, &phone, 1).await;
    world.teardown().await;
}

#[tokio::test]
async fn help_is_answered_with_twiml_naming_the_location() {
    let world = world().await;
    let (lead, phone) = lead_with_first_sms(&world, 0, 2).await;

    let response = inbound(&world, &phone, 0, "HELP").await;

    let body = response.text().await.expect("body");
    assert!(body.contains("<Message>") && body.contains(&world.locations[0].name), "{body}");
    assert_eq!(lead_now(&world, &lead).await.status, LeadStatus::InCadence, "help is not a reply");
    world.teardown().await;
}

#[tokio::test]
async fn a_reply_marks_the_lead_replied_keeps_the_message_and_stops_the_cadence() {
    let world = world().await;
    let (lead, phone) = lead_with_first_sms(&world, 0, 3).await;

    inbound(&world, &phone, 0, "How much for a sedan? Can I come Friday?").await;

    assert_eq!(lead_now(&world, &lead).await.status, LeadStatus::Replied);
    let history = world.app.store.chat.history(world.tenant.id, lead.id).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].role.as_str(), history[0].content.as_str()),
        ("user", "How much for a sedan? Can I come Friday?")
    );
    assert!(touches(&world, &lead).await.iter().all(|t| t.status != TouchpointStatus::Pending));
    assert_no_more_sms(&world, &phone, 1).await;
    world.teardown().await;
}

#[tokio::test]
async fn an_inbound_webhook_with_a_bad_signature_is_refused_and_changes_nothing() {
    let world = world().await;
    let (lead, phone) = lead_with_first_sms(&world, 0, 4).await;
    let to = world.locations[0].sms_from_opt.as_ref().expect("number").to_string();

    let response = world
        .app
        .http
        .post(format!("{}/webhooks/twilio/inbound", world.app.address))
        .header("x-twilio-signature", "forged")
        .form(&[("MessageSid", "SMforged"), ("From", phone.as_str()), ("To", to.as_str()), ("Body", "STOP")])
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 403);
    assert_eq!(lead_now(&world, &lead).await.status, LeadStatus::InCadence);
    world.teardown().await;
}

#[tokio::test]
async fn delivery_reports_update_the_touch_and_a_dead_number_stops_further_sms() {
    let world = world().await;
    world.app.twilio.set_fault(leadorch::sim::twilio::TwilioFault::UndeliveredCallback { error_code: 30006 });
    let (lead, phone) = lead_with_first_sms(&world, 0, 5).await;

    let failed = eventually(Duration::from_secs(3), || async {
        touches(&world, &lead).await.iter().any(|t| t.step_index == 0 && t.status == TouchpointStatus::Failed)
    })
    .await;

    assert!(failed, "the undelivered report marks the touch failed");
    let all = touches(&world, &lead).await;
    let first = all.iter().find(|t| t.step_index == 0).expect("first");
    assert_eq!(first.provider_status_opt.as_deref(), Some("undelivered"));
    assert!(
        all.iter()
            .filter(|t| t.channel == leadorch_actors::domain::Channel::Sms)
            .all(|t| t.status != TouchpointStatus::Pending)
    );
    assert_no_more_sms(&world, &phone, 1).await;
    world.teardown().await;
}

#[tokio::test]
async fn sendgrid_events_mark_delivery_and_a_bounce_stops_email_to_that_address_even_if_repeated() {
    let world = world().await;
    let (lead, _phone) = lead_with_first_sms(&world, 0, 0).await;
    let delivered = eventually(Duration::from_secs(3), || async {
        touches(&world, &lead).await.iter().any(|t| t.step_index == 1 && t.status == TouchpointStatus::Delivered)
    })
    .await;
    assert!(delivered, "the fake's delivered event reached the touch");
    let message_id = world.app.sendgrid.sent().last().expect("mail").message_id.clone();

    world.app.sendgrid.send_event("bounce", &message_id, serde_json::json!({ "reason": "550 no such user" }));
    world.app.sendgrid.send_event("bounce", &message_id, serde_json::json!({ "reason": "550 no such user" }));

    let email = lead.email_opt.clone().expect("email").to_string();
    let stopped = eventually(Duration::from_secs(3), || async {
        world.app.store.consent.is_opted_out(world.tenant.id, "email", &email).await.expect("consent")
    })
    .await;
    assert!(stopped);
    let later_email = touches(&world, &lead).await.into_iter().find(|t| t.step_index == 3).expect("later email");
    assert_eq!(later_email.status, TouchpointStatus::Cancelled);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.app.sendgrid.sent().iter().filter(|m| m.to == email).count(), 1, "no email after the bounce");
    world.teardown().await;
}

#[tokio::test]
async fn an_order_won_in_the_crm_ends_the_cadence() {
    let world = world().await;
    let (lead, phone) = lead_with_first_sms(&world, 0, 1).await;

    world.sim.update_order_status(COMPANY, &lead.crm_order_id, "RepairOrder");

    let won =
        eventually(Duration::from_secs(3), || async { lead_now(&world, &lead).await.status == LeadStatus::Won }).await;
    assert!(won);
    assert!(touches(&world, &lead).await.iter().all(|t| t.status != TouchpointStatus::Pending));
    assert_no_more_sms(&world, &phone, 1).await;
    world.teardown().await;
}

#[tokio::test]
async fn an_appointment_booked_in_the_crm_marks_the_lead_booked() {
    let world = world().await;
    let (lead, phone) = lead_with_first_sms(&world, 0, 2).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "3", "operation": "INSERT", "table": "appointment",
        "data": { "id": "apt_1", "customerId": lead.crm_customer_id_opt, "meta": { "version": 1 } }
    }))
    .expect("json");

    let response = world.post_signed(&body, &world.webhook_secret, Timestamp::now().as_second(), "req-apt").await;

    assert_eq!(response.status(), 202);
    let booked =
        eventually(Duration::from_secs(3), || async { lead_now(&world, &lead).await.status == LeadStatus::Booked })
            .await;
    assert!(booked);
    assert_no_more_sms(&world, &phone, 1).await;
    world.teardown().await;
}
