//! The receivers: OTLP/HTTP on its own port (`otlp_http.rs`), with the shared answers of
//! every receiver: `google.rpc.Status` bodies in the request's encoding and `Retry-After` on
//! overload.

mod otlp_http;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

pub(crate) use otlp_http::router as http_router;

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
