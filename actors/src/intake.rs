//! The one path from a CRM order to a lead, shared by the webhook ingress and the poller:
//! fetch what the order refers to, apply the qualification rules, create the lead (with its
//! plan) idempotently, and hand it to its location. Webhook and poller converge here on one lead
//! per (tenant, source, order id), whichever comes first.

use std::sync::Arc;

use jiff::Timestamp;

use crate::domain::{
    CadenceRef, CrmCustomer, CrmOrder, CrmVehicle, InboxEvent, Lead, LeadCreated, LeadId, Location, NewLead,
    NewTouchpoint, TenantId, Vehicle, WeeklyHours,
};
use crate::ports::{Clock, ConsentStore, Crm, CrmError, CrmEvent, CrmEventDecoder, InboxStore, LeadStore, StoreError};
use crate::qualification::{Candidate, Disqualification, QualificationRules, qualify};

/// Which path brought an order in (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakePath {
    Webhook,
    Poller,
}

impl IntakePath {
    /// Returns the label.
    pub fn as_str(self) -> &'static str {
        match self {
            IntakePath::Webhook => "webhook",
            IntakePath::Poller => "poller",
        }
    }
}

/// The plan a new lead starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCadence {
    pub name: String,
    pub version: i32,
    pub steps: Vec<NewTouchpoint>,
}

/// What a planner knows beyond the lead and its location.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    pub hours: &'a WeeklyHours,
    /// The lead has a phone that has not opted out.
    pub sms_allowed: bool,
    /// The lead has an email that has not opted out.
    pub email_allowed: bool,
}

/// Builds a new lead's plan of touches (the cadence engine implements it).
pub trait Planner: Send + Sync + std::fmt::Debug {
    /// Returns the plan for `lead` at `location`, or `None` when the lead gets no cadence.
    fn plan(&self, lead: &NewLead, location: &Location, context: PlanContext<'_>) -> Option<PlannedCadence>;
}

/// Hands a lead to the actor tree (its location actor, which activates the lead actor).
#[async_trait::async_trait]
pub trait LeadRouter: Send + Sync + std::fmt::Debug {
    /// Tells the lead's location that `lead` was just created.
    async fn lead_created(&self, lead: &Lead, location: &Location);
}

/// What the intake path needs.
#[derive(Debug, Clone)]
pub struct IntakeDeps {
    pub leads: Arc<dyn LeadStore>,
    pub inbox: Arc<dyn InboxStore>,
    pub consent: Arc<dyn ConsentStore>,
    pub crm: Arc<dyn Crm>,
    pub decoder: Arc<dyn CrmEventDecoder>,
    pub rules: Arc<QualificationRules>,
    pub planner: Arc<dyn Planner>,
    pub router: Arc<dyn LeadRouter>,
    pub clock: Arc<dyn Clock>,
    /// The CRM's name in `leads.crm_source` (`shopmonkey`).
    pub crm_source: &'static str,
}

/// What became of one order or event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    LeadCreated(LeadId),
    /// Another path created this lead a moment ago (a race resolved by the unique key).
    Duplicate(LeadId),
    Disqualified(Disqualification),
    /// The order of an existing lead was accepted, invoiced or paid: the lead is won.
    LeadWon(LeadId),
    /// The customer booked in the CRM: their lead is booked.
    LeadBooked(LeadId),
    /// Not an order event, or an order the CRM no longer has.
    Ignored(String),
}

impl IntakeOutcome {
    /// Returns the outcome stored on the inbox row and used as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            IntakeOutcome::LeadCreated(_) => "lead_created",
            IntakeOutcome::Duplicate(_) => "duplicate",
            IntakeOutcome::Disqualified(d) => d.outcome(),
            IntakeOutcome::LeadWon(_) => "lead_won",
            IntakeOutcome::LeadBooked(_) => "lead_booked",
            IntakeOutcome::Ignored(_) => "ignored",
        }
    }
}

/// Why processing failed; retryable errors are retried with back-off, others are final.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("crm call failed")]
    Crm(#[from] CrmError),
    #[error("store call failed")]
    Store(#[from] StoreError),
}

impl IntakeError {
    /// Returns true when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IntakeError::Crm(err) => err.is_retryable(),
            IntakeError::Store(err) => err.is_unavailable(),
        }
    }
}

async fn fetch_optional<T>(result: Result<T, CrmError>) -> Result<Option<T>, CrmError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(CrmError::NotFound) => Ok(None),
        Err(err) => Err(err),
    }
}

fn vehicle_from(crm: &CrmVehicle) -> Vehicle {
    Vehicle {
        year: crm.year_opt,
        make: crm.make_opt.clone(),
        model: crm.model_opt.clone(),
        submodel: crm.submodel_opt.clone(),
    }
}

fn requested_services(order: &CrmOrder) -> Vec<String> {
    order.complaint_opt.iter().chain(order.name_opt.iter()).filter(|s| !s.trim().is_empty()).take(1).cloned().collect()
}

/// Takes one CRM order through qualification to a lead.
///
/// # Errors
/// A CRM or store failure; see [`IntakeError::is_retryable`].
pub async fn process_order(
    deps: &IntakeDeps,
    tenant_id: TenantId,
    order: &CrmOrder,
    received_at: Timestamp,
    path: IntakePath,
) -> Result<IntakeOutcome, IntakeError> {
    let location_opt = match &order.location_id_opt {
        Some(crm_location_id) => deps.leads.location_by_crm_id(tenant_id, crm_location_id).await?,
        None => None,
    };
    let existing_opt = deps.leads.lead_by_crm_order(tenant_id, deps.crm_source, &order.id).await?;
    if let Some(existing) = &existing_opt {
        let won = order.paid
            || order.invoiced
            || deps.rules.won_statuses.iter().any(|s| s.eq_ignore_ascii_case(&order.status));
        if won {
            let reason = format!("order {} in the crm", order.status);
            if deps.leads.stop_lead(tenant_id, existing.id, crate::domain::LeadStatus::Won, &reason).await? {
                metrics::counter!("leadorch_lead_outcomes_total", "outcome" => "won").increment(1);
                tracing::info!(%tenant_id, lead_id = %existing.id, "lead won");
                return Ok(IntakeOutcome::LeadWon(existing.id));
            }
        }
    }
    let already_lead = existing_opt.is_some();
    let precheck = Candidate { order, customer_opt: None, location_opt: location_opt.as_ref(), already_lead };
    // The cheap rules first: no CRM calls for an order that is refused anyway.
    match qualify(&deps.rules, precheck) {
        Err(Disqualification::NoCustomer) => {}
        Err(refused) => return Ok(IntakeOutcome::Disqualified(refused)),
        Ok(_) => {}
    }
    let Some(location) = location_opt else {
        return Ok(IntakeOutcome::Disqualified(Disqualification::UnknownLocation));
    };
    let customer_opt: Option<CrmCustomer> = match &order.customer_id_opt {
        Some(id) => fetch_optional(deps.crm.get_customer(tenant_id, id).await).await?,
        None => None,
    };
    let candidate =
        Candidate { order, customer_opt: customer_opt.as_ref(), location_opt: Some(&location), already_lead };
    let qualified = match qualify(&deps.rules, candidate) {
        Ok(qualified) => qualified,
        Err(refused) => return Ok(IntakeOutcome::Disqualified(refused)),
    };
    let vehicle_opt = match &order.vehicle_id_opt {
        Some(id) => fetch_optional(deps.crm.get_vehicle(tenant_id, id).await).await?.map(|v| vehicle_from(&v)),
        None => None,
    };
    let customer = customer_opt.as_ref();
    let new = NewLead {
        tenant_id,
        location_id: location.id,
        crm_source: deps.crm_source.to_owned(),
        crm_order_id: order.id.clone(),
        crm_customer_id_opt: order.customer_id_opt.clone(),
        first_name_opt: customer.and_then(|c| c.first_name_opt.clone()),
        last_name_opt: customer.and_then(|c| c.last_name_opt.clone()),
        phone_opt: qualified.phone_opt,
        email_opt: qualified.email_opt,
        vehicle_opt,
        requested_services: requested_services(order),
        received_at,
    };
    let hours = deps.leads.location_hours(tenant_id, location.id).await?;
    let sms_allowed = match &new.phone_opt {
        Some(phone) => !deps.consent.is_opted_out(tenant_id, "sms", phone.as_str()).await?,
        None => false,
    };
    let email_allowed = match &new.email_opt {
        Some(email) => !deps.consent.is_opted_out(tenant_id, "email", email.as_str()).await?,
        None => false,
    };
    let plan_opt = deps.planner.plan(&new, &location, PlanContext { hours: &hours, sms_allowed, email_allowed });
    let (cadence_opt, steps): (Option<CadenceRef<'_>>, &[NewTouchpoint]) = match &plan_opt {
        Some(plan) => (Some(CadenceRef { name: &plan.name, version: plan.version }), &plan.steps),
        None => (None, &[]),
    };
    match deps.leads.create_lead(&new, cadence_opt, steps).await? {
        LeadCreated::Created(lead) => {
            metrics::counter!("leadorch_leads_created_total", "path" => path.as_str()).increment(1);
            tracing::info!(%tenant_id, lead_id = %lead.id, location_id = %location.id, path = path.as_str(), "lead created");
            deps.router.lead_created(&lead, &location).await;
            Ok(IntakeOutcome::LeadCreated(lead.id))
        }
        LeadCreated::Existing(lead) => Ok(IntakeOutcome::Duplicate(lead.id)),
    }
}

/// Takes one committed webhook event through [`process_order`].
///
/// # Errors
/// A CRM or store failure; see [`IntakeError::is_retryable`].
pub async fn process_event(deps: &IntakeDeps, event: &InboxEvent) -> Result<IntakeOutcome, IntakeError> {
    let decoded = match deps.decoder.decode(&event.payload) {
        Ok(decoded) => decoded,
        Err(reason) => return Ok(IntakeOutcome::Ignored(reason)),
    };
    match decoded {
        CrmEvent::OrderChanged { order_id, .. } => {
            let order = match deps.crm.get_order(event.tenant_id, &order_id).await {
                Ok(order) => order,
                Err(CrmError::NotFound) => return Ok(IntakeOutcome::Ignored("order no longer in the crm".to_owned())),
                Err(err) => return Err(err.into()),
            };
            process_order(deps, event.tenant_id, &order, event.received_at, IntakePath::Webhook).await
        }
        CrmEvent::AppointmentCreated { customer_id_opt, order_id_opt } => {
            let mut leads = Vec::new();
            if let Some(order_id) = &order_id_opt {
                leads.extend(deps.leads.lead_by_crm_order(event.tenant_id, deps.crm_source, order_id).await?);
            }
            if leads.is_empty() {
                if let Some(customer_id) = &customer_id_opt {
                    leads = deps.leads.leads_of_customer(event.tenant_id, customer_id).await?;
                }
            }
            let mut booked = None;
            for lead in leads.iter().filter(|l| !l.status.stops_cadence()) {
                if deps
                    .leads
                    .stop_lead(
                        event.tenant_id,
                        lead.id,
                        crate::domain::LeadStatus::Booked,
                        "appointment booked in the crm",
                    )
                    .await?
                {
                    metrics::counter!("leadorch_lead_outcomes_total", "outcome" => "booked").increment(1);
                    booked = Some(lead.id);
                }
            }
            Ok(booked.map_or_else(
                || IntakeOutcome::Ignored("no open lead for this appointment".to_owned()),
                IntakeOutcome::LeadBooked,
            ))
        }
        CrmEvent::Other { table } => Ok(IntakeOutcome::Ignored(format!("{table} events are not leads"))),
    }
}

/// A planner that plans no touches: leads are created and routed, with no cadence. Used where
/// no cadence is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCadence;

impl Planner for NoCadence {
    fn plan(&self, _lead: &NewLead, _location: &Location, _context: PlanContext<'_>) -> Option<PlannedCadence> {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::qualification::Disqualification;
    use crate::testing::{FakeCrm, InMemoryStore, ManualClock, RecordingRouter, fixtures, intake_deps};

    struct World {
        deps: IntakeDeps,
        store: InMemoryStore,
        crm: FakeCrm,
        router: RecordingRouter,
        tenant_id: TenantId,
    }

    fn world() -> World {
        let store = InMemoryStore::default();
        let crm = FakeCrm::default();
        let router = RecordingRouter::default();
        let tenant_id = TenantId::new();
        store.add_location(fixtures::location(tenant_id, "loc_1"));
        let deps = intake_deps(&store, &crm, &ManualClock::new(Timestamp::UNIX_EPOCH), &router);
        World { deps, store, crm, router, tenant_id }
    }

    fn add_estimate(world: &World, order_id: &str, crm_location: &str) -> CrmOrder {
        let order = fixtures::estimate(order_id, crm_location, Timestamp::UNIX_EPOCH);
        world.crm.add_order(order.clone(), fixtures::customer(order_id), Some(fixtures::vehicle(order_id)));
        order
    }

    #[tokio::test]
    async fn a_qualified_order_becomes_a_routed_lead_with_normalised_contacts_and_vehicle() {
        let world = world();
        let order = add_estimate(&world, "ord_1", "loc_1");

        let outcome = process_order(&world.deps, world.tenant_id, &order, Timestamp::UNIX_EPOCH, IntakePath::Webhook)
            .await
            .expect("ok");

        let leads = world.store.leads();
        assert_eq!(outcome, IntakeOutcome::LeadCreated(leads[0].id));
        assert_eq!(leads[0].phone_opt.as_ref().map(|p| p.as_str()), Some("+15125550142"));
        assert_eq!(leads[0].vehicle_opt.as_ref().and_then(|v| v.describe()).as_deref(), Some("2021 Toyota Camry"));
        assert_eq!(leads[0].requested_services, vec!["Ceramic tint, all windows".to_owned()]);
        assert_eq!(world.router.routed(), vec![leads[0].id]);
    }

    #[tokio::test]
    async fn the_same_order_twice_is_one_lead_and_the_second_makes_no_crm_calls() {
        let world = world();
        let order = add_estimate(&world, "ord_1", "loc_1");
        process_order(&world.deps, world.tenant_id, &order, Timestamp::UNIX_EPOCH, IntakePath::Webhook)
            .await
            .expect("first");
        let calls_after_first = world.crm.calls();

        let second = process_order(&world.deps, world.tenant_id, &order, Timestamp::UNIX_EPOCH, IntakePath::Poller)
            .await
            .expect("second");

        assert_eq!(second, IntakeOutcome::Disqualified(Disqualification::AlreadyALead));
        assert_eq!(world.crm.calls(), calls_after_first);
        assert_eq!(world.store.leads().len(), 1);
        assert_eq!(world.router.routed().len(), 1);
    }

    #[tokio::test]
    async fn an_order_at_an_unknown_location_is_refused_without_crm_calls() {
        let world = world();
        let order = add_estimate(&world, "ord_2", "loc_elsewhere");

        let outcome = process_order(&world.deps, world.tenant_id, &order, Timestamp::UNIX_EPOCH, IntakePath::Webhook)
            .await
            .expect("ok");

        assert_eq!(outcome, IntakeOutcome::Disqualified(Disqualification::UnknownLocation));
        assert_eq!(world.crm.calls(), 0);
        assert!(world.store.leads().is_empty());
    }

    #[tokio::test]
    async fn a_failing_crm_is_a_retryable_error_and_writes_nothing() {
        let world = world();
        let order = add_estimate(&world, "ord_3", "loc_1");
        world.crm.fail_next(1);

        let result =
            process_order(&world.deps, world.tenant_id, &order, Timestamp::UNIX_EPOCH, IntakePath::Webhook).await;

        assert!(result.as_ref().is_err_and(IntakeError::is_retryable), "{result:?}");
        assert!(world.store.leads().is_empty());
    }

    #[tokio::test]
    async fn an_event_for_another_table_is_ignored_and_an_order_event_fetches_the_order() {
        let world = world();
        add_estimate(&world, "ord_4", "loc_1");
        world.store.commit_event(
            world.tenant_id,
            "e1",
            json!({"table": "customer", "data": {"id": "c"}}),
            Timestamp::UNIX_EPOCH,
        );
        world.store.commit_event(
            world.tenant_id,
            "e2",
            json!({"table": "order", "data": {"id": "ord_4"}}),
            Timestamp::UNIX_EPOCH,
        );
        let events = world.store.events();

        let ignored = process_event(&world.deps, &events[0]).await.expect("ok");
        let created = process_event(&world.deps, &events[1]).await.expect("ok");

        assert!(matches!(ignored, IntakeOutcome::Ignored(_)));
        assert!(matches!(created, IntakeOutcome::LeadCreated(_)));
    }
}
