//! Which credential opened a connection: sshd's `ExposeAuthInfo` file.
//!
//! With `ExposeAuthInfo yes` (the agent's drop-in sets it), sshd writes the methods that
//! authenticated a connection to a file it names in the session's `SSH_USER_AUTH` variable, one
//! line each: `publickey ssh-ed25519-cert-v01@openssh.com AAAA…` for a certificate,
//! `publickey ssh-ed25519 AAAA…` for a plain key, `password` or `keyboard-interactive`
//! otherwise. The file belongs to the logged-in user and sshd removes it when the connection
//! ends. A connection counts as the CA's only when a line holds a user certificate whose
//! signature verifies and whose signing key is one of the trusted CA keys.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ssh_key::certificate::CertType;
use ssh_key::{Certificate, Fingerprint, HashAlg};

use super::procfs::{env_value, path_seen_by, read_environ, Connection, ProcessTable};

/// The variable sshd names the file in.
pub const AUTH_INFO_VARIABLE: &str = "SSH_USER_AUTH";

/// The variable holding `client_ip client_port server_ip server_port`.
const CONNECTION_VARIABLE: &str = "SSH_CONNECTION";

/// The longest auth info file read; sshd's holds a few keys at most.
const MAX_AUTH_INFO_BYTES: u64 = 64 * 1024;

/// What opened a connection, as far as the agent can tell.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// A certificate from this CA.
    Ours {
        /// The certificate.
        certificate: Box<Certificate>,
        /// The `SSH_USER_AUTH` path, which every process of the session inherits.
        auth_path: String,
        /// `ip:port` the connection came from.
        source_address: Option<String>,
    },
    /// Anything else: a plain key, another CA's certificate, a password. Never touched.
    Foreign,
    /// Nothing to read yet: no session process, no variable, or no file.
    Unknown,
}

/// Reads the evidence for `connection` from the environment of its session processes.
pub fn evidence(
    proc_root: &Path,
    table: &ProcessTable,
    connection: &Connection,
    trusted: &[Fingerprint],
) -> Evidence {
    for child in table.children(connection.pid) {
        let Some(environ) = read_environ(proc_root, child.pid) else {
            continue;
        };
        let Some(auth_path) = env_value(&environ, AUTH_INFO_VARIABLE) else {
            continue;
        };
        let Some(text) =
            read_auth_info(&path_seen_by(proc_root, child.pid, &auth_path), connection)
        else {
            continue;
        };
        let source_address = env_value(&environ, CONNECTION_VARIABLE)
            .as_deref()
            .and_then(source_address);
        return match certificate_of_ca(&text, trusted) {
            Some(certificate) => Evidence::Ours {
                certificate: Box::new(certificate),
                auth_path,
                source_address,
            },
            None => Evidence::Foreign,
        };
    }
    Evidence::Unknown
}

/// The file's text, when it is a plain file of the connection's user of a sane size.
fn read_auth_info(path: &Path, connection: &Connection) -> Option<String> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    let plausible = metadata.is_file()
        && metadata.uid() == connection.uid
        && metadata.nlink() == 1
        && metadata.len() <= MAX_AUTH_INFO_BYTES;
    if !plausible {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The first user certificate in an auth info text that verifies and is signed by one of
/// `trusted`.
pub fn certificate_of_ca(text: &str, trusted: &[Fingerprint]) -> Option<Certificate> {
    text.lines()
        .filter_map(|line| line.strip_prefix("publickey "))
        .filter(|key| {
            let key_type = key.split_whitespace().next().unwrap_or_default();
            key_type.ends_with("-cert-v01@openssh.com")
        })
        .filter_map(|key| Certificate::from_openssh(key.trim()).ok())
        .find(|certificate| {
            let signer = certificate.signature_key().fingerprint(HashAlg::Sha256);
            // PROTOCOL.certkeys: the signature covers every field, so a verified one makes
            // the serial, key ID and validity the CA's.
            certificate.cert_type() == CertType::User
                && trusted.contains(&signer)
                && certificate.verify_signature().is_ok()
        })
}

/// `ip:port` from `SSH_CONNECTION`'s `client_ip client_port server_ip server_port`.
fn source_address(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    let (ip, port) = (words.next()?, words.next()?);
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, port).to_string())
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;
    use ssh_key::{Algorithm, PrivateKey};

    use super::*;

    fn user_certificate(ca: &PrivateKey, serial: u64) -> String {
        crate::sessions::tests::certificate(ca, serial, 3600)
            .to_openssh()
            .unwrap()
    }

    #[test]
    fn only_certificates_of_a_trusted_key_count() {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let other_ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let trusted = [ca.public_key().fingerprint(HashAlg::Sha256)];
        let ours = user_certificate(&ca, 17);
        let theirs = user_certificate(&other_ca, 18);
        let plain_key = other_ca.public_key().to_openssh().unwrap();

        let found = certificate_of_ca(&format!("publickey {ours}\n"), &trusted).unwrap();
        let second = certificate_of_ca(
            &format!("password\npublickey {theirs}\npublickey {ours}\n"),
            &trusted,
        );

        assert_eq!(found.serial(), 17);
        assert_eq!(second.map(|certificate| certificate.serial()), Some(17));
        assert!(certificate_of_ca(&format!("publickey {theirs}\n"), &trusted).is_none());
        assert!(certificate_of_ca(&format!("publickey {plain_key}\n"), &trusted).is_none());
        assert!(certificate_of_ca("keyboard-interactive\n", &trusted).is_none());
    }

    #[test]
    fn a_certificate_altered_after_signing_does_not_count() {
        use base64::Engine;
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let trusted = [ca.public_key().fingerprint(HashAlg::Sha256)];
        let line = user_certificate(&ca, 17);
        let (key_type, blob) = line.split_once(' ').unwrap();
        let engine = base64::engine::general_purpose::STANDARD;
        let mut bytes = engine
            .decode(blob.split_whitespace().next().unwrap())
            .unwrap();
        // A user rewriting their own auth info file to claim serial 16 (PROTOCOL.certkeys: a
        // uint64 after the nonce and the key).
        let serial_at = bytes
            .windows(8)
            .position(|window| window == 17u64.to_be_bytes())
            .unwrap();
        bytes[serial_at + 7] = 16;
        let altered = format!("{key_type} {}", engine.encode(&bytes));
        assert_eq!(Certificate::from_openssh(&altered).unwrap().serial(), 16);

        assert!(certificate_of_ca(&format!("publickey {altered}\n"), &trusted).is_none());
    }

    #[test]
    fn the_source_is_the_client_half_of_ssh_connection() {
        assert_eq!(
            source_address("127.0.0.1 50514 127.0.0.1 22").as_deref(),
            Some("127.0.0.1:50514")
        );
        assert_eq!(
            source_address("::1 50514 ::1 22").as_deref(),
            Some("[::1]:50514")
        );
        assert_eq!(source_address("junk"), None);
    }
}
