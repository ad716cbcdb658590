//! Routes of the audit log: records (filtered, paginated), the newest checkpoint, and the
//! audit public key.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use jit_proto::audit::{AuditPage, AuditQuery, Checkpoint};

use super::{authenticate, query_of, ApiError, AppState};

/// The audit routes, merged into the main router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/audit", get(records))
        .route("/v1/audit/checkpoint", get(checkpoint))
        .route("/v1/audit/key", get(key))
}

async fn records(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let reader = authenticate(&state, &headers, peer).await?;
    let query = query_of(query)?;

    let query_text = uri.query().unwrap_or_default();
    let page = state
        .service
        .read_audit(&reader, &query, query_text, Utc::now())
        .await?;
    Ok(Json(page))
}

async fn checkpoint(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Checkpoint>, ApiError> {
    let reader = authenticate(&state, &headers, peer).await?;
    let checkpoint = state.service.audit_checkpoint(&reader, Utc::now()).await?;
    Ok(Json(checkpoint))
}

/// Public, like the CA keys: verifying needs it, and it proves nothing by itself. Auditors
/// should still compare it with the key they were given out of band.
async fn key(State(state): State<Arc<AppState>>) -> Response {
    let line = state
        .service
        .auditor()
        .public_key()
        .to_openssh("jit-ca-audit");
    ([(header::CONTENT_TYPE, "text/plain")], format!("{line}\n")).into_response()
}
