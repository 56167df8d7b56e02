//! `wit serve`'s configuration: one YAML file (every key in `examples/wit.yaml`), `${ENV}`
//! substituted before parsing, unknown keys refused with their name, flags over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration. Every field has a default: an empty file (or none) runs the
/// embedded defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Where the WAL, the SQLite tracker and (by default) the Parquet files live.
    pub(crate) data_dir: PathBuf,
    /// This node's name in file names and the tracker.
    pub(crate) node: String,
    pub(crate) listen: Listen,
    pub(crate) tenants: Tenants,
    pub(crate) otlp: Otlp,
    pub(crate) events: EventsSection,
    pub(crate) pipeline: PipelineSection,
    pub(crate) tracker: TrackerSection,
    pub(crate) storage: Storage,
    pub(crate) query: QuerySection,
    pub(crate) monitor: Monitor,
    pub(crate) kafka: KafkaSection,
    /// On SIGTERM, how long requests in flight may take before their connections are
    /// abandoned (milliseconds).
    pub(crate) shutdown_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            node: "node-1".into(),
            listen: Listen::default(),
            tenants: Tenants::default(),
            otlp: Otlp::default(),
            events: EventsSection::default(),
            pipeline: PipelineSection::default(),
            tracker: TrackerSection::default(),
            storage: Storage::default(),
            query: QuerySection::default(),
            monitor: Monitor::default(),
            kafka: KafkaSection::default(),
            shutdown_grace_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Listen {
    pub(crate) otlp_grpc: SocketAddr,
    pub(crate) otlp_http: SocketAddr,
    pub(crate) api: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            otlp_grpc: ([127, 0, 0, 1], 4317).into(),
            otlp_http: ([127, 0, 0, 1], 4318).into(),
            api: ([127, 0, 0, 1], 8083).into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Tenants {
    /// The request header naming the tenant; absent (or `null`): every request is `default`'s.
    /// With keys, the tenant is the key's, and the header (when sent) must name it.
    pub(crate) header: Option<String>,
    /// The tenant of a request without the header (without keys).
    pub(crate) default: String,
    /// API keys; none: every route is open (the tenant comes from the header).
    pub(crate) keys: Vec<KeyConfig>,
    /// Every tenant's limits, unless `tenant_limits` names the tenant.
    pub(crate) limits: Limits,
    /// Limits of named tenants, in place of `limits`.
    pub(crate) tenant_limits: std::collections::BTreeMap<String, Limits>,
    /// With keys, the tenant whose `admin` keys see every tenant in the batch monitor and
    /// `/metrics` (the operator's); other tenants' admin keys see their own only.
    pub(crate) operator: Option<String>,
}

/// A tenant's rates; 0: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// Requests per second, on every route but health (bursts up to one second's worth).
    pub(crate) requests_per_second: u32,
    /// Bytes of OTLP and events request bodies (after decompression) per second (bursts up
    /// to one second's worth; a larger request passes when the bucket is full).
    pub(crate) bytes_per_second: u32,
}

impl Default for Tenants {
    fn default() -> Self {
        Tenants {
            header: Some("x-wit-tenant".into()),
            default: "default".into(),
            keys: Vec::new(),
            limits: Limits::default(),
            tenant_limits: std::collections::BTreeMap::new(),
            operator: None,
        }
    }
}

/// One API key: its tenant, the SHA-256 of the key (hex, from `wit keys hash`), its scopes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    pub(crate) tenant: String,
    pub(crate) sha256: String,
    pub(crate) scopes: Vec<Scope>,
}

/// What a key may do: `write` (OTLP and events in), `read` (SQL), `admin` (the batch
/// monitor and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scope {
    Write,
    Read,
    Admin,
}

impl Scope {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// When an OTLP request is answered with success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AckLevelName {
    WalDurable,
    Stored,
    Indexed,
}

impl From<AckLevelName> for wit_pipeline::AckLevel {
    fn from(level: AckLevelName) -> Self {
        match level {
            AckLevelName::WalDurable => wit_pipeline::AckLevel::WalDurable,
            AckLevelName::Stored => wit_pipeline::AckLevel::Stored,
            AckLevelName::Indexed => wit_pipeline::AckLevel::Indexed,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Otlp {
    /// The largest request body accepted, after decompression (bytes).
    pub(crate) max_message_bytes: usize,
    /// The acknowledgment level a success answer waits for.
    pub(crate) ack_level: AckLevelName,
    /// How long a request waits for its acknowledgment before it is answered as unavailable
    /// (the data stays in the WAL and is stored anyway).
    pub(crate) ack_timeout_ms: u64,
    /// The `Retry-After` (seconds) of an overload answer.
    pub(crate) retry_after_seconds: u64,
    /// Origins allowed by CORS on the OTLP/HTTP and API ports (`*` for any); empty: no CORS.
    pub(crate) cors_allowed_origins: Vec<String>,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            max_message_bytes: 8 << 20,
            ack_level: AckLevelName::WalDurable,
            ack_timeout_ms: 30_000,
            retry_after_seconds: 1,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// The Kafka source: a consumer group member storing every message of its topics exactly
/// once (see `wit_pipeline::kafka`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KafkaSection {
    /// `host:port` of the brokers, comma-separated; empty: no Kafka source.
    pub(crate) brokers: String,
    /// The consumer group (also the source's name for its offsets in the tracker).
    pub(crate) group: String,
    /// Which topics, how their names map to tenant and signal, how messages are encoded.
    pub(crate) topics: Vec<KafkaTopic>,
    /// A partition's batch is sent on at this many messages, milliseconds or bytes.
    pub(crate) batch_size: u64,
    pub(crate) batch_timeout_ms: u64,
    pub(crate) max_size_bytes: u64,
    /// The group session timeout: how soon a dead member's partitions move (milliseconds).
    pub(crate) session_timeout_ms: u64,
    /// On revocation, how long to wait for the claims of the batches sent (milliseconds).
    pub(crate) revoke_patience_ms: u64,
    /// librdkafka settings (`fetch.max.bytes`, `security.protocol`, ...).
    pub(crate) options: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: String::new(),
            group: "wit".into(),
            topics: Vec::new(),
            batch_size: 10_000,
            batch_timeout_ms: 1_000,
            max_size_bytes: 8 << 20,
            session_timeout_ms: 10_000,
            revoke_patience_ms: 5_000,
            options: std::collections::BTreeMap::new(),
        }
    }
}

/// One rule of topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaTopic {
    /// A topic's name, or a regular expression starting with `^`.
    pub(crate) subscription: String,
    /// Reads tenant and signal from the topic's name, e.g. `{prefix}.{signal}.{tenant}.{n}`.
    #[serde(default)]
    pub(crate) template: Option<String>,
    /// Or fixes them.
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    #[serde(default)]
    pub(crate) signal: Option<String>,
    /// `otlp_protobuf`, `otlp_json` or `ndjson` (events).
    pub(crate) format: MessageFormat,
}

/// How a topic's messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MessageFormat {
    OtlpProtobuf,
    OtlpJson,
    Ndjson,
}

/// NDJSON event streams.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EventsSection {
    /// JSON Schemas of streams: records that fail go to the tenant's `dead_letters` table.
    pub(crate) schemas: Vec<SchemaConfig>,
}

/// The JSON Schema of one event stream (of one tenant, or of every tenant).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SchemaConfig {
    /// The stream (`POST /v1/events/{stream}`).
    pub(crate) stream: String,
    /// The schema's version, recorded with every record it refuses.
    pub(crate) version: u32,
    /// Only this tenant's stream; absent: every tenant's (a tenant's own schema wins).
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    /// The schema itself, inline (YAML or JSON).
    #[serde(default)]
    pub(crate) schema: Option<serde_json::Value>,
    /// Or a file holding it as JSON.
    #[serde(default)]
    pub(crate) schema_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PipelineSection {
    /// Bytes of acknowledged data not yet stored that the server holds before it answers
    /// with overload.
    pub(crate) max_unstored_bytes: u64,
    /// Bytes of stored data not yet indexed that the server holds before it answers with
    /// overload (with indexing on).
    pub(crate) max_unindexed_bytes: u64,
    /// A batch leaves the batcher at this many parts, bytes or milliseconds of age.
    pub(crate) batch_max_parts: u64,
    pub(crate) batch_max_bytes: u64,
    pub(crate) batch_max_age_ms: u64,
    /// A Parquet file is published at this age (milliseconds) or size (bytes).
    pub(crate) file_max_age_ms: u64,
    /// Bytes one tenant may hold accepted but not yet stored (0: no bound but
    /// `max_unstored_bytes`); past it, that tenant gets 429.
    pub(crate) max_unstored_bytes_per_tenant: u64,
    /// A request under an `Idempotency-Key` taken within this many seconds is answered as
    /// the first one was and stores nothing.
    pub(crate) idempotency_window_seconds: u64,
    pub(crate) file_max_bytes: u64,
    /// Each published file gets a full-text index.
    pub(crate) indexing: bool,
    /// WAL segment size (bytes).
    pub(crate) wal_segment_bytes: u64,
    /// Bytes of recently acknowledged rows kept in memory for queries until their file is
    /// published.
    pub(crate) hot_tier_bytes: usize,
    /// While records trickle in, the processor starts a round (tracker steps, conversion,
    /// Kafka claims) at most this often (milliseconds).
    pub(crate) processing_interval_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            max_unstored_bytes: 1 << 30,
            max_unindexed_bytes: 1 << 30,
            batch_max_parts: 1024,
            batch_max_bytes: 8 << 20,
            batch_max_age_ms: 200,
            file_max_age_ms: 5_000,
            max_unstored_bytes_per_tenant: 0,
            idempotency_window_seconds: 86_400,
            file_max_bytes: 256 << 20,
            indexing: true,
            wal_segment_bytes: 64 << 20,
            hot_tier_bytes: 256 << 20,
            processing_interval_ms: 20,
        }
    }
}

/// Which tracker holds batches and the file catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
pub(crate) enum TrackerSection {
    /// SQLite in a file (default: `<data_dir>/tracker.db`).
    Sqlite { path: Option<PathBuf> },
    /// PostgreSQL, by a libpq connection string or URL.
    Postgres { url: String },
}

impl Default for TrackerSection {
    fn default() -> Self {
        TrackerSection::Sqlite { path: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Storage {
    /// Where Parquet files and indexes go: a `file://` URL or path (default
    /// `<data_dir>/data`, where `wit query --data <data_dir>` looks), `s3://bucket/prefix`, `gs://…`, `az://…`.
    pub(crate) url: Option<String>,
    /// object_store's options (`aws_endpoint`, `aws_region`, …), `${ENV}` for secrets.
    pub(crate) options: std::collections::BTreeMap<String, String>,
    pub(crate) retries: usize,
    pub(crate) retry_timeout_ms: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            url: None,
            options: Default::default(),
            retries: 5,
            retry_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QuerySection {
    /// Threads (partitions) a query scans with; 0: the machine's cores.
    pub(crate) target_partitions: usize,
    /// A bound on a query's operator memory (bytes); 0: unbounded.
    pub(crate) memory_limit_bytes: usize,
    /// The most rows a JSON answer holds.
    pub(crate) max_rows: usize,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            target_partitions: 0,
            memory_limit_bytes: 0,
            max_rows: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Monitor {
    /// A batch not finished this many minutes after its creation is an alert.
    pub(crate) stuck_after_minutes: u64,
    /// The most batches an alert list holds.
    pub(crate) max_alerts: usize,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            stuck_after_minutes: 10,
            max_alerts: 1000,
        }
    }
}

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// The file at `path`, with `${NAME}` replaced by the environment's values.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read the configuration `{}`: {e}", path.display())))?;
        Config::parse(&text, |name| std::env::var(name).ok())
            .map_err(|e| ConfigError(format!("configuration `{}`: {}", path.display(), e.0)))
    }

    /// `text` as YAML, after `${NAME}` substitution by `env` outside whole-line comments (a
    /// missing variable is an error naming it; `$${` is a literal `${`).
    pub(crate) fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = substitute(text, env)?;
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_saphyr::from_str(&text).map_err(|e| ConfigError(e.to_string()))?;
        super::access::Keys::of(&config).map_err(ConfigError)?;
        super::schemas::Schemas::of(&config).map_err(ConfigError)?;
        super::kafka::source_config(&config.kafka).map_err(ConfigError)?;
        if let Some(name) = &config.tenants.operator {
            wit_batch::Tenant::try_new(name).map_err(|e| ConfigError(format!("tenants.operator `{name}`: {e}")))?;
        }
        for name in config.tenants.tenant_limits.keys() {
            wit_batch::Tenant::try_new(name).map_err(|e| ConfigError(format!("tenants.tenant_limits.{name}: {e}")))?;
        }
        Ok(config)
    }

    pub(crate) fn tracker_path(&self) -> PathBuf {
        match &self.tracker {
            TrackerSection::Sqlite { path: Some(path) } => path.clone(),
            _ => self.data_dir.join("tracker.db"),
        }
    }

    pub(crate) fn storage_url(&self) -> String {
        self.storage
            .url
            .clone()
            .unwrap_or_else(|| self.data_dir.join("data").display().to_string())
    }

    pub(crate) fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.otlp.ack_timeout_ms)
    }
}

/// `${NAME}` replaced in every line but whole-line comments (so the example file can show
/// the syntax in its comments).
fn substitute(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.trim_start().starts_with('#') {
            true => out.push_str(line),
            false => out.push_str(&substitute_line(line, &env)?),
        }
    }
    Ok(out)
}

fn substitute_line(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| ConfigError("`${` without a closing `}`".into()))?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError(format!(
                    "`${{{name}}}` is not an environment variable name"
                )));
            }
            let value = env(name).ok_or_else(|| ConfigError(format!("environment variable `{name}` is not set")))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
