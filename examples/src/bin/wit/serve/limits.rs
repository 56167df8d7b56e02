//! Per-tenant rate limits: requests per second (checked by the access layer on every route
//! but health) and request bytes per second (checked as a request is ingested), each a GCRA
//! token bucket of `governor` that refills continuously and holds one second's worth (a
//! request larger than that passes when its bucket is full, and empties it). A
//! tenant over a limit is answered 429 / `RESOURCE_EXHAUSTED` with the time its capacity
//! returns (`Retry-After`, `RetryInfo`); each tenant has its own buckets, so one tenant's
//! flood never takes another's capacity.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use wit_batch::Tenant;

use super::config::{Config, Limits};

/// One tenant's buckets (`None`: unlimited), with the bytes bucket's size.
struct Buckets {
    requests: Option<DefaultDirectRateLimiter>,
    bytes: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

/// Why a request was throttled, and when to try again.
#[derive(Debug)]
pub(crate) struct Throttled {
    pub(crate) message: String,
    pub(crate) retry_after: Duration,
}

impl Throttled {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub(crate) fn retry_after_seconds(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Every tenant's buckets, made on a tenant's first request.
pub(crate) struct Limiter {
    /// No tenant has a limit: nothing to check (the common case, kept off the hot path).
    unlimited: bool,
    default: Limits,
    named: HashMap<String, Limits>,
    buckets: Mutex<HashMap<Tenant, Arc<Buckets>>>,
    clock: DefaultClock,
}

impl Limiter {
    pub(crate) fn new(config: &Config) -> Limiter {
        let unlimited = config.tenants.limits == Limits::default()
            && config.tenants.tenant_limits.values().all(|l| *l == Limits::default());
        Limiter {
            unlimited,
            default: config.tenants.limits,
            named: config.tenants.tenant_limits.clone().into_iter().collect(),
            buckets: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn buckets(&self, tenant: &Tenant) -> Arc<Buckets> {
        let mut all = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(tenant.clone())
            .or_insert_with(|| {
                let limits = self.named.get(tenant.as_str()).copied().unwrap_or(self.default);
                let bucket = |rate: u32, burst: u32| {
                    NonZeroU32::new(rate).map(|rate| {
                        let burst = NonZeroU32::new(burst.max(rate.get())).unwrap_or(rate);
                        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
                    })
                };
                Arc::new(Buckets {
                    requests: bucket(limits.requests_per_second, 0),
                    bytes: bucket(limits.bytes_per_second, 0).zip(NonZeroU32::new(limits.bytes_per_second)),
                })
            })
            .clone()
    }

    /// Takes one request of `tenant`'s.
    pub(crate) fn request(&self, tenant: &Tenant) -> Result<(), Throttled> {
        if self.unlimited {
            return Ok(());
        }
        let Some(bucket) = &self.buckets(tenant).requests else {
            return Ok(());
        };
        bucket.check().map_err(|until| Throttled {
            message: format!("tenant `{tenant}` is over its requests per second: retry later"),
            retry_after: until.wait_time_from(self.clock.now()),
        })
    }

    /// Takes `bytes` of `tenant`'s request bytes.
    pub(crate) fn bytes(&self, tenant: &Tenant, bytes: usize) -> Result<(), Throttled> {
        if self.unlimited {
            return Ok(());
        }
        let Some((bucket, burst)) = &self.buckets(tenant).bytes else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        // A request larger than the bucket passes when the bucket is full, and empties it.
        let n = n.min(*burst);
        let throttled = |retry_after| Throttled {
            message: format!("tenant `{tenant}` is over its bytes per second: retry later"),
            retry_after,
        };
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(until)) => Err(throttled(until.wait_time_from(self.clock.now()))),
            Err(_) => Err(throttled(Duration::from_secs(1))),
        }
    }
}
