//! The correlation API: `GET /api/v1/incidents` and `GET /api/v1/vulns`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use palisade_core::correlation::{list_incidents, IncidentFilter};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::query::{rejection, ErrorDoc};
use super::{ApiError, AppState};

/// Most incidents one answer lists.
pub const MAX_INCIDENTS: u32 = 1000;

/// `GET /api/v1/incidents` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct IncidentParams {
    /// `open` (default), `resolved` or `all`.
    pub status: Option<String>,
    /// `running` (P0) or `dormant` (scheduled).
    pub state: Option<String>,
    /// Only this host's.
    pub host: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// `GET /api/v1/vulns` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct VulnParams {
    /// `running` (a live process belongs to the vulnerable package) or `dormant`
    /// (only on disk); both when absent.
    pub state: Option<String>,
    /// Only this host's.
    pub host: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Incidents: one per host + CVE + package for each open critical or high
/// finding, `P0` while the package runs, `scheduled` while it is only on disk; P0
/// first, then the most severe, then the newest.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "correlation",
    params(IncidentParams),
    responses(
        (status = 200, description = "the incidents", body = Object),
        (status = 400, description = "bad status, state or limit", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn incidents(
    State(state): State<AppState>,
    params: Result<Query<IncidentParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let open = match params.status.as_deref() {
        None | Some("open") => Some(true),
        Some("resolved") => Some(false),
        Some("all") => None,
        Some(other) => {
            return rejection(
                StatusCode::BAD_REQUEST,
                format!("status must be open, resolved or all, not {other:?}"),
            )
        }
    };
    list(&state, open, params.state, params.host, params.limit).await
}

/// Open critical and high vulnerabilities by whether their package runs now:
/// the open incidents, filtered by `state`.
#[utoipa::path(get, path = "/api/v1/vulns", tag = "correlation",
    params(VulnParams),
    responses(
        (status = 200, description = "the findings", body = Object),
        (status = 400, description = "bad state or limit", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn vulns(
    State(state): State<AppState>,
    params: Result<Query<VulnParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    list(&state, Some(true), params.state, params.host, params.limit).await
}

async fn list(
    state: &AppState,
    open: Option<bool>,
    running: Option<String>,
    host: Option<String>,
    limit: Option<u32>,
) -> Response {
    if let Some(other) = running
        .as_deref()
        .filter(|s| !matches!(*s, "running" | "dormant"))
    {
        return rejection(
            StatusCode::BAD_REQUEST,
            format!("state must be running or dormant, not {other:?}"),
        );
    }
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_INCIDENTS {
        return rejection(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_INCIDENTS}, not {limit}"),
        );
    }
    let filter = IncidentFilter {
        open,
        state: running,
        host,
        limit,
    };
    match list_incidents(state.pipeline.store.pool(), &filter).await {
        Ok(rows) => Json(json!({ "count": rows.len(), "incidents": rows })).into_response(),
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
}
