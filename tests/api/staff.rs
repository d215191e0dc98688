//! The staff API over real HTTP and PostgreSQL: API-key authentication, tenant isolation on every
//! route, listing with filters and paging (contact details redacted), a lead's timeline, and the
//! pause / resume / close actions.

use jiff::{SignedDuration, Timestamp};
use leadorch::ops::{self, LocationInput};
use leadorch_actors::domain::{Lead, LeadId, LeadStatus, Location, NewTouchpoint, Tenant, TouchpointStatus};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    OutageProxy, TestApp, TestDb, database_url, far_future, new_lead, seed_tenant, spawn_app, spawn_app_with,
    test_settings, two_step_plan,
};

/// Every staff route for one lead, as (method, path).
fn routes_for(lead_id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/api/leads".to_owned()),
        (Method::GET, format!("/api/leads/{lead_id}")),
        (Method::POST, format!("/api/leads/{lead_id}/pause")),
        (Method::POST, format!("/api/leads/{lead_id}/resume")),
        (Method::POST, format!("/api/leads/{lead_id}/close")),
    ]
}

/// The routes that act on one lead (every route but the list).
fn lead_routes_for(lead_id: &str) -> Vec<(Method, String)> {
    routes_for(lead_id).into_iter().skip(1).collect()
}

/// Sends a request with `Authorization: Bearer <key>`, or without the header when `key_opt` is `None`.
async fn send(app: &TestApp, method: Method, path: &str, key_opt: Option<&str>) -> reqwest::Response {
    let mut request = app.http.request(method, format!("{}{path}", app.address));
    if let Some(key) = key_opt {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("request sent")
}

/// GETs `/api/leads` with a query, as the key.
async fn list(app: &TestApp, key: &str, query: &[(&str, &str)]) -> reqwest::Response {
    app.http.get(format!("{}/api/leads", app.address)).bearer_auth(key).query(query).send().await.expect("request sent")
}

/// The ids of a list answer's leads, in order.
fn ids_of(page: &Value) -> Vec<String> {
    page["leads"].as_array().expect("leads array").iter().map(|l| l["id"].as_str().expect("id").to_owned()).collect()
}

/// Returns the answer's JSON body, after checking its status.
async fn json_with_status(response: reqwest::Response, expected: StatusCode) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("json body");
    assert_eq!(status, expected, "{body}");
    body
}

/// A tenant with one location and a staff key for it.
async fn seed_staff(app: &TestApp, name: &str) -> (Tenant, Location, String) {
    let (tenant, location) = seed_tenant(&app.store, name).await;
    let key = app.store.api_keys.create(tenant.id, "front desk").await.expect("api key").key;
    (tenant, location, key)
}

/// A second tenant beside one from `seed_tenant`, with a staff key. Its location texts from its
/// own number: a Twilio number belongs to one location (`locations_sms_from_key`).
async fn seed_other_staff(app: &TestApp, name: &str) -> (Tenant, Location, String) {
    let tenant = ops::add_tenant(&app.store, name, None).await.expect("tenant").tenant;
    let location = ops::add_location(
        &app.store,
        LocationInput {
            tenant_id: tenant.id,
            crm_location_id: "loc-other".to_owned(),
            name: format!("{name} Houston"),
            timezone: "America/Chicago".to_owned(),
            sms_from_opt: Some("+17135550100".to_owned()),
            sms_rate_per_sec: 1.0,
            ..LocationInput::default()
        },
    )
    .await
    .expect("location");
    let key = app.store.api_keys.create(tenant.id, "front desk").await.expect("api key").key;
    (tenant, location, key)
}

/// `two_step_plan` moved a day ahead, so the running scheduler leaves every touch pending.
fn plan_for_tomorrow() -> Vec<NewTouchpoint> {
    let day = SignedDuration::from_hours(24);
    two_step_plan()
        .into_iter()
        .map(|step| NewTouchpoint {
            intended_at: step.intended_at + day,
            scheduled_at: step.scheduled_at + day,
            ..step
        })
        .collect()
}

/// Creates a lead of `location` for `order_id` with tomorrow's two-step plan.
async fn create_lead(app: &TestApp, location: &Location, order_id: &str) -> Lead {
    app.store
        .leads
        .create_with_plan(&new_lead(location, order_id), None, &plan_for_tomorrow())
        .await
        .expect("lead created")
        .lead()
        .clone()
}

/// Pins a lead's `created_at`, so list order and paging are deterministic.
async fn set_created_at(app: &TestApp, lead: &Lead, created_at: Timestamp) {
    let client = app.db.client().await;
    client
        .execute("UPDATE leads SET created_at = $2 WHERE id = $1", &[&lead.id.as_uuid(), &created_at])
        .await
        .expect("created_at pinned");
}

fn timestamp_of(value: &Value) -> Timestamp {
    value.as_str().expect("timestamp string").parse().expect("RFC 3339 timestamp")
}

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_keys_get_401_on_every_staff_route() {
    let app = spawn_app().await;
    let (tenant, location, _) = seed_staff(&app, "Tint Co").await;
    let lead = create_lead(&app, &location, "ord_1").await;
    let revoked = app.store.api_keys.create(tenant.id, "old laptop").await.expect("key");
    app.store.api_keys.revoke(tenant.id, revoked.id).await.expect("revoked");
    let authorizations: [(&str, Option<String>); 5] = [
        ("missing", None),
        ("basic scheme", Some(format!("Basic {}", revoked.key))),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("unknown key", Some("Bearer lok_not-a-real-key".to_owned())),
        ("revoked key", Some(format!("Bearer {}", revoked.key))),
    ];

    for (method, path) in routes_for(&lead.id.to_string()) {
        for (case, authorization_opt) in &authorizations {
            let mut request = app.http.request(method.clone(), format!("{}{path}", app.address));
            if let Some(authorization) = authorization_opt {
                request = request.header("authorization", authorization);
            }
            let response = request.send().await.expect("request sent");

            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}: {method} {path}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{case}: {method} {path}");
        }
    }
    let untouched = app.store.leads.get(tenant.id, lead.id).await.expect("lead");
    assert_eq!(untouched.status, LeadStatus::InCadence, "no refused request changed the lead");
    app.teardown().await;
}

#[tokio::test]
async fn a_key_gets_404_for_another_tenants_lead_on_every_route_and_never_lists_it() {
    let app = spawn_app().await;
    let (_, location_a, key_a) = seed_staff(&app, "Tenant A").await;
    let (tenant_b, location_b, _) = seed_other_staff(&app, "Tenant B").await;
    let lead_a = create_lead(&app, &location_a, "ord_1").await;
    // The same CRM order id in both tenants: isolation must not hinge on it.
    let lead_b = create_lead(&app, &location_b, "ord_1").await;

    for (method, path) in lead_routes_for(&lead_b.id.to_string()) {
        let response = send(&app, method.clone(), &path, Some(&key_a)).await;

        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let page = json_with_status(list(&app, &key_a, &[]).await, StatusCode::OK).await;
    assert_eq!(ids_of(&page), vec![lead_a.id.to_string()]);
    let by_b_location =
        json_with_status(list(&app, &key_a, &[("location", &location_b.id.to_string())]).await, StatusCode::OK).await;
    assert!(ids_of(&by_b_location).is_empty(), "{by_b_location}");
    let untouched = app.store.leads.get(tenant_b.id, lead_b.id).await.expect("lead b");
    assert_eq!(untouched.status, LeadStatus::InCadence);
    let touches = app.store.touchpoints.for_lead(tenant_b.id, lead_b.id).await.expect("plan b");
    assert!(touches.iter().all(|t| t.status == TouchpointStatus::Pending), "{touches:?}");
    app.teardown().await;
}

#[tokio::test]
async fn an_unknown_or_malformed_lead_id_gets_404_on_every_lead_route() {
    let app = spawn_app().await;
    let (_, _, key) = seed_staff(&app, "Tint Co").await;

    for lead_id in [LeadId::new().to_string(), "not-a-uuid".to_owned()] {
        for (method, path) in lead_routes_for(&lead_id) {
            let response = send(&app, method.clone(), &path, Some(&key)).await;

            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        }
    }
    app.teardown().await;
}

#[tokio::test]
async fn the_list_filters_by_location_status_and_since_newest_first() {
    let app = spawn_app().await;
    let (tenant, austin, key) = seed_staff(&app, "Tint Co").await;
    let dallas = ops::add_location(
        &app.store,
        LocationInput {
            tenant_id: tenant.id,
            crm_location_id: "loc-dallas".to_owned(),
            name: "Tint Co Dallas".to_owned(),
            timezone: "America/Chicago".to_owned(),
            sms_rate_per_sec: 1.0,
            ..LocationInput::default()
        },
    )
    .await
    .expect("second location");
    let t0: Timestamp = "2026-03-02T15:00:00Z".parse().expect("t0");
    let hour = SignedDuration::from_hours(1);
    let oldest = create_lead(&app, &austin, "ord_1").await;
    let older = create_lead(&app, &austin, "ord_2").await;
    let in_dallas = create_lead(&app, &dallas, "ord_3").await;
    let newest = create_lead(&app, &austin, "ord_4").await;
    for (lead, created_at) in
        [(&oldest, t0), (&older, t0 + hour), (&in_dallas, t0 + hour * 2), (&newest, t0 + hour * 3)]
    {
        set_created_at(&app, lead, created_at).await;
    }
    app.store.leads.set_status(tenant.id, newest.id, LeadStatus::Paused).await.expect("paused");
    let id = |lead: &Lead| lead.id.to_string();

    let everything = json_with_status(list(&app, &key, &[]).await, StatusCode::OK).await;
    let in_austin =
        json_with_status(list(&app, &key, &[("location", &austin.id.to_string())]).await, StatusCode::OK).await;
    let paused = json_with_status(list(&app, &key, &[("status", "paused")]).await, StatusCode::OK).await;
    let since = (t0 + hour).to_string();
    let recent = json_with_status(list(&app, &key, &[("since", &since)]).await, StatusCode::OK).await;
    let recent_in_cadence_in_austin = json_with_status(
        list(&app, &key, &[("since", &since), ("status", "in_cadence"), ("location", &austin.id.to_string())]).await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(ids_of(&everything), vec![id(&newest), id(&in_dallas), id(&older), id(&oldest)]);
    assert_eq!(ids_of(&in_austin), vec![id(&newest), id(&older), id(&oldest)]);
    assert_eq!(ids_of(&paused), vec![id(&newest)]);
    assert_eq!(ids_of(&recent), vec![id(&newest), id(&in_dallas), id(&older)], "since is inclusive");
    assert_eq!(ids_of(&recent_in_cadence_in_austin), vec![id(&older)]);
    assert_eq!(everything["next_before"], Value::Null, "one page holds everything");
    assert_eq!(everything["leads"][0]["status"], "paused");
    assert_eq!(everything["leads"][0]["location_id"], austin.id.to_string());
    assert_eq!(timestamp_of(&everything["leads"][0]["created_at"]), t0 + hour * 3);
    app.teardown().await;
}

#[tokio::test]
async fn the_list_pages_with_before_and_next_before_until_next_before_is_null() {
    let app = spawn_app().await;
    let (_, location, key) = seed_staff(&app, "Tint Co").await;
    let t0: Timestamp = "2026-03-02T15:00:00Z".parse().expect("t0");
    let mut leads = Vec::new();
    for minute in 0..5 {
        let lead = create_lead(&app, &location, &format!("ord_{minute}")).await;
        set_created_at(&app, &lead, t0 + SignedDuration::from_mins(minute)).await;
        leads.push(lead.id.to_string());
    }
    leads.reverse();

    let first = json_with_status(list(&app, &key, &[("limit", "2")]).await, StatusCode::OK).await;
    let cursor = first["next_before"].as_str().expect("a full page has a cursor").to_owned();
    let second = json_with_status(list(&app, &key, &[("limit", "2"), ("before", &cursor)]).await, StatusCode::OK).await;
    let cursor = second["next_before"].as_str().expect("a full page has a cursor").to_owned();
    let last = json_with_status(list(&app, &key, &[("limit", "2"), ("before", &cursor)]).await, StatusCode::OK).await;

    assert_eq!(ids_of(&first), leads[0..2]);
    assert_eq!(timestamp_of(&first["next_before"]), t0 + SignedDuration::from_mins(3), "the last item's created_at");
    assert_eq!(ids_of(&second), leads[2..4]);
    assert_eq!(ids_of(&last), leads[4..5]);
    assert_eq!(last["next_before"], Value::Null, "a short page is the last");
    app.teardown().await;
}

#[tokio::test]
async fn the_list_redacts_contact_details_and_reports_speed_to_lead() {
    let app = spawn_app().await;
    let (tenant, location, key) = seed_staff(&app, "Tint Co").await;
    let touched = create_lead(&app, &location, "ord_1").await;
    let untouched = create_lead(&app, &location, "ord_2").await;
    set_created_at(&app, &untouched, touched.created_at - SignedDuration::from_secs(1)).await;
    let first_touch_at = touched.received_at + SignedDuration::from_millis(1500);
    app.store.leads.mark_first_touch(tenant.id, touched.id, first_touch_at).await.expect("first touch");

    let response = list(&app, &key, &[]).await;

    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(!text.contains("5125550142") && !text.contains("pat@example.com"), "contact details leaked: {text}");
    let page: Value = serde_json::from_str(&text).expect("json");
    let summary = &page["leads"][0];
    assert_eq!(summary["id"], touched.id.to_string());
    assert_eq!(summary["phone"], "+1512*****42");
    assert_eq!(summary["email"], "p***@example.com");
    assert_eq!(summary["first_name"], "Pat");
    assert_eq!(summary["vehicle"], "2021 Toyota Camry");
    assert_eq!(timestamp_of(&summary["received_at"]), touched.received_at);
    assert_eq!(timestamp_of(&summary["first_touch_at"]), first_touch_at);
    assert_eq!(summary["speed_to_lead_ms"], 1500);
    assert_eq!(page["leads"][1]["speed_to_lead_ms"], Value::Null, "no first touch yet");
    assert_eq!(page["leads"][1]["first_touch_at"], Value::Null);
    app.teardown().await;
}

#[tokio::test]
async fn the_detail_shows_full_contact_details_and_the_timeline_with_placement_reasons_and_statuses() {
    let app = spawn_app().await;
    let (tenant, location, key) = seed_staff(&app, "Tint Co").await;
    let lead = create_lead(&app, &location, "ord_1").await;
    let plan = app.store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    let claimed = app.store.touchpoints.claim(tenant.id, plan[0].id, far_future()).await.expect("q").expect("claimed");
    let attempt_id = claimed.attempt_id_opt.expect("a claim has an attempt id");
    let sent_at = Timestamp::now();
    app.store.touchpoints.record_sent(tenant.id, claimed.id, attempt_id, "SM0001", sent_at).await.expect("sent");

    let response = send(&app, Method::GET, &format!("/api/leads/{}", lead.id), Some(&key)).await;

    let detail = json_with_status(response, StatusCode::OK).await;
    assert_eq!(detail["id"], lead.id.to_string());
    assert_eq!(detail["status"], "in_cadence");
    assert_eq!(detail["phone"], "+15125550142");
    assert_eq!(detail["email"], "pat@example.com");
    assert_eq!(detail["last_name"], "Lee");
    assert_eq!(detail["vehicle"], "2021 Toyota Camry");
    let timeline = detail["timeline"].as_array().expect("timeline");
    assert_eq!(timeline.len(), 2);
    let (sms, email) = (&timeline[0], &timeline[1]);
    assert_eq!(sms["step_index"], 0);
    assert_eq!(sms["channel"], "sms");
    assert_eq!(sms["template"], "first_sms");
    assert_eq!(sms["status"], "sent");
    assert_eq!(sms["attempts"], 1);
    assert_eq!(sms["provider_message_id"], "SM0001");
    assert_eq!(sms["placement_reason"], Value::Null);
    assert!(sms["sent_at"].is_string(), "{sms}");
    assert_eq!(email["step_index"], 1);
    assert_eq!(email["channel"], "email");
    assert_eq!(email["status"], "pending");
    assert_eq!(email["placement_reason"], "business hours");
    assert_eq!(email["attempts"], 0);
    assert_eq!(timestamp_of(&email["intended_at"]), plan[1].intended_at);
    assert_eq!(timestamp_of(&email["scheduled_at"]), plan[1].scheduled_at);
    for field in ["provider_status", "last_error", "sent_at", "provider_message_id"] {
        assert_eq!(email[field], Value::Null, "{field}");
    }
    assert!(sms.get("attempt_id").is_none(), "the idempotency key stays internal");
    app.teardown().await;
}

#[tokio::test]
async fn a_lead_is_paused_resumed_and_closed_by_staff() {
    let app = spawn_app().await;
    let (tenant, location, key) = seed_staff(&app, "Tint Co").await;
    let lead = create_lead(&app, &location, "ord_1").await;
    let path = |action: &str| format!("/api/leads/{}/{action}", lead.id);

    let paused = json_with_status(send(&app, Method::POST, &path("pause"), Some(&key)).await, StatusCode::OK).await;
    let resumed = json_with_status(send(&app, Method::POST, &path("resume"), Some(&key)).await, StatusCode::OK).await;
    let closed = json_with_status(send(&app, Method::POST, &path("close"), Some(&key)).await, StatusCode::OK).await;

    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["id"], lead.id.to_string());
    assert_eq!(paused["phone"], "+1512*****42", "the answer is the redacted summary");
    assert_eq!(resumed["status"], "in_cadence");
    assert_eq!(closed["status"], "closed");
    assert_eq!(app.store.leads.get(tenant.id, lead.id).await.expect("lead").status, LeadStatus::Closed);
    app.teardown().await;
}

#[tokio::test]
async fn an_invalid_transition_gets_409_naming_the_current_status_and_changes_nothing() {
    let app = spawn_app().await;
    let (tenant, location, key) = seed_staff(&app, "Tint Co").await;
    let in_cadence = create_lead(&app, &location, "ord_1").await;
    let replied = create_lead(&app, &location, "ord_2").await;
    app.store.leads.set_status(tenant.id, replied.id, LeadStatus::Replied).await.expect("replied");
    let cases = [
        (&in_cadence, "resume", "in_cadence"),
        (&replied, "pause", "replied"),
        (&replied, "resume", "replied"),
        (&replied, "close", "replied"),
    ];

    for (lead, action, current) in cases {
        let response = send(&app, Method::POST, &format!("/api/leads/{}/{action}", lead.id), Some(&key)).await;

        let body = json_with_status(response, StatusCode::CONFLICT).await;
        let message = body["error"].as_str().expect("error message");
        assert!(message.contains(action) && message.contains(current), "{action} of a {current} lead: {message}");
    }
    assert_eq!(app.store.leads.get(tenant.id, in_cadence.id).await.expect("lead").status, LeadStatus::InCadence);
    assert_eq!(app.store.leads.get(tenant.id, replied.id).await.expect("lead").status, LeadStatus::Replied);
    app.teardown().await;
}

#[tokio::test]
async fn a_closed_lead_cannot_be_paused_or_resumed_but_closing_it_again_is_200() {
    let app = spawn_app().await;
    let (_, location, key) = seed_staff(&app, "Tint Co").await;
    let lead = create_lead(&app, &location, "ord_1").await;
    let path = |action: &str| format!("/api/leads/{}/{action}", lead.id);
    json_with_status(send(&app, Method::POST, &path("close"), Some(&key)).await, StatusCode::OK).await;

    let pause =
        json_with_status(send(&app, Method::POST, &path("pause"), Some(&key)).await, StatusCode::CONFLICT).await;
    let resume =
        json_with_status(send(&app, Method::POST, &path("resume"), Some(&key)).await, StatusCode::CONFLICT).await;
    let close_again =
        json_with_status(send(&app, Method::POST, &path("close"), Some(&key)).await, StatusCode::OK).await;

    assert!(pause["error"].as_str().is_some_and(|m| m.contains("closed")), "{pause}");
    assert!(resume["error"].as_str().is_some_and(|m| m.contains("closed")), "{resume}");
    assert_eq!(close_again["status"], "closed");
    app.teardown().await;
}

#[tokio::test]
async fn closing_a_lead_cancels_its_pending_touches_and_keeps_the_sent_ones() {
    let app = spawn_app().await;
    let (tenant, location, key) = seed_staff(&app, "Tint Co").await;
    let lead = create_lead(&app, &location, "ord_1").await;
    let plan = app.store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    let claimed = app.store.touchpoints.claim(tenant.id, plan[0].id, far_future()).await.expect("q").expect("claimed");
    let attempt_id = claimed.attempt_id_opt.expect("attempt id");
    app.store
        .touchpoints
        .record_sent(tenant.id, claimed.id, attempt_id, "SM0001", Timestamp::now())
        .await
        .expect("sent");

    let response = send(&app, Method::POST, &format!("/api/leads/{}/close", lead.id), Some(&key)).await;

    json_with_status(response, StatusCode::OK).await;
    let touches = app.store.touchpoints.for_lead(tenant.id, lead.id).await.expect("plan");
    assert_eq!(touches[0].status, TouchpointStatus::Sent, "a sent touch stays sent");
    assert_eq!(touches[1].status, TouchpointStatus::Cancelled);
    assert_eq!(touches[1].last_error_opt.as_deref(), Some("closed by staff"));
    let detail =
        json_with_status(send(&app, Method::GET, &format!("/api/leads/{}", lead.id), Some(&key)).await, StatusCode::OK)
            .await;
    assert_eq!(detail["timeline"][1]["status"], "cancelled");
    app.teardown().await;
}

#[tokio::test]
async fn bad_list_query_parameters_get_400_naming_the_parameter() {
    let app = spawn_app().await;
    let (_, _, key) = seed_staff(&app, "Tint Co").await;
    let cases = [
        ("location", "austin"),
        ("status", "bogus"),
        ("since", "yesterday"),
        ("before", "2026-13-01T00:00:00Z"),
        ("limit", "0"),
        ("limit", "501"),
        ("limit", "ten"),
    ];

    for (name, value) in cases {
        let response = list(&app, &key, &[(name, value)]).await;

        let body = json_with_status(response, StatusCode::BAD_REQUEST).await;
        let message = body["error"].as_str().expect("error message");
        assert!(message.contains(name), "{name}={value}: {message}");
    }
    let at_the_limit = list(&app, &key, &[("limit", "500")]).await;
    assert_eq!(at_the_limit.status(), StatusCode::OK);
    app.teardown().await;
}

#[tokio::test]
async fn a_staff_request_gets_503_not_401_when_the_database_is_down() {
    let db = TestDb::empty().await;
    let proxy = OutageProxy::start().await;
    let settings = test_settings(&database_url(&db.name, Some(proxy.addr)));
    let app = spawn_app_with(db, settings).await;
    let (_, _, key) = seed_staff(&app, "Tint Co").await;
    assert_eq!(list(&app, &key, &[]).await.status(), StatusCode::OK);

    proxy.cut();
    let response = list(&app, &key, &[]).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_some());
    proxy.restore();
    app.teardown().await;
}
