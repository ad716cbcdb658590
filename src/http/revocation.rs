//! Routes for ending access early and for the servers' side:
//!
//! - `GET /v1/ca.pub`: the trusted CA keys, as `/v1/ca/keys` lists them.
//! - `GET /v1/krl[?wait=SECS]`: the binary KRL, `ETag: "<version>"`. With `If-None-Match`
//!   naming the current version the answer is 304; with `wait` as well, the CA holds the
//!   request until the version changes (then 200) or `wait` passes (then 304). `wait` is cut
//!   to [`RevocationState::max_wait`].
//! - `POST /v1/revocations` (bearer ID token): revoke a grant, a serial, a person's grants or a
//!   key, with a reason; 201 with the recorded revocation.
//! - `POST /v1/hosts/enroll`: a host trades its one-time token for its configuration.
//! - `POST /v1/hosts/refresh`: a host, signing with its host key, fetches it again.
//!
//! Security events (revocation recorded or denied, host enrolled or refused) are logged here,
//! once, under the `security` target. Tokens are never logged.
//!
//! A waiting long-poll takes no slot of `[http] max_concurrent_requests`, only a connection.
//! Limitation: with several CA processes on one store, a waiter learns of a revocation
//! recorded by another process only when its wait ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use jit_proto::revocation::{
    CreateRevocation, HostConfig, HostEnrollRequest, HostRefreshRequest, RevocationView,
    SignedHostRequest,
};
use serde::Deserialize;

use super::{authenticate, clip, decode_json, query_of, ApiError, AppState};
use crate::hosts::{HostError, Hosts};
use crate::revocation::{RevocationError, Revocations};
use crate::service::Service;

/// The longest a KRL long-poll may wait, whatever the request timeout allows.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(60);

/// What the revocation and host routes share.
#[derive(Debug)]
pub struct RevocationState {
    /// Revocations and the KRL.
    pub revocations: Arc<Revocations>,
    /// Enrolment and refresh of hosts.
    pub hosts: Hosts,
    /// The longest a KRL long-poll waits: [`MAX_LONG_POLL`], cut to stay inside the request
    /// timeout.
    pub max_wait: Duration,
}

impl RevocationState {
    /// Builds the state around the core `service`, trusting `previous_public_keys` besides the
    /// signing key, with long-polls answered before `request_timeout` runs out.
    pub async fn new(
        service: Arc<Service>,
        previous_public_keys: &[String],
        request_timeout: Duration,
    ) -> Result<RevocationState, RevocationError> {
        let revocations =
            Arc::new(Revocations::new(Arc::clone(&service), previous_public_keys).await?);
        let hosts = Hosts::new(service, Arc::clone(&revocations));
        let max_wait = MAX_LONG_POLL.min(request_timeout.saturating_sub(Duration::from_secs(2)));
        Ok(RevocationState {
            revocations,
            hosts,
            max_wait,
        })
    }
}

/// The routes of this module, merged into the main router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/ca.pub", get(ca_pub))
        .route("/v1/revocations", post(create_revocation))
        .route("/v1/hosts/enroll", post(enroll_host))
        .route("/v1/hosts/refresh", post(refresh_host))
}

/// `GET /v1/krl`, merged outside the request concurrency limit (see [`super::router`]).
pub fn krl_routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/krl", get(get_krl))
}

/// The trusted CA keys to publish now, one `authorized_keys` line each.
pub(super) async fn ca_keys_text(state: &AppState) -> Result<String, ApiError> {
    let lines = state
        .revocation
        .revocations
        .published_keys(Utc::now())
        .await
        .map_err(|error| ApiError::internal(&error))?;
    Ok(lines.iter().map(|line| format!("{line}\n")).collect())
}

/// `GET /v1/ca.pub`: the same list as `/v1/ca/keys`, under the name OpenSSH users expect.
async fn ca_pub(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = ca_keys_text(&state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

impl From<RevocationError> for ApiError {
    fn from(error: RevocationError) -> ApiError {
        match error {
            RevocationError::BadRequest(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            RevocationError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            RevocationError::NotPermitted { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "policy_denied", error.to_string())
            }
            RevocationError::NothingToRevoke(message) => {
                ApiError::new(StatusCode::CONFLICT, "nothing_to_revoke", message)
            }
            RevocationError::BadTrustedKey { .. }
            | RevocationError::Store(_)
            | RevocationError::Audit(_)
            | RevocationError::Krl(_) => ApiError::internal(&error),
        }
    }
}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> ApiError {
        match error {
            HostError::NotInInventory(_) | HostError::GroupNotInInventory { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_in_inventory",
                error.to_string(),
            ),
            HostError::BadRequest(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            HostError::InvalidKey(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_public_key",
                error.to_string(),
            ),
            HostError::TokenRefused => ApiError::new(
                StatusCode::FORBIDDEN,
                "enrollment_refused",
                error.to_string(),
            ),
            HostError::Unauthenticated(_) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "host_unauthenticated",
                error.to_string(),
            ),
            HostError::Store(_) | HostError::Sign(_) => ApiError::internal(&error),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KrlQuery {
    /// Seconds to wait for a newer version than the one `If-None-Match` names.
    #[serde(default)]
    wait: Option<u64>,
}

async fn get_krl(
    State(state): State<Arc<AppState>>,
    query: Result<Query<KrlQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query_of(query)?;
    let revocations = &state.revocation.revocations;
    let wait = Duration::from_secs(query.wait.unwrap_or(0)).min(state.revocation.max_wait);

    // Subscribed before reading, so a revocation landing in between still wakes the wait.
    let mut updates = revocations.subscribe();
    let mut document = revocations.krl(Utc::now()).await?;
    if !wait.is_zero() && etag_matches(&headers, document.version) {
        let known = document.version;
        let changed = tokio::time::timeout(wait, updates.wait_for(|version| *version != known))
            .await
            .is_ok();
        if changed {
            document = revocations.krl(Utc::now()).await?;
        }
    }

    let etag = HeaderValue::from_str(&format!("\"{}\"", document.version))
        .map_err(|error| ApiError::internal(&error))?;
    if etag_matches(&headers, document.version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag);
        return Ok(response);
    }
    let mut response = document.bytes.clone().into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::ETAG, etag);
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Whether `If-None-Match` names `version` (or is `*`). Weak and strong forms both count: the
/// version is the whole identity of a KRL's effect.
fn etag_matches(headers: &HeaderMap, version: u64) -> bool {
    let current = version.to_string();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag.trim_matches('"') == current
        })
}

async fn create_revocation(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RevocationView>), ApiError> {
    let identity = authenticate(&state, &headers, peer).await?;
    let request: CreateRevocation = decode_json(body)?;
    let named = describe(&request);

    let outcome = state
        .revocation
        .revocations
        .revoke(&identity, request, Utc::now())
        .await;
    match outcome {
        Ok(outcome) => {
            let view = outcome.view;
            let serials: Vec<String> = view.serials.iter().map(u64::to_string).collect();
            tracing::info!(
                target: "security",
                revocation_id = %view.revocation_id,
                kind = view.kind.as_str(),
                target_named = %clip(&view.target),
                user = identity.display_name(),
                grant_id = %view.grant_ids.join(","),
                serial = %serials.join(","),
                key = view.public_key_fingerprint.as_deref().unwrap_or("-"),
                krl_version = view.krl_version,
                reason = %clip(&view.reason),
                rules = %outcome.rule_ids.join(","),
                client = %peer.ip(),
                "revocation recorded"
            );
            Ok((StatusCode::CREATED, Json(view)))
        }
        Err(error) => {
            if let RevocationError::NotPermitted { rule_ids, .. } = &error {
                tracing::warn!(
                    target: "security",
                    user = identity.display_name(),
                    target_named = %named,
                    rules = %rule_ids.join(","),
                    client = %peer.ip(),
                    "revocation denied"
                );
            }
            Err(error.into())
        }
    }
}

/// What a revocation body names, for the log.
fn describe(request: &CreateRevocation) -> String {
    if let Some(grant_id) = &request.grant_id {
        return format!("grant {}", clip(grant_id));
    }
    if let Some(serial) = request.serial {
        return format!("serial {serial}");
    }
    if let Some(user) = &request.user {
        return format!("user {}", clip(user));
    }
    if request.public_key.is_some() {
        return "a public key".to_owned();
    }
    "nothing".to_owned()
}

async fn enroll_host(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HostConfig>, ApiError> {
    let request: HostEnrollRequest = decode_json(body)?;
    let name = clip(&request.name);

    match state.revocation.hosts.enroll(request, Utc::now()).await {
        Ok(config) => {
            tracing::info!(
                target: "security",
                host = %config.name,
                principals = config.principals.values().map(Vec::len).sum::<usize>(),
                client = %peer.ip(),
                "host enrolled"
            );
            Ok(Json(config))
        }
        Err(error) => {
            tracing::warn!(
                target: "security",
                host = %name,
                reason = %error,
                client = %peer.ip(),
                "host enrolment refused"
            );
            Err(error.into())
        }
    }
}

async fn refresh_host(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HostConfig>, ApiError> {
    let request: SignedHostRequest = decode_json(body)?;
    let claimed = serde_json::from_str::<HostRefreshRequest>(&request.payload)
        .map(|statement| clip(&statement.name))
        .unwrap_or_else(|_| "-".to_owned());

    match state.revocation.hosts.refresh(&request, Utc::now()).await {
        Ok(config) => {
            tracing::debug!(host = %config.name, "host refreshed");
            Ok(Json(config))
        }
        Err(error) => {
            if matches!(error, HostError::Unauthenticated(_)) {
                tracing::warn!(
                    target: "security",
                    host = %claimed,
                    reason = %error,
                    client = %peer.ip(),
                    "host request rejected"
                );
            }
            Err(error.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_if_none_match(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_names_the_version_in_any_usual_spelling() {
        assert!(etag_matches(&with_if_none_match("\"7\""), 7));
        assert!(etag_matches(&with_if_none_match("W/\"7\""), 7));
        assert!(etag_matches(&with_if_none_match("\"3\", \"7\""), 7));
        assert!(etag_matches(&with_if_none_match("*"), 7));
        assert!(!etag_matches(&with_if_none_match("\"6\""), 7));
        assert!(!etag_matches(&with_if_none_match("\"77\""), 7));
        assert!(!etag_matches(&HeaderMap::new(), 7));
    }

    #[test]
    fn logs_name_what_was_revoked_without_the_key() {
        let by_key = CreateRevocation {
            public_key: Some("ssh-ed25519 AAAA".into()),
            ..CreateRevocation::default()
        };
        let by_serial = CreateRevocation {
            serial: Some(9),
            ..CreateRevocation::default()
        };

        assert_eq!(describe(&by_key), "a public key");
        assert_eq!(describe(&by_serial), "serial 9");
    }
}
