//! An envelope's parts converted to one Arrow batch, by the batch's signal.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use wit_batch::events::{self, EventOptions};
use wit_batch::{Envelope, Signal, dead_letters, otlp};

use crate::{Error, Result};

/// A decoder of `wit_batch::otlp` or `wit_batch::dead_letters`: a part to rows of a fixed schema.
type Decode = fn(&[u8], wit_batch::PayloadFormat, wit_batch::Compression) -> wit_batch::Result<RecordBatch>;

/// Parts of a batch refused one by one (a Kafka range's poison messages): their index in the
/// envelope and why.
pub(crate) type Refused = Vec<(usize, String)>;

/// Converts `envelope` as [`convert`] does, except for a batch of a source partition (each
/// part one Kafka message): there a part that does not convert is refused alone (and
/// listed), and the rest is converted.
pub(crate) fn convert_batch(envelope: &Envelope, events_options: &EventOptions) -> Result<(RecordBatch, Refused)> {
    if !crate::ranges::is_range(envelope.meta()) {
        return convert(envelope, events_options).map(|rows| (rows, Vec::new()));
    }
    let meta = envelope.meta();
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Convert { batch: meta.id, source };
    let mut refused = Vec::new();
    let (schema, batches) = match meta.signal {
        Signal::Events => {
            // One schema over the parts that infer, each merged in turn: a part whose fields
            // conflict with the earlier ones is refused.
            let mut schema = Schema::empty();
            let mut good = Vec::new();
            for (i, part) in envelope.parts().iter().enumerate() {
                let options = events_options.clone().with_compression(part.compression);
                let merged = events::infer_schema(&part.payload, None, &options)
                    .map_err(|e| e.to_string())
                    .and_then(|own| {
                        Schema::try_merge([schema.clone(), own.as_ref().clone()])
                            .map_err(|e| format!("its fields conflict with the batch's earlier messages: {e}"))
                    });
                match merged {
                    Ok(merged) => {
                        schema = merged;
                        good.push(i);
                    }
                    Err(reason) => refused.push((i, reason)),
                }
            }
            let schema: SchemaRef = Arc::new(schema);
            let mut batches = Vec::with_capacity(good.len());
            for i in good {
                let part = &envelope.parts()[i];
                let options = events_options.clone().with_compression(part.compression);
                match events::decode(&part.payload, Some(schema.clone()), &options) {
                    Ok(rows) => batches.push(rows),
                    Err(e) => refused.push((i, e.to_string())),
                }
            }
            match meta.topics.as_slice() {
                [stream] if !batches.is_empty() => {
                    with_stream(schema, batches, stream).map_err(|e| fail(Box::new(e)))?
                }
                _ => (schema, batches),
            }
        }
        signal => {
            let (schema, decode): (SchemaRef, Decode) = match signal {
                Signal::Traces => (otlp::traces::schema(), otlp::traces::decode),
                Signal::Logs => (otlp::logs::schema(), otlp::logs::decode),
                Signal::Metrics => (otlp::metrics::schema(), otlp::metrics::decode),
                other => return Err(fail(format!("no conversion of a partition's `{other}`").into())),
            };
            let mut batches = Vec::with_capacity(envelope.parts().len());
            for (i, part) in envelope.parts().iter().enumerate() {
                match decode(&part.payload, part.format, part.compression) {
                    Ok(rows) => batches.push(rows),
                    Err(e) => refused.push((i, e.to_string())),
                }
            }
            (schema, batches)
        }
    };
    refused.sort_unstable_by_key(|(i, _)| *i);
    let rows = join(schema, batches).map_err(|e| fail(Box::new(e)))?;
    Ok((rows, refused))
}

/// Converts every part of `envelope` and concatenates them into one batch (a batch is
/// written to one file whole). All or nothing: one bad part fails the batch. Events of a
/// batch with one topic get a [`STREAM_COLUMN`] naming it.
pub(crate) fn convert(envelope: &Envelope, events_options: &EventOptions) -> Result<RecordBatch> {
    let meta = envelope.meta();
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Convert { batch: meta.id, source };
    let (schema, batches) = match meta.signal {
        Signal::Events => {
            let (schema, batches) = events(envelope, events_options).map_err(|e| fail(Box::new(e)))?;
            match meta.topics.as_slice() {
                [stream] => with_stream(schema, batches, stream).map_err(|e| fail(Box::new(e)))?,
                _ => (schema, batches),
            }
        }
        signal => {
            let (schema, decode): (SchemaRef, Decode) = match signal {
                Signal::Traces => (otlp::traces::schema(), otlp::traces::decode),
                Signal::Logs => (otlp::logs::schema(), otlp::logs::decode),
                Signal::Metrics => (otlp::metrics::schema(), otlp::metrics::decode),
                Signal::DeadLetters => (dead_letters::schema(), dead_letters::decode),
                other => {
                    return Err(fail(format!("no conversion for signal `{other}`").into()));
                }
            };
            let batches = envelope
                .parts()
                .iter()
                .map(|p| decode(&p.payload, p.format, p.compression))
                .collect::<wit_batch::Result<Vec<_>>>()
                .map_err(|e| fail(Box::new(e)))?;
            (schema, batches)
        }
    };
    join(schema, batches).map_err(|e| fail(Box::new(e)))
}

/// A batch's parts already converted (in order), as one batch: what [`convert`] gives.
pub(crate) fn concat(envelope: &Envelope, parts: Vec<RecordBatch>) -> Result<RecordBatch> {
    let schema = match parts.first() {
        Some(first) => first.schema(),
        None => Arc::new(Schema::empty()),
    };
    join(schema, parts).map_err(|e| Error::Convert {
        batch: envelope.meta().id,
        source: Box::new(e),
    })
}

fn join(
    schema: SchemaRef,
    mut batches: Vec<RecordBatch>,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    if batches.len() == 1 {
        return Ok(batches.remove(0));
    }
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    arrow::compute::concat_batches(&schema, &batches)
}

/// The column naming an event batch's stream (its one topic: the path of an HTTP events
/// route, a Kafka topic).
pub(crate) const STREAM_COLUMN: &str = "_stream";

/// `batches` with a last column [`STREAM_COLUMN`] holding `stream`, unless the events carry a
/// field of that name themselves (theirs is kept).
fn with_stream(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    stream: &str,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), arrow::error::ArrowError> {
    if schema.field_with_name(STREAM_COLUMN).is_ok() {
        return Ok((schema, batches));
    }
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        STREAM_COLUMN,
        arrow::datatypes::DataType::Utf8,
        false,
    )));
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let batches = batches
        .into_iter()
        .map(|batch| {
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(arrow::array::StringArray::from(vec![
                stream;
                batch.num_rows()
            ])));
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// NDJSON parts: one schema inferred over every part, then each part read with it.
fn events(envelope: &Envelope, options: &EventOptions) -> wit_batch::Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut schemas = Vec::with_capacity(envelope.parts().len());
    for part in envelope.parts() {
        let options = options.clone().with_compression(part.compression);
        schemas.push(events::infer_schema(&part.payload, None, &options)?.as_ref().clone());
    }
    let schema: SchemaRef = Arc::new(Schema::try_merge(schemas).map_err(wit_batch::Error::from)?);
    let batches = envelope
        .parts()
        .iter()
        .map(|part| {
            let options = options.clone().with_compression(part.compression);
            events::decode(&part.payload, Some(schema.clone()), &options)
        })
        .collect::<wit_batch::Result<Vec<_>>>()?;
    Ok((schema, batches))
}
