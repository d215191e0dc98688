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
