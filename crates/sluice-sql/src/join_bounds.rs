//! Derives when a join may forget a row. A condition such as
//! `b.ts BETWEEN a.ts - INTERVAL '10' SECOND AND a.ts` (interval join),
//! `a.window_end = b.window_end` (window join) or `b.ts <= a.expires` bounds
//! the event time of every partner a row can still get. Event-time attributes
//! of future rows lie above the watermark, so once the watermark passes that
//! bound the row can never match again and its state is freed.

use datafusion::common::DFSchema;
use datafusion::logical_expr::{binary_expr, Between, BinaryExpr, Expr, Operator};

/// Both inputs of a join, for resolving which side an expression reads.
pub struct JoinSides<'a> {
    /// The left and right input schemas.
    pub schemas: [&'a DFSchema; 2],
    /// Indices of each input's event-time columns.
    pub time_columns: [&'a [usize]; 2],
}

impl JoinSides<'_> {
    /// For each side, a timestamp expression over that side's row after which
    /// no future row of the other side can match it.
    pub fn expiry_bounds(&self, on: &[(Expr, Expr)], filter: Option<&Expr>) -> [Option<Expr>; 2] {
        let mut comparisons: Vec<(&Expr, &Expr)> = Vec::new();
        for (left, right) in on {
            comparisons.push((left, right));
            comparisons.push((right, left));
        }
        if let Some(filter) = filter {
            collect_comparisons(filter, &mut comparisons);
        }
        let mut bounds: [Option<Expr>; 2] = [None, None];
        for (lower, upper) in comparisons {
            // `lower <= upper`: if `lower` is `t + d` for an event-time column `t`
            // of one side, the other side's row needs t <= upper - d.
            let Some((side, shift)) = self.time_term(lower) else {
                continue;
            };
            let other = 1 - side;
            if self.side_of(upper) != Some(other) || bounds[other].is_some() {
                continue;
            }
            bounds[other] = Some(match shift {
                None => upper.clone(),
                Some((Operator::Plus, delta)) => {
                    binary_expr(upper.clone(), Operator::Minus, delta.clone())
                }
                Some((_, delta)) => binary_expr(upper.clone(), Operator::Plus, delta.clone()),
            });
        }
        bounds
    }

    /// The side whose columns (and only those) `expr` reads.
    fn side_of(&self, expr: &Expr) -> Option<usize> {
        let columns = expr.column_refs();
        if columns.is_empty() {
            return None;
        }
        (0..2).find(|&side| {
            columns
                .iter()
                .all(|c| self.schemas[side].index_of_column(c).is_ok())
                && columns
                    .iter()
                    .all(|c| self.schemas[1 - side].index_of_column(c).is_err())
        })
    }

    /// `t`, `t + literal` or `t - literal` for an event-time column `t`:
    /// its side and the shift.
    fn time_term<'e>(&self, expr: &'e Expr) -> Option<(usize, Option<(Operator, &'e Expr)>)> {
        match expr {
            Expr::Column(column) => (0..2).find_map(|side| {
                let index = self.schemas[side].index_of_column(column).ok()?;
                self.time_columns[side]
                    .contains(&index)
                    .then_some((side, None))
            }),
            Expr::Cast(cast) => self.time_term(&cast.expr),
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::Plus | Operator::Minus)
                    && matches!(right.as_ref(), Expr::Literal(..)) =>
            {
                match self.time_term(left)? {
                    (side, None) => Some((side, Some((*op, right.as_ref())))),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Every `lower <= upper` (or `<`, `=`) fact a conjunctive condition states.
fn collect_comparisons<'e>(expr: &'e Expr, out: &mut Vec<(&'e Expr, &'e Expr)>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => {
                collect_comparisons(left, out);
                collect_comparisons(right, out);
            }
            Operator::Lt | Operator::LtEq => out.push((left, right)),
            Operator::Gt | Operator::GtEq => out.push((right, left)),
            Operator::Eq => {
                out.push((left, right));
                out.push((right, left));
            }
            _ => {}
        },
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            out.push((low, expr));
            out.push((expr, high));
        }
        _ => {}
    }
}
