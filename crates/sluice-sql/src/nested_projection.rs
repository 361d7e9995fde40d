//! Nested projection: which fields of a table's ROW columns a job reads, so
//! that a source whose format finds fields by name (JSON) decodes only those
//! and skips the rest of each record (Nexmark's `bid` queries read none of
//! `person`'s and `auction`'s text fields).
//!
//! A ROW column is pruned only where every use of it is a field access
//! (`get_field`, i.e. `col.field`) in the projection, filter or aggregation
//! right above a scan of the table, in a computed column or in the watermark.
//! Any other use (the whole ROW selected, compared, passed to a join...)
//! keeps it whole.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, LogicalPlan};
use sluice_core::table::{TableColumn, TableDef};

/// How much of a ROW value is read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldUse {
    /// All of it (or it is not a ROW).
    Whole,
    /// Only these fields, each with how much of it is read.
    Fields(BTreeMap<String, FieldUse>),
}

impl FieldUse {
    /// The use of the field at `path` below this one, merged in.
    fn add_path(&mut self, path: &[String]) {
        let FieldUse::Fields(fields) = self else {
            return;
        };
        match path.split_first() {
            None => *self = FieldUse::Whole,
            Some((first, rest)) => fields
                .entry(first.clone())
                .or_insert_with(|| FieldUse::Fields(BTreeMap::new()))
                .add_path(rest),
        }
    }

    fn merge(&mut self, other: &FieldUse) {
        match (&mut *self, other) {
            (FieldUse::Whole, _) => {}
            (_, FieldUse::Whole) => *self = FieldUse::Whole,
            (FieldUse::Fields(mine), FieldUse::Fields(theirs)) => {
                for (name, used) in theirs {
                    match mine.get_mut(name) {
                        Some(field) => field.merge(used),
                        None => {
                            mine.insert(name.clone(), used.clone());
                        }
                    }
                }
            }
        }
    }

    /// `data_type` with only the used fields of its ROWs (other types as they are).
    fn prune(&self, data_type: &DataType) -> DataType {
        match (self, data_type) {
            (FieldUse::Fields(used), DataType::Struct(fields)) => {
                let kept: Fields = fields
                    .iter()
                    .filter_map(|field| {
                        let used = used.get(field.name())?;
                        Some(
                            Field::new(
                                field.name(),
                                used.prune(field.data_type()),
                                field.is_nullable(),
                            )
                            .with_metadata(field.metadata().clone()),
                        )
                    })
                    .collect();
                // A ROW none of whose fields is found keeps them all: the
                // accesses name fields it lacks, and fail as they would.
                if kept.is_empty() {
                    data_type.clone()
                } else {
                    DataType::Struct(kept)
                }
            }
            _ => data_type.clone(),
        }
    }

    fn describe(&self, out: &mut String) {
        if let FieldUse::Fields(fields) = self {
            out.push('(');
            for (index, (name, used)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(name);
                used.describe(out);
            }
            out.push(')');
        }
    }
}

/// The uses of the ROW columns of one table, by column name. A column not
/// listed is read whole.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowFieldUses {
    columns: HashMap<String, FieldUse>,
}

impl RowFieldUses {
    /// Marks `column` as read whole.
    fn whole(&mut self, column: &str) {
        self.columns.insert(column.to_string(), FieldUse::Whole);
    }

    fn add_path(&mut self, column: &str, path: &[String]) {
        self.columns
            .entry(column.to_string())
            .or_insert_with(|| FieldUse::Fields(BTreeMap::new()))
            .add_path(path);
    }

    /// Adds the uses of the other table scans.
    pub(crate) fn merge(&mut self, other: &RowFieldUses) {
        for (column, used) in &other.columns {
            match self.columns.get_mut(column) {
                Some(mine) => mine.merge(used),
                None => {
                    self.columns.insert(column.clone(), used.clone());
                }
            }
        }
    }

    /// Records what `expr` reads of the ROW columns named by `is_row_column`.
    pub(crate) fn record_expr(&mut self, expr: &Expr, is_row_column: &dyn Fn(&str) -> bool) {
        let _ = expr.apply(|node| {
            if let Some((column, path)) = field_access(node) {
                if is_row_column(&column) {
                    self.add_path(&column, &path);
                    return Ok(TreeNodeRecursion::Jump);
                }
            }
            if let Expr::Column(column) = node {
                if is_row_column(&column.name) {
                    self.whole(&column.name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }

    /// `table` with its ROW columns cut down to the fields read, and a
    /// description of them (`None` when nothing is cut).
    pub(crate) fn prune(&self, table: &TableDef) -> (TableDef, Option<String>) {
        let mut pruned = table.clone();
        let mut description = String::new();
        for column in &mut pruned.columns {
            let TableColumn::Physical(field) = column else {
                continue;
            };
            let Some(used) = self.columns.get(field.name()) else {
                continue;
            };
            let data_type = used.prune(field.data_type());
            if &data_type == field.data_type() {
                continue;
            }
            if !description.is_empty() {
                description.push_str(", ");
            }
            let _ = write!(description, "{}", field.name());
            used.describe(&mut description);
            *field = Field::new(field.name(), data_type, field.is_nullable())
                .with_metadata(field.metadata().clone());
        }
        let described = (!description.is_empty()).then_some(description);
        (pruned, described)
    }
}

/// The names of `table`'s physical ROW columns.
pub(crate) fn row_columns(table: &TableDef) -> Vec<String> {
    table
        .columns
        .iter()
        .filter_map(|column| match column {
            TableColumn::Physical(field) if matches!(field.data_type(), DataType::Struct(_)) => {
                Some(field.name().clone())
            }
            _ => None,
        })
        .collect()
}

/// `column.a.b...` (a `get_field` chain on a column): the column name and the
/// field path.
fn field_access(expr: &Expr) -> Option<(String, Vec<String>)> {
    let Expr::ScalarFunction(function) = expr else {
        return None;
    };
    if function.func.name() != "get_field" {
        return None;
    }
    let (base, names) = function.args.split_first()?;
    let mut path = Vec::with_capacity(names.len());
    for name in names {
        match name {
            Expr::Literal(ScalarValue::Utf8(Some(name)), _)
            | Expr::Literal(ScalarValue::Utf8View(Some(name)), _)
            | Expr::Literal(ScalarValue::LargeUtf8(Some(name)), _) => path.push(name.clone()),
            _ => return None,
        }
    }
    match base {
        Expr::Column(column) => Some((column.name.clone(), path)),
        inner => {
            let (column, mut inner_path) = field_access(inner)?;
            inner_path.extend(path);
            Some((column, inner_path))
        }
    }
}

/// Per table name: what the scans in `plan` read of its ROW columns.
pub(crate) fn scan_field_uses(
    plan: &LogicalPlan,
    row_columns: &dyn Fn(&str) -> Vec<String>,
    uses: &mut HashMap<String, RowFieldUses>,
) {
    let mut ancestors = Vec::new();
    visit(plan, &mut ancestors, row_columns, uses);
}

fn visit<'a>(
    plan: &'a LogicalPlan,
    ancestors: &mut Vec<&'a LogicalPlan>,
    row_columns: &dyn Fn(&str) -> Vec<String>,
    uses: &mut HashMap<String, RowFieldUses>,
) {
    if let LogicalPlan::TableScan(scan) = plan {
        let table = scan.table_name.table();
        let rows: Vec<String> = row_columns(table)
            .into_iter()
            .filter(|name| {
                scan.projected_schema
                    .field_with_unqualified_name(name)
                    .is_ok()
            })
            .collect();
        let found = scan_uses(ancestors, &rows);
        uses.entry(table.to_string()).or_default().merge(&found);
    }
    ancestors.push(plan);
    for input in plan.inputs() {
        visit(input, ancestors, row_columns, uses);
    }
    ancestors.pop();
    // Subqueries in expressions are plans too (scanned with nothing known above).
    let _ = plan.apply_subqueries(|subquery| {
        visit(subquery, &mut Vec::new(), row_columns, uses);
        Ok(TreeNodeRecursion::Continue)
    });
}

/// What the nodes above one scan (nearest last in `ancestors`) read of its
/// ROW columns `rows`.
fn scan_uses(ancestors: &[&LogicalPlan], rows: &[String]) -> RowFieldUses {
    let mut uses = RowFieldUses::default();
    if rows.is_empty() {
        return uses;
    }
    let is_row = |name: &str| rows.iter().any(|row| row == name);
    for node in ancestors.iter().rev() {
        match node {
            // Pass every column on unchanged: look further up.
            LogicalPlan::Filter(filter) => uses.record_expr(&filter.predicate, &is_row),
            LogicalPlan::SubqueryAlias(_) => {}
            // Nothing of the scan's columns gets past these but their expressions.
            LogicalPlan::Projection(projection) => {
                for expr in &projection.expr {
                    uses.record_expr(expr, &is_row);
                }
                return uses;
            }
            LogicalPlan::Aggregate(aggregate) => {
                for expr in aggregate.group_expr.iter().chain(&aggregate.aggr_expr) {
                    uses.record_expr(expr, &is_row);
                }
                return uses;
            }
            _ => break,
        }
    }
    // Anything else may pass the ROWs on whole.
    for row in rows {
        uses.whole(row);
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::functions::core::expr_fn::get_field;
    use datafusion::prelude::{col, lit};

    fn bid() -> DataType {
        DataType::Struct(Fields::from(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
            Field::new("extra", DataType::Utf8, true),
        ]))
    }

    fn table() -> TableDef {
        TableDef {
            name: "events".into(),
            columns: vec![
                TableColumn::Physical(Field::new("kind", DataType::Int32, true)),
                TableColumn::Physical(Field::new("bid", bid(), true)),
            ],
            watermark: None,
            primary_key: Vec::new(),
            options: Default::default(),
        }
    }

    #[test]
    fn field_accesses_prune_and_whole_uses_keep_the_row() {
        let is_row = |name: &str| name == "bid";
        let mut uses = RowFieldUses::default();
        uses.record_expr(&get_field(col("bid"), "price").gt(lit(10)), &is_row);
        uses.record_expr(&get_field(col("bid"), "auction"), &is_row);
        let (pruned, described) = uses.prune(&table());
        assert_eq!(described.as_deref(), Some("bid(auction, price)"));
        let schema = pruned.physical_schema();
        let DataType::Struct(fields) = schema.field(1).data_type() else {
            panic!("bid is a ROW");
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["auction", "price"]);

        uses.record_expr(&col("bid").is_not_null(), &is_row);
        let (pruned, described) = uses.prune(&table());
        assert_eq!(described, None);
        assert_eq!(pruned.physical_schema().field(1).data_type(), &bid());
    }

    #[test]
    fn uses_of_several_scans_merge() {
        let is_row = |name: &str| name == "bid";
        let mut first = RowFieldUses::default();
        first.record_expr(&get_field(col("bid"), "extra"), &is_row);
        let mut second = RowFieldUses::default();
        second.record_expr(&get_field(col("bid"), "auction"), &is_row);
        first.merge(&second);
        assert_eq!(
            first.prune(&table()).1.as_deref(),
            Some("bid(auction, extra)")
        );
        let mut whole = RowFieldUses::default();
        whole.whole("bid");
        first.merge(&whole);
        assert_eq!(first.prune(&table()).1, None);
    }
}
