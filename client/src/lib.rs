//! `jit`, the engineer's client for the jit-ca just-in-time SSH certificate authority.
//!
//! The client logs in to the identity provider the CA names, asks the CA for short-lived access
//! to one host with a fresh Ed25519 key, installs the certificate it gets beside that key, and
//! runs `ssh` with them. Everything it keeps lives in one private state directory (see
//! [`state`]). The modules go from the bottom up: [`config`] and [`state`] know places,
//! [`tokens`], [`login`] and [`auth`] know identity, [`api`] knows the CA and [`challenge`]
//! reads its step-up demands, [`install`] and [`agent`] know keys, and [`commands`] puts them
//! together for `main`.

pub mod agent;
pub mod api;
pub mod auth;
pub mod challenge;
pub mod commands;
pub mod config;
pub mod install;
pub mod login;
pub mod loopback;
pub mod secret;
pub mod state;
pub mod tokens;

use chrono::{DateTime, Utc};

/// The source of the current time. The command-line edge passes [`Utc::now`]; decisions about
/// validity take the instant as a parameter, so tests use fixed instants.
pub type Clock = fn() -> DateTime<Utc>;

/// Formats an instant for people and scripts alike: RFC 3339, whole seconds, `Z` for UTC.
pub fn format_instant(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An error and its causes on one line, joined by `: `, for messages that wrap another error
/// without making it their `source`.
pub fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Fixed instants for tests, so no test depends on the clock, and fixtures built on them.
#[cfg(test)]
pub(crate) mod fixed_instants {
    use chrono::{DateTime, Utc};

    /// `seconds` after a fixed reference instant (2023-11-14T22:13:20Z); negative is before.
    pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    /// A request as the CA sends it, built from JSON so that fields added later take their
    /// defaults: `r-1`, pending, ada's, for `root@db-1`, made 100 s before the reference
    /// instant, with the fields of `changes` (a JSON object) set over it.
    pub(crate) fn request_view(changes: serde_json::Value) -> jit_proto::AccessRequestView {
        let mut fields = serde_json::json!({
            "request_id": "r-1",
            "status": "pending",
            "profile": "db",
            "host": "db-1",
            "principals": ["root@db-1"],
            "duration_secs": 1800,
            "reason": "fix",
            "ticket": null,
            "requester": "ada@example.com",
            "created_at": at(-100),
            "message": "needs approval",
        });
        if let (Some(fields), Some(changes)) = (fields.as_object_mut(), changes.as_object()) {
            fields.extend(changes.clone());
        }
        serde_json::from_value(fields).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_print_in_utc_to_the_second() {
        let instant = fixed_instants::at(0) + chrono::Duration::milliseconds(123);

        assert_eq!(format_instant(instant), "2023-11-14T22:13:20Z");
    }
}
