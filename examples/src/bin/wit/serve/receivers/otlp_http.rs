//! OTLP/HTTP (`POST /v1/traces`, `/v1/logs`, `/v1/metrics`), as the OTLP specification
//! describes it: protobuf or JSON on the same path, answered in the request's content type;
//! `Content-Encoding: gzip`; the size limit applied after decompression (413); 415 for other
//! content types or encodings; 400 with a `google.rpc.Status` for data that does not decode
//! (nothing of it is taken), or 200 with `partial_success` when only some records are at
//! fault and the rest was taken; 503 with `Retry-After` when the server holds its bound of
//! unstored data or the acknowledgment does not come in time. Success (200) is answered only
//! once the configured acknowledgment level holds for the request's batch.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use wit_batch::{BatchKey, PayloadFormat, Signal, SourceKind};

use super::{Encoding, INVALID_ARGUMENT, status_response};
use crate::serve::access::RequestTenant;
use crate::serve::server::App;

/// The OTLP/HTTP port's routes, behind the access layer (scope `write`; CORS when
/// configured).
pub(crate) fn router(app: Arc<App>) -> Router {
    let routes = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .route("/v1/events/{stream}", post(super::events::events))
        .layer(axum::middleware::from_fn_with_state(
            crate::serve::access::Guard {
                app: app.clone(),
                scope: crate::serve::config::Scope::Write,
            },
            crate::serve::access::layer,
        ))
        // The limit is ours, applied after decompression.
        .layer(DefaultBodyLimit::disable());
    crate::serve::cors(routes, &app.config).with_state(app)
}

async fn traces(state: State<Arc<App>>, tenant: Extension<RequestTenant>, headers: HeaderMap, body: Body) -> Response {
    export(state, tenant, Signal::Traces, headers, body).await
}

async fn logs(state: State<Arc<App>>, tenant: Extension<RequestTenant>, headers: HeaderMap, body: Body) -> Response {
    export(state, tenant, Signal::Logs, headers, body).await
}

async fn metrics(state: State<Arc<App>>, tenant: Extension<RequestTenant>, headers: HeaderMap, body: Body) -> Response {
    export(state, tenant, Signal::Metrics, headers, body).await
}

/// Why a request was not taken, as the answer it gets.
pub(super) struct Refused(pub(super) Response);

async fn export(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    signal: Signal,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(encoding) = Encoding::from_content_type(&headers) else {
        super::count("http", signal, "unsupported", 0, 0);
        let got = headers
            .get(header::CONTENT_TYPE)
            .map_or("none".to_string(), |v| format!("`{}`", v.to_str().unwrap_or("?")));
        return status_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_ARGUMENT,
            format!(
                "content type {got} is not supported: send `{}` or `{}`",
                Encoding::PROTOBUF,
                Encoding::JSON
            ),
            Encoding::Json,
            None,
        );
    };
    match accept(&app, tenant, signal, encoding, &headers, body).await {
        Ok(accepted) => {
            let body = super::export_response(signal, &accepted, encoding);
            let mut response =
                (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response();
            super::mark_replayed(&accepted, response.headers_mut());
            response
        }
        Err(Refused(response)) => response,
    }
}

async fn accept(
    app: &App,
    tenant: wit_batch::Tenant,
    signal: Signal,
    encoding: Encoding,
    headers: &HeaderMap,
    body: Body,
) -> Result<super::Accepted, Refused> {
    let payload = read_body(app, signal, encoding, headers, body).await?;
    let format = match encoding {
        Encoding::Protobuf => PayloadFormat::OtlpProtobuf,
        Encoding::Json => PayloadFormat::OtlpJson,
    };
    let retry = Some(app.config.otlp.retry_after_seconds);
    let idempotency = super::idempotency_key(headers).map_err(|r| Refused(super::http_refusal(r, encoding, retry)))?;
    super::ingest(
        app,
        BatchKey::new(tenant, signal, SourceKind::Http),
        format,
        payload,
        idempotency,
    )
    .await
    .map_err(|refusal| super::http_refusal(refusal, encoding, retry))
    .map_err(Refused)
}

/// The request body, gunzipped when `Content-Encoding: gzip`, within `otlp.max_message_bytes`
/// after decompression (413 otherwise; 415 for another encoding; 400 for a broken gzip).
pub(super) async fn read_body(
    app: &App,
    signal: Signal,
    encoding: Encoding,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Refused> {
    let limit = app.config.otlp.max_message_bytes;
    let refuse = |status: StatusCode, code: i32, message: String, retry: Option<u64>| {
        Refused(status_response(status, code, message, encoding, retry))
    };
    let too_large = || {
        super::count("http", signal, "too_large", 0, 0);
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_ARGUMENT,
            format!("the request is larger than {limit} bytes (after decompression)"),
            None,
        )
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?")) {
        None | Some("identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            super::count("http", signal, "unsupported", 0, 0);
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                format!("content encoding `{other}` is not supported: send gzip or identity"),
                None,
            ));
        }
    };
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    let payload = match gzip {
        false => raw,
        true => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Err(e) => {
                    super::count("http", signal, "invalid", 0, 0);
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        INVALID_ARGUMENT,
                        format!("the gzip body does not decompress: {e}"),
                        None,
                    ));
                }
                Ok(n) if n > limit => return Err(too_large()),
                Ok(_) => Bytes::from(out),
            }
        }
    };
    Ok(payload)
}
