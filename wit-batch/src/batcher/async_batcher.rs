//! The async shell of the batcher: a task that keeps time and hands batches to a channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

use super::{BatchKey, Batcher, BatcherConfig, Push};
use crate::{Envelope, Error, Part, Result};

/// A [`Batcher`] driven by the tokio clock: a background task emits batches when they are
/// `max_age` old, and every emitted batch goes into a channel the host receives from.
///
/// [`push`](Self::push) waits, rather than refusing or dropping anything, while the batcher
/// holds `max_buffered_bytes` or while the channel is full (the receiver is behind): a slow
/// WAL slows ingestion down. [`close`](Self::close) emits every open batch, then ends the
/// channel. Share an `AsyncBatcher` between tasks with an `Arc`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use tokio::sync::mpsc;
/// use wit_batch::{AsyncBatcher, BatchKey, BatcherConfig, Compression, Part, PayloadFormat, Signal, SourceKind, Tenant};
///
/// let (tx, mut rx) = mpsc::channel(16);
/// let config = BatcherConfig::default().with_max_age(Duration::from_millis(10));
/// let batcher = AsyncBatcher::spawn(config, tx)?;
/// let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Logs, SourceKind::Http);
/// batcher.push(&key, Part::new(PayloadFormat::Ndjson, Compression::None, 1, &b"{}\n"[..])).await?;
///
/// let batch = rx.recv().await.expect("emitted after 10 ms");
/// assert_eq!(batch.meta().message_count, 1);
/// batcher.close().await?;
/// assert!(rx.recv().await.is_none());
/// # Ok::<_, wit_batch::Error>(())
/// # })?;
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug)]
pub struct AsyncBatcher {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<Result<()>>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Pushes that found the batcher full wait here; woken when batches were emitted.
    room: Notify,
    /// Wakes the flusher: a first batch was opened, a push was cancelled while delivering, or
    /// the batcher is closing.
    wake_flusher: Notify,
    /// Set once by `close` or drop, or by the flusher when the receiver is gone.
    closing: AtomicBool,
}

#[derive(Debug)]
struct State {
    core: Batcher,
    /// Emitted batches not yet in the channel, oldest first.
    outbox: VecDeque<Envelope>,
    /// Taken when the flusher ends, which ends the channel.
    tx: Option<mpsc::Sender<Envelope>>,
}

impl State {
    /// Hands the outbox to the channel, waiting while it is full.
    async fn deliver(&mut self) -> Result<()> {
        let State { outbox, tx, .. } = self;
        while !outbox.is_empty() {
            let tx = tx.as_ref().ok_or(Error::Closed)?;
            let permit = tx.reserve().await.map_err(|_| Error::Closed)?;
            permit.send(outbox.pop_front().expect("outbox is not empty"));
        }
        Ok(())
    }
}

/// The time on tokio's clock (which tests can pause and advance).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl AsyncBatcher {
    /// Starts a batcher whose batches go to `tx`, and its flusher task on the current runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] as [`Batcher::try_new`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn`). The runtime needs its time driver enabled.
    pub fn spawn(config: BatcherConfig, tx: mpsc::Sender<Envelope>) -> Result<AsyncBatcher> {
        let core = Batcher::try_new(config)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                outbox: VecDeque::new(),
                tx: Some(tx),
            }),
            room: Notify::new(),
            wake_flusher: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let flusher = tokio::spawn(run_flusher(Arc::clone(&shared)));
        Ok(AsyncBatcher {
            shared,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// Adds `part` to `key`'s open batch, as [`Batcher::push`] does at the current time, and
    /// sends the batches this completes to the channel.
    ///
    /// Waits while the batcher is full (until aged batches leave it) and while the channel is
    /// full. Nothing is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the batcher is closing or closed, or when the receiver was
    /// dropped; the part is not kept.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room, the part is dropped with the future and was never
    /// taken. Dropped while sending completed batches to the channel, the part was taken, and
    /// the flusher sends those batches instead.
    pub async fn push(&self, key: &BatchKey, mut part: Part) -> Result<()> {
        loop {
            let mut state = self.shared.state.lock().await;
            let receiver_gone = state.tx.as_ref().is_none_or(|tx| tx.is_closed());
            if self.shared.closing.load(Ordering::Acquire) || receiver_gone {
                return Err(Error::Closed);
            }
            let had_open = state.core.open_batches() > 0;
            match state.core.push(key, part, now()) {
                Push::Accepted { ready } => {
                    if !had_open && state.core.open_batches() > 0 {
                        self.shared.wake_flusher.notify_one(); // it may be asleep with no deadline
                    }
                    if ready.is_empty() {
                        return Ok(());
                    }
                    state.outbox.extend(ready);
                    self.shared.room.notify_waiters();
                    let mut guard = WakeOnDrop {
                        notify: &self.shared.wake_flusher,
                        armed: true,
                    };
                    let delivered = state.deliver().await;
                    guard.armed = false;
                    return delivered;
                }
                Push::Full(back) => {
                    part = back;
                    // Register before unlocking, so an emission between the two is not missed.
                    let mut room = std::pin::pin!(self.shared.room.notified());
                    room.as_mut().enable();
                    drop(state);
                    room.await;
                }
            }
        }
    }

    /// Emits every open batch into the channel, stops the flusher and ends the channel: the
    /// receiver gets the remaining batches, then `None`. Later pushes fail with
    /// [`Error::Closed`]; closing again does nothing.
    ///
    /// Dropping an `AsyncBatcher` without closing it closes it in the background.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the receiver was dropped before every batch was delivered.
    ///
    /// # Cancel safety
    ///
    /// Closing continues in the background; calling `close` again waits for it to finish.
    pub async fn close(&self) -> Result<()> {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_flusher.notify_one();
        let mut flusher = self.flusher.lock().await;
        let Some(handle) = flusher.as_mut() else {
            return Ok(());
        };
        let result = match handle.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Closed), // the runtime is shutting down
        };
        *flusher = None;
        result
    }
}

impl Drop for AsyncBatcher {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_flusher.notify_one();
    }
}

/// Wakes the flusher when dropped while armed.
struct WakeOnDrop<'a> {
    notify: &'a Notify,
    armed: bool,
}

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.notify.notify_one();
        }
    }
}

/// The flusher task: emits aged batches until closing, then everything, then ends the channel.
async fn run_flusher(shared: Arc<Shared>) -> Result<()> {
    let result = flush_expired_until_closing(&shared).await;
    shared.closing.store(true, Ordering::Release);
    let mut state = shared.state.lock().await;
    let result = match result {
        Ok(()) => {
            let rest = state.core.flush_all();
            state.outbox.extend(rest);
            state.deliver().await
        }
        Err(e) => Err(e),
    };
    state.tx = None;
    drop(state);
    shared.room.notify_waiters(); // waiting pushes wake up to `Closed`
    result
}

async fn flush_expired_until_closing(shared: &Shared) -> Result<()> {
    loop {
        let deadline = {
            let state = shared.state.lock().await;
            if shared.closing.load(Ordering::Acquire) {
                return Ok(());
            }
            state.core.next_deadline()
        };
        // A wake-up between the unlock and here is kept as a permit, so it is not missed.
        let woken = shared.wake_flusher.notified();
        match deadline {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
        let mut state = shared.state.lock().await;
        let ready = state.core.poll_expired(now());
        if !ready.is_empty() {
            state.outbox.extend(ready);
            shared.room.notify_waiters();
        }
        state.deliver().await?;
    }
}
