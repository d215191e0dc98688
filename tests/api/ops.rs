//! Operator onboarding: bad input is refused with a clear message and writes nothing.

use leadorch::ops::{self, LocationInput, OpsError};

use crate::helpers::{TestDb, seed_tenant};

fn location_input(tenant_id: leadorch_actors::domain::TenantId) -> LocationInput {
    LocationInput {
        tenant_id,
        crm_location_id: "sm-loc-9".to_owned(),
        name: "Tint Co Dallas".to_owned(),
        timezone: "America/Chicago".to_owned(),
        sms_from_opt: Some("(214) 555-0100".to_owned()),
        sms_rate_per_sec: 1.0,
        email_from_opt: Some("dallas@tintco.example".to_owned()),
        ..LocationInput::default()
    }
}

async fn location_count(db: &TestDb) -> i64 {
    db.client().await.query_one("SELECT count(*) FROM locations", &[]).await.expect("q").get(0)
}

#[tokio::test]
async fn a_location_is_created_with_normalised_contact_points() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, _) = seed_tenant(&store, "Tint Co").await;

    let location = ops::add_location(&store, location_input(tenant.id)).await.expect("created");

    assert_eq!(location.sms_from_opt.as_ref().map(|p| p.as_str()), Some("+12145550100"));
    assert_eq!(location.timezone.as_str(), "America/Chicago");
    db.drop_database().await;
}

#[tokio::test]
async fn bad_location_input_is_rejected_naming_the_field_and_writes_nothing() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, _) = seed_tenant(&store, "Tint Co").await;
    let before = location_count(&db).await;
    let cases: Vec<(LocationInput, &str)> = vec![
        (LocationInput { timezone: "Mars/Olympus".into(), ..location_input(tenant.id) }, "timezone"),
        (LocationInput { sms_from_opt: Some("call me".into()), ..location_input(tenant.id) }, "sms-from"),
        (LocationInput { email_from_opt: Some("not-an-email".into()), ..location_input(tenant.id) }, "email-from"),
        (LocationInput { sms_rate_per_sec: 0.0, ..location_input(tenant.id) }, "sms-rate"),
        (LocationInput { name: "  ".into(), ..location_input(tenant.id) }, "name"),
    ];

    for (input, field) in cases {
        let err = ops::add_location(&store, input).await.expect_err("rejected");
        assert!(err.to_string().contains(field), "expected `{field}` in `{err}`");
    }
    let unknown = ops::add_location(&store, location_input(leadorch_actors::domain::TenantId::new())).await;
    assert!(matches!(unknown, Err(OpsError::UnknownTenant(_))), "{unknown:?}");
    assert_eq!(location_count(&db).await, before);
    db.drop_database().await;
}

#[tokio::test]
async fn a_second_location_with_the_same_crm_id_is_refused() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, _) = seed_tenant(&store, "Tint Co").await;
    ops::add_location(&store, location_input(tenant.id)).await.expect("first");

    let again = ops::add_location(&store, location_input(tenant.id)).await;

    assert!(matches!(again, Err(OpsError::DuplicateLocation(ref id)) if id == "sm-loc-9"), "{again:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn overlapping_hours_are_refused_and_the_old_hours_stay() {
    let db = TestDb::migrated().await;
    let store = db.store();
    let (tenant, location) = seed_tenant(&store, "Tint Co").await;
    let kept = ops::set_location_hours(&store, tenant.id, location.id, "mon-fri 08:00-18:00").await.expect("set");

    let err = ops::set_location_hours(&store, tenant.id, location.id, "mon-fri 08:00-18:00, mon 17:00-19:00")
        .await
        .expect_err("overlap");

    assert!(err.to_string().contains("hours"), "{err}");
    assert_eq!(store.locations.hours(tenant.id, location.id).await.expect("hours"), kept);
    db.drop_database().await;
}

#[tokio::test]
async fn a_tenant_gets_a_generated_webhook_secret_unless_one_is_given() {
    let db = TestDb::migrated().await;
    let store = db.store();

    let generated = ops::add_tenant(&store, "Tint Co", None).await.expect("tenant");
    let given = ops::add_tenant(&store, "Wrap Co", Some("a-secret-of-enough-length")).await.expect("tenant");
    let too_short = ops::add_tenant(&store, "Short Co", Some("short")).await;

    assert!(generated.webhook_secret.len() >= 32);
    assert_eq!(
        store.tenants.webhook_secret(generated.tenant.id).await.expect("secret").as_ref(),
        generated.webhook_secret
    );
    assert_eq!(given.webhook_secret, "a-secret-of-enough-length");
    assert!(too_short.is_err());
    assert_eq!(ops::list_tenants(&store).await.expect("list").len(), 2);
    db.drop_database().await;
}
