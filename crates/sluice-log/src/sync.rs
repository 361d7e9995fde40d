//! Group commit for [`FsyncPolicy::Interval`](crate::FsyncPolicy): appends
//! register the file they wrote; a background thread syncs every registered
//! file once per interval and then releases the appends it covered.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{LogError, Result};
use crate::lock;

/// Progress of the periodic syncs.
#[derive(Debug, Clone, Default)]
struct SyncStatus {
    /// Number of the last completed sync.
    completed: u64,
    /// The first failure; sticky, since data may have been lost.
    error: Option<String>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Number of the last sync that took the dirty files.
    started: u64,
    /// Files written since that sync, by address, with their paths.
    dirty: HashMap<usize, (PathBuf, Arc<File>)>,
    /// The log is closing: one last sync, then the thread ends.
    closing: bool,
}

/// Shared between the log, its streams and the sync thread.
#[derive(Debug)]
pub(crate) struct SyncShared {
    root: PathBuf,
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Serializes sync runs, so they complete in the order they started.
    run: Mutex<()>,
    done: watch::Sender<SyncStatus>,
}

impl SyncShared {
    /// Starts the sync thread of the log in `root`.
    pub fn start(root: PathBuf, interval: Duration) -> Result<(Arc<Self>, JoinHandle<()>)> {
        let shared = Arc::new(SyncShared {
            root: root.clone(),
            state: Mutex::new(SyncState::default()),
            wake: Condvar::new(),
            run: Mutex::new(()),
            done: watch::Sender::new(SyncStatus::default()),
        });
        let thread = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("sluice-log-sync".into())
            .spawn(move || thread.run_thread(interval))
            .map_err(|e| LogError::io(&root, e))?;
        Ok((shared, handle))
    }

    fn run_thread(&self, interval: Duration) {
        loop {
            let closing = {
                let mut state = lock(&self.state);
                let deadline = Instant::now() + interval;
                loop {
                    let now = Instant::now();
                    if state.closing || now >= deadline {
                        break;
                    }
                    state = self
                        .wake
                        .wait_timeout(state, deadline - now)
                        .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
                }
                state.closing
            };
            if let Err(error) = self.sync_now() {
                tracing::error!(%error, "stream log: periodic sync failed; writes are refused from now on");
            }
            if closing {
                return;
            }
        }
    }

    /// Notes that `file` was written; returns the number of the sync that
    /// will cover the write.
    pub fn register(&self, path: &Path, file: &Arc<File>) -> Result<u64> {
        if let Some(error) = &self.done.borrow().error {
            return Err(LogError::Failed(error.clone()));
        }
        let mut state = lock(&self.state);
        if state.closing {
            return Err(LogError::Closed(self.root.clone()));
        }
        state.dirty.insert(
            Arc::as_ptr(file) as usize,
            (path.to_path_buf(), Arc::clone(file)),
        );
        Ok(state.started + 1)
    }

    /// Resolves once sync `target` completed.
    pub async fn wait(&self, target: u64) -> Result<()> {
        let mut done = self.done.subscribe();
        let status = done
            .wait_for(|s| s.completed >= target || s.error.is_some())
            .await
            .map_err(|_| LogError::Closed(self.root.clone()))?;
        match &status.error {
            Some(error) => Err(LogError::Failed(error.clone())),
            None => Ok(()),
        }
    }

    /// Syncs every file written since the last sync, on the calling thread.
    pub fn sync_now(&self) -> Result<()> {
        let _run = lock(&self.run);
        let (number, files) = {
            let mut state = lock(&self.state);
            state.started += 1;
            (state.started, std::mem::take(&mut state.dirty))
        };
        let mut failure = None;
        for (path, file) in files.values() {
            if let Err(error) = file.sync_data() {
                failure.get_or_insert(LogError::io(path, error));
            }
        }
        self.done.send_modify(|status| {
            status.completed = number;
            if let Some(error) = &failure {
                status.error.get_or_insert_with(|| error.to_string());
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Asks the thread to sync once more and end.
    pub fn close(&self) {
        lock(&self.state).closing = true;
        self.wake.notify_all();
    }
}
