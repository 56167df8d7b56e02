//! The catalog's time ranges prune files before any is opened; statistics, page indexes and
//! bloom filters prune inside the files.

use prost::Message;
use wit_batch::Signal;
use wit_query::Error;

use crate::{Store, acme, data, decode, scalar};

/// Spans over `hours` hours, one file per hour.
fn hourly_spans(hours: u64) -> (Store, Vec<wit_store::StoredFile>) {
    let store = Store::new();
    let batches: Vec<_> = data::spans(hours, 200, 3)
        .iter()
        .map(|r| decode(Signal::Traces, &r.encode_to_vec()))
        .collect();
    let mut files: Vec<_> = batches
        .chunks(data::SERVICES.len())
        .flat_map(|hour| store.write(&acme(), Signal::Traces, hour))
        .collect();
    files.sort_by_key(|f| f.time_range.min);
    assert_eq!(files.len() as u64, hours, "one file per hour");
    (store, files)
}

#[test]
fn files_outside_the_time_range_are_never_opened() {
    let (store, files) = hourly_spans(3);
    // The first hour's file disappears from the disk; the catalog still lists it.
    std::fs::remove_file(store.dir.path().join(&files[0].path)).expect("remove");
    let session = store.engine().session(&acme());
    let later: u64 = files[1..].iter().map(|f| f.rows).sum();
    let from_hour_one = "SELECT count(*) FROM spans WHERE timestamp >= '2025-12-01T01:00:00Z'";
    assert_eq!(scalar(&session, from_hour_one), later);
    let hour_two =
        "SELECT count(*) FROM spans WHERE timestamp BETWEEN '2025-12-01T02:00:00Z' AND '2025-12-01T02:59:59Z'";
    assert_eq!(scalar(&session, hour_two), files[2].rows);
    assert_eq!(
        scalar(
            &session,
            "SELECT count(*) FROM spans WHERE timestamp < '2025-11-30T00:00:00Z'"
        ),
        0
    );
    // A query whose range takes in the first hour opens its file, and says it is missing.
    match session.blocking_sql("SELECT max(duration) FROM spans WHERE timestamp < '2025-12-01T00:30:00Z'") {
        Err(Error::Execution { message, .. }) => {
            assert!(message.contains(&files[0].path), "names the file: {message}")
        }
        other => panic!("expected the missing file to fail the query, got {other:?}"),
    }
}

/// `name=T total → M matched` of the scan's metrics in an `EXPLAIN ANALYZE` text.
fn pruned(plan: &str, name: &str) -> (u64, u64) {
    let start = plan
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {plan}"))
        + name.len()
        + 1;
    let words: Vec<&str> = plan[start..].split_whitespace().take(5).collect();
    let number = |w: &str| w.trim_end_matches(',').parse::<u64>().expect("a count");
    assert_eq!(
        (words[1], words[2], words[4].trim_end_matches(',')),
        ("total", "→", "matched"),
        "{name}: {words:?}"
    );
    (number(words[0]), number(words[3]))
}

#[test]
fn a_trace_id_lookup_reads_only_the_row_groups_that_can_hold_it() {
    let (store, files) = hourly_spans(3);
    let session = store.engine().session(&acme());
    let wanted = data::trace_id(1000 + 3);
    let hex: String = wanted.iter().map(|b| format!("{b:02x}")).collect();
    // Which row groups hold it, by the Parquet crate's own reader.
    let (mut groups, mut holding, mut rows) = (0u64, 0u64, 0u64);
    for file in &files {
        let bytes = store.destination.read(&file.path).expect("read");
        let meta = parquet::file::serialized_reader::SerializedFileReader::new(bytes.clone()).expect("file");
        for g in 0..parquet::file::reader::FileReader::metadata(&meta).num_row_groups() {
            groups += 1;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .expect("parquet")
                .with_row_groups(vec![g])
                .build()
                .expect("reader");
            let mut here = 0;
            for batch in reader {
                let batch = batch.expect("batch");
                let ids =
                    arrow::array::AsArray::as_fixed_size_binary(batch.column_by_name("trace_id").expect("trace_id"));
                here += ids.iter().filter(|id| *id == Some(wanted.as_slice())).count() as u64;
            }
            holding += u64::from(here > 0);
            rows += here;
        }
    }
    assert!(
        rows > 0 && holding < groups,
        "{rows} rows in {holding} of {groups} row groups"
    );
    let query = format!("SELECT count(*) FROM spans WHERE trace_id = decode('{hex}', 'hex')");
    assert_eq!(scalar(&session, &query), rows);
    let plan = crate::sql(&session, &format!("EXPLAIN ANALYZE {query}"))
        .to_table()
        .expect("table");
    let (total, matched) = pruned(&plan, "row_groups_pruned_bloom_filter");
    assert_eq!(total, groups, "{plan}");
    assert!(
        matched >= holding && matched < total,
        "bloom filters skip row groups: {matched} of {total}"
    );
    let (_, rows_read) = pruned(&plan, "page_index_rows_pruned");
    assert!(
        rows_read <= matched * 500,
        "only the matched row groups' pages are read: {plan}"
    );
}
