//! In-memory port implementations and a manual clock, for tests and benches of the core
//! (feature `test-util`). They keep the same contracts as the Postgres and HTTP adapters:
//! one lead per (tenant, source, order), tenant scoping, claimable inbox rows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use crate::domain::{
    CadenceRef, Channel, CrmAppointment, CrmCannedService, CrmCustomer, CrmLocation, CrmOrder, CrmPage, CrmVehicle,
    InboxEvent, InboxInsert, JobRun, Lead, LeadCreated, LeadId, LeadStatus, Location, NewCrmAppointment, NewLead,
    NewTouchpoint, TenantId, Touchpoint, TouchpointId, TouchpointStatus,
};
use crate::intake::LeadRouter;
use crate::ports::{
    Clock, ConsentStore, Crm, CrmError, Directory, InboxStore, JobStore, LeadStore, StoreError, TouchStore,
};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test double poisoned by a panicking test is still usable for the assertions after it.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A clock tests move by hand.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// Starts at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { now: Arc::new(Mutex::new(start)) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = lock(&self.now);
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        *lock(&self.now) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *lock(&self.now)
    }
}

#[derive(Debug, Default)]
struct Tables {
    locations: Vec<Location>,
    leads: Vec<Lead>,
    plans: HashMap<LeadId, Vec<NewTouchpoint>>,
    touches: Vec<Touchpoint>,
    opt_outs: Vec<(TenantId, String, String)>,
    inbox: Vec<InboxEvent>,
    next_attempt: HashMap<i64, Timestamp>,
    runs: Vec<(TenantId, JobRun)>,
}

/// Every store port in memory.
#[derive(Debug, Clone, Default)]
pub struct InMemoryStore {
    tables: Arc<Mutex<Tables>>,
}

impl InMemoryStore {
    /// Adds a location.
    pub fn add_location(&self, location: Location) {
        lock(&self.tables).locations.push(location);
    }

    /// Commits an inbox event (as the webhook route would).
    pub fn commit_event(
        &self,
        tenant_id: TenantId,
        event_id: &str,
        payload: serde_json::Value,
        at: Timestamp,
    ) -> InboxInsert {
        let mut tables = lock(&self.tables);
        if tables.inbox.iter().any(|e| e.tenant_id == tenant_id && e.event_id == event_id) {
            return InboxInsert::Duplicate;
        }
        let id = i64::try_from(tables.inbox.len()).unwrap_or(i64::MAX) + 1;
        tables.inbox.push(InboxEvent {
            id,
            tenant_id,
            source: "shopmonkey".to_owned(),
            event_id: event_id.to_owned(),
            payload,
            received_at: at,
            processed_at_opt: None,
            outcome_opt: None,
            attempts: 0,
            last_error_opt: None,
        });
        InboxInsert::Inserted(id)
    }

    /// Returns every lead.
    pub fn leads(&self) -> Vec<Lead> {
        lock(&self.tables).leads.clone()
    }

    /// Returns every inbox event.
    pub fn events(&self) -> Vec<InboxEvent> {
        lock(&self.tables).inbox.clone()
    }

    /// Returns every recorded job run.
    pub fn runs(&self) -> Vec<JobRun> {
        lock(&self.tables).runs.iter().map(|(_, run)| run.clone()).collect()
    }

    /// Sets a lead's status (as a reply, booking or staff action would).
    pub fn set_lead_status(&self, lead_id: LeadId, status: LeadStatus) {
        if let Some(lead) = lock(&self.tables).leads.iter_mut().find(|l| l.id == lead_id) {
            lead.status = status;
        }
    }

    /// Returns every touchpoint.
    pub fn touches(&self) -> Vec<Touchpoint> {
        lock(&self.tables).touches.clone()
    }

    /// Records an opt-out of `address` from `channel`.
    pub fn opt_out(&self, tenant_id: TenantId, channel: &str, address: &str) {
        lock(&self.tables).opt_outs.push((tenant_id, channel.to_owned(), address.to_owned()));
    }

    /// Returns the plan stored with a lead.
    pub fn plan_of(&self, lead_id: LeadId) -> Vec<NewTouchpoint> {
        lock(&self.tables).plans.get(&lead_id).cloned().unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl LeadStore for InMemoryStore {
    async fn location_by_crm_id(
        &self,
        tenant_id: TenantId,
        crm_location_id: &str,
    ) -> Result<Option<Location>, StoreError> {
        Ok(lock(&self.tables)
            .locations
            .iter()
            .find(|l| l.tenant_id == tenant_id && l.crm_location_id == crm_location_id)
            .cloned())
    }

    async fn lead_by_crm_order(
        &self,
        tenant_id: TenantId,
        crm_source: &str,
        crm_order_id: &str,
    ) -> Result<Option<Lead>, StoreError> {
        Ok(lock(&self.tables)
            .leads
            .iter()
            .find(|l| l.tenant_id == tenant_id && l.crm_source == crm_source && l.crm_order_id == crm_order_id)
            .cloned())
    }

    async fn create_lead(
        &self,
        new: &NewLead,
        cadence_opt: Option<CadenceRef<'_>>,
        plan: &[NewTouchpoint],
    ) -> Result<LeadCreated, StoreError> {
        let mut tables = lock(&self.tables);
        let existing = tables.leads.iter().find(|l| {
            l.tenant_id == new.tenant_id && l.crm_source == new.crm_source && l.crm_order_id == new.crm_order_id
        });
        if let Some(lead) = existing {
            return Ok(LeadCreated::Existing(lead.clone()));
        }
        if !tables.locations.iter().any(|l| l.tenant_id == new.tenant_id && l.id == new.location_id) {
            return Err(StoreError::Conflict { constraint: "leads_tenant_id_location_id_fkey".to_owned() });
        }
        let lead = Lead {
            id: LeadId::new(),
            tenant_id: new.tenant_id,
            location_id: new.location_id,
            crm_source: new.crm_source.clone(),
            crm_order_id: new.crm_order_id.clone(),
            crm_customer_id_opt: new.crm_customer_id_opt.clone(),
            status: if plan.is_empty() { LeadStatus::New } else { LeadStatus::InCadence },
            first_name_opt: new.first_name_opt.clone(),
            last_name_opt: new.last_name_opt.clone(),
            phone_opt: new.phone_opt.clone(),
            email_opt: new.email_opt.clone(),
            vehicle_opt: new.vehicle_opt.clone(),
            requested_services: new.requested_services.clone(),
            cadence_name_opt: cadence_opt.map(|c| c.name.to_owned()),
            cadence_version_opt: cadence_opt.map(|c| c.version),
            received_at: new.received_at,
            first_touch_at_opt: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        };
        tables.plans.insert(lead.id, plan.to_vec());
        for step in plan {
            tables.touches.push(Touchpoint {
                id: TouchpointId::new(),
                tenant_id: lead.tenant_id,
                lead_id: lead.id,
                step_index: step.step_index,
                channel: step.channel,
                template: step.template.clone(),
                status: TouchpointStatus::Pending,
                intended_at: step.intended_at,
                scheduled_at: step.scheduled_at,
                placement_reason_opt: step.placement_reason_opt.clone(),
                attempts: 0,
                attempt_id_opt: None,
                provider_message_id_opt: None,
                provider_status_opt: None,
                last_error_opt: None,
                sent_at_opt: None,
            });
        }
        tables.leads.push(lead.clone());
        Ok(LeadCreated::Created(lead))
    }

    async fn stop_lead(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        status: LeadStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let changed = {
            let mut tables = lock(&self.tables);
            let Some(lead) = tables.leads.iter_mut().find(|l| l.tenant_id == tenant_id && l.id == lead_id) else {
                return Err(StoreError::NotFound);
            };
            if lead.status.stops_cadence() && lead.status != LeadStatus::Replied {
                false
            } else {
                lead.status = status;
                true
            }
        };
        if changed {
            self.cancel_pending_touches(tenant_id, lead_id, None, reason).await?;
        }
        Ok(changed)
    }

    async fn leads_of_customer(&self, tenant_id: TenantId, crm_customer_id: &str) -> Result<Vec<Lead>, StoreError> {
        Ok(lock(&self.tables)
            .leads
            .iter()
            .filter(|l| l.tenant_id == tenant_id && l.crm_customer_id_opt.as_deref() == Some(crm_customer_id))
            .cloned()
            .collect())
    }

    async fn location_hours(
        &self,
        _tenant_id: TenantId,
        _location_id: crate::domain::LocationId,
    ) -> Result<crate::domain::WeeklyHours, StoreError> {
        Ok(crate::domain::WeeklyHours::default())
    }

    async fn get_lead(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Lead, StoreError> {
        lock(&self.tables)
            .leads
            .iter()
            .find(|l| l.tenant_id == tenant_id && l.id == lead_id)
            .cloned()
            .ok_or(StoreError::NotFound)
    }
}

#[async_trait::async_trait]
impl InboxStore for InMemoryStore {
    async fn get_event(&self, tenant_id: TenantId, id: i64) -> Result<InboxEvent, StoreError> {
        lock(&self.tables)
            .inbox
            .iter()
            .find(|e| e.tenant_id == tenant_id && e.id == id)
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    async fn unprocessed_events(
        &self,
        tenant_id: TenantId,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let tables = lock(&self.tables);
        Ok(tables
            .inbox
            .iter()
            .filter(|e| e.tenant_id == tenant_id && e.processed_at_opt.is_none())
            .filter(|e| tables.next_attempt.get(&e.id).is_none_or(|at| *at <= now))
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect())
    }

    async fn mark_event_processed(&self, tenant_id: TenantId, id: i64, outcome: &str) -> Result<(), StoreError> {
        let mut tables = lock(&self.tables);
        let event =
            tables.inbox.iter_mut().find(|e| e.tenant_id == tenant_id && e.id == id).ok_or(StoreError::NotFound)?;
        event.processed_at_opt = Some(Timestamp::now());
        event.outcome_opt = Some(outcome.to_owned());
        event.attempts += 1;
        Ok(())
    }

    async fn record_event_failure(
        &self,
        tenant_id: TenantId,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tables = lock(&self.tables);
        let event =
            tables.inbox.iter_mut().find(|e| e.tenant_id == tenant_id && e.id == id).ok_or(StoreError::NotFound)?;
        event.attempts += 1;
        event.last_error_opt = Some(error.to_owned());
        tables.next_attempt.insert(id, next_attempt_at);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Directory for InMemoryStore {
    async fn active_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let mut tenants: Vec<TenantId> = lock(&self.tables).locations.iter().map(|l| l.tenant_id).collect();
        tenants.sort();
        tenants.dedup();
        Ok(tenants)
    }

    async fn active_locations(&self, tenant_id: TenantId) -> Result<Vec<Location>, StoreError> {
        Ok(lock(&self.tables).locations.iter().filter(|l| l.tenant_id == tenant_id && l.active).cloned().collect())
    }
}

#[async_trait::async_trait]
impl JobStore for InMemoryStore {
    async fn last_cursor(&self, tenant_id: TenantId, job: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.tables)
            .runs
            .iter()
            .rev()
            .find(|(t, run)| *t == tenant_id && run.job == job && run.error_opt.is_none() && run.cursor_opt.is_some())
            .and_then(|(_, run)| run.cursor_opt.clone()))
    }

    async fn record_run(&self, tenant_id: TenantId, run: &JobRun) -> Result<(), StoreError> {
        lock(&self.tables).runs.push((tenant_id, run.clone()));
        Ok(())
    }
}

#[derive(Debug, Default)]
struct CrmData {
    orders: Vec<CrmOrder>,
    customers: Vec<CrmCustomer>,
    vehicles: Vec<CrmVehicle>,
    appointments: Vec<CrmAppointment>,
}

/// A scripted CRM: records what it was asked, fails the next N calls on demand, and can panic
/// once (to test that a crashing worker loses nothing).
#[derive(Debug, Clone, Default)]
pub struct FakeCrm {
    data: Arc<Mutex<CrmData>>,
    fail_next: Arc<AtomicUsize>,
    panic_next: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl FakeCrm {
    /// Adds an order with its customer and vehicle.
    pub fn add_order(&self, order: CrmOrder, customer: CrmCustomer, vehicle_opt: Option<CrmVehicle>) {
        let mut data = lock(&self.data);
        data.orders.retain(|o| o.id != order.id);
        data.orders.push(order);
        data.customers.retain(|c| c.id != customer.id);
        data.customers.push(customer);
        if let Some(vehicle) = vehicle_opt {
            data.vehicles.push(vehicle);
        }
    }

    /// Makes the next `n` calls fail with `Unavailable`.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` calls panic.
    pub fn panic_next(&self, n: usize) {
        self.panic_next.store(n, Ordering::SeqCst);
    }

    /// Returns how many calls were made.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn enter(&self) -> Result<(), CrmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.panic_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("fake crm told to panic");
        }
        if self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(CrmError::Unavailable("fake crm told to fail".to_owned()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Crm for FakeCrm {
    async fn get_order(&self, _tenant_id: TenantId, order_id: &str) -> Result<CrmOrder, CrmError> {
        self.enter()?;
        lock(&self.data).orders.iter().find(|o| o.id == order_id).cloned().ok_or(CrmError::NotFound)
    }

    async fn get_customer(&self, _tenant_id: TenantId, customer_id: &str) -> Result<CrmCustomer, CrmError> {
        self.enter()?;
        lock(&self.data).customers.iter().find(|c| c.id == customer_id).cloned().ok_or(CrmError::NotFound)
    }

    async fn get_vehicle(&self, _tenant_id: TenantId, vehicle_id: &str) -> Result<CrmVehicle, CrmError> {
        self.enter()?;
        lock(&self.data).vehicles.iter().find(|v| v.id == vehicle_id).cloned().ok_or(CrmError::NotFound)
    }

    async fn list_orders_updated_since(
        &self,
        _tenant_id: TenantId,
        since: Timestamp,
        skip: u32,
        limit: u32,
    ) -> Result<CrmPage<CrmOrder>, CrmError> {
        self.enter()?;
        let data = lock(&self.data);
        let matching: Vec<CrmOrder> = data.orders.iter().filter(|o| o.updated_date >= since).cloned().collect();
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit.min(100)).unwrap_or(100);
        let items: Vec<CrmOrder> = matching.iter().skip(skip).take(limit).cloned().collect();
        Ok(CrmPage { has_more: skip + items.len() < matching.len(), items })
    }

    async fn list_canned_services(
        &self,
        _tenant_id: TenantId,
        _crm_location_id: &str,
    ) -> Result<Vec<CrmCannedService>, CrmError> {
        self.enter()?;
        Ok(Vec::new())
    }

    async fn list_locations(&self, _tenant_id: TenantId) -> Result<Vec<CrmLocation>, CrmError> {
        self.enter()?;
        Ok(Vec::new())
    }

    async fn list_appointments(
        &self,
        _tenant_id: TenantId,
        crm_location_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<CrmAppointment>, CrmError> {
        self.enter()?;
        Ok(lock(&self.data)
            .appointments
            .iter()
            .filter(|a| a.location_id_opt.as_deref() == Some(crm_location_id) && a.start >= from && a.start < to)
            .cloned()
            .collect())
    }

    async fn create_appointment(
        &self,
        _tenant_id: TenantId,
        appointment: &NewCrmAppointment,
    ) -> Result<CrmAppointment, CrmError> {
        self.enter()?;
        let created = CrmAppointment {
            id: format!("apt_{}", uuid::Uuid::new_v4().simple()),
            location_id_opt: Some(appointment.location_id.clone()),
            customer_id_opt: appointment.customer_id_opt.clone(),
            order_id_opt: appointment.order_id_opt.clone(),
            name: appointment.name.clone(),
            start: appointment.start,
            end: appointment.end,
        };
        lock(&self.data).appointments.push(created.clone());
        Ok(created)
    }
}

/// A router that records which leads it was given.
#[derive(Debug, Clone, Default)]
pub struct RecordingRouter {
    routed: Arc<Mutex<Vec<LeadId>>>,
}

impl RecordingRouter {
    /// Returns the routed leads in order.
    pub fn routed(&self) -> Vec<LeadId> {
        lock(&self.routed).clone()
    }
}

#[async_trait::async_trait]
impl LeadRouter for RecordingRouter {
    async fn lead_created(&self, lead: &Lead, _location: &Location) {
        lock(&self.routed).push(lead.id);
    }
}

/// Decodes `{"table": "order", "operation": "INSERT", "data": {"id": ...}}` like the ShopMonkey
/// adapter does, for core tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonOrderDecoder;

impl crate::ports::CrmEventDecoder for JsonOrderDecoder {
    fn decode(&self, payload: &serde_json::Value) -> Result<crate::ports::CrmEvent, String> {
        let table = payload.get("table").and_then(|t| t.as_str()).ok_or("missing table")?;
        if table != "order" {
            return Ok(crate::ports::CrmEvent::Other { table: table.to_owned() });
        }
        let order_id = payload.pointer("/data/id").and_then(|v| v.as_str()).ok_or("missing data.id")?;
        Ok(crate::ports::CrmEvent::OrderChanged { order_id: order_id.to_owned(), created: true })
    }
}

/// Ready-made records for core tests.
pub mod fixtures {
    use jiff::Timestamp;

    use crate::domain::{
        CrmCustomer, CrmEmail, CrmOrder, CrmPhone, CrmVehicle, Location, LocationId, TenantId, TimeZoneName,
    };

    /// An active location of `tenant_id` with CRM id `crm_id`.
    pub fn location(tenant_id: TenantId, crm_id: &str) -> Location {
        Location {
            id: LocationId::new(),
            tenant_id,
            crm_location_id: crm_id.to_owned(),
            name: format!("Shop {crm_id}"),
            address_opt: None,
            phone_opt: None,
            timezone: TimeZoneName::parse("America/Chicago").expect("a valid zone"),
            sms_from_opt: None,
            sms_rate_per_sec: 1.0,
            email_from_opt: None,
            active: true,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    /// An estimate at `crm_location_id` for customer `cus_<order_id>`, updated at `updated`.
    pub fn estimate(order_id: &str, crm_location_id: &str, updated: Timestamp) -> CrmOrder {
        CrmOrder {
            id: order_id.to_owned(),
            number_opt: None,
            location_id_opt: Some(crm_location_id.to_owned()),
            customer_id_opt: Some(format!("cus_{order_id}")),
            vehicle_id_opt: Some(format!("veh_{order_id}")),
            status: "Estimate".to_owned(),
            name_opt: None,
            complaint_opt: Some("Ceramic tint, all windows".to_owned()),
            authorized: false,
            invoiced: false,
            paid: false,
            archived: false,
            deleted: false,
            total_cost_cents: 30000,
            created_date: updated,
            updated_date: updated,
            version_opt: Some(1),
        }
    }

    /// The customer of [`estimate`]`(order_id, ..)`.
    pub fn customer(order_id: &str) -> CrmCustomer {
        CrmCustomer {
            id: format!("cus_{order_id}"),
            first_name_opt: Some("Pat".to_owned()),
            last_name_opt: Some("Lee".to_owned()),
            company_name_opt: None,
            customer_type_opt: Some("Customer".to_owned()),
            emails: vec![CrmEmail { email: "pat@example.com".to_owned(), primary: true, subscribed: true }],
            phone_numbers: vec![CrmPhone {
                number: "5125550142".to_owned(),
                primary: true,
                opt_in: true,
                kind_opt: None,
            }],
            note_opt: None,
        }
    }

    /// The vehicle of [`estimate`]`(order_id, ..)`.
    pub fn vehicle(order_id: &str) -> CrmVehicle {
        CrmVehicle {
            id: format!("veh_{order_id}"),
            year_opt: Some(2021),
            make_opt: Some("Toyota".to_owned()),
            model_opt: Some("Camry".to_owned()),
            submodel_opt: None,
        }
    }
}

/// Intake dependencies over in-memory doubles: default rules, no cadence, the JSON decoder.
pub fn intake_deps(
    store: &InMemoryStore,
    crm: &FakeCrm,
    clock: &ManualClock,
    router: &RecordingRouter,
) -> crate::intake::IntakeDeps {
    crate::intake::IntakeDeps {
        leads: Arc::new(store.clone()),
        inbox: Arc::new(store.clone()),
        consent: Arc::new(store.clone()),
        crm: Arc::new(crm.clone()),
        decoder: Arc::new(JsonOrderDecoder),
        rules: Arc::new(crate::qualification::QualificationRules::default()),
        planner: Arc::new(crate::intake::NoCadence),
        router: Arc::new(router.clone()),
        clock: Arc::new(clock.clone()),
        crm_source: "shopmonkey",
    }
}

#[async_trait::async_trait]
impl TouchStore for InMemoryStore {
    async fn touches_of(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<Touchpoint>, StoreError> {
        let mut touches: Vec<Touchpoint> = lock(&self.tables)
            .touches
            .iter()
            .filter(|t| t.tenant_id == tenant_id && t.lead_id == lead_id)
            .cloned()
            .collect();
        touches.sort_by_key(|t| t.step_index);
        Ok(touches)
    }

    async fn due_touches(
        &self,
        tenant_id: TenantId,
        until: Timestamp,
        limit: i64,
    ) -> Result<Vec<crate::ports::DueTouch>, StoreError> {
        let tables = lock(&self.tables);
        let mut due: Vec<crate::ports::DueTouch> = tables
            .touches
            .iter()
            .filter(|t| t.tenant_id == tenant_id && t.status == TouchpointStatus::Pending && t.scheduled_at <= until)
            .filter_map(|t| {
                let lead = tables.leads.iter().find(|l| l.id == t.lead_id)?;
                Some(crate::ports::DueTouch { location_id: lead.location_id, touch: t.clone() })
            })
            .collect();
        due.sort_by_key(|d| d.touch.scheduled_at);
        due.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(due)
    }

    async fn claim_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        due_by: Timestamp,
    ) -> Result<Option<Touchpoint>, StoreError> {
        let mut tables = lock(&self.tables);
        let Some(touch) = tables.touches.iter_mut().find(|t| t.tenant_id == tenant_id && t.id == touchpoint_id) else {
            return Ok(None);
        };
        if touch.status != TouchpointStatus::Pending || touch.scheduled_at > due_by {
            return Ok(None);
        }
        touch.status = TouchpointStatus::Sending;
        touch.attempts += 1;
        touch.attempt_id_opt = Some(uuid::Uuid::new_v4());
        Ok(Some(touch.clone()))
    }

    async fn record_touch_sent(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
        provider_message_id: &str,
        sent_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tables = lock(&self.tables);
        let touch = tables
            .touches
            .iter_mut()
            .find(|t| {
                t.tenant_id == tenant_id
                    && t.id == touchpoint_id
                    && t.attempt_id_opt == Some(attempt_id)
                    && t.status == TouchpointStatus::Sending
            })
            .ok_or(StoreError::NotFound)?;
        touch.status = TouchpointStatus::Sent;
        touch.provider_message_id_opt = Some(provider_message_id.to_owned());
        touch.sent_at_opt = Some(sent_at);
        touch.last_error_opt = None;
        Ok(())
    }

    async fn record_touch_failed(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
        error: &str,
        retry_at_opt: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let mut tables = lock(&self.tables);
        let touch = tables
            .touches
            .iter_mut()
            .find(|t| {
                t.tenant_id == tenant_id
                    && t.id == touchpoint_id
                    && t.attempt_id_opt == Some(attempt_id)
                    && t.status == TouchpointStatus::Sending
            })
            .ok_or(StoreError::NotFound)?;
        touch.last_error_opt = Some(error.to_owned());
        match retry_at_opt {
            Some(at) => {
                touch.status = TouchpointStatus::Pending;
                touch.scheduled_at = at;
            }
            None => touch.status = TouchpointStatus::Failed,
        }
        Ok(())
    }

    async fn close_touch(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        status: TouchpointStatus,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tables = lock(&self.tables);
        let touch = tables
            .touches
            .iter_mut()
            .find(|t| {
                t.tenant_id == tenant_id
                    && t.id == touchpoint_id
                    && matches!(t.status, TouchpointStatus::Pending | TouchpointStatus::Sending)
            })
            .ok_or(StoreError::NotFound)?;
        touch.status = status;
        touch.last_error_opt = Some(reason.to_owned());
        Ok(())
    }

    async fn cancel_pending_touches(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        channel_opt: Option<Channel>,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let mut cancelled = 0;
        for touch in lock(&self.tables).touches.iter_mut().filter(|t| {
            t.tenant_id == tenant_id
                && t.lead_id == lead_id
                && t.status == TouchpointStatus::Pending
                && channel_opt.is_none_or(|c| c == t.channel)
        }) {
            touch.status = TouchpointStatus::Cancelled;
            touch.last_error_opt = Some(reason.to_owned());
            cancelled += 1;
        }
        Ok(cancelled)
    }

    async fn confirm_claim(
        &self,
        tenant_id: TenantId,
        touchpoint_id: TouchpointId,
        attempt_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        Ok(lock(&self.tables).touches.iter().any(|t| {
            t.tenant_id == tenant_id
                && t.id == touchpoint_id
                && t.attempt_id_opt == Some(attempt_id)
                && t.status == TouchpointStatus::Sending
        }))
    }

    async fn mark_first_touch(&self, tenant_id: TenantId, lead_id: LeadId, at: Timestamp) -> Result<bool, StoreError> {
        let mut tables = lock(&self.tables);
        let lead = tables
            .leads
            .iter_mut()
            .find(|l| l.tenant_id == tenant_id && l.id == lead_id)
            .ok_or(StoreError::NotFound)?;
        if lead.first_touch_at_opt.is_some() {
            return Ok(false);
        }
        lead.first_touch_at_opt = Some(at);
        Ok(true)
    }
}

#[async_trait::async_trait]
impl ConsentStore for InMemoryStore {
    async fn is_opted_out(&self, tenant_id: TenantId, channel: &str, address: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.tables).opt_outs.iter().any(|(t, c, a)| *t == tenant_id && c == channel && a == address))
    }

    async fn record_opt_out(
        &self,
        tenant_id: TenantId,
        channel: &str,
        address: &str,
        _source: &str,
    ) -> Result<(), StoreError> {
        self.opt_out(tenant_id, channel, address);
        Ok(())
    }
}

/// An SMS and email provider double: records what was sent, fails on demand.
#[derive(Debug, Clone, Default)]
pub struct RecordingSender {
    sent: Arc<Mutex<Vec<(String, String, Timestamp)>>>,
    fail_next: Arc<Mutex<Vec<crate::ports::SendError>>>,
}

impl RecordingSender {
    /// Makes the next sends fail with these errors, in order.
    pub fn fail_with(&self, errors: Vec<crate::ports::SendError>) {
        *lock(&self.fail_next) = errors;
    }

    /// Returns (recipient, body or subject, when) of every accepted message.
    pub fn sent(&self) -> Vec<(String, String, Timestamp)> {
        lock(&self.sent).clone()
    }

    fn accept(&self, to: &str, body: &str) -> Result<crate::ports::SentMessage, crate::ports::SendError> {
        {
            let mut failures = lock(&self.fail_next);
            if !failures.is_empty() {
                return Err(failures.remove(0));
            }
        }
        let now = Timestamp::now();
        let mut sent = lock(&self.sent);
        sent.push((to.to_owned(), body.to_owned(), now));
        Ok(crate::ports::SentMessage { provider_id: format!("msg_{}", sent.len()), accepted_at: now })
    }
}

#[async_trait::async_trait]
impl crate::ports::SmsSender for RecordingSender {
    async fn send_sms(
        &self,
        sms: &crate::ports::OutboundSms,
    ) -> Result<crate::ports::SentMessage, crate::ports::SendError> {
        self.accept(sms.to.as_str(), &sms.body)
    }

    async fn sent_messages(
        &self,
        to: &crate::domain::Phone,
        _from: &crate::domain::Phone,
        since: Timestamp,
    ) -> Result<Vec<crate::ports::ProviderMessage>, crate::ports::SendError> {
        Ok(lock(&self.sent)
            .iter()
            .enumerate()
            .filter(|(_, (recipient, _, at))| recipient == to.as_str() && *at >= since)
            .map(|(i, (recipient, body, at))| crate::ports::ProviderMessage {
                provider_id: format!("msg_{}", i + 1),
                to: recipient.clone(),
                body: body.clone(),
                created_at: *at,
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl crate::ports::EmailSender for RecordingSender {
    async fn send_email(
        &self,
        email: &crate::ports::OutboundEmail,
    ) -> Result<crate::ports::SentMessage, crate::ports::SendError> {
        self.accept(email.to.as_str(), &email.subject)
    }

    async fn find_by_custom_arg(
        &self,
        _key: &str,
        _value: &str,
    ) -> Result<Vec<crate::ports::ProviderMessage>, crate::ports::SendError> {
        Ok(Vec::new())
    }
}

/// Renders `"{template} for {first name}"`, for tests that do not care about wording.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainRenderer;

impl crate::ports::TouchRenderer for PlainRenderer {
    fn render_sms(
        &self,
        template: &str,
        lead: &Lead,
        _location: &Location,
        _issued_at: Timestamp,
    ) -> Result<String, String> {
        Ok(format!("{template} for {}", lead.first_name_opt.as_deref().unwrap_or("there")))
    }

    fn render_email(
        &self,
        template: &str,
        lead: &Lead,
        _location: &Location,
        _issued_at: Timestamp,
    ) -> Result<crate::ports::RenderedEmail, String> {
        let subject = format!("{template} for {}", lead.first_name_opt.as_deref().unwrap_or("there"));
        Ok(crate::ports::RenderedEmail { subject: subject.clone(), text: subject.clone(), html: subject })
    }
}

/// Lead-actor dependencies over in-memory doubles (default compliance rules).
/// Lead actors run on real timers, so their clock must be the wall clock: pass `SystemClock`
/// unless the test never lets a timer fire.
pub fn lead_deps(
    store: &InMemoryStore,
    sender: &RecordingSender,
    clock: Arc<dyn Clock>,
    policy: crate::actors::lead::LeadPolicy,
) -> Arc<crate::actors::lead::LeadDeps> {
    Arc::new(crate::actors::lead::LeadDeps {
        leads: Arc::new(store.clone()),
        touches: Arc::new(store.clone()),
        consent: Arc::new(store.clone()),
        sms: Arc::new(sender.clone()),
        email: Arc::new(sender.clone()),
        renderer: Arc::new(PlainRenderer),
        clock,
        compliance: Arc::new(crate::compliance::ComplianceRules::default()),
        policy,
    })
}
