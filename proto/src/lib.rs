//! Wire types shared by the `jit-ca` server, the `jit` client and the `jit-host` agent.
//!
//! This crate exists so that a request body or an error body is defined once: the server
//! decodes exactly what the client encodes. It holds plain data and the few pure rules both
//! sides must agree on (the duration syntax, which host and user names are acceptable, and how a
//! certificate principal is spelled). It has no I/O and no HTTP.

pub mod audit;
pub mod duration;
pub mod names;
pub mod revocation;
pub mod sessions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use duration::{format_duration, parse_duration, DurationError};
pub use names::{
    clip_for_display, principal_for_group, principal_for_host, validate_group, validate_host,
    validate_unix_user, NameError,
};

/// Body of `POST /v1/requests`: an engineer asks for access to one host for one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccessRequest {
    /// Name of the access profile in the CA's `profiles.toml`.
    pub profile: String,
    /// The host (or host group) the access is for.
    pub host: String,
    /// One of the profile's Unix users; `None` asks for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_user: Option<String>,
    /// Requested length of the grant in seconds; `None` takes the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Why the access is needed, in the requester's words.
    #[serde(default)]
    pub reason: String,
    /// Change or incident ticket the task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The public key to certify, in OpenSSH `authorized_keys` format.
    pub public_key: String,
    /// A planned start (`jit request --at`); the grant never starts before its approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
}

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Allowed by policy, waiting for approvers.
    Pending,
    /// Approved; a grant exists.
    Approved,
    /// Refused by an approver.
    Denied,
    /// Withdrawn by the requester.
    Cancelled,
    /// Not approved within the profile's request TTL.
    Expired,
}

impl RequestStatus {
    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Cancelled => "cancelled",
            RequestStatus::Expired => "expired",
        }
    }

    /// Parses the name written by [`RequestStatus::as_str`].
    pub fn parse(name: &str) -> Option<RequestStatus> {
        Some(match name {
            "pending" => RequestStatus::Pending,
            "approved" => RequestStatus::Approved,
            "denied" => RequestStatus::Denied,
            "cancelled" => RequestStatus::Cancelled,
            "expired" => RequestStatus::Expired,
            _ => return None,
        })
    }
}

/// A request as the CA reports it back to its requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequestView {
    /// Identifier of the request (`r-…`).
    pub request_id: String,
    /// Current state.
    pub status: RequestStatus,
    /// Profile asked for.
    pub profile: String,
    /// Host or host group asked for.
    pub host: String,
    /// Certificate principals the grant carries (`user@host`).
    pub principals: Vec<String>,
    /// Requested length of the grant, in seconds, after the profile's cap.
    pub duration_secs: u64,
    /// The requester's reason.
    pub reason: String,
    /// The requester's ticket, if any.
    pub ticket: Option<String>,
    /// Email (or subject when no verified email) of the requester.
    pub requester: String,
    /// When the request was made.
    pub created_at: DateTime<Utc>,
    /// Human-readable explanation of the state (why it is pending, for example).
    pub message: String,
    /// Approvals the request needs.
    #[serde(default)]
    pub required_approvals: u32,
    /// Distinct approvers who approved so far.
    #[serde(default)]
    pub approvals: Vec<String>,
    /// A break-glass activation: granted at once, reviewed afterwards.
    #[serde(default)]
    pub break_glass: bool,
    /// For a break-glass grant: who acknowledged it after the fact, if anyone has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// For an extension: the grant it extends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends_grant: Option<String>,
    /// When a pending request lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The grant, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantView>,
}

/// An approved, time-boxed grant and its current certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    /// Identifier of the grant (`g-…`).
    pub grant_id: String,
    /// Request the grant came from.
    pub request_id: String,
    /// Profile it was granted under.
    pub profile: String,
    /// Host or host group.
    pub host: String,
    /// Certificate principals.
    pub principals: Vec<String>,
    /// Start of the window.
    pub starts_at: DateTime<Utc>,
    /// End of the window; the certificate expires exactly then.
    pub ends_at: DateTime<Utc>,
    /// The latest certificate issued for this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<IssuedCertificate>,
    /// Whether a revocation ended the grant early (the grant itself, its certificate's serial
    /// or its key); a revoked grant opens nothing, whatever its window says.
    #[serde(default)]
    pub revoked: bool,
}

/// An OpenSSH user certificate the CA signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Serial number, unique and increasing across the CA.
    pub serial: u64,
    /// Key ID written into the certificate (shows in sshd's log).
    pub key_id: String,
    /// Principals written into the certificate.
    pub principals: Vec<String>,
    /// `valid_after` of the certificate.
    pub valid_after: DateTime<Utc>,
    /// `valid_before` of the certificate.
    pub valid_before: DateTime<Utc>,
    /// The certificate in OpenSSH one-line format (the content of a `-cert.pub` file).
    pub certificate: String,
}

/// Body of `GET /v1/grants`: the caller's grants, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantList {
    /// The grants.
    pub grants: Vec<GrantView>,
}

/// Body of `POST /v1/requests/{id}/approve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Optional remark kept with the review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of `POST /v1/requests/{id}/deny`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    /// Why the request is refused; required.
    pub reason: String,
}

/// Body of `POST /v1/grants/{id}/extend`: a new request, judged like the first, that moves the
/// grant's end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// How much longer, in seconds.
    pub duration_secs: u64,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Ticket, when the profile wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// Body of `GET /v1/reviews`: what the caller may review now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewList {
    /// Pending requests the caller may approve, and open break-glass reviews.
    pub requests: Vec<AccessRequestView>,
}

/// One step in a request's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (email or subject), or `jit-ca` for the CA itself.
    pub actor: String,
    /// `requested`, `approved`, `denied`, `cancelled`, `expired`, `granted`, `extended`,
    /// `break_glass`, `acknowledged`.
    pub kind: String,
    /// Comment, reason or detail.
    pub detail: String,
}

/// Body of `GET /v1/requests/{id}/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHistory {
    /// The request now.
    pub request: AccessRequestView,
    /// Its steps, oldest first.
    pub events: Vec<HistoryEvent>,
}

/// The error code of a 401 asking the user to log in again with stronger or fresher
/// authentication. The response's `WWW-Authenticate` header carries `acr_values` and `max_age`
/// (RFC 9470, OAuth 2.0 step-up authentication).
pub const STEP_UP_ERROR: &str = "insufficient_user_authentication";

/// Body of `GET /v1/config`: what a client needs to log in to this CA's identity provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// OIDC issuer URL the CA trusts.
    pub issuer: String,
    /// OAuth client id the client logs in as; the CA expects it as the ID token's audience.
    pub client_id: String,
    /// Scopes to ask for (always including `openid`).
    pub scopes: Vec<String>,
}

/// The JSON body of every error response: a stable machine code and a one-line explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code, for example `invalid_token` or `policy_denied`.
    pub error: String,
    /// One line for a human.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_rejects_unknown_fields() {
        let body = r#"{"profile":"p","host":"h","public_key":"k","reason":"r","extra":1}"#;

        let error = serde_json::from_str::<CreateAccessRequest>(body).unwrap_err();

        assert!(
            error.to_string().contains("unknown field `extra`"),
            "{error}"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for status in [
            RequestStatus::Pending,
            RequestStatus::Approved,
            RequestStatus::Denied,
            RequestStatus::Cancelled,
            RequestStatus::Expired,
        ] {
            assert_eq!(RequestStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RequestStatus::parse("granted"), None);
    }
}
