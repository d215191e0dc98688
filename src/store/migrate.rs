//! Schema migrations: the numbered SQL files in `migrations/`, embedded in the binary, tracked
//! and checksummed by refinery. A session-level advisory lock makes concurrent runs (two
//! `leadorch migrate`, or several nodes starting at once) take turns, so the second finds the
//! work done.

use leadorch_actors::ports::StoreError;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::pg_error;

refinery::embed_migrations!("migrations");

/// Key of the advisory lock that serialises migration runs ("leadorch" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6c65_6164_6f72_6368;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
    #[error("migration failed")]
    Migration(#[source] refinery::Error),
    #[error("invalid database name `{0}`")]
    BadDatabaseName(String),
}

/// Creates the database named in `config` when it does not exist yet (connecting to the
/// `postgres` maintenance database to do so). Safe to race: a concurrent create counts as done.
///
/// # Errors
/// The server cannot be reached, or the name is not a plain identifier.
pub async fn ensure_database(config: &tokio_postgres::Config) -> Result<(), MigrateError> {
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(MigrateError::BadDatabaseName(name));
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin.connect(NoTls).await.map_err(|err| MigrateError::Unavailable(pg_error(err)))?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|err| MigrateError::Unavailable(pg_error(err)))?
        .is_some();
    if !exists {
        match client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
            Ok(()) => tracing::info!(database = %name, "created database"),
            Err(err)
                if err.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
            Err(err) => return Err(MigrateError::Unavailable(pg_error(err))),
        }
    }
    drop(client);
    // The connection task ends when the client is dropped; its result carries nothing we need.
    let _ = driver.await;
    Ok(())
}

/// Applies every pending migration under the advisory lock and returns how many were applied.
///
/// # Errors
/// The database is unreachable, or a migration failed or diverges from what was applied before.
pub async fn migrate(config: &tokio_postgres::Config) -> Result<usize, MigrateError> {
    let (mut client, connection) =
        config.connect(NoTls).await.map_err(|err| MigrateError::Unavailable(pg_error(err)))?;
    let driver = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|err| MigrateError::Unavailable(pg_error(err)))?;
    let result = migrations::runner().set_abort_divergent(true).run_async(&mut client).await;
    // Closing the session releases the lock too; unlock explicitly so a pooled reuse is clean.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await;
    drop(client);
    let _ = driver.await;
    let report = result.map_err(MigrateError::Migration)?;
    for applied in report.applied_migrations() {
        tracing::info!(version = applied.version(), name = applied.name(), "applied migration");
    }
    Ok(report.applied_migrations().len())
}

/// Returns how many embedded migrations are not applied in the connected database.
///
/// # Errors
/// The query failed for a reason other than the history table not existing yet.
pub async fn pending_migrations(client: &tokio_postgres::Client) -> Result<usize, StoreError> {
    let embedded: Vec<i64> = migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).collect();
    let applied: Vec<i64> = match client.query("SELECT version::bigint FROM refinery_schema_history", &[]).await {
        Ok(rows) => rows.iter().map(|row| row.get::<_, i64>(0)).collect(),
        Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(err) => return Err(pg_error(err)),
    };
    Ok(embedded.iter().filter(|v| !applied.contains(v)).count())
}
