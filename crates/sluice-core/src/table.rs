//! Table definitions from `CREATE TABLE` statements.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::options::Options;

/// A column of a table: stored by the connector, or computed from other columns.
#[derive(Debug, Clone)]
pub enum TableColumn {
    /// A column read from / written to the connector.
    Physical(Field),
    /// `name AS expr`: evaluated after reading; never written to a sink.
    Computed {
        /// Column name.
        name: String,
        /// The expression's SQL text.
        expr_sql: String,
    },
}

impl TableColumn {
    /// The column's name.
    pub fn name(&self) -> &str {
        match self {
            TableColumn::Physical(field) => field.name(),
            TableColumn::Computed { name, .. } => name,
        }
    }
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// The watermark expression's SQL text (e.g. `ts - INTERVAL '4' SECOND`).
    pub expr_sql: String,
}

/// Everything `CREATE TABLE` says about a table.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name as written.
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<TableColumn>,
    /// The watermark clause, if any.
    pub watermark: Option<WatermarkDef>,
    /// `PRIMARY KEY (...) NOT ENFORCED` columns.
    pub primary_key: Vec<String>,
    /// The `WITH (...)` options, including `connector`.
    pub options: Options,
}

impl TableDef {
    /// The connector name (`'connector' = '...'`).
    pub fn connector(&self) -> Option<&str> {
        self.options.get("connector")
    }

    /// Schema of the physical columns, in declaration order.
    pub fn physical_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .filter_map(|column| match column {
                    TableColumn::Physical(field) => Some(field.clone()),
                    TableColumn::Computed { .. } => None,
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// Index of a physical column in [`TableDef::physical_schema`].
    pub fn physical_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .filter(|column| matches!(column, TableColumn::Physical(_)))
            .position(|column| column.name() == name)
    }
}

/// Whether values of this type can be written as one CSV field.
pub fn is_flat_type(data_type: &DataType) -> bool {
    !matches!(
        data_type,
        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _)
    )
}
