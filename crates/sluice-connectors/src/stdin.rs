//! The `stdin` connector: reads `json`/`csv` lines from standard input until EOF.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use sluice_core::connector::{ConnectorFactory, JobContext, SourceConnector, SourceReader};
use sluice_core::dlq::{BadRecordPolicy, BAD_RECORD_OPTIONS};
use sluice_core::options::OptionSpec;
use sluice_core::table::TableDef;
use sluice_core::{Result, SluiceError};

use crate::formats::Format;
use crate::lines::{spawn_line_source, ConsumedLines, LinePump};
use crate::{project_schema, validate_options};

const STDIN_OPTIONS: [OptionSpec; 2] = [
    OptionSpec::required("connector", "'stdin'"),
    OptionSpec::optional("format", "'json' (default) or 'csv'"),
];

/// Creates `stdin` sources.
pub struct StdinConnector;

impl ConnectorFactory for StdinConnector {
    fn name(&self) -> &'static str {
        "stdin"
    }

    fn reads_row_fields_by_name(&self, table: &TableDef) -> bool {
        table.options.get("format").is_none()
            || matches!(Format::from_options(&table.options), Ok(Format::Json(_)))
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        let mut options = table.options.clone();
        if options.get("format").is_none() {
            options.set("format", "json");
        }
        let format = Format::from_options(&options)?;
        validate_options(
            table,
            &[&STDIN_OPTIONS, &BAD_RECORD_OPTIONS, format.option_specs()],
        )?;
        let schema = project_schema(table, projection);
        format.decoder(schema.clone(), BadRecordPolicy::fail(&table.name), 1)?;
        let policy = BadRecordPolicy::from_options(
            &table.name,
            &options,
            format.ignore_parse_errors(),
            &job.dead_letter_dir(),
        )?;
        Ok(Arc::new(StdinSource {
            format,
            schema,
            policy,
            lines_per_chunk: job.batch_size,
        }))
    }
}

#[derive(Debug)]
struct StdinSource {
    format: Format,
    schema: SchemaRef,
    policy: BadRecordPolicy,
    lines_per_chunk: usize,
}

impl SourceConnector for StdinSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn produces_updates(&self) -> bool {
        self.format.accepts_updates()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn bad_records(&self) -> Option<&BadRecordPolicy> {
        Some(&self.policy)
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        let lines = self.lines_per_chunk;
        spawn_line_source(
            "read-stdin".into(),
            parallelism,
            &self.policy,
            &|policy| {
                self.format
                    .decoder(self.schema.clone(), policy, self.lines_per_chunk)
            },
            ConsumedLines::default(),
            move |sender| {
                let mut reader = std::io::BufReader::with_capacity(1 << 20, std::io::stdin());
                let mut pump = LinePump::new("stdin", lines, sender).flushing_on_drain();
                pump.pump(&mut reader, true)
                    .map(|_| ())
                    .map_err(|e| SluiceError::io("reading stdin", e))
            },
        )
    }

    /// Standard input cannot be replayed: a resumed job reads what comes
    /// next (at-least-once becomes at-most-once for lines in flight at the crash).
    fn open_at(
        &self,
        parallelism: usize,
        _positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        tracing::warn!("stdin cannot be replayed: the resumed job reads only new input");
        self.open(parallelism)
    }

    fn describe(&self) -> String {
        format!("stdin ({})", self.format.extension())
    }
}
