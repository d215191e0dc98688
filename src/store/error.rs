//! Translates driver and pool errors into the core's [`StoreError`] at the boundary, so callers
//! branch on what went wrong (a duplicate, a missing row, the database being down) rather than
//! on SQL state codes.

use deadpool_postgres::PoolError;
use leadorch_actors::ports::StoreError;
use tokio_postgres::error::SqlState;

/// Maps a tokio-postgres error.
pub(crate) fn pg_error(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::FOREIGN_KEY_VIOLATION
            || *code == SqlState::EXCLUSION_VIOLATION
        {
            return StoreError::Conflict { constraint: db.constraint().unwrap_or("unknown").to_owned() };
        }
        if *code == SqlState::CHECK_VIOLATION
            || *code == SqlState::NOT_NULL_VIOLATION
            || *code == SqlState::INVALID_TEXT_REPRESENTATION
            || *code == SqlState::STRING_DATA_RIGHT_TRUNCATION
        {
            let detail = db.constraint().map(|c| format!("violates {c}")).unwrap_or_else(|| db.message().to_owned());
            return StoreError::Invalid(detail);
        }
        let class = &code.code()[..2];
        // 08: connection exception; 57: operator intervention (shutdown, cannot connect now);
        // 53: insufficient resources (too many connections).
        if matches!(class, "08" | "57" | "53") {
            return StoreError::Unavailable(Box::new(err));
        }
        return StoreError::Other(Box::new(err));
    }
    if err.is_closed() || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::Unavailable(Box::new(err));
    }
    StoreError::Other(Box::new(err))
}

/// Maps a pool error: a timeout or a failed connect means the database is unavailable.
pub(crate) fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(pg) => pg_error(pg),
        other => StoreError::Unavailable(Box::new(other)),
    }
}

/// A stored value that no longer parses (e.g. a phone written by an older version).
pub(crate) fn bad_value(column: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("stored {column} is invalid: {err}"))
}
