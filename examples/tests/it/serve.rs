//! `wit serve` as a child process: OTLP over HTTP and gRPC in, SQL over HTTP out, the
//! protocol's answers, overload, configuration errors and a clean stop.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};

mod access;
mod dead_letters;
mod idempotency;
mod kafka;
mod limits;
mod outage;

#[path = "../../../wit-tracker/tests/it/pg_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod pg_server;

#[path = "../../../wit-pipeline/tests/it/kafka_broker.rs"]
mod kafka_broker;

#[path = "../../../wit-store/tests/it/moto.rs"]
#[allow(dead_code, unreachable_pub)]
mod moto;

/// `google.rpc.Status`, as the server's error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up), handed out once each in this
    // process: no bind to port 0 (another harness's) and no outgoing connection is ever
    // given a port one of these servers owns, even while it is down between a SIGKILL and
    // its restart on the same ports (a race seen in CI).
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 12_000 + std::process::id() % 10_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 10_000, "out of test ports");
        let port = u16::try_from(base + n).expect("port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `wit serve` over a directory of its own; stopped with SIGTERM on drop.
struct Server {
    child: Option<Child>,
    /// Variables the server process gets (for `${ENV}` in its configuration).
    env: Vec<(String, String)>,
    dir: PathBuf,
    config: PathBuf,
    http: u16,
    grpc: u16,
    api: u16,
    log: PathBuf,
}

impl Server {
    /// Starts a server in `dir` with the YAML `extra` appended to the ports and data dir.
    fn start(dir: &Path, extra: &str) -> Server {
        let mut server = Server::start_stopped(dir, extra);
        server.spawn();
        server
    }

    /// A server configured as [`Server::start`] does, not started yet.
    fn start_stopped(dir: &Path, extra: &str) -> Server {
        let (http, grpc, api) = (free_port(), free_port(), free_port());
        let config = dir.join("wit.yaml");
        std::fs::write(
            &config,
            format!(
                "data_dir: {}\nlisten:\n  otlp_http: 127.0.0.1:{http}\n  otlp_grpc: 127.0.0.1:{grpc}\n  api: 127.0.0.1:{api}\n{extra}",
                dir.join("data").display()
            ),
        )
        .expect("config");
        Server {
            child: None,
            env: Vec::new(),
            dir: dir.to_owned(),
            config,
            http,
            grpc,
            api,
            log: dir.join("server.log"),
        }
    }

    /// [`Server::start`], with `env` in the server's environment.
    fn start_with_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Server {
        let mut server = Server::start_stopped(dir, extra);
        server.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_wit"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start wit serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut r) = agent().get(&self.api_url("/health/ready")).call()
                && r.status() == 200
            {
                let body: Value = serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
                assert_eq!(body["status"], "ready");
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                panic!("wit serve exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "not ready in 60 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    fn otlp_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// SIGTERM, then waits for the exit; returns its status code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("wit serve did not stop in 60 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A gRPC client of the server's `TraceService`.
    async fn trace_client(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc))
            .await
            .expect("connect")
    }

    /// `GET /metrics`: the Prometheus text.
    fn metrics(&self) -> String {
        agent()
            .get(&self.api_url("/metrics"))
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("body")
    }

    /// SQL as `tenant` (the default tenant when `None`): the JSON answer.
    fn sql(&self, tenant: Option<&str>, sql: &str) -> Value {
        let mut request = agent().post(&self.api_url("/api/v1/query"));
        if let Some(t) = tenant {
            request = request.header("x-wit-tenant", t);
        }
        let mut response = request.send(sql).expect("query");
        let body = response.body_mut().read_to_string().expect("body");
        assert_eq!(response.status(), 200, "{sql}: {body}");
        serde_json::from_str(&body).expect("json")
    }

    /// Waits until `sql` (a count) answers `n`.
    fn wait_count(&self, tenant: Option<&str>, sql: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.sql(tenant, sql)["rows"][0]["n"].as_u64();
            if got == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "{sql}: {got:?}, expected {n}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A runtime for the tests' gRPC clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

const T0: u64 = 1_764_547_200_000_000_000;

/// `n` spans named `{prefix}-{i}` of service `svc`, in a trace of the prefix's own.
fn spans(prefix: &str, n: usize) -> ExportTraceServiceRequest {
    let hash = prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let trace_id = [hash.to_be_bytes(), [7; 8]].concat();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: trace_id.clone(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("{prefix}-{i}"),
                        kind: 2,
                        start_time_unix_nano: T0 + i as u64,
                        end_time_unix_nano: T0 + i as u64 + 1_000_000,
                        attributes: vec![string("http.method", "GET")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post(url: &str, content_type: &str, gzip: bool, body: &[u8]) -> (u16, String, Option<String>, Vec<u8>) {
    let mut request = agent().post(url).header("content-type", content_type);
    let body = if gzip {
        request = request.header("content-encoding", "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(body).expect("gzip");
        encoder.finish().expect("gzip")
    } else {
        body.to_vec()
    };
    let mut response = request.send(&body[..]).expect("post");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let mut bytes = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut bytes).expect("body");
    (response.status().as_u16(), content_type, retry_after, bytes)
}

#[test]
fn otlp_over_http_and_grpc_is_read_back_with_sql() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), "");
    let traces = server.otlp_url("/v1/traces");

    // Protobuf, answered in protobuf (an empty ExportTraceServiceResponse).
    let (status, content_type, _, body) = post(
        &traces,
        "application/x-protobuf",
        false,
        &spans("pb", 3).encode_to_vec(),
    );
    assert_eq!((status, content_type.as_str()), (200, "application/x-protobuf"));
    assert!(body.is_empty(), "no partial_success: {body:?}");
    // The same, gzip.
    let (status, ..) = post(&traces, "application/x-protobuf", true, &spans("gz", 2).encode_to_vec());
    assert_eq!(status, 200);
    // OTLP/JSON, answered in JSON; int64 as strings and as numbers.
    let json_strings = serde_json::to_vec(&spans("js", 2)).expect("json");
    let (status, content_type, _, body) = post(&traces, "application/json", false, &json_strings);
    assert_eq!(
        (status, content_type.as_str(), &body[..]),
        (200, "application/json", &b"{}"[..])
    );
    let numbers = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "jn-0",
        "startTimeUnixNano": 1764547200000000000u64, "endTimeUnixNano": 1764547200250000000u64,
        "attributes": [{"key": "n", "value": {"intValue": 42}}]}]}]}]});
    let (status, ..) = post(
        &traces,
        "application/json; charset=utf-8",
        true,
        numbers.to_string().as_bytes(),
    );
    assert_eq!(status, 200);

    // gRPC, gzip.
    let runtime = runtime();
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
            .await
            .expect("connect")
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        client.export(spans("grpc", 4)).await.expect("export");
    });

    // Logs and metrics over HTTP.
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: T0,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("card declined".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, ..) = post(
        &server.otlp_url("/v1/logs"),
        "application/x-protobuf",
        false,
        &logs.encode_to_vec(),
    );
    assert_eq!(status, 200);
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: T0,
                            value: Some(number_data_point::Value::AsInt(12)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, ..) = post(
        &server.otlp_url("/v1/metrics"),
        "application/json",
        false,
        &serde_json::to_vec(&metrics).expect("json"),
    );
    assert_eq!(status, 200);

    // NDJSON events per stream.
    let events = "{\"timestamp\": \"2025-12-01T00:00:00Z\", \"user\": \"ann\", \"amount\": 12.5}\n\
                  {\"timestamp\": 1764547201000, \"user\": \"bob\", \"amount\": 3}\n";
    let (status, _, _, body) = post(
        &server.otlp_url("/v1/events/payments"),
        "application/x-ndjson",
        false,
        events.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json"),
        json!({"accepted": 2})
    );
    let (status, _, _, body) = post(
        &server.otlp_url("/v1/events/signups"),
        "application/x-ndjson",
        true,
        b"{\"timestamp\": 1764547202000, \"user\": \"cy\"}",
    );
    assert_eq!(
        (status, serde_json::from_slice::<Value>(&body).expect("json")),
        (200, json!({"accepted": 1}))
    );
    let (status, _, _, body) = post(
        &server.otlp_url("/v1/events/payments"),
        "application/x-ndjson",
        false,
        b"{\"no time\": 1}\n{\"no time either\": 2}\n",
    );
    // Lines without their time are kept as dead letters, not taken; the answer says so.
    let answer: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (status, &answer["accepted"], &answer["dead_lettered"]),
        (200, &json!(0), &json!(2)),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 1: missing time field")),
        "{answer}"
    );
    let (status, ..) = post(
        &server.otlp_url("/v1/events/bad%20name"),
        "application/x-ndjson",
        false,
        events.as_bytes(),
    );
    assert_eq!(status, 400);
    server.wait_count(None, "SELECT count(*) AS n FROM events", 3);
    server.wait_count(
        None,
        "SELECT count(*) AS n FROM dead_letters WHERE stream = 'payments'",
        2,
    );
    assert_eq!(
        server.sql(None, "SELECT _stream, user, amount FROM events ORDER BY timestamp")["rows"],
        json!([
            {"_stream": "payments", "user": "ann", "amount": 12.5},
            {"_stream": "payments", "user": "bob", "amount": 3.0},
            {"_stream": "signups", "user": "cy"},
        ])
    );

    // Acknowledged means readable within a second: the hot tier answers before any file is
    // published.
    server.wait_count(None, "SELECT count(*) AS n FROM spans", 12);
    let rows = server.sql(
        None,
        "SELECT name, span_kind(kind) AS kind, attr(attributes, 'http.method') AS method, \
         CAST(timestamp AS BIGINT) AS t FROM spans WHERE name LIKE 'pb-%' ORDER BY name",
    );
    assert_eq!(
        rows["rows"],
        json!([
            {"name": "pb-0", "kind": "server", "method": "GET", "t": T0},
            {"name": "pb-1", "kind": "server", "method": "GET", "t": T0 + 1},
            {"name": "pb-2", "kind": "server", "method": "GET", "t": T0 + 2},
        ])
    );
    let counts = server.sql(
        None,
        "SELECT split_part(name, '-', 1) AS p, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        counts["rows"],
        json!([{"p": "grpc", "n": 4}, {"p": "gz", "n": 2}, {"p": "jn", "n": 1}, {"p": "js", "n": 2}, {"p": "pb", "n": 3}])
    );
    assert_eq!(
        server.sql(
            None,
            "SELECT attr_int(attributes, 'n') AS n FROM spans WHERE name = 'jn-0'"
        )["rows"],
        json!([{"n": 42}])
    );
    assert_eq!(
        server.sql(None, "SELECT severity_text, body['str'] AS body FROM logs")["rows"],
        json!([{"severity_text": "ERROR", "body": "card declined"}])
    );
    assert_eq!(
        server.sql(None, "SELECT metric_name, value_int FROM metrics")["rows"],
        json!([{"metric_name": "queue.depth", "value_int": 12}])
    );
    // Another tenant sees none of it.
    assert_eq!(
        server.sql(Some("other"), "SELECT count(*) AS n FROM spans")["rows"],
        json!([{"n": 0}])
    );
    // Pages of 5, newest first, resume at their cursor until the last.
    let mut names = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..10 {
        let mut response = agent()
            .post(&server.api_url("/api/v1/page"))
            .header("content-type", "application/json")
            .send(json!({"table": "spans", "limit": 5, "cursor": cursor}).to_string())
            .expect("page");
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
        assert_eq!(response.status(), 200, "{body}");
        let rows = body["rows"].as_array().expect("rows");
        assert!(rows.len() <= 5);
        names.extend(rows.iter().map(|r| r["name"].as_str().expect("name").to_string()));
        cursor = body["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(names.len(), 12, "{names:?}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 12, "no row twice");
    let mut response = agent()
        .post(&server.api_url("/api/v1/page"))
        .header("content-type", "application/json")
        .send(json!({"table": "spans", "cursor": "v1.nonsense"}).to_string())
        .expect("page");
    assert_eq!(response.status(), 400);
    assert!(response.body_mut().read_to_string().expect("body").contains("cursor"));
    // A query error names its position.
    let mut response = agent()
        .post(&server.api_url("/api/v1/query"))
        .send("SELECT count(* FROM spans")
        .expect("query");
    assert_eq!(response.status(), 400);
    assert!(response.body_mut().read_to_string().expect("body").contains("line 1"));
    // Arrow IPC on request.
    let mut response = agent()
        .post(&server.api_url("/api/v1/query"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .send("SELECT name FROM spans")
        .expect("query");
    assert_eq!(response.status(), 200);
    let mut bytes = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut bytes).expect("body");
    let reader = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None).expect("arrow stream");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 12);
}

#[test]
fn the_otlp_answers_follow_the_specification() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), "otlp:\n  max_message_bytes: 4096\n");
    let traces = server.otlp_url("/v1/traces");
    let good = spans("ok", 1).encode_to_vec();

    // Another content type: 415, with a Status body.
    let (status, content_type, _, body) = post(&traces, "text/plain", false, &good);
    assert_eq!((status, content_type.as_str()), (415, "application/json"));
    let body: Value = serde_json::from_slice(&body).expect("json status");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("text/plain")),
        "{body}"
    );
    // An unknown content encoding: 415.
    let mut response = agent()
        .post(&traces)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .send(&good[..])
        .expect("post");
    assert_eq!(response.status(), 415);
    let _ = response.body_mut().read_to_vec();

    // Bad data: 400 with a google.rpc.Status in the request's encoding, naming the field.
    let mut bad = spans("bad", 1);
    bad.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    let (status, content_type, retry, body) = post(&traces, "application/x-protobuf", false, &bad.encode_to_vec());
    assert_eq!(
        (status, content_type.as_str(), retry),
        (400, "application/x-protobuf", None)
    );
    let rpc = RpcStatus::decode(&body[..]).expect("google.rpc.Status");
    assert_eq!(rpc.code, 3, "INVALID_ARGUMENT");
    assert!(rpc.message.contains("trace"), "{}", rpc.message);
    let (status, _, _, body) = post(&traces, "application/json", false, b"{\"resourceSpans\": 7}");
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json")["code"], 3);
    let (status, ..) = post(&traces, "application/x-protobuf", true, b"not gzip at all");
    assert_eq!(status, 400, "a body that is not gzip");

    // Over the limit after decompression: 413, also when the compressed body is small.
    let big = spans(&"x".repeat(200), 40).encode_to_vec();
    assert!(big.len() > 4096);
    let (status, ..) = post(&traces, "application/x-protobuf", false, &big);
    assert_eq!(status, 413);
    let (status, ..) = post(&traces, "application/x-protobuf", true, &big);
    assert_eq!(status, 413, "the limit applies after decompression");

    // gRPC: bad data is INVALID_ARGUMENT with a BadRequest detail; oversize is refused.
    let runtime = runtime();
    runtime.block_on(async {
        let mut client = server.trace_client().await;
        let status = client.export(bad.clone()).await.expect_err("bad data");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(!status.details().is_empty(), "a BadRequest detail");
        let status = client.export(spans(&"x".repeat(200), 40)).await.expect_err("too large");
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    });

    // Nothing refused was stored; the good request was.
    let (status, ..) = post(&traces, "application/x-protobuf", false, &good);
    assert_eq!(status, 200);
    server.wait_count(None, "SELECT count(*) AS n FROM spans", 1);
    assert_eq!(
        server.sql(None, "SELECT name FROM spans")["rows"],
        json!([{"name": "ok-0"}])
    );
    // The span at fault, refused with 400 over HTTP and gRPC, is kept as a dead letter each
    // time, with why.
    server.wait_count(
        None,
        "SELECT count(*) AS n FROM dead_letters WHERE record LIKE '%bad-0%' AND reason LIKE '%traceId%'",
        2,
    );
    // Other methods and paths.
    let response = agent().get(&traces).call().expect("get");
    assert_eq!(response.status(), 405);

    // Every answer above is counted by outcome.
    let text = server.metrics();
    let requests = |labels: &[&str]| metric(&text, "wit_otlp_requests_total", labels);
    assert_eq!(
        requests(&["transport=\"http\"", "outcome=\"unsupported\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests(&["transport=\"http\"", "outcome=\"invalid\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        requests(&["transport=\"http\"", "outcome=\"too_large\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests(&["transport=\"http\"", "outcome=\"accepted\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests(&["transport=\"grpc\"", "outcome=\"invalid\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "wit_otlp_records_total", &["outcome=\"accepted\""]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "wit_otlp_ack_seconds_count", &["signal=\"traces\""]),
        Some(1.0)
    );
    assert!(
        metric(&text, "wit_wal_sync_seconds_count", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "wit_ready", &[]), Some(1.0));
    let batches: f64 = Stage::iter()
        .filter_map(|stage| metric(&text, "wit_batches", &[&format!("stage=\"{stage}\"")]))
        .sum();
    // The good request's batch, and the dead letters' (the two refusals' letters may share
    // a batch).
    assert!((2.0..=3.0).contains(&batches), "{batches} batches: {text}");
}

#[test]
fn records_at_fault_are_left_out_and_reported_in_partial_success() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), "");
    // Three spans, the middle one with a trace id of 3 bytes.
    let partly = |prefix: &str| {
        let mut request = spans(prefix, 3);
        request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
        request
    };

    // OTLP/HTTP protobuf: 200 with an ExportTraceServiceResponse saying one span was refused.
    let traces = server.otlp_url("/v1/traces");
    let (status, content_type, _, body) = post(&traces, "application/x-protobuf", false, &partly("pb").encode_to_vec());
    assert_eq!((status, content_type.as_str()), (200, "application/x-protobuf"));
    let answer = ExportTraceServiceResponse::decode(&body[..]).expect("response");
    let partial = answer.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("traceId"), "{}", partial.error_message);

    // OTLP/JSON: the same, answered in JSON with the count as a string (proto3's int64).
    let mut json_request = serde_json::to_value(partly("json")).expect("json");
    json_request["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["traceId"] = json!("010203");
    let (status, content_type, _, body) = post(&traces, "application/json", false, json_request.to_string().as_bytes());
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let answer: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");

    // Logs: a span id of 2 bytes in one of two records.
    let mut logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..2)
                    .map(|i| LogRecord {
                        time_unix_nano: T0 + i,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("line-{i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    logs.resource_logs[0].scope_logs[0].log_records[0].span_id = vec![9, 9];
    let (status, _, _, body) = post(
        &server.otlp_url("/v1/logs"),
        "application/x-protobuf",
        false,
        &logs.encode_to_vec(),
    );
    assert_eq!(status, 200);
    let answer = ExportLogsServiceResponse::decode(&body[..]).expect("response");
    assert_eq!(answer.partial_success.expect("partial").rejected_log_records, 1);

    // gRPC: the response's partial_success.
    let runtime = runtime();
    runtime.block_on(async {
        let mut client = server.trace_client().await;
        let answer = client.export(partly("grpc")).await.expect("partly taken").into_inner();
        let partial = answer.partial_success.expect("partial_success");
        assert_eq!(partial.rejected_spans, 1);
        assert!(
            partial.error_message.contains("1 of 3 spans rejected"),
            "{}",
            partial.error_message
        );
        // Everything accepted: no partial_success.
        let answer = client.export(spans("whole", 2)).await.expect("taken").into_inner();
        assert_eq!(answer.partial_success, None);
    });

    // What was taken is stored, and nothing of what was refused.
    server.wait_count(None, "SELECT count(*) AS n FROM spans", 8);
    assert_eq!(
        server.sql(None, "SELECT name FROM spans ORDER BY name")["rows"],
        json!([
            {"name": "grpc-0"}, {"name": "grpc-2"}, {"name": "json-0"}, {"name": "json-2"},
            {"name": "pb-0"}, {"name": "pb-2"}, {"name": "whole-0"}, {"name": "whole-1"},
        ])
    );
    server.wait_count(None, "SELECT count(*) AS n FROM logs", 1);
    assert_eq!(
        server.sql(None, "SELECT body FROM logs")["rows"],
        json!([{"body": {"str": "line-1", "type": 1}}])
    );
    let text = server.metrics();
    assert_eq!(
        metric(
            &text,
            "wit_otlp_records_total",
            &["signal=\"traces\"", "outcome=\"rejected\""]
        ),
        Some(3.0),
        "{text}"
    );
}

/// Prints the sorted span names of the Parquet objects `argv[2:]` of bucket `wit` on the
/// S3 server at port `argv[1]`.
const READ_BUCKET: &str = r#"
import io, os, sys, boto3, pyarrow.parquet as pq
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:" + sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
names = []
for key in sys.argv[2:]:
    body = s3.get_object(Bucket="wit", Key=key)["Body"].read()
    names += pq.read_table(io.BytesIO(body), use_threads=False).column("name").to_pylist()
print(" ".join(sorted(names)), flush=True)
# Without waiting for pyarrow's and boto3's threads at exit (which can abort the interpreter).
os._exit(0)
"#;

#[test]
fn postgresql_tracker_and_s3_storage_by_configuration() {
    let Some(pg) = pg_server::PgServer::shared() else {
        return;
    };
    if !moto::Moto::available() {
        return;
    }
    let s3 = moto::Moto::start();
    let tracker = pg.fresh_schema("serve");
    let options: String = moto::options(s3.port)
        .into_iter()
        .map(|(k, v)| match k {
            // The secret from the environment, as a deployment would pass it.
            "aws_secret_access_key" => format!("    {k}: ${{WIT_TEST_S3_SECRET}}\n"),
            _ => format!("    {k}: \"{v}\"\n"),
        })
        .collect();
    let extra = format!(
        "tracker:\n  kind: postgres\n  url: \"{tracker}\"\nstorage:\n  url: s3://wit/serve\n  options:\n{options}pipeline:\n  file_max_age_ms: 300\n"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let mut server = Server::start_with_env(tmp.path(), &extra, &[("WIT_TEST_S3_SECRET", "test")]);
    let (status, ..) = post(
        &server.otlp_url("/v1/traces"),
        "application/x-protobuf",
        false,
        &spans("pg", 5).encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", server.log());
    server.wait_count(None, "SELECT count(*) AS n FROM spans", 5);

    // The batches and the files' catalog are in PostgreSQL, the files in the bucket.
    let schema = tracker
        .rsplit("search_path=")
        .next()
        .expect("schema")
        .trim_end_matches('\'');
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files = pg.psql("wit", &format!("SELECT count(*) FROM {schema}.stored_files"));
        if files.trim() != "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no file in the PostgreSQL catalog: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Read back from the bucket by boto3 and pyarrow: the catalog's files hold the five spans.
    let paths = pg.psql("wit", &format!("SELECT path FROM {schema}.stored_files"));
    let out = Command::new("python3")
        .args(["-c", READ_BUCKET, &s3.port.to_string()])
        .args(paths.lines().map(|p| format!("serve/{}", p.trim())))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pg-0 pg-1 pg-2 pg-3 pg-4");
    assert!(
        walk(&tmp.path().join("data"))
            .iter()
            .all(|p| p.extension().is_none_or(|e| e != "parquet")),
        "no Parquet file on the local disk"
    );
    // Staged under its own data directory, not in a /tmp directory another server of the
    // same node name would share (two such servers on one machine would lock each other out).
    assert!(
        tmp.path().join("data").join("staging").is_dir(),
        "{:?}",
        walk(tmp.path())
    );

    // Restarted, it finds its data where the configuration says.
    assert_eq!(server.stop(), Some(0), "{}", server.log());
    server.spawn();
    server.wait_count(None, "SELECT count(*) AS n FROM spans", 5);
    assert_eq!(
        server.sql(None, "SELECT name FROM spans ORDER BY name")["rows"],
        json!([{"name": "pg-0"}, {"name": "pg-1"}, {"name": "pg-2"}, {"name": "pg-3"}, {"name": "pg-4"}])
    );
}

/// The value of the sample of `name` whose labels include each of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (metric_name, rest) = series.split_once('{').unwrap_or((series, ""));
            metric_name == name && labels.iter().all(|label| rest.contains(label))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// The stage names, as the metrics label them.
struct Stage;

impl Stage {
    fn iter() -> impl Iterator<Item = &'static str> {
        [
            "CREATED",
            "WAL_WRITTEN",
            "SOURCE_COMMITTED",
            "INGESTED",
            "STORED",
            "INDEXED",
            "COMPLETED",
            "FAILED",
        ]
        .into_iter()
    }
}

#[test]
fn overload_is_retryable_and_what_was_acknowledged_is_stored() {
    let tmp = tempfile::tempdir().expect("tmp");
    // 1 KiB of unstored data at most, and files published only at shutdown: the first
    // request (larger than that) is taken, every later one finds the server full.
    let extra = "otlp:\n  retry_after_seconds: 7\npipeline:\n  max_unstored_bytes: 1024\n  batch_max_bytes: 1024\n  \
                 file_max_age_ms: 600000\n  batch_max_age_ms: 10\nmonitor:\n  stuck_after_minutes: 0\n";
    let mut server = Server::start(tmp.path(), extra);
    let traces = server.otlp_url("/v1/traces");
    let (status, ..) = post(
        &traces,
        "application/x-protobuf",
        false,
        &spans("first", 30).encode_to_vec(),
    );
    assert_eq!(status, 200);
    let (status, content_type, retry, body) = post(
        &traces,
        "application/json",
        false,
        &serde_json::to_vec(&spans("second", 1)).expect("json"),
    );
    assert_eq!(
        (status, content_type.as_str(), retry.as_deref()),
        (503, "application/json", Some("7"))
    );
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json")["code"], 8);
    let runtime = runtime();
    runtime.block_on(async {
        let mut client = server.trace_client().await;
        let status = client.export(spans("third", 1)).await.expect_err("full");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let details = tonic_types::StatusExt::get_error_details(&status);
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(7)),
            "RetryInfo"
        );
    });
    drop(runtime); // closes the gRPC connection

    // The batch monitor sees the acknowledged batch waiting for its file.
    let get = |path: &str| {
        let mut response = agent().get(&server.api_url(path)).call().expect("get");
        let body = response.body_mut().read_to_string().expect("body");
        (
            response.status().as_u16(),
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    // (The tracker's stages follow the WAL: the processor marks a batch when it reads it.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (status, listed) = get("/api/batch-monitor/batches");
        assert_eq!(status, 200);
        if listed["batches"][0]["stage"] == "INGESTED" || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        listed["count"].as_u64(),
        Some(1),
        "{listed}: {:?}",
        get("/api/batch-monitor/status")
    );
    let batch = &listed["batches"][0];
    assert_eq!(
        (batch["tenant"].as_str(), batch["signal"].as_str()),
        (Some("default"), Some("traces"))
    );
    assert!(
        matches!(batch["stage"].as_str(), Some("WAL_WRITTEN" | "INGESTED")),
        "{batch}"
    );
    let id = batch["id"].as_str().expect("id");
    let (status, one) = get(&format!("/api/batch-monitor/batches/{id}"));
    assert_eq!((status, &one["id"]), (200, &batch["id"]));
    assert!(one["stage_times_ms"]["WAL_WRITTEN"].as_u64().is_some(), "{one}");
    let (status, by_stage) = get(&format!(
        "/api/batch-monitor/batches?stage={}",
        batch["stage"].as_str().unwrap_or("")
    ));
    assert_eq!((status, by_stage["count"].as_u64()), (200, Some(1)));
    let (status, none) = get("/api/batch-monitor/batches?stage=STORED");
    assert_eq!((status, none["count"].as_u64()), (200, Some(0)));
    let (status, alerts) = get("/api/batch-monitor/alerts");
    assert_eq!(status, 200);
    assert_eq!(alerts["stuck"][0]["id"], batch["id"], "{alerts}");
    assert_eq!(alerts["failed"], json!([]));
    let (status, overview) = get("/api/batch-monitor/status");
    assert_eq!(status, 200);
    assert_eq!(overview["total"], 1, "{overview}");
    assert_eq!(
        overview["stages"][batch["stage"].as_str().unwrap_or("")],
        1,
        "{overview}"
    );
    assert_eq!(overview["throughput"][0]["tenant"], "default");
    assert_eq!(overview["throughput"][0]["messages"], 1);
    for (path, code) in [
        ("/api/batch-monitor/batches/not-an-id", 400),
        ("/api/batch-monitor/batches/0190b6a4-6f4e-7000-8000-000000000000", 404),
        ("/api/batch-monitor/batches?stage=COMPLETED", 400),
        ("/api/batch-monitor/batches?stage=LOST", 400),
    ] {
        assert_eq!(get(path).0, code, "{path}");
    }
    // A clean stop stores what was acknowledged; a restart reads it from the files.
    assert_eq!(server.stop(), Some(0), "{}", server.log());
    assert!(server.log().contains("stopped cleanly"), "{}", server.log());
    let files = walk(&server.dir.join("data").join("data"));
    assert!(
        files.iter().any(|f| f.extension().is_some_and(|e| e == "parquet")),
        "{files:?}"
    );
    server.spawn();
    server.wait_count(None, "SELECT count(*) AS n FROM spans WHERE name LIKE 'first-%'", 30);
    server.wait_count(None, "SELECT count(*) AS n FROM spans", 30);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn configuration_errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tmp");
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let run = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_wit"))
            .args(["serve", "--check", "--config"])
            .arg(path)
            .env_remove("WIT_TEST_UNSET")
            .env("WIT_TEST_SECRET", "hunter2")
            .output()
            .expect("run")
    };
    let out = run(&write("typo.yaml", "otlp:\n  max_mesage_bytes: 10\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_mesage_bytes"),
        "{out:?}"
    );
    let out = run(&write("unset.yaml", "node: ${WIT_TEST_UNSET}\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WIT_TEST_UNSET"),
        "{out:?}"
    );
    // Keys: each error names the entry and what is wrong with it.
    for (text, names) in [
        ("sha256: abc\n      scopes: [read]", "tenants.keys[0].sha256"),
        ("sha256: {H}\n      scopes: []", "tenants.keys[0].scopes"),
        ("sha256: {H}\n      scopes: [root]", "root"),
    ] {
        let text = text.replace("{H}", &"ab".repeat(32));
        let out = run(&write(
            "keys.yaml",
            &format!("tenants:\n  keys:\n    - tenant: acme\n      {text}\n"),
        ));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(names), "{names}: {out:?}");
    }
    let out = run(&write(
        "keys.yaml",
        &format!(
            "tenants:\n  keys:\n    - tenant: Not A Tenant!\n      sha256: {}\n      scopes: [read]\n",
            "ab".repeat(32)
        ),
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenants.keys[0].tenant"),
        "{out:?}"
    );
    let out = run(&write(
        "limits.yaml",
        "tenants:\n  tenant_limits:\n    'Not A Tenant!':\n      requests_per_second: 1\n",
    ));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenants.tenant_limits"),
        "{out:?}"
    );
    // A Kafka topic rule that cannot route, or whose pattern is not one, is named.
    for (rule, says) in [
        (
            "subscription: logs\n      signal: logs\n      format: otlp_json",
            "no tenant",
        ),
        (
            "subscription: ^(\n      template: '{signal}.{tenant}'\n      format: otlp_json",
            "not a regular expression",
        ),
        (
            "subscription: x\n      tenant: acme\n      signal: traces\n      format: ndjson",
            "traces cannot be read from",
        ),
        (
            "subscription: x\n      template: '{a'\n      format: ndjson",
            "kafka.topics[0]",
        ),
    ] {
        let out = run(&write(
            "kafka.yaml",
            &format!("kafka:\n  brokers: 127.0.0.1:9\n  topics:\n    - {rule}\n"),
        ));
        assert_eq!(out.status.code(), Some(2), "{rule}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{says}: {out:?}");
    }
    // A schema that is not one, or refers outside itself, is named.
    for (schema, says) in [
        ("schema: {type: 12}", "not a valid JSON Schema"),
        (
            "schema: {$ref: 'https://example.com/s.json'}",
            "not a valid JSON Schema",
        ),
        ("schema_file: /nonexistent.json", "cannot read"),
        ("", "no `schema` nor `schema_file`"),
    ] {
        let out = run(&write(
            "schema.yaml",
            &format!("events:\n  schemas:\n    - stream: orders\n      version: 2\n      {schema}\n"),
        ));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("events.schemas[0] (stream `orders`)") && stderr.contains(says),
            "{schema}: {stderr}"
        );
    }
    let out = run(&write(
        "env.yaml",
        "tracker:\n  kind: postgres\n  url: postgres://wit:${WIT_TEST_SECRET}@127.0.0.1/wit\n",
    ));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("postgres://wit:hunter2@127.0.0.1/wit"));
    // The documented example file is valid as it stands, and shows every key.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit.yaml");
    let text = std::fs::read_to_string(&example).expect("wit.yaml");
    for key in [
        "data_dir",
        "node",
        "shutdown_grace_ms",
        "listen",
        "otlp_grpc",
        "otlp_http",
        "api",
        "tenants",
        "header",
        "default",
        "keys",
        "sha256",
        "scopes",
        "limits",
        "tenant_limits",
        "operator",
        "requests_per_second",
        "bytes_per_second",
        "otlp",
        "max_message_bytes",
        "ack_level",
        "ack_timeout_ms",
        "retry_after_seconds",
        "cors_allowed_origins",
        "events",
        "schemas",
        "stream",
        "version",
        "schema_file",
        "pipeline",
        "max_unstored_bytes",
        "max_unstored_bytes_per_tenant",
        "idempotency_window_seconds",
        "batch_max_parts",
        "batch_max_bytes",
        "batch_max_age_ms",
        "file_max_age_ms",
        "file_max_bytes",
        "indexing",
        "wal_segment_bytes",
        "hot_tier_bytes",
        "processing_interval_ms",
        "tracker",
        "kind",
        "path",
        "url",
        "storage",
        "options",
        "retries",
        "retry_timeout_ms",
        "query",
        "target_partitions",
        "memory_limit_bytes",
        "max_rows",
        "kafka",
        "brokers",
        "group",
        "topics",
        "batch_size",
        "batch_timeout_ms",
        "max_size_bytes",
        "session_timeout_ms",
        "revoke_patience_ms",
    ] {
        assert!(text.contains(&format!("{key}:")), "wit.yaml shows `{key}`");
    }
    let out = run(&example);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The values it documents are the defaults: it configures what an empty file does.
    let empty = run(&write("empty.yaml", ""));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&empty.stdout),
        "examples/wit.yaml and the defaults differ"
    );
    // Flags override the file.
    let out = Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(["serve", "--check", "--api", "127.0.0.1:9999", "--config"])
        .arg(&example)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9999"),
        "{out:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(["serve", "--api", "nonsense"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// What the crash test's client knows of one request.
#[derive(Default, Clone)]
struct Sent {
    /// Attempts that got no answer (the connection failed): each may or may not have been
    /// stored before the crash.
    unanswered: u32,
    acknowledged: bool,
    /// Acknowledged as a repeat of an attempt taken before (`Idempotent-Replayed: true`).
    replayed: bool,
}

#[test]
fn acknowledged_spans_survive_sigkill_and_are_stored_once_unless_resent() {
    sigkills_while_clients_resend(false);
}

/// The same with an `Idempotency-Key` per request: a resend after a lost answer is taken at
/// most once, so every span is stored exactly once. Acknowledged once stored, so that kills
/// often fall between a request taken (durable in the WAL) and its answer.
#[test]
fn with_idempotency_keys_every_span_survives_sigkill_and_is_stored_exactly_once() {
    sigkills_while_clients_resend(true);
}

/// Two clients send requests of unique spans, each retried until acknowledged (under an
/// idempotency key per request when `idempotent`), while the server is killed with SIGKILL
/// 12 times and started again; then an independent reader counts every span in the files.
fn sigkills_while_clients_resend(idempotent: bool) {
    const REQUESTS: usize = 400;
    const SPANS: usize = 5;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut extra = "pipeline:\n  batch_max_age_ms: 5\n  file_max_age_ms: 200\nshutdown_grace_ms: 2000\n".to_owned();
    if idempotent {
        extra.push_str("otlp:\n  ack_level: stored\n");
    }
    let mut server = Server::start(tmp.path(), &extra);
    let url = server.otlp_url("/v1/traces");
    // Two clients, each sending its requests in order and retrying each until it is
    // acknowledged, as an SDK's exporter does.
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut sent = vec![Sent::default(); REQUESTS];
                for (r, record) in sent.iter_mut().enumerate().skip(c).step_by(2) {
                    let body = spans(&format!("r{r}"), SPANS).encode_to_vec();
                    let mut attempts = 0;
                    while !record.acknowledged {
                        attempts += 1;
                        assert!(attempts < 5_000, "request r{r} never acknowledged");
                        let mut request = agent().post(&url).header("content-type", "application/x-protobuf");
                        if idempotent {
                            request = request.header("idempotency-key", format!("\"request-{r}\""));
                        }
                        let answer = request.send(&body[..]);
                        match answer {
                            Ok(response) if response.status() == 200 => {
                                record.acknowledged = true;
                                record.replayed = response.headers().contains_key("idempotent-replayed");
                            }
                            // Refused (recovering, full): nothing was taken; send again.
                            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                            Err(_) => {
                                record.unanswered += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
                sent
            })
        })
        .collect();
    // Kill it at random moments while they send, and start it again.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..12 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 400));
        let mut child = server.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        server.spawn();
    }
    // The clients finish against the last start.
    let mut sent = vec![Sent::default(); REQUESTS];
    for client in clients {
        for (r, record) in client.join().expect("client").into_iter().enumerate() {
            if record.acknowledged {
                sent[r] = record;
            }
        }
    }
    assert!(
        sent.iter().all(|s| s.acknowledged),
        "every request was acknowledged in the end"
    );
    assert_eq!(server.stop(), Some(0), "{}", server.log());

    // An independent reader: the files the tracker's catalog lists, read with parquet's own
    // Arrow reader.
    let counts = stored_names(&server.dir.join("data"));
    let mut duplicated = 0;
    for (r, record) in sent.iter().enumerate() {
        for j in 0..SPANS {
            let n = counts.get(&format!("r{r}-{j}")).copied().unwrap_or(0);
            assert!(n >= 1, "span r{r}-{j} was acknowledged and is missing");
            if idempotent {
                assert_eq!(
                    n, 1,
                    "span r{r}-{j} is stored {n} times; its request was resent {} times unanswered, under one key",
                    record.unanswered
                );
            }
            assert!(
                n <= 1 + record.unanswered as usize,
                "span r{r}-{j} is stored {n} times, but its request was sent {} times unanswered",
                record.unanswered
            );
            duplicated += usize::from(n > 1);
        }
    }
    let unanswered: u32 = sent.iter().map(|s| s.unanswered).sum();
    assert!(unanswered > 0, "the kills interrupted requests in flight");
    let replayed = sent.iter().filter(|s| s.replayed).count();
    if idempotent {
        // Without the keys, each of these would be stored twice.
        assert!(replayed > 0, "some resends came after their request was taken");
    } else {
        assert_eq!(replayed, 0, "no key, no replay");
    }
    println!(
        "{REQUESTS} requests (idempotency keys: {idempotent}); {unanswered} attempts unanswered; {replayed} answered as repeats; {duplicated} spans stored twice after a resend"
    );
    // SQL says the same.
    server.spawn();
    let total: usize = counts.values().sum();
    server.wait_count(None, "SELECT count(*) AS n FROM spans", total as u64);
}

/// How many times each span name is in the published files of the default tenant.
fn stored_names(data_dir: &Path) -> std::collections::HashMap<String, usize> {
    use arrow::array::{Array, AsArray};
    use wit_store::FileCatalog;
    let tracker = wit_tracker::SqliteTracker::open(&data_dir.join("tracker.db"), Default::default()).expect("tracker");
    let tenant = wit_batch::Tenant::try_new("default").expect("tenant");
    let mut counts = std::collections::HashMap::new();
    for file in tracker.list(&tenant, wit_batch::Signal::Traces, None).expect("list") {
        let path = data_dir.join("data").join(&file.path);
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .expect("parquet");
        let index = builder.schema().index_of("name").expect("name column");
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
        for batch in builder.with_projection(mask).build().expect("reader") {
            let column =
                arrow::compute::cast(batch.expect("batch").column(0), &arrow::datatypes::DataType::Utf8).expect("text");
            let names = column.as_string::<i32>();
            for i in 0..names.len() {
                *counts.entry(names.value(i).to_string()).or_default() += 1;
            }
        }
    }
    counts
}

/// Whether the OpenTelemetry Python SDK is installed; without it the SDK test is skipped,
/// unless `WIT_REQUIRE_OTEL_SDK=1` (as in CI) makes its absence a failure.
fn otel_sdk_available() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("WIT_REQUIRE_OTEL_SDK").as_deref() != Ok("1"),
            "WIT_REQUIRE_OTEL_SDK=1 but the OpenTelemetry SDK is missing: pip install -r .ci/requirements.txt"
        );
        eprintln!("skipped: the OpenTelemetry Python SDK is missing (pip install -r .ci/requirements.txt)");
    }
    ok
}

/// Whether the OpenTelemetry JavaScript SDK is installed (`npm ci` in `tests/it/otel_js`,
/// which `.ci/run` does); its absence fails under `WIT_REQUIRE_OTEL_SDK=1`.
fn otel_js_available(dir: &Path) -> bool {
    let ok = dir
        .join("otel_js/node_modules/@opentelemetry/exporter-trace-otlp-http")
        .exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("WIT_REQUIRE_OTEL_SDK").as_deref() != Ok("1"),
            "WIT_REQUIRE_OTEL_SDK=1 but the OpenTelemetry JavaScript SDK is missing: npm ci in examples/tests/it/otel_js"
        );
        eprintln!(
            "skipped OTLP/HTTP JSON: the OpenTelemetry JavaScript SDK is missing (npm ci in examples/tests/it/otel_js)"
        );
    }
    ok
}

#[test]
fn the_opentelemetry_python_and_javascript_sdks_export_and_sql_reads_every_record_back() {
    if !otel_sdk_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), "");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let http = format!("http://127.0.0.1:{}", server.http);
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    // Python's exporters: OTLP/HTTP protobuf and gRPC; JavaScript's: OTLP/HTTP JSON.
    let mut runs = vec![
        (
            "http",
            "py-http",
            "python3",
            vec![
                dir.join("otel_sdk.py").display().to_string(),
                "http".into(),
                http.clone(),
            ],
        ),
        (
            "grpc",
            "py-grpc",
            "python3",
            vec![dir.join("otel_sdk.py").display().to_string(), "grpc".into(), grpc],
        ),
    ];
    if otel_js_available(&dir) {
        runs.push((
            "json",
            "js-json",
            "node",
            vec![dir.join("otel_js/otel_sdk.mjs").display().to_string(), http],
        ));
    }
    for (transport, service, program, mut args) in runs {
        args.push(service.to_string());
        let out = Command::new(program).args(&args).output().expect(program);
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");

        let spans = sent["spans"].as_array().expect("spans");
        server.wait_count(
            None,
            &format!("SELECT count(*) AS n FROM spans WHERE service_name = '{service}'"),
            spans.len() as u64,
        );
        for span in spans {
            let row = server.sql(
                None,
                &format!(
                    "SELECT name, encode(trace_id, 'hex') AS trace_id, CAST(timestamp AS BIGINT) AS start, \
                     CAST(duration AS BIGINT) AS duration, scope_name, scope_version, \
                     attr(resource_attributes, 'deployment.environment') AS env, \
                     attr(attributes, 'http.method') AS method, attr_int(attributes, 'items') AS items, \
                     attr_double(attributes, 'ratio') AS ratio, attr_bool(attributes, 'paid') AS paid, \
                     attr(attributes, 'card.brand') AS brand \
                     FROM spans WHERE service_name = '{service}' AND encode(span_id, 'hex') = '{}'",
                    span["span_id"].as_str().expect("span id")
                ),
            )["rows"]
                .clone();
            let start = span["start"].as_u64().expect("start");
            let attributes = &span["attributes"];
            let mut expected = json!({
                "name": span["name"], "trace_id": span["trace_id"], "start": start,
                "duration": span["end"].as_u64().expect("end") - start,
                "scope_name": "wit.test", "scope_version": "1.2.3", "env": "test",
            });
            for (key, column) in [
                ("http.method", "method"),
                ("items", "items"),
                ("ratio", "ratio"),
                ("paid", "paid"),
                ("card.brand", "brand"),
            ] {
                if let Some(value) = attributes.get(key) {
                    expected[column] = value.clone();
                }
            }
            assert_eq!(row, json!([expected]), "{transport}: span {}", span["name"]);
        }

        let logs = sent["logs"].as_array().expect("logs");
        let rows = server.sql(
            None,
            &format!(
                "SELECT body['str'] AS body, severity_number, severity_text, CAST(timestamp AS BIGINT) AS time, \
                 attr_int(attributes, 'order') AS \"order\" FROM logs WHERE service_name = '{service}' ORDER BY timestamp"
            ),
        )["rows"]
            .clone();
        assert_eq!(rows, Value::Array(logs.clone()), "{transport}: logs");

        // The SDK exports its cumulative metrics at the flush and again at shutdown: every
        // stored data point carries the values sent.
        let points = server.sql(
            None,
            &format!(
                "SELECT metric_name, metric_type_name(metric_type) AS kind, attr(attributes, 'region') AS region, \
                 value_int, count, sum FROM metrics WHERE service_name = '{service}' ORDER BY metric_name, region"
            ),
        )["rows"]
            .clone();
        let points = points.as_array().expect("rows");
        assert!(!points.is_empty(), "{transport}: no metrics");
        for point in points {
            let expected = match (point["metric_name"].as_str(), point["region"].as_str()) {
                (Some("orders"), Some("eu")) => {
                    json!({"metric_name": "orders", "kind": "sum", "region": "eu", "value_int": 5})
                }
                (Some("orders"), Some("us")) => {
                    json!({"metric_name": "orders", "kind": "sum", "region": "us", "value_int": 2})
                }
                (Some("latency"), None) => {
                    json!({"metric_name": "latency", "kind": "histogram", "count": 3, "sum": 15.0})
                }
                _ => panic!("{transport}: unexpected data point {point}"),
            };
            assert_eq!(point, &expected, "{transport}");
        }
        for name in ["orders", "latency"] {
            assert!(
                points.iter().any(|p| p["metric_name"] == name),
                "{transport}: {name} missing"
            );
        }
    }
}
