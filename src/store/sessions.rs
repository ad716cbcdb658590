//! Storage of the login sessions host agents report: one record per SSH connection, open until
//! the agent reports its end (or stops listing it).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{GrantRecord, StoreResult};

/// A session as stored, with the grant its certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The host it runs on.
    pub host: String,
    /// The host agent's identifier.
    pub session_id: String,
    /// The Unix user logged in.
    pub unix_user: String,
    /// The certificate's serial.
    pub serial: u64,
    /// The certificate's key ID.
    pub key_id: String,
    /// The grant of the certificate, as the CA recorded it.
    pub grant: GrantRecord,
    /// Where the connection came from, when the agent knew.
    pub source_address: Option<String>,
    /// The session's terminal, when it has one.
    pub tty: Option<String>,
    /// When the connection was opened (host's clock).
    pub started_at: DateTime<Utc>,
    /// The certificate's `valid_before`.
    pub valid_before: DateTime<Utc>,
    /// When the CA first heard of it.
    pub reported_at: DateTime<Utc>,
    /// When it ended; `None` while open.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended: `ended`, `revoked`, `expired` or `gone`.
    pub end_reason: Option<String>,
}

/// The sessions' storage.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session `session_id` of `host`, open or not.
    async fn find_session(
        &self,
        host: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>>;

    /// Stores a new open session; returns false when one with its identifier exists already.
    async fn insert_session(&self, session: &SessionRecord) -> StoreResult<bool>;

    /// Closes an open session; returns false when it was not open.
    async fn close_session(
        &self,
        host: &str,
        session_id: &str,
        ended_at: DateTime<Utc>,
        end_reason: &str,
    ) -> StoreResult<bool>;

    /// The open sessions, of one host or of all, oldest first.
    async fn open_sessions(&self, host: Option<&str>) -> StoreResult<Vec<SessionRecord>>;
}
