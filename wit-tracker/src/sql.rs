//! What the SQL backends share: the schema's column order and names, how a row read in that
//! order becomes a record, and how a file's index maps to its columns.

use std::time::SystemTime;

use wit_batch::{BatchId, BatchMeta, Stage, Tenant};

use wit_store::FileIndex;

use crate::model::{BatchQuery, BatchRecord, BatchSelection, Lease, StageTimes, WalPosition};
use crate::{Error, Result, plan};

/// The columns of a batch record, in the order both SQL backends read them.
pub(crate) const RECORD_COLUMNS: &str = "batch_id, client_id, signal, source, stage, failed_in, batch_size, \
     message_count, first_offset, last_offset, topics, wal_position, created_at, wal_completed_at, \
     kafka_completed_at, ingestion_completed_at, storage_completed_at, index_completed_at, \
     janitor_completed_at, failed_at, error_stage, error_message, retry_count, claimed_by, lease_until, \
     updated_at, wal_node, \"partition\"";

/// A value a listing's statement binds, in the order [`list_sql`] numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListParam {
    /// A stage's name.
    Stage(&'static str),
    /// A time (the creation bound, or the cursor's creation time), to the microsecond.
    Time(SystemTime),
    /// A tenant (`client_id`).
    Tenant(String),
    /// The cursor's batch id.
    Batch(BatchId),
    /// The most rows to read.
    Limit(i64),
}

/// The statement of a [`Tracker::list_batches`](crate::Tracker::list_batches) page and its
/// parameters; `placeholder(n)` writes the n-th (from 1) in the backend's syntax. Only the
/// query's filters are written, so that each form of the statement seeks its index: a stage's
/// batches `batch_tracker_stage (stage, created_at, batch_id)`, the unfinished ones
/// `batch_tracker_created (created_at)`. The cursor is a row-value comparison,
/// `(created_at, batch_id) > (t, id)`, in the order the statement sorts by.
pub(crate) fn list_sql(query: &BatchQuery, placeholder: impl Fn(usize) -> String) -> (String, Vec<ListParam>) {
    let mut params = Vec::new();
    let mut next = |param: ListParam| {
        params.push(param);
        placeholder(params.len())
    };
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM batch_tracker WHERE ");
    match query.selection {
        BatchSelection::Unfinished => sql.push_str("stage NOT IN ('COMPLETED', 'FAILED')"),
        BatchSelection::InStage(stage) => sql.push_str(&format!("stage = {}", next(ListParam::Stage(stage.as_str())))),
    }
    if let Some(before) = query.created_before {
        sql.push_str(&format!(
            " AND created_at < {}",
            next(ListParam::Time(plan::micros(before)))
        ));
    }
    if let Some(tenant) = &query.tenant {
        sql.push_str(&format!(
            " AND client_id = {}",
            next(ListParam::Tenant(tenant.as_str().to_owned()))
        ));
    }
    if let Some(cursor) = query.after {
        let t = next(ListParam::Time(cursor.created_at()));
        let id = next(ListParam::Batch(cursor.batch()));
        sql.push_str(&format!(" AND (created_at, batch_id) > ({t}, {id})"));
    }
    let limit = next(ListParam::Limit(plan::page_rows(query.limit)));
    sql.push_str(&format!(" ORDER BY created_at, batch_id LIMIT {limit}"));
    (sql, params)
}

/// A file's index as the four nullable `stored_files` columns of schema version 3 hold it,
/// in this order: `index_path`, `index_bytes`, `index_docs`, `index_checksum` (the CRC-32
/// widened to 64 bits). All four are `NULL` for a file without an index.
#[derive(Debug, Default)]
pub(crate) struct IndexColumns<'a> {
    pub(crate) path: Option<&'a str>,
    pub(crate) bytes: Option<i64>,
    pub(crate) docs: Option<i64>,
    pub(crate) checksum: Option<i64>,
}

impl<'a> IndexColumns<'a> {
    /// The columns' values for `index`.
    pub(crate) fn of(index: Option<&'a FileIndex>) -> Result<Self> {
        let Some(index) = index else {
            return Ok(IndexColumns::default());
        };
        Ok(IndexColumns {
            path: Some(&index.path),
            bytes: Some(plan::to_i64(index.bytes, "index byte size")?),
            docs: Some(plan::to_i64(index.docs, "index document count")?),
            checksum: Some(i64::from(index.checksum)),
        })
    }
}

/// A file's index read back from its four columns (see [`IndexColumns`]).
pub(crate) fn read_index(
    backend: &'static str,
    path: Option<String>,
    bytes: Option<i64>,
    docs: Option<i64>,
    checksum: Option<i64>,
) -> Result<Option<FileIndex>> {
    match (path, bytes, docs, checksum) {
        (None, None, None, None) => Ok(None),
        (Some(path), Some(bytes), Some(docs), Some(checksum)) => Ok(Some(FileIndex {
            bytes: u64::try_from(bytes).map_err(|_| Error::corrupt(backend, "index byte size", bytes))?,
            docs: u64::try_from(docs).map_err(|_| Error::corrupt(backend, "index document count", docs))?,
            checksum: u32::try_from(checksum).map_err(|_| Error::corrupt(backend, "index checksum", checksum))?,
            path,
        })),
        (path, ..) => Err(Error::corrupt(
            backend,
            "index columns (some NULL)",
            path.unwrap_or_default(),
        )),
    }
}

/// The index in [`RECORD_COLUMNS`] of `wal_node`.
pub(crate) const WAL_NODE_COLUMN: usize = 26;

/// The index in [`RECORD_COLUMNS`] of `partition` (schema version 5; quoted, a keyword in
/// both dialects): the batch's source partition, `NULL` for a batch of none and for every
/// batch registered before version 5.
pub(crate) const PARTITION_COLUMN: usize = 27;

/// [`plan::UNSTORED`] as a SQL list, written out as the partial index `batch_tracker_wal`
/// (schema version 2) has it, so that the query's condition matches the index's.
pub(crate) const UNSTORED_STAGES: &str = "'CREATED', 'WAL_WRITTEN', 'SOURCE_COMMITTED', 'INGESTED'";

/// The node of a record's WAL position as the SQL backends store it: `NULL` for none, and for
/// a position recorded before schema version 2 (read back with an empty node).
pub(crate) fn wal_node(rec: &BatchRecord) -> Option<&str> {
    rec.wal_position
        .as_ref()
        .map(|p| p.node.as_str())
        .filter(|n| !n.is_empty())
}

/// The index in [`RECORD_COLUMNS`] of the completion time of the first stage (`CREATED`);
/// the others follow in stage-code order, the order of [`Stage::ALL`].
pub(crate) const FIRST_TIME_COLUMN: usize = 12;

/// The names of `stages` as a SQL list of string literals: `'A', 'B'`. Stage names are
/// constants of ours, never input.
pub(crate) fn stage_list(stages: &[Stage]) -> String {
    stages
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A batch row as a backend reads it, before the values are checked.
pub(crate) struct RawRecord {
    pub(crate) id: BatchId,
    pub(crate) tenant: String,
    pub(crate) signal: String,
    pub(crate) source: String,
    pub(crate) stage: String,
    pub(crate) failed_in: Option<String>,
    pub(crate) byte_size: i64,
    pub(crate) message_count: i64,
    pub(crate) first_offset: Option<i64>,
    pub(crate) last_offset: Option<i64>,
    pub(crate) topics: Vec<String>,
    pub(crate) wal_position: Option<i64>,
    /// The node whose WAL `wal_position` is in; `NULL` for a position recorded before schema
    /// version 2.
    pub(crate) wal_node: Option<String>,
    /// The completion times, in the order of [`Stage::ALL`].
    pub(crate) times: [Option<SystemTime>; 8],
    pub(crate) error_stage: Option<String>,
    pub(crate) error_message: Option<String>,
    pub(crate) retry_count: i64,
    pub(crate) claimed_by: Option<String>,
    pub(crate) lease_until: Option<SystemTime>,
    pub(crate) updated_at: SystemTime,
    /// The source partition ([`BatchMeta::partition`]); `NULL` for a batch registered before
    /// schema version 5.
    pub(crate) partition: Option<i32>,
}

impl RawRecord {
    /// Checks every value and builds the record; a value the tracker never writes is
    /// [`Error::Corrupt`].
    pub(crate) fn into_record(self, backend: &'static str) -> Result<BatchRecord> {
        let corrupt = |what, value: &dyn ToString| Error::corrupt(backend, what, value.to_string());
        let stage = |s: Option<String>| s.map(|s| plan::parse_stage(backend, &s)).transpose();
        let mut completed_at = StageTimes::default();
        for (stage, time) in Stage::ALL.into_iter().zip(self.times) {
            completed_at.set(stage, time);
        }
        let created_at = self.times[0].ok_or_else(|| corrupt("created_at", &"NULL"))?;
        Ok(BatchRecord {
            meta: BatchMeta {
                id: self.id,
                tenant: Tenant::try_new(self.tenant.clone()).map_err(|_| corrupt("client id", &self.tenant))?,
                signal: self.signal.parse().map_err(|_| corrupt("signal", &self.signal))?,
                source: self.source.parse().map_err(|_| corrupt("source", &self.source))?,
                message_count: u64::try_from(self.message_count)
                    .map_err(|_| corrupt("message count", &self.message_count))?,
                byte_size: u64::try_from(self.byte_size).map_err(|_| corrupt("batch size", &self.byte_size))?,
                first_offset: self.first_offset,
                last_offset: self.last_offset,
                topics: self.topics,
                partition: self.partition,
                created_at,
            },
            stage: plan::parse_stage(backend, &self.stage)?,
            failed_in: stage(self.failed_in)?,
            completed_at,
            wal_position: self
                .wal_position
                .map(|p| {
                    let lsn = u64::try_from(p).map_err(|_| corrupt("WAL position", &p))?;
                    Ok::<_, Error>(WalPosition::new(self.wal_node.unwrap_or_default(), lsn))
                })
                .transpose()?,
            error_stage: stage(self.error_stage)?,
            error_message: self.error_message,
            retry_count: u32::try_from(self.retry_count).map_err(|_| corrupt("retry count", &self.retry_count))?,
            lease: match (self.claimed_by, self.lease_until) {
                (Some(worker), Some(until)) => Some(Lease { worker, until }),
                _ => None,
            },
            updated_at: self.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unstored_stages_and_columns_match_the_schema() {
        assert_eq!(super::stage_list(&crate::plan::UNSTORED), super::UNSTORED_STAGES);
        let columns: Vec<&str> = super::RECORD_COLUMNS.split(", ").collect();
        assert_eq!(columns[super::WAL_NODE_COLUMN], "wal_node");
        assert_eq!(columns[super::PARTITION_COLUMN], "\"partition\"");
        assert_eq!(columns.len(), super::PARTITION_COLUMN + 1);
        assert_eq!(columns[super::FIRST_TIME_COLUMN], "created_at");
    }
}
