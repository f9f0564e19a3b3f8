//! `GET /console`: the operator console, one static page built into the binary (no build step,
//! no separate server). Public class: the page holds no data; everything it shows comes from the
//! public APIs (`/api/status`, Backbeat's failed list and retry, running actions, DR v2), called
//! with a token from `/api/2/idp/token` when auth is on.

use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};

use crate::state::AppState;

const PAGE: &str = include_str!("console/index.html");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
}

async fn page() -> Response {
    (
        [
            (CACHE_CONTROL, "no-cache"),
            // Only this origin: the page loads nothing from elsewhere.
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}
