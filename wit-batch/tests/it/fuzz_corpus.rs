//! Replays the committed corpus of the OTLP differential fuzz target
//! (`fuzz/corpus/otlp_differential/`): the direct decoder and the prost oracle must agree on
//! every input the fuzzer kept, without needing cargo-fuzz or nightly.

use std::path::PathBuf;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/otlp_differential");

#[test]
fn otlp_differential_corpus_replays_cleanly() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .unwrap_or_else(|e| panic!("the fuzz corpus at {CORPUS} is missing: {e}"))
        .map(|e| e.expect("list fuzz inputs").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 7, "the corpus holds at least the SDK fixture seeds");
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| wit_batch::fuzz::otlp_differential(&data)) {
            eprintln!("fuzz input {} ({} bytes) failed", path.display(), data.len());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn deep_nesting_is_rejected_by_both_paths_alike() {
    // Deeply nested values: prost stops at 100 levels, and so must the direct decoder (which
    // would otherwise recurse without bound).
    let mut value = vec![0x2a, 0x00]; // AnyValue { arrayValue: {} }
    for _ in 0..120 {
        // ArrayValue { values: [value] } inside AnyValue { arrayValue: ... }
        let mut array = vec![0x0a];
        push_len(&mut array, value.len());
        array.extend(&value);
        let mut any = vec![0x2a];
        push_len(&mut any, array.len());
        any.extend(&array);
        value = any;
    }
    let mut kv = vec![0x0a, 0x01, b'k', 0x12];
    push_len(&mut kv, value.len());
    kv.extend(&value);
    // ResourceSpans { resource: Resource { attributes: [kv] } }
    let mut resource = vec![0x0a];
    push_len(&mut resource, kv.len());
    resource.extend(&kv);
    let mut rs = vec![0x0a];
    push_len(&mut rs, resource.len());
    rs.extend(&resource);
    let mut request = vec![0u8, 0x0a];
    push_len(&mut request, rs.len());
    request.extend(&rs);
    let err = wit_batch::otlp::traces::decode(
        &request[1..],
        wit_batch::PayloadFormat::OtlpProtobuf,
        wit_batch::Compression::None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nested more than 100 deep"), "{err}");
    wit_batch::fuzz::otlp_differential(&request);
}

fn push_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
