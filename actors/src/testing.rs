//! In-memory port implementations and a manual clock, for tests and benches of the core
//! (feature `test-util`). They keep the same contracts as the Postgres and HTTP adapters:
//! one lead per (tenant, source, order), tenant scoping, claimable inbox rows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use crate::domain::{
    CadenceRef, CrmAppointment, CrmCannedService, CrmCustomer, CrmLocation, CrmOrder, CrmPage, CrmVehicle, InboxEvent,
    InboxInsert, JobRun, Lead, LeadCreated, LeadId, LeadStatus, Location, NewCrmAppointment, NewLead, NewTouchpoint,
    TenantId,
};
use crate::intake::LeadRouter;
use crate::ports::{Clock, Crm, CrmError, Directory, InboxStore, JobStore, LeadStore, StoreError};

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
        tables.leads.push(lead.clone());
        Ok(LeadCreated::Created(lead))
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
        crm: Arc::new(crm.clone()),
        decoder: Arc::new(JsonOrderDecoder),
        rules: Arc::new(crate::qualification::QualificationRules::default()),
        planner: Arc::new(crate::intake::NoCadence),
        router: Arc::new(router.clone()),
        clock: Arc::new(clock.clone()),
        crm_source: "shopmonkey",
    }
}
