//! The [`Planner`] the process uses: the cadence a location is assigned (cadence book) laid out
//! by the pure timeline engine with the compliance rules.

use std::sync::Arc;

use crate::compliance::ComplianceRules;
use crate::domain::{CadenceBook, Location, NewLead};
use crate::intake::{PlanContext, PlannedCadence, Planner};
use crate::timeline::{PlanInput, plan};

/// Plans new leads from the configured cadences.
#[derive(Debug, Clone)]
pub struct CadencePlanner {
    book: Arc<CadenceBook>,
    compliance: Arc<ComplianceRules>,
}

impl CadencePlanner {
    /// Creates the planner.
    pub fn new(book: Arc<CadenceBook>, compliance: Arc<ComplianceRules>) -> Self {
        CadencePlanner { book, compliance }
    }
}

impl Planner for CadencePlanner {
    fn plan(&self, lead: &NewLead, location: &Location, context: PlanContext<'_>) -> Option<PlannedCadence> {
        let cadence = self.book.for_location(lead.tenant_id, location.id);
        let location_tz = location.timezone.to_time_zone();
        let steps = plan(&PlanInput {
            arrived_at: lead.received_at,
            cadence,
            location_tz: &location_tz,
            location_hours: context.hours,
            location_state_opt: None,
            phone_opt: lead.phone_opt.as_ref(),
            sms_allowed: context.sms_allowed,
            email_allowed: context.email_allowed,
            compliance: &self.compliance,
        });
        Some(PlannedCadence { name: cadence.name.clone(), version: cadence.version, steps })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jiff::{Span, Timestamp};

    use super::*;
    use crate::domain::{Cadence, CadenceStep, Channel, Phone, StepRule, WeeklyHours};
    use crate::testing::fixtures;

    fn cadence(name: &str, version: i32, steps: usize) -> Cadence {
        let step = |i: usize| CadenceStep {
            channel: Channel::Email,
            template: format!("t{i}"),
            delay: Span::new().minutes(i64::try_from(i).unwrap_or(0)),
            at_local_time_opt: None,
            rule: StepRule::AnyTimeAllowed,
        };
        Cadence { name: name.into(), version, steps: (0..steps).map(step).collect() }
    }

    fn lead(location: &Location) -> NewLead {
        NewLead {
            tenant_id: location.tenant_id,
            location_id: location.id,
            crm_source: "shopmonkey".into(),
            crm_order_id: "o".into(),
            crm_customer_id_opt: None,
            first_name_opt: None,
            last_name_opt: None,
            phone_opt: Some(Phone::parse("2125550100").expect("phone")),
            email_opt: None,
            vehicle_opt: None,
            requested_services: vec![],
            received_at: Timestamp::now(),
        }
    }

    #[test]
    fn a_plan_names_the_cadence_and_version_it_was_built_from_and_a_new_version_only_affects_new_plans() {
        let location = fixtures::location(crate::domain::TenantId::new(), "loc");
        let hours = WeeklyHours::default();
        let context = PlanContext { hours: &hours, sms_allowed: true, email_allowed: true };
        let v1 =
            CadenceBook::new(vec![cadence("standard", 1, 2)], "standard", HashMap::new(), HashMap::new()).expect("v1");
        let v2 =
            CadenceBook::new(vec![cadence("standard", 2, 3)], "standard", HashMap::new(), HashMap::new()).expect("v2");
        let compliance = Arc::new(ComplianceRules::default());

        let before = CadencePlanner::new(Arc::new(v1), compliance.clone())
            .plan(&lead(&location), &location, context)
            .expect("plan");
        let after =
            CadencePlanner::new(Arc::new(v2), compliance).plan(&lead(&location), &location, context).expect("plan");

        assert_eq!((before.name.as_str(), before.version, before.steps.len()), ("standard", 1, 2));
        assert_eq!((after.version, after.steps.len()), (2, 3));
    }

    #[test]
    fn a_location_override_plans_with_that_locations_cadence() {
        let location = fixtures::location(crate::domain::TenantId::new(), "loc");
        let hours = WeeklyHours::default();
        let context = PlanContext { hours: &hours, sms_allowed: true, email_allowed: true };
        let book = CadenceBook::new(
            vec![cadence("standard", 1, 2), cadence("gentle", 4, 1)],
            "standard",
            HashMap::new(),
            HashMap::from([(location.id, "gentle".to_owned())]),
        )
        .expect("book");

        let planned = CadencePlanner::new(Arc::new(book), Arc::new(ComplianceRules::default()))
            .plan(&lead(&location), &location, context)
            .expect("plan");

        assert_eq!((planned.name.as_str(), planned.version, planned.steps.len()), ("gentle", 4, 1));
    }
}
