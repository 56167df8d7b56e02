//! `wit-tracker` on SQLite and PostgreSQL: register + a full lifecycle of transitions
//! (`WAL_WRITTEN` with its WAL position, `SOURCE_COMMITTED` with a Kafka offset, `INGESTED`,
//! `STORED`, `INDEXED`, `COMPLETED`), one batch per transaction (`per_batch`) and 200 batches
//! per transaction (`batched`). Throughput is in full lifecycles (batches) per second.
//!
//! The ceiling beside each (`raw_batched`): the same rows written with the fewest statements
//! the database allows and no tracker logic, in the same transactions: one multi-row INSERT,
//! then per step one multi-row UPDATE of the stage, its completion time and its flag. The
//! tracker additionally reads and locks each row, checks the transition, and writes the whole
//! record back.
//!
//! Both databases are durable as configured for production: SQLite in WAL mode with
//! `synchronous = FULL` (the tracker's setting), PostgreSQL 15 with `fsync = on` and
//! synchronous commit, a throwaway server started by the bench on 127.0.0.1 (see
//! `wit-tracker/tests/it/pg_server.rs`), the client on the same machine. Timings are never
//! asserted.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Stage, Tenant};
use wit_tracker::{Advance, PostgresTracker, SourceOffset, SqliteTracker, Tracker, TrackerConfig};

#[path = "../../wit-tracker/tests/it/pg_server.rs"]
#[allow(dead_code)]
mod pg_server;

const BATCHED: usize = 200;
const PER_BATCH: usize = 20;

const STEPS: [Stage; 6] = [
    Stage::WalWritten,
    Stage::SourceCommitted,
    Stage::Ingested,
    Stage::Stored,
    Stage::Indexed,
    Stage::Completed,
];

fn metas(n: usize) -> Vec<BatchMeta> {
    let tenant = Tenant::try_new("acme").expect("tenant");
    (0..n)
        .map(|i| {
            let id = BatchId::new();
            BatchMeta {
                id,
                tenant: tenant.clone(),
                signal: Signal::Logs,
                source: SourceKind::Kafka,
                message_count: 1_000,
                byte_size: 400_000,
                first_offset: Some(i as i64 * 1_000),
                last_offset: Some(i as i64 * 1_000 + 999),
                topics: vec!["logs.acme".to_owned()],
                partition: None,
                created_at: id.created_at(),
            }
        })
        .collect()
}

fn step(meta: &BatchMeta, stage: Stage, lsn: u64) -> Advance {
    let now = SystemTime::now();
    match stage {
        Stage::WalWritten => Advance::new(meta.id, stage, now).with_wal_position("bench", lsn),
        Stage::SourceCommitted => Advance::new(meta.id, stage, now).with_offsets(vec![SourceOffset::new(
            "bench",
            "logs.acme",
            0,
            meta.last_offset.unwrap_or(0) + 1,
        )]),
        _ => Advance::new(meta.id, stage, now),
    }
}

/// `metas` through their whole lifecycle, all in each transaction.
fn lifecycle_batched(tracker: &impl Tracker, metas: &[BatchMeta]) {
    tracker.register(metas).expect("register");
    for stage in STEPS {
        let steps: Vec<Advance> = metas
            .iter()
            .enumerate()
            .map(|(i, m)| step(m, stage, i as u64))
            .collect();
        black_box(tracker.advance(&steps).expect("advance"));
    }
}

/// `metas` through their whole lifecycle, one batch and one step per transaction.
fn lifecycle_per_batch(tracker: &impl Tracker, metas: &[BatchMeta]) {
    for (i, m) in metas.iter().enumerate() {
        tracker.register(std::slice::from_ref(m)).expect("register");
        for stage in STEPS {
            black_box(tracker.advance(&[step(m, stage, i as u64)]).expect("advance"));
        }
    }
}

fn bench_tracker(c: &mut Criterion, backend: &str, tracker: &impl Tracker, raw: &mut dyn FnMut(&[BatchMeta])) {
    let mut group = c.benchmark_group(format!("tracker_lifecycle_{backend}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(BATCHED as u64));
    group.bench_function(BenchmarkId::new("raw_batched", BATCHED), |b| {
        b.iter_batched(|| metas(BATCHED), |m| raw(&m), criterion::BatchSize::PerIteration)
    });
    group.bench_function(BenchmarkId::new("batched", BATCHED), |b| {
        b.iter_batched(
            || metas(BATCHED),
            |m| lifecycle_batched(tracker, &m),
            criterion::BatchSize::PerIteration,
        )
    });
    group.throughput(Throughput::Elements(PER_BATCH as u64));
    group.bench_function(BenchmarkId::new("per_batch", PER_BATCH), |b| {
        b.iter_batched(
            || metas(PER_BATCH),
            |m| lifecycle_per_batch(tracker, &m),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The completion-time and flag columns of each step, as in both schemas.
const STEP_COLUMNS: [(&str, &str); 6] = [
    ("wal_completed_at", "wal_pip"),
    ("kafka_completed_at", "kafka_pip"),
    ("ingestion_completed_at", "ingestion_pip"),
    ("storage_completed_at", "storage_pip"),
    ("index_completed_at", "index_pip"),
    ("janitor_completed_at", "janitor_pip"),
];

fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let tracker = SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default()).expect("open");
    // The ceiling writes into a second database of the same schema, over its own connection.
    let raw_path = dir.path().join("raw.db");
    drop(SqliteTracker::open(&raw_path, TrackerConfig::default()).expect("open raw"));
    let mut conn = rusqlite::Connection::open(&raw_path).expect("raw connection");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("full");
    let mut raw = |metas: &[BatchMeta]| {
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO batch_tracker (batch_id, client_id, signal, source, stage, batch_size, \
                     message_count, first_offset, last_offset, topics, created_at, updated_at) \
                     VALUES (?1, ?2, 'logs', 'kafka', 'CREATED', ?3, ?4, ?5, ?6, '[\"logs.acme\"]', ?7, ?7)",
                )
                .expect("prepare");
            for m in metas {
                insert
                    .execute(rusqlite::params![
                        m.id.to_string(),
                        m.tenant.as_str(),
                        m.byte_size as i64,
                        m.message_count as i64,
                        m.first_offset,
                        m.last_offset,
                        micros(m.created_at)
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
        for (stage, (time_col, flag_col)) in STEPS.iter().zip(STEP_COLUMNS) {
            let tx = conn.transaction().expect("tx");
            {
                let mut update = tx
                    .prepare_cached(&format!(
                        "UPDATE batch_tracker SET stage = ?2, {time_col} = ?3, {flag_col} = 1, updated_at = ?3 \
                         WHERE batch_id = ?1"
                    ))
                    .expect("prepare");
                let now = micros(SystemTime::now());
                for m in metas {
                    update
                        .execute(rusqlite::params![m.id.to_string(), stage.as_str(), now])
                        .expect("update");
                }
            }
            tx.commit().expect("commit");
        }
    };
    bench_tracker(c, "sqlite", &tracker, &mut raw);
}

fn postgres(c: &mut Criterion) {
    let Some(server) = pg_server::PgServer::start(true) else {
        eprintln!("PostgreSQL not found: tracker_lifecycle_postgres not measured");
        return;
    };
    let tracker = PostgresTracker::connect(&server.schema("bench"), TrackerConfig::default()).expect("connect");
    let raw_params = server.schema("raw");
    drop(PostgresTracker::connect(&raw_params, TrackerConfig::default()).expect("raw schema"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&raw_params, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    });
    let mut raw = |metas: &[BatchMeta]| {
        runtime.block_on(async {
            let ids: Vec<uuid::Uuid> = metas.iter().map(|m| uuid::Uuid::from_u128(m.id.as_u128())).collect();
            let tenants: Vec<&str> = metas.iter().map(|m| m.tenant.as_str()).collect();
            let sizes: Vec<i64> = metas.iter().map(|m| m.byte_size as i64).collect();
            let counts: Vec<i64> = metas.iter().map(|m| m.message_count as i64).collect();
            let firsts: Vec<Option<i64>> = metas.iter().map(|m| m.first_offset).collect();
            let lasts: Vec<Option<i64>> = metas.iter().map(|m| m.last_offset).collect();
            let created: Vec<SystemTime> = metas.iter().map(|m| m.created_at).collect();
            let tx = client.transaction().await.expect("tx");
            tx.execute(
                "INSERT INTO batch_tracker (batch_id, client_id, signal, source, stage, batch_size, message_count, \
                 first_offset, last_offset, topics, created_at, updated_at) \
                 SELECT u.id, u.client, 'logs', 'kafka', 'CREATED', u.size, u.count, u.first, u.last, \
                 ARRAY['logs.acme'], u.created, u.created \
                 FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::timestamptz[]) \
                 AS u(id, client, size, count, first, last, created)",
                &[&ids, &tenants, &sizes, &counts, &firsts, &lasts, &created],
            )
            .await
            .expect("insert");
            tx.commit().await.expect("commit");
            for (stage, (time_col, flag_col)) in STEPS.iter().zip(STEP_COLUMNS) {
                let tx = client.transaction().await.expect("tx");
                tx.execute(
                    &format!(
                        "UPDATE batch_tracker SET stage = $2, {time_col} = $3, {flag_col} = true, updated_at = $3 \
                         WHERE batch_id = ANY($1)"
                    ),
                    &[&ids, &stage.as_str(), &SystemTime::now()],
                )
                .await
                .expect("update");
                tx.commit().await.expect("commit");
            }
        })
    };
    bench_tracker(c, "postgres", &tracker, &mut raw);
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
