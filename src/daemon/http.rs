//! The daemon's HTTP API on `--listen` (contract §4): `GET /healthz`,
//! `/metrics` (Prometheus text), `/status` (JSON), and, for requests that
//! carry `Authorization: Bearer $DEED_API_TOKEN`, `/plan` (the last plan, as
//! `deed plan --format json` prints it) and `/state` (a dump, as `deed state
//! dump` writes it). Without `DEED_API_TOKEN` set, `/plan` and `/state`
//! answer 403 to everyone.
//!
//! Handlers only read what the reconcile loop published in [`Shared`];
//! `/state` opens the store briefly, in turn with the loop. A standby
//! (several daemons on PostgreSQL) serves them all: its `/plan` is its own
//! read-only plan, `/status` says `"role": "standby"` and names the leader.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Shared;

/// The routes, over the loop's published state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/plan", get(plan))
        .route("/state", get(state))
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.report().metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status_json();
    let mut text = serde_json::to_string_pretty(&status).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn plan(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return forbidden();
    }
    let plan = shared.report().plan.clone();
    match plan {
        Some(json) => (
            [(header::CONTENT_TYPE, "application/json")],
            json.as_str().to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no plan yet: the first reconcile has not produced one (see /status)\n",
        )
            .into_response(),
    }
}

async fn state(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return forbidden();
    }
    let dumping = Arc::clone(&shared);
    match tokio::task::spawn_blocking(move || dumping.dump_state()).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response(),
        Ok(Err(message)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot dump the state: {message}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot dump the state: the dump task failed\n",
        )
            .into_response(),
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "forbidden: send Authorization: Bearer <token>, the token the daemon was given in DEED_API_TOKEN\n",
    )
        .into_response()
}

/// Whether the request carries the bearer token (never, without one set).
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = shared.api_token.as_deref() else {
        return false;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && same_secret(given.trim().as_bytes(), token.as_bytes())
}

/// Compares without returning early on the first different byte.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cres"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
