//! Object storage against a real S3-compatible server on 127.0.0.1: moto's server (PyPI
//! `moto[server]`), started here. Without it the tests say how to get it and skip, unless
//! `WIT_REQUIRE_S3=1` (set by `.ci/run`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arrow::array::{BinaryArray, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use wit_batch::{BatchId, Signal, Tenant};
use wit_store::{Destination, Error, FileCatalog, InMemoryFileCatalog, Maintenance, ParquetCompression, ParquetSink};

use crate::data::spans;
use crate::moto::{Moto, options};
use crate::sink::config;

fn client(port: u16) -> Arc<dyn ObjectStore> {
    let mut builder = AmazonS3Builder::new().with_bucket_name("wit");
    for (k, v) in options(port) {
        builder = builder.with_config(k.parse().expect("key"), v);
    }
    Arc::new(builder.build().expect("s3 client"))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn s3_upload_list_read_delete() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start();
    let staging = tempfile::tempdir().expect("staging");
    let destination = Destination::from_url("s3://wit/data")
        .with_options(options(moto.port))
        .with_retries(2, Duration::from_secs(10))
        .build()
        .expect("destination");
    assert_eq!(destination.to_string(), "s3://wit/data");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let cfg = config().with_staging_dir(staging.path()).with_keep_staged(false);
    let mut sink = ParquetSink::open(destination.clone(), cfg.clone())
        .expect("open")
        .with_catalog(catalog.clone());
    let tenant = Tenant::try_new("acme").expect("tenant");
    sink.write(
        &tenant,
        Signal::Traces,
        &spans(500, 1_700_000_000, 1),
        &[BatchId::new()],
    )
    .expect("write");
    let file = sink.flush().expect("flush").remove(0);
    assert_eq!(
        crate::sink::staged_files(staging.path()),
        0,
        "staged copy deleted as configured"
    );

    // List and read with an independent client.
    let store = client(moto.port);
    let listed: Vec<_> = block_on(async {
        use futures::TryStreamExt;
        store
            .list(Some(&ObjectPath::from("data")))
            .try_collect::<Vec<_>>()
            .await
    })
    .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location.as_ref(), format!("data/{}", file.path));
    assert_eq!(listed[0].size, file.bytes);
    let bytes: Bytes = block_on(async { store.get(&listed[0].location).await?.bytes().await }).expect("get");
    let rows: usize = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader")
        .map(|b| b.expect("batch").num_rows())
        .sum();
    assert_eq!(rows, 500);

    // Delete through retention and the janitor.
    let maintenance = Maintenance::new(destination, catalog.clone(), cfg).with_grace(Duration::ZERO);
    let now = SystemTime::now();
    assert_eq!(
        maintenance
            .apply_retention(&tenant, Duration::ZERO, now + Duration::from_secs(86_400 * 365 * 10))
            .expect("retire"),
        1
    );
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(86_400 * 365 * 10))
            .expect("delete"),
        1
    );
    let after: Vec<_> = block_on(async {
        use futures::TryStreamExt;
        store
            .list(Some(&ObjectPath::from("data")))
            .try_collect::<Vec<_>>()
            .await
    })
    .expect("list");
    assert!(after.is_empty());
    assert!(catalog.list(&tenant, Signal::Traces, None).expect("list").is_empty());
}

/// Forwards connections to moto; once more than `kill_after` bytes went up, kills moto (the
/// server stops in the middle of an upload) and cuts every connection.
struct KillingProxy {
    port: u16,
    kill_after: Arc<AtomicU64>,
}

impl KillingProxy {
    fn start(moto: &Moto) -> KillingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let kill_after = Arc::new(AtomicU64::new(u64::MAX));
        let (upstream, child, limit) = (moto.port, moto.child.clone(), kill_after.clone());
        let sent = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (child, limit, sent) = (child.clone(), limit.clone(), sent.clone());
                std::thread::spawn(move || pump(client, server, Some((child, limit, sent))));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        KillingProxy { port, kill_after }
    }
}

type Killer = (Arc<Mutex<Option<Child>>>, Arc<AtomicU64>, Arc<AtomicU64>);

fn pump(mut from: TcpStream, mut to: TcpStream, killer: Option<Killer>) {
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((child, limit, sent)) = &killer
            && sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit.load(Ordering::SeqCst)
        {
            Moto::kill(child);
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A batch of incompressible rows, `n` × 128 KiB, so the file needs a multipart upload.
fn big_batch(n: usize) -> RecordBatch {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let blobs: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            (0..128 << 10)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("blob", DataType::Binary, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampNanosecondArray::from((0..n as i64).collect::<Vec<_>>()).with_timezone("UTC")),
            Arc::new(BinaryArray::from_iter_values(blobs.iter())),
        ],
    )
    .expect("batch")
}

#[test]
fn s3_server_stopped_mid_upload_keeps_the_file_and_a_retry_succeeds() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start();
    let proxy = KillingProxy::start(&moto);
    let staging = tempfile::tempdir().expect("staging");
    let destination = Destination::from_url("s3://wit/data")
        .with_options(options(proxy.port))
        .with_retries(1, Duration::from_secs(3))
        .build()
        .expect("destination");
    let cfg = config()
        .with_staging_dir(staging.path())
        .with_compression(ParquetCompression::None)
        .with_upload_part_bytes(5 << 20);
    let mut sink = ParquetSink::open(destination, cfg).expect("open");
    let tenant = Tenant::try_new("acme").expect("tenant");
    sink.write(&tenant, Signal::Events, &big_batch(96), &[BatchId::new()])
        .expect("write"); // 12 MiB

    // The server dies once 7 MiB went up: the second part is under way.
    proxy.kill_after.store(7 << 20, Ordering::SeqCst);
    let err = sink.flush().expect_err("the server is gone");
    let Error::Upload { local, path, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        err.to_string()
            .starts_with(&format!("failed to upload `{path}` to s3://wit/data")),
        "{err}"
    );
    assert!(local.exists(), "the staged file is kept");
    let pending = sink.pending();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].bytes > 12 << 20);

    // The server comes back (empty): the next publish uploads the file.
    proxy.kill_after.store(u64::MAX, Ordering::SeqCst);
    moto.restart();
    let published = sink.publish().expect("retry");
    assert_eq!(published, pending);
    let store = client(moto.port);
    let location = ObjectPath::from(format!("data/{}", published[0].path));
    let head = block_on(async { store.head(&location).await }).expect("head");
    assert_eq!(head.size, published[0].bytes);
    assert!(sink.pending().is_empty());
    // Kept staged (the default), marked as published so a reopen does not upload it again.
    let kept: Vec<_> = std::fs::read_dir(staging.path())
        .expect("staging")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].to_string_lossy().ends_with(".parquet.published"));
    drop(sink);
    let mut reopened = ParquetSink::open(
        Destination::from_url("s3://wit/data")
            .with_options(options(moto.port))
            .with_retries(1, Duration::from_secs(3))
            .build()
            .expect("destination"),
        config().with_staging_dir(staging.path()),
    )
    .expect("reopen");
    assert!(reopened.pending().is_empty());
    assert!(reopened.publish().expect("nothing").is_empty());
}

#[test]
fn s3_put_read_overwrite_delete() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start();
    let destination = Destination::from_url("s3://wit/data")
        .with_options(options(moto.port))
        .with_retries(2, Duration::from_secs(10))
        .build()
        .expect("destination");
    let path = "acme/traces/2026/11/22/09/node-a/0193.index";
    destination.put(path, Bytes::from_static(b"first blob")).expect("put");
    assert_eq!(destination.read(path).expect("read"), &b"first blob"[..]);
    let big = Bytes::from(vec![3u8; 6 << 20]);
    destination.put(path, big.clone()).expect("overwrite");
    assert_eq!(destination.read(path).expect("read"), big);

    // An independent client sees the one object, whole, under the prefix: no `.tmp` object.
    let store = client(moto.port);
    let listed: Vec<_> = block_on(async {
        use futures::TryStreamExt;
        store
            .list(Some(&ObjectPath::from("data")))
            .try_collect::<Vec<_>>()
            .await
    })
    .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location.as_ref(), format!("data/{path}"));
    assert_eq!(listed[0].size, big.len() as u64);

    destination.delete(path).expect("delete");
    destination.delete(path).expect("already gone is fine");
    let err = destination.read(path).expect_err("deleted");
    assert!(matches!(err, Error::ObjectStore { .. }), "{err}");
    let err = destination
        .put("../outside.index", Bytes::from_static(b"x"))
        .expect_err("not relative");
    assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
}
