//! The engine's own runtime, so the blocking API needs none from its host.

use std::future::Future;

/// A runtime shut down without blocking when dropped (which may happen inside a host's task).
pub(crate) struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    pub(crate) fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(OwnedRuntime(Some(runtime)))
    }

    /// Runs `future` on this runtime and waits for it on the calling thread, which needs no
    /// runtime of its own (and may be a host runtime's thread: it only blocks).
    pub(crate) fn run<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        let runtime = self.0.as_ref().expect("the runtime lives until dropped");
        match futures::executor::block_on(runtime.spawn(future)) {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the query runtime stopped while running a query: {e}"),
        }
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
