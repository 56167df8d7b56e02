//! One body of checks that every [`FileCatalog`] implementation runs: this crate's
//! [`InMemoryFileCatalog`](crate::InMemoryFileCatalog), and the SQLite, PostgreSQL and
//! in-memory trackers of `wit-tracker`. A third-party backend runs it too, to show that it
//! accepts and refuses exactly what they do.
//!
//! Each check takes the catalog and a `prepare` hook that makes batch ids acceptable to it
//! (a tracker registers them and moves them to `INGESTED`; a plain catalog does nothing), and
//! panics when the catalog breaks the contract. [`file_catalog_conformance!`](crate::file_catalog_conformance!) turns every
//! check into a `#[test]` of the calling crate:
//!
//! ```
//! mod in_memory {
//!     use wit_store::InMemoryFileCatalog;
//!
//!     /// `None` would skip every check (a backend that is not available here).
//!     fn make() -> Option<(InMemoryFileCatalog, impl Fn(&[wit_batch::BatchId]))> {
//!         Some((InMemoryFileCatalog::default(), |_: &[wit_batch::BatchId]| {}))
//!     }
//!
//!     wit_store::file_catalog_conformance!(make);
//! }
//! # fn main() {}
//! ```
//!
//! The checks can also be called one by one:
//!
//! ```
//! let catalog = wit_store::InMemoryFileCatalog::default();
//! wit_store::conformance::publish_and_list(&catalog, &|_| {});
//! ```

use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, Signal, Tenant};

use crate::{Error, FileCatalog, FileIndex, StoredFile, TimeRange};

/// Makes batch ids publishable in the catalog under test.
pub type Prepare<'a> = &'a dyn Fn(&[BatchId]);

fn tenant(name: &str) -> Tenant {
    Tenant::try_new(name).expect("valid tenant")
}

fn file(prepare: Prepare<'_>, path: &str, tenant_name: &str, signal: Signal, min: i64, max: i64) -> StoredFile {
    let batch_ids = vec![BatchId::new(), BatchId::new()];
    prepare(&batch_ids);
    StoredFile {
        path: path.to_owned(),
        tenant: tenant(tenant_name),
        signal,
        time_range: TimeRange::new(min, max),
        rows: 100,
        bytes: 4_096,
        batch_ids,
        index: None,
    }
}

/// An index of `file` (one document per row) under `path`.
fn index_of(file: &StoredFile, path: &str) -> FileIndex {
    FileIndex {
        path: path.to_owned(),
        bytes: 512,
        docs: file.rows,
        checksum: 0xdead_beef,
    }
}

/// `file` as given with `index`.
fn with_index(file: &StoredFile, index: &FileIndex) -> StoredFile {
    StoredFile {
        index: Some(index.clone()),
        ..file.normalized()
    }
}

fn paths(files: &[StoredFile]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

fn live(catalog: &dyn FileCatalog, name: &str, signal: Signal) -> Vec<String> {
    catalog
        .list(&tenant(name), signal, None)
        .expect("list")
        .into_iter()
        .map(|f| f.path)
        .collect()
}

/// Published files are listed by tenant, signal and overlapping time range (bounds
/// inclusive), ordered by start time then path, with their batch ids sorted.
pub fn publish_and_list(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let mut b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    b.batch_ids.reverse();
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let c = file(prepare, "acme/logs/c.parquet", "acme", Signal::Logs, 100, 150);
    let other_signal = file(prepare, "acme/traces/a.parquet", "acme", Signal::Traces, 0, 999);
    let other_tenant = file(prepare, "umbrella/logs/a.parquet", "umbrella", Signal::Logs, 0, 999);
    catalog
        .publish(&[b.clone(), a.clone(), c.clone(), other_signal, other_tenant])
        .expect("publish");

    let all = catalog.list(&tenant("acme"), Signal::Logs, None).expect("list");
    assert_eq!(
        paths(&all),
        ["acme/logs/a.parquet", "acme/logs/b.parquet", "acme/logs/c.parquet"]
    );
    assert_eq!(all[0], a.normalized());
    assert_eq!(all[1], b.normalized(), "batch ids come back sorted");
    assert!(all[1].batch_ids.windows(2).all(|w| w[0] < w[1]));

    let at = |min, max| {
        paths(
            &catalog
                .list(&tenant("acme"), Signal::Logs, Some(TimeRange::new(min, max)))
                .expect("list"),
        )
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    assert_eq!(at(99, 99), ["acme/logs/a.parquet"], "the end is inclusive");
    assert_eq!(
        at(99, 100),
        ["acme/logs/a.parquet", "acme/logs/b.parquet", "acme/logs/c.parquet"]
    );
    assert_eq!(at(151, 10_000), ["acme/logs/b.parquet"]);
    assert!(at(200, 300).is_empty());
    assert_eq!(live(catalog, "acme", Signal::Traces), ["acme/traces/a.parquet"]);
    assert_eq!(live(catalog, "umbrella", Signal::Logs), ["umbrella/logs/a.parquet"]);
    assert!(live(catalog, "umbrella", Signal::Metrics).is_empty());
}

/// Publishing the same file again is a no-op; the same path with other contents is
/// `FileExists`, and nothing of that call is published.
pub fn republish(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    catalog.publish(std::slice::from_ref(&a)).expect("publish");
    let mut shuffled = a.clone();
    shuffled.batch_ids.reverse();
    catalog
        .publish(&[shuffled])
        .expect("an identical republish is accepted");

    let mut changed = a.clone();
    changed.rows += 1;
    let fresh = file(prepare, "acme/logs/fresh.parquet", "acme", Signal::Logs, 0, 99);
    let err = catalog.publish(&[fresh, changed]).expect_err("other contents");
    assert!(
        matches!(&err, Error::FileExists { path } if path == "acme/logs/a.parquet"),
        "{err}"
    );
    assert_eq!(
        live(catalog, "acme", Signal::Logs),
        ["acme/logs/a.parquet"],
        "the call published nothing"
    );
}

/// Invalid files get `InvalidFile`, and nothing of that call is published.
pub fn invalid_files(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let good = file(prepare, "acme/logs/good.parquet", "acme", Signal::Logs, 0, 9);
    let bad = |f: fn(&mut StoredFile)| {
        let mut bad = file(prepare, "acme/logs/bad.parquet", "acme", Signal::Logs, 0, 9);
        f(&mut bad);
        bad
    };
    let cases = [
        bad(|f| f.path.clear()),
        bad(|f| f.path = "/abs/x.parquet".into()),
        bad(|f| f.path = "acme/../x.parquet".into()),
        bad(|f| f.path = "acme//x.parquet".into()),
        bad(|f| f.path = "acme/x\n.parquet".into()),
        bad(|f| f.time_range = TimeRange::new(10, 9)),
        bad(|f| f.batch_ids.push(f.batch_ids[0])),
        bad(|f| f.index = Some(index_of(f, ""))),
        bad(|f| f.index = Some(index_of(f, "acme/../x.index"))),
        bad(|f| f.index = Some(index_of(f, &f.path.clone()))),
        bad(|f| {
            f.index = Some(FileIndex {
                docs: f.rows + 1,
                ..index_of(f, "acme/logs/bad.index")
            })
        }),
        good.clone(),
    ];
    for case in cases {
        let err = catalog.publish(&[good.clone(), case.clone()]).expect_err("invalid");
        assert!(
            matches!(&err, Error::InvalidFile { path, .. } if *path == case.path),
            "{err}"
        );
    }
    assert!(live(catalog, "acme", Signal::Logs).is_empty());
}

/// `replace` swaps files in one step; a failing replace changes nothing.
pub fn replace(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let grace = now + Duration::from_secs(600);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    catalog.publish(&[a.clone(), b.clone()]).expect("publish");

    let mut ab = file(prepare, "acme/logs/ab.parquet", "acme", Signal::Logs, 0, 199);
    ab.batch_ids = a.batch_ids.iter().chain(&b.batch_ids).copied().collect();
    ab.rows = 200;

    // An unknown old file: nothing happens.
    let err = catalog
        .replace(
            &[a.path.clone(), "acme/logs/nope.parquet".into()],
            std::slice::from_ref(&ab),
            grace,
        )
        .expect_err("unknown old file");
    assert!(
        matches!(&err, Error::UnknownFile { path } if path == "acme/logs/nope.parquet"),
        "{err}"
    );
    // An invalid new file: nothing happens either.
    let mut bad = ab.clone();
    bad.time_range = TimeRange::new(5, 1);
    let err = catalog
        .replace(std::slice::from_ref(&a.path), &[bad], grace)
        .expect_err("invalid new file");
    assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
    assert_eq!(live(catalog, "acme", Signal::Logs), [a.path.as_str(), b.path.as_str()]);
    assert!(catalog.deletable(grace).expect("deletable").is_empty());

    catalog
        .replace(&[a.path.clone(), b.path.clone()], std::slice::from_ref(&ab), grace)
        .expect("replace");
    assert_eq!(live(catalog, "acme", Signal::Logs), [ab.path.as_str()]);
    assert!(
        catalog.deletable(now).expect("deletable").is_empty(),
        "still in the grace period"
    );
    let due = catalog.deletable(grace).expect("deletable");
    assert_eq!(paths(&due), [a.path.as_str(), b.path.as_str()]);
    assert_eq!(due[0], a.normalized());

    // Replacing a retired file again is refused.
    let err = catalog
        .replace(std::slice::from_ref(&a.path), &[], grace)
        .expect_err("retired");
    assert!(
        matches!(&err, Error::WrongFileState { path, state: "retired" } if *path == a.path),
        "{err}"
    );
}

/// Retention retires files; the janitor deletes them after the grace period and forgets them.
pub fn retire_and_forget(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    catalog.publish(&[a.clone(), b.clone()]).expect("publish");

    let err = catalog
        .retire(&["acme/logs/nope.parquet".into()], now)
        .expect_err("unknown");
    assert!(matches!(err, Error::UnknownFile { .. }), "{err}");
    let err = catalog.forget(std::slice::from_ref(&a.path)).expect_err("live");
    assert!(matches!(&err, Error::WrongFileState { state: "live", .. }), "{err}");

    catalog
        .retire(std::slice::from_ref(&a.path), now + Duration::from_secs(60))
        .expect("retire");
    assert_eq!(live(catalog, "acme", Signal::Logs), [b.path.as_str()]);
    assert!(catalog.deletable(now).expect("deletable").is_empty());
    assert_eq!(
        paths(&catalog.deletable(now + Duration::from_secs(60)).expect("deletable")),
        [a.path.as_str()]
    );

    let forgotten = catalog
        .forget(&[a.path.clone(), "acme/logs/never.parquet".into()])
        .expect("forget");
    assert_eq!(forgotten, 1);
    assert_eq!(catalog.forget(std::slice::from_ref(&a.path)).expect("again"), 0);
    assert!(
        catalog
            .deletable(now + Duration::from_secs(3_600))
            .expect("deletable")
            .is_empty()
    );
    // A forgotten path may be published again (a rewritten file).
    catalog.publish(&[a]).expect("publish again");
}

/// A file holding a batch that another live file holds is `BatchAlreadyStored`, and nothing
/// of that call is published; so is a call whose new files share a batch. An identical
/// republish is still a no-op, and a retired file no longer counts.
pub fn duplicate_batch_is_refused(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    catalog.publish(std::slice::from_ref(&a)).expect("publish");

    // `dup` holds one of a's batches (say, a batch replayed after a crash and written again).
    let mut dup = file(prepare, "acme/logs/dup.parquet", "acme", Signal::Logs, 0, 99);
    dup.batch_ids.push(a.batch_ids[1]);
    let fresh = file(prepare, "acme/logs/fresh.parquet", "acme", Signal::Logs, 0, 99);
    let err = catalog
        .publish(&[fresh.clone(), dup.clone()])
        .expect_err("a's batch again");
    assert!(
        matches!(&err, Error::BatchAlreadyStored { batch, path, stored_in }
            if *batch == a.batch_ids[1] && *path == dup.path && *stored_in == a.path),
        "{err}"
    );
    assert_eq!(
        live(catalog, "acme", Signal::Logs),
        [a.path.as_str()],
        "the call published nothing"
    );
    catalog
        .publish(std::slice::from_ref(&a))
        .expect("an identical republish is still accepted");

    // Two new files of one call may not share a batch either.
    let mut twin = file(prepare, "acme/logs/twin.parquet", "acme", Signal::Logs, 0, 99);
    twin.batch_ids.push(fresh.batch_ids[0]);
    let err = catalog
        .publish(&[fresh.clone(), twin.clone()])
        .expect_err("one batch in two new files");
    assert!(
        matches!(&err, Error::BatchAlreadyStored { batch, path, stored_in }
            if *batch == fresh.batch_ids[0] && *path == twin.path && *stored_in == fresh.path),
        "{err}"
    );
    assert_eq!(live(catalog, "acme", Signal::Logs), [a.path.as_str()]);

    // Once `a` is retired its batches may be stored again.
    catalog.retire(std::slice::from_ref(&a.path), now).expect("retire");
    catalog.publish(&[dup.clone(), fresh]).expect("a no longer counts");
    assert_eq!(
        live(catalog, "acme", Signal::Logs),
        [dup.path.as_str(), "acme/logs/fresh.parquet"]
    );
}

/// In `replace`, the new files may hold the batches of the files that call retires
/// (compaction), but not those of any other live file, and may not share one among
/// themselves; a refused replace changes nothing.
pub fn replace_batch_guard(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let grace = now + Duration::from_secs(600);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    let c = file(prepare, "acme/logs/c.parquet", "acme", Signal::Logs, 200, 299);
    catalog.publish(&[a.clone(), b.clone(), c.clone()]).expect("publish");
    let all = [a.path.as_str(), b.path.as_str(), c.path.as_str()];
    let with_ids = |path: &str, ids: Vec<BatchId>| {
        let mut f = file(prepare, path, "acme", Signal::Logs, 0, 199);
        f.batch_ids = ids;
        f
    };

    // a and b merged, plus one of c's batches: c is not retired by this call.
    let ab_c = with_ids(
        "acme/logs/abc.parquet",
        a.batch_ids
            .iter()
            .chain(&b.batch_ids)
            .chain(&c.batch_ids[..1])
            .copied()
            .collect(),
    );
    let err = catalog
        .replace(&[a.path.clone(), b.path.clone()], std::slice::from_ref(&ab_c), grace)
        .expect_err("c's batch");
    assert!(
        matches!(&err, Error::BatchAlreadyStored { batch, path, stored_in }
            if *batch == c.batch_ids[0] && *path == ab_c.path && *stored_in == c.path),
        "{err}"
    );
    assert_eq!(live(catalog, "acme", Signal::Logs), all);
    assert!(catalog.deletable(grace).expect("deletable").is_empty());

    // a split in two, both halves holding the same batch.
    let a1 = with_ids("acme/logs/a1.parquet", vec![a.batch_ids[0]]);
    let a2 = with_ids("acme/logs/a2.parquet", a.batch_ids.clone());
    let err = catalog
        .replace(std::slice::from_ref(&a.path), &[a1.clone(), a2.clone()], grace)
        .expect_err("a's first batch twice");
    assert!(
        matches!(&err, Error::BatchAlreadyStored { batch, path, stored_in }
            if *batch == a.batch_ids[0] && *path == a2.path && *stored_in == a1.path),
        "{err}"
    );
    assert_eq!(live(catalog, "acme", Signal::Logs), all);

    // Split cleanly, a's batches move to the new files.
    let a2 = with_ids("acme/logs/a2.parquet", vec![a.batch_ids[1]]);
    catalog
        .replace(std::slice::from_ref(&a.path), &[a1.clone(), a2.clone()], grace)
        .expect("replace");
    assert_eq!(
        live(catalog, "acme", Signal::Logs),
        [a1.path.as_str(), a2.path.as_str(), b.path.as_str(), c.path.as_str()]
    );
}

/// `files_holding` names the live files holding a batch, by path: after a `replace` the new
/// file and not the retired one; none once the batch's file is retired.
pub fn files_holding_names_live_files(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let grace = now + Duration::from_secs(600);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    let t = file(prepare, "acme/traces/t.parquet", "acme", Signal::Traces, 0, 99);
    catalog.publish(&[a.clone(), b.clone(), t.clone()]).expect("publish");
    let holding = |batch: BatchId| catalog.files_holding(batch).expect("files_holding");
    assert_eq!(holding(a.batch_ids[0]), [a.normalized()]);
    assert_eq!(holding(a.batch_ids[1]), [a.normalized()]);
    assert_eq!(holding(b.batch_ids[1]), [b.normalized()]);
    assert_eq!(holding(t.batch_ids[0]), [t.normalized()]);
    assert!(holding(BatchId::new()).is_empty(), "a batch never stored");

    // Compaction: the merged file holds a's and b's batches now, the retired ones do not count.
    let mut ab = file(prepare, "acme/logs/ab.parquet", "acme", Signal::Logs, 0, 199);
    ab.batch_ids = a.batch_ids.iter().chain(&b.batch_ids).copied().collect();
    catalog
        .replace(&[a.path.clone(), b.path.clone()], std::slice::from_ref(&ab), grace)
        .expect("replace");
    for batch in a.batch_ids.iter().chain(&b.batch_ids) {
        assert_eq!(holding(*batch), [ab.normalized()]);
    }
    assert_eq!(holding(t.batch_ids[1]), [t.normalized()]);

    // Retention: a retired file holds nothing any more, nor, once forgotten, does it exist.
    catalog.retire(std::slice::from_ref(&ab.path), grace).expect("retire");
    assert!(holding(a.batch_ids[0]).is_empty());
    catalog
        .forget(&[a.path.clone(), b.path.clone(), ab.path.clone()])
        .expect("forget");
    assert!(holding(b.batch_ids[0]).is_empty());
    assert_eq!(holding(t.batch_ids[0]), [t.normalized()]);
}

/// `record_index` records an index beside a live file, which every listing then returns with
/// it; an unknown file is `UnknownFile`, a retired one `WrongFileState`.
pub fn record_index_on_live_unknown_and_retired_files(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    catalog.publish(&[a.clone(), b.clone()]).expect("publish");
    let index = index_of(&a, "acme/logs/a.index");
    catalog.record_index(&a.path, &index).expect("record_index");
    let listed = catalog.list(&tenant("acme"), Signal::Logs, None).expect("list");
    assert_eq!(listed, [with_index(&a, &index), b.normalized()]);
    assert_eq!(
        catalog.files_holding(a.batch_ids[1]).expect("files_holding"),
        [with_index(&a, &index)]
    );

    let err = catalog
        .record_index("acme/logs/nope.parquet", &index)
        .expect_err("unknown");
    assert!(
        matches!(&err, Error::UnknownFile { path } if path == "acme/logs/nope.parquet"),
        "{err}"
    );
    catalog.retire(std::slice::from_ref(&b.path), now).expect("retire");
    let err = catalog
        .record_index(&b.path, &index_of(&b, "acme/logs/b.index"))
        .expect_err("retired");
    assert!(
        matches!(&err, Error::WrongFileState { path, state: "retired" } if *path == b.path),
        "{err}"
    );
    assert_eq!(
        catalog.deletable(now).expect("deletable"),
        [b.normalized()],
        "the retired file got no index"
    );
}

/// An index that does not fit its file is `InvalidFile` (naming the document and row counts
/// when they differ), and nothing is recorded.
pub fn record_index_checks_the_index(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    catalog.publish(std::slice::from_ref(&a)).expect("publish");
    let short = FileIndex {
        docs: a.rows - 1,
        ..index_of(&a, "acme/logs/a.index")
    };
    let err = catalog.record_index(&a.path, &short).expect_err("docs mismatch");
    assert!(
        matches!(&err, Error::InvalidFile { path, reason }
            if *path == a.path && reason.contains(&short.docs.to_string()) && reason.contains(&a.rows.to_string())),
        "{err}"
    );
    for bad in ["", "/abs/a.index", "acme/./a.index", a.path.as_str()] {
        let err = catalog
            .record_index(&a.path, &index_of(&a, bad))
            .expect_err("bad index path");
        assert!(
            matches!(&err, Error::InvalidFile { path, .. } if *path == a.path),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        catalog.list(&tenant("acme"), Signal::Logs, None).expect("list"),
        [a.normalized()]
    );
    assert_eq!(catalog.unindexed(10).expect("unindexed"), [a.normalized()]);
}

/// Recording the same index again is a no-op (a repeat after a crash); a different one is
/// `IndexExists`, naming the blob recorded, and changes nothing.
pub fn record_index_repeats(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    catalog.publish(std::slice::from_ref(&a)).expect("publish");
    let index = index_of(&a, "acme/logs/a.index");
    catalog.record_index(&a.path, &index).expect("record_index");
    catalog
        .record_index(&a.path, &index)
        .expect("the same index again is accepted");
    let others = [
        index_of(&a, "acme/logs/a2.index"),
        FileIndex {
            checksum: index.checksum ^ 1,
            ..index.clone()
        },
        FileIndex {
            bytes: index.bytes + 1,
            ..index.clone()
        },
    ];
    for other in others {
        let err = catalog.record_index(&a.path, &other).expect_err("another index");
        assert!(
            matches!(&err, Error::IndexExists { path, index: held } if *path == a.path && *held == index.path),
            "{err}"
        );
    }
    assert_eq!(
        catalog.list(&tenant("acme"), Signal::Logs, None).expect("list"),
        [with_index(&a, &index)]
    );
}

/// `unindexed` lists up to `limit` live files without an index, ordered by path; indexed and
/// retired files are not among them.
pub fn unindexed_lists_live_files_without_an_index(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert!(catalog.unindexed(10).expect("unindexed").is_empty());
    let c = file(prepare, "acme/logs/c.parquet", "acme", Signal::Logs, 0, 99);
    let a = file(prepare, "acme/traces/a.parquet", "acme", Signal::Traces, 500, 599);
    let b = file(prepare, "umbrella/logs/b.parquet", "umbrella", Signal::Logs, 100, 199);
    let d = file(prepare, "acme/logs/d.parquet", "acme", Signal::Logs, 0, 99);
    catalog
        .publish(&[c.clone(), a.clone(), b.clone(), d.clone()])
        .expect("publish");
    catalog.retire(std::slice::from_ref(&d.path), now).expect("retire");
    let unindexed = |limit| catalog.unindexed(limit).expect("unindexed");
    assert_eq!(unindexed(10), [c.normalized(), a.normalized(), b.normalized()]);
    assert_eq!(paths(&unindexed(2)), [c.path.as_str(), a.path.as_str()]);
    assert!(unindexed(0).is_empty());

    catalog
        .record_index(&a.path, &index_of(&a, "acme/traces/a.index"))
        .expect("record_index");
    assert_eq!(paths(&unindexed(10)), [c.path.as_str(), b.path.as_str()]);
    catalog
        .record_index(&c.path, &index_of(&c, "acme/logs/c.index"))
        .expect("record_index");
    catalog
        .record_index(&b.path, &index_of(&b, "umbrella/logs/b.index"))
        .expect("record_index");
    assert!(unindexed(10).is_empty());
}

/// Files published or swapped in with their index are listed with it, and a retired file's
/// index comes back from `deletable`, so the janitor deletes both; `forget` forgets both.
pub fn publish_and_replace_with_an_index(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let grace = now + Duration::from_secs(600);
    let a = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    let a_index = index_of(&a, "acme/logs/a.index");
    let a = with_index(&a, &a_index);
    catalog.publish(&[a.clone(), b.clone()]).expect("publish");
    assert_eq!(
        catalog.list(&tenant("acme"), Signal::Logs, None).expect("list"),
        [a.clone(), b.normalized()]
    );
    assert_eq!(paths(&catalog.unindexed(10).expect("unindexed")), [b.path.as_str()]);

    // An index that does not fit: nothing of the call is published.
    let c = file(prepare, "acme/logs/c.parquet", "acme", Signal::Logs, 200, 299);
    let mut bad = file(prepare, "acme/logs/bad.parquet", "acme", Signal::Logs, 0, 9);
    bad.index = Some(FileIndex {
        docs: bad.rows + 1,
        ..index_of(&bad, "acme/logs/bad.index")
    });
    let err = catalog.publish(&[c, bad.clone()]).expect_err("docs mismatch");
    assert!(
        matches!(&err, Error::InvalidFile { path, .. } if *path == bad.path),
        "{err}"
    );
    assert_eq!(live(catalog, "acme", Signal::Logs), [a.path.as_str(), b.path.as_str()]);

    // Compaction: the merged file comes with its index.
    let mut ab = file(prepare, "acme/logs/ab.parquet", "acme", Signal::Logs, 0, 199);
    ab.batch_ids = a.batch_ids.iter().chain(&b.batch_ids).copied().collect();
    ab.rows = 200;
    let ab = with_index(&ab, &index_of(&ab, "acme/logs/ab.index"));
    let mut wrong = ab.clone();
    wrong.index = Some(index_of(&ab, &ab.path));
    let err = catalog
        .replace(&[a.path.clone(), b.path.clone()], &[wrong], grace)
        .expect_err("the index path is the file's");
    assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
    catalog
        .replace(&[a.path.clone(), b.path.clone()], std::slice::from_ref(&ab), grace)
        .expect("replace");
    assert_eq!(
        catalog.list(&tenant("acme"), Signal::Logs, None).expect("list"),
        std::slice::from_ref(&ab)
    );
    assert_eq!(
        catalog.files_holding(b.batch_ids[0]).expect("files_holding"),
        std::slice::from_ref(&ab)
    );
    assert!(catalog.unindexed(10).expect("unindexed").is_empty());
    let due = catalog.deletable(grace).expect("deletable");
    assert_eq!(due, [a.clone(), b.normalized()], "the janitor learns a's index blob");

    catalog.forget(&[a.path.clone(), b.path.clone()]).expect("forget");
    assert!(catalog.deletable(grace).expect("deletable").is_empty());
    let err = catalog.record_index(&a.path, &a_index).expect_err("forgotten");
    assert!(matches!(err, Error::UnknownFile { .. }), "{err}");
}

/// An identical republish includes the index: the same index again is a no-op, another
/// index is `FileExists`, and so is an index for a file catalogued without one; a republish
/// without an index still matches the file indexed since (the sink repeating a publish after
/// a crash knows of no index).
pub fn republish_with_an_index(catalog: &dyn FileCatalog, prepare: Prepare<'_>) {
    let plain = file(prepare, "acme/logs/a.parquet", "acme", Signal::Logs, 0, 99);
    let index = index_of(&plain, "acme/logs/a.index");
    let a = with_index(&plain, &index);
    catalog.publish(std::slice::from_ref(&a)).expect("publish");
    catalog
        .publish(std::slice::from_ref(&a))
        .expect("an identical republish is accepted");
    catalog
        .publish(std::slice::from_ref(&plain))
        .expect("a republish without the index is accepted");
    let other = with_index(&plain, &index_of(&plain, "acme/logs/a2.index"));
    let err = catalog.publish(&[other]).expect_err("another index");
    assert!(matches!(&err, Error::FileExists { path } if *path == a.path), "{err}");
    assert_eq!(
        catalog.list(&tenant("acme"), Signal::Logs, None).expect("list"),
        std::slice::from_ref(&a)
    );

    let b = file(prepare, "acme/logs/b.parquet", "acme", Signal::Logs, 100, 199);
    catalog.publish(std::slice::from_ref(&b)).expect("publish");
    let b_index = index_of(&b, "acme/logs/b.index");
    let err = catalog
        .publish(&[with_index(&b, &b_index)])
        .expect_err("b is catalogued without an index");
    assert!(matches!(&err, Error::FileExists { path } if *path == b.path), "{err}");
    catalog.record_index(&b.path, &b_index).expect("record_index");
    catalog
        .publish(&[with_index(&b, &b_index)])
        .expect("now it matches b as indexed");
    catalog.publish(&[b]).expect("as does b without it");
}

/// Turns every check of [`conformance`](crate::conformance) into a `#[test]` of the calling
/// crate (see the module's example).
///
/// `$make` is a function returning `Option<(catalog, prepare)>`: the catalog under test
/// (any type implementing [`FileCatalog`](crate::FileCatalog)) and
/// the hook that makes batch ids publishable in it. `None` skips the check (a backend that is
/// not available, with its own message).
#[macro_export]
macro_rules! file_catalog_conformance {
    ($make:path) => {
        $crate::file_catalog_conformance!(@each $make, publish_and_list, republish, invalid_files, replace, retire_and_forget,
            duplicate_batch_is_refused, replace_batch_guard, files_holding_names_live_files,
            record_index_on_live_unknown_and_retired_files, record_index_checks_the_index, record_index_repeats,
            unindexed_lists_live_files_without_an_index, publish_and_replace_with_an_index,
            republish_with_an_index);
    };
    (@each $make:path, $($check:ident),+) => {
        $(
            #[test]
            fn $check() {
                if let Some((catalog, prepare)) = $make() {
                    $crate::conformance::$check(&catalog, &prepare);
                }
            }
        )+
    };
}
