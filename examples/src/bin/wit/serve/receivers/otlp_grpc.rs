//! OTLP/gRPC (`TraceService`, `LogsService`, `MetricsService` `Export`), as the OTLP
//! specification describes it: gzip accepted; messages over `otlp.max_message_bytes` refused
//! by tonic (`RESOURCE_EXHAUSTED`, before decoding); success only once the configured
//! acknowledgment level holds; overload and recovery `UNAVAILABLE` with a
//! `google.rpc.RetryInfo`; data that does not convert `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` naming the field; some records refused and the rest taken:
//! `partial_success` in the response. The tenant comes from the same header, as metadata.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{BoxFuture, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use wit_batch::{BatchKey, PayloadFormat, Signal, SourceKind};

use super::{Encoding, Refusal};
use crate::serve::server::App;

/// The three OTLP services, ready for `tonic::transport::Server`.
pub(crate) fn router(app: Arc<App>) -> tonic::service::Routes {
    tonic::service::Routes::new(Otlp::<Traces>::new(app.clone()))
        .add_service(Otlp::<Logs>::new(app.clone()))
        .add_service(Otlp::<Metrics>::new(app))
}

/// One OTLP service: its gRPC name and signal.
trait Service: Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
}

struct Traces;
struct Logs;
struct Metrics;

impl Service for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}

impl Service for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}

impl Service for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}

/// An OTLP service's `Export`, taking the request's protobuf as sent: the WAL keeps those
/// bytes and wit-batch decodes them, so the request is not decoded into prost's structs and
/// encoded again on the way (tonic's generated server would).
struct Otlp<S> {
    app: Arc<App>,
    service: PhantomData<S>,
}

impl<S> Clone for Otlp<S> {
    fn clone(&self) -> Self {
        Otlp {
            app: self.app.clone(),
            service: PhantomData,
        }
    }
}

impl<S: Service> Otlp<S> {
    fn new(app: Arc<App>) -> Self {
        Otlp {
            app,
            service: PhantomData,
        }
    }
}

impl<S: Service> NamedService for Otlp<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: Service> tonic::codegen::Service<http::Request<tonic::body::Body>> for Otlp<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let app = self.app.clone();
        let export = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::NAME))
            == Some("/Export");
        Box::pin(async move {
            if !export {
                let status = Status::unimplemented(format!("{} has only Export", S::NAME));
                return Ok(status.into_http());
            }
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let limit = app.config.otlp.max_message_bytes;
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(Export::<S>::new(app), request).await)
        })
    }
}

/// The `Export` call itself.
struct Export<S>(Otlp<S>);

impl<S: Service> Export<S> {
    fn new(app: Arc<App>) -> Self {
        Export(Otlp::new(app))
    }
}

impl<S: Service> UnaryService<Bytes> for Export<S> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let app = self.0.app.clone();
        Box::pin(async move {
            let (metadata, _, payload) = request.into_parts();
            let accepted = export(&app, S::SIGNAL, metadata, payload).await?;
            let mut response = Response::new(super::export_response(S::SIGNAL, &accepted, Encoding::Protobuf));
            if accepted.deduplicated {
                response.metadata_mut().insert(
                    super::IDEMPOTENT_REPLAYED,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
            }
            Ok(response)
        })
    }
}

async fn export(
    app: &Arc<App>,
    signal: Signal,
    metadata: tonic::metadata::MetadataMap,
    payload: Bytes,
) -> Result<super::Accepted, Status> {
    use crate::serve::access::Denied;
    let headers = metadata.into_headers();
    let tenant =
        crate::serve::access::authorize(app, &headers, crate::serve::config::Scope::Write).map_err(|denied| {
            match denied {
                Denied::BadTenant(m) => {
                    Status::with_error_details(Code::InvalidArgument, m.clone(), bad_request("tenant", m))
                }
                Denied::Unauthenticated(m) => Status::new(Code::Unauthenticated, m),
                Denied::Forbidden(m) => Status::new(Code::PermissionDenied, m),
                Denied::Throttled(t) => throttled(t),
            }
        })?;
    let retry = Duration::from_secs(app.config.otlp.retry_after_seconds.max(1));
    let unavailable =
        |m: String| Status::with_error_details(Code::Unavailable, m, ErrorDetails::with_retry_info(Some(retry)));
    let to_status = |refusal| match refusal {
        Refusal::Invalid(m) => Status::with_error_details(Code::InvalidArgument, m.clone(), bad_request("request", m)),
        Refusal::TooLarge(m) => Status::new(Code::InvalidArgument, m),
        Refusal::Overloaded(m) | Refusal::Unavailable(m) => unavailable(m),
        Refusal::Failed(m) => Status::new(Code::Internal, m),
        Refusal::Throttled(t) => throttled(t),
    };
    let idempotency = super::idempotency_key(&headers).map_err(to_status)?;
    super::ingest(
        app,
        BatchKey::new(tenant, signal, SourceKind::Grpc),
        PayloadFormat::OtlpProtobuf,
        payload,
        idempotency,
    )
    .await
    .map_err(to_status)
}

/// `RESOURCE_EXHAUSTED` with the time the tenant's capacity returns.
fn throttled(t: crate::serve::limits::Throttled) -> Status {
    let retry = Duration::from_secs(t.retry_after_seconds());
    Status::with_error_details(
        Code::ResourceExhausted,
        t.message,
        ErrorDetails::with_retry_info(Some(retry)),
    )
}

fn bad_request(field: &str, description: String) -> ErrorDetails {
    ErrorDetails::with_bad_request_violation(field, description)
}

/// gRPC messages as the bytes they are.
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
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
