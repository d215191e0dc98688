//! Faithful local fakes of the vendors leadorch talks to, served over loopback HTTP. Integration
//! tests, the offline demo and load tests point the real clients at them instead of the vendor.
//!
//! Each fake follows the wire facts of `external-apis.md` (envelopes, field names, quirks) and
//! exposes run-time fault switches plus observation of what it received and sent. The fakes own
//! no business rules; they only behave like the vendor.
//!
//! - [`shopmonkey`]: ShopMonkey v3 (orders, customers, canned services, appointments, webhooks).

pub mod shopmonkey;
