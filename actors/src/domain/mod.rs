//! Validated value objects. Each type has a `parse` constructor that rejects bad input with a
//! typed error, so the rest of the service only ever holds valid values.

mod email;
mod hours;
mod ids;
mod money;
mod phone;
mod timezone;

pub use email::{Email, EmailError};
pub use hours::{DayHours, HoursError, WeeklyHours};
pub use ids::{ApiKeyId, IdParseError, LeadId, LocationId, TenantId, TouchpointId};
pub use money::{Money, MoneyError};
pub use phone::{Phone, PhoneError};
pub use timezone::{TimeZoneError, TimeZoneName};

mod records;
pub use records::{
    CadenceRef, Channel, InboxEvent, InboxInsert, JobRun, Lead, LeadCreated, LeadStatus, Location, NewLead,
    NewLocation, NewTouchpoint, Tenant, Touchpoint, TouchpointStatus, Vehicle,
};

mod crm;
pub use crm::{
    CrmAppointment, CrmCannedService, CrmCustomer, CrmEmail, CrmLocation, CrmOrder, CrmPage, CrmPhone, CrmVehicle,
    NewCrmAppointment,
};

mod cadence;
pub use cadence::{Cadence, CadenceBook, CadenceBookError, CadenceStep, StepRule};
