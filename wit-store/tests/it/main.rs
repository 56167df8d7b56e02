//! `wit-store`'s integration tests.

mod catalog {
    use wit_batch::BatchId;
    use wit_store::InMemoryFileCatalog;

    fn make() -> Option<(InMemoryFileCatalog, impl Fn(&[BatchId]))> {
        Some((InMemoryFileCatalog::default(), |_: &[BatchId]| {}))
    }

    wit_store::file_catalog_conformance!(make);
}
