//! OTLP/gRPC (`TraceService`, `LogsService`, `MetricsService` `Export`), as the OTLP
//! specification describes it: gzip accepted; messages over `otlp.max_message_bytes` refused
//! by tonic (`RESOURCE_EXHAUSTED`, before decoding); success only once the configured
//! acknowledgment level holds; overload and recovery `UNAVAILABLE` with a
//! `google.rpc.RetryInfo`; data that does not convert `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` naming the field. The tenant comes from the same header, as
//! metadata.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use wit_batch::{BatchKey, PayloadFormat, Signal, SourceKind};

use super::Refusal;
use crate::serve::server::App;

/// The three OTLP services, ready for `tonic::transport::Server`.
pub(crate) fn router(app: Arc<App>) -> tonic::service::Routes {
    let limit = app.config.otlp.max_message_bytes;
    let receiver = Arc::new(Receiver { app });
    tonic::service::Routes::new(
        TraceServiceServer::from_arc(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    )
    .add_service(
        LogsServiceServer::from_arc(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    )
    .add_service(
        MetricsServiceServer::from_arc(receiver)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    )
}

struct Receiver {
    app: Arc<App>,
}

impl Receiver {
    async fn export(
        &self,
        signal: Signal,
        metadata: &tonic::metadata::MetadataMap,
        payload: Vec<u8>,
    ) -> Result<(), Status> {
        let tenant = crate::serve::tenant::resolve(&self.app, &metadata.clone().into_headers())
            .map_err(|m| Status::with_error_details(Code::InvalidArgument, m.clone(), bad_request("tenant", m)))?;
        let retry = Duration::from_secs(self.app.config.otlp.retry_after_seconds.max(1));
        let unavailable =
            |m: String| Status::with_error_details(Code::Unavailable, m, ErrorDetails::with_retry_info(Some(retry)));
        super::ingest(
            &self.app,
            BatchKey::new(tenant, signal, SourceKind::Grpc),
            PayloadFormat::OtlpProtobuf,
            Bytes::from(payload),
        )
        .await
        .map(|_| ())
        .map_err(|refusal| match refusal {
            Refusal::Invalid(m) => {
                Status::with_error_details(Code::InvalidArgument, m.clone(), bad_request("request", m))
            }
            Refusal::TooLarge(m) => Status::new(Code::InvalidArgument, m),
            Refusal::Overloaded(m) | Refusal::Unavailable(m) => unavailable(m),
            Refusal::Failed(m) => Status::new(Code::Internal, m),
        })
    }
}

fn bad_request(field: &str, description: String) -> ErrorDetails {
    ErrorDetails::with_bad_request_violation(field, description)
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let payload = request.get_ref().encode_to_vec();
        Receiver::export(self, Signal::Traces, request.metadata(), payload).await?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let payload = request.get_ref().encode_to_vec();
        Receiver::export(self, Signal::Logs, request.metadata(), payload).await?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let payload = request.get_ref().encode_to_vec();
        Receiver::export(self, Signal::Metrics, request.metadata(), payload).await?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}
