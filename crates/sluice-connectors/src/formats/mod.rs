//! Record formats for line-oriented connectors: newline-delimited `json` and
//! `csv`, configured with Flink's option names.

pub mod avro;
pub mod csv;
pub mod json;
mod json_direct;
pub mod message;
pub mod protobuf;
pub mod raw;
pub mod schema_registry;

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
    /// One STRING or BYTES column, the whole message (message connectors only).
    Raw,
    /// Avro binary, one record per message, schema derived from the table.
    Avro(avro::AvroOptions),
    /// Avro in Confluent's wire format, schemas in a schema registry.
    AvroConfluent(avro::AvroConfluentOptions),
    /// Protobuf messages described by a descriptor set.
    Protobuf(Box<protobuf::ProtobufOptions>),
}

/// Names of the formats line-oriented connectors accept.
pub const FORMAT_NAMES: [&str; 3] = ["json", "csv", "debezium-json"];

/// Names of the formats message connectors (Kafka) accept.
pub const MESSAGE_FORMAT_NAMES: [&str; 7] = [
    "json",
    "csv",
    "debezium-json",
    "raw",
    "avro",
    "avro-confluent",
    "protobuf",
];

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
            Format::Raw => &raw::RAW_OPTIONS,
            Format::Avro(_) => &avro::AVRO_OPTIONS,
            Format::AvroConfluent(_) => &avro::AVRO_CONFLUENT_OPTIONS,
            Format::Protobuf(_) => &protobuf::PROTOBUF_OPTIONS,
        }
    }

    /// Reads a message connector's format (`format`, or `key.format` after
    /// the connector moved the key's options to unprefixed keys), which may
    /// also be one of the message-only formats.
    pub fn for_messages(options: &Options) -> Result<Format> {
        match options.require("format")? {
            "raw" => Ok(Format::Raw),
            "avro" => Ok(Format::Avro(avro::AvroOptions::from_options(options)?)),
            "avro-confluent" => Ok(Format::AvroConfluent(
                avro::AvroConfluentOptions::from_options(options)?,
            )),
            "protobuf" => Ok(Format::Protobuf(Box::new(
                protobuf::ProtobufOptions::from_options(options)?,
            ))),
            name if FORMAT_NAMES.contains(&name) => Format::from_options(options),
            other => Err(SluiceError::Config(format!(
                "{}: unknown format '{other}'; available formats: {}",
                options.owner(),
                MESSAGE_FORMAT_NAMES.join(", ")
            ))),
        }
    }

    /// Whether the format must decode every column of the value (its layout
    /// is positional), not just the ones a query reads.
    pub fn decodes_all_columns(&self) -> bool {
        matches!(self, Format::Raw | Format::Avro(_))
    }

    /// Checks that the format can carry the columns of `schema`.
    pub fn check_message_schema(&self, options: &Options, schema: &SchemaRef) -> Result<()> {
        match self {
            Format::Raw => raw::check(options, schema),
            _ => Ok(()),
        }
    }

    /// A decoder of messages into rows of `schema`. With `origins`, every
    /// row is traced back to its message (for key and metadata columns).
    pub fn message_decoder(
        &self,
        schema: SchemaRef,
        policy: BadRecordPolicy,
        batch_size: usize,
        context: &message::MessageContext,
        origins: bool,
    ) -> Result<Box<dyn message::MessageDecoder>> {
        match self {
            Format::Raw => Ok(Box::new(raw::RawDecoder::new(schema, policy))),
            Format::Avro(options) => Ok(Box::new(avro::AvroDecoder::new(
                schema,
                options.clone(),
                context,
                policy,
                batch_size,
            )?)),
            Format::AvroConfluent(options) => Ok(Box::new(avro::AvroDecoder::confluent(
                schema,
                options.clone(),
                context,
                policy,
                batch_size,
            )?)),
            Format::Protobuf(options) => Ok(Box::new(protobuf::ProtobufDecoder::new(
                schema,
                options.as_ref().clone(),
                context,
                policy,
            )?)),
            _ => {
                let careful = self.decoder(schema.clone(), policy, batch_size)?;
                let make_fast = origins.then(|| {
                    let format = self.clone();
                    let table = "messages".to_string();
                    Box::new(move || {
                        format.decoder(schema.clone(), BadRecordPolicy::fail(&table), batch_size)
                    }) as message::MakeLineDecoder
                });
                Ok(Box::new(message::LineMessages::new(
                    careful,
                    make_fast,
                    self.accepts_updates(),
                )?))
            }
        }
    }

    /// An encoder of rows of `schema` into messages.
    pub fn message_encoder(
        &self,
        schema: SchemaRef,
        context: &message::MessageContext,
    ) -> Result<Box<dyn message::MessageEncoder>> {
        match self {
            Format::Raw => Ok(Box::new(raw::RawEncoder)),
            Format::Avro(options) => Ok(Box::new(avro::AvroEncoder::new(
                schema,
                options.clone(),
                context,
            )?)),
            Format::AvroConfluent(options) => Ok(Box::new(avro::AvroEncoder::confluent(
                schema,
                options.clone(),
                context,
            )?)),
            Format::Protobuf(options) => Ok(Box::new(protobuf::ProtobufEncoder::new(
                schema,
                options.as_ref().clone(),
                context,
            )?)),
            _ => Ok(Box::new(message::LineEncoder(self.encoder(schema)?))),
        }
    }

    /// Whether the format's own flag asks to skip bad records.
    pub fn ignore_parse_errors(&self) -> bool {
        match self {
            Format::Json(options) | Format::DebeziumJson(options) => options.ignore_parse_errors,
            Format::Csv(options) => options.ignore_parse_errors,
            Format::Protobuf(options) => options.ignore_parse_errors,
            Format::Raw | Format::Avro(_) | Format::AvroConfluent(_) => false,
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
            Format::Raw => "raw",
            Format::Avro(_) => "avro",
            Format::AvroConfluent(_) => "avro-confluent",
            Format::Protobuf(_) => "protobuf",
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
            _ => Err(message_only()),
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
            _ => Err(message_only()),
        }
    }
}

fn message_only() -> SluiceError {
    SluiceError::Config(
        "the raw, avro and protobuf formats are for message connectors (kafka); files use 'json', 'csv' or 'debezium-json'".into(),
    )
}

/// Concatenates per-line batches, or returns `None` when there are none.
pub(crate) fn concat(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>> {
    match batches.len() {
        0 => Ok(None),
        1 => Ok(batches.into_iter().next()),
        _ => Ok(Some(arrow::compute::concat_batches(schema, &batches)?)),
    }
}
