//! The alert groups API: `GET /api/v1/alerts/groups` ("N events, K attack
//! patterns" for a window and an SRQL filter), `GET /api/v1/alerts/groups/events`
//! (a pattern's events) and `POST /api/v1/alerts/groups/regroup` (group a time
//! range's windows again from their stored events).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use palisade_core::grouping;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::query::{query_error, rejection, ErrorDoc};
use super::{ApiError, AppState};

/// Longest window one request may ask for.
pub const MAX_WINDOW: Duration = Duration::days(90);

/// Most windows one regroup request may rebuild.
pub const MAX_REGROUP_WINDOWS: usize = 366;

/// `GET /api/v1/alerts/groups` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct GroupsParams {
    /// An SRQL filter (no stages), e.g. `type:falco_alert AND host:web-01`; every
    /// embedded event when absent.
    pub q: Option<String>,
    /// How far back from now: `15m`, `6h`, `24h` (default), `7d`. Ignored when
    /// `from` is given.
    pub window: Option<String>,
    /// Start of the window (RFC 3339); with `to` (default now).
    pub from: Option<DateTime<Utc>>,
    /// End of the window (RFC 3339, exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Most patterns listed (default 100).
    pub limit: Option<u32>,
}

/// `GET /api/v1/alerts/groups/events` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct GroupEventsParams {
    /// Group ids, comma-separated: a pattern's `groups`.
    pub ids: String,
    /// How far back from now (default `24h`); ignored when `from` is given.
    pub window: Option<String>,
    /// Start of the window (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// End of the window (RFC 3339, exclusive; default now).
    pub to: Option<DateTime<Utc>>,
    /// Most events (default 100, at most 1,000).
    pub limit: Option<u32>,
}

/// Most group ids one request may name.
const MAX_GROUP_IDS: usize = 1_000;

/// The events of a pattern's groups within the window, newest first: the
/// dashboard's click-through.
#[utoipa::path(get, path = "/api/v1/alerts/groups/events", tag = "query",
    params(GroupEventsParams),
    responses(
        (status = 200, description = "the events", body = Object),
        (status = 400, description = "bad ids, window or limit", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn group_events(
    State(state): State<AppState>,
    params: Result<Query<GroupEventsParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let ids: Result<Vec<uuid::Uuid>, _> = params
        .ids
        .split(',')
        .map(|id| id.trim().parse::<uuid::Uuid>())
        .collect();
    let ids = match ids {
        Ok(ids) if !ids.is_empty() && ids.len() <= MAX_GROUP_IDS => ids,
        Ok(_) => {
            return rejection(
                StatusCode::BAD_REQUEST,
                format!("ids names 1 to {MAX_GROUP_IDS} groups"),
            )
        }
        Err(e) => {
            return rejection(
                StatusCode::BAD_REQUEST,
                format!("ids must be comma-separated group ids (UUIDs): {e}"),
            )
        }
    };
    let limit = match params.limit.unwrap_or(100) {
        limit @ 1..=1_000 => i64::from(limit),
        _ => return rejection(StatusCode::BAD_REQUEST, "limit must be 1 to 1000".into()),
    };
    let window = match window(params.window.as_deref(), params.from, params.to, Utc::now()) {
        Ok(window) => window,
        Err(message) => return rejection(StatusCode::BAD_REQUEST, message),
    };
    let events = async {
        let mut conn = state.pipeline.store.pool().acquire().await?;
        grouping::group_events(&mut conn, &ids, window, limit).await
    };
    match events.await {
        Ok(events) => Json(json!({
            "window": {"from": window.0, "to": window.1},
            "count": events.len(),
            "events": events,
        }))
        .into_response(),
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
}

/// The embedded events of the window that match `q`, as attack patterns with
/// their counts, exemplar, hosts, rules and first/last seen, most events first.
#[utoipa::path(get, path = "/api/v1/alerts/groups", tag = "query",
    params(GroupsParams),
    responses(
        (status = 200, description = "the patterns", body = Object),
        (status = 400, description = "bad SRQL, window or limit", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn alert_groups(
    State(state): State<AppState>,
    params: Result<Query<GroupsParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let Some(engine) = state.query.as_ref() else {
        return ApiError::Unavailable("no query engine on this node".into()).into_response();
    };
    let (from, to) = match window(params.window.as_deref(), params.from, params.to, Utc::now()) {
        Ok(window) => window,
        Err(message) => return rejection(StatusCode::BAD_REQUEST, message),
    };
    let q = params.q.as_deref().unwrap_or("").trim();
    if q.contains('|') {
        return rejection(
            StatusCode::BAD_REQUEST,
            "q is a filter without stages; `| group_similar` is added here".into(),
        );
    }
    match engine.alert_groups(q, (from, to), params.limit).await {
        Ok(answer) => {
            let report = answer.groups.clone();
            Json(json!({
                "window": {"from": from, "to": to},
                "events": report.as_ref().map_or(0, |r| r.events),
                "patterns": report.as_ref().map_or(0, |r| r.patterns),
                "ungrouped": report.as_ref().map_or(0, |r| r.ungrouped),
                "timeline": report.as_ref().and_then(|r| r.timeline),
                "partial": answer.partial,
                "groups": answer.rows,
                "took_ms": answer.took_ms,
            }))
            .into_response()
        }
        Err(e) => query_error(e),
    }
}

/// `[from, to)` of a request: `from`/`to` (`to` defaults to `now`), else `window`
/// (default 24h) back from `to`.
fn window(
    window: Option<&str>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let to = to.unwrap_or(now);
    let from = match (from, window) {
        (Some(from), _) => from,
        (None, text) => to - parse_window(text.unwrap_or("24h"))?,
    };
    if from >= to {
        return Err(format!(
            "the window is empty: from {from} is not before to {to}"
        ));
    }
    if to - from > MAX_WINDOW {
        return Err(format!(
            "the window may span at most {} days",
            MAX_WINDOW.num_days()
        ));
    }
    Ok((from, to))
}

/// `15m`, `6h`, `7d` → a duration.
fn parse_window(text: &str) -> Result<Duration, String> {
    let bad = || format!("window must be a number and m, h or d (e.g. 24h), not {text:?}");
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    let duration = match unit {
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    };
    duration.ok_or_else(bad)
}

/// `POST /api/v1/alerts/groups/regroup` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegroupRequest {
    /// Start of the range (RFC 3339); every window overlapping it is regrouped.
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
}

/// Groups every window overlapping `[from, to)` again from its stored events, with
/// the configured threshold: the same data gives the same groups and ids. For
/// events embedded before grouping was on, or after changing the threshold.
#[utoipa::path(post, path = "/api/v1/alerts/groups/regroup", tag = "query",
    request_body = RegroupRequest,
    responses(
        (status = 200, description = "what each window got", body = Object),
        (status = 400, description = "bad range", body = ErrorDoc),
        (status = 401, description = "no or unknown bearer token", body = ErrorDoc),
        (status = 403, description = "token lacks the query scope", body = ErrorDoc),
        (status = 409, description = "alert grouping is off on this node", body = ErrorDoc)),
    security(("bearer" = [])))]
pub async fn regroup(
    State(state): State<AppState>,
    body: Result<Json<RegroupRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return rejection(e.status(), e.body_text()),
    };
    let Some(config) = state
        .pipeline
        .vectors
        .as_ref()
        .and_then(|stage| stage.grouping().copied())
    else {
        return rejection(
            StatusCode::CONFLICT,
            "alert grouping is off on this node (start it with --alert-groups=true and the model)"
                .into(),
        );
    };
    if request.from >= request.to {
        return rejection(StatusCode::BAD_REQUEST, "from must be before to".into());
    }
    let windows = config.windows_between(request.from, request.to);
    if windows.len() > MAX_REGROUP_WINDOWS {
        return rejection(
            StatusCode::BAD_REQUEST,
            format!(
                "the range spans {} windows; at most {MAX_REGROUP_WINDOWS} per request",
                windows.len()
            ),
        );
    }
    let mut done = Vec::with_capacity(windows.len());
    for window in windows {
        match grouping::regroup(state.pipeline.store.pool(), &config, window).await {
            Ok(summary) => done.push(json!({
                "window": window,
                "texts_assigned": summary.texts_assigned,
                "groups": summary.groups_opened,
            })),
            Err(e) => return ApiError::Unavailable(e.to_string()).into_response(),
        }
    }
    Json(json!({ "threshold": config.threshold, "windows": done })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows_parse() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        assert_eq!(
            window(None, None, None, now).unwrap(),
            (now - Duration::hours(24), now)
        );
        assert_eq!(
            window(Some("15m"), None, None, now).unwrap().0,
            now - Duration::minutes(15)
        );
        assert_eq!(
            window(Some("7d"), None, None, now).unwrap().0,
            now - Duration::days(7)
        );
        let from = now - Duration::hours(2);
        assert_eq!(
            window(Some("7d"), Some(from), None, now).unwrap(),
            (from, now)
        );
        for bad in [
            "",
            "h",
            "0h",
            "-3h",
            "24",
            "3w",
            "1.5h",
            "99999999999999999d",
        ] {
            assert!(window(Some(bad), None, None, now).is_err(), "{bad}");
        }
        assert!(window(Some("91d"), None, None, now).is_err());
        assert!(window(None, Some(now + Duration::hours(1)), None, now).is_err());
    }
}
