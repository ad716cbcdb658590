//! Request bodies as the CA receives them: arbitrary bytes through `serde_json` into
//! `CreateAccessRequest`, the service's own field checks (`service::check_request`), then
//! `Policy::decide` against the example policy in `config/` at a fixed instant.
//!
//! Nothing may panic, and an allowed request must have the shape the profile gives: some
//! principals, only the profile's Unix users, a duration within its cap, and no pattern or
//! separator character that sshd would read as more than one name.

#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use jit_ca::identity::Identity;
use jit_ca::policy::{Policy, Profiles, Rules};
use jit_ca::service::{check_request, CheckedRequest};
use jit_proto::CreateAccessRequest;
use libfuzzer_sys::fuzz_target;

const PROFILES: &str = include_str!("../../config/profiles.toml");
const RULES: &str = include_str!("../../config/policy.cedar");

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy {
        profiles: Profiles::parse(PROFILES, "profiles.toml").expect("example profiles load"),
        rules: Rules::parse(RULES, "policy.cedar").expect("example rules load"),
    })
}

/// 2025-03-04 10:00 UTC, a Tuesday morning.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_741_082_400, 0).expect("a valid instant")
}

/// The requester the first byte picks: each of the example policy's groups, or none.
fn identity(selector: u8) -> Identity {
    let groups: &[&str] = match selector % 4 {
        0 => &["engineers"],
        1 => &["dba", "approvers"],
        2 => &["responders"],
        _ => &[],
    };
    Identity {
        issuer: "https://idp.example.com".into(),
        subject: format!("user-{}", selector % 4),
        email: Some("ada@example.com".into()),
        groups: groups.iter().map(|group| group.to_string()).collect(),
        auth_methods: vec!["pwd".into(), "otp".into()],
        auth_time: Some(now() - chrono::TimeDelta::minutes(5)),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, json)) = bytes.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<CreateAccessRequest>(json) else {
        return;
    };
    let Ok(CheckedRequest { input, .. }) = check_request(body, now()) else {
        return;
    };
    let policy = policy();
    let Ok(decision) = policy.decide(&identity(selector), &input, now()) else {
        return;
    };

    let profile = &policy.profiles.profiles[&decision.profile];
    assert_eq!(decision.profile, input.profile);
    assert!(!decision.principals.is_empty(), "{decision:?}");
    assert_eq!(decision.principals.len(), decision.unix_users.len());
    for unix_user in &decision.unix_users {
        assert!(profile.unix_users.contains(unix_user), "{decision:?}");
    }
    for principal in &decision.principals {
        let separators = [',', '*', '?', '!', ' ', '\n', '\0'];
        assert!(!principal.contains(separators), "{principal:?}");
        assert_eq!(principal.matches('@').count(), 1, "{principal:?}");
    }
    assert!(!decision.duration.is_zero());
    assert!(decision.duration <= profile.max_duration, "{decision:?}");
    assert!(profile.covers(&decision.target), "{decision:?}");
});
