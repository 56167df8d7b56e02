//! The schema a session sees: the tenant's tables and nothing else. `spans`, `logs`,
//! `metrics` and `dead_letters` have wit-batch's fixed schemas; `events` has the union of the schemas of the
//! tenant's event files (and of its hot batches), known only when a query names it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use parking_lot::Mutex;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use wit_batch::Signal;

use crate::table::WitTable;

/// The events table's name.
pub(crate) const EVENTS: &str = "events";

/// File schemas by path (files never change once published), shared by the engine's
/// sessions.
pub(crate) type SchemaCache = Arc<Mutex<HashMap<String, SchemaRef>>>;

/// One tenant's tables.
#[derive(Debug)]
pub(crate) struct TenantSchema {
    pub(crate) tables: HashMap<&'static str, Arc<WitTable>>,
    /// The events table before its schema is known (the fixed fields are reused).
    pub(crate) events: WitTable,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) schemas: SchemaCache,
}

#[async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().map(|n| n.to_string()).collect();
        names.push(EVENTS.to_string());
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == EVENTS {
            return Ok(Some(Arc::new(self.events_table().await?)));
        }
        Ok(self.tables.get(name).map(|t| t.clone() as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == EVENTS || self.tables.contains_key(name)
    }
}

impl TenantSchema {
    /// The events table with the union of its files' and hot batches' schemas.
    async fn events_table(&self) -> Result<WitTable> {
        let files = self.events.files(crate::time::Bounds::ALL).await?;
        let mut schemas = Vec::with_capacity(files.len());
        for file in &files {
            schemas.push(self.file_schema(&file.path, file.bytes).await?);
        }
        if let Some(hot) = &self.events.hot {
            schemas.extend(
                hot.snapshot(&self.events.tenant, Signal::Events)
                    .iter()
                    .map(|(_, b)| b.schema()),
            );
        }
        let schema = match schemas.as_slice() {
            [] => Arc::new(Schema::new(vec![crate::table::time_field()])),
            [one] => one.clone(),
            many => {
                let merged = Schema::try_merge(many.iter().map(|s| s.as_ref().clone())).map_err(|e| {
                    DataFusionError::Plan(format!("the tenant's events have conflicting column types: {e}"))
                })?;
                Arc::new(merged)
            }
        };
        Ok(WitTable {
            schema: crate::table::with_views(&schema),
            ..self.events.clone()
        })
    }

    async fn file_schema(&self, path: &str, bytes: u64) -> Result<SchemaRef> {
        if let Some(schema) = self.schemas.lock().get(path) {
            return Ok(schema.clone());
        }
        // The footer: its last 8 bytes give the metadata's length, then the metadata.
        let external = |e: Box<dyn std::error::Error + Send + Sync>| {
            DataFusionError::Execution(format!("failed to read the schema of `{path}`: {e}"))
        };
        let location = object_store::path::Path::from(path);
        if bytes < 8 {
            return Err(external("not a Parquet file".into()));
        }
        let tail = self
            .store
            .get_range(&location, bytes - 8..bytes)
            .await
            .map_err(|e| external(Box::new(e)))?;
        let tail: [u8; 8] = tail.as_ref().try_into().map_err(|_| external("short read".into()))?;
        let length = FooterTail::try_new(&tail)
            .map_err(|e| external(Box::new(e)))?
            .metadata_length() as u64;
        let start = bytes
            .checked_sub(8 + length)
            .ok_or_else(|| external("bad footer length".into()))?;
        let raw = self
            .store
            .get_range(&location, start..bytes - 8)
            .await
            .map_err(|e| external(Box::new(e)))?;
        let metadata = ParquetMetaDataReader::decode_metadata(&raw).map_err(|e| external(Box::new(e)))?;
        let file = metadata.file_metadata();
        let schema = parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|e| external(Box::new(e)))?;
        // Without the file's own metadata: schemas of files differ in it, not in columns.
        let schema = Arc::new(Schema::new(schema.fields().clone()));
        self.schemas.lock().insert(path.to_string(), schema.clone());
        Ok(schema)
    }
}

/// `batch` with the columns of `schema`: missing ones as NULL, others cast to its types.
pub(crate) fn adapt(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => Ok(arrow::compute::cast(column, field.data_type())?),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
