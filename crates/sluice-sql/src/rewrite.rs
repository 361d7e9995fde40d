//! Small AST rewrites that make DataFusion follow Flink's naming rules.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

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
