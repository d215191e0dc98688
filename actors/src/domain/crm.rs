//! What the core knows of the shop CRM's records, independent of the vendor's wire format. The
//! ShopMonkey adapter (`leadorch::crm::shopmonkey`) maps its JSON into these.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// An order (estimate, repair order or invoice) in the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmOrder {
    pub id: String,
    /// The shop-facing order number; ShopMonkey sends a number or a string.
    pub number_opt: Option<String>,
    /// The CRM's id of the location the order belongs to.
    pub location_id_opt: Option<String>,
    pub customer_id_opt: Option<String>,
    pub vehicle_id_opt: Option<String>,
    /// `Estimate`, `RepairOrder` or `Invoice` in ShopMonkey.
    pub status: String,
    pub name_opt: Option<String>,
    pub complaint_opt: Option<String>,
    pub authorized: bool,
    pub invoiced: bool,
    pub paid: bool,
    pub archived: bool,
    pub deleted: bool,
    pub total_cost_cents: i64,
    pub created_date: Timestamp,
    pub updated_date: Timestamp,
    /// Rises on every change of the row (`meta.version`); part of the webhook dedupe key.
    pub version_opt: Option<i64>,
}

/// One email address of a CRM customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmEmail {
    pub email: String,
    pub primary: bool,
    /// `false` means the customer unsubscribed: no email.
    pub subscribed: bool,
}

/// One phone number of a CRM customer, as stored there (possibly national digits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmPhone {
    pub number: String,
    pub primary: bool,
    /// `false` means the customer did not consent to SMS.
    pub opt_in: bool,
    /// `Mobile`, `Home`, `Work`, ... when the CRM knows.
    pub kind_opt: Option<String>,
}

/// A CRM customer with their contact points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmCustomer {
    pub id: String,
    pub first_name_opt: Option<String>,
    pub last_name_opt: Option<String>,
    pub company_name_opt: Option<String>,
    /// `Customer` or `Fleet`.
    pub customer_type_opt: Option<String>,
    pub emails: Vec<CrmEmail>,
    pub phone_numbers: Vec<CrmPhone>,
    pub note_opt: Option<String>,
}

impl CrmCustomer {
    /// Returns the number to text: the primary one, else the first; `None` when there is none.
    pub fn preferred_phone(&self) -> Option<&CrmPhone> {
        self.phone_numbers.iter().find(|p| p.primary).or_else(|| self.phone_numbers.first())
    }

    /// Returns the address to email: the primary one, else the first.
    pub fn preferred_email(&self) -> Option<&CrmEmail> {
        self.emails.iter().find(|e| e.primary).or_else(|| self.emails.first())
    }
}

/// A vehicle in the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmVehicle {
    pub id: String,
    pub year_opt: Option<i32>,
    pub make_opt: Option<String>,
    pub model_opt: Option<String>,
    pub submodel_opt: Option<String>,
}

/// A canned service: one line of a location's price list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmCannedService {
    pub id: String,
    pub location_id_opt: Option<String>,
    pub name: String,
    /// The price the customer pays, in cents (`fixedPriceCents` for fixed-price services when
    /// present, else `totalCents`).
    pub price_cents: i64,
    /// Offered in online booking.
    pub bookable: bool,
    pub deleted: bool,
}

/// A location as the CRM describes it (opening hours are not in ShopMonkey's model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmLocation {
    pub id: String,
    pub name: String,
    /// One line: "address1, address2, city, state postalCode".
    pub address_opt: Option<String>,
    pub phone_opt: Option<String>,
    pub email_opt: Option<String>,
    /// IANA name when the CRM has one.
    pub timezone_opt: Option<String>,
}

/// An appointment in the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmAppointment {
    pub id: String,
    pub location_id_opt: Option<String>,
    pub customer_id_opt: Option<String>,
    pub order_id_opt: Option<String>,
    pub name: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// An appointment to create in the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCrmAppointment {
    pub location_id: String,
    pub customer_id_opt: Option<String>,
    pub vehicle_id_opt: Option<String>,
    pub order_id_opt: Option<String>,
    pub name: String,
    pub note_opt: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmPage<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}
