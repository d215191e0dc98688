//! Which CRM orders become leads: one data-driven rule set shared by the webhook and the poller
//! path. The rules are configuration (`[qualification]` in `config/default.toml`); this module
//! only applies them, in a fixed order, and says which rule refused a candidate.

use serde::{Deserialize, Serialize};

use crate::domain::{CrmCustomer, CrmOrder, Email, Location, Phone};

/// The rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualificationRules {
    /// Order statuses that count as a new lead (ShopMonkey: `Estimate`).
    pub lead_statuses: Vec<String>,
    /// A lead needs at least one usable contact point (an SMS-consenting phone or a subscribed
    /// email) or there is nobody to follow up with.
    pub require_contact: bool,
    /// Customer types never followed up (e.g. `Fleet` accounts handled by sales).
    pub skip_customer_types: Vec<String>,
    /// Case-insensitive words that mark an internal or test customer when found in the
    /// customer's name, company or note, or in the order's name.
    pub internal_markers: Vec<String>,
    /// Email domains of staff and test accounts.
    pub internal_email_domains: Vec<String>,
    /// Order statuses that mean the customer said yes: an existing lead becomes `won` and its
    /// cadence stops.
    #[serde(default = "default_won_statuses")]
    pub won_statuses: Vec<String>,
}

fn default_won_statuses() -> Vec<String> {
    vec!["RepairOrder".to_owned(), "Invoice".to_owned()]
}

impl Default for QualificationRules {
    fn default() -> Self {
        QualificationRules {
            lead_statuses: vec!["Estimate".to_owned()],
            require_contact: true,
            skip_customer_types: vec!["Fleet".to_owned()],
            internal_markers: vec!["test customer".to_owned(), "internal".to_owned(), "do not contact".to_owned()],
            internal_email_domains: Vec::new(),
            won_statuses: default_won_statuses(),
        }
    }
}

/// Why an order is not (or not again) a lead. Each is recorded as the inbox event's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disqualification {
    ArchivedOrDeleted,
    StatusNotALead {
        status: String,
    },
    /// The order names no location, or one the tenant does not have.
    UnknownLocation,
    InactiveLocation,
    AlreadyALead,
    NoCustomer,
    CustomerTypeExcluded {
        customer_type: String,
    },
    InternalCustomer,
    NoValidContact,
}

impl Disqualification {
    /// Returns the stable outcome name stored on the inbox row and used as a metric label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Disqualification::ArchivedOrDeleted => "archived_or_deleted",
            Disqualification::StatusNotALead { .. } => "status_not_a_lead",
            Disqualification::UnknownLocation => "unknown_location",
            Disqualification::InactiveLocation => "inactive_location",
            Disqualification::AlreadyALead => "already_a_lead",
            Disqualification::NoCustomer => "no_customer",
            Disqualification::CustomerTypeExcluded { .. } => "customer_type_excluded",
            Disqualification::InternalCustomer => "internal_customer",
            Disqualification::NoValidContact => "no_valid_contact",
        }
    }
}

/// What the rules need to know about one order.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub order: &'a CrmOrder,
    /// The order's customer, when it has one and it could be fetched.
    pub customer_opt: Option<&'a CrmCustomer>,
    /// The tenant's location the order names, if it exists.
    pub location_opt: Option<&'a Location>,
    /// The order is already a lead of this tenant.
    pub already_lead: bool,
}

/// The contact points a qualified lead may be followed up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    /// Normalised to E.164; `None` when missing, invalid or without SMS consent.
    pub phone_opt: Option<Phone>,
    /// `None` when missing, invalid or unsubscribed.
    pub email_opt: Option<Email>,
}

fn contains_marker(haystack_opt: Option<&str>, markers: &[String]) -> bool {
    let Some(haystack) = haystack_opt else { return false };
    let haystack = haystack.to_lowercase();
    markers.iter().any(|m| !m.trim().is_empty() && haystack.contains(&m.to_lowercase()))
}

/// Applies the rules in order: archived/deleted, status, location, already a lead, customer,
/// customer type, internal customer, contact points. The first rule that refuses wins.
///
/// # Errors
/// The rule that refused the candidate.
pub fn qualify(rules: &QualificationRules, candidate: Candidate<'_>) -> Result<Qualified, Disqualification> {
    let order = candidate.order;
    if order.archived || order.deleted {
        return Err(Disqualification::ArchivedOrDeleted);
    }
    if !rules.lead_statuses.iter().any(|s| s.eq_ignore_ascii_case(&order.status)) {
        return Err(Disqualification::StatusNotALead { status: order.status.clone() });
    }
    let Some(location) = candidate.location_opt else { return Err(Disqualification::UnknownLocation) };
    if !location.active {
        return Err(Disqualification::InactiveLocation);
    }
    if candidate.already_lead {
        return Err(Disqualification::AlreadyALead);
    }
    let Some(customer) = candidate.customer_opt else { return Err(Disqualification::NoCustomer) };
    if let Some(customer_type) = &customer.customer_type_opt {
        if rules.skip_customer_types.iter().any(|t| t.eq_ignore_ascii_case(customer_type)) {
            return Err(Disqualification::CustomerTypeExcluded { customer_type: customer_type.clone() });
        }
    }
    let markers = &rules.internal_markers;
    let full_name = format!(
        "{} {}",
        customer.first_name_opt.as_deref().unwrap_or(""),
        customer.last_name_opt.as_deref().unwrap_or("")
    );
    if contains_marker(Some(&full_name), markers)
        || contains_marker(customer.company_name_opt.as_deref(), markers)
        || contains_marker(customer.note_opt.as_deref(), markers)
        || contains_marker(order.name_opt.as_deref(), markers)
    {
        return Err(Disqualification::InternalCustomer);
    }
    let email_opt = customer.preferred_email().filter(|e| e.subscribed).and_then(|e| Email::parse(&e.email).ok());
    if email_opt.as_ref().is_some_and(|e| {
        rules.internal_email_domains.iter().any(|d| e.domain().eq_ignore_ascii_case(d.trim_start_matches('@')))
    }) {
        return Err(Disqualification::InternalCustomer);
    }
    let phone_opt = customer.preferred_phone().filter(|p| p.opt_in).and_then(|p| Phone::parse(&p.number).ok());
    if rules.require_contact && phone_opt.is_none() && email_opt.is_none() {
        return Err(Disqualification::NoValidContact);
    }
    Ok(Qualified { phone_opt, email_opt })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::domain::{CrmEmail, CrmPhone, LocationId, TenantId, TimeZoneName};

    fn order() -> CrmOrder {
        CrmOrder {
            id: "ord_1".into(),
            number_opt: Some("1001".into()),
            location_id_opt: Some("loc_1".into()),
            customer_id_opt: Some("cus_1".into()),
            vehicle_id_opt: Some("veh_1".into()),
            status: "Estimate".into(),
            name_opt: Some("Tint estimate".into()),
            complaint_opt: None,
            authorized: false,
            invoiced: false,
            paid: false,
            archived: false,
            deleted: false,
            total_cost_cents: 30000,
            created_date: Timestamp::UNIX_EPOCH,
            updated_date: Timestamp::UNIX_EPOCH,
            version_opt: Some(1),
        }
    }

    fn customer() -> CrmCustomer {
        CrmCustomer {
            id: "cus_1".into(),
            first_name_opt: Some("Pat".into()),
            last_name_opt: Some("Lee".into()),
            company_name_opt: None,
            customer_type_opt: Some("Customer".into()),
            emails: vec![CrmEmail { email: "pat@example.com".into(), primary: true, subscribed: true }],
            phone_numbers: vec![CrmPhone { number: "5125550142".into(), primary: true, opt_in: true, kind_opt: None }],
            note_opt: None,
        }
    }

    fn location(active: bool) -> Location {
        Location {
            id: LocationId::new(),
            tenant_id: TenantId::new(),
            crm_location_id: "loc_1".into(),
            name: "Austin".into(),
            address_opt: None,
            phone_opt: None,
            timezone: TimeZoneName::parse("America/Chicago").expect("tz"),
            sms_from_opt: None,
            sms_rate_per_sec: 1.0,
            email_from_opt: None,
            active,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    /// One row per rule: how the candidate is changed, and the expected result.
    #[test]
    fn each_rule_refuses_what_it_should_and_nothing_else() {
        let rules = QualificationRules {
            internal_email_domains: vec!["tintco.example".into()],
            ..QualificationRules::default()
        };
        let active = location(true);
        let inactive = location(false);
        type Tweak = fn(&mut CrmOrder, &mut CrmCustomer, &mut bool);
        type Row<'a> = (&'a str, Tweak, Option<&'a Location>, Result<(), &'a str>);
        let table: Vec<Row<'_>> = vec![
            ("a fresh estimate qualifies", |_, _, _| {}, Some(&active), Ok(())),
            ("an archived order does not", |o, _, _| o.archived = true, Some(&active), Err("archived_or_deleted")),
            ("a deleted order does not", |o, _, _| o.deleted = true, Some(&active), Err("archived_or_deleted")),
            (
                "an invoice is not a new lead",
                |o, _, _| o.status = "Invoice".into(),
                Some(&active),
                Err("status_not_a_lead"),
            ),
            ("status matching ignores case", |o, _, _| o.status = "estimate".into(), Some(&active), Ok(())),
            ("an unknown location does not", |_, _, _| {}, None, Err("unknown_location")),
            ("an inactive location does not", |_, _, _| {}, Some(&inactive), Err("inactive_location")),
            ("an order that is already a lead does not", |_, _, a| *a = true, Some(&active), Err("already_a_lead")),
            (
                "a fleet customer does not",
                |_, c, _| c.customer_type_opt = Some("Fleet".into()),
                Some(&active),
                Err("customer_type_excluded"),
            ),
            (
                "a test customer does not",
                |_, c, _| c.last_name_opt = Some("Test Customer".into()),
                Some(&active),
                Err("internal_customer"),
            ),
            (
                "a do-not-contact note does not",
                |_, c, _| c.note_opt = Some("DO NOT CONTACT".into()),
                Some(&active),
                Err("internal_customer"),
            ),
            (
                "a staff email domain does not",
                |_, c, _| c.emails[0].email = "joe@tintco.example".into(),
                Some(&active),
                Err("internal_customer"),
            ),
            (
                "no contact at all does not",
                |_, c, _| {
                    c.emails.clear();
                    c.phone_numbers.clear();
                },
                Some(&active),
                Err("no_valid_contact"),
            ),
            (
                "junk phone and unsubscribed email do not",
                |_, c, _| {
                    c.phone_numbers[0].number = "call me".into();
                    c.emails[0].subscribed = false;
                },
                Some(&active),
                Err("no_valid_contact"),
            ),
            ("email only still qualifies", |_, c, _| c.phone_numbers.clear(), Some(&active), Ok(())),
            ("phone only still qualifies", |_, c, _| c.emails.clear(), Some(&active), Ok(())),
        ];
        for (name, tweak, location_opt, expected) in table {
            let (mut o, mut c, mut already) = (order(), customer(), false);
            tweak(&mut o, &mut c, &mut already);
            let result =
                qualify(&rules, Candidate { order: &o, customer_opt: Some(&c), location_opt, already_lead: already });
            match expected {
                Ok(()) => assert!(result.is_ok(), "{name}: {result:?}"),
                Err(outcome) => assert_eq!(result.map(|_| ()).map_err(|d| d.outcome()), Err(outcome), "{name}"),
            }
        }
    }

    #[test]
    fn a_qualified_lead_gets_normalised_contacts_and_drops_the_ones_without_consent() {
        let rules = QualificationRules::default();
        let mut c = customer();
        let o = order();
        let active = location(true);

        let both = qualify(
            &rules,
            Candidate { order: &o, customer_opt: Some(&c), location_opt: Some(&active), already_lead: false },
        )
        .expect("ok");
        assert_eq!(both.phone_opt.as_ref().map(Phone::as_str), Some("+15125550142"));
        assert_eq!(both.email_opt.as_ref().map(Email::as_str), Some("pat@example.com"));

        c.phone_numbers[0].opt_in = false;
        let email_only = qualify(
            &rules,
            Candidate { order: &o, customer_opt: Some(&c), location_opt: Some(&active), already_lead: false },
        )
        .expect("ok");
        assert_eq!(email_only.phone_opt, None);
    }

    #[test]
    fn a_missing_customer_is_refused() {
        let o = order();
        let active = location(true);
        let result = qualify(
            &QualificationRules::default(),
            Candidate { order: &o, customer_opt: None, location_opt: Some(&active), already_lead: false },
        );
        assert_eq!(result, Err(Disqualification::NoCustomer));
    }
}
