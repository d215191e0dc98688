//! The supervisor tree (DESIGN.md): a root supervisor over the ingress, pollers, scheduler and
//! one actor per location, each of which drives its leads.

pub mod chat;
pub mod ingress;
pub mod lead;
pub mod location;
pub mod poller;
pub mod scheduler;
pub mod supervisor;
