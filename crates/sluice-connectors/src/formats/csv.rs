//! CSV, one record per line, with Flink's `csv.*` options, via `arrow-csv`.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_csv::reader::{Decoder, ReaderBuilder};
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::{OptionSpec, Options};
use sluice_core::table::is_flat_type;
use sluice_core::{Result, SluiceError};

use super::{concat, require_inserts, LineChunk, RecordDecoder, RecordEncoder};
use sluice_core::ChangeBatch;

/// Options of the `csv` format (Flink's names).
pub const CSV_OPTIONS: [OptionSpec; 9] = [
    OptionSpec::optional(
        "csv.field-delimiter",
        "field separator, one character (default ',')",
    ),
    OptionSpec::optional("csv.quote-character", "quote character (default '\"')"),
    OptionSpec::optional(
        "csv.disable-quote-character",
        "read and write fields without quoting (default false)",
    ),
    OptionSpec::optional(
        "csv.allow-comments",
        "ignore lines starting with '#' (default false)",
    ),
    OptionSpec::optional(
        "csv.ignore-parse-errors",
        "skip records that fail to parse (default false); same as 'errors' = 'skip'",
    ),
    OptionSpec::optional(
        "csv.escape-character",
        "escape character inside quoted fields (default none)",
    ),
    OptionSpec::optional(
        "csv.null-literal",
        "text that stands for NULL (default: empty field)",
    ),
    OptionSpec::optional(
        "csv.array-element-delimiter",
        "accepted for compatibility; arrays are not supported in csv",
    ),
    OptionSpec::optional(
        "csv.write-bigdecimal-in-scientific-notation",
        "accepted for compatibility; decimals are written plainly",
    ),
];

/// Parsed `csv.*` options.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Field separator.
    pub delimiter: u8,
    /// Quote character, or `None` when quoting is disabled.
    pub quote: Option<u8>,
    /// Escape character.
    pub escape: Option<u8>,
    /// Whether `#` lines are comments.
    pub allow_comments: bool,
    /// Text for NULL.
    pub null_literal: Option<String>,
    /// `csv.ignore-parse-errors`.
    pub ignore_parse_errors: bool,
}

fn single_char(options: &Options, key: &str) -> Result<Option<u8>> {
    match options.get(key) {
        None => Ok(None),
        Some(text) => {
            let text = if text == "\\t" { "\t" } else { text };
            match text.as_bytes() {
                [byte] => Ok(Some(*byte)),
                _ => Err(SluiceError::Config(format!(
                    "{}: option '{key}' must be a single character, got '{text}'",
                    options.owner()
                ))),
            }
        }
    }
}

impl CsvOptions {
    /// Reads the `csv.*` options.
    pub fn from_options(options: &Options) -> Result<Self> {
        let disable_quote = options.bool("csv.disable-quote-character", false)?;
        let quote = single_char(options, "csv.quote-character")?.unwrap_or(b'"');
        Ok(CsvOptions {
            delimiter: single_char(options, "csv.field-delimiter")?.unwrap_or(b','),
            quote: (!disable_quote).then_some(quote),
            escape: single_char(options, "csv.escape-character")?,
            allow_comments: options.bool("csv.allow-comments", false)?,
            null_literal: options.get("csv.null-literal").map(str::to_string),
            ignore_parse_errors: options.bool("csv.ignore-parse-errors", false)?,
        })
    }
}

fn check_flat(schema: &SchemaRef) -> Result<()> {
    match schema.fields().iter().find(|f| !is_flat_type(f.data_type())) {
        Some(field) => Err(SluiceError::Config(format!(
            "column `{}` has nested type {} which the csv format cannot hold; use 'format' = 'json'",
            field.name(),
            field.data_type()
        ))),
        None => Ok(()),
    }
}

/// Decodes CSV lines into batches of a fixed schema.
pub struct CsvDecoder {
    schema: SchemaRef,
    options: CsvOptions,
    policy: BadRecordPolicy,
    decoder: Decoder,
    batch_size: usize,
}

impl CsvDecoder {
    /// A decoder producing `schema`.
    pub fn new(
        schema: SchemaRef,
        options: CsvOptions,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Self> {
        let batch_size = batch_size.max(1);
        check_flat(&schema)?;
        let decoder = Self::build(&schema, &options, batch_size)?;
        Ok(CsvDecoder {
            schema,
            options,
            policy,
            decoder,
            batch_size,
        })
    }

    fn build(schema: &SchemaRef, options: &CsvOptions, batch_size: usize) -> Result<Decoder> {
        let mut builder = ReaderBuilder::new(schema.clone())
            .with_header(false)
            .with_batch_size(batch_size)
            .with_delimiter(options.delimiter)
            .with_quote(options.quote.unwrap_or(0));
        if let Some(escape) = options.escape {
            builder = builder.with_escape(escape);
        }
        if options.allow_comments {
            builder = builder.with_comment(b'#');
        }
        let null_pattern = match &options.null_literal {
            Some(literal) => format!("^{}$", regex::escape(literal)),
            None => "^$".to_string(),
        };
        let null_regex = regex::Regex::new(&null_pattern)
            .map_err(|e| SluiceError::Config(format!("invalid csv.null-literal: {e}")))?;
        Ok(builder.with_null_regex(null_regex).build_decoder())
    }

    fn decode_bytes(
        &mut self,
        data: &[u8],
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        let mut offset = 0;
        while offset < data.len() {
            let read = self.decoder.decode(&data[offset..])?;
            if read == 0 {
                break;
            }
            offset += read;
        }
        // A final line without '\n' is only complete once the decoder sees EOF.
        self.decoder.decode(&[])?;
        self.decoder.flush()
    }

    /// Replaces arrow-csv's column numbers with column names.
    fn reason(&self, error: &arrow::error::ArrowError) -> String {
        let text = error.to_string();
        let text = text.trim_start_matches("Parser error: ").to_string();
        match text.find("for column ") {
            Some(start) => {
                let rest = &text[start + "for column ".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                match digits
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.schema.fields().get(i))
                {
                    Some(field) => {
                        let head = &text[..start];
                        let detail = head.trim_end();
                        format!("field '{}': {detail}", field.name())
                    }
                    None => text,
                }
            }
            None => text,
        }
    }
}

impl RecordDecoder for CsvDecoder {
    fn decode(&mut self, chunk: &LineChunk) -> Result<Option<ChangeBatch>> {
        Ok(self.decode_records(chunk)?.map(ChangeBatch::inserts))
    }
}

impl CsvDecoder {
    /// Decodes every record of `chunk` into a batch of the table's schema.
    pub fn decode_records(&mut self, chunk: &LineChunk) -> Result<Option<RecordBatch>> {
        match self.decode_bytes(&chunk.data) {
            Ok(batch) => Ok(batch),
            Err(_) => {
                let mut batches = Vec::new();
                for (line_number, line) in chunk.lines() {
                    if line.is_empty() {
                        continue;
                    }
                    self.decoder = Self::build(&self.schema, &self.options, self.batch_size)?;
                    match self.decode_bytes(line) {
                        Ok(Some(batch)) => batches.push(batch),
                        Ok(None) => {}
                        Err(error) => {
                            let reason = self.reason(&error);
                            self.policy
                                .reject(&chunk.source, line_number, line, &reason)?;
                        }
                    }
                }
                self.decoder = Self::build(&self.schema, &self.options, self.batch_size)?;
                concat(&self.schema, batches)
            }
        }
    }
}

/// Writes rows as CSV lines.
pub struct CsvEncoder {
    options: CsvOptions,
}

impl CsvEncoder {
    /// An encoder for `schema`.
    pub fn new(schema: SchemaRef, options: CsvOptions) -> Result<Self> {
        check_flat(&schema)?;
        Ok(CsvEncoder { options })
    }
}

impl RecordEncoder for CsvEncoder {
    fn encode(&mut self, batch: &ChangeBatch, out: &mut Vec<u8>) -> Result<()> {
        require_inserts(batch, "csv")?;
        let batch = &batch.data;
        let mut builder = arrow_csv::WriterBuilder::new()
            .with_header(false)
            .with_delimiter(self.options.delimiter)
            .with_timestamp_format("%Y-%m-%d %H:%M:%S%.3f".to_string())
            .with_timestamp_tz_format("%Y-%m-%d %H:%M:%S%.3f".to_string())
            .with_time_format("%H:%M:%S".to_string())
            .with_date_format("%Y-%m-%d".to_string());
        if let Some(quote) = self.options.quote {
            builder = builder.with_quote(quote);
        }
        if let Some(escape) = self.options.escape {
            builder = builder.with_escape(escape).with_double_quote(false);
        }
        if let Some(null) = &self.options.null_literal {
            builder = builder.with_null(null.clone());
        }
        let mut writer = builder.build(std::mem::take(out));
        writer.write(batch)?;
        *out = writer.into_inner();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn options() -> CsvOptions {
        CsvOptions::from_options(&Options::default()).unwrap()
    }

    #[test]
    fn bad_field_is_named() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
        ]));
        let mut decoder =
            CsvDecoder::new(schema, options(), BadRecordPolicy::fail("t"), 1024).unwrap();
        let chunk = LineChunk::whole("in.csv", 10, b"1,2\n3,abc\n".to_vec());
        let err = decoder.decode_records(&chunk).unwrap_err().to_string();
        assert!(err.contains("in.csv:11"), "{err}");
        assert!(err.contains("field 'price'"), "{err}");
    }

    #[test]
    fn round_trip_with_nulls_and_quotes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut decoder =
            CsvDecoder::new(schema.clone(), options(), BadRecordPolicy::fail("t"), 1024).unwrap();
        let chunk = LineChunk::whole("in.csv", 1, b"1,\"a, b\"\n2,\n".to_vec());
        let batch = decoder.decode_records(&chunk).unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column(1).is_null(1));
        let mut out = Vec::new();
        CsvEncoder::new(schema, options())
            .unwrap()
            .encode(&ChangeBatch::inserts(batch), &mut out)
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1,\"a, b\"\n2,\n");
    }
}
