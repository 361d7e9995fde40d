//! The `filesystem` connector: reads a file or directory of `json`/`csv` lines
//! (once, or following new files and appended lines), and writes rolling part
//! files into a directory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::connector::{
    ConnectorFactory, JobContext, SinkConnector, SinkWriter, SourceConnector, SourceReader,
};
use sluice_core::dlq::{BadRecordPolicy, BAD_RECORD_OPTIONS};
use sluice_core::options::OptionSpec;
use sluice_core::table::TableDef;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::formats::{Format, RecordEncoder};
use crate::lines::{list_files, pump_files, spawn_line_source, ConsumedLines};
use crate::{project_schema, validate_options};

const FILESYSTEM_OPTIONS: [OptionSpec; 7] = [
    OptionSpec::required("connector", "'filesystem'"),
    OptionSpec::required(
        "path",
        "a file or directory to read, or the directory to write part files into",
    ),
    OptionSpec::required("format", "'json' or 'csv'"),
    OptionSpec::optional(
        "source.monitor-interval",
        "follow new files and appended lines, checking this often (e.g. '1 s'); unset = read once",
    ),
    OptionSpec::optional(
        "sink.rolling-policy.file-size",
        "roll a part file at this size (default 128mb)",
    ),
    OptionSpec::optional(
        "sink.rolling-policy.rollover-interval",
        "roll a part file after this long (default 30 min)",
    ),
    OptionSpec::optional(
        "sink.rolling-policy.check-interval",
        "accepted for compatibility; rolling is checked on every write",
    ),
];

/// Creates `filesystem` sources and sinks.
pub struct FilesystemConnector;

impl FilesystemConnector {
    fn format(table: &TableDef) -> Result<Format> {
        let format = Format::from_options(&table.options)?;
        validate_options(
            table,
            &[
                &FILESYSTEM_OPTIONS,
                &BAD_RECORD_OPTIONS,
                format.option_specs(),
            ],
        )?;
        Ok(format)
    }
}

impl ConnectorFactory for FilesystemConnector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn reads_row_fields_by_name(&self, table: &TableDef) -> bool {
        matches!(Format::from_options(&table.options), Ok(Format::Json(_)))
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        let format = Self::format(table)?;
        let path = PathBuf::from(table.options.require("path")?);
        let monitor_interval = table.options.duration("source.monitor-interval")?;
        if monitor_interval.is_none() {
            // A bounded read of a missing path fails now, not mid-job.
            list_files(&path)
                .map_err(|e| SluiceError::Config(format!("table `{}`: {e}", table.name)))?;
        }
        let schema = project_schema(table, projection);
        // Fail on unsupported column types now rather than when reading.
        format.decoder(schema.clone(), BadRecordPolicy::fail(&table.name), 1)?;
        let policy = BadRecordPolicy::from_options(
            &table.name,
            &table.options,
            format.ignore_parse_errors(),
            &job.dead_letter_dir(),
        )?;
        Ok(Arc::new(FileSource {
            path,
            format,
            schema,
            monitor_interval,
            policy,
            lines_per_chunk: job.batch_size,
            table: table.name.clone(),
        }))
    }

    fn create_sink(&self, table: &TableDef, job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        let format = Self::format(table)?;
        let schema = table.physical_schema();
        format.encoder(schema.clone())?;
        let options = &table.options;
        Ok(Arc::new(FileSink {
            directory: PathBuf::from(options.require("path")?),
            format,
            schema,
            max_file_size: options
                .size("sink.rolling-policy.file-size")?
                .unwrap_or(128 << 20),
            rollover_interval: options
                .duration("sink.rolling-policy.rollover-interval")?
                .unwrap_or(Duration::from_secs(30 * 60)),
            exactly_once: job.exactly_once,
        }))
    }
}

#[derive(Debug)]
struct FileSource {
    table: String,
    path: PathBuf,
    format: Format,
    schema: SchemaRef,
    monitor_interval: Option<Duration>,
    policy: BadRecordPolicy,
    lines_per_chunk: usize,
}

impl SourceConnector for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn produces_updates(&self) -> bool {
        self.format.accepts_updates()
    }

    fn is_bounded(&self) -> bool {
        self.monitor_interval.is_none()
    }

    fn bad_records(&self) -> Option<&BadRecordPolicy> {
        Some(&self.policy)
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    /// Resumes after the lines every reader of the checkpointed run consumed
    /// (at any parallelism: readers share one queue of line chunks).
    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        let consumed = ConsumedLines::from_positions(positions)?;
        let path = self.path.clone();
        let lines = self.lines_per_chunk;
        let interval = self.monitor_interval;
        let skip = consumed.clone();
        spawn_line_source(
            format!("read-{}", self.table),
            parallelism,
            &self.policy,
            &|policy| {
                self.format
                    .decoder(self.schema.clone(), policy, self.lines_per_chunk)
            },
            consumed,
            move |sender| pump_files(&path, lines, interval, &skip, sender),
        )
    }

    fn describe(&self) -> String {
        let mode = match self.monitor_interval {
            Some(interval) => format!("following every {interval:?}"),
            None => "bounded".to_string(),
        };
        format!(
            "filesystem {} ({}, {mode})",
            self.path.display(),
            self.format.extension()
        )
    }
}

#[derive(Debug)]
struct FileSink {
    directory: PathBuf,
    format: Format,
    schema: SchemaRef,
    max_file_size: u64,
    rollover_interval: Duration,
    /// Part files are published when the checkpoint covering them completes.
    exactly_once: bool,
}

/// A closed part file waiting for its checkpoint to complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingPart {
    in_progress: PathBuf,
    finished: PathBuf,
}

impl SinkConnector for FileSink {
    fn accepts_updates(&self) -> bool {
        self.format.accepts_updates()
    }

    /// Renames the pre-committed part files to their final names (a part
    /// already renamed by an earlier commit is skipped).
    fn commit(&self, pending: &[u8]) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let parts: Vec<PendingPart> = serde_json::from_slice(pending)
            .map_err(|e| SluiceError::State(format!("unreadable pending part list: {e}")))?;
        for part in parts {
            match std::fs::rename(&part.in_progress, &part.finished) {
                Ok(()) => {}
                Err(_) if part.finished.exists() => {}
                Err(e) => {
                    return Err(SluiceError::io(
                        format!(
                            "publishing '{}' (its in-progress file is gone)",
                            part.finished.display()
                        ),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Deletes the part files an unusable checkpoint published.
    fn uncommit(&self, pending: &[u8]) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let parts: Vec<PendingPart> = serde_json::from_slice(pending)
            .map_err(|e| SluiceError::State(format!("unreadable pending part list: {e}")))?;
        for part in parts {
            for path in [&part.finished, &part.in_progress] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(SluiceError::io(format!("removing '{}'", path.display()), e))
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes in-progress part files no completed checkpoint covers: the
    /// output of the crashed run after its last checkpoint, which the resumed
    /// run writes again.
    fn discard_uncommitted(&self, _committed: &[Vec<u8>]) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".part-") && name.ends_with(".inprogress") {
                std::fs::remove_file(entry.path()).map_err(|e| {
                    SluiceError::io(format!("discarding '{}'", entry.path().display()), e)
                })?;
            }
        }
        Ok(())
    }

    fn open(&self, subtask: usize, _parallelism: usize) -> Result<Box<dyn SinkWriter>> {
        std::fs::create_dir_all(&self.directory).map_err(|e| {
            SluiceError::io(
                format!("creating sink directory '{}'", self.directory.display()),
                e,
            )
        })?;
        Ok(Box::new(PartFileWriter {
            directory: self.directory.clone(),
            // Unique per writer, so a restarted run never reuses a published name.
            prefix: format!(
                "part-{:x}-{subtask}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
            exactly_once: self.exactly_once,
            pending: Vec::new(),
            extension: self.format.extension(),
            encoder: self.format.encoder(self.schema.clone())?,
            max_file_size: self.max_file_size,
            rollover_interval: self.rollover_interval,
            counter: 0,
            current: None,
            buffer: Vec::new(),
        }))
    }

    fn describe(&self) -> String {
        format!(
            "filesystem {} ({})",
            self.directory.display(),
            self.format.extension()
        )
    }
}

struct OpenPart {
    in_progress: PathBuf,
    finished: PathBuf,
    writer: BufWriter<File>,
    size: u64,
    opened: Instant,
}

/// Writes `.part-*.inprogress` files and renames them to `part-*` when they
/// roll or the job ends, so readers never see half-written files. With
/// checkpoints, closed parts wait for the checkpoint that covers them.
struct PartFileWriter {
    exactly_once: bool,
    pending: Vec<PendingPart>,
    directory: PathBuf,
    prefix: String,
    extension: &'static str,
    encoder: Box<dyn RecordEncoder>,
    max_file_size: u64,
    rollover_interval: Duration,
    counter: u64,
    current: Option<OpenPart>,
    buffer: Vec<u8>,
}

impl PartFileWriter {
    fn open_part(&mut self) -> Result<&mut OpenPart> {
        if self.current.is_none() {
            let name = format!("{}-{}.{}", self.prefix, self.counter, self.extension);
            self.counter += 1;
            let in_progress = self.directory.join(format!(".{name}.inprogress"));
            let file = File::create(&in_progress)
                .map_err(|e| SluiceError::io(format!("creating '{}'", in_progress.display()), e))?;
            self.current = Some(OpenPart {
                in_progress,
                finished: self.directory.join(name),
                writer: BufWriter::with_capacity(1 << 20, file),
                size: 0,
                opened: Instant::now(),
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| SluiceError::Runtime("part file vanished".into()))
    }

    fn close_part(&mut self) -> Result<()> {
        if let Some(mut part) = self.current.take() {
            part.writer.flush().map_err(|e| {
                SluiceError::io(format!("writing '{}'", part.in_progress.display()), e)
            })?;
            drop(part.writer);
            if self.exactly_once {
                self.pending.push(PendingPart {
                    in_progress: part.in_progress,
                    finished: part.finished,
                });
            } else {
                std::fs::rename(&part.in_progress, &part.finished).map_err(|e| {
                    SluiceError::io(format!("publishing '{}'", part.finished.display()), e)
                })?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SinkWriter for PartFileWriter {
    async fn write(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.buffer.clear();
        let mut buffer = std::mem::take(&mut self.buffer);
        self.encoder.encode(batch, &mut buffer)?;
        let (max_size, max_age) = (self.max_file_size, self.rollover_interval);
        let part = self.open_part()?;
        part.writer
            .write_all(&buffer)
            .map_err(|e| SluiceError::io(format!("writing '{}'", part.in_progress.display()), e))?;
        part.size += buffer.len() as u64;
        let roll = part.size >= max_size || part.opened.elapsed() >= max_age;
        self.buffer = buffer;
        if roll {
            self.close_part()?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.close_part()
    }

    /// Closes the open part; returns every closed part not yet committed.
    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.close_part()?;
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let pending = std::mem::take(&mut self.pending);
        serde_json::to_vec(&pending)
            .map_err(|e| SluiceError::State(format!("encoding pending part files: {e}")))
    }
}
