//! Plain window TVFs: each row is repeated once per window it falls in
//! (one for TUMBLE, size/slide for HOP, up to size/step for CUMULATE), with
//! `window_start`, `window_end` and `window_time` appended. As in Flink, a row
//! whose windows all closed already (behind the watermark) is late: dropped
//! and counted here, so what follows (window Top-N, window joins) never sees it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::cast;
use sluice_core::{ChangeBatch, Message, Result};
use sluice_sql::plan::WindowAssign;

use crate::late::LateRecords;
use crate::operators::{evaluate_array, Operator};
use crate::watermark::epoch_millis;

/// Assigns windows to rows.
pub struct WindowAssignOperator {
    spec: Arc<WindowAssign>,
    windows: Vec<(i64, i64)>,
    watermark: i64,
    late: LateRecords,
}

impl WindowAssignOperator {
    /// An operator for `spec`; late rows go to `late`.
    pub fn new(spec: Arc<WindowAssign>, late: LateRecords) -> Self {
        WindowAssignOperator {
            spec,
            windows: Vec::new(),
            watermark: i64::MIN,
            late,
        }
    }
}

impl Operator for WindowAssignOperator {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let rows = batch.num_rows();
        let times = epoch_millis(evaluate_array(self.spec.time.as_ref(), &batch.data)?.as_ref())?;
        let pane = self.spec.kind.pane();
        let offset = self.spec.offset;
        let mut indices = Vec::with_capacity(rows);
        let mut starts = Vec::with_capacity(rows);
        let mut ends = Vec::with_capacity(rows);
        let mut late = Vec::new();
        for row in 0..rows {
            // A row without a time falls in no window.
            if times.is_null(row) {
                continue;
            }
            let time = times.value(row);
            let pane_start = (time - offset).div_euclid(pane) * pane + offset;
            self.spec
                .kind
                .windows_of_pane(pane_start, offset, &mut self.windows);
            let open = self.windows.iter().any(|(_, end)| end - 1 > self.watermark);
            if !open {
                late.push(row as u32);
                continue;
            }
            for &(start, end) in &self.windows {
                if start <= time && time < end {
                    indices.push(row as u32);
                    starts.push(start);
                    ends.push(end);
                }
            }
        }
        self.late
            .reject("window TVF", &batch.data, &late, &times, self.watermark)?;
        let indices = UInt32Array::from(indices);
        let taken = batch.take(&indices)?;
        let mut columns: Vec<ArrayRef> = taken.data.columns().to_vec();
        let schema = &self.spec.schema;
        let width = columns.len();
        let window_columns: [ArrayRef; 3] = [
            Arc::new(TimestampMillisecondArray::from(starts)),
            Arc::new(TimestampMillisecondArray::from(ends.clone())),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                ends.iter().map(|end| end - 1),
            )),
        ];
        for (index, array) in window_columns.into_iter().enumerate() {
            let target = schema.field(width + index).data_type();
            columns.push(if array.data_type() == target {
                array
            } else {
                cast(&array, target)?
            });
        }
        let data = RecordBatch::try_new(schema.clone(), columns)?;
        out.push(Message::Data(taken.with_data(data)));
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        out.push(Message::Watermark(watermark));
        Ok(())
    }
}
