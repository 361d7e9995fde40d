//! Sampled end-to-end batch spans: now and then a source subtask picks the
//! batch it is about to push and records its way through the job as a
//! `batch` span with one child span per operator, channel hand-over and sink
//! write, so a trace viewer (Jaeger) shows where a batch's latency goes.
//!
//! Off by default; the binary turns it on when it exports traces
//! ([`sample_batches_every`]). Sampling is by time, at most one batch per
//! source subtask per interval, so its cost does not grow with the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds between sampled batches per source subtask; 0 = off.
static SAMPLE_INTERVAL_MS: AtomicU64 = AtomicU64::new(0);

/// Samples one batch per source subtask every `interval` (`None`: never).
/// Affects jobs started afterwards and running ones alike.
pub fn sample_batches_every(interval: Option<Duration>) {
    let millis = interval.map_or(0, |i| i.as_millis().clamp(1, u64::MAX as u128) as u64);
    SAMPLE_INTERVAL_MS.store(millis, Ordering::Relaxed);
}

/// Decides which of a source subtask's batches are traced.
#[derive(Debug, Default)]
pub(crate) struct BatchSampler {
    last: Option<Instant>,
}

impl BatchSampler {
    /// Whether to trace the batch about to be pushed.
    pub(crate) fn sample(&mut self) -> bool {
        let millis = SAMPLE_INTERVAL_MS.load(Ordering::Relaxed);
        if millis == 0 {
            return false;
        }
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= Duration::from_millis(millis));
        if due {
            self.last = Some(now);
        }
        due
    }
}
