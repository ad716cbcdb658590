//! Durable state for ending access early and for enrolled hosts: revocations, the KRL version
//! counter, one-time enrolment tokens, hosts and their certificates.
//!
//! The KRL version is a counter kept here and incremented in the same transaction that records
//! a revocation, so it only grows, across restarts and whichever process reads it. An enrolment
//! token is consumed in the same transaction that records the host and its first certificate,
//! so a token opens exactly one enrolment.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_proto::revocation::RevocationKind;

use super::{CertificateRecord, GrantRecord, Person, StoreResult};

/// One revocation, as kept: who, when, why, and what it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRecord {
    /// `v-…`.
    pub id: String,
    /// What was named.
    pub kind: RevocationKind,
    /// The grant id, serial, email or key fingerprint named.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Who revoked.
    pub actor: Person,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// What a revocation puts on the KRL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationChanges {
    /// Grants ended: every certificate issued for them is listed while unexpired.
    pub grant_ids: Vec<String>,
    /// Single certificates listed while unexpired.
    pub serials: Vec<u64>,
    /// A public key listed by its SHA-256 fingerprint until removed on purpose.
    pub key: Option<RevokedKey>,
}

/// A public key revoked outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key, one `authorized_keys` line.
    pub public_key: String,
}

/// A revoked certificate still valid at the time the KRL is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// Its serial.
    pub serial: u64,
    /// `SHA256:…` of the CA key that signed it.
    pub ca_key_fingerprint: String,
    /// When it would have expired anyway.
    pub valid_before: DateTime<Utc>,
}

/// Everything the KRL holds at one instant, read in one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KrlContents {
    /// The version counter.
    pub version: u64,
    /// Revoked certificates not yet expired.
    pub certificates: Vec<RevokedCertificate>,
    /// Revoked public keys, by fingerprint.
    pub key_fingerprints: Vec<String>,
}

/// A grant as the revocation path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocableGrant {
    /// The grant.
    pub grant: GrantRecord,
    /// Whether a revocation already ended it.
    pub revoked: bool,
    /// The ticket of the request it came from, or empty.
    pub ticket: String,
}

/// A one-time enrolment token, as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// The host it enrols.
    pub host_name: String,
    /// The host groups the host is enrolled in.
    pub groups: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working if unused.
    pub expires_at: DateTime<Utc>,
}

/// An enrolled host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// Its inventory name.
    pub name: String,
    /// Its public key (`authorized_keys` line): what its certificate certifies and what its
    /// refresh requests are signed with.
    pub public_key: String,
    /// `SHA256:…` of that key.
    pub public_key_fingerprint: String,
    /// The host groups it was enrolled in.
    pub groups: Vec<String>,
    /// When it (last) enrolled.
    pub enrolled_at: DateTime<Utc>,
}

/// A host certificate the CA signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertificateRecord {
    /// Serial, from the same counter as user certificates.
    pub serial: u64,
    /// The host.
    pub host_name: String,
    /// Key ID.
    pub key_id: String,
    /// Principals (host names).
    pub principals: Vec<String>,
    /// `valid_after`.
    pub valid_after: DateTime<Utc>,
    /// `valid_before`.
    pub valid_before: DateTime<Utc>,
    /// `SHA256:…` of the certified host key.
    pub public_key_fingerprint: String,
    /// `SHA256:…` of the signing CA key.
    pub ca_key_fingerprint: String,
    /// The certificate, one OpenSSH line.
    pub certificate: String,
    /// When it was signed.
    pub issued_at: DateTime<Utc>,
}

/// Storage for revocations and hosts; every [`super::Store`] provides it.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// The current KRL version (1 before any revocation).
    async fn krl_version(&self) -> StoreResult<u64>;

    /// The KRL's contents at `now`, with the version they belong to, in one read snapshot:
    /// certificates of revoked grants and revoked certificates whose `valid_before` is after
    /// `now`, and every revoked key.
    async fn krl_contents(&self, now: DateTime<Utc>) -> StoreResult<KrlContents>;

    /// Records a revocation and what it changes, and increments the KRL version, in one
    /// transaction. Returns the new version.
    async fn record_revocation(
        &self,
        revocation: &RevocationRecord,
        changes: &RevocationChanges,
    ) -> StoreResult<u64>;

    /// A grant by id, with whether it is revoked.
    async fn revocable_grant(&self, grant_id: &str) -> StoreResult<Option<RevocableGrant>>;

    /// Every certificate issued for a grant, oldest first.
    async fn certificates_of_grant(&self, grant_id: &str) -> StoreResult<Vec<CertificateRecord>>;

    /// A certificate by serial, with whether it is already on the KRL (by itself or through
    /// its grant).
    async fn revocable_certificate(
        &self,
        serial: u64,
    ) -> StoreResult<Option<(CertificateRecord, bool)>>;

    /// Grants held by the person with this email that are neither ended at `now` nor revoked.
    async fn active_grants_of_email(
        &self,
        email: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RevocableGrant>>;

    /// Certificates issued for the public key with this fingerprint.
    async fn certificates_of_key(&self, fingerprint: &str) -> StoreResult<Vec<CertificateRecord>>;

    /// Whether the public key with this fingerprint is revoked.
    async fn is_key_revoked(&self, fingerprint: &str) -> StoreResult<bool>;

    /// Whether a user or host certificate signed by the CA key with this fingerprint is still
    /// valid at `now`.
    async fn ca_key_in_use(
        &self,
        ca_key_fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Stores a new enrolment token.
    async fn insert_enrollment_token(&self, token: &EnrollmentToken) -> StoreResult<()>;

    /// The unused, unexpired token for `host_name` with this hash, if any.
    async fn find_enrollment_token(
        &self,
        host_name: &str,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EnrollmentToken>>;

    /// Consumes the token and records the host (replacing an earlier enrolment of the same
    /// name) and its first certificate, in one transaction. Returns `false`, changing nothing,
    /// when the token is unknown, used or expired at `now`.
    async fn enroll_host(
        &self,
        token_sha256: &str,
        now: DateTime<Utc>,
        host: &HostRecord,
        certificate: &HostCertificateRecord,
    ) -> StoreResult<bool>;

    /// An enrolled host by name.
    async fn find_host(&self, name: &str) -> StoreResult<Option<HostRecord>>;

    /// The newest certificate of a host.
    async fn latest_host_certificate(
        &self,
        host_name: &str,
    ) -> StoreResult<Option<HostCertificateRecord>>;

    /// Records a renewed host certificate.
    async fn record_host_certificate(&self, certificate: &HostCertificateRecord)
        -> StoreResult<()>;
}
