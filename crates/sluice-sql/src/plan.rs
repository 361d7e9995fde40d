//! The streaming job plan: a forest of operator nodes, one tree per sink.

use std::fmt::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::connector::{SinkConnector, SourceConnector};

use crate::settings::JobSettings;

/// Index of a node in [`JobPlan::nodes`].
pub type NodeId = usize;

/// One streaming operator of the plan.
#[derive(Debug)]
pub enum PlanNode {
    /// Reads a table through its connector.
    Source {
        /// Table name.
        table: String,
        /// The configured connector.
        connector: Arc<dyn SourceConnector>,
        /// The `WATERMARK FOR` clause as written, carried for event-time operators.
        watermark: Option<String>,
        /// A subtask without data this long is idle: it stops holding back
        /// the watermark downstream until it has data again.
        idle_timeout: Option<std::time::Duration>,
        /// The fields of ROW columns the source reads, when it skips others
        /// (e.g. `bid(auction, price)`), as `--explain` shows them.
        read_fields: Option<String>,
    },
    /// Computes one output column per expression.
    Project {
        /// Input node.
        input: NodeId,
        /// Expressions over the input's columns.
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// Keeps rows where the predicate is true.
    Filter {
        /// Input node.
        input: NodeId,
        /// Boolean expression over the input's columns.
        predicate: Arc<dyn PhysicalExpr>,
    },
    /// Assigns event-time watermarks from the `WATERMARK FOR` expression.
    Watermark {
        /// Input node.
        input: NodeId,
        /// The watermark expression over the input's columns.
        expr: Arc<dyn PhysicalExpr>,
        /// Index of the event-time column (the one `WATERMARK FOR` names).
        column: usize,
        /// The clause as written, for `--explain`.
        text: String,
    },
    /// A window TVF whose rows are not aggregated: each row once per window it
    /// falls in, with `window_start`, `window_end`, `window_time` appended.
    WindowAssign(Arc<WindowAssign>),
    /// Aggregates rows per key and event-time window (window TVF + GROUP BY
    /// window_start, window_end, ...), emitting each window when the watermark
    /// passes its end.
    WindowAggregate(Arc<WindowAggregate>),
    /// Non-windowed `GROUP BY`: an updating result (`+I`, then `-U`/`+U` per change).
    GroupAggregate(Arc<GroupAggregate>),
    /// Equi-join of two inputs (regular, interval, window or lookup join).
    Join(Arc<Join>),
    /// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` filtered to the first
    /// N rows: Top-N and deduplication.
    TopN(Arc<TopN>),
    /// `agg(...) OVER (PARTITION BY ... ORDER BY ... ROWS|RANGE ... PRECEDING)`.
    OverAggregate(Arc<OverAggregate>),
    /// Concatenates the streams of its inputs (`UNION ALL`).
    Union {
        /// Input nodes, all with the same column types.
        inputs: Vec<NodeId>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// Writes its input to a table's connector.
    Sink {
        /// Input node.
        input: NodeId,
        /// Table name.
        table: String,
        /// The configured connector.
        connector: Arc<dyn SinkConnector>,
        /// Upsert materialization for an append-only sink with a PRIMARY KEY
        /// fed by an updating query: the sink input's key columns. The sink
        /// receives the final row of each key when the input ends.
        materialize_by: Option<Vec<usize>>,
    },
}

impl PlanNode {
    /// The nodes this node reads from.
    pub fn inputs(&self) -> Vec<NodeId> {
        match self {
            PlanNode::Source { .. } => vec![],
            PlanNode::Project { input, .. }
            | PlanNode::Filter { input, .. }
            | PlanNode::Sink { input, .. }
            | PlanNode::Watermark { input, .. } => vec![*input],
            PlanNode::WindowAggregate(window) => vec![window.input],
            PlanNode::WindowAssign(assign) => vec![assign.input],
            PlanNode::GroupAggregate(group) => vec![group.input],
            PlanNode::TopN(top) => vec![top.input],
            PlanNode::OverAggregate(over) => vec![over.input],
            PlanNode::Join(join) => vec![join.left, join.right],
            PlanNode::Union { inputs, .. } => inputs.clone(),
        }
    }

    /// Points the node at other inputs (same order as [`PlanNode::inputs`]),
    /// for plan rewrites such as scale-out's repartition cuts.
    pub fn set_inputs(&mut self, new: &[NodeId]) {
        let mut new = new.iter().copied();
        let mut next = |old: &mut NodeId| {
            if let Some(id) = new.next() {
                *old = id;
            }
        };
        match self {
            PlanNode::Source { .. } => {}
            PlanNode::Project { input, .. }
            | PlanNode::Filter { input, .. }
            | PlanNode::Sink { input, .. }
            | PlanNode::Watermark { input, .. } => next(input),
            PlanNode::WindowAggregate(window) => next(&mut Arc::make_mut(window).input),
            PlanNode::WindowAssign(assign) => next(&mut Arc::make_mut(assign).input),
            PlanNode::GroupAggregate(group) => next(&mut Arc::make_mut(group).input),
            PlanNode::TopN(top) => next(&mut Arc::make_mut(top).input),
            PlanNode::OverAggregate(over) => next(&mut Arc::make_mut(over).input),
            PlanNode::Join(join) => {
                let join = Arc::make_mut(join);
                next(&mut join.left);
                next(&mut join.right);
            }
            PlanNode::Union { inputs, .. } => inputs.iter_mut().for_each(next),
        }
    }

    /// One line describing the node, as `--explain` prints it.
    pub fn describe(&self) -> String {
        match self {
            PlanNode::Source {
                table,
                connector,
                watermark,
                read_fields,
                ..
            } => {
                let mut text = format!("Source `{table}`: {}", connector.describe());
                if let Some(fields) = read_fields {
                    let _ = write!(text, " [reads only {fields}]");
                }
                if let Some(watermark) = watermark {
                    let _ = write!(text, " [watermark {watermark}]");
                }
                text
            }
            PlanNode::Project { exprs, schema, .. } => {
                let columns: Vec<String> = exprs
                    .iter()
                    .zip(schema.fields())
                    .map(|(expr, field)| {
                        let expr = expr.to_string();
                        if strip_index(&expr) == field.name() {
                            field.name().clone()
                        } else {
                            format!("{} AS {}", expr, field.name())
                        }
                    })
                    .collect();
                format!("Project: {}", columns.join(", "))
            }
            PlanNode::Filter { predicate, .. } => format!("Filter: {predicate}"),
            PlanNode::Watermark { text, .. } => format!("Watermark: {text}"),
            PlanNode::WindowAggregate(window) => window.describe(),
            PlanNode::WindowAssign(assign) => format!(
                "WindowTVF {} on {}",
                assign.kind.describe(),
                strip_index(&assign.time.to_string())
            ),
            PlanNode::GroupAggregate(group) => group.describe(),
            PlanNode::TopN(top) => top.describe(),
            PlanNode::OverAggregate(over) => over.describe(),
            PlanNode::Join(join) => join.describe(),
            PlanNode::Union { inputs, .. } => format!("Union all ({} inputs)", inputs.len()),
            PlanNode::Sink {
                table,
                connector,
                materialize_by,
                ..
            } => {
                let mut text = format!("Sink `{table}`: {}", connector.describe());
                if materialize_by.is_some() {
                    text.push_str(" [upsert by primary key: final rows written at the end]");
                }
                text
            }
        }
    }
}

/// The kind and size of event-time windows (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// Sliding windows of `size`, starting every `slide`.
    Hop {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// Windows growing by `step` from the start of each `size` period.
    Cumulate {
        /// Largest window length (the period).
        size: i64,
        /// Growth step.
        step: i64,
    },
    /// Per-key sessions: rows closer than `gap` share a window.
    Session {
        /// Inactivity gap that closes a session.
        gap: i64,
    },
    /// Rows that already carry their window (a window aggregation over the
    /// output of another one, grouped by its `window_start`, `window_end`):
    /// the time column is `window_start`, a multiple of `slide`.
    Cascaded {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
}

impl WindowKind {
    /// Width of the panes rows are pre-aggregated into: every window is a
    /// whole number of consecutive panes.
    pub fn pane(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size } => size,
            WindowKind::Hop { size, slide } => gcd(size, slide),
            WindowKind::Cumulate { step, .. } => step,
            WindowKind::Session { gap } => gap,
            WindowKind::Cascaded { slide, .. } => slide,
        }
    }

    /// Ends of the windows that contain the pane starting at `pane_start`,
    /// shifted by `offset`; `(start, end)` pairs.
    pub fn windows_of_pane(&self, pane_start: i64, offset: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        let base = pane_start - offset;
        match *self {
            WindowKind::Tumble { size } => {
                let start = base.div_euclid(size) * size + offset;
                out.push((start, start + size));
            }
            WindowKind::Cascaded { size, .. } => out.push((pane_start, pane_start + size)),
            // Sessions have no fixed panes; the session operator tracks them.
            WindowKind::Session { gap } => out.push((pane_start, pane_start + gap)),
            WindowKind::Hop { size, slide } => {
                let last_start = base.div_euclid(slide) * slide;
                let mut start = last_start;
                while start > base - size {
                    out.push((start + offset, start + size + offset));
                    start -= slide;
                }
            }
            WindowKind::Cumulate { size, step } => {
                let start = base.div_euclid(size) * size;
                let mut end = base.div_euclid(step) * step + step;
                while end <= start + size {
                    out.push((start + offset, end + offset));
                    end += step;
                }
            }
        }
    }

    fn describe(&self) -> String {
        match *self {
            WindowKind::Tumble { size } => format!("TUMBLE({size} ms)"),
            WindowKind::Hop { size, slide } => format!("HOP(size {size} ms, slide {slide} ms)"),
            WindowKind::Cumulate { size, step } => {
                format!("CUMULATE(size {size} ms, step {step} ms)")
            }
            WindowKind::Session { gap } => format!("SESSION(gap {gap} ms)"),
            WindowKind::Cascaded { size, slide } => {
                format!("windows of the input (size {size} ms, slide {slide} ms)")
            }
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs().max(1)
    } else {
        gcd(b, a % b)
    }
}

/// Window assignment without aggregation (a plain window TVF).
#[derive(Debug, Clone)]
pub struct WindowAssign {
    /// Input node.
    pub input: NodeId,
    /// The DESCRIPTOR column over the input.
    pub time: Arc<dyn PhysicalExpr>,
    /// Window kind and sizes (not SESSION).
    pub kind: WindowKind,
    /// Alignment offset (ms).
    pub offset: i64,
    /// Output schema: the input's columns, then the three window columns.
    pub schema: SchemaRef,
}

/// One output column of a window aggregate, in the query's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutput {
    /// The i-th grouping key.
    Key(usize),
    /// `window_start`.
    WindowStart,
    /// `window_end`.
    WindowEnd,
    /// `window_time` (= window_end - 1 ms).
    WindowTime,
    /// The i-th aggregate.
    Aggregate(usize),
}

/// An aggregate function call with its optional `FILTER (WHERE ...)`.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    /// The aggregate (arguments, DISTINCT, accumulator factory).
    pub function: Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>,
    /// Rows where this is false are not aggregated.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// A windowed aggregation: what `GROUP BY window_start, window_end, keys...`
/// over a window TVF computes.
#[derive(Debug, Clone)]
pub struct WindowAggregate {
    /// Input node (the relation the TVF windows).
    pub input: NodeId,
    /// Schema of the input's batches.
    pub input_schema: SchemaRef,
    /// The window's time column over the input (the DESCRIPTOR column).
    pub time: Arc<dyn PhysicalExpr>,
    /// Window kind and sizes.
    pub kind: WindowKind,
    /// Window alignment offset (ms).
    pub offset: i64,
    /// The time column is a processing-time attribute (`PROCTIME()`): rows
    /// are windowed by the wall clock when they reach the operator.
    pub processing_time: bool,
    /// `table.exec.emit.allow-lateness` (ms): windows keep their state this
    /// long after firing, and late rows update their results (`-U`/`+U`).
    pub allowed_lateness: i64,
    /// Grouping keys other than the window columns, over the input.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Aggregate calls.
    pub aggregates: Vec<AggregateCall>,
    /// Output columns in order.
    pub outputs: Vec<WindowOutput>,
    /// Output schema.
    pub schema: SchemaRef,
}

impl WindowAggregate {
    fn describe(&self) -> String {
        format!(
            "WindowAggregate {} on {}{}: {}",
            self.kind.describe(),
            strip_index(&self.time.to_string()),
            if self.processing_time {
                " (processing time)"
            } else {
                ""
            },
            describe_grouping(&self.keys, &self.aggregates)
        )
    }
}

/// Expressions as `--explain` shows them (column names without indices).
fn expression_names(exprs: &[Arc<dyn PhysicalExpr>]) -> Vec<String> {
    exprs
        .iter()
        .map(|e| strip_index(&e.to_string()).to_string())
        .collect()
}

/// `keys [...], aggregates [...]` for `--explain`.
fn describe_grouping(keys: &[Arc<dyn PhysicalExpr>], aggregates: &[AggregateCall]) -> String {
    let keys = expression_names(keys);
    let aggregates: Vec<&str> = aggregates.iter().map(|a| a.function.name()).collect();
    format!(
        "keys [{}], aggregates [{}]",
        keys.join(", "),
        aggregates.join(", ")
    )
}

/// A non-windowed aggregation, whose results are updated as rows arrive.
#[derive(Debug, Clone)]
pub struct GroupAggregate {
    /// Input node.
    pub input: NodeId,
    /// Schema of the input's batches.
    pub input_schema: SchemaRef,
    /// Grouping keys over the input.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Aggregate calls.
    pub aggregates: Vec<AggregateCall>,
    /// Whether the input is updating (its `-U`/`-D` rows are taken back).
    pub updating_input: bool,
    /// Output schema: keys, then aggregates.
    pub schema: SchemaRef,
}

impl GroupAggregate {
    fn describe(&self) -> String {
        format!(
            "GroupAggregate (updating): {}",
            describe_grouping(&self.keys, &self.aggregates)
        )
    }
}

/// The first `limit` rows per partition in a given order (Flink's Rank
/// operator). Over a windowed input partitioned by its window, the ranking is
/// emitted once per window when it closes (window Top-N, append-only);
/// otherwise it is kept up to date with `+I`/`-U`/`+U`/`-D` rows.
#[derive(Debug, Clone)]
pub struct TopN {
    /// Input node.
    pub input: NodeId,
    /// Schema of the input's batches.
    pub input_schema: SchemaRef,
    /// `PARTITION BY` expressions over the input.
    pub partition_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// `ORDER BY` expressions with their direction.
    pub order: Vec<(Arc<dyn PhysicalExpr>, arrow::compute::SortOptions)>,
    /// Rows kept per partition (N).
    pub limit: usize,
    /// Whether the row number is part of the result (rank changes are then emitted).
    pub rank_output: bool,
    /// Window Top-N: the input column holding `window_end`.
    pub window_end: Option<usize>,
    /// Whether the input is updating (all rows must then be kept, not just N).
    pub updating_input: bool,
    /// Output schema: the input's columns, then the row number.
    pub schema: SchemaRef,
}

impl TopN {
    fn describe(&self) -> String {
        let keys = expression_names(&self.partition_keys);
        let order: Vec<String> = self
            .order
            .iter()
            .map(|(expr, options)| {
                format!(
                    "{} {}",
                    strip_index(&expr.to_string()),
                    if options.descending { "DESC" } else { "ASC" }
                )
            })
            .collect();
        format!(
            "{} {} per [{}] by [{}]{}",
            if self.window_end.is_some() {
                "WindowTopN"
            } else {
                "TopN (updating)"
            },
            self.limit,
            keys.join(", "),
            order.join(", "),
            if self.rank_output {
                ", with row number"
            } else {
                ""
            }
        )
    }
}

/// Which earlier rows an OVER aggregate's frame covers (it ends at the
/// current row). `UNBOUNDED PRECEDING` is the largest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW` (ms; peers included).
    Range(i64),
}

impl OverFrame {
    /// Whether the frame reaches back to the partition's first row.
    pub fn is_unbounded(self) -> bool {
        matches!(self, OverFrame::Rows(u64::MAX) | OverFrame::Range(i64::MAX))
    }
}

/// OVER aggregations: each row gets the aggregates of its frame within its
/// partition, in `ORDER BY` order. Over an append-only input ordered by an
/// event-time attribute, rows are emitted in time order once the watermark
/// passes them (append-only, as in Flink); otherwise (e.g. an updating input)
/// the results are kept up to date as rows come and go.
#[derive(Debug, Clone)]
pub struct OverAggregate {
    /// Input node.
    pub input: NodeId,
    /// Schema of the input's batches.
    pub input_schema: SchemaRef,
    /// `PARTITION BY` expressions.
    pub partition_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The `ORDER BY` expression and direction.
    pub order: (Arc<dyn PhysicalExpr>, arrow::compute::SortOptions),
    /// The frame.
    pub frame: OverFrame,
    /// The aggregate calls, one output column each.
    pub aggregates: Vec<AggregateCall>,
    /// Event-time mode: the input is append-only and ordered by this
    /// event-time column (index), so rows wait for the watermark.
    pub event_time: Option<usize>,
    /// Output schema: the input's columns, then one per aggregate.
    pub schema: SchemaRef,
}

impl OverAggregate {
    fn describe(&self) -> String {
        let keys = expression_names(&self.partition_keys);
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.function.name()).collect();
        format!(
            "OverAggregate{} [{}] per [{}] by {} {:?}",
            if self.event_time.is_some() {
                ""
            } else {
                " (updating)"
            },
            aggregates.join(", "),
            keys.join(", "),
            strip_index(&self.order.0.to_string()),
            self.frame
        )
    }
}

/// Which rows of a join are kept when they have no partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Only matched rows.
    Inner,
    /// Every left row (right columns NULL when unmatched).
    Left,
    /// Every right row (left columns NULL when unmatched).
    Right,
    /// Every row of both sides.
    Full,
}

impl JoinKind {
    /// Whether unmatched rows of side `side` (0 = left, 1 = right) are emitted,
    /// padded with NULLs.
    pub fn keeps_unmatched(self, side: usize) -> bool {
        match self {
            JoinKind::Inner => false,
            JoinKind::Left => side == 0,
            JoinKind::Right => side == 1,
            JoinKind::Full => true,
        }
    }
}

/// An equi-join. Each side's rows are kept by join key until they can no
/// longer match: forever (regular join; `table.exec.state.ttl` bounds it),
/// or until the watermark passes the side's `expiry` (interval and window
/// joins, whose conditions bound the partner's event time).
#[derive(Debug, Clone)]
pub struct Join {
    /// Left input node.
    pub left: NodeId,
    /// Right input node.
    pub right: NodeId,
    /// Which unmatched rows are kept.
    pub kind: JoinKind,
    /// Join keys over the left input.
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Join keys over the right input (same types, same order).
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Schemas of the left and right inputs.
    pub input_schemas: [SchemaRef; 2],
    /// Extra (non-equality) condition over the joined row.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Per side: a timestamp expression over that side's rows; no future row of
    /// the other side can match a row once the watermark passes this value.
    pub expiry: [Option<Arc<dyn PhysicalExpr>>; 2],
    /// Lookup join (`FOR SYSTEM_TIME AS OF` a processing-time attribute): left
    /// rows probe the right table as it is when they arrive and are not kept.
    pub lookup: Option<LookupJoin>,
    /// Event-time temporal join (`FOR SYSTEM_TIME AS OF` an event-time
    /// attribute): each left row joins the right row version valid at its time.
    pub versioned: Option<VersionedJoin>,
    /// Window join: both inputs are windowed and the condition equates their
    /// `window_start` and `window_end`.
    pub window: Option<WindowJoin>,
    /// Output schema: left columns, then right columns.
    pub schema: SchemaRef,
    /// Human-readable condition, for `--explain`.
    pub condition: String,
}

/// How a lookup join treats its right (table) side.
#[derive(Debug, Clone, Copy)]
pub struct LookupJoin {
    /// The table is bounded: left rows wait until it is fully loaded.
    pub wait_for_table: bool,
}

/// The time attributes of an event-time temporal join.
#[derive(Debug, Clone)]
pub struct VersionedJoin {
    /// The left row's time (the `AS OF` column), over the left input.
    pub left_time: Arc<dyn PhysicalExpr>,
    /// The version's time (the versioned table's event-time attribute), over the right input.
    pub right_time: Arc<dyn PhysicalExpr>,
}

/// The windows of a window join (Flink's): each window's rows of both sides
/// are kept as they arrive and joined once, when the watermark closes the window.
#[derive(Debug, Clone)]
pub struct WindowJoin {
    /// `window_end` over the left and over the right input.
    pub window_end: [Arc<dyn PhysicalExpr>; 2],
}

impl Join {
    /// The join keys over input `side` (0 = left, 1 = right).
    pub fn keys(&self, side: usize) -> &[Arc<dyn PhysicalExpr>] {
        if side == 0 {
            &self.left_keys
        } else {
            &self.right_keys
        }
    }

    /// Whether unmatched rows of `side` are emitted as soon as they arrive (and
    /// retracted when a partner arrives), rather than when they expire.
    pub fn pads_immediately(&self, side: usize) -> bool {
        self.kind.keeps_unmatched(side) && self.expiry[side].is_none()
    }

    /// Whether the join itself produces retractions (an outer side whose
    /// unmatched rows may later find partners; a lookup join's table rows
    /// never look for partners).
    pub fn emits_updates(&self) -> bool {
        self.lookup.is_none()
            && self.versioned.is_none()
            && (0..2).any(|side| self.pads_immediately(side))
    }

    fn describe(&self) -> String {
        let temporal = if self.lookup.is_some() {
            "Lookup"
        } else if self.versioned.is_some() {
            "Temporal"
        } else if self.window.is_some() {
            "Window"
        } else {
            ""
        };
        let kind = match self.kind {
            JoinKind::Inner => "InnerJoin",
            JoinKind::Left => "LeftOuterJoin",
            JoinKind::Right => "RightOuterJoin",
            JoinKind::Full => "FullOuterJoin",
        };
        let kind = format!("{temporal}{kind}");
        let mut text = format!("{kind} on {}", self.condition);
        if self.window.is_some() {
            text.push_str(" [each window joined when the watermark closes it]");
            return text;
        }
        let sides: Vec<&str> = ["left", "right"]
            .iter()
            .zip(&self.expiry)
            .filter(|(_, expiry)| expiry.is_some())
            .map(|(side, _)| *side)
            .collect();
        if !sides.is_empty() {
            let _ = write!(text, " [{} rows freed by watermark]", sides.join(" and "));
        }
        if self.emits_updates() {
            text.push_str(" (updating)");
        }
        text
    }
}

/// The first operator at or below `node` that makes its output updating (a
/// changelog with `-U`/`+U`/`-D` rows), if any.
pub fn updating_operator(nodes: &[PlanNode], node: NodeId) -> Option<NodeId> {
    match &nodes[node] {
        PlanNode::GroupAggregate(_) => Some(node),
        PlanNode::WindowAggregate(window) if window.allowed_lateness > 0 => Some(node),
        PlanNode::Source { connector, .. } if connector.produces_updates() => Some(node),
        PlanNode::Join(join) if join.emits_updates() => Some(node),
        PlanNode::TopN(top) if top.window_end.is_none() => Some(node),
        PlanNode::OverAggregate(over) if over.event_time.is_none() => Some(node),
        other => other
            .inputs()
            .into_iter()
            .find_map(|input| updating_operator(nodes, input)),
    }
}

/// DataFusion prints column references as `name@index`.
fn strip_index(expr: &str) -> &str {
    match expr.rsplit_once('@') {
        Some((name, index)) if index.chars().all(|c| c.is_ascii_digit()) => name,
        _ => expr,
    }
}

/// The schema of the output batches of `nodes[node]`.
pub fn output_schema(nodes: &[PlanNode], node: NodeId) -> SchemaRef {
    match &nodes[node] {
        PlanNode::Source { connector, .. } => connector.schema(),
        PlanNode::Filter { input, .. }
        | PlanNode::Watermark { input, .. }
        | PlanNode::Sink { input, .. } => output_schema(nodes, *input),
        PlanNode::Project { schema, .. } | PlanNode::Union { schema, .. } => schema.clone(),
        PlanNode::WindowAssign(assign) => assign.schema.clone(),
        PlanNode::WindowAggregate(window) => window.schema.clone(),
        PlanNode::GroupAggregate(group) => group.schema.clone(),
        PlanNode::TopN(top) => top.schema.clone(),
        PlanNode::OverAggregate(over) => over.schema.clone(),
        PlanNode::Join(join) => join.schema.clone(),
    }
}

/// A whole job: every `INSERT` of a script, planned together.
#[derive(Debug)]
pub struct JobPlan {
    /// Job-wide settings.
    pub settings: JobSettings,
    /// All nodes; inputs always come before the nodes that read them.
    pub nodes: Vec<PlanNode>,
    /// The sink nodes, one per `INSERT` (or bare `SELECT`).
    pub sinks: Vec<NodeId>,
}

impl JobPlan {
    /// The schema of `node`'s output batches.
    pub fn output_schema(&self, node: NodeId) -> SchemaRef {
        output_schema(&self.nodes, node)
    }

    /// Whether every source of the job is bounded (the job then ends by itself).
    pub fn is_bounded(&self) -> bool {
        self.nodes.iter().all(|node| match node {
            PlanNode::Source { connector, .. } => connector.is_bounded(),
            _ => true,
        })
    }

    /// A readable operator tree for `sluice run --explain`.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "Job '{}': parallelism {}, {} sink(s), {} input\n",
            self.settings.job_name,
            self.settings.parallelism,
            self.sinks.len(),
            if self.is_bounded() {
                "bounded"
            } else {
                "unbounded"
            }
        );
        let mut shown = vec![false; self.nodes.len()];
        for sink in &self.sinks {
            self.explain_node(*sink, 0, &mut shown, &mut out);
        }
        out
    }

    /// Writes `id` and its inputs; a node read by several operators is
    /// written once, later references point back to it.
    fn explain_node(&self, id: NodeId, depth: usize, shown: &mut [bool], out: &mut String) {
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(depth - 1))
        };
        if shown[id] {
            let _ = writeln!(
                out,
                "{indent}(shared, read once) {}",
                self.nodes[id].describe()
            );
            return;
        }
        shown[id] = true;
        let _ = writeln!(out, "{indent}{}", self.nodes[id].describe());
        for input in self.nodes[id].inputs() {
            self.explain_node(input, depth + 1, shown, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_map_to_their_windows() {
        let mut out = Vec::new();
        WindowKind::Tumble { size: 10 }.windows_of_pane(20, 0, &mut out);
        assert_eq!(out, vec![(20, 30)]);
        let hop = WindowKind::Hop { size: 10, slide: 2 };
        assert_eq!(hop.pane(), 2);
        hop.windows_of_pane(4, 0, &mut out);
        assert_eq!(out, vec![(4, 14), (2, 12), (0, 10), (-2, 8), (-4, 6)]);
        let cumulate = WindowKind::Cumulate { size: 10, step: 5 };
        cumulate.windows_of_pane(0, 0, &mut out);
        assert_eq!(out, vec![(0, 5), (0, 10)]);
        cumulate.windows_of_pane(15, 0, &mut out);
        assert_eq!(out, vec![(10, 20)]);
        WindowKind::Tumble { size: 10 }.windows_of_pane(-3, 0, &mut out);
        assert_eq!(out, vec![(-10, 0)]);
    }
}
