//! SQL functions that make Wit's columns read well: attribute values by key, and the names
//! the OTLP specification gives to enum numbers.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, MapArray, StringArray, StringBuilder,
    StructArray,
};
use arrow::datatypes::{DataType, Int32Type, UInt8Type};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The functions every session has.
pub(crate) fn all() -> Vec<ScalarUDF> {
    let mut out: Vec<ScalarUDF> = [Attr::Text, Attr::Int, Attr::Double, Attr::Bool]
        .into_iter()
        .map(|kind| ScalarUDF::new_from_impl(AttrFn::new(kind)))
        .collect();
    out.extend(ENUMS.iter().map(|e| ScalarUDF::new_from_impl(EnumFn::new(e))));
    out
}

// --- attr(map, key) ---------------------------------------------------------------------------

/// What an `attr*` function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Attr {
    /// `attr`: any value as text.
    Text,
    /// `attr_int`: integer values.
    Int,
    /// `attr_double`: doubles, and integers widened.
    Double,
    /// `attr_bool`: booleans.
    Bool,
}

/// `AnyValue` oneof numbers, as wit-batch stores them in a value's `type`.
mod any {
    pub(super) const STRING: u8 = 1;
    pub(super) const BOOL: u8 = 2;
    pub(super) const INT: u8 = 3;
    pub(super) const DOUBLE: u8 = 4;
    pub(super) const ARRAY: u8 = 5;
    pub(super) const KVLIST: u8 = 6;
    pub(super) const BYTES: u8 = 7;
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AttrFn {
    kind: Attr,
    signature: Signature,
}

impl AttrFn {
    fn new(kind: Attr) -> Self {
        AttrFn {
            kind,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AttrFn {
    fn name(&self) -> &str {
        match self.kind {
            Attr::Text => "attr",
            Attr::Int => "attr_int",
            Attr::Double => "attr_double",
            Attr::Bool => "attr_bool",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let is_attrs = matches!(&args[0], DataType::Map(entries, _)
            if matches!(entries.data_type(), DataType::Struct(f) if f.len() == 2
                && matches!(f[1].data_type(), DataType::Struct(v) if v.find("type").is_some() && v.find("str").is_some())));
        if !is_attrs {
            return plan_err!(
                "{}(attributes, key): the first argument must be an attributes column (attributes, resource_attributes, scope_attributes, ...), not {}",
                self.name(),
                args[0]
            );
        }
        if !matches!(args[1], DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return plan_err!(
                "{}(attributes, key): the key must be text, not {}",
                self.name(),
                args[1]
            );
        }
        Ok(match self.kind {
            Attr::Text => DataType::Utf8,
            Attr::Int => DataType::Int64,
            Attr::Double => DataType::Float64,
            Attr::Bool => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let all_scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let maps = args.args[0].to_array(rows)?;
        let keys = arrow::compute::cast(&args.args[1].to_array(rows)?, &DataType::Utf8)?;
        let (maps, keys) = (maps.as_map(), keys.as_string::<i32>());
        let out = attr_values(self.kind, maps, keys)?;
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The value of `keys[row]` in each row's map (the first entry with that key), per `kind`.
fn attr_values(kind: Attr, maps: &MapArray, keys: &StringArray) -> Result<ArrayRef> {
    let entry_keys = maps.keys().as_string::<i32>();
    let values: &StructArray = maps.values().as_struct();
    let child = |name: &str| {
        values
            .column_by_name(name)
            .ok_or_else(|| datafusion::error::DataFusionError::Execution(format!("attribute values have no `{name}`")))
    };
    let types = child("type")?.as_primitive::<UInt8Type>().clone();
    let strs = child("str")?.as_string::<i32>().clone();
    let ints = child("int")?.as_primitive::<arrow::datatypes::Int64Type>().clone();
    let doubles = child("double")?.as_primitive::<arrow::datatypes::Float64Type>().clone();
    let bools = child("bool")?.as_boolean().clone();
    let bytes = child("bytes")?.as_binary::<i32>().clone();
    let offsets = maps.value_offsets();
    let find = |row: usize| -> Option<usize> {
        if maps.is_null(row) || keys.is_null(row) {
            return None;
        }
        let key = keys.value(row);
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        (start..end).find(|&i| entry_keys.value(i) == key)
    };
    let n = maps.len();
    Ok(match kind {
        Attr::Text => {
            let mut out = StringBuilder::with_capacity(n, n * 8);
            for row in 0..n {
                let text = find(row).and_then(|i| match types.value(i) {
                    any::STRING | any::ARRAY | any::KVLIST => strs.is_valid(i).then(|| strs.value(i).to_string()),
                    any::BOOL => bools.is_valid(i).then(|| bools.value(i).to_string()),
                    any::INT => ints.is_valid(i).then(|| ints.value(i).to_string()),
                    any::DOUBLE => doubles.is_valid(i).then(|| format!("{:?}", doubles.value(i))),
                    any::BYTES => bytes.is_valid(i).then(|| hex(bytes.value(i))),
                    _ => None,
                });
                out.append_option(text);
            }
            Arc::new(out.finish())
        }
        Attr::Int => {
            let mut out = Int64Builder::with_capacity(n);
            for row in 0..n {
                out.append_option(
                    find(row)
                        .filter(|&i| types.value(i) == any::INT && ints.is_valid(i))
                        .map(|i| ints.value(i)),
                );
            }
            Arc::new(out.finish())
        }
        Attr::Double => {
            let mut out = Float64Builder::with_capacity(n);
            for row in 0..n {
                out.append_option(find(row).and_then(|i| match types.value(i) {
                    any::DOUBLE if doubles.is_valid(i) => Some(doubles.value(i)),
                    any::INT if ints.is_valid(i) => Some(ints.value(i) as f64),
                    _ => None,
                }));
            }
            Arc::new(out.finish())
        }
        Attr::Bool => {
            let mut out = BooleanBuilder::with_capacity(n);
            for row in 0..n {
                out.append_option(
                    find(row)
                        .filter(|&i| types.value(i) == any::BOOL && bools.is_valid(i))
                        .map(|i| bools.value(i)),
                );
            }
            Arc::new(out.finish())
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// --- enum names -------------------------------------------------------------------------------

/// An enum column and the names of its numbers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct EnumSpec {
    function: &'static str,
    column: &'static str,
    input: InputType,
    names: &'static [(i32, &'static str)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum InputType {
    Int32,
    UInt8,
}

const SEVERITIES: &[(i32, &str)] = &[
    (0, "UNSPECIFIED"),
    (1, "TRACE"),
    (2, "TRACE2"),
    (3, "TRACE3"),
    (4, "TRACE4"),
    (5, "DEBUG"),
    (6, "DEBUG2"),
    (7, "DEBUG3"),
    (8, "DEBUG4"),
    (9, "INFO"),
    (10, "INFO2"),
    (11, "INFO3"),
    (12, "INFO4"),
    (13, "WARN"),
    (14, "WARN2"),
    (15, "WARN3"),
    (16, "WARN4"),
    (17, "ERROR"),
    (18, "ERROR2"),
    (19, "ERROR3"),
    (20, "ERROR4"),
    (21, "FATAL"),
    (22, "FATAL2"),
    (23, "FATAL3"),
    (24, "FATAL4"),
];

/// The OTLP enums stored as numbers, with the names the specification gives them (span kinds
/// and status codes lower-cased as the SDK APIs write them; severities as the log data
/// model's short names).
const ENUMS: &[EnumSpec] = &[
    EnumSpec {
        function: "span_kind",
        column: "spans.kind",
        input: InputType::Int32,
        names: &[
            (0, "unspecified"),
            (1, "internal"),
            (2, "server"),
            (3, "client"),
            (4, "producer"),
            (5, "consumer"),
        ],
    },
    EnumSpec {
        function: "status_name",
        column: "spans.status_code",
        input: InputType::Int32,
        names: &[(0, "unset"), (1, "ok"), (2, "error")],
    },
    EnumSpec {
        function: "severity_name",
        column: "logs.severity_number",
        input: InputType::Int32,
        names: SEVERITIES,
    },
    EnumSpec {
        function: "metric_type_name",
        column: "metrics.metric_type",
        input: InputType::UInt8,
        names: &[
            (5, "gauge"),
            (7, "sum"),
            (9, "histogram"),
            (10, "exponential_histogram"),
            (11, "summary"),
        ],
    },
    EnumSpec {
        function: "temporality_name",
        column: "metrics.aggregation_temporality",
        input: InputType::Int32,
        names: &[(0, "unspecified"), (1, "delta"), (2, "cumulative")],
    },
];

#[derive(Debug, PartialEq, Eq, Hash)]
struct EnumFn {
    spec: &'static EnumSpec,
    signature: Signature,
}

impl EnumFn {
    fn new(spec: &'static EnumSpec) -> Self {
        let input = match spec.input {
            InputType::Int32 => DataType::Int32,
            InputType::UInt8 => DataType::UInt8,
        };
        EnumFn {
            spec,
            signature: Signature::exact(vec![input], Volatility::Immutable),
        }
    }

    fn name_of(&self, n: i32) -> Option<&'static str> {
        self.spec.names.iter().find(|(v, _)| *v == n).map(|(_, name)| *name)
    }
}

impl ScalarUDFImpl for EnumFn {
    fn name(&self) -> &str {
        self.spec.function
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let input = args.args[0].to_array(args.number_rows)?;
        let numbers: Vec<Option<i32>> = match self.spec.input {
            InputType::Int32 => input.as_primitive::<Int32Type>().iter().collect(),
            InputType::UInt8 => input
                .as_primitive::<UInt8Type>()
                .iter()
                .map(|v| v.map(i32::from))
                .collect(),
        };
        let out: StringArray = numbers.into_iter().map(|n| n.and_then(|n| self.name_of(n))).collect();
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(Arc::new(out)))
    }

    /// `span_kind(kind) = 'server'` becomes `kind = 2` (as the range `[2, 3)`), so the
    /// comparison prunes by statistics like one on the number.
    fn preimage(&self, args: &[Expr], lit_expr: &Expr, _info: &SimplifyContext) -> Result<PreimageResult> {
        let Expr::Literal(value, _) = lit_expr else {
            return Ok(PreimageResult::None);
        };
        let name = match value {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => s,
            _ => return Ok(PreimageResult::None),
        };
        let Some((n, _)) = self.spec.names.iter().find(|(_, v)| v == name) else {
            return Ok(PreimageResult::None);
        };
        let (low, high) = match self.spec.input {
            InputType::Int32 => (ScalarValue::Int32(Some(*n)), ScalarValue::Int32(Some(n + 1))),
            InputType::UInt8 => (
                ScalarValue::UInt8(Some(*n as u8)),
                ScalarValue::UInt8(Some(*n as u8 + 1)),
            ),
        };
        let Some(arg) = args.first() else {
            return exec_err!("{} takes one argument", self.spec.function);
        };
        Ok(PreimageResult::Range {
            expr: arg.clone(),
            interval: Box::new(Interval::try_new(low, high)?),
        })
    }
}
