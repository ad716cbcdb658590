//! The CA key and the certificates it signs.
//!
//! [`CaKey`] loads (or creates) the OpenSSH private key and refuses one that other users can
//! read. [`CertificateOrder`] is the complete description of a user certificate, decided
//! elsewhere; [`CaKey::sign`] turns it into an OpenSSH certificate and refuses orders that would
//! produce a certificate wider than intended (no principals, an empty or inverted validity).
//! [`parse_subject_key`] checks the public key a requester wants certified.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, HashAlg, LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Smallest RSA modulus accepted for a subject key, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why the CA key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("CA key {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Group or others may read the key file.
    #[error("CA key {path} is readable by other users (mode {mode:o}); run `chmod 600` on it")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an OpenSSH private key.
    #[error("CA key {path} is not an OpenSSH private key: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The key is encrypted and no passphrase, or a wrong one, was given.
    #[error("CA key {path} is encrypted: {message}")]
    Passphrase {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        message: String,
    },
}

/// Why a certificate was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The order lists no principals; such a certificate would be valid for every user.
    #[error("refusing to sign a certificate with no principals")]
    NoPrincipals,
    /// `valid_before` is not after `valid_after`.
    #[error("refusing to sign a certificate whose validity is empty")]
    EmptyValidity,
    /// The signing library refused.
    #[error("signing failed: {0}")]
    Library(String),
}

/// Why a requester's public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectKeyError {
    /// The text is an OpenSSH certificate, not a key.
    #[error("public_key is a certificate; send the plain public key")]
    IsCertificate,
    /// The text does not parse.
    #[error("public_key is not an OpenSSH public key")]
    Unparsable,
    /// The text spans several lines or holds control characters, which could smuggle a second
    /// key or a forged line in through the comment.
    #[error("public_key must be a single line without control characters")]
    NotOneLine,
    /// DSA, or an algorithm this CA does not certify.
    #[error("public_key algorithm {0} is not accepted (use ed25519, ecdsa or rsa >= 2048)")]
    Algorithm(String),
    /// RSA below [`MIN_RSA_BITS`].
    #[error("public_key is RSA with {0} bits; at least 2048 are required")]
    WeakRsa(usize),
}

/// Everything a user certificate will say. Built by the service from a policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateOrder {
    /// The requester's key.
    pub subject_key: PublicKey,
    /// Serial allocated by the store.
    pub serial: u64,
    /// Human-readable key ID (appears in sshd's log).
    pub key_id: String,
    /// Principals; never empty.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds; the grant's end.
    pub valid_before: u64,
    /// Extensions (names only; OpenSSH's standard extensions carry empty values).
    pub extensions: Vec<String>,
    /// Critical options (`force-command`, `source-address`).
    pub critical_options: BTreeMap<String, String>,
}

/// The CA's signing key.
pub struct CaKey {
    private_key: PrivateKey,
    public_key: PublicKey,
    fingerprint: String,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CaKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl CaKey {
    /// Creates a new Ed25519 key at `path` (mode 0600, never overwriting), optionally
    /// encrypted with `passphrase`.
    pub fn generate(path: &Path, passphrase: Option<&str>) -> Result<CaKey, KeyError> {
        let io_error = |message: String| KeyError::Io {
            path: path.to_owned(),
            message,
        };
        let private_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .map_err(|error| io_error(error.to_string()))?;
        let stored = match passphrase {
            Some(passphrase) => private_key
                .encrypt(&mut OsRng, passphrase)
                .map_err(|error| io_error(error.to_string()))?,
            None => private_key.clone(),
        };
        let text = stored
            .to_openssh(LineEnding::LF)
            .map_err(|error| io_error(error.to_string()))?;

        // The mode is set at creation, so the key is never readable by others, not even briefly.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| io_error(error.to_string()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|error| io_error(error.to_string()))?;

        CaKey::from_private_key(private_key)
    }

    /// Loads the key at `path`, decrypting it with `passphrase` when it is encrypted. Refuses a
    /// file that group or others can read.
    pub fn load(path: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<CaKey, KeyError> {
        check_private_file(path).map_err(|error| match error {
            PrivateFileError::Io(message) => KeyError::Io {
                path: path.to_owned(),
                message,
            },
            PrivateFileError::Exposed(mode) => KeyError::Exposed {
                path: path.to_owned(),
                mode,
            },
        })?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| KeyError::Io {
            path: path.to_owned(),
            message: error.to_string(),
        })?);
        let stored =
            PrivateKey::from_openssh(text.as_str()).map_err(|error| KeyError::Malformed {
                path: path.to_owned(),
                message: error.to_string(),
            })?;

        let private_key = if stored.is_encrypted() {
            let passphrase = passphrase.ok_or_else(|| KeyError::Passphrase {
                path: path.to_owned(),
                message: "set [ca] passphrase_env or passphrase_file".into(),
            })?;
            stored
                .decrypt(passphrase.as_bytes())
                .map_err(|_| KeyError::Passphrase {
                    path: path.to_owned(),
                    message: "the passphrase is wrong".into(),
                })?
        } else {
            stored
        };
        CaKey::from_private_key(private_key)
    }

    fn from_private_key(private_key: PrivateKey) -> Result<CaKey, KeyError> {
        let public_key = private_key.public_key().clone();
        let fingerprint = public_key.fingerprint(HashAlg::Sha256).to_string();
        Ok(CaKey {
            private_key,
            public_key,
            fingerprint,
        })
    }

    /// The public half, as servers trust it.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// `SHA256:…` fingerprint of the public key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The public key as one `authorized_keys` line (what `TrustedUserCAKeys` holds).
    pub fn authorized_keys_line(&self) -> String {
        let mut public_key = self.public_key.clone();
        public_key.set_comment("jit-ca");
        public_key.to_openssh().unwrap_or_default()
    }

    /// Signs `order` as an OpenSSH user certificate.
    pub fn sign(
        &self,
        order: &CertificateOrder,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Certificate, SignError> {
        // PROTOCOL.certkeys: a user certificate binds the key to principals, a validity
        // interval, critical options the server must enforce and extensions it may honour.
        let mut builder = certificate_builder(
            CertType::User,
            &order.subject_key,
            order.serial,
            &order.key_id,
            &order.principals,
            (order.valid_after, order.valid_before),
            rng,
        )?;
        // Extensions and options must be sorted by name; BTreeMap iteration and a sorted list
        // guarantee it.
        let mut extensions = order.extensions.clone();
        extensions.sort();
        extensions.dedup();
        for extension in extensions {
            builder.extension(extension, "").map_err(library_error)?;
        }
        for (name, value) in &order.critical_options {
            builder
                .critical_option(name.clone(), value.clone())
                .map_err(library_error)?;
        }
        builder.sign(&self.private_key).map_err(library_error)
    }

    /// Signs `order` as an OpenSSH host certificate, refusing one without principals (it would
    /// vouch for the key under every host name) or with an empty validity.
    pub fn sign_host(
        &self,
        order: &HostCertificateOrder,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Certificate, SignError> {
        // PROTOCOL.certkeys: a host certificate names the host names it is valid for and
        // carries no critical options or extensions.
        let builder = certificate_builder(
            CertType::Host,
            &order.host_key,
            order.serial,
            &order.key_id,
            &order.principals,
            (order.valid_after, order.valid_before),
            rng,
        )?;
        builder.sign(&self.private_key).map_err(library_error)
    }
}

fn library_error(error: ssh_key::Error) -> SignError {
    SignError::Library(error.to_string())
}

/// The part every certificate shares: type, key, serial, key ID, principals and validity.
/// Refuses no principals (the certificate would be valid for every name) and an empty or
/// inverted validity.
fn certificate_builder(
    cert_type: CertType,
    key: &PublicKey,
    serial: u64,
    key_id: &str,
    principals: &[String],
    (valid_after, valid_before): (u64, u64),
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<Builder, SignError> {
    if principals.is_empty() {
        return Err(SignError::NoPrincipals);
    }
    if valid_before <= valid_after {
        return Err(SignError::EmptyValidity);
    }

    let mut builder =
        Builder::new_with_random_nonce(rng, key.key_data().clone(), valid_after, valid_before)
            .map_err(library_error)?;
    builder
        .serial(serial)
        .map_err(library_error)?
        .key_id(key_id)
        .map_err(library_error)?
        .cert_type(cert_type)
        .map_err(library_error)?;
    for principal in principals {
        builder
            .valid_principal(principal.clone())
            .map_err(library_error)?;
    }
    Ok(builder)
}

/// Everything a host certificate will say. Built by the host enrolment from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertificateOrder {
    /// The host's key.
    pub host_key: PublicKey,
    /// Serial allocated by the store.
    pub serial: u64,
    /// Key ID.
    pub key_id: String,
    /// Host names; never empty.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds.
    pub valid_before: u64,
}

enum PrivateFileError {
    Io(String),
    Exposed(u32),
}

fn check_private_file(path: &Path) -> Result<(), PrivateFileError> {
    let metadata =
        std::fs::metadata(path).map_err(|error| PrivateFileError::Io(error.to_string()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Exposed(mode));
    }
    Ok(())
}

/// Reads a secret file (a passphrase) that must not be readable by group or others; the
/// trailing newline is dropped.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, String> {
    check_private_file(path).map_err(|error| match error {
        PrivateFileError::Io(message) => format!("{}: {message}", path.display()),
        PrivateFileError::Exposed(mode) => format!(
            "{} is readable by other users (mode {mode:o}); run `chmod 600` on it",
            path.display()
        ),
    })?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Parses and checks a requester's public key (`authorized_keys` format).
pub fn parse_subject_key(text: &str) -> Result<PublicKey, SubjectKeyError> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err(SubjectKeyError::NotOneLine);
    }
    let first_word = text.split_whitespace().next().unwrap_or_default();
    if first_word.ends_with("-cert-v01@openssh.com") {
        return Err(SubjectKeyError::IsCertificate);
    }
    let public_key = PublicKey::from_openssh(text).map_err(|_| SubjectKeyError::Unparsable)?;

    match public_key.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(rsa) => {
            let modulus = rsa.n.as_positive_bytes().unwrap_or_default();
            let bits = modulus.len() * 8
                - modulus
                    .first()
                    .map_or(0, |top| top.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(SubjectKeyError::WeakRsa(bits));
            }
        }
        other => {
            return Err(SubjectKeyError::Algorithm(other.algorithm().to_string()));
        }
    }
    Ok(public_key)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn order(subject: &PrivateKey) -> CertificateOrder {
        CertificateOrder {
            subject_key: subject.public_key().clone(),
            serial: 7,
            key_id: "alice@example.com/g-1/7".into(),
            principals: vec!["root@db-1".into()],
            valid_after: 1_800_000_000,
            valid_before: 1_800_001_800,
            extensions: vec!["permit-pty".into()],
            critical_options: BTreeMap::from([("source-address".into(), "10.0.0.1/32".into())]),
        }
    }

    #[test]
    fn signs_exactly_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaKey::generate(&dir.path().join("ca"), None).unwrap();
        let subject = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);

        let certificate = ca.sign(&order(&subject), &mut rng).unwrap();

        assert_eq!(certificate.serial(), 7);
        assert_eq!(certificate.key_id(), "alice@example.com/g-1/7");
        assert_eq!(certificate.valid_principals(), ["root@db-1"]);
        assert_eq!(certificate.valid_after(), 1_800_000_000);
        assert_eq!(certificate.valid_before(), 1_800_001_800);
        assert_eq!(certificate.cert_type(), CertType::User);
        assert_eq!(certificate.extensions().len(), 1);
        assert_eq!(
            certificate
                .critical_options()
                .get("source-address")
                .map(String::as_str),
            Some("10.0.0.1/32")
        );
        let fingerprints = [ca.public_key().fingerprint(HashAlg::Sha256)];
        certificate
            .validate_at(1_800_000_100, &fingerprints)
            .unwrap();
    }

    #[test]
    fn refuses_orders_wider_than_intended() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaKey::generate(&dir.path().join("ca"), None).unwrap();
        let subject = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);

        let mut no_principals = order(&subject);
        no_principals.principals.clear();
        let mut inverted = order(&subject);
        inverted.valid_before = inverted.valid_after;

        assert_eq!(
            ca.sign(&no_principals, &mut rng),
            Err(SignError::NoPrincipals)
        );
        assert_eq!(ca.sign(&inverted, &mut rng), Err(SignError::EmptyValidity));
    }

    #[test]
    fn key_file_is_private_and_encrypted_keys_need_their_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        let created = CaKey::generate(&path, Some("correct horse")).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            CaKey::load(&path, None),
            Err(KeyError::Passphrase { .. })
        ));
        let wrong = Zeroizing::new("wrong".to_owned());
        assert!(matches!(
            CaKey::load(&path, Some(&wrong)),
            Err(KeyError::Passphrase { .. })
        ));
        let right = Zeroizing::new("correct horse".to_owned());
        let loaded = CaKey::load(&path, Some(&right)).unwrap();
        assert_eq!(loaded.fingerprint(), created.fingerprint());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            CaKey::load(&path, Some(&right)),
            Err(KeyError::Exposed { .. })
        ));
        assert!(CaKey::generate(&path, None).is_err(), "must not overwrite");
    }

    #[test]
    fn subject_keys_are_checked() {
        let ed25519 = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let line = ed25519.public_key().to_openssh().unwrap();
        assert!(parse_subject_key(&line).is_ok());

        assert_eq!(
            parse_subject_key("ssh-ed25519-cert-v01@openssh.com AAAA"),
            Err(SubjectKeyError::IsCertificate)
        );
        assert_eq!(
            parse_subject_key("not a key"),
            Err(SubjectKeyError::Unparsable)
        );
        assert_eq!(parse_subject_key(""), Err(SubjectKeyError::Unparsable));
        // A 1024-bit RSA key from the real ssh-keygen.
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("weak");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "1024", "-N", "", "-f"])
            .arg(&key_path)
            .status()
            .unwrap();
        assert!(status.success());
        let weak_rsa = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
        assert_eq!(
            parse_subject_key(&weak_rsa),
            Err(SubjectKeyError::WeakRsa(1024))
        );
    }
}
