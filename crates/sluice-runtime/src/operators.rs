//! Stateless operators evaluated with DataFusion physical expressions.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result, SluiceError};

use crate::state::{KeyOwner, SubtaskChunks};

/// A step of an operator chain. Operators run inside one subtask and pass
/// batches and watermarks on without channels.
pub trait Operator: Send {
    /// Processes one batch, pushing results (batches, watermarks) to `out`.
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()>;

    /// Processes a batch from input `input` of a multi-input operator (a join's
    /// left = 0, right = 1); single-input operators treat every input alike.
    fn process_input(
        &mut self,
        input: usize,
        batch: ChangeBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let _ = input;
        self.process(batch, out)
    }

    /// Every upstream channel of input `input` has ended (called on the first
    /// operator of a chain only); a lookup join's table is then fully loaded.
    fn on_input_end(&mut self, input: usize, out: &mut Vec<Message>) -> Result<()> {
        let _ = (input, out);
        Ok(())
    }

    /// Event time advanced to `watermark`; stateless operators pass it on.
    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Whether the operator holds input rows back to process them together
    /// with later ones (a `GROUP BY` updates each key once per held batch).
    fn holds_rows(&self) -> bool {
        false
    }

    /// Processes the rows held back. The task calls it when its input has
    /// nothing more ready, and before a checkpoint barrier or the end of
    /// input, so holding rows adds no latency and loses nothing.
    fn flush(&mut self, out: &mut Vec<Message>) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// A checkpoint barrier passed: the operator's state as encoded chunks
    /// (empty for stateless operators). Chunks that did not change since the
    /// last snapshot should encode to the same bytes, so they are not stored again.
    fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(Vec::new())
    }

    /// Loads state from the snapshots every subtask of a checkpointed run
    /// wrote (possibly at another parallelism), keeping the keys `owner` says
    /// belong to this subtask.
    fn restore(&mut self, subtasks: &SubtaskChunks, owner: &KeyOwner) -> Result<()> {
        let _ = owner;
        if subtasks.iter().all(Vec::is_empty) {
            Ok(())
        } else {
            Err(SluiceError::State(
                "a stateless operator was given state to restore".into(),
            ))
        }
    }
}

pub(crate) fn df(error: datafusion::error::DataFusionError) -> SluiceError {
    SluiceError::Runtime(error.to_string())
}

/// `expr`'s value for every row of `batch`, as an array.
pub(crate) fn evaluate_array(expr: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)
        .and_then(|value| value.into_array(batch.num_rows()))
        .map_err(df)
}

/// Computes one column per expression.
pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    /// A projection producing `schema` from `exprs`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Project { exprs, schema }
    }
}

impl Operator for Project {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|expr| evaluate_array(expr.as_ref(), &batch.data))
            .collect::<Result<Vec<_>>>()?;
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        out.push(Message::Data(batch.with_data(data)));
        Ok(())
    }
}

/// Keeps rows where a predicate is true (NULL counts as false).
pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    /// A filter on `predicate`.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Filter { predicate }
    }
}

impl Operator for Filter {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let mask = evaluate_array(self.predicate.as_ref(), &batch.data)?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            SluiceError::Runtime(format!(
                "filter predicate {} is not boolean",
                self.predicate
            ))
        })?;
        let kept = if mask.null_count() == 0 && mask.true_count() == mask.len() {
            batch
        } else {
            batch.filter(mask)?
        };
        if kept.num_rows() > 0 {
            out.push(Message::Data(kept));
        }
        Ok(())
    }
}

/// Relabels batches with a schema of the same column types (used after a union,
/// whose inputs may name their columns differently).
pub struct Relabel {
    schema: SchemaRef,
}

impl Relabel {
    /// Relabels to `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Relabel { schema }
    }
}

impl Operator for Relabel {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let rows = batch.num_rows();
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.data.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        out.push(Message::Data(batch.with_data(data)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator as BinaryOp;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    fn input() -> (SchemaRef, ChangeBatch) {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let data = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![Some(1), None, Some(5)])) as ArrayRef],
        )
        .unwrap();
        (schema, ChangeBatch::inserts(data))
    }

    fn data(message: &Message) -> &ChangeBatch {
        match message {
            Message::Data(batch) => batch,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn filter_drops_false_and_null() {
        let (schema, batch) = input();
        let predicate =
            binary(col("v", &schema).unwrap(), BinaryOp::Gt, lit(2i64), &schema).unwrap();
        let mut out = Vec::new();
        Filter::new(predicate).process(batch, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(data(&out[0]).num_rows(), 1);
    }

    #[test]
    fn project_evaluates_expressions() {
        let (schema, batch) = input();
        let doubled = binary(
            col("v", &schema).unwrap(),
            BinaryOp::Multiply,
            lit(2i64),
            &schema,
        )
        .unwrap();
        let out_schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Int64, true)]));
        let mut out = Vec::new();
        Project::new(vec![doubled], out_schema)
            .process(batch, &mut out)
            .unwrap();
        let values = data(&out[0])
            .data
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            vec![Some(2), None, Some(10)]
        );
    }
}
