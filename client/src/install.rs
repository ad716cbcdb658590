//! Keys and certificates on disk: generating a request's key, keeping it while the request is
//! pending, and installing an approved grant beside it.
//!
//! `jit request` and `jit fetch` both finish through [`install_grant`], so a certificate that
//! arrives at once and one that arrives after approval end up the same way.

use std::path::{Path, PathBuf};

use jit_proto::{AccessRequestView, GrantView};
use ssh_key::certificate::CertType;
use ssh_key::{Algorithm, Certificate, LineEnding, PrivateKey};

use crate::state::{
    LocalGrant, StateDir, StateError, CERT_FILE, GRANT_FILE, KEY_FILE, REQUEST_FILE,
};

/// Why a key or certificate could not be produced, checked or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Writing or reading the state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Generating or encoding the key failed.
    #[error("cannot {action} the SSH key")]
    Key {
        /// `generate`, `encode` or `read`.
        action: &'static str,
        /// The failure.
        #[source]
        source: ssh_key::Error,
    },
    /// The grant came without a certificate.
    #[error("grant {grant_id} has no certificate yet")]
    NoCertificate {
        /// The grant.
        grant_id: String,
    },
    /// The certificate text does not parse or its signature does not verify.
    #[error("the certificate of grant {grant_id} is not a valid OpenSSH certificate")]
    BadCertificate {
        /// The grant.
        grant_id: String,
        /// The parse or signature failure.
        #[source]
        source: ssh_key::Error,
    },
    /// The certificate is not what the grant says it is, or not for our key.
    #[error("the certificate of grant {grant_id} does not match: {problem}")]
    Mismatch {
        /// The grant.
        grant_id: String,
        /// What differs.
        problem: &'static str,
    },
    /// No private key is kept for the request, so its certificate would be useless.
    #[error(
        "no private key for request {request_id} on this machine (looked in {}); \
         the certificate only works with the key made by `jit request` here",
        looked_in.display()
    )]
    NoKey {
        /// The request.
        request_id: String,
        /// Where the key would have been.
        looked_in: PathBuf,
    },
    /// A JSON file could not be encoded.
    #[error("cannot encode {0}")]
    Encode(&'static str, #[source] serde_json::Error),
}

/// Generates a fresh Ed25519 key from the operating system's random source.
pub fn generate_key() -> Result<PrivateKey, InstallError> {
    PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).map_err(|source| {
        InstallError::Key {
            action: "generate",
            source,
        }
    })
}

/// Keeps the key of a pending request, with the request, under `requests/<request_id>/`.
/// Returns the key's path.
pub fn save_pending(
    state: &StateDir,
    request: &AccessRequestView,
    key: &PrivateKey,
) -> Result<PathBuf, InstallError> {
    let dir = state.request_dir(&request.request_id)?;
    state.create_dir(&dir)?;

    let key_path = dir.join(KEY_FILE);
    write_key(state, &key_path, key)?;

    let request_json = serde_json::to_vec_pretty(request)
        .map_err(|error| InstallError::Encode("the request", error))?;
    state.write_private_file(&dir.join(REQUEST_FILE), &request_json)?;
    Ok(key_path)
}

/// Finds the private key made for `request_id`: kept with the pending request, or already in
/// the grant's directory when the grant was installed before (a certificate re-fetched).
pub fn load_request_key(
    state: &StateDir,
    request_id: &str,
    grant_id: &str,
) -> Result<PrivateKey, InstallError> {
    let request_key = state.request_dir(request_id)?.join(KEY_FILE);
    let grant_key = state.grant_dir(grant_id)?.join(KEY_FILE);

    for path in [&request_key, &grant_key] {
        if let Some(contents) = state.read_file(path)? {
            return PrivateKey::from_openssh(contents).map_err(|source| InstallError::Key {
                action: "read",
                source,
            });
        }
    }
    Err(InstallError::NoKey {
        request_id: request_id.to_owned(),
        looked_in: request_key,
    })
}

/// Installs an approved grant: checks its certificate against `key` and the grant, then writes
/// the key, the certificate and `grant.json` (last, so a listed grant is always complete) under
/// `grants/<grant_id>/`, and drops the pending request's copy of the key.
///
/// Refuses a certificate that does not parse, whose signature does not verify, that is not a
/// user certificate, that certifies another key, or whose principals or expiry differ from what
/// the grant reports: `jit ssh` chooses grants by those reported values.
pub fn install_grant(
    state: &StateDir,
    grant: &GrantView,
    key: &PrivateKey,
) -> Result<LocalGrant, InstallError> {
    let issued = grant
        .certificate
        .clone()
        .ok_or_else(|| InstallError::NoCertificate {
            grant_id: grant.grant_id.clone(),
        })?;
    check_certificate(grant, &issued, key)?;

    let dir = state.grant_dir(&grant.grant_id)?;
    state.create_dir(&dir)?;

    // The comment shows in `ssh-add -l`, telling which grant a loaded key belongs to.
    let mut labelled_key = key.clone();
    labelled_key.set_comment(format!("jit {}", grant.grant_id));
    let key_path = dir.join(KEY_FILE);
    write_key(state, &key_path, &labelled_key)?;

    let cert_path = dir.join(CERT_FILE);
    let cert_line = format!("{}\n", issued.certificate.trim());
    state.write_private_file(&cert_path, cert_line.as_bytes())?;

    let grant_json = serde_json::to_vec_pretty(grant)
        .map_err(|error| InstallError::Encode("the grant", error))?;
    state.write_private_file(&dir.join(GRANT_FILE), &grant_json)?;

    state.remove_dir(&state.request_dir(&grant.request_id)?)?;
    Ok(LocalGrant {
        grant: grant.clone(),
        certificate: issued,
        dir,
        key_path,
        cert_path,
    })
}

fn check_certificate(
    grant: &GrantView,
    issued: &jit_proto::IssuedCertificate,
    key: &PrivateKey,
) -> Result<(), InstallError> {
    let mismatch = |problem| InstallError::Mismatch {
        grant_id: grant.grant_id.clone(),
        problem,
    };
    let bad = |source| InstallError::BadCertificate {
        grant_id: grant.grant_id.clone(),
        source,
    };

    let certificate = Certificate::from_openssh(issued.certificate.trim()).map_err(bad)?;
    // PROTOCOL.certkeys: the signature covers every field, so a verified signature means the
    // fields read below are the ones the CA signed.
    certificate.verify_signature().map_err(bad)?;

    if certificate.cert_type() != CertType::User {
        return Err(mismatch("it is not a user certificate"));
    }
    if certificate.public_key() != key.public_key().key_data() {
        return Err(mismatch("it certifies another key than the one sent"));
    }
    if certificate.valid_principals() != issued.principals.as_slice() {
        return Err(mismatch("its principals differ from the grant's"));
    }
    let valid_before = u64::try_from(issued.valid_before.timestamp()).ok();
    if Some(certificate.valid_before()) != valid_before {
        return Err(mismatch("its expiry differs from the grant's"));
    }
    Ok(())
}

/// Writes `key` in OpenSSH format as a 0600 file; the encoded text is wiped from memory after.
fn write_key(state: &StateDir, path: &Path, key: &PrivateKey) -> Result<(), InstallError> {
    let encoded = key
        .to_openssh(LineEnding::LF)
        .map_err(|source| InstallError::Key {
            action: "encode",
            source,
        })?;
    state.write_private_file(path, encoded.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;
    use jit_proto::IssuedCertificate;
    use ssh_key::certificate::Builder;

    /// An empty state directory inside a temporary directory that lives as long as the guard.
    fn fresh_state() -> (tempfile::TempDir, StateDir) {
        let base = tempfile::tempdir().unwrap();
        let state = StateDir::open(&base.path().join("jit")).unwrap();
        (base, state)
    }

    /// A grant whose certificate, signed by a throwaway CA key, certifies `subject_key`.
    fn signed_grant(subject_key: &PrivateKey, principals: &[&str]) -> GrantView {
        let ca_key = generate_key().unwrap();
        let mut builder = Builder::new_with_random_nonce(
            &mut rand::rngs::OsRng,
            subject_key.public_key().key_data().clone(),
            at(-60).timestamp() as u64,
            at(1800).timestamp() as u64,
        )
        .unwrap();
        builder.serial(7).unwrap();
        builder.key_id("test").unwrap();
        builder.cert_type(CertType::User).unwrap();
        for principal in principals {
            builder.valid_principal(*principal).unwrap();
        }
        let certificate = builder.sign(&ca_key).unwrap();

        GrantView {
            grant_id: "g-1".into(),
            request_id: "r-1".into(),
            profile: "db".into(),
            host: "db-1".into(),
            principals: principals.iter().map(|p| p.to_string()).collect(),
            starts_at: at(-60),
            ends_at: at(1800),
            certificate: Some(IssuedCertificate {
                serial: 7,
                key_id: "test".into(),
                principals: principals.iter().map(|p| p.to_string()).collect(),
                valid_after: at(-60),
                valid_before: at(1800),
                certificate: certificate.to_openssh().unwrap(),
            }),
            revoked: false,
        }
    }

    #[test]
    fn installs_key_certificate_and_grant_privately() {
        let (_base, state) = fresh_state();
        let key = generate_key().unwrap();
        let grant = signed_grant(&key, &["root@db-1"]);

        let installed = install_grant(&state, &grant, &key).unwrap();

        let listed = state.list_grants().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].grant, grant);
        let reread = load_request_key(&state, "r-1", "g-1").unwrap();
        assert_eq!(reread.public_key().key_data(), key.public_key().key_data());
        for path in [&installed.key_path, &installed.cert_path] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(path).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn refuses_a_certificate_for_another_key() {
        let (_base, state) = fresh_state();
        let ours = generate_key().unwrap();
        let theirs = generate_key().unwrap();
        let grant = signed_grant(&theirs, &["root@db-1"]);

        let error = install_grant(&state, &grant, &ours).unwrap_err();

        assert!(error.to_string().contains("another key"), "{error}");
        assert!(state.list_grants().unwrap().is_empty());
    }

    #[test]
    fn refuses_a_grant_that_misreports_its_principals() {
        let (_base, state) = fresh_state();
        let key = generate_key().unwrap();
        let mut grant = signed_grant(&key, &["root@db-1"]);
        if let Some(certificate) = grant.certificate.as_mut() {
            certificate.principals = vec!["root@db-2".into()];
        }

        let error = install_grant(&state, &grant, &key).unwrap_err();

        assert!(error.to_string().contains("principals"), "{error}");
    }

    #[test]
    fn pending_keys_are_found_again_and_moved_on_install() {
        let (_base, state) = fresh_state();
        let key = generate_key().unwrap();
        let grant = signed_grant(&key, &["root@db-1"]);
        let pending = crate::fixed_instants::request_view(serde_json::json!({}));

        save_pending(&state, &pending, &key).unwrap();
        let found = load_request_key(&state, "r-1", "g-1").unwrap();
        install_grant(&state, &grant, &found).unwrap();

        assert!(state.list_pending().unwrap().is_empty());
        assert!(!state.request_dir("r-1").unwrap().exists());
    }
}
