//! Plans OVER aggregations (`LogicalPlan::Window` of aggregate functions).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Expr, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use sluice_core::{Result, SluiceError};

use super::{nullable_schema, Translator};
use crate::attributes::time_columns;
use crate::plan::{NodeId, OverAggregate, OverFrame, PlanNode};

impl Translator<'_> {
    /// `agg(...) OVER (PARTITION BY ... ORDER BY col [ROWS|RANGE] ... PRECEDING)`.
    pub(super) fn translate_over(
        &mut self,
        window: &datafusion::logical_expr::Window,
    ) -> Result<NodeId> {
        let mut shared = None;
        let mut calls = Vec::new();
        for expr in &window.window_expr {
            let function = match expr {
                Expr::Alias(alias) => alias.expr.as_ref(),
                other => other,
            };
            let Expr::WindowFunction(function) = function else {
                return Err(SluiceError::Unsupported(format!("OVER expression {expr}")));
            };
            let WindowFunctionDefinition::AggregateUDF(udf) = &function.fun else {
                return Err(SluiceError::Unsupported(format!(
                    "{} OVER (...) without a filter on it (ranking functions run as Top-N: WHERE rownum <= N)",
                    function.fun
                )));
            };
            let params = &function.params;
            let window_spec = (&params.partition_by, &params.order_by, &params.window_frame);
            match &shared {
                None => shared = Some(window_spec),
                Some(first) if *first == window_spec => {}
                Some(_) => {
                    return Err(SluiceError::Unsupported(
                        "OVER aggregates with different windows in one SELECT".into(),
                    ))
                }
            }
            calls.push(Expr::AggregateFunction(AggregateFunction::new_udf(
                udf.clone(),
                params.args.clone(),
                params.distinct,
                params.filter.clone(),
                vec![],
                params.null_treatment,
            )));
        }
        let Some((partition_by, order_by, frame)) = shared else {
            return Err(SluiceError::Sql("an OVER window without functions".into()));
        };
        let [order] = order_by.as_slice() else {
            return Err(SluiceError::Unsupported(
                "OVER windows need exactly one ORDER BY column (a time attribute)".into(),
            ));
        };
        if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
            return Err(SluiceError::Unsupported(
                "OVER frames that end elsewhere than CURRENT ROW".into(),
            ));
        }
        let over_frame = match (&frame.units, &frame.start_bound) {
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(value)) if value.is_null() => {
                OverFrame::Rows(u64::MAX)
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(value)) if value.is_null() => {
                OverFrame::Range(i64::MAX)
            }
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(value)) => {
                OverFrame::Rows(scalar_u64(value).ok_or_else(|| bad_bound(value))?)
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(value)) => {
                OverFrame::Range(interval_millis(value).ok_or_else(|| bad_bound(value))?)
            }
            (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows(0),
            (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::Range(0),
            _ => {
                return Err(SluiceError::Unsupported(format!(
                "OVER frame {frame} (supported: ROWS/RANGE BETWEEN ... PRECEDING AND CURRENT ROW)"
            )))
            }
        };
        let input = self.translate(&window.input)?;
        let input_schema = window.input.schema();
        let partition_keys = partition_by
            .iter()
            .map(|e| self.physical_expr(e, input_schema))
            .collect::<Result<Vec<_>>>()?;
        let order_expr = self.physical_expr(&order.expr, input_schema)?;
        let aggregates = self.aggregate_calls(&calls, input_schema)?;
        let updating = self.updating_node(input).is_some();
        let order_column = match &order.expr {
            Expr::Column(column) => input_schema.index_of_column(column).ok(),
            _ => None,
        };
        let event_time = order_column.filter(|index| {
            !updating && order.asc && time_columns(&self.nodes, input).contains(index)
        });
        if matches!(over_frame, OverFrame::Range(_)) && !order.asc {
            return Err(SluiceError::Unsupported(
                "RANGE frames over a descending ORDER BY".into(),
            ));
        }
        Ok(self.push(PlanNode::OverAggregate(Arc::new(OverAggregate {
            input,
            input_schema: Arc::new(input_schema.as_arrow().clone()),
            partition_keys,
            order: (
                order_expr,
                arrow::compute::SortOptions {
                    descending: !order.asc,
                    nulls_first: order.nulls_first,
                },
            ),
            frame: over_frame,
            aggregates,
            event_time,
            schema: nullable_schema(window.schema.inner()),
        }))))
    }
}

fn bad_bound(value: &ScalarValue) -> SluiceError {
    SluiceError::Sql(format!(
        "OVER frame bound {value} is not a non-negative constant"
    ))
}

fn scalar_u64(value: &ScalarValue) -> Option<u64> {
    match value.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
        ScalarValue::Int64(Some(v)) if v >= 0 => Some(v as u64),
        _ => None,
    }
}

/// A RANGE bound in milliseconds: an interval, or a number (of milliseconds).
fn interval_millis(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        other => scalar_u64(other).map(|v| v as i64),
    }
}
