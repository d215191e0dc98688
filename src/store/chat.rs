//! Conversations: one chat session per lead, and its messages (customer SMS replies land here
//! too, so staff and the chat page see them).
//!
//! Every write that needs the lead's open session first locks the lead row (`FOR NO KEY
//! UPDATE`) inside its transaction: that proves the lead is the tenant's and serialises
//! find-or-create of the session, so two concurrent messages never open two sessions.

use deadpool_postgres::{Pool, Transaction};
use leadorch_actors::domain::{LeadId, LeadStatus, TenantId};
use leadorch_actors::ports::StoreError;
use uuid::Uuid;

use super::{pg_error, pool_error};

/// Reads and writes `chat_sessions` and `chat_messages`.
#[derive(Clone, Debug)]
pub struct ChatRepo {
    pool: Pool,
}

/// One stored message. Assistant replies carry their provider, usage, cost and latency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    pub id: Uuid,
    pub role: String,
    pub content: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<i32>,
    pub created_at: jiff::Timestamp,
}

/// What storing a customer's message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerMessage {
    /// The stored message.
    pub id: Uuid,
    /// The session it joined.
    pub session_id: Uuid,
    /// Whether the lead moved to `replied` (its cadence stopped) because of it.
    pub lead_stopped: bool,
}

/// How an assistant reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The whole reply was produced.
    Complete,
    /// The stream stopped early; `content` holds what arrived.
    Partial,
    /// The provider failed.
    Error,
}

impl ReplyStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Complete => "complete",
            ReplyStatus::Partial => "partial",
            ReplyStatus::Error => "error",
        }
    }
}

/// The outcome of an assistant reply, written over the placeholder `start_reply` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    pub content: String,
    pub status: ReplyStatus,
    pub provider_opt: Option<String>,
    pub model_opt: Option<String>,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub cost_micros: u64,
    pub first_token_ms_opt: Option<u32>,
    pub total_ms: u32,
}

/// Statuses a customer's reply moves to `replied` (the same rule as `LeadRepo::stop_with`).
const REPLY_STOPS: [LeadStatus; 3] = [LeadStatus::New, LeadStatus::InCadence, LeadStatus::Paused];

fn saturating_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Locks the tenant's lead for the rest of the transaction and returns its open session,
/// creating one when there is none.
///
/// # Errors
/// `NotFound` when the lead does not exist or belongs to another tenant.
async fn lock_lead_session(tx: &Transaction<'_>, tenant_id: TenantId, lead_id: LeadId) -> Result<Uuid, StoreError> {
    tx.query_opt(
        &tx.prepare_cached("SELECT id FROM leads WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE")
            .await
            .map_err(pg_error)?,
        &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
    )
    .await
    .map_err(pg_error)?
    .ok_or(StoreError::NotFound)?;
    let existing = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id FROM chat_sessions WHERE tenant_id = $1 AND lead_id = $2 AND status = 'open'
             ORDER BY created_at LIMIT 1",
            )
            .await
            .map_err(pg_error)?,
            &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
        )
        .await
        .map_err(pg_error)?;
    if let Some(row) = existing {
        return Ok(row.get(0));
    }
    let row = tx
        .query_one(
            &tx.prepare_cached("INSERT INTO chat_sessions (id, tenant_id, lead_id) VALUES ($1, $2, $3) RETURNING id")
                .await
                .map_err(pg_error)?,
            &[&Uuid::now_v7(), &tenant_id.as_uuid(), &lead_id.as_uuid()],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

/// Inserts a message into the session and bumps the session's last activity.
async fn insert_message(
    tx: &Transaction<'_>,
    tenant_id: TenantId,
    lead_id: LeadId,
    session_id: Uuid,
    role: &str,
    content: &str,
    status: ReplyStatus,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO chat_messages (id, tenant_id, session_id, lead_id, role, content, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(pg_error)?,
        &[&id, &tenant_id.as_uuid(), &session_id, &lead_id.as_uuid(), &role, &content, &status.as_str()],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE chat_sessions SET last_activity_at = now(), updated_at = now() WHERE tenant_id = $1 AND id = $2",
        )
        .await
        .map_err(pg_error)?,
        &[&tenant_id.as_uuid(), &session_id],
    )
    .await
    .map_err(pg_error)?;
    Ok(id)
}

impl ChatRepo {
    pub(crate) fn new(pool: Pool) -> Self {
        ChatRepo { pool }
    }

    /// Returns the lead's open session, creating it when there is none.
    ///
    /// # Errors
    /// `Conflict` when the lead is not the tenant's.
    pub async fn session_for(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Uuid, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let existing = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT id FROM chat_sessions WHERE tenant_id = $1 AND lead_id = $2 AND status = 'open'
                 ORDER BY created_at LIMIT 1",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        if let Some(row) = existing {
            return Ok(row.get(0));
        }
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "INSERT INTO chat_sessions (id, tenant_id, lead_id) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&Uuid::now_v7(), &tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    /// Appends a message to the lead's conversation and returns its id.
    ///
    /// # Errors
    /// `Conflict` when the lead is not the tenant's.
    pub async fn append(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        role: &str,
        content: &str,
    ) -> Result<Uuid, StoreError> {
        let session_id = self.session_for(tenant_id, lead_id).await?;
        let client = self.pool.get().await.map_err(pool_error)?;
        let id = Uuid::now_v7();
        client
            .execute(
                &client.prepare_cached("INSERT INTO chat_messages (id, tenant_id, session_id, lead_id, role, content) VALUES ($1, $2, $3, $4, $5, $6)").await.map_err(pg_error)?,
                &[&id, &tenant_id.as_uuid(), &session_id, &lead_id.as_uuid(), &role, &content],
            )
            .await
            .map_err(pg_error)?;
        client
            .execute(
                &client.prepare_cached("UPDATE chat_sessions SET last_activity_at = now(), updated_at = now() WHERE tenant_id = $1 AND id = $2").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &session_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(id)
    }

    /// Stores a customer's message in one transaction: it joins the lead's open session (created
    /// when needed), the lead moves to `replied` when it was new, in cadence or paused, and its
    /// pending touches are cancelled ("customer replied").
    ///
    /// # Errors
    /// `NotFound` when the lead does not exist or belongs to another tenant.
    pub async fn append_customer_message(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        content: &str,
    ) -> Result<CustomerMessage, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let session_id = lock_lead_session(&tx, tenant_id, lead_id).await?;
        let id = insert_message(&tx, tenant_id, lead_id, session_id, "user", content, ReplyStatus::Complete).await?;
        let open: Vec<&str> = REPLY_STOPS.into_iter().map(LeadStatus::as_str).collect();
        let updated = tx
            .execute(
                &tx.prepare_cached("UPDATE leads SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2 AND status = ANY($4)").await.map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &LeadStatus::Replied.as_str(), &open],
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            &tx.prepare_cached(
                "UPDATE touchpoints SET status = 'cancelled', last_error = $3, updated_at = now()
             WHERE tenant_id = $1 AND lead_id = $2 AND status = 'pending'",
            )
            .await
            .map_err(pg_error)?,
            &[&tenant_id.as_uuid(), &lead_id.as_uuid(), &"customer replied"],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let lead_stopped = updated == 1;
        if lead_stopped {
            metrics::counter!("leadorch_lead_outcomes_total", "outcome" => "replied").increment(1);
        }
        Ok(CustomerMessage { id, session_id, lead_stopped })
    }

    /// Opens an assistant reply: an empty `partial` message in the lead's open session (created
    /// when needed), to be completed by [`ChatRepo::finish_reply`]. Returns its id.
    ///
    /// # Errors
    /// `NotFound` when the lead does not exist or belongs to another tenant.
    pub async fn start_reply(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Uuid, StoreError> {
        self.insert_assistant(tenant_id, lead_id, "", ReplyStatus::Partial).await
    }

    /// Records how an assistant reply ended: its text, status, provider, token usage, cost and
    /// latency (values beyond the columns' range are stored saturated).
    ///
    /// # Errors
    /// `NotFound` when no assistant message of the tenant has that id.
    pub async fn finish_reply(
        &self,
        tenant_id: TenantId,
        message_id: Uuid,
        reply: &ReplyRecord,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "WITH m AS (
                     UPDATE chat_messages
                     SET content = $3, status = $4, provider = $5, model = $6, tokens_in = $7, tokens_out = $8,
                         cost_micros = $9, first_token_ms = $10, total_ms = $11, updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 AND role = 'assistant'
                     RETURNING session_id
                 ), s AS (
                     UPDATE chat_sessions SET last_activity_at = now(), updated_at = now()
                     WHERE tenant_id = $1 AND id IN (SELECT session_id FROM m)
                 )
                 SELECT count(*) FROM m",
                    )
                    .await
                    .map_err(pg_error)?,
                &[
                    &tenant_id.as_uuid(),
                    &message_id,
                    &reply.content,
                    &reply.status.as_str(),
                    &reply.provider_opt,
                    &reply.model_opt,
                    &saturating_i32(reply.tokens_in),
                    &saturating_i32(reply.tokens_out),
                    &saturating_i64(reply.cost_micros),
                    &reply.first_token_ms_opt.map(saturating_i32),
                    &saturating_i32(reply.total_ms),
                ],
            )
            .await
            .map_err(pg_error)?;
        let updated: i64 = row.get(0);
        if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Appends a complete assistant message composed by the system (no model call, e.g. an
    /// opt-out confirmation) and returns its id.
    ///
    /// # Errors
    /// `NotFound` when the lead does not exist or belongs to another tenant.
    pub async fn append_assistant(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        content: &str,
    ) -> Result<Uuid, StoreError> {
        self.insert_assistant(tenant_id, lead_id, content, ReplyStatus::Complete).await
    }

    async fn insert_assistant(
        &self,
        tenant_id: TenantId,
        lead_id: LeadId,
        content: &str,
        status: ReplyStatus,
    ) -> Result<Uuid, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let session_id = lock_lead_session(&tx, tenant_id, lead_id).await?;
        let id = insert_message(&tx, tenant_id, lead_id, session_id, "assistant", content, status).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(id)
    }

    /// Returns the lead's conversation, oldest first.
    ///
    /// # Errors
    /// The database is unavailable.
    pub async fn history(&self, tenant_id: TenantId, lead_id: LeadId) -> Result<Vec<ChatMessage>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT id, role, content, status, provider, model, tokens_in, tokens_out, cost_micros,
                        first_token_ms, total_ms, created_at
                 FROM chat_messages
                 WHERE tenant_id = $1 AND lead_id = $2 ORDER BY created_at, id",
                    )
                    .await
                    .map_err(pg_error)?,
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| ChatMessage {
                id: r.get("id"),
                role: r.get("role"),
                content: r.get("content"),
                status: r.get("status"),
                provider: r.get("provider"),
                model: r.get("model"),
                tokens_in: r.get("tokens_in"),
                tokens_out: r.get("tokens_out"),
                cost_micros: r.get("cost_micros"),
                first_token_ms: r.get("first_token_ms"),
                total_ms: r.get("total_ms"),
                created_at: r.get("created_at"),
            })
            .collect())
    }
}
