//! Plans a script: registers tables and views with DataFusion, plans each
//! `INSERT` (or bare `SELECT`) into a DataFusion logical plan, optimizes it, and
//! translates the result into streaming operator nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNodeCore, Volatility, WriteOp};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use sluice_core::connector::{ConnectorRegistry, JobContext};
use sluice_core::options::Options;
use sluice_core::table::{TableColumn, TableDef};
use sluice_core::{Result, SluiceError};

use crate::attributes::{is_processing_time, time_columns, window_columns, WindowColumns};
use crate::functions::register_flink_functions;
use crate::functions::PROCTIME_FUNCTION;
use crate::join_bounds::JoinSides;
use crate::nested_projection::{self, RowFieldUses};
use crate::plan::{
    updating_operator, AggregateCall, GroupAggregate, JobPlan, Join, JoinKind, NodeId, PlanNode,
    WindowAggregate, WindowAssign, WindowJoin, WindowKind, WindowOutput,
};
use crate::script::{parse_script, StatementKind};
use crate::settings::JobSettings;
use crate::temporal::TemporalTable;
mod over;
mod temporal_join;
mod top_n;

use temporal_join::TemporalJoin;

use crate::window_tvf::{
    rewrite_window_aggregates, Relations, WindowAggregateNode, WindowTableFunction, WindowTvfNode,
    WINDOW_COLUMNS, WINDOW_FUNCTION,
};

/// Parses and plans a whole script into one job. `default_job_name` names the
/// job when the script sets no `pipeline.name`; `overrides` are `SET` pairs
/// given on the command line, applied after the script's own.
pub async fn plan_script(
    script: &str,
    default_job_name: &str,
    registry: &ConnectorRegistry,
    overrides: &BTreeMap<String, String>,
) -> Result<JobPlan> {
    let statements = parse_script(script)?;
    let mut pairs = BTreeMap::new();
    for statement in &statements {
        if let StatementKind::Set { key, value } = &statement.kind {
            pairs.insert(key.clone(), value.clone());
        }
    }
    pairs.extend(overrides.clone());
    let settings = JobSettings::from_pairs(&pairs, default_job_name)?;
    let job = JobContext {
        job_name: settings.job_name.clone(),
        data_dir: settings.data_dir.clone(),
        batch_size: settings.batch_size,
        exactly_once: settings.checkpoints.interval.is_some(),
    };

    let relations = Relations::default();
    // Late rows sent to a dead letter file carry every column of the
    // windowed input, so its columns are then not cut down.
    let ctx = new_session(&relations, settings.late_data_dlq.is_none());
    let mut catalog = Catalog {
        ctx,
        tables: HashMap::new(),
        relations,
    };
    let mut queries = Vec::new();
    let mut temporal_tables = Vec::new();
    for statement in statements {
        temporal_tables.extend(statement.temporal_tables.iter().cloned());
        let at = |e: SluiceError| locate(e, statement.location.line);
        match statement.kind {
            StatementKind::Set { .. } => {}
            StatementKind::CreateTable(table) => catalog.create_table(table).map_err(at)?,
            StatementKind::Sql(sql) => {
                if let Some(query) = catalog.plan_statement(*sql).await.map_err(at)? {
                    queries.push((statement.location.line, query));
                }
            }
        }
    }
    if queries.is_empty() {
        return Err(SluiceError::Sql(
            "the script has no INSERT INTO (or SELECT) statement, so there is nothing to run"
                .into(),
        ));
    }

    let mut translator = Translator {
        settings: &settings,
        state: catalog.ctx.state(),
        tables: &catalog.tables,
        registry,
        job: &job,
        nodes: Vec::new(),
        replaced: HashMap::new(),
        rank_output: None,
        scan_columns: HashMap::new(),
        scan_fields: HashMap::new(),
        scans: HashMap::new(),
        temporal_tables,
        temporal_time: Default::default(),
    };
    // Optimize every query first: a table scanned several times in the job
    // is read once, with the columns all its scans need.
    let mut optimized = Vec::with_capacity(queries.len());
    for (line, query) in queries {
        let query = translator
            .optimize_query(query)
            .map_err(|e| locate(e, line))?;
        translator.note_scans(query.plan());
        optimized.push((line, query));
    }
    let mut sinks = Vec::new();
    for (select_index, (line, query)) in optimized.into_iter().enumerate() {
        let sink = translator
            .translate_query(query, select_index)
            .map_err(|e| locate(e, line))?;
        sinks.push(sink);
    }
    let mut nodes = translator.nodes;
    // Scale-out cuts the plan into tasks at shuffles; it plans trees.
    if settings.reuse_sub_plans && settings.scale_out.is_none() {
        let volatile: Vec<String> = catalog
            .ctx
            .state()
            .scalar_functions()
            .iter()
            .filter(|(_, function)| function.signature().volatility == Volatility::Volatile)
            .flat_map(|(name, function)| [name.clone(), function.name().to_string()])
            .collect();
        (nodes, sinks) = crate::reuse::reuse_identical_subplans(nodes, sinks, &volatile);
    }
    Ok(JobPlan {
        settings,
        nodes,
        sinks,
    })
}

/// Adds the statement's line to an error that does not name one yet.
fn locate(error: SluiceError, line: u64) -> SluiceError {
    let prefix = format!("statement at line {line}");
    match error {
        SluiceError::Sql(message) if !message.contains("line ") => {
            SluiceError::Sql(format!("{prefix}: {message}"))
        }
        SluiceError::Config(message) => SluiceError::Config(format!("{prefix}: {message}")),
        SluiceError::Unsupported(message) => {
            SluiceError::Unsupported(format!("{message} ({prefix})"))
        }
        other => other,
    }
}

/// A DataFusion session set up for Flink's SQL semantics; `narrow_windows`:
/// window TVFs let projection pushdown cut their input down.
fn new_session(relations: &Relations, narrow_windows: bool) -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false)
        // Flink identifiers are case-sensitive and unquoted names keep their case.
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        // Flink types `0.908` as DECIMAL(3, 3), not DOUBLE.
        .set_bool("datafusion.sql_parser.parse_float_as_decimal", true)
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
    let ctx = SessionContext::new_with_config(config);
    // Turning inner joins into semi joins relies on batch uniqueness facts that a
    // stream does not have (a row may match several later rows); keep them inner.
    ctx.remove_optimizer_rule("eliminate_join");
    register_flink_functions(&ctx);
    ctx.register_udtf(
        WINDOW_FUNCTION,
        Arc::new(WindowTableFunction {
            relations: relations.clone(),
            narrow_inputs: narrow_windows,
        }),
    );
    ctx
}

/// A planned query: what to write, and where.
enum Query {
    Insert { table: String, input: LogicalPlan },
    Select { input: LogicalPlan },
}

impl Query {
    fn plan(&self) -> &LogicalPlan {
        match self {
            Query::Insert { input, .. } | Query::Select { input } => input,
        }
    }
}

struct Catalog {
    ctx: SessionContext,
    tables: HashMap<String, TableDef>,
    /// Plans of tables and views, for window TVFs.
    relations: Relations,
}

impl Catalog {
    fn remember_relation(&self, name: &str, plan: LogicalPlan) -> Result<()> {
        self.relations
            .write()
            .map_err(|_| SluiceError::Runtime("relations lock poisoned".into()))?
            .insert(name.to_string(), plan);
        Ok(())
    }
}

impl Catalog {
    fn create_table(&mut self, table: TableDef) -> Result<()> {
        if self.tables.contains_key(&table.name) {
            return Err(SluiceError::Sql(format!(
                "table `{}` is defined twice",
                table.name
            )));
        }
        let fields: Vec<Field> = full_table_schema(&self.ctx.state(), &table)?
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(watermark) = &table.watermark {
            if !fields.iter().any(|f| f.name() == &watermark.column) {
                return Err(SluiceError::Sql(format!(
                    "table `{}`: WATERMARK FOR names unknown column `{}`",
                    table.name, watermark.column
                )));
            }
        }
        let provider: Arc<dyn datafusion::catalog::TableProvider> =
            Arc::new(EmptyTable::new(Arc::new(Schema::new(fields))));
        let scan = datafusion::logical_expr::LogicalPlanBuilder::scan(
            table.name.as_str(),
            datafusion::datasource::provider_as_source(provider.clone()),
            None,
        )
        .and_then(|builder| builder.build())
        .map_err(df_error)?;
        self.remember_relation(&table.name, scan)?;
        self.ctx
            .register_table(table.name.as_str(), provider)
            .map_err(df_error)?;
        self.tables.insert(table.name.clone(), table);
        Ok(())
    }

    /// Flink's `INSERT INTO t SELECT ...` provides the columns a sink writes
    /// only, not its computed or `VIRTUAL` metadata columns: name those
    /// columns, so DataFusion fills the others with NULLs that the sink's
    /// projection then drops.
    fn name_written_columns(&self, insert: &mut datafusion::sql::sqlparser::ast::Insert) {
        use datafusion::sql::sqlparser::ast::{Ident, ObjectName, TableObject};
        if !insert.columns.is_empty() {
            return;
        }
        let TableObject::TableName(name) = &insert.table else {
            return;
        };
        let Some(table) = name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .and_then(|ident| self.tables.get(&ident.value))
        else {
            return;
        };
        if table.columns.iter().all(TableDef::is_written) {
            return;
        }
        insert.columns = table
            .columns
            .iter()
            .filter(|column| TableDef::is_written(column))
            .map(|column| ObjectName::from(vec![Ident::with_quote('"', column.name())]))
            .collect();
    }

    /// Registers a view or plans a query; returns queries to run.
    async fn plan_statement(&mut self, mut statement: Statement) -> Result<Option<Query>> {
        crate::rewrite::name_nested_columns(&mut statement);
        crate::rewrite::rewrite_legacy_group_windows(&mut statement).map_err(SluiceError::Sql)?;
        let statement = match statement {
            Statement::CreateView(mut view) => {
                // Flink's TEMPORARY views live as long as the job, like every view here.
                view.temporary = false;
                Statement::CreateView(view)
            }
            Statement::Insert(mut insert) => {
                self.name_written_columns(&mut insert);
                Statement::Insert(insert)
            }
            Statement::Query(_) => statement,
            other => {
                let text = other.to_string();
                let head: String = text
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(SluiceError::Unsupported(format!(
                    "statement '{head} ...' (supported: SET, CREATE TABLE, CREATE [TEMPORARY] VIEW, INSERT INTO, SELECT)"
                )));
            }
        };
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(df_error)?;
        match plan {
            LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
                Ok(Some(Query::Insert {
                    table: dml.table_name.table().to_string(),
                    input: dml.input.as_ref().clone(),
                }))
            }
            LogicalPlan::Ddl(ddl) => {
                if let datafusion::logical_expr::DdlStatement::CreateView(view) = &ddl {
                    self.remember_relation(view.name.table(), view.input.as_ref().clone())?;
                }
                self.ctx
                    .execute_logical_plan(LogicalPlan::Ddl(ddl))
                    .await
                    .map_err(df_error)?;
                Ok(None)
            }
            other => Ok(Some(Query::Select { input: other })),
        }
    }
}

/// The table's columns including computed ones, as DataFusion sees the table.
fn full_table_schema(state: &SessionState, table: &TableDef) -> Result<Schema> {
    let physical_df =
        DFSchema::try_from(table.physical_schema().as_ref().clone()).map_err(df_error)?;
    let fields = table
        .columns
        .iter()
        .map(|column| match column {
            TableColumn::Physical(field) => Ok(field.clone()),
            TableColumn::Computed { name, expr_sql } => {
                let expr = state
                    .create_logical_expr(expr_sql, &physical_df)
                    .map_err(|e| computed_error(&table.name, name, e))?;
                let data_type =
                    datafusion::logical_expr::ExprSchemable::get_type(&expr, &physical_df)
                        .map_err(|e| computed_error(&table.name, name, e))?;
                Ok(Field::new(name, data_type, true))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::new(fields))
}

fn computed_error(
    table: &str,
    column: &str,
    error: datafusion::error::DataFusionError,
) -> SluiceError {
    SluiceError::Sql(format!(
        "table `{table}`: computed column `{column}`: {}",
        clean_df_message(&error)
    ))
}

/// Converts a DataFusion error into a Sluice SQL error with a readable message.
pub fn df_error(error: datafusion::error::DataFusionError) -> SluiceError {
    SluiceError::Sql(clean_df_message(&error))
}

fn clean_df_message(error: &datafusion::error::DataFusionError) -> String {
    let text = error.to_string();
    let text = text
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .trim_start_matches("This feature is not implemented: ");
    text.to_string()
}

struct Translator<'a> {
    settings: &'a JobSettings,
    state: SessionState,
    tables: &'a HashMap<String, TableDef>,
    registry: &'a ConnectorRegistry,
    job: &'a JobContext,
    nodes: Vec<PlanNode>,
    /// Logical plan nodes (by address) already planned as another node, e.g.
    /// the `ROW_NUMBER()` window a Top-N replaces.
    replaced: HashMap<usize, NodeId>,
    /// Whether the projection above the Top-N being planned reads its row number.
    rank_output: Option<bool>,
    /// Per table: the columns all scans of it in the job read.
    scan_columns: HashMap<String, Vec<usize>>,
    /// Per table: the fields of its ROW columns all scans of it read.
    scan_fields: HashMap<String, RowFieldUses>,
    /// Per table: its shared source node and the columns it outputs.
    scans: HashMap<String, (NodeId, Vec<usize>)>,
    /// Tables the script reads `FOR SYSTEM_TIME AS OF` a time attribute.
    temporal_tables: Vec<TemporalTable>,
    /// Per temporal table alias: its event-time attribute column, or `None`
    /// for a processing-time attribute (found before the optimizer prunes it).
    temporal_time: std::cell::RefCell<HashMap<String, Option<String>>>,
}

impl Translator<'_> {
    fn push(&mut self, node: PlanNode) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The query with its plan optimized.
    fn optimize_query(&self, query: Query) -> Result<Query> {
        Ok(match query {
            Query::Insert { table, input } => Query::Insert {
                table,
                input: self.optimize(&input)?,
            },
            Query::Select { input } => Query::Select {
                input: self.optimize(&input)?,
            },
        })
    }

    /// Records the columns (and fields of ROW columns) each table scan of `plan` reads.
    fn note_scans(&mut self, plan: &LogicalPlan) {
        let _ = plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.table().to_string();
                let all = self.tables.get(&name).map_or(0, |t| t.columns.len());
                let columns = self.scan_columns.entry(name).or_default();
                match &scan.projection {
                    Some(projection) => columns.extend(projection.iter().copied()),
                    None => columns.extend(0..all),
                }
                columns.sort_unstable();
                columns.dedup();
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let tables = &self.tables;
        let row_columns = |name: &str| -> Vec<String> {
            tables
                .get(name)
                .map(nested_projection::row_columns)
                .unwrap_or_default()
        };
        nested_projection::scan_field_uses(plan, &row_columns, &mut self.scan_fields);
    }

    fn translate_query(&mut self, query: Query, select_index: usize) -> Result<NodeId> {
        match query {
            Query::Insert { table, input } => {
                let definition = self
                    .tables
                    .get(&table)
                    .ok_or_else(|| SluiceError::Sql(format!("unknown sink table `{table}`")))?;
                let connector = self
                    .registry
                    .for_table(definition)?
                    .create_sink(definition, self.job)?;
                let optimized = input;
                let mut node = self.translate(&optimized)?;
                let mut materialize_by = None;
                if let Some(updating) = self.updating_node(node) {
                    if !connector.accepts_updates() {
                        if definition.primary_key.is_empty() {
                            return Err(SluiceError::Sql(format!(
                                "sink `{table}` ({}) accepts only inserts, but the query's result is updating: {updating} produces updates. Write it to a sink that accepts a changelog ('format' = 'debezium-json', or 'print'), or declare a PRIMARY KEY on the sink to write the final row of each key",
                                connector.describe()
                            )));
                        }
                        materialize_by = Some(primary_key_columns(definition)?);
                    }
                }
                node = self.drop_computed_columns(node, definition, optimized.schema())?;
                Ok(self.push(PlanNode::Sink {
                    input: node,
                    table,
                    connector,
                    materialize_by,
                }))
            }
            Query::Select { input } => {
                let optimized = input;
                let node = self.translate(&optimized)?;
                let name = format!("select_{}", select_index + 1);
                let table = TableDef {
                    name: name.clone(),
                    columns: optimized
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| {
                            // A query column is plain data, wherever it came from.
                            let mut metadata = f.metadata().clone();
                            metadata.remove(sluice_core::table::METADATA_KEY);
                            metadata.remove(sluice_core::table::METADATA_VIRTUAL);
                            TableColumn::Physical(
                                f.as_ref()
                                    .clone()
                                    .with_nullable(true)
                                    .with_metadata(metadata),
                            )
                        })
                        .collect(),
                    watermark: None,
                    primary_key: vec![],
                    options: Options::new(
                        format!("table `{name}`"),
                        [("connector".to_string(), "print".to_string())].into(),
                    ),
                };
                let connector = self
                    .registry
                    .for_table(&table)?
                    .create_sink(&table, self.job)?;
                Ok(self.push(PlanNode::Sink {
                    input: node,
                    table: name,
                    connector,
                    materialize_by: None,
                }))
            }
        }
    }

    /// DataFusion's analyzer (type coercion, view inlining), then the window
    /// aggregate rewrite, then DataFusion's optimizer.
    fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        let analyzed = self
            .state
            .analyzer()
            .execute_and_check(plan.clone(), self.state.config_options(), |_, _| {})
            .map_err(df_error)?;
        let analyzed = self.prepare_temporal_joins(analyzed)?;
        let rewritten = rewrite_window_aggregates(analyzed).map_err(df_error)?;
        self.state
            .optimizer()
            .optimize(rewritten, &self.state, |_, _| {})
            .map_err(df_error)
    }

    /// Aggregate calls over an input schema, lowered by DataFusion.
    fn aggregate_calls(
        &self,
        exprs: &[datafusion::logical_expr::Expr],
        input: &DFSchema,
    ) -> Result<Vec<AggregateCall>> {
        let physical_schema = input.as_arrow();
        exprs
            .iter()
            .map(|expr| {
                // The one-call helper keeps us on DataFusion's own aggregate lowering.
                #[allow(deprecated)]
                let (function, filter, ordering) =
                    datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                        expr,
                        input,
                        physical_schema,
                        self.state.execution_props(),
                    )
                    .map_err(df_error)?;
                if !ordering.is_empty() {
                    return Err(SluiceError::Unsupported(format!(
                        "ORDER BY inside aggregate {expr}"
                    )));
                }
                Ok(AggregateCall { function, filter })
            })
            .collect()
    }

    fn translate_group_aggregate(
        &mut self,
        aggregate: &datafusion::logical_expr::Aggregate,
    ) -> Result<NodeId> {
        if aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, datafusion::logical_expr::Expr::GroupingSet(_)))
        {
            return Err(SluiceError::Unsupported(
                "GROUPING SETS / ROLLUP / CUBE".into(),
            ));
        }
        let input = self.translate(&aggregate.input)?;
        let updating_input = self.updating_node(input).is_some();
        let input_schema = aggregate.input.schema();
        if !updating_input {
            if let Some(windows) = window_columns(&self.nodes, input) {
                if let Some(node) = self.translate_cascaded_window(aggregate, input, windows)? {
                    return Ok(node);
                }
            }
        }
        let keys = aggregate
            .group_expr
            .iter()
            .map(|e| self.physical_expr(e, input_schema))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = self.aggregate_calls(&aggregate.aggr_expr, input_schema)?;
        Ok(self.push(PlanNode::GroupAggregate(Arc::new(GroupAggregate {
            input,
            input_schema: Arc::new(input_schema.as_arrow().clone()),
            keys,
            aggregates,
            updating_input,
            schema: nullable_schema(aggregate.schema.inner()),
        }))))
    }

    /// A `GROUP BY` over a window aggregation's output that keeps its
    /// `window_start` and `window_end` is itself a window aggregation (Flink's
    /// cascading window aggregation): append-only, emitted when the window closes.
    fn translate_cascaded_window(
        &mut self,
        aggregate: &datafusion::logical_expr::Aggregate,
        input: NodeId,
        windows: WindowColumns,
    ) -> Result<Option<NodeId>> {
        let input_schema = aggregate.input.schema();
        let column_index = |expr: &datafusion::logical_expr::Expr| match expr {
            datafusion::logical_expr::Expr::Column(column) => {
                input_schema.index_of_column(column).ok()
            }
            _ => None,
        };
        let grouped: Vec<Option<usize>> = aggregate.group_expr.iter().map(column_index).collect();
        if !grouped.contains(&Some(windows.start)) || !grouped.contains(&Some(windows.end)) {
            return Ok(None);
        }
        let (size, slide) = match windows.kind {
            WindowKind::Tumble { size } => (size, size),
            WindowKind::Hop { size, slide } | WindowKind::Cascaded { size, slide } => (size, slide),
            WindowKind::Cumulate { .. } | WindowKind::Session { .. } => {
                return Err(SluiceError::Unsupported(
                    "a window aggregation over the output of a CUMULATE or SESSION window aggregation".into(),
                ))
            }
        };
        let mut keys = Vec::new();
        let mut outputs = Vec::new();
        for (expr, index) in aggregate.group_expr.iter().zip(&grouped) {
            if *index == Some(windows.start) {
                outputs.push(WindowOutput::WindowStart);
            } else if *index == Some(windows.end) {
                outputs.push(WindowOutput::WindowEnd);
            } else {
                outputs.push(WindowOutput::Key(keys.len()));
                keys.push(self.physical_expr(expr, input_schema)?);
            }
        }
        let aggregates = self.aggregate_calls(&aggregate.aggr_expr, input_schema)?;
        outputs.extend((0..aggregates.len()).map(WindowOutput::Aggregate));
        let start = input_schema.field(windows.start);
        let time = Arc::new(ColumnExpr::new(start.name(), windows.start)) as Arc<dyn PhysicalExpr>;
        Ok(Some(self.push(PlanNode::WindowAggregate(Arc::new(
            WindowAggregate {
                input,
                input_schema: Arc::new(input_schema.as_arrow().clone()),
                time,
                kind: WindowKind::Cascaded { size, slide },
                offset: windows.offset,
                processing_time: false,
                allowed_lateness: self.allowed_lateness(),
                keys,
                aggregates,
                outputs,
                schema: nullable_schema(aggregate.schema.inner()),
            },
        )))))
    }

    /// `table.exec.emit.allow-lateness` in milliseconds.
    fn allowed_lateness(&self) -> i64 {
        i64::try_from(self.settings.allowed_lateness.as_millis()).unwrap_or(i64::MAX)
    }

    /// Describes the operator that makes `node`'s output updating, if any.
    fn updating_node(&self, node: NodeId) -> Option<String> {
        updating_operator(&self.nodes, node).map(|id| self.nodes[id].describe())
    }

    fn translate_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<NodeId> {
        use datafusion::logical_expr::JoinType;
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            other => {
                return Err(SluiceError::Unsupported(format!(
                    "{other} join (from IN / EXISTS subqueries); write it as an inner or outer join"
                )))
            }
        };
        if join.on.is_empty() {
            return Err(SluiceError::Unsupported(
                "a join without an equality condition between the two inputs".into(),
            ));
        }
        let left = self.translate(&join.left)?;
        let right = self.translate(&join.right)?;
        let temporal = self.temporal_join(join, kind, right)?;
        let mut left_keys = Vec::with_capacity(join.on.len());
        let mut right_keys = Vec::with_capacity(join.on.len());
        for (l, r) in &join.on {
            left_keys.push(self.physical_expr(l, join.left.schema())?);
            right_keys.push(self.physical_expr(r, join.right.schema())?);
        }
        let filter = match &join.filter {
            Some(filter) => Some(self.physical_expr(filter, &join.schema)?),
            None => None,
        };
        let time_columns = [
            time_columns(&self.nodes, left),
            time_columns(&self.nodes, right),
        ];
        let sides = JoinSides {
            schemas: [join.left.schema(), join.right.schema()],
            time_columns: [&time_columns[0], &time_columns[1]],
        };
        let [left_bound, right_bound] = sides.expiry_bounds(&join.on, join.filter.as_ref());
        let expiry = [
            match left_bound {
                Some(bound) => Some(self.physical_expr(&bound, join.left.schema())?),
                None => None,
            },
            match right_bound {
                Some(bound) => Some(self.physical_expr(&bound, join.right.schema())?),
                None => None,
            },
        ];
        let window = if temporal.is_some() {
            None
        } else {
            self.window_join(join, [left, right], &time_columns)
        };
        let mut condition: Vec<String> = join
            .on
            .iter()
            .map(|(l, r)| format!("{} = {}", l.human_display(), r.human_display()))
            .collect();
        condition.extend(join.filter.iter().map(|f| f.human_display().to_string()));
        Ok(self.push(PlanNode::Join(Arc::new(Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            input_schemas: [
                nullable_schema(join.left.schema().inner()),
                nullable_schema(join.right.schema().inner()),
            ],
            filter,
            expiry: if temporal.is_some() {
                [None, None]
            } else {
                expiry
            },
            lookup: match &temporal {
                Some(TemporalJoin::Lookup(lookup)) => Some(*lookup),
                _ => None,
            },
            versioned: match temporal {
                Some(TemporalJoin::Versioned(versioned)) => Some(versioned),
                _ => None,
            },
            window,
            schema: nullable_schema(join.schema.inner()),
            condition: condition.join(" AND "),
        }))))
    }

    /// A window join (Flink's rule): both inputs are event-time windowed and
    /// the equalities include `window_start = window_start` and
    /// `window_end = window_end`.
    fn window_join(
        &self,
        join: &datafusion::logical_expr::Join,
        inputs: [NodeId; 2],
        time_columns: &[Vec<usize>; 2],
    ) -> Option<WindowJoin> {
        let left = window_columns(&self.nodes, inputs[0])?;
        let right = window_columns(&self.nodes, inputs[1])?;
        if !time_columns[0].contains(&left.end) || !time_columns[1].contains(&right.end) {
            return None;
        }
        let schemas = [join.left.schema(), join.right.schema()];
        let column = |expr: &datafusion::logical_expr::Expr, side: usize| match expr {
            datafusion::logical_expr::Expr::Column(column) => {
                schemas[side].index_of_column(column).ok()
            }
            _ => None,
        };
        let equated = |l: usize, r: usize| {
            join.on
                .iter()
                .any(|(a, b)| column(a, 0) == Some(l) && column(b, 1) == Some(r))
        };
        if !equated(left.start, right.start) || !equated(left.end, right.end) {
            return None;
        }
        let end = |side: usize, index: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(ColumnExpr::new(schemas[side].field(index).name(), index))
        };
        Some(WindowJoin {
            window_end: [end(0, left.end), end(1, right.end)],
        })
    }

    fn translate_window_aggregate(&mut self, node: &WindowAggregateNode) -> Result<NodeId> {
        let mut input = self.translate(&node.input)?;
        if let Some(updating) = self.updating_node(input) {
            return Err(SluiceError::Unsupported(format!(
                "window aggregation over an updating input (produced by {updating})"
            )));
        }
        let width = node.input.schema().fields().len();
        let truncate = |schema: &DFSchema| -> Result<DFSchema> {
            DFSchema::new_with_metadata(
                schema
                    .iter()
                    .take(width)
                    .map(|(q, f)| (q.cloned(), f.clone()))
                    .collect(),
                HashMap::new(),
            )
            .map_err(df_error)
        };
        for (predicate, schema) in &node.filters {
            let visible = truncate(schema)?;
            let physical = self.physical_expr(predicate, &visible).map_err(|_| {
                SluiceError::Unsupported(format!(
                    "a WHERE condition on window columns before the window aggregation ({predicate})"
                ))
            })?;
            input = self.push(PlanNode::Filter {
                input,
                predicate: physical,
            });
        }
        let visible = truncate(&node.agg_input_schema)?;
        let input_schema: SchemaRef = Arc::new(visible.as_arrow().clone());
        let (qualifier, _) = node
            .input
            .schema()
            .qualified_field_with_unqualified_name(&node.time_column)
            .map_err(df_error)?;
        let time_column =
            datafusion::common::Column::new(qualifier.cloned(), node.time_column.clone());
        let time = self.physical_expr(
            &datafusion::logical_expr::Expr::Column(time_column),
            node.input.schema(),
        )?;

        let mut keys = Vec::new();
        let mut outputs = Vec::new();
        for expr in &node.group_expr {
            let window_column = match expr {
                datafusion::logical_expr::Expr::Column(column) => node
                    .agg_input_schema
                    .index_of_column(column)
                    .ok()
                    .filter(|index| *index >= width)
                    .map(|index| index - width),
                _ => None,
            };
            match window_column {
                Some(0) => outputs.push(WindowOutput::WindowStart),
                Some(1) => outputs.push(WindowOutput::WindowEnd),
                Some(_) => outputs.push(WindowOutput::WindowTime),
                None => {
                    let key = self.physical_expr(expr, &visible).map_err(|_| {
                        SluiceError::Unsupported(format!(
                            "GROUP BY expression {expr} over a window TVF"
                        ))
                    })?;
                    outputs.push(WindowOutput::Key(keys.len()));
                    keys.push(key);
                }
            }
        }
        if !outputs.contains(&WindowOutput::WindowStart)
            || !outputs.contains(&WindowOutput::WindowEnd)
        {
            return Err(SluiceError::Unsupported(format!(
                "GROUP BY over a window TVF without both {} and {}",
                WINDOW_COLUMNS[0], WINDOW_COLUMNS[1]
            )));
        }
        let aggregates = self.aggregate_calls(&node.aggr_expr, &visible)?;
        outputs.extend((0..aggregates.len()).map(WindowOutput::Aggregate));
        let processing_time = time
            .downcast_ref::<ColumnExpr>()
            .is_some_and(|column| is_processing_time(&self.nodes, input, column.index()));
        if processing_time && matches!(node.kind, WindowKind::Session { .. }) {
            return Err(SluiceError::Unsupported(
                "SESSION windows on a processing-time attribute".into(),
            ));
        }
        Ok(
            self.push(PlanNode::WindowAggregate(Arc::new(WindowAggregate {
                input,
                input_schema,
                time,
                kind: node.kind,
                offset: node.offset,
                processing_time,
                allowed_lateness: if matches!(node.kind, WindowKind::Session { .. })
                    || processing_time
                {
                    0
                } else {
                    self.allowed_lateness()
                },
                keys,
                aggregates,
                outputs,
                schema: nullable_schema(node.schema().inner()),
            }))),
        )
    }

    /// A window TVF whose rows are used directly (window Top-N, window join,
    /// window deduplication, or just the window columns).
    fn translate_window_tvf(&mut self, tvf: &WindowTvfNode) -> Result<NodeId> {
        if matches!(tvf.kind, WindowKind::Session { .. }) {
            return Err(SluiceError::Unsupported(
                "a SESSION window TVF that is not aggregated with GROUP BY window_start, window_end"
                    .into(),
            ));
        }
        let input = self.translate(&tvf.input)?;
        if let Some(updating) = self.updating_node(input) {
            return Err(SluiceError::Unsupported(format!(
                "a window TVF over an updating input (produced by {updating})"
            )));
        }
        let (qualifier, _) = tvf
            .input
            .schema()
            .qualified_field_with_unqualified_name(&tvf.time_column)
            .map_err(df_error)?;
        let column = datafusion::common::Column::new(qualifier.cloned(), tvf.time_column.clone());
        let time = self.physical_expr(
            &datafusion::logical_expr::Expr::Column(column),
            tvf.input.schema(),
        )?;
        if time
            .downcast_ref::<ColumnExpr>()
            .is_some_and(|c| is_processing_time(&self.nodes, input, c.index()))
        {
            return Err(SluiceError::Unsupported(
                "a window TVF on a processing-time attribute that is not aggregated".into(),
            ));
        }
        Ok(self.push(PlanNode::WindowAssign(Arc::new(WindowAssign {
            input,
            time,
            kind: tvf.kind,
            offset: tvf.offset,
            schema: nullable_schema(tvf.schema().inner()),
        }))))
    }

    /// A sink writes physical columns only: project computed and `VIRTUAL`
    /// metadata columns away.
    fn drop_computed_columns(
        &mut self,
        node: NodeId,
        table: &TableDef,
        schema: &DFSchemaRef,
    ) -> Result<NodeId> {
        if table.columns.iter().all(TableDef::is_written) {
            return Ok(node);
        }
        let physical = table.written_schema();
        let exprs = table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| TableDef::is_written(c))
            .map(|(index, c)| Arc::new(ColumnExpr::new(c.name(), index)) as Arc<dyn PhysicalExpr>)
            .collect();
        debug_assert_eq!(schema.fields().len(), table.columns.len());
        Ok(self.push(PlanNode::Project {
            input: node,
            exprs,
            schema: nullable_schema(&physical),
        }))
    }

    fn physical_expr(
        &self,
        expr: &datafusion::logical_expr::Expr,
        schema: &DFSchema,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.state
            .create_physical_expr(expr.clone(), schema)
            .map_err(df_error)
    }

    fn translate(&mut self, plan: &LogicalPlan) -> Result<NodeId> {
        let address = match plan {
            LogicalPlan::Window(window) => std::ptr::from_ref(window) as usize,
            other => std::ptr::from_ref(other) as usize,
        };
        if let Some(node) = self.replaced.get(&address) {
            return Ok(*node);
        }
        match plan {
            LogicalPlan::Projection(projection) => {
                self.note_rank_use(&projection.expr, &projection.input);
                let input = self.translate(&projection.input)?;
                let exprs = projection
                    .expr
                    .iter()
                    .map(|e| self.physical_expr(e, projection.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                Ok(self.push(PlanNode::Project {
                    input,
                    exprs,
                    schema: nullable_schema(projection.schema.inner()),
                }))
            }
            LogicalPlan::Filter(filter) => {
                let top_n = self.translate_top_n(filter)?;
                let input = self.translate(&filter.input)?;
                if top_n == Some(false) {
                    // The Top-N applies the whole condition.
                    return Ok(input);
                }
                let predicate = self.physical_expr(&filter.predicate, filter.input.schema())?;
                Ok(self.push(PlanNode::Filter { input, predicate }))
            }
            LogicalPlan::SubqueryAlias(alias) => self.translate(&alias.input),
            LogicalPlan::Union(union) => {
                let inputs = union
                    .inputs
                    .iter()
                    .map(|input| self.translate(input))
                    .collect::<Result<Vec<_>>>()?;
                Ok(self.push(PlanNode::Union {
                    inputs,
                    schema: nullable_schema(union.schema.inner()),
                }))
            }
            LogicalPlan::TableScan(scan) => self.translate_scan(scan),
            LogicalPlan::Join(join) => self.translate_join(join),
            LogicalPlan::Aggregate(aggregate) => self.translate_group_aggregate(aggregate),
            LogicalPlan::Window(window) => self.translate_over(window),
            LogicalPlan::Extension(extension) => {
                if let Some(window) = extension
                    .node
                    .as_any()
                    .downcast_ref::<WindowAggregateNode>()
                {
                    return self.translate_window_aggregate(window);
                }
                if let Some(tvf) = extension.node.as_any().downcast_ref::<WindowTvfNode>() {
                    return self.translate_window_tvf(tvf);
                }
                Err(SluiceError::Unsupported(format!(
                    "plan node {}",
                    extension.node.name()
                )))
            }
            other => Err(SluiceError::Unsupported(format!(
                "{} in a streaming query is not supported by this version of Sluice (plan: {})",
                describe_unsupported(other),
                other.display()
            ))),
        }
    }

    /// A table scan: the table's shared source (read once per job, with the
    /// columns every scan of it needs), then this scan's columns.
    fn translate_scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Result<NodeId> {
        let name = scan.table_name.table();
        let table = self
            .tables
            .get(name)
            .ok_or_else(|| SluiceError::Sql(format!("unknown table `{name}`")))?;
        if !scan.filters.is_empty() || scan.fetch.is_some() {
            return Err(SluiceError::Unsupported(format!(
                "pushed-down filters or limits on table `{name}`"
            )));
        }
        let wanted: Vec<usize> = match &scan.projection {
            Some(projection) => projection.clone(),
            None => (0..table.columns.len()).collect(),
        };
        let (source, columns) = match self.scans.get(name) {
            Some(shared) => shared.clone(),
            None => {
                let mut columns = self.scan_columns.get(name).cloned().unwrap_or_default();
                if !wanted.iter().all(|c| columns.contains(c)) {
                    columns = wanted.clone();
                }
                let node = self.translate_source(table, &columns)?;
                self.scans.insert(name.to_string(), (node, columns.clone()));
                (node, columns)
            }
        };
        if columns == wanted {
            return Ok(source);
        }
        let schema = self.nodes_output_schema(source);
        let mut exprs = Vec::with_capacity(wanted.len());
        let mut fields = Vec::with_capacity(wanted.len());
        for column in &wanted {
            let position = columns.iter().position(|c| c == column).ok_or_else(|| {
                SluiceError::Runtime(format!("column {column} of `{name}` is not read"))
            })?;
            let field = schema.field(position);
            exprs.push(Arc::new(ColumnExpr::new(field.name(), position)) as Arc<dyn PhysicalExpr>);
            fields.push(field.clone());
        }
        Ok(self.push(PlanNode::Project {
            input: source,
            exprs,
            schema: Arc::new(Schema::new(fields)),
        }))
    }

    /// The output schema of a planned node.
    fn nodes_output_schema(&self, node: NodeId) -> SchemaRef {
        crate::plan::output_schema(&self.nodes, node)
    }

    /// Reads `wanted` columns (indices into the table's columns) of `table`:
    /// source, computed columns and watermark.
    fn translate_source(&mut self, table: &TableDef, wanted: &[usize]) -> Result<NodeId> {
        let name = table.name.as_str();
        let wanted = wanted.to_vec();
        let physical = table.physical_schema();
        let physical_df = DFSchema::try_from(physical.as_ref().clone()).map_err(df_error)?;
        let full_df =
            DFSchema::try_from(full_table_schema(&self.state, table)?).map_err(df_error)?;

        // The watermark expression may read columns the query does not.
        let watermark = match &table.watermark {
            Some(watermark) => {
                let expr = self
                    .state
                    .create_logical_expr(&watermark.expr_sql, &full_df)
                    .map_err(|e| {
                        SluiceError::Sql(format!(
                            "table `{name}`: WATERMARK: {}",
                            clean_df_message(&e)
                        ))
                    })?;
                Some((
                    expr,
                    format!("FOR {} AS {}", watermark.column, watermark.expr_sql),
                ))
            }
            None => None,
        };
        let mut columns = wanted.clone();
        if let Some((expr, _)) = &watermark {
            for column in expr.column_refs() {
                if let Some(index) = table.columns.iter().position(|c| c.name() == column.name) {
                    if !columns.contains(&index) {
                        columns.push(index);
                    }
                }
            }
        }

        // Physical columns the source must produce: the physical ones among
        // `columns` plus those the computed ones read.
        let mut computed_exprs = HashMap::new();
        let mut needed: Vec<usize> = Vec::new();
        for &index in &columns {
            match &table.columns[index] {
                TableColumn::Physical(field) => needed.extend(table.physical_index(field.name())),
                TableColumn::Computed { name, expr_sql } => {
                    let expr = self
                        .state
                        .create_logical_expr(expr_sql, &physical_df)
                        .map_err(|e| computed_error(&table.name, name, e))?;
                    for column in expr.column_refs() {
                        needed.extend(table.physical_index(&column.name));
                    }
                    computed_exprs.insert(index, expr);
                }
            }
        }
        needed.sort_unstable();
        needed.dedup();

        let factory = self.registry.for_table(table)?;
        // Late rows sent to a dead letter file keep whole ROWs.
        let prune =
            self.settings.late_data_dlq.is_none() && factory.reads_row_fields_by_name(table);
        let (read_table, read_fields) = if prune {
            // The scans' field accesses, and those of computed columns and
            // the watermark (written against the physical columns).
            let mut uses = self.scan_fields.get(name).cloned().unwrap_or_default();
            let rows = nested_projection::row_columns(table);
            let is_row = |column: &str| rows.iter().any(|row| row == column);
            for expr in computed_exprs.values() {
                uses.record_expr(expr, &is_row);
            }
            if let Some((expr, _)) = &watermark {
                uses.record_expr(expr, &is_row);
            }
            uses.prune(table)
        } else {
            (table.clone(), None)
        };
        let connector = factory.create_source(&read_table, &needed, self.job)?;
        let source_schema = connector.schema();
        let idle_timeout = match table.options.duration("scan.watermark.idle-timeout")? {
            Some(timeout) => Some(timeout).filter(|t| !t.is_zero()),
            None => self.settings.source_idle_timeout,
        };
        let mut node = self.push(PlanNode::Source {
            table: table.name.clone(),
            connector,
            watermark: watermark.as_ref().map(|(_, text)| text.clone()),
            idle_timeout,
            read_fields,
        });
        let columns_physical: Vec<usize> = columns
            .iter()
            .filter_map(|&i| table.physical_index(table.columns[i].name()))
            .collect();
        let mut schema = source_schema.clone();
        if !(computed_exprs.is_empty() && columns_physical == needed) {
            let source_df = DFSchema::try_from(source_schema.as_ref().clone()).map_err(df_error)?;
            let mut exprs = Vec::with_capacity(columns.len());
            let mut fields = Vec::with_capacity(columns.len());
            for &index in &columns {
                let column = &table.columns[index];
                let expr: Arc<dyn PhysicalExpr> = match computed_exprs.get(&index) {
                    Some(logical) => self.physical_expr(logical, &source_df)?,
                    None => {
                        let position = source_schema.index_of(column.name())?;
                        Arc::new(ColumnExpr::new(column.name(), position))
                    }
                };
                let data_type = expr.data_type(&source_schema).map_err(df_error)?;
                fields.push(Field::new(column.name(), data_type, true));
                exprs.push(expr);
            }
            schema = Arc::new(Schema::new(fields));
            node = self.push(PlanNode::Project {
                input: node,
                exprs,
                schema: schema.clone(),
            });
        }
        if let (Some((expr, text)), Some(definition)) = (watermark, &table.watermark) {
            let df = DFSchema::try_from(schema.as_ref().clone()).map_err(df_error)?;
            let expr = self.physical_expr(&expr, &df)?;
            let column = schema.index_of(&definition.column)?;
            node = self.push(PlanNode::Watermark {
                input: node,
                expr,
                column,
                text,
            });
        }
        if columns.len() > wanted.len() {
            let exprs = (0..wanted.len())
                .map(|i| {
                    Arc::new(ColumnExpr::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
                })
                .collect();
            let fields: Vec<Field> = (0..wanted.len()).map(|i| schema.field(i).clone()).collect();
            node = self.push(PlanNode::Project {
                input: node,
                exprs,
                schema: Arc::new(Schema::new(fields)),
            });
        }
        Ok(node)
    }
}

/// The alias and table name of a plan that reads one table (through
/// projections, filters and an alias).
fn scan_alias(plan: &LogicalPlan, alias: Option<String>) -> Option<(String, String)> {
    match plan {
        LogicalPlan::SubqueryAlias(sub) => scan_alias(
            &sub.input,
            alias.or_else(|| Some(sub.alias.table().to_string())),
        ),
        LogicalPlan::Projection(projection) => scan_alias(&projection.input, alias),
        LogicalPlan::Filter(filter) => scan_alias(&filter.input, alias),
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.table().to_string();
            Some((alias.unwrap_or_else(|| table.clone()), table))
        }
        _ => None,
    }
}

/// Whether `column` of `plan` is the value of `PROCTIME()` passed on unchanged.
fn logical_is_proctime(plan: &LogicalPlan, column: &datafusion::common::Column) -> bool {
    use datafusion::logical_expr::Expr;
    let Ok(index) = plan.schema().index_of_column(column) else {
        return false;
    };
    match plan {
        LogicalPlan::Projection(projection) => match projection.expr[index].clone().unalias() {
            Expr::ScalarFunction(call) => call.name() == PROCTIME_FUNCTION,
            Expr::Column(inner) => logical_is_proctime(&projection.input, &inner),
            _ => false,
        },
        LogicalPlan::TableScan(_) => false,
        other => other.inputs().into_iter().any(|input| {
            let (qualifier, field) = plan.schema().qualified_field(index);
            let _ = qualifier;
            input
                .schema()
                .qualified_field_with_unqualified_name(field.name())
                .ok()
                .is_some_and(|(q, f)| {
                    logical_is_proctime(
                        input,
                        &datafusion::common::Column::new(q.cloned(), f.name()),
                    )
                })
        }),
    }
}

/// Positions of a sink table's PRIMARY KEY columns among its physical columns.
fn primary_key_columns(table: &TableDef) -> Result<Vec<usize>> {
    let physical = table.physical_schema();
    table
        .primary_key
        .iter()
        .map(|column| {
            physical.index_of(column).map_err(|_| {
                SluiceError::Sql(format!(
                    "table `{}`: PRIMARY KEY column `{column}` is not a physical column",
                    table.name
                ))
            })
        })
        .collect()
}

/// Whether every source under `node` is bounded.
fn is_bounded(nodes: &[PlanNode], node: NodeId) -> bool {
    match &nodes[node] {
        PlanNode::Source { connector, .. } => connector.is_bounded(),
        other => other
            .inputs()
            .into_iter()
            .all(|input| is_bounded(nodes, input)),
    }
}

/// Names the first unsupported construct in plain words.
fn describe_unsupported(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Aggregate(_) => "GROUP BY / aggregation",
        LogicalPlan::Join(_) => "JOIN",
        LogicalPlan::Window(_) => "OVER window",
        LogicalPlan::Sort(_) => "ORDER BY",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Values(_) => "VALUES",
        LogicalPlan::EmptyRelation(_) => "SELECT without FROM",
        LogicalPlan::Subquery(_) => "a subquery",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "a recursive query",
        _ => "this construct",
    }
}

/// The same schema with every top-level field nullable, so a planner's
/// non-null inference never rejects a batch at run time.
fn nullable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}
