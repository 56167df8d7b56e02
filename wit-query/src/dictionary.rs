//! Text columns with few distinct values, read and filtered as dictionaries.
//!
//! The names of services, scopes, spans and metrics, units and severity texts repeat across
//! millions of rows; wit-store's Parquet files hold them dictionary-encoded. The OTLP tables
//! declare them `Dictionary(Int32, Utf8)`, so the Parquet reader hands the dictionary pages
//! over as they are instead of expanding a string per row, and `=`, `IN`, `LIKE` and `ILIKE`
//! with a literal run once per distinct value, mapped to the rows by their keys (DataFusion
//! keeps the dictionary for these, and Arrow's kernels evaluate a dictionary that way).
//!
//! Grouping is the exception: DataFusion groups a dictionary column through its generic
//! row format, expanding every row's string. An analyzer rule, run after type coercion,
//! rewrites `GROUP BY <dictionary column>` to group by a number instead:
//! `Projection(group_text(id) AS <the column>) ← Aggregate(GROUP BY group_id(<column>))`.
//! `group_id` interns each batch's distinct values once (a few per batch) and maps the rows'
//! keys to their ids; `group_text` turns the ids of the result back into the texts. The
//! interner belongs to one query plan: its memory is bounded by that query's distinct
//! values, and nothing is shared between queries or tenants. Its ids are dense (0, 1, 2, …
//! in the order met), so [`crate::dense`] groups by them with an array instead of a hash
//! table.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Projection, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use parking_lot::Mutex;

/// The OTLP tables' text columns read as dictionaries.
pub(crate) const DICTIONARY_COLUMNS: &[&str] = &[
    "service_name",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_schema_url",
    "name",
    "severity_text",
    "event_name",
    "metric_name",
    "metric_description",
    "metric_unit",
];

/// The type a dictionary column is read as.
pub(crate) fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `schema` with its [`DICTIONARY_COLUMNS`] as dictionaries.
pub(crate) fn with_dictionaries(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match DICTIONARY_COLUMNS.contains(&f.name().as_str()) {
            true => Arc::new(f.as_ref().clone().with_data_type(dictionary_type())),
            false => f.clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The rule rewriting grouping on dictionary columns (see the module's documentation).
pub(crate) fn rule() -> Arc<dyn AnalyzerRule + Send + Sync> {
    Arc::new(GroupByIdRule)
}

/// The distinct texts one query grouped by, each with its id.
#[derive(Debug, Default)]
struct Interner {
    inner: Mutex<Texts>,
}

#[derive(Debug, Default)]
struct Texts {
    ids: HashMap<Arc<str>, u32>,
    texts: Vec<Arc<str>>,
}

impl Interner {
    /// The id of each text (`None` for NULL).
    fn ids<'a>(&self, texts: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<u32>> {
        let mut guard = self.inner.lock();
        let Texts {
            ids: by_text,
            texts: texts_of,
        } = &mut *guard;
        texts
            .map(|text| {
                let text = text?;
                if let Some(id) = by_text.get(text) {
                    return Some(*id);
                }
                let id = texts_of.len() as u32;
                let text: Arc<str> = Arc::from(text);
                texts_of.push(text.clone());
                by_text.insert(text, id);
                Some(id)
            })
            .collect()
    }

    fn texts(&self, ids: &UInt32Array) -> StringArray {
        let guard = self.inner.lock();
        ids.iter()
            .map(|id| id.and_then(|id| guard.texts.get(id as usize)).map(|t| t.as_ref()))
            .collect()
    }
}

/// Whether `function` is a query's `group_id` (the key [`crate::dense`] groups by).
pub(crate) fn is_group_id(function: &ScalarUDF) -> bool {
    function
        .inner()
        .downcast_ref::<Interned>()
        .is_some_and(|f| f.name == GROUP_ID)
}

/// A function holding its query's interner: equal only to itself.
#[derive(Debug)]
struct Interned {
    name: &'static str,
    interner: Arc<Interner>,
    signature: Signature,
}

impl PartialEq for Interned {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.interner, &other.interner)
    }
}

impl Eq for Interned {}

impl Hash for Interned {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        (Arc::as_ptr(&self.interner) as usize).hash(state);
    }
}

const GROUP_ID: &str = "group_id";
const GROUP_TEXT: &str = "group_text";

impl ScalarUDFImpl for Interned {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.name {
            GROUP_ID => DataType::UInt32,
            _ => dictionary_type(),
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            self.name,
            self.return_type(&[])?,
            args.arg_fields[0].is_nullable(),
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let input = args.args[0].to_array(args.number_rows)?;
        let out: ArrayRef = match self.name {
            GROUP_ID => Arc::new(self.group_ids(&input)?),
            _ => arrow::compute::cast(&self.interner.texts(input.as_primitive()), &dictionary_type())?,
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

impl Interned {
    /// The rows' ids: a dictionary's distinct values are interned once, then its keys mapped.
    fn group_ids(&self, input: &ArrayRef) -> Result<UInt32Array> {
        match input.as_any_dictionary_opt() {
            Some(dictionary) => {
                let values = arrow::compute::cast(dictionary.values(), &DataType::Utf8)?;
                let value_ids: UInt32Array = self
                    .interner
                    .ids(values.as_string::<i32>().iter())
                    .into_iter()
                    .collect();
                // NULL where the key or its value is NULL.
                Ok(arrow::compute::take(&value_ids, dictionary.keys(), None)?
                    .as_primitive()
                    .clone())
            }
            None => {
                let texts = arrow::compute::cast(input, &DataType::Utf8)?;
                Ok(self.interner.ids(texts.as_string::<i32>().iter()).into_iter().collect())
            }
        }
    }
}

#[derive(Debug)]
struct GroupByIdRule;

impl AnalyzerRule for GroupByIdRule {
    fn name(&self) -> &str {
        "wit_group_by_id"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let interner = Arc::new(Interner::default());
        let function = |name: &'static str| {
            Arc::new(ScalarUDF::new_from_impl(Interned {
                name,
                interner: interner.clone(),
                signature: Signature::any(1, Volatility::Immutable),
            }))
        };
        let (id, text) = (function(GROUP_ID), function(GROUP_TEXT));
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            let input = aggregate.input.schema();
            let by_id: Vec<bool> = aggregate
                .group_expr
                .iter()
                .map(|e| {
                    matches!(e, Expr::Column(_))
                        && matches!(e.get_type(input), Ok(DataType::Dictionary(_, v)) if *v == DataType::Utf8)
                })
                .collect();
            if !by_id.contains(&true) || aggregate.schema.fields().len() != by_id.len() + aggregate.aggr_expr.len() {
                return Ok(Transformed::no(node));
            }
            let groups = aggregate
                .group_expr
                .iter()
                .zip(&by_id)
                .enumerate()
                .map(|(i, (e, by_id))| match by_id {
                    true => id.call(vec![e.clone()]).alias(format!("__wit_group_{i}")),
                    false => e.clone(),
                })
                .collect();
            let grouped = Aggregate::try_new(aggregate.input.clone(), groups, aggregate.aggr_expr.clone())?;
            // The original aggregate's columns, names and qualifiers, so nothing above changes.
            let columns = aggregate
                .schema
                .iter()
                .zip(grouped.schema.iter())
                .enumerate()
                .map(|(i, ((qualifier, field), (new_qualifier, new_field)))| {
                    let column = Expr::Column(Column::new(new_qualifier.cloned(), new_field.name()));
                    match by_id.get(i).copied().unwrap_or(false) {
                        true => text
                            .call(vec![column])
                            .alias_qualified(qualifier.cloned(), field.name()),
                        false if new_qualifier == qualifier && new_field.name() == field.name() => column,
                        false => column.alias_qualified(qualifier.cloned(), field.name()),
                    }
                })
                .collect();
            let projection = Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(grouped)))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        })
        .map(|t| t.data)
    }
}
