//! The dead-letter directory: envelopes of `FAILED` batches, kept so the WAL can release
//! their space and an operator can submit them again.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use wit_batch::BatchId;

use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct DeadLetters {
    dir: PathBuf,
}

impl DeadLetters {
    pub(crate) fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        // Half-written envelopes of a crash are written again from the WAL.
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = entry.map_err(Error::io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
            }
        }
        Ok(DeadLetters { dir })
    }

    pub(crate) fn path(&self, batch: BatchId) -> PathBuf {
        self.dir.join(format!("{batch}.envelope"))
    }

    pub(crate) fn contains(&self, batch: BatchId) -> bool {
        self.path(batch).exists()
    }

    /// Keeps a failed batch's envelope, durably.
    pub(crate) fn keep(&self, batch: BatchId, envelope: &[u8]) -> Result<()> {
        self.write(&self.path(batch), envelope)
    }

    /// Writes `bytes` to `path` durably: under a `.tmp` name, synced, renamed, directory synced.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp).map_err(Error::io(&tmp))?;
        file.write_all(bytes).map_err(Error::io(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))?;
        sync_dir(&self.dir)
    }

    /// Keeps a WAL record that is not a batch envelope, named by its LSN.
    pub(crate) fn keep_record(&self, lsn: u64, record: &[u8]) -> Result<()> {
        self.write(&self.dir.join(format!("lsn-{lsn:020}.record")), record)
    }

    pub(crate) fn read(&self, batch: BatchId) -> Result<Vec<u8>> {
        let path = self.path(batch);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotDeadLettered { batch, path }),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    pub(crate) fn remove(&self, batch: BatchId) -> Result<()> {
        let path = self.path(batch);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}
