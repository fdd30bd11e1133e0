//! The connection graph API: `GET /api/v1/graph/blast-radius`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use palisade_core::graph::{assess, AssessError, Direction, GraphError};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::query::rejection;
use super::{ApiError, AppState};

/// The most hops one blast radius walks: the same bound as SRQL's
/// `blast_radius(depth:N)`.
pub const MAX_DEPTH: u32 = palisade_srql::MAX_BLAST_DEPTH;

/// `GET /api/v1/graph/blast-radius` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct BlastRadiusParams {
    /// Where to start: a host name, an IP address, or `host:port` (a service).
    pub node: String,
    /// Most connections to follow (default 3, at most 10).
    pub depth: Option<u32>,
    /// `outbound` (default: where an attacker could pivot) or `inbound` (what
    /// depends on the node).
    pub direction: Option<String>,
    /// `json` (default), `dot` (Graphviz) or `mermaid`.
    pub format: Option<String>,
}

/// Everything within `depth` connections of a node, each with its hop distance,
/// one shortest path and its risk evidence (open critical/high CVEs, running
/// vulnerable packages, alerts of the last 24 hours), most at risk first.
#[utoipa::path(get, path = "/api/v1/graph/blast-radius", tag = "graph",
    params(BlastRadiusParams),
    responses(
        (status = 200, description = "the blast radius (JSON, or text for dot and mermaid)", body = Object),
        (status = 400, description = "bad depth, direction or format", body = super::query::ErrorDoc),
        (status = 404, description = "no such node in the connection graph", body = super::query::ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = super::query::ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = super::query::ErrorDoc)),
    security(("bearer" = [])))]
pub async fn blast_radius(
    State(state): State<AppState>,
    params: Result<Query<BlastRadiusParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let depth = params.depth.unwrap_or(3);
    if depth == 0 || depth > MAX_DEPTH {
        return rejection(
            StatusCode::BAD_REQUEST,
            format!("depth must be 1 to {MAX_DEPTH}, not {depth}"),
        );
    }
    let direction = match params.direction.as_deref() {
        None => Direction::Outbound,
        Some(text) => match Direction::parse(text) {
            Some(d) => d,
            None => {
                return rejection(
                    StatusCode::BAD_REQUEST,
                    format!("direction must be outbound or inbound, not {text:?}"),
                )
            }
        },
    };
    let format = params.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "dot" | "mermaid") {
        return rejection(
            StatusCode::BAD_REQUEST,
            format!("format must be json, dot or mermaid, not {format:?}"),
        );
    }
    let topology = &state.pipeline.topology;
    let pool = state.pipeline.store.pool();
    let now = Utc::now();
    let (radius, ranked) = match assess(topology, pool, &params.node, depth, direction, now).await {
        Ok(answer) => answer,
        Err(e @ AssessError::Graph(GraphError::UnknownNode(_))) => {
            return rejection(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ AssessError::Database(_)) => {
            return ApiError::Unavailable(e.to_string()).into_response()
        }
    };
    match format {
        "dot" => return text(radius.to_dot()),
        "mermaid" => return text(radius.to_mermaid()),
        _ => {}
    }
    let size = topology.size();
    Json(json!({
        "from": radius.from,
        "direction": radius.direction,
        "depth": radius.depth,
        "nodes": ranked,
        "edges": radius.edges.iter().map(|(source, target, kind)| json!({
            "source": source, "target": target, "kind": kind,
        })).collect::<Vec<_>>(),
        "graph": { "nodes": size.nodes, "edges": size.edges, "window_hours": topology.window().num_hours() },
    }))
    .into_response()
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
