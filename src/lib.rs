//! leadorch: answers every new lead of an auto-service franchise within seconds and follows up
//! until the customer replies, books or opts out.
//!
//! This crate holds the adapters and the process; the core (domain, ports, timeline, actors)
//! is `leadorch_actors`. Dependencies point inward.
//!
//! # Layout
//! - [`crm`] — shop CRM adapters (ShopMonkey).
//! - [`catalog`] — location catalogs (services, prices) with stale-while-revalidate and fallbacks.
//! - [`cache`] — the catalog cache: Redis (fred) over an in-process fallback.
//! - [`config`] — typed settings from `config/*.toml` and `LEADORCH_*` variables.
//! - [`store`] — PostgreSQL pool, migrations, one repository per aggregate.
//! - [`http`] — axum routes and layers.
//! - [`startup`] — builds and runs the process.
//! - [`ops`] — the operator commands behind the CLI.
//! - [`demo`] — `leadorch demo`: the service fed by a simulated CRM, offline.
//! - [`loadgen`] — `leadorch loadgen`: drives the service with signed CRM webhooks and measures it.
//! - [`telemetry`] — logging.

pub mod ai;
pub mod cache;
pub mod catalog;
pub mod chat;
pub mod config;
pub mod crm;
pub mod demo;
pub mod http;
pub mod links;
pub mod loadgen;
pub mod messaging;
pub mod ops;
pub mod outcomes;
pub mod reconcile;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod vendor_http;
pub mod vendors;
