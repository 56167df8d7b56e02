//! Idempotency keys: a request submitted under a key is taken at most once per tenant within
//! the window; a repeat gets the first request's receipt and waits on its acknowledgment.
//!
//! Where a key is known, in order:
//! 1. claimed: a request is being handled under it (its part not submitted yet);
//! 2. taken: its part is submitted, so it is in the WAL envelope with its receipt (and
//!    recovery puts it back here when it replays the batch);
//! 3. remembered: the processor wrote it to the tracker's table before the batch could be
//!    stored, so it outlives the WAL record; once its batch is stored (and indexed) it
//!    leaves memory and is recalled from the tracker, until the window purges it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use wit_batch::{BatchId, Idempotency, Tenant};
use wit_tracker::RememberedKey;

use crate::ack::Slot;
use crate::pipeline::Shared;
use crate::{Ack, AckLevel, Error, Result};

/// The largest receipt the pipeline takes, in bytes: receipts ride in the WAL with their
/// part, and a batch holds up to the batcher's message count of parts.
pub const MAX_RECEIPT_BYTES: usize = 512;

/// What [`Pipeline::claim_key`](crate::Pipeline::claim_key) found for a key.
#[derive(Debug)]
#[must_use = "a claim is released when dropped"]
pub enum Claimed {
    /// No request took the key within the window: this one has it. Submit the request's
    /// part with [`KeyClaim::idempotency`] attached; dropping the claim without submitting
    /// (the request was refused, say) releases the key.
    New(KeyClaim),
    /// A request took the key: its receipt, and the acknowledgment of its part at the level
    /// asked for. Nothing is submitted again.
    Taken {
        /// The receipt the first request was submitted with.
        receipt: Bytes,
        /// Resolves as the first request's part reaches the level.
        ack: Ack,
    },
    /// A request holding the key is being handled right now: ask again shortly.
    InFlight,
}

/// The claim of one idempotency key for one request: see [`Claimed::New`].
#[derive(Debug)]
pub struct KeyClaim {
    keys: Arc<Keys>,
    tenant: Tenant,
    key: String,
}

impl KeyClaim {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What to attach to the request's part (`Part::with_idempotency`): the key with the
    /// host's `receipt`, its answer to the request, which a repeat of it gets.
    ///
    /// # Errors
    ///
    /// [`Error::IdempotencyKey`] for a receipt over [`MAX_RECEIPT_BYTES`].
    pub fn idempotency(&self, receipt: impl Into<Bytes>) -> Result<Idempotency> {
        let receipt = receipt.into();
        if receipt.len() > MAX_RECEIPT_BYTES {
            return Err(self.error(format!(
                "a receipt has at most {MAX_RECEIPT_BYTES} bytes, this one {}",
                receipt.len()
            )));
        }
        Idempotency::try_new(self.key.clone(), receipt).map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> Error {
        Error::IdempotencyKey {
            tenant: self.tenant.to_string(),
            key: self.key.clone(),
            reason,
        }
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        let mut map = self.keys.map.lock();
        let id = (self.tenant.clone(), std::mem::take(&mut self.key));
        if matches!(map.get(&id), Some(Entry::Claimed)) {
            map.remove(&id);
        }
    }
}

#[derive(Debug)]
enum Entry {
    Claimed,
    Taken {
        slot: Arc<Slot>,
        receipt: Bytes,
        /// Written to the tracker's table.
        remembered: bool,
    },
}

/// The keys the pipeline holds in memory: claimed, or taken and not yet both remembered and
/// settled (stored, and indexed with indexing on).
#[derive(Debug, Default)]
pub(crate) struct Keys {
    map: Mutex<HashMap<(Tenant, String), Entry>>,
}

impl Keys {
    /// A submitted part's key is taken by its slot; returns whether a claim held it. `Err`
    /// when the key is taken already (the host submitted it without claiming it first) by
    /// a part that was not given up (`Pipeline::resubmit_failed` submits a failed batch's
    /// parts again under their keys).
    pub(crate) fn take(&self, tenant: &Tenant, idempotency: &Idempotency, slot: &Arc<Slot>) -> Result<bool> {
        let mut map = self.map.lock();
        let id = (tenant.clone(), idempotency.key().to_owned());
        if matches!(map.get(&id), Some(Entry::Taken { slot, .. }) if !slot.has_error()) {
            return Err(Error::IdempotencyKey {
                tenant: tenant.to_string(),
                key: idempotency.key().to_owned(),
                reason: "the key is taken: claim it first (Pipeline::claim_key)".to_owned(),
            });
        }
        let claimed = map.insert(
            id,
            Entry::Taken {
                slot: slot.clone(),
                receipt: idempotency.receipt().clone(),
                remembered: false,
            },
        );
        Ok(matches!(claimed, Some(Entry::Claimed)))
    }

    /// A part that was not taken after all (the batcher was full) gives its key back: to
    /// its claim, or to no one.
    pub(crate) fn untake(&self, tenant: &Tenant, idempotency: &Idempotency, claimed: bool) {
        let mut map = self.map.lock();
        let id = (tenant.clone(), idempotency.key().to_owned());
        if claimed {
            map.insert(id, Entry::Claimed);
        } else {
            map.remove(&id);
        }
    }

    /// Recovery: a replayed batch's key, durable at `lsn`, is taken again; returns its slot
    /// (for the batch's acknowledgments) unless the key is known already.
    pub(crate) fn replayed(
        &self,
        tenant: &Tenant,
        idempotency: &Idempotency,
        batch: BatchId,
        lsn: u64,
        remembered: bool,
    ) -> Option<Arc<Slot>> {
        let mut map = self.map.lock();
        let id = (tenant.clone(), idempotency.key().to_owned());
        if map.contains_key(&id) {
            return None;
        }
        let slot = Arc::new(Slot::default());
        slot.set_batch(batch);
        slot.durable(lsn);
        map.insert(
            id,
            Entry::Taken {
                slot: slot.clone(),
                receipt: idempotency.receipt().clone(),
                remembered,
            },
        );
        Some(slot)
    }

    /// The keys are in the tracker's table.
    pub(crate) fn remembered(&self, keys: &[RememberedKey]) {
        let mut map = self.map.lock();
        for k in keys {
            if let Some(Entry::Taken { remembered, .. }) = map.get_mut(&(k.tenant.clone(), k.key.clone())) {
                *remembered = true;
            }
        }
    }

    /// Drops the keys that are remembered and whose part is settled: they are recalled from
    /// the tracker from now on. Returns how many are left.
    pub(crate) fn evict_settled(&self, indexing: bool) -> usize {
        let mut map = self.map.lock();
        map.retain(|_, entry| match entry {
            Entry::Claimed => true,
            Entry::Taken { slot, remembered, .. } => !(*remembered && slot.settled(indexing)),
        });
        map.len()
    }
}

/// The idempotency-key handling of [`Pipeline`](crate::Pipeline).
pub(crate) fn claim(shared: &Arc<Shared>, tenant: &Tenant, key: &str, level: AckLevel) -> Result<Claimed> {
    shared.check_open()?;
    if let Err(reason) = Idempotency::check(key, 0) {
        return Err(Error::IdempotencyKey {
            tenant: tenant.to_string(),
            key: key.chars().take(64).collect(),
            reason,
        });
    }
    let id = (tenant.clone(), key.to_owned());
    {
        let mut map = shared.keys.map.lock();
        match map.get(&id) {
            Some(Entry::Claimed) => return Ok(Claimed::InFlight),
            Some(Entry::Taken { slot, receipt, .. }) => {
                return Ok(Claimed::Taken {
                    receipt: receipt.clone(),
                    ack: Ack::new(slot.clone(), level),
                });
            }
            // Claimed before the tracker is asked: a key leaves memory only once it is in
            // the tracker, so a key in neither place was not taken.
            None => map.insert(id.clone(), Entry::Claimed),
        };
    }
    let claim = KeyClaim {
        keys: shared.keys.clone(),
        tenant: tenant.clone(),
        key: key.to_owned(),
    };
    let recalled = shared
        .tracker
        .recall_key(tenant, key)
        .map_err(Error::tracker("recall an idempotency key"))?;
    let cutoff = SystemTime::now()
        .checked_sub(shared.config.idempotency_window)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match recalled {
        Some(remembered) if remembered.at >= cutoff => {
            drop(claim);
            // It left memory once stored (and indexed): settled, unless it failed since.
            let slot = Arc::new(Slot::default());
            slot.set_batch(remembered.batch);
            match shared.tracker.batch(remembered.batch) {
                Ok(record) if record.stage == wit_batch::Stage::Failed => slot.failed(
                    record
                        .error_message
                        .as_deref()
                        .unwrap_or("the batch was given up after its retries"),
                ),
                _ => slot.indexed(),
            }
            Ok(Claimed::Taken {
                receipt: Bytes::from(remembered.receipt),
                ack: Ack::new(slot, level),
            })
        }
        Some(_) => {
            // Taken before the window: forgotten now (with every key as old), so the key
            // is remembered afresh for this request.
            shared
                .tracker
                .forget_keys_before(cutoff)
                .map_err(Error::tracker("forget idempotency keys"))?;
            Ok(Claimed::New(claim))
        }
        None => Ok(Claimed::New(claim)),
    }
}
