//! Kafka records as the source reads them, and the table columns built from
//! them: value and key columns through their formats, metadata columns from
//! the record itself (`METADATA FROM 'partition'`, ...).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, MapFieldNames, RecordBatch,
    StringArray, StringBuilder, TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, SchemaRef};
use sluice_core::table::MetadataSpec;
use sluice_core::{ChangeBatch, Result, SluiceError};

/// The metadata a Kafka table can read (`METADATA FROM '<key>'`) and write.
pub(super) const KAFKA_METADATA: [MetadataSpec; 8] = [
    MetadataSpec {
        key: "topic",
        sql_type: "STRING",
        writable: false,
    },
    MetadataSpec {
        key: "partition",
        sql_type: "INT",
        writable: false,
    },
    MetadataSpec {
        key: "offset",
        sql_type: "BIGINT",
        writable: false,
    },
    MetadataSpec {
        key: "timestamp",
        sql_type: "TIMESTAMP_LTZ(3)",
        writable: true,
    },
    MetadataSpec {
        key: "timestamp-type",
        sql_type: "STRING",
        writable: false,
    },
    MetadataSpec {
        key: "headers",
        sql_type: "MAP<STRING, BYTES>",
        writable: true,
    },
    MetadataSpec {
        key: "leader-epoch",
        sql_type: "INT",
        writable: false,
    },
    MetadataSpec {
        key: "key",
        sql_type: "BYTES",
        writable: false,
    },
];

/// One record read from Kafka (owned: it outlives the consumer's buffer).
#[derive(Debug, Clone)]
pub(super) struct KafkaRecord {
    /// Index of the topic in the reader's topic list.
    pub topic: usize,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the record has a timestamp.
    pub timestamp: Option<i64>,
    pub timestamp_type: &'static str,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub leader_epoch: Option<i32>,
}

/// A metadata column: which key it reads, and its declared type.
#[derive(Debug, Clone)]
pub(super) struct MetadataColumn {
    pub key: String,
    pub data_type: DataType,
}

impl MetadataColumn {
    /// The column's values for `records`, cast to its declared type.
    pub fn build(&self, records: &[&KafkaRecord], topics: &[String]) -> Result<ArrayRef> {
        let array: ArrayRef = match self.key.as_str() {
            "topic" => Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| topics[r.topic].as_str()),
            )),
            "partition" => Arc::new(Int32Array::from_iter_values(
                records.iter().map(|r| r.partition),
            )),
            "offset" => Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.offset),
            )),
            "timestamp" => Arc::new(
                TimestampMillisecondArray::from_iter(records.iter().map(|r| r.timestamp))
                    .with_timezone("UTC"),
            ),
            "timestamp-type" => Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.timestamp_type),
            )),
            "leader-epoch" => Arc::new(Int32Array::from_iter(
                records.iter().map(|r| r.leader_epoch),
            )),
            "key" => {
                let mut builder = BinaryBuilder::new();
                for record in records {
                    builder.append_option(record.key.as_deref());
                }
                Arc::new(builder.finish())
            }
            "headers" => {
                let names = MapFieldNames {
                    entry: "entries".into(),
                    key: "key".into(),
                    value: "value".into(),
                };
                let mut builder =
                    MapBuilder::new(Some(names), StringBuilder::new(), BinaryBuilder::new());
                for record in records {
                    for (name, value) in &record.headers {
                        builder.keys().append_value(name);
                        builder.values().append_option(value.as_deref());
                    }
                    builder.append(true)?;
                }
                Arc::new(builder.finish())
            }
            other => {
                return Err(SluiceError::Config(format!(
                    "unknown kafka metadata '{other}'"
                )))
            }
        };
        if array.data_type() == &self.data_type {
            return Ok(array);
        }
        Ok(arrow::compute::cast(&array, &self.data_type)?)
    }

    /// Checks at startup that the declared type can hold the values.
    pub fn check(&self, table: &str, column: &str) -> Result<()> {
        let empty = self.build(&[], &[])?;
        if arrow::compute::can_cast_types(empty.data_type(), &self.data_type) {
            return Ok(());
        }
        let spec = KAFKA_METADATA.iter().find(|spec| spec.key == self.key);
        Err(SluiceError::Config(format!(
            "table `{table}`: metadata column `{column}` ('{}') is {}, but kafka gives {}",
            self.key,
            self.data_type,
            spec.map_or("another type", |spec| spec.sql_type)
        )))
    }
}

/// Where an output column of the source comes from.
#[derive(Debug, Clone)]
pub(super) enum ColumnSource {
    /// Column `usize` of the decoded value.
    Value(usize),
    /// Column `usize` of the decoded key.
    Key(usize),
    /// Record metadata.
    Metadata(MetadataColumn),
}

/// Puts the output columns together: decoded value rows (each traced to its
/// record by `origins`), key rows for the same records, and metadata.
pub(super) fn assemble(
    schema: &SchemaRef,
    columns: &[ColumnSource],
    value: &ChangeBatch,
    key: Option<&RecordBatch>,
    records: &[&KafkaRecord],
    topics: &[String],
) -> Result<ChangeBatch> {
    let arrays = columns
        .iter()
        .map(|column| match column {
            ColumnSource::Value(index) => Ok(value.data.column(*index).clone()),
            ColumnSource::Key(index) => {
                key.map(|key| key.column(*index).clone()).ok_or_else(|| {
                    SluiceError::Runtime("kafka source: key columns without a decoded key".into())
                })
            }
            ColumnSource::Metadata(metadata) => metadata.build(records, topics),
        })
        .collect::<Result<Vec<_>>>()?;
    let data = RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(records.len())),
    )?;
    Ok(value.with_data(data))
}

/// The rows of `batch` at `indices`.
pub(super) fn take_rows(batch: &ChangeBatch, indices: &[u32]) -> Result<ChangeBatch> {
    if indices.len() == batch.num_rows() && indices.iter().enumerate().all(|(i, &x)| i as u32 == x)
    {
        return Ok(batch.clone());
    }
    batch.take(&UInt32Array::from(indices.to_vec()))
}
