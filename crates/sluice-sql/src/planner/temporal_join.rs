//! Joins against a table read `FOR SYSTEM_TIME AS OF` a time attribute:
//! a lookup join for a processing-time attribute, an event-time temporal
//! join against a versioned table (PRIMARY KEY + WATERMARK) otherwise.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan};
use sluice_core::{Result, SluiceError};

use super::{df_error, is_bounded, logical_is_proctime, scan_alias, Translator};
use crate::plan::{JoinKind, LookupJoin, NodeId, VersionedJoin};
use crate::temporal::TemporalTable;

/// How a join reads its temporal right side.
pub(super) enum TemporalJoin {
    /// Against the table as it is when a left row arrives.
    Lookup(LookupJoin),
    /// Against the version valid at the left row's event time.
    Versioned(VersionedJoin),
}

impl Translator<'_> {
    fn temporal_reference(&self, right: &LogicalPlan) -> Option<&TemporalTable> {
        let (alias, table) = scan_alias(right, None)?;
        self.temporal_tables
            .iter()
            .find(|t| t.table == table && t.alias == alias)
    }

    /// Before optimization: records each temporal reference's kind of time
    /// attribute, and for event time adds `version time <= AS OF time` to the
    /// join condition (true of the version picked; it keeps both columns).
    pub(super) fn prepare_temporal_joins(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Join(mut join) = node else {
                return Ok(Transformed::no(node));
            };
            let Some(temporal) = self.temporal_reference(&join.right).cloned() else {
                return Ok(Transformed::no(LogicalPlan::Join(join)));
            };
            let as_of = Column::from_qualified_name_ignore_case(&temporal.time);
            if logical_is_proctime(&join.left, &as_of) {
                self.temporal_time.borrow_mut().insert(temporal.alias, None);
                return Ok(Transformed::no(LogicalPlan::Join(join)));
            }
            let version_column = self
                .tables
                .get(&temporal.table)
                .and_then(|table| table.watermark.as_ref())
                .map(|watermark| watermark.column.clone());
            let Some(version_column) = version_column else {
                return Ok(Transformed::no(LogicalPlan::Join(join)));
            };
            let version_time = Expr::Column(Column::new(
                Some(temporal.alias.as_str()),
                version_column.as_str(),
            ));
            let condition = version_time.lt_eq(Expr::Column(as_of));
            join.filter = Some(match join.filter.take() {
                Some(filter) => filter.and(condition),
                None => condition,
            });
            self.temporal_time
                .borrow_mut()
                .insert(temporal.alias, Some(version_column));
            Ok(Transformed::yes(LogicalPlan::Join(join)))
        })
        .map(|transformed| transformed.data)
        .map_err(df_error)
    }

    /// The temporal kind of `join`, if its right side is a temporal reference.
    pub(super) fn temporal_join(
        &self,
        join: &datafusion::logical_expr::Join,
        kind: JoinKind,
        right: NodeId,
    ) -> Result<Option<TemporalJoin>> {
        let Some(temporal) = self.temporal_reference(&join.right) else {
            return Ok(None);
        };
        if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
            return Err(SluiceError::Sql(format!(
                "a join FOR SYSTEM_TIME AS OF is INNER or LEFT, not {kind:?}"
            )));
        }
        let version_column = self.temporal_time.borrow().get(&temporal.alias).cloned();
        let version_column = match version_column {
            Some(None) => {
                return Ok(Some(TemporalJoin::Lookup(LookupJoin {
                    wait_for_table: is_bounded(&self.nodes, right),
                })))
            }
            Some(Some(column)) => column,
            None => {
                return Err(SluiceError::Sql(format!(
                    "table `{}` is joined FOR SYSTEM_TIME AS OF the event-time attribute {}, so it must be a versioned table: give it a PRIMARY KEY and a WATERMARK",
                    temporal.table, temporal.time
                )))
            }
        };
        let has_key = self
            .tables
            .get(&temporal.table)
            .is_some_and(|table| !table.primary_key.is_empty());
        if !has_key {
            return Err(SluiceError::Sql(format!(
                "versioned table `{}` (joined FOR SYSTEM_TIME AS OF {}) needs a PRIMARY KEY",
                temporal.table, temporal.time
            )));
        }
        let left_time = self.physical_expr(
            &Expr::Column(Column::from_qualified_name_ignore_case(&temporal.time)),
            join.left.schema(),
        )?;
        let right_time = self.physical_expr(
            &Expr::Column(Column::new(
                Some(temporal.alias.as_str()),
                version_column.as_str(),
            )),
            join.right.schema(),
        )?;
        Ok(Some(TemporalJoin::Versioned(VersionedJoin {
            left_time,
            right_time,
        })))
    }
}
