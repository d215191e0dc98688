//! Conversations: one chat session per lead, and its messages (customer SMS replies land here
//! too, so staff and the chat page see them).

use deadpool_postgres::Pool;
use leadorch_actors::domain::{LeadId, TenantId};
use leadorch_actors::ports::StoreError;
use uuid::Uuid;

use super::{pg_error, pool_error};

/// Reads and writes `chat_sessions` and `chat_messages`.
#[derive(Clone, Debug)]
pub struct ChatRepo {
    pool: Pool,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    pub id: Uuid,
    pub role: String,
    pub content: String,
    pub status: String,
    pub created_at: jiff::Timestamp,
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
                "SELECT id FROM chat_sessions WHERE tenant_id = $1 AND lead_id = $2 AND status = 'open'
                 ORDER BY created_at LIMIT 1",
                &[&tenant_id.as_uuid(), &lead_id.as_uuid()],
            )
            .await
            .map_err(pg_error)?;
        if let Some(row) = existing {
            return Ok(row.get(0));
        }
        let row = client
            .query_one(
                "INSERT INTO chat_sessions (id, tenant_id, lead_id) VALUES ($1, $2, $3) RETURNING id",
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
                "INSERT INTO chat_messages (id, tenant_id, session_id, lead_id, role, content) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &tenant_id.as_uuid(), &session_id, &lead_id.as_uuid(), &role, &content],
            )
            .await
            .map_err(pg_error)?;
        client
            .execute(
                "UPDATE chat_sessions SET last_activity_at = now(), updated_at = now() WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id.as_uuid(), &session_id],
            )
            .await
            .map_err(pg_error)?;
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
                "SELECT id, role, content, status, created_at FROM chat_messages
                 WHERE tenant_id = $1 AND lead_id = $2 ORDER BY created_at, id",
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
                created_at: r.get("created_at"),
            })
            .collect())
    }
}
