//! `wit-wal` is a segmented write-ahead log that acknowledges a record only once it is
//! durable. A [`Wal`] owns a directory of preallocated segment files; appenders on any number
//! of threads or async tasks share writes and `fdatasync`s through group commit and get
//! [`Lsn`]s back; a [`Reader`] replays records in order from any LSN, through memory maps,
//! while appends continue; [`Wal::truncate_before`] releases whole segments once their records
//! are safely elsewhere. On open, a torn tail left by a crash is cut off, and anything worse is
//! a typed [`Error::Corruption`] that names the file, offset and LSN. [`Inspector`] looks at a
//! directory read-only, for dump and verify tools.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use wit_wal::{Config, Lsn, Wal};
//!
//! let wal = Wal::open(dir.path(), Config::default())?;
//! let first = wal.append(b"hello")?;                    // blocks until durable
//! let commit = wal.submit(b"world")?;                   // or queue, and wait later:
//! let second = commit.wait()?.start;                    // `.await` works too
//! assert_eq!(second, first.next());
//!
//! for record in wal.read_from(first)? {
//!     let record = record?;
//!     println!("{}: {:?}", record.lsn, record.payload);
//! }
//! wal.truncate_before(second)?; // the janitor's call once LSNs below are stored elsewhere
//! # Ok::<_, wit_wal::Error>(())
//! ```
//!
//! # Durability
//!
//! With [`SyncMode::SyncData`] (the default) an append returns after `fdatasync` of the group
//! that holds it; [`SyncMode::SyncAll`] uses `fsync`; [`SyncMode::Buffer`] does not sync and is
//! not safe for acknowledging a source. Creating, renaming and deleting segments is followed
//! by a directory sync. If a write or a sync ever fails, the log is poisoned: every waiter
//! and every later call gets [`Error::Poisoned`], because a retried fsync can report success
//! for data the kernel already dropped. Reopen the directory to recover.
//!
//! On Linux, small groups are written with direct I/O (see [`Config::with_direct_io`]): the
//! `fdatasync` after them then only flushes the device's cache. What "durable" means does
//! not change.
//!
//! # Async
//!
//! [`Commit`] is a future: `wal.submit(record)?.await` suspends the task while a dedicated
//! commit thread writes and syncs, so no runtime thread ever blocks on the disk. No runtime is
//! required or pulled in.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade, a no-op until the host installs a
//! recorder: `wit_wal_sync_seconds` (histogram, one sample per group commit's sync) and
//! `wit_wal_records_total` (counter, records made durable).
#![warn(missing_docs, unreachable_pub)]

mod config;
mod error;
mod faults;
mod format;
mod group;
mod inspect;
mod io;
mod lsn;
mod reader;
mod recovery;
mod segment;
mod wal;

#[doc(hidden)]
pub mod fuzz;

pub use config::{Config, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, RecoveryMode, SyncMode};
pub use error::{Error, Result};
#[doc(hidden)]
pub use faults::IoFaults;
pub use group::Commit;
pub use inspect::{Inspector, Item, ScannedRecord, VerifyReport};
pub use lsn::{Lsn, LsnRange};
pub use reader::{Reader, Record};
pub use recovery::{Damage, Recovery};
pub use wal::{Stats, Wal};
