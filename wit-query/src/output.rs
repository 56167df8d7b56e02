//! A query's result: Arrow record batches, and the same as JSON rows or a text table.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The rows a query returned, as Arrow record batches with one schema.
#[derive(Debug, Clone)]
pub struct QueryResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub(crate) fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        QueryResult { schema, batches }
    }

    /// The result's schema (also when it has no rows).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The record batches, in result order.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The record batches, taken.
    pub fn into_batches(self) -> Vec<RecordBatch> {
        self.batches
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The rows as JSON objects keyed by column name (arrow's JSON encoding: timestamps as
    /// RFC 3339 text, binary as hex, maps as objects; SQL NULL as an absent key).
    ///
    /// # Errors
    ///
    /// [`Error::Render`] for a column type arrow's JSON writer cannot encode.
    pub fn to_json_rows(&self) -> Result<Vec<Map<String, Value>>> {
        let render = |source| Error::Render {
            format: "JSON",
            source: Box::new(source),
        };
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        writer.write_batches(&batches).map_err(render)?;
        writer.finish().map_err(render)?;
        let bytes = writer.into_inner();
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&bytes).map_err(|e| render(arrow::error::ArrowError::JsonError(e.to_string())))
    }

    /// The rows as a text table, with a header of column names.
    ///
    /// # Errors
    ///
    /// [`Error::Render`] for a value arrow cannot display.
    pub fn to_table(&self) -> Result<String> {
        let table = if self.batches.is_empty() {
            arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(self.schema.clone())])
        } else {
            arrow::util::pretty::pretty_format_batches(&self.batches)
        };
        table.map(|t| t.to_string()).map_err(|source| Error::Render {
            format: "table",
            source: Box::new(source),
        })
    }
}
