//! AST rewrites that make DataFusion follow Flink: column naming of nested
//! fields, and legacy group windows.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query, Select,
    SelectItem, SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::window_tvf::WINDOW_FUNCTION;

/// Names an unaliased `row.field` select item after its last part, as Flink
/// does (`SELECT bid.price` yields a column `price`, not `bid.price`).
pub fn name_nested_columns(statement: &mut Statement) {
    let _ = statement.visit(&mut NestedColumnNamer);
}

struct NestedColumnNamer;

impl VisitorMut for NestedColumnNamer {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item {
                    if let Some(last) = parts.last().cloned() {
                        let expr = Expr::CompoundIdentifier(parts.clone());
                        *item = SelectItem::ExprWithAlias { expr, alias: last };
                    }
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left);
            name_set_expr(right);
        }
        _ => {}
    }
}

/// Rewrites Flink's legacy group windows (`GROUP BY TUMBLE(ts, INTERVAL ...)`
/// with `TUMBLE_START(...)`, `TUMBLE_END(...)`, `TUMBLE_ROWTIME(...)` in the
/// select list; `HOP` likewise) into the window TVF form over the same table.
pub fn rewrite_legacy_group_windows(statement: &mut Statement) -> Result<(), String> {
    let mut rewriter = LegacyWindowRewriter { error: None };
    let _ = statement.visit(&mut rewriter);
    match rewriter.error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

struct LegacyWindowRewriter {
    error: Option<String>,
}

impl VisitorMut for LegacyWindowRewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            if let Err(error) = rewrite_select(select) {
                self.error = Some(error);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// A legacy group window call's name and arguments.
fn window_call(expr: &Expr) -> Option<(String, Vec<Expr>)> {
    let Expr::Function(function) = expr else {
        return None;
    };
    let name = function.name.to_string().to_ascii_uppercase();
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    let args = list
        .args
        .iter()
        .filter_map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr.clone()),
            _ => None,
        })
        .collect();
    Some((name, args))
}

fn rewrite_select(select: &mut Select) -> Result<(), String> {
    let GroupByExpr::Expressions(groups, _) = &mut select.group_by else {
        return Ok(());
    };
    let Some(position) = groups.iter().position(|g| {
        window_call(g)
            .is_some_and(|(name, _)| matches!(name.as_str(), "TUMBLE" | "HOP" | "SESSION"))
    }) else {
        return Ok(());
    };
    let (kind, args) = window_call(&groups[position]).ok_or("window call vanished")?;
    let time_column = match args.first() {
        Some(Expr::Identifier(ident)) => ident.value.clone(),
        Some(Expr::CompoundIdentifier(parts)) => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        _ => {
            return Err(format!(
                "GROUP BY {kind}(...) needs a time column as its first argument"
            ))
        }
    };
    let intervals: Vec<String> = args.iter().skip(1).map(|a| a.to_string()).collect();
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(format!(
            "GROUP BY {kind}(...) is supported over a single table or view"
        ));
    }
    let (table, alias) = match &select.from[0].relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => (
            name.0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(|i| i.value.clone())
                .collect::<Vec<_>>()
                .join("."),
            alias.clone(),
        ),
        _ => {
            return Err(format!(
                "GROUP BY {kind}(...) is supported over a single table or view"
            ))
        }
    };
    let call = format!(
        "{WINDOW_FUNCTION}('{kind}', '{table}', '', '{time_column}', {})",
        intervals.join(", ")
    );
    let mut relation = Parser::new(&GenericDialect {})
        .try_with_sql(&call)
        .and_then(|mut parser| parser.parse_table_factor())
        .map_err(|e| format!("rewriting GROUP BY {kind}(...): {e}"))?;
    if let TableFactor::Table {
        alias: new_alias, ..
    } = &mut relation
    {
        *new_alias = alias;
    }
    select.from[0].relation = relation;
    groups.splice(
        position..=position,
        [
            Expr::Identifier(Ident::new("window_start")),
            Expr::Identifier(Ident::new("window_end")),
        ],
    );
    let _ = select.projection.visit(&mut WindowAuxiliaryRewriter);
    if let Some(having) = &mut select.having {
        let _ = having.visit(&mut WindowAuxiliaryRewriter);
    }
    Ok(())
}

/// Replaces `TUMBLE_START(...)`, `HOP_END(...)`, `TUMBLE_ROWTIME(...)`, ... by
/// the window TVF's columns.
struct WindowAuxiliaryRewriter;

impl VisitorMut for WindowAuxiliaryRewriter {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some((name, _)) = window_call(expr) {
            let column = match name.split_once('_').map(|(_, suffix)| suffix) {
                Some("START")
                    if ["TUMBLE_START", "HOP_START", "SESSION_START"].contains(&name.as_str()) =>
                {
                    Some("window_start")
                }
                Some("END")
                    if ["TUMBLE_END", "HOP_END", "SESSION_END"].contains(&name.as_str()) =>
                {
                    Some("window_end")
                }
                Some("ROWTIME") => Some("window_time"),
                _ => None,
            };
            if let Some(column) = column {
                *expr = Expr::Identifier(Ident::new(column));
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_group_windows_become_window_tvfs() {
        let mut statement = Parser::parse_sql(
            &GenericDialect {},
            "SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS s, COUNT(*) FROM t GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)",
        )
        .unwrap()
        .remove(0);
        rewrite_legacy_group_windows(&mut statement).unwrap();
        let text = statement.to_string();
        assert!(
            text.contains("FROM __sluice_window('TUMBLE', 't', '', 'ts', INTERVAL '10' SECOND)"),
            "{text}"
        );
        assert!(
            text.contains("GROUP BY k, window_start, window_end"),
            "{text}"
        );
        assert!(text.contains("window_start AS s"), "{text}");
    }

    #[test]
    fn nested_fields_get_their_last_name() {
        let mut statement = Parser::parse_sql(
            &GenericDialect {},
            "SELECT bid.price, t.`dateTime`, x AS y FROM t UNION ALL SELECT a.b.c, 1, 2 FROM u",
        )
        .unwrap()
        .remove(0);
        name_nested_columns(&mut statement);
        let text = statement.to_string();
        assert!(text.contains("bid.price AS price"), "{text}");
        assert!(text.contains("t.`dateTime` AS `dateTime`"), "{text}");
        assert!(text.contains("a.b.c AS c"), "{text}");
        assert!(text.contains("x AS y"), "{text}");
    }
}
