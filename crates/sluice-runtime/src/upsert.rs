//! Upsert materialization for append-only sinks with a PRIMARY KEY fed by an
//! updating query (as Flink's sink upsert materializer): the rows of each
//! key are kept as changes arrive (additions appended, retractions remove
//! their row), and when the input ends the sink receives the last remaining
//! row of every key, one row per key. Its rows are checkpointed with the sink.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use async_trait::async_trait;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::connector::SinkWriter;
use sluice_core::{ChangeBatch, Result};

use crate::aggregate::key_converter;
use crate::rows::{decode_rows, whole_row_converter};
use crate::state::KeyOwner;
use sluice_state::{StateReader, StateWriter};

/// Wraps a sink writer with upsert materialization by key columns.
pub struct UpsertMaterializer {
    inner: Box<dyn SinkWriter>,
    schema: SchemaRef,
    key_columns: Vec<usize>,
    key_converter: RowConverter,
    row_converter: RowConverter,
    /// Key → its current rows, latest last.
    rows: HashMap<Vec<u8>, Vec<Box<[u8]>>>,
    /// Which keys this subtask materializes (for restoring state).
    owner: KeyOwner,
}

impl UpsertMaterializer {
    /// Materializes rows of `schema` by the columns `key_columns` into `inner`.
    pub fn new(
        inner: Box<dyn SinkWriter>,
        schema: SchemaRef,
        key_columns: Vec<usize>,
        owner: KeyOwner,
    ) -> Result<Self> {
        let keys: Vec<std::sync::Arc<dyn PhysicalExpr>> = key_columns
            .iter()
            .map(|&i| std::sync::Arc::new(Column::new(schema.field(i).name(), i)) as _)
            .collect();
        Ok(UpsertMaterializer {
            inner,
            key_converter: key_converter(&keys, &schema)?,
            row_converter: whole_row_converter(&schema, "sink")?,
            schema,
            key_columns,
            rows: HashMap::new(),
            owner,
        })
    }
}

#[async_trait]
impl SinkWriter for UpsertMaterializer {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        let keys: Vec<_> = self
            .key_columns
            .iter()
            .map(|&i| batch.data.column(i).clone())
            .collect();
        let keys = self.key_converter.convert_columns(&keys)?;
        let whole = self.row_converter.convert_columns(batch.data.columns())?;
        for row in 0..batch.num_rows() {
            let key = keys.row(row).data();
            let bytes = whole.row(row).data();
            if batch.kind(row).is_addition() {
                self.rows
                    .entry(key.to_vec())
                    .or_default()
                    .push(bytes.into());
            } else if let Some(rows) = self.rows.get_mut(key) {
                if let Some(found) = rows.iter().rposition(|r| &**r == bytes) {
                    rows.remove(found);
                }
                if rows.is_empty() {
                    self.rows.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn end_of_input(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let latest: Vec<&[u8]> = rows
            .values()
            .filter_map(|r| r.last())
            .map(|r| &**r)
            .collect();
        if !latest.is_empty() {
            let columns = decode_rows(&self.row_converter, latest.into_iter())?;
            let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
            self.inner.write(&ChangeBatch::inserts(batch)).await?;
        }
        self.inner.end_of_input().await
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner.finish().await
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        self.inner.pre_commit(checkpoint).await
    }

    /// The rows of every key (the inner writer keeps no state of its own).
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut keys: Vec<&Vec<u8>> = self.rows.keys().collect();
        keys.sort_unstable();
        let mut out = StateWriter::new();
        out.u64(keys.len() as u64);
        for key in keys {
            out.bytes(key);
            let rows = &self.rows[key];
            out.u64(rows.len() as u64);
            for row in rows {
                out.bytes(row);
            }
        }
        out.finish()
    }

    fn restore(&mut self, states: &[Vec<u8>]) -> Result<()> {
        for state in states.iter().filter(|s| !s.is_empty()) {
            let mut input = StateReader::new(state)?;
            let mut entries = Vec::new();
            for _ in 0..input.usize()? {
                let key = input.bytes()?.to_vec();
                let rows = (0..input.usize()?)
                    .map(|_| input.bytes().map(Box::<[u8]>::from))
                    .collect::<Result<Vec<_>>>()?;
                entries.push((key, rows));
            }
            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
            let owned = self.owner.owns(&self.key_converter, &keys)?;
            for ((key, rows), owned) in entries.into_iter().zip(owned) {
                if owned {
                    self.rows.insert(key, rows);
                }
            }
        }
        Ok(())
    }
}
