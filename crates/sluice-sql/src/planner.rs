//! Plans a script: registers tables and views with DataFusion, plans each
//! `INSERT` (or bare `SELECT`) into a DataFusion logical plan, optimizes it, and
//! translates the result into streaming operator nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use sluice_core::connector::{ConnectorRegistry, JobContext};
use sluice_core::options::Options;
use sluice_core::table::{TableColumn, TableDef};
use sluice_core::{Result, SluiceError};

use crate::functions::register_flink_functions;
use crate::plan::{JobPlan, NodeId, PlanNode};
use crate::script::{parse_script, StatementKind};
use crate::settings::JobSettings;

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
    };

    let ctx = new_session();
    let mut catalog = Catalog {
        ctx,
        tables: HashMap::new(),
    };
    let mut queries = Vec::new();
    for statement in statements {
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
        state: catalog.ctx.state(),
        tables: &catalog.tables,
        registry,
        job: &job,
        nodes: Vec::new(),
    };
    let mut sinks = Vec::new();
    for (select_index, (line, query)) in queries.into_iter().enumerate() {
        let sink = translator
            .translate_query(query, select_index)
            .map_err(|e| locate(e, line))?;
        sinks.push(sink);
    }
    Ok(JobPlan {
        settings,
        nodes: translator.nodes,
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

/// A DataFusion session set up for Flink's SQL semantics.
fn new_session() -> SessionContext {
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
    register_flink_functions(&ctx);
    ctx
}

/// A planned query: what to write, and where.
enum Query {
    Insert { table: String, input: LogicalPlan },
    Select { input: LogicalPlan },
}

struct Catalog {
    ctx: SessionContext,
    tables: HashMap<String, TableDef>,
}

impl Catalog {
    fn create_table(&mut self, table: TableDef) -> Result<()> {
        if self.tables.contains_key(&table.name) {
            return Err(SluiceError::Sql(format!(
                "table `{}` is defined twice",
                table.name
            )));
        }
        let physical = table.physical_schema();
        let physical_df = DFSchema::try_from(physical.as_ref().clone()).map_err(df_error)?;
        let state = self.ctx.state();
        let mut fields = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            match column {
                TableColumn::Physical(field) => fields.push(field.clone()),
                TableColumn::Computed { name, expr_sql } => {
                    let expr = state
                        .create_logical_expr(expr_sql, &physical_df)
                        .map_err(|e| computed_error(&table.name, name, e))?;
                    let data_type =
                        datafusion::logical_expr::ExprSchemable::get_type(&expr, &physical_df)
                            .map_err(|e| computed_error(&table.name, name, e))?;
                    fields.push(Field::new(name, data_type, true));
                }
            }
        }
        if let Some(watermark) = &table.watermark {
            if !fields.iter().any(|f| f.name() == &watermark.column) {
                return Err(SluiceError::Sql(format!(
                    "table `{}`: WATERMARK FOR names unknown column `{}`",
                    table.name, watermark.column
                )));
            }
        }
        let provider = EmptyTable::new(Arc::new(Schema::new(fields)));
        self.ctx
            .register_table(table.name.as_str(), Arc::new(provider))
            .map_err(df_error)?;
        self.tables.insert(table.name.clone(), table);
        Ok(())
    }

    /// Registers a view or plans a query; returns queries to run.
    async fn plan_statement(&mut self, mut statement: Statement) -> Result<Option<Query>> {
        crate::rewrite::name_nested_columns(&mut statement);
        let statement = match statement {
            Statement::CreateView(mut view) => {
                // Flink's TEMPORARY views live as long as the job, like every view here.
                view.temporary = false;
                Statement::CreateView(view)
            }
            Statement::Insert(_) | Statement::Query(_) => statement,
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
            LogicalPlan::Ddl(_) => {
                self.ctx
                    .execute_logical_plan(plan)
                    .await
                    .map_err(df_error)?;
                Ok(None)
            }
            other => Ok(Some(Query::Select { input: other })),
        }
    }
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
    state: SessionState,
    tables: &'a HashMap<String, TableDef>,
    registry: &'a ConnectorRegistry,
    job: &'a JobContext,
    nodes: Vec<PlanNode>,
}

impl Translator<'_> {
    fn push(&mut self, node: PlanNode) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
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
                let optimized = self.optimize(&input)?;
                let mut node = self.translate(&optimized)?;
                node = self.drop_computed_columns(node, definition, optimized.schema())?;
                Ok(self.push(PlanNode::Sink {
                    input: node,
                    table,
                    connector,
                }))
            }
            Query::Select { input } => {
                let optimized = self.optimize(&input)?;
                let node = self.translate(&optimized)?;
                let name = format!("select_{}", select_index + 1);
                let table = TableDef {
                    name: name.clone(),
                    columns: optimized
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| TableColumn::Physical(f.as_ref().clone().with_nullable(true)))
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
                }))
            }
        }
    }

    fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        self.state.optimize(plan).map_err(df_error)
    }

    /// A sink writes physical columns only: project computed ones away.
    fn drop_computed_columns(
        &mut self,
        node: NodeId,
        table: &TableDef,
        schema: &DFSchemaRef,
    ) -> Result<NodeId> {
        if table
            .columns
            .iter()
            .all(|c| matches!(c, TableColumn::Physical(_)))
        {
            return Ok(node);
        }
        let physical = table.physical_schema();
        let exprs = table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, TableColumn::Physical(_)))
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
        match plan {
            LogicalPlan::Projection(projection) => {
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
                let input = self.translate(&filter.input)?;
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
            other => Err(SluiceError::Unsupported(format!(
                "{} in a streaming query is not supported by this version of Sluice (plan: {})",
                describe_unsupported(other),
                other.display()
            ))),
        }
    }

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
        let physical = table.physical_schema();
        let physical_df = DFSchema::try_from(physical.as_ref().clone()).map_err(df_error)?;

        // Physical columns the source must produce: the wanted physical ones plus
        // those the wanted computed columns read.
        let mut computed_exprs = HashMap::new();
        let mut needed: Vec<usize> = Vec::new();
        for &index in &wanted {
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

        let connector = self
            .registry
            .for_table(table)?
            .create_source(table, &needed, self.job)?;
        let source_schema = connector.schema();
        let source = self.push(PlanNode::Source {
            table: table.name.clone(),
            connector,
            watermark: table
                .watermark
                .as_ref()
                .map(|w| format!("FOR {} AS {}", w.column, w.expr_sql)),
        });
        let wanted_physical: Vec<usize> = wanted
            .iter()
            .filter_map(|&i| table.physical_index(table.columns[i].name()))
            .collect();
        if computed_exprs.is_empty() && wanted_physical == needed {
            return Ok(source);
        }

        let source_df = DFSchema::try_from(source_schema.as_ref().clone()).map_err(df_error)?;
        let mut exprs = Vec::with_capacity(wanted.len());
        let mut fields = Vec::with_capacity(wanted.len());
        for &index in &wanted {
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
        Ok(self.push(PlanNode::Project {
            input: source,
            exprs,
            schema: Arc::new(Schema::new(fields)),
        }))
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
