//! Local disk for keyed state beyond the job's memory budget.
//!
//! Every keyed state of a job reports its estimated in-memory size to the
//! job's [`SpillArea`]; when the total exceeds the budget (`state.memory-budget`),
//! the state that grows moves its least recently used keys into a
//! [`SpillTable`]: a keyspace of an embedded LSM tree ([`fjall`]) under the
//! job's spill directory. Spilled keys are read back when they are next
//! touched. The spill directory is scratch space: checkpoints, not the spill
//! files, are what a restarted job recovers from, so it is wiped when the job
//! starts and removed when it ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_core::{Result, SluiceError};

fn spill_error(error: impl std::fmt::Display) -> SluiceError {
    SluiceError::State(format!("spilling state to disk: {error}"))
}

/// Largest in-memory write buffer of a spill table before it goes to disk.
const SPILL_MEMTABLE_BYTES: u64 = 16 << 20;

/// The memory budget of a job's keyed state and the disk it spills to.
pub struct SpillArea {
    dir: PathBuf,
    budget: u64,
    /// Estimated bytes of keyed state held in memory, over all states.
    in_memory: AtomicI64,
    /// Bytes written to spill tables (before compression), for reporting.
    spilled_bytes: AtomicU64,
    next_table: AtomicU64,
    database: Mutex<Option<fjall::Database>>,
}

impl SpillArea {
    /// A budget of `budget` bytes, spilling under `dir` (created on first spill).
    pub fn new(dir: impl Into<PathBuf>, budget: u64) -> Arc<Self> {
        Arc::new(SpillArea {
            dir: dir.into(),
            budget,
            in_memory: AtomicI64::new(0),
            spilled_bytes: AtomicU64::new(0),
            next_table: AtomicU64::new(0),
            database: Mutex::new(None),
        })
    }

    /// The memory budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The directory spill files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds `delta` bytes to the estimated in-memory state size.
    pub fn account(&self, delta: i64) {
        self.in_memory.fetch_add(delta, Ordering::Relaxed);
    }

    /// Estimated bytes of keyed state in memory.
    pub fn in_memory(&self) -> u64 {
        self.in_memory.load(Ordering::Relaxed).max(0) as u64
    }

    /// Bytes by which the state in memory exceeds the budget (0 within it).
    pub fn excess(&self) -> u64 {
        self.in_memory().saturating_sub(self.budget)
    }

    /// Total bytes spilled so far (uncompressed).
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes.load(Ordering::Relaxed)
    }

    /// A new, empty table of spilled keys; the database is opened (and a
    /// previous run's leftovers wiped) on the first call.
    pub fn table(self: &Arc<Self>) -> Result<SpillTable> {
        let database = {
            let mut database = self
                .database
                .lock()
                .map_err(|_| spill_error("lock poisoned"))?;
            match &*database {
                Some(open) => open.clone(),
                None => {
                    if self.dir.exists() {
                        std::fs::remove_dir_all(&self.dir).map_err(|e| {
                            spill_error(format!("clearing {}: {e}", self.dir.display()))
                        })?;
                    }
                    let open = fjall::Database::builder(&self.dir)
                        .temporary(true)
                        .manual_journal_persist(true)
                        .cache_size(32 << 20)
                        .open()
                        .map_err(|e| spill_error(format!("opening {}: {e}", self.dir.display())))?;
                    tracing::info!(
                        dir = %self.dir.display(),
                        budget_bytes = self.budget,
                        "keyed state exceeds the memory budget: spilling to disk"
                    );
                    *database = Some(open.clone());
                    open
                }
            }
        };
        let name = format!("t{}", self.next_table.fetch_add(1, Ordering::Relaxed));
        let keyspace = database
            .keyspace(&name, || {
                // Smaller than fjall's 64 MiB: memtables are memory the
                // budget does not see, and spilled keys are rarely read.
                fjall::KeyspaceCreateOptions::default().max_memtable_size(SPILL_MEMTABLE_BYTES)
            })
            .map_err(spill_error)?;
        Ok(SpillTable {
            area: self.clone(),
            database,
            keyspace: Some(keyspace),
        })
    }
}

/// Spilled keys and their encoded values, of one keyed state.
pub struct SpillTable {
    area: Arc<SpillArea>,
    database: fjall::Database,
    keyspace: Option<fjall::Keyspace>,
}

impl SpillTable {
    fn keyspace(&self) -> Result<&fjall::Keyspace> {
        self.keyspace
            .as_ref()
            .ok_or_else(|| spill_error("spill table already dropped"))
    }

    /// Writes `entries` in one batch.
    pub fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let keyspace = self.keyspace()?;
        let mut batch = self.database.batch();
        let mut bytes = 0u64;
        for (key, value) in entries {
            bytes += (key.len() + value.len()) as u64;
            batch.insert(keyspace, key, value);
        }
        batch.commit().map_err(spill_error)?;
        self.area.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// The value of `key`, if spilled.
    pub fn get(&self, key: &[u8]) -> Result<Option<fjall::UserValue>> {
        self.keyspace()?.get(key).map_err(spill_error)
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &[u8]) -> Result<()> {
        self.keyspace()?.remove(key).map_err(spill_error)
    }

    /// Every spilled key and value, in key order.
    pub fn entries(
        &self,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, fjall::UserValue)>> + '_> {
        Ok(self.keyspace()?.iter().map(|guard| {
            guard
                .into_inner()
                .map(|(key, value)| (key.to_vec(), value))
                .map_err(spill_error)
        }))
    }

    /// Every spilled key, in key order.
    pub fn keys(&self) -> Result<impl Iterator<Item = Result<Vec<u8>>> + '_> {
        Ok(self
            .keyspace()?
            .iter()
            .map(|guard| guard.key().map(|key| key.to_vec()).map_err(spill_error)))
    }
}

impl Drop for SpillTable {
    fn drop(&mut self) {
        if let Some(keyspace) = self.keyspace.take() {
            if let Err(error) = self.database.delete_keyspace(keyspace) {
                tracing::warn!(%error, "could not delete a spill table");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_entries_round_trip_and_the_directory_is_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let spill_dir = dir.path().join("spill");
        std::fs::create_dir_all(spill_dir.join("leftover")).unwrap();
        let area = SpillArea::new(&spill_dir, 100);
        area.account(150);
        assert_eq!(area.excess(), 50);
        let table = area.table().unwrap();
        assert!(
            !spill_dir.join("leftover").exists(),
            "old spill files are wiped"
        );
        table
            .put_all(vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"a".to_vec(), b"1".to_vec()),
            ])
            .unwrap();
        assert_eq!(&*table.get(b"a").unwrap().unwrap(), b"1");
        table.remove(b"a").unwrap();
        assert!(table.get(b"a").unwrap().is_none());
        let keys: Vec<Vec<u8>> = table.keys().unwrap().map(Result::unwrap).collect();
        assert_eq!(keys, vec![b"b".to_vec()]);
        let other = area.table().unwrap();
        assert!(other.get(b"b").unwrap().is_none(), "tables are separate");
        assert_eq!(area.spilled_bytes(), 4);
        drop((table, other));
        drop(area);
        assert!(!spill_dir.exists(), "the spill directory goes with the job");
    }
}
