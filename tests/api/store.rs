//! Repository behaviour against the real PostgreSQL: idempotent leads with their plans, the
//! touchpoint claim protocol, the inbox, hours and typed errors.

use jiff::{SignedDuration, Timestamp};
use leadorch::store::{AppointmentRepo, InboxInsert, LeadCreated, NewAppointment, ReplyRecord, ReplyStatus};
use leadorch_actors::domain::{LeadId, LeadStatus, TouchpointStatus, WeeklyHours};
use leadorch_actors::ports::StoreError;

use crate::helpers::{TestDb, far_future, new_lead, seed_tenant, two_step_plan};

#[tokio::test]
async fn a_lead_is_created_with_its_plan_in_one_transaction() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (_, location) = seed_tenant(&store, "Tint Co").await;

    let created =
        store.leads.create_with_plan(&new_lead(&location, "ord_1"), None, &two_step_plan()).await.expect("create");

    let LeadCreated::Created(lead) = created else { panic!("expected a new lead") };
    assert_eq!(lead.status, LeadStatus::InCadence);
    assert_eq!(lead.phone_opt.as_ref().map(|p| p.as_str()), Some("+15125550142"));
    let plan = store.touchpoints.for_lead(lead.tenant_id, lead.id).await.expect("plan");
    assert_eq!(plan.len(), 2);
    assert!(plan.iter().all(|t| t.status == TouchpointStatus::Pending));
    assert_eq!(plan[1].placement_reason_opt.as_deref(), Some("business hours"));
    db.drop_database().await;
}

#[tokio::test]
async fn the_same_order_delivered_concurrently_becomes_exactly_one_lead() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let new = new_lead(&location, "ord_dup");
    let plan = two_step_plan();

    let attempts = (0..5).map(|_| store.leads.create_with_plan(&new, None, &plan));
    let results = futures::future::join_all(attempts).await;

    let created = results.iter().filter(|r| matches!(r, Ok(LeadCreated::Created(_)))).count();
    let existing = results.iter().filter(|r| matches!(r, Ok(LeadCreated::Existing(_)))).count();
    assert_eq!((created, existing), (1, 4));
    let client = db.client().await;
    let leads: i64 = client
        .query_one("SELECT count(*) FROM leads WHERE tenant_id = $1", &[&tenant.id.as_uuid()])
        .await
        .expect("q")
        .get(0);
    let touches: i64 = client
        .query_one("SELECT count(*) FROM touchpoints WHERE tenant_id = $1", &[&tenant.id.as_uuid()])
        .await
        .expect("q")
        .get(0);
    assert_eq!((leads, touches), (1, 2));
    db.drop_database().await;
}

#[tokio::test]
async fn a_touchpoint_can_be_claimed_only_once_and_records_its_outcome() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let lead = store
        .leads
        .create_with_plan(&new_lead(&location, "ord_2"), None, &two_step_plan())
        .await
        .expect("create")
        .lead()
        .clone();
    let first = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan")[0].clone();

    let claims =
        futures::future::join_all((0..4).map(|_| store.touchpoints.claim(tenant.id, first.id, far_future()))).await;

    let claimed: Vec<_> = claims.into_iter().filter_map(|c| c.expect("claim query")).collect();
    assert_eq!(claimed.len(), 1, "exactly one claimer wins");
    let attempt = claimed[0].attempt_id_opt.expect("attempt id");
    assert_eq!(claimed[0].status, TouchpointStatus::Sending);
    assert_eq!(claimed[0].attempts, 1);

    store.touchpoints.record_sent(tenant.id, first.id, attempt, "SM123", Timestamp::now()).await.expect("record");
    let stale =
        store.touchpoints.record_sent(tenant.id, first.id, uuid::Uuid::new_v4(), "SM999", Timestamp::now()).await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "a stale attempt cannot overwrite the outcome");
    let after = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    assert_eq!(after[0].status, TouchpointStatus::Sent);
    assert_eq!(after[0].provider_message_id_opt.as_deref(), Some("SM123"));
    db.drop_database().await;
}

#[tokio::test]
async fn a_failed_attempt_goes_back_to_pending_for_a_retry_or_fails_for_good() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let lead = store
        .leads
        .create_with_plan(&new_lead(&location, "ord_3"), None, &two_step_plan())
        .await
        .expect("create")
        .lead()
        .clone();
    let plan = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    let retry_at = Timestamp::now() + SignedDuration::from_secs(30);

    let claimed = store.touchpoints.claim(tenant.id, plan[0].id, far_future()).await.expect("q").expect("claimed");
    store
        .touchpoints
        .record_failed(tenant.id, plan[0].id, claimed.attempt_id_opt.expect("id"), "twilio 500", Some(retry_at))
        .await
        .expect("record");
    let reclaimed =
        store.touchpoints.claim(tenant.id, plan[0].id, far_future()).await.expect("q").expect("claimable again");
    store
        .touchpoints
        .record_failed(tenant.id, plan[0].id, reclaimed.attempt_id_opt.expect("id"), "invalid number", None)
        .await
        .expect("record");

    let after = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    assert_eq!(after[0].status, TouchpointStatus::Failed);
    assert_eq!(after[0].attempts, 2);
    assert_eq!(after[0].last_error_opt.as_deref(), Some("invalid number"));
    db.drop_database().await;
}

#[tokio::test]
async fn cancelling_a_lead_cancels_only_its_pending_touches() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let lead = store
        .leads
        .create_with_plan(&new_lead(&location, "ord_4"), None, &two_step_plan())
        .await
        .expect("create")
        .lead()
        .clone();
    let plan = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    let claimed = store.touchpoints.claim(tenant.id, plan[0].id, far_future()).await.expect("q").expect("claimed");
    store
        .touchpoints
        .record_sent(tenant.id, plan[0].id, claimed.attempt_id_opt.expect("id"), "SM1", Timestamp::now())
        .await
        .expect("sent");

    let cancelled = store.touchpoints.cancel_pending(tenant.id, lead.id, "customer replied").await.expect("cancel");

    assert_eq!(cancelled, 1);
    let after = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    assert_eq!(after[0].status, TouchpointStatus::Sent);
    assert_eq!(after[1].status, TouchpointStatus::Cancelled);
    db.drop_database().await;
}

#[tokio::test]
async fn due_touches_are_found_in_time_order_and_exclude_future_ones() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    store.leads.create_with_plan(&new_lead(&location, "ord_5"), None, &two_step_plan()).await.expect("create");

    let due_now = store.touchpoints.due(tenant.id, Timestamp::now(), 100).await.expect("due");
    let due_later =
        store.touchpoints.due(tenant.id, Timestamp::now() + SignedDuration::from_mins(11), 100).await.expect("due");

    assert_eq!(due_now.len(), 1);
    assert_eq!(due_later.len(), 2);
    assert!(due_later[0].touch.scheduled_at <= due_later[1].touch.scheduled_at);
    assert!(due_later.iter().all(|d| d.location_id == location.id), "each due touch names its lead's location");
    db.drop_database().await;
}

#[tokio::test]
async fn a_repeated_inbox_event_is_a_duplicate_and_writes_nothing() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, _) = seed_tenant(&store, "Tint Co").await;
    let payload = serde_json::json!({ "table": "order", "data": { "id": "ord_1" } });

    let first =
        store.inbox.insert(tenant.id, "shopmonkey", "evt_1:v3", &payload, Timestamp::now()).await.expect("insert");
    let again =
        store.inbox.insert(tenant.id, "shopmonkey", "evt_1:v3", &payload, Timestamp::now()).await.expect("insert");
    let next_version =
        store.inbox.insert(tenant.id, "shopmonkey", "evt_1:v4", &payload, Timestamp::now()).await.expect("insert");

    let InboxInsert::Inserted(id) = first else { panic!("first insert is new") };
    assert_eq!(again, InboxInsert::Duplicate);
    assert!(matches!(next_version, InboxInsert::Inserted(_)));
    let pending = store.inbox.unprocessed(tenant.id, Timestamp::now(), 10).await.expect("unprocessed");
    assert_eq!(pending.len(), 2);
    assert!(store.inbox.oldest_unprocessed(tenant.id).await.expect("lag").is_some());

    store.inbox.mark_processed(tenant.id, id, "lead_created").await.expect("mark");
    let event = store.inbox.get(tenant.id, id).await.expect("get");
    assert_eq!(event.outcome_opt.as_deref(), Some("lead_created"));
    assert_eq!(store.inbox.unprocessed(tenant.id, Timestamp::now(), 10).await.expect("q").len(), 1);
    db.drop_database().await;
}

#[tokio::test]
async fn a_failed_inbox_event_waits_for_its_retry_time() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, _) = seed_tenant(&store, "Tint Co").await;
    let payload = serde_json::json!({});
    let InboxInsert::Inserted(id) =
        store.inbox.insert(tenant.id, "shopmonkey", "evt_9", &payload, Timestamp::now()).await.expect("insert")
    else {
        panic!("new");
    };

    let retry_at = Timestamp::now() + SignedDuration::from_mins(1);
    store.inbox.record_failure(tenant.id, id, "crm 500", retry_at).await.expect("record");

    assert!(store.inbox.unprocessed(tenant.id, Timestamp::now(), 10).await.expect("q").is_empty());
    let later = store.inbox.unprocessed(tenant.id, retry_at, 10).await.expect("q");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].attempts, 1);
    assert_eq!(later[0].last_error_opt.as_deref(), Some("crm 500"));
    db.drop_database().await;
}

#[tokio::test]
async fn hours_round_trip_through_the_database() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let hours = WeeklyHours::parse("mon-fri 08:00-18:00, sat 09:00-14:00, sun 10:00-24:00").expect("hours");

    store.locations.set_hours(tenant.id, location.id, &hours).await.expect("set");

    assert_eq!(store.locations.hours(tenant.id, location.id).await.expect("get"), hours);
    db.drop_database().await;
}

#[tokio::test]
async fn a_store_call_answers_unavailable_when_postgres_cannot_be_reached() {
    let mut settings = crate::helpers::test_settings("postgres://postgres@127.0.0.1:1/nothing");
    settings.database.connect_timeout = std::time::Duration::from_millis(300);
    settings.database.wait_timeout = std::time::Duration::from_millis(300);
    let store = leadorch::store::Store::new(&settings.database).expect("pool");

    let result = store.tenants.list().await;

    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
}

/// A lead of `location` for `order_id` with the two-step plan pending.
async fn lead_with_plan(
    store: &leadorch::store::Store,
    location: &leadorch_actors::domain::Location,
    order_id: &str,
) -> leadorch_actors::domain::Lead {
    store
        .leads
        .create_with_plan(&new_lead(location, order_id), None, &two_step_plan())
        .await
        .expect("create")
        .lead()
        .clone()
}

/// A one-hour slot starting `hours_ahead` hours from now, for `lead`.
fn slot(lead: &leadorch_actors::domain::Lead, hours_ahead: i64) -> NewAppointment {
    // Whole seconds: PostgreSQL keeps microseconds, jiff nanoseconds.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now");
    let starts_at = now + SignedDuration::from_hours(hours_ahead);
    NewAppointment {
        location_id: lead.location_id,
        lead_id: lead.id,
        starts_at,
        ends_at: starts_at + SignedDuration::from_hours(1),
        service_opt: Some("Ceramic tint".to_owned()),
    }
}

#[tokio::test]
async fn a_customer_message_is_stored_marks_the_lead_replied_and_cancels_pending_touches() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let lead = lead_with_plan(&store, &location, "ord_chat_1").await;

    let first = store.chat.append_customer_message(tenant.id, lead.id, "Is Friday ok?").await.expect("append");
    let second = store.chat.append_customer_message(tenant.id, lead.id, "Or Saturday").await.expect("append");

    assert!(first.lead_stopped, "the first reply stops the cadence");
    assert!(!second.lead_stopped, "a replied lead stays replied");
    assert_eq!(first.session_id, second.session_id, "both join the one open session");
    assert_eq!(store.leads.get(tenant.id, lead.id).await.expect("lead").status, LeadStatus::Replied);
    let plan = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    assert!(plan.iter().all(|t| t.status == TouchpointStatus::Cancelled));
    assert!(plan.iter().all(|t| t.last_error_opt.as_deref() == Some("customer replied")));
    let history = store.chat.history(tenant.id, lead.id).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!((history[0].id, history[0].role.as_str()), (first.id, "user"));
    assert_eq!(history[0].content, "Is Friday ok?");
    assert_eq!(history[1].content, "Or Saturday");
    let missing = store.chat.append_customer_message(tenant.id, LeadId::new(), "hello").await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_reply_is_stored_with_provider_usage_cost_and_latency() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let lead = lead_with_plan(&store, &location, "ord_chat_2").await;
    store.chat.append_customer_message(tenant.id, lead.id, "How much for a Camry?").await.expect("append");

    let reply_id = store.chat.start_reply(tenant.id, lead.id).await.expect("start");

    let pending = store.chat.history(tenant.id, lead.id).await.expect("history");
    let placeholder = pending.iter().find(|m| m.id == reply_id).expect("placeholder stored");
    assert_eq!((placeholder.role.as_str(), placeholder.status.as_str()), ("assistant", "partial"));
    assert_eq!(placeholder.content, "");
    assert_eq!(placeholder.provider, None);
    let record = ReplyRecord {
        content: "Ceramic tint on a Camry is $399.".to_owned(),
        status: ReplyStatus::Complete,
        provider_opt: Some("anthropic".to_owned()),
        model_opt: Some("claude-test".to_owned()),
        tokens_in: 812,
        tokens_out: 41,
        cost_micros: 2_950,
        first_token_ms_opt: Some(420),
        total_ms: 1_310,
    };
    store.chat.finish_reply(tenant.id, reply_id, &record).await.expect("finish");

    let history = store.chat.history(tenant.id, lead.id).await.expect("history");
    let reply = history.iter().find(|m| m.id == reply_id).expect("reply");
    assert_eq!(reply.status, "complete");
    assert_eq!(reply.content, record.content);
    assert_eq!((reply.provider.as_deref(), reply.model.as_deref()), (Some("anthropic"), Some("claude-test")));
    assert_eq!((reply.tokens_in, reply.tokens_out, reply.cost_micros), (Some(812), Some(41), Some(2_950)));
    assert_eq!((reply.first_token_ms, reply.total_ms), (Some(420), Some(1_310)));
    let json = serde_json::to_value(&history[0]).expect("json");
    assert!(json.get("provider").is_none(), "a customer message serialises without usage fields: {json}");

    let huge = ReplyRecord { tokens_in: u32::MAX, cost_micros: u64::MAX, status: ReplyStatus::Error, ..record };
    store.chat.finish_reply(tenant.id, reply_id, &huge).await.expect("saturates");
    let history = store.chat.history(tenant.id, lead.id).await.expect("history");
    let reply = history.iter().find(|m| m.id == reply_id).expect("reply");
    assert_eq!((reply.status.as_str(), reply.tokens_in, reply.cost_micros), ("error", Some(i32::MAX), Some(i64::MAX)));

    let system = store.chat.append_assistant(tenant.id, lead.id, "You're unsubscribed.").await.expect("append");
    let history = store.chat.history(tenant.id, lead.id).await.expect("history");
    let confirmation = history.iter().find(|m| m.id == system).expect("confirmation");
    assert_eq!((confirmation.role.as_str(), confirmation.status.as_str()), ("assistant", "complete"));
    let missing = store.chat.finish_reply(tenant.id, uuid::Uuid::now_v7(), &huge).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let user_message = history[0].id;
    let not_assistant = store.chat.finish_reply(tenant.id, user_message, &huge).await;
    assert!(matches!(not_assistant, Err(StoreError::NotFound)), "only assistant messages are finished");
    db.drop_database().await;
}

#[tokio::test]
async fn booking_a_slot_stores_the_appointment_books_the_lead_and_cancels_touches() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let lead = lead_with_plan(&store, &location, "ord_book_1").await;
    let new = slot(&lead, 48);

    let booked = store.appointments.book(tenant.id, &new).await.expect("book");

    assert_eq!((booked.tenant_id, booked.location_id, booked.lead_id), (tenant.id, location.id, lead.id));
    assert_eq!((booked.starts_at, booked.ends_at), (new.starts_at, new.ends_at));
    assert_eq!((booked.service_opt.as_deref(), booked.status.as_str()), (Some("Ceramic tint"), "booked"));
    assert_eq!(booked.crm_appointment_id_opt, None);
    assert_eq!(store.leads.get(tenant.id, lead.id).await.expect("lead").status, LeadStatus::Booked);
    let plan = store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    assert!(
        plan.iter().all(|t| t.status == TouchpointStatus::Cancelled && t.last_error_opt.as_deref() == Some("booked"))
    );
    let busy = store
        .appointments
        .booked_between(tenant.id, location.id, new.starts_at - SignedDuration::from_hours(24), new.ends_at)
        .await
        .expect("busy");
    assert_eq!(busy, vec![(new.starts_at, new.ends_at)]);
    let after = store.appointments.booked_between(tenant.id, location.id, new.ends_at, far_future()).await.expect("q");
    assert!(after.is_empty(), "a range starting at the end does not overlap");

    store.appointments.set_crm_id(tenant.id, booked.id, "appt_77").await.expect("crm id");
    let of_lead = store.appointments.of_lead(tenant.id, lead.id).await.expect("of lead").expect("booked");
    assert_eq!(of_lead.crm_appointment_id_opt.as_deref(), Some("appt_77"));
    assert_eq!(store.appointments.list_for_lead(tenant.id, lead.id).await.expect("list"), vec![of_lead.clone()]);
    let json = serde_json::to_value(&of_lead).expect("json");
    assert_eq!(json["service"], "Ceramic tint");
    assert_eq!(json["crm_appointment_id"], "appt_77");

    let again = store.appointments.book(tenant.id, &slot(&lead, 72)).await;
    assert!(
        matches!(&again, Err(StoreError::Conflict { constraint }) if constraint == AppointmentRepo::LEAD_ALREADY_BOOKED),
        "{again:?}"
    );
    let missing = store.appointments.set_crm_id(tenant.id, uuid::Uuid::now_v7(), "appt_78").await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_slot_that_overlaps_a_booked_appointment_is_refused() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let first = lead_with_plan(&store, &location, "ord_overlap_1").await;
    let second = lead_with_plan(&store, &location, "ord_overlap_2").await;
    let booked = store.appointments.book(tenant.id, &slot(&first, 24)).await.expect("book");

    let mut overlapping = slot(&second, 24);
    overlapping.starts_at = booked.starts_at + SignedDuration::from_mins(30);
    overlapping.ends_at = booked.ends_at + SignedDuration::from_mins(30);
    let refused = store.appointments.book(tenant.id, &overlapping).await;

    assert!(
        matches!(&refused, Err(StoreError::Conflict { constraint }) if constraint == AppointmentRepo::SLOT_TAKEN),
        "{refused:?}"
    );
    assert_eq!(store.leads.get(tenant.id, second.id).await.expect("lead").status, LeadStatus::InCadence);
    let plan = store.touchpoints.for_lead(tenant.id, second.id).await.expect("plan");
    assert!(plan.iter().all(|t| t.status == TouchpointStatus::Pending), "a refused booking changes nothing");
    let mut adjacent = slot(&second, 24);
    adjacent.starts_at = booked.ends_at;
    adjacent.ends_at = booked.ends_at + SignedDuration::from_hours(1);
    store.appointments.book(tenant.id, &adjacent).await.expect("the slot right after is free");
    let mut backwards = slot(&first, 30);
    backwards.ends_at = backwards.starts_at;
    let empty = store.appointments.book(tenant.id, &backwards).await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))), "{empty:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn two_concurrent_bookings_of_one_slot_yield_one_appointment() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let first = lead_with_plan(&store, &location, "ord_race_1").await;
    let second = lead_with_plan(&store, &location, "ord_race_2").await;
    let for_first = slot(&first, 24);
    let for_second = NewAppointment { lead_id: second.id, ..for_first.clone() };

    let (a, b) =
        tokio::join!(store.appointments.book(tenant.id, &for_first), store.appointments.book(tenant.id, &for_second));

    let oks = [&a, &b].iter().filter(|r| r.is_ok()).count();
    let conflicts = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict { constraint }) if constraint == AppointmentRepo::SLOT_TAKEN))
        .count();
    assert_eq!((oks, conflicts), (1, 1), "{a:?} / {b:?}");
    let busy =
        store.appointments.booked_between(tenant.id, location.id, Timestamp::now(), far_future()).await.expect("busy");
    assert_eq!(busy.len(), 1);
    let statuses = [
        store.leads.get(tenant.id, first.id).await.expect("lead").status,
        store.leads.get(tenant.id, second.id).await.expect("lead").status,
    ];
    assert_eq!(statuses.iter().filter(|s| **s == LeadStatus::Booked).count(), 1);
    db.drop_database().await;
}

#[tokio::test]
async fn appointments_and_chat_of_one_tenant_are_invisible_to_another() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant_a, location_a) = seed_tenant(&store, "Tint Co").await;
    let (tenant_b, location_b) = seed_tenant(&store, "Other Co").await;
    let lead = lead_with_plan(&store, &location_a, "ord_iso_1").await;
    let booked = store.appointments.book(tenant_a.id, &slot(&lead, 24)).await.expect("book");
    let reply_id = store.chat.start_reply(tenant_a.id, lead.id).await.expect("start");
    store.chat.append_customer_message(tenant_a.id, lead.id, "hi").await.expect("append");

    let b = tenant_b.id;
    assert!(store.chat.history(b, lead.id).await.expect("history").is_empty());
    let record = ReplyRecord {
        content: "hijacked".to_owned(),
        status: ReplyStatus::Complete,
        provider_opt: None,
        model_opt: None,
        tokens_in: 1,
        tokens_out: 1,
        cost_micros: 1,
        first_token_ms_opt: None,
        total_ms: 1,
    };
    assert!(matches!(store.chat.finish_reply(b, reply_id, &record).await, Err(StoreError::NotFound)));
    assert!(matches!(store.chat.start_reply(b, lead.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.chat.append_assistant(b, lead.id, "x").await, Err(StoreError::NotFound)));
    assert!(matches!(store.chat.append_customer_message(b, lead.id, "x").await, Err(StoreError::NotFound)));
    assert!(store.appointments.of_lead(b, lead.id).await.expect("of lead").is_none());
    assert!(store.appointments.list_for_lead(b, lead.id).await.expect("list").is_empty());
    let busy = store.appointments.booked_between(b, location_a.id, Timestamp::now(), far_future()).await.expect("q");
    assert!(busy.is_empty());
    assert!(matches!(store.appointments.set_crm_id(b, booked.id, "appt_x").await, Err(StoreError::NotFound)));
    let foreign = NewAppointment { location_id: location_b.id, ..slot(&lead, 96) };
    assert!(matches!(store.appointments.book(b, &foreign).await, Err(StoreError::NotFound)));
    assert!(matches!(store.appointments.book(b, &slot(&lead, 96)).await, Err(StoreError::NotFound)));

    let history = store.chat.history(tenant_a.id, lead.id).await.expect("history");
    let placeholder = history.iter().find(|m| m.id == reply_id).expect("reply");
    assert_eq!((placeholder.content.as_str(), placeholder.status.as_str()), ("", "partial"));
    let own = store.appointments.of_lead(tenant_a.id, lead.id).await.expect("of lead").expect("booked");
    assert_eq!(own.crm_appointment_id_opt, None);
    assert_eq!(store.appointments.list_for_lead(tenant_a.id, lead.id).await.expect("list").len(), 1);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inbox_inserts_are_group_committed_and_each_gets_its_own_answer() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, _) = seed_tenant(&store, "Tint Co").await;
    let unknown_tenant = leadorch_actors::domain::TenantId::new();
    let payload = serde_json::json!({ "table": "order" });
    // 300 distinct events, each sent twice at once, plus events of a tenant that does not exist
    // mixed into the same batches.
    let mut calls = Vec::new();
    for i in 0..300 {
        for _ in 0..2 {
            let (store, payload) = (store.clone(), payload.clone());
            calls.push(tokio::spawn(async move {
                (i, store.inbox.insert(tenant.id, "shopmonkey", &format!("evt_{i}"), &payload, Timestamp::now()).await)
            }));
        }
        if i % 50 == 0 {
            let (store, payload) = (store.clone(), payload.clone());
            calls.push(tokio::spawn(async move {
                (-1, store.inbox.insert(unknown_tenant, "shopmonkey", "evt_x", &payload, Timestamp::now()).await)
            }));
        }
    }
    let mut inserted = std::collections::HashMap::<i32, usize>::new();
    for call in calls {
        let (i, result) = call.await.expect("task");
        match (i, result) {
            (-1, Err(StoreError::Conflict { .. })) => {}
            (-1, other) => panic!("an unknown tenant's event must be refused alone, got {other:?}"),
            (i, Ok(InboxInsert::Inserted(_))) => *inserted.entry(i).or_default() += 1,
            (_, Ok(InboxInsert::Duplicate)) => {}
            (i, Err(err)) => panic!("event {i} failed: {err}"),
        }
    }
    assert_eq!(inserted.len(), 300, "every event was inserted");
    assert!(inserted.values().all(|n| *n == 1), "exactly one of each pair was the insert");
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM inbox_events WHERE tenant_id = $1", &[&tenant.id.as_uuid()])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 300);
    db.drop_database().await;
}
