//! Searching stored files: through their index when it is usable, by scanning otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use wit_store::{Destination, StoredFile};

use crate::engine::{OpenIndex, Scanner};
use crate::indexer::read_rows;
use crate::{Error, Query, Result, RowSet};

/// How a search found its rows.
#[derive(Debug)]
#[non_exhaustive]
pub enum SearchedBy {
    /// Through the file's index.
    Index,
    /// By scanning the file's rows: the file has no index, or its index was unusable
    /// (`unusable` says why).
    Scan {
        /// Why the index was not used; `None` when the file has none.
        unusable: Option<Error>,
    },
}

/// The rows of one file a search matched, and how they were found.
#[derive(Debug)]
pub struct Hits {
    /// The matching row ordinals of the file.
    pub rows: RowSet,
    /// Whether the index answered.
    pub by: SearchedBy,
}

/// Answers queries over stored files. Each file's index blob is read once into a bounded
/// cache (least recently used evicted); a file without a usable index is scanned with the same
/// analyzer and query semantics, so the answer is the same either way. Cheap to share
/// (`Arc<Searcher>`); searches run concurrently.
#[derive(Debug)]
pub struct Searcher {
    destination: Destination,
    cache: Mutex<Cache>,
}

impl Searcher {
    /// Searches files of `destination`, caching up to 256 MiB of index blobs.
    pub fn new(destination: Destination) -> Self {
        Searcher {
            destination,
            cache: Mutex::new(Cache::new(256 << 20)),
        }
    }

    /// How many bytes of index blobs the cache holds at most. A blob larger than that is
    /// read for each search that needs it.
    pub fn with_cache_bytes(self, bytes: u64) -> Self {
        Searcher {
            cache: Mutex::new(Cache::new(bytes)),
            ..self
        }
    }

    /// The bytes of index blobs cached now.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.lock().used
    }

    /// The rows of `file` matching `query`: through the file's index when it has a usable one,
    /// else by scanning the file ([`Hits::by`] says which, and why).
    ///
    /// # Errors
    ///
    /// Only when the file itself cannot be read or decoded for a scan; an unusable index is
    /// never an error here.
    pub fn search(&self, file: &StoredFile, query: &Query) -> Result<Hits> {
        if file.index.is_none() {
            return Ok(Hits {
                rows: self.scan(file, query)?,
                by: SearchedBy::Scan { unusable: None },
            });
        }
        match self.search_index(file, query) {
            Ok(rows) => Ok(Hits {
                rows,
                by: SearchedBy::Index,
            }),
            Err(e) if e.index_unusable() => Ok(Hits {
                rows: self.scan(file, query)?,
                by: SearchedBy::Scan { unusable: Some(e) },
            }),
            Err(e) => Err(e),
        }
    }

    /// The rows of `file` matching `query`, through its index only.
    ///
    /// # Errors
    ///
    /// [`Error::NotIndexed`]; [`Error::Store`] when the blob cannot be read;
    /// [`Error::Corrupt`] when it is not the intact blob the catalog recorded;
    /// [`Error::DocCountMismatch`] when it holds another number of documents than the file
    /// has rows.
    pub fn search_index(&self, file: &StoredFile, query: &Query) -> Result<RowSet> {
        let open = self.open(file)?;
        open.search(&file.path, query)
    }

    /// The rows of `file` matching `query`, by reading the file's indexed columns and
    /// evaluating the query row by row.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] or [`Error::Parquet`] when the file cannot be read.
    pub fn scan(&self, file: &StoredFile, query: &Query) -> Result<RowSet> {
        let rows = read_rows(
            &self.destination,
            &file.path,
            crate::indexer::engine_columns(file.signal),
            None,
        )?;
        let mut set = RowSet::empty(file.rows);
        let mut scanner = Scanner::default();
        let mut first = 0u64;
        for batch in rows {
            let batch = batch?;
            if first + batch.num_rows() as u64 > file.rows {
                return Err(Error::Parquet {
                    path: file.path.clone(),
                    source: format!("the file holds more rows than the {} the catalog records", file.rows).into(),
                });
            }
            scanner.scan(file.signal, &batch, first, query, &mut set);
            first += batch.num_rows() as u64;
        }
        Ok(set)
    }

    /// The file's index, from the cache or read, checked and opened.
    fn open(&self, file: &StoredFile) -> Result<Arc<OpenIndex>> {
        let Some(index) = &file.index else {
            return Err(Error::NotIndexed {
                path: file.path.clone(),
            });
        };
        let key = (index.path.clone(), index.checksum);
        if let Some(open) = self.cache.lock().get(&key) {
            return Ok(open);
        }
        let blob = self.destination.read(&index.path).map_err(|source| Error::Store {
            operation: "read index",
            path: index.path.clone(),
            source: Box::new(source),
        })?;
        let corrupt = |reason: String| Error::Corrupt {
            path: index.path.clone(),
            reason,
        };
        if blob.len() as u64 != index.bytes {
            return Err(corrupt(format!(
                "{} bytes where the catalog recorded {}",
                blob.len(),
                index.bytes
            )));
        }
        let checksum = crc32fast::hash(&blob);
        if checksum != index.checksum {
            return Err(corrupt(format!(
                "checksum {checksum:#010x} where the catalog recorded {:#010x}",
                index.checksum
            )));
        }
        let open = OpenIndex::open(&index.path, blob)?;
        if open.docs() != file.rows || index.docs != file.rows {
            return Err(Error::DocCountMismatch {
                path: index.path.clone(),
                file: file.path.clone(),
                docs: open.docs(),
                rows: file.rows,
            });
        }
        let open = Arc::new(open);
        self.cache.lock().insert(key, open.clone(), index.bytes);
        Ok(open)
    }
}

/// Opened indexes by blob path and checksum, least recently used evicted past `capacity`
/// bytes. Hand-written: a map and a use counter are all it needs (eviction scans the map,
/// which holds at most a few thousand blobs).
#[derive(Debug)]
struct Cache {
    capacity: u64,
    used: u64,
    clock: u64,
    entries: HashMap<(String, u32), Entry>,
}

#[derive(Debug)]
struct Entry {
    open: Arc<OpenIndex>,
    bytes: u64,
    used_at: u64,
}

impl Cache {
    fn new(capacity: u64) -> Self {
        Cache {
            capacity,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, key: &(String, u32)) -> Option<Arc<OpenIndex>> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.used_at = self.clock;
        Some(entry.open.clone())
    }

    fn insert(&mut self, key: (String, u32), open: Arc<OpenIndex>, bytes: u64) {
        if bytes > self.capacity || self.entries.contains_key(&key) {
            return;
        }
        while self.used + bytes > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= e.bytes;
            }
        }
        self.clock += 1;
        self.used += bytes;
        self.entries.insert(
            key,
            Entry {
                open,
                bytes,
                used_at: self.clock,
            },
        );
    }
}
