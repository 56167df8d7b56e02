//! JSON Schema per event stream (`events.schemas` in the configuration): each stream's
//! records are checked against its schema as they arrive; a record that fails goes to the
//! tenant's `dead_letters` table with the schema's version and the failing path, and the
//! rest of the request is taken. Schemas come from the configuration only: a `$ref` to
//! anything outside the schema is refused when the server starts (no HTTP or file fetching).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use wit_batch::Tenant;

use super::config::{Config, SchemaConfig};

/// One stream's schema, compiled.
pub(crate) struct StreamSchema {
    /// The version the configuration gives it, recorded with each dead letter.
    pub(crate) version: u32,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for StreamSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSchema")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why a record does not match its schema: where (a JSON Pointer into the record, `""` for
/// the record itself) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl StreamSchema {
    /// The first way `record` fails the schema, if it does.
    pub(crate) fn check(&self, record: &Value) -> Result<(), Violation> {
        match self.validator.validate(record) {
            Ok(()) => Ok(()),
            Err(e) => Err(Violation {
                path: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

/// Every configured schema, by tenant (or any tenant) and stream.
#[derive(Debug, Default)]
pub(crate) struct Schemas {
    by_stream: HashMap<(Option<String>, String), Arc<StreamSchema>>,
}

impl Schemas {
    /// Compiles `config`'s schemas.
    ///
    /// # Errors
    ///
    /// A message naming the entry: a schema that is missing, given twice, unreadable, not a
    /// valid JSON Schema, or referring outside itself; a stream or tenant given twice.
    pub(crate) fn of(config: &Config) -> Result<Schemas, String> {
        let mut by_stream = HashMap::new();
        for (i, entry) in config.events.schemas.iter().enumerate() {
            let name = format!(
                "events.schemas[{i}] (stream `{}`{})",
                entry.stream,
                entry
                    .tenant
                    .as_ref()
                    .map(|t| format!(", tenant `{t}`"))
                    .unwrap_or_default()
            );
            let schema = compile(entry).map_err(|e| format!("{name}: {e}"))?;
            if let Some(tenant) = &entry.tenant {
                Tenant::try_new(tenant.as_str()).map_err(|e| format!("{name}: {e}"))?;
            }
            let key = (entry.tenant.clone(), entry.stream.clone());
            if by_stream.insert(key, Arc::new(schema)).is_some() {
                return Err(format!(
                    "{name}: the stream has a schema already; give each stream one (its current version)"
                ));
            }
        }
        Ok(Schemas { by_stream })
    }

    /// The schema of `tenant`'s `stream`: the tenant's own, else the one of every tenant.
    pub(crate) fn get(&self, tenant: &Tenant, stream: &str) -> Option<&StreamSchema> {
        if self.by_stream.is_empty() {
            return None;
        }
        self.by_stream
            .get(&(Some(tenant.as_str().to_owned()), stream.to_owned()))
            .or_else(|| self.by_stream.get(&(None, stream.to_owned())))
            .map(|s| &**s)
    }
}

fn compile(entry: &SchemaConfig) -> Result<StreamSchema, String> {
    let schema = match (&entry.schema, &entry.schema_file) {
        (Some(schema), None) => schema.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?
        }
        (Some(_), Some(_)) => return Err("give `schema` or `schema_file`, not both".to_owned()),
        (None, None) => return Err("no `schema` nor `schema_file`".to_owned()),
    };
    let validator = jsonschema::validator_for(&schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    Ok(StreamSchema {
        version: entry.version,
        validator,
    })
}
