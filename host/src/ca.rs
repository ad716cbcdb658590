//! The CA's API as the agent calls it: the KRL (plain and long-polled), enrolment, and the
//! refresh signed with the host key. Every call is bounded in time.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use jit_proto::revocation::{
    HostConfig, HostEnrollRequest, HostRefreshRequest, SignedHostRequest, HOST_SIGNATURE_NAMESPACE,
};
use jit_proto::sessions::SessionReportAnswer;
use jit_proto::ErrorBody;
use rand::RngCore;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

/// Time for a call beyond what the CA is asked to wait.
const CALL_MARGIN: Duration = Duration::from_secs(15);

/// Why a call to the CA failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The server URL is unusable.
    #[error("server URL `{0}` must start with https:// (or http:// for a loopback test)")]
    BadServer(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// The CA bundle given to `setup --ca-bundle` cannot be used.
    #[error(transparent)]
    Bundle(#[from] jit_trust::BundleError),
    /// The CA's TLS certificate does not chain to a trusted root. Not retried: waiting does
    /// not change it.
    #[error(
        "the TLS certificate of the CA at {url} is not trusted ({problem}); if the CA uses a \
         private root, run `jit-host setup` with --ca-bundle and its PEM file"
    )]
    Untrusted {
        /// The URL called.
        url: String,
        /// rustls' reason, e.g. `UnknownIssuer`.
        problem: String,
    },
    /// The CA did not answer in time, or the connection failed.
    #[error("cannot reach the CA at {url}: {message}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport failure.
        message: String,
    },
    /// The CA answered with an error.
    #[error("the CA refused ({status} {code}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// One line.
        message: String,
    },
    /// The CA answered with something unexpected.
    #[error("the CA at {url} answered with an unexpected body (HTTP {status})")]
    BadResponse {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The refresh could not be signed.
    #[error("cannot sign the refresh request: {0}")]
    Signing(String),
}

/// The answer to a KRL poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KrlFetch {
    /// A KRL, not yet checked.
    Changed(Vec<u8>),
    /// The version named is still current.
    NotModified,
}

/// A connection to the CA.
#[derive(Debug, Clone)]
pub struct CaClient {
    base: String,
    http: reqwest::Client,
}

impl CaClient {
    /// A client for the CA at `server`, trusting the built-in roots plus the certificates of
    /// the PEM file `ca_bundle` when one is given.
    pub fn new(server: &str, ca_bundle: Option<&Path>) -> Result<CaClient, CaError> {
        let base = server.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CaError::BadServer(server.to_owned()));
        }
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("jit-host/", env!("CARGO_PKG_VERSION")));
        let http = jit_trust::add_ca_bundle(builder, ca_bundle)?
            .build()
            .map_err(|error| CaError::Setup(error.to_string()))?;
        Ok(CaClient { base, http })
    }

    /// The CA's base URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// `GET /v1/krl`: with `known`, asks the CA to answer 304 while that version is current,
    /// waiting up to `wait` for a newer one.
    pub async fn krl(&self, known: Option<u64>, wait: Duration) -> Result<KrlFetch, CaError> {
        let url = if wait.is_zero() {
            format!("{}/v1/krl", self.base)
        } else {
            format!("{}/v1/krl?wait={}", self.base, wait.as_secs())
        };
        let mut call = self.http.get(&url).timeout(wait + CALL_MARGIN);
        if let Some(version) = known {
            call = call.header(IF_NONE_MATCH, format!("\"{version}\""));
        }

        let response = call
            .send()
            .await
            .map_err(|error| unreachable(&url, &error))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(KrlFetch::NotModified);
        }
        let has_etag = response.headers().contains_key(ETAG);
        let body = response
            .bytes()
            .await
            .map_err(|error| unreachable(&url, &error))?;
        if !status.is_success() {
            return Err(rejection(&url, status, &body));
        }
        if !has_etag {
            return Err(CaError::BadResponse {
                url,
                status: status.as_u16(),
            });
        }
        Ok(KrlFetch::Changed(body.to_vec()))
    }

    /// `POST /v1/hosts/enroll`.
    pub async fn enroll(&self, request: &HostEnrollRequest) -> Result<HostConfig, CaError> {
        self.post_json("v1/hosts/enroll", request).await
    }

    /// `POST /v1/hosts/refresh`, signed with the host key.
    pub async fn refresh(&self, request: &SignedHostRequest) -> Result<HostConfig, CaError> {
        self.post_json("v1/hosts/refresh", request).await
    }

    /// `POST /v1/hosts/sessions`: a session report, signed with the host key.
    pub async fn report_sessions(
        &self,
        request: &SignedHostRequest,
    ) -> Result<SessionReportAnswer, CaError> {
        self.post_json("v1/hosts/sessions", request).await
    }

    async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CaError> {
        let url = format!("{}/{path}", self.base);
        let response = self
            .http
            .post(&url)
            .timeout(CALL_MARGIN)
            .json(body)
            .send()
            .await
            .map_err(|error| unreachable(&url, &error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| unreachable(&url, &error))?;
        if !status.is_success() {
            return Err(rejection(&url, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|_| CaError::BadResponse {
            url,
            status: status.as_u16(),
        })
    }
}

/// A refresh statement for host `name` at `now`, signed with the host key.
pub fn sign_refresh(
    host_key: &PrivateKey,
    name: &str,
    now: DateTime<Utc>,
) -> Result<SignedHostRequest, CaError> {
    let statement = HostRefreshRequest {
        name: name.to_owned(),
        signed_at: now.timestamp(),
        nonce: new_nonce(),
    };
    sign_statement(host_key, HOST_SIGNATURE_NAMESPACE, &statement)
}

/// Random text for a signed statement, so that it cannot be replayed.
pub fn new_nonce() -> String {
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce)
}

/// `statement` as JSON text, signed with the host key in `namespace` (SSHSIG).
pub fn sign_statement<T: serde::Serialize>(
    host_key: &PrivateKey,
    namespace: &str,
    statement: &T,
) -> Result<SignedHostRequest, CaError> {
    let payload =
        serde_json::to_string(statement).map_err(|error| CaError::Signing(error.to_string()))?;
    let signature = host_key
        .sign(namespace, HashAlg::Sha512, payload.as_bytes())
        .and_then(|signature| signature.to_pem(LineEnding::LF))
        .map_err(|error| CaError::Signing(error.to_string()))?;
    Ok(SignedHostRequest { payload, signature })
}

fn unreachable(url: &str, error: &reqwest::Error) -> CaError {
    if let Some(problem) = jit_trust::untrusted_certificate(error) {
        return CaError::Untrusted {
            url: url.to_owned(),
            problem,
        };
    }
    let message = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    CaError::Unreachable {
        url: url.to_owned(),
        message,
    }
}

fn rejection(url: &str, status: StatusCode, body: &[u8]) -> CaError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => CaError::Rejected {
            status: status.as_u16(),
            code: error.error,
            message: error.message.replace(['\n', '\r'], " "),
        },
        Err(_) => CaError::BadResponse {
            url: url.to_owned(),
            status: status.as_u16(),
        },
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;
    use ssh_key::Algorithm;

    use super::*;

    #[test]
    fn servers_must_be_http_urls() {
        assert!(CaClient::new("ca.example.com", None).is_err());
        let client = CaClient::new("https://ca.example.com/", None).unwrap();
        assert_eq!(client.server(), "https://ca.example.com");
    }

    #[test]
    fn refreshes_verify_with_the_host_key() {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();

        let signed = sign_refresh(&key, "db-1", now).unwrap();

        let signature = ssh_key::SshSig::from_pem(&signed.signature).unwrap();
        key.public_key()
            .verify(
                HOST_SIGNATURE_NAMESPACE,
                signed.payload.as_bytes(),
                &signature,
            )
            .unwrap();
        let statement: HostRefreshRequest = serde_json::from_str(&signed.payload).unwrap();
        assert_eq!(statement.name, "db-1");
        assert_eq!(statement.signed_at, 1_800_000_000);
        assert_eq!(statement.nonce.len(), 32);
    }
}
