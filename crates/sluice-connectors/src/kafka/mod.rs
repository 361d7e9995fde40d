//! The `kafka` connector (Flink's option names), on librdkafka through
//! `rdkafka`.
//!
//! Source: the partitions of `topic` are spread over the source subtasks
//! (partition `i` of the sorted list goes to subtask `i % parallelism`); each
//! subtask reads its partitions from the startup offsets, or from the offsets
//! a checkpoint recorded (the checkpoint is the source of truth; offsets are
//! also committed to `properties.group.id`, when given, for monitoring tools).
//! `scan.bounded.mode = 'latest-offset'` stops at the end offsets seen at start.
//! Message values are decoded with the table's `format` (`json`, `csv`); the
//! "line" of a bad record is its offset.
//!
//! Sink: one producer per subtask, values encoded with `format`, keys with
//! `key.format` from `key.fields`; `sink.partitioner` picks partitions; with
//! `sink.delivery-guarantee = 'at-least-once'` (the default) every checkpoint
//! waits until all records sent so far are acknowledged; `'exactly-once'`
//! writes each checkpoint's records in a Kafka transaction once the
//! checkpoint completes (see `sink.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use sluice_core::connector::{ConnectorFactory, JobContext, SinkConnector, SourceConnector};
use sluice_core::dlq::{BadRecordPolicy, BAD_RECORD_OPTIONS};
use sluice_core::options::{OptionSpec, Options};
use sluice_core::table::{metadata_key, MetadataSpec, TableDef};
use sluice_core::{Result, SluiceError};

use crate::formats::message::MessageContext;
use crate::formats::Format;
use crate::{project_schema, SOURCE_OPTIONS};
use arrow::datatypes::{Schema, SchemaRef};

mod record;
pub mod repartition;
mod sink;
mod source;
mod upsert;

use record::{ColumnSource, MetadataColumn, KAFKA_METADATA};
use sink::{Guarantee, KafkaSink, KeySpec, Partitioner};
use source::{Decoding, KafkaSource};

const KAFKA_OPTIONS: [OptionSpec; 18] = [
    OptionSpec::required("connector", "'kafka' or 'upsert-kafka'"),
    OptionSpec::optional(
        "topic",
        "the topic to read or write (sources: several separated by ';')",
    ),
    OptionSpec::optional(
        "topic-pattern",
        "sources: read every topic whose name matches this regular expression",
    ),
    OptionSpec::required(
        "properties.bootstrap.servers",
        "Kafka brokers, e.g. 'localhost:9092' (every other 'properties.*' key goes to librdkafka as is)",
    ),
    OptionSpec::optional("format", "value format: 'json', 'csv', 'raw', 'debezium-json', 'avro', 'avro-confluent', 'protobuf'"),
    OptionSpec::optional("value.format", "same as 'format'"),
    OptionSpec::optional(
        "value.fields-include",
        "'ALL' (default: the value holds every physical column) or 'EXCEPT_KEY' (the key columns are only in the key)",
    ),
    OptionSpec::optional(
        "scan.startup.mode",
        "'group-offsets' (default; earliest without committed offsets), 'earliest-offset', 'latest-offset', 'timestamp', 'specific-offsets'",
    ),
    OptionSpec::optional(
        "scan.startup.timestamp-millis",
        "start at the first record at or after this epoch time (mode 'timestamp')",
    ),
    OptionSpec::optional(
        "scan.startup.specific-offsets",
        "'partition:0,offset:42;partition:1,offset:300' (mode 'specific-offsets'; other partitions start at the earliest offset)",
    ),
    OptionSpec::optional(
        "scan.bounded.mode",
        "'unbounded' (default) or 'latest-offset': stop at the end offsets seen when the job starts",
    ),
    OptionSpec::optional(
        "scan.topic-partition-discovery.interval",
        "list topics and partitions again at this interval and read new ones from their start (default: 5 min with 'topic-pattern', off otherwise; '0' turns it off)",
    ),
    OptionSpec::optional(
        "sink.delivery-guarantee",
        "'at-least-once' (default: every checkpoint waits for acknowledgements), 'exactly-once' (a transaction per checkpoint) or 'none'",
    ),
    OptionSpec::optional(
        "sink.partitioner",
        "'default' (by key hash, or sticky without key), 'fixed' (one partition per subtask), 'round-robin'",
    ),
    OptionSpec::optional("key.format", "format of the message key (any value format but debezium-json)"),
    OptionSpec::optional("key.fields", "columns written as the message key, separated by ';'"),
    OptionSpec::optional(
        "key.fields-prefix",
        "prefix of the key columns' names that the key format does not see",
    ),
    OptionSpec::optional(
        "sink.transactional-id-prefix",
        "exactly-once: transactional ids are '<prefix>-<subtask>' (default prefix 'sluice-<job>-<table>')",
    ),
];

/// How long metadata and offset requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

fn kafka_error(table: &str, what: &str, error: impl fmt::Display) -> SluiceError {
    SluiceError::Connector(format!("table `{table}`: kafka {what}: {error}"))
}

/// Creates `kafka` sources and sinks, or `upsert-kafka` ones (records keyed
/// by the PRIMARY KEY, tombstones for deletes).
pub struct KafkaConnector {
    upsert: bool,
}

impl KafkaConnector {
    /// The `kafka` connector.
    pub const PLAIN: KafkaConnector = KafkaConnector { upsert: false };
    /// The `upsert-kafka` connector.
    pub const UPSERT: KafkaConnector = KafkaConnector { upsert: true };
}

/// The topics a source reads.
#[derive(Debug, Clone)]
enum Topics {
    /// `topic`: one or more names.
    Names(Vec<String>),
    /// `topic-pattern`.
    Pattern(regex::Regex),
}

impl Topics {
    /// The first named topic (sinks write to it).
    fn first_name(&self) -> Option<String> {
        match self {
            Topics::Names(names) => names.first().cloned(),
            Topics::Pattern(_) => None,
        }
    }
}

impl fmt::Display for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topics::Names(names) if names.len() == 1 => write!(f, "topic '{}'", names[0]),
            Topics::Names(names) => write!(f, "topics '{}'", names.join("', '")),
            Topics::Pattern(pattern) => write!(f, "topic pattern '{}'", pattern.as_str()),
        }
    }
}

/// What a source or sink of one table was configured with.
#[derive(Debug, Clone)]
struct KafkaTable {
    table: String,
    topics: Topics,
    /// librdkafka settings from `properties.*`.
    properties: BTreeMap<String, String>,
    /// `properties.group.id` was given: offsets are committed to it.
    group: Option<String>,
}

/// A table's formats: the value's and, with `key.fields`, the key's.
#[derive(Debug, Clone)]
struct Formats {
    value: Format,
    value_options: Options,
    key: Option<KeyFormat>,
    /// `value.fields-include = 'EXCEPT_KEY'`.
    except_key: bool,
}

/// The key columns and their format.
#[derive(Debug, Clone)]
struct KeyFormat {
    format: Format,
    options: Options,
    /// The key columns, as named in the table.
    fields: Vec<String>,
    /// `key.fields-prefix`: stripped from the names the format sees.
    prefix: String,
}

impl KeyFormat {
    /// The key columns of `schema` as the key format sees them (prefix
    /// stripped), with their positions in `schema`.
    fn schema(&self, table: &str, schema: &SchemaRef) -> Result<(Vec<usize>, SchemaRef)> {
        let mut indices = Vec::new();
        let mut fields = Vec::new();
        for name in &self.fields {
            let index = schema.index_of(name).map_err(|_| {
                SluiceError::Config(format!(
                    "table `{table}`: 'key.fields' names `{name}`, which is not a physical column"
                ))
            })?;
            let field = schema.field(index);
            let stripped = name.strip_prefix(self.prefix.as_str()).unwrap_or(name);
            indices.push(index);
            fields.push(field.clone().with_name(stripped).with_nullable(true));
        }
        Ok((indices, Arc::new(Schema::new(fields))))
    }
}

impl KafkaTable {
    fn from_table(table: &TableDef, upsert: bool) -> Result<(Self, Formats)> {
        let options = &table.options;
        let mut properties = BTreeMap::new();
        let mut plain = BTreeMap::new();
        let mut key_plain = BTreeMap::new();
        for (key, value) in options.iter() {
            if key == "key.fields" || key == "key.fields-prefix" {
                continue;
            }
            if let Some(property) = key.strip_prefix("properties.") {
                properties.insert(property.to_string(), value.to_string());
            } else if let Some(key_option) = key
                .strip_prefix("key.")
                .filter(|k| !["fields", "fields-prefix"].contains(k))
            {
                key_plain.insert(key_option.to_string(), value.to_string());
            } else {
                let key = key.strip_prefix("value.").unwrap_or(key);
                plain.insert(key.to_string(), value.to_string());
            }
        }
        let owner = options.owner().to_string();
        let value_options = Options::new(owner.clone(), plain);
        let value = Format::for_messages(&value_options)?;
        let key_fields: Vec<String> = options
            .get("key.fields")
            .map(|fields| {
                fields
                    .split(';')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let key_fields = if upsert {
            if table.primary_key.is_empty() {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'upsert-kafka' needs a PRIMARY KEY (... NOT ENFORCED): its columns are the message key",
                    table.name
                )));
            }
            if !key_fields.is_empty() {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'upsert-kafka' takes the key columns from the PRIMARY KEY, not 'key.fields'",
                    table.name
                )));
            }
            table.primary_key.clone()
        } else {
            key_fields
        };
        let key = match (key_fields.is_empty(), key_plain.contains_key("format")) {
            (true, false) => None,
            (true, true) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: 'key.format' needs 'key.fields' (the columns of the key)",
                    table.name
                )))
            }
            (false, false) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: the key columns ({}) need 'key.format'",
                    table.name,
                    key_fields.join(", ")
                )))
            }
            (false, true) => {
                let key_options = Options::new(format!("{owner} (key)"), key_plain);
                let format = Format::for_messages(&key_options)?;
                if format.accepts_updates() {
                    return Err(SluiceError::Config(format!(
                        "table `{}`: 'key.format' cannot be a changelog format",
                        table.name
                    )));
                }
                let specs: Vec<OptionSpec> = format
                    .option_specs()
                    .iter()
                    .copied()
                    .chain([OptionSpec::required("format", "the key's format")])
                    .collect();
                key_options.validate(&specs)?;
                Some(KeyFormat {
                    format,
                    options: key_options,
                    fields: key_fields,
                    prefix: options.get("key.fields-prefix").unwrap_or("").to_string(),
                })
            }
        };
        let except_key = match value_options
            .get("fields-include")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("ALL") => false,
            Some("EXCEPT_KEY") => true,
            Some(other) => {
                return Err(SluiceError::Config(format!(
                "table `{}`: 'value.fields-include' must be 'ALL' or 'EXCEPT_KEY', got '{other}'",
                table.name
            )))
            }
        };
        if upsert && value.accepts_updates() {
            return Err(SluiceError::Config(format!(
                "table `{}`: 'upsert-kafka' makes the changelog itself; use a plain value format such as 'json', not '{}'",
                table.name,
                value.extension()
            )));
        }
        let mut value_checked = value_options.clone();
        let mut extra = BTreeMap::new();
        for (key, v) in value_checked.iter() {
            if key != "fields-include" {
                extra.insert(key.to_string(), v.to_string());
            }
        }
        value_checked = Options::new(owner.clone(), extra);
        let specs: Vec<OptionSpec> = KAFKA_OPTIONS
            .iter()
            .chain(BAD_RECORD_OPTIONS.iter())
            .chain(value.option_specs())
            .chain(SOURCE_OPTIONS.iter())
            .copied()
            .filter(|spec| {
                !spec.key.starts_with("properties.")
                    && !spec.key.starts_with("key.")
                    && !spec.key.starts_with("value.")
            })
            .filter(|spec| spec.key != "topic")
            .chain([OptionSpec::optional("topic", "topic")])
            .collect();
        value_checked.validate(&specs)?;
        if !properties.contains_key("bootstrap.servers") {
            return Err(SluiceError::Config(format!(
                "table `{}`: missing option 'properties.bootstrap.servers'",
                table.name
            )));
        }
        let topics = match (options.get("topic"), options.get("topic-pattern")) {
            (Some(_), Some(_)) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: give 'topic' or 'topic-pattern', not both",
                    table.name
                )))
            }
            (None, None) => {
                return Err(SluiceError::Config(format!(
                    "table `{}`: missing option 'topic' (or 'topic-pattern')",
                    table.name
                )))
            }
            (Some(names), None) => Topics::Names(
                names
                    .split(';')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            (None, Some(pattern)) => {
                Topics::Pattern(regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    SluiceError::Config(format!(
                        "table `{}`: 'topic-pattern' is not a regular expression: {e}",
                        table.name
                    ))
                })?)
            }
        };
        Ok((
            KafkaTable {
                table: table.name.clone(),
                topics,
                group: properties.get("group.id").cloned(),
                properties,
            },
            Formats {
                value,
                value_options,
                key,
                except_key,
            },
        ))
    }

    /// The one topic a sink writes.
    fn sink_topic(&self) -> Result<String> {
        match &self.topics {
            Topics::Names(names) if names.len() == 1 => Ok(names[0].clone()),
            _ => Err(SluiceError::Config(format!(
                "table `{}`: a kafka sink writes one topic; give a single 'topic'",
                self.table
            ))),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    fn error(&self, what: &str, error: impl fmt::Display) -> SluiceError {
        kafka_error(&self.table, what, error)
    }
}

impl ConnectorFactory for KafkaConnector {
    fn name(&self) -> &'static str {
        if self.upsert {
            "upsert-kafka"
        } else {
            "kafka"
        }
    }

    fn metadata(&self) -> &'static [MetadataSpec] {
        &KAFKA_METADATA
    }

    fn reads_row_fields_by_name(&self, table: &TableDef) -> bool {
        let Ok((_, formats)) = KafkaTable::from_table(table, self.upsert) else {
            return false;
        };
        let by_name = |format: &Format| matches!(format, Format::Json(_));
        by_name(&formats.value) && formats.key.as_ref().is_none_or(|key| by_name(&key.format))
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        create_source(table, projection, job, self.upsert)
    }

    fn create_sink(&self, table: &TableDef, job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        create_sink(table, job, self.upsert)
    }
}

/// The payload columns of a table: physical, not metadata.
fn payload_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| metadata_key(f).is_none())
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

fn create_source(
    table: &TableDef,
    projection: &[usize],
    job: &JobContext,
    upsert: bool,
) -> Result<Arc<dyn SourceConnector>> {
    let (kafka, formats) = KafkaTable::from_table(table, upsert)?;
    let options = &table.options;
    let startup = if upsert {
        // upsert-kafka always reads the whole topic (it is the table).
        Startup::Earliest
    } else {
        Startup::from_options(options)?
    };
    let bounded = match options.get("scan.bounded.mode") {
        None | Some("unbounded") => false,
        Some("latest-offset") => true,
        Some(other) => {
            return Err(SluiceError::Config(format!(
            "table `{}`: 'scan.bounded.mode' must be 'unbounded' or 'latest-offset', got '{other}'",
            table.name
        )))
        }
    };
    let discovery = match options.duration("scan.topic-partition-discovery.interval")? {
        Some(interval) if interval.is_zero() => None,
        Some(interval) => Some(interval),
        None if matches!(kafka.topics, Topics::Pattern(_)) => Some(Duration::from_secs(300)),
        None => None,
    };
    let schema = project_schema(table, projection);
    let physical = table.physical_schema();
    let payload = payload_schema(&physical);
    // The value's columns: all payload columns, or those not in the key.
    let key_layout = match &formats.key {
        Some(key) => Some(key.schema(&table.name, &payload)?),
        None => None,
    };
    let key_names: Vec<&str> = formats
        .key
        .as_ref()
        .map(|k| k.fields.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let from_key = |name: &str| formats.except_key && key_names.contains(&name);
    let value_fields: Vec<_> = payload
        .fields()
        .iter()
        .filter(|f| !from_key(f.name()))
        .filter(|f| formats.value.decodes_all_columns() || schema.field_with_name(f.name()).is_ok())
        .cloned()
        .collect();
    let value_schema = Arc::new(Schema::new(value_fields));
    formats
        .value
        .check_message_schema(&formats.value_options, &value_schema)?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(match metadata_key(field) {
            Some(key) => {
                let column = MetadataColumn {
                    key: key.to_string(),
                    data_type: field.data_type().clone(),
                };
                column.check(&table.name, field.name())?;
                ColumnSource::Metadata(column)
            }
            None if from_key(field.name()) => ColumnSource::Key(
                key_names
                    .iter()
                    .position(|k| *k == field.name())
                    .unwrap_or_default(),
            ),
            None => ColumnSource::Value(value_schema.index_of(field.name())?),
        });
    }
    let needs_key = columns.iter().any(|c| matches!(c, ColumnSource::Key(_)));
    let key = match (&formats.key, key_layout) {
        (Some(key), Some((_, key_schema))) if needs_key => {
            key.format.check_message_schema(&key.options, &key_schema)?;
            Some(Decoding {
                format: key.format.clone(),
                schema: key_schema,
            })
        }
        _ => None,
    };
    let policy = BadRecordPolicy::from_options(
        &table.name,
        options,
        formats.value.ignore_parse_errors(),
        &job.dead_letter_dir(),
    )?;
    let source = KafkaSource {
        kafka,
        schema,
        columns,
        value: Decoding {
            format: formats.value,
            schema: value_schema,
        },
        key,
        upsert,
        startup,
        bounded,
        discovery,
        policy,
        batch_size: job.batch_size,
        default_group: format!("sluice-{}", job.job_name),
    };
    // Fail at planning, not in the readers, on a format that cannot decode.
    let context = MessageContext {
        table: table.name.clone(),
        topic: source.kafka.topics.first_name().unwrap_or_default(),
        is_key: false,
    };
    source.value.format.message_decoder(
        source.value.schema.clone(),
        BadRecordPolicy::fail(&table.name),
        1,
        &context,
        false,
    )?;
    Ok(Arc::new(source))
}

fn create_sink(table: &TableDef, job: &JobContext, upsert: bool) -> Result<Arc<dyn SinkConnector>> {
    let (kafka, formats) = KafkaTable::from_table(table, upsert)?;
    let topic = kafka.sink_topic()?;
    let options = &table.options;
    let written = table.written_schema();
    let guarantee = match options.get("sink.delivery-guarantee") {
        None | Some("at-least-once") => Guarantee::AtLeastOnce,
        Some("none") => Guarantee::None,
        Some("exactly-once") if !job.exactly_once => {
            return Err(SluiceError::Config(format!(
                "table `{}`: 'sink.delivery-guarantee' = 'exactly-once' commits with checkpoints; turn them on ('execution.checkpointing.interval')",
                table.name
            )))
        }
        Some("exactly-once") => Guarantee::ExactlyOnce(
            options
                .get("sink.transactional-id-prefix")
                .map(str::to_string)
                .unwrap_or_else(|| format!("sluice-{}-{}", job.job_name, table.name)),
        ),
        Some(other) => {
            return Err(SluiceError::Config(format!(
                "table `{}`: 'sink.delivery-guarantee' must be 'none', 'at-least-once' or 'exactly-once', got '{other}'",
                table.name
            )))
        }
    };
    let partitioner = match options.get("sink.partitioner") {
        None | Some("default") => Partitioner::Default,
        Some("fixed") => Partitioner::Fixed,
        Some("round-robin") => Partitioner::RoundRobin,
        Some(other) => {
            return Err(SluiceError::Config(format!(
                "table `{}`: 'sink.partitioner' must be 'default', 'fixed' or 'round-robin', got '{other}'",
                table.name
            )))
        }
    };
    // Metadata columns written to the record; the rest is payload.
    let mut metadata = Vec::new();
    for (index, field) in written.fields().iter().enumerate() {
        if let Some(key) = metadata_key(field) {
            let writable = KAFKA_METADATA.iter().any(|m| m.key == key && m.writable);
            if !writable {
                return Err(SluiceError::Config(format!(
                    "table `{}`: metadata column `{}` ('{key}') cannot be written; declare it VIRTUAL (writable: 'timestamp', 'headers')",
                    table.name,
                    field.name()
                )));
            }
            metadata.push((index, key.to_string()));
        }
    }
    let payload = payload_schema(&written);
    let payload_indices: Vec<usize> = written
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| metadata_key(f).is_none())
        .map(|(i, _)| i)
        .collect();
    let key = match &formats.key {
        None => None,
        Some(key_format) => {
            let (in_payload, key_schema) = key_format.schema(&table.name, &payload)?;
            key_format
                .format
                .check_message_schema(&key_format.options, &key_schema)?;
            Some(KeySpec {
                indices: in_payload.iter().map(|&i| payload_indices[i]).collect(),
                schema: key_schema,
                format: key_format.format.clone(),
            })
        }
    };
    let key_names: Vec<String> = formats
        .key
        .as_ref()
        .map(|k| k.fields.clone())
        .unwrap_or_default();
    let value_indices: Vec<usize> = payload_indices
        .iter()
        .copied()
        .filter(|&i| !(formats.except_key && key_names.contains(written.field(i).name())))
        .collect();
    let value_schema = Arc::new(written.project(&value_indices)?);
    formats
        .value
        .check_message_schema(&formats.value_options, &value_schema)?;
    Ok(Arc::new(KafkaSink {
        kafka,
        topic,
        value: formats.value,
        value_indices,
        value_schema,
        key,
        metadata,
        partitioner,
        guarantee,
        upsert,
        producers: Default::default(),
    }))
}

/// Where a reader starts in partitions a checkpoint has no offset for.
#[derive(Debug, Clone)]
enum Startup {
    GroupOffsets,
    Earliest,
    Latest,
    Timestamp(i64),
    Specific(BTreeMap<i32, i64>),
}

impl Startup {
    fn from_options(options: &Options) -> Result<Self> {
        Ok(match options.get("scan.startup.mode") {
            None | Some("group-offsets") => Startup::GroupOffsets,
            Some("earliest-offset") => Startup::Earliest,
            Some("latest-offset") => Startup::Latest,
            Some("timestamp") => Startup::Timestamp(
                options
                    .parse::<i64>("scan.startup.timestamp-millis")?
                    .ok_or_else(|| {
                        SluiceError::Config(format!(
                            "{}: 'scan.startup.mode' = 'timestamp' needs 'scan.startup.timestamp-millis'",
                            options.owner()
                        ))
                    })?,
            ),
            Some("specific-offsets") => {
                let raw = options.require("scan.startup.specific-offsets")?;
                Startup::Specific(parse_specific_offsets(raw).ok_or_else(|| {
                    SluiceError::Config(format!(
                        "{}: 'scan.startup.specific-offsets' = '{raw}' is not like 'partition:0,offset:42;partition:1,offset:300'",
                        options.owner()
                    ))
                })?)
            }
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "{}: unknown 'scan.startup.mode' '{other}'; use 'group-offsets', 'earliest-offset', 'latest-offset', 'timestamp' or 'specific-offsets'",
                    options.owner()
                )))
            }
        })
    }
}

/// Parses `partition:0,offset:42;partition:1,offset:300`.
fn parse_specific_offsets(raw: &str) -> Option<BTreeMap<i32, i64>> {
    raw.split(';')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (partition, offset) = part.split_once(',')?;
            let partition = partition
                .trim()
                .strip_prefix("partition:")?
                .trim()
                .parse()
                .ok()?;
            let offset = offset.trim().strip_prefix("offset:")?.trim().parse().ok()?;
            Some((partition, offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_offsets_parse_like_flink() {
        assert_eq!(
            parse_specific_offsets("partition:0,offset:42;partition:1,offset:300"),
            Some([(0, 42), (1, 300)].into())
        );
        assert_eq!(parse_specific_offsets("0:42"), None);
    }
}
