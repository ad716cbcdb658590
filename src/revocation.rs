//! Ending access early: who may revoke, what a revocation does, and the KRL built from the
//! store at a given instant.
//!
//! A revocation names a grant, one certificate (by serial), a person (every active grant of
//! theirs) or a public key, and gives a reason. The Cedar `revoke` action decides who may:
//! each grant a revocation reaches is a `Grant` resource (a child of its host or host group),
//! a key is a `PublicKey` resource, and the context tells whether everything revoked belongs to
//! the caller (`own`). A revocation is refused as a whole when any part of it is not permitted,
//! and nothing is stored for a refused one.
//!
//! The KRL (`PROTOCOL.krl`) lists, under each trusted CA key, the serials of revoked
//! certificates that have not expired yet, and every revoked public key by its SHA-256 hash.
//! Its version is the store's counter, incremented with each recorded revocation. Nothing here
//! reads the clock: `now` is always a parameter.
//!
//! Limitation: revoking a person ends their grants but neither cancels their pending requests
//! nor stops new ones; the identity provider must disable the account. A revoked key stays on
//! the KRL until its row is removed from the store by hand: there is no API to lift it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, Request, RestrictedExpression,
};
use chrono::{DateTime, Datelike, Timelike, Utc};
use jit_proto::clip_for_display;
use jit_proto::revocation::{CreateRevocation, RevocationKind, RevocationView};
use ssh_key::{Fingerprint, HashAlg, PublicKey};
use tokio::sync::{watch, Mutex};

use crate::audit;
use crate::identity::Identity;
use crate::krl::{encode, KrlBuilder, KrlError};
use crate::policy::rules::{target_entity, uid, user_entity, verdict};
use crate::policy::{Policy, RuleVerdict};
use crate::service::{new_id, owned_by, person, Service};
use crate::store::revocation::{
    KrlContents, RevocableGrant, RevocationChanges, RevocationRecord, RevokedKey,
};
use crate::store::{CertificateRecord, Store, StoreError};

/// Longest reason accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Comment written in the KRL header.
const KRL_COMMENT: &str = "jit-ca";

/// Why a revocation was refused or failed, or the KRL could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The body is well-formed JSON but not a valid revocation.
    #[error("{0}")]
    BadRequest(String),
    /// The grant, certificate or person named is unknown.
    #[error("{0}")]
    NotFound(String),
    /// The rules do not permit the caller to revoke (all of) it.
    #[error("you may not revoke {target}")]
    NotPermitted {
        /// What was named, as the caller spelled it.
        target: String,
        /// Forbidding rules, for the log (never sent).
        rule_ids: Vec<String>,
    },
    /// Everything named is already revoked or expired.
    #[error("{0}")]
    NothingToRevoke(String),
    /// A trusted CA key from the configuration does not parse.
    #[error("[ca] previous_public_keys entry {index}: {message}")]
    BadTrustedKey {
        /// Its position, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not record the revocation, so it was not made.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The KRL could not be built (a bug if it happens: the store holds only valid entries).
    #[error("cannot build the KRL: {0}")]
    Krl(#[from] KrlError),
}

/// The CA keys hosts trust: the one signing now, then earlier ones kept during a rotation.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

#[derive(Debug, Clone)]
struct TrustedKey {
    public_key: PublicKey,
    fingerprint: String,
}

impl TrustedKeys {
    /// The signing key and the configured previous keys (`authorized_keys` lines). Refuses a
    /// line that does not parse or names a certificate; drops repeats of the signing key.
    pub fn new(signing: &PublicKey, previous: &[String]) -> Result<TrustedKeys, RevocationError> {
        let mut keys = vec![TrustedKey::new(signing.clone())];
        for (position, line) in previous.iter().enumerate() {
            let bad = |message: String| RevocationError::BadTrustedKey {
                index: position + 1,
                message,
            };
            if is_certificate_line(line) {
                return Err(bad("a certificate, not a key".into()));
            }
            let public_key = PublicKey::from_openssh(line.trim())
                .map_err(|_| bad("not an OpenSSH public key".into()))?;
            let key = TrustedKey::new(public_key);
            if keys
                .iter()
                .all(|known| known.fingerprint != key.fingerprint)
            {
                keys.push(key);
            }
        }
        Ok(TrustedKeys { keys })
    }

    /// The signing key's `SHA256:…` fingerprint.
    pub fn signing_fingerprint(&self) -> &str {
        &self.keys[0].fingerprint
    }

    /// Every trusted key, the signing key first.
    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().map(|key| &key.public_key)
    }

    fn by_fingerprint(&self, fingerprint: &str) -> Option<&PublicKey> {
        self.keys
            .iter()
            .find(|key| key.fingerprint == fingerprint)
            .map(|key| &key.public_key)
    }
}

impl TrustedKey {
    fn new(public_key: PublicKey) -> TrustedKey {
        let fingerprint = public_key.fingerprint(HashAlg::Sha256).to_string();
        TrustedKey {
            public_key,
            fingerprint,
        }
    }
}

/// One line of `authorized_keys` for a trusted key (what `TrustedUserCAKeys` holds).
pub fn authorized_keys_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("jit-ca");
    key.to_openssh().unwrap_or_default()
}

/// An encoded KRL and what it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KrlDocument {
    /// Its version (the `ETag`).
    pub version: u64,
    /// The binary KRL, as sshd reads it.
    pub bytes: Vec<u8>,
    /// When it was built.
    pub generated_at: DateTime<Utc>,
    /// When its first entry expires, after which a rebuild would be smaller.
    pub shrinks_at: Option<DateTime<Utc>>,
}

/// Builds the KRL for `contents` at `now`.
///
/// Certificates whose CA key is no longer trusted are left out: sshd refuses them anyway.
pub fn build_krl(
    contents: &KrlContents,
    trusted: &TrustedKeys,
    now: DateTime<Utc>,
) -> Result<KrlDocument, RevocationError> {
    let mut builder = KrlBuilder::new(contents.version, unix_seconds(now));
    builder.comment(KRL_COMMENT)?;

    // PROTOCOL.krl section 2: one certificate section per CA key, its serials as the writer
    // sees fit (list, range or bitmap).
    let mut serials_by_ca: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut shrinks_at: Option<DateTime<Utc>> = None;
    for certificate in &contents.certificates {
        if certificate.valid_before <= now {
            continue;
        }
        serials_by_ca
            .entry(certificate.ca_key_fingerprint.as_str())
            .or_default()
            .push(certificate.serial);
        shrinks_at = Some(shrinks_at.map_or(certificate.valid_before, |earliest| {
            earliest.min(certificate.valid_before)
        }));
    }
    for (fingerprint, serials) in serials_by_ca {
        let Some(ca_key) = trusted.by_fingerprint(fingerprint) else {
            tracing::debug!(
                fingerprint,
                "revoked certificates of an untrusted CA key left out"
            );
            continue;
        };
        builder.revoke_serials(ca_key, serials)?;
    }

    // PROTOCOL.krl section 5 (KRL_SECTION_FINGERPRINT_SHA256): a key is refused whatever
    // certificate carries it.
    for fingerprint in &contents.key_fingerprints {
        match sha256_of_fingerprint(fingerprint) {
            Some(hash) => {
                builder.revoke_sha256_hash(hash);
            }
            None => {
                return Err(
                    StoreError::Corrupt(format!("revoked key fingerprint `{fingerprint}`")).into(),
                )
            }
        }
    }

    let krl = builder.build()?;
    Ok(KrlDocument {
        version: contents.version,
        bytes: encode(&krl),
        generated_at: now,
        shrinks_at,
    })
}

/// Whether an `authorized_keys`-style line holds a certificate rather than a key.
fn is_certificate_line(line: &str) -> bool {
    let key_type = line.split_whitespace().next().unwrap_or_default();
    key_type.ends_with("-cert-v01@openssh.com")
}

fn sha256_of_fingerprint(text: &str) -> Option<[u8; 32]> {
    Fingerprint::from_str(text).ok()?.sha256()
}

/// What a revocation named, resolved against the store: the grants and certificates it reaches.
#[derive(Debug, Clone)]
struct Resolved {
    kind: RevocationKind,
    /// As shown back: grant id, serial, email or fingerprint.
    target: String,
    grants: Vec<RevocableGrant>,
    /// For a serial: that one certificate. For a key: the certificates that carried it.
    certificates: Vec<CertificateRecord>,
    key: Option<RevokedKey>,
}

/// The outcome of a recorded revocation, for the boundary to log and answer.
#[derive(Debug, Clone)]
pub struct RevocationOutcome {
    /// What the caller sees.
    pub view: RevocationView,
    /// Rules that permitted it.
    pub rule_ids: Vec<String>,
}

/// The revocation service: decides and records revocations, builds and caches the KRL, and
/// tells waiting callers when its version changes.
pub struct Revocations {
    service: Arc<Service>,
    trusted: TrustedKeys,
    version: watch::Sender<u64>,
    cached: Mutex<Option<Arc<KrlDocument>>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Revocations")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Builds the service around the CA's `service`, trusting the signing key and `previous`
    /// keys (`[ca] previous_public_keys`). Fails on an unparsable key or an unreadable store.
    pub async fn new(
        service: Arc<Service>,
        previous: &[String],
    ) -> Result<Revocations, RevocationError> {
        let trusted = TrustedKeys::new(service.ca_key().public_key(), previous)?;
        let version = service.store().krl_version().await?;
        Ok(Revocations {
            service,
            trusted,
            version: watch::Sender::new(version),
            cached: Mutex::new(None),
        })
    }

    /// The trusted CA keys.
    pub fn trusted(&self) -> &TrustedKeys {
        &self.trusted
    }

    fn store(&self) -> &dyn Store {
        self.service.store()
    }

    fn policy(&self) -> &Policy {
        self.service.policy()
    }

    /// Receives the KRL version after each committed revocation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The trusted keys to publish at `now`, as `authorized_keys` lines: the signing key, and
    /// each previous key while a certificate it signed is still valid.
    pub async fn published_keys(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut lines = Vec::new();
        for (position, key) in self.trusted.keys.iter().enumerate() {
            let keep = position == 0 || self.store().ca_key_in_use(&key.fingerprint, now).await?;
            if keep {
                lines.push(authorized_keys_line(&key.public_key));
            }
        }
        Ok(lines)
    }

    /// The KRL at `now`, rebuilt when the store's version moved or an entry expired since the
    /// cached copy was built.
    pub async fn krl(&self, now: DateTime<Utc>) -> Result<Arc<KrlDocument>, RevocationError> {
        let mut cached = self.cached.lock().await;
        let version = self.store().krl_version().await?;
        if let Some(document) = cached.as_ref() {
            let fresh = document.version == version
                && document
                    .shrinks_at
                    .is_none_or(|shrinks_at| now < shrinks_at);
            if fresh {
                return Ok(Arc::clone(document));
            }
        }

        let contents = self.store().krl_contents(now).await?;
        let document = Arc::new(build_krl(&contents, &self.trusted, now)?);
        *cached = Some(Arc::clone(&document));
        // Another process may have revoked (a second replica); waiting callers learn of it too.
        self.version.send_if_modified(|known| {
            let newer = document.version > *known;
            if newer {
                *known = document.version;
            }
            newer
        });
        Ok(document)
    }

    /// Revokes what `body` names on behalf of `identity` at `now`, if the rules permit it.
    /// Refused and failed revocations store nothing.
    pub async fn revoke(
        &self,
        identity: &Identity,
        body: CreateRevocation,
        now: DateTime<Utc>,
    ) -> Result<RevocationOutcome, RevocationError> {
        let reason = check_reason(&body.reason)?;
        let resolved = self.resolve(&body, now).await?;

        let rule_ids = self.authorize(identity, &resolved, &reason, now)?;

        let changes = changes_for(&resolved, now)?;
        let record = RevocationRecord {
            id: new_id("v"),
            kind: resolved.kind,
            target: resolved.target.clone(),
            reason,
            actor: person(identity),
            created_at: now,
        };
        // Recorded before it is stored, like everything the CA does.
        let events = audit::record::revocations(
            &record,
            &changes,
            &resolved.certificates,
            audit::Actor::of(identity),
        );
        if !events.is_empty() {
            self.service.auditor().record_all(events, now).await?;
        }
        let version = self.store().record_revocation(&record, &changes).await?;
        self.version.send_if_modified(|known| {
            let newer = version > *known;
            if newer {
                *known = version;
            }
            newer
        });

        let view = RevocationView {
            revocation_id: record.id,
            kind: record.kind,
            target: record.target,
            reason: record.reason,
            actor: identity.display_name().to_owned(),
            created_at: now,
            krl_version: version,
            grant_ids: changes.grant_ids,
            serials: affected_serials(&resolved, now),
            public_key_fingerprint: changes.key.map(|key| key.fingerprint),
        };
        Ok(RevocationOutcome { view, rule_ids })
    }

    async fn resolve(
        &self,
        body: &CreateRevocation,
        now: DateTime<Utc>,
    ) -> Result<Resolved, RevocationError> {
        let named = [
            body.grant_id.is_some(),
            body.serial.is_some(),
            body.user.is_some(),
            body.public_key.is_some(),
        ];
        if named.iter().filter(|named| **named).count() != 1 {
            return Err(RevocationError::BadRequest(
                "name exactly one of grant_id, serial, user and public_key".into(),
            ));
        }

        if let Some(grant_id) = &body.grant_id {
            return self.resolve_grant(grant_id).await;
        }
        if let Some(serial) = body.serial {
            return self.resolve_serial(serial).await;
        }
        if let Some(email) = &body.user {
            return self.resolve_user(email, now).await;
        }
        let public_key = body.public_key.as_deref().unwrap_or_default();
        self.resolve_key(public_key).await
    }

    async fn resolve_grant(&self, grant_id: &str) -> Result<Resolved, RevocationError> {
        let grant = self
            .store()
            .revocable_grant(grant_id)
            .await?
            .ok_or_else(|| {
                RevocationError::NotFound(format!("no grant `{}`", clip_for_display(grant_id)))
            })?;
        let certificates = self.store().certificates_of_grant(grant_id).await?;
        Ok(Resolved {
            kind: RevocationKind::Grant,
            target: grant.grant.id.clone(),
            grants: vec![grant],
            certificates,
            key: None,
        })
    }

    async fn resolve_serial(&self, serial: u64) -> Result<Resolved, RevocationError> {
        let not_found =
            || RevocationError::NotFound(format!("no certificate with serial {serial}"));
        let (certificate, revoked) = self
            .store()
            .revocable_certificate(serial)
            .await?
            .ok_or_else(not_found)?;
        let mut grant = self
            .store()
            .revocable_grant(&certificate.grant_id)
            .await?
            .ok_or_else(not_found)?;
        // What matters for this revocation is whether this certificate is listed already.
        grant.revoked = revoked;
        Ok(Resolved {
            kind: RevocationKind::Serial,
            target: serial.to_string(),
            grants: vec![grant],
            certificates: vec![certificate],
            key: None,
        })
    }

    async fn resolve_user(
        &self,
        email: &str,
        now: DateTime<Utc>,
    ) -> Result<Resolved, RevocationError> {
        let email = email.trim();
        if email.is_empty() || email.len() > 320 || email.chars().any(char::is_control) {
            return Err(RevocationError::BadRequest(
                "user must be an email address".into(),
            ));
        }
        let grants = self.store().active_grants_of_email(email, now).await?;
        if grants.is_empty() {
            return Err(RevocationError::NotFound(format!(
                "no active grants of `{}`",
                clip_for_display(email)
            )));
        }
        let mut certificates = Vec::new();
        for grant in &grants {
            certificates.extend(self.store().certificates_of_grant(&grant.grant.id).await?);
        }
        Ok(Resolved {
            kind: RevocationKind::User,
            target: email.to_owned(),
            grants,
            certificates,
            key: None,
        })
    }

    async fn resolve_key(&self, text: &str) -> Result<Resolved, RevocationError> {
        if is_certificate_line(text) {
            return Err(RevocationError::BadRequest(
                "public_key is a certificate; send the plain public key".into(),
            ));
        }
        let public_key = PublicKey::from_openssh(text.trim()).map_err(|_| {
            RevocationError::BadRequest("public_key is not an OpenSSH public key".into())
        })?;
        let fingerprint = public_key.fingerprint(HashAlg::Sha256).to_string();
        if self.store().is_key_revoked(&fingerprint).await? {
            return Err(RevocationError::NothingToRevoke(format!(
                "key {fingerprint} is already revoked"
            )));
        }

        let certificates = self.store().certificates_of_key(&fingerprint).await?;
        let mut grants: Vec<RevocableGrant> = Vec::new();
        for certificate in &certificates {
            if grants
                .iter()
                .any(|known| known.grant.id == certificate.grant_id)
            {
                continue;
            }
            if let Some(grant) = self.store().revocable_grant(&certificate.grant_id).await? {
                grants.push(grant);
            }
        }
        let mut plain = public_key.clone();
        plain.set_comment("");
        Ok(Resolved {
            kind: RevocationKind::Key,
            target: fingerprint.clone(),
            grants,
            certificates,
            key: Some(RevokedKey {
                fingerprint,
                public_key: plain.to_openssh().unwrap_or_default(),
            }),
        })
    }

    /// Asks the rules about every resource the revocation reaches; all must be permitted.
    fn authorize(
        &self,
        identity: &Identity,
        resolved: &Resolved,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, RevocationError> {
        let mut resources: Vec<RevokeResource<'_>> = Vec::new();
        match &resolved.key {
            Some(key) => resources.push(RevokeResource::Key {
                fingerprint: &key.fingerprint,
                own: !resolved.certificates.is_empty()
                    && resolved
                        .certificates
                        .iter()
                        .all(|certificate| owned_by(&certificate.holder, identity)),
            }),
            None => resources.extend(resolved.grants.iter().map(RevokeResource::Grant)),
        }

        let mut rule_ids = BTreeSet::new();
        for resource in &resources {
            let verdict = decide_revoke(
                self.policy(),
                identity,
                resolved.kind,
                resource,
                reason,
                now,
            );
            if !verdict.allowed {
                return Err(RevocationError::NotPermitted {
                    target: format!(
                        "{} {}",
                        resolved.kind.as_str(),
                        clip_for_display(&resolved.target)
                    ),
                    rule_ids: verdict.rule_ids,
                });
            }
            rule_ids.extend(verdict.rule_ids);
        }
        Ok(rule_ids.into_iter().collect())
    }
}

/// The resource a `revoke` decision is about.
#[derive(Debug, Clone)]
enum RevokeResource<'a> {
    Grant(&'a RevocableGrant),
    Key { fingerprint: &'a str, own: bool },
}

/// Asks the rules whether `identity` may revoke `resource` at `now`. Deny unless some rule
/// permits and none forbids; anything that cannot be evaluated denies.
fn decide_revoke(
    policy: &Policy,
    identity: &Identity,
    kind: RevocationKind,
    resource: &RevokeResource<'_>,
    reason: &str,
    now: DateTime<Utc>,
) -> RuleVerdict {
    let (policies, schema) = policy.rules.cedar();
    let decided = revoke_request(policy, identity, kind, resource, reason, now).and_then(
        |(request, entities)| {
            let entities = Entities::from_entities(entities, Some(schema))
                .map_err(|error| error.to_string())?;
            Ok(Authorizer::new().is_authorized(&request, policies, &entities))
        },
    );
    decided.map_or_else(RuleVerdict::unevaluable, |response| verdict(&response))
}

/// The Cedar request (and its entities) for one `revoke` decision. The context carries every
/// attribute a request's context has (so rules that do not name their action still validate),
/// filled from the grant, plus `kind` and `own`.
fn revoke_request(
    policy: &Policy,
    identity: &Identity,
    kind: RevocationKind,
    resource: &RevokeResource<'_>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(Request, Vec<Entity>), String> {
    let (_, schema) = policy.rules.cedar();
    let mut entities = Vec::new();
    let principal = user_entity(identity, &mut entities)?;

    let (resource_uid, profile, unix_users, duration_secs, ticket, own) = match resource {
        RevokeResource::Grant(revocable) => {
            let grant = &revocable.grant;
            let parent = grant_target_entity(policy, &grant.target, &mut entities)?;
            let grant_uid = uid("Grant", &grant.id)?;
            let attributes = HashMap::from([
                (
                    "profile".to_owned(),
                    RestrictedExpression::new_string(grant.profile.clone()),
                ),
                (
                    "holder_email".to_owned(),
                    RestrictedExpression::new_string(
                        grant.holder.email.clone().unwrap_or_default(),
                    ),
                ),
            ]);
            let parents = parent.into_iter().collect();
            entities.push(
                Entity::new(grant_uid.clone(), attributes, parents)
                    .map_err(|error| error.to_string())?,
            );
            let unix_users: Vec<String> = grant
                .principals
                .iter()
                .filter_map(|principal| principal.split_once('@'))
                .map(|(unix_user, _)| unix_user.to_owned())
                .collect();
            let duration = (grant.ends_at - grant.starts_at).num_seconds().max(0);
            let own = owned_by(&grant.holder, identity);
            (
                grant_uid,
                grant.profile.clone(),
                unix_users,
                duration,
                revocable.ticket.clone(),
                own,
            )
        }
        RevokeResource::Key { fingerprint, own } => {
            let key_uid = uid("PublicKey", fingerprint)?;
            entities.push(Entity::new_no_attrs(key_uid.clone(), HashSet::new()));
            (key_uid, String::new(), Vec::new(), 0, String::new(), *own)
        }
    };

    let strings = |values: &[String]| {
        RestrictedExpression::new_set(
            values
                .iter()
                .map(|value| RestrictedExpression::new_string(value.clone())),
        )
    };
    let context = Context::from_pairs([
        (
            "kind".into(),
            RestrictedExpression::new_string(kind.as_str().into()),
        ),
        ("own".into(), RestrictedExpression::new_bool(own)),
        ("profile".into(), RestrictedExpression::new_string(profile)),
        ("unix_users".into(), strings(&unix_users)),
        (
            "duration_secs".into(),
            RestrictedExpression::new_long(duration_secs),
        ),
        (
            "reason".into(),
            RestrictedExpression::new_string(reason.to_owned()),
        ),
        ("ticket".into(), RestrictedExpression::new_string(ticket)),
        (
            "now".into(),
            RestrictedExpression::new_long(now.timestamp()),
        ),
        (
            "hour_utc".into(),
            RestrictedExpression::new_long(i64::from(now.hour())),
        ),
        (
            "weekday".into(),
            RestrictedExpression::new_long(i64::from(now.weekday().number_from_monday())),
        ),
        ("amr".into(), strings(&identity.auth_methods)),
    ])
    .map_err(|error| error.to_string())?;

    let request = Request::new(
        principal,
        uid("Action", "revoke")?,
        resource_uid,
        context,
        Some(schema),
    )
    .map_err(|error| error.to_string())?;
    Ok((request, entities))
}

/// The grant's target as a `Host` (with its current groups) or `HostGroup` entity; `None` when
/// the inventory no longer knows it, so only rules that do not look at the place can match.
fn grant_target_entity(
    policy: &Policy,
    target: &str,
    entities: &mut Vec<Entity>,
) -> Result<Option<EntityUid>, String> {
    match policy.profiles.resolve_target(target) {
        Ok(target) => target_entity(&target, entities).map(Some),
        Err(_) => Ok(None),
    }
}

/// What to record: the grants to end, the single certificates to list, the key to block.
/// Refuses a revocation that would add nothing to the KRL.
fn changes_for(
    resolved: &Resolved,
    now: DateTime<Utc>,
) -> Result<RevocationChanges, RevocationError> {
    match resolved.kind {
        RevocationKind::Grant | RevocationKind::User => {
            let open: Vec<&RevocableGrant> = resolved
                .grants
                .iter()
                .filter(|grant| !grant.revoked)
                .collect();
            if open.is_empty() {
                return Err(RevocationError::NothingToRevoke(format!(
                    "grant {} is already revoked",
                    resolved.target
                )));
            }
            let Some(latest_end) = open.iter().map(|grant| grant.grant.ends_at).max() else {
                return Err(RevocationError::NothingToRevoke(
                    "no grant to revoke".into(),
                ));
            };
            let unexpired = resolved
                .certificates
                .iter()
                .any(|certificate| certificate.valid_before > now);
            if latest_end <= now && !unexpired {
                return Err(RevocationError::NothingToRevoke(format!(
                    "grant {} already ended",
                    resolved.target
                )));
            }
            Ok(RevocationChanges {
                grant_ids: open.iter().map(|grant| grant.grant.id.clone()).collect(),
                ..RevocationChanges::default()
            })
        }
        RevocationKind::Serial => {
            let already = resolved.grants.iter().any(|grant| grant.revoked);
            if already {
                return Err(RevocationError::NothingToRevoke(format!(
                    "certificate {} is already revoked",
                    resolved.target
                )));
            }
            let unexpired: Vec<u64> = resolved
                .certificates
                .iter()
                .filter(|certificate| certificate.valid_before > now)
                .map(|certificate| certificate.serial)
                .collect();
            if unexpired.is_empty() {
                return Err(RevocationError::NothingToRevoke(format!(
                    "certificate {} already expired",
                    resolved.target
                )));
            }
            Ok(RevocationChanges {
                serials: unexpired,
                ..RevocationChanges::default()
            })
        }
        RevocationKind::Key => Ok(RevocationChanges {
            key: resolved.key.clone(),
            ..RevocationChanges::default()
        }),
    }
}

/// The unexpired certificates a revocation puts out of use, for the caller's summary.
fn affected_serials(resolved: &Resolved, now: DateTime<Utc>) -> Vec<u64> {
    resolved
        .certificates
        .iter()
        .filter(|certificate| certificate.valid_before > now)
        .map(|certificate| certificate.serial)
        .collect()
}

/// A reason is required: non-blank, at most [`MAX_REASON_BYTES`], no control characters.
fn check_reason(reason: &str) -> Result<String, RevocationError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(RevocationError::BadRequest("a reason is required".into()));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(RevocationError::BadRequest(format!(
            "reason is longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(RevocationError::BadRequest(
            "reason holds control characters".into(),
        ));
    }
    Ok(reason.to_owned())
}

fn unix_seconds(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
