//! Messaging adapters: one reqwest client per vendor, each implementing a core sending port and
//! mapping the vendor's errors into [`leadorch_actors::ports::SendError`]. Webhook signature
//! checks for each vendor live beside its client; the business meaning of events is left to the
//! actors.
//!
//! - [`sendgrid`]: SendGrid v3 Mail Send, the [`leadorch_actors::ports::EmailSender`] adapter.
//! - [`sendgrid_events`]: verification (and, for the fake, signing) of SendGrid's signed Event
//!   Webhook.
//! - [`twilio`]: Twilio Programmable Messaging, the [`leadorch_actors::ports::SmsSender`] adapter.
//! - [`twilio_signature`]: `X-Twilio-Signature` computation and validation (webhooks we receive,
//!   and the fake's callbacks).

pub mod sendgrid;
pub mod sendgrid_events;
pub mod twilio;
pub mod twilio_signature;
