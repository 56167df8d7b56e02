//! Full text inside SQL, in wit-index's query language:
//!
//! - `matches(text, 'query')`: the query over one text (a text column, a log `body`, or any
//!   text expression such as `attr(attributes, 'k')`), with the index's analyzer; only free
//!   text terms (no `name:value`).
//! - `search('query')`: the query over everything wit-index indexes of a row (its free text,
//!   attributes, service, severity, ids); `search('alias', 'query')` names the table when the
//!   query reads more than one.
//!
//! An analyzer rule checks both queries when the SQL is planned and rewrites `search` into
//! `search_row(signal, query, <the row's indexed columns>)`, a plain function of columns, so
//! both evaluate as ordinary predicates (by scan) wherever they stand. Where a scan reads a
//! file that has an index, [`index_queries`] turns them (and `trace_id`/`span_id`
//! equalities) into index searches whose rows become the file's row selection, and files
//! with no matching row are not read at all; the predicates still run on the rows read, so
//! the answer is the same with or without an index.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, exec_err, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use wit_batch::Signal;
use wit_index::Query;

pub(crate) const MATCHES: &str = "matches";
pub(crate) const SEARCH: &str = "search";
pub(crate) const SEARCH_ROW: &str = "search_row";

/// The full-text functions every session has.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Matches::new()),
        ScalarUDF::new_from_impl(Search::new()),
        ScalarUDF::new_from_impl(SearchRow::new()),
    ]
}

/// The rule that checks full-text queries and rewrites `search` for the table it reads.
pub(crate) fn rule() -> Arc<dyn AnalyzerRule + Send + Sync> {
    Arc::new(FullTextRule)
}

/// A query literal's parse error as a DataFusion error (mapped to [`crate::Error::Search`]).
fn query_error(e: wit_index::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn literal_text(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

fn scalar_text(value: &ColumnarValue) -> Option<String> {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
        ) => Some(s.clone()),
        _ => None,
    }
}

// --- matches(text, query) ---------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Hash)]
struct Matches {
    signature: Signature,
}

impl Matches {
    fn new() -> Self {
        Matches {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// `query` evaluated on each text of `array` (NULL for a NULL text).
fn matches_of(query: &Query, array: &ArrayRef) -> Result<BooleanArray> {
    let texts = arrow::compute::cast(&texts_of(array)?, &DataType::Utf8)?;
    Ok(query
        .matches_texts(texts.as_string::<i32>().iter())
        .into_iter()
        .collect())
}

/// The texts of a `matches` argument: a text array, or a value struct's `str` child (a log
/// body).
fn texts_of(array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Struct(fields) if fields.find("str").is_some() => {
            let body = array.as_struct();
            let str = body.column_by_name("str").expect("found above");
            // A NULL body has no text, whatever its child holds.
            let nulls = arrow::buffer::NullBuffer::union(body.nulls(), str.nulls());
            Ok(arrow::array::make_array(
                str.to_data().into_builder().nulls(nulls).build()?,
            ))
        }
        _ => Ok(arrow::compute::cast(array, &DataType::Utf8)?),
    }
}

fn is_text_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    ) || matches!(t, DataType::Dictionary(_, values) if is_text_type(values))
        || matches!(t, DataType::Struct(f) if f.find("str").is_some() && f.find("type").is_some())
}

impl ScalarUDFImpl for Matches {
    fn name(&self) -> &str {
        MATCHES
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !is_text_type(&args[0]) {
            return plan_err!(
                "matches(text, query): the first argument must be text (a text column, body, attr(...)), not {}",
                args[0]
            );
        }
        if !matches!(args[1], DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return plan_err!(
                "matches(text, query): the query must be a text literal, not {}",
                args[1]
            );
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(text) = scalar_text(&args.args[1]) else {
            return exec_err!("matches(text, query): the query must be a text literal");
        };
        let query = Query::parse(&text).map_err(query_error)?;
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let array = args.args[0].to_array(args.number_rows)?;
        let out = match array.as_any_dictionary_opt() {
            // A dictionary column: each distinct text is matched once, then mapped to rows.
            Some(dictionary) => {
                let per_value = matches_of(&query, dictionary.values())?;
                arrow::compute::take(&per_value, dictionary.keys(), None)?
                    .as_boolean()
                    .clone()
            }
            None => matches_of(&query, &array)?,
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

// --- search(query) / search(table, query) -----------------------------------------------------

#[derive(Debug, PartialEq, Eq, Hash)]
struct Search {
    signature: Signature,
}

impl Search {
    fn new() -> Self {
        Search {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Search {
    fn name(&self) -> &str {
        SEARCH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // The analyzer rule replaces every call it can place; one left over stands where no
        // table's row is in reach.
        exec_err!("search(query) must read the rows of one table (spans, logs or metrics)")
    }
}

// --- search_row(signal, query, columns...) ----------------------------------------------------

#[derive(Debug, PartialEq, Eq, Hash)]
struct SearchRow {
    signature: Signature,
    /// The name of the `search(...)` call this one replaces, which plan nodes above may
    /// refer to; `None` when called by its own name.
    replaces: Option<String>,
}

impl SearchRow {
    fn new() -> Self {
        SearchRow {
            signature: Signature::variadic_any(Volatility::Immutable),
            replaces: None,
        }
    }
}

impl ScalarUDFImpl for SearchRow {
    fn name(&self) -> &str {
        SEARCH_ROW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match &self.replaces {
            Some(name) => Ok(name.clone()),
            None => Ok(format!(
                "{SEARCH_ROW}({})",
                args.iter()
                    .map(|a| a.schema_name().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        }
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        self.schema_name(args)
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (Some(signal), Some(text)) = (
            args.args.first().and_then(scalar_text),
            args.args.get(1).and_then(scalar_text),
        ) else {
            return exec_err!("search_row(signal, query, columns...): signal and query must be text literals");
        };
        let signal: Signal = signal.parse().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let query = Query::parse(&text).map_err(query_error)?;
        let rows = args.number_rows;
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (value, field) in args.args.iter().zip(&args.arg_fields).skip(2) {
            let mut array = value.to_array(rows)?;
            // wit-index reads text as `Utf8`; the tables hold it as views.
            if matches!(
                array.data_type(),
                DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(_, _)
            ) {
                array = arrow::compute::cast(&array, &DataType::Utf8)?;
            }
            fields.push(Field::new(field.name(), array.data_type().clone(), true));
            columns.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let hits = query.matching_rows(signal, &batch);
        let out: BooleanArray = (0..rows as u64).map(|r| Some(hits.contains(r))).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

// --- the analyzer rule ------------------------------------------------------------------------

#[derive(Debug)]
struct FullTextRule;

impl AnalyzerRule for FullTextRule {
    fn name(&self) -> &str {
        "wit_full_text"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let schema = match node.inputs().as_slice() {
                [input] => input.schema().clone(),
                _ => node.schema().clone(),
            };
            node.map_expressions(|expr| expr.transform_up(|e| rewrite(e, &schema)))
        })
        .map(|t| t.data)
    }
}

fn rewrite(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(call) = &expr else {
        return Ok(Transformed::no(expr));
    };
    match call.func.name() {
        MATCHES => {
            let Some(text) = call.args.get(1).and_then(literal_text) else {
                return plan_err!("matches(text, query): the query must be a text literal");
            };
            let query = Query::parse(text).map_err(query_error)?;
            if !query.is_text_only() {
                return plan_err!(
                    "matches(text, '{text}'): `name:value` terms search a whole row: use search('{text}')"
                );
            }
            Ok(Transformed::no(expr))
        }
        SEARCH => {
            let (qualifier, text) = match call.args.as_slice() {
                [q] => (None, literal_text(q)),
                [t, q] => match literal_text(t) {
                    Some(t) => (Some(t.to_string()), literal_text(q)),
                    None => {
                        return plan_err!(
                            "search(table, query): the table must be a text literal naming a table or alias"
                        );
                    }
                },
                _ => return plan_err!("search takes a query, or a table name and a query"),
            };
            let Some(text) = text else {
                return plan_err!("search(query): the query must be a text literal");
            };
            Query::parse(text).map_err(query_error)?;
            let (signal, columns) = row_columns(schema, qualifier.as_deref())?;
            let mut args = vec![
                Expr::Literal(ScalarValue::Utf8(Some(signal.to_string())), None),
                Expr::Literal(ScalarValue::Utf8(Some(text.to_string())), None),
            ];
            args.extend(columns.into_iter().map(Expr::Column));
            let udf = Arc::new(ScalarUDF::new_from_impl(SearchRow {
                replaces: Some(expr.schema_name().to_string()),
                ..SearchRow::new()
            }));
            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                udf, args,
            ))))
        }
        _ => Ok(Transformed::no(expr)),
    }
}

/// The signal of the table `qualifier` names in `schema` (the only table when `None`) and
/// its columns that wit-index reads.
fn row_columns(schema: &DFSchema, qualifier: Option<&str>) -> Result<(Signal, Vec<Column>)> {
    let mut qualifiers: Vec<String> = schema
        .iter()
        .filter_map(|(q, _)| q.map(|q| q.table().to_string()))
        .collect();
    qualifiers.sort();
    qualifiers.dedup();
    let table = match qualifier {
        Some(q) if qualifiers.iter().any(|t| t == q) => q.to_string(),
        Some(q) => {
            return plan_err!(
                "search('{q}', ...): no table or alias `{q}` here (there is {})",
                qualifiers.join(", ")
            );
        }
        None if qualifiers.len() == 1 => qualifiers.remove(0),
        None if qualifiers.is_empty() => {
            return plan_err!("search(query) must read the rows of one table (spans, logs or metrics)");
        }
        None => {
            return plan_err!(
                "search(query) reads {}: name one with search('table', query)",
                qualifiers.join(" and ")
            );
        }
    };
    let has = |name: &str| {
        schema
            .iter()
            .any(|(q, f)| q.is_some_and(|q| q.table() == table) && f.name() == name)
    };
    let signal = if has("kind") && has("span_id") {
        Signal::Traces
    } else if has("body") && has("severity_number") {
        Signal::Logs
    } else if has("metric_name") {
        Signal::Metrics
    } else if DEAD_LETTER_COLUMNS.iter().all(|c| has(c))
        && schema
            .iter()
            .filter(|(q, _)| q.is_some_and(|q| q.table() == table))
            .count()
            == DEAD_LETTER_COLUMNS.len()
    {
        Signal::DeadLetters
    } else if has(crate::time::TIME_COLUMN) {
        Signal::Events
    } else {
        return plan_err!("search(query): `{table}` is not a spans, logs, metrics, events or dead_letters table");
    };
    // Events: every column but the time is indexed.
    let indexed = |name: &str| match wit_index::indexed_columns(signal) {
        Some(columns) => columns.contains(&name),
        None => name != crate::time::TIME_COLUMN,
    };
    let columns = schema
        .iter()
        .filter(|(q, f)| q.is_some_and(|q| q.table() == table) && indexed(f.name()))
        .map(|(q, f)| Column::new(q.cloned(), f.name()))
        .collect();
    Ok((signal, columns))
}

/// Whether a pushed-down filter is a `search` (over a whole row), which a file's index
/// answers exactly: the scan applies it itself (see `WitTable::scan`).
pub(crate) fn is_exact_by_index(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(call) if call.func.name() == SEARCH_ROW
        && call.args.get(1).and_then(literal_text).is_some_and(|q| Query::parse(q).is_ok()))
}

/// The columns whose text wit-index indexes as a row's free text.
const FREE_TEXT: &[&str] = &[
    "name",
    "status_message",
    "body",
    "event_name",
    "metric_name",
    "metric_description",
    "reason",
    "record",
];

/// The columns of the dead letters' table, which make a table that has exactly these that
/// table: its `timestamp` alone would make it an events table, indexed otherwise.
const DEAD_LETTER_COLUMNS: &[&str] = &[
    "timestamp",
    "signal",
    "stream",
    "schema_version",
    "path",
    "reason",
    "record",
    "topic",
    "partition",
    "offset",
];

/// The index searches a scan can make from its pushed-down filters: `search_row` queries,
/// monotone `matches` queries (the index's rows then include every row the column matches),
/// and `trace_id`/`span_id` equalities. Each narrows the rows read; none is needed for the
/// answer, since the filters run on the rows read.
pub(crate) fn index_queries(filters: &[Expr]) -> Vec<Query> {
    let mut out = Vec::new();
    for filter in filters {
        for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
            if let Some(q) = index_query(conjunct) {
                out.push(q);
            }
        }
    }
    out
}

fn index_query(expr: &Expr) -> Option<Query> {
    match expr {
        Expr::ScalarFunction(call) if call.func.name() == SEARCH_ROW => {
            Query::parse(call.args.get(1).and_then(literal_text)?).ok()
        }
        Expr::ScalarFunction(call) if call.func.name() == MATCHES => {
            // Only a column the index reads as free text: the index then finds a superset
            // of the column's matches (any other text, say an attribute, it indexes apart).
            let Some(Expr::Column(column)) = call.args.first() else {
                return None;
            };
            if !FREE_TEXT.contains(&column.name.as_str()) {
                return None;
            }
            let query = Query::parse(call.args.get(1).and_then(literal_text)?).ok()?;
            (query.is_monotone() && query.is_text_only()).then_some(query)
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (column, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
                _ => return None,
            };
            let field = match column.name.as_str() {
                "trace_id" => "trace_id",
                "span_id" => "span_id",
                _ => return None,
            };
            let bytes = match value {
                ScalarValue::FixedSizeBinary(_, Some(b))
                | ScalarValue::Binary(Some(b))
                | ScalarValue::LargeBinary(Some(b)) => b,
                _ => return None,
            };
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Query::parse(&format!("{field}:{hex}")).ok()
        }
        _ => None,
    }
}
