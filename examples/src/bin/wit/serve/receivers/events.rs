//! NDJSON events: `POST /v1/events/{stream}` with one JSON object per line (gzip or not, under
//! the same size limit as OTLP), into the tenant's `events` table with the stream in the
//! `_stream` column. Every line must parse, carry its time (`timestamp`, RFC 3339 or epoch
//! milliseconds) and pass the stream's JSON Schema if it has one (`events.schemas`); a line
//! that does not goes to the tenant's `dead_letters` table, naming why, and the others are
//! taken. Success is `{"accepted": <events>}` once the acknowledgment level holds, with
//! `"dead_lettered": <n>` and `"message"` (the first reason) when lines were left out.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wit_batch::{BatchKey, PayloadFormat, Signal, SourceKind};

use super::otlp_http::{Refused, read_body};
use super::{Encoding, INVALID_ARGUMENT, status_response};
use crate::serve::access::RequestTenant;
use crate::serve::server::App;

/// A stream name: 1 to 128 of `A-Z a-z 0-9 _ . -`.
fn valid_stream(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(super) async fn events(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !valid_stream(&stream) {
        super::count("http", Signal::Events, "invalid", 0, 0);
        return status_response(
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            format!("stream `{stream}`: 1 to 128 of A-Z, a-z, 0-9, `_`, `.` and `-`"),
            Encoding::Json,
            None,
        );
    }
    let payload = match read_body(&app, Signal::Events, Encoding::Json, &headers, body).await {
        Ok(payload) => payload,
        Err(Refused(response)) => return response,
    };
    let key = BatchKey::new(tenant, Signal::Events, SourceKind::Http).with_topic(stream);
    let retry = Some(app.config.otlp.retry_after_seconds);
    let idempotency = match super::idempotency_key(&headers) {
        Ok(key) => key,
        Err(refusal) => return super::http_refusal(refusal, Encoding::Json, retry),
    };
    match super::ingest(&app, key, PayloadFormat::Ndjson, payload, idempotency).await {
        Ok(accepted) => {
            let body = match accepted.rejected {
                0 => serde_json::json!({"accepted": accepted.records}),
                n => serde_json::json!({
                    "accepted": accepted.records,
                    "dead_lettered": n,
                    "message": accepted.message,
                }),
            };
            let mut response = (StatusCode::OK, Json(body)).into_response();
            super::mark_replayed(&accepted, response.headers_mut());
            response
        }
        Err(refusal) => super::http_refusal(refusal, Encoding::Json, retry),
    }
}
