//! The API port (default 127.0.0.1:8083): SQL (`query.rs`), the batch monitor
//! (`monitor.rs`), Prometheus metrics (`metrics.rs`) and health. Every route but health
//! passes through the access layer: SQL needs the `read` scope, the batch monitor and
//! `/metrics` `admin`; health is open (probes carry no key).

mod metrics;
mod monitor;
mod query;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::serve::access::Guard;
use crate::serve::config::Scope;
use crate::serve::server::App;

pub(crate) use metrics::handle as metrics_handle;

pub(crate) fn router(app: Arc<App>) -> Router {
    let guard = |scope| {
        axum::middleware::from_fn_with_state(
            Guard {
                app: app.clone(),
                scope,
            },
            crate::serve::access::layer,
        )
    };
    let read = Router::new()
        .route("/api/v1/query", post(query::sql))
        .route("/api/v1/page", post(query::page))
        .route("/api/v1/tail", post(query::tail))
        .layer(guard(Scope::Read));
    let admin = Router::new()
        .route("/api/batch-monitor/status", get(monitor::status))
        .route("/api/batch-monitor/batches", get(monitor::batches))
        .route("/api/batch-monitor/batches/{id}", get(monitor::batch))
        .route("/api/batch-monitor/alerts", get(monitor::alerts))
        .route("/metrics", get(metrics::render))
        .layer(guard(Scope::Admin));
    let routes = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(read)
        .merge(admin);
    crate::serve::cors(routes, &app.config).with_state(app)
}

/// The process is up (also during recovery).
async fn live(State(app): State<Arc<App>>) -> Response {
    let body = serde_json::json!({"status": "live", "uptime_seconds": app.started.elapsed().as_secs()});
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Recovery finished and the pipeline takes data: 200; until then 503.
async fn ready(State(app): State<Arc<App>>) -> Response {
    match app.core() {
        Some(core) => {
            let status = core.pipeline.status();
            let r = core.pipeline.recovery();
            let body = serde_json::json!({
                "status": "ready",
                "unstored_bytes": status.unstored_bytes,
                "batches_in_flight": status.batches_in_flight,
                "recovery": {"replayed": r.replayed, "already_stored": r.already_stored,
                             "staged_published": r.staged_published, "failed": r.failed},
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "recovering"})),
        )
            .into_response(),
    }
}
