//! Record formats for line-oriented connectors: newline-delimited `json` and
//! `csv`, configured with Flink's option names.

pub mod csv;
pub mod json;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::{OptionSpec, Options};
use sluice_core::{ChangeBatch, Result, SluiceError};

/// A run of complete input lines, with where they came from.
#[derive(Debug, Clone)]
pub struct LineChunk {
    /// File path (or `stdin`) the lines came from.
    pub source: std::sync::Arc<str>,
    /// 1-based number of the first line.
    pub first_line: u64,
    /// The lines, each ended by `\n` (the last one may not be).
    pub data: Vec<u8>,
    /// Number of lines.
    pub line_count: u64,
    /// Byte offset of the first line in its input.
    pub start_offset: u64,
    /// Byte offset just past the last line.
    pub end_offset: u64,
}

impl LineChunk {
    /// A chunk of `data` that is a whole input by itself (tests, examples).
    pub fn whole(source: &str, first_line: u64, data: Vec<u8>) -> Self {
        let line_count = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        LineChunk {
            source: std::sync::Arc::from(source),
            first_line,
            line_count,
            start_offset: 0,
            end_offset: data.len() as u64,
            data,
        }
    }

    /// The lines with their numbers, without line terminators.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let data = self.data.strip_suffix(b"\n").unwrap_or(&self.data);
        data.split(|b| *b == b'\n')
            .enumerate()
            .map(move |(i, line)| {
                (
                    self.first_line + i as u64,
                    line.strip_suffix(b"\r").unwrap_or(line),
                )
            })
    }
}

/// Turns chunks of lines into change batches, applying the bad-record policy.
pub trait RecordDecoder: Send {
    /// Decodes every record of `chunk`; bad records go to the policy.
    fn decode(&mut self, chunk: &LineChunk) -> Result<Option<ChangeBatch>>;
}

/// Turns record batches into lines of bytes.
pub trait RecordEncoder: Send {
    /// Appends one line per row of `batch` to `out`.
    fn encode(&mut self, batch: &ChangeBatch, out: &mut Vec<u8>) -> Result<()>;
}

/// Fails on update or delete rows, which `format` cannot represent.
pub(crate) fn require_inserts(batch: &ChangeBatch, format: &str) -> Result<()> {
    if batch.kinds.is_some()
        && (0..batch.num_rows()).any(|row| batch.kind(row) != sluice_core::RowKind::Insert)
    {
        return Err(SluiceError::Format(format!(
            "the {format} format cannot write updates or deletes; use 'format' = 'debezium-json'"
        )));
    }
    Ok(())
}

/// A configured format.
#[derive(Debug, Clone)]
pub enum Format {
    /// Newline-delimited JSON.
    Json(json::JsonOptions),
    /// CSV, one record per line.
    Csv(csv::CsvOptions),
    /// Changelog as Debezium JSON envelopes (`before`, `after`, `op`).
    DebeziumJson(json::JsonOptions),
}

/// Names of the formats line-oriented connectors accept.
pub const FORMAT_NAMES: [&str; 3] = ["json", "csv", "debezium-json"];

impl Format {
    /// Reads `format` and the format's own options from a table's options.
    pub fn from_options(options: &Options) -> Result<Format> {
        let name = options.require("format")?;
        match name {
            "json" => Ok(Format::Json(json::JsonOptions::from_options(options)?)),
            "csv" => Ok(Format::Csv(csv::CsvOptions::from_options(options)?)),
            "debezium-json" => Ok(Format::DebeziumJson(json::JsonOptions::with_prefix(
                options,
                "debezium-json",
            )?)),
            other => Err(SluiceError::Config(format!(
                "{}: unknown format '{other}'; available formats: {}",
                options.owner(),
                FORMAT_NAMES.join(", ")
            ))),
        }
    }

    /// The option keys the format accepts.
    pub fn option_specs(&self) -> &'static [OptionSpec] {
        match self {
            Format::Json(_) => &json::JSON_OPTIONS,
            Format::Csv(_) => &csv::CSV_OPTIONS,
            Format::DebeziumJson(_) => &json::DEBEZIUM_JSON_OPTIONS,
        }
    }

    /// Whether the format's own flag asks to skip bad records.
    pub fn ignore_parse_errors(&self) -> bool {
        match self {
            Format::Json(options) | Format::DebeziumJson(options) => options.ignore_parse_errors,
            Format::Csv(options) => options.ignore_parse_errors,
        }
    }

    /// Whether the format can write updates and deletes (and reads them:
    /// a source in this format produces a changelog).
    pub fn accepts_updates(&self) -> bool {
        matches!(self, Format::DebeziumJson(_))
    }

    /// File name extension for part files.
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Json(_) | Format::DebeziumJson(_) => "json",
            Format::Csv(_) => "csv",
        }
    }

    /// A decoder producing `schema`.
    pub fn decoder(
        &self,
        schema: SchemaRef,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Box<dyn RecordDecoder>> {
        match self {
            Format::Json(options) => Ok(Box::new(json::JsonDecoder::new(
                schema,
                options.clone(),
                policy,
                batch_size,
            )?)),
            Format::Csv(options) => Ok(Box::new(csv::CsvDecoder::new(
                schema,
                options.clone(),
                policy,
                batch_size,
            )?)),
            Format::DebeziumJson(options) => Ok(Box::new(json::DebeziumDecoder::new(
                schema,
                options.clone(),
                policy,
                batch_size,
            )?)),
        }
    }

    /// An encoder for batches of `schema`.
    pub fn encoder(&self, schema: SchemaRef) -> Result<Box<dyn RecordEncoder>> {
        match self {
            Format::Json(options) => Ok(Box::new(json::JsonEncoder::new(
                schema,
                options.clone(),
                false,
            )?)),
            Format::DebeziumJson(options) => Ok(Box::new(json::JsonEncoder::new(
                schema,
                options.clone(),
                true,
            )?)),
            Format::Csv(options) => Ok(Box::new(csv::CsvEncoder::new(schema, options.clone())?)),
        }
    }
}

/// Concatenates per-line batches, or returns `None` when there are none.
pub(crate) fn concat(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>> {
    match batches.len() {
        0 => Ok(None),
        1 => Ok(batches.into_iter().next()),
        _ => Ok(Some(arrow::compute::concat_batches(schema, &batches)?)),
    }
}
