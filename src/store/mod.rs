//! Durable state: access requests, grants and issued certificates, behind one interface.
//!
//! The [`Store`] trait is what the service sees; [`sqlite::SqliteStore`] is the embedded
//! default. A second backend only has to implement the trait. State changes that must not be
//! split (a request approved, its grant created, its certificate recorded) happen in one
//! transaction inside the backend, and serial numbers are allocated by the backend, never by
//! the process, so they stay unique and increasing.

pub mod sqlite;

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
}

/// The storage interface the service uses.
#[async_trait]
pub trait Store: Send + Sync {
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
}
