//! The certificate every benchmark signs, taken from one the CA under test issued, so the
//! in-process ceiling and the peers sign exactly the same shape.

use ssh_key::Certificate;

/// What a benchmark certificate says, apart from its key, serial and nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertShape {
    /// The key ID, verbatim (the same length for every signer).
    pub key_id: String,
    /// Principals.
    pub principals: Vec<String>,
    /// Seconds before issuance the validity starts (the CA's back-dating).
    pub backdate_secs: u64,
    /// Seconds of validity after issuance.
    pub lifetime_secs: u64,
    /// Extension names, all with empty values (OpenSSH's standard extensions).
    pub extensions: Vec<String>,
}

impl CertShape {
    /// The shape of `certificate`, issued at `issued_at` (Unix seconds).
    pub fn of(certificate: &Certificate, issued_at: u64) -> CertShape {
        CertShape {
            key_id: certificate.key_id().to_owned(),
            principals: certificate.valid_principals().to_vec(),
            backdate_secs: issued_at.saturating_sub(certificate.valid_after()),
            lifetime_secs: certificate.valid_before().saturating_sub(issued_at),
            extensions: certificate.extensions().keys().cloned().collect(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "Ed25519 CA and subject keys, user certificate, key ID of {} bytes, principals {}, \
             valid from {} s before issuance to {} min after, extensions {}, no critical options",
            self.key_id.len(),
            self.principals.join(","),
            self.backdate_secs,
            self.lifetime_secs / 60,
            self.extensions.join(",")
        )
    }
}
