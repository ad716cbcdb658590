//! The events of the paths the service has, built from its records, and the calls that write
//! them. Kept beside the event types so that `service` only says *when* to record.

use chrono::{DateTime, Utc};
use ssh_key::{Certificate, HashAlg, PublicKey};

use super::{
    Actor, AuditEvent, AuditReceipt, CertificateIssued, GrantActivated, PolicyDecision,
    RequestCreated, TokenRejected,
};
use crate::identity::{Identity, TokenError, UnverifiedClaims};
use crate::policy::{Decision, Refusal, RequestInput};
use crate::service::{ClientInfo, Service, ServiceError};
use crate::store::revocation::{RevocationChanges, RevocationRecord};
use crate::store::{CertificateRecord, GrantRecord, Person, RequestRecord};

impl Actor {
    /// The actor behind a stored person. The store keeps no `amr` or `auth_time`, so those
    /// are empty: use [`Actor::of`] when the identity is at hand.
    pub fn from_person(person: &Person) -> Actor {
        Actor {
            iss: person.issuer.clone(),
            sub: person.subject.clone(),
            email: person.email.clone(),
            groups: person.groups.clone(),
            amr: Vec::new(),
            auth_time: None,
        }
    }
}

/// `token_rejected` for a refused bearer token.
pub fn token_rejected(
    error: &TokenError,
    claims: &UnverifiedClaims,
    client: &ClientInfo,
) -> AuditEvent {
    AuditEvent::TokenRejected(TokenRejected {
        reason: error.to_string(),
        code: error.code().to_owned(),
        claimed_iss: claims.issuer.clone(),
        claimed_sub: claims.subject.clone(),
        client_address: client.address.to_string(),
        user_agent: client.user_agent.clone(),
    })
}

fn outcome(decision: &Decision) -> &'static str {
    if decision.break_glass {
        "break_glass"
    } else if decision.auto_approved {
        "auto_approved"
    } else {
        "pending"
    }
}

fn request_created(request: &RequestRecord, identity: &Identity) -> AuditEvent {
    let fingerprint = PublicKey::from_openssh(&request.public_key)
        .map(|key| key.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_default();
    AuditEvent::RequestCreated(RequestCreated {
        request_id: request.id.clone(),
        requester: Actor::of(identity),
        profile: request.profile.clone(),
        host: request.target.clone(),
        unix_users: request.unix_users.clone(),
        principals: request.principals.clone(),
        duration_secs: request.duration_secs,
        reason: request.reason.clone(),
        ticket: request.ticket.clone(),
        public_key_fingerprint: fingerprint,
        client_address: request.client_address.clone(),
        user_agent: request.user_agent.clone(),
        expires_at: request.expires_at,
    })
}

fn policy_decision(
    request: &RequestRecord,
    identity: &Identity,
    decision: &Decision,
) -> AuditEvent {
    AuditEvent::PolicyDecision(PolicyDecision {
        request_id: Some(request.id.clone()),
        requester: Actor::of(identity),
        profile: request.profile.clone(),
        host: request.target.clone(),
        outcome: outcome(decision).to_owned(),
        rule_ids: decision.request_rule_ids.clone(),
        auto_approve_rule_ids: decision.auto_approve_rule_ids.clone(),
        required_approvals: decision.required_approvals,
        refusal: None,
    })
}

/// `grant_activated` for a grant whose window is set.
pub fn grant_activated(grant: &GrantRecord, holder: Actor) -> AuditEvent {
    AuditEvent::GrantActivated(GrantActivated {
        grant_id: grant.id.clone(),
        request_id: grant.request_id.clone(),
        holder,
        profile: grant.profile.clone(),
        host: grant.target.clone(),
        principals: grant.principals.clone(),
        starts_at: grant.starts_at,
        ends_at: grant.ends_at,
    })
}

/// `certificate_issued` for a signed certificate of `grant`. Extensions and critical options
/// are read back from the certificate itself, so the record says what the certificate says.
pub fn certificate_issued(
    certificate: &CertificateRecord,
    grant: &GrantRecord,
    holder: Actor,
) -> AuditEvent {
    let parsed = Certificate::from_openssh(&certificate.certificate).ok();
    let extensions = parsed
        .as_ref()
        .map(|parsed| parsed.extensions().keys().cloned().collect())
        .unwrap_or_default();
    let critical_options = parsed
        .as_ref()
        .map(|parsed| {
            parsed
                .critical_options()
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    AuditEvent::CertificateIssued(CertificateIssued {
        request_id: grant.request_id.clone(),
        grant_id: certificate.grant_id.clone(),
        serial: certificate.serial,
        key_id: certificate.key_id.clone(),
        principals: certificate.principals.clone(),
        valid_after: certificate.valid_after,
        valid_before: certificate.valid_before,
        extensions,
        critical_options,
        public_key_fingerprint: certificate.public_key_fingerprint.clone(),
        ca_key_fingerprint: certificate.ca_key_fingerprint.clone(),
        certificate: certificate.certificate.clone(),
        profile: grant.profile.clone(),
        host: grant.target.clone(),
        holder,
        client_address: certificate.client_address.clone(),
        user_agent: certificate.user_agent.clone(),
    })
}

/// `revocation` records for what one revocation puts on the KRL: each grant it ends, each
/// single certificate (with its grant, found among `certificates`), and a key revoked outright.
pub fn revocations(
    record: &RevocationRecord,
    changes: &RevocationChanges,
    certificates: &[CertificateRecord],
    revoked_by: Actor,
) -> Vec<AuditEvent> {
    let event = |grant_id: Option<String>, serial: Option<u64>, key: Option<String>| {
        let certificate =
            serial.and_then(|serial| certificates.iter().find(|known| known.serial == serial));
        AuditEvent::Revocation(super::Revocation {
            revocation_id: record.id.clone(),
            kind: record.kind.as_str().to_owned(),
            serial,
            grant_id: grant_id.or_else(|| certificate.map(|known| known.grant_id.clone())),
            key_id: certificate.map(|known| known.key_id.clone()),
            public_key_fingerprint: key,
            revoked_by: Some(revoked_by.clone()),
            reason: record.reason.clone(),
        })
    };
    let grants = changes
        .grant_ids
        .iter()
        .map(|grant_id| event(Some(grant_id.clone()), None, None));
    let serials = changes
        .serials
        .iter()
        .map(|serial| event(None, Some(*serial), None));
    let key = changes
        .key
        .iter()
        .map(|key| event(None, None, Some(key.fingerprint.clone())));
    grants.chain(serials).chain(key).collect()
}

impl Service {
    /// Records a policy refusal (denied requests are not stored, but their decision is).
    pub(crate) async fn audit_refusal(
        &self,
        identity: &Identity,
        input: &RequestInput,
        refusal: &Refusal,
        now: DateTime<Utc>,
    ) -> Result<AuditReceipt, ServiceError> {
        let rule_ids = match refusal {
            Refusal::NotPermitted { rule_ids, .. } => rule_ids.clone(),
            _ => Vec::new(),
        };
        let event = AuditEvent::PolicyDecision(PolicyDecision {
            request_id: None,
            requester: Actor::of(identity),
            profile: crate::service::clip(&input.profile),
            host: crate::service::clip(&input.target),
            outcome: "denied".to_owned(),
            rule_ids,
            auto_approve_rule_ids: Vec::new(),
            required_approvals: 0,
            refusal: Some(refusal.to_string()),
        });
        Ok(self.audit.record(event, now).await?)
    }

    /// Records a certificate signed for a grant that an approval opened (`activated`) or
    /// extended, before it is stored.
    pub(crate) async fn audit_issuance(
        &self,
        grant: &GrantRecord,
        certificate: &CertificateRecord,
        activated: bool,
        now: DateTime<Utc>,
    ) -> Result<AuditReceipt, ServiceError> {
        let holder = Actor::from_person(&grant.holder);
        let mut events = Vec::with_capacity(2);
        if activated {
            events.push(grant_activated(grant, holder.clone()));
        }
        events.push(certificate_issued(certificate, grant, holder));
        Ok(self.audit.record_all(events, now).await?)
    }

    /// Records a review (`approve`, `deny` or `acknowledge`) of `request` and how many
    /// approvals it has now.
    pub(crate) async fn audit_review(
        &self,
        request: &RequestRecord,
        reviewer: &Identity,
        verdict: &str,
        comment: &str,
        approvals: usize,
        now: DateTime<Utc>,
    ) -> Result<AuditReceipt, ServiceError> {
        let event = AuditEvent::Review(super::Review {
            request_id: request.id.clone(),
            grant_id: None,
            reviewer: Actor::of(reviewer),
            verdict: verdict.to_owned(),
            comment: Some(comment.to_owned()).filter(|comment| !comment.is_empty()),
            approvals: u32::try_from(approvals).unwrap_or(u32::MAX),
            required_approvals: request.required_approvals,
        });
        Ok(self.audit.record(event, now).await?)
    }

    /// Records a new request and its decision and, when it was granted at once, the grant and
    /// its certificate: one commit, before anything of it is stored or returned.
    pub(crate) async fn audit_request(
        &self,
        identity: &Identity,
        request: &RequestRecord,
        decision: &Decision,
        issued: Option<(&GrantRecord, &CertificateRecord)>,
        now: DateTime<Utc>,
    ) -> Result<AuditReceipt, ServiceError> {
        let mut events = vec![
            request_created(request, identity),
            policy_decision(request, identity, decision),
        ];
        if let Some((grant, certificate)) = issued {
            if decision.break_glass {
                events.push(AuditEvent::BreakGlass(super::BreakGlass {
                    request_id: request.id.clone(),
                    grant_id: Some(grant.id.clone()),
                    requester: Actor::of(identity),
                    profile: request.profile.clone(),
                    host: request.target.clone(),
                    reason: request.reason.clone(),
                    ticket: request.ticket.clone(),
                }));
            }
            events.push(grant_activated(grant, Actor::of(identity)));
            events.push(certificate_issued(certificate, grant, Actor::of(identity)));
        }
        Ok(self.audit.record_all(events, now).await?)
    }
}
