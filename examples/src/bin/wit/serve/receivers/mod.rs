//! The receivers: OTLP/HTTP (`otlp_http.rs`) and NDJSON events (`events.rs`) on the HTTP
//! port, OTLP/gRPC (`otlp_grpc.rs`) on its own, with what they share: [`ingest`] (decode
//! check, submit, acknowledgment, metrics), `google.rpc.Status` bodies in the request's
//! encoding and `Retry-After` on overload.

mod dead_letters;
mod events;
mod otlp_grpc;
mod otlp_http;
mod partial;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;
use wit_batch::{BatchKey, Compression, Part, PayloadFormat, Signal, SourceKind};
use wit_pipeline::Submitted;

pub(crate) use otlp_grpc::router as grpc_router;
pub(crate) use otlp_http::router as http_router;

use super::server::{App, Core};

/// Why a request was not taken; each transport answers it in its own terms.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The data does not decode: nothing of it was taken (not retryable).
    Invalid(String),
    /// Larger than a batch can hold (not retryable).
    TooLarge(String),
    /// The server holds its bound of unstored data (retryable).
    Overloaded(String),
    /// Recovering, closing, or the acknowledgment did not come in time (retryable).
    Unavailable(String),
    /// The batch was given up after its retries (not retryable).
    Failed(String),
    /// The tenant is over its bytes per second (retryable after the time it says).
    Throttled(crate::serve::limits::Throttled),
}

/// What was taken of a request. Under an idempotency key, it is also the request's receipt:
/// what a repeat of the request is answered.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Accepted {
    /// Records acknowledged.
    pub(crate) records: u64,
    /// Records refused one by one while the rest was taken (OTLP's `partial_success`).
    pub(crate) rejected: u64,
    /// Why, when some were refused.
    pub(crate) message: String,
    /// A repeat of a request taken before under the same idempotency key: nothing was
    /// submitted, the answer is the first one's.
    #[serde(skip)]
    pub(crate) deduplicated: bool,
}

/// The header (HTTP) and metadata key (gRPC) that carries a request's idempotency key.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A request's idempotency key, if it has one: the `Idempotency-Key` header's value, bare
/// or as a quoted string (`"…"`, as the IETF draft writes it).
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::Invalid("more than one `Idempotency-Key`".into()));
    }
    let value = value
        .to_str()
        .map_err(|_| Refusal::Invalid("the `Idempotency-Key` is not visible ASCII".into()))?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Ok(Some(value.to_owned()))
}

/// The header (and gRPC metadata key) that marks the answer to a repeat: `true` when the
/// answer is the first request's and nothing was taken this time.
pub(crate) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Marks the answer to a repeated request as such.
pub(crate) fn mark_replayed(accepted: &Accepted, headers: &mut HeaderMap) {
    if accepted.deduplicated {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
}

/// The longest refusal message a receipt keeps (receipts ride in the WAL, at most
/// `wit_pipeline::MAX_RECEIPT_BYTES`).
const RECEIPT_MESSAGE_CHARS: usize = 256;

/// Checks that `payload` decodes as `signal`'s OTLP request, submits it for `tenant`, and
/// waits for the configured acknowledgment level. A request that does not decode is
/// refused before anything is taken — whole, unless only some of its records are at fault:
/// then the others are taken and the answer says how many were left out (`partial.rs`).
/// Counts the request, its records and bytes by outcome, and the acknowledgment latency.
///
/// Under an idempotency key, a repeat of a request taken within the window is answered as
/// the first one was, once the first one's acknowledgment holds, and submits nothing.
pub(crate) async fn ingest(
    app: &App,
    key: BatchKey,
    format: PayloadFormat,
    payload: Bytes,
    idempotency: Option<String>,
) -> Result<Accepted, Refusal> {
    let started = std::time::Instant::now();
    let bytes = payload.len() as u64;
    let (signal, source) = (key.signal, key.source);
    let tenant = key.tenant.as_str().to_owned();
    let (records, result) = submit(app, key, format, payload, idempotency).await;
    let outcome = match &result {
        Ok(accepted) if accepted.deduplicated => "deduplicated",
        Ok(_) => "accepted",
        Err(refusal) => refusal.label(),
    };
    let transport = transport_name(source);
    count(transport, signal, outcome, records, bytes);
    count_tenant(tenant.clone(), outcome, records);
    if let Ok(accepted) = &result
        && !accepted.deduplicated
    {
        if accepted.rejected > 0 {
            metrics::counter!("wit_otlp_records_total", "signal" => signal_name(signal), "outcome" => "rejected")
                .increment(accepted.rejected);
        }
        metrics::histogram!("wit_otlp_ack_seconds", "signal" => signal_name(signal))
            .record(started.elapsed().as_secs_f64());
    }
    result
}

fn transport_name(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Grpc => "grpc",
        _ => "http",
    }
}

/// Counts one request with `records` records and `bytes` bytes that ended in `outcome`.
pub(crate) fn count(transport: &'static str, signal: Signal, outcome: &'static str, records: u64, bytes: u64) {
    let signal = signal_name(signal);
    metrics::counter!("wit_otlp_requests_total", "transport" => transport, "signal" => signal, "outcome" => outcome)
        .increment(1);
    metrics::counter!("wit_otlp_records_total", "signal" => signal, "outcome" => outcome).increment(records);
    metrics::counter!("wit_otlp_bytes_total", "transport" => transport, "signal" => signal).increment(bytes);
}

/// A tenant's request (and its records) by outcome: `accepted`, a refusal's label, or
/// `throttled` by the requests-per-second limit (records 0).
pub(crate) fn count_tenant(tenant: String, outcome: &'static str, records: u64) {
    metrics::counter!("wit_tenant_requests_total", "tenant" => tenant.clone(), "outcome" => outcome).increment(1);
    metrics::counter!("wit_tenant_records_total", "tenant" => tenant, "outcome" => outcome).increment(records);
}

impl Refusal {
    /// The outcome label of the metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid",
            Refusal::TooLarge(_) => "too_large",
            Refusal::Overloaded(_) => "overloaded",
            Refusal::Unavailable(_) => "unavailable",
            Refusal::Failed(_) => "failed",
            Refusal::Throttled(_) => "throttled",
        }
    }
}

/// [`ingest`] without the counting: the records taken of the request (0 when it does not
/// decode; for a repeat, the first request's) and what became of it.
async fn submit(
    app: &App,
    key: BatchKey,
    format: PayloadFormat,
    payload: Bytes,
    idempotency: Option<String>,
) -> (u64, Result<Accepted, Refusal>) {
    let signal = key.signal;
    // Refused before the work of decoding when the pipeline is full: under overload most
    // requests are refused, and decoding each only to refuse it would take the CPU the
    // pipeline needs to make room.
    let Some(core) = app.core() else {
        return (0, Err(Refusal::Unavailable("the server is recovering".into())));
    };
    if let Err(throttled) = app.limits.bytes(&key.tenant, payload.len()) {
        return (0, Err(Refusal::Throttled(throttled)));
    }
    if !core.pipeline.tenant_has_room_for(&key.tenant, payload.len() as u64) {
        return (0, Err(tenant_full(app, &key.tenant)));
    }
    if !core.pipeline.has_room_for(payload.len() as u64) {
        return (0, Err(full()));
    }
    let claim = match idempotency {
        None => None,
        Some(idempotency) => match claim(app, core, &key.tenant, &idempotency).await {
            Ok(Claim::New(claim)) => Some(claim),
            Ok(Claim::Repeat(result)) => {
                let records = result.as_ref().map_or(0, |a| a.records);
                return (records, result);
            }
            Err(refusal) => return (0, Err(refusal)),
        },
    };
    let Classified {
        format,
        payload,
        rows,
        records,
        rejected,
        message,
        letters,
    } = match classify(app, &key, format, payload) {
        Ok(classified) => classified,
        Err(refusal) => return (0, Err(refusal)),
    };
    let accepted = Accepted {
        records,
        rejected,
        message,
        deduplicated: false,
    };
    // Dead letters are submitted first: should the data's part be refused, or the server
    // crash between the two, a retry can store a dead letter twice but never lose one.
    let mut parts = Vec::with_capacity(2);
    if !letters.is_empty() {
        let letters_key = BatchKey::new(key.tenant.clone(), Signal::DeadLetters, key.source);
        let count = u32::try_from(letters.len()).unwrap_or(u32::MAX);
        let part = Part::new(
            PayloadFormat::Ndjson,
            Compression::None,
            count,
            wit_batch::dead_letters::encode(&letters),
        );
        parts.push((letters_key, part, None));
    }
    if records > 0 || letters.is_empty() {
        parts.push((key.clone(), Part::new(format, Compression::None, 1, payload), rows));
    }
    // An OTLP request none of whose records converts is refused (400 / INVALID_ARGUMENT, as
    // the OTLP specification asks of data that cannot be taken), its records kept as dead
    // letters all the same; events answer what was taken of them, if nothing.
    let refused = records == 0 && rejected > 0 && signal != Signal::Events;
    // The last part carries the idempotency key: once it is taken, the request is.
    if let Some(claim) = claim.as_ref().filter(|_| !refused)
        && let Some((_, part, _)) = parts.last_mut()
    {
        let receipt = serde_json::json!({
            "records": accepted.records,
            "rejected": accepted.rejected,
            "message": accepted.message.chars().take(RECEIPT_MESSAGE_CHARS).collect::<String>(),
        });
        match claim.idempotency(serde_json::to_vec(&receipt).expect("JSON of numbers and a string")) {
            Ok(idempotency) => part.idempotency = Some(idempotency),
            Err(e) => return (0, Err(Refusal::Invalid(e.to_string()))),
        }
    }
    for (key, part, rows) in parts {
        // The claim is held until the part is submitted (then the key is the part's).
        if let Err(refusal) = wait(app, core, key, part, rows).await {
            return (records, Err(refusal));
        }
    }
    drop(claim);
    dead_letters::count(&key.tenant, signal, letters.len() as u64);
    if refused {
        return (0, Err(Refusal::Invalid(accepted.message)));
    }
    (records, Ok(accepted))
}

/// A request checked record by record where it has to be: what to submit of it, and the
/// dead letters of the records left out.
struct Classified {
    format: PayloadFormat,
    /// The request, or (when records were left out) a request of the others.
    payload: Bytes,
    /// Its rows, when the request converted whole.
    rows: Option<arrow::array::RecordBatch>,
    /// Records taken.
    records: u64,
    /// Records left out (OTLP metrics: data points).
    rejected: u64,
    /// Why, when records were left out.
    message: String,
    letters: Vec<wit_batch::dead_letters::DeadLetter>,
}

impl Classified {
    fn whole(format: PayloadFormat, payload: Bytes, rows: arrow::array::RecordBatch) -> Classified {
        Classified {
            format,
            payload,
            records: rows.num_rows() as u64,
            rows: Some(rows),
            rejected: 0,
            message: String::new(),
            letters: Vec::new(),
        }
    }
}

/// Decodes a request. OTLP that does not decode whole is split record by record
/// (`partial.rs`); events are checked line by line when their stream has a schema or they
/// do not decode whole (`dead_letters.rs`).
fn classify(app: &App, key: &BatchKey, format: PayloadFormat, payload: Bytes) -> Result<Classified, Refusal> {
    let signal = key.signal;
    let decoded = match signal {
        Signal::Events => return classify_events(app, key, payload),
        Signal::Traces => wit_batch::otlp::traces::decode(&payload, format, Compression::None),
        Signal::Logs => wit_batch::otlp::logs::decode(&payload, format, Compression::None),
        _ => wit_batch::otlp::metrics::decode(&payload, format, Compression::None),
    };
    match decoded {
        Ok(rows) => Ok(Classified::whole(format, payload, rows)),
        Err(e) => match partial::split(signal, format, &payload) {
            Some(split) => Ok(Classified {
                format: PayloadFormat::OtlpProtobuf,
                payload: split.payload,
                rows: None,
                records: split.kept,
                rejected: split.rejected,
                message: split.message,
                letters: split.letters,
            }),
            None => Err(Refusal::Invalid(format!(
                "the {} request does not decode: {e}",
                signal_name(signal)
            ))),
        },
    }
}

fn classify_events(app: &App, key: &BatchKey, payload: Bytes) -> Result<Classified, Refusal> {
    let options = wit_batch::events::EventOptions::default();
    let decode = |p: &[u8]| {
        wit_batch::events::infer_schema(p, None, &options).and_then(|s| wit_batch::events::decode(p, Some(s), &options))
    };
    let stream = key.topic.as_deref().unwrap_or_default();
    let schema = app.schemas.get(&key.tenant, stream);
    if schema.is_none()
        && let Ok(rows) = decode(&payload)
    {
        return Ok(Classified::whole(PayloadFormat::Ndjson, payload, rows));
    }
    let mut split = dead_letters::split_events(&payload, stream, schema, false);
    let rows = match decode(&split.payload) {
        Ok(rows) => rows,
        Err(_) => {
            // Some line does not convert: each is converted alone.
            split = dead_letters::split_events(&payload, stream, schema, true);
            decode(&split.payload).map_err(|e| Refusal::Invalid(format!("the events do not convert together: {e}")))?
        }
    };
    let total = split.kept + split.letters.len() as u64;
    Ok(Classified {
        format: PayloadFormat::Ndjson,
        payload: split.payload,
        rows: Some(rows),
        records: split.kept,
        rejected: split.letters.len() as u64,
        message: dead_letters::summary(&split.letters, total, "events"),
        letters: split.letters,
    })
}

/// What [`claim`] found.
enum Claim {
    /// This request has the key: submit it with the claim.
    New(wit_pipeline::KeyClaim),
    /// A repeat: the first request's answer (or why its acknowledgment did not come).
    Repeat(Result<Accepted, Refusal>),
}

/// Claims the request's idempotency key: waits (up to the acknowledgment timeout) while
/// another request holding it is handled, then either has it or answers as the first one.
async fn claim(app: &App, core: &Core, tenant: &wit_batch::Tenant, key: &str) -> Result<Claim, Refusal> {
    let level = app.config.otlp.ack_level.into();
    let deadline = tokio::time::Instant::now() + app.config.ack_timeout();
    loop {
        // Asks the tracker when the key is no longer in memory: a short blocking call.
        let claimed = tokio::task::block_in_place(|| core.pipeline.claim_key(tenant, key, level));
        match claimed {
            Ok(wit_pipeline::Claimed::New(claim)) => return Ok(Claim::New(claim)),
            Ok(wit_pipeline::Claimed::Taken { receipt, ack }) => {
                let mut first: Accepted = serde_json::from_slice(&receipt).map_err(|e| {
                    Refusal::Unavailable(format!("the receipt of idempotency key `{key}` does not read: {e}"))
                })?;
                first.deduplicated = true;
                return Ok(Claim::Repeat(acknowledged(app, ack).await.map(|()| first)));
            }
            Ok(wit_pipeline::Claimed::InFlight) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(wit_pipeline::Claimed::InFlight) => {
                return Err(Refusal::Unavailable(format!(
                    "a request with idempotency key `{key}` is still being handled: retry later"
                )));
            }
            Err(e @ wit_pipeline::Error::IdempotencyKey { .. }) => return Err(Refusal::Invalid(e.to_string())),
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        }
    }
}

fn full() -> Refusal {
    Refusal::Overloaded("the server holds as much data not yet stored or indexed as it may: retry later".into())
}

/// The tenant holds as much unstored data as one tenant may (`pipeline.max_unstored_bytes_per_tenant`):
/// its limit, not the server's, so 429 / `RESOURCE_EXHAUSTED`.
fn tenant_full(app: &App, tenant: &wit_batch::Tenant) -> Refusal {
    Refusal::Throttled(crate::serve::limits::Throttled {
        message: format!("tenant `{tenant}` holds as much data not yet stored as one tenant may: retry later"),
        retry_after: std::time::Duration::from_secs(app.config.otlp.retry_after_seconds.max(1)),
    })
}

/// Submits a decoded request's part (with its rows when it decoded whole: the pipeline
/// stores them rather than decode the request again) and waits for its acknowledgment.
async fn wait(
    app: &App,
    core: &Core,
    key: BatchKey,
    part: Part,
    rows: Option<arrow::array::RecordBatch>,
) -> Result<(), Refusal> {
    let level = app.config.otlp.ack_level.into();
    let submitted = match rows {
        Some(rows) => core.pipeline.try_submit_converted(&key, part, rows, level),
        None => core.pipeline.try_submit(&key, part, level),
    };
    let ack = match submitted {
        Ok(Submitted::Accepted(ack)) => ack,
        Ok(Submitted::Full(part)) => {
            return Err(
                match core
                    .pipeline
                    .tenant_has_room_for(&key.tenant, part.payload.len() as u64)
                {
                    true => full(),
                    false => tenant_full(app, &key.tenant),
                },
            );
        }
        Err(wit_pipeline::Error::PartTooLarge { len, max }) => {
            return Err(Refusal::TooLarge(format!(
                "the request's {len} bytes exceed the {max} bytes a batch can hold"
            )));
        }
        Err(e) => return Err(Refusal::Unavailable(e.to_string())),
    };
    acknowledged(app, ack).await
}

/// Waits for `ack`, up to the acknowledgment timeout.
async fn acknowledged(app: &App, ack: wit_pipeline::Ack) -> Result<(), Refusal> {
    match tokio::time::timeout(app.config.ack_timeout(), ack).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e @ wit_pipeline::Error::BatchFailed { .. })) => Err(Refusal::Failed(e.to_string())),
        Ok(Err(e)) => Err(Refusal::Unavailable(e.to_string())),
        Err(_) => Err(Refusal::Unavailable(format!(
            "not acknowledged within {} ms (the data may still be stored: a retry can duplicate it)",
            app.config.otlp.ack_timeout_ms
        ))),
    }
}

/// The `Export*ServiceResponse` of a request that was taken, in `encoding`: empty when
/// everything was, with `partial_success` (the count refused and why) when some was not.
pub(crate) fn export_response(signal: Signal, accepted: &Accepted, encoding: Encoding) -> Bytes {
    use opentelemetry_proto::tonic::collector::logs::v1 as logs;
    use opentelemetry_proto::tonic::collector::metrics::v1 as metrics;
    use opentelemetry_proto::tonic::collector::trace::v1 as trace;
    if accepted.rejected == 0 {
        return match encoding {
            Encoding::Protobuf => Bytes::new(),
            Encoding::Json => Bytes::from_static(b"{}"),
        };
    }
    let (rejected, message) = (accepted.rejected as i64, accepted.message.clone());
    match encoding {
        Encoding::Protobuf => Bytes::from(match signal {
            Signal::Traces => trace::ExportTraceServiceResponse {
                partial_success: Some(trace::ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            Signal::Logs => logs::ExportLogsServiceResponse {
                partial_success: Some(logs::ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
            _ => metrics::ExportMetricsServiceResponse {
                partial_success: Some(metrics::ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }),
            }
            .encode_to_vec(),
        }),
        Encoding::Json => {
            // The proto3 JSON mapping: camelCase names, int64 as a string.
            let field = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Logs => "rejectedLogRecords",
                _ => "rejectedDataPoints",
            };
            let body = serde_json::json!({
                "partialSuccess": { field: rejected.to_string(), "errorMessage": message }
            });
            Bytes::from(serde_json::to_vec(&body).expect("JSON of strings"))
        }
    }
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "traces",
        Signal::Logs => "logs",
        Signal::Metrics => "metrics",
        Signal::DeadLetters => "dead_letters",
        _ => "events",
    }
}

/// `google.rpc.Status`, the body of every OTLP error answer.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// How a body is encoded: OTLP/HTTP answers in the request's own encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub(crate) const PROTOBUF: &'static str = "application/x-protobuf";
    pub(crate) const JSON: &'static str = "application/json";

    /// The request's encoding by its `Content-Type` (`None`: neither).
    pub(crate) fn from_content_type(headers: &HeaderMap) -> Option<Encoding> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            Encoding::PROTOBUF => Some(Encoding::Protobuf),
            Encoding::JSON => Some(Encoding::Json),
            _ => None,
        }
    }

    /// The encoding to answer in: the request's, JSON when it has neither.
    pub(crate) fn of(headers: &HeaderMap) -> Encoding {
        Encoding::from_content_type(headers).unwrap_or(Encoding::Json)
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => Encoding::PROTOBUF,
            Encoding::Json => Encoding::JSON,
        }
    }
}

/// The HTTP answer to `refusal`, in `encoding`.
pub(crate) fn http_refusal(refusal: Refusal, encoding: Encoding, retry: Option<u64>) -> Response {
    match refusal {
        Refusal::Invalid(m) => status_response(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, m, encoding, None),
        Refusal::TooLarge(m) => status_response(StatusCode::PAYLOAD_TOO_LARGE, INVALID_ARGUMENT, m, encoding, None),
        Refusal::Overloaded(m) => {
            status_response(StatusCode::SERVICE_UNAVAILABLE, RESOURCE_EXHAUSTED, m, encoding, retry)
        }
        Refusal::Unavailable(m) => status_response(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE, m, encoding, retry),
        Refusal::Failed(m) => status_response(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, m, encoding, None),
        Refusal::Throttled(t) => {
            let seconds = t.retry_after_seconds();
            status_response(
                StatusCode::TOO_MANY_REQUESTS,
                RESOURCE_EXHAUSTED,
                t.message,
                encoding,
                Some(seconds),
            )
        }
    }
}

/// gRPC status codes used in `google.rpc.Status` bodies.
pub(crate) const INVALID_ARGUMENT: i32 = 3;
pub(crate) const RESOURCE_EXHAUSTED: i32 = 8;
pub(crate) const INTERNAL: i32 = 13;
pub(crate) const UNAVAILABLE: i32 = 14;

/// An error answer: `status` with a `google.rpc.Status` body in `encoding`, and
/// `Retry-After` when given.
pub(crate) fn status_response(
    status: StatusCode,
    code: i32,
    message: String,
    encoding: Encoding,
    retry_after_seconds: Option<u64>,
) -> Response {
    let body = RpcStatus {
        code,
        message,
        details: Vec::new(),
    };
    let bytes = match encoding {
        Encoding::Protobuf => body.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": body.code, "message": body.message, "details": [],
        }))
        .expect("JSON of strings and numbers"),
    };
    let mut response = (status, [(header::CONTENT_TYPE, encoding.content_type())], bytes).into_response();
    if let Some(seconds) = retry_after_seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}
