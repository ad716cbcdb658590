//! How the CA's two kinds of clients, `jit` and `jit-host`, decide to trust the CA over HTTPS.
//!
//! Both verify the CA's certificate against the Mozilla roots built into reqwest, plus the
//! certificates of an optional PEM bundle for a CA whose certificate comes from a private root.
//! When the CA's certificate is refused, both say so in words that name the setting to change,
//! rather than as a generic connection failure; [`untrusted_certificate`] recognises that case
//! among reqwest's transport errors.

use std::error::Error;
use std::path::{Path, PathBuf};

/// A CA bundle that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the CA bundle {}: {reason}", path.display())]
pub struct BundleError {
    /// The bundle file.
    pub path: PathBuf,
    /// What is wrong with it: unreadable, not PEM, or without a certificate.
    pub reason: String,
}

/// Adds every certificate of the PEM file `ca_bundle` to the roots `builder` trusts; returns
/// `builder` unchanged without a bundle. A bundle that cannot be read, or holds no
/// certificate, is an error: a configured bundle that silently trusted nothing extra would
/// only fail later, less clearly.
pub fn add_ca_bundle(
    mut builder: reqwest::ClientBuilder,
    ca_bundle: Option<&Path>,
) -> Result<reqwest::ClientBuilder, BundleError> {
    let Some(path) = ca_bundle else {
        return Ok(builder);
    };

    let refuse = |reason: String| BundleError {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| refuse(error.to_string()))?;
    let roots =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| refuse(error.to_string()))?;
    if roots.is_empty() {
        return Err(refuse("holds no PEM certificate".into()));
    }

    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    Ok(builder)
}

/// rustls' reason for refusing the server's certificate (`UnknownIssuer`, `Expired`, ...) when
/// that refusal is somewhere in `error`'s chain of causes; `None` for any other failure.
///
/// The TLS connector wraps the rustls error in `io::Error`s, and `io::Error::source()` skips
/// the error it wraps, so each `io::Error` met on the way is unwrapped by hand.
pub fn untrusted_certificate(error: &(dyn Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        let mut unwrapped = current;
        while let Some(inner) = unwrapped
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            unwrapped = inner;
        }
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            unwrapped.downcast_ref::<rustls::Error>()
        {
            return Some(format!("{problem:?}"));
        }
        cause = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_bundle_is_named_with_its_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();

        for (path, expected) in [(&missing, "No such file"), (&empty, "no PEM certificate")] {
            let error = add_ca_bundle(reqwest::Client::builder(), Some(path)).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(expected), "{message}");
        }
        assert!(add_ca_bundle(reqwest::Client::builder(), None).is_ok());
    }

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors() {
        let refusal = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(std::io::Error::other(refusal));
        let unrelated = std::io::Error::other("connection refused");

        assert_eq!(
            untrusted_certificate(&wrapped).as_deref(),
            Some("UnknownIssuer")
        );
        assert_eq!(untrusted_certificate(&unrelated), None);
    }
}
