//! The rules of a [`FileCatalog`](crate::FileCatalog), for those who implement one.
//!
//! A catalog backend keeps the files in its own store (a table, a map) and applies these
//! rules inside its own transaction, so that every backend accepts and refuses exactly the
//! same calls with the same errors: `wit-tracker`'s SQLite, PostgreSQL and in-memory trackers
//! and this crate's [`InMemoryFileCatalog`](crate::InMemoryFileCatalog) all do. The
//! [`conformance`](crate::conformance) suite checks the outcome.
//!
//! A `publish` (or `replace`) is decided in three steps: [`check_new_files`]; then, for each
//! file normalized ([`StoredFile::normalized`]), the one held under its path is either
//! [`republishes`]-equal (skip it) or a [`FileExists`](crate::Error::FileExists) error; then
//! [`check_batches_not_stored`] over the files left to insert.
//!
//! ```
//! use wit_batch::{BatchId, Signal, Tenant};
//! use wit_store::{Error, StoredFile, TimeRange, rules};
//!
//! let batch = BatchId::new();
//! let file = |path: &str| StoredFile {
//!     path: path.to_owned(),
//!     tenant: Tenant::try_new("acme").unwrap(),
//!     signal: Signal::Logs,
//!     time_range: TimeRange::new(0, 9),
//!     rows: 1,
//!     bytes: 1,
//!     batch_ids: vec![batch],
//!     index: None,
//! };
//! let new = [file("acme/logs/b.parquet")];
//! rules::check_new_files(&new)?;
//! // The backend found `batch` in a live file already: storing it again is refused.
//! let holders = [(batch, "acme/logs/a.parquet".to_owned())];
//! let err = rules::check_batches_not_stored(&new, &[], &holders).unwrap_err();
//! assert!(matches!(err, Error::BatchAlreadyStored { .. }));
//! // Unless the same call retires that file (compaction).
//! rules::check_batches_not_stored(&new, &["acme/logs/a.parquet".to_owned()], &holders)?;
//! # Ok::<_, wit_store::Error>(())
//! ```

use std::collections::{HashMap, HashSet};

use wit_batch::BatchId;

use crate::{Error, FileIndex, Result, StoredFile};

/// Whether publishing `given` (normalized) again over `held`, the file catalogued under its
/// path, is an identical republish, to be skipped: every field equal, the index included,
/// except that a file given without an index matches a held one that has since been indexed
/// (the sink republishing a file after a crash does not know of an index recorded meanwhile).
pub fn republishes(given: &StoredFile, held: &StoredFile) -> bool {
    match (&given.index, &held.index) {
        (None, Some(_)) => {
            let mut unindexed = held.clone();
            unindexed.index = None;
            *given == unindexed
        }
        _ => given == held,
    }
}

/// Decides a [`record_index`](crate::FileCatalog::record_index) call: `held` is the file catalogued under
/// `file` and whether it is live. Returns whether the index is to be recorded (`false` when
/// the file already has exactly this one).
///
/// # Errors
///
/// As [`FileCatalog::record_index`](crate::FileCatalog::record_index): [`Error::UnknownFile`], [`Error::WrongFileState`],
/// [`Error::InvalidFile`], [`Error::IndexExists`].
pub fn check_record_index(file: &str, held: Option<(&StoredFile, bool)>, index: &FileIndex) -> Result<bool> {
    let held = match held {
        None => return Err(Error::UnknownFile { path: file.to_owned() }),
        Some((_, false)) => {
            return Err(Error::WrongFileState {
                path: file.to_owned(),
                state: "retired",
            });
        }
        Some((held, true)) => held,
    };
    let mut indexed = held.clone();
    indexed.index = Some(index.clone());
    indexed.validate()?;
    match &held.index {
        None => Ok(true),
        Some(existing) if existing == index => Ok(false),
        Some(existing) => Err(Error::IndexExists {
            path: file.to_owned(),
            index: existing.path.clone(),
        }),
    }
}

/// Checks a `publish` or `replace` call's new files: each valid
/// ([`StoredFile::validate`]), no path twice.
///
/// # Errors
///
/// [`Error::InvalidFile`] naming the first file that is not acceptable.
pub fn check_new_files(files: &[StoredFile]) -> Result<()> {
    let mut seen = HashSet::with_capacity(files.len());
    for file in files {
        file.validate()?;
        if !seen.insert(file.path.as_str()) {
            return Err(Error::InvalidFile {
                path: file.path.clone(),
                reason: "the path is given twice".to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks that the files a `publish` or `replace` inserts hold no batch that another live
/// file holds, and share none among themselves.
///
/// `insert` are the files the call inserts (identical republished files left out), in the
/// call's order; `retiring` the paths the same call retires, whose batches the new files may
/// take over; `live_holders` the `(batch, path)` of every live file holding a batch of
/// `insert`, in any order.
///
/// # Errors
///
/// [`Error::BatchAlreadyStored`] for the first file, in `insert`'s order, holding such a
/// batch (its smallest such batch id, held by the live file with the smallest path).
pub fn check_batches_not_stored(
    insert: &[StoredFile],
    retiring: &[String],
    live_holders: &[(BatchId, String)],
) -> Result<()> {
    let retiring: HashSet<&str> = retiring.iter().map(String::as_str).collect();
    let mut held: HashMap<BatchId, &str> = HashMap::with_capacity(live_holders.len());
    for (batch, path) in live_holders {
        if !retiring.contains(path.as_str()) {
            held.entry(*batch)
                .and_modify(|p| *p = (*p).min(path.as_str()))
                .or_insert(path.as_str());
        }
    }
    for file in insert {
        let mut ids = file.batch_ids.clone();
        ids.sort_unstable();
        let taken = ids
            .iter()
            .find_map(|id| held.get(id).filter(|p| **p != file.path).map(|p| (*id, *p)));
        if let Some((batch, stored_in)) = taken {
            return Err(Error::BatchAlreadyStored {
                batch,
                path: file.path.clone(),
                stored_in: stored_in.to_owned(),
            });
        }
        for id in ids {
            held.insert(id, file.path.as_str());
        }
    }
    Ok(())
}
