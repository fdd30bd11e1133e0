//! The web console: `web/`'s page, script and style sheet, compiled into the binary
//! so a Palisade serves its own console with nothing to fetch at run time.
//!
//! The console's routes are open: the page holds no data, and every API call it
//! makes presents the token the analyst signed in with (kept in the browser tab's
//! session storage, never in the address).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/console.js");
const STYLE: &str = include_str!("../web/console.css");

/// `/` and `/console/…`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self'; img-src 'self' data:; base-uri 'none'; \
                 frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}
