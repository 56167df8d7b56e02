//! Fuzzing bodies, shared by `fuzz/` targets and the tests that replay their corpora.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::otlp::{logs, metrics, traces};
use crate::{Compression, PayloadFormat};

/// The direct decoder and the prost oracle (decode, then `from_prost`) must agree on every
/// input: both fail, or both give the same batch. The first byte picks the signal; the rest
/// is the payload, also fed to the OTLP/JSON decoder, which must not panic.
///
/// # Panics
///
/// When the two paths disagree (that is the finding).
pub fn otlp_differential(data: &[u8]) {
    let Some((&signal, payload)) = data.split_first() else {
        return;
    };
    macro_rules! check {
        ($module:ident, $request:ty) => {{
            let direct = $module::decode(payload, PayloadFormat::OtlpProtobuf, Compression::None);
            let oracle = <$request>::decode(payload).map_err(|e| e.to_string()).and_then(|r| {
                let batch = $module::from_prost(&r).map_err(|e| e.to_string())?;
                Ok((r, batch))
            });
            match (&direct, &oracle) {
                (Ok(a), Ok((_, b))) => {
                    assert_eq!(a, b, "direct and prost paths disagree on {payload:?}");
                    // The batch converts back to a request that converts to the same batch.
                    let back = $module::to_prost(a).expect("a batch of ours converts back");
                    assert_eq!(
                        &$module::from_prost(&back).expect("converts again"),
                        a,
                        "round trip on {payload:?}"
                    );
                }
                (Err(_), Err(_)) => {}
                (direct, oracle) => panic!(
                    "direct and prost paths disagree on {payload:?}: direct {:?}, prost {:?}",
                    direct.as_ref().map(|b| b.num_rows()),
                    oracle.as_ref().map(|(_, b)| b.num_rows())
                ),
            }
            let _ = $module::decode(payload, PayloadFormat::OtlpJson, Compression::None);
        }};
    }
    match signal % 3 {
        0 => check!(traces, ExportTraceServiceRequest),
        1 => check!(logs, ExportLogsServiceRequest),
        _ => check!(metrics, ExportMetricsServiceRequest),
    }
}
