//! Recognises Flink's Top-N and deduplication pattern: a filter on the row
//! number of `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)`, e.g.
//! `WHERE rownum <= 3`, with projections in between.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, LogicalPlan, Operator, WindowFunctionDefinition,
};
use sluice_core::{Result, SluiceError};

use super::{nullable_schema, Translator};
use crate::attributes::window_columns;
use crate::plan::{PlanNode, TopN};

/// A `ROW_NUMBER()` window below a filter that limits its value.
struct RankFilter<'p> {
    window: &'p datafusion::logical_expr::Window,
    limit: usize,
    /// Whether the filter has conditions besides the row-number limit.
    other_conditions: bool,
}

impl Translator<'_> {
    /// Plans `filter`'s input as a Top-N when the filter limits a row number.
    /// Returns whether the filter has other conditions still to apply.
    pub(super) fn translate_top_n(&mut self, filter: &Filter) -> Result<Option<bool>> {
        let Some(RankFilter {
            window,
            limit,
            other_conditions,
        }) = rank_filter(filter)?
        else {
            return Ok(None);
        };
        let [Expr::WindowFunction(function)] = window.window_expr.as_slice() else {
            return Err(SluiceError::Unsupported(
                "ROW_NUMBER() together with other OVER functions in one SELECT".into(),
            ));
        };
        let params = &function.params;
        if params.order_by.is_empty() {
            return Err(SluiceError::Unsupported(
                "ROW_NUMBER() without ORDER BY (Top-N needs an order)".into(),
            ));
        }
        let input = self.translate(&window.input)?;
        let input_schema = window.input.schema();
        let partition_keys = params
            .partition_by
            .iter()
            .map(|e| self.physical_expr(e, input_schema))
            .collect::<Result<Vec<_>>>()?;
        let order = params
            .order_by
            .iter()
            .map(|sort| {
                Ok((
                    self.physical_expr(&sort.expr, input_schema)?,
                    arrow::compute::SortOptions {
                        descending: !sort.asc,
                        nulls_first: sort.nulls_first,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let updating_input = self.updating_node(input).is_some();
        // Partitioned by its window's start and end, a windowed input ranks per window.
        let window_end = window_columns(&self.nodes, input).and_then(|columns| {
            let partitioned_by = |index: usize| {
                params.partition_by.iter().any(|expr| match expr {
                    Expr::Column(column) => {
                        input_schema.index_of_column(column).ok() == Some(index)
                    }
                    _ => false,
                })
            };
            (!updating_input && partitioned_by(columns.start) && partitioned_by(columns.end))
                .then_some(columns.end)
        });
        let rank_output = self.rank_output.take().unwrap_or(true);
        let node = self.push(PlanNode::TopN(Arc::new(TopN {
            input,
            input_schema: Arc::new(input_schema.as_arrow().clone()),
            partition_keys,
            order,
            limit,
            rank_output,
            window_end,
            updating_input,
            schema: nullable_schema(window.schema.inner()),
        })));
        self.replaced
            .insert(std::ptr::from_ref(window) as usize, node);
        Ok(Some(other_conditions))
    }

    /// Whether the projection `exprs` over `input` reads the row number that a
    /// Top-N filter below it limits (if not, rank changes need not be emitted).
    pub(super) fn note_rank_use(&mut self, exprs: &[Expr], input: &LogicalPlan) {
        let LogicalPlan::Filter(filter) = input else {
            return;
        };
        if let Ok(Some(rank)) = rank_filter(filter) {
            let rank_name = rank
                .window
                .schema
                .field(rank.window.schema.fields().len() - 1)
                .name();
            let reads_rank = exprs.iter().any(|expr| {
                expr.column_refs().iter().any(|column| {
                    resolve_to_window(&filter.input, &column.name) == Some(rank_name.clone())
                })
            });
            self.rank_output = Some(reads_rank);
        }
    }
}

/// The row-number window and limit of a Top-N filter, if `filter` is one.
fn rank_filter(filter: &Filter) -> Result<Option<RankFilter<'_>>> {
    let window = match innermost_window(&filter.input) {
        Some(window) => window,
        None => return Ok(None),
    };
    let is_row_number = |expr: &Expr| match expr {
        Expr::WindowFunction(function) => match &function.fun {
            WindowFunctionDefinition::WindowUDF(udf) => udf.name() == "row_number",
            WindowFunctionDefinition::AggregateUDF(_) => false,
        },
        _ => false,
    };
    if !window.window_expr.last().is_some_and(is_row_number) {
        return Ok(None);
    }
    let rank_name = window
        .schema
        .field(window.schema.fields().len() - 1)
        .name()
        .clone();
    let mut limit = None;
    let mut other_conditions = false;
    for conjunct in datafusion::logical_expr::utils::split_conjunction(&filter.predicate) {
        match rank_bound(conjunct, &|column| {
            resolve_to_window(&filter.input, column) == Some(rank_name.clone())
        }) {
            Some(bound) => limit = Some(limit.map_or(bound, |l: usize| l.min(bound))),
            None => other_conditions = true,
        }
    }
    match limit {
        Some(0) => Err(SluiceError::Sql(
            "a Top-N filter that no row number satisfies".into(),
        )),
        Some(limit) => Ok(Some(RankFilter {
            window,
            limit,
            other_conditions,
        })),
        None => Ok(None),
    }
}

/// The window below a chain of projections.
fn innermost_window(plan: &LogicalPlan) -> Option<&datafusion::logical_expr::Window> {
    match plan {
        LogicalPlan::Projection(projection) => innermost_window(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => innermost_window(&alias.input),
        LogicalPlan::Window(window) => Some(window),
        _ => None,
    }
}

/// Follows column `name` of `plan` down through projections and aliases to
/// the window's output; the window column's name.
fn resolve_to_window(plan: &LogicalPlan, name: &str) -> Option<String> {
    match plan {
        LogicalPlan::Projection(projection) => {
            let index = projection
                .schema
                .fields()
                .iter()
                .position(|f| f.name() == name)?;
            match projection.expr.get(index)?.clone().unalias() {
                Expr::Column(column) => resolve_to_window(&projection.input, &column.name),
                _ => None,
            }
        }
        LogicalPlan::SubqueryAlias(alias) => resolve_to_window(&alias.input, name),
        LogicalPlan::Window(window) => {
            let last = window.schema.field(window.schema.fields().len() - 1);
            (last.name() == name).then(|| name.to_string())
        }
        _ => None,
    }
}

/// N when `expr` says `rank <= N`, `rank < N + 1`, `N >= rank` or `rank = 1`.
fn rank_bound(expr: &Expr, is_rank: &dyn Fn(&str) -> bool) -> Option<usize> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let (column, op, value) = match (strip_cast(left), strip_cast(right)) {
        (Expr::Column(column), Expr::Literal(value, _)) => (column, *op, value),
        (Expr::Literal(value, _), Expr::Column(column)) => (column, op.swap()?, value),
        _ => return None,
    };
    if !is_rank(&column.name) {
        return None;
    }
    let value = literal_u64(value)?;
    match op {
        Operator::LtEq => Some(value as usize),
        Operator::Lt => Some(value.saturating_sub(1) as usize),
        Operator::Eq if value == 1 => Some(1),
        _ => None,
    }
}

fn strip_cast(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(cast) => strip_cast(&cast.expr),
        Expr::TryCast(cast) => strip_cast(&cast.expr),
        other => other,
    }
}

fn literal_u64(value: &ScalarValue) -> Option<u64> {
    let value = value.cast_to(&arrow::datatypes::DataType::Int64).ok()?;
    match value {
        ScalarValue::Int64(Some(v)) if v >= 0 => Some(v as u64),
        _ => None,
    }
}
