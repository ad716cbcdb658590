//! Wire types for ending access early and for the servers' side: revocations, the KRL, host
//! enrolment and the host agent's signed refresh.
//!
//! The KRL itself travels as OpenSSH's binary format (`GET /v1/krl`), not as JSON; its version
//! is the `ETag`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The SSHSIG namespace a host agent signs its refresh requests in (`ssh-keygen -Y sign -n`).
pub const HOST_SIGNATURE_NAMESPACE: &str = "jit-host@jit-ca";

/// Body of `POST /v1/revocations`: exactly one of `grant_id`, `serial`, `user` or `public_key`,
/// and a reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRevocation {
    /// A grant (`g-…`): every certificate issued for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// One certificate, by serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Every active grant of the person with this verified email (offboarding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A public key in `authorized_keys` format, blocked whatever certificate carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Why; required, kept with the revocation.
    #[serde(default)]
    pub reason: String,
}

/// What a revocation named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// A grant and all its certificates.
    Grant,
    /// One certificate.
    Serial,
    /// Every active grant of one person.
    User,
    /// A public key.
    Key,
}

impl RevocationKind {
    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Grant => "grant",
            RevocationKind::Serial => "serial",
            RevocationKind::User => "user",
            RevocationKind::Key => "key",
        }
    }

    /// Parses the name written by [`RevocationKind::as_str`].
    pub fn parse(name: &str) -> Option<RevocationKind> {
        Some(match name {
            "grant" => RevocationKind::Grant,
            "serial" => RevocationKind::Serial,
            "user" => RevocationKind::User,
            "key" => RevocationKind::Key,
            _ => return None,
        })
    }
}

/// A recorded revocation, as the CA reports it to the one who made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationView {
    /// Identifier (`v-…`).
    pub revocation_id: String,
    /// What was named.
    pub kind: RevocationKind,
    /// The grant id, serial, email or key fingerprint named.
    pub target: String,
    /// The reason given.
    pub reason: String,
    /// Who revoked (email, or subject without one).
    pub actor: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The KRL version that first carries this revocation.
    pub krl_version: u64,
    /// Grants ended by it.
    pub grant_ids: Vec<String>,
    /// Unexpired certificates it put on the KRL.
    pub serials: Vec<u64>,
    /// `SHA256:…` of the revoked public key, for a key revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_fingerprint: Option<String>,
}

/// Body of `POST /v1/hosts/enroll`: a server trades its one-time token for its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEnrollRequest {
    /// The host's name in the CA's inventory.
    pub name: String,
    /// The token `jit-ca host enroll NAME` printed.
    pub token: String,
    /// The host's public key (`authorized_keys` format): the key its certificate certifies and
    /// the key its later refresh requests are signed with.
    pub host_public_key: String,
}

/// What a host needs to let certificate holders in: the answer to enrolment and to refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// The host's name.
    pub name: String,
    /// Trusted user CA keys, one `authorized_keys` line each (`TrustedUserCAKeys`).
    pub ca_keys: Vec<String>,
    /// The current KRL version.
    pub krl_version: u64,
    /// For each Unix user, the certificate principals that open it on this host
    /// (`AuthorizedPrincipalsFile`). A user not listed has no principals file.
    pub principals: BTreeMap<String, Vec<String>>,
    /// The host certificate (one OpenSSH line, `HostCertificate`).
    pub host_certificate: String,
    /// When that certificate expires.
    pub host_certificate_valid_before: DateTime<Utc>,
}

/// The statement a host agent signs to refresh its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRefreshRequest {
    /// The host's name.
    pub name: String,
    /// When it was signed, Unix seconds; the CA refuses statements far from its own clock.
    pub signed_at: i64,
    /// Random text, so that a captured statement cannot be replayed.
    pub nonce: String,
}

/// Body of `POST /v1/hosts/refresh`: a [`HostRefreshRequest`] as JSON text and its SSHSIG
/// signature by the enrolled host key, namespace [`HOST_SIGNATURE_NAMESPACE`] (the armored form
/// `ssh-keygen -Y sign` writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHostRequest {
    /// The signed JSON text, exactly as signed.
    pub payload: String,
    /// `-----BEGIN SSH SIGNATURE-----` …
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_body_rejects_unknown_fields() {
        let body = r#"{"grant_id":"g-1","reason":"done","everything":true}"#;

        let error = serde_json::from_str::<CreateRevocation>(body).unwrap_err();

        assert!(error.to_string().contains("everything"), "{error}");
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [
            RevocationKind::Grant,
            RevocationKind::Serial,
            RevocationKind::User,
            RevocationKind::Key,
        ] {
            assert_eq!(RevocationKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(RevocationKind::parse("everything"), None);
    }
}
