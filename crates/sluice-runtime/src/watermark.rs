//! Watermark generation from a table's `WATERMARK FOR col AS expr` clause:
//! the watermark is the largest value of `expr` seen so far (bounded
//! out-of-orderness), emitted after a batch that advances it, at most once per
//! `pipeline.auto-watermark-interval`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result};

use crate::operators::{df, Operator};

/// Converts any timestamp column into epoch milliseconds.
pub fn epoch_millis(
    array: &dyn Array,
) -> Result<arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    let millis = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(millis.as_primitive::<TimestampMillisecondType>().clone())
}

/// Emits watermarks computed from each batch.
pub struct WatermarkAssigner {
    expr: Arc<dyn PhysicalExpr>,
    /// The largest watermark seen.
    current: i64,
    /// The last watermark emitted.
    emitted: i64,
    interval: Duration,
    last_emit: Option<Instant>,
}

impl WatermarkAssigner {
    /// Assigns watermarks from `expr` (e.g. `ts - INTERVAL '4' SECOND`),
    /// emitting at most one per `interval` (zero: after every batch).
    pub fn new(expr: Arc<dyn PhysicalExpr>, interval: Duration) -> Self {
        WatermarkAssigner {
            expr,
            current: i64::MIN,
            emitted: i64::MIN,
            interval,
            last_emit: None,
        }
    }
}

impl Operator for WatermarkAssigner {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let values = self
            .expr
            .evaluate(&batch.data)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(df)?;
        let max = arrow::compute::max(&epoch_millis(values.as_ref())?);
        out.push(Message::Data(batch));
        if let Some(max) = max {
            self.current = self.current.max(max);
        }
        let now = Instant::now();
        let due = self
            .last_emit
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if self.current > self.emitted && due {
            self.emitted = self.current;
            self.last_emit = Some(now);
            out.push(Message::Watermark(self.current));
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        // Only the end-of-input watermark passes; the rest come from the data.
        if watermark == i64::MAX && self.emitted < i64::MAX {
            self.current = i64::MAX;
            self.emitted = i64::MAX;
            out.push(Message::Watermark(watermark));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, TimestampMillisecondArray};
    use datafusion::physical_expr::expressions::Column;

    fn batch(times: Vec<i64>) -> ChangeBatch {
        let data = RecordBatch::try_from_iter([(
            "ts",
            Arc::new(TimestampMillisecondArray::from(times)) as _,
        )])
        .expect("batch");
        ChangeBatch::inserts(data)
    }

    fn watermarks(assigner: &mut WatermarkAssigner, times: Vec<i64>) -> Vec<i64> {
        let mut out = Vec::new();
        assigner.process(batch(times), &mut out).expect("process");
        out.into_iter()
            .filter_map(|m| match m {
                Message::Watermark(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn watermarks_follow_each_batch_or_the_interval() {
        let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 0));
        let mut every_batch = WatermarkAssigner::new(expr.clone(), Duration::ZERO);
        assert_eq!(watermarks(&mut every_batch, vec![5, 3]), vec![5]);
        assert_eq!(watermarks(&mut every_batch, vec![4]), Vec::<i64>::new());
        assert_eq!(watermarks(&mut every_batch, vec![9]), vec![9]);

        // Within the interval the largest value is kept, not emitted...
        let mut throttled = WatermarkAssigner::new(expr, Duration::from_secs(3600));
        assert_eq!(watermarks(&mut throttled, vec![5]), vec![5]);
        assert_eq!(watermarks(&mut throttled, vec![9]), Vec::<i64>::new());
        // ... and the end of input still passes.
        let mut out = Vec::new();
        throttled.on_watermark(i64::MAX, &mut out).expect("end");
        assert!(matches!(out.as_slice(), [Message::Watermark(i64::MAX)]));
    }
}
