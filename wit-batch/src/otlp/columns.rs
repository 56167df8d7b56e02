//! Small column builders and typed column lookup shared by the OTLP tables.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, TimestampNanosecondArray};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// `Timestamp(Nanosecond, "UTC")`, the type of every time column.
pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// A time column from unix nanoseconds (OTLP's `fixed64`, stored as `i64` bits).
pub(crate) fn timestamps(values: Vec<u64>) -> ArrayRef {
    let values: Vec<i64> = values.into_iter().map(|v| v as i64).collect();
    Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
}

/// A nullable time column where 0 (OTLP's "unset") is null.
pub(crate) fn optional_timestamps(values: Vec<u64>) -> ArrayRef {
    let nulls = NullBuffer::from(values.iter().map(|v| *v != 0).collect::<Vec<_>>());
    let values: Vec<i64> = values.into_iter().map(|v| v as i64).collect();
    Arc::new(TimestampNanosecondArray::new(values.into(), Some(nulls)).with_timezone("UTC"))
}

/// Builds a `FixedSizeBinary(N)` id column; an absent (empty) id is null.
pub(crate) struct IdBuilder<const N: usize> {
    bytes: Vec<u8>,
    valid: Vec<bool>,
}

impl<const N: usize> Default for IdBuilder<N> {
    fn default() -> Self {
        IdBuilder {
            bytes: Vec::new(),
            valid: Vec::new(),
        }
    }
}

impl<const N: usize> IdBuilder<N> {
    #[inline]
    pub(crate) fn push(&mut self, id: Option<[u8; N]>) {
        match id {
            Some(id) => {
                self.bytes.extend_from_slice(&id);
                self.valid.push(true);
            }
            None => {
                self.bytes.extend_from_slice(&[0; N]);
                self.valid.push(false);
            }
        }
    }

    pub(crate) fn finish(self) -> FixedSizeBinaryArray {
        let nulls = NullBuffer::from(self.valid);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        FixedSizeBinaryArray::new(N as i32, Buffer::from_vec(self.bytes), nulls)
    }
}

/// The id at `i` of a `FixedSizeBinary` column as OTLP bytes (empty when null).
pub(crate) fn id_bytes(ids: &FixedSizeBinaryArray, i: usize) -> Vec<u8> {
    if ids.is_null(i) {
        Vec::new()
    } else {
        ids.value(i).to_vec()
    }
}

/// Looks columns of a batch up by name, with a schema error naming what is missing.
pub(crate) struct Columns<'b> {
    batch: &'b RecordBatch,
    table: &'static str,
}

impl<'b> Columns<'b> {
    pub(crate) fn new(batch: &'b RecordBatch, table: &'static str) -> Self {
        Columns { batch, table }
    }

    pub(crate) fn get(&self, name: &str) -> Result<&'b dyn Array> {
        self.batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| Error::Schema {
                table: self.table,
                reason: format!("no column `{name}`"),
            })
    }

    pub(crate) fn table(&self) -> &'static str {
        self.table
    }
}

/// The column `name`, downcast to `T`.
pub(crate) fn col<'b, T: 'static>(c: &Columns<'b>, name: &str) -> Result<&'b T> {
    c.get(name)?.as_any().downcast_ref::<T>().ok_or_else(|| Error::Schema {
        table: c.table(),
        reason: format!("column `{name}` does not have the expected type"),
    })
}
