//! `GET /metrics`: Prometheus text. Counters and histograms come from the `metrics` facade
//! (the receivers' `wit_otlp_*`, wit-wal's `wit_wal_*`, wit-pipeline's `wit_pipeline_*`);
//! gauges are read at scrape time: unstored and unindexed bytes, batches in flight, the WAL's size, and
//! batches per stage from the tracker. With keys, a tenant's admin key gets the series of its
//! own tenant and those of no tenant (the server's); the operator tenant's, every series.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wit_batch::Stage;

use crate::serve::server::App;

/// The process's recorder, installed once.
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .expect("buckets are not empty")
            .install_recorder()
            .expect("the only metrics recorder of the process")
    })
}

pub(super) async fn render(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    axum::extract::Extension(crate::serve::access::RequestTenant(tenant)): axum::extract::Extension<
        crate::serve::access::RequestTenant,
    >,
) -> Response {
    let scope = super::monitor::scope(&app, tenant);
    let handle = handle();
    if let Some(core) = app.core() {
        let status = core.pipeline.status();
        metrics::gauge!("wit_pipeline_unstored_bytes").set(status.unstored_bytes as f64);
        metrics::gauge!("wit_pipeline_unindexed_bytes").set(status.unindexed_bytes as f64);
        metrics::gauge!("wit_pipeline_batches_in_flight").set(status.batches_in_flight as f64);
        let wal = core.pipeline.wal().stats();
        metrics::gauge!("wit_wal_bytes_on_disk").set(wal.bytes_on_disk as f64);
        metrics::gauge!("wit_wal_segments").set(wal.segment_count as f64);
        let app = app.clone();
        let counts = tokio::task::spawn_blocking(move || {
            let core = app.core().expect("checked above");
            let now = SystemTime::now() + Duration::from_secs(1);
            core.tracker
                .stage_counts(wit_tracker::Window::new(UNIX_EPOCH, now), None)
        })
        .await;
        match counts {
            Ok(Ok(counts)) => {
                for stage in Stage::ALL {
                    metrics::gauge!("wit_batches", "stage" => stage.as_str()).set(counts.get(stage) as f64);
                }
            }
            _ => metrics::counter!("wit_tracker_read_errors_total").increment(1),
        }
    }
    metrics::gauge!("wit_ready").set(if app.core().is_some() { 1.0 } else { 0.0 });
    handle.run_upkeep();
    let mut text = handle.render();
    if let Some(tenant) = scope {
        text = only_tenant(&text, tenant.as_str());
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// `text` without the series of tenants other than `tenant` (series without a `tenant`
/// label are the server's and stay).
fn only_tenant(text: &str, tenant: &str) -> String {
    let own = format!("tenant=\"{tenant}\"");
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let other = !line.starts_with('#') && line.contains("tenant=\"") && !line.contains(&own);
        if !other {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
