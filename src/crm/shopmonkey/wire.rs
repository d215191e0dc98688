//! ShopMonkey v3 wire format: the endpoint paths, query shapes, JSON envelopes and records, and
//! their mapping into the core's `Crm*` types. This is the one place that knows what ShopMonkey's
//! JSON looks like; `client.rs` owns the HTTP behaviour (auth header, status mapping, retries,
//! concurrency) and never touches a field name.
//!
//! # Assumptions
//! Tags are those of `shared/reference/external-apis.md` §1: [V] verified in an official source,
//! [S] seen in a secondary source, [A] assumed. Correct them here.
//!
//! - Paths are `/v3/<resource>` and `/v3/<resource>/<id>` on a configurable host [V base, S
//!   per-resource paths: `order`, `customer`, `vehicle`, `canned_service`, `location`,
//!   `appointment`].
//! - Success envelope `{"success":true,"data":...}`; lists add `"meta":{"total":N,"hasMore":b}`
//!   [V]. A 2xx body without `success` counts as success when `data` is there [A]; `data` missing
//!   or null on a 2xx is an invalid response [A]; `hasMore` missing means no more pages [A].
//! - Error envelope `{"success":false,"code":"...","message":"..."}`, `code` optional [V]; the
//!   catalogue of codes is unknown, and `message` is surfaced, never parsed.
//! - List queries: `where` and `orderBy` are URL-encoded JSON strings; operators are bare (`gte`,
//!   `lt`), because `$gte` is silently ignored [S]; only camelCase `orderBy` is accepted [S];
//!   `limit` above 100 is silently clamped, so we never ask for more [S]. That `updatedDate` and
//!   `startDate` accept operators is [A]; appointments are re-filtered on our side in case they
//!   are ignored. Paging is not deterministic [S]: callers de-duplicate by id.
//! - Canned services take both a `where` on `locationId` and a plain `locationId` parameter [S].
//! - Records use camelCase names; unknown fields are ignored; everything but `id` may be missing
//!   or null [A]: booleans default to false, cents to 0, arrays to empty. An empty string in an
//!   optional text field means absent [A].
//! - Dates are RFC 3339 with an offset [V]. An order missing one of `createdDate`/`updatedDate`
//!   takes the other; missing both is an invalid response [A]. An appointment must have
//!   `startDate` and `endDate`.
//! - Order `number` is an integer (2023 model) or a string (2026 schema): both accepted [V].
//!   `meta.version` is an integer (a numeric string is accepted too) [V/A]. A missing `status`
//!   maps to the empty string [A].
//! - Customers embed `emails[]` and `phoneNumbers[]` [S; unknown whether GET by id does]; missing
//!   arrays are empty [A]; entries without an address or number are dropped. `subscribed` and
//!   `optIn` default to false when missing, so an unknown consent never becomes a yes [A].
//!   Phone `type` becomes `kind_opt`; the phone's `country` is read but not mapped (the core
//!   normalises numbers with the location's country).
//! - Vehicle `year` is an integer (a numeric string is accepted too) [A].
//! - Canned service price: `fixedPriceCents` when `pricing == "FixedPrice"` and it is present,
//!   else `totalCents` [A; `fixedPriceCents` is S]. Rows with `deleted: true` are dropped by the
//!   client.
//! - Location address: non-empty parts of `address1, address2, city, state postalCode`; `country`
//!   is left out [A]. `postalCode` may be a number [A].
//! - Creating an appointment needs `name` and `color` [S]; we send `color: "blue"` [A: the set of
//!   accepted colours is unknown] and omit absent optional ids rather than sending null [A]. The
//!   answer is the created record in the success envelope [A].

use jiff::Timestamp;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use leadorch_actors::domain::{
    CrmAppointment, CrmCannedService, CrmCustomer, CrmEmail, CrmLocation, CrmOrder, CrmPhone, CrmVehicle,
    NewCrmAppointment,
};
use leadorch_actors::ports::CrmError;

/// The largest page ShopMonkey serves; larger limits are clamped silently.
pub const MAX_PAGE_LIMIT: u32 = 100;

/// Path segments of the order collection.
pub const ORDER_PATH: [&str; 2] = ["v3", "order"];
/// Path segments of the customer collection.
pub const CUSTOMER_PATH: [&str; 2] = ["v3", "customer"];
/// Path segments of the vehicle collection.
pub const VEHICLE_PATH: [&str; 2] = ["v3", "vehicle"];
/// Path segments of the canned service collection.
pub const CANNED_SERVICE_PATH: [&str; 2] = ["v3", "canned_service"];
/// Path segments of the location collection.
pub const LOCATION_PATH: [&str; 2] = ["v3", "location"];
/// Path segments of the appointment collection.
pub const APPOINTMENT_PATH: [&str; 2] = ["v3", "appointment"];

/// The colour given to appointments we create; ShopMonkey requires one.
pub const APPOINTMENT_COLOR: &str = "blue";

/// A query string as ordered name/value pairs, before URL encoding.
pub type Query = Vec<(&'static str, String)>;

/// Returns the query of one page of orders updated at or after `since`, ordered by id.
pub fn orders_updated_since_query(since: Timestamp, skip: u32, limit: u32) -> Query {
    vec![
        ("where", json!({ "updatedDate": { "gte": since.to_string() } }).to_string()),
        ("orderBy", json!({ "id": "asc" }).to_string()),
        ("limit", limit.clamp(1, MAX_PAGE_LIMIT).to_string()),
        ("skip", skip.to_string()),
    ]
}

/// Returns the query of one page of a location's canned services.
pub fn canned_services_query(location_id: &str, skip: u32) -> Query {
    vec![
        ("where", json!({ "locationId": location_id }).to_string()),
        ("locationId", location_id.to_owned()),
        ("limit", MAX_PAGE_LIMIT.to_string()),
        ("skip", skip.to_string()),
    ]
}

/// Returns the query of one page of locations.
pub fn locations_query(skip: u32) -> Query {
    vec![("limit", MAX_PAGE_LIMIT.to_string()), ("skip", skip.to_string())]
}

/// Returns the query of one page of a location's appointments starting in `[from, to)`.
pub fn appointments_query(location_id: &str, from: Timestamp, to: Timestamp, skip: u32) -> Query {
    let filter = json!({
        "locationId": location_id,
        "startDate": { "gte": from.to_string(), "lt": to.to_string() },
    });
    vec![("where", filter.to_string()), ("limit", MAX_PAGE_LIMIT.to_string()), ("skip", skip.to_string())]
}

/// The `meta` of a list answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub total: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub has_more: bool,
}

/// The successful part of an answer: its `data` and, on lists, its `meta`.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub data: T,
    pub meta: ListMeta,
}

/// The fields every answer has; read first, so a failure envelope with an odd `data` is still
/// reported by its `code` and `message`.
#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default, deserialize_with = "lenient_string")]
    code: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    message: Option<String>,
}

/// `bound` replaces the `T: Default` serde would infer from `default` on a generic field.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct DataEnvelope<T> {
    #[serde(default)]
    data: Option<T>,
    #[serde(default)]
    meta: Option<ListMeta>,
}

/// Parses a 2xx body: the envelope, then `data` as `T`.
///
/// # Errors
/// `InvalidResponse` when the body is not JSON, says `success: false`, has no `data`, or `data`
/// does not have the shape of `T`.
pub fn parse_answer<T: DeserializeOwned>(body: &[u8]) -> Result<Answer<T>, CrmError> {
    let status: Status = serde_json::from_slice(body)
        .map_err(|err| CrmError::InvalidResponse(format!("body is not a json envelope: {err}")))?;
    if status.success == Some(false) {
        return Err(CrmError::InvalidResponse(format!(
            "success is false (code {}): {}",
            status.code.as_deref().unwrap_or("none"),
            status.message.as_deref().unwrap_or("no message"),
        )));
    }
    let envelope: DataEnvelope<T> =
        serde_json::from_slice(body).map_err(|err| CrmError::InvalidResponse(format!("unexpected data: {err}")))?;
    let data = envelope.data.ok_or_else(|| CrmError::InvalidResponse("answer has no data".to_owned()))?;
    Ok(Answer { data, meta: envelope.meta.unwrap_or_default() })
}

/// The parts of an error envelope we surface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code_opt: Option<String>,
    pub message_opt: Option<String>,
}

/// Reads `code` and `message` from an error body; anything unreadable yields empty fields.
pub fn parse_error(body: &[u8]) -> ErrorBody {
    let status: Status = serde_json::from_slice(body).unwrap_or_default();
    ErrorBody { code_opt: non_empty(status.code), message_opt: non_empty(status.message) }
}

/// `meta` of a record: information about its last change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecordMeta {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub version: Option<i64>,
}

/// An order record.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub number: Option<String>,
    #[serde(default)]
    pub location_id: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub vehicle_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub complaint: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub authorized: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub invoiced: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub paid: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub archived: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub deleted: bool,
    #[serde(default, deserialize_with = "cents")]
    pub total_cost_cents: i64,
    #[serde(default)]
    pub created_date: Option<Timestamp>,
    #[serde(default)]
    pub updated_date: Option<Timestamp>,
    #[serde(default)]
    pub meta: Option<RecordMeta>,
}

impl Order {
    /// Maps the record into the core's order.
    ///
    /// # Errors
    /// `InvalidResponse` when it has neither `createdDate` nor `updatedDate`.
    pub fn into_domain(self) -> Result<CrmOrder, CrmError> {
        let (created_date, updated_date) = match (self.created_date, self.updated_date) {
            (Some(created), Some(updated)) => (created, updated),
            (Some(only), None) | (None, Some(only)) => (only, only),
            (None, None) => {
                return Err(CrmError::InvalidResponse(format!("order {} has no createdDate nor updatedDate", self.id)));
            }
        };
        Ok(CrmOrder {
            number_opt: non_empty(self.number),
            location_id_opt: non_empty(self.location_id),
            customer_id_opt: non_empty(self.customer_id),
            vehicle_id_opt: non_empty(self.vehicle_id),
            status: self.status.unwrap_or_default(),
            name_opt: non_empty(self.name),
            complaint_opt: non_empty(self.complaint),
            authorized: self.authorized,
            invoiced: self.invoiced,
            paid: self.paid,
            archived: self.archived,
            deleted: self.deleted,
            total_cost_cents: self.total_cost_cents,
            created_date,
            updated_date,
            version_opt: self.meta.and_then(|m| m.version),
            id: self.id,
        })
    }
}

/// One email address embedded in a customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub primary: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub subscribed: bool,
}

/// One phone number embedded in a customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumber {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub number: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub primary: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub opt_in: bool,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

/// A customer record with its embedded contact points.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub company_name: Option<String>,
    #[serde(default)]
    pub customer_type: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub emails: Vec<Email>,
    #[serde(default, deserialize_with = "nullable")]
    pub phone_numbers: Vec<PhoneNumber>,
}

impl Customer {
    /// Maps the record into the core's customer, dropping contact points without a value.
    pub fn into_domain(self) -> CrmCustomer {
        let emails = self
            .emails
            .into_iter()
            .filter_map(|e| Some(CrmEmail { email: non_empty(e.email)?, primary: e.primary, subscribed: e.subscribed }))
            .collect();
        let phone_numbers = self
            .phone_numbers
            .into_iter()
            .filter_map(|p| {
                Some(CrmPhone {
                    number: non_empty(p.number)?,
                    primary: p.primary,
                    opt_in: p.opt_in,
                    kind_opt: non_empty(p.kind),
                })
            })
            .collect();
        CrmCustomer {
            id: self.id,
            first_name_opt: non_empty(self.first_name),
            last_name_opt: non_empty(self.last_name),
            company_name_opt: non_empty(self.company_name),
            customer_type_opt: non_empty(self.customer_type),
            emails,
            phone_numbers,
            note_opt: non_empty(self.note),
        }
    }
}

/// A vehicle record.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vehicle {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub year: Option<i64>,
    #[serde(default)]
    pub make: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub submodel: Option<String>,
}

impl Vehicle {
    /// Maps the record into the core's vehicle; a year outside `i32` counts as absent.
    pub fn into_domain(self) -> CrmVehicle {
        CrmVehicle {
            id: self.id,
            year_opt: self.year.and_then(|y| i32::try_from(y).ok()),
            make_opt: non_empty(self.make),
            model_opt: non_empty(self.model),
            submodel_opt: non_empty(self.submodel),
        }
    }
}

/// A canned service record (one line of a price list).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CannedService {
    pub id: String,
    #[serde(default)]
    pub location_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// `FixedPrice` or `LineItem`.
    #[serde(default)]
    pub pricing: Option<String>,
    #[serde(default, deserialize_with = "cents")]
    pub total_cents: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub fixed_price_cents: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub bookable: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub deleted: bool,
}

impl CannedService {
    /// Returns the price the customer pays, in cents.
    pub fn price_cents(&self) -> i64 {
        match (self.pricing.as_deref(), self.fixed_price_cents) {
            (Some("FixedPrice"), Some(fixed)) => fixed,
            _ => self.total_cents,
        }
    }

    /// Maps the record into the core's canned service.
    pub fn into_domain(self) -> CrmCannedService {
        CrmCannedService {
            price_cents: self.price_cents(),
            id: self.id,
            location_id_opt: non_empty(self.location_id),
            name: self.name.unwrap_or_default(),
            bookable: self.bookable,
            deleted: self.deleted,
        }
    }
}

/// A location record.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address1: Option<String>,
    #[serde(default)]
    pub address2: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

impl Location {
    /// Returns "address1, address2, city, state postalCode" from the non-empty parts, or `None`
    /// when all are empty.
    pub fn address_opt(&self) -> Option<String> {
        let part = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let state_postal: Vec<String> = [part(&self.state), part(&self.postal_code)].into_iter().flatten().collect();
        let state_postal = (!state_postal.is_empty()).then(|| state_postal.join(" "));
        let parts: Vec<String> = [part(&self.address1), part(&self.address2), part(&self.city), state_postal]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Maps the record into the core's location.
    pub fn into_domain(self) -> CrmLocation {
        CrmLocation {
            address_opt: self.address_opt(),
            id: self.id,
            name: self.name.unwrap_or_default(),
            phone_opt: non_empty(self.phone),
            email_opt: non_empty(self.email),
            timezone_opt: non_empty(self.timezone),
        }
    }
}

/// An appointment record.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: String,
    #[serde(default)]
    pub location_id: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub vehicle_id: Option<String>,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub start_date: Option<Timestamp>,
    #[serde(default)]
    pub end_date: Option<Timestamp>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Appointment {
    /// Maps the record into the core's appointment.
    ///
    /// # Errors
    /// `InvalidResponse` when `startDate` or `endDate` is missing.
    pub fn into_domain(self) -> Result<CrmAppointment, CrmError> {
        let (Some(start), Some(end)) = (self.start_date, self.end_date) else {
            return Err(CrmError::InvalidResponse(format!("appointment {} has no startDate or endDate", self.id)));
        };
        Ok(CrmAppointment {
            id: self.id,
            location_id_opt: non_empty(self.location_id),
            customer_id_opt: non_empty(self.customer_id),
            order_id_opt: non_empty(self.order_id),
            name: self.name.unwrap_or_default(),
            start,
            end,
        })
    }
}

/// The body of `POST /v3/appointment`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAppointmentBody<'a> {
    pub location_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vehicle_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<&'a str>,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
    pub start_date: Timestamp,
    pub end_date: Timestamp,
    pub color: &'a str,
}

impl<'a> NewAppointmentBody<'a> {
    /// Builds the body for the core's new appointment.
    pub fn from_domain(appointment: &'a NewCrmAppointment) -> Self {
        Self {
            location_id: &appointment.location_id,
            customer_id: appointment.customer_id_opt.as_deref(),
            vehicle_id: appointment.vehicle_id_opt.as_deref(),
            order_id: appointment.order_id_opt.as_deref(),
            name: &appointment.name,
            note: appointment.note_opt.as_deref(),
            start_date: appointment.start,
            end_date: appointment.end,
            color: APPOINTMENT_COLOR,
        }
    }
}

/// Treats a blank string as absent.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Reads null as the type's default (false, 0, empty).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads a string, a number or a boolean as text; null as absent.
fn lenient_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(de::Error::custom("expected a string or a number")),
    }
}

/// Reads an integer, an integral float or a numeric string; null as absent.
fn lenient_i64<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    let invalid = || de::Error::custom("expected an integer");
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            // Range-checked, so the cast cannot saturate.
            (None, Some(f)) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => Ok(Some(f as i64)),
            _ => Err(invalid()),
        },
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

/// Reads an amount in cents; missing or null is 0.
fn cents<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(lenient_i64(deserializer)?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp is valid")
    }

    fn location(json: Value) -> Location {
        serde_json::from_value(json).expect("location parses")
    }

    #[test]
    fn order_number_parses_as_string_and_as_integer() {
        let base = json!({ "id": "o1", "createdDate": "2026-05-01T17:00:00Z", "updatedDate": "2026-05-01T17:02:11Z" });
        for (number, expected) in [(json!("A-1042"), "A-1042"), (json!(1042), "1042")] {
            let mut raw = base.clone();
            raw["number"] = number;
            let order: Order = serde_json::from_value(raw).expect("order parses");
            assert_eq!(order.into_domain().expect("maps").number_opt.as_deref(), Some(expected));
        }
    }

    #[test]
    fn order_maps_every_field_and_defaults_nulls() {
        let raw = json!({
            "id": "o1", "number": 7, "locationId": "l1", "customerId": "c1", "vehicleId": null,
            "status": "Estimate", "name": "", "complaint": "brakes squeal", "authorized": true,
            "invoiced": null, "totalCostCents": 45900, "createdDate": "2026-05-01T17:00:00Z",
            "updatedDate": "2026-05-01T17:02:11.5+02:00", "meta": { "version": 12 },
            "somethingNew": { "x": 1 }
        });
        let order: Order = serde_json::from_value(raw).expect("order parses");
        let order = order.into_domain().expect("maps");
        assert_eq!(order.location_id_opt.as_deref(), Some("l1"));
        assert_eq!(order.vehicle_id_opt, None);
        assert_eq!(order.name_opt, None);
        assert_eq!(order.status, "Estimate");
        assert!(order.authorized);
        assert!(!order.invoiced && !order.paid && !order.archived && !order.deleted);
        assert_eq!(order.total_cost_cents, 45900);
        assert_eq!(order.updated_date, ts("2026-05-01T15:02:11.5Z"));
        assert_eq!(order.version_opt, Some(12));
    }

    #[test]
    fn order_without_any_date_is_an_invalid_response() {
        let order: Order = serde_json::from_value(json!({ "id": "o1" })).expect("order parses");
        assert!(matches!(order.into_domain(), Err(CrmError::InvalidResponse(_))));
    }

    #[test]
    fn order_with_only_updated_date_uses_it_as_created_date() {
        let raw = json!({ "id": "o1", "updatedDate": "2026-05-01T17:02:11Z" });
        let order: Order = serde_json::from_value(raw).expect("order parses");
        let order = order.into_domain().expect("maps");
        assert_eq!(order.created_date, order.updated_date);
    }

    #[test]
    fn customer_without_contact_arrays_has_no_emails_or_phones() {
        let raw = json!({ "id": "c1", "firstName": "Pat" });
        let customer: Customer = serde_json::from_value(raw).expect("customer parses");
        let customer = customer.into_domain();
        assert!(customer.emails.is_empty());
        assert!(customer.phone_numbers.is_empty());
        assert_eq!(customer.first_name_opt.as_deref(), Some("Pat"));
    }

    #[test]
    fn customer_with_null_contact_arrays_has_no_emails_or_phones() {
        let raw = json!({ "id": "c1", "emails": null, "phoneNumbers": null });
        let customer: Customer = serde_json::from_value(raw).expect("customer parses");
        let customer = customer.into_domain();
        assert!(customer.emails.is_empty() && customer.phone_numbers.is_empty());
    }

    #[test]
    fn customer_contact_points_map_and_unknown_consent_is_no() {
        let raw = json!({
            "id": "c1",
            "emails": [
                { "id": "e1", "email": "pat@example.com", "primary": true, "subscribed": true },
                { "id": "e2", "email": "old@example.com" },
                { "id": "e3", "email": null }
            ],
            "phoneNumbers": [
                { "id": "p1", "number": "5125550100", "primary": true, "optIn": true, "type": "Mobile", "country": "US" },
                { "id": "p2", "number": 5125550101_i64 },
                { "id": "p3" }
            ]
        });
        let customer: Customer = serde_json::from_value(raw).expect("customer parses");
        let customer = customer.into_domain();
        assert_eq!(
            customer.emails,
            vec![
                CrmEmail { email: "pat@example.com".into(), primary: true, subscribed: true },
                CrmEmail { email: "old@example.com".into(), primary: false, subscribed: false },
            ]
        );
        assert_eq!(
            customer.phone_numbers,
            vec![
                CrmPhone { number: "5125550100".into(), primary: true, opt_in: true, kind_opt: Some("Mobile".into()) },
                CrmPhone { number: "5125550101".into(), primary: false, opt_in: false, kind_opt: None },
            ]
        );
    }

    #[test]
    fn vehicle_year_parses_from_number_or_string() {
        let a: Vehicle =
            serde_json::from_value(json!({ "id": "v1", "year": 2018, "make": "Honda" })).expect("vehicle parses");
        let b: Vehicle = serde_json::from_value(json!({ "id": "v2", "year": "2019" })).expect("vehicle parses");
        assert_eq!(a.into_domain().year_opt, Some(2018));
        assert_eq!(b.into_domain().year_opt, Some(2019));
    }

    #[test]
    fn canned_service_uses_fixed_price_only_for_fixed_price_services() {
        let parse = |raw: Value| -> CannedService { serde_json::from_value(raw).expect("canned service parses") };
        let fixed = parse(
            json!({ "id": "s1", "name": "Oil", "pricing": "FixedPrice", "totalCents": 5000, "fixedPriceCents": 3999 }),
        );
        let fixed_without_price = parse(json!({ "id": "s2", "pricing": "FixedPrice", "totalCents": 5000 }));
        let line_item = parse(json!({ "id": "s3", "pricing": "LineItem", "totalCents": 12000, "fixedPriceCents": 1 }));
        let bare = parse(json!({ "id": "s4", "totalCents": null }));
        assert_eq!(fixed.into_domain().price_cents, 3999);
        assert_eq!(fixed_without_price.into_domain().price_cents, 5000);
        assert_eq!(line_item.into_domain().price_cents, 12000);
        let bare = bare.into_domain();
        assert_eq!(bare.price_cents, 0);
        assert_eq!(bare.name, "");
        assert!(!bare.bookable && !bare.deleted);
    }

    #[test]
    fn location_address_joins_all_parts() {
        let loc = location(json!({
            "id": "l1", "name": "Main St", "address1": "12 Main St", "address2": "Suite 4",
            "city": "Austin", "state": "TX", "postalCode": "78701", "country": "US"
        }));
        assert_eq!(loc.address_opt().as_deref(), Some("12 Main St, Suite 4, Austin, TX 78701"));
    }

    #[test]
    fn location_address_skips_empty_parts() {
        let loc = location(json!({
            "id": "l1", "address1": "12 Main St", "address2": "", "city": "Austin", "state": null,
            "postalCode": 78701
        }));
        assert_eq!(loc.address_opt().as_deref(), Some("12 Main St, Austin, 78701"));
        let only_state = location(json!({ "id": "l2", "state": "TX" }));
        assert_eq!(only_state.address_opt().as_deref(), Some("TX"));
    }

    #[test]
    fn location_without_address_parts_has_no_address() {
        let loc = location(
            json!({ "id": "l1", "name": "Main", "address1": " ", "timezone": "America/Chicago", "phone": "" }),
        );
        let loc = loc.into_domain();
        assert_eq!(loc.address_opt, None);
        assert_eq!(loc.phone_opt, None);
        assert_eq!(loc.timezone_opt.as_deref(), Some("America/Chicago"));
    }

    #[test]
    fn appointment_without_dates_is_an_invalid_response() {
        let raw = json!({ "id": "a1", "name": "Oil change", "startDate": "2026-05-01T17:00:00Z" });
        let appointment: Appointment = serde_json::from_value(raw).expect("appointment parses");
        assert!(matches!(appointment.into_domain(), Err(CrmError::InvalidResponse(_))));
    }

    #[test]
    fn record_without_id_does_not_parse() {
        assert!(serde_json::from_value::<Order>(json!({ "number": 1 })).is_err());
    }

    #[test]
    fn answer_with_success_false_is_an_invalid_response() {
        let body = br#"{"success":false,"code":"X","message":"broken","data":{}}"#;
        let Err(CrmError::InvalidResponse(msg)) = parse_answer::<Order>(body) else {
            panic!("expected an invalid response");
        };
        assert!(msg.contains("broken"));
    }

    #[test]
    fn list_answer_without_has_more_has_no_more_pages() {
        let body = br#"{"success":true,"data":[{"id":"l1"}],"meta":{"total":1}}"#;
        let answer = parse_answer::<Vec<Location>>(body).expect("parses");
        assert_eq!(answer.data.len(), 1);
        assert!(!answer.meta.has_more);
        assert_eq!(answer.meta.total, Some(1));
    }

    #[test]
    fn error_body_yields_code_and_message_or_nothing() {
        let parsed = parse_error(br#"{"success":false,"code":"BAD","message":"nope"}"#);
        assert_eq!(parsed.code_opt.as_deref(), Some("BAD"));
        assert_eq!(parsed.message_opt.as_deref(), Some("nope"));
        assert_eq!(parse_error(b"<html>bad gateway</html>"), ErrorBody::default());
    }

    #[test]
    fn new_appointment_body_has_name_and_color_and_omits_absent_ids() {
        let new = NewCrmAppointment {
            location_id: "l1".into(),
            customer_id_opt: Some("c1".into()),
            vehicle_id_opt: None,
            order_id_opt: None,
            name: "Oil change".into(),
            note_opt: None,
            start: ts("2026-05-01T17:00:00Z"),
            end: ts("2026-05-01T18:00:00Z"),
        };
        let body = serde_json::to_value(NewAppointmentBody::from_domain(&new)).expect("serializes");
        assert_eq!(
            body,
            json!({
                "locationId": "l1", "customerId": "c1", "name": "Oil change",
                "startDate": "2026-05-01T17:00:00Z", "endDate": "2026-05-01T18:00:00Z", "color": "blue"
            })
        );
    }
}
