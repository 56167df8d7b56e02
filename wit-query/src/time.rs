//! The time range a query's predicates allow, so the catalog lists only the files that can
//! hold a matching row.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// The column every Wit table keys its time on (the catalog's time range is over it).
pub(crate) const TIME_COLUMN: &str = "timestamp";

/// Inclusive bounds, in nanoseconds since the epoch, that every row the `filters` accept lies
/// within. Predicates it does not understand leave the bounds open, so the range is never too
/// narrow. `min > max` means no row can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) min: i64,
    pub(crate) max: i64,
}

impl Bounds {
    pub(crate) const ALL: Bounds = Bounds {
        min: i64::MIN,
        max: i64::MAX,
    };

    pub(crate) fn is_all(&self) -> bool {
        *self == Bounds::ALL
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.min > self.max
    }

    fn at_least(&mut self, v: i64) {
        self.min = self.min.max(v);
    }

    fn at_most(&mut self, v: i64) {
        self.max = self.max.min(v);
    }
}

/// The bounds on [`TIME_COLUMN`] implied by the conjunction of `filters`.
pub(crate) fn bounds(filters: &[Expr]) -> Bounds {
    let mut bounds = Bounds::ALL;
    for filter in filters {
        for conjunct in split_conjunction(filter) {
            narrow(conjunct, &mut bounds);
        }
    }
    bounds
}

fn narrow(expr: &Expr, bounds: &mut Bounds) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (is_time(left), is_time(right)) {
                (true, false) => (*op, nanos(right)),
                (false, true) => match op.swap() {
                    Some(op) => (op, nanos(left)),
                    None => return,
                },
                _ => return,
            };
            let Some(v) = value else { return };
            match op {
                Operator::Eq => {
                    bounds.at_least(v);
                    bounds.at_most(v);
                }
                Operator::Gt => bounds.at_least(v.saturating_add(1)),
                Operator::GtEq => bounds.at_least(v),
                Operator::Lt => bounds.at_most(v.saturating_sub(1)),
                Operator::LtEq => bounds.at_most(v),
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr) => {
            if let Some(v) = nanos(low) {
                bounds.at_least(v);
            }
            if let Some(v) = nanos(high) {
                bounds.at_most(v);
            }
        }
        _ => {}
    }
}

fn is_time(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == TIME_COLUMN)
}

/// A timestamp literal in nanoseconds (a coarser unit converts exactly).
fn nanos(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else { return None };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), Some("UTC".into())))
    }

    #[test]
    fn comparisons_and_between_narrow_the_range() {
        let t = || col(TIME_COLUMN);
        assert_eq!(bounds(&[]), Bounds::ALL);
        assert_eq!(
            bounds(&[t().gt_eq(ts(10)).and(t().lt(ts(20)))]),
            Bounds { min: 10, max: 19 }
        );
        assert_eq!(
            bounds(&[ts(10).lt(t()), t().lt_eq(ts(30))]),
            Bounds { min: 11, max: 30 }
        );
        assert_eq!(bounds(&[t().eq(ts(5))]), Bounds { min: 5, max: 5 });
        assert_eq!(bounds(&[t().between(ts(3), ts(4))]), Bounds { min: 3, max: 4 });
        assert!(bounds(&[t().gt(ts(10)), t().lt(ts(5))]).is_empty());
    }

    #[test]
    fn what_it_does_not_understand_leaves_the_range_open() {
        let t = || col(TIME_COLUMN);
        // OR, NOT BETWEEN, other columns, non-literal sides: no bound.
        assert_eq!(bounds(&[t().gt(ts(10)).or(t().lt(ts(5)))]), Bounds::ALL);
        assert_eq!(bounds(&[t().not_between(ts(3), ts(4))]), Bounds::ALL);
        assert_eq!(bounds(&[col("end_time").gt(ts(10))]), Bounds::ALL);
        assert_eq!(bounds(&[t().gt(col("end_time"))]), Bounds::ALL);
        assert_eq!(bounds(&[t().not_eq(ts(3))]), Bounds::ALL);
        // Seconds widen to nanoseconds.
        let secs = lit(ScalarValue::TimestampSecond(Some(2), None));
        assert_eq!(bounds(&[t().gt_eq(secs)]).min, 2_000_000_000);
    }
}
