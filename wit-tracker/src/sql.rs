//! What the SQL backends share: the schema's column order and names, and how a record maps
//! to them.

use wit_batch::Stage;

/// The columns of a batch record, in the order both SQL backends read them.
pub(crate) const RECORD_COLUMNS: &str = "batch_id, client_id, signal, source, stage, failed_in, batch_size, \
     message_count, first_offset, last_offset, topics, wal_position, created_at, wal_completed_at, \
     kafka_completed_at, ingestion_completed_at, storage_completed_at, index_completed_at, \
     janitor_completed_at, failed_at, error_stage, error_message, retry_count, claimed_by, lease_until, \
     updated_at";

/// The index in [`RECORD_COLUMNS`] of the completion time of the first stage (`CREATED`);
/// the others follow in stage-code order.
pub(crate) const FIRST_TIME_COLUMN: usize = 12;

/// Stage names in the order of their codes: the column order above.
pub(crate) const STAGES_IN_CODE_ORDER: [Stage; 8] = [
    Stage::Created,
    Stage::WalWritten,
    Stage::SourceCommitted,
    Stage::Ingested,
    Stage::Stored,
    Stage::Indexed,
    Stage::Completed,
    Stage::Failed,
];

/// The names of `stages` as a SQL list of string literals: `'A', 'B'`. Stage names are
/// constants of ours, never input.
pub(crate) fn stage_list(stages: &[Stage]) -> String {
    stages
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
