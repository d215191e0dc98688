//! One tenant can never see or change another's rows through any repository.

use jiff::Timestamp;
use leadorch::store::InboxInsert;
use leadorch_actors::domain::{LeadStatus, WeeklyHours};
use leadorch_actors::ports::StoreError;

use crate::helpers::{TestDb, far_future, new_lead, seed_tenant, two_step_plan};

#[tokio::test]
async fn a_tenant_cannot_read_or_change_another_tenants_rows() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant_a, location_a) = seed_tenant(&store, "Tenant A").await;
    let (tenant_b, location_b) = seed_tenant(&store, "Tenant B").await;
    let lead_a = store
        .leads
        .create_with_plan(&new_lead(&location_a, "ord_1"), None, &two_step_plan())
        .await
        .expect("a")
        .lead()
        .clone();
    store
        .leads
        .create_with_plan(&new_lead(&location_b, "ord_1"), None, &two_step_plan())
        .await
        .expect("b: same order id, other tenant");
    let InboxInsert::Inserted(event_a) = store
        .inbox
        .insert(tenant_a.id, "shopmonkey", "evt_1", &serde_json::json!({}), Timestamp::now())
        .await
        .expect("inbox")
    else {
        panic!("new")
    };
    let touch_a = store.touchpoints.for_lead(tenant_a.id, lead_a.id).await.expect("plan")[0].clone();
    let b = tenant_b.id;

    assert!(matches!(store.locations.get(b, location_a.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.leads.get(b, lead_a.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.leads.set_status(b, lead_a.id, LeadStatus::Closed).await, Err(StoreError::NotFound)));
    assert!(store.touchpoints.for_lead(b, lead_a.id).await.expect("q").is_empty());
    assert!(store.touchpoints.claim(b, touch_a.id, far_future()).await.expect("q").is_none());
    assert_eq!(store.touchpoints.cancel_pending(b, lead_a.id, "x").await.expect("q"), 0);
    assert!(matches!(store.inbox.get(b, event_a).await, Err(StoreError::NotFound)));
    assert!(matches!(store.inbox.mark_processed(b, event_a, "x").await, Err(StoreError::NotFound)));
    let hours = WeeklyHours::parse("mon 09:00-10:00").expect("hours");
    assert!(matches!(store.locations.set_hours(b, location_a.id, &hours).await, Err(StoreError::NotFound)));

    let b_leads = store.leads.list(b, None, None, None, None, 100).await.expect("list");
    assert_eq!(b_leads.len(), 1);
    assert!(b_leads.iter().all(|l| l.tenant_id == b));
    let b_locations = store.locations.list(b).await.expect("list");
    assert_eq!(b_locations.iter().map(|l| l.id).collect::<Vec<_>>(), vec![location_b.id]);
    assert!(store.inbox.unprocessed(b, Timestamp::now(), 10).await.expect("q").is_empty());
    // A's rows are untouched by B's attempts.
    assert_eq!(store.leads.get(tenant_a.id, lead_a.id).await.expect("a").status, LeadStatus::InCadence);
    assert_eq!(store.touchpoints.for_lead(tenant_a.id, lead_a.id).await.expect("q")[0].attempts, 0);
    db.drop_database().await;
}

#[tokio::test]
async fn the_database_refuses_a_lead_that_points_at_another_tenants_location() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant_a, _) = seed_tenant(&store, "Tenant A").await;
    let (_, location_b) = seed_tenant(&store, "Tenant B").await;
    let mut cross = new_lead(&location_b, "ord_x");
    cross.tenant_id = tenant_a.id;

    let result = store.leads.create_with_plan(&cross, None, &two_step_plan()).await;

    assert!(matches!(result, Err(StoreError::Conflict { .. })), "{result:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_staff_key_resolves_only_to_its_own_tenant_and_stops_working_when_revoked() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant_a, _) = seed_tenant(&store, "Tenant A").await;
    let (tenant_b, _) = seed_tenant(&store, "Tenant B").await;
    let key_a = store.api_keys.create(tenant_a.id, "ops laptop").await.expect("key");

    let who = store.api_keys.authenticate(&key_a.key).await.expect("q").expect("valid");
    assert_eq!(who.tenant_id, tenant_a.id);
    assert!(store.api_keys.authenticate("lok_not-a-real-key").await.expect("q").is_none());
    assert!(matches!(store.api_keys.revoke(tenant_b.id, key_a.id).await, Err(StoreError::NotFound)));

    store.api_keys.revoke(tenant_a.id, key_a.id).await.expect("revoke");
    assert!(store.api_keys.authenticate(&key_a.key).await.expect("q").is_none());
    let client = db.client().await;
    let stored: Vec<u8> = client
        .query_one("SELECT key_hash FROM api_keys WHERE id = $1", &[&key_a.id.as_uuid()])
        .await
        .expect("q")
        .get(0);
    assert_ne!(stored, key_a.key.as_bytes(), "only a hash is stored");
    db.drop_database().await;
}
