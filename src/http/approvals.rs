//! Routes of the approval workflow: reviews, approve, deny, cancel, extend, history.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use jit_proto::{AccessRequestView, ApproveBody, DenyBody, ExtendBody, RequestHistory, ReviewList};

use super::{authenticate, client_info, decode_json, ApiError, AppState};

/// The workflow's routes, merged into the main router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/reviews", get(reviews))
        .route("/v1/requests/{request_id}/approve", post(approve))
        .route("/v1/requests/{request_id}/deny", post(deny))
        .route("/v1/requests/{request_id}/cancel", post(cancel))
        .route("/v1/requests/{request_id}/history", get(history))
        .route("/v1/grants/{grant_id}/extend", post(extend))
}

/// An empty body counts as `{}` for the endpoints whose fields are all optional.
fn decode_optional<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    match &body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        _ => decode_json(body),
    }
}

async fn reviews(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<ReviewList>, ApiError> {
    let reviewer = authenticate(&state, &headers, peer).await?;
    Ok(Json(state.service.reviews(&reviewer, Utc::now()).await?))
}

async fn approve(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AccessRequestView>, ApiError> {
    let reviewer = authenticate(&state, &headers, peer).await?;
    let body: ApproveBody = decode_optional(body)?;
    let comment = body.comment.unwrap_or_default();

    let result = state
        .service
        .approve(&reviewer, &request_id, &comment, Utc::now())
        .await;
    match &result {
        Ok(view) => tracing::info!(
            target: "security",
            request_id = %view.request_id,
            reviewer = reviewer.display_name(),
            approvals = view.approvals.len(),
            required = view.required_approvals,
            status = view.status.as_str(),
            "request approved by reviewer"
        ),
        Err(error) => tracing::warn!(
            target: "security",
            request_id = %super::clip(&request_id),
            reviewer = reviewer.display_name(),
            reason = %error,
            "approval refused"
        ),
    }
    Ok(Json(result?))
}

async fn deny(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AccessRequestView>, ApiError> {
    let reviewer = authenticate(&state, &headers, peer).await?;
    let body: DenyBody = decode_json(body)?;

    let view = state
        .service
        .deny(&reviewer, &request_id, &body.reason, Utc::now())
        .await?;
    tracing::info!(
        target: "security",
        request_id = %view.request_id,
        reviewer = reviewer.display_name(),
        "request denied by reviewer"
    );
    Ok(Json(view))
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AccessRequestView>, ApiError> {
    let requester = authenticate(&state, &headers, peer).await?;
    let view = state
        .service
        .cancel(&requester, &request_id, Utc::now())
        .await?;
    Ok(Json(view))
}

async fn history(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RequestHistory>, ApiError> {
    let identity = authenticate(&state, &headers, peer).await?;
    let history = state
        .service
        .history(&identity, &request_id, Utc::now())
        .await?;
    Ok(Json(history))
}

async fn extend(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(grant_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AccessRequestView>, ApiError> {
    let requester = authenticate(&state, &headers, peer).await?;
    let body: ExtendBody = decode_json(body)?;
    let client = client_info(&headers, peer);

    let view = state
        .service
        .extend(&requester, &grant_id, body, &client, Utc::now())
        .await?;
    Ok(Json(view))
}
