//! The HTTP edge: decode, call the service, encode. No decisions are taken here.
//!
//! Every error leaves through [`ApiError`], which gives it a status and the stable body
//! `{ "error": code, "message": text }`. Internal failures are logged with their detail and
//! answered with a generic message. Security events (token rejected, request denied,
//! certificate issued) are logged here, once, under the `security` target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
/// Caller-supplied text cut for one line of a log field (shared with the route modules).
pub(crate) use jit_proto::clip_for_display as clip;
use jit_proto::{ClientConfig, CreateAccessRequest, ErrorBody, RequestStatus};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

mod approvals;
mod audit;
pub mod limits;
pub mod revocation;
mod sessions;

use crate::config::HttpConfig;
use crate::identity::{BearerToken, Identity, TokenError, TokenVerifier, UnverifiedClaims};
use crate::metrics::{Metrics, RequestOutcome};
use crate::service::{ClientInfo, Service, ServiceError};

/// Everything the handlers share.
pub struct AppState {
    /// The JIT service.
    pub service: Arc<Service>,
    /// ID-token verification.
    pub verifier: Arc<TokenVerifier>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// What `/v1/config` tells clients.
    pub client_config: ClientConfig,
    /// Revocations, the KRL and enrolled hosts.
    pub revocation: Arc<revocation::RevocationState>,
    /// Login sessions on enrolled hosts.
    pub sessions: Arc<crate::sessions::Sessions>,
}

/// An error on its way to the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `WWW-Authenticate` challenge of a 401; plain `Bearer` when `None`.
    challenge: Option<String>,
}

impl ApiError {
    /// An error with its status, stable code and one-line message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }

    /// RFC 9470 step-up: a 401 whose challenge tells the client what login to ask for.
    fn step_up(message: String, acr_values: Option<&str>, max_age_secs: Option<u64>) -> ApiError {
        let mut challenge = format!(
            "Bearer error=\"{}\", error_description=\"{}\"",
            jit_proto::STEP_UP_ERROR,
            message.replace('"', "'")
        );
        if let Some(acr_values) = acr_values {
            challenge.push_str(&format!(", acr_values=\"{}\"", acr_values.replace('"', "")));
        }
        if let Some(max_age) = max_age_secs {
            challenge.push_str(&format!(", max_age=\"{max_age}\""));
        }
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: jit_proto::STEP_UP_ERROR,
            message,
            challenge: Some(challenge),
        }
    }

    fn internal(detail: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the CA failed to handle this request; the operator's log has the detail",
        )
    }

    fn outcome(&self) -> RequestOutcome {
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE => {
                RequestOutcome::Unauthenticated
            }
            StatusCode::FORBIDDEN => RequestOutcome::Denied,
            status if status.is_server_error() => RequestOutcome::Error,
            _ => RequestOutcome::Invalid,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = self
                .challenge
                .and_then(|challenge| header::HeaderValue::from_str(&challenge).ok())
                .unwrap_or(header::HeaderValue::from_static("Bearer"));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> ApiError {
        let status = match error {
            TokenError::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::Refused(crate::policy::Refusal::StepUpRequired {
                profile,
                requirement,
                acr_values,
                max_age_secs,
            }) => ApiError::step_up(
                format!("profile `{profile}` requires {requirement}; log in again"),
                acr_values.as_deref(),
                max_age_secs,
            ),
            ServiceError::Refused(refusal) if refusal.is_malformed() => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                refusal.to_string(),
            ),
            ServiceError::Refused(refusal) => {
                ApiError::new(StatusCode::FORBIDDEN, "policy_denied", refusal.to_string())
            }
            ServiceError::InvalidKey(error) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_public_key",
                error.to_string(),
            ),
            ServiceError::BadRequest(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            ServiceError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
            }
            ServiceError::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            ServiceError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ServiceError::Store(_) | ServiceError::Sign(_) | ServiceError::Audit(_) => {
                ApiError::internal(&error)
            }
        }
    }
}

/// Builds the router with its limits.
///
/// KRL long-polls wait outside `[http] max_concurrent_requests`: every enrolled host keeps one
/// waiting, and a fleet larger than the limit must not crowd out engineers' requests. They hold
/// a connection and a watch subscription while they wait, and `[http] max_connections` bounds
/// them.
pub fn router(state: Arc<AppState>, limits: &HttpConfig) -> Router {
    let limited = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/config", get(client_config))
        .route("/v1/ca/keys", get(ca_keys))
        .route("/v1/requests", post(create_request))
        .route("/v1/requests/{request_id}", get(get_request))
        .route("/v1/grants", get(list_grants))
        .merge(approvals::routes())
        .merge(audit::routes())
        .merge(revocation::routes())
        .merge(sessions::routes())
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ));

    Router::new()
        .merge(limited)
        .merge(revocation::krl_routes())
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs),
        ))
        .layer(TraceLayer::new_for_http())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let pending = state
        .service
        .store()
        .count_pending()
        .await
        .map_err(|error| ApiError::internal(&error))?;
    let text = state.metrics.render(pending);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn client_config(State(state): State<Arc<AppState>>) -> Json<ClientConfig> {
    Json(state.client_config.clone())
}

async fn ca_keys(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    // The signing key, and earlier keys while certificates they signed are still valid.
    let text = revocation::ca_keys_text(&state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

/// Verifies the bearer token and logs a rejection as a security event.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Identity, ApiError> {
    let now = Utc::now();
    let result = match bearer_token(headers) {
        Some(token) => state
            .verifier
            .verify(&token, now)
            .await
            .map_err(|error| (error, UnverifiedClaims::peek(token.expose()))),
        None => Err((TokenError::Missing, UnverifiedClaims::default())),
    };
    let (error, claims) = match result {
        Ok(identity) => return Ok(identity),
        Err(rejection) => rejection,
    };
    tracing::warn!(
        target: "security",
        reason = %error,
        issuer = claims.issuer.as_deref().unwrap_or("-"),
        subject = claims.subject.as_deref().unwrap_or("-"),
        client = %peer.ip(),
        "token rejected"
    );
    let event = crate::audit::record::token_rejected(&error, &claims, &client_info(headers, peer));
    if let Err(audit_error) = state.service.auditor().record(event, now).await {
        tracing::error!(error = %audit_error, "token rejection not recorded in the audit log");
    }
    Err(ApiError::from(error))
}

fn bearer_token(headers: &HeaderMap) -> Option<BearerToken> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(BearerToken::new(token.trim().to_owned()))
}

pub(crate) fn client_info(headers: &HeaderMap, peer: SocketAddr) -> ClientInfo {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(200).collect());
    ClientInfo {
        address: peer.ip(),
        user_agent,
    }
}

/// A request's query parameters, or a 400 naming what is wrong with them.
pub(crate) fn query_of<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(query)| query)
        .map_err(|rejection| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )
        })
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body exceeds the size limit",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("request body is not a valid request: {error}"),
        )
    })
}

async fn create_request(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = create_request_inner(&state, peer, &headers, body).await;

    let outcome = match &result {
        Ok((status, _)) if *status == StatusCode::CREATED => RequestOutcome::Issued,
        Ok(_) => RequestOutcome::Pending,
        Err(error) => error.outcome(),
    };
    state.metrics.record_request(outcome, started.elapsed());
    result.map(|(status, body)| (status, body).into_response())
}

async fn create_request_inner(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<jit_proto::AccessRequestView>), ApiError> {
    let identity = authenticate(state, headers, peer).await?;
    let request: CreateAccessRequest = decode_json(body)?;
    let client = client_info(headers, peer);
    let (profile, host) = (request.profile.clone(), request.host.clone());

    let outcome = state
        .service
        .create_request(&identity, request, &client, Utc::now())
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(ServiceError::Refused(refusal)) => {
            let rules = match &refusal {
                crate::policy::Refusal::NotPermitted { rule_ids, .. } => rule_ids.join(","),
                _ => String::new(),
            };
            tracing::warn!(
                target: "security",
                user = identity.display_name(),
                profile = %clip(&profile),
                host = %clip(&host),
                client = %peer.ip(),
                reason = %refusal,
                rules = %rules,
                "request denied"
            );
            return Err(ServiceError::Refused(refusal).into());
        }
        Err(error) => return Err(error.into()),
    };

    let view = outcome.view;
    let rules = outcome.decision.request_rule_ids.join(",");
    match &view.grant {
        Some(grant) => {
            let serial = grant.certificate.as_ref().map_or(0, |cert| cert.serial);
            tracing::info!(
                target: "security",
                request_id = %view.request_id,
                grant_id = %grant.grant_id,
                serial,
                user = identity.display_name(),
                profile = %view.profile,
                host = %view.host,
                principals = %view.principals.join(","),
                valid_before = %grant.ends_at.to_rfc3339(),
                client = %peer.ip(),
                rules = %rules,
                "certificate issued"
            );
            Ok((StatusCode::CREATED, Json(view)))
        }
        None => {
            tracing::info!(
                target: "security",
                request_id = %view.request_id,
                user = identity.display_name(),
                profile = %view.profile,
                host = %view.host,
                rules = %rules,
                "request pending approval"
            );
            debug_assert_eq!(view.status, RequestStatus::Pending);
            Ok((StatusCode::ACCEPTED, Json(view)))
        }
    }
}

async fn get_request(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<jit_proto::AccessRequestView>, ApiError> {
    let identity = authenticate(&state, &headers, peer).await?;
    let view = state
        .service
        .get_request(&identity, &request_id, Utc::now())
        .await?;
    Ok(Json(view))
}

async fn list_grants(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<jit_proto::GrantList>, ApiError> {
    let identity = authenticate(&state, &headers, peer).await?;
    let grants = state.service.list_grants(&identity).await?;
    Ok(Json(grants))
}
