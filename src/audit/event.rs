//! The events the audit log records, with the field names auditors and SIEMs rely on.
//!
//! Each event is one type; [`AuditEvent`] names it. A record stores the type's snake-case name
//! in `event` and its fields in `data`, exactly as serialised here, so renaming a field is a
//! change of the log's format: add fields, never rename or remove one. `docs/audit.md` lists
//! them all. Every time is RFC 3339 UTC; a field that does not apply is `null`, never absent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// A person as a verified ID token named them (OIDC Core 2 claim names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `iss`: the identity provider.
    pub iss: String,
    /// `sub`: the person at that provider.
    pub sub: String,
    /// `email`, only when the provider said it is verified.
    pub email: Option<String>,
    /// Groups from the configured groups claim.
    pub groups: Vec<String>,
    /// `amr`: how they authenticated.
    pub amr: Vec<String>,
    /// `auth_time`: when they last authenticated at the provider.
    pub auth_time: Option<DateTime<Utc>>,
}

impl Actor {
    /// The actor behind a verified identity.
    pub fn of(identity: &Identity) -> Actor {
        Actor {
            iss: identity.issuer.clone(),
            sub: identity.subject.clone(),
            email: identity.email.clone(),
            groups: identity.groups.clone(),
            amr: identity.auth_methods.clone(),
            auth_time: identity.auth_time,
        }
    }

    /// The name the `user` filter matches: the verified email, else the subject.
    pub fn name(&self) -> &str {
        self.email.as_deref().unwrap_or(&self.sub)
    }
}

/// A bearer token was refused. The claims are read without trusting them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRejected {
    /// Why, in words.
    pub reason: String,
    /// The stable error code answered (`invalid_token`, `token_expired`, ...).
    pub code: String,
    /// `iss` as the token claimed it, when readable.
    pub claimed_iss: Option<String>,
    /// `sub` as the token claimed it, when readable.
    pub claimed_sub: Option<String>,
    /// Peer address.
    pub client_address: String,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
}

/// An access request passed the input checks and was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCreated {
    /// `r-…`.
    pub request_id: String,
    /// Who asked.
    pub requester: Actor,
    /// Profile asked for.
    pub profile: String,
    /// Host or `group:NAME`.
    pub host: String,
    /// Unix users the grant would carry.
    pub unix_users: Vec<String>,
    /// Certificate principals the grant would carry.
    pub principals: Vec<String>,
    /// Grant length after the profile's cap, in seconds.
    pub duration_secs: u64,
    /// The requester's reason.
    pub reason: String,
    /// The requester's ticket.
    pub ticket: Option<String>,
    /// `SHA256:…` of the key to certify.
    pub public_key_fingerprint: String,
    /// Peer address.
    pub client_address: String,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// When a pending request lapses.
    pub expires_at: DateTime<Utc>,
}

/// What the policy decided about a request, and which Cedar rules decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// The request; `null` for a denial (denied requests are not stored).
    pub request_id: Option<String>,
    /// Who asked.
    pub requester: Actor,
    /// Profile asked for.
    pub profile: String,
    /// Host or `group:NAME` as asked.
    pub host: String,
    /// `auto_approved`, `pending`, `break_glass` or `denied`.
    pub outcome: String,
    /// `@id`s of the rules that permitted the request, or that forbade it.
    pub rule_ids: Vec<String>,
    /// `@id`s of the rules that permitted auto-approval.
    pub auto_approve_rule_ids: Vec<String>,
    /// Approvals needed when pending.
    pub required_approvals: u32,
    /// For a denial: the requirement that failed, as the requester was told.
    pub refusal: Option<String>,
}

/// An approver approved, denied or acknowledged a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The request reviewed.
    pub request_id: String,
    /// The grant, when the review completed one.
    pub grant_id: Option<String>,
    /// Who reviewed.
    pub reviewer: Actor,
    /// `approve`, `deny` or `acknowledge`.
    pub verdict: String,
    /// The reviewer's comment or reason.
    pub comment: Option<String>,
    /// Distinct approvals so far, this one included.
    pub approvals: u32,
    /// Approvals the request needs.
    pub required_approvals: u32,
}

/// A grant's window opened: from now on certificates may be issued for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantActivated {
    /// `g-…`.
    pub grant_id: String,
    /// The request it came from.
    pub request_id: String,
    /// Whose it is.
    pub holder: Actor,
    /// Profile.
    pub profile: String,
    /// Host or `group:NAME`.
    pub host: String,
    /// Certificate principals.
    pub principals: Vec<String>,
    /// Start of the window.
    pub starts_at: DateTime<Utc>,
    /// End of the window.
    pub ends_at: DateTime<Utc>,
}

/// A certificate was signed. Recorded before the certificate is stored or handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateIssued {
    /// The request.
    pub request_id: String,
    /// The grant.
    pub grant_id: String,
    /// Serial number.
    pub serial: u64,
    /// Key ID (what sshd logs).
    pub key_id: String,
    /// Principals.
    pub principals: Vec<String>,
    /// `valid_after`.
    pub valid_after: DateTime<Utc>,
    /// `valid_before`.
    pub valid_before: DateTime<Utc>,
    /// Extensions.
    pub extensions: Vec<String>,
    /// Critical options.
    pub critical_options: BTreeMap<String, String>,
    /// `SHA256:…` of the certified key.
    pub public_key_fingerprint: String,
    /// `SHA256:…` of the signing CA key.
    pub ca_key_fingerprint: String,
    /// The certificate, one OpenSSH line.
    pub certificate: String,
    /// Profile.
    pub profile: String,
    /// Host or `group:NAME`.
    pub host: String,
    /// To whom.
    pub holder: Actor,
    /// Peer address.
    pub client_address: String,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
}

/// A certificate, grant or key was revoked: one record per grant, certificate or key put on
/// the KRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// `v-…`: the revocation this is part of.
    pub revocation_id: String,
    /// What the caller named: `grant`, `serial`, `user` or `key`.
    pub kind: String,
    /// The certificate, when one was named.
    pub serial: Option<u64>,
    /// The grant, when one was named.
    pub grant_id: Option<String>,
    /// Key ID of the certificate.
    pub key_id: Option<String>,
    /// `SHA256:…` of a public key revoked outright.
    pub public_key_fingerprint: Option<String>,
    /// Who revoked (`null` when the CA did, for example on a policy change).
    pub revoked_by: Option<Actor>,
    /// Why.
    pub reason: String,
}

/// A break-glass activation: access granted at once, reviewed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The request.
    pub request_id: String,
    /// The grant.
    pub grant_id: Option<String>,
    /// Who broke the glass.
    pub requester: Actor,
    /// Profile.
    pub profile: String,
    /// Host or `group:NAME`.
    pub host: String,
    /// Their reason.
    pub reason: String,
    /// Their ticket.
    pub ticket: Option<String>,
}

/// A host joined the CA (its agent enrolled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEnrolled {
    /// Host name.
    pub host: String,
    /// `SHA256:…` of the key the host authenticates with.
    pub host_key_fingerprint: String,
    /// Who enrolled it, when a person did.
    pub enrolled_by: Option<Actor>,
    /// Peer address.
    pub client_address: Option<String>,
}

/// A login session on a host, as its agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The host agent's session identifier.
    pub session_id: String,
    /// Host name.
    pub host: String,
    /// Unix user logged in.
    pub unix_user: String,
    /// Certificate serial used.
    pub serial: Option<u64>,
    /// Grant the certificate belongs to.
    pub grant_id: Option<String>,
    /// Address the session came from.
    pub source_address: Option<String>,
    /// For an end or termination: why.
    pub reason: Option<String>,
    /// For a termination: who ordered it (`null` when the grant ended).
    pub terminated_by: Option<Actor>,
    /// Key ID of the certificate used.
    pub key_id: Option<String>,
    /// Whose grant it is, as the CA recorded the certificate.
    pub holder: Option<Actor>,
    /// When the connection was opened, by the host's clock.
    pub started_at: Option<DateTime<Utc>>,
    /// For an end or termination: when, by the host's clock.
    pub ended_at: Option<DateTime<Utc>>,
}

/// One file the CA read at start, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// `config`, `profiles` or `cedar`.
    pub role: String,
    /// Path as opened.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// The CA started with this configuration and policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigLoaded {
    /// The files read.
    pub files: Vec<FileDigest>,
    /// `SHA256:…` of the CA key.
    pub ca_key_fingerprint: String,
    /// `SHA256:…` of the audit key.
    pub audit_key_fingerprint: String,
    /// `jit-ca` version.
    pub version: String,
}

/// Someone read the audit log, or was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRead {
    /// Who.
    pub reader: Actor,
    /// Whether the rules allowed it.
    pub allowed: bool,
    /// `@id`s of the rules that decided.
    pub rule_ids: Vec<String>,
    /// `records` or `checkpoint`.
    pub what: String,
    /// The filters asked for, as query text.
    pub query: String,
}

/// Every event the log records. The variant's snake-case name is the record's `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// `token_rejected`.
    TokenRejected(TokenRejected),
    /// `request_created`.
    RequestCreated(RequestCreated),
    /// `policy_decision`.
    PolicyDecision(PolicyDecision),
    /// `review`.
    Review(Review),
    /// `grant_activated`.
    GrantActivated(GrantActivated),
    /// `certificate_issued`.
    CertificateIssued(CertificateIssued),
    /// `revocation`.
    Revocation(Revocation),
    /// `break_glass`.
    BreakGlass(BreakGlass),
    /// `host_enrolled`.
    HostEnrolled(HostEnrolled),
    /// `session_started`.
    SessionStarted(Session),
    /// `session_ended`.
    SessionEnded(Session),
    /// `session_terminated`.
    SessionTerminated(Session),
    /// `config_loaded`.
    ConfigLoaded(ConfigLoaded),
    /// `audit_read`.
    AuditRead(AuditRead),
}

/// The columns the store indexes a record by, derived from its event. They serve the filters
/// only; the hash covers the record's body, and verification checks them against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditIndex {
    /// The acting person's email or subject.
    pub user: Option<String>,
    /// Host or `group:NAME`.
    pub host: Option<String>,
    /// Profile.
    pub profile: Option<String>,
    /// Grant.
    pub grant_id: Option<String>,
    /// Request.
    pub request_id: Option<String>,
    /// Certificate serial.
    pub serial: Option<u64>,
}

fn user_of(actor: &Actor) -> Option<String> {
    Some(actor.name().to_owned())
}

impl AuditEvent {
    /// The filter columns of this event.
    pub fn index(&self) -> AuditIndex {
        let some = |text: &String| Some(text.clone());
        match self {
            AuditEvent::TokenRejected(_) | AuditEvent::ConfigLoaded(_) => AuditIndex::default(),
            AuditEvent::RequestCreated(event) => AuditIndex {
                user: user_of(&event.requester),
                host: some(&event.host),
                profile: some(&event.profile),
                request_id: some(&event.request_id),
                ..AuditIndex::default()
            },
            AuditEvent::PolicyDecision(event) => AuditIndex {
                user: user_of(&event.requester),
                host: some(&event.host),
                profile: some(&event.profile),
                request_id: event.request_id.clone(),
                ..AuditIndex::default()
            },
            AuditEvent::Review(event) => AuditIndex {
                user: user_of(&event.reviewer),
                grant_id: event.grant_id.clone(),
                request_id: some(&event.request_id),
                ..AuditIndex::default()
            },
            AuditEvent::GrantActivated(event) => AuditIndex {
                user: user_of(&event.holder),
                host: some(&event.host),
                profile: some(&event.profile),
                grant_id: some(&event.grant_id),
                request_id: some(&event.request_id),
                serial: None,
            },
            AuditEvent::CertificateIssued(event) => AuditIndex {
                user: user_of(&event.holder),
                host: some(&event.host),
                profile: some(&event.profile),
                grant_id: some(&event.grant_id),
                request_id: some(&event.request_id),
                serial: Some(event.serial),
            },
            AuditEvent::Revocation(event) => AuditIndex {
                user: event.revoked_by.as_ref().and_then(user_of),
                grant_id: event.grant_id.clone(),
                serial: event.serial,
                ..AuditIndex::default()
            },
            AuditEvent::BreakGlass(event) => AuditIndex {
                user: user_of(&event.requester),
                host: some(&event.host),
                profile: some(&event.profile),
                grant_id: event.grant_id.clone(),
                request_id: some(&event.request_id),
                serial: None,
            },
            AuditEvent::HostEnrolled(event) => AuditIndex {
                user: event.enrolled_by.as_ref().and_then(user_of),
                host: some(&event.host),
                ..AuditIndex::default()
            },
            AuditEvent::SessionStarted(event)
            | AuditEvent::SessionEnded(event)
            | AuditEvent::SessionTerminated(event) => AuditIndex {
                user: event
                    .holder
                    .as_ref()
                    .or(event.terminated_by.as_ref())
                    .and_then(user_of),
                host: some(&event.host),
                grant_id: event.grant_id.clone(),
                serial: event.serial,
                ..AuditIndex::default()
            },
            AuditEvent::AuditRead(event) => AuditIndex {
                user: user_of(&event.reader),
                ..AuditIndex::default()
            },
        }
    }
}
