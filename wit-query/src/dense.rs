//! Grouping by a per-query id without hashing: an array indexed by the id.
//!
//! After [`crate::dictionary`] rewrote `GROUP BY <dictionary column>` to group by
//! `group_id(<column>)`, every group key is a small dense integer (the interner hands out
//! 0, 1, 2, … in the order it meets the texts). DataFusion's hash aggregation still hashes
//! each row's key and probes a table for it. This physical optimizer rule replaces an
//! [`AggregateExec`] that reads raw rows and groups by `group_id` alone with a
//! [`DenseGroupExec`], which finds a row's group by indexing a `Vec` with its id and feeds
//! the same DataFusion [`GroupsAccumulator`]s (so every aggregate computes exactly what it
//! computes in DataFusion). Output, partitioning, and the final stage that merges partial
//! states are DataFusion's own.
//!
//! The rule leaves an aggregate alone when it is not grouped by exactly one `group_id`,
//! when its input is already partial states, when its input is ordered by the key (the
//! streaming modes), when it has a limit or produces dynamic filters, or when an aggregate
//! has an `ORDER BY` or no groups accumulator (`array_agg(x ORDER BY y)`, distinct counts).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateInputMode, AggregateOutputMode, aggregate_expressions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, InputOrderMode,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

/// The rule replacing hash aggregation on a `group_id` key (see the module's documentation).
pub(crate) fn rule() -> Arc<dyn PhysicalOptimizerRule + Send + Sync> {
    Arc::new(DenseGroups)
}

#[derive(Debug)]
struct DenseGroups;

impl PhysicalOptimizerRule for DenseGroups {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !qualifies(aggregate) {
                return Ok(Transformed::no(node));
            }
            let aggregate = Arc::new(aggregate.clone());
            Ok(Transformed::yes(Arc::new(DenseGroupExec::try_new(aggregate)?) as _))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "wit_dense_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `aggregate` can be computed by [`DenseGroupExec`].
fn qualifies(aggregate: &AggregateExec) -> bool {
    let group_by = aggregate.group_expr();
    let [(key, _)] = group_by.expr() else {
        return false;
    };
    aggregate.mode().input_mode() == AggregateInputMode::Raw
        && !group_by.has_grouping_set()
        && is_group_id(key)
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate
            .aggr_expr()
            .iter()
            .all(|a| a.order_bys().is_empty() && a.groups_accumulator_supported())
}

fn is_group_id(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<ScalarFunctionExpr>()
        .is_some_and(|f| crate::dictionary::is_group_id(f.fun()))
}

/// An [`AggregateExec`] computed by indexing an array with each row's `group_id` instead of
/// hashing it. Everything but `execute` is the wrapped aggregate's.
#[derive(Debug)]
pub(crate) struct DenseGroupExec {
    aggregate: Arc<AggregateExec>,
    /// Each aggregate's argument expressions, evaluated per input batch.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl DenseGroupExec {
    fn try_new(aggregate: Arc<AggregateExec>) -> Result<Self> {
        let arguments = aggregate_expressions(aggregate.aggr_expr(), aggregate.mode(), 0)?;
        Ok(DenseGroupExec {
            aggregate,
            arguments,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for DenseGroupExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DenseGroupExec: ")?;
        self.aggregate.fmt_as(t, f)
    }
}

impl ExecutionPlan for DenseGroupExec {
    fn name(&self) -> &str {
        "DenseGroupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.aggregate.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Recomputed always: the wrapped aggregate's properties follow its new input.
        let aggregate = Arc::clone(&self.aggregate)
            .replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?;
        let aggregate = aggregate
            .downcast_ref::<AggregateExec>()
            .expect("an aggregate stays an aggregate")
            .clone();
        Ok(Arc::new(DenseGroupExec::try_new(Arc::new(aggregate))?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let aggregate = &self.aggregate;
        let accumulators = aggregate
            .aggr_expr()
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let reservation = MemoryConsumer::new(format!("DenseGroupExec[{partition}]")).register(context.memory_pool());
        let mut groups = Groups {
            key: Arc::clone(&aggregate.group_expr().expr()[0].0),
            arguments: self.arguments.clone(),
            filters: aggregate.filter_expr().to_vec(),
            accumulators,
            slots: Vec::new(),
            ids: Vec::new(),
            null_slot: None,
            indices: Vec::new(),
            reservation,
        };
        let schema = aggregate.schema();
        let final_values = aggregate.mode().output_mode() == AggregateOutputMode::Final;
        let batch_rows = context.session_config().batch_size();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let mut input = aggregate.input().execute(partition, context)?;
        let output = schema.clone();
        let stream = futures::stream::once(async move {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = metrics.elapsed_compute().timer();
                groups.update(&batch)?;
            }
            let _timer = metrics.elapsed_compute().timer();
            let batch = groups.emit(&output, final_values)?;
            let batches: Vec<Result<RecordBatch>> = (0..batch.num_rows())
                .step_by(batch_rows.max(1))
                .map(|offset| {
                    let slice = batch.slice(offset, batch_rows.min(batch.num_rows() - offset));
                    metrics.record_output(slice.num_rows());
                    Ok(slice)
                })
                .collect();
            metrics.done();
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(batches))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's groups: the slot of each id, the id of each slot, and the accumulators.
struct Groups {
    key: Arc<dyn PhysicalExpr>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// The group index of each id met so far ([`UNSEEN`] for the others).
    slots: Vec<u32>,
    /// The id of each group index (`None`: the NULL group).
    ids: Vec<Option<u32>>,
    null_slot: Option<u32>,
    /// The rows' group indices of the current batch (reused).
    indices: Vec<usize>,
    reservation: MemoryReservation,
}

const UNSEEN: u32 = u32::MAX;

impl Groups {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let keys = self.key.evaluate(batch)?.into_array(rows)?;
        let keys: &UInt32Array = keys.as_primitive();
        self.indices.clear();
        self.indices.reserve(rows);
        let values = keys.values();
        match keys.nulls().filter(|n| n.null_count() > 0) {
            None => {
                for &id in values.iter() {
                    let slot = self.slot(id);
                    self.indices.push(slot as usize);
                }
            }
            Some(nulls) => {
                for (i, &id) in values.iter().enumerate() {
                    let slot = match nulls.is_valid(i) {
                        true => self.slot(id),
                        false => self.null_slot(),
                    };
                    self.indices.push(slot as usize);
                }
            }
        }
        let total = self.ids.len();
        for ((accumulator, arguments), filter) in self.accumulators.iter_mut().zip(&self.arguments).zip(&self.filters) {
            let values = arguments
                .iter()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(rows)))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let filter = filter
                .as_ref()
                .map(|f| f.evaluate(batch).and_then(|v| v.into_array(rows)))
                .transpose()?;
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            accumulator.update_batch(&values, &self.indices, filter, total)?;
        }
        let held = self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.slots.capacity() * size_of::<u32>()
            + self.ids.capacity() * size_of::<Option<u32>>()
            + self.indices.capacity() * size_of::<usize>();
        self.reservation.try_resize(held)
    }

    #[inline]
    fn slot(&mut self, id: u32) -> u32 {
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, UNSEEN);
        }
        if self.slots[i] == UNSEEN {
            self.slots[i] = self.ids.len() as u32;
            self.ids.push(Some(id));
        }
        self.slots[i]
    }

    fn null_slot(&mut self) -> u32 {
        *self.null_slot.get_or_insert_with(|| {
            self.ids.push(None);
            (self.ids.len() - 1) as u32
        })
    }

    /// The groups' keys and aggregates (states for a partial aggregate, values for a final
    /// one), in the order the groups were met.
    fn emit(&mut self, schema: &arrow::datatypes::SchemaRef, final_values: bool) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.ids.iter().copied().collect::<UInt32Array>())];
        for accumulator in &mut self.accumulators {
            match final_values {
                true => columns.push(accumulator.evaluate(EmitTo::All)?),
                false => columns.extend(accumulator.state(EmitTo::All)?),
            }
        }
        self.reservation.free();
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}
