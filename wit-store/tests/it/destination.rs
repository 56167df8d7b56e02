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
    assert!(matches!(&err, Error::Io { path: p, .. } if p.ends_with(path)), "{err}");
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
