//! HTTPS for the CA, and the rule that keeps plain HTTP on loopback.
//!
//! Every call carries a bearer ID token, so plain HTTP is only served where no network can
//! read it: on a loopback address, or where the operator states that a TLS-terminating proxy
//! stands in front (`[http] allow_plain_http = true`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{HttpConfig, TlsConfig};
use crate::signer::read_secret_file;

/// Why the CA cannot serve with the transport it was configured for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// No TLS, on an address other machines can reach, and no explicit permission.
    #[error(
        "refusing to serve plain HTTP on {listen}: bearer tokens would cross the network in \
         clear; configure [tls] cert_file and key_file, or set [http] allow_plain_http = true \
         when a TLS proxy on this host terminates HTTPS"
    )]
    PlainHttpRefused {
        /// The configured listen address.
        listen: SocketAddr,
    },
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("[tls] cert_file {}: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read, is readable by others, or holds no PEM private key.
    #[error("[tls] key_file: {reason}")]
    Key {
        /// What is wrong with it; names the file.
        reason: String,
    },
    /// rustls refused the certificate and key together (a key that does not match, say).
    #[error("[tls] cert_file {} and key_file {} cannot be used together: {reason}",
        cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's explanation.
        reason: String,
    },
}

/// Refuses plain HTTP on a non-loopback `listen` address unless `http.allow_plain_http`.
pub fn check_transport(
    listen: SocketAddr,
    tls: Option<&TlsConfig>,
    http: &HttpConfig,
) -> Result<(), TlsError> {
    if tls.is_some() || listen.ip().is_loopback() {
        return Ok(());
    }
    if !http.allow_plain_http {
        return Err(TlsError::PlainHttpRefused { listen });
    }
    tracing::warn!(
        target: "security",
        %listen,
        "serving plain HTTP on a non-loopback address ([http] allow_plain_http = true)"
    );
    Ok(())
}

/// Reads the certificate chain and key of `config` and builds the acceptor (TLS 1.2 and 1.3,
/// HTTP/1.1 by ALPN, no client certificates).
pub fn load_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let chain = read_chain(&config.cert_file)?;
    let key = read_key(&config.key_file)?;
    let unusable = |reason: String| TlsError::Unusable {
        cert: config.cert_file.clone(),
        key: config.key_file.clone(),
        reason,
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| unusable(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| unusable(error.to_string()))?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server_config)))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let refuse = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| refuse(error.to_string()))?;
    if chain.is_empty() {
        return Err(refuse("holds no CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // Same rule as the CA key: a private key others can read is refused, not used.
    let text = read_secret_file(path).map_err(|reason| TlsError::Key { reason })?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|error| TlsError::Key {
        reason: format!("{}: {error}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(allow_plain_http: bool) -> HttpConfig {
        HttpConfig {
            allow_plain_http,
            ..HttpConfig::default()
        }
    }

    #[test]
    fn plain_http_stays_on_loopback_unless_allowed() {
        let tls = TlsConfig {
            cert_file: "cert.pem".into(),
            key_file: "key.pem".into(),
        };
        let loopback_v4: SocketAddr = "127.0.0.1:8700".parse().unwrap();
        let loopback_v6: SocketAddr = "[::1]:8700".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8700".parse().unwrap();

        assert!(check_transport(loopback_v4, None, &http(false)).is_ok());
        assert!(check_transport(loopback_v6, None, &http(false)).is_ok());
        assert!(check_transport(everywhere, Some(&tls), &http(false)).is_ok());
        assert!(check_transport(everywhere, None, &http(true)).is_ok());

        let refused = check_transport(everywhere, None, &http(false)).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("allow_plain_http"), "{message}");
        assert!(message.contains("0.0.0.0:8700"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let absent = TlsConfig {
            cert_file: dir.path().join("absent.pem"),
            key_file: empty.clone(),
        };
        let no_blocks = TlsConfig {
            cert_file: empty.clone(),
            key_file: empty,
        };

        let error = load_acceptor(&absent).err().unwrap().to_string();
        assert!(
            error.contains("cert_file") && error.contains("absent.pem"),
            "{error}"
        );
        let error = load_acceptor(&no_blocks).err().unwrap().to_string();
        assert!(error.contains("no CERTIFICATE block"), "{error}");
    }
}
