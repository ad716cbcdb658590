//! The CA's HTTP API, as the client calls it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jit_proto::{
    AccessRequestView, ApproveBody, ClientConfig, CreateAccessRequest, DenyBody, ErrorBody,
    ExtendBody, GrantList, RequestHistory, ReviewList,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::challenge::{parse_challenge, StepUpChallenge};
use crate::config::ServerUrl;
use crate::secret::Secret;

/// How long one call to the CA or the identity provider may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle connection is kept for the next call: less than the CA's default
/// `header_read_timeout_secs` (10 s), after which the CA closes idle connections itself.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Error codes with which the CA says the bearer token itself is the problem.
const LOGIN_ERROR_CODES: [&str; 2] = ["invalid_token", "token_expired"];

/// Why a call to the CA failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The HTTP client could not be built (no TLS roots, for example).
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// The extra TLS roots (`JIT_CA_BUNDLE` or `ca_bundle`) could not be used.
    #[error("cannot use the CA bundle {}: {reason}", path.display())]
    CaBundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA's TLS certificate does not chain to a trusted root.
    #[error(
        "the TLS certificate of the CA at {url} is not trusted ({problem}); if the CA uses a \
         private root, set JIT_CA_BUNDLE or `ca_bundle` in the config file to its PEM file"
    )]
    UntrustedServer {
        /// The URL called.
        url: Url,
        /// rustls' reason, e.g. `UnknownIssuer`.
        problem: String,
    },
    /// The CA did not answer.
    #[error("cannot reach the CA at {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: Url,
        /// The root cause of the transport failure (`Connection refused`, a timeout, ...).
        reason: String,
    },
    /// The CA refused the ID token: the user must log in again.
    #[error("{message}; run `jit login`")]
    LoginRequired {
        /// The CA's explanation.
        message: String,
    },
    /// The CA wants a stronger or more recent login before it acts (RFC 9470 step-up).
    #[error("{message}")]
    StepUpRequired {
        /// The CA's explanation.
        message: String,
        /// What the new login must prove.
        challenge: StepUpChallenge,
    },
    /// The CA answered with an error body.
    #[error("{message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The CA's stable error code.
        code: String,
        /// The CA's explanation.
        message: String,
    },
    /// The CA answered with something that is not the expected JSON.
    #[error("the CA at {url} answered with an unexpected body (HTTP {status})")]
    BadResponse {
        /// The URL called.
        url: Url,
        /// The HTTP status.
        status: u16,
    },
}

/// Builds the HTTP client used for the CA and the identity provider.
///
/// Servers are verified against the Mozilla roots built into the client, plus every
/// certificate of `ca_bundle` (PEM) when one is configured. Redirects are disabled:
/// `openidconnect` requires it (a redirect could carry a request to an unintended host), and
/// the CA never redirects its API.
pub fn http_client(ca_bundle: Option<&Path>) -> Result<reqwest::Client, ApiError> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(concat!("jit/", env!("CARGO_PKG_VERSION")));
    let builder =
        jit_trust::add_ca_bundle(builder, ca_bundle).map_err(|error| ApiError::CaBundle {
            path: error.path,
            reason: error.reason,
        })?;
    builder.build().map_err(ApiError::Setup)
}

/// A connection to one CA.
#[derive(Clone, Debug)]
pub struct CaClient {
    server: ServerUrl,
    http: reqwest::Client,
}

impl CaClient {
    /// A client for the CA at `server`, sharing `http` with the login code.
    pub fn new(server: ServerUrl, http: reqwest::Client) -> Self {
        CaClient { server, http }
    }

    /// The CA's base URL.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// The HTTP client, for talking to the identity provider the CA names.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET /v1/config`: which identity provider to log in to, as which client.
    pub async fn client_config(&self) -> Result<ClientConfig, ApiError> {
        let url = self.server.endpoint("v1/config");
        self.send(url.clone(), self.http.get(url)).await
    }

    /// `POST /v1/requests`: asks for access; the answer is approved (with a certificate) or
    /// pending.
    pub async fn create_request(
        &self,
        id_token: &Secret,
        request: &CreateAccessRequest,
    ) -> Result<AccessRequestView, ApiError> {
        let url = self.server.endpoint("v1/requests");
        self.post_as(id_token, url, request).await
    }

    /// `GET /v1/requests/{request_id}`: the current state of one of the caller's requests.
    pub async fn get_request(
        &self,
        id_token: &Secret,
        request_id: &str,
    ) -> Result<AccessRequestView, ApiError> {
        self.get_as(id_token, self.nested("v1/requests", &[request_id]))
            .await
    }

    /// `GET /v1/grants`: the caller's grants, newest first.
    pub async fn list_grants(&self, id_token: &Secret) -> Result<GrantList, ApiError> {
        self.get_as(id_token, self.server.endpoint("v1/grants"))
            .await
    }

    /// `GET /v1/reviews`: the requests the caller may review now, and open break-glass
    /// reviews.
    pub async fn reviews(&self, id_token: &Secret) -> Result<ReviewList, ApiError> {
        self.get_as(id_token, self.server.endpoint("v1/reviews"))
            .await
    }

    /// `POST /v1/requests/{request_id}/approve`: one approval (or, for break-glass, the
    /// acknowledgement after the fact).
    pub async fn approve(
        &self,
        id_token: &Secret,
        request_id: &str,
        body: &ApproveBody,
    ) -> Result<AccessRequestView, ApiError> {
        let url = self.request_action(request_id, "approve");
        self.post_as(id_token, url, body).await
    }

    /// `POST /v1/requests/{request_id}/deny`: refuses the request; one denial ends it.
    pub async fn deny(
        &self,
        id_token: &Secret,
        request_id: &str,
        body: &DenyBody,
    ) -> Result<AccessRequestView, ApiError> {
        let url = self.request_action(request_id, "deny");
        self.post_as(id_token, url, body).await
    }

    /// `POST /v1/requests/{request_id}/cancel`: withdraws one of the caller's pending requests.
    pub async fn cancel(
        &self,
        id_token: &Secret,
        request_id: &str,
    ) -> Result<AccessRequestView, ApiError> {
        let url = self.request_action(request_id, "cancel");
        let call = self.http.post(url.clone()).bearer_auth(id_token.expose());
        self.send(url, call).await
    }

    /// `GET /v1/requests/{request_id}/history`: the request and every step of its life.
    pub async fn history(
        &self,
        id_token: &Secret,
        request_id: &str,
    ) -> Result<RequestHistory, ApiError> {
        self.get_as(id_token, self.request_action(request_id, "history"))
            .await
    }

    /// `POST /v1/grants/{grant_id}/extend`: asks for more time on an active grant; the answer
    /// is an extension request, approved (with the re-issued certificate) or pending.
    pub async fn extend(
        &self,
        id_token: &Secret,
        grant_id: &str,
        body: &ExtendBody,
    ) -> Result<AccessRequestView, ApiError> {
        let url = self.nested("v1/grants", &[grant_id, "extend"]);
        self.post_as(id_token, url, body).await
    }

    /// `GET url` as the holder of `id_token`.
    async fn get_as<T: DeserializeOwned>(
        &self,
        id_token: &Secret,
        url: Url,
    ) -> Result<T, ApiError> {
        let call = self.http.get(url.clone()).bearer_auth(id_token.expose());
        self.send(url, call).await
    }

    /// `POST url` with `body` as JSON, as the holder of `id_token`.
    async fn post_as<T: DeserializeOwned>(
        &self,
        id_token: &Secret,
        url: Url,
        body: &impl serde::Serialize,
    ) -> Result<T, ApiError> {
        let call = self
            .http
            .post(url.clone())
            .bearer_auth(id_token.expose())
            .json(body);
        self.send(url, call).await
    }

    fn request_action(&self, request_id: &str, action: &str) -> Url {
        self.nested("v1/requests", &[request_id, action])
    }

    /// `base` with `segments` appended; pushing a segment percent-encodes it, so an odd id
    /// cannot change the path.
    fn nested(&self, base: &str, segments: &[&str]) -> Url {
        let mut url = self.server.endpoint(base);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET /v1/audit`: one page of audit records matching `query`.
    pub async fn audit_page(
        &self,
        id_token: &Secret,
        query: &jit_proto::audit::AuditQuery,
    ) -> Result<jit_proto::audit::AuditPage, ApiError> {
        self.get_with_query("v1/audit", id_token, query).await
    }

    /// `GET /v1/audit/checkpoint`: the newest signed checkpoint of the audit log.
    pub async fn audit_checkpoint(
        &self,
        id_token: &Secret,
    ) -> Result<jit_proto::audit::Checkpoint, ApiError> {
        let url = self.server.endpoint("v1/audit/checkpoint");
        let call = self.http.get(url.clone()).bearer_auth(id_token.expose());
        self.send(url, call).await
    }

    /// `POST /v1/revocations`: revokes a grant, a certificate, a person's grants or a key.
    pub async fn revoke(
        &self,
        id_token: &Secret,
        body: &jit_proto::revocation::CreateRevocation,
    ) -> Result<jit_proto::revocation::RevocationView, ApiError> {
        let url = self.server.endpoint("v1/revocations");
        let call = self
            .http
            .post(url.clone())
            .bearer_auth(id_token.expose())
            .json(body);
        self.send(url, call).await
    }

    /// `GET /v1/sessions`: the open sessions the caller may see.
    pub async fn list_sessions(
        &self,
        id_token: &Secret,
        query: &jit_proto::sessions::SessionQuery,
    ) -> Result<jit_proto::sessions::SessionList, ApiError> {
        self.get_with_query("v1/sessions", id_token, query).await
    }

    /// `GET path?query` as the holder of `id_token`.
    async fn get_with_query<Q: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        id_token: &Secret,
        query: &Q,
    ) -> Result<T, ApiError> {
        let url = self.server.endpoint(path);
        let call = self
            .http
            .get(url.clone())
            .query(query)
            .bearer_auth(id_token.expose());
        self.send(url, call).await
    }

    /// `GET /v1/ca/keys`: the CA's trusted public keys, one `authorized_keys` line each.
    pub async fn ca_keys(&self) -> Result<Vec<String>, ApiError> {
        let url = self.server.endpoint("v1/ca/keys");
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|error| transport_failure(&url, &error))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| transport_failure(&url, &error))?;
        if !status.is_success() {
            return Err(error_from_body(&url, status, None, body.as_bytes()));
        }
        Ok(body
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: Url,
        call: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = call
            .send()
            .await
            .map_err(|error| transport_failure(&url, &error))?;
        let status = response.status();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_failure(&url, &error))?;

        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| ApiError::BadResponse {
                url,
                status: status.as_u16(),
            });
        }
        Err(error_from_body(&url, status, challenge.as_deref(), &body))
    }
}

/// Names the innermost cause of a transport failure: reqwest's own layers only repeat the URL.
fn transport_failure(url: &Url, error: &reqwest::Error) -> ApiError {
    if error.is_timeout() {
        return ApiError::Unreachable {
            url: url.clone(),
            reason: format!(
                "no answer within {}",
                jit_proto::format_duration(REQUEST_TIMEOUT)
            ),
        };
    }

    // A refused server certificate says what to configure, not only that TLS failed.
    if let Some(problem) = jit_trust::untrusted_certificate(error) {
        return ApiError::UntrustedServer {
            url: url.clone(),
            problem,
        };
    }
    let mut innermost: &(dyn std::error::Error + 'static) = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    ApiError::Unreachable {
        url: url.clone(),
        reason: innermost.to_string(),
    }
}

/// Turns a non-2xx answer into an error carrying the CA's one-line message; `challenge` is the
/// `WWW-Authenticate` header of a 401.
fn error_from_body(
    url: &Url,
    status: StatusCode,
    challenge: Option<&str>,
    body: &[u8],
) -> ApiError {
    let Ok(error_body) = serde_json::from_slice::<ErrorBody>(body) else {
        return ApiError::BadResponse {
            url: url.clone(),
            status: status.as_u16(),
        };
    };

    let message = one_line(&error_body.message);
    if status == StatusCode::UNAUTHORIZED && error_body.error == jit_proto::STEP_UP_ERROR {
        return ApiError::StepUpRequired {
            message,
            challenge: parse_challenge(challenge),
        };
    }
    if status == StatusCode::UNAUTHORIZED && LOGIN_ERROR_CODES.contains(&error_body.error.as_str())
    {
        return ApiError::LoginRequired { message };
    }
    ApiError::Rejected {
        status: status.as_u16(),
        code: error_body.error,
        message,
    }
}

/// Collapses control characters so a message from the network stays on one terminal line.
pub fn one_line(text: &str) -> String {
    let collapsed: String = text
        .chars()
        .map(|character| {
            if character.is_control() {
                ' '
            } else {
                character
            }
        })
        .collect();
    collapsed.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://ca.example.com/v1/requests").unwrap()
    }

    #[test]
    fn expired_tokens_ask_for_login() {
        let body = br#"{"error":"token_expired","message":"the ID token expired"}"#;

        let error = error_from_body(&url(), StatusCode::UNAUTHORIZED, Some("Bearer"), body);

        assert_eq!(error.to_string(), "the ID token expired; run `jit login`");
    }

    #[test]
    fn step_up_carries_the_challenge() {
        let body = br#"{"error":"insufficient_user_authentication","message":"needs otp"}"#;
        let header = r#"Bearer error="insufficient_user_authentication", max_age="300""#;

        let error = error_from_body(&url(), StatusCode::UNAUTHORIZED, Some(header), body);

        let ApiError::StepUpRequired { message, challenge } = error else {
            panic!("not a step-up: {error:?}");
        };
        assert_eq!(message, "needs otp");
        assert_eq!(challenge.max_age, Some(Duration::from_secs(300)));
    }

    #[test]
    fn other_errors_show_the_message_on_one_line() {
        let body = br#"{"error":"policy_denied","message":"profile db-admin\nneeds a ticket"}"#;

        let error = error_from_body(&url(), StatusCode::FORBIDDEN, None, body);

        assert!(matches!(error, ApiError::Rejected { status: 403, .. }));
        assert_eq!(error.to_string(), "profile db-admin needs a ticket");
    }

    #[test]
    fn bodies_that_are_not_error_json_are_named_as_such() {
        let error = error_from_body(&url(), StatusCode::BAD_GATEWAY, None, b"<html>");

        assert!(error.to_string().contains("HTTP 502"), "{error}");
    }
}
