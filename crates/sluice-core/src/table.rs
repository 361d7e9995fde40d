//! Table definitions from `CREATE TABLE` statements.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

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

/// Field metadata key naming the connector metadata a column reads
/// (`col TYPE METADATA FROM 'partition'`).
pub const METADATA_KEY: &str = "sluice.metadata";
/// Field metadata key marking a `VIRTUAL` metadata column (read only: never
/// written to a sink).
pub const METADATA_VIRTUAL: &str = "sluice.metadata.virtual";

/// A physical column that reads connector metadata instead of the record's
/// payload: `name TYPE METADATA [FROM 'key'] [VIRTUAL]`.
pub fn metadata_column(field: Field, key: &str, is_virtual: bool) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(METADATA_KEY.to_string(), key.to_string());
    if is_virtual {
        metadata.insert(METADATA_VIRTUAL.to_string(), "true".to_string());
    }
    field.with_metadata(metadata)
}

/// The connector metadata key a column reads, if it is a metadata column.
pub fn metadata_key(field: &Field) -> Option<&str> {
    field.metadata().get(METADATA_KEY).map(String::as_str)
}

/// Whether a column is a `VIRTUAL` metadata column.
pub fn is_virtual(field: &Field) -> bool {
    field.metadata().contains_key(METADATA_VIRTUAL)
}

/// A metadata key a connector offers (`METADATA FROM '<key>'`).
#[derive(Debug, Clone, Copy)]
pub struct MetadataSpec {
    /// The key, as written in `METADATA FROM '...'`.
    pub key: &'static str,
    /// The SQL type of its values, for error messages.
    pub sql_type: &'static str,
    /// Whether a sink writes it (otherwise the column must be `VIRTUAL`).
    pub writable: bool,
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

    /// The metadata columns among the physical ones: (name, metadata key, virtual).
    pub fn metadata_columns(&self) -> Vec<(&str, &str, bool)> {
        self.columns
            .iter()
            .filter_map(|column| match column {
                TableColumn::Physical(field) => {
                    metadata_key(field).map(|key| (field.name().as_str(), key, is_virtual(field)))
                }
                TableColumn::Computed { .. } => None,
            })
            .collect()
    }

    /// Whether a sink writes this column: physical, and not `VIRTUAL` metadata.
    pub fn is_written(column: &TableColumn) -> bool {
        matches!(column, TableColumn::Physical(field) if !is_virtual(field))
    }

    /// Schema of the columns a sink writes, in declaration order.
    pub fn written_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .filter_map(|column| match column {
                    TableColumn::Physical(field) if !is_virtual(field) => Some(field.clone()),
                    _ => None,
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

/// Flink SQL spelling of an Arrow type (`BIGINT`, `TIMESTAMP_LTZ(3)`,
/// `ROW<`a` INT NOT NULL>`...), for error messages.
pub fn sql_type_name(data_type: &DataType) -> String {
    let precision = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    };
    let nested = |field: &Field| {
        let inner = sql_type_name(field.data_type());
        if field.is_nullable() {
            inner
        } else {
            format!("{inner} NOT NULL")
        }
    };
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(unit) | DataType::Time64(unit) => format!("TIME({})", precision(unit)),
        DataType::Timestamp(unit, None) => format!("TIMESTAMP({})", precision(unit)),
        DataType::Timestamp(unit, Some(_)) => format!("TIMESTAMP_LTZ({})", precision(unit)),
        DataType::List(item) => format!("ARRAY<{}>", nested(item)),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(pair) if pair.len() == 2 => format!(
                "MAP<{}, {}>",
                sql_type_name(pair[0].data_type()),
                nested(&pair[1])
            ),
            other => format!("MAP<{other}>"),
        },
        DataType::Struct(fields) => format!(
            "ROW<{}>",
            fields
                .iter()
                .map(|f| format!("`{}` {}", f.name(), nested(f)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
