//! The conformance suites (the tracker's and wit-store's file catalog) run against every
//! backend.

use std::sync::Arc;
use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Stage, Tenant};

use wit_tracker::{AsyncTracker, DynAsyncTracker, Tracker, TrackerExt};

use wit_tracker::conformance::config;

/// The catalog suite's hook: makes `ids` registered batches, converted and ready to store.
pub fn prepare(tracker: impl Tracker + Clone + 'static) -> impl Fn(&[BatchId]) {
    move |ids: &[BatchId]| {
        for id in ids {
            let meta = BatchMeta {
                id: *id,
                tenant: Tenant::try_new("acme").expect("tenant"),
                signal: Signal::Logs,
                source: SourceKind::Http,
                message_count: 1,
                byte_size: 1,
                first_offset: None,
                last_offset: None,
                topics: vec![],
                partition: None,
                created_at: id.created_at(),
            };
            tracker.register_one(&meta).expect("register");
            for stage in [Stage::WalWritten, Stage::Ingested] {
                tracker.mark(*id, stage, id.created_at()).expect("mark");
            }
        }
    }
}

/// Runs the suite's async checks through `Arc<dyn DynAsyncTracker>`, each on a fresh backend
/// from `make`: the trait object is an `AsyncTracker` like the backend.
pub fn through_a_trait_object<B, T>(make: impl Fn() -> Option<B>)
where
    B: std::ops::Deref<Target = T>,
    T: AsyncTracker + Clone + 'static,
{
    let checks: [fn(&Arc<dyn DynAsyncTracker>); 2] = [
        |t| wit_tracker::conformance::async_twin(t),
        |t| wit_tracker::conformance::async_range_claims(t),
    ];
    for check in checks {
        let Some(backend) = make() else { return };
        let shared: Arc<dyn DynAsyncTracker> = Arc::new((*backend).clone());
        check(&shared);
    }
}

mod memory {
    use wit_tracker::InMemoryTracker;

    fn make() -> Option<Box<InMemoryTracker>> {
        Some(Box::new(InMemoryTracker::new(super::config())))
    }

    fn catalog() -> Option<(InMemoryTracker, impl Fn(&[wit_batch::BatchId]))> {
        let t = *make()?;
        Some((t.clone(), super::prepare(t)))
    }

    #[test]
    fn async_checks_through_a_trait_object() {
        super::through_a_trait_object(make);
    }

    wit_tracker::tracker_conformance!(make);

    mod file_catalog {
        wit_store::file_catalog_conformance!(super::catalog);
    }
}

mod sqlite {
    use wit_tracker::SqliteTracker;

    /// A tracker in a fresh on-disk database, with the directory that holds it.
    pub(crate) struct OnDisk {
        tracker: SqliteTracker,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for OnDisk {
        type Target = SqliteTracker;
        fn deref(&self) -> &SqliteTracker {
            &self.tracker
        }
    }

    pub(crate) fn make() -> Option<OnDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = SqliteTracker::open(&dir.path().join("tracker.db"), super::config()).expect("open");
        Some(OnDisk { tracker, _dir: dir })
    }

    fn catalog() -> Option<(SqliteTracker, impl Fn(&[wit_batch::BatchId]))> {
        let OnDisk { tracker, _dir: dir } = make()?;
        let prepare = super::prepare(tracker.clone());
        // The hook keeps the directory until the test ends.
        Some((tracker, move |ids: &[wit_batch::BatchId]| {
            let _ = &dir;
            prepare(ids)
        }))
    }

    #[test]
    fn async_checks_through_a_trait_object() {
        super::through_a_trait_object(make);
    }

    wit_tracker::tracker_conformance!(make);

    mod file_catalog {
        wit_store::file_catalog_conformance!(super::catalog);
    }
}

mod postgres {
    use wit_tracker::PostgresTracker;

    use crate::pg_server::PgServer;

    /// A tracker in a fresh schema of the shared test server.
    pub(crate) fn make() -> Option<Box<PostgresTracker>> {
        let server = PgServer::shared()?;
        let params = server.fresh_schema("conformance");
        Some(Box::new(
            PostgresTracker::connect(&params, super::config()).expect("connect"),
        ))
    }

    fn catalog() -> Option<(PostgresTracker, impl Fn(&[wit_batch::BatchId]))> {
        let t = *make()?;
        Some((t.clone(), super::prepare(t)))
    }

    #[test]
    fn async_checks_through_a_trait_object() {
        super::through_a_trait_object(make);
    }

    wit_tracker::tracker_conformance!(make);

    mod file_catalog {
        wit_store::file_catalog_conformance!(super::catalog);
    }
}
