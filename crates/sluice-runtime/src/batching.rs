//! Coalesces small source batches into larger ones, bounded by a row target and
//! a linger time (`sluice.batch.size`, `sluice.batch.linger`).

use std::time::Duration;

use sluice_core::{ChangeBatch, Result};
use tokio::time::Instant;

/// Buffers batches until `target_rows` rows or `linger` has passed since the
/// first buffered batch. A zero linger passes every batch straight through.
pub struct Coalescer {
    target_rows: usize,
    linger: Duration,
    pending: Vec<ChangeBatch>,
    rows: usize,
    deadline: Option<Instant>,
}

impl Coalescer {
    /// A coalescer for `target_rows` rows per batch and at most `linger` delay.
    pub fn new(target_rows: usize, linger: Duration) -> Self {
        Coalescer {
            target_rows: target_rows.max(1),
            linger,
            pending: Vec::new(),
            rows: 0,
            deadline: None,
        }
    }

    /// Adds a batch; returns a batch to emit now, if one is ready.
    pub fn push(&mut self, batch: ChangeBatch) -> Result<Option<ChangeBatch>> {
        if self.linger.is_zero() && self.pending.is_empty() {
            return Ok(Some(batch));
        }
        self.rows += batch.num_rows();
        self.pending.push(batch);
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.linger);
        }
        if self.rows >= self.target_rows || self.linger.is_zero() {
            return self.flush();
        }
        Ok(None)
    }

    /// When the buffered rows must go out at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Emits whatever is buffered.
    pub fn flush(&mut self) -> Result<Option<ChangeBatch>> {
        self.deadline = None;
        self.rows = 0;
        if self.pending.is_empty() {
            return Ok(None);
        }
        let batches = std::mem::take(&mut self.pending);
        ChangeBatch::concat(&batches).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use std::sync::Arc;

    fn batch(rows: i64) -> ChangeBatch {
        let data = RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from_iter_values(0..rows)) as _,
        )])
        .unwrap();
        ChangeBatch::inserts(data)
    }

    #[test]
    fn zero_linger_passes_through() {
        let mut coalescer = Coalescer::new(100, Duration::ZERO);
        assert_eq!(coalescer.push(batch(3)).unwrap().unwrap().num_rows(), 3);
        assert!(coalescer.deadline().is_none());
    }

    #[test]
    fn buffers_until_target_rows() {
        let mut coalescer = Coalescer::new(10, Duration::from_secs(60));
        assert!(coalescer.push(batch(4)).unwrap().is_none());
        assert!(coalescer.deadline().is_some());
        assert!(coalescer.push(batch(4)).unwrap().is_none());
        assert_eq!(coalescer.push(batch(4)).unwrap().unwrap().num_rows(), 12);
        assert!(coalescer.flush().unwrap().is_none());
    }
}
