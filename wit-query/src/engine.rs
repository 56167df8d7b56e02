//! The engine (shared: catalog, object store, caches, runtime) and the sessions it makes,
//! each bound to one tenant.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use object_store::ObjectStore;
use url::Url;
use wit_batch::{Signal, Tenant};
use wit_store::{Destination, FileCatalog};

use crate::HotTier;
use crate::output::QueryResult;
use crate::runtime::OwnedRuntime;
use crate::table::WitTable;
use crate::tenant::{EVENTS, TenantSchema};
use crate::{Error, Result};

/// The tables of a tenant with fixed schemas: the SQL name and the signal of each. A
/// session also has `events`, whose columns are those of the tenant's events.
pub const TABLES: [(&str, Signal); 4] = [
    ("spans", Signal::Traces),
    ("logs", Signal::Logs),
    ("metrics", Signal::Metrics),
    ("dead_letters", Signal::DeadLetters),
];

/// How the engine runs queries.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    target_partitions: usize,
    batch_rows: usize,
    memory_limit_bytes: Option<usize>,
    hot: Option<HotTier>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_rows: 8192,
            memory_limit_bytes: None,
            hot: None,
        }
    }
}

impl QueryConfig {
    /// How many partitions (threads) a query scans with; default: the machine's cores.
    pub fn with_target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    /// Rows per record batch inside a query (default 8192).
    pub fn with_batch_rows(mut self, n: usize) -> Self {
        self.batch_rows = n.max(1);
        self
    }

    /// Queries also read `hot`: rows acknowledged but not yet in a published file (the
    /// pipeline that fills it bounds its memory).
    pub fn with_hot_tier(mut self, hot: HotTier) -> Self {
        self.hot = Some(hot);
        self
    }

    /// A bound on the memory a query's operators hold at once (sorts, joins, aggregates);
    /// a query that needs more fails with [`Error::Execution`]. Default: unbounded.
    pub fn with_memory_limit_bytes(mut self, bytes: usize) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }
}

/// The query engine: the file catalog, the store the files are read from, caches shared by
/// every session (Parquet footers), and a runtime for the blocking API. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant, otlp::logs};
/// use wit_query::QueryEngine;
/// use wit_store::{Destination, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig};
///
/// let dir = tempfile::tempdir()?;
/// let destination = Destination::local(dir.path())?;
/// let catalog = Arc::new(InMemoryFileCatalog::default());
/// let mut sink = ParquetSink::open(destination.clone(), SinkConfig::new(NodeName::try_new("node-a")?))?
///     .with_catalog(catalog.clone());
/// let json = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
///   "scopeLogs":[{"logRecords":[
///     {"timeUnixNano":"1700000000000000000","severityText":"ERROR","body":{"stringValue":"card declined"}},
///     {"timeUnixNano":"1700000001000000000","severityText":"INFO","body":{"stringValue":"paid"}}]}]}]}"#;
/// let acme = Tenant::try_new("acme")?;
/// let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
/// sink.write(&acme, Signal::Logs, &rows, &[BatchId::new()])?;
/// sink.flush()?;
///
/// let engine = QueryEngine::new(catalog, &destination)?;
/// let session = engine.session(&acme);
/// let result = session.blocking_sql(
///     "SELECT service_name, count(*) AS n FROM logs WHERE severity_text = 'ERROR' GROUP BY service_name",
/// )?;
/// let rows = result.to_json_rows()?;
/// assert_eq!(serde_json::Value::from(rows[0].clone()), serde_json::json!({"service_name": "checkout", "n": 1}));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct QueryEngine {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<dyn FileCatalog>,
    env: Arc<RuntimeEnv>,
    store_url: ObjectStoreUrl,
    searcher: Arc<wit_index::Searcher>,
    store: Arc<dyn ObjectStore>,
    schemas: crate::tenant::SchemaCache,
    config: QueryConfig,
    runtime: OwnedRuntime,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The URL the destination is registered under in DataFusion: the only store a session has.
const STORE_URL: &str = "wit://files/";

impl QueryEngine {
    /// An engine over `catalog`'s files in `destination`, with the default [`QueryConfig`].
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`] when the engine's runtime cannot start; [`Error::Execution`] when
    /// the destination cannot be opened for reading.
    pub fn new(catalog: Arc<dyn FileCatalog>, destination: &Destination) -> Result<Self> {
        Self::with_config(catalog, destination, QueryConfig::default())
    }

    /// An engine with `config`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_config(catalog: Arc<dyn FileCatalog>, destination: &Destination, config: QueryConfig) -> Result<Self> {
        let store = destination.reader().map_err(|e| Error::Execution {
            message: format!("failed to open `{destination}` for reading"),
            source: Some(Box::new(e)),
        })?;
        let store_url = ObjectStoreUrl::parse(STORE_URL).expect("a valid URL");
        let registry = Arc::new(OnlyStore {
            url: STORE_URL.to_string(),
            store: store.clone(),
        });
        let mut env = RuntimeEnvBuilder::new().with_object_store_registry(registry);
        if let Some(limit) = config.memory_limit_bytes {
            env = env.with_memory_limit(limit, 1.0);
        }
        let env = env.build_arc()?;
        let runtime =
            OwnedRuntime::new("wit-query", config.target_partitions).map_err(|source| Error::Runtime { source })?;
        Ok(QueryEngine {
            inner: Arc::new(Inner {
                catalog,
                env,
                store_url,
                searcher: Arc::new(wit_index::Searcher::new(destination.clone())),
                store,
                schemas: Default::default(),
                config,
                runtime,
            }),
        })
    }

    /// Runs `future` on the engine's runtime; the calling thread waits.
    pub(crate) fn run<T: Send + 'static>(&self, future: impl std::future::Future<Output = T> + Send + 'static) -> T {
        self.inner.runtime.run(future)
    }

    /// A session bound to `tenant`: its catalog holds that tenant's tables ([`TABLES`]) and
    /// nothing else.
    pub fn session(&self, tenant: &Tenant) -> Session {
        let mut config = SessionConfig::new()
            .with_target_partitions(self.inner.config.target_partitions)
            .with_batch_size(self.inner.config.batch_rows)
            .with_information_schema(false);
        let options = config.options_mut();
        options.sql_parser.collect_spans = true;
        options.execution.parquet.pushdown_filters = true;
        options.execution.parquet.reorder_filters = true;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.inner.env.clone())
            .with_default_features()
            .with_physical_optimizer_rule(crate::dense::rule())
            .build();
        let ctx = SessionContext::new_with_state(state);
        for function in crate::functions::all().into_iter().chain(crate::full_text::functions()) {
            ctx.register_udf(function);
        }
        ctx.add_analyzer_rule(crate::full_text::rule());
        ctx.add_analyzer_rule(crate::dictionary::rule());
        let table = |name: &'static str, signal: Signal, schema: SchemaRef| WitTable {
            name,
            tenant: tenant.clone(),
            signal,
            file_schema: (signal != Signal::Events).then(|| schema.clone()),
            schema,
            catalog: self.inner.catalog.clone(),
            store_url: self.inner.store_url.clone(),
            searcher: self.inner.searcher.clone(),
            hot: self.inner.config.hot.clone(),
        };
        let tables = TABLES
            .iter()
            .filter_map(|(name, signal)| Some((*name, Arc::new(table(name, *signal, schema(*signal)?)))))
            .collect();
        let tenant_schema = TenantSchema {
            tables,
            events: table(
                EVENTS,
                Signal::Events,
                Arc::new(arrow::datatypes::Schema::new(vec![crate::table::time_field()])),
            ),
            store: self.inner.store.clone(),
            schemas: self.inner.schemas.clone(),
        };
        let state = ctx.state();
        let defaults = &state.config().options().catalog;
        ctx.catalog(&defaults.default_catalog)
            .expect("the default catalog exists")
            .register_schema(&defaults.default_schema, Arc::new(tenant_schema))
            .expect("the default catalog takes schemas");
        Session {
            ctx,
            tenant: tenant.clone(),
            engine: self.clone(),
        }
    }
}

/// The Arrow schema of a signal's table, as wit-batch writes it; `None` for a signal without
/// a fixed schema (events).
fn schema(signal: Signal) -> Option<SchemaRef> {
    let schema = match signal {
        Signal::Traces => wit_batch::otlp::traces::schema(),
        Signal::Logs => wit_batch::otlp::logs::schema(),
        Signal::Metrics => wit_batch::otlp::metrics::schema(),
        Signal::DeadLetters => wit_batch::dead_letters::schema(),
        _ => return None,
    };
    Some(crate::dictionary::with_dictionaries(&crate::table::with_views(&schema)))
}

/// A SQL session bound to one tenant. Only queries run (`SELECT`, `WITH`, `VALUES`,
/// `EXPLAIN`); the tables are the tenant's, files come from the catalog, and no statement can
/// name a path, a URL or another tenant's data.
#[derive(Clone)]
pub struct Session {
    ctx: SessionContext,
    tenant: Tenant,
    pub(crate) engine: QueryEngine,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The tenant this session reads.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Runs one SQL query and collects its result.
    ///
    /// # Errors
    ///
    /// [`Error::Syntax`] with the position when the text does not parse;
    /// [`Error::NotAllowed`] for any statement that is not a query; [`Error::Plan`] for a
    /// table, column or function the session does not have; [`Error::Catalog`] when the
    /// catalog cannot list files; [`Error::Execution`] when the query fails while it runs.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the query; nothing is written.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let state = self.ctx.state();
        let statement = state
            .sql_to_statement(sql, &state.config().options().sql_parser.dialect)
            .map_err(Error::from)?;
        check_query(&statement)?;
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        let frame = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches: Vec<RecordBatch> = frame.collect().await?;
        Ok(QueryResult::new(schema, batches))
    }

    /// [`sql`](Self::sql) from a thread without a runtime: the query runs on the engine's
    /// own runtime and the calling thread waits.
    ///
    /// # Errors
    ///
    /// As [`sql`](Self::sql).
    pub fn blocking_sql(&self, sql: &str) -> Result<QueryResult> {
        let session = self.clone();
        let sql = sql.to_owned();
        self.engine.run(async move { session.sql(&sql).await })
    }
}

/// Refuses every statement that is not a plain query.
fn check_query(statement: &DFStatement) -> Result<()> {
    let refused = |text: String| {
        Err(Error::NotAllowed {
            statement: statement_kind(&text),
        })
    };
    match statement {
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) => Ok(()),
            Statement::Explain { statement: inner, .. } if matches!(inner.as_ref(), Statement::Query(_)) => Ok(()),
            other => refused(other.to_string()),
        },
        DFStatement::Explain(explain) => check_query(&explain.statement),
        other => refused(other.to_string()),
    }
}

/// The leading keywords of a statement (`CREATE EXTERNAL TABLE`, `COPY`, `INSERT INTO`).
fn statement_kind(text: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .take(3)
        .collect();
    if words.is_empty() {
        text.split_whitespace().next().unwrap_or_default().to_string()
    } else {
        words.join(" ")
    }
}

/// An object store registry with the destination and nothing else (DataFusion's default one
/// also serves `file://`).
#[derive(Debug)]
struct OnlyStore {
    url: String,
    store: Arc<dyn ObjectStore>,
}

impl ObjectStoreRegistry for OnlyStore {
    fn register_store(&self, url: &Url, _store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        // A session never registers stores; refusing keeps the registry to one store.
        let _ = url;
        None
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let base = format!("{}://{}/", url.scheme(), url.host_str().unwrap_or_default());
        if base == self.url {
            Ok(self.store.clone())
        } else {
            Err(datafusion::error::DataFusionError::Plan(format!(
                "no object store for `{url}`: a session reads only its tenant's tables"
            )))
        }
    }
}
