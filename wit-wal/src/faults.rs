//! Injected I/O failures for tests. Not part of the supported API.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Counters that make the N-th write or sync fail. Negative means "never".
#[derive(Debug)]
pub struct IoFaults {
    writes_until_failure: AtomicI64,
    syncs_until_failure: AtomicI64,
    refuse_direct: AtomicBool,
    direct_writes: AtomicU64,
}

impl Default for IoFaults {
    fn default() -> Self {
        Self {
            writes_until_failure: AtomicI64::new(-1),
            syncs_until_failure: AtomicI64::new(-1),
            refuse_direct: AtomicBool::new(false),
            direct_writes: AtomicU64::new(0),
        }
    }
}

impl IoFaults {
    /// The write after `n` more successful writes fails (0: the next one).
    pub fn fail_write_after(&self, n: i64) {
        self.writes_until_failure.store(n, Ordering::SeqCst);
    }

    /// The sync after `n` more successful syncs fails (0: the next one).
    pub fn fail_sync_after(&self, n: i64) {
        self.syncs_until_failure.store(n, Ordering::SeqCst);
    }

    /// Every direct write fails with `EINVAL`, as on a file system or device that takes
    /// `O_DIRECT` at open but not the log's 4 KiB blocks.
    pub fn refuse_direct_io(&self, on: bool) {
        self.refuse_direct.store(on, Ordering::SeqCst);
    }

    /// Direct writes attempted so far (each group written with `O_DIRECT` is one).
    pub fn direct_writes(&self) -> u64 {
        self.direct_writes.load(Ordering::SeqCst)
    }

    /// Stops injecting.
    pub fn clear(&self) {
        self.fail_write_after(-1);
        self.fail_sync_after(-1);
        self.refuse_direct_io(false);
    }

    fn hit(counter: &AtomicI64) -> bool {
        let mut cur = counter.load(Ordering::SeqCst);
        loop {
            if cur < 0 {
                return false;
            }
            match counter.compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return cur == 0,
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn write(&self) -> std::io::Result<()> {
        if Self::hit(&self.writes_until_failure) {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }

    pub(crate) fn direct_write(&self) -> std::io::Result<()> {
        self.direct_writes.fetch_add(1, Ordering::SeqCst);
        if self.refuse_direct.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.write()
    }

    pub(crate) fn sync(&self) -> std::io::Result<()> {
        if Self::hit(&self.syncs_until_failure) {
            return Err(std::io::Error::other("injected sync failure"));
        }
        Ok(())
    }
}
