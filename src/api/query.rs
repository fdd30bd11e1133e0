//! The query API: `POST /api/v1/query`, `GET /api/v1/query/explain`,
//! `GET /api/v1/events/{id}` and `GET /api/v1/fields`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::query::{QueryEngine, QueryError};

/// A query request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The SRQL text, e.g. `host:web-01 AND severity:>=high "reverse shell"`.
    pub q: String,
    /// Rows per page (default 100, at most the configured maximum).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page of the same query.
    pub cursor: Option<String>,
}

/// `GET /api/v1/query/explain` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ExplainParams {
    /// The SRQL text to explain.
    pub q: String,
}

/// An answer page, as documented in the OpenAPI document.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct QueryAnswerDoc {
    /// The entity the query selected.
    entity: String,
    /// `search` (tantivy, then rows by key) or `sql`.
    path: String,
    /// Column names, in order.
    columns: Vec<String>,
    /// Rows: the columns, plus `score` and `snippet` (HTML, `<b>` around matches) for
    /// full-text matches.
    #[schema(value_type = Vec<Object>)]
    rows: Vec<Value>,
    /// `{value, relation}`: `eq` when exact, `gte` when at least.
    #[schema(value_type = Object)]
    total: Value,
    /// Milliseconds spent.
    took_ms: f64,
    /// Pass back as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
    /// True when a stats answer covers only part of the matches.
    partial: bool,
}

/// A JSON error body.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ErrorDoc {
    /// What went wrong, for a person.
    error: String,
    /// For SRQL errors: the 1-based column and what was expected there.
    #[schema(value_type = Option<Object>)]
    srql: Option<Value>,
}

/// A client mistake in the request itself (body, parameters, path), as JSON.
pub(super) fn rejection(status: StatusCode, text: String) -> Response {
    (status, Json(json!({"error": text}))).into_response()
}

fn engine(state: &AppState) -> Result<&QueryEngine, Response> {
    state.query.as_ref().ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "the query engine is not running on this node"})),
        )
            .into_response()
    })
}

/// Runs an SRQL query and returns one page of rows.
#[utoipa::path(post, path = "/api/v1/query", tag = "query",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "a page of rows", body = QueryAnswerDoc),
        (status = 400, description = "bad SRQL, cursor or body", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc),
        (status = 413, description = "body too large", body = ErrorDoc),
        (status = 501, description = "a stage that parses but cannot run yet", body = ErrorDoc),
        (status = 504, description = "ran past the time limit", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn run_query(
    State(state): State<AppState>,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let engine = match engine(&state) {
        Ok(engine) => engine,
        Err(response) => return response,
    };
    match engine
        .run(&request.q, request.limit, request.cursor.as_deref())
        .await
    {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => query_error(e),
    }
}

/// Shows how a query would run: the AST, plan, SQL with its parameters, and the search query.
#[utoipa::path(get, path = "/api/v1/query/explain", tag = "query",
    params(ExplainParams),
    responses(
        (status = 200, description = "the plan", body = Object),
        (status = 400, description = "bad SRQL", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn explain(
    State(state): State<AppState>,
    params: Result<Query<ExplainParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let engine = match engine(&state) {
        Ok(engine) => engine,
        Err(response) => return response,
    };
    match engine.explain(&params.q) {
        Ok(explanation) => Json(explanation).into_response(),
        Err(e) => query_error(e),
    }
}

/// One event with every column.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "query",
    params(("id" = String, Path, description = "event id (uuid)")),
    responses(
        (status = 200, description = "the event", body = Object),
        (status = 400, description = "not a uuid", body = ErrorDoc),
        (status = 404, description = "no such event", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn event(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Response {
    let Path(id) = match id {
        Ok(id) => id,
        Err(e) => {
            return rejection(
                StatusCode::BAD_REQUEST,
                format!("the event id must be a UUID ({})", e.body_text()),
            )
        }
    };
    let engine = match engine(&state) {
        Ok(engine) => engine,
        Err(response) => return response,
    };
    match engine.event(id).await {
        Ok(Some(event)) => Json(event).into_response(),
        Ok(None) => rejection(StatusCode::NOT_FOUND, format!("no event with id {id}")),
        Err(e) => query_error(e),
    }
}

/// Events the suggested values are taken from: the latest this many.
const VALUE_SAMPLE: i64 = 50_000;

/// Most values suggested per field.
const VALUES_PER_FIELD: i64 = 50;

/// The field catalogue, for autocomplete: every entity's fields, their types and
/// operators, and under `values` the commonest values of the events' `host`,
/// `type`, `rule` and `source` among the latest 50,000 events (at most 50 each).
#[utoipa::path(get, path = "/api/v1/fields", tag = "query",
    responses(
        (status = 200, description = "the catalogue", body = Object),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn fields(State(state): State<AppState>) -> Response {
    let mut catalogue = json!(palisade_srql::catalogue());
    match field_values(state.pipeline.store.pool()).await {
        Ok(values) => catalogue["values"] = values,
        // The catalogue alone still serves autocomplete of field names.
        Err(e) => tracing::warn!(error = %e, "suggested field values unavailable"),
    }
    Json(catalogue).into_response()
}

/// `{field: [value, …]}`, commonest first, for the fields autocomplete suggests values of.
async fn field_values(pool: &sqlx::PgPool) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "WITH recent AS (SELECT host, type, rule, source FROM events ORDER BY ts DESC LIMIT $1), \
         counted AS (SELECT f.field, f.value, count(*) AS n FROM recent, \
             LATERAL (VALUES ('host', host), ('type', type), ('rule', rule), ('source', source)) \
                 AS f(field, value) \
             WHERE f.value IS NOT NULL AND f.value <> '' GROUP BY 1, 2), \
         ranked AS (SELECT field, value, \
             row_number() OVER (PARTITION BY field ORDER BY n DESC, value) AS r FROM counted) \
         SELECT field, value FROM ranked WHERE r <= $2 ORDER BY field, r",
    )
    .bind(VALUE_SAMPLE)
    .bind(VALUES_PER_FIELD)
    .fetch_all(pool)
    .await?;
    let mut values = serde_json::Map::new();
    for (field, value) in rows {
        if let Value::Array(list) = values.entry(field).or_insert_with(|| json!([])) {
            list.push(Value::String(value));
        }
    }
    Ok(Value::Object(values))
}

/// Maps a query failure to its status and JSON body; internals are logged, never sent.
pub(super) fn query_error(e: QueryError) -> Response {
    let status = match &e {
        QueryError::Srql(_)
        | QueryError::Cursor(_)
        | QueryError::BadValue(_)
        | QueryError::Search(crate::query::search::TranslateError::BadValue { .. })
        | QueryError::Search(crate::query::search::TranslateError::Unsupported(_)) => {
            StatusCode::BAD_REQUEST
        }
        QueryError::NotYetExecutable(_) => StatusCode::NOT_IMPLEMENTED,
        QueryError::NotFound(_) => StatusCode::NOT_FOUND,
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Search(_) | QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    match &e {
        QueryError::Srql(srql) => {
            (status, Json(json!({"error": e.to_string(), "srql": srql}))).into_response()
        }
        QueryError::Unavailable(detail) => {
            tracing::warn!(%detail, "query failed: backing service unavailable");
            (
                status,
                Json(json!({"error": "PostgreSQL is unavailable; try again shortly"})),
            )
                .into_response()
        }
        QueryError::Search(crate::query::search::TranslateError::UnknownField(_))
        | QueryError::Internal(_) => {
            tracing::error!(error = %e, "query failed inside palisade");
            (
                status,
                Json(json!({"error": "internal error; the details are in the server log"})),
            )
                .into_response()
        }
        _ => (status, Json(json!({"error": e.to_string()}))).into_response(),
    }
}
