//! The store goes away (moto's S3 server stopped): acknowledgments at `WalDurable` go on
//! until the unstored bound, then submitting pushes back; nothing is lost, and once the
//! server is back everything is stored and the `Stored` acknowledgments arrive.

use std::time::Duration;

use wit_batch::{BatchKey, Signal, SourceKind, Tenant};
use wit_pipeline::{AckLevel, Pipeline, Submitted};
use wit_store::{Destination, NodeName, SinkConfig};

use crate::support::{self, proto, spans};

#[path = "../../../wit-store/tests/it/moto.rs"]
#[allow(dead_code, unreachable_pub)]
mod moto;

const LONG: Duration = Duration::from_secs(60);

/// pyarrow reads every object under `s3://wit/data/acme/traces/` from the server and prints
/// each span id.
const READ_S3: &str = r#"
import sys, pyarrow.fs as pafs, pyarrow.parquet as pq
s3 = pafs.S3FileSystem(endpoint_override="127.0.0.1:" + sys.argv[1], scheme="http",
                       access_key="test", secret_key="test", region="us-east-1")
for info in s3.get_file_info(pafs.FileSelector("wit/data/acme/traces", recursive=True)):
    if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
        t = pq.read_table(info.path, filesystem=s3)
        for v in t.column("span_id").to_pylist():
            print(int.from_bytes(v, "big"))
"#;

#[test]
fn a_store_outage_pushes_back_at_the_bound_and_loses_nothing() {
    if !moto::Moto::available() {
        return;
    }
    let moto = moto::Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let destination = Destination::from_url("s3://wit/data")
        .with_options(moto::options(moto.port))
        .with_retries(0, Duration::from_secs(2))
        .build()
        .expect("destination");
    let node = NodeName::try_new("node-a").expect("node");
    let bound = 48 << 10;
    let config = support::config(dir.path())
        .with_sink(
            SinkConfig::new(node)
                .with_staging_dir(dir.path().join("staging"))
                .with_max_file_age(Duration::from_millis(20)),
        )
        .with_batcher(
            wit_batch::BatcherConfig::default()
                .with_max_messages(1)
                .with_max_bytes(4096),
        )
        .with_max_unstored_bytes(bound);
    let pipeline = Pipeline::open(config, destination, tracker.clone()).expect("open");
    let key = BatchKey::new(
        Tenant::try_new("acme").expect("tenant"),
        Signal::Traces,
        SourceKind::Grpc,
    );

    // Up: stored.
    let mut next = 0u64;
    for _ in 0..5 {
        let ack = pipeline
            .blocking_submit(&key, proto(spans(&[next]), 1), AckLevel::Stored)
            .expect("submit");
        next += 1;
        ack.wait_timeout(LONG).expect("in time").expect("stored");
    }

    // Down: acknowledged when durable, until the bound; then the part comes back.
    moto.stop();
    let stored_later = pipeline
        .blocking_submit(&key, proto(spans(&[next]), 1), AckLevel::Stored)
        .expect("submit");
    next += 1;
    let mut durable = Vec::new();
    let full = loop {
        assert!(next < 100_000, "the bound was never reached: {:?}", pipeline.status());
        match pipeline
            .try_submit(&key, proto(spans(&[next]), 1), AckLevel::WalDurable)
            .expect("submit")
        {
            Submitted::Accepted(ack) => durable.push(ack),
            Submitted::Full(part) => break part,
        }
        next += 1;
    };
    assert!(durable.len() > 10, "acknowledgments went on while the store was down");
    for ack in durable {
        ack.wait_timeout(LONG).expect("in time").expect("durable");
    }
    assert!(pipeline.status().unstored_bytes <= bound, "{:?}", pipeline.status());
    assert!(
        stored_later.wait_timeout(Duration::from_millis(300)).is_none(),
        "not stored while down"
    );

    // Back: everything is stored, the refused part goes in.
    moto.restart();
    stored_later
        .wait_timeout(LONG)
        .expect("stored once the server is back")
        .expect("stored");
    pipeline
        .blocking_submit(&key, full, AckLevel::WalDurable)
        .expect("submit")
        .wait()
        .expect("durable");
    next += 1;
    pipeline.close().expect("close");

    // The catalog lists every record, and pyarrow reads each span once from the server. (The
    // restarted server is empty: the first five files went with the old one.)
    let rows = support::stored_rows(&*tracker, &Tenant::try_new("acme").expect("tenant"), Signal::Traces);
    assert_eq!(rows, next);
    if support::has_pyarrow() {
        let out = std::process::Command::new("python3")
            .args(["-c", READ_S3, &moto.port.to_string()])
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut ids: Vec<u64> = String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| l.parse().expect("id"))
            .collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (5..next).collect::<Vec<u64>>(),
            "every record after the outage's start, once"
        );
    }
}
