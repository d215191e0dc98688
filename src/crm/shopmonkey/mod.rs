//! ShopMonkey v3: the reqwest client implementing the core's `Crm` port, and webhook signatures.
//!
//! - [`client`] — HTTP behaviour: auth, status mapping, retries, per-tenant concurrency.
//! - [`wire`] — every assumption about ShopMonkey's paths, queries and JSON.
//! - [`events`] — decoding webhook bodies and their dedupe key.
//! - [`signature`] — webhook signature verification.

pub mod client;
pub mod events;
pub mod signature;
pub mod wire;

pub use client::{CrmKeySource, ShopMonkeyBuildError, ShopMonkeyClient, ShopMonkeyConfig, StaticCrmKey};
