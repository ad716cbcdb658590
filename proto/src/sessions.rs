//! Wire types for login sessions: what a host agent reports about the SSH sessions opened on
//! its server with the CA's certificates, and what `GET /v1/sessions` answers.
//!
//! A report is signed like a refresh: the JSON text of a [`SessionReport`] travels as the
//! payload of a [`crate::revocation::SignedHostRequest`], signed with the enrolled host key in
//! the namespace [`HOST_SESSIONS_NAMESPACE`], so a signature made for one purpose is never
//! accepted for the other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The SSHSIG namespace a host agent signs its session reports in.
pub const HOST_SESSIONS_NAMESPACE: &str = "jit-host-sessions@jit-ca";

/// The most events one report may carry; an agent with more sends several reports.
pub const MAX_REPORT_EVENTS: usize = 256;

/// The most live sessions one report may list.
pub const MAX_LIVE_SESSIONS: usize = 4096;

/// A session as the host agent saw it: who logged in as whom, with which certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedSession {
    /// The agent's identifier, stable for the life of the connection on this host.
    pub session_id: String,
    /// The Unix user logged in.
    pub unix_user: String,
    /// The certificate's serial.
    pub serial: u64,
    /// The certificate's key ID (`email/g-…/serial`).
    pub key_id: String,
    /// Address and port the connection came from, when the agent could read them.
    pub source_address: Option<String>,
    /// The session's terminal (`pts/3`), or `None` for a session without one.
    pub tty: Option<String>,
    /// When the connection was opened, by the host's clock.
    pub started_at: DateTime<Utc>,
    /// The certificate's `valid_before`.
    pub valid_before: DateTime<Utc>,
}

/// Why the agent ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationCause {
    /// The certificate's serial, key ID or key is in the KRL.
    Revoked,
    /// The certificate's `valid_before` passed.
    Expired,
}

impl TerminationCause {
    /// The lowercase name used on the wire and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationCause::Revoked => "revoked",
            TerminationCause::Expired => "expired",
        }
    }
}

/// What happened to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum SessionChange {
    /// The agent found it.
    Started,
    /// It ended on its own (logout, dropped connection).
    Ended,
    /// The agent ended it.
    Terminated {
        /// Why.
        cause: TerminationCause,
    },
}

/// One change to one session. (Unknown fields are not refused here: serde cannot do so
/// beside a flattened field; the session itself refuses them.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// What happened.
    #[serde(flatten)]
    pub change: SessionChange,
    /// When, by the host's clock.
    pub at: DateTime<Utc>,
    /// The session.
    pub session: ReportedSession,
}

/// The statement a host agent signs to report its sessions: the changes since its last
/// accepted report, and every session it watches now. The CA closes the sessions of this host
/// it still holds open that are in neither, so a report after an agent restart settles what
/// ended while nobody watched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionReport {
    /// The host's name.
    pub name: String,
    /// When it was signed, Unix seconds.
    pub signed_at: i64,
    /// Random text, so that a captured report cannot be replayed.
    pub nonce: String,
    /// Changes, oldest first; at most [`MAX_REPORT_EVENTS`].
    pub events: Vec<SessionEvent>,
    /// Identifiers of the sessions open now; at most [`MAX_LIVE_SESSIONS`].
    pub live: Vec<String>,
}

/// The CA's answer to a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReportAnswer {
    /// Events recorded now.
    pub recorded: u32,
    /// Events the CA knew already (a report sent again).
    pub known: u32,
    /// Events refused: the certificate is not one the CA issued as reported.
    pub refused: u32,
    /// Sessions the CA closed because the report no longer lists them.
    pub closed: u32,
}

/// Query of `GET /v1/sessions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only sessions on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// An open session, as `GET /v1/sessions` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The agent's identifier.
    pub session_id: String,
    /// The host.
    pub host: String,
    /// The Unix user logged in.
    pub unix_user: String,
    /// Whose grant it is (email, or subject without one).
    pub holder: String,
    /// The grant.
    pub grant_id: String,
    /// The certificate's serial.
    pub serial: u64,
    /// Where the connection came from, when known.
    pub source_address: Option<String>,
    /// The terminal, when the session has one.
    pub tty: Option<String>,
    /// When the connection was opened (host's clock).
    pub started_at: DateTime<Utc>,
    /// When the certificate expires, and with it the session.
    pub valid_before: DateTime<Utc>,
}

/// Answer of `GET /v1/sessions`: the open sessions the caller may see, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    /// The sessions.
    pub sessions: Vec<SessionView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_change_beside_the_session() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let event = SessionEvent {
            change: SessionChange::Terminated {
                cause: TerminationCause::Revoked,
            },
            at,
            session: ReportedSession {
                session_id: "s-1".into(),
                unix_user: "root".into(),
                serial: 7,
                key_id: "alice@example.com/g-1/7".into(),
                source_address: None,
                tty: None,
                started_at: at,
                valid_before: at,
            },
        };

        let text = serde_json::to_value(&event).unwrap();

        assert_eq!(text["change"], "terminated");
        assert_eq!(text["cause"], "revoked");
        assert_eq!(serde_json::from_value::<SessionEvent>(text).unwrap(), event);
    }
}
