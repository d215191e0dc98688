//! Crash safety of sending: touches a dead process left in `sending` are reconciled against the
//! provider at start-up — confirmed if the provider has them, sent again if it never got them —
//! so no customer gets a touch twice and none is dropped.

use std::time::Duration;

use jiff::Timestamp;
use leadorch::links::LinkSigner;
use leadorch::messaging::twilio::{TwilioConfig, TwilioSms};
use leadorch::templates::{DEFAULT_TEMPLATES, Templates};
use leadorch_actors::domain::{Channel, Lead, NewTouchpoint, Touchpoint, TouchpointStatus};
use leadorch_actors::ports::{OutboundSms, SmsSender, TouchRenderer};

use crate::helpers::{
    SECRET_KEY, TWILIO_SID, TWILIO_TOKEN, TestDb, eventually, far_future, new_lead, seed_tenant, spawn_app_using,
    start_vendors, test_settings,
};

/// Seeds a lead with one SMS due now and claims it as a process about to call Twilio would,
/// then "crashes": the outcome is never recorded.
async fn half_sent_sms(db: &TestDb) -> (Lead, Touchpoint, leadorch_actors::domain::Location) {
    let store = db.store();
    let (_, location) = seed_tenant(&store, "Tint Co").await;

    let now = Timestamp::now();
    let plan = vec![NewTouchpoint {
        step_index: 0,
        channel: Channel::Sms,
        template: "first_sms".into(),
        intended_at: now,
        scheduled_at: now,
        placement_reason_opt: None,
    }];
    let lead = store
        .leads
        .create_with_plan(&new_lead(&location, "ord_crash"), None, &plan)
        .await
        .expect("lead")
        .lead()
        .clone();
    let touch = store.touchpoints.for_lead(lead.tenant_id, lead.id).await.expect("touches")[0].clone();
    let claimed = store.touchpoints.claim(lead.tenant_id, touch.id, far_future()).await.expect("q").expect("claimed");
    (lead, claimed, location)
}

fn any_hour(settings: &mut leadorch::config::Settings) {
    settings.compliance.default_window =
        leadorch_actors::compliance::Window { start: jiff::civil::Time::midnight(), end: jiff::civil::Time::MAX };
    settings.compliance.states.clear();
}

async fn touch_now(db_store: &leadorch::store::Store, lead: &Lead) -> Touchpoint {
    db_store.touchpoints.for_lead(lead.tenant_id, lead.id).await.expect("touches")[0].clone()
}

#[tokio::test]
async fn an_sms_the_provider_took_before_the_crash_is_confirmed_and_not_sent_again() {
    let db = TestDb::migrated().await;
    let (lead, claimed, location) = half_sent_sms(&db).await;
    let (twilio, sendgrid) = start_vendors().await;
    let mut settings = test_settings(&db.url);
    any_hour(&mut settings);
    settings.http.addr = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let public_url = format!("http://{}", settings.http.addr);
    // The dead process got as far as Twilio accepting the message it rendered.
    let links =
        LinkSigner::new(&secrecy::SecretString::from(SECRET_KEY.to_owned()), &public_url, settings.links_valid_for);
    let templates = Templates::new(DEFAULT_TEMPLATES, links).expect("templates");
    let body = templates.render_sms(&claimed.template, &lead, &location, claimed.intended_at).expect("renders");
    let mut config = TwilioConfig::new(TWILIO_SID, secrecy::SecretString::from(TWILIO_TOKEN.to_owned()));
    config.base_url = twilio.base_url();
    let client = TwilioSms::new(config).expect("client");
    let sms = OutboundSms {
        to: lead.phone_opt.clone().expect("phone"),
        from: location.sms_from_opt.clone().expect("number"),
        body,
        status_callback_opt: None,
        idempotency_key: "k".into(),
    };
    let sent = client.send_sms(&sms).await.expect("twilio took it");

    let app = spawn_app_using(TestDb { name: db.name.clone(), url: db.url.clone() }, settings, twilio, sendgrid).await;

    let touch = touch_now(&app.store, &lead).await;
    assert!(matches!(touch.status, TouchpointStatus::Sent | TouchpointStatus::Delivered), "{touch:?}");
    assert_eq!(touch.provider_message_id_opt.as_deref(), Some(sent.provider_id.as_str()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.twilio.sent().len(), 1, "the customer got it exactly once");
    app.teardown().await;
}

#[tokio::test]
async fn an_sms_the_provider_never_got_is_sent_once_after_the_restart() {
    let db = TestDb::migrated().await;
    let (lead, _claimed, _location) = half_sent_sms(&db).await;
    let (twilio, sendgrid) = start_vendors().await;
    let mut settings = test_settings(&db.url);
    any_hour(&mut settings);

    let app = spawn_app_using(TestDb { name: db.name.clone(), url: db.url.clone() }, settings, twilio, sendgrid).await;

    let sent = eventually(Duration::from_secs(5), || async {
        matches!(touch_now(&app.store, &lead).await.status, TouchpointStatus::Sent | TouchpointStatus::Delivered)
    })
    .await;
    assert!(sent, "the interrupted touch was sent after the restart");
    let touch = touch_now(&app.store, &lead).await;
    assert_eq!(touch.attempts, 2, "one interrupted attempt, one real");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.twilio.sent().len(), 1, "exactly once");
    app.teardown().await;
}
