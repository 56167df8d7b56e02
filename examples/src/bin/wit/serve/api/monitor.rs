//! The batch monitor (seed 000's API), read from the tracker: where every batch is, what is
//! stuck, what failed. Without keys it spans every tenant (an operator's view); with keys it
//! needs the `admin` scope and shows the key's tenant's batches only (another tenant's batch
//! is not found).
//!
//! - `GET /api/batch-monitor/status[?window_minutes=N]`: batches per stage (all of them),
//!   throughput per tenant over the last N minutes (default 5), and the pipeline's own
//!   counters.
//! - `GET /api/batch-monitor/batches/{id}`: one batch, with the time it reached each stage.
//! - `GET /api/batch-monitor/batches?stage=S&min_age_minutes=N&limit=L`: batches in stage S
//!   (any stage but `COMPLETED`; without S, every stage but `COMPLETED` and `FAILED`) created
//!   at least N minutes ago, oldest first, the first L of them (default 100, at most 10 000).
//! - `GET /api/batch-monitor/alerts`: batches not finished `monitor.stuck_after_minutes`
//!   after their creation, and failed ones.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use wit_batch::{BatchId, Stage, Tenant};
use wit_tracker::{BatchQuery, BatchRecord, Window};

use crate::serve::access::RequestTenant;
use crate::serve::server::{App, Core};

/// Whose batches (and metrics) a request sees: with keys, its key's tenant's only, unless
/// that is the operator tenant (`tenants.operator`); without keys, every one.
pub(super) fn scope(app: &App, tenant: Tenant) -> Option<Tenant> {
    let operator = app.config.tenants.operator.as_deref() == Some(tenant.as_str());
    (app.keys().len() > 0 && !operator).then_some(tenant)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Runs `read` against the tracker on a blocking thread.
async fn read<T: Send + 'static>(
    app: &Arc<App>,
    read: impl FnOnce(&Core) -> Result<T, wit_tracker::Error> + Send + 'static,
) -> Result<T, Response> {
    if app.core().is_none() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is recovering".into(),
        ));
    }
    let app = app.clone();
    tokio::task::spawn_blocking(move || read(app.core().expect("checked above")))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("tracker read panicked: {e}")))?
        .map_err(|e| match e {
            wit_tracker::Error::UnknownBatch { .. } => error(StatusCode::NOT_FOUND, e.to_string()),
            e => error(StatusCode::SERVICE_UNAVAILABLE, format!("tracker: {e}")),
        })
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A batch as JSON: times in milliseconds since the epoch.
pub(crate) fn batch_json(record: &BatchRecord, now: SystemTime) -> Value {
    let meta = &record.meta;
    let stages: serde_json::Map<String, Value> = Stage::ALL
        .iter()
        .filter_map(|s| {
            record
                .completed_at
                .get(*s)
                .map(|t| (s.as_str().to_string(), json!(millis(t))))
        })
        .collect();
    json!({
        "id": meta.id.to_string(),
        "tenant": meta.tenant.as_str(),
        "signal": meta.signal.as_str(),
        "source": meta.source.as_str(),
        "stage": record.stage.as_str(),
        "failed_in": record.failed_in.map(|s| s.as_str()),
        "messages": meta.message_count,
        "bytes": meta.byte_size,
        "topics": meta.topics,
        "created_at_ms": millis(meta.created_at),
        "age_seconds": now.duration_since(meta.created_at).map_or(0, |d| d.as_secs()),
        "stage_times_ms": stages,
        "wal_position": record.wal_position.as_ref().map(|w| json!({"node": w.node, "lsn": w.lsn})),
        "error": record.error_message.as_ref().map(|m| json!({"stage": record.error_stage.map(|s| s.as_str()), "message": m})),
        "retry_count": record.retry_count,
        "updated_at_ms": millis(record.updated_at),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusQuery {
    window_minutes: Option<u64>,
}

pub(super) async fn status(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let minutes = q.window_minutes.unwrap_or(5).max(1);
    let scope = scope(&app, tenant);
    let result = read(&app, move |core| {
        let now = SystemTime::now();
        let counts = core
            .tracker
            .stage_counts(Window::new(UNIX_EPOCH, now + Duration::from_secs(1)), scope.as_ref())?;
        let mut throughput = core
            .tracker
            .client_throughput(Window::last(Duration::from_secs(minutes * 60), now))?;
        throughput.retain(|t| scope.as_ref().is_none_or(|s| t.tenant == *s));
        Ok((counts, throughput, core.pipeline.status()))
    })
    .await;
    let (counts, throughput, pipeline) = match result {
        Ok(r) => r,
        Err(response) => return response,
    };
    let stages: serde_json::Map<String, Value> = Stage::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(counts.get(*s))))
        .collect();
    let tenants: Vec<Value> = throughput
        .iter()
        .map(|t| {
            json!({"tenant": t.tenant.as_str(), "batches": t.batches, "messages": t.messages,
                   "bytes": t.bytes, "messages_per_second": t.messages_per_second})
        })
        .collect();
    Json(json!({
        "stages": stages,
        "total": counts.total(),
        "throughput_window_minutes": minutes,
        "throughput": tenants,
        "pipeline": {
            "unstored_bytes": pipeline.unstored_bytes,
            "unindexed_bytes": pipeline.unindexed_bytes,
            "batches_in_flight": pipeline.batches_in_flight,
            "batches_stored": pipeline.batches_stored,
            "batches_failed": pipeline.batches_failed,
            "files_indexed": pipeline.files_indexed,
            "records_stored": pipeline.records_stored,
            "records_indexed": pipeline.records_indexed,
            "last_error": pipeline.last_error,
        },
    }))
    .into_response()
}

pub(super) async fn batch(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    Path(id): Path<String>,
) -> Response {
    let id: BatchId = match id.parse() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("batch id `{id}`: {e}")),
    };
    let scope = scope(&app, tenant);
    match read(&app, move |core| core.tracker.batch(id)).await {
        // Another tenant's batch is answered as one that does not exist.
        Ok(record) if scope.as_ref().is_some_and(|s| record.meta.tenant != *s) => {
            error(StatusCode::NOT_FOUND, format!("batch {id} is not registered"))
        }
        Ok(record) => Json(batch_json(&record, SystemTime::now())).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    stage: Option<String>,
    min_age_minutes: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn batches(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    Query(q): Query<ListQuery>,
) -> Response {
    let scope = scope(&app, tenant);
    let stage = match q.stage.as_deref().map(str::parse::<Stage>).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if stage == Some(Stage::Completed) {
        return error(
            StatusCode::BAD_REQUEST,
            "COMPLETED batches are not listed (they are counted by /api/batch-monitor/status); ask for one by id"
                .into(),
        );
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let min_age = Duration::from_secs(q.min_age_minutes.unwrap_or(0) * 60);
    let result = read(&app, move |core| {
        let now = SystemTime::now();
        let before = now.checked_sub(min_age).unwrap_or(UNIX_EPOCH);
        let query = match stage {
            Some(stage) => BatchQuery::in_stage(stage).with_created_before(before),
            None => BatchQuery::stuck(before),
        };
        let page = core.tracker.list_batches(&query.with_tenant(scope).with_limit(limit))?;
        Ok((page.batches, now))
    })
    .await;
    let (records, now) = match result {
        Ok(r) => r,
        Err(response) => return response,
    };
    let batches: Vec<Value> = records.iter().map(|r| batch_json(r, now)).collect();
    Json(json!({"count": batches.len(), "batches": batches})).into_response()
}

pub(super) async fn alerts(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
) -> Response {
    let stuck_after = Duration::from_secs(app.config.monitor.stuck_after_minutes * 60);
    let limit = app.config.monitor.max_alerts;
    let scope = scope(&app, tenant);
    let result = read(&app, move |core| {
        let now = SystemTime::now();
        let before = now.checked_sub(stuck_after).unwrap_or(UNIX_EPOCH);
        // The first `limit` of each list (none when `monitor.max_alerts` is 0).
        let first = |query: BatchQuery| -> Result<Vec<BatchRecord>, wit_tracker::Error> {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let query = query.with_tenant(scope.clone()).with_limit(limit);
            Ok(core.tracker.list_batches(&query)?.batches)
        };
        Ok((first(BatchQuery::stuck(before))?, first(BatchQuery::failed())?, now))
    })
    .await;
    let (stuck, failed, now) = match result {
        Ok(r) => r,
        Err(response) => return response,
    };
    let list = |records: &[BatchRecord]| records.iter().map(|r| batch_json(r, now)).collect::<Vec<_>>();
    Json(json!({
        "stuck_after_minutes": stuck_after.as_secs() / 60,
        "stuck": list(&stuck),
        "failed": list(&failed),
    }))
    .into_response()
}
