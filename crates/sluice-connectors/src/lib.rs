//! Built-in connectors and formats: `filesystem`, `stdin`, `print`, `blackhole`,
//! `datagen`, the `nexmark` benchmark generator, `stream` (streams of the
//! embedded `sluice-log`) and `kafka` (feature `kafka`); `json` and `csv`
//! formats.

pub mod datagen;
mod decode_pool;
pub mod filesystem;
pub mod formats;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lines;
pub mod nexmark;
pub mod print;
pub mod stdin;
pub mod stream;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use sluice_core::connector::ConnectorRegistry;
use sluice_core::options::OptionSpec;
use sluice_core::table::TableDef;
use sluice_core::Result;

/// A registry holding every built-in connector.
pub fn builtin_connectors() -> ConnectorRegistry {
    let mut registry = ConnectorRegistry::default();
    registry.register(Arc::new(filesystem::FilesystemConnector));
    registry.register(Arc::new(stdin::StdinConnector));
    registry.register(Arc::new(print::PrintConnector));
    registry.register(Arc::new(print::BlackholeConnector));
    registry.register(Arc::new(datagen::DatagenConnector));
    registry.register(Arc::new(nexmark::NexmarkConnector));
    registry.register(Arc::new(stream::StreamConnector::new(
        "sluice-data/streams".into(),
    )));
    #[cfg(feature = "kafka")]
    registry.register(Arc::new(kafka::KafkaConnector::PLAIN));
    #[cfg(feature = "kafka")]
    registry.register(Arc::new(kafka::KafkaConnector::UPSERT));
    registry
}

/// The physical columns `projection` selects from a table.
pub(crate) fn project_schema(table: &TableDef, projection: &[usize]) -> SchemaRef {
    let physical = table.physical_schema();
    let fields: Vec<_> = projection
        .iter()
        .map(|&i| physical.field(i).clone())
        .collect();
    Arc::new(arrow::datatypes::Schema::new(fields))
}

/// Options every source accepts (the runtime reads them).
pub const SOURCE_OPTIONS: [OptionSpec; 1] = [OptionSpec::optional(
    "scan.watermark.idle-timeout",
    "mark a source subtask idle after this long without data, so it does not hold back the watermark",
)];

/// Validates a table's options against the union of several spec lists
/// (plus [`SOURCE_OPTIONS`]).
pub(crate) fn validate_options(table: &TableDef, specs: &[&[OptionSpec]]) -> Result<()> {
    let all: Vec<OptionSpec> = specs
        .iter()
        .flat_map(|list| list.iter().copied())
        .chain(SOURCE_OPTIONS)
        .collect();
    table.options.validate(&all)
}

/// Positions of the readers of a generator that splits its sequence by
/// subtask, parsed with `parse`: one per subtask, so resuming needs the
/// checkpoint's parallelism. No positions: a fresh start.
pub(crate) fn per_subtask_positions<T>(
    source: &str,
    positions: &[Vec<u8>],
    parallelism: usize,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>> {
    let parsed = positions
        .iter()
        .map(|p| {
            parse(p).ok_or_else(|| {
                sluice_core::SluiceError::State(format!("unreadable {source} source position"))
            })
        })
        .collect::<Result<Vec<T>>>()?;
    if !parsed.is_empty() && parsed.len() != parallelism {
        return Err(sluice_core::SluiceError::Config(format!(
            "the {source} source ran at parallelism {} in the checkpoint and cannot resume at \
             {parallelism}; run with -p {} (or --fresh)",
            parsed.len(),
            parsed.len()
        )));
    }
    Ok(parsed)
}
