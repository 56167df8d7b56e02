//! The PostgreSQL tracker: one database shared by several nodes.
//!
//! All I/O runs on the tracker's own small runtime, so the blocking [`Tracker`] needs no
//! runtime from its host and the [`AsyncTracker`] never blocks the host's runtime threads; or,
//! connected with [`PostgresTracker::connect_on`], on the host's runtime.
//! Connections come from a pool that drops broken ones, so the tracker works again once the
//! server is back, without a restart of the host.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;
use wit_batch::{BatchId, BatchMeta, Signal, Stage, Tenant, Transition};
use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};

use crate::model::{
    Advance, BatchPage, BatchQuery, BatchRecord, ClaimRequest, ClientThroughput, ErrorOutcome, RangeClaim,
    RangeOutcome, Registration, RememberedKey, SourceOffset, StageCounts, TrackerConfig, Window,
};
use crate::plan::{micros, sql_limit, to_i64};
use crate::sql::{
    FIRST_TIME_COLUMN, IndexColumns, ListParam, PARTITION_COLUMN, RECORD_COLUMNS, RawRecord, UNSTORED_STAGES,
    WAL_NODE_COLUMN, list_sql, read_index, stage_list, wal_node,
};
use crate::{AsyncTracker, Error, Result, Tracker, plan};

const BACKEND: &str = "postgres";

/// A lock number that serializes migrations across nodes opening the same database.
const MIGRATION_LOCK: i64 = 0x7769_745f_7472_6163; // "wit_trac"

/// The first key of the advisory locks a publish or replace takes on the batches of its new
/// files (the second is [`batch_lock`]), so that two nodes never both find a batch unstored
/// and both catalogue a file holding it. The two-key lock space is apart from
/// [`MIGRATION_LOCK`]'s.
const BATCH_LOCK_CLASS: i32 = 0x7769_7462; // "witb"

/// The first key of the advisory locks [`Tracker::claim_ranges`] takes on the partitions it
/// claims (the second is [`partition_lock`]), so that the claims of one partition run one
/// after the other, even while the partition has no offset row to lock yet.
const PARTITION_LOCK_CLASS: i32 = 0x7769_7470; // "witp"

/// The schema, one migration per version. `batch_tracker` keeps seed 000's column names and
/// meanings, so its monitoring queries run unchanged; the rest are Wit's additions.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "batch_tracker, source_offsets, stored_files",
        r#"
CREATE TABLE batch_tracker (
    batch_id UUID PRIMARY KEY,
    client_id VARCHAR(255) NOT NULL,
    signal TEXT NOT NULL,
    source TEXT NOT NULL,
    stage TEXT NOT NULL,
    failed_in TEXT,
    kafka_pip BOOLEAN NOT NULL DEFAULT false,
    wal_pip BOOLEAN NOT NULL DEFAULT false,
    ingestion_pip BOOLEAN NOT NULL DEFAULT false,
    storage_pip BOOLEAN NOT NULL DEFAULT false,
    index_pip BOOLEAN NOT NULL DEFAULT false,
    janitor_pip BOOLEAN NOT NULL DEFAULT false,
    batch_size BIGINT NOT NULL,
    message_count BIGINT NOT NULL,
    first_offset BIGINT,
    last_offset BIGINT,
    topics TEXT[] NOT NULL DEFAULT '{}',
    wal_position BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    kafka_completed_at TIMESTAMPTZ,
    wal_completed_at TIMESTAMPTZ,
    ingestion_completed_at TIMESTAMPTZ,
    storage_completed_at TIMESTAMPTZ,
    index_completed_at TIMESTAMPTZ,
    janitor_completed_at TIMESTAMPTZ,
    failed_at TIMESTAMPTZ,
    error_stage VARCHAR(50),
    error_message TEXT,
    retry_count INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX batch_tracker_stage ON batch_tracker (stage, created_at, batch_id);
CREATE INDEX batch_tracker_created ON batch_tracker (created_at);
CREATE INDEX batch_tracker_wal ON batch_tracker (wal_position) WHERE stage <> 'COMPLETED';
CREATE TABLE source_offsets (
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, topic, partition)
);
CREATE TABLE stored_files (
    path TEXT PRIMARY KEY,
    client_id VARCHAR(255) NOT NULL,
    signal TEXT NOT NULL,
    min_time_ns BIGINT NOT NULL,
    max_time_ns BIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    byte_size BIGINT NOT NULL,
    batch_ids UUID[] NOT NULL,
    state TEXT NOT NULL,
    delete_after TIMESTAMPTZ,
    published_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX stored_files_lookup ON stored_files (client_id, signal, state, min_time_ns);
CREATE TABLE stored_file_batches (
    path TEXT NOT NULL REFERENCES stored_files (path) ON DELETE CASCADE,
    batch_id UUID NOT NULL,
    PRIMARY KEY (path, batch_id)
);
CREATE INDEX stored_file_batches_batch ON stored_file_batches (batch_id);
"#,
    ),
    (
        2,
        "batch_tracker.wal_node; batch_tracker_wal indexes unstored batches per node",
        r#"
ALTER TABLE batch_tracker ADD COLUMN wal_node TEXT;
DROP INDEX batch_tracker_wal;
CREATE INDEX batch_tracker_wal ON batch_tracker (wal_node, wal_position)
    WHERE wal_position IS NOT NULL AND stage IN ('CREATED', 'WAL_WRITTEN', 'SOURCE_COMMITTED', 'INGESTED');
"#,
    ),
    (
        3,
        "stored_files.index_*: each file's full-text index blob; stored_files_unindexed",
        r#"
ALTER TABLE stored_files
    ADD COLUMN index_path TEXT,
    ADD COLUMN index_bytes BIGINT,
    ADD COLUMN index_docs BIGINT,
    ADD COLUMN index_checksum BIGINT;
CREATE INDEX stored_files_unindexed ON stored_files (path) WHERE state = 'live' AND index_path IS NULL;
"#,
    ),
    (
        4,
        "idempotency_keys: each tenant's idempotency keys with their batch and receipt; purged by time",
        r#"
CREATE TABLE idempotency_keys (
    tenant TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    batch_id UUID NOT NULL,
    receipt BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
"#,
    ),
    (
        5,
        "batch_tracker.partition: each batch's source partition (Kafka); NULL for batches of none and older ones",
        r#"
ALTER TABLE batch_tracker ADD COLUMN "partition" INTEGER;
"#,
    ),
];

/// A [`Tracker`] and [`FileCatalog`] in PostgreSQL, for several nodes sharing one pipeline.
///
/// Work claims use `FOR UPDATE SKIP LOCKED`, so workers on many nodes never get the same batch
/// and never wait on each other. Clones share the pool and the runtime. Connection settings are
/// libpq's, as a `key=value` string or a URL: `host=127.0.0.1 port=5432 user=wit dbname=wit`.
///
/// ```no_run
/// use wit_batch::Stage;
/// use wit_tracker::{ClaimRequest, PostgresTracker, Tracker, TrackerConfig};
///
/// let tracker = PostgresTracker::connect("host=127.0.0.1 user=wit dbname=wit", TrackerConfig::default())?;
/// for batch in tracker.claim(&ClaimRequest::new(Stage::Stored, "node-b/store", 64))? {
///     println!("store {} ({} messages)", batch.meta.id, batch.meta.message_count);
/// }
/// # Ok::<_, wit_tracker::Error>(())
/// ```
#[derive(Clone)]
pub struct PostgresTracker {
    inner: Arc<Inner>,
    runtime: IoRuntime,
}

/// Where the tracker's I/O runs.
#[derive(Clone)]
enum IoRuntime {
    /// Its own, shared by its clones.
    Owned(Arc<OwnedRuntime>),
    /// The host's.
    Host(tokio::runtime::Handle),
}

impl IoRuntime {
    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
        match self {
            IoRuntime::Owned(owned) => owned
                .0
                .as_ref()
                .expect("the runtime lives as long as the tracker")
                .spawn(future),
            IoRuntime::Host(handle) => handle.spawn(future),
        }
    }
}

impl std::fmt::Debug for PostgresTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTracker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    pool: Pool,
    config: TrackerConfig,
}

/// The tracker's runtime, shut down without blocking when the last clone goes (which may
/// happen inside a host's async task).
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

fn pg_err(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| {
        // Connection-class (08), operator intervention (57P: shutdown, crash, not yet up) and
        // too-many-connections errors, and every error without a server code (I/O, closed
        // connection), mean the server is out of reach, not that the statement was wrong.
        let unavailable = e.code().is_none_or(|code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        });
        if unavailable {
            Error::Unavailable {
                backend: BACKEND,
                operation,
                source: Box::new(e),
            }
        } else {
            Error::Database {
                backend: BACKEND,
                operation,
                source: Box::new(e),
            }
        }
    }
}

fn pool_err(operation: &'static str) -> impl FnOnce(deadpool_postgres::PoolError) -> Error {
    move |e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(operation)(e),
        other => Error::Unavailable {
            backend: BACKEND,
            operation,
            source: Box::new(other),
        },
    }
}

fn row_err(e: tokio_postgres::Error) -> Error {
    Error::Database {
        backend: BACKEND,
        operation: "read row",
        source: Box::new(e),
    }
}

fn corrupt(what: &'static str, value: impl ToString) -> Error {
    Error::corrupt(BACKEND, what, value)
}

fn uuid(id: BatchId) -> Uuid {
    Uuid::from_u128(id.as_u128())
}

impl PostgresTracker {
    /// Connects to the database named by `params` (libpq `key=value` pairs or a URL), with a
    /// pool of [`TrackerConfig::with_pool_size`] connections, and brings the schema up to date.
    /// Migrations are serialized across nodes by an advisory lock.
    ///
    /// Blocks the calling thread; in async code use [`connect_async`](Self::connect_async).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for unparsable `params`; [`Error::Unavailable`] when the
    /// server cannot be reached; [`Error::SchemaTooNew`]; [`Error::Database`].
    pub fn connect(params: &str, config: TrackerConfig) -> Result<Self> {
        let (tracker, migrated) = Self::start(params, config, None)?;
        futures::executor::block_on(migrated)?;
        Ok(tracker)
    }

    /// [`connect`](Self::connect), awaiting instead of blocking.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_async(params: &str, config: TrackerConfig) -> Result<Self> {
        let (tracker, migrated) = Self::start(params, config, None)?;
        migrated.await?;
        Ok(tracker)
    }

    /// [`connect_async`](Self::connect_async), with the tracker's I/O on the host's runtime
    /// (`runtime`, a multi-thread one) instead of a runtime of its own. Its blocking
    /// [`Tracker`] methods then spawn their work there and wait for it: call them from threads
    /// that are not that runtime's workers (a blocking thread, say), or use the
    /// [`AsyncTracker`] side.
    ///
    /// ```no_run
    /// use wit_tracker::{AsyncTracker, BatchQuery, PostgresTracker, TrackerConfig};
    ///
    /// # async fn example() -> Result<(), wit_tracker::Error> {
    /// let runtime = tokio::runtime::Handle::current();
    /// let tracker = PostgresTracker::connect_on(runtime, "host=127.0.0.1 user=wit dbname=wit", TrackerConfig::default()).await?;
    /// let failed = tracker.list_batches(&BatchQuery::failed()).await?;
    /// # let _ = failed;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_on(runtime: tokio::runtime::Handle, params: &str, config: TrackerConfig) -> Result<Self> {
        let (tracker, migrated) = Self::start(params, config, Some(runtime))?;
        migrated.await?;
        Ok(tracker)
    }

    fn start(
        params: &str,
        config: TrackerConfig,
        host: Option<tokio::runtime::Handle>,
    ) -> Result<(Self, impl Future<Output = Result<()>> + Send + 'static)> {
        let mut pg = tokio_postgres::Config::from_str(params)
            .map_err(|e| Error::invalid(format!("PostgreSQL connection parameters: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.timeout);
        }
        // Plan every statement for its parameters: a plan cached while the table was small
        // (a sequential scan) would otherwise stay as the table grows, turning each keyed
        // update into a scan of the whole table.
        let options = pg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        pg.options(format!("{options}-c plan_cache_mode=force_custom_plan"));
        if pg.get_application_name().is_none() {
            pg.application_name("wit-tracker");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = match host {
            Some(handle) => IoRuntime::Host(handle),
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("wit-tracker-pg")
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Unavailable {
                        backend: BACKEND,
                        operation: "start runtime",
                        source: Box::new(e),
                    })?;
                IoRuntime::Owned(Arc::new(OwnedRuntime(Some(runtime))))
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .build()
            .map_err(|e| Error::invalid(format!("PostgreSQL pool: {e}")))?;
        let tracker = PostgresTracker {
            inner: Arc::new(Inner { pool, config }),
            runtime,
        };
        let migrated = joined(tracker.spawn(|inner| async move { migrate(&inner).await }));
        Ok((tracker, migrated))
    }

    /// Runs `f` on the tracker's runtime; [`joined`] waits for it on any executor (or, for the
    /// blocking API, on the calling thread).
    fn spawn<T, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> JoinHandle<Result<T>>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn(f(self.inner.clone()))
    }

    fn catalog<T, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> wit_store::Result<T>
    where
        F: Future<Output = wit_store::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.runtime.spawn(f(self.inner.clone()));
        match futures::executor::block_on(handle) {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(wit_store::Error::Catalog { source: Box::new(e) }),
        }
    }
}

/// The result of a call spawned on the tracker's runtime.
async fn joined<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    match handle.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Unavailable {
            backend: BACKEND,
            operation: "run",
            source: Box::new(e),
        }),
    }
}

async fn migrate(inner: &Inner) -> Result<()> {
    let op = "migrate";
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err(op))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS wit_schema_version (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg_err(op))?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM wit_schema_version", &[])
        .await
        .map_err(pg_err(op))?
        .try_get(0)
        .map_err(row_err)?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await.map_err(pg_err(op))?;
        tx.execute(
            "INSERT INTO wit_schema_version (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await
        .map_err(pg_err(op))?;
    }
    tx.commit().await.map_err(pg_err(op))
}

fn read_record(row: &Row) -> Result<BatchRecord> {
    let get = |i: usize| row.try_get(i).map_err(row_err);
    let mut times = [None; 8];
    for (i, time) in times.iter_mut().enumerate() {
        *time = get(FIRST_TIME_COLUMN + i)?;
    }
    let id: Uuid = row.try_get(0).map_err(row_err)?;
    RawRecord {
        id: BatchId::from_u128(id.as_u128()),
        tenant: row.try_get(1).map_err(row_err)?,
        signal: row.try_get(2).map_err(row_err)?,
        source: row.try_get(3).map_err(row_err)?,
        stage: row.try_get(4).map_err(row_err)?,
        failed_in: row.try_get(5).map_err(row_err)?,
        byte_size: row.try_get(6).map_err(row_err)?,
        message_count: row.try_get(7).map_err(row_err)?,
        first_offset: row.try_get(8).map_err(row_err)?,
        last_offset: row.try_get(9).map_err(row_err)?,
        topics: row.try_get(10).map_err(row_err)?,
        wal_position: row.try_get(11).map_err(row_err)?,
        wal_node: row.try_get(WAL_NODE_COLUMN).map_err(row_err)?,
        times,
        error_stage: row.try_get(20).map_err(row_err)?,
        error_message: row.try_get(21).map_err(row_err)?,
        retry_count: i64::from(row.try_get::<_, i32>(22).map_err(row_err)?),
        claimed_by: row.try_get(23).map_err(row_err)?,
        lease_until: row.try_get(24).map_err(row_err)?,
        updated_at: row.try_get(25).map_err(row_err)?,
        partition: row.try_get(PARTITION_COLUMN).map_err(row_err)?,
    }
    .into_record(BACKEND)
}

fn read_records(rows: &[Row]) -> Result<Vec<BatchRecord>> {
    rows.iter().map(read_record).collect()
}

async fn load(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[BatchId],
    op: &'static str,
) -> Result<HashMap<BatchId, BatchRecord>> {
    let ids: Vec<Uuid> = ids.iter().copied().map(uuid).collect();
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM batch_tracker WHERE batch_id = ANY($1) ORDER BY batch_id FOR UPDATE"
        ))
        .await
        .map_err(pg_err(op))?;
    let rows = tx.query(&stmt, &[&ids]).await.map_err(pg_err(op))?;
    let mut records = HashMap::with_capacity(rows.len());
    for row in &rows {
        let rec = read_record(row)?;
        records.insert(rec.meta.id, rec);
    }
    Ok(records)
}

async fn store(
    tx: &deadpool_postgres::Transaction<'_>,
    records: &HashMap<BatchId, BatchRecord>,
    ids: &[BatchId],
    op: &'static str,
) -> Result<()> {
    let recs: Vec<&BatchRecord> = ids.iter().filter_map(|id| records.get(id)).collect();
    if recs.is_empty() {
        return Ok(());
    }
    let id: Vec<Uuid> = recs.iter().map(|r| uuid(r.meta.id)).collect();
    let stage: Vec<&str> = recs.iter().map(|r| r.stage.as_str()).collect();
    let failed_in: Vec<Option<&str>> = recs.iter().map(|r| r.failed_in.map(Stage::as_str)).collect();
    let wal_position: Vec<Option<i64>> = recs
        .iter()
        .map(|r| {
            r.wal_position
                .as_ref()
                .map(|p| to_i64(p.lsn, "WAL position"))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let times = |s: Stage| -> Vec<Option<SystemTime>> { recs.iter().map(|r| r.completed_at.get(s)).collect() };
    let (wal, kafka, ingestion, storage, index, janitor, failed) = (
        times(Stage::WalWritten),
        times(Stage::SourceCommitted),
        times(Stage::Ingested),
        times(Stage::Stored),
        times(Stage::Indexed),
        times(Stage::Completed),
        times(Stage::Failed),
    );
    let error_stage: Vec<Option<&str>> = recs.iter().map(|r| r.error_stage.map(Stage::as_str)).collect();
    let error_message: Vec<Option<&str>> = recs.iter().map(|r| r.error_message.as_deref()).collect();
    let retry_count: Vec<i32> = recs
        .iter()
        .map(|r| i32::try_from(r.retry_count).unwrap_or(i32::MAX))
        .collect();
    let claimed_by: Vec<Option<&str>> = recs
        .iter()
        .map(|r| r.lease.as_ref().map(|l| l.worker.as_str()))
        .collect();
    let lease_until: Vec<Option<SystemTime>> = recs.iter().map(|r| r.lease.as_ref().map(|l| l.until)).collect();
    let updated_at: Vec<SystemTime> = recs.iter().map(|r| r.updated_at).collect();
    let wal_nodes: Vec<Option<&str>> = recs.iter().map(|r| wal_node(r)).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE batch_tracker AS t SET stage = u.stage, failed_in = u.failed_in, wal_position = u.wal_position, \
             wal_completed_at = u.wal_at, kafka_completed_at = u.kafka_at, \
             ingestion_completed_at = u.ingestion_at, storage_completed_at = u.storage_at, \
             index_completed_at = u.index_at, janitor_completed_at = u.janitor_at, failed_at = u.failed_at, \
             wal_pip = u.wal_at IS NOT NULL, kafka_pip = u.kafka_at IS NOT NULL, \
             ingestion_pip = u.ingestion_at IS NOT NULL, storage_pip = u.storage_at IS NOT NULL, \
             index_pip = u.index_at IS NOT NULL, janitor_pip = u.janitor_at IS NOT NULL, \
             error_stage = u.error_stage, error_message = u.error_message, retry_count = u.retry_count, \
             claimed_by = u.claimed_by, lease_until = u.lease_until, updated_at = u.updated_at, \
             wal_node = u.wal_node \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[], $6::timestamptz[], \
             $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], \
             $12::text[], $13::text[], $14::int4[], $15::text[], $16::timestamptz[], $17::timestamptz[], \
             $18::text[]) \
             AS u(id, stage, failed_in, wal_position, wal_at, kafka_at, ingestion_at, storage_at, index_at, \
             janitor_at, failed_at, error_stage, error_message, retry_count, claimed_by, lease_until, updated_at, \
             wal_node) \
             WHERE t.batch_id = u.id",
        )
        .await
        .map_err(pg_err(op))?;
    let params: [&(dyn ToSql + Sync); 18] = [
        &id,
        &stage,
        &failed_in,
        &wal_position,
        &wal,
        &kafka,
        &ingestion,
        &storage,
        &index,
        &janitor,
        &failed,
        &error_stage,
        &error_message,
        &retry_count,
        &claimed_by,
        &lease_until,
        &updated_at,
        &wal_nodes,
    ];
    tx.execute(&stmt, &params).await.map_err(pg_err(op))?;
    Ok(())
}

/// Registers batches as `CREATED` (each id at most once per statement: an id already
/// registered is left as it is), returning the ids of those it registered. The parameters are
/// [`NewBatches::params`].
const INSERT_BATCHES_SQL: &str = "INSERT INTO batch_tracker (batch_id, client_id, signal, source, stage, \
     batch_size, message_count, first_offset, last_offset, topics, created_at, updated_at, \"partition\") \
     SELECT u.id, u.client, u.signal, u.source, 'CREATED', u.size, u.count, u.first, u.last, \
     ARRAY(SELECT jsonb_array_elements_text(u.topics::jsonb)), u.created, u.created, u.part \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], \
     $8::int8[], $9::text[], $10::timestamptz[], $11::int4[]) \
     AS u(id, client, signal, source, size, count, first, last, topics, created, part) \
     ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id";

/// The columns of batches to register, as [`INSERT_BATCHES_SQL`] takes them.
struct NewBatches<'a> {
    id: Vec<Uuid>,
    client: Vec<&'a str>,
    signal: Vec<&'a str>,
    source: Vec<&'a str>,
    size: Vec<i64>,
    count: Vec<i64>,
    first: Vec<Option<i64>>,
    last: Vec<Option<i64>>,
    topics: Vec<String>,
    created: Vec<SystemTime>,
    partition: Vec<Option<i32>>,
}

impl<'a> NewBatches<'a> {
    /// The columns of `metas` (which must not repeat an id).
    fn of(metas: &[&'a BatchMeta]) -> Result<Self> {
        Ok(NewBatches {
            id: metas.iter().map(|m| uuid(m.id)).collect(),
            client: metas.iter().map(|m| m.tenant.as_str()).collect(),
            signal: metas.iter().map(|m| m.signal.as_str()).collect(),
            source: metas.iter().map(|m| m.source.as_str()).collect(),
            size: metas
                .iter()
                .map(|m| to_i64(m.byte_size, "byte size"))
                .collect::<Result<_>>()?,
            count: metas
                .iter()
                .map(|m| to_i64(m.message_count, "message count"))
                .collect::<Result<_>>()?,
            first: metas.iter().map(|m| m.first_offset).collect(),
            last: metas.iter().map(|m| m.last_offset).collect(),
            topics: metas
                .iter()
                .map(|m| serde_json::to_string(&m.topics).unwrap_or_else(|_| "[]".into()))
                .collect(),
            created: metas.iter().map(|m| micros(m.created_at)).collect(),
            partition: metas.iter().map(|m| m.partition).collect(),
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.id,
            &self.client,
            &self.signal,
            &self.source,
            &self.size,
            &self.count,
            &self.first,
            &self.last,
            &self.topics,
            &self.created,
            &self.partition,
        ]
    }
}

/// The ids of the rows [`INSERT_BATCHES_SQL`] returned.
fn inserted_ids(rows: &[Row]) -> Result<std::collections::HashSet<BatchId>> {
    rows.iter()
        .map(|row| {
            let id: Uuid = row.try_get(0).map_err(row_err)?;
            Ok(BatchId::from_u128(id.as_u128()))
        })
        .collect()
}

async fn register(inner: &Inner, batches: Vec<BatchMeta>) -> Result<Vec<Registration>> {
    let op = "register";
    batches.iter().try_for_each(plan::check_meta)?;
    // Each id once: later copies in the same call are already registered by the first.
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&BatchMeta> = batches.iter().filter(|m| seen.insert(m.id)).collect();
    let new = NewBatches::of(&unique)?;
    let client_conn = inner.pool.get().await.map_err(pool_err(op))?;
    let stmt = client_conn
        .prepare_cached(INSERT_BATCHES_SQL)
        .await
        .map_err(pg_err(op))?;
    let rows = client_conn.query(&stmt, &new.params()).await.map_err(pg_err(op))?;
    let mut inserted = inserted_ids(&rows)?;
    Ok(batches
        .iter()
        .map(|m| {
            if inserted.remove(&m.id) {
                Registration::Registered
            } else {
                Registration::AlreadyRegistered
            }
        })
        .collect())
}

async fn advance(inner: &Inner, steps: Vec<Advance>) -> Result<Vec<Transition>> {
    let op = "advance";
    plan::check_steps(&steps)?;
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    let mut records = load(&tx, &plan::step_ids(&steps), op).await?;
    let (outcomes, changed) = plan::advance_all(&mut records, &steps)?;
    store(&tx, &records, &changed, op).await?;
    let offsets = plan::merged_offsets(&steps);
    if !offsets.is_empty() {
        let source: Vec<&str> = offsets.iter().map(|o| o.source.as_str()).collect();
        let topic: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
        let partition: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
        let offset: Vec<i64> = offsets.iter().map(|o| o.offset).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO source_offsets (source, topic, partition, \"offset\") \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[]) \
                 ON CONFLICT (source, topic, partition) DO UPDATE \
                 SET \"offset\" = greatest(source_offsets.\"offset\", excluded.\"offset\"), updated_at = now()",
            )
            .await
            .map_err(pg_err(op))?;
        tx.execute(&stmt, &[&source, &topic, &partition, &offset])
            .await
            .map_err(pg_err(op))?;
    }
    tx.commit().await.map_err(pg_err(op))?;
    Ok(outcomes)
}

async fn claim_ranges(inner: &Inner, claims: Vec<RangeClaim>) -> Result<Vec<RangeOutcome>> {
    let op = "claim_ranges";
    let records = plan::range_records(&claims)?;
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    // Claims of the same partition wait for each other here, in partition order. The offset is
    // changed by a compare-and-set statement all the same, so a writer without the lock
    // (`advance` with offsets) cannot be overwritten either.
    let keys = claims
        .iter()
        .map(|c| partition_lock(&c.source, &c.topic, c.partition))
        .collect();
    advisory_locks(&tx, PARTITION_LOCK_CLASS, keys, op).await?;
    let insert = tx.prepare_cached(INSERT_BATCHES_SQL).await.map_err(pg_err(op))?;
    let stage_of = tx
        .prepare_cached("SELECT stage FROM batch_tracker WHERE batch_id = $1")
        .await
        .map_err(pg_err(op))?;
    let unregister = tx
        .prepare_cached("DELETE FROM batch_tracker WHERE batch_id = $1")
        .await
        .map_err(pg_err(op))?;
    let move_offset = tx
        .prepare_cached(
            "UPDATE source_offsets SET \"offset\" = $4, updated_at = now() \
             WHERE source = $1 AND topic = $2 AND partition = $3 AND \"offset\" = $5",
        )
        .await
        .map_err(pg_err(op))?;
    let first_offset = tx
        .prepare_cached(
            "INSERT INTO source_offsets (source, topic, partition, \"offset\") VALUES ($1, $2, $3, $4) \
             ON CONFLICT (source, topic, partition) DO NOTHING",
        )
        .await
        .map_err(pg_err(op))?;
    let offset_of = tx
        .prepare_cached("SELECT \"offset\" FROM source_offsets WHERE source = $1 AND topic = $2 AND partition = $3")
        .await
        .map_err(pg_err(op))?;
    let mut outcomes = Vec::with_capacity(claims.len());
    let mut claimed = HashMap::new();
    for (claim, rec) in claims.iter().zip(records) {
        let id = claim.meta.id;
        // Registering first (an insert that does nothing for an id registered, or being
        // registered by a call that then commits) tells a replay apart.
        let new = NewBatches::of(&[&claim.meta])?;
        let rows = tx.query(&insert, &new.params()).await.map_err(pg_err(op))?;
        if rows.is_empty() {
            let row = tx.query_one(&stage_of, &[&uuid(id)]).await.map_err(pg_err(op))?;
            let stage: String = row.try_get(0).map_err(row_err)?;
            outcomes.push(RangeOutcome::AlreadyRegistered {
                stage: plan::parse_stage(BACKEND, &stage)?,
            });
            continue;
        }
        let key: [&(dyn ToSql + Sync); 3] = [&claim.source, &claim.topic, &claim.partition];
        let moved = match claim.from {
            Some(from) => tx
                .execute(&move_offset, &[key[0], key[1], key[2], &claim.to, &from])
                .await
                .map_err(pg_err(op))?,
            None => tx
                .execute(&first_offset, &[key[0], key[1], key[2], &claim.to])
                .await
                .map_err(pg_err(op))?,
        };
        if moved == 1 {
            claimed.insert(id, rec);
            outcomes.push(RangeOutcome::Claimed);
        } else {
            // Someone else's offset: the batch registered above goes again.
            let stored = tx.query_opt(&offset_of, &key).await.map_err(pg_err(op))?;
            let stored: Option<i64> = stored.map(|r| r.try_get(0)).transpose().map_err(row_err)?;
            tx.execute(&unregister, &[&uuid(id)]).await.map_err(pg_err(op))?;
            outcomes.push(RangeOutcome::Conflict { stored });
        }
    }
    let ids: Vec<BatchId> = claimed.keys().copied().collect();
    store(&tx, &claimed, &ids, op).await?;
    tx.commit().await.map_err(pg_err(op))?;
    Ok(outcomes)
}

async fn record_error(
    inner: &Inner,
    batch: BatchId,
    stage: Stage,
    message: String,
    at: SystemTime,
) -> Result<ErrorOutcome> {
    record_error_as(inner, batch, stage, &message, at, None).await
}

async fn record_error_by(
    inner: &Inner,
    batch: BatchId,
    stage: Stage,
    message: String,
    at: SystemTime,
    worker: String,
) -> Result<ErrorOutcome> {
    record_error_as(inner, batch, stage, &message, at, Some(&worker)).await
}

async fn record_error_as(
    inner: &Inner,
    batch: BatchId,
    stage: Stage,
    message: &str,
    at: SystemTime,
    worker: Option<&str>,
) -> Result<ErrorOutcome> {
    let op = "record_error";
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    let mut records = load(&tx, &[batch], op).await?;
    let rec = records.get_mut(&batch).ok_or(Error::UnknownBatch { batch })?;
    let outcome = plan::apply_error(rec, stage, message, at, worker, &inner.config.retry)?;
    store(&tx, &records, &[batch], op).await?;
    tx.commit().await.map_err(pg_err(op))?;
    Ok(outcome)
}

async fn query_records(
    inner: &Inner,
    op: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<BatchRecord>> {
    let client = inner.pool.get().await.map_err(pool_err(op))?;
    let stmt = client.prepare_cached(sql).await.map_err(pg_err(op))?;
    let rows = client.query(&stmt, params).await.map_err(pg_err(op))?;
    read_records(&rows)
}

async fn claim(inner: &Inner, request: ClaimRequest) -> Result<Vec<BatchRecord>> {
    let sources = plan::claim_sources(&request)?;
    let lease = plan::lease_for(&request);
    let sql = format!(
        "UPDATE batch_tracker SET claimed_by = $1, lease_until = $2 WHERE batch_id IN (\
         SELECT batch_id FROM batch_tracker WHERE stage IN ({}) \
         AND (lease_until IS NULL OR lease_until <= $3) ORDER BY created_at, batch_id LIMIT $4 \
         FOR UPDATE SKIP LOCKED) RETURNING {RECORD_COLUMNS}",
        stage_list(&sources)
    );
    let now = micros(request.now);
    let limit = sql_limit(request.max);
    let mut claimed = query_records(inner, "claim", &sql, &[&lease.worker, &lease.until, &now, &limit]).await?;
    claimed.sort_by_key(|r| (r.meta.created_at, r.meta.id));
    Ok(claimed)
}

async fn batch(inner: &Inner, batch: BatchId) -> Result<BatchRecord> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM batch_tracker WHERE batch_id = $1");
    query_records(inner, "batch", &sql, &[&uuid(batch)])
        .await?
        .pop()
        .ok_or(Error::UnknownBatch { batch })
}

async fn list_batches(inner: &Inner, query: BatchQuery) -> Result<BatchPage> {
    plan::check_query(&query)?;
    let (sql, params) = list_sql(&query, |n| format!("${n}"));
    let params: Vec<Box<dyn ToSql + Sync + Send>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                ListParam::Stage(stage) => Box::new(stage),
                ListParam::Time(t) => Box::new(t),
                ListParam::Tenant(tenant) => Box::new(tenant),
                ListParam::Batch(id) => Box::new(uuid(id)),
                ListParam::Limit(n) => Box::new(n),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    let rows = query_records(inner, "list_batches", &sql, &refs).await?;
    Ok(BatchPage::of_rows(rows, query.limit))
}

async fn query_rows(inner: &Inner, op: &'static str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    let client = inner.pool.get().await.map_err(pool_err(op))?;
    let stmt = client.prepare_cached(sql).await.map_err(pg_err(op))?;
    client.query(&stmt, params).await.map_err(pg_err(op))
}

async fn stage_counts(inner: &Inner, window: Window, tenant: Option<Tenant>) -> Result<StageCounts> {
    let tenant = tenant.as_ref().map(Tenant::as_str);
    let rows = query_rows(
        inner,
        "stage_counts",
        "SELECT stage, count(*) FROM batch_tracker WHERE created_at >= $1 AND created_at < $2 \
         AND ($3::text IS NULL OR client_id = $3) GROUP BY stage",
        &[&window.from, &window.to, &tenant],
    )
    .await?;
    let mut counts = StageCounts::default();
    for row in &rows {
        let stage: String = row.try_get(0).map_err(row_err)?;
        let n: i64 = row.try_get(1).map_err(row_err)?;
        counts.add(plan::parse_stage(BACKEND, &stage)?, n.unsigned_abs());
    }
    Ok(counts)
}

async fn client_throughput(inner: &Inner, window: Window) -> Result<Vec<ClientThroughput>> {
    let rows = query_rows(
        inner,
        "client_throughput",
        "SELECT client_id, count(*), sum(message_count)::int8, sum(batch_size)::int8 FROM batch_tracker \
         WHERE created_at >= $1 AND created_at < $2 GROUP BY client_id",
        &[&window.from, &window.to],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let tenant: String = row.try_get(0).map_err(row_err)?;
        let tenant = Tenant::try_new(tenant.clone()).map_err(|_| corrupt("client id", tenant))?;
        let n = |i| row.try_get::<_, i64>(i).map(i64::unsigned_abs).map_err(row_err);
        out.push((tenant, n(1)?, n(2)?, n(3)?));
    }
    Ok(plan::throughput_rows(out, &window))
}

async fn oldest_unstored_wal_position(inner: &Inner, node: String) -> Result<Option<u64>> {
    plan::check_node(&node)?;
    // Both branches read the partial index `batch_tracker_wal`; the second finds positions
    // recorded before schema version 2, which hold back every node's log.
    let sql = format!(
        "SELECT min(lsn) FROM (\
         SELECT min(wal_position) AS lsn FROM batch_tracker \
         WHERE wal_node = $1 AND wal_position IS NOT NULL AND stage IN ({UNSTORED_STAGES}) \
         UNION ALL SELECT min(wal_position) FROM batch_tracker \
         WHERE wal_node IS NULL AND wal_position IS NOT NULL AND stage IN ({UNSTORED_STAGES})) AS oldest"
    );
    let rows = query_rows(inner, "oldest_unstored_wal_position", &sql, &[&node]).await?;
    let min: Option<i64> = rows[0].try_get(0).map_err(row_err)?;
    min.map(|p| u64::try_from(p).map_err(|_| corrupt("WAL position", p)))
        .transpose()
}

async fn source_offsets(inner: &Inner, source: String) -> Result<Vec<SourceOffset>> {
    let rows = query_rows(
        inner,
        "source_offsets",
        "SELECT source, topic, partition, \"offset\" FROM source_offsets WHERE source = $1 ORDER BY topic, partition",
        &[&source],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SourceOffset::new(
                r.try_get::<_, String>(0).map_err(row_err)?,
                r.try_get::<_, String>(1).map_err(row_err)?,
                r.try_get(2).map_err(row_err)?,
                r.try_get(3).map_err(row_err)?,
            ))
        })
        .collect()
}

async fn purge_completed(inner: &Inner, completed_before: SystemTime) -> Result<u64> {
    let op = "purge_completed";
    let client = inner.pool.get().await.map_err(pool_err(op))?;
    client
        .execute(
            "DELETE FROM batch_tracker WHERE stage = 'COMPLETED' AND janitor_completed_at < $1",
            &[&completed_before],
        )
        .await
        .map_err(pg_err(op))
}

async fn remember_keys(inner: &Inner, keys: Vec<RememberedKey>) -> Result<()> {
    let op = "remember_keys";
    if keys.is_empty() {
        return Ok(());
    }
    plan::check_keys(&keys)?;
    // Each (tenant, key) once, the first of the call: one statement inserts them all.
    let keys = plan::keys_to_remember(&keys);
    let tenant: Vec<&str> = keys.iter().map(|k| k.tenant.as_str()).collect();
    let key: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let batch: Vec<Uuid> = keys.iter().map(|k| uuid(k.batch)).collect();
    let receipt: Vec<&[u8]> = keys.iter().map(|k| k.receipt.as_slice()).collect();
    let at: Vec<SystemTime> = keys.iter().map(|k| k.at).collect();
    let client = inner.pool.get().await.map_err(pool_err(op))?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO idempotency_keys (tenant, idem_key, batch_id, receipt, created_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[], $5::timestamptz[]) \
             ON CONFLICT (tenant, idem_key) DO NOTHING",
        )
        .await
        .map_err(pg_err(op))?;
    client
        .execute(&stmt, &[&tenant, &key, &batch, &receipt, &at])
        .await
        .map_err(pg_err(op))?;
    Ok(())
}

async fn recall_key(inner: &Inner, tenant: Tenant, key: String) -> Result<Option<RememberedKey>> {
    if !plan::rememberable(&key) {
        return Ok(None);
    }
    let rows = query_rows(
        inner,
        "recall_key",
        "SELECT batch_id, receipt, created_at FROM idempotency_keys WHERE tenant = $1 AND idem_key = $2",
        &[&tenant.as_str(), &key],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let batch: Uuid = row.try_get(0).map_err(row_err)?;
    let receipt: Vec<u8> = row.try_get(1).map_err(row_err)?;
    let at: SystemTime = row.try_get(2).map_err(row_err)?;
    Ok(Some(RememberedKey::new(
        tenant,
        key,
        BatchId::from_u128(batch.as_u128()),
        receipt,
        at,
    )))
}

async fn forget_keys_before(inner: &Inner, before: SystemTime) -> Result<u64> {
    let op = "forget_keys_before";
    let client = inner.pool.get().await.map_err(pool_err(op))?;
    client
        .execute("DELETE FROM idempotency_keys WHERE created_at < $1", &[&micros(before)])
        .await
        .map_err(pg_err(op))
}

/// Implements both [`Tracker`] and [`AsyncTracker`] from the async functions above: each call
/// runs on the tracker's runtime; the blocking side waits for it on the calling thread.
macro_rules! both_apis {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty $(=> $own:expr)?)*) -> $ret:ty; )*) => {
        impl Tracker for PostgresTracker {
            $(
                fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    $($(let $arg = $own;)?)*
                    futures::executor::block_on(joined(self.spawn(move |inner| async move { self::$name(&inner $(, $arg)*).await })))
                }
            )*
        }

        impl AsyncTracker for PostgresTracker {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    $($(let $arg = $own;)?)*
                    joined(self.spawn(move |inner| async move { self::$name(&inner $(, $arg)*).await })).await
                }
            )*
        }
    };
}

both_apis! {
    fn register(&self, batches: &[BatchMeta] => batches.to_vec()) -> Vec<Registration>;
    fn advance(&self, steps: &[Advance] => steps.to_vec()) -> Vec<Transition>;
    fn claim_ranges(&self, claims: &[RangeClaim] => claims.to_vec()) -> Vec<RangeOutcome>;
    fn record_error(&self, batch: BatchId, stage: Stage, message: &str => message.to_owned(), at: SystemTime) -> ErrorOutcome;
    fn record_error_by(&self, batch: BatchId, stage: Stage, message: &str => message.to_owned(), at: SystemTime, worker: &str => worker.to_owned()) -> ErrorOutcome;
    fn claim(&self, request: &ClaimRequest => request.clone()) -> Vec<BatchRecord>;
    fn batch(&self, batch: BatchId) -> BatchRecord;
    fn list_batches(&self, query: &BatchQuery => query.clone()) -> BatchPage;
    fn stage_counts(&self, window: Window, tenant: Option<&Tenant> => tenant.cloned()) -> StageCounts;
    fn client_throughput(&self, window: Window) -> Vec<ClientThroughput>;
    fn oldest_unstored_wal_position(&self, node: &str => node.to_owned()) -> Option<u64>;
    fn source_offsets(&self, source: &str => source.to_owned()) -> Vec<SourceOffset>;
    fn purge_completed(&self, completed_before: SystemTime) -> u64;
    fn remember_keys(&self, keys: &[RememberedKey] => keys.to_vec()) -> ();
    fn recall_key(&self, tenant: &Tenant => tenant.clone(), key: &str => key.to_owned()) -> Option<RememberedKey>;
    fn forget_keys_before(&self, before: SystemTime) -> u64;
}

const FILE_COLUMNS: &str = "path, client_id, signal, min_time_ns, max_time_ns, row_count, byte_size, batch_ids, state, \
     index_path, index_bytes, index_docs, index_checksum";

/// A file's index from its four columns (all `NULL` when it has none).
fn read_file_index(row: &Row) -> Result<Option<FileIndex>> {
    let get = |i: usize| row.try_get::<_, Option<i64>>(i).map_err(row_err);
    read_index(BACKEND, row.try_get(9).map_err(row_err)?, get(10)?, get(11)?, get(12)?)
}

fn read_file(row: &Row) -> Result<(StoredFile, bool)> {
    let tenant: String = row.try_get(1).map_err(row_err)?;
    let signal: String = row.try_get(2).map_err(row_err)?;
    let rows: i64 = row.try_get(5).map_err(row_err)?;
    let bytes: i64 = row.try_get(6).map_err(row_err)?;
    let ids: Vec<Uuid> = row.try_get(7).map_err(row_err)?;
    let state: String = row.try_get(8).map_err(row_err)?;
    Ok((
        StoredFile {
            path: row.try_get(0).map_err(row_err)?,
            tenant: Tenant::try_new(tenant.clone()).map_err(|_| corrupt("client id", tenant))?,
            signal: signal.parse().map_err(|_| corrupt("signal", &signal))?,
            time_range: TimeRange::new(row.try_get(3).map_err(row_err)?, row.try_get(4).map_err(row_err)?),
            rows: u64::try_from(rows).map_err(|_| corrupt("row count", rows))?,
            bytes: u64::try_from(bytes).map_err(|_| corrupt("byte size", bytes))?,
            batch_ids: ids.into_iter().map(|u| BatchId::from_u128(u.as_u128())).collect(),
            index: read_file_index(row)?,
        },
        state == "live",
    ))
}

/// The catalogued files among `paths`, locked for this transaction.
async fn lock_files(
    tx: &deadpool_postgres::Transaction<'_>,
    paths: &[&str],
    op: &'static str,
) -> Result<HashMap<String, (StoredFile, bool)>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM stored_files WHERE path = ANY($1) ORDER BY path FOR UPDATE"
        ))
        .await
        .map_err(pg_err(op))?;
    let rows = tx.query(&stmt, &[&paths]).await.map_err(pg_err(op))?;
    let mut files = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (file, live) = read_file(row)?;
        files.insert(file.path.clone(), (file, live));
    }
    Ok(files)
}

async fn insert_files(tx: &deadpool_postgres::Transaction<'_>, files: &[StoredFile], op: &'static str) -> Result<()> {
    let file_stmt = tx
        .prepare_cached(
            "INSERT INTO stored_files (path, client_id, signal, min_time_ns, max_time_ns, row_count, byte_size, \
             batch_ids, state, index_path, index_bytes, index_docs, index_checksum) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'live', $9, $10, $11, $12)",
        )
        .await
        .map_err(pg_err(op))?;
    let link_stmt = tx
        .prepare_cached("INSERT INTO stored_file_batches (path, batch_id) SELECT $1, unnest($2::uuid[])")
        .await
        .map_err(pg_err(op))?;
    for f in files {
        let ids: Vec<Uuid> = f.batch_ids.iter().copied().map(uuid).collect();
        let (rows, bytes) = (to_i64(f.rows, "row count")?, to_i64(f.bytes, "byte size")?);
        let index = IndexColumns::of(f.index.as_ref())?;
        tx.execute(
            &file_stmt,
            &[
                &f.path,
                &f.tenant.as_str(),
                &f.signal.as_str(),
                &f.time_range.min,
                &f.time_range.max,
                &rows,
                &bytes,
                &ids,
                &index.path,
                &index.bytes,
                &index.docs,
                &index.checksum,
            ],
        )
        .await
        .map_err(pg_err(op))?;
        tx.execute(&link_stmt, &[&f.path, &ids]).await.map_err(pg_err(op))?;
    }
    Ok(())
}

/// The second key of a batch's advisory lock: its id folded to 32 bits. Two batches that
/// share a key only wait for each other.
fn batch_lock(id: BatchId) -> i32 {
    let v = id.as_u128();
    let x = (v as u64) ^ ((v >> 64) as u64);
    (x ^ (x >> 32)) as u32 as i32
}

/// Takes the advisory locks of `ids` until the transaction ends, in key order (so two calls
/// never wait on each other in a cycle), before the batch rows.
async fn lock_batches(tx: &deadpool_postgres::Transaction<'_>, ids: &[BatchId], op: &'static str) -> Result<()> {
    let keys: Vec<i32> = ids.iter().copied().map(batch_lock).collect();
    advisory_locks(tx, BATCH_LOCK_CLASS, keys, op).await
}

/// The second key of a partition's advisory lock ([`PARTITION_LOCK_CLASS`]): FNV-1a of its
/// source, topic and number, folded to 32 bits. The same on every node; two partitions that
/// share a key only wait for each other.
fn partition_lock(source: &str, topic: &str, partition: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = source
        .bytes()
        .chain([0xff])
        .chain(topic.bytes())
        .chain([0xff])
        .chain(partition.to_le_bytes());
    for b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32 as i32
}

/// Takes the transaction-scoped advisory locks `(class, key)` of `keys`, in key order (so two
/// calls never wait on each other in a cycle).
async fn advisory_locks(
    tx: &deadpool_postgres::Transaction<'_>,
    class: i32,
    mut keys: Vec<i32>,
    op: &'static str,
) -> Result<()> {
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock($1, u.k) FROM unnest($2::int4[]) WITH ORDINALITY AS u(k, n) ORDER BY u.n",
        )
        .await
        .map_err(pg_err(op))?;
    tx.query(&stmt, &[&class, &keys]).await.map_err(pg_err(op))?;
    Ok(())
}

/// The `(batch, path)` of every live file holding one of `ids`.
async fn live_holders(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[BatchId],
    op: &'static str,
) -> Result<Vec<(BatchId, String)>> {
    let ids: Vec<Uuid> = ids.iter().copied().map(uuid).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT b.batch_id, b.path FROM stored_file_batches b JOIN stored_files f ON f.path = b.path \
             WHERE b.batch_id = ANY($1) AND f.state = 'live'",
        )
        .await
        .map_err(pg_err(op))?;
    let rows = tx.query(&stmt, &[&ids]).await.map_err(pg_err(op))?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get(0).map_err(row_err)?;
            Ok((BatchId::from_u128(id.as_u128()), r.try_get(1).map_err(row_err)?))
        })
        .collect()
}

fn all_paths<'a>(old: &'a [String], new: &'a [StoredFile]) -> Vec<&'a str> {
    old.iter()
        .map(String::as_str)
        .chain(new.iter().map(|f| f.path.as_str()))
        .collect()
}

async fn publish(inner: &Inner, files: Vec<StoredFile>) -> wit_store::Result<()> {
    let op = "publish";
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    let held = lock_files(&tx, &all_paths(&[], &files), op).await?;
    let new = plan::files_to_publish(&files, |path| Ok(held.get(path).map(|f| f.0.clone())))?;
    let ids = plan::file_batch_ids(&new);
    lock_batches(&tx, &ids, op).await?;
    let indexed = plan::indexed_batch_ids(&files);
    let mut records = load(&tx, &plan::merged_ids(ids.clone(), indexed.clone()), op).await?;
    let now = SystemTime::now();
    let stored = plan::store_all(&mut records, &ids, now)?;
    let changed = plan::merged_ids(stored, plan::index_all(&mut records, &indexed, now)?);
    wit_store::rules::check_batches_not_stored(&new, &[], &live_holders(&tx, &ids, op).await?)?;
    insert_files(&tx, &new, op).await?;
    store(&tx, &records, &changed, op).await?;
    tx.commit().await.map_err(pg_err(op))?;
    Ok(())
}

async fn replace(
    inner: &Inner,
    old: Vec<String>,
    new: Vec<StoredFile>,
    delete_after: SystemTime,
) -> wit_store::Result<()> {
    let op = "replace";
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    let held = lock_files(&tx, &all_paths(&old, &new), op).await?;
    plan::check_live(&old, |path| Ok(held.get(path).map(|f| f.1)))?;
    let indexed = plan::indexed_batch_ids(&new);
    let new = plan::files_to_publish(&new, |path| Ok(held.get(path).map(|f| f.0.clone())))?;
    let ids = plan::file_batch_ids(&new);
    lock_batches(&tx, &ids, op).await?;
    wit_store::rules::check_batches_not_stored(&new, &old, &live_holders(&tx, &ids, op).await?)?;
    let mut records = load(&tx, &indexed, op).await?;
    let changed = plan::index_all(&mut records, &indexed, SystemTime::now())?;
    store(&tx, &records, &changed, op).await?;
    tx.execute(
        "UPDATE stored_files SET state = 'retired', delete_after = $2 WHERE path = ANY($1)",
        &[&old, &micros(delete_after)],
    )
    .await
    .map_err(pg_err(op))?;
    insert_files(&tx, &new, op).await?;
    tx.commit().await.map_err(pg_err(op))?;
    Ok(())
}

async fn list_files(
    inner: &Inner,
    op: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<StoredFile>> {
    let rows = query_rows(inner, op, sql, params).await?;
    rows.iter().map(|r| Ok(read_file(r)?.0)).collect()
}

async fn record_index(inner: &Inner, file: String, index: FileIndex) -> wit_store::Result<()> {
    let op = "record_index";
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    let held = lock_files(&tx, &[file.as_str()], op).await?.remove(&file);
    let record = wit_store::rules::check_record_index(&file, held.as_ref().map(|(f, live)| (f, *live)), &index)?;
    if record {
        let columns = IndexColumns::of(Some(&index))?;
        tx.execute(
            "UPDATE stored_files SET index_path = $2, index_bytes = $3, index_docs = $4, index_checksum = $5 \
             WHERE path = $1",
            &[&file, &columns.path, &columns.bytes, &columns.docs, &columns.checksum],
        )
        .await
        .map_err(pg_err(op))?;
    }
    let ids = held.map(|(f, _)| f.batch_ids).unwrap_or_default();
    let mut records = load(&tx, &ids, op).await?;
    let changed = plan::index_all(&mut records, &ids, SystemTime::now())?;
    store(&tx, &records, &changed, op).await?;
    tx.commit().await.map_err(pg_err(op))?;
    Ok(())
}

async fn forget(inner: &Inner, paths: Vec<String>) -> wit_store::Result<u64> {
    let op = "forget";
    let mut client = inner.pool.get().await.map_err(pool_err(op))?;
    let tx = client.transaction().await.map_err(pg_err(op))?;
    let held = lock_files(&tx, &all_paths(&paths, &[]), op).await?;
    plan::check_not_live(&paths, |path| Ok(held.get(path).map(|f| f.1)))?;
    let n = tx
        .execute("DELETE FROM stored_files WHERE path = ANY($1)", &[&paths])
        .await
        .map_err(pg_err(op))?;
    tx.commit().await.map_err(pg_err(op))?;
    Ok(n)
}

impl FileCatalog for PostgresTracker {
    fn publish(&self, files: &[StoredFile]) -> wit_store::Result<()> {
        let files = files.to_vec();
        self.catalog(move |inner| async move { publish(&inner, files).await })
    }

    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> wit_store::Result<Vec<StoredFile>> {
        let range = time.unwrap_or(TimeRange::new(i64::MIN, i64::MAX));
        let tenant = tenant.as_str().to_owned();
        self.catalog(move |inner| async move {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM stored_files WHERE client_id = $1 AND signal = $2 AND state = 'live' \
                 AND max_time_ns >= $3 AND min_time_ns <= $4 ORDER BY min_time_ns, path"
            );
            Ok(list_files(
                &inner,
                "list files",
                &sql,
                &[&tenant, &signal.as_str(), &range.min, &range.max],
            )
            .await?)
        })
    }

    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> wit_store::Result<()> {
        let (old, new) = (old.to_vec(), new.to_vec());
        self.catalog(move |inner| async move { replace(&inner, old, new, delete_after).await })
    }

    fn retire(&self, paths: &[String], delete_after: SystemTime) -> wit_store::Result<()> {
        self.replace(paths, &[], delete_after)
    }

    fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<StoredFile>> {
        self.catalog(move |inner| async move {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM stored_files WHERE state = 'live' AND path IN \
                 (SELECT path FROM stored_file_batches WHERE batch_id = $1) ORDER BY path"
            );
            Ok(list_files(&inner, "files holding a batch", &sql, &[&uuid(batch)]).await?)
        })
    }

    fn deletable(&self, now: SystemTime) -> wit_store::Result<Vec<StoredFile>> {
        self.catalog(move |inner| async move {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM stored_files WHERE state = 'retired' AND delete_after <= $1 ORDER BY path"
            );
            Ok(list_files(&inner, "deletable files", &sql, &[&now]).await?)
        })
    }

    fn forget(&self, paths: &[String]) -> wit_store::Result<u64> {
        let paths = paths.to_vec();
        self.catalog(move |inner| async move { forget(&inner, paths).await })
    }

    fn record_index(&self, file: &str, index: &FileIndex) -> wit_store::Result<()> {
        let (file, index) = (file.to_owned(), index.clone());
        self.catalog(move |inner| async move { record_index(&inner, file, index).await })
    }

    fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<StoredFile>> {
        self.catalog(move |inner| async move {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM stored_files WHERE state = 'live' AND index_path IS NULL \
                 ORDER BY path LIMIT $1"
            );
            Ok(list_files(&inner, "unindexed files", &sql, &[&sql_limit(limit)]).await?)
        })
    }
}
