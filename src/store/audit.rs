//! Storage of the audit log: an append-only sequence of sealed records and the checkpoints
//! signed over it.
//!
//! The store keeps what the audit writer hands it and nothing else: it never computes a hash
//! and never renumbers. The last record is the chain's head, which is how the writer resumes
//! after a restart or a crash.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_proto::audit::Checkpoint;

use super::StoreResult;
use crate::audit::AuditIndex;

/// One stored record: its canonical body, its hash, and the columns the filters use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Event type.
    pub event: String,
    /// When the event happened.
    pub time: DateTime<Utc>,
    /// Filter columns.
    pub index: AuditIndex,
    /// Canonical JSON the hash covers.
    pub body: String,
    /// Hex SHA-256 chain hash after this record.
    pub hash: String,
}

/// Which records to read. Every field narrows; `None` does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Acting person's email or subject.
    pub user: Option<String>,
    /// Host or `group:NAME`.
    pub host: Option<String>,
    /// Profile.
    pub profile: Option<String>,
    /// Event type.
    pub event: Option<String>,
    /// Certificate serial.
    pub serial: Option<u64>,
    /// Grant.
    pub grant_id: Option<String>,
    /// Request.
    pub request_id: Option<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events before this time.
    pub until: Option<DateTime<Utc>>,
    /// Records after this sequence number (the pagination cursor).
    pub after_seq: u64,
    /// At most this many records.
    pub limit: u32,
}

/// The audit log's storage.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// The last record's sequence number and hash, or `None` for an empty log.
    async fn audit_head(&self) -> StoreResult<Option<(u64, String)>>;

    /// Appends `rows` (consecutive, following the head) and, when given, a checkpoint, in one
    /// durable transaction: when this returns, all of it is on disk.
    async fn append_audit(
        &self,
        rows: &[AuditRow],
        checkpoint: Option<&Checkpoint>,
    ) -> StoreResult<()>;

    /// Records matching `filter`, in log order.
    async fn audit_rows(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>>;

    /// Every checkpoint, oldest first.
    async fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>>;
}
