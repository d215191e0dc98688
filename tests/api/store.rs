//! Repository behaviour against the real PostgreSQL: idempotent leads with their plans, the
//! touchpoint claim protocol, the inbox, hours and typed errors.

use jiff::{SignedDuration, Timestamp};
use leadorch::store::{InboxInsert, LeadCreated};
use leadorch_actors::domain::{LeadStatus, TouchpointStatus, WeeklyHours};
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
