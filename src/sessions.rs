//! Login sessions on enrolled hosts: what their agents report, recorded in the audit log, and
//! who may see which open session.
//!
//! A host agent reports the SSH sessions opened on its server with the CA's certificates, as a
//! statement signed with its host key. The CA believes the host about what happened there
//! (who logged in as which Unix user, from where, when it ended and why) but not about whose
//! certificate it was: each reported serial must be one the CA issued, with the key ID
//! reported, for a Unix user its principals name. The holder and the grant come from the
//! CA's own records. Reports are idempotent: an agent that did not hear the answer sends the
//! same events again, and the CA records each change once.
//!
//! Every session change is recorded in the audit log before it is stored (`session_started`,
//! `session_ended`, `session_terminated` with its cause). The open sessions answer
//! `GET /v1/sessions`: auditors (the Cedar `audit` action) see every one, approvers those of
//! grants they could approve (the `approve` action on the grant's profile and host), and
//! everyone their own.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use jit_proto::revocation::{HostRefreshRequest, SignedHostRequest};
use jit_proto::sessions::{
    ReportedSession, SessionChange, SessionEvent, SessionList, SessionQuery, SessionReport,
    SessionReportAnswer, SessionView, HOST_SESSIONS_NAMESPACE, MAX_LIVE_SESSIONS,
    MAX_REPORT_EVENTS,
};

use crate::audit::{self, access::may_read_audit, Actor, AuditEvent};
use crate::hosts::{HostError, Hosts};
use crate::identity::Identity;
use crate::policy::ReviewFacts;
use crate::service::{owned_by, Service};
use crate::store::revocation::HostRecord;
use crate::store::sessions::{SessionRecord, SessionStore};
use crate::store::StoreError;

/// Longest session identifier accepted.
const MAX_SESSION_ID: usize = 128;

/// Longest source address or terminal name kept.
const MAX_FIELD: usize = 64;

/// Why a report was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The report is well-formed JSON but not a valid report.
    #[error("{0}")]
    BadRequest(String),
    /// The host could not be authenticated.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not record a change, so it was not stored.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

/// A change the CA recorded or refused, for the boundary to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionNote {
    /// The session.
    pub session_id: String,
    /// The Unix user.
    pub unix_user: String,
    /// The certificate's serial.
    pub serial: u64,
    /// The grant, when the certificate is the CA's.
    pub grant_id: Option<String>,
    /// `started`, `ended`, `gone`, `revoked`, `expired`, or for a refusal why.
    pub what: String,
}

/// What one report did.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    /// The host that signed it.
    pub host: String,
    /// The answer for the agent.
    pub answer: SessionReportAnswer,
    /// Changes recorded now.
    pub recorded: Vec<SessionNote>,
    /// Events refused.
    pub refused: Vec<SessionNote>,
}

/// The sessions service.
pub struct Sessions {
    service: Arc<Service>,
    store: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Builds the service on the CA's core service and the sessions' storage.
    pub fn new(service: Arc<Service>, store: Arc<dyn SessionStore>) -> Sessions {
        Sessions { service, store }
    }

    /// Authenticates a host's signed report through `hosts`, then records its changes in
    /// order and closes the host's open sessions the report no longer lists.
    pub async fn record_report(
        &self,
        hosts: &Hosts,
        signed: &SignedHostRequest,
        now: DateTime<Utc>,
    ) -> Result<ReportOutcome, SessionError> {
        let report: SessionReport = serde_json::from_str(&signed.payload)
            .map_err(|_| SessionError::BadRequest("payload is not a session report".into()))?;
        let header = HostRefreshRequest {
            name: report.name.clone(),
            signed_at: report.signed_at,
            nonce: report.nonce.clone(),
        };
        let host = hosts
            .authenticate_statement(signed, HOST_SESSIONS_NAMESPACE, &header, now)
            .await?;
        check_bounds(&report)?;

        let mut outcome = ReportOutcome {
            host: host.name.clone(),
            answer: SessionReportAnswer {
                recorded: 0,
                known: 0,
                refused: 0,
                closed: 0,
            },
            recorded: Vec::new(),
            refused: Vec::new(),
        };
        let mut settled = BTreeSet::new();
        for event in &report.events {
            settled.insert(event.session.session_id.clone());
            self.apply(&host, event, now, &mut outcome).await?;
        }

        // What the agent no longer lists ended while it was not looking (it restarted, say).
        let live: BTreeSet<&str> = report.live.iter().map(String::as_str).collect();
        for open in self.store.open_sessions(Some(&host.name)).await? {
            if live.contains(open.session_id.as_str()) || settled.contains(&open.session_id) {
                continue;
            }
            if self
                .close(&open, SessionChange::Ended, "gone", now, now)
                .await?
            {
                outcome.answer.closed += 1;
                outcome.recorded.push(note(&open, "gone"));
            }
        }
        Ok(outcome)
    }

    async fn apply(
        &self,
        host: &HostRecord,
        event: &SessionEvent,
        now: DateTime<Utc>,
        outcome: &mut ReportOutcome,
    ) -> Result<(), SessionError> {
        let reported = &event.session;
        let known = self
            .store
            .find_session(&host.name, &reported.session_id)
            .await?;
        let record = match known {
            Some(_) if event.change == SessionChange::Started => {
                outcome.answer.known += 1;
                return Ok(());
            }
            Some(record) => record,
            None => match self.start(host, reported, now).await? {
                Ok(record) => {
                    outcome.answer.recorded += 1;
                    outcome.recorded.push(note(&record, "started"));
                    record
                }
                Err(why) => {
                    outcome.answer.refused += 1;
                    outcome.refused.push(SessionNote {
                        session_id: reported.session_id.clone(),
                        unix_user: reported.unix_user.clone(),
                        serial: reported.serial,
                        grant_id: None,
                        what: why,
                    });
                    return Ok(());
                }
            },
        };

        let reason = match event.change {
            SessionChange::Started => return Ok(()),
            SessionChange::Ended => "ended",
            SessionChange::Terminated { cause } => cause.as_str(),
        };
        if self
            .close(&record, event.change, reason, event.at, now)
            .await?
        {
            outcome.answer.recorded += 1;
            outcome.recorded.push(note(&record, reason));
        } else {
            outcome.answer.known += 1;
        }
        Ok(())
    }

    /// Records and stores a session new to the CA, or says why it is refused.
    async fn start(
        &self,
        host: &HostRecord,
        reported: &ReportedSession,
        now: DateTime<Utc>,
    ) -> Result<Result<SessionRecord, String>, SessionError> {
        let store = self.service.store();
        let Some((certificate, _)) = store.revocable_certificate(reported.serial).await? else {
            return Ok(Err("no certificate of the CA has this serial".into()));
        };
        // PROTOCOL.certkeys: the key ID and serial are the signer's; both must be ours as one.
        if certificate.key_id != reported.key_id {
            return Ok(Err("the key ID is not the one the CA issued".into()));
        }
        // Only a principal that opens this Unix user on this host (by name or by one of its
        // groups) could have let the session in: a host cannot claim others' certificates.
        let unix_user = reported.unix_user.as_str();
        let mut openers = vec![jit_proto::principal_for_host(unix_user, &host.name)];
        openers.extend(
            host.groups
                .iter()
                .map(|group| jit_proto::principal_for_group(unix_user, group)),
        );
        if !certificate
            .principals
            .iter()
            .any(|principal| openers.contains(principal))
        {
            return Ok(Err(format!(
                "the certificate names no principal opening Unix user `{}` on this host",
                jit_proto::clip_for_display(unix_user)
            )));
        }
        let Some(grant) = store.revocable_grant(&certificate.grant_id).await? else {
            return Err(StoreError::Corrupt(format!(
                "certificate {} names a missing grant",
                certificate.serial
            ))
            .into());
        };

        let record = SessionRecord {
            host: host.name.clone(),
            session_id: reported.session_id.clone(),
            unix_user: reported.unix_user.clone(),
            serial: certificate.serial,
            key_id: certificate.key_id,
            grant: grant.grant,
            source_address: reported.source_address.as_deref().map(shown),
            tty: reported.tty.as_deref().map(shown),
            started_at: reported.started_at,
            valid_before: certificate.valid_before,
            reported_at: now,
            ended_at: None,
            end_reason: None,
        };
        let event = audit_event(SessionChange::Started, &record, None, None);
        self.service.auditor().record(event, now).await?;
        self.store.insert_session(&record).await?;
        Ok(Ok(record))
    }

    /// Records and stores the end of an open session; false when it was closed already.
    async fn close(
        &self,
        record: &SessionRecord,
        change: SessionChange,
        reason: &str,
        ended_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, SessionError> {
        if record.ended_at.is_some() {
            return Ok(false);
        }
        let event = audit_event(change, record, Some(reason), Some(ended_at));
        self.service.auditor().record(event, now).await?;
        Ok(self
            .store
            .close_session(&record.host, &record.session_id, ended_at, reason)
            .await?)
    }

    /// The open sessions `viewer` may see, on `query.host` or everywhere, at `now`.
    pub async fn list(
        &self,
        viewer: &Identity,
        query: &SessionQuery,
        now: DateTime<Utc>,
    ) -> Result<SessionList, SessionError> {
        if let Some(host) = &query.host {
            jit_proto::validate_host(host)
                .map_err(|error| SessionError::BadRequest(error.to_string()))?;
        }
        let policy = self.service.policy();
        let sees_all = may_read_audit(policy, viewer, now).allowed;

        let open = self.store.open_sessions(query.host.as_deref()).await?;
        let sessions = open
            .iter()
            .filter(|session| {
                sees_all || owned_by(&session.grant.holder, viewer) || {
                    let grant = &session.grant;
                    let unix_users = [session.unix_user.clone()];
                    let facts = ReviewFacts {
                        profile: &grant.profile,
                        target: &grant.target,
                        unix_users: &unix_users,
                        duration_secs: u64::try_from(
                            (grant.ends_at - grant.starts_at).num_seconds(),
                        )
                        .unwrap_or(0),
                        reason: "",
                        ticket: "",
                    };
                    policy.may_review(viewer, &facts, now).allowed
                }
            })
            .map(view)
            .collect();
        Ok(SessionList { sessions })
    }
}

/// Refuses reports beyond the bounds, or naming sessions or users that cannot be real.
fn check_bounds(report: &SessionReport) -> Result<(), SessionError> {
    if report.events.len() > MAX_REPORT_EVENTS || report.live.len() > MAX_LIVE_SESSIONS {
        return Err(SessionError::BadRequest(format!(
            "a report carries at most {MAX_REPORT_EVENTS} events and {MAX_LIVE_SESSIONS} sessions"
        )));
    }
    let usable_id = |id: &str| {
        !id.is_empty()
            && id.len() <= MAX_SESSION_ID
            && id.chars().all(|character| character.is_ascii_graphic())
    };
    for event in &report.events {
        if !usable_id(&event.session.session_id) {
            return Err(SessionError::BadRequest(
                "a session id must be 1 to 128 printable characters".into(),
            ));
        }
        jit_proto::validate_unix_user(&event.session.unix_user)
            .map_err(|error| SessionError::BadRequest(error.to_string()))?;
    }
    if !report.live.iter().all(|id| usable_id(id)) {
        return Err(SessionError::BadRequest(
            "a session id must be 1 to 128 printable characters".into(),
        ));
    }
    Ok(())
}

fn note(record: &SessionRecord, what: &str) -> SessionNote {
    SessionNote {
        session_id: record.session_id.clone(),
        unix_user: record.unix_user.clone(),
        serial: record.serial,
        grant_id: Some(record.grant.id.clone()),
        what: what.to_owned(),
    }
}

/// Host-supplied text cut to a field's length, control characters replaced.
fn shown(text: &str) -> String {
    jit_proto::clip_for_display(text)
        .chars()
        .take(MAX_FIELD)
        .collect()
}

/// The audit record of a change to `record`.
fn audit_event(
    change: SessionChange,
    record: &SessionRecord,
    reason: Option<&str>,
    ended_at: Option<DateTime<Utc>>,
) -> AuditEvent {
    let data = audit::Session {
        session_id: record.session_id.clone(),
        host: record.host.clone(),
        unix_user: record.unix_user.clone(),
        serial: Some(record.serial),
        grant_id: Some(record.grant.id.clone()),
        source_address: record.source_address.clone(),
        reason: reason.map(str::to_owned),
        terminated_by: None,
        key_id: Some(record.key_id.clone()),
        holder: Some(Actor::from_person(&record.grant.holder)),
        started_at: Some(record.started_at),
        ended_at,
    };
    match change {
        SessionChange::Started => AuditEvent::SessionStarted(data),
        SessionChange::Ended => AuditEvent::SessionEnded(data),
        SessionChange::Terminated { .. } => AuditEvent::SessionTerminated(data),
    }
}

fn view(record: &SessionRecord) -> SessionView {
    let holder = &record.grant.holder;
    SessionView {
        session_id: record.session_id.clone(),
        host: record.host.clone(),
        unix_user: record.unix_user.clone(),
        holder: holder
            .email
            .clone()
            .unwrap_or_else(|| holder.subject.clone()),
        grant_id: record.grant.id.clone(),
        serial: record.serial,
        source_address: record.source_address.clone(),
        tty: record.tty.clone(),
        started_at: record.started_at,
        valid_before: record.valid_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ids: &[&str]) -> SessionReport {
        SessionReport {
            name: "db-1".into(),
            signed_at: 0,
            nonce: "0123456789abcdef".into(),
            events: Vec::new(),
            live: ids.iter().map(|id| (*id).to_owned()).collect(),
        }
    }

    #[test]
    fn reports_naming_impossible_sessions_are_refused() {
        assert!(check_bounds(&report(&["s-1", "s-2"])).is_ok());
        assert!(check_bounds(&report(&[""])).is_err());
        assert!(check_bounds(&report(&["s 1"])).is_err());
        let too_long = "s".repeat(MAX_SESSION_ID + 1);
        assert!(check_bounds(&report(&[too_long.as_str()])).is_err());
        let many: Vec<String> = (0..=MAX_LIVE_SESSIONS).map(|n| format!("s-{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(check_bounds(&report(&many)).is_err());
    }

    #[test]
    fn session_records_are_indexed_under_the_holder_and_the_grant() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let holder = crate::store::Person {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: Vec::new(),
        };
        let record = SessionRecord {
            host: "db-1".into(),
            session_id: "s-1".into(),
            unix_user: "root".into(),
            serial: 17,
            key_id: "alice@example.com/g-abc/17".into(),
            grant: crate::store::GrantRecord {
                id: "g-abc".into(),
                request_id: "r-abc".into(),
                profile: "read-only".into(),
                target: "db-1".into(),
                principals: vec!["root@db-1".into()],
                starts_at: at,
                ends_at: at + chrono::TimeDelta::minutes(30),
                holder,
                created_at: at,
            },
            source_address: None,
            tty: None,
            started_at: at,
            valid_before: at,
            reported_at: at,
            ended_at: None,
            end_reason: None,
        };
        let cause = jit_proto::sessions::TerminationCause::Revoked;

        let event = audit_event(
            SessionChange::Terminated { cause },
            &record,
            Some(cause.as_str()),
            Some(at),
        );

        let index = event.index();
        assert_eq!(index.user.as_deref(), Some("alice@example.com"));
        assert_eq!(index.grant_id.as_deref(), Some("g-abc"));
        assert_eq!(
            (index.host.as_deref(), index.serial),
            (Some("db-1"), Some(17))
        );
        let AuditEvent::SessionTerminated(data) = event else {
            panic!("not a termination: {event:?}");
        };
        assert_eq!(data.reason.as_deref(), Some("revoked"));
    }

    #[test]
    fn host_text_is_cut_and_made_printable() {
        assert_eq!(shown("10.0.0.1:22"), "10.0.0.1:22");
        assert!(!shown("pts/1\n\u{1b}[2J").contains(['\n', '\u{1b}']));
        assert_eq!(shown(&"x".repeat(500)).len(), MAX_FIELD);
    }
}
