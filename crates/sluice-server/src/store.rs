//! The metadata store: job definitions and their status, job events, and
//! API tokens, in one SQLite database (`<data dir>/sluice.db`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ServerError;

/// A job as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRecord {
    /// The job's name, unique on this server.
    pub name: String,
    /// Its SQL script.
    pub sql: String,
    /// Subtasks per operator, when set at submission.
    pub parallelism: Option<u32>,
    /// Whether the server keeps it running (`running`) or not (`stopped`).
    pub desired: String,
    /// What it is doing: `running`, `finished`, `failed`, `stopped`.
    pub status: String,
    /// The savepoint it was stopped with, resumed from on `resume`.
    pub savepoint: Option<String>,
    /// When it was submitted (RFC 3339).
    pub created_at: String,
    /// When its status last changed (RFC 3339).
    pub updated_at: String,
}

/// Something that happened to a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobEvent {
    /// When (RFC 3339).
    pub at: String,
    /// `info` or `error`.
    pub level: String,
    /// What happened.
    pub message: String,
}

/// The SQLite metadata database.
pub struct MetadataStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl MetadataStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, ServerError> {
        let store_error = |source| ServerError::Store {
            path: path.display().to_string(),
            source,
        };
        let connection = Connection::open(path).map_err(store_error)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS jobs (
                     name TEXT PRIMARY KEY,
                     sql TEXT NOT NULL,
                     parallelism INTEGER,
                     desired TEXT NOT NULL,
                     status TEXT NOT NULL,
                     savepoint TEXT,
                     created_at TEXT NOT NULL,
                     updated_at TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS job_events (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     job TEXT NOT NULL,
                     at TEXT NOT NULL,
                     level TEXT NOT NULL,
                     message TEXT NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job, id);
                 CREATE TABLE IF NOT EXISTS tokens (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     name TEXT NOT NULL,
                     hash TEXT NOT NULL UNIQUE,
                     created_at TEXT NOT NULL
                 );",
            )
            .map_err(store_error)?;
        Ok(MetadataStore {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // statement is atomic), so a poisoned lock is still usable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn error(&self, source: rusqlite::Error) -> ServerError {
        ServerError::Store {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Adds a job; `false` when one with that name exists.
    pub fn insert_job(
        &self,
        name: &str,
        sql: &str,
        parallelism: Option<u32>,
    ) -> Result<bool, ServerError> {
        let now = now();
        let inserted = self
            .connection()
            .execute(
                "INSERT OR IGNORE INTO jobs (name, sql, parallelism, desired, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'running', 'running', ?4, ?4)",
                params![name, sql, parallelism, now],
            )
            .map_err(|e| self.error(e))?;
        Ok(inserted == 1)
    }

    /// One job.
    pub fn job(&self, name: &str) -> Result<Option<JobRecord>, ServerError> {
        self.connection()
            .query_row(
                "SELECT name, sql, parallelism, desired, status, savepoint, created_at, updated_at
                 FROM jobs WHERE name = ?1",
                params![name],
                job_from_row,
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// All jobs, by name.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, ServerError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT name, sql, parallelism, desired, status, savepoint, created_at, updated_at
                 FROM jobs ORDER BY name",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], job_from_row)
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Records what a job should do and what it does.
    pub fn set_state(
        &self,
        name: &str,
        desired: &str,
        status: &str,
        savepoint: Option<&str>,
    ) -> Result<(), ServerError> {
        self.connection()
            .execute(
                "UPDATE jobs SET desired = ?2, status = ?3, savepoint = ?4, updated_at = ?5 WHERE name = ?1",
                params![name, desired, status, savepoint, now()],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Records what a job does, leaving what it should do.
    pub fn set_status(&self, name: &str, status: &str) -> Result<(), ServerError> {
        self.connection()
            .execute(
                "UPDATE jobs SET status = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, status, now()],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Deletes a job and its events.
    pub fn delete_job(&self, name: &str) -> Result<bool, ServerError> {
        let connection = self.connection();
        connection
            .execute("DELETE FROM job_events WHERE job = ?1", params![name])
            .map_err(|e| self.error(e))?;
        let deleted = connection
            .execute("DELETE FROM jobs WHERE name = ?1", params![name])
            .map_err(|e| self.error(e))?;
        Ok(deleted == 1)
    }

    /// Appends an event to a job's history.
    pub fn add_event(&self, job: &str, level: &str, message: &str) -> Result<(), ServerError> {
        self.connection()
            .execute(
                "INSERT INTO job_events (job, at, level, message) VALUES (?1, ?2, ?3, ?4)",
                params![job, now(), level, message],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// A job's latest `limit` events, oldest first.
    pub fn events(&self, job: &str, limit: usize) -> Result<Vec<JobEvent>, ServerError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT at, level, message FROM job_events WHERE job = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![job, limit as i64], |row| {
                Ok(JobEvent {
                    at: row.get(0)?,
                    level: row.get(1)?,
                    message: row.get(2)?,
                })
            })
            .map_err(|e| self.error(e))?;
        let mut events: Vec<JobEvent> =
            rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?;
        events.reverse();
        Ok(events)
    }

    /// Stores a token's hash under `name`.
    pub fn add_token(&self, name: &str, hash: &str) -> Result<(), ServerError> {
        self.connection()
            .execute(
                "INSERT OR IGNORE INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash, now()],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The name of the token with this hash.
    pub fn token_name(&self, hash: &str) -> Result<Option<String>, ServerError> {
        self.connection()
            .query_row(
                "SELECT name FROM tokens WHERE hash = ?1",
                params![hash],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// How many tokens exist.
    pub fn token_count(&self) -> Result<u64, ServerError> {
        self.connection()
            .query_row("SELECT COUNT(*) FROM tokens", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|count| count as u64)
            .map_err(|e| self.error(e))
    }
}

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        name: row.get(0)?,
        sql: row.get(1)?,
        parallelism: row.get(2)?,
        desired: row.get(3)?,
        status: row.get(4)?,
        savepoint: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_events_and_tokens_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        {
            let store = MetadataStore::open(&path).unwrap();
            assert!(store.insert_job("clicks", "SELECT 1", Some(2)).unwrap());
            assert!(!store.insert_job("clicks", "SELECT 2", None).unwrap());
            store
                .set_state("clicks", "stopped", "stopped", Some("/sp/1"))
                .unwrap();
            store.add_event("clicks", "error", "boom").unwrap();
            store.add_token("admin", "abc").unwrap();
        }
        let store = MetadataStore::open(&path).unwrap();
        let job = store.job("clicks").unwrap().unwrap();
        assert_eq!((job.sql.as_str(), job.parallelism), ("SELECT 1", Some(2)));
        assert_eq!(
            (job.desired.as_str(), job.status.as_str()),
            ("stopped", "stopped")
        );
        assert_eq!(job.savepoint.as_deref(), Some("/sp/1"));
        assert_eq!(store.events("clicks", 10).unwrap()[0].message, "boom");
        assert_eq!(store.token_name("abc").unwrap().as_deref(), Some("admin"));
        assert_eq!(store.token_count().unwrap(), 1);
        assert!(store.delete_job("clicks").unwrap());
        assert!(store.jobs().unwrap().is_empty());
    }
}
