use std::collections::BTreeSet;

use rand::rngs::OsRng;
use ssh_key::{Algorithm, PrivateKey};

use super::*;
use crate::krl::parse;
use crate::policy::rules::SCHEMA;
use crate::policy::{Profiles, Rules};
use crate::store::revocation::RevokedCertificate;
use crate::store::{GrantRecord, Person};

const PROFILES: &str = r#"
    [hosts]
    db-1 = { groups = ["db-prod"] }
    web-1 = { groups = ["web"] }

    [profiles.read-only]
    unix_users = ["readonly"]
    any_host = true
    default_duration = "30m"
    max_duration = "2h"

    [profiles.db-root]
    unix_users = ["root"]
    host_groups = ["db-prod"]
    default_duration = "15m"
    max_duration = "1h"
"#;

const RULES: &str = r#"
    @id("holders-revoke-their-own")
    permit (principal, action == Action::"revoke", resource) when { context.own };

    @id("dba-revoke-db-prod")
    permit (principal in Group::"dba", action == Action::"revoke", resource in HostGroup::"db-prod");

    @id("approvers-revoke-db-root")
    permit (principal in Group::"approvers", action == Action::"revoke", resource is Grant)
    when { resource.profile == "db-root" };

    @id("security-revokes-anything")
    permit (principal in Group::"security", action == Action::"revoke", resource);

    @id("no-long-root")
    forbid (principal, action, resource)
    when { context.profile == "db-root" && context.duration_secs > 3600 };
"#;

fn policy() -> Policy {
    Policy {
        profiles: Profiles::parse(PROFILES, "profiles.toml").unwrap(),
        rules: Rules::parse(RULES, "policy.cedar").unwrap(),
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

fn identity(subject: &str, groups: &[&str]) -> Identity {
    Identity {
        issuer: "https://idp".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        groups: groups.iter().map(|group| group.to_string()).collect(),
        auth_methods: Vec::new(),
        auth_time: None,
    }
}

fn holder(subject: &str) -> Person {
    Person {
        issuer: "https://idp".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        groups: Vec::new(),
    }
}

fn grant(id: &str, profile: &str, target: &str, owner: &str) -> RevocableGrant {
    RevocableGrant {
        grant: GrantRecord {
            id: id.into(),
            request_id: format!("r-{id}"),
            profile: profile.into(),
            target: target.into(),
            principals: vec![format!("root@{target}")],
            starts_at: at(0),
            ends_at: at(900),
            holder: holder(owner),
            created_at: at(0),
        },
        revoked: false,
        ticket: String::new(),
    }
}

fn allowed(
    actor: &Identity,
    kind: RevocationKind,
    resource: &RevokeResource<'_>,
) -> (bool, Vec<String>) {
    let verdict = decide_revoke(&policy(), actor, kind, resource, "done early", at(60));
    assert!(verdict.errors.is_empty(), "{:?}", verdict.errors);
    (verdict.allowed, verdict.rule_ids)
}

#[test]
fn holders_revoke_their_own_grants_and_strangers_nothing() {
    let alices = grant("g-1", "read-only", "web-1", "alice");

    let by_alice = allowed(
        &identity("alice", &[]),
        RevocationKind::Grant,
        &RevokeResource::Grant(&alices),
    );
    let by_mallory = allowed(
        &identity("mallory", &[]),
        RevocationKind::Grant,
        &RevokeResource::Grant(&alices),
    );

    assert_eq!(
        by_alice,
        (true, vec!["holders-revoke-their-own".to_owned()])
    );
    assert_eq!(by_mallory, (false, Vec::new()));
}

#[test]
fn place_and_profile_rules_reach_other_peoples_grants() {
    let db_root = grant("g-1", "db-root", "db-1", "alice");
    let group_grant = grant("g-2", "db-root", "group:db-prod", "alice");
    let web = grant("g-3", "read-only", "web-1", "alice");
    let dba = identity("bob", &["dba"]);
    let approver = identity("carol", &["approvers"]);

    assert!(
        allowed(
            &dba,
            RevocationKind::Grant,
            &RevokeResource::Grant(&db_root)
        )
        .0
    );
    assert!(
        allowed(
            &dba,
            RevocationKind::User,
            &RevokeResource::Grant(&group_grant)
        )
        .0
    );
    assert!(!allowed(&dba, RevocationKind::Grant, &RevokeResource::Grant(&web)).0);
    assert!(
        allowed(
            &approver,
            RevocationKind::Serial,
            &RevokeResource::Grant(&db_root)
        )
        .0
    );
    assert!(
        !allowed(
            &approver,
            RevocationKind::Grant,
            &RevokeResource::Grant(&web)
        )
        .0
    );
}

#[test]
fn keys_are_revoked_by_their_only_holder_or_by_admins() {
    let own = RevokeResource::Key {
        fingerprint: "SHA256:abc",
        own: true,
    };
    let foreign = RevokeResource::Key {
        fingerprint: "SHA256:abc",
        own: false,
    };

    assert!(allowed(&identity("alice", &[]), RevocationKind::Key, &own).0);
    assert!(!allowed(&identity("bob", &["dba"]), RevocationKind::Key, &foreign).0);
    assert!(
        allowed(
            &identity("erin", &["security"]),
            RevocationKind::Key,
            &foreign
        )
        .0
    );
}

#[test]
fn forbids_without_an_action_apply_to_revocations_too() {
    let mut long_root = grant("g-1", "db-root", "db-1", "alice");
    long_root.grant.ends_at = at(7200);

    let verdict = decide_revoke(
        &policy(),
        &identity("erin", &["security"]),
        RevocationKind::Grant,
        &RevokeResource::Grant(&long_root),
        "done",
        at(60),
    );

    assert!(!verdict.allowed);
    assert_eq!(verdict.rule_ids, vec!["no-long-root"]);
}

/// The attribute names of one record type of the schema.
fn schema_type_attributes(type_name: &str) -> BTreeSet<String> {
    let start = SCHEMA
        .find(&format!("type {type_name} = {{"))
        .unwrap_or_else(|| panic!("no type {type_name} in the schema"));
    let body = &SCHEMA[start..];
    let end = body.find("};").unwrap();
    body[..end]
        .lines()
        .skip(1)
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

#[test]
fn revoke_context_holds_every_request_context_attribute() {
    let request = schema_type_attributes("RequestContext");
    let revoke = schema_type_attributes("RevokeContext");

    // A rule that names no action is checked against both; a missing attribute would stop
    // the CA from loading it.
    assert!(!request.is_empty());
    assert!(
        revoke.is_superset(&request),
        "missing: {:?}",
        request.difference(&revoke)
    );
}

fn ca_key() -> PublicKey {
    PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .unwrap()
        .public_key()
        .clone()
}

fn revoked(serial: u64, ca: &PublicKey, valid_before: DateTime<Utc>) -> RevokedCertificate {
    RevokedCertificate {
        serial,
        ca_key_fingerprint: ca.fingerprint(HashAlg::Sha256).to_string(),
        valid_before,
    }
}

#[test]
fn the_krl_lists_unexpired_certificates_per_trusted_ca_and_keys() {
    let signing = ca_key();
    let previous = ca_key();
    let forgotten = ca_key();
    let trusted = TrustedKeys::new(&signing, &[previous.to_openssh().unwrap()]).unwrap();
    let blocked_key = ca_key();
    let contents = KrlContents {
        version: 7,
        certificates: vec![
            revoked(10, &signing, at(600)),
            revoked(11, &signing, at(0)),
            revoked(12, &previous, at(300)),
            revoked(13, &forgotten, at(600)),
        ],
        key_fingerprints: vec![blocked_key.fingerprint(HashAlg::Sha256).to_string()],
    };

    let document = build_krl(&contents, &trusted, at(0)).unwrap();
    let krl = parse(&document.bytes).unwrap();

    assert_eq!(document.version, 7);
    assert_eq!(krl.version(), 7);
    assert_eq!(krl.generated_at(), 1_800_000_000);
    assert!(krl.is_certificate_revoked(&signing, 10, "any"));
    assert!(
        !krl.is_certificate_revoked(&signing, 11, "any"),
        "expired at now"
    );
    assert!(krl.is_certificate_revoked(&previous, 12, "any"));
    assert!(
        !krl.is_certificate_revoked(&signing, 12, "any"),
        "serials are per CA"
    );
    assert!(
        !krl.is_certificate_revoked(&forgotten, 13, "any"),
        "untrusted CA left out"
    );
    assert!(krl.is_key_revoked(&blocked_key));
    assert!(!krl.is_key_revoked(&signing));
    assert_eq!(document.shrinks_at, Some(at(300)));
}

#[test]
fn an_empty_krl_still_carries_its_version() {
    let signing = ca_key();
    let trusted = TrustedKeys::new(&signing, &[]).unwrap();
    let contents = KrlContents {
        version: 1,
        certificates: Vec::new(),
        key_fingerprints: Vec::new(),
    };

    let document = build_krl(&contents, &trusted, at(0)).unwrap();
    let krl = parse(&document.bytes).unwrap();

    assert!(krl.is_empty());
    assert_eq!(krl.version(), 1);
    assert_eq!(document.shrinks_at, None);
}

#[test]
fn previous_keys_must_be_plain_keys() {
    let signing = ca_key();
    let signing_line = signing.to_openssh().unwrap();

    let repeated = TrustedKeys::new(&signing, &[signing_line]).unwrap();
    let garbage = TrustedKeys::new(&signing, &["ssh-ed25519 nonsense".into()]);
    let certificate = TrustedKeys::new(&signing, &["ssh-ed25519-cert-v01@openssh.com AAAA".into()]);

    assert_eq!(repeated.keys().count(), 1);
    assert!(matches!(
        garbage,
        Err(RevocationError::BadTrustedKey { index: 1, .. })
    ));
    assert!(certificate.unwrap_err().to_string().contains("certificate"));
}

fn certificate(serial: u64, grant_id: &str, valid_before: DateTime<Utc>) -> CertificateRecord {
    CertificateRecord {
        serial,
        grant_id: grant_id.into(),
        key_id: format!("alice/{grant_id}/{serial}"),
        principals: vec!["root@db-1".into()],
        valid_after: at(-30),
        valid_before,
        public_key_fingerprint: "SHA256:k".into(),
        ca_key_fingerprint: "SHA256:ca".into(),
        certificate: String::new(),
        holder: holder("alice"),
        client_address: "127.0.0.1".into(),
        user_agent: None,
        issued_at: at(0),
    }
}

fn resolved(
    kind: RevocationKind,
    grants: Vec<RevocableGrant>,
    certificates: Vec<CertificateRecord>,
) -> Resolved {
    Resolved {
        kind,
        target: "g-1".into(),
        grants,
        certificates,
        key: None,
    }
}

#[test]
fn revocations_that_change_nothing_are_refused() {
    let mut already = grant("g-1", "read-only", "db-1", "alice");
    already.revoked = true;
    let live = grant("g-1", "read-only", "db-1", "alice");

    let twice = changes_for(
        &resolved(RevocationKind::Grant, vec![already], Vec::new()),
        at(0),
    );
    let ended = changes_for(
        &resolved(
            RevocationKind::Grant,
            vec![live.clone()],
            vec![certificate(5, "g-1", at(900))],
        ),
        at(900),
    );
    let expired_serial = changes_for(
        &resolved(
            RevocationKind::Serial,
            vec![live.clone()],
            vec![certificate(5, "g-1", at(900))],
        ),
        at(900),
    );
    let good = changes_for(
        &resolved(
            RevocationKind::Grant,
            vec![live],
            vec![certificate(5, "g-1", at(900))],
        ),
        at(10),
    )
    .unwrap();

    assert!(matches!(twice, Err(RevocationError::NothingToRevoke(_))));
    assert!(matches!(ended, Err(RevocationError::NothingToRevoke(_))));
    assert!(matches!(
        expired_serial,
        Err(RevocationError::NothingToRevoke(_))
    ));
    assert_eq!(good.grant_ids, ["g-1"]);
    assert!(good.serials.is_empty());
}

#[test]
fn reasons_are_required_and_plain() {
    assert_eq!(check_reason("  task done \n").unwrap(), "task done");
    assert!(check_reason("   ").is_err());
    assert!(check_reason("line\nbreak").is_err());
    assert!(check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
}
