//! `Destination`'s whole-blob calls on a local directory: `put`, `read`, `delete`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use wit_store::{Destination, Error};

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn put_then_read_round_trips_and_overwrites_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Destination::local(dir.path()).expect("dest");
    let path = "acme/logs/2026/11/22/09/node-a/0193.index";
    store.put(path, Bytes::from_static(b"first blob")).expect("put");
    assert_eq!(store.read(path).expect("read"), &b"first blob"[..]);
    assert_eq!(std::fs::read(dir.path().join(path)).expect("on disk"), b"first blob");

    // A second put replaces the blob whole, shorter or not.
    store.put(path, Bytes::from_static(b"2nd")).expect("overwrite");
    assert_eq!(store.read(path).expect("read"), &b"2nd"[..]);
    let big = Bytes::from(vec![7u8; 3 << 20]);
    store.put(path, big.clone()).expect("overwrite");
    assert_eq!(store.read(path).expect("read"), big);
    store.put("acme/empty.index", Bytes::new()).expect("empty blob");
    assert!(store.read("acme/empty.index").expect("read").is_empty());

    assert_eq!(
        files_under(dir.path()),
        [dir.path().join("acme/empty.index"), dir.path().join(path)],
        "no `.tmp` file is left behind"
    );

    store.delete(path).expect("delete");
    assert!(!dir.path().join(path).exists());
    store.delete(path).expect("already gone is fine");
    let err = store.read(path).expect_err("deleted");
    assert!(
        matches!(&err, Error::Io { op: "read", path: p, .. } if p.ends_with(path)),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("failed to read `"),
        "the message names the operation: {err}"
    );
}

#[test]
fn a_url_is_built_with_its_options_and_a_string_without_a_scheme_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A path is not a URL: it is refused, not taken for a local directory.
    let plain = dir.path().join("data");
    let err = Destination::from_url(plain.to_str().expect("utf-8"))
        .build()
        .expect_err("no scheme");
    assert!(
        matches!(&err, Error::InvalidConfig { reason } if reason.contains("has no scheme")),
        "{err}"
    );
    assert!(!plain.exists(), "nothing was created");
    // `file://` is a local directory.
    let url = format!("file://{}", plain.display());
    let local = Destination::from_url(&url).build().expect("file URL");
    local.put("acme/a.index", Bytes::from_static(b"x")).expect("put");
    assert!(plain.join("acme/a.index").exists());
    // An unknown option is named.
    let err = Destination::from_url("s3://bucket/prefix")
        .with_option("aws_no_such_option", "1")
        .build()
        .expect_err("unknown option");
    assert!(err.to_string().contains("aws_no_such_option"), "{err}");
    let err = Destination::from_url("ftp://host/x")
        .build()
        .expect_err("unknown scheme");
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
}

#[test]
fn object_storage_io_runs_on_the_hosts_runtime_when_given_one() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("host-io")
        .enable_all()
        .build()
        .expect("runtime");
    /// An object store that records the name of the thread each `put` ran on.
    #[derive(Debug)]
    struct Recording(object_store::memory::InMemory, std::sync::Mutex<Vec<String>>);
    impl std::fmt::Display for Recording {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("recording")
        }
    }
    #[async_trait::async_trait]
    impl object_store::ObjectStore for Recording {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            self.1.lock().expect("lock").push(thread);
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }
    let store = std::sync::Arc::new(Recording(object_store::memory::InMemory::new(), Default::default()));
    let own = Destination::object_store(store.clone(), "own").expect("destination");
    own.put("acme/a.index", Bytes::from_static(b"own")).expect("put");
    let hosted = Destination::object_store(store.clone(), "hosted")
        .expect("destination")
        .with_runtime(runtime.handle().clone());
    hosted.put("acme/a.index", Bytes::from_static(b"hosted")).expect("put");
    assert_eq!(hosted.read("acme/a.index").expect("read"), &b"hosted"[..]);
    assert_eq!(own.read("acme/a.index").expect("read"), &b"own"[..]);
    let threads = store.1.lock().expect("lock").clone();
    assert_eq!(threads, ["wit-store-io", "host-io"], "{threads:?}");
    // A missing object is an error naming the operation and the object.
    let err = hosted.read("acme/missing.index").expect_err("missing");
    assert!(
        matches!(&err, Error::ObjectStore { op: "read", path, .. } if path == "hosted/acme/missing.index"),
        "{err}"
    );
}

#[test]
fn a_leftover_tmp_file_is_overwritten_by_the_next_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Destination::local(dir.path()).expect("dest");
    std::fs::create_dir_all(dir.path().join("acme")).expect("mkdir");
    // What a crash between the write and the rename leaves.
    std::fs::write(dir.path().join("acme/a.index.tmp"), b"torn and longer than the blob").expect("tmp");
    store.put("acme/a.index", Bytes::from_static(b"whole")).expect("put");
    assert_eq!(store.read("acme/a.index").expect("read"), &b"whole"[..]);
    assert_eq!(files_under(dir.path()), [dir.path().join("acme/a.index")]);
}

#[test]
fn paths_outside_the_root_are_refused() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("root");
    let store = Destination::local(&root).expect("dest");
    for bad in [
        "",
        "/etc/passwd",
        "../outside.index",
        "acme/../../outside.index",
        "acme//a.index",
        "a\n.index",
    ] {
        let err = store.put(bad, Bytes::from_static(b"x")).expect_err("put");
        assert!(
            matches!(&err, Error::InvalidFile { path, .. } if path == bad),
            "{bad:?}: {err}"
        );
        let err = store.read(bad).expect_err("read");
        assert!(matches!(err, Error::InvalidFile { .. }), "{bad:?}: {err}");
        let err = store.delete(bad).expect_err("delete");
        assert!(matches!(err, Error::InvalidFile { .. }), "{bad:?}: {err}");
    }
    assert_eq!(files_under(parent.path()), Vec::<PathBuf>::new());
}
