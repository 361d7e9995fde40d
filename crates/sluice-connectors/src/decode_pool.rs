//! The threads that decode line chunks: one per core, shared by every line
//! source of the process and started on first use.
//!
//! Decoding is pure CPU work, so more threads than cores only adds switches.
//! On tokio's blocking pool a reader's decodes landed on a changing set of
//! threads, each keeping its own allocator heap of chunk-sized buffers. Here
//! the same few threads reuse theirs (q0 over the 10M-event file: about 20%
//! less peak memory and 10% faster on 2 cores, see benchmarks/README.md).

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use sluice_core::{Result, SluiceError};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Where jobs go; `None` when no decode thread could be started (jobs then
/// run on the caller's thread).
fn pool() -> &'static Option<async_channel::Sender<Job>> {
    static POOL: OnceLock<Option<async_channel::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, jobs) = async_channel::unbounded::<Job>();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut started = 0;
        for index in 0..threads {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-decode-{index}"))
                .spawn(move || {
                    while let Ok(job) = jobs.recv_blocking() {
                        job();
                    }
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(sender)
    })
}

/// A decode running (or queued) on the pool.
pub(crate) struct Decoding<T> {
    result: oneshot::Receiver<std::thread::Result<T>>,
}

impl<T> Decoding<T> {
    /// Waits for the decode's result; a panic in it becomes an error.
    pub(crate) async fn finish(&mut self) -> Result<T> {
        match (&mut self.result).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(SluiceError::Runtime(format!(
                    "decoding a line chunk panicked: {message}"
                )))
            }
            Err(_) => Err(SluiceError::Runtime(
                "decoding a line chunk: the decode thread stopped".into(),
            )),
        }
    }
}

/// Runs `work` on a decode thread, in the order submitted.
pub(crate) fn decode<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Decoding<T> {
    let (sender, result) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = sender.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
    });
    match pool() {
        Some(jobs) => {
            if let Err(refused) = jobs.try_send(job) {
                (refused.into_inner())();
            }
        }
        None => job(),
    }
    Decoding { result }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_and_panics_come_back() {
        let mut sum = decode(|| (1..=10).sum::<u32>());
        let mut failing = decode(|| -> u32 { panic!("bad chunk") });
        assert_eq!(sum.finish().await.ok(), Some(55));
        let error = failing.finish().await.err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("panicked: bad chunk")),
            "{error:?}"
        );
    }
}
