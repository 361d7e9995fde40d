//! The registry's state in SQLite, and the operations of the REST API on it.
//!
//! Tables: `schemas` (global ids: type, text as first registered, references,
//! and the identity that decides "same schema"), `schema_refs` (which
//! subject-version each schema references, to refuse deleting a referenced
//! version), `subject_versions` (subject, version → schema id, soft-deleted
//! flag) and the compatibility settings. One connection behind a mutex: every
//! operation is one short transaction, so writers never interleave.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::compat::{check_avro, CompatibilityLevel};
use crate::error::RegistryError;
use crate::schema::{
    normalize, parse_avro, AvroSchema, SchemaReference, SchemaRequest, SchemaType, StoredSchema,
};

type Result<T> = std::result::Result<T, RegistryError>;

/// The current layout of the database (`PRAGMA user_version`).
const LAYOUT_VERSION: i64 = 1;

const LAYOUT: &str = "
CREATE TABLE IF NOT EXISTS schemas (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schema_type TEXT NOT NULL,
    schema TEXT NOT NULL,
    refs TEXT NOT NULL,
    identity TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS schema_refs (
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    name TEXT NOT NULL,
    subject TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS schema_refs_by_target ON schema_refs(subject, version);
CREATE TABLE IF NOT EXISTS subject_versions (
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
);
CREATE INDEX IF NOT EXISTS subject_versions_by_schema ON subject_versions(schema_id);
CREATE TABLE IF NOT EXISTS subject_config (
    subject TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS global_config (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// A version of a subject, as `GET /subjects/{subject}/versions/{version}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i64,
    pub schema: StoredSchema,
}

/// A version in a path: a number, or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i64),
}

impl VersionSpec {
    /// Parses a version as Confluent does: `latest`, `-1`, or 1..=2^31-1 (42202 otherwise).
    pub fn parse(text: &str) -> Result<VersionSpec> {
        if text.eq_ignore_ascii_case("latest") {
            return Ok(VersionSpec::Latest);
        }
        match text.parse::<i64>() {
            Ok(-1) => Ok(VersionSpec::Latest),
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(text.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct VersionRow {
    version: i64,
    schema_id: i64,
    deleted: bool,
}

/// A schema registry on one SQLite database. Cheap to clone (shared).
#[derive(Clone)]
pub struct Registry {
    connection: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (or creates) the registry database at `path` (its directory is
    /// created if missing), in WAL mode.
    pub fn open(path: impl AsRef<Path>) -> Result<Registry> {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("schema registry database is in journal mode {mode}, not WAL");
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        Registry::init(connection)
    }

    /// A registry that lives in memory only (for tests and embedding).
    pub fn in_memory() -> Result<Registry> {
        Registry::init(Connection::open_in_memory()?)
    }

    fn init(connection: Connection) -> Result<Registry> {
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > LAYOUT_VERSION {
            return Err(RegistryError::Internal(format!(
                "the schema registry database has layout version {version}, newer than this \
                 build understands ({LAYOUT_VERSION})"
            )));
        }
        connection.execute_batch(LAYOUT)?;
        connection.pragma_update(None, "user_version", LAYOUT_VERSION)?;
        Ok(Registry {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`.
    fn transaction<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Subjects with at least one version (not soft-deleted unless
    /// `include_deleted`), sorted, optionally only those starting with `prefix`.
    pub fn subjects(&self, include_deleted: bool, prefix: Option<&str>) -> Result<Vec<String>> {
        self.transaction(|tx| {
            let sql = if include_deleted {
                "SELECT DISTINCT subject FROM subject_versions ORDER BY subject"
            } else {
                "SELECT DISTINCT subject FROM subject_versions WHERE deleted = 0 ORDER BY subject"
            };
            let mut statement = tx.prepare(sql)?;
            let subjects = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(subjects
                .into_iter()
                .filter(|subject| prefix.is_none_or(|p| subject.starts_with(p)))
                .collect())
        })
    }

    /// The version numbers of a subject (40401 if it has none).
    pub fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<i64>> {
        self.transaction(|tx| {
            let versions: Vec<i64> = visible(&rows(tx, subject)?, include_deleted)
                .iter()
                .map(|row| row.version)
                .collect();
            if versions.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.into()));
            }
            Ok(versions)
        })
    }

    /// One version of a subject.
    pub fn subject_version(
        &self,
        subject: &str,
        version: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        self.transaction(|tx| {
            let rows = rows(tx, subject)?;
            let visible = visible(&rows, include_deleted);
            if visible.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.into()));
            }
            let row = match version {
                VersionSpec::Latest => visible.last().copied(),
                VersionSpec::Number(n) => visible.iter().find(|row| row.version == n).copied(),
            }
            .ok_or(RegistryError::VersionNotFound(match version {
                VersionSpec::Latest => -1,
                VersionSpec::Number(n) => n,
            }))?;
            Ok(SubjectVersion {
                subject: subject.into(),
                version: row.version,
                schema: load_schema(tx, row.schema_id)?,
            })
        })
    }

    /// Registers a schema under a subject and returns its global id. A schema
    /// the subject already has returns its id; one registered under another
    /// subject gets that subject's id; a new version must be compatible with
    /// the earlier ones under the subject's compatibility level (409 otherwise).
    pub fn register(&self, subject: &str, request: &SchemaRequest) -> Result<i64> {
        let schema_type = request.schema_type()?;
        let text = request.schema_text()?;
        self.transaction(|tx| {
            let prepared = prepare(tx, schema_type, text, request)?;
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM schemas WHERE identity = ?1",
                    [&prepared.identity],
                    |row| row.get(0),
                )
                .optional()?;
            let rows = rows(tx, subject)?;
            if let Some(id) = existing {
                if rows.iter().any(|row| !row.deleted && row.schema_id == id) {
                    return Ok(id);
                }
            }
            let level = effective_level(tx, subject)?;
            let live = visible(&rows, false);
            let targets: &[VersionRow] = if level.is_transitive() {
                &live
            } else {
                live.last().map(std::slice::from_ref).unwrap_or_default()
            };
            let problems = check(tx, level, &prepared, targets)?;
            if !problems.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.into(),
                    details: problems.join(", "),
                });
            }
            let id = match existing {
                Some(id) => id,
                None => insert_schema(tx, &prepared)?,
            };
            let version = rows.iter().map(|row| row.version).max().unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO subject_versions (subject, version, schema_id, deleted) VALUES (?1, ?2, ?3, 0)",
                params![subject, version, id],
            )?;
            tracing::debug!(subject, version, id, "schema registered");
            Ok(id)
        })
    }

    /// Finds a schema under a subject (`POST /subjects/{subject}`).
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let schema_type = request.schema_type()?;
        let text = request.schema_text()?;
        self.transaction(|tx| {
            let prepared = prepare(tx, schema_type, text, request)?;
            let rows = rows(tx, subject)?;
            let visible = visible(&rows, include_deleted);
            if visible.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.into()));
            }
            let id: i64 = tx
                .query_row(
                    "SELECT id FROM schemas WHERE identity = ?1",
                    [&prepared.identity],
                    |row| row.get(0),
                )
                .optional()?
                .ok_or(RegistryError::SchemaNotFound)?;
            let row = visible
                .iter()
                .rev()
                .find(|row| row.schema_id == id)
                .ok_or(RegistryError::SchemaNotFound)?;
            Ok(SubjectVersion {
                subject: subject.into(),
                version: row.version,
                schema: load_schema(tx, id)?,
            })
        })
    }

    /// Deletes a subject: soft (its versions are hidden but their ids stay
    /// readable), or with `permanent` after a soft delete, for good. Returns
    /// the versions deleted.
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i64>> {
        self.transaction(|tx| {
            let rows = rows(tx, subject)?;
            if rows.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.into()));
            }
            let live = visible(&rows, false);
            if !permanent {
                if live.is_empty() {
                    return Err(RegistryError::SubjectSoftDeleted(subject.into()));
                }
                for row in &live {
                    refuse_if_referenced(tx, subject, row.version, true)?;
                }
                tx.execute(
                    "UPDATE subject_versions SET deleted = 1 WHERE subject = ?1",
                    [subject],
                )?;
                Ok(live.iter().map(|row| row.version).collect())
            } else {
                if !live.is_empty() {
                    return Err(RegistryError::SubjectNotSoftDeleted(subject.into()));
                }
                for row in &rows {
                    refuse_if_referenced(tx, subject, row.version, false)?;
                }
                tx.execute("DELETE FROM subject_versions WHERE subject = ?1", [subject])?;
                tx.execute("DELETE FROM subject_config WHERE subject = ?1", [subject])?;
                Ok(rows.iter().map(|row| row.version).collect())
            }
        })
    }

    /// Deletes one version of a subject (soft, or permanent after soft).
    pub fn delete_version(
        &self,
        subject: &str,
        version: VersionSpec,
        permanent: bool,
    ) -> Result<i64> {
        self.transaction(|tx| {
            let rows = rows(tx, subject)?;
            let candidates = visible(&rows, permanent);
            if candidates.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.into()));
            }
            let number = match version {
                VersionSpec::Latest => candidates.last().map(|row| row.version).unwrap_or(-1),
                VersionSpec::Number(n) => n,
            };
            let row = rows
                .iter()
                .find(|row| row.version == number)
                .ok_or(RegistryError::VersionNotFound(number))?;
            if !permanent {
                if row.deleted {
                    return Err(RegistryError::VersionSoftDeleted(subject.into(), number));
                }
                refuse_if_referenced(tx, subject, number, true)?;
                tx.execute(
                    "UPDATE subject_versions SET deleted = 1 WHERE subject = ?1 AND version = ?2",
                    params![subject, number],
                )?;
            } else {
                if !row.deleted {
                    return Err(RegistryError::VersionNotSoftDeleted(subject.into(), number));
                }
                refuse_if_referenced(tx, subject, number, false)?;
                tx.execute(
                    "DELETE FROM subject_versions WHERE subject = ?1 AND version = ?2",
                    params![subject, number],
                )?;
            }
            Ok(number)
        })
    }

    /// A schema by global id. Soft-deleted versions keep their ids readable
    /// (consumers still meet them in old records); once every version using
    /// an id is permanently deleted it is gone (40403).
    pub fn schema_by_id(&self, id: i64) -> Result<StoredSchema> {
        self.transaction(|tx| {
            let used: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM subject_versions WHERE schema_id = ?1)",
                [id],
                |row| row.get(0),
            )?;
            if !used {
                return Err(RegistryError::SchemaIdNotFound(id));
            }
            load_schema(tx, id)
        })
    }

    /// The subject-versions that use a schema id.
    pub fn schema_versions(&self, id: i64, include_deleted: bool) -> Result<Vec<(String, i64)>> {
        self.transaction(|tx| {
            let all = subject_versions_of(tx, id)?;
            if all.is_empty() {
                return Err(RegistryError::SchemaIdNotFound(id));
            }
            Ok(all
                .into_iter()
                .filter(|(_, _, deleted)| include_deleted || !deleted)
                .map(|(subject, version, _)| (subject, version))
                .collect())
        })
    }

    /// The subjects that use a schema id.
    pub fn schema_subjects(&self, id: i64, include_deleted: bool) -> Result<Vec<String>> {
        let mut subjects: Vec<String> = self
            .schema_versions(id, include_deleted)?
            .into_iter()
            .map(|(subject, _)| subject)
            .collect();
        subjects.sort();
        subjects.dedup();
        Ok(subjects)
    }

    /// Ids of the (not deleted) schemas that reference a subject-version.
    pub fn referenced_by(&self, subject: &str, version: VersionSpec) -> Result<Vec<i64>> {
        let found = self.subject_version(subject, version, false)?;
        self.transaction(|tx| referencing_ids(tx, subject, found.version, true))
    }

    /// The global compatibility level.
    pub fn global_compatibility(&self) -> Result<CompatibilityLevel> {
        self.transaction(global_level)
    }

    /// Sets the global compatibility level.
    pub fn set_global_compatibility(&self, level: CompatibilityLevel) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT INTO global_config (name, value) VALUES ('compatibility', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [level.as_str()],
            )?;
            Ok(())
        })
    }

    /// Resets the global level to the default; returns the level it had.
    pub fn delete_global_compatibility(&self) -> Result<CompatibilityLevel> {
        self.transaction(|tx| {
            let previous = global_level(tx)?;
            tx.execute("DELETE FROM global_config WHERE name = 'compatibility'", [])?;
            Ok(previous)
        })
    }

    /// The subject's own compatibility level, if it has one.
    pub fn subject_compatibility(&self, subject: &str) -> Result<Option<CompatibilityLevel>> {
        self.transaction(|tx| subject_level(tx, subject))
    }

    /// Sets a subject's compatibility level (the subject need not exist yet).
    pub fn set_subject_compatibility(
        &self,
        subject: &str,
        level: CompatibilityLevel,
    ) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT INTO subject_config (subject, compatibility) VALUES (?1, ?2)
                 ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
                params![subject, level.as_str()],
            )?;
            Ok(())
        })
    }

    /// Removes a subject's own level (it follows the global one again);
    /// returns the level it had (40401 if it had none).
    pub fn delete_subject_compatibility(&self, subject: &str) -> Result<CompatibilityLevel> {
        self.transaction(|tx| {
            let previous = subject_level(tx, subject)?
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
            tx.execute("DELETE FROM subject_config WHERE subject = ?1", [subject])?;
            Ok(previous)
        })
    }

    /// Tests a schema against one version of a subject, or (with `None`)
    /// against the versions the subject's level checks. Returns the reasons
    /// it is incompatible: empty means compatible.
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        request: &SchemaRequest,
    ) -> Result<Vec<String>> {
        let schema_type = request.schema_type()?;
        let text = request.schema_text()?;
        self.transaction(|tx| {
            let prepared = prepare(tx, schema_type, text, request)?;
            let level = effective_level(tx, subject)?;
            let rows = rows(tx, subject)?;
            let live = visible(&rows, false);
            let targets: Vec<VersionRow> = match version {
                None if level.is_transitive() => live,
                None | Some(VersionSpec::Latest) => live.last().copied().into_iter().collect(),
                Some(VersionSpec::Number(n)) => {
                    if live.is_empty() {
                        return Err(RegistryError::SubjectNotFound(subject.into()));
                    }
                    vec![live
                        .iter()
                        .find(|row| row.version == n)
                        .copied()
                        .ok_or(RegistryError::VersionNotFound(n))?]
                }
            };
            check(tx, level, &prepared, &targets)
        })
    }
}

/// A schema from a request, validated, with its references resolved.
struct Prepared {
    schema_type: SchemaType,
    text: String,
    references: Vec<SchemaReference>,
    /// Texts of the schemas the references bring in, dependencies first.
    referenced: Vec<String>,
    identity: String,
}

fn prepare(
    tx: &Transaction,
    schema_type: SchemaType,
    text: &str,
    request: &SchemaRequest,
) -> Result<Prepared> {
    let (references, referenced) =
        resolve_references(tx, request.references.as_deref().unwrap_or_default())?;
    let normalized = normalize(schema_type, text, &referenced)?;
    let references_json = serde_json::to_string(&references)
        .map_err(|error| RegistryError::Internal(error.to_string()))?;
    Ok(Prepared {
        schema_type,
        text: text.to_string(),
        identity: format!("{schema_type}\n{references_json}\n{normalized}"),
        references,
        referenced,
    })
}

/// Pins `-1` versions to the latest and collects the referenced schemas'
/// texts (transitively, each once, dependencies first).
fn resolve_references(
    tx: &Transaction,
    references: &[SchemaReference],
) -> Result<(Vec<SchemaReference>, Vec<String>)> {
    let mut resolved = Vec::with_capacity(references.len());
    let mut texts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for reference in references {
        let pinned = pin_reference(tx, reference)?;
        collect_referenced(tx, &pinned, &mut seen, &mut texts)?;
        resolved.push(pinned);
    }
    Ok((resolved, texts))
}

fn pin_reference(tx: &Transaction, reference: &SchemaReference) -> Result<SchemaReference> {
    let invalid = |what: &str| {
        RegistryError::InvalidSchema(format!(
            "Invalid schema: reference '{}' to subject '{}' version {}: {what}",
            reference.name, reference.subject, reference.version
        ))
    };
    if reference.name.is_empty() || reference.subject.is_empty() {
        return Err(invalid("a reference needs a name and a subject"));
    }
    let rows = rows(tx, &reference.subject)?;
    let version = match reference.version {
        -1 => visible(&rows, false)
            .last()
            .map(|row| row.version)
            .ok_or_else(|| invalid("the subject has no versions"))?,
        n if rows.iter().any(|row| row.version == n) => n,
        _ => return Err(invalid("no such version")),
    };
    Ok(SchemaReference {
        version,
        ..reference.clone()
    })
}

fn collect_referenced(
    tx: &Transaction,
    reference: &SchemaReference,
    seen: &mut std::collections::HashSet<i64>,
    texts: &mut Vec<String>,
) -> Result<()> {
    let id: i64 = tx.query_row(
        "SELECT schema_id FROM subject_versions WHERE subject = ?1 AND version = ?2",
        params![reference.subject, reference.version],
        |row| row.get(0),
    )?;
    if !seen.insert(id) {
        return Ok(());
    }
    let stored = load_schema(tx, id)?;
    for inner in &stored.references {
        collect_referenced(tx, inner, seen, texts)?;
    }
    texts.push(stored.schema);
    Ok(())
}

fn insert_schema(tx: &Transaction, prepared: &Prepared) -> Result<i64> {
    let references_json = serde_json::to_string(&prepared.references)
        .map_err(|error| RegistryError::Internal(error.to_string()))?;
    tx.execute(
        "INSERT INTO schemas (schema_type, schema, refs, identity) VALUES (?1, ?2, ?3, ?4)",
        params![
            prepared.schema_type.as_str(),
            prepared.text,
            references_json,
            prepared.identity
        ],
    )?;
    let id = tx.last_insert_rowid();
    for reference in &prepared.references {
        tx.execute(
            "INSERT INTO schema_refs (schema_id, name, subject, version) VALUES (?1, ?2, ?3, ?4)",
            params![id, reference.name, reference.subject, reference.version],
        )?;
    }
    Ok(id)
}

/// Checks `prepared` against each target version under `level`; returns the
/// incompatibilities as Confluent words them (empty: compatible).
///
/// Only Avro schemas are checked; JSON Schema and Protobuf are accepted as
/// under `NONE`. A change of schema type is incompatible unless `NONE`.
fn check(
    tx: &Transaction,
    level: CompatibilityLevel,
    prepared: &Prepared,
    targets: &[VersionRow],
) -> Result<Vec<String>> {
    let mut messages = Vec::new();
    if level == CompatibilityLevel::None || targets.is_empty() {
        return Ok(messages);
    }
    let mut new_avro: Option<AvroSchema> = None;
    for target in targets.iter().rev() {
        let old = load_schema(tx, target.schema_id)?;
        let mut found: Vec<String> = Vec::new();
        if old.schema_type != prepared.schema_type {
            found.push(format!(
                "{{errorType:'TYPE_MISMATCH', description:'The new schema is of type {} but the old schema is of type {}', additionalInfo:''}}",
                prepared.schema_type, old.schema_type
            ));
        } else if prepared.schema_type == SchemaType::Avro {
            if new_avro.is_none() {
                new_avro = Some(parse_avro(&prepared.text, &prepared.referenced).map_err(
                    |message| RegistryError::InvalidSchema(format!("Invalid schema: {message}")),
                )?);
            }
            let new = new_avro.as_ref().expect("parsed above");
            let old_avro = parse_stored_avro(tx, &old)?;
            found.extend(
                check_avro(level, new, &old_avro)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        if !found.is_empty() {
            messages.extend(found);
            messages.push(format!("{{oldSchemaVersion: {}}}", target.version));
            messages.push(format!("{{oldSchema: '{}'}}", old.schema));
            messages.push(format!("{{compatibility: '{level}'}}"));
        }
    }
    Ok(messages)
}

fn parse_stored_avro(tx: &Transaction, stored: &StoredSchema) -> Result<AvroSchema> {
    let mut texts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for reference in &stored.references {
        collect_referenced(tx, reference, &mut seen, &mut texts)?;
    }
    parse_avro(&stored.schema, &texts).map_err(|message| {
        RegistryError::Internal(format!(
            "stored schema {} no longer parses: {message}",
            stored.id
        ))
    })
}

fn rows(tx: &Transaction, subject: &str) -> Result<Vec<VersionRow>> {
    let mut statement = tx.prepare_cached(
        "SELECT version, schema_id, deleted FROM subject_versions WHERE subject = ?1 ORDER BY version",
    )?;
    let rows = statement
        .query_map([subject], |row| {
            Ok(VersionRow {
                version: row.get(0)?,
                schema_id: row.get(1)?,
                deleted: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn visible(rows: &[VersionRow], include_deleted: bool) -> Vec<VersionRow> {
    rows.iter()
        .filter(|row| include_deleted || !row.deleted)
        .copied()
        .collect()
}

fn load_schema(tx: &Transaction, id: i64) -> Result<StoredSchema> {
    let (schema_type, schema, refs): (String, String, String) = tx
        .query_row(
            "SELECT schema_type, schema, refs FROM schemas WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?
        .ok_or(RegistryError::SchemaIdNotFound(id))?;
    let references = serde_json::from_str(&refs).map_err(|error| {
        RegistryError::Internal(format!("stored references of schema {id}: {error}"))
    })?;
    Ok(StoredSchema {
        id,
        schema_type: SchemaType::parse(&schema_type)?,
        schema,
        references,
    })
}

fn subject_versions_of(tx: &Transaction, id: i64) -> Result<Vec<(String, i64, bool)>> {
    let mut statement = tx.prepare_cached(
        "SELECT subject, version, deleted FROM subject_versions WHERE schema_id = ?1 ORDER BY subject, version",
    )?;
    let found = statement
        .query_map([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

/// Ids of schemas referencing a subject-version that some subject still uses
/// (only not-deleted uses when `live_only`).
fn referencing_ids(
    tx: &Transaction,
    subject: &str,
    version: i64,
    live_only: bool,
) -> Result<Vec<i64>> {
    let mut statement = tx.prepare_cached(
        "SELECT DISTINCT r.schema_id FROM schema_refs r
         JOIN subject_versions v ON v.schema_id = r.schema_id
         WHERE r.subject = ?1 AND r.version = ?2 AND (?3 = 0 OR v.deleted = 0)
         ORDER BY r.schema_id",
    )?;
    let ids = statement
        .query_map(params![subject, version, live_only], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

fn refuse_if_referenced(
    tx: &Transaction,
    subject: &str,
    version: i64,
    live_only: bool,
) -> Result<()> {
    if referencing_ids(tx, subject, version, live_only)?.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::ReferenceExists(subject.into(), version))
    }
}

fn global_level(tx: &Transaction) -> Result<CompatibilityLevel> {
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM global_config WHERE name = 'compatibility'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    match stored {
        Some(text) => CompatibilityLevel::parse(&text),
        None => Ok(CompatibilityLevel::DEFAULT),
    }
}

fn subject_level(tx: &Transaction, subject: &str) -> Result<Option<CompatibilityLevel>> {
    let stored: Option<String> = tx
        .query_row(
            "SELECT compatibility FROM subject_config WHERE subject = ?1",
            [subject],
            |row| row.get(0),
        )
        .optional()?;
    stored
        .map(|text| CompatibilityLevel::parse(&text))
        .transpose()
}

fn effective_level(tx: &Transaction, subject: &str) -> Result<CompatibilityLevel> {
    match subject_level(tx, subject)? {
        Some(level) => Ok(level),
        None => global_level(tx),
    }
}
