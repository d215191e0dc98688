//! What the core needs from the world, as traits: a clock now, and the stores, CRM, senders and
//! AI providers as the actors that use them land. Adapters in the `leadorch` crate implement them;
//! `testing` (feature `test-util`) has in-memory doubles.

use std::error::Error as StdError;

use jiff::Timestamp;

/// A boxed underlying error, kept as the `source` of a port error.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store call failed. Adapters translate driver errors into these at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist, or belongs to another tenant (indistinguishable on purpose).
    #[error("not found")]
    NotFound,
    /// A uniqueness or foreign-key rule refused the write.
    #[error("conflict on {constraint}")]
    Conflict { constraint: String },
    /// The database could not be reached in time; the caller may retry or answer 503.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// The data broke a rule the database checks (a CHECK constraint or a bad stored value).
    #[error("invalid data: {0}")]
    Invalid(String),
    /// Anything else: a bug or an unexpected database answer.
    #[error("store error")]
    Other(#[source] BoxError),
}

impl StoreError {
    /// Returns true when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The source of "now". Production uses the system clock; tests use a manual one so timelines
/// are deterministic.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Returns the current instant.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
