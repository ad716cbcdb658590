//! Servers' side: enrolment with a one-time token, host certificates, the principals files a
//! host needs, and the host agent's signed refresh.
//!
//! An administrator makes a token with `jit-ca host enroll NAME`; only its SHA-256 is stored.
//! The host agent trades it, once, for a host certificate and its configuration: the trusted
//! user CA keys, the KRL version and, for each Unix user, the principals that open it on this
//! host. Afterwards the agent authenticates with its host key: each refresh is a short JSON
//! statement (name, time, nonce) signed with SSHSIG, which the CA checks against the key
//! recorded at enrolment, within a few minutes of its own clock, and once. No shared secret
//! exists to leak.
//!
//! Principals come from `profiles.toml`: for every profile that covers the host, each of its
//! Unix users is opened by `user@NAME` and by `user@group:G` for each of the host's groups the
//! profile covers — exactly the principals requests for this host or its groups receive.
//!
//! Limitation: seen nonces are kept in memory, so right after a restart a refresh captured in
//! the previous few minutes could be answered once more; it yields only what the host may know
//! anyway (public keys, principals, its own certificate).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use jit_proto::revocation::{
    HostConfig, HostEnrollRequest, HostRefreshRequest, SignedHostRequest, HOST_SIGNATURE_NAMESPACE,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::policy::profiles::Host;
use crate::policy::{Profiles, Target};
use crate::revocation::Revocations;
use crate::service::{to_delta, Service};
use crate::signer::{parse_subject_key, HostCertificateOrder, SignError, SubjectKeyError};
use crate::store::revocation::{EnrollmentToken, HostCertificateRecord, HostRecord};
use crate::store::{Store, StoreError};

/// How long a host certificate is valid.
pub const HOST_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A refresh renews the host certificate once less than this is left.
pub const HOST_CERTIFICATE_RENEWAL: Duration = Duration::from_secs(10 * 24 * 3600);

/// How far before its signing a host certificate's validity starts, for clocks behind ours.
const HOST_CERTIFICATE_BACKDATE: Duration = Duration::from_secs(300);

/// How far a signed refresh's time may be from the CA's clock.
pub const SIGNATURE_WINDOW: Duration = Duration::from_secs(300);

/// How long an enrolment token lasts when none is asked for.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The longest an enrolment token may last.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Nonces remembered at most; beyond it refreshes are refused until old ones lapse.
const MAX_REMEMBERED_NONCES: usize = 100_000;

/// Tokens start with this, so a leaked one is recognisable in a log or a paste.
const TOKEN_PREFIX: &str = "jit-enroll-";

/// Why an enrolment or a refresh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The host is not in the inventory, so the CA cannot place it.
    #[error("host `{0}` is not in the inventory ([hosts] of profiles.toml)")]
    NotInInventory(String),
    /// An enrolment asked for a group the inventory does not give the host.
    #[error("host `{host}` is not in group `{group}` in the inventory")]
    GroupNotInInventory {
        /// The host.
        host: String,
        /// The group asked for.
        group: String,
    },
    /// The body is well-formed JSON but not valid.
    #[error("{0}")]
    BadRequest(String),
    /// The host key is unacceptable.
    #[error(transparent)]
    InvalidKey(#[from] SubjectKeyError),
    /// The enrolment token is unknown, used, expired or for another host. Which of these is
    /// not said to the caller.
    #[error("enrolment token refused: unknown, expired, already used or for another host")]
    TokenRefused,
    /// A refresh that is not signed by the enrolled host key, is stale or replayed.
    #[error("host request refused: {0}")]
    Unauthenticated(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signer refused (a bug if it happens: orders are built here).
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// The host service: enrolments and refreshes.
pub struct Hosts {
    service: Arc<Service>,
    revocations: Arc<Revocations>,
    nonces: std::sync::Mutex<HashMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Hosts").finish_non_exhaustive()
    }
}

impl Hosts {
    /// Builds the service on the CA's core service and its revocations (for the trusted keys
    /// and the KRL version).
    pub fn new(service: Arc<Service>, revocations: Arc<Revocations>) -> Hosts {
        Hosts {
            service,
            revocations,
            nonces: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn store(&self) -> &dyn Store {
        self.service.store()
    }

    /// Trades a one-time token for a host certificate and the host's configuration. The token
    /// is consumed in the transaction that records the host, so it works once.
    pub async fn enroll(
        &self,
        body: HostEnrollRequest,
        now: DateTime<Utc>,
    ) -> Result<HostConfig, HostError> {
        jit_proto::validate_host(&body.name)
            .map_err(|error| HostError::BadRequest(error.to_string()))?;
        let host_key = parse_subject_key(&body.host_public_key)?;
        let token_hash = token_sha256(body.token.trim());

        let token = self
            .store()
            .find_enrollment_token(&body.name, &token_hash, now)
            .await?
            .ok_or(HostError::TokenRefused)?;

        let host = HostRecord {
            name: body.name.clone(),
            public_key: host_key.to_openssh().unwrap_or_default(),
            public_key_fingerprint: host_key.fingerprint(HashAlg::Sha256).to_string(),
            groups: token.groups,
            enrolled_at: now,
        };
        let certificate = self.sign_host_certificate(&host, &host_key, now).await?;
        let enrolled = self
            .store()
            .enroll_host(&token_hash, now, &host, &certificate)
            .await?;
        if !enrolled {
            return Err(HostError::TokenRefused);
        }

        self.config_for(&host, &certificate, now).await
    }

    /// Answers a host agent's signed refresh with its current configuration, renewing its
    /// certificate when it is due (less than [`HOST_CERTIFICATE_RENEWAL`] left, or signed by a
    /// key that no longer signs).
    pub async fn refresh(
        &self,
        body: &SignedHostRequest,
        now: DateTime<Utc>,
    ) -> Result<HostConfig, HostError> {
        let claimed: HostRefreshRequest = serde_json::from_str(&body.payload)
            .map_err(|_| HostError::BadRequest("payload is not a refresh request".into()))?;
        let (host, host_key) = self.enrolled(&claimed.name).await?;

        let request = verify_refresh(body, &host_key, now)?;
        self.remember_nonce(&request, now)?;

        let latest = self.store().latest_host_certificate(&host.name).await?;
        let certificate = match latest {
            Some(certificate) if !self.renewal_due(&certificate, &host, now) => certificate,
            _ => {
                let renewed = self.sign_host_certificate(&host, &host_key, now).await?;
                self.store().record_host_certificate(&renewed).await?;
                renewed
            }
        };
        self.config_for(&host, &certificate, now).await
    }

    /// Authenticates a statement other than a refresh (a session report, say): `signed` must
    /// be signed in `namespace` by the enrolled key of host `header.name`, within
    /// [`SIGNATURE_WINDOW`] of `now`, with a nonce not seen before. The caller parses its own
    /// payload and hands over the name, time and nonce it claims. Returns the host.
    pub async fn authenticate_statement(
        &self,
        signed: &SignedHostRequest,
        namespace: &str,
        header: &HostRefreshRequest,
        now: DateTime<Utc>,
    ) -> Result<HostRecord, HostError> {
        let (host, host_key) = self.enrolled(&header.name).await?;
        verify_signature(signed, &host_key, namespace)?;
        check_freshness(header, now)?;
        self.remember_nonce(header, now)?;
        Ok(host)
    }

    /// The enrolled host `name` and the key it signs with.
    async fn enrolled(&self, name: &str) -> Result<(HostRecord, PublicKey), HostError> {
        let host = self
            .store()
            .find_host(name)
            .await?
            .ok_or(HostError::Unauthenticated("host not enrolled"))?;
        let host_key = PublicKey::from_openssh(&host.public_key)
            .map_err(|_| StoreError::Corrupt(format!("host key of `{}`", host.name)))?;
        Ok((host, host_key))
    }

    fn renewal_due(
        &self,
        certificate: &HostCertificateRecord,
        host: &HostRecord,
        now: DateTime<Utc>,
    ) -> bool {
        certificate.valid_before - now < to_delta(HOST_CERTIFICATE_RENEWAL)
            || certificate.ca_key_fingerprint != self.revocations.trusted().signing_fingerprint()
            || certificate.public_key_fingerprint != host.public_key_fingerprint
            || certificate.principals != host_principals(&host.name)
    }

    /// Remembers the nonce until the statement could no longer pass the time check, refusing
    /// one seen before.
    fn remember_nonce(
        &self,
        request: &HostRefreshRequest,
        now: DateTime<Utc>,
    ) -> Result<(), HostError> {
        let mut nonces = self
            .nonces
            .lock()
            .map_err(|_| HostError::Unauthenticated("replay check unavailable"))?;
        nonces.retain(|_, forget_at| *forget_at > now);
        if nonces.len() >= MAX_REMEMBERED_NONCES {
            return Err(HostError::Unauthenticated(
                "too many refreshes; retry later",
            ));
        }
        let key = format!("{}/{}", request.name, request.nonce);
        if nonces.contains_key(&key) {
            return Err(HostError::Unauthenticated("replayed request"));
        }
        nonces.insert(key, now + to_delta(SIGNATURE_WINDOW) * 2);
        Ok(())
    }

    async fn sign_host_certificate(
        &self,
        host: &HostRecord,
        host_key: &PublicKey,
        now: DateTime<Utc>,
    ) -> Result<HostCertificateRecord, HostError> {
        let serial = self.store().reserve_serials(1).await?;
        let valid_after = now - to_delta(HOST_CERTIFICATE_BACKDATE);
        let valid_before = now + to_delta(HOST_CERTIFICATE_VALIDITY);
        let order = HostCertificateOrder {
            host_key: host_key.clone(),
            serial,
            key_id: format!("host:{}/{serial}", host.name),
            principals: host_principals(&host.name),
            valid_after: unix_seconds(valid_after),
            valid_before: unix_seconds(valid_before),
        };
        let ca_key = self.service.ca_key();
        let certificate = ca_key.sign_host(&order, &mut rand::thread_rng())?;
        let text = certificate
            .to_openssh()
            .map_err(|error| SignError::Library(error.to_string()))?;

        Ok(HostCertificateRecord {
            serial,
            host_name: host.name.clone(),
            key_id: order.key_id,
            principals: order.principals,
            valid_after: timestamp(order.valid_after),
            valid_before: timestamp(order.valid_before),
            public_key_fingerprint: host.public_key_fingerprint.clone(),
            ca_key_fingerprint: ca_key.fingerprint().to_owned(),
            certificate: text,
            issued_at: now,
        })
    }

    async fn config_for(
        &self,
        host: &HostRecord,
        certificate: &HostCertificateRecord,
        now: DateTime<Utc>,
    ) -> Result<HostConfig, HostError> {
        let profiles = &self.service.policy().profiles;
        Ok(HostConfig {
            name: host.name.clone(),
            ca_keys: self.revocations.published_keys(now).await?,
            krl_version: self.store().krl_version().await?,
            principals: principals_for_host(profiles, &host.name, &host.groups),
            host_certificate: certificate.certificate.clone(),
            host_certificate_valid_before: certificate.valid_before,
        })
    }
}

/// Makes a one-time enrolment token for `name`, valid for `ttl` from `now`, and stores its
/// hash. The host is enrolled in `groups` (its inventory groups when `None`, or a subset of
/// them). Refuses a host missing from the inventory, a group it is not in, and a TTL beyond
/// [`MAX_TOKEN_TTL`]. Returns the token, which exists nowhere else.
pub async fn create_enrollment_token(
    store: &dyn Store,
    profiles: &Profiles,
    name: &str,
    groups: Option<&[String]>,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<(String, EnrollmentToken), HostError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(HostError::BadRequest(
            "the token's lifetime must be between 1 second and 7 days".into(),
        ));
    }
    let groups = enrolled_groups(profiles, name, groups)?;

    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let record = EnrollmentToken {
        token_sha256: token_sha256(&token),
        host_name: name.to_owned(),
        groups,
        created_at: now,
        expires_at: now + to_delta(ttl),
    };
    store.insert_enrollment_token(&record).await?;
    Ok((token, record))
}

/// The groups a host is enrolled in: its inventory groups, or the `requested` subset of them.
pub fn enrolled_groups(
    profiles: &Profiles,
    name: &str,
    requested: Option<&[String]>,
) -> Result<Vec<String>, HostError> {
    let host = profiles
        .hosts
        .get(name)
        .ok_or_else(|| HostError::NotInInventory(name.to_owned()))?;
    let Some(requested) = requested else {
        return Ok(host.groups.iter().cloned().collect());
    };
    for group in requested {
        if !host.groups.contains(group) {
            return Err(HostError::GroupNotInInventory {
                host: name.to_owned(),
                group: group.clone(),
            });
        }
    }
    let unique: BTreeSet<String> = requested.iter().cloned().collect();
    Ok(unique.into_iter().collect())
}

/// For each Unix user, the principals that open it on host `name` enrolled in
/// `enrolled_groups`, as the profiles stand. Groups the inventory no longer gives the host
/// count for nothing, and a host the inventory no longer lists gets no principals at all.
pub fn principals_for_host(
    profiles: &Profiles,
    name: &str,
    enrolled_groups: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Some(inventory_host) = profiles.hosts.get(name) else {
        return BTreeMap::new();
    };
    let groups: BTreeSet<String> = enrolled_groups
        .iter()
        .filter(|group| inventory_host.groups.contains(*group))
        .cloned()
        .collect();
    let host = Target::Host(Host {
        name: name.to_owned(),
        groups: groups.clone(),
    });

    for profile in profiles.profiles.values() {
        if !profile.covers(&host) {
            continue;
        }
        let covered_groups: Vec<&String> = groups
            .iter()
            .filter(|group| profile.covers(&Target::Group((*group).clone())))
            .collect();
        for unix_user in &profile.unix_users {
            let principals = by_user.entry(unix_user.clone()).or_default();
            principals.insert(jit_proto::principal_for_host(unix_user, name));
            for group in &covered_groups {
                principals.insert(jit_proto::principal_for_group(unix_user, group));
            }
        }
    }

    by_user
        .into_iter()
        .map(|(unix_user, principals)| (unix_user, principals.into_iter().collect()))
        .collect()
}

/// The names a host certificate vouches for: the inventory name and, for a dotted name, its
/// first label (`db-1.example.com` is also `db-1`).
pub fn host_principals(name: &str) -> Vec<String> {
    let mut principals = vec![name.to_owned()];
    if let Some((short, _)) = name.split_once('.') {
        if !short.is_empty() {
            principals.push(short.to_owned());
        }
    }
    principals
}

/// Hex SHA-256 of an enrolment token, the only form the store keeps.
pub fn token_sha256(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Checks a refresh: SSHSIG by `host_key` in [`HOST_SIGNATURE_NAMESPACE`] over the payload,
/// signed within [`SIGNATURE_WINDOW`] of `now`, with a usable nonce. Returns the statement.
pub fn verify_refresh(
    signed: &SignedHostRequest,
    host_key: &PublicKey,
    now: DateTime<Utc>,
) -> Result<HostRefreshRequest, HostError> {
    verify_signature(signed, host_key, HOST_SIGNATURE_NAMESPACE)?;

    let request: HostRefreshRequest = serde_json::from_str(&signed.payload)
        .map_err(|_| HostError::BadRequest("payload is not a refresh request".into()))?;
    check_freshness(&request, now)?;
    Ok(request)
}

/// Checks that `signed` is an SSHSIG by `host_key` in `namespace` over its payload.
fn verify_signature(
    signed: &SignedHostRequest,
    host_key: &PublicKey,
    namespace: &str,
) -> Result<(), HostError> {
    let signature = SshSig::from_pem(signed.signature.as_bytes())
        .map_err(|_| HostError::Unauthenticated("signature is not an SSH signature"))?;
    host_key
        .verify(namespace, signed.payload.as_bytes(), &signature)
        .map_err(|_| HostError::Unauthenticated("signature does not verify with the host key"))
}

/// A statement must be signed within [`SIGNATURE_WINDOW`] of `now` and carry a usable nonce.
fn check_freshness(request: &HostRefreshRequest, now: DateTime<Utc>) -> Result<(), HostError> {
    let skew = (now.timestamp() - request.signed_at).unsigned_abs();
    if skew > SIGNATURE_WINDOW.as_secs() {
        return Err(HostError::Unauthenticated(
            "signed too long ago or in the future (check the host's clock)",
        ));
    }
    let nonce_usable = (16..=128).contains(&request.nonce.len())
        && request
            .nonce
            .chars()
            .all(|character| character.is_ascii_graphic());
    if !nonce_usable {
        return Err(HostError::BadRequest(
            "nonce must be 16 to 128 printable characters".into(),
        ));
    }
    Ok(())
}

fn unix_seconds(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp()).unwrap_or(0)
}

fn timestamp(seconds: u64) -> DateTime<Utc> {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;
    use ssh_key::{Algorithm, PrivateKey};

    use super::*;

    const PROFILES: &str = r#"
        [hosts]
        db-1 = { groups = ["db-prod", "eu"] }
        web-1 = { groups = ["web"] }

        [profiles.read-only]
        unix_users = ["readonly"]
        any_host = true
        default_duration = "30m"
        max_duration = "2h"

        [profiles.db-root]
        unix_users = ["root", "postgres"]
        host_groups = ["db-prod"]
        default_duration = "15m"
        max_duration = "1h"

        [profiles.web-deploy]
        unix_users = ["deploy"]
        hosts = ["web-1"]
        default_duration = "15m"
        max_duration = "1h"
    "#;

    fn profiles() -> Profiles {
        Profiles::parse(PROFILES, "profiles.toml").unwrap()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn principals_are_those_requests_for_the_host_or_its_groups_receive() {
        let principals = principals_for_host(&profiles(), "db-1", &strings(&["db-prod", "eu"]));

        assert_eq!(
            principals,
            BTreeMap::from([
                (
                    "postgres".to_owned(),
                    strings(&["postgres@db-1", "postgres@group:db-prod"])
                ),
                (
                    "readonly".to_owned(),
                    strings(&[
                        "readonly@db-1",
                        "readonly@group:db-prod",
                        "readonly@group:eu"
                    ])
                ),
                (
                    "root".to_owned(),
                    strings(&["root@db-1", "root@group:db-prod"])
                ),
            ])
        );
    }

    #[test]
    fn groups_outside_the_inventory_or_the_enrolment_open_nothing() {
        let restricted = principals_for_host(&profiles(), "db-1", &strings(&["eu"]));
        let claimed = principals_for_host(&profiles(), "web-1", &strings(&["web", "db-prod"]));
        let unknown = principals_for_host(&profiles(), "db-9", &strings(&["db-prod"]));

        // Enrolled without db-prod, db-1 no longer takes the db-root profile.
        assert_eq!(restricted.keys().collect::<Vec<_>>(), ["readonly"]);
        assert_eq!(
            claimed["readonly"],
            strings(&["readonly@group:web", "readonly@web-1"])
        );
        assert_eq!(claimed["deploy"], strings(&["deploy@web-1"]));
        assert!(!claimed.contains_key("root"));
        assert!(unknown.is_empty());
    }

    #[test]
    fn enrolment_groups_default_to_the_inventory_and_may_only_shrink() {
        let profiles = profiles();

        let all = enrolled_groups(&profiles, "db-1", None).unwrap();
        let some = enrolled_groups(&profiles, "db-1", Some(&strings(&["eu", "eu"]))).unwrap();
        let foreign = enrolled_groups(&profiles, "db-1", Some(&strings(&["web"])));
        let unknown = enrolled_groups(&profiles, "db-9", None);

        assert_eq!(all, strings(&["db-prod", "eu"]));
        assert_eq!(some, strings(&["eu"]));
        assert!(matches!(
            foreign,
            Err(HostError::GroupNotInInventory { .. })
        ));
        assert!(matches!(unknown, Err(HostError::NotInInventory(_))));
    }

    #[test]
    fn host_certificates_name_the_host_and_its_short_name() {
        assert_eq!(host_principals("db-1"), ["db-1"]);
        assert_eq!(
            host_principals("db-1.example.com"),
            ["db-1.example.com", "db-1"]
        );
    }

    #[test]
    fn tokens_are_kept_as_their_hash() {
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn signed(key: &PrivateKey, request: &HostRefreshRequest) -> SignedHostRequest {
        let payload = serde_json::to_string(request).unwrap();
        let signature = key
            .sign(
                HOST_SIGNATURE_NAMESPACE,
                HashAlg::Sha512,
                payload.as_bytes(),
            )
            .unwrap()
            .to_pem(ssh_key::LineEnding::LF)
            .unwrap();
        SignedHostRequest { payload, signature }
    }

    fn statement(signed_at: DateTime<Utc>) -> HostRefreshRequest {
        HostRefreshRequest {
            name: "db-1".into(),
            signed_at: signed_at.timestamp(),
            nonce: "0123456789abcdef0123".into(),
        }
    }

    #[test]
    fn refreshes_must_be_signed_by_the_host_key_and_recent() {
        let host_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let other_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let public = host_key.public_key();

        let good = verify_refresh(&signed(&host_key, &statement(at(0))), public, at(60));
        let forged = verify_refresh(&signed(&other_key, &statement(at(0))), public, at(60));
        let stale = verify_refresh(&signed(&host_key, &statement(at(0))), public, at(301));
        let mut tampered = signed(&host_key, &statement(at(0)));
        tampered.payload = tampered.payload.replace("db-1", "db-2");
        let tampered = verify_refresh(&tampered, public, at(0));

        assert_eq!(good.unwrap().name, "db-1");
        assert!(matches!(forged, Err(HostError::Unauthenticated(_))));
        assert!(matches!(stale, Err(HostError::Unauthenticated(_))));
        assert!(matches!(tampered, Err(HostError::Unauthenticated(_))));
    }

    #[test]
    fn signatures_in_another_namespace_are_refused() {
        let host_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let payload = serde_json::to_string(&statement(at(0))).unwrap();
        let signature = host_key
            .sign("file", HashAlg::Sha512, payload.as_bytes())
            .unwrap()
            .to_pem(ssh_key::LineEnding::LF)
            .unwrap();

        let verdict = verify_refresh(
            &SignedHostRequest { payload, signature },
            host_key.public_key(),
            at(0),
        );

        assert!(matches!(verdict, Err(HostError::Unauthenticated(_))));
    }
}
