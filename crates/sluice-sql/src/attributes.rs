//! Time attributes of planned nodes: which output columns are event-time
//! columns (every future row that is not late carries a value above the
//! current watermark) and where a windowed stream keeps its `window_start` /
//! `window_end`. Interval and window joins, cascaded window aggregations and
//! window Top-N are recognised from these.

use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::ScalarFunctionExpr;

use crate::functions::PROCTIME_FUNCTION;

use crate::plan::{NodeId, PlanNode, WindowKind, WindowOutput};

/// The window columns of a windowed stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowColumns {
    /// Index of `window_start`.
    pub start: usize,
    /// Index of `window_end`.
    pub end: usize,
    /// The windows' kind, as the upstream window aggregation computed them.
    pub kind: WindowKind,
    /// The windows' alignment offset (ms).
    pub offset: i64,
}

/// The output columns of `node` that are event-time attributes.
pub fn time_columns(nodes: &[PlanNode], node: NodeId) -> Vec<usize> {
    match &nodes[node] {
        PlanNode::Watermark { input, column, .. } => {
            let mut columns = time_columns(nodes, *input);
            if !columns.contains(column) {
                columns.push(*column);
            }
            columns
        }
        PlanNode::Filter { input, .. } => time_columns(nodes, *input),
        PlanNode::Project { input, exprs, .. } => {
            let upstream = time_columns(nodes, *input);
            passed_through(exprs, &upstream)
        }
        PlanNode::Union { inputs, .. } => {
            let mut sets = inputs.iter().map(|input| time_columns(nodes, *input));
            let first = sets.next().unwrap_or_default();
            sets.fold(first, |common, set| {
                common.into_iter().filter(|c| set.contains(c)).collect()
            })
        }
        // Windows are emitted once the watermark passes their last
        // millisecond, so later windows end after the watermark.
        PlanNode::WindowAggregate(window)
            if window.allowed_lateness == 0 && !window.processing_time =>
        {
            window
                .outputs
                .iter()
                .enumerate()
                .filter(|(_, output)| {
                    matches!(output, WindowOutput::WindowEnd | WindowOutput::WindowTime)
                })
                .map(|(index, _)| index)
                .collect()
        }
        // A window Top-N emits each window's rows when it closes.
        PlanNode::TopN(top) if top.window_end.is_some() => time_columns(nodes, top.input),
        // Window ends of non-late rows lie after their event time.
        PlanNode::WindowAssign(assign) => {
            let width = assign.schema.fields().len();
            let mut columns = time_columns(nodes, assign.input);
            columns.extend([width - 2, width - 1]);
            columns
        }
        // Event-time OVER rows are emitted once the watermark passes them.
        PlanNode::OverAggregate(over) if over.event_time.is_some() => {
            time_columns(nodes, over.input)
        }
        PlanNode::Source { .. }
        | PlanNode::WindowAggregate(_)
        | PlanNode::OverAggregate(_)
        | PlanNode::TopN(_)
        | PlanNode::GroupAggregate(_)
        | PlanNode::Join(_)
        | PlanNode::Sink { .. } => Vec::new(),
    }
}

/// Where `node`'s rows keep the window they were aggregated in, if they are
/// the (append-only) output of a window aggregation.
pub fn window_columns(nodes: &[PlanNode], node: NodeId) -> Option<WindowColumns> {
    match &nodes[node] {
        PlanNode::WindowAggregate(window) if window.allowed_lateness == 0 => {
            let position = |wanted: WindowOutput| window.outputs.iter().position(|o| *o == wanted);
            Some(WindowColumns {
                start: position(WindowOutput::WindowStart)?,
                end: position(WindowOutput::WindowEnd)?,
                kind: window.kind,
                offset: window.offset,
            })
        }
        PlanNode::WindowAssign(assign) => {
            let width = assign.schema.fields().len();
            Some(WindowColumns {
                start: width - 3,
                end: width - 2,
                kind: assign.kind,
                offset: assign.offset,
            })
        }
        PlanNode::Filter { input, .. } => window_columns(nodes, *input),
        PlanNode::TopN(top) if top.window_end.is_some() => window_columns(nodes, top.input),
        PlanNode::Project { input, exprs, .. } => {
            let upstream = window_columns(nodes, *input)?;
            let find = |wanted: usize| {
                exprs.iter().position(|expr| {
                    expr.downcast_ref::<ColumnExpr>()
                        .is_some_and(|c| c.index() == wanted)
                })
            };
            Some(WindowColumns {
                start: find(upstream.start)?,
                end: find(upstream.end)?,
                ..upstream
            })
        }
        _ => None,
    }
}

/// Whether column `column` of `node` is a processing-time attribute (the
/// value of `PROCTIME()`, passed on unchanged).
pub fn is_processing_time(nodes: &[PlanNode], node: NodeId, column: usize) -> bool {
    match &nodes[node] {
        PlanNode::Filter { input, .. } | PlanNode::Watermark { input, .. } => {
            is_processing_time(nodes, *input, column)
        }
        PlanNode::Project { input, exprs, .. } => {
            let Some(expr) = exprs.get(column) else {
                return false;
            };
            if let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() {
                return call.name() == PROCTIME_FUNCTION;
            }
            expr.downcast_ref::<ColumnExpr>()
                .is_some_and(|c| is_processing_time(nodes, *input, c.index()))
        }
        _ => false,
    }
}

/// Output positions of a projection that copy one of `columns` unchanged.
fn passed_through(
    exprs: &[std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>],
    columns: &[usize],
) -> Vec<usize> {
    exprs
        .iter()
        .enumerate()
        .filter(|(_, expr)| {
            expr.downcast_ref::<ColumnExpr>()
                .is_some_and(|c| columns.contains(&c.index()))
        })
        .map(|(index, _)| index)
        .collect()
}
