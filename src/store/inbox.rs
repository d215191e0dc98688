//! The inbox: raw webhook events committed before they are acknowledged, unique per
//! (tenant, source, event id), so a redelivery is recognised and a crash loses nothing.
//!
//! Inserts are group-committed: concurrent webhook requests hand their event to a few writer
//! tasks, each of which commits everything waiting in one `INSERT ... SELECT FROM unnest(...)`
//! (one transaction, one fsync) and then answers every request of the batch. Nobody waits for
//! a timer: a lone request is committed at once, and under load the batch grows by itself to
//! whatever arrived during the previous commit. Each request is still answered only after its
//! row is durable. A batch refused as a whole (e.g. an unknown tenant's foreign key) is retried
//! row by row, so one bad event never fails its neighbours.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use bytes::{BufMut, BytesMut};
use deadpool_postgres::Pool;
use jiff::Timestamp;
use leadorch_actors::domain::{InboxEvent, InboxInsert, TenantId};
use leadorch_actors::ports::StoreError;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use super::error::bad_value;
use super::{pg_error, pool_error};

const INBOX_COLUMNS: &str =
    "id, tenant_id, source, event_id, payload, received_at, processed_at, outcome, attempts, last_error";

/// Reads and writes `inbox_events`.
#[derive(Clone, Debug)]
pub struct InboxRepo {
    pool: Pool,
    /// The group-commit writers, started by the first insert (inside the caller's runtime).
    batcher: Arc<OnceLock<mpsc::Sender<PendingInsert>>>,
}

/// Events one commit takes at most.
const MAX_BATCH: usize = 512;
/// Writer tasks: while one commits, the next batch gathers and another can commit it.
const WRITERS: usize = 2;

/// One insert waiting for its batch.
#[derive(Debug)]
struct PendingInsert {
    tenant_id: TenantId,
    source: String,
    event_id: String,
    payload: RawJson,
    received_at: Timestamp,
    reply: oneshot::Sender<Result<InboxInsert, StoreError>>,
}

/// JSON text that was already parsed and checked, sent to a `jsonb` (or `json`) parameter as it
/// is: the webhook route keeps the bytes it received instead of cloning and re-serialising a
/// `serde_json::Value` for every event. PostgreSQL parses it once more, as it would any text.
#[derive(Debug, Clone)]
pub(crate) struct RawJson(Bytes);

impl ToSql for RawJson {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // The jsonb binary format: a version byte, then the JSON text.
            out.put_u8(1);
        }
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

fn event_from_row(row: &Row) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        id: row.get("id"),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")),
        source: row.get("source"),
        event_id: row.get("event_id"),
        payload: row.get("payload"),
        received_at: row.get("received_at"),
        processed_at_opt: row.get("processed_at"),
        outcome_opt: row.get("outcome"),
        attempts: u32::try_from(row.get::<_, i32>("attempts")).map_err(|e| bad_value("attempts", e))?,
        last_error_opt: row.get("last_error"),
    })
}

impl InboxRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        InboxRepo { pool, batcher: Arc::default() }
    }

    fn batcher(&self) -> &mpsc::Sender<PendingInsert> {
        self.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::channel(MAX_BATCH * 8);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..WRITERS {
                tokio::spawn(write_batches(self.pool.clone(), rx.clone()));
            }
            tx
        })
    }

    /// Commits one raw event; a repeat of (tenant, source, event id) is a no-op.
    ///
    /// # Errors
    /// `Unavailable` when the database is down (the sender must retry); `Conflict` when the
    /// tenant does not exist.
    pub async fn insert(
        &self,
        tenant_id: TenantId,
        source: &str,
        event_id: &str,
        payload: &serde_json::Value,
        received_at: Timestamp,
    ) -> Result<InboxInsert, StoreError> {
        let text = serde_json::to_vec(payload).map_err(|err| StoreError::Invalid(format!("payload: {err}")))?;
        self.insert_raw(tenant_id, source, event_id, Bytes::from(text), received_at).await
    }

    /// Like [`InboxRepo::insert`], with the payload as the JSON text it arrived as; the caller
    /// has parsed it (and found an object).
    ///
    /// # Errors
    /// As [`InboxRepo::insert`].
    pub async fn insert_raw(
        &self,
        tenant_id: TenantId,
        source: &str,
        event_id: &str,
        payload: Bytes,
        received_at: Timestamp,
    ) -> Result<InboxInsert, StoreError> {
        let payload = RawJson(payload);
        let (reply, answer) = oneshot::channel();
        let pending = PendingInsert {
            tenant_id,
            source: source.to_owned(),
            event_id: event_id.to_owned(),
            payload: payload.clone(),
            received_at,
            reply,
        };
        if self.batcher().send(pending).await.is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        // The writers are gone (their runtime shut down): commit this one directly.
        insert_one(&self.pool, tenant_id, source, event_id, &payload, received_at).await
    }

    /// Returns one event of the tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, tenant_id: TenantId, id: i64) -> Result<InboxEvent, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT {INBOX_COLUMNS} FROM inbox_events WHERE tenant_id = $1 AND id = $2"
                    ))
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &id],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        event_from_row(&row)
    }

    /// Returns the tenant's unprocessed events whose retry time has come, oldest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn unprocessed(
        &self,
        tenant_id: TenantId,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client.prepare_cached(&format!(
                    "SELECT {INBOX_COLUMNS} FROM inbox_events
                     WHERE processed_at IS NULL AND tenant_id = $1 AND (next_attempt_at IS NULL OR next_attempt_at <= $2)
                     ORDER BY received_at, id LIMIT $3"
                )).await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &now, &limit],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(event_from_row).collect()
    }

    /// Marks an event processed with its outcome (`lead_created`, `duplicate`, `unknown_location`, ...).
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn mark_processed(&self, tenant_id: TenantId, id: i64, outcome: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client.prepare_cached("UPDATE inbox_events SET processed_at = now(), outcome = $3, attempts = attempts + 1, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &id, &outcome],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Marks an event, found by its sender's id, processed with its outcome.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such event.
    pub async fn mark_processed_by_event(
        &self,
        tenant_id: TenantId,
        source: &str,
        event_id: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client.prepare_cached("UPDATE inbox_events SET processed_at = now(), outcome = $4, attempts = attempts + 1, updated_at = now()
                 WHERE tenant_id = $1 AND source = $2 AND event_id = $3").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &source, &event_id, &outcome],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Records a failed processing attempt and when to try again.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn record_failure(
        &self,
        tenant_id: TenantId,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let updated = client
            .execute(
                &client.prepare_cached("UPDATE inbox_events SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &id, &error, &next_attempt_at],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Returns when the tenant's oldest unprocessed event arrived, for the inbox-lag metric.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn oldest_unprocessed(&self, tenant_id: TenantId) -> Result<Option<Timestamp>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT min(received_at) FROM inbox_events WHERE processed_at IS NULL AND tenant_id = $1",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }
}

/// Commits one event on its own.
async fn insert_one(
    pool: &Pool,
    tenant_id: TenantId,
    source: &str,
    event_id: &str,
    payload: &RawJson,
    received_at: Timestamp,
) -> Result<InboxInsert, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_opt(
            &client
                .prepare_cached(
                    "INSERT INTO inbox_events (tenant_id, source, event_id, payload, received_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, source, event_id) DO NOTHING
             RETURNING id",
                )
                .await
                .map_err(pg_error)?,
            &[&tenant_id.as_uuid(), &source, &event_id, payload, &received_at],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.map_or(InboxInsert::Duplicate, |row| InboxInsert::Inserted(row.get(0))))
}

/// A writer task: takes whatever is waiting (at least one), commits it as one batch, answers.
async fn write_batches(pool: Pool, queue: Arc<Mutex<mpsc::Receiver<PendingInsert>>>) {
    let mut batch: Vec<PendingInsert> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!("leadorch_inbox_batch_size").record(batch.len() as f64);
        commit_batch(&pool, &mut batch).await;
    }
}

async fn commit_batch(pool: &Pool, batch: &mut Vec<PendingInsert>) {
    if batch.len() > 1 {
        match insert_many(pool, batch).await {
            Ok(ids) => {
                let mut ids = ids;
                for pending in batch.drain(..) {
                    let key = (pending.tenant_id.as_uuid(), pending.source, pending.event_id);
                    // The first of several identical events in one batch gets the row.
                    let result = ids.remove(&key).map_or(InboxInsert::Duplicate, InboxInsert::Inserted);
                    let _ = pending.reply.send(Ok(result));
                }
                return;
            }
            Err(err) if err.is_unavailable() => {
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(StoreError::Unavailable(err.to_string().into())));
                }
                return;
            }
            // Refused as a whole (a foreign key, a bad value): find the culprit row by row.
            Err(_) => {}
        }
    }
    for pending in batch.drain(..) {
        let result = insert_one(
            pool,
            pending.tenant_id,
            &pending.source,
            &pending.event_id,
            &pending.payload,
            pending.received_at,
        )
        .await;
        let _ = pending.reply.send(result);
    }
}

/// Inserts a batch in one statement; returns the ids of the rows it created by key.
async fn insert_many(pool: &Pool, batch: &[PendingInsert]) -> Result<HashMap<(Uuid, String, String), i64>, StoreError> {
    let tenants: Vec<Uuid> = batch.iter().map(|p| p.tenant_id.as_uuid()).collect();
    let sources: Vec<&str> = batch.iter().map(|p| p.source.as_str()).collect();
    let event_ids: Vec<&str> = batch.iter().map(|p| p.event_id.as_str()).collect();
    let payloads: Vec<&RawJson> = batch.iter().map(|p| &p.payload).collect();
    let received: Vec<Timestamp> = batch.iter().map(|p| p.received_at).collect();
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "INSERT INTO inbox_events (tenant_id, source, event_id, payload, received_at)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[])
             ON CONFLICT (tenant_id, source, event_id) DO NOTHING
             RETURNING id, tenant_id, source, event_id",
                )
                .await
                .map_err(pg_error)?,
            &[&tenants, &sources, &event_ids, &payloads, &received],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|r| ((r.get::<_, Uuid>(1), r.get(2), r.get(3)), r.get(0))).collect())
}
