//! The running server: opens (and recovers) the pipeline, binds the ports, serves until
//! SIGTERM or SIGINT, then shuts down in order.
//!
//! Startup: the API port is bound first, so `/health/live` answers during recovery and
//! `/health/ready` says 503 until [`Core`] exists. Then tracker, destination and pipeline are
//! opened (`Pipeline::open` recovers: staged files published, WAL batches not yet stored
//! stored), the query engine is made over the same catalog and hot tier, and the OTLP ports
//! are bound.
//!
//! Shutdown: the listeners stop accepting and in-flight requests finish (their
//! acknowledgments included), then the pipeline is flushed and closed, which makes every
//! accepted part durable and stores what it can; the WAL is closed cleanly.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use wit_batch::{BatcherConfig, Tenant};
use wit_pipeline::{Pipeline, PipelineConfig, TrackerCatalog};
use wit_query::{HotTier, QueryConfig, QueryEngine};
use wit_store::{Destination, NodeName, SinkConfig};
use wit_tracker::{PostgresTracker, SqliteTracker, TrackerConfig};

use super::access::Keys;
use super::config::{Config, TrackerSection};

/// What every route shares.
pub(crate) struct App {
    pub(crate) config: Config,
    /// The file the configuration came from, read again for the keys on SIGHUP.
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) default_tenant: Tenant,
    /// The API keys (none: every route is open), replaced on SIGHUP.
    keys: RwLock<Arc<Keys>>,
    /// Per-tenant rate limits.
    pub(crate) limits: super::limits::Limiter,
    /// The event streams' JSON Schemas.
    pub(crate) schemas: super::schemas::Schemas,
    /// Set once recovery finished and the pipeline is open.
    pub(crate) core: OnceLock<Core>,
    pub(crate) started: Instant,
}

/// The opened parts: the pipeline the receivers submit to, the engine SQL runs on, the
/// tracker the batch monitor reads.
pub(crate) struct Core {
    pub(crate) pipeline: Pipeline,
    pub(crate) engine: QueryEngine,
    pub(crate) tracker: Arc<dyn TrackerCatalog>,
}

impl App {
    pub(crate) fn core(&self) -> Option<&Core> {
        self.core.get()
    }

    pub(crate) fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the keys again from the configuration file; on any error the keys stay as
    /// they were. Nothing else of the file is applied.
    fn reload_keys(&self) {
        let Some(path) = &self.config_path else {
            tracing::warn!("SIGHUP: no configuration file to read the keys from");
            return;
        };
        match super::config::Config::load(path).and_then(|c| Keys::of(&c).map_err(super::config::ConfigError)) {
            Ok(keys) => {
                let n = keys.len();
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                tracing::info!(keys = n, "SIGHUP: API keys reloaded (other settings need a restart)");
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: keys not reloaded, the previous ones stay"),
        }
    }
}

/// Opens tracker, destination, pipeline and engine as `config` says.
fn open(config: &Config) -> Result<Core, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create the data directory `{}`: {e}", config.data_dir.display()))?;
    let tracker: Arc<dyn TrackerCatalog> = match &config.tracker {
        TrackerSection::Sqlite { .. } => {
            let path = config.tracker_path();
            Arc::new(
                SqliteTracker::open(&path, TrackerConfig::default())
                    .map_err(|e| format!("cannot open the SQLite tracker `{}`: {e}", path.display()))?,
            )
        }
        TrackerSection::Postgres { url } => Arc::new(
            PostgresTracker::connect(url, TrackerConfig::default())
                .map_err(|e| format!("cannot connect to the PostgreSQL tracker: {e}"))?,
        ),
    };
    let storage = &config.storage;
    let url = config.storage_url();
    // The configuration takes a plain path for a local directory too.
    let destination = if url.contains("://") {
        Destination::from_url(&url)
            .with_options(storage.options.clone())
            .with_retries(storage.retries, Duration::from_millis(storage.retry_timeout_ms))
            .build()
    } else {
        Destination::local(std::path::Path::new(&url))
    }
    .map_err(|e| format!("cannot open the storage `{url}`: {e}"))?;
    let node = NodeName::try_new(&config.node).map_err(|e| format!("node `{}`: {e}", config.node))?;
    let p = &config.pipeline;
    let hot = HotTier::new(p.hot_tier_bytes);
    let mut sink = SinkConfig::new(node.clone())
        .with_max_file_age(Duration::from_millis(p.file_max_age_ms))
        .with_max_file_bytes(p.file_max_bytes);
    // Files bound for object storage are staged under the data directory: the server's own,
    // not a directory in /tmp that another server of the same node name would share.
    if config
        .storage
        .url
        .as_deref()
        .is_some_and(|u| u.contains("://") && !u.starts_with("file://"))
    {
        sink = sink.with_staging_dir(config.data_dir.join("staging"));
    }
    let pipeline_config = PipelineConfig::new(config.data_dir.join("pipeline"), node.clone())
        .with_wal(wit_wal::Config::default().with_segment_size(p.wal_segment_bytes))
        .with_batcher(
            BatcherConfig::default()
                .with_max_messages(p.batch_max_parts)
                .with_max_bytes(p.batch_max_bytes)
                .with_max_age(Duration::from_millis(p.batch_max_age_ms)),
        )
        .with_sink(sink)
        .with_indexing(p.indexing)
        .with_max_unstored_bytes(p.max_unstored_bytes)
        .with_max_unstored_bytes_per_tenant(match p.max_unstored_bytes_per_tenant {
            0 => u64::MAX,
            bytes => bytes,
        })
        .with_max_unindexed_bytes(p.max_unindexed_bytes)
        .with_idempotency_window(Duration::from_secs(p.idempotency_window_seconds))
        .with_processing_interval(Duration::from_millis(p.processing_interval_ms))
        .with_hot_tier(hot.clone());
    let pipeline = Pipeline::open(pipeline_config, destination.clone(), tracker.clone())
        .map_err(|e| format!("cannot open the pipeline: {}", chain(&e)))?;
    let q = &config.query;
    let mut query_config = QueryConfig::default().with_hot_tier(hot);
    if q.target_partitions > 0 {
        query_config = query_config.with_target_partitions(q.target_partitions);
    }
    if q.memory_limit_bytes > 0 {
        query_config = query_config.with_memory_limit_bytes(q.memory_limit_bytes);
    }
    let engine = QueryEngine::with_config(tracker.clone(), &destination, query_config)
        .map_err(|e| format!("cannot start the query engine: {e}"))?;
    Ok(Core {
        pipeline,
        engine,
        tracker,
    })
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// `error` with its sources, each after a colon.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// Runs the server until a termination signal; returns once everything is closed.
pub(crate) async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), String> {
    let default_tenant = Tenant::try_new(&config.tenants.default)
        .map_err(|e| format!("tenants.default `{}`: {e}", config.tenants.default))?;
    let keys = Keys::of(&config)?;
    let limits = super::limits::Limiter::new(&config);
    let schemas = super::schemas::Schemas::of(&config)?;
    let app = Arc::new(App {
        config,
        config_path,
        default_tenant,
        keys: RwLock::new(Arc::new(keys)),
        limits,
        schemas,
        core: OnceLock::new(),
        started: Instant::now(),
    });
    // Installed before anything records: the libraries' counters start at the first batch.
    super::api::metrics_handle();
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        // Weak: shutdown takes the app back whole to close the pipeline.
        let app = Arc::downgrade(&app);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match app.upgrade() {
                    Some(app) => app.reload_keys(),
                    None => return,
                }
            }
        });
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let api_listener = bind("the API", app.config.listen.api).await?;
    let api = tokio::spawn(
        axum::serve(api_listener, super::api::router(app.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    tracing::info!(addr = %app.config.listen.api, "API listening (ready after recovery)");

    let opened = {
        let config = app.config.clone();
        tokio::task::spawn_blocking(move || open(&config))
            .await
            .map_err(|e| format!("opening panicked: {e}"))?
    };
    let core = match opened {
        Ok(core) => core,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = api.await;
            return Err(e);
        }
    };
    let r = core.pipeline.recovery();
    tracing::info!(
        replayed = r.replayed,
        already_stored = r.already_stored,
        staged_published = r.staged_published,
        ranges_unclaimed = r.ranges_unclaimed,
        failed = r.failed,
        "recovery finished"
    );
    let _ = app.core.set(core);

    // The Kafka source starts once recovery is done; it claims first what the last run wrote
    // to the WAL and did not claim.
    let kafka = match super::kafka::source_config(&app.config.kafka) {
        Ok(None) => None,
        Ok(Some(config)) => {
            let group = config.group().to_owned();
            let started = {
                let app = app.clone();
                tokio::task::spawn_blocking(move || app.core().expect("opened above").pipeline.start_kafka(config))
                    .await
                    .map_err(|e| format!("starting the Kafka source panicked: {e}"))?
            };
            match started {
                Ok(source) => {
                    tracing::info!(group, brokers = %app.config.kafka.brokers, "Kafka source started");
                    Some(source)
                }
                Err(e) => {
                    let _ = stop_tx.send(true);
                    let _ = api.await;
                    return Err(format!("cannot start the Kafka source: {}", chain(&e)));
                }
            }
        }
        Err(e) => return Err(e),
    };

    let http_listener = bind("OTLP/HTTP", app.config.listen.otlp_http).await?;
    let http = tokio::spawn(
        axum::serve(http_listener, super::receivers::http_router(app.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let grpc_listener = bind("OTLP/gRPC", app.config.listen.otlp_grpc).await?;
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(super::receivers::grpc_router(app.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener),
                stopped(stop_rx.clone()),
            ),
    );
    tracing::info!(
        otlp_grpc = %app.config.listen.otlp_grpc,
        otlp_http = %app.config.listen.otlp_http,
        api = %app.config.listen.api,
        data_dir = %app.config.data_dir.display(),
        "wit serve ready"
    );

    terminated().await;
    tracing::info!("stopping: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    // In-flight requests get `shutdown_grace_ms` to finish; a connection that is still open
    // then (a client that does not answer the GOAWAY, say) is abandoned.
    let grace = Duration::from_millis(app.config.shutdown_grace_ms);
    let deadline = tokio::time::Instant::now() + grace;
    let grpc = async move { grpc.await.map(|r| r.map_err(|e| e.to_string())) };
    let http = async move { http.await.map(|r| r.map_err(|e| e.to_string())) };
    let api = async move { api.await.map(|r| r.map_err(|e| e.to_string())) };
    let tasks: [(&str, std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>); 3] = [
        ("OTLP/gRPC", Box::pin(grpc)),
        ("OTLP/HTTP", Box::pin(http)),
        ("API", Box::pin(api)),
    ];
    for (name, task) in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(server = name, error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(server = name, error = %e, "server task failed"),
            Err(_) => tracing::warn!(
                server = name,
                ?grace,
                "connections still open after the grace period: abandoned"
            ),
        }
    }
    if let Some(source) = kafka {
        // Its open batches are sent and their claims awaited before the pipeline closes.
        match tokio::task::spawn_blocking(move || source.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %chain(&e), "the Kafka source stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "stopping the Kafka source panicked"),
        }
    }
    match Arc::try_unwrap(app) {
        Ok(app) => {
            let core = app.core.into_inner().expect("opened above");
            tokio::task::spawn_blocking(move || {
                core.pipeline.flush().map_err(|e| format!("final flush failed: {e}"))?;
                core.pipeline
                    .close()
                    .map_err(|e| format!("closing the pipeline failed: {e}"))
            })
            .await
            .map_err(|e| format!("closing panicked: {e}"))??;
        }
        Err(app) => {
            // Abandoned connections still hold the state: everything accepted is made durable
            // and stored; the WAL is left to the next start's recovery.
            tokio::task::spawn_blocking(move || {
                let core = app.core().expect("opened above");
                core.pipeline.flush().map_err(|e| format!("final flush failed: {e}"))
            })
            .await
            .map_err(|e| format!("flushing panicked: {e}"))??;
            tracing::warn!("stopped after the grace period: data flushed, the WAL is recovered on the next start");
            return Ok(());
        }
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
