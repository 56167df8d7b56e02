//! `wit-store`'s integration tests.

mod crash;
mod destination;
mod maintenance;
// Shared by path with other crates' tests; not every helper is used here.
#[allow(dead_code)]
mod moto;
mod s3;
mod sink;

mod catalog {
    use wit_batch::BatchId;
    use wit_store::InMemoryFileCatalog;

    fn make() -> Option<(InMemoryFileCatalog, impl Fn(&[BatchId]))> {
        Some((InMemoryFileCatalog::default(), |_: &[BatchId]| {}))
    }

    wit_store::file_catalog_conformance!(make);
}

/// Test data: OTLP spans converted by `wit-batch`, start times out of order.
pub mod data {
    use arrow::array::RecordBatch;
    use wit_batch::otlp::traces;
    use wit_batch::{Compression, PayloadFormat};

    /// The OTLP/JSON export request of `n` spans of 3 services; span `i` starts at
    /// `base + ((i * 7919) % n)` seconds, so rows arrive out of time order.
    pub fn request(n: usize, base: u64, seed: u64) -> String {
        let spans: Vec<String> = (0..n)
            .map(|i| {
                let i = i as u64;
                let start = (base + (i * 7_919) % n as u64) * 1_000_000_000 + seed;
                let trace = format!("{:032x}", (i / 4 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed);
                let span = format!("{:016x}", (i + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ seed);
                format!(
                    r#"{{"traceId":"{trace}","spanId":"{span}","name":"GET /items/{}","kind":2,
                    "startTimeUnixNano":"{start}","endTimeUnixNano":"{}",
                    "attributes":[{{"key":"http.route","value":{{"stringValue":"/items/{{id}}"}}}},
                    {{"key":"http.response.status_code","value":{{"intValue":"{}"}}}}]}}"#,
                    i % 13,
                    start + 250_000,
                    if i.is_multiple_of(50) { 500 } else { 200 }
                )
            })
            .collect();
        let per = spans.len().div_ceil(3);
        let resources: Vec<String> = spans
            .chunks(per.max(1))
            .enumerate()
            .map(|(r, chunk)| {
                format!(
                    r#"{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc-{r}"}}}}]}},
                    "scopeSpans":[{{"scope":{{"name":"http"}},"spans":[{}]}}]}}"#,
                    chunk.join(",")
                )
            })
            .collect();
        format!(r#"{{"resourceSpans":[{}]}}"#, resources.join(","))
    }

    /// `n` spans as a `wit-batch` traces table.
    pub fn spans(n: usize, base: u64, seed: u64) -> RecordBatch {
        traces::decode(
            request(n, base, seed).as_bytes(),
            PayloadFormat::OtlpJson,
            Compression::None,
        )
        .expect("decode")
    }
}
