//! Change batches: Arrow record batches tagged with Flink row kinds, and the
//! messages that flow on the channels between operators.

use arrow::array::{Array, BooleanArray, Int8Array, RecordBatch};
use arrow::compute::filter;

use crate::Result;

/// The kind of change a row describes, as in Flink's changelog model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert = 0,
    /// `-U`: the old value of an updated row.
    UpdateBefore = 1,
    /// `+U`: the new value of an updated row.
    UpdateAfter = 2,
    /// `-D`: a deleted row.
    Delete = 3,
}

impl RowKind {
    /// Flink's short notation (`+I`, `-U`, `+U`, `-D`).
    pub fn short_string(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// Decodes the `i8` representation used in [`ChangeBatch::kinds`].
    pub fn from_i8(value: i8) -> RowKind {
        match value {
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            _ => RowKind::Insert,
        }
    }

    /// Whether the row adds to the materialised result (`+I`, `+U`).
    pub fn is_addition(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }
}

/// A batch of rows plus, for updating streams, the kind of each row.
/// `kinds == None` means every row is an insert (an append-only batch).
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// The rows.
    pub data: RecordBatch,
    /// Row kinds as `i8` values of [`RowKind`]; `None` = all inserts.
    pub kinds: Option<Int8Array>,
}

impl ChangeBatch {
    /// An append-only batch.
    pub fn inserts(data: RecordBatch) -> Self {
        ChangeBatch { data, kinds: None }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// The kind of row `row`.
    pub fn kind(&self, row: usize) -> RowKind {
        match &self.kinds {
            None => RowKind::Insert,
            Some(kinds) => RowKind::from_i8(kinds.value(row)),
        }
    }

    /// Keeps the rows where `mask` is true, for the data and the row kinds alike.
    pub fn filter(&self, mask: &BooleanArray) -> Result<ChangeBatch> {
        let data = arrow::compute::filter_record_batch(&self.data, mask)?;
        let kinds = match &self.kinds {
            None => None,
            Some(kinds) => {
                let filtered = filter(kinds, mask)?;
                Some(
                    filtered
                        .as_any()
                        .downcast_ref::<Int8Array>()
                        .cloned()
                        .unwrap_or_else(|| Int8Array::from(vec![0i8; data.num_rows()])),
                )
            }
        };
        Ok(ChangeBatch { data, kinds })
    }

    /// Keeps the rows at `indices`, in that order.
    pub fn take(&self, indices: &arrow::array::UInt32Array) -> Result<ChangeBatch> {
        let data = arrow::compute::take_record_batch(&self.data, indices)?;
        let kinds = match &self.kinds {
            None => None,
            Some(kinds) => Some(
                arrow::compute::take(kinds, indices, None)?
                    .as_any()
                    .downcast_ref::<Int8Array>()
                    .cloned()
                    .unwrap_or_else(|| Int8Array::from(vec![0i8; data.num_rows()])),
            ),
        };
        Ok(ChangeBatch { data, kinds })
    }

    /// Concatenates batches of one schema (row kinds included) into one.
    pub fn concat(batches: &[ChangeBatch]) -> Result<ChangeBatch> {
        let Some(first) = batches.first() else {
            return Err(crate::SluiceError::Runtime("nothing to concatenate".into()));
        };
        if batches.len() == 1 {
            return Ok(first.clone());
        }
        let data = arrow::compute::concat_batches(
            first.data.schema_ref(),
            batches.iter().map(|b| &b.data),
        )?;
        let kinds = if batches.iter().all(|b| b.kinds.is_none()) {
            None
        } else {
            let all: Vec<i8> = batches
                .iter()
                .flat_map(|b| (0..b.num_rows()).map(move |row| b.kind(row) as i8))
                .collect();
            Some(Int8Array::from(all))
        };
        Ok(ChangeBatch { data, kinds })
    }

    /// Replaces the rows (same count, same order), keeping the row kinds.
    pub fn with_data(&self, data: RecordBatch) -> ChangeBatch {
        ChangeBatch {
            data,
            kinds: self.kinds.clone(),
        }
    }
}

/// What travels on the channels between operator subtasks.
#[derive(Debug, Clone)]
pub enum Message {
    /// A batch of rows.
    Data(ChangeBatch),
    /// Event time has advanced to this many milliseconds since the epoch.
    Watermark(i64),
    /// The sender has no more input (bounded source exhausted or job stopping).
    EndOfInput,
    /// The sender has had no data for a while: until it sends data or a
    /// watermark again, its watermark does not hold back the receiver's.
    Idle,
    /// A checkpoint barrier: everything before it belongs to the checkpoint,
    /// everything after it to the next one.
    Barrier(Barrier),
    /// The next data batch on this channel was sampled for tracing: its
    /// processing downstream is recorded under this span.
    Traced(tracing::Span),
}

/// A checkpoint barrier, injected by the sources and aligned by every
/// operator with several inputs (Chandy–Lamport, as in Flink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The checkpoint's number (increasing within a job).
    pub checkpoint: u64,
    /// A stop-with-savepoint barrier: after it, sources stop reading and the
    /// job ends without draining (no end-of-input watermark).
    pub stop: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    #[test]
    fn filter_keeps_row_kinds_aligned() {
        let data =
            RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)])
                .unwrap();
        let batch = ChangeBatch {
            data,
            kinds: Some(Int8Array::from(vec![0, 1, 2])),
        };
        let kept = batch
            .filter(&BooleanArray::from(vec![false, true, true]))
            .unwrap();
        assert_eq!(kept.num_rows(), 2);
        assert_eq!(kept.kind(0), RowKind::UpdateBefore);
        assert_eq!(kept.kind(1), RowKind::UpdateAfter);
    }

    #[test]
    fn concat_keeps_row_kinds() {
        let data =
            RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
        let inserts = ChangeBatch::inserts(data.clone());
        let delete = ChangeBatch {
            data,
            kinds: Some(Int8Array::from(vec![3])),
        };
        let both = ChangeBatch::concat(&[inserts.clone(), delete]).unwrap();
        assert_eq!(both.num_rows(), 2);
        assert_eq!(
            (both.kind(0), both.kind(1)),
            (RowKind::Insert, RowKind::Delete)
        );
        assert!(ChangeBatch::concat(&[inserts.clone(), inserts])
            .unwrap()
            .kinds
            .is_none());
    }

    #[test]
    fn short_strings_follow_flink() {
        let all = [0i8, 1, 2, 3].map(|k| RowKind::from_i8(k).short_string());
        assert_eq!(all, ["+I", "-U", "+U", "-D"]);
    }
}
