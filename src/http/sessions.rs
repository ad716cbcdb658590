//! Routes of login sessions:
//!
//! - `POST /v1/hosts/sessions`: a host agent, signing with its host key, reports the sessions
//!   opened on its server with the CA's certificates; answers what it recorded.
//! - `GET /v1/sessions[?host=H]` (bearer ID token): the open sessions the caller may see.
//!
//! Each recorded termination, and each refused event, is logged here once under the `security`
//! target.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use jit_proto::revocation::SignedHostRequest;
use jit_proto::sessions::{SessionList, SessionQuery, SessionReportAnswer};

use super::{authenticate, decode_json, query_of, ApiError, AppState};
use crate::sessions::SessionError;

/// The session routes, merged into the main router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/hosts/sessions", post(report))
        .route("/v1/sessions", get(list))
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> ApiError {
        match error {
            SessionError::BadRequest(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            SessionError::Host(host_error) => host_error.into(),
            SessionError::Store(_) | SessionError::Audit(_) => ApiError::internal(&error),
        }
    }
}

async fn report(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SessionReportAnswer>, ApiError> {
    let signed: SignedHostRequest = decode_json(body)?;
    let hosts = &state.revocation.hosts;
    let outcome = match state
        .sessions
        .record_report(hosts, &signed, Utc::now())
        .await
    {
        Ok(outcome) => outcome,
        Err(SessionError::Host(error)) => {
            tracing::warn!(
                target: "security",
                reason = %error,
                client = %peer.ip(),
                "session report rejected"
            );
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    };

    for note in &outcome.recorded {
        let grant_id = note.grant_id.as_deref().unwrap_or("-");
        if matches!(note.what.as_str(), "revoked" | "expired") {
            tracing::info!(
                target: "security",
                host = %outcome.host,
                session_id = %note.session_id,
                user = %note.unix_user,
                serial = note.serial,
                grant_id,
                cause = %note.what,
                "session terminated"
            );
        } else {
            tracing::info!(
                host = %outcome.host,
                session_id = %note.session_id,
                user = %note.unix_user,
                serial = note.serial,
                grant_id,
                change = %note.what,
                "session change recorded"
            );
        }
    }
    for note in &outcome.refused {
        tracing::warn!(
            target: "security",
            host = %outcome.host,
            session_id = %note.session_id,
            user = %note.unix_user,
            serial = note.serial,
            reason = %note.what,
            client = %peer.ip(),
            "session event refused"
        );
    }
    Ok(Json(outcome.answer))
}

async fn list(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<Json<SessionList>, ApiError> {
    let viewer = authenticate(&state, &headers, peer).await?;
    let query = query_of(query)?;
    let list = state.sessions.list(&viewer, &query, Utc::now()).await?;
    Ok(Json(list))
}
