//! Proptest strategies for OTLP requests, and the normalization the round-trip rules allow
//! (see `wit_batch::otlp`, "Lossless").

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::collection::vec;
use proptest::prelude::*;

/// Doubles without NaN (which is never equal to itself); NaN is tested separately.
pub fn double() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL | prop::num::f64::INFINITE
}

/// Any text, including quotes, escapes, control characters and non-ASCII.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z._]{0,12}", 1 => any::<String>(), 1 => Just("\"\\\n\t\u{1}é中😀".to_owned())]
}

pub fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        text().prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        double().prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..8).prop_map(|b| Some(Value::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            vec((text(), proptest::option::of(inner)), 0..4).prop_map(|kvs| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value,
                            ..Default::default()
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

pub fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (text(), proptest::option::of(any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..4,
    )
}

/// An id that is empty or exactly `n` bytes.
pub fn id(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => Just(Vec::new()), 4 => vec(any::<u8>(), n)]
}

pub fn resource() -> impl Strategy<Value = Option<Resource>> {
    let entity = (text(), text(), vec(text(), 0..2), vec(text(), 0..2)).prop_map(
        |(schema_url, r#type, id_keys, description_keys)| EntityRef {
            schema_url,
            r#type,
            id_keys,
            description_keys,
        },
    );
    let service = prop_oneof![Just(None), text().prop_map(Some)];
    proptest::option::of((attributes(), service, any::<u32>(), vec(entity, 0..2)).prop_map(
        |(mut attributes, service, dropped_attributes_count, entity_refs)| {
            if let Some(name) = service {
                attributes.insert(
                    0,
                    KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(name)),
                        }),
                        ..Default::default()
                    },
                );
            }
            Resource {
                attributes,
                dropped_attributes_count,
                entity_refs,
            }
        },
    ))
}

pub fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    proptest::option::of((text(), text(), attributes(), any::<u32>()).prop_map(
        |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count,
        },
    ))
}

// --- normalization --------------------------------------------------------------------------

pub fn norm_value(v: &mut AnyValue) {
    match &mut v.value {
        Some(Value::ArrayValue(a)) => a.values.iter_mut().for_each(norm_value),
        Some(Value::KvlistValue(l)) => norm_attrs(&mut l.values),
        _ => {}
    }
}

pub fn norm_attrs(kvs: &mut [KeyValue]) {
    for kv in kvs {
        norm_value(kv.value.get_or_insert_with(AnyValue::default));
    }
}

pub fn norm_resource(r: &mut Option<Resource>) {
    norm_attrs(&mut r.get_or_insert_with(Resource::default).attributes);
}

pub fn norm_scope(s: &mut Option<InstrumentationScope>) {
    norm_attrs(&mut s.get_or_insert_with(InstrumentationScope::default).attributes);
}

/// Asserts two batches are equal, naming the first column that differs.
pub fn assert_batches_eq(left: &arrow::record_batch::RecordBatch, right: &arrow::record_batch::RecordBatch) {
    assert_eq!(left.schema(), right.schema(), "schemas differ");
    assert_eq!(left.num_rows(), right.num_rows(), "row counts differ");
    for (i, field) in left.schema().fields().iter().enumerate() {
        let (l, r) = (left.column(i), right.column(i));
        assert!(l == r, "column `{}` differs:\nleft:  {l:?}\nright: {r:?}", field.name());
    }
}
