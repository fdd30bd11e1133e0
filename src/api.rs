//! The HTTP server: `/healthz`, `/metrics`, `/api/v1/status` and the status page.
//! [`app`] builds the router so tests can drive it without a socket.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use palisade_consumers::{Namespace, Pipeline};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::status::{self, Status};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pipeline: Arc<Pipeline>,
    namespace: Namespace,
    registry: Arc<Registry>,
}

impl AppState {
    /// State over a running pipeline.
    pub fn new(pipeline: Arc<Pipeline>, namespace: Namespace) -> Self {
        let mut registry = Registry::default();
        pipeline.metrics.register(&mut registry);
        AppState {
            pipeline,
            namespace,
            registry: Arc::new(registry),
        }
    }
}

/// Errors a handler returns. Details are logged once here and never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A backing service is down.
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "request failed: backing service unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "a backing service (PostgreSQL or NATS) is unavailable"})),
                )
                    .into_response()
            }
        }
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such route"})),
    )
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": "method not allowed on this route"})),
    )
}

async fn healthz(State(state): State<AppState>) -> Response {
    let postgres = sqlx::query("SELECT 1")
        .execute(state.pipeline.store.pool())
        .await
        .is_ok();
    let nats =
        state.pipeline.js.client().connection_state() == async_nats::connection::State::Connected;
    let code = if postgres && nats {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok| if ok { "ok" } else { "unavailable" };
    (
        code,
        Json(json!({
            "status": word(postgres && nats),
            "postgres": word(postgres),
            "nats": word(nats),
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn collect(state: &AppState) -> Result<Status, ApiError> {
    status::collect(
        state.pipeline.store.pool(),
        &state.pipeline.js.client(),
        &state.namespace,
    )
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))
}

async fn status_json(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(collect(&state).await?))
}

async fn status_page(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let status = collect(&state).await?;
    Ok(Html(render(&status)))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(status: &Status) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>Palisade status</title>\
         <meta http-equiv=refresh content=5><style>body{font:14px system-ui;margin:2em}\
         table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;\
         padding:3px 8px;text-align:left}th{background:#eee}</style></head><body>\
         <h1>Palisade</h1>",
    );
    let _ = write!(
        h,
        "<p>NATS {} · refreshed every 5 s · <a href=/api/v1/status>JSON</a> · \
        <a href=/metrics>metrics</a></p>",
        esc(&status.nats.server_version)
    );
    h.push_str("<h2>Streams</h2><table><tr><th>stream</th><th>subjects</th><th>messages</th><th>bytes</th></tr>");
    for s in &status.nats.streams {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(&s.subjects.join(" ")),
            s.messages,
            s.bytes
        );
    }
    h.push_str("</table><h2>Projections</h2><table><tr><th>projection</th><th>stream</th><th>pending</th><th>unacked</th></tr>");
    for p in &status.projections {
        for c in &p.consumers {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.name,
                esc(&c.stream),
                c.pending,
                c.ack_pending
            );
        }
    }
    let i = &status.ingested;
    h.push_str("</table><h2>Ingested</h2><table>");
    for (kind, n) in &i.events_by_type {
        let _ = write!(h, "<tr><th>events: {}</th><td>{n}</td></tr>", esc(kind));
    }
    for (label, n) in [
        ("hosts", i.hosts),
        ("metric samples", i.metrics),
        ("hourly rollups", i.metrics_hourly),
        ("processes running", i.processes_running),
        ("connections", i.connections),
        ("scans", i.scans),
        ("dead letters", i.dead_letters),
    ] {
        let _ = write!(h, "<tr><th>{label}</th><td>{n}</td></tr>");
    }
    for (sev, n) in &i.open_vulnerabilities {
        let _ = write!(
            h,
            "<tr><th>open vulnerabilities: {}</th><td>{n}</td></tr>",
            esc(sev)
        );
    }
    h.push_str("</table><h2>Latest events</h2><table><tr><th>time</th><th>host</th><th>type</th><th>severity</th><th>rule</th><th>message</th></tr>");
    for e in &status.latest_events {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.ts.to_rfc3339(),
            esc(e.host.as_deref().unwrap_or("")),
            esc(&e.kind),
            esc(&e.severity),
            esc(e.rule.as_deref().unwrap_or("")),
            esc(&e.message)
        );
    }
    h.push_str("</table></body></html>");
    h
}
