//! The async face of the indexer and the searcher: each call runs the sync one on the
//! runtime's blocking pool (reading a file or a blob and searching it are blocking work), so
//! an async host never blocks a worker thread.

use std::sync::Arc;

use wit_store::{FileCatalog, FileIndex, StoredFile};

use crate::{Hits, Indexer, Query, Result, RowSet, Searcher};

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The async face of a [`Searcher`]; clones share it (and its cache).
///
/// ```
/// use wit_index::{AsyncSearcher, Query, Searcher};
/// use wit_store::Destination;
///
/// let dir = tempfile::tempdir()?;
/// let searcher = AsyncSearcher::new(Searcher::new(Destination::local(dir.path())?));
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let query = Query::parse("timeout")?;
/// // A file that is not there: the scan's read fails with a typed error.
/// let file = wit_store::StoredFile {
///     path: "acme/logs/missing.parquet".into(),
///     tenant: wit_batch::Tenant::try_new("acme")?,
///     signal: wit_batch::Signal::Logs,
///     time_range: wit_store::TimeRange::new(0, 0),
///     rows: 1,
///     bytes: 1,
///     batch_ids: vec![],
///     index: None,
/// };
/// let got = runtime.block_on(searcher.search(file, query));
/// assert!(matches!(got, Err(wit_index::Error::Store { .. })));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
///
/// # Cancel safety
///
/// A call whose future is dropped still runs to its end on the blocking pool.
#[derive(Clone, Debug)]
pub struct AsyncSearcher {
    inner: Arc<Searcher>,
}

impl AsyncSearcher {
    /// Wraps a searcher.
    pub fn new(searcher: Searcher) -> Self {
        AsyncSearcher {
            inner: Arc::new(searcher),
        }
    }

    /// The sync searcher.
    pub fn blocking(&self) -> &Searcher {
        &self.inner
    }

    /// [`Searcher::search`].
    ///
    /// # Errors
    ///
    /// As [`Searcher::search`].
    pub async fn search(&self, file: StoredFile, query: Query) -> Result<Hits> {
        let inner = self.inner.clone();
        blocking(move || inner.search(&file, &query)).await
    }

    /// [`Searcher::search_index`].
    ///
    /// # Errors
    ///
    /// As [`Searcher::search_index`].
    pub async fn search_index(&self, file: StoredFile, query: Query) -> Result<RowSet> {
        let inner = self.inner.clone();
        blocking(move || inner.search_index(&file, &query)).await
    }

    /// [`Searcher::scan`].
    ///
    /// # Errors
    ///
    /// As [`Searcher::scan`].
    pub async fn scan(&self, file: StoredFile, query: Query) -> Result<RowSet> {
        let inner = self.inner.clone();
        blocking(move || inner.scan(&file, &query)).await
    }
}

/// The async face of an [`Indexer`].
///
/// # Cancel safety
///
/// A call whose future is dropped still runs to its end on the blocking pool: the blob may
/// be published (and, for `index_and_record`, recorded) all the same.
#[derive(Clone, Debug)]
pub struct AsyncIndexer {
    inner: Arc<Indexer>,
}

impl AsyncIndexer {
    /// Wraps an indexer.
    pub fn new(indexer: Indexer) -> Self {
        AsyncIndexer {
            inner: Arc::new(indexer),
        }
    }

    /// [`Indexer::index_file`].
    ///
    /// # Errors
    ///
    /// As [`Indexer::index_file`].
    pub async fn index_file(&self, file: StoredFile) -> Result<FileIndex> {
        let inner = self.inner.clone();
        blocking(move || inner.index_file(&file)).await
    }

    /// [`Indexer::index_and_record`].
    ///
    /// # Errors
    ///
    /// As [`Indexer::index_and_record`].
    pub async fn index_and_record(&self, catalog: Arc<dyn FileCatalog>, file: StoredFile) -> Result<FileIndex> {
        let inner = self.inner.clone();
        blocking(move || inner.index_and_record(catalog.as_ref(), &file)).await
    }
}
