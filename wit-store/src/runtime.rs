//! Where object-storage I/O runs: a runtime of the destination's own, started on first use,
//! so the blocking API needs none from its host, or the host's runtime through its
//! [`Handle`]. Work is spawned there and the caller's thread waits for it.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;

use crate::{Error, Result};

/// The runtime a destination's object-storage calls run on.
#[derive(Clone)]
pub(crate) enum IoRuntime {
    /// Started on first use, two worker threads, shared by the destination's clones.
    Owned(Arc<OnceLock<OwnedRuntime>>),
    /// The host's.
    Host(Handle),
}

impl IoRuntime {
    pub(crate) fn owned() -> Self {
        IoRuntime::Owned(Arc::new(OnceLock::new()))
    }

    /// Runs `future` and waits for it on the calling thread, which needs no runtime of its
    /// own (and must not be a worker of a current-thread host runtime: it would wait for
    /// itself).
    ///
    /// # Errors
    ///
    /// The future's, or [`Error::Io`] when the destination's own runtime cannot start.
    pub(crate) fn run<T: Send + 'static>(&self, future: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let handle = match self {
            IoRuntime::Host(handle) => handle.clone(),
            IoRuntime::Owned(cell) => {
                if cell.get().is_none() {
                    let started = OwnedRuntime::new("wit-store-io").map_err(|source| Error::Io {
                        op: "start the I/O runtime of",
                        path: "object storage".into(),
                        source,
                    })?;
                    // Another thread may have started one meanwhile: the loser is dropped.
                    let _ = cell.set(started);
                }
                cell.get().expect("set above").handle()
            }
        };
        match futures::executor::block_on(handle.spawn(future)) {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the store's I/O runtime stopped while running a task: {e}"),
        }
    }
}

/// A runtime shut down without blocking when dropped (which may happen inside a host's task).
pub(crate) struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn new(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(OwnedRuntime(Some(runtime)))
    }

    fn handle(&self) -> Handle {
        self.0
            .as_ref()
            .expect("the runtime lives until dropped")
            .handle()
            .clone()
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
