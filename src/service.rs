//! The just-in-time cycle: a verified identity asks, the policy decides, the grant is made, the
//! certificate is signed and recorded, and only then handed back.
//!
//! This module ties the pure cores (policy, signer) to the store. It holds the mechanics that
//! are not policy: a grant's clock starts when it is approved; the certificate's validity is the
//! grant's window (back-dated slightly for clock skew); nothing is stored for a request that is
//! refused; nothing is returned before it is durable. It knows nothing of HTTP, and every
//! decision takes `now` from its caller.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
/// Caller-supplied text cut for one line of a message (shared with the other service modules).
pub(crate) use jit_proto::clip_for_display as clip;
use jit_proto::{
    AccessRequestView, CreateAccessRequest, GrantList, GrantView, IssuedCertificate, RequestStatus,
};
use rand::Rng;
use ssh_key::HashAlg;
use tokio::sync::Mutex;

use crate::audit::Auditor;
use crate::identity::Identity;
use crate::notify::Notifier;
use crate::policy::{Decision, Policy, Refusal, RequestInput};
use crate::signer::{parse_subject_key, CaKey, CertificateOrder, SignError, SubjectKeyError};
use crate::store::{
    CertificateRecord, GrantRecord, GrantWithCertificate, Issuance, Person, RequestRecord, Store,
    StoreError,
};

/// How many serials the service reserves from the store at once.
const SERIAL_BLOCK: u64 = 64;

/// How many grants `list_grants` returns.
const GRANT_LIST_LIMIT: u32 = 100;

/// Why the service refused or failed a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The policy refused the request.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The public key to certify is unacceptable.
    #[error(transparent)]
    InvalidKey(#[from] SubjectKeyError),
    /// The request body is well-formed JSON but not a valid request.
    #[error("{0}")]
    BadRequest(String),
    /// No such request or grant, or not the caller's.
    #[error("no request or grant `{0}` of yours")]
    NotFound(String),
    /// The caller may not do this (self-approval, an approver outside the rules).
    #[error("{0}")]
    Forbidden(String),
    /// The request or grant is not in a state that allows this.
    #[error("{message}")]
    Conflict {
        /// Stable code for the error body.
        code: &'static str,
        /// One line for a human.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not record the event, so the CA does not act on it.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The signer refused the order (a bug if it happens: the service builds orders).
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Where a request came from, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The peer address.
    pub address: IpAddr,
    /// The `User-Agent` header, cut to a sane length.
    pub user_agent: Option<String>,
}

/// The outcome of a new request, for the boundary to log and answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the requester sees.
    pub view: AccessRequestView,
    /// The decision the policy took.
    pub decision: Decision,
}

/// The parts of a certificate that come from the profile rather than from the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateShape {
    pub(crate) extensions: Vec<String>,
    pub(crate) force_command: Option<String>,
    pub(crate) pin_source_address: bool,
}

impl CertificateShape {
    pub(crate) fn from_decision(decision: &Decision) -> CertificateShape {
        CertificateShape {
            extensions: decision.extensions.iter().cloned().collect(),
            force_command: decision.force_command.clone(),
            pin_source_address: decision.pin_source_address,
        }
    }

    pub(crate) fn from_profile(profile: &crate::policy::Profile) -> CertificateShape {
        CertificateShape {
            extensions: profile.extensions.iter().cloned().collect(),
            force_command: profile.force_command.clone(),
            pin_source_address: profile.pin_source_address,
        }
    }
}

/// Hands out serials from blocks reserved in the store.
struct SerialAllocator {
    next: u64,
    end: u64,
}

/// The CA's core service.
pub struct Service {
    pub(crate) policy: Arc<Policy>,
    pub(crate) ca_key: Arc<CaKey>,
    pub(crate) store: Arc<dyn Store>,
    serials: Mutex<SerialAllocator>,
    backdate: Duration,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) audit: Arc<Auditor>,
    /// Held while an approved request's grant is created, so the approver's request and the
    /// requester's poll never both sign for it (see `Service::complete_approval`).
    pub(crate) grant_completion: Mutex<()>,
}

/// A request body whose fields passed the checks made before any decision.
#[derive(Debug)]
pub struct CheckedRequest {
    /// The key to certify.
    pub subject_key: ssh_key::PublicKey,
    /// What the policy decides on.
    pub input: RequestInput,
    /// The planned start, when it lies ahead of `now`.
    pub start_at: Option<DateTime<Utc>>,
}

/// Checks what a requester sent, before anything is decided: the public key, the spelling of
/// the Unix user, the duration's bounds and the planned start (at most 30 days ahead). Refuses
/// with [`ServiceError::BadRequest`] or [`ServiceError::InvalidKey`]; reads no clock and no
/// store, so the request fuzz target runs it as the service does.
pub fn check_request(
    body: CreateAccessRequest,
    now: DateTime<Utc>,
) -> Result<CheckedRequest, ServiceError> {
    let subject_key = parse_subject_key(&body.public_key)?;
    if let Some(unix_user) = &body.unix_user {
        jit_proto::validate_unix_user(unix_user)
            .map_err(|error| ServiceError::BadRequest(error.to_string()))?;
    }
    let duration = match body.duration_secs {
        Some(0) => {
            return Err(ServiceError::BadRequest(
                "duration must be longer than zero".into(),
            ))
        }
        Some(seconds) if Duration::from_secs(seconds) > jit_proto::duration::MAX_DURATION => {
            return Err(ServiceError::BadRequest(
                "duration is longer than the 366-day maximum".into(),
            ))
        }
        Some(seconds) => Some(Duration::from_secs(seconds)),
        None => None,
    };
    // A planned start may lie ahead (at most 30 days); one in the past means "now".
    let start_at = match body.start_at {
        Some(start) if start > now + TimeDelta::days(30) => {
            return Err(ServiceError::BadRequest(
                "start_at is more than 30 days ahead".into(),
            ))
        }
        Some(start) if start > now => Some(start.trunc_subsecs(0)),
        _ => None,
    };
    let input = RequestInput {
        profile: body.profile,
        target: body.host,
        unix_user: body.unix_user,
        duration,
        reason: body.reason,
        ticket: body.ticket.filter(|ticket| !ticket.is_empty()),
    };

    Ok(CheckedRequest {
        subject_key,
        input,
        start_at,
    })
}

impl Service {
    /// Builds the service.
    pub fn new(
        policy: Arc<Policy>,
        ca_key: Arc<CaKey>,
        store: Arc<dyn Store>,
        backdate: Duration,
        audit: Arc<Auditor>,
    ) -> Service {
        Service {
            policy,
            ca_key,
            store,
            serials: Mutex::new(SerialAllocator { next: 0, end: 0 }),
            backdate,
            notifier: None,
            audit,
            grant_completion: Mutex::new(()),
        }
    }

    /// The audit log, for recording events and reading records.
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.audit
    }

    /// Sends webhook notifications through `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> Service {
        self.notifier = Some(notifier);
        self
    }

    /// The loaded policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The CA key.
    pub fn ca_key(&self) -> &CaKey {
        &self.ca_key
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    async fn next_serial(&self) -> Result<u64, StoreError> {
        let mut serials = self.serials.lock().await;
        if serials.next == serials.end {
            let first = self.store.reserve_serials(SERIAL_BLOCK).await?;
            serials.next = first;
            serials.end = first + SERIAL_BLOCK;
        }
        let serial = serials.next;
        serials.next += 1;
        Ok(serial)
    }

    /// Decides a new request and, when it is auto-approved, grants it and signs its certificate.
    /// Refused requests leave no trace in the store (the boundary logs them).
    pub async fn create_request(
        &self,
        identity: &Identity,
        body: CreateAccessRequest,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Outcome, ServiceError> {
        // Check everything the requester sent before deciding anything.
        let CheckedRequest {
            subject_key,
            input,
            start_at,
        } = check_request(body, now)?;

        let decision = match self.policy.decide(identity, &input, now) {
            Ok(decision) => decision,
            Err(refusal) => {
                self.audit_refusal(identity, &input, &refusal, now).await?;
                return Err(refusal.into());
            }
        };

        let request_ttl = to_delta(decision.request_ttl);
        let mut request = RequestRecord {
            id: new_id("r"),
            status: RequestStatus::Pending,
            profile: decision.profile.clone(),
            target: decision.target.label(),
            unix_users: decision.unix_users.clone(),
            principals: decision.principals.clone(),
            duration_secs: decision.duration.as_secs(),
            reason: input.reason,
            ticket: input.ticket,
            requester: person(identity),
            public_key: subject_key.to_openssh().unwrap_or_default(),
            client_address: client.address.to_string(),
            user_agent: client.user_agent.clone(),
            created_at: now,
            expires_at: now + request_ttl,
            required_approvals: decision.required_approvals,
            decision_rules: decision
                .request_rule_ids
                .iter()
                .chain(&decision.auto_approve_rule_ids)
                .cloned()
                .collect(),
            start_at,
            extends_grant: None,
            break_glass: decision.break_glass,
            acknowledged_by: None,
        };

        if !decision.auto_approved {
            self.audit_request(identity, &request, &decision, None, now)
                .await?;
            self.store.insert_request(&request).await?;
            self.notify_pending(&request);
            let message = pending_message(&request, 0);
            let view = request_view(&request, None, Vec::new(), message);
            return Ok(Outcome { view, decision });
        }

        request.status = RequestStatus::Approved;
        // The grant's clock starts now, at approval, on a whole second: certificates count
        // validity in seconds, and the grant must say exactly what its certificate says.
        let grant_start = start_at.unwrap_or(now).trunc_subsecs(0);
        let grant = GrantRecord {
            id: new_id("g"),
            request_id: request.id.clone(),
            profile: request.profile.clone(),
            target: request.target.clone(),
            principals: request.principals.clone(),
            starts_at: grant_start,
            ends_at: grant_start + to_delta(decision.duration),
            holder: person(identity),
            created_at: now,
        };
        let shape = CertificateShape::from_decision(&decision);
        let certificate = self
            .sign_for_grant(&grant, &shape, subject_key, client, now)
            .await?;
        let issuance = Issuance {
            request,
            grant,
            certificate,
        };
        // Recorded before it is stored: a certificate anyone can fetch has its record.
        let issued = Some((&issuance.grant, &issuance.certificate));
        self.audit_request(identity, &issuance.request, &decision, issued, now)
            .await?;
        self.store.record_issuance(&issuance).await?;
        if decision.break_glass {
            self.notify_break_glass(&issuance.request, &issuance.grant);
        }

        let message = if decision.break_glass {
            "break-glass access granted; approvers have been alerted and will review it".to_owned()
        } else if decision.duration_capped {
            "approved; duration cut to the profile's maximum".to_owned()
        } else {
            "approved".to_owned()
        };
        let grant_with_certificate = GrantWithCertificate {
            grant: issuance.grant,
            certificate: Some(issuance.certificate),
            revoked: false,
        };
        let view = request_view(
            &issuance.request,
            Some(&grant_with_certificate),
            Vec::new(),
            message,
        );
        Ok(Outcome { view, decision })
    }

    /// Signs a certificate for `grant` (its principals and window) with the profile's shape,
    /// valid from the grant's start (back-dated) to its end.
    pub(crate) async fn sign_for_grant(
        &self,
        grant: &GrantRecord,
        shape: &CertificateShape,
        subject_key: ssh_key::PublicKey,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<CertificateRecord, ServiceError> {
        let serial = self.next_serial().await?;

        let mut critical_options = BTreeMap::new();
        // PROTOCOL.certkeys: `force-command` replaces whatever the user asks to run, and
        // `source-address` limits the addresses the certificate is accepted from.
        if let Some(command) = &shape.force_command {
            critical_options.insert("force-command".to_owned(), command.clone());
        }
        if shape.pin_source_address {
            let prefix = if client.address.is_ipv4() { 32 } else { 128 };
            critical_options.insert(
                "source-address".to_owned(),
                format!("{}/{prefix}", client.address),
            );
        }

        let valid_after = grant.starts_at - to_delta(self.backdate);
        let order = CertificateOrder {
            subject_key: subject_key.clone(),
            serial,
            key_id: key_id(&grant.holder, &grant.id, serial),
            principals: grant.principals.clone(),
            valid_after: unix_seconds(valid_after),
            valid_before: unix_seconds(grant.ends_at),
            extensions: shape.extensions.clone(),
            critical_options,
        };
        let certificate = self.ca_key.sign(&order, &mut rand::thread_rng())?;
        let certificate_text = certificate
            .to_openssh()
            .map_err(|error| SignError::Library(error.to_string()))?;

        Ok(CertificateRecord {
            serial,
            grant_id: grant.id.clone(),
            key_id: order.key_id,
            principals: order.principals,
            valid_after,
            valid_before: grant.ends_at,
            public_key_fingerprint: subject_key.fingerprint(HashAlg::Sha256).to_string(),
            ca_key_fingerprint: self.ca_key.fingerprint().to_owned(),
            certificate: certificate_text,
            holder: grant.holder.clone(),
            client_address: client.address.to_string(),
            user_agent: client.user_agent.clone(),
            issued_at: now,
        })
    }

    /// Reads one of the caller's requests.
    pub async fn get_request(
        &self,
        identity: &Identity,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequestView, ServiceError> {
        let not_found = || ServiceError::NotFound(clip(request_id));
        let request = self
            .store
            .find_request(request_id)
            .await?
            .ok_or_else(not_found)?;
        // Another person's request is reported as absent, not as forbidden.
        if !owned_by(&request.requester, identity) {
            return Err(not_found());
        }
        self.ensure_grant(&request, now).await?;

        self.view_of(&request, now).await
    }

    /// The requester's view of a stored request, as of `now`.
    pub(crate) async fn view_of(
        &self,
        request: &RequestRecord,
        now: DateTime<Utc>,
    ) -> Result<AccessRequestView, ServiceError> {
        // An approved extension reports the grant it moved, with the re-issued certificate.
        let grant = match &request.extends_grant {
            Some(grant_id) if request.status == RequestStatus::Approved => {
                self.store.find_grant(grant_id).await?
            }
            _ => self.store.find_grant_by_request(&request.id).await?,
        };
        let approvers = self.store.approvers_of(&request.id).await?;
        let status = effective_status(request, now);
        let message = match status {
            RequestStatus::Pending => pending_message(request, approvers.len()),
            RequestStatus::Expired => "not approved in time".to_owned(),
            RequestStatus::Approved if grant.is_none() => {
                "approved; certificate pending".to_owned()
            }
            other => other.as_str().to_owned(),
        };
        let mut view = request_view(request, grant.as_ref(), approvers, message);
        view.status = status;
        Ok(view)
    }

    /// The caller's grants, newest first.
    pub async fn list_grants(&self, identity: &Identity) -> Result<GrantList, ServiceError> {
        let grants = self
            .store
            .grants_of(&identity.issuer, &identity.subject, GRANT_LIST_LIMIT)
            .await?;
        Ok(GrantList {
            grants: grants.iter().map(grant_view).collect(),
        })
    }
}

fn pending_message(request: &RequestRecord, approvals: usize) -> String {
    format!(
        "waiting for approval ({approvals} of {}); request expires at {}",
        request.required_approvals,
        request.expires_at.to_rfc3339()
    )
}

/// A pending request past its deadline counts as expired even before a sweep marks it.
pub(crate) fn effective_status(request: &RequestRecord, now: DateTime<Utc>) -> RequestStatus {
    if request.status == RequestStatus::Pending && now >= request.expires_at {
        RequestStatus::Expired
    } else {
        request.status
    }
}

pub(crate) fn owned_by(owner: &Person, identity: &Identity) -> bool {
    owner.issuer == identity.issuer && owner.subject == identity.subject
}

pub(crate) fn person(identity: &Identity) -> Person {
    Person {
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone(),
        email: identity.email.clone(),
        groups: identity.groups.clone(),
    }
}

/// `alice@example.com/g-…/17`: who, which grant, which certificate, readable in sshd's log.
fn key_id(holder: &Person, grant_id: &str, serial: u64) -> String {
    let name: String = holder
        .email
        .as_deref()
        .unwrap_or(&holder.subject)
        .chars()
        .take(128)
        .map(|character| {
            if character.is_ascii_graphic() {
                character
            } else {
                '?'
            }
        })
        .collect();
    format!("{name}/{grant_id}/{serial}")
}

/// A random identifier with a type prefix: `r-` requests, `g-` grants. 60 bits of randomness in
/// lowercase base32, unambiguous when read aloud.
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..12)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}-{suffix}")
}

pub(crate) fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn unix_seconds(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp()).unwrap_or(0)
}

fn certificate_view(certificate: &CertificateRecord) -> IssuedCertificate {
    IssuedCertificate {
        serial: certificate.serial,
        key_id: certificate.key_id.clone(),
        principals: certificate.principals.clone(),
        valid_after: certificate.valid_after,
        valid_before: certificate.valid_before,
        certificate: certificate.certificate.clone(),
    }
}

pub(crate) fn grant_view(grant: &GrantWithCertificate) -> GrantView {
    GrantView {
        grant_id: grant.grant.id.clone(),
        request_id: grant.grant.request_id.clone(),
        profile: grant.grant.profile.clone(),
        host: grant.grant.target.clone(),
        principals: grant.grant.principals.clone(),
        starts_at: grant.grant.starts_at,
        ends_at: grant.grant.ends_at,
        certificate: grant.certificate.as_ref().map(certificate_view),
        revoked: grant.revoked,
    }
}

pub(crate) fn request_view(
    request: &RequestRecord,
    grant: Option<&GrantWithCertificate>,
    approvals: Vec<String>,
    message: String,
) -> AccessRequestView {
    AccessRequestView {
        request_id: request.id.clone(),
        status: request.status,
        profile: request.profile.clone(),
        host: request.target.clone(),
        principals: request.principals.clone(),
        duration_secs: request.duration_secs,
        reason: request.reason.clone(),
        ticket: request.ticket.clone(),
        requester: request
            .requester
            .email
            .clone()
            .unwrap_or_else(|| request.requester.subject.clone()),
        created_at: request.created_at,
        message,
        required_approvals: request.required_approvals,
        approvals,
        break_glass: request.break_glass,
        acknowledged_by: request.acknowledged_by.clone(),
        extends_grant: request.extends_grant.clone(),
        expires_at: Some(request.expires_at),
        grant: grant.map(grant_view),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let first = new_id("g");
        let second = new_id("g");

        assert!(first.starts_with("g-"));
        assert_eq!(first.len(), 14);
        assert_ne!(first, second);
    }

    #[test]
    fn key_id_names_user_grant_and_serial_in_printable_ascii() {
        let holder = Person {
            issuer: "https://idp".into(),
            subject: "s".into(),
            email: Some("al ice@example.com".into()),
            groups: Vec::new(),
        };

        assert_eq!(key_id(&holder, "g-abc", 17), "al?ice@example.com/g-abc/17");
    }
}
