//! Faithful local fakes of the vendors leadorch talks to, served over loopback HTTP. Integration
//! tests, the offline demo and load tests point the real clients at them instead of the vendor.
//!
//! Each fake follows the wire facts of `external-apis.md` (envelopes, field names, quirks) and
//! exposes run-time fault switches plus observation of what it received and sent. The fakes own
//! no business rules; they only behave like the vendor.
//!
//! - [`sendgrid`]: SendGrid v3 Mail Send, signed Event Webhook batches and a message search.
//! - [`shopmonkey`]: ShopMonkey v3 (orders, customers, canned services, appointments, webhooks).
//! - [`twilio`]: Twilio Programmable Messaging (sends, signed status callbacks, a scripted handset).

pub mod anthropic;
pub mod openai;
pub mod sendgrid;
mod server;
pub mod shopmonkey;
pub mod twilio;
