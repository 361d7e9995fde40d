//! Watermark generation from a table's `WATERMARK FOR col AS expr` clause:
//! the watermark is the largest value of `expr` seen so far (bounded
//! out-of-orderness), emitted after a batch that advances it, at most once per
//! `pipeline.auto-watermark-interval`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::physical_expr::PhysicalExpr;
use sluice_core::{ChangeBatch, Message, Result};

use crate::operators::{evaluate_array, Operator};

/// Converts any timestamp column into epoch milliseconds.
pub fn epoch_millis(
    array: &dyn Array,
) -> Result<arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    let millis = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(millis.as_primitive::<TimestampMillisecondType>().clone())
}

/// The split the batch a source task is pushing came from, and the splits
/// its reader has (set by the task, read by the watermark assigner chained
/// behind the source).
#[derive(Debug)]
pub struct SplitCursor {
    current: AtomicU64,
    known: Mutex<Vec<u64>>,
}

impl Default for SplitCursor {
    fn default() -> Self {
        SplitCursor {
            current: AtomicU64::new(NO_SPLIT),
            known: Mutex::new(Vec::new()),
        }
    }
}

impl SplitCursor {
    /// The split of the batch about to be pushed.
    pub fn set_current(&self, split: u64) {
        self.current.store(split, Ordering::Relaxed);
    }

    /// The reader's splits: each holds the watermark back until it has data
    /// or goes idle.
    pub fn set_known(&self, splits: Vec<u64>) {
        if let Ok(mut known) = self.known.lock() {
            *known = splits;
        }
    }
}

/// No split known: the batch counts for the source as a whole.
pub const NO_SPLIT: u64 = u64::MAX;

/// Per-split watermarks: each split's largest value, combined by minimum
/// over the splits that had data within the idle timeout (as Flink's
/// per-partition watermarks).
struct Splits {
    cursor: Arc<SplitCursor>,
    idle_timeout: Option<Duration>,
    /// Split → (largest watermark, when it last had data).
    seen: HashMap<u64, (i64, Instant)>,
}

impl Splits {
    /// The combined watermark after a batch of `split` with largest value `max`.
    fn advance(&mut self, max: Option<i64>, now: Instant) -> Option<i64> {
        if let Ok(mut known) = self.cursor.known.lock() {
            for split in known.drain(..) {
                self.seen.entry(split).or_insert((i64::MIN, now));
            }
        }
        let split = self.cursor.current.load(Ordering::Relaxed);
        let entry = self.seen.entry(split).or_insert((i64::MIN, now));
        entry.1 = now;
        if let Some(max) = max {
            entry.0 = entry.0.max(max);
        }
        let idle = self.idle_timeout;
        self.seen
            .values()
            .filter(|(_, last)| idle.is_none_or(|idle| now.duration_since(*last) < idle))
            .map(|(watermark, _)| *watermark)
            .min()
    }
}

/// Emits watermarks computed from each batch.
pub struct WatermarkAssigner {
    /// The watermark expression, in epoch milliseconds.
    expr: EpochMillisExpr,
    /// The largest watermark seen.
    current: i64,
    /// The last watermark emitted.
    emitted: i64,
    interval: Duration,
    last_emit: Option<Instant>,
    splits: Option<Splits>,
}

impl WatermarkAssigner {
    /// Assigns watermarks from `expr` (e.g. `ts - INTERVAL '4' SECOND`),
    /// emitting at most one per `interval` (zero: after every batch).
    pub fn new(expr: Arc<dyn PhysicalExpr>, interval: Duration) -> Self {
        WatermarkAssigner {
            expr: EpochMillisExpr::new(expr),
            current: i64::MIN,
            emitted: i64::MIN,
            interval,
            last_emit: None,
            splits: None,
        }
    }

    /// Tracks a watermark per split of the source (the one `cursor` names
    /// for each batch); a split without data for `idle_timeout` stops holding
    /// the others back.
    pub fn per_split(mut self, cursor: Arc<SplitCursor>, idle_timeout: Option<Duration>) -> Self {
        self.splits = Some(Splits {
            cursor,
            idle_timeout,
            seen: HashMap::new(),
        });
        self
    }
}

impl WatermarkAssigner {
    /// The largest value of the watermark expression over `batch`.
    fn largest(&self, batch: &ChangeBatch) -> Result<Option<i64>> {
        self.expr.max(&batch.data)
    }
}

/// The length of `expr` in milliseconds when it is an interval literal of a
/// fixed number of whole milliseconds (no months or days, whose length varies).
fn fixed_interval_millis(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::Literal;
    let nanos = match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::IntervalMonthDayNano(Some(interval))
            if interval.months == 0 && interval.days == 0 =>
        {
            interval.nanoseconds
        }
        ScalarValue::IntervalDayTime(Some(interval)) if interval.days == 0 => {
            i64::from(interval.milliseconds) * 1_000_000
        }
        _ => return None,
    };
    (nanos % 1_000_000 == 0).then_some(nanos / 1_000_000)
}

/// Times as epoch milliseconds, one per row.
pub(crate) type EpochMillis = arrow::array::PrimitiveArray<TimestampMillisecondType>;

/// An event-time expression evaluated to epoch milliseconds. For `time ±
/// INTERVAL` of a fixed number of whole milliseconds over a millisecond
/// timestamp, `time`'s milliseconds are shifted: DataFusion would add the
/// interval row by row through calendar arithmetic.
pub(crate) struct EpochMillisExpr {
    expr: Arc<dyn PhysicalExpr>,
    /// `(time, millis)` for `time + millis`.
    shifted: Option<(Arc<dyn PhysicalExpr>, i64)>,
}

impl EpochMillisExpr {
    /// The expression `expr`, recognising a fixed shift.
    pub(crate) fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        use datafusion::logical_expr::Operator as BinaryOperator;
        use datafusion::physical_expr::expressions::BinaryExpr;
        let shifted = expr.downcast_ref::<BinaryExpr>().and_then(|binary| {
            let millis = fixed_interval_millis(binary.right())?;
            match binary.op() {
                BinaryOperator::Plus => Some((binary.left().clone(), millis)),
                BinaryOperator::Minus => Some((binary.left().clone(), -millis)),
                _ => None,
            }
        });
        EpochMillisExpr { expr, shifted }
    }

    /// The expression's largest value over `batch`. A shifted time keeps
    /// its order, so that is its column's largest value, shifted.
    pub(crate) fn max(&self, batch: &arrow::array::RecordBatch) -> Result<Option<i64>> {
        if let Some((times, millis)) = self.shifted_times(batch)? {
            return Ok(arrow::compute::max(&times).map(|max| max.saturating_add(millis)));
        }
        Ok(arrow::compute::max(&self.evaluate(batch)?))
    }

    /// The expression's value per row of `batch`, as epoch milliseconds.
    pub(crate) fn evaluate(&self, batch: &arrow::array::RecordBatch) -> Result<EpochMillis> {
        if let Some((times, millis)) = self.shifted_times(batch)? {
            return Ok(times.unary(|time| time.saturating_add(millis)));
        }
        epoch_millis(evaluate_array(self.expr.as_ref(), batch)?.as_ref())
    }

    /// For a shifted time over a millisecond timestamp: the time column and
    /// the shift.
    fn shifted_times(
        &self,
        batch: &arrow::array::RecordBatch,
    ) -> Result<Option<(EpochMillis, i64)>> {
        let Some((time, millis)) = &self.shifted else {
            return Ok(None);
        };
        let times = evaluate_array(time.as_ref(), batch)?;
        Ok(times
            .as_primitive_opt::<TimestampMillisecondType>()
            .map(|times| (times.clone(), *millis)))
    }
}

impl Operator for WatermarkAssigner {
    fn process(&mut self, batch: ChangeBatch, out: &mut Vec<Message>) -> Result<()> {
        let max = self.largest(&batch)?;
        out.push(Message::Data(batch));
        let now = Instant::now();
        let max = match &mut self.splits {
            Some(splits) => splits.advance(max, now),
            None => max,
        };
        if let Some(max) = max {
            self.current = self.current.max(max);
        }
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

    #[test]
    fn column_minus_a_fixed_interval_is_read_off_the_column_maximum() {
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::Operator as BinaryOperator;
        use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
        let minus = |interval: ScalarValue| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new("ts", 0)),
                BinaryOperator::Minus,
                Arc::new(Literal::new(interval)),
            ))
        };
        let four_seconds = minus(ScalarValue::new_interval_mdn(0, 0, 4_000_000_000));
        let one_day = minus(ScalarValue::new_interval_mdn(0, 1, 0));
        let a_month = minus(ScalarValue::new_interval_mdn(1, 0, 0));
        let shift = |expr: &Arc<dyn PhysicalExpr>| {
            EpochMillisExpr::new(expr.clone())
                .shifted
                .map(|(_, millis)| millis)
        };
        assert_eq!(shift(&four_seconds), Some(-4000));
        assert_eq!(shift(&one_day), None);
        assert_eq!(shift(&a_month), None);
        // Both ways give the same watermarks.
        let times = vec![1_436_918_400_001, 1_436_918_460_000, 1_436_918_430_000];
        let mut fast = WatermarkAssigner::new(four_seconds, Duration::ZERO);
        assert_eq!(
            watermarks(&mut fast, times.clone()),
            vec![1_436_918_456_000]
        );
        let mut evaluated = WatermarkAssigner::new(one_day, Duration::ZERO);
        assert_eq!(
            watermarks(&mut evaluated, times),
            vec![1_436_918_460_000 - 86_400_000]
        );
    }

    #[test]
    fn shifted_times_equal_datafusion_interval_arithmetic() {
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::Operator as BinaryOperator;
        use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
        let shift = |op: BinaryOperator, interval: ScalarValue| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new("ts", 0)),
                op,
                Arc::new(Literal::new(interval)),
            ))
        };
        let data = batch(vec![1_436_918_400_001, -5, 0]).data;
        for op in [BinaryOperator::Plus, BinaryOperator::Minus] {
            for interval in [
                ScalarValue::new_interval_mdn(0, 0, 10_000_000_000),
                ScalarValue::new_interval_mdn(0, 0, 1_500_000),
                ScalarValue::new_interval_mdn(0, 1, 0),
                ScalarValue::new_interval_mdn(1, 0, 0),
            ] {
                let expr = shift(op, interval.clone());
                let millis = EpochMillisExpr::new(expr.clone());
                let fixed = !matches!(&interval, ScalarValue::IntervalMonthDayNano(Some(i)) if i.months != 0 || i.days != 0 || i.nanoseconds % 1_000_000 != 0);
                assert_eq!(millis.shifted.is_some(), fixed, "{op} {interval}");
                let evaluated = expr
                    .evaluate(&data)
                    .and_then(|v| v.into_array(3))
                    .expect("evaluates");
                assert_eq!(
                    millis.evaluate(&data).expect("evaluates"),
                    epoch_millis(evaluated.as_ref()).expect("millis"),
                    "{op} {interval}"
                );
            }
        }
    }

    #[test]
    fn split_watermarks_take_the_minimum_of_active_splits() {
        let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 0));
        let cursor = Arc::new(SplitCursor::default());
        cursor.set_known(vec![0, 1]);
        let mut assigner = WatermarkAssigner::new(expr, Duration::ZERO)
            .per_split(cursor.clone(), Some(Duration::from_millis(200)));
        // Split 1 has no data yet: it holds the watermark back.
        cursor.set_current(0);
        assert_eq!(watermarks(&mut assigner, vec![100]), Vec::<i64>::new());
        cursor.set_current(1);
        assert_eq!(watermarks(&mut assigner, vec![10]), vec![10]);
        cursor.set_current(0);
        assert_eq!(watermarks(&mut assigner, vec![500]), Vec::<i64>::new());
        cursor.set_current(1);
        assert_eq!(watermarks(&mut assigner, vec![300]), vec![300]);
        // Split 1 goes idle: split 0 alone moves the watermark.
        std::thread::sleep(Duration::from_millis(250));
        cursor.set_current(0);
        assert_eq!(watermarks(&mut assigner, vec![600]), vec![600]);
    }
}
