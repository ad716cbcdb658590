//! Durable state: access requests, grants and issued certificates, behind one interface.
//!
//! The [`Store`] trait is what the service sees; [`sqlite::SqliteStore`] is the embedded
//! default. A second backend only has to implement the trait. State changes that must not be
//! split (a request approved, its grant created, its certificate recorded) happen in one
//! transaction inside the backend, and serial numbers are allocated by the backend, never by
//! the process, so they stay unique and increasing.

pub mod audit;
pub mod revocation;
pub mod sessions;
pub mod sqlite;
pub mod sqlite_audit;
mod sqlite_revocation;
mod sqlite_sessions;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_proto::RequestStatus;

/// Why the store failed. Details are for the operator's log, not for API callers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open store {url}: {message}")]
    Open {
        /// The configured URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(String),
    /// A row holds data this version cannot read.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
}

/// A convenience alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// Who a record belongs to, as the verified ID token named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Verified email, if any.
    pub email: Option<String>,
    /// Groups at the time of the request.
    pub groups: Vec<String>,
}

/// A stored access request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `r-…`.
    pub id: String,
    /// Where it is in its life.
    pub status: RequestStatus,
    /// Profile.
    pub profile: String,
    /// Host or `group:NAME`.
    pub target: String,
    /// Unix users the grant carries.
    pub unix_users: Vec<String>,
    /// Principals the certificate will carry.
    pub principals: Vec<String>,
    /// Grant length after the profile's cap.
    pub duration_secs: u64,
    /// Reason.
    pub reason: String,
    /// Ticket.
    pub ticket: Option<String>,
    /// Who asked.
    pub requester: Person,
    /// The key to certify (authorized_keys line).
    pub public_key: String,
    /// Address the request came from.
    pub client_address: String,
    /// The caller's `User-Agent`.
    pub user_agent: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When a pending request lapses.
    pub expires_at: DateTime<Utc>,
    /// Approvals needed.
    pub required_approvals: u32,
    /// `@id`s of the rules that allowed it.
    pub decision_rules: Vec<String>,
    /// Planned start, when the requester named one.
    pub start_at: Option<DateTime<Utc>>,
    /// The grant this request extends, for an extension.
    pub extends_grant: Option<String>,
    /// A break-glass activation.
    pub break_glass: bool,
    /// Who acknowledged a break-glass activation after the fact.
    pub acknowledged_by: Option<String>,
}

/// A stored grant: the approved window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// `g-…`.
    pub id: String,
    /// The request it came from.
    pub request_id: String,
    /// Profile.
    pub profile: String,
    /// Host or `group:NAME`.
    pub target: String,
    /// Principals.
    pub principals: Vec<String>,
    /// Start of the window.
    pub starts_at: DateTime<Utc>,
    /// End of the window.
    pub ends_at: DateTime<Utc>,
    /// Whose it is.
    pub holder: Person,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A stored certificate: everything needed to tell, later, who got it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Serial.
    pub serial: u64,
    /// Grant.
    pub grant_id: String,
    /// Key ID.
    pub key_id: String,
    /// Principals.
    pub principals: Vec<String>,
    /// `valid_after`.
    pub valid_after: DateTime<Utc>,
    /// `valid_before`.
    pub valid_before: DateTime<Utc>,
    /// `SHA256:…` of the certified key.
    pub public_key_fingerprint: String,
    /// `SHA256:…` of the signing CA key.
    pub ca_key_fingerprint: String,
    /// The certificate, one OpenSSH line.
    pub certificate: String,
    /// To whom.
    pub holder: Person,
    /// Address the request came from.
    pub client_address: String,
    /// `User-Agent` of the request.
    pub user_agent: Option<String>,
    /// When it was signed.
    pub issued_at: DateTime<Utc>,
}

/// An approved request, its grant and its first certificate: written together or not at all.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// The request, with status `approved`.
    pub request: RequestRecord,
    /// The new grant.
    pub grant: GrantRecord,
    /// The signed certificate.
    pub certificate: CertificateRecord,
}

/// A grant with its latest certificate.
#[derive(Debug, Clone)]
pub struct GrantWithCertificate {
    /// The grant.
    pub grant: GrantRecord,
    /// Its newest certificate, if any.
    pub certificate: Option<CertificateRecord>,
    /// Whether a revocation ended it: the grant, its newest certificate or that certificate's
    /// key is revoked.
    pub revoked: bool,
}

/// An approver's or denier's verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counts towards the required approvals.
    Approve,
    /// Ends the request.
    Deny,
}

impl Verdict {
    /// Name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// One review to record.
#[derive(Debug, Clone)]
pub struct Review {
    /// The request reviewed.
    pub request_id: String,
    /// Who reviews.
    pub reviewer: Person,
    /// Approve or deny.
    pub verdict: Verdict,
    /// Comment (approval) or reason (denial).
    pub comment: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a review changed, decided inside one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewResult {
    /// Counted; the request still waits. Holds the approvers so far.
    Counted(Vec<String>),
    /// This approval was the last one needed: the request is now approved.
    Approved(Vec<String>),
    /// The request is now denied.
    Denied,
    /// The reviewer had already reviewed this request; nothing changed.
    AlreadyReviewed,
    /// The request is not pending (any more); nothing changed.
    NotPending(RequestStatus),
}

/// One line of a request's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who, or `jit-ca`.
    pub actor: String,
    /// What happened (`requested`, `approved`, ...).
    pub kind: String,
    /// Comment, reason or detail.
    pub detail: String,
}

/// An extension's effect, written together: the new request, the grant's new end, the new
/// certificate.
#[derive(Debug, Clone)]
pub struct Extension {
    /// The extension request, status `approved`, `extends_grant` set.
    pub request: RequestRecord,
    /// The grant extended.
    pub grant_id: String,
    /// Its new end.
    pub new_end: DateTime<Utc>,
    /// The re-issued certificate.
    pub certificate: CertificateRecord,
}

/// The storage interface the service uses.
#[async_trait]
pub trait Store: audit::AuditStore + revocation::RevocationStore + Send + Sync {
    /// Reserves `count` consecutive serials and returns the first. Reserved serials are never
    /// handed out again, even if the process dies before using them.
    async fn reserve_serials(&self, count: u64) -> StoreResult<u64>;

    /// Stores a pending request.
    async fn insert_request(&self, request: &RequestRecord) -> StoreResult<()>;

    /// Stores an approved request with its grant and certificate in one durable transaction.
    async fn record_issuance(&self, issuance: &Issuance) -> StoreResult<()>;

    /// Finds a request by id.
    async fn find_request(&self, request_id: &str) -> StoreResult<Option<RequestRecord>>;

    /// Finds the grant made from a request, with its latest certificate.
    async fn find_grant_by_request(
        &self,
        request_id: &str,
    ) -> StoreResult<Option<GrantWithCertificate>>;

    /// Grants of one person, newest first, at most `limit`.
    async fn grants_of(
        &self,
        issuer: &str,
        subject: &str,
        limit: u32,
    ) -> StoreResult<Vec<GrantWithCertificate>>;

    /// Number of requests waiting for approval.
    async fn count_pending(&self) -> StoreResult<u64>;

    /// Records a review and, in the same transaction, the state change it causes: each
    /// reviewer counts once, one denial denies, the last needed approval approves. Refuses
    /// (returns `NotPending`) a request that is not pending or whose deadline passed at `at`.
    async fn record_review(&self, review: &Review, required: u32) -> StoreResult<ReviewResult>;

    /// Stores the grant and first certificate of a request approved by reviewers. Returns
    /// `false` (and stores nothing) when the request already has a grant.
    async fn record_grant(
        &self,
        grant: &GrantRecord,
        certificate: &CertificateRecord,
    ) -> StoreResult<bool>;

    /// Cancels a pending request; `false` when it was not pending.
    async fn cancel_request(
        &self,
        request_id: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Marks a break-glass activation as reviewed; `false` when already acknowledged.
    async fn acknowledge(
        &self,
        request_id: &str,
        actor: &str,
        comment: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records an extension: the grant's new end and the new certificate, and the extension
    /// request itself when `insert_request` (it is already stored when approvers approved it).
    async fn record_extension(
        &self,
        extension: &Extension,
        insert_request: bool,
    ) -> StoreResult<()>;

    /// Marks pending requests whose deadline passed at `now` as expired and returns them.
    async fn expire_pending(&self, now: DateTime<Utc>) -> StoreResult<Vec<RequestRecord>>;

    /// Pending requests (deadline not passed at `now`) and unacknowledged break-glass
    /// activations, oldest first, at most `limit`.
    async fn open_for_review(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RequestRecord>>;

    /// Emails (or subjects) of those who approved a request, in order.
    async fn approvers_of(&self, request_id: &str) -> StoreResult<Vec<String>>;

    /// A request's history, oldest first.
    async fn history(&self, request_id: &str) -> StoreResult<Vec<EventRecord>>;

    /// Break-glass activations (and break-glass extensions) whose grant ended by `now` without
    /// an acknowledgement and whose alert was not sent yet; marks them alerted.
    async fn take_unreviewed_break_glass(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RequestRecord>>;

    /// A grant with its latest certificate.
    async fn find_grant(&self, grant_id: &str) -> StoreResult<Option<GrantWithCertificate>>;
}
