//! Flink's window table-valued functions (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts),
//! INTERVAL ...))`, `HOP`, `CUMULATE`): a token rewrite that sqlparser can
//! parse, the table function that plans them as a [`WindowTvfNode`], and the
//! rewrite of `GROUP BY window_start, window_end, ...` over such a node into a
//! [`WindowAggregateNode`] for the streaming window operator.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, DFSchema, DFSchemaRef, Result as DfResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan};

use crate::plan::WindowKind;

/// Name of the table function the token rewrite calls.
pub const WINDOW_FUNCTION: &str = "__sluice_window";

/// Plans of every table and view by name, for the window table function.
pub type Relations = Arc<RwLock<HashMap<String, LogicalPlan>>>;

/// Window column names a window TVF appends.
pub const WINDOW_COLUMNS: [&str; 3] = ["window_start", "window_end", "window_time"];

fn is_word(token: &Token, text: &str) -> bool {
    matches!(token, Token::Word(word) if word.value.eq_ignore_ascii_case(text) && word.quote_style.is_none())
}

fn word_value(token: &Token) -> Option<String> {
    match token {
        Token::Word(word) => Some(word.value.clone()),
        _ => None,
    }
}

fn error_at(span: Span, message: &str) -> String {
    format!(
        "{message} at Line: {}, Column: {}",
        span.start.line, span.start.column
    )
}

/// Index of the `)` matching the `(` at `open`.
fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(open) {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites every `TABLE(TUMBLE|HOP|CUMULATE|SESSION(...))` into a call of the
/// window table function with positional, literal arguments. Whitespace tokens
/// must already be removed.
pub fn rewrite_window_tvfs(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, String> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let is_tvf = is_word(&tokens[i].token, "TABLE")
            && tokens.get(i + 1).is_some_and(|t| t.token == Token::LParen)
            && tokens.get(i + 2).is_some_and(|t| {
                ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
                    .iter()
                    .any(|name| is_word(&t.token, name))
            })
            && tokens.get(i + 3).is_some_and(|t| t.token == Token::LParen);
        if !is_tvf {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let span = tokens[i].span;
        let kind = word_value(&tokens[i + 2].token)
            .unwrap_or_default()
            .to_ascii_uppercase();
        let inner_close = matching_paren(&tokens, i + 3)
            .ok_or_else(|| error_at(span, "unclosed window function call"))?;
        let outer_close = inner_close + 1;
        if tokens.get(outer_close).map(|t| &t.token) != Some(&Token::RParen) {
            return Err(error_at(span, "expected ')' to close TABLE(...)"));
        }
        let call = window_call(&kind, &tokens[i + 4..inner_close], span)?;
        out.extend(call.into_iter().map(|token| TokenWithSpan { token, span }));
        i = outer_close + 1;
    }
    Ok(out)
}

/// Splits arguments at top-level commas.
fn split_arguments(tokens: &[TokenWithSpan]) -> Vec<&[TokenWithSpan]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (index, token) in tokens.iter().enumerate() {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                parts.push(&tokens[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

fn window_call(kind: &str, arguments: &[TokenWithSpan], span: Span) -> Result<Vec<Token>, String> {
    let mut relation = None;
    let mut partition = Vec::new();
    let mut time_column = None;
    let mut named: HashMap<String, Vec<Token>> = HashMap::new();
    let mut positional_intervals = Vec::new();
    for argument in split_arguments(arguments) {
        let (name, value) = match argument {
            [first, arrow, rest @ ..] if arrow.token == Token::RArrow => (
                word_value(&first.token).map(|n| n.to_ascii_uppercase()),
                rest,
            ),
            _ => (None, argument),
        };
        let Some(first) = value.first() else {
            return Err(error_at(span, &format!("empty argument in {kind}(...)")));
        };
        if is_word(&first.token, "TABLE") {
            let mut index = 1;
            let mut parts = Vec::new();
            while let Some(token) = value.get(index) {
                if is_word(&token.token, "PARTITION") {
                    break;
                }
                match &token.token {
                    Token::Word(word) => parts.push(word.value.clone()),
                    Token::Period => {}
                    other => {
                        return Err(error_at(
                            token.span,
                            &format!("unexpected '{other}' after TABLE"),
                        ))
                    }
                }
                index += 1;
            }
            if is_word(
                &value
                    .get(index)
                    .map(|t| t.token.clone())
                    .unwrap_or(Token::EOF),
                "PARTITION",
            ) {
                partition = value[index + 1..]
                    .iter()
                    .filter_map(|t| word_value(&t.token).filter(|w| !w.eq_ignore_ascii_case("BY")))
                    .collect();
            }
            relation = Some(parts.join("."));
        } else if is_word(&first.token, "DESCRIPTOR") {
            time_column = value.iter().skip(1).find_map(|t| word_value(&t.token));
        } else if let Some(name) = name {
            named.insert(name, value.iter().map(|t| t.token.clone()).collect());
        } else {
            positional_intervals.push(value.iter().map(|t| t.token.clone()).collect::<Vec<_>>());
        }
    }
    let relation =
        relation.ok_or_else(|| error_at(span, &format!("{kind} needs a TABLE argument")))?;
    let time_column = time_column.ok_or_else(|| {
        error_at(
            span,
            &format!("{kind} needs a DESCRIPTOR(time column) argument"),
        )
    })?;
    let names: &[&str] = match kind {
        "TUMBLE" => &["SIZE", "OFFSET"],
        "HOP" => &["SLIDE", "SIZE", "OFFSET"],
        "CUMULATE" => &["STEP", "SIZE", "OFFSET"],
        _ => &["GAP"],
    };
    let mut intervals = positional_intervals.into_iter();
    let mut ordered = Vec::new();
    for name in names {
        match named.remove(*name).or_else(|| intervals.next()) {
            Some(tokens) => ordered.push(tokens),
            None if *name == "OFFSET" => {}
            None => return Err(error_at(span, &format!("{kind} needs a {name} interval"))),
        }
    }
    let mut call = vec![Token::make_word(WINDOW_FUNCTION, None), Token::LParen];
    for text in [kind.to_string(), relation, partition.join(","), time_column] {
        call.push(Token::SingleQuotedString(text));
        call.push(Token::Comma);
    }
    for (index, tokens) in ordered.into_iter().enumerate() {
        if index > 0 {
            call.push(Token::Comma);
        }
        call.extend(tokens);
    }
    call.push(Token::RParen);
    Ok(call)
}

/// Implements DataFusion's logical-node boilerplate for a node with one
/// `input` plan, a `schema`, a `kind` and a `time_column`, and no expressions
/// of its own for the optimizer to rewrite.
macro_rules! single_input_node {
    ($node:ty, $name:literal) => {
        impl PartialOrd for $node {
            fn partial_cmp(&self, _other: &Self) -> Option<Ordering> {
                None
            }
        }

        impl UserDefinedLogicalNodeCore for $node {
            fn name(&self) -> &str {
                $name
            }

            fn inputs(&self) -> Vec<&LogicalPlan> {
                vec![&self.input]
            }

            fn schema(&self) -> &DFSchemaRef {
                &self.schema
            }

            fn expressions(&self) -> Vec<Expr> {
                vec![]
            }

            fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{}: {:?} on {}", $name, self.kind, self.time_column)
            }

            fn with_exprs_and_inputs(
                &self,
                _exprs: Vec<Expr>,
                mut inputs: Vec<LogicalPlan>,
            ) -> DfResult<Self> {
                match inputs.pop() {
                    Some(input) => self.with_input(input),
                    None => Ok(self.clone()),
                }
            }

            /// Lets DataFusion's projection pushdown cut the input down to
            /// the columns the node reads, so that a source decodes no more.
            fn necessary_children_exprs(
                &self,
                output_columns: &[usize],
            ) -> Option<Vec<Vec<usize>>> {
                self.input_columns_read(output_columns)
                    .map(|columns| vec![columns])
            }
        }
    };
}

/// A node over one input whose schemas hold the input's columns followed by
/// the window columns, and which DataFusion may hand a narrower input.
trait NarrowableInput: Sized {
    /// The input's columns needed for `output_columns` (sorted), or `None`
    /// when they cannot be told.
    fn input_columns_read(&self, output_columns: &[usize]) -> Option<Vec<usize>>;

    /// The node over `input`: the same columns or fewer, in the same order.
    fn with_input(&self, input: LogicalPlan) -> DfResult<Self>;
}

/// The position of the DESCRIPTOR column in `input`.
fn time_column_index(input: &LogicalPlan, time_column: &str) -> Option<usize> {
    let schema = input.schema();
    let (qualifier, _) = schema
        .qualified_field_with_unqualified_name(time_column)
        .ok()?;
    schema.index_of_column_by_name(qualifier, time_column)
}

/// The width of `old` and where each column of `new` (a narrowing of it,
/// same order) sits in it.
fn narrowing(old: &LogicalPlan, new: &LogicalPlan) -> DfResult<(usize, Vec<usize>)> {
    let wide = old.schema();
    let kept = new
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            wide.index_of_column_by_name(qualifier, field.name())
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(format!(
                        "window input narrowed to a column it lacked: {}",
                        field.name()
                    ))
                })
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok((wide.fields().len(), kept))
}

/// `schema` (`width` input columns, then window columns) with only the
/// input columns `kept`.
fn narrowed(schema: &DFSchema, width: usize, kept: &[usize]) -> DfResult<DFSchemaRef> {
    let fields = kept
        .iter()
        .copied()
        .chain(width..schema.fields().len())
        .map(|index| {
            let (qualifier, field) = schema.qualified_field(index);
            (qualifier.cloned(), field.clone())
        })
        .collect();
    Ok(Arc::new(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?))
}

fn sorted_unique(mut columns: Vec<usize>) -> Vec<usize> {
    columns.sort_unstable();
    columns.dedup();
    columns
}

/// Adds to `columns` the input columns (below `width`) `exprs` read in `schema`.
fn read_columns<'a>(
    exprs: impl IntoIterator<Item = &'a Expr>,
    schema: &DFSchema,
    width: usize,
    columns: &mut Vec<usize>,
) -> Option<()> {
    for expr in exprs {
        for column in expr.column_refs() {
            let index = schema.index_of_column(column).ok()?;
            if index < width {
                columns.push(index);
            }
        }
    }
    Some(())
}

impl NarrowableInput for WindowTvfNode {
    fn input_columns_read(&self, output_columns: &[usize]) -> Option<Vec<usize>> {
        if !self.narrow_input {
            return None;
        }
        let width = self.input.schema().fields().len();
        let mut columns: Vec<usize> = output_columns
            .iter()
            .copied()
            .filter(|c| *c < width)
            .collect();
        columns.push(time_column_index(&self.input, &self.time_column)?);
        Some(sorted_unique(columns))
    }

    fn with_input(&self, input: LogicalPlan) -> DfResult<Self> {
        let (width, kept) = narrowing(&self.input, &input)?;
        let mut node = self.clone();
        node.schema = narrowed(&self.schema, width, &kept)?;
        node.input = input;
        Ok(node)
    }
}

impl NarrowableInput for WindowAggregateNode {
    fn input_columns_read(&self, _output_columns: &[usize]) -> Option<Vec<usize>> {
        if !self.narrow_input {
            return None;
        }
        let width = self.input.schema().fields().len();
        let mut columns = vec![time_column_index(&self.input, &self.time_column)?];
        for (predicate, schema) in &self.filters {
            read_columns([predicate], schema, width, &mut columns)?;
        }
        read_columns(
            self.group_expr.iter().chain(&self.aggr_expr),
            &self.agg_input_schema,
            width,
            &mut columns,
        )?;
        Some(sorted_unique(columns))
    }

    fn with_input(&self, input: LogicalPlan) -> DfResult<Self> {
        let (width, kept) = narrowing(&self.input, &input)?;
        let mut node = self.clone();
        node.agg_input_schema = narrowed(&self.agg_input_schema, width, &kept)?;
        for (_, schema) in &mut node.filters {
            *schema = narrowed(schema, width, &kept)?;
        }
        node.input = input;
        Ok(node)
    }
}

/// A window TVF in a logical plan: its input plus `window_start`,
/// `window_end`, `window_time`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowTvfNode {
    /// The windowed relation.
    pub input: LogicalPlan,
    /// Window kind and sizes.
    pub kind: WindowKind,
    /// Alignment offset (ms).
    pub offset: i64,
    /// The DESCRIPTOR column.
    pub time_column: String,
    /// Whether DataFusion may cut the input down to the columns read (not
    /// when late rows go to a dead letter file with all their columns).
    pub narrow_input: bool,
    schema: DFSchemaRef,
}

single_input_node!(WindowTvfNode, "WindowTVF");

/// The table function behind the rewritten window TVF calls.
#[derive(Debug)]
pub struct WindowTableFunction {
    /// Plans of the tables and views a TVF may window.
    pub relations: Relations,
    /// Whether the TVFs let projection pushdown cut their input down to the
    /// columns read (see [`WindowTvfNode::narrow_input`]).
    pub narrow_inputs: bool,
}

fn string_argument(expr: &Expr) -> DfResult<String> {
    match expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)), _) => Ok(text.clone()),
        other => plan_err!("expected a string, got {other}"),
    }
}

/// Milliseconds of an INTERVAL literal.
fn interval_millis(expr: &Expr) -> DfResult<i64> {
    let millis = match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            v.days as i64 * 86_400_000 + v.milliseconds as i64
        }
        Expr::Literal(ScalarValue::IntervalYearMonth(Some(_)), _)
        | Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(_)), _) => {
            return plan_err!("window sizes in months or years are not supported: {expr}")
        }
        other => return plan_err!("expected an INTERVAL literal for a window size, got {other}"),
    };
    if millis <= 0 {
        return plan_err!("window sizes must be positive, got {expr}");
    }
    Ok(millis)
}

impl TableFunctionImpl for WindowTableFunction {
    fn call(&self, args: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        if args.len() < 5 {
            return plan_err!("malformed window table function call");
        }
        let kind_name = string_argument(&args[0])?;
        let relation = string_argument(&args[1])?;
        let partition = string_argument(&args[2])?;
        let time_column = string_argument(&args[3])?;
        let sizes = args[4..]
            .iter()
            .map(interval_millis)
            .collect::<DfResult<Vec<_>>>()?;
        let (kind, offset) = match (kind_name.as_str(), sizes.as_slice()) {
            ("TUMBLE", [size]) => (WindowKind::Tumble { size: *size }, 0),
            ("TUMBLE", [size, offset]) => (WindowKind::Tumble { size: *size }, *offset),
            ("HOP", [slide, size, rest @ ..]) => {
                if size % slide != 0 {
                    return plan_err!(
                        "HOP size ({size} ms) must be a multiple of its slide ({slide} ms)"
                    );
                }
                (
                    WindowKind::Hop {
                        size: *size,
                        slide: *slide,
                    },
                    rest.first().copied().unwrap_or(0),
                )
            }
            ("CUMULATE", [step, size, rest @ ..]) => {
                if size % step != 0 {
                    return plan_err!(
                        "CUMULATE size ({size} ms) must be a multiple of its step ({step} ms)"
                    );
                }
                (
                    WindowKind::Cumulate {
                        size: *size,
                        step: *step,
                    },
                    rest.first().copied().unwrap_or(0),
                )
            }
            ("SESSION", [gap]) => (WindowKind::Session { gap: *gap }, 0),
            (other, _) => return plan_err!("{other}: wrong number of INTERVAL arguments"),
        };
        if !partition.is_empty() && !matches!(kind, WindowKind::Session { .. }) {
            return plan_err!("PARTITION BY is only allowed in SESSION windows");
        }
        let input = self
            .relations
            .read()
            .map_err(|_| {
                datafusion::error::DataFusionError::Internal("relations lock poisoned".into())
            })?
            .get(&relation)
            .cloned();
        let Some(input) = input else {
            return plan_err!("{kind_name}: unknown table or view `{relation}`");
        };
        let input_schema = input.schema();
        let Some((_, field)) = input_schema
            .qualified_field_with_unqualified_name(&time_column)
            .ok()
        else {
            return plan_err!(
                "{kind_name}: DESCRIPTOR column `{time_column}` is not a column of `{relation}` (columns: {})",
                input_schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            );
        };
        if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
            return plan_err!(
                "{kind_name}: DESCRIPTOR column `{time_column}` must be a TIMESTAMP or TIMESTAMP_LTZ, not {}",
                field.data_type()
            );
        }
        let mut fields: Vec<(Option<datafusion::common::TableReference>, Arc<Field>)> =
            input_schema
                .iter()
                .map(|(qualifier, field)| (qualifier.cloned(), field.clone()))
                .collect();
        for name in WINDOW_COLUMNS {
            fields.push((
                None,
                Arc::new(Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    false,
                )),
            ));
        }
        let schema = Arc::new(DFSchema::new_with_metadata(fields, HashMap::new())?);
        let node = WindowTvfNode {
            input,
            kind,
            offset,
            time_column,
            narrow_input: self.narrow_inputs,
            schema,
        };
        Ok(Arc::new(WindowTable {
            plan: LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            }),
        }))
    }
}

/// A table provider that stands for a window TVF's plan (inlined by DataFusion).
#[derive(Debug)]
struct WindowTable {
    plan: LogicalPlan,
}

#[async_trait::async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&self) -> Option<std::borrow::Cow<'_, LogicalPlan>> {
        Some(std::borrow::Cow::Borrowed(&self.plan))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan_err!("window TVFs run on Sluice's streaming runtime only")
    }
}

/// `GROUP BY window_start, window_end, ...` over a window TVF, for the window
/// aggregate operator. Expressions refer to `agg_input_schema`, whose leading
/// fields line up with `input`'s columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowAggregateNode {
    /// The windowed relation (the TVF's input).
    pub input: LogicalPlan,
    /// Window kind and sizes.
    pub kind: WindowKind,
    /// Alignment offset (ms).
    pub offset: i64,
    /// The DESCRIPTOR column.
    pub time_column: String,
    /// Filters between the TVF and the GROUP BY, with the schema each refers to.
    pub filters: Vec<(Expr, DFSchemaRef)>,
    /// GROUP BY expressions.
    pub group_expr: Vec<Expr>,
    /// Aggregate calls.
    pub aggr_expr: Vec<Expr>,
    /// The schema the GROUP BY and aggregate expressions refer to.
    pub agg_input_schema: DFSchemaRef,
    /// As [`WindowTvfNode::narrow_input`].
    pub narrow_input: bool,
    schema: DFSchemaRef,
}

single_input_node!(WindowAggregateNode, "WindowAggregate");

/// Replaces each `Aggregate` over a window TVF (through aliases and filters)
/// with a [`WindowAggregateNode`].
pub fn rewrite_window_aggregates(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Aggregate(aggregate) = &node else {
            return Ok(Transformed::no(node));
        };
        let mut filters = Vec::new();
        let mut current = aggregate.input.as_ref();
        let tvf = loop {
            match current {
                LogicalPlan::SubqueryAlias(alias) => current = alias.input.as_ref(),
                LogicalPlan::Filter(filter) => {
                    filters.push((filter.predicate.clone(), filter.input.schema().clone()));
                    current = filter.input.as_ref();
                }
                LogicalPlan::Extension(extension) => {
                    match extension.node.as_any().downcast_ref::<WindowTvfNode>() {
                        Some(tvf) => break tvf.clone(),
                        None => return Ok(Transformed::no(node)),
                    }
                }
                _ => return Ok(Transformed::no(node)),
            }
        };
        filters.reverse();
        let rewritten = WindowAggregateNode {
            input: tvf.input.clone(),
            kind: tvf.kind,
            offset: tvf.offset,
            time_column: tvf.time_column.clone(),
            filters,
            group_expr: aggregate.group_expr.clone(),
            aggr_expr: aggregate.aggr_expr.clone(),
            agg_input_schema: aggregate.input.schema().clone(),
            narrow_input: tvf.narrow_input,
            schema: aggregate.schema.clone(),
        };
        Ok(Transformed::yes(LogicalPlan::Extension(Extension {
            node: Arc::new(rewritten),
        })))
    })
    .map(|transformed| transformed.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn rewrite(sql: &str) -> String {
        let tokens: Vec<TokenWithSpan> = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap()
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        rewrite_window_tvfs(tokens)
            .unwrap()
            .iter()
            .map(|t| t.token.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn positional_and_named_arguments() {
        assert_eq!(
            rewrite("FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND)) GROUP BY x"),
            "FROM __sluice_window ( 'TUMBLE' , 'bid' , '' , 'dateTime' , INTERVAL '10' SECOND ) GROUP BY x"
        );
        assert_eq!(
            rewrite("TABLE(HOP(DATA => TABLE bid, TIMECOL => DESCRIPTOR(ts), SIZE => INTERVAL '10' SECOND, SLIDE => INTERVAL '2' SECOND))"),
            "__sluice_window ( 'HOP' , 'bid' , '' , 'ts' , INTERVAL '2' SECOND , INTERVAL '10' SECOND )"
        );
    }

    #[test]
    fn missing_descriptor_is_reported() {
        let tokens: Vec<TokenWithSpan> = Tokenizer::new(
            &GenericDialect {},
            "SELECT 1 FROM TABLE(TUMBLE(TABLE t, INTERVAL '1' SECOND))",
        )
        .tokenize_with_location()
        .unwrap()
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
        let err = rewrite_window_tvfs(tokens).unwrap_err();
        assert!(
            err.contains("DESCRIPTOR") && err.contains("Line: 1"),
            "{err}"
        );
    }
}
