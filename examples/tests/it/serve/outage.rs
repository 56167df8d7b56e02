//! Dependencies down: with the object store stopped, the server acknowledges only while the
//! unstored data is within its bound, then answers retryable errors; once the store is back,
//! everything acknowledged is stored.

use super::*;

/// The server's bounds in these tests: 256 KiB of unstored data, `Retry-After: 2`.
const BOUNDS: &str = "otlp:\n  retry_after_seconds: 2\n\
                      pipeline:\n  max_unstored_bytes: 262144\n  batch_max_bytes: 65536\n  file_max_age_ms: 100\n";

/// Sends 20-span requests named `{prefix}{n}` until one is refused; returns how many were
/// acknowledged, after checking the refusal is a retryable 503 with `Retry-After`.
fn send_until_refused(server: &Server, prefix: &str) -> u64 {
    let mut acked = 0u64;
    let refusal = loop {
        let body = spans(&format!("{prefix}{acked}"), 20).encode_to_vec();
        match post(&server.otlp_url("/v1/traces"), "application/x-protobuf", false, &body) {
            (200, ..) => acked += 1,
            (status, _, retry, _) => break (status, retry),
        }
        assert!(acked < 10_000, "never refused while the dependency is down");
    };
    assert_eq!(refusal, (503, Some("2".to_string())), "retryable, with Retry-After");
    assert!(acked > 0);
    acked
}

#[test]
fn with_the_object_store_down_acknowledgments_stop_at_the_bound_and_resume_after() {
    if !moto::Moto::available() {
        return;
    }
    let s3 = moto::Moto::start();
    let options: String = moto::options(s3.port)
        .into_iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let extra = format!(
        "storage:\n  url: s3://wit/outage\n  retries: 1\n  retry_timeout_ms: 200\n  options:\n{options}{BOUNDS}"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), &extra);
    // The store goes away before anything is written to it.
    s3.stop();
    let acked = send_until_refused(&server, "out");
    // Still refused a moment later: nothing was stored meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let (status, ..) = post(
        &server.otlp_url("/v1/traces"),
        "application/x-protobuf",
        false,
        &spans("late", 20).encode_to_vec(),
    );
    assert_eq!(status, 503);

    // The store is back (empty, with its bucket): everything acknowledged is stored, once.
    s3.restart();
    server.wait_count(None, "SELECT count(*) AS n FROM spans", acked * 20);
    server.wait_count(None, "SELECT count(DISTINCT name) AS n FROM spans", acked * 20);
    // And intake resumes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ..) = post(
            &server.otlp_url("/v1/traces"),
            "application/x-protobuf",
            false,
            &spans("after", 20).encode_to_vec(),
        );
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "intake did not resume: {}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn with_the_postgresql_tracker_down_acknowledgments_stop_at_the_bound_and_resume_after() {
    let Some(pg) = pg_server::PgServer::start(false) else {
        return;
    };
    let tracker = pg.fresh_schema("outage");
    let extra = format!("tracker:\n  kind: postgres\n  url: \"{tracker}\"\n{BOUNDS}");
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), &extra);
    pg.stop();
    let acked = send_until_refused(&server, "pg");

    // The tracker is back: everything acknowledged is stored, once.
    pg.start_again();
    server.wait_count(None, "SELECT count(*) AS n FROM spans", acked * 20);
    server.wait_count(None, "SELECT count(DISTINCT name) AS n FROM spans", acked * 20);
}
