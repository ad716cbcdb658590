//! What the agent agrees to install. Everything the CA sends is checked before it reaches a
//! file sshd reads, and anything doubtful is refused, keeping the last good copy: a KRL must
//! parse and be newer than the installed one; CA keys must be plain public keys; principals
//! files are named after valid Unix users and hold one principal a line; the host certificate
//! must be a host certificate for this host's key, signed by a trusted CA key, valid now.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use jit_proto::clip_for_display;
use ssh_key::certificate::CertType;
use ssh_key::{Certificate, PublicKey};

/// Why something from the CA is not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// An empty KRL file would read as "nothing revoked".
    #[error("refusing an empty KRL: sshd would read it as nothing revoked")]
    EmptyKrl,
    /// The KRL does not parse.
    #[error("refusing an unparsable KRL: {0}")]
    UnparsableKrl(String),
    /// The KRL is older than the installed one.
    #[error("refusing KRL version {offered}: version {installed} is installed")]
    OlderKrl {
        /// Version offered.
        offered: u64,
        /// Version installed.
        installed: u64,
    },
    /// No CA key at all: sshd would then refuse every certificate.
    #[error("refusing an empty list of CA keys")]
    NoCaKeys,
    /// A CA key line is not a plain public key.
    #[error("refusing CA key {0}: not a plain OpenSSH public key")]
    BadCaKey(usize),
    /// A principals file name that is not a Unix user name.
    #[error("refusing principals for `{0}`: not a valid Unix user name")]
    BadUnixUser(String),
    /// A principal with whitespace, control characters or nothing in it.
    #[error("refusing principal `{0}`: it must be one printable word")]
    BadPrincipal(String),
    /// The host certificate does not fit this host.
    #[error("refusing the host certificate: {0}")]
    BadHostCertificate(&'static str),
}

/// What to do with an offered KRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KrlVerdict {
    /// Newer than the installed one (or none is installed): install it.
    Install(u64),
    /// The installed version already.
    AlreadyInstalled(u64),
}

/// Checks a KRL offered by the CA against the installed version.
pub fn check_krl(bytes: &[u8], installed: Option<u64>) -> Result<KrlVerdict, Refusal> {
    if bytes.is_empty() {
        return Err(Refusal::EmptyKrl);
    }
    let krl =
        jit_ca::krl::parse(bytes).map_err(|error| Refusal::UnparsableKrl(error.to_string()))?;

    let offered = krl.version();
    match installed {
        Some(installed) if offered < installed => Err(Refusal::OlderKrl { offered, installed }),
        Some(installed) if offered == installed => Ok(KrlVerdict::AlreadyInstalled(offered)),
        _ => Ok(KrlVerdict::Install(offered)),
    }
}

/// The version of an installed KRL, or `None` when there is none or it does not parse.
pub fn installed_krl_version(bytes: Option<&[u8]>) -> Option<u64> {
    let bytes = bytes.filter(|bytes| !bytes.is_empty())?;
    jit_ca::krl::parse(bytes).ok().map(|krl| krl.version())
}

/// The `TrustedUserCAKeys` file for `lines`, refusing an empty list or a line that is not a
/// plain public key.
pub fn ca_keys_file(lines: &[String]) -> Result<String, Refusal> {
    if lines.is_empty() {
        return Err(Refusal::NoCaKeys);
    }
    let mut text = String::new();
    for (position, line) in lines.iter().enumerate() {
        let line = line.trim();
        let key_type = line.split_whitespace().next().unwrap_or_default();
        if key_type.ends_with("-cert-v01@openssh.com") || PublicKey::from_openssh(line).is_err() {
            return Err(Refusal::BadCaKey(position + 1));
        }
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

/// The content of each principals file, refusing unusable user names or principals.
pub fn principals_files(
    principals: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut files = BTreeMap::new();
    for (unix_user, list) in principals {
        // The name becomes a file name: only what validate_unix_user accepts can be one.
        jit_proto::validate_unix_user(unix_user)
            .map_err(|_| Refusal::BadUnixUser(clip_for_display(unix_user)))?;
        let mut text = String::new();
        for principal in list {
            let usable = !principal.is_empty()
                && principal
                    .chars()
                    .all(|character| character.is_ascii_graphic());
            if !usable {
                return Err(Refusal::BadPrincipal(clip_for_display(principal)));
            }
            text.push_str(principal);
            text.push('\n');
        }
        files.insert(unix_user.clone(), text);
    }
    Ok(files)
}

/// Checks that `text` is a host certificate of `host_key` naming `name`, signed by one of
/// `ca_keys` and valid at `now`.
pub fn check_host_certificate(
    text: &str,
    host_key: &PublicKey,
    name: &str,
    ca_keys: &[String],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let certificate = Certificate::from_openssh(text.trim())
        .map_err(|_| Refusal::BadHostCertificate("unparsable"))?;
    if certificate.cert_type() != CertType::Host {
        return Err(Refusal::BadHostCertificate("not a host certificate"));
    }
    if certificate.public_key() != host_key.key_data() {
        return Err(Refusal::BadHostCertificate("it certifies another key"));
    }
    if !certificate
        .valid_principals()
        .iter()
        .any(|principal| principal == name)
    {
        return Err(Refusal::BadHostCertificate("it does not name this host"));
    }

    let fingerprints: Vec<_> = ca_keys
        .iter()
        .filter_map(|line| PublicKey::from_openssh(line.trim()).ok())
        .map(|key| key.fingerprint(ssh_key::HashAlg::Sha256))
        .collect();
    let now = u64::try_from(now.timestamp()).unwrap_or(0);
    certificate.validate_at(now, &fingerprints).map_err(|_| {
        Refusal::BadHostCertificate("not signed by a trusted CA key, or not valid now")
    })
}

#[cfg(test)]
mod tests {
    use jit_ca::krl::{encode, KrlBuilder};
    use rand::rngs::OsRng;
    use ssh_key::{Algorithm, PrivateKey};

    use super::*;

    fn krl(version: u64) -> Vec<u8> {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut builder = KrlBuilder::new(version, 1_800_000_000);
        builder.revoke_serial(ca.public_key(), 7).unwrap();
        encode(&builder.build().unwrap())
    }

    #[test]
    fn only_parsable_newer_krls_are_installed() {
        assert_eq!(check_krl(&krl(5), None), Ok(KrlVerdict::Install(5)));
        assert_eq!(check_krl(&krl(5), Some(4)), Ok(KrlVerdict::Install(5)));
        assert_eq!(
            check_krl(&krl(5), Some(5)),
            Ok(KrlVerdict::AlreadyInstalled(5))
        );
        assert_eq!(
            check_krl(&krl(5), Some(6)),
            Err(Refusal::OlderKrl {
                offered: 5,
                installed: 6
            })
        );
        assert_eq!(check_krl(b"", None), Err(Refusal::EmptyKrl));
        assert!(matches!(
            check_krl(b"<html>502</html>", None),
            Err(Refusal::UnparsableKrl(_))
        ));
        let mut truncated = krl(5);
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(
            check_krl(&truncated, None),
            Err(Refusal::UnparsableKrl(_))
        ));
    }

    #[test]
    fn the_installed_version_is_read_from_the_file() {
        assert_eq!(installed_krl_version(Some(&krl(9))), Some(9));
        assert_eq!(installed_krl_version(Some(b"")), None);
        assert_eq!(installed_krl_version(Some(b"junk")), None);
        assert_eq!(installed_krl_version(None), None);
    }

    #[test]
    fn ca_keys_must_be_plain_keys() {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let line = key.public_key().to_openssh().unwrap();

        assert_eq!(
            ca_keys_file(std::slice::from_ref(&line)).unwrap(),
            format!("{line}\n")
        );
        assert_eq!(ca_keys_file(&[]), Err(Refusal::NoCaKeys));
        assert_eq!(
            ca_keys_file(&[line, "ssh-ed25519 junk".into()]),
            Err(Refusal::BadCaKey(2))
        );
    }

    #[test]
    fn principals_files_cannot_escape_their_directory() {
        let good = BTreeMap::from([("root".to_owned(), vec!["root@db-1".to_owned()])]);
        let escaping = BTreeMap::from([("../etc".to_owned(), vec!["x".to_owned()])]);
        let two_words = BTreeMap::from([("root".to_owned(), vec!["a b".to_owned()])]);

        assert_eq!(principals_files(&good).unwrap()["root"], "root@db-1\n");
        assert!(matches!(
            principals_files(&escaping),
            Err(Refusal::BadUnixUser(_))
        ));
        assert!(matches!(
            principals_files(&two_words),
            Err(Refusal::BadPrincipal(_))
        ));
    }
}
