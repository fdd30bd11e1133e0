//! The HTTP server: the web console at `/`, `/healthz`, `/metrics`, `/api/v1/status`, the
//! status page (`/status`) and the
//! query API (`/api/v1/query`, `/api/v1/query/explain`, `/api/v1/events/{id}`,
//! `/api/v1/fields`), described by the OpenAPI document at `/api/v1/openapi.json`.
//! [`app`] builds the router so tests can drive it without a socket.

pub mod graph;
pub mod groups;
pub mod incidents;
pub mod query;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use palisade_consumers::{Namespace, Pipeline};
use prometheus_client::registry::Registry;
use serde_json::json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Guard, Scope, Tokens};
use crate::query::QueryEngine;
use crate::status::{self, Status};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pipeline: Arc<Pipeline>,
    namespace: Namespace,
    registry: Arc<Registry>,
    query: Option<QueryEngine>,
    tokens: Tokens,
    max_body_bytes: usize,
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
            query: None,
            tokens: Tokens::default(),
            max_body_bytes: 64 * 1024,
        }
    }

    /// Serves queries with `engine` (and its clump cache's figures on `/metrics`).
    pub fn with_query(mut self, engine: QueryEngine) -> Self {
        if let Some(metrics) = engine.clump_cache_metrics() {
            // Only this state holds the registry yet; a clone's handlers share it.
            match Arc::get_mut(&mut self.registry) {
                Some(registry) => registry.register_collector(Box::new(metrics)),
                None => {
                    tracing::warn!("the clump cache is left off /metrics: the registry is shared")
                }
            }
        }
        self.query = Some(engine);
        self
    }

    /// The query engine, when queries are served.
    pub fn query_engine(&self) -> Option<&QueryEngine> {
        self.query.as_ref()
    }

    /// Requires one of `tokens` on every route but `/healthz` (none: open).
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = tokens;
        self
    }

    /// Refuses request bodies larger than `bytes` with a 413.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
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

#[derive(OpenApi)]
#[openapi(
    info(title = "Palisade API", description = "Search and status of the Palisade SIEM core. \
        Every route but /healthz and this document needs `Authorization: Bearer <token>` \
        when tokens are configured."),
    modifiers(&BearerScheme),
    tags((name = "query", description = "SRQL search"), (name = "status", description = "health and ingest status"))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The documented routes, grouped by the scope they need, and their OpenAPI document.
fn documented() -> (
    Router<AppState>,
    Router<AppState>,
    Router<AppState>,
    utoipa::openapi::OpenApi,
) {
    let (open, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .split_for_parts();
    let (status, status_doc) = OpenApiRouter::new()
        .routes(routes!(status_json))
        .split_for_parts();
    let (query, query_doc) = OpenApiRouter::new()
        .routes(routes!(query::run_query))
        .routes(routes!(query::explain))
        .routes(routes!(query::event))
        .routes(routes!(query::fields))
        .routes(routes!(graph::blast_radius))
        .routes(routes!(incidents::incidents))
        .routes(routes!(incidents::vulns))
        .routes(routes!(groups::alert_groups))
        .routes(routes!(groups::group_events))
        .routes(routes!(groups::regroup))
        .split_for_parts();
    doc.merge(status_doc);
    doc.merge(query_doc);
    (open, status, query, doc)
}

/// The OpenAPI document of the API, generated from the routes' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().3
}

/// The router.
pub fn app(state: AppState) -> Router {
    let (open, status, query, doc) = documented();
    let guard = |scope| {
        middleware::from_fn_with_state(
            Guard {
                tokens: state.tokens.clone(),
                scope,
            },
            auth::require,
        )
    };
    let status = status
        .route("/status", get(status_page))
        .route("/metrics", get(metrics))
        .route_layer(guard(Scope::Status));
    let query = query.route_layer(guard(Scope::Query));
    let doc = Arc::new(doc);
    Router::new()
        .merge(open)
        .merge(crate::console::routes())
        .merge(status)
        .merge(query)
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
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

/// Whether PostgreSQL and NATS are reachable (always open, no token needed).
#[utoipa::path(get, path = "/healthz", tag = "status",
    responses((status = 200, description = "both reachable", body = Object),
              (status = 503, description = "one is not", body = Object)))]
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

/// What has been ingested: streams, consumer lag, row counts, latest events.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    responses((status = 200, description = "the status", body = Object),
              (status = 401, description = "no or unknown bearer token", body = query::ErrorDoc),
              (status = 403, description = "token lacks the status scope", body = query::ErrorDoc)),
    security(("bearer" = [])))]
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
        ("events embedded", i.event_vectors),
        ("distinct texts embedded", i.embedding_texts),
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
