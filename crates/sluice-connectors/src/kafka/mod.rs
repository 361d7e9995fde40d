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
use sluice_core::table::TableDef;
use sluice_core::{Result, SluiceError};

use crate::formats::Format;
use crate::{project_schema, SOURCE_OPTIONS};

mod sink;
mod source;

use sink::{Guarantee, KafkaSink, KeySpec, Partitioner};
use source::KafkaSource;

const KAFKA_OPTIONS: [OptionSpec; 15] = [
    OptionSpec::required("connector", "'kafka'"),
    OptionSpec::required("topic", "the topic to read or write"),
    OptionSpec::required(
        "properties.bootstrap.servers",
        "Kafka brokers, e.g. 'localhost:9092' (every other 'properties.*' key goes to librdkafka as is)",
    ),
    OptionSpec::optional("format", "value format: 'json' or 'csv'"),
    OptionSpec::optional("value.format", "same as 'format'"),
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
        "accepted; partitions are listed when the job starts",
    ),
    OptionSpec::optional(
        "sink.delivery-guarantee",
        "'at-least-once' (default: every checkpoint waits for acknowledgements), 'exactly-once' (a transaction per checkpoint) or 'none'",
    ),
    OptionSpec::optional(
        "sink.partitioner",
        "'default' (by key hash, or sticky without key), 'fixed' (one partition per subtask), 'round-robin'",
    ),
    OptionSpec::optional("key.format", "format of the message key: 'json' or 'csv'"),
    OptionSpec::optional("key.fields", "columns written as the message key, separated by ';'"),
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

/// Creates `kafka` sources and sinks.
pub struct KafkaConnector;

/// What a source or sink of one table was configured with.
#[derive(Debug, Clone)]
struct KafkaTable {
    table: String,
    topic: String,
    /// librdkafka settings from `properties.*`.
    properties: BTreeMap<String, String>,
    format: Format,
    /// `properties.group.id` was given: offsets are committed to it.
    group: Option<String>,
}

impl KafkaTable {
    fn from_table(table: &TableDef) -> Result<Self> {
        let options = &table.options;
        let mut properties = BTreeMap::new();
        let mut plain = BTreeMap::new();
        for (key, value) in options.iter() {
            match key.strip_prefix("properties.") {
                Some(property) => {
                    properties.insert(property.to_string(), value.to_string());
                }
                None => {
                    let key = if key == "value.format" { "format" } else { key };
                    plain.insert(key.to_string(), value.to_string());
                }
            }
        }
        let plain = Options::new(options.owner(), plain);
        let format = Format::from_options(&plain)?;
        if format.accepts_updates() {
            return Err(SluiceError::Config(format!(
                "table `{}`: the kafka connector does not read or write changelog formats yet",
                table.name
            )));
        }
        let mut specs: Vec<OptionSpec> = KAFKA_OPTIONS
            .iter()
            .chain(BAD_RECORD_OPTIONS.iter())
            .chain(format.option_specs())
            .chain(SOURCE_OPTIONS.iter())
            .copied()
            .collect();
        // `properties.bootstrap.servers` was moved out with the other properties.
        specs.retain(|spec| !spec.key.starts_with("properties."));
        plain.validate(&specs)?;
        if !properties.contains_key("bootstrap.servers") {
            return Err(SluiceError::Config(format!(
                "table `{}`: missing option 'properties.bootstrap.servers'",
                table.name
            )));
        }
        Ok(KafkaTable {
            table: table.name.clone(),
            topic: options.require("topic")?.to_string(),
            group: properties.get("group.id").cloned(),
            properties,
            format,
        })
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
        "kafka"
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        let kafka = KafkaTable::from_table(table)?;
        let options = &table.options;
        let startup = Startup::from_options(options)?;
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
        let schema = project_schema(table, projection);
        kafka
            .format
            .decoder(schema.clone(), BadRecordPolicy::fail(&table.name), 1)?;
        let policy = BadRecordPolicy::from_options(
            &table.name,
            options,
            kafka.format.ignore_parse_errors(),
            &job.dead_letter_dir(),
        )?;
        Ok(Arc::new(KafkaSource {
            kafka,
            schema,
            startup,
            bounded,
            policy,
            batch_size: job.batch_size,
            default_group: format!("sluice-{}", job.job_name),
        }))
    }

    fn create_sink(&self, table: &TableDef, job: &JobContext) -> Result<Arc<dyn SinkConnector>> {
        let kafka = KafkaTable::from_table(table)?;
        let options = &table.options;
        let schema = table.physical_schema();
        kafka.format.encoder(schema.clone())?;
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
        let key = match options.get("key.fields") {
            None => None,
            Some(fields) => {
                let names: Vec<&str> = fields.split(';').map(str::trim).collect();
                let indices = names
                    .iter()
                    .map(|name| {
                        schema.index_of(name).map_err(|_| {
                            SluiceError::Config(format!(
                                "table `{}`: 'key.fields' names '{name}', which is not a column",
                                table.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let key_schema = Arc::new(schema.project(&indices)?);
                let format_name = options.get("key.format").unwrap_or("json");
                let key_format = Format::from_options(&Options::new(
                    options.owner(),
                    [("format".to_string(), format_name.to_string())].into(),
                ))?;
                key_format.encoder(key_schema.clone())?;
                Some(KeySpec {
                    indices,
                    schema: key_schema,
                    format: key_format,
                })
            }
        };
        Ok(Arc::new(KafkaSink {
            kafka,
            schema,
            key,
            partitioner,
            guarantee,
        }))
    }
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
