//! A tenant's table of one signal: the catalog's files, pruned by time before any is opened,
//! read by DataFusion's Parquet scan with their statistics and with page-index and
//! bloom-filter pruning on.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use wit_batch::BatchId;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics, project_schema};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use wit_batch::{Signal, Tenant};
use wit_index::{Query, RowSet, Searcher};
use wit_store::{FileCatalog, StoredFile, TimeRange};

use crate::HotTier;
use crate::error::CatalogFailed;
use crate::time::{self, TIME_COLUMN};

/// `schema` with its top-level text columns as `Utf8View`: the Parquet reader then decodes
/// strings without copying them, and DataFusion's string kernels (LIKE, grouping) run on
/// views. Nested fields (attribute maps, bodies) stay as they are.
pub(crate) fn with_views(schema: &arrow::datatypes::Schema) -> SchemaRef {
    let fields: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            arrow::datatypes::DataType::Utf8 | arrow::datatypes::DataType::LargeUtf8 => {
                Arc::new(f.as_ref().clone().with_data_type(arrow::datatypes::DataType::Utf8View))
            }
            _ => f.clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new(fields))
}

/// The time column of every table, as wit-batch writes it.
pub(crate) fn time_field() -> arrow::datatypes::Field {
    arrow::datatypes::Field::new(
        TIME_COLUMN,
        arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )
}

/// One signal's table of one tenant.
#[derive(Clone)]
pub(crate) struct WitTable {
    pub(crate) name: &'static str,
    pub(crate) tenant: Tenant,
    pub(crate) signal: Signal,
    pub(crate) schema: SchemaRef,
    /// The schema each file is decoded to, when every file has the table's columns (the OTLP
    /// tables, written with wit-batch's schemas): the Parquet reader then decodes text to
    /// views and dictionaries directly. `None` (events): as each file's footer says.
    pub(crate) file_schema: Option<SchemaRef>,
    pub(crate) catalog: Arc<dyn FileCatalog>,
    pub(crate) store_url: ObjectStoreUrl,
    pub(crate) searcher: Arc<Searcher>,
    pub(crate) hot: Option<HotTier>,
}

impl std::fmt::Debug for WitTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitTable")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl WitTable {
    /// The catalog's live files of this table that can hold a row within `bounds`.
    pub(crate) async fn files(&self, bounds: time::Bounds) -> Result<Vec<StoredFile>> {
        let catalog = self.catalog.clone();
        let (tenant, signal) = (self.tenant.clone(), self.signal);
        let range = (!bounds.is_all()).then(|| TimeRange::new(bounds.min, bounds.max));
        // The catalog is a blocking API (SQLite, PostgreSQL through its own runtime).
        let listed = tokio::task::spawn_blocking(move || catalog.list(&tenant, signal, range))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        listed.map_err(|source| {
            DataFusionError::External(Box::new(CatalogFailed {
                table: self.name.to_string(),
                source,
            }))
        })
    }

    /// For each file, the rows its index finds for every query (`None`: read all rows, the
    /// file has no usable index or there is no query). Blocking: indexes are read through the
    /// searcher's cache.
    async fn narrow(&self, files: &[StoredFile], queries: Vec<Query>) -> Result<Vec<Option<RowSet>>> {
        if queries.is_empty() || files.iter().all(|f| f.index.is_none()) {
            return Ok(vec![None; files.len()]);
        }
        let searcher = self.searcher.clone();
        let files = files.to_vec();
        tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|file| {
                    file.index.as_ref()?;
                    let mut rows: Option<RowSet> = None;
                    for query in &queries {
                        // An unusable index (missing, corrupt, stale) narrows nothing: the
                        // filters run on every row of the file instead.
                        let found = searcher.search_index(file, query).ok()?;
                        match rows.as_mut() {
                            None => rows = Some(found),
                            Some(acc) => acc.and(&found),
                        }
                    }
                    rows
                })
                .collect()
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// DataFusion's Parquet scan of `files` (each with its index's row selection, if any),
    /// reading the columns `projection`.
    async fn parquet(
        &self,
        state: &dyn Session,
        files: Vec<(StoredFile, Option<RowSet>)>,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Spread the files over the partitions, largest first onto the lightest group.
        let n_groups = state.config().target_partitions().clamp(1, files.len().max(1));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n_groups).map(|_| (0, Vec::new())).collect();
        let mut order: Vec<&(StoredFile, Option<RowSet>)> = files.iter().collect();
        order.sort_by(|(a, _), (b, _)| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        let mut all_stats = Vec::with_capacity(files.len());
        for (file, rows) in order {
            let mut stats = self.statistics(file);
            let mut part = PartitionedFile::new(file.path.clone(), file.bytes);
            if let Some(schema) = &self.file_schema {
                part = part.with_arrow_schema(schema.clone());
            }
            if let Some(rows) = rows {
                // Only the index's rows are read; the file's statistics then bound, not give,
                // what the scan returns.
                part = part.with_extension(ParquetRowSelection::new(rows.to_row_selection()));
                stats = stats.to_inexact();
            }
            all_stats.push(stats.clone());
            let group = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .expect("n_groups >= 1");
            group.0 += file.bytes;
            group.1.push(part.with_statistics(Arc::new(stats)));
        }
        let mut options = state.default_table_options().parquet;
        options.global.pushdown_filters = true;
        options.global.reorder_filters = true;
        options.global.enable_page_index = true;
        options.global.bloom_filter_on_read = true;
        let format = ParquetFormat::default().with_options(options);
        let source = format.file_source(self.schema.clone().into());
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups.into_iter().map(|(_, files)| FileGroup::new(files)).collect())
            .with_statistics(Statistics::try_merge_iter(&all_stats, &self.schema)?)
            .with_projection_indices(projection)?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }

    /// `input` (the table's columns `needed`, in that order) filtered by `exact`, then
    /// projected to the columns `requested`.
    fn filtered(
        &self,
        state: &dyn Session,
        exact: &[&Expr],
        requested: &[usize],
        needed: &[usize],
        input: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = DFSchema::try_from(input.schema().as_ref().clone())?;
        let predicate =
            conjunction(exact.iter().map(|e| unqualified((*e).clone()))).expect("called with at least one filter");
        let predicate = state.create_physical_expr(predicate, &schema)?;
        let filter: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, input)?);
        let columns: Vec<(Arc<dyn PhysicalExpr>, String)> = requested
            .iter()
            .map(|idx| {
                let name = self.schema.field(*idx).name().clone();
                let at = needed
                    .iter()
                    .position(|n| n == idx)
                    .expect("requested columns are needed");
                (Arc::new(PhysicalColumn::new(&name, at)) as Arc<dyn PhysicalExpr>, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(columns, filter)?))
    }

    /// What the catalog knows of a file, as DataFusion statistics: the exact row count and
    /// the exact range of the time column (no nulls there).
    fn statistics(&self, file: &StoredFile) -> Statistics {
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Exact(file.rows as usize);
        stats.total_byte_size = Precision::Inexact(file.bytes as usize);
        if let Ok(idx) = self.schema.index_of(TIME_COLUMN) {
            let tz = match self.schema.field(idx).data_type() {
                arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            stats.column_statistics[idx] = ColumnStatistics::new_unknown()
                .with_null_count(Precision::Exact(0))
                .with_min_value(Precision::Exact(ScalarValue::TimestampNanosecond(
                    Some(file.time_range.min),
                    tz.clone(),
                )))
                .with_max_value(Precision::Exact(ScalarValue::TimestampNanosecond(
                    Some(file.time_range.max),
                    tz,
                )));
        }
        stats
    }
}

#[async_trait]
impl TableProvider for WitTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // `search` is answered by the scan itself (by index, or filtered here); every other
        // filter prunes (time range, statistics, page index, bloom filters, indexes) and is
        // re-checked on the rows read.
        Ok(filters
            .iter()
            .map(|f| match crate::full_text::is_exact_by_index(f) {
                true => TableProviderFilterPushDown::Exact,
                false => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bounds = time::bounds(filters);
        // The hot tier first, then the catalog: a batch published in between is then in a
        // listed file and dropped from the hot rows (see `HotTier`).
        let hot = match &self.hot {
            Some(hot) if !bounds.is_empty() => hot.snapshot(&self.tenant, self.signal),
            _ => Vec::new(),
        };
        let files = if bounds.is_empty() {
            Vec::new()
        } else {
            self.files(bounds).await?
        };
        let stored: HashSet<BatchId> = files.iter().flat_map(|f| f.batch_ids.iter().copied()).collect();
        let hot: Vec<RecordBatch> = hot
            .into_iter()
            .filter(|(id, _)| !stored.contains(id))
            // To the table's schema (text as views; event batches have their own columns).
            .map(|(_, rows)| crate::tenant::adapt(&rows, &self.schema))
            .collect::<Result<_>>()?;
        let narrowed = self.narrow(&files, crate::full_text::index_queries(filters)).await?;
        // A file whose index finds no row for a query is not read at all.
        let files: Vec<(StoredFile, Option<RowSet>)> = files
            .into_iter()
            .zip(narrowed)
            .filter(|(_, rows)| rows.as_ref().is_none_or(|r| r.count() > 0))
            .collect();
        // `search` filters are answered exactly by an index: files whose index served them
        // are not filtered again; files without a usable index and hot rows are filtered here.
        let exact: Vec<&Expr> = filters
            .iter()
            .filter(|f| crate::full_text::is_exact_by_index(f))
            .collect();
        let (indexed, unindexed): (Vec<_>, Vec<_>) = if exact.is_empty() {
            (Vec::new(), files)
        } else {
            files.into_iter().partition(|(_, rows)| rows.is_some())
        };
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let requested = projection.cloned().unwrap_or(all);
        let mut needed = requested.clone();
        for filter in &exact {
            for column in filter.column_refs() {
                let idx = self.schema.index_of(&column.name)?;
                if !needed.contains(&idx) {
                    needed.push(idx);
                }
            }
        }
        let mut parts: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !indexed.is_empty() {
            parts.push(self.parquet(state, indexed, Some(requested.clone()), limit).await?);
        }
        let filtered = |input: Arc<dyn ExecutionPlan>| self.filtered(state, &exact, &requested, &needed, input);
        if !unindexed.is_empty() {
            if exact.is_empty() {
                parts.push(self.parquet(state, unindexed, Some(requested.clone()), limit).await?);
            } else {
                parts.push(filtered(
                    self.parquet(state, unindexed, Some(needed.clone()), None).await?,
                )?);
            }
        }
        if !hot.is_empty() {
            let columns = if exact.is_empty() {
                requested.clone()
            } else {
                needed.clone()
            };
            let memory: Arc<dyn ExecutionPlan> =
                MemorySourceConfig::try_new_exec(&[hot], self.schema.clone(), Some(columns))?;
            parts.push(if exact.is_empty() { memory } else { filtered(memory)? });
        }
        match parts.len() {
            0 => Ok(Arc::new(EmptyExec::new(project_schema(&self.schema, projection)?))),
            1 => Ok(parts.remove(0)),
            _ => UnionExec::try_new(parts),
        }
    }
}

/// `expr` with its columns unqualified (the scan's schema has no table name).
fn unqualified(expr: Expr) -> Expr {
    expr.transform(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
            datafusion::common::Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .expect("the rewrite cannot fail")
}
