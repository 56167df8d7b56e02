//! The SQLite tracker: one database file, embedded, durable at every commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use wit_batch::{BatchId, BatchMeta, Signal, Stage, Tenant, Transition};
use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};

use crate::model::{
    Advance, BatchPage, BatchQuery, BatchRecord, ClaimRequest, ClientThroughput, ErrorOutcome, RangeClaim,
    RangeOutcome, Registration, RememberedKey, SourceOffset, StageCounts, TrackerConfig, Window,
};
use crate::plan::{from_micros, micros, sql_limit, to_i64, to_micros};
use crate::sql::{
    FIRST_TIME_COLUMN, IndexColumns, ListParam, PARTITION_COLUMN, RECORD_COLUMNS, RawRecord, UNSTORED_STAGES,
    WAL_NODE_COLUMN, list_sql, read_index, stage_list, wal_node,
};
use crate::{Error, Result, Tracker, plan};

const BACKEND: &str = "sqlite";

/// The schema, one migration per version. Times are microseconds since the Unix epoch (UTC);
/// the `*_pip` flags are 0/1. Column names follow seed 000's `batch_tracker`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "batch_tracker, source_offsets, stored_files",
        r#"
CREATE TABLE batch_tracker (
    batch_id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    signal TEXT NOT NULL,
    source TEXT NOT NULL,
    stage TEXT NOT NULL,
    failed_in TEXT,
    kafka_pip INTEGER NOT NULL DEFAULT 0,
    wal_pip INTEGER NOT NULL DEFAULT 0,
    ingestion_pip INTEGER NOT NULL DEFAULT 0,
    storage_pip INTEGER NOT NULL DEFAULT 0,
    index_pip INTEGER NOT NULL DEFAULT 0,
    janitor_pip INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    first_offset INTEGER,
    last_offset INTEGER,
    topics TEXT NOT NULL DEFAULT '[]',
    wal_position INTEGER,
    created_at INTEGER NOT NULL,
    wal_completed_at INTEGER,
    kafka_completed_at INTEGER,
    ingestion_completed_at INTEGER,
    storage_completed_at INTEGER,
    index_completed_at INTEGER,
    janitor_completed_at INTEGER,
    failed_at INTEGER,
    error_stage TEXT,
    error_message TEXT,
    retry_count INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX batch_tracker_stage ON batch_tracker (stage, created_at, batch_id);
CREATE INDEX batch_tracker_created ON batch_tracker (created_at);
CREATE INDEX batch_tracker_wal ON batch_tracker (wal_position) WHERE stage <> 'COMPLETED';
CREATE TABLE source_offsets (
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, topic, partition)
);
CREATE TABLE stored_files (
    path TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    signal TEXT NOT NULL,
    min_time_ns INTEGER NOT NULL,
    max_time_ns INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    byte_size INTEGER NOT NULL,
    batch_ids TEXT NOT NULL,
    state TEXT NOT NULL,
    delete_after INTEGER,
    published_at INTEGER NOT NULL
);
CREATE INDEX stored_files_lookup ON stored_files (client_id, signal, state, min_time_ns);
CREATE TABLE stored_file_batches (
    path TEXT NOT NULL,
    batch_id TEXT NOT NULL,
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
ALTER TABLE stored_files ADD COLUMN index_path TEXT;
ALTER TABLE stored_files ADD COLUMN index_bytes INTEGER;
ALTER TABLE stored_files ADD COLUMN index_docs INTEGER;
ALTER TABLE stored_files ADD COLUMN index_checksum INTEGER;
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
    batch_id TEXT NOT NULL,
    receipt BLOB NOT NULL,
    created_at INTEGER NOT NULL,
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

/// A [`Tracker`] and [`FileCatalog`] in an embedded SQLite database file: the default for a
/// single node. Clones share one connection.
///
/// The database runs in WAL mode with `synchronous = FULL`: a call returns only once its
/// transaction is durable. Several processes may open the same file; SQLite serializes their
/// writes (waiting up to the configured timeout for the lock).
///
/// ```
/// use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Stage, Tenant};
/// use wit_tracker::{SqliteTracker, Tracker, TrackerConfig, TrackerExt};
///
/// let dir = tempfile::tempdir()?;
/// let tracker = SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default())?;
/// let id = BatchId::new();
/// tracker.register_one(&BatchMeta {
///     id,
///     tenant: Tenant::try_new("acme")?,
///     signal: Signal::Traces,
///     source: SourceKind::Grpc,
///     message_count: 1,
///     byte_size: 2_048,
///     first_offset: None,
///     last_offset: None,
///     topics: vec![],
///     partition: None,
///     created_at: id.created_at(),
/// })?;
/// tracker.mark(id, Stage::WalWritten, std::time::SystemTime::now())?;
/// assert_eq!(tracker.batch(id)?.stage, Stage::WalWritten);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SqliteTracker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Mutex<Connection>,
    config: TrackerConfig,
    path: PathBuf,
}

fn db_err(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::Database {
        backend: BACKEND,
        operation,
        source: Box::new(e),
    }
}

fn corrupt(what: &'static str, value: impl ToString) -> Error {
    Error::corrupt(BACKEND, what, value)
}

impl SqliteTracker {
    /// Opens (creating if needed) the tracker database at `path` and brings its schema up to
    /// date.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the file cannot be opened or migrated;
    /// [`Error::SchemaTooNew`] when a newer build migrated it.
    pub fn open(path: &Path, config: TrackerConfig) -> Result<Self> {
        let mut conn = Connection::open(path).map_err(db_err("open"))?;
        conn.busy_timeout(config.timeout).map_err(db_err("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err("open"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err("open"))?;
        migrate(&mut conn)?;
        Ok(SqliteTracker {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                config,
                path: path.to_owned(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed if it succeeds. Generic over
    /// the error so the tracker's and the catalog's methods share it.
    fn write<T, E: From<Error>>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.inner.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err(operation))?;
        let value = f(&tx)?;
        tx.commit().map_err(db_err(operation))?;
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.inner.conn.lock())
    }

    fn record_error_as(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: Option<&str>,
    ) -> Result<ErrorOutcome> {
        self.write("record_error", |tx| {
            let mut records = load(tx, &[batch])?;
            let rec = records.get_mut(&batch).ok_or(Error::UnknownBatch { batch })?;
            let outcome = plan::apply_error(rec, stage, message, at, worker, &self.inner.config.retry)?;
            store(tx, &records, &[batch])?;
            Ok(outcome)
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err("migrate"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS wit_schema_version (
            version INTEGER PRIMARY KEY NOT NULL,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(db_err("migrate"))?;
    let found: i64 = tx
        .query_row("SELECT coalesce(max(version), 0) FROM wit_schema_version", [], |r| {
            r.get(0)
        })
        .map_err(db_err("migrate"))?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.execute_batch(sql).map_err(db_err("migrate"))?;
        tx.execute(
            "INSERT INTO wit_schema_version (version, description, applied_at) VALUES (?1, ?2, ?3)",
            params![version, description, to_micros(SystemTime::now())],
        )
        .map_err(db_err("migrate"))?;
    }
    tx.commit().map_err(db_err("migrate"))
}

/// A tenant's key (`?1`, `?2`), read by the table's primary key.
const RECALL_KEY_SQL: &str =
    "SELECT batch_id, receipt, created_at FROM idempotency_keys WHERE tenant = ?1 AND idem_key = ?2";

/// Forgets the keys taken before `?1`, found by `idempotency_keys_created`.
const FORGET_KEYS_SQL: &str = "DELETE FROM idempotency_keys WHERE created_at < ?1";

/// The lowest position of an unstored batch in one node's log (`?1`) or of unknown node (both
/// read from the partial index `batch_tracker_wal`).
fn oldest_unstored_sql() -> String {
    format!(
        "SELECT min(lsn) FROM (\
         SELECT min(wal_position) AS lsn FROM batch_tracker \
         WHERE wal_node = ?1 AND wal_position IS NOT NULL AND stage IN ({UNSTORED_STAGES}) \
         UNION ALL SELECT min(wal_position) FROM batch_tracker \
         WHERE wal_node IS NULL AND wal_position IS NOT NULL AND stage IN ({UNSTORED_STAGES}))"
    )
}

fn read_record(row: &Row<'_>) -> Result<BatchRecord> {
    let text = |i: usize| row.get::<_, String>(i).map_err(db_err("read"));
    let (id, topics) = (text(0)?, text(10)?);
    let id: BatchId = id.parse().map_err(|_| corrupt("batch id", &id))?;
    let topics: Vec<String> = serde_json::from_str(&topics).map_err(|_| corrupt("topics", &topics))?;
    let micros =
        |i: usize| -> rusqlite::Result<Option<SystemTime>> { Ok(row.get::<_, Option<i64>>(i)?.map(from_micros)) };
    let mut times = [None; 8];
    for (i, time) in times.iter_mut().enumerate() {
        *time = micros(FIRST_TIME_COLUMN + i).map_err(db_err("read"))?;
    }
    (|| -> rusqlite::Result<RawRecord> {
        Ok(RawRecord {
            id,
            tenant: row.get(1)?,
            signal: row.get(2)?,
            source: row.get(3)?,
            stage: row.get(4)?,
            failed_in: row.get(5)?,
            byte_size: row.get(6)?,
            message_count: row.get(7)?,
            first_offset: row.get(8)?,
            last_offset: row.get(9)?,
            topics,
            wal_position: row.get(11)?,
            wal_node: row.get(WAL_NODE_COLUMN)?,
            times,
            error_stage: row.get(20)?,
            error_message: row.get(21)?,
            retry_count: row.get(22)?,
            claimed_by: row.get(23)?,
            lease_until: micros(24)?,
            updated_at: from_micros(row.get(25)?),
            partition: row.get(PARTITION_COLUMN)?,
        })
    })()
    .map_err(db_err("read"))?
    .into_record(BACKEND)
}

fn load(tx: &Transaction<'_>, ids: &[BatchId]) -> Result<HashMap<BatchId, BatchRecord>> {
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM batch_tracker WHERE batch_id = ?1"
        ))
        .map_err(db_err("load"))?;
    let mut records = HashMap::with_capacity(ids.len());
    for id in ids {
        let mut rows = stmt.query([id.to_string()]).map_err(db_err("load"))?;
        if let Some(row) = rows.next().map_err(db_err("load"))? {
            records.insert(*id, read_record(row)?);
        }
    }
    Ok(records)
}

fn store(tx: &Transaction<'_>, records: &HashMap<BatchId, BatchRecord>, ids: &[BatchId]) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "UPDATE batch_tracker SET stage = ?2, failed_in = ?3, wal_position = ?4, \
             wal_completed_at = ?5, kafka_completed_at = ?6, ingestion_completed_at = ?7, \
             storage_completed_at = ?8, index_completed_at = ?9, janitor_completed_at = ?10, failed_at = ?11, \
             wal_pip = ?5 IS NOT NULL, kafka_pip = ?6 IS NOT NULL, ingestion_pip = ?7 IS NOT NULL, \
             storage_pip = ?8 IS NOT NULL, index_pip = ?9 IS NOT NULL, janitor_pip = ?10 IS NOT NULL, \
             error_stage = ?12, error_message = ?13, retry_count = ?14, claimed_by = ?15, lease_until = ?16, \
             updated_at = ?17, wal_node = ?18 WHERE batch_id = ?1",
        )
        .map_err(db_err("store"))?;
    for id in ids {
        let Some(rec) = records.get(id) else { continue };
        let t = |s| rec.completed_at.get(s).map(to_micros);
        stmt.execute(params![
            id.to_string(),
            rec.stage.as_str(),
            rec.failed_in.map(Stage::as_str),
            rec.wal_position
                .as_ref()
                .map(|p| to_i64(p.lsn, "WAL position"))
                .transpose()?,
            t(Stage::WalWritten),
            t(Stage::SourceCommitted),
            t(Stage::Ingested),
            t(Stage::Stored),
            t(Stage::Indexed),
            t(Stage::Completed),
            t(Stage::Failed),
            rec.error_stage.map(Stage::as_str),
            rec.error_message.as_deref(),
            rec.retry_count,
            rec.lease.as_ref().map(|l| l.worker.as_str()),
            rec.lease.as_ref().map(|l| to_micros(l.until)),
            to_micros(rec.updated_at),
            wal_node(rec),
        ])
        .map_err(db_err("store"))?;
    }
    Ok(())
}

/// Registers one batch as `CREATED`; `false` when its id is registered already.
fn insert_batch(tx: &Transaction<'_>, meta: &BatchMeta, operation: &'static str) -> Result<bool> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO batch_tracker (batch_id, client_id, signal, source, stage, batch_size, \
             message_count, first_offset, last_offset, topics, created_at, updated_at, \"partition\") \
             VALUES (?1, ?2, ?3, ?4, 'CREATED', ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11) \
             ON CONFLICT (batch_id) DO NOTHING",
        )
        .map_err(db_err(operation))?;
    let inserted = stmt
        .execute(params![
            meta.id.to_string(),
            meta.tenant.as_str(),
            meta.signal.as_str(),
            meta.source.as_str(),
            to_i64(meta.byte_size, "byte size")?,
            to_i64(meta.message_count, "message count")?,
            meta.first_offset,
            meta.last_offset,
            serde_json::to_string(&meta.topics).unwrap_or_else(|_| "[]".into()),
            to_micros(meta.created_at),
            meta.partition,
        ])
        .map_err(db_err(operation))?;
    Ok(inserted == 1)
}

/// Applies the claims of a [`Tracker::claim_ranges`] call, in order, inside its transaction
/// (`BEGIN IMMEDIATE`: no other writer runs between a claim's read of the offset and its
/// write). `records` are the claims' records, checked.
fn claim_ranges_in(
    tx: &Transaction<'_>,
    claims: &[RangeClaim],
    records: Vec<BatchRecord>,
) -> Result<Vec<RangeOutcome>> {
    let op = "claim_ranges";
    let mut stage_of = tx
        .prepare_cached("SELECT stage FROM batch_tracker WHERE batch_id = ?1")
        .map_err(db_err(op))?;
    let mut offset_of = tx
        .prepare_cached("SELECT \"offset\" FROM source_offsets WHERE source = ?1 AND topic = ?2 AND partition = ?3")
        .map_err(db_err(op))?;
    let mut set_offset = tx
        .prepare_cached(
            "INSERT INTO source_offsets (source, topic, partition, \"offset\", updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (source, topic, partition) DO UPDATE \
             SET \"offset\" = excluded.\"offset\", updated_at = excluded.updated_at",
        )
        .map_err(db_err(op))?;
    let now = to_micros(SystemTime::now());
    let mut outcomes = Vec::with_capacity(claims.len());
    for (claim, rec) in claims.iter().zip(records) {
        let id = claim.meta.id;
        let stage: Option<String> = stage_of
            .query_row([id.to_string()], |r| r.get(0))
            .optional()
            .map_err(db_err(op))?;
        if let Some(stage) = stage {
            outcomes.push(RangeOutcome::AlreadyRegistered {
                stage: plan::parse_stage(BACKEND, &stage)?,
            });
            continue;
        }
        let stored: Option<i64> = offset_of
            .query_row(params![claim.source, claim.topic, claim.partition], |r| r.get(0))
            .optional()
            .map_err(db_err(op))?;
        let outcome = plan::range_outcome(claim, stored);
        if outcome == RangeOutcome::Claimed {
            insert_batch(tx, &claim.meta, op)?;
            store(tx, &HashMap::from([(id, rec)]), &[id])?;
            set_offset
                .execute(params![claim.source, claim.topic, claim.partition, claim.to, now])
                .map_err(db_err(op))?;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn query_records(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<BatchRecord>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err("query"))?;
    let mut rows = stmt.query(params).map_err(db_err("query"))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err("query"))? {
        out.push(read_record(row)?);
    }
    Ok(out)
}

impl Tracker for SqliteTracker {
    fn register(&self, batches: &[BatchMeta]) -> Result<Vec<Registration>> {
        batches.iter().try_for_each(plan::check_meta)?;
        self.write("register", |tx| {
            let mut out = Vec::with_capacity(batches.len());
            for meta in batches {
                out.push(if insert_batch(tx, meta, "register")? {
                    Registration::Registered
                } else {
                    Registration::AlreadyRegistered
                });
            }
            Ok(out)
        })
    }

    fn advance(&self, steps: &[Advance]) -> Result<Vec<Transition>> {
        plan::check_steps(steps)?;
        self.write("advance", |tx| {
            let mut records = load(tx, &plan::step_ids(steps))?;
            let (outcomes, changed) = plan::advance_all(&mut records, steps)?;
            store(tx, &records, &changed)?;
            let offsets = plan::merged_offsets(steps);
            if !offsets.is_empty() {
                let now = to_micros(SystemTime::now());
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO source_offsets (source, topic, partition, \"offset\", updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (source, topic, partition) DO UPDATE \
                         SET \"offset\" = max(\"offset\", excluded.\"offset\"), updated_at = excluded.updated_at",
                    )
                    .map_err(db_err("advance"))?;
                for o in offsets {
                    stmt.execute(params![o.source, o.topic, o.partition, o.offset, now])
                        .map_err(db_err("advance"))?;
                }
            }
            Ok(outcomes)
        })
    }

    fn claim_ranges(&self, claims: &[RangeClaim]) -> Result<Vec<RangeOutcome>> {
        let records = plan::range_records(claims)?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.write("claim_ranges", |tx| claim_ranges_in(tx, claims, records))
    }

    fn record_error(&self, batch: BatchId, stage: Stage, message: &str, at: SystemTime) -> Result<ErrorOutcome> {
        self.record_error_as(batch, stage, message, at, None)
    }

    fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> Result<ErrorOutcome> {
        self.record_error_as(batch, stage, message, at, Some(worker))
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<BatchRecord>> {
        let sources = plan::claim_sources(request)?;
        let lease = plan::lease_for(request);
        let sql = format!(
            "UPDATE batch_tracker SET claimed_by = ?1, lease_until = ?2 WHERE batch_id IN (\
             SELECT batch_id FROM batch_tracker WHERE stage IN ({}) \
             AND (lease_until IS NULL OR lease_until <= ?3) ORDER BY created_at, batch_id LIMIT ?4) \
             RETURNING {RECORD_COLUMNS}",
            stage_list(&sources)
        );
        self.write("claim", |tx| {
            let mut claimed = query_records(
                tx,
                &sql,
                params![
                    lease.worker,
                    to_micros(lease.until),
                    to_micros(micros(request.now)),
                    sql_limit(request.max)
                ],
            )?;
            claimed.sort_by_key(|r| (r.meta.created_at, r.meta.id));
            Ok(claimed)
        })
    }

    fn batch(&self, batch: BatchId) -> Result<BatchRecord> {
        self.read(|conn| {
            query_records(
                conn,
                &format!("SELECT {RECORD_COLUMNS} FROM batch_tracker WHERE batch_id = ?1"),
                [batch.to_string()],
            )?
            .pop()
            .ok_or(Error::UnknownBatch { batch })
        })
    }

    fn list_batches(&self, query: &BatchQuery) -> Result<BatchPage> {
        plan::check_query(query)?;
        let (sql, params) = list_sql(query, |n| format!("?{n}"));
        let params = params.into_iter().map(|p| match p {
            ListParam::Stage(stage) => Value::Text(stage.to_owned()),
            ListParam::Time(t) => Value::Integer(to_micros(t)),
            ListParam::Tenant(tenant) => Value::Text(tenant),
            ListParam::Batch(id) => Value::Text(id.to_string()),
            ListParam::Limit(n) => Value::Integer(n),
        });
        let rows = self.read(|conn| query_records(conn, &sql, rusqlite::params_from_iter(params)))?;
        Ok(BatchPage::of_rows(rows, query.limit))
    }

    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Result<StageCounts> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT stage, count(*) FROM batch_tracker WHERE created_at >= ?1 AND created_at < ?2 \
                     AND (?3 IS NULL OR client_id = ?3) GROUP BY stage",
                )
                .map_err(db_err("stage_counts"))?;
            let params = params![to_micros(window.from), to_micros(window.to), tenant.map(Tenant::as_str)];
            let rows = stmt
                .query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err("stage_counts"))?;
            let mut counts = StageCounts::default();
            for row in rows {
                let (stage, n) = row.map_err(db_err("stage_counts"))?;
                counts.add(plan::parse_stage(BACKEND, &stage)?, n.unsigned_abs());
            }
            Ok(counts)
        })
    }

    fn client_throughput(&self, window: Window) -> Result<Vec<ClientThroughput>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT client_id, count(*), sum(message_count), sum(batch_size) FROM batch_tracker \
                     WHERE created_at >= ?1 AND created_at < ?2 GROUP BY client_id",
                )
                .map_err(db_err("client_throughput"))?;
            let rows = stmt
                .query_map(params![to_micros(window.from), to_micros(window.to)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db_err("client_throughput"))?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, batches, messages, bytes) = row.map_err(db_err("client_throughput"))?;
                let tenant = Tenant::try_new(tenant.clone()).map_err(|_| corrupt("client id", tenant))?;
                out.push((
                    tenant,
                    batches.unsigned_abs(),
                    messages.unsigned_abs(),
                    bytes.unsigned_abs(),
                ));
            }
            Ok(plan::throughput_rows(out, &window))
        })
    }

    fn oldest_unstored_wal_position(&self, node: &str) -> Result<Option<u64>> {
        plan::check_node(node)?;
        self.read(|conn| {
            let min: Option<i64> = conn
                .prepare_cached(&oldest_unstored_sql())
                .and_then(|mut stmt| stmt.query_row([node], |r| r.get(0)))
                .map_err(db_err("oldest_unstored_wal_position"))?;
            min.map(|p| u64::try_from(p).map_err(|_| corrupt("WAL position", p)))
                .transpose()
        })
    }

    fn source_offsets(&self, source: &str) -> Result<Vec<SourceOffset>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT source, topic, partition, \"offset\" FROM source_offsets WHERE source = ?1 \
                     ORDER BY topic, partition",
                )
                .map_err(db_err("source_offsets"))?;
            let rows = stmt
                .query_map([source], |r| {
                    Ok(SourceOffset::new(
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })
                .map_err(db_err("source_offsets"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err("source_offsets"))
        })
    }

    fn purge_completed(&self, completed_before: SystemTime) -> Result<u64> {
        self.write("purge_completed", |tx| {
            let n = tx
                .execute(
                    "DELETE FROM batch_tracker WHERE stage = 'COMPLETED' AND janitor_completed_at < ?1",
                    [to_micros(completed_before)],
                )
                .map_err(db_err("purge_completed"))?;
            Ok(n as u64)
        })
    }

    fn remember_keys(&self, keys: &[RememberedKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        plan::check_keys(keys)?;
        self.write("remember_keys", |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO idempotency_keys (tenant, idem_key, batch_id, receipt, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, idem_key) DO NOTHING",
                )
                .map_err(db_err("remember_keys"))?;
            for k in keys {
                stmt.execute(params![
                    k.tenant.as_str(),
                    k.key,
                    k.batch.to_string(),
                    k.receipt,
                    to_micros(k.at)
                ])
                .map_err(db_err("remember_keys"))?;
            }
            Ok(())
        })
    }

    fn recall_key(&self, tenant: &Tenant, key: &str) -> Result<Option<RememberedKey>> {
        if !plan::rememberable(key) {
            return Ok(None);
        }
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(RECALL_KEY_SQL).map_err(db_err("recall_key"))?;
            let mut rows = stmt
                .query(params![tenant.as_str(), key])
                .map_err(db_err("recall_key"))?;
            let Some(row) = rows.next().map_err(db_err("recall_key"))? else {
                return Ok(None);
            };
            let (batch, receipt, at) =
                (|| -> rusqlite::Result<(String, Vec<u8>, i64)> { Ok((row.get(0)?, row.get(1)?, row.get(2)?)) })()
                    .map_err(db_err("recall_key"))?;
            let batch: BatchId = batch.parse().map_err(|_| corrupt("batch id", &batch))?;
            Ok(Some(RememberedKey::new(
                tenant.clone(),
                key,
                batch,
                receipt,
                from_micros(at),
            )))
        })
    }

    fn forget_keys_before(&self, before: SystemTime) -> Result<u64> {
        self.write("forget_keys_before", |tx| {
            let n = tx
                .execute(FORGET_KEYS_SQL, [to_micros(before)])
                .map_err(db_err("forget_keys_before"))?;
            Ok(n as u64)
        })
    }
}

const FILE_COLUMNS: &str = "path, client_id, signal, min_time_ns, max_time_ns, row_count, byte_size, batch_ids, state, \
     index_path, index_bytes, index_docs, index_checksum";

/// A file's index from its four columns (all `NULL` when it has none).
fn read_file_index(row: &Row<'_>) -> Result<Option<FileIndex>> {
    let r = (|| -> rusqlite::Result<_> { Ok((row.get(9)?, row.get(10)?, row.get(11)?, row.get(12)?)) })()
        .map_err(db_err("read file"))?;
    read_index(BACKEND, r.0, r.1, r.2, r.3)
}

fn read_file(row: &Row<'_>) -> Result<(StoredFile, bool)> {
    let r = (|| -> rusqlite::Result<_> {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, i64>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, String>(8)?,
        ))
    })()
    .map_err(db_err("read file"))?;
    let (path, tenant, signal, min, max, rows, bytes, ids, state) = r;
    let ids: Vec<String> = serde_json::from_str(&ids).map_err(|_| corrupt("batch id list", &ids))?;
    let batch_ids = ids
        .iter()
        .map(|s| s.parse::<BatchId>().map_err(|_| corrupt("batch id", s)))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        StoredFile {
            path,
            tenant: Tenant::try_new(tenant.clone()).map_err(|_| corrupt("client id", tenant))?,
            signal: signal.parse().map_err(|_| corrupt("signal", &signal))?,
            time_range: TimeRange::new(min, max),
            rows: u64::try_from(rows).map_err(|_| corrupt("row count", rows))?,
            bytes: u64::try_from(bytes).map_err(|_| corrupt("byte size", bytes))?,
            batch_ids,
            index: read_file_index(row)?,
        },
        state == "live",
    ))
}

fn get_file(tx: &Transaction<'_>, path: &str) -> Result<Option<(StoredFile, bool)>> {
    let mut stmt = tx
        .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM stored_files WHERE path = ?1"))
        .map_err(db_err("read file"))?;
    let mut rows = stmt.query([path]).map_err(db_err("read file"))?;
    rows.next().map_err(db_err("read file"))?.map(read_file).transpose()
}

fn query_files(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<StoredFile>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err("list files"))?;
    let mut rows = stmt.query(params).map_err(db_err("list files"))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err("list files"))? {
        out.push(read_file(row)?.0);
    }
    Ok(out)
}

fn insert_files(tx: &Transaction<'_>, files: &[StoredFile]) -> Result<()> {
    let now = to_micros(SystemTime::now());
    let mut file_stmt = tx
        .prepare_cached(
            "INSERT INTO stored_files (path, client_id, signal, min_time_ns, max_time_ns, row_count, byte_size, \
             batch_ids, state, delete_after, published_at, index_path, index_bytes, index_docs, index_checksum) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'live', NULL, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(db_err("publish"))?;
    let mut link_stmt = tx
        .prepare_cached("INSERT INTO stored_file_batches (path, batch_id) VALUES (?1, ?2)")
        .map_err(db_err("publish"))?;
    for f in files {
        let ids: Vec<String> = f.batch_ids.iter().map(ToString::to_string).collect();
        let index = IndexColumns::of(f.index.as_ref())?;
        file_stmt
            .execute(params![
                f.path,
                f.tenant.as_str(),
                f.signal.as_str(),
                f.time_range.min,
                f.time_range.max,
                to_i64(f.rows, "row count")?,
                to_i64(f.bytes, "byte size")?,
                serde_json::to_string(&ids).unwrap_or_default(),
                now,
                index.path,
                index.bytes,
                index.docs,
                index.checksum,
            ])
            .map_err(db_err("publish"))?;
        for id in &ids {
            link_stmt.execute(params![f.path, id]).map_err(db_err("publish"))?;
        }
    }
    Ok(())
}

/// The live files without an index, by path, at most `?1` (read from the partial index
/// `stored_files_unindexed`).
fn unindexed_sql() -> String {
    format!(
        "SELECT {FILE_COLUMNS} FROM stored_files WHERE state = 'live' AND index_path IS NULL ORDER BY path LIMIT ?1"
    )
}

/// The `(batch, path)` of every live file holding one of `ids`.
fn live_holders(tx: &Transaction<'_>, ids: &[BatchId]) -> Result<Vec<(BatchId, String)>> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT b.path FROM stored_file_batches b JOIN stored_files f ON f.path = b.path \
             WHERE b.batch_id = ?1 AND f.state = 'live'",
        )
        .map_err(db_err("read file batches"))?;
    let mut holders = Vec::new();
    for id in ids {
        let paths = stmt
            .query_map([id.to_string()], |r| r.get::<_, String>(0))
            .map_err(db_err("read file batches"))?;
        for path in paths {
            holders.push((*id, path.map_err(db_err("read file batches"))?));
        }
    }
    Ok(holders)
}

fn retire_files(tx: &Transaction<'_>, paths: &[String], delete_after: SystemTime) -> Result<()> {
    let mut stmt = tx
        .prepare_cached("UPDATE stored_files SET state = 'retired', delete_after = ?2 WHERE path = ?1")
        .map_err(db_err("retire"))?;
    for path in paths {
        stmt.execute(params![path, to_micros(delete_after)])
            .map_err(db_err("retire"))?;
    }
    Ok(())
}

impl FileCatalog for SqliteTracker {
    fn publish(&self, files: &[StoredFile]) -> wit_store::Result<()> {
        self.write("publish", |tx| {
            let new = plan::files_to_publish(files, |path| Ok(get_file(tx, path)?.map(|f| f.0)))?;
            let ids = plan::file_batch_ids(&new);
            let indexed = plan::indexed_batch_ids(files);
            let mut records = load(tx, &plan::merged_ids(ids.clone(), indexed.clone()))?;
            let now = SystemTime::now();
            let stored = plan::store_all(&mut records, &ids, now)?;
            let changed = plan::merged_ids(stored, plan::index_all(&mut records, &indexed, now)?);
            wit_store::rules::check_batches_not_stored(&new, &[], &live_holders(tx, &ids)?)?;
            insert_files(tx, &new)?;
            store(tx, &records, &changed)?;
            Ok(())
        })
    }

    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> wit_store::Result<Vec<StoredFile>> {
        let range = time.unwrap_or(TimeRange::new(i64::MIN, i64::MAX));
        Ok(self.read(|conn| {
            query_files(
                conn,
                &format!(
                    "SELECT {FILE_COLUMNS} FROM stored_files WHERE client_id = ?1 AND signal = ?2 AND state = 'live' \
                     AND max_time_ns >= ?3 AND min_time_ns <= ?4 ORDER BY min_time_ns, path"
                ),
                params![tenant.as_str(), signal.as_str(), range.min, range.max],
            )
        })?)
    }

    fn replace(&self, old: &[String], new_files: &[StoredFile], delete_after: SystemTime) -> wit_store::Result<()> {
        self.write("replace", |tx| {
            plan::check_live(old, |path| Ok(get_file(tx, path)?.map(|f| f.1)))?;
            let new = plan::files_to_publish(new_files, |path| Ok(get_file(tx, path)?.map(|f| f.0)))?;
            let holders = live_holders(tx, &plan::file_batch_ids(&new))?;
            wit_store::rules::check_batches_not_stored(&new, old, &holders)?;
            let indexed = plan::indexed_batch_ids(new_files);
            let mut records = load(tx, &indexed)?;
            let changed = plan::index_all(&mut records, &indexed, SystemTime::now())?;
            retire_files(tx, old, delete_after)?;
            insert_files(tx, &new)?;
            store(tx, &records, &changed)?;
            Ok(())
        })
    }

    fn retire(&self, paths: &[String], delete_after: SystemTime) -> wit_store::Result<()> {
        self.replace(paths, &[], delete_after)
    }

    fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<StoredFile>> {
        Ok(self.read(|conn| {
            query_files(
                conn,
                &format!(
                    "SELECT {FILE_COLUMNS} FROM stored_files WHERE state = 'live' AND path IN \
                     (SELECT path FROM stored_file_batches WHERE batch_id = ?1) ORDER BY path"
                ),
                [batch.to_string()],
            )
        })?)
    }

    fn deletable(&self, now: SystemTime) -> wit_store::Result<Vec<StoredFile>> {
        Ok(self.read(|conn| {
            query_files(
                conn,
                &format!(
                    "SELECT {FILE_COLUMNS} FROM stored_files WHERE state = 'retired' AND delete_after <= ?1 \
                     ORDER BY path"
                ),
                [to_micros(now)],
            )
        })?)
    }

    fn forget(&self, paths: &[String]) -> wit_store::Result<u64> {
        self.write("forget", |tx| {
            plan::check_not_live(paths, |path| Ok(get_file(tx, path)?.map(|f| f.1)))?;
            let mut n = 0;
            for path in paths {
                tx.execute("DELETE FROM stored_file_batches WHERE path = ?1", [path])
                    .map_err(db_err("forget"))?;
                n += tx
                    .execute("DELETE FROM stored_files WHERE path = ?1", [path])
                    .map_err(db_err("forget"))? as u64;
            }
            Ok(n)
        })
    }

    fn record_index(&self, file: &str, index: &FileIndex) -> wit_store::Result<()> {
        self.write("record_index", |tx| {
            let held = get_file(tx, file)?;
            let record = wit_store::rules::check_record_index(file, held.as_ref().map(|(f, live)| (f, *live)), index)?;
            if record {
                let columns = IndexColumns::of(Some(index))?;
                tx.execute(
                    "UPDATE stored_files SET index_path = ?2, index_bytes = ?3, index_docs = ?4, index_checksum = ?5 \
                     WHERE path = ?1",
                    params![file, columns.path, columns.bytes, columns.docs, columns.checksum],
                )
                .map_err(db_err("record_index"))?;
            }
            let ids = held.map(|(f, _)| f.batch_ids).unwrap_or_default();
            let mut records = load(tx, &ids)?;
            let changed = plan::index_all(&mut records, &ids, SystemTime::now())?;
            store(tx, &records, &changed)?;
            Ok(())
        })
    }

    fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<StoredFile>> {
        Ok(self.read(|conn| query_files(conn, &unindexed_sql(), [sql_limit(limit)]))?)
    }
}

/// Runs a blocking call on the caller's runtime's blocking pool.
async fn run_blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

crate::api::async_from_sync!(SqliteTracker, run_blocking);

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(tracker: &SqliteTracker, sql: &str) -> String {
        let conn = tracker.inner.conn.lock();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        let params = rusqlite::params_from_iter(std::iter::repeat_n("", stmt.parameter_count()));
        let rows = stmt
            .query_map(params, |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan");
        rows.join("\n")
    }

    /// The WAL watermark is read from the partial index alone, for the node's positions and
    /// for those of unknown node: the query's conditions match the index's.
    #[test]
    fn the_wal_watermark_reads_the_partial_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = SqliteTracker::open(&dir.path().join("t.db"), TrackerConfig::default()).expect("open");
        let plan = plan_of(&tracker, &oldest_unstored_sql());
        // Both branches seek the index (min() stops at the first entry); `IS NULL` shows as `=?`.
        let seek = "SEARCH batch_tracker USING INDEX batch_tracker_wal (wal_node=? AND wal_position>?)";
        assert_eq!(plan.matches(seek).count(), 2, "{plan}");
        assert!(!plan.contains("SCAN batch_tracker"), "{plan}");
    }

    /// A recall reads the key's row by the primary key; forgetting reads the index on
    /// `created_at`: neither scans the table.
    #[test]
    fn idempotency_keys_are_read_by_their_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = SqliteTracker::open(&dir.path().join("t.db"), TrackerConfig::default()).expect("open");
        let plan = plan_of(&tracker, RECALL_KEY_SQL);
        assert!(
            plan.contains(
                "SEARCH idempotency_keys USING INDEX sqlite_autoindex_idempotency_keys_1 (tenant=? AND idem_key=?)"
            ),
            "{plan}"
        );
        let plan = plan_of(&tracker, FORGET_KEYS_SQL);
        assert!(
            plan.contains("SEARCH idempotency_keys USING INDEX idempotency_keys_created (created_at<?)"),
            "{plan}"
        );
    }

    /// A stage's listing seeks `batch_tracker_stage (stage, created_at, batch_id)` from the
    /// cursor and reads it in order (no sort), with or without a tenant and a creation bound;
    /// the unfinished batches are read from `batch_tracker_created` by creation time.
    #[test]
    fn listings_seek_their_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = SqliteTracker::open(&dir.path().join("t.db"), TrackerConfig::default()).expect("open");
        let cursor = crate::Cursor::new(SystemTime::now(), BatchId::new());
        let tenant = Tenant::try_new("acme").expect("tenant");
        for query in [
            crate::BatchQuery::failed(),
            crate::BatchQuery::in_stage(Stage::Ingested).after(cursor),
            crate::BatchQuery::in_stage(Stage::Stored)
                .with_created_before(SystemTime::now())
                .with_tenant(tenant.clone())
                .after(cursor),
        ] {
            let plan = plan_of(&tracker, &list_sql(&query, |n| format!("?{n}")).0);
            assert!(
                plan.contains("USING INDEX batch_tracker_stage (stage=?"),
                "{query:?}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{query:?}: {plan}");
        }
        let stuck = crate::BatchQuery::stuck(SystemTime::now())
            .with_tenant(tenant)
            .after(cursor);
        let plan = plan_of(&tracker, &list_sql(&stuck, |n| format!("?{n}")).0);
        assert!(plan.contains("USING INDEX batch_tracker_created (created_at"), "{plan}");
    }

    /// The unindexed files are read from their partial index, in path order, without a sort.
    #[test]
    fn unindexed_files_read_the_partial_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = SqliteTracker::open(&dir.path().join("t.db"), TrackerConfig::default()).expect("open");
        let plan = plan_of(&tracker, &unindexed_sql());
        assert!(plan.contains("USING INDEX stored_files_unindexed"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
