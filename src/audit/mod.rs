//! The audit log: every security-relevant event, durable before the CA acts on it, chained so
//! that editing, deleting, reordering or truncating records is detectable.
//!
//! - [`event`]: the events and their stable field names.
//! - [`writer`]: the [`Auditor`] handle and the single writer task that owns the chain head and
//!   commits waiting events in groups (one flush for many callers).
//! - [`key`]: the Ed25519 audit key that signs checkpoints.
//! - [`record`]: the events of the request path, and the service calls that write them.
//! - [`access`] and [`read`]: the Cedar `audit` action that decides who reads the log, and
//!   the reads themselves (recorded too).
//! - [`sink`]: a JSON Lines copy of the log for SIEMs.
//! - [`verify`]: checks the live store with the same verifier the client uses offline
//!   ([`jit_proto::audit`], which also defines the record encoding and the hash chain).

pub mod access;
pub mod event;
pub mod key;
pub mod read;
pub mod record;
pub mod setup;
pub mod sink;
pub mod verify;
pub mod writer;

pub use event::*;
pub use key::AuditKey;
pub use setup::start_audit;
pub use sink::JsonlSink;
pub use writer::{AuditReceipt, Auditor};

use crate::store::StoreError;

/// Why the audit log could not be written, read or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The audit key file is missing, exposed, malformed or unwritable.
    #[error("audit key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed; nothing of the group was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event has no canonical form (a bug: events hold no floats).
    #[error("cannot encode an audit event: {0}")]
    Encode(String),
    /// The group's commit failed; none of its records were written.
    #[error("the audit commit failed: {0}")]
    CommitFailed(String),
    /// The chain or a checkpoint does not verify.
    #[error(transparent)]
    Chain(#[from] jit_proto::audit::ChainError),
    /// The writer task has stopped, so nothing can be recorded.
    #[error("the audit writer has stopped")]
    WriterStopped,
    /// The stored log is inconsistent with itself or its checkpoints.
    #[error("audit log is damaged: {0}; run `jit-ca audit verify`")]
    Damaged(String),
    /// The JSON Lines sink could not be opened.
    #[error("audit sink {target}: {message}")]
    Sink {
        /// The path, or `-`.
        target: String,
        /// What failed.
        message: String,
    },
}

#[cfg(test)]
mod tests;
