//! `wit serve` under load: a release build of the server, fed OTLP traces over loopback by a
//! load generator in this process, beside the machine's ceilings measured in the same run.
//!
//! Input: OTLP trace export requests of 1,000 spans each, the first resource (10 scopes ×
//! 100 spans) of the `otlp` bench shape (`wit_benches::telemetry`), 64 distinct requests
//! encoded as protobuf once, before measuring, and sent round-robin.
//!
//! The generator: `WIT_LOAD_CONNECTIONS` (default 32) connections, each sending its next
//! request as soon as the previous one is answered (a closed loop, as SDK exporters with a
//! bounded queue behave), on a tokio runtime of one worker thread. The server is a child
//! process with the embedded defaults (WAL, SQLite tracker, Parquet ZSTD and the Tantivy
//! index under a temporary directory; acknowledgment at `wal_durable`). Neither is pinned:
//! they share the machine's cores, and the CPU each used is reported separately (the
//! server's from `/proc/<pid>/stat`, the generator's from `/proc/self/stat`).
//!
//! For each transport (`http`: OTLP/HTTP protobuf; `grpc`: OTLP/gRPC), for
//! `WIT_LOAD_SECONDS` (default 60) seconds (the server's `pipeline.file_max_age_ms` is
//! `WIT_LOAD_FILE_AGE_MS`, default 5000):
//! - spans acknowledged per second (answered 200 / OK), and requests refused (503 /
//!   UNAVAILABLE, retried after 250 ms);
//! - spans stored (in published Parquet files) and indexed per second over the same window,
//!   from the server's `/api/batch-monitor/status`, sampled every second, with the backlog
//!   (unstored bytes, which include the rows of files still open): its maximum, its value at
//!   the end and its trend from 10 s on (least squares, MB per minute); the index's lag
//!   (spans acknowledged and not yet indexed, in seconds of the run's rate): its mean and its
//!   trend from 10 s on (seconds per minute; about 0 when the index keeps up); and the time
//!   the server needed after the load to store and index the rest;
//! - p50 / p99 / max acknowledgment latency (request sent to answer received);
//! - CPU seconds per 100k spans acknowledged, of the server and of the generator.
//!
//! With `WIT_LOAD_GUARD=both` (or `on`), each run is made twice (or only so): once as above,
//! once with the access layer in use — an API key (`tenants.keys`, every request's
//! `Authorization: Bearer` checked against its SHA-256), limits set high
//! (`tenants.limits`: a million requests and 4 GB per second, so they are checked but never
//! refuse) and an `Idempotency-Key` on every request (claimed, carried in the WAL, remembered
//! in the tracker). The `guard` column says which.
//!
//! Ceilings, in the same run: `ceiling_http_sink`, the same generator against a server in
//! this process that reads each body and answers 200 (what loopback HTTP with these
//! connections allows on this machine), and criterion's `serve_ceiling/decode` (one core
//! decoding a request from protobuf to Arrow, as the receiver checks each request).
//!
//! The table is printed and written to `target/tmp/serve-load.txt`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use criterion::{Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use prost::Message;
use wit_batch::{Compression, PayloadFormat};

const SPANS_PER_REQUEST: u64 = 1_000;
/// Requests acknowledged in the current run, as the sampler reads them while it goes on.
static ACKED: AtomicU64 = AtomicU64::new(0);
const DISTINCT_REQUESTS: u64 = 64;
/// How long a sender waits after a refusal: shorter than the server's `Retry-After` (1 s),
/// so the server stays saturated, long enough that refusals do not take its CPU.
const RETRY_AFTER: Duration = Duration::from_millis(250);
const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The API key of guarded runs.
const BENCH_KEY: &str = "wit-bench-key-0123456789abcdef";

fn requests() -> Vec<Bytes> {
    (0..DISTINCT_REQUESTS)
        .map(|r| {
            let mut request = wit_benches::telemetry::trace_request(r * 10_000);
            request.resource_spans.truncate(1);
            Bytes::from(request.encode_to_vec())
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Http,
    Grpc,
}

/// What the generator saw.
#[derive(Default)]
struct Load {
    acked_requests: u64,
    refused: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

/// gRPC messages as the bytes they are: the generator sends pre-encoded requests.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Runs `connections` senders against `addr` for `duration`: closed loops when `rate` is 0,
/// else each paced to its share of `rate` spans per second (an open loop while the server
/// keeps up).
fn generate(
    transport: Transport,
    addr: SocketAddr,
    connections: u64,
    rate: u64,
    duration: Duration,
    bodies: &[Bytes],
    guard: bool,
) -> Load {
    let interval =
        (rate > 0).then(|| Duration::from_secs_f64(connections as f64 * SPANS_PER_REQUEST as f64 / rate as f64));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let bodies: Arc<Vec<Bytes>> = Arc::new(bodies.to_vec());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let loads = runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (bodies, stop) = (bodies.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                // Paced senders start spread over one interval.
                let pace = interval.map(|i| Pace {
                    interval: i,
                    next: tokio::time::Instant::now() + i.mul_f64(c as f64 / connections as f64),
                });
                match transport {
                    Transport::Http => http_sender(addr, c as usize, &bodies, &stop, pace, guard).await,
                    Transport::Grpc => grpc_sender(addr, c as usize, &bodies, &stop, pace, guard).await,
                }
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Release);
        let mut loads = Vec::new();
        for task in tasks {
            loads.push(task.await.expect("sender"));
        }
        loads
    });
    let mut total = Load {
        elapsed: started.elapsed(),
        ..Load::default()
    };
    for load in loads {
        total.acked_requests += load.acked_requests;
        total.refused += load.refused;
        total.errors += load.errors;
        total.latencies_us.extend(load.latencies_us);
    }
    total
}

/// A sender's schedule.
struct Pace {
    interval: Duration,
    next: tokio::time::Instant,
}

impl Pace {
    /// Waits for the next slot; a sender that fell behind does not burst to catch up.
    async fn wait(pace: &mut Option<Pace>) {
        if let Some(p) = pace {
            tokio::time::sleep_until(p.next).await;
            p.next = (p.next + p.interval).max(tokio::time::Instant::now() - p.interval);
        }
    }
}

/// A request's idempotency key: unique per connection and request.
fn idempotency_key(connection: usize, n: usize) -> String {
    format!("bench-{connection}-{n}")
}

async fn http_sender(
    addr: SocketAddr,
    first: usize,
    bodies: &[Bytes],
    stop: &AtomicBool,
    mut pace: Option<Pace>,
    guard: bool,
) -> Load {
    let mut load = Load::default();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut i = first;
    while !stop.load(Ordering::Acquire) {
        Pace::wait(&mut pace).await;
        let mut request = hyper::Request::post("/v1/traces")
            .header("content-type", "application/x-protobuf")
            .header("host", addr.to_string());
        if guard {
            request = request
                .header("authorization", format!("Bearer {BENCH_KEY}"))
                .header("idempotency-key", idempotency_key(first, i));
        }
        let request = request
            .body(Full::new(bodies[i % bodies.len()].clone()))
            .expect("request");
        let sent = Instant::now();
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(_) => {
                load.errors += 1;
                break;
            }
        };
        let status = response.status();
        let _ = response.into_body().collect().await;
        match status.as_u16() {
            200 => {
                load.acked_requests += 1;
                ACKED.fetch_add(1, Ordering::Relaxed);
                load.latencies_us.push(sent.elapsed().as_micros() as u64);
                i += 1;
            }
            429 | 503 => {
                load.refused += 1;
                tokio::time::sleep(RETRY_AFTER).await;
            }
            _ => load.errors += 1,
        }
    }
    load
}

async fn grpc_sender(
    addr: SocketAddr,
    first: usize,
    bodies: &[Bytes],
    stop: &AtomicBool,
    mut pace: Option<Pace>,
    guard: bool,
) -> Load {
    let mut load = Load::default();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = http::uri::PathAndQuery::from_static(TRACES_PATH);
    let mut i = first;
    while !stop.load(Ordering::Acquire) {
        Pace::wait(&mut pace).await;
        grpc.ready().await.expect("ready");
        let sent = Instant::now();
        let mut request = tonic::Request::new(bodies[i % bodies.len()].clone());
        if guard {
            let metadata = request.metadata_mut();
            metadata.insert(
                "authorization",
                format!("Bearer {BENCH_KEY}").parse().expect("metadata"),
            );
            metadata.insert("idempotency-key", idempotency_key(first, i).parse().expect("metadata"));
        }
        let answer = grpc.unary(request, path.clone(), RawCodec).await;
        match answer {
            Ok(_) => {
                load.acked_requests += 1;
                ACKED.fetch_add(1, Ordering::Relaxed);
                load.latencies_us.push(sent.elapsed().as_micros() as u64);
                i += 1;
            }
            Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) => {
                load.refused += 1;
                tokio::time::sleep(RETRY_AFTER).await;
            }
            Err(_) => load.errors += 1,
        }
    }
    load
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's `(...)`: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // In USER_HZ, which Linux's ABI fixes at 100 per second on every architecture it runs on here.
    ticks / 100.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A release `wit serve` with its embedded defaults under `dir`.
struct Server {
    child: Child,
    http: u16,
    grpc: u16,
    api: u16,
    guard: bool,
}

impl Server {
    /// With `guard`: the bench key (tenant `default`, every scope) and limits set high.
    fn start(dir: &Path, guard: bool) -> Server {
        let (http, grpc, api) = (free_port(), free_port(), free_port());
        let config = dir.join("wit.yaml");
        let mut text = format!(
            "data_dir: {}\nlisten:\n  otlp_http: 127.0.0.1:{http}\n  otlp_grpc: 127.0.0.1:{grpc}\n  api: 127.0.0.1:{api}\npipeline:\n  file_max_age_ms: {}\n",
            dir.join("data").display(),
            env_u64("WIT_LOAD_FILE_AGE_MS", 5_000),
        );
        if guard {
            use sha2::Digest;
            let hash = hex::encode(sha2::Sha256::digest(BENCH_KEY.as_bytes()));
            text.push_str(&format!(
                "tenants:\n  keys:\n    - tenant: default\n      sha256: {hash}\n      scopes: [write, read, admin]\n  limits:\n    requests_per_second: 1000000\n    bytes_per_second: 4000000000\n"
            ));
        }
        std::fs::write(&config, text).expect("config");
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_wit"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("WIT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start wit serve");
        let server = Server {
            child,
            http,
            grpc,
            api,
            guard,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/health/ready").is_none() {
            assert!(Instant::now() < deadline, "wit serve not ready in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        api_get(self.api, path, self.guard)
    }

    /// (records stored, records indexed, unstored bytes).
    fn progress(&self) -> (u64, u64, u64) {
        let status = self.get("/api/batch-monitor/status").expect("status");
        let p = &status["pipeline"];
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        (n("records_stored"), n("records_indexed"), n("unstored_bytes"))
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let _ = self.child.wait();
    }
}

/// `GET` on the API port (with the bench key when `guard`): the JSON answer.
fn api_get(port: u16, path: &str, guard: bool) -> Option<serde_json::Value> {
    let mut request = ureq::get(&format!("http://127.0.0.1:{port}{path}"));
    if guard {
        request = request.header("authorization", &format!("Bearer {BENCH_KEY}"));
    }
    let mut response = request.call().ok()?;
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// One transport's run against a fresh server; returns the table's row.
fn run(transport: Transport, connections: u64, rate: u64, seconds: u64, bodies: &[Bytes], guard: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), guard);
    let port = match transport {
        Transport::Http => server.http,
        Transport::Grpc => server.grpc,
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let pid = server.pid();
    let (server_cpu0, self_cpu0) = (cpu_seconds(&pid), cpu_seconds("self"));

    // The sampler: progress every second while the load runs; from 10 s on, the samples
    // (seconds, unstored bytes, spans acknowledged and not yet indexed) for the trends.
    let sampling = Arc::new(AtomicBool::new(true));
    ACKED.store(0, Ordering::Relaxed);
    let sampler = {
        let sampling = sampling.clone();
        let api = server.api;
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples: Vec<(f64, f64, f64)> = Vec::new();
            let mut max = 0u64;
            while sampling.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_secs(1));
                let status = api_get(api, "/api/batch-monitor/status", guard);
                let acked = ACKED.load(Ordering::Relaxed) * SPANS_PER_REQUEST;
                let field = |k: &str| status.as_ref().map_or(0, |s| s["pipeline"][k].as_u64().unwrap_or(0));
                let unstored = field("unstored_bytes");
                max = max.max(unstored);
                let t = started.elapsed().as_secs_f64();
                if t >= 10.0 && sampling.load(Ordering::Acquire) {
                    let lag = acked.saturating_sub(field("records_indexed"));
                    samples.push((t, unstored as f64, lag as f64));
                }
            }
            (samples, max)
        })
    };
    let mut load = generate(
        transport,
        addr,
        connections,
        rate,
        Duration::from_secs(seconds),
        bodies,
        guard,
    );
    let (stored_in_window, indexed_in_window, backlog_end) = server.progress();
    let (server_cpu_load, self_cpu_load) = (cpu_seconds(&pid) - server_cpu0, cpu_seconds("self") - self_cpu0);
    sampling.store(false, Ordering::Release);
    let (samples, backlog_max) = sampler.join().expect("sampler");

    // The rest: until everything acknowledged is stored and indexed.
    let acked_spans = load.acked_requests * SPANS_PER_REQUEST;
    let after = Instant::now();
    loop {
        let (stored, indexed, _) = server.progress();
        if stored >= acked_spans && indexed >= acked_spans {
            break;
        }
        assert!(
            after.elapsed() < Duration::from_secs(600),
            "not stored and indexed in 10 minutes: {stored}/{indexed} of {acked_spans}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let drain = after.elapsed();
    let server_cpu_total = cpu_seconds(&pid) - server_cpu0;
    server.stop();

    let secs = load.elapsed.as_secs_f64();
    load.latencies_us.sort_unstable();
    // The trends from 10 s on, by least squares: the backlog in MB per minute, and the index's
    // lag (spans acknowledged and not yet indexed) in seconds of the run's rate per minute.
    let rate_acked = acked_spans as f64 / secs;
    let per_100k = |cpu: f64| cpu / (acked_spans as f64 / 100_000.0);
    let slope = |y: fn(&(f64, f64, f64)) -> f64| {
        let n = samples.len() as f64;
        let (mt, my) = (
            samples.iter().map(|s| s.0).sum::<f64>() / n,
            samples.iter().map(y).sum::<f64>() / n,
        );
        let cov: f64 = samples.iter().map(|s| (s.0 - mt) * (y(s) - my)).sum();
        let var: f64 = samples.iter().map(|s| (s.0 - mt).powi(2)).sum();
        if var > 0.0 { cov / var } else { 0.0 }
    };
    let backlog_trend = slope(|s| s.1) * 60.0 / 1e6;
    let lag_trend = slope(|s| s.2) * 60.0 / rate_acked;
    let lag_mean = samples.iter().map(|s| s.2).sum::<f64>() / samples.len().max(1) as f64 / rate_acked;
    format!(
        "{:<5} {:<5} {:>7} {:>5} {:>11.0} {:>11.0} {:>11.0} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>7.2} {:>7.2} {:>7.3} {:>7.3} {:>7.3} {:>6.2}",
        format!("{transport:?}").to_lowercase(),
        if guard { "on" } else { "off" },
        if rate == 0 {
            "max".to_string()
        } else {
            format!("{}k", rate / 1000)
        },
        connections,
        acked_spans as f64 / secs,
        stored_in_window as f64 / secs,
        indexed_in_window as f64 / secs,
        load.refused + load.errors,
        backlog_max as f64 / 1e6,
        backlog_end as f64 / 1e6,
        backlog_trend,
        percentile(&load.latencies_us, 0.5),
        percentile(&load.latencies_us, 0.99),
        load.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
        lag_mean,
        lag_trend,
        drain.as_secs_f64(),
        per_100k(server_cpu_load),
        per_100k(server_cpu_total),
        per_100k(self_cpu_load),
        (server_cpu_load + self_cpu_load) / secs,
    )
}

/// The same generator against a server that only reads each body and answers 200.
fn ceiling_http_sink(connections: u64, seconds: u64, bodies: &[Bytes]) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|body: Bytes| async move { (axum::http::StatusCode::OK, body.len().to_string()) }),
    );
    let app = app.layer(axum::extract::DefaultBodyLimit::disable());
    runtime.spawn(async move { axum::serve(listener, app).await });
    let cpu0 = cpu_seconds("self");
    let load = generate(
        Transport::Http,
        addr,
        connections,
        0,
        Duration::from_secs(seconds),
        bodies,
        false,
    );
    let cpu = cpu_seconds("self") - cpu0;
    let spans = load.acked_requests * SPANS_PER_REQUEST;
    format!(
        "ceiling_http_sink: {connections} connections, {:.0} spans/s ({:.0} MB/s of protobuf), sink + generator CPU {:.3} s per 100k spans, {:.2} cores",
        spans as f64 / load.elapsed.as_secs_f64(),
        (load.acked_requests as f64 * bodies[0].len() as f64) / load.elapsed.as_secs_f64() / 1e6,
        cpu / (spans as f64 / 100_000.0),
        cpu / load.elapsed.as_secs_f64(),
    )
}

fn decode_ceiling(c: &mut Criterion, bodies: &[Bytes]) {
    let mut g = c.benchmark_group("serve_ceiling");
    g.throughput(Throughput::Elements(SPANS_PER_REQUEST));
    g.bench_function("decode", |b| {
        b.iter(|| {
            wit_batch::otlp::traces::decode(
                std::hint::black_box(&bodies[0]),
                PayloadFormat::OtlpProtobuf,
                Compression::None,
            )
            .expect("decode")
        })
    });
    g.finish();
}

fn main() {
    let bodies = requests();
    let rows = wit_batch::otlp::traces::decode(&bodies[0], PayloadFormat::OtlpProtobuf, Compression::None)
        .expect("decode")
        .num_rows();
    assert_eq!(rows as u64, SPANS_PER_REQUEST);
    let mut criterion = Criterion::default().configure_from_args();
    decode_ceiling(&mut criterion, &bodies);
    criterion.final_summary();

    let connections = env_u64("WIT_LOAD_CONNECTIONS", 32);
    let seconds = env_u64("WIT_LOAD_SECONDS", 60);
    let mut out = String::new();
    out.push_str(&format!(
        "wit serve under load: {SPANS_PER_REQUEST} spans ({} bytes protobuf) per request, {seconds} s per run, {} cores shared by server and generator\n",
        bodies[0].len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    out.push_str(&ceiling_http_sink(connections, seconds.min(15), &bodies));
    out.push('\n');
    out.push_str(
        "transport guard offered conns  acked/s    stored/s    indexed/s  refused bklgMaxMB bklgEndMB bklgMB/min  p50 ms   p99 ms   max ms  lag s lag s/min drain s srvCPU/100k srvCPU+drain genCPU/100k cores\n",
    );
    // WIT_LOAD_MAX=0 leaves out the closed-loop runs.
    let rates = match env_u64("WIT_LOAD_MAX", 1) {
        0 => vec![env_u64("WIT_LOAD_RATE", 150_000)],
        _ => vec![0, env_u64("WIT_LOAD_RATE", 150_000)],
    };
    // WIT_LOAD_GUARD: `off` (the default), `on`, or `both` (each run without, then with).
    let guards: &[bool] = match std::env::var("WIT_LOAD_GUARD").as_deref() {
        Ok("on") => &[true],
        Ok("both") => &[false, true],
        _ => &[false],
    };
    for rate in rates {
        for transport in [Transport::Http, Transport::Grpc] {
            for &guard in guards {
                let row = run(transport, connections, rate, seconds, &bodies, guard);
                println!("{row}");
                out.push_str(&row);
                out.push('\n');
            }
        }
    }
    print!("{out}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    let _ = std::fs::create_dir_all(&path);
    if let Ok(mut f) = std::fs::File::create(path.join("serve-load.txt")) {
        let _ = f.write_all(out.as_bytes());
    }
}
