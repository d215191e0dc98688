//! The core of leadorch: what a lead is, what the service needs from the world, and the actors
//! that drive each lead. Nothing here speaks HTTP, SQL or a vendor API; `src/` adapts those.
//!
//! # Layout
//! - [`domain`] — validated value objects (ids, `Phone` in E.164, `Email`, `Money` in cents,
//!   weekly opening hours, IANA time zones). Parsing rejects bad input at the edge.
//! - [`ports`] — traits the core needs from the world (stores, clock).
//! - [`actors`] — the supervisor tree.
//! - [`catalog`] — a location's service catalog, its freshness rule and the cache port.

pub mod actors;
pub mod ai;
pub mod ai_router;
pub mod booking;
pub mod catalog;
pub mod compliance;
pub mod domain;
pub mod inbound;
pub mod intake;
pub mod nanp;
pub mod planner;
pub mod ports;
pub mod qualification;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod timeline;
