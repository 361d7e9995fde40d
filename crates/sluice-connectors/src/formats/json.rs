//! Newline-delimited JSON: decoding with `arrow-json` (nested ROW/ARRAY/MAP,
//! Flink's `json.*` options) and an encoder that writes Flink's JSON layout.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch, StringArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, Schema, SchemaRef, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow::error::ArrowError;
use arrow_json::reader::{Decoder, ReaderBuilder};
use base64::Engine;
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::{OptionSpec, Options};
use sluice_core::{Result, SluiceError};

use super::json_direct::DirectDecoder;
use super::{concat, require_inserts, LineChunk, RecordDecoder, RecordEncoder};
use sluice_core::{ChangeBatch, RowKind};

/// Options of the `json` format (Flink's names).
pub const JSON_OPTIONS: [OptionSpec; 7] = [
    OptionSpec::optional(
        "json.fail-on-missing-field",
        "fail when a field is missing (default false)",
    ),
    OptionSpec::optional(
        "json.ignore-parse-errors",
        "skip records that fail to parse (default false); same as 'errors' = 'skip'",
    ),
    OptionSpec::optional(
        "json.timestamp-format.standard",
        "'SQL' (yyyy-MM-dd HH:mm:ss.SSS, default) or 'ISO-8601'",
    ),
    OptionSpec::optional(
        "json.encode.ignore-null-fields",
        "omit null fields when writing (default false)",
    ),
    OptionSpec::optional(
        "json.encode.decimal-as-plain-number",
        "accepted for compatibility; decimals are always written as plain numbers",
    ),
    OptionSpec::optional(
        "json.map-null-key.mode",
        "accepted for compatibility ('FAIL' default)",
    ),
    OptionSpec::optional("json.map-null-key.literal", "accepted for compatibility"),
];

/// How timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampStandard {
    /// `yyyy-MM-dd HH:mm:ss.SSS`
    Sql,
    /// `yyyy-MM-ddTHH:mm:ss.SSS` (with `Z` for TIMESTAMP_LTZ)
    Iso8601,
}

/// Parsed `json.*` options.
#[derive(Debug, Clone)]
pub struct JsonOptions {
    /// `json.fail-on-missing-field`.
    pub fail_on_missing_field: bool,
    /// `json.ignore-parse-errors`.
    pub ignore_parse_errors: bool,
    /// `json.timestamp-format.standard`.
    pub timestamp_standard: TimestampStandard,
    /// `json.encode.ignore-null-fields`.
    pub ignore_null_fields: bool,
}

impl JsonOptions {
    /// Reads the `json.*` options.
    pub fn from_options(options: &Options) -> Result<Self> {
        Self::with_prefix(options, "json")
    }

    /// Reads `<prefix>.*` options (`json`, or `debezium-json` for the changelog format).
    pub fn with_prefix(options: &Options, prefix: &str) -> Result<Self> {
        let key = |name: &str| format!("{prefix}.{name}");
        let timestamp_standard = match options
            .get(&key("timestamp-format.standard"))
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("SQL") => TimestampStandard::Sql,
            Some("ISO-8601") => TimestampStandard::Iso8601,
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "{}: '{}' must be 'SQL' or 'ISO-8601', got '{other}'",
                    options.owner(),
                    key("timestamp-format.standard")
                )))
            }
        };
        Ok(JsonOptions {
            fail_on_missing_field: options.bool(&key("fail-on-missing-field"), false)?,
            ignore_parse_errors: options.bool(&key("ignore-parse-errors"), false)?,
            timestamp_standard,
            ignore_null_fields: options.bool(&key("encode.ignore-null-fields"), false)?,
        })
    }
}

/// Checks that every column type can be read and written as JSON.
fn check_types(schema: &Schema) -> Result<()> {
    fn supported(data_type: &DataType) -> bool {
        match data_type {
            DataType::Interval(_) | DataType::Duration(_) | DataType::Null => false,
            DataType::List(field) | DataType::LargeList(field) => supported(field.data_type()),
            DataType::Struct(fields) => fields.iter().all(|f| supported(f.data_type())),
            DataType::Map(entries, _) => supported(entries.data_type()),
            _ => true,
        }
    }
    for field in schema.fields() {
        if !supported(field.data_type()) {
            return Err(SluiceError::Config(format!(
                "column `{}` has type {} which the json format cannot hold",
                field.name(),
                field.data_type()
            )));
        }
    }
    Ok(())
}

/// Decodes newline-delimited JSON objects into batches of a fixed schema.
pub struct JsonDecoder {
    output_schema: SchemaRef,
    decode_schema: SchemaRef,
    /// Top-level BYTES columns, read as base64 text and decoded afterwards.
    binary_columns: Vec<usize>,
    options: JsonOptions,
    policy: BadRecordPolicy,
    /// The one-pass decoder, when the schema suits it; arrow-json otherwise
    /// and for every chunk it declines.
    direct: Option<DirectDecoder>,
    /// arrow-json's decoder, built on first use: its tape is sized for a
    /// whole batch up front (megabytes per decoder for a wide schema), and
    /// most chunks never need it.
    decoder: Option<Decoder>,
    batch_size: usize,
}

impl JsonDecoder {
    /// A decoder producing `schema`.
    pub fn new(
        schema: SchemaRef,
        options: JsonOptions,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Self> {
        let batch_size = batch_size.max(1);
        check_types(&schema)?;
        let mut binary_columns = Vec::new();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let mut field = field.as_ref().clone();
                if matches!(field.data_type(), DataType::Binary) {
                    binary_columns.push(index);
                    field = field.with_data_type(DataType::Utf8);
                }
                // A non-nullable decode field makes arrow-json reject missing fields.
                field.with_nullable(!options.fail_on_missing_field)
            })
            .collect();
        let decode_schema = Arc::new(Schema::new(fields));
        let direct = DirectDecoder::new(&decode_schema);
        // Without a direct decoder every chunk goes to arrow-json: fail now
        // on a schema it cannot read, not on the first chunk.
        let decoder = match direct {
            Some(_) => None,
            None => Some(Self::build(&decode_schema, batch_size)?),
        };
        Ok(JsonDecoder {
            output_schema: schema,
            direct,
            decode_schema,
            binary_columns,
            options,
            policy,
            decoder,
            batch_size,
        })
    }

    fn build(schema: &SchemaRef, batch_size: usize) -> Result<Decoder, ArrowError> {
        ReaderBuilder::new(schema.clone())
            .with_batch_size(batch_size)
            .build_decoder()
    }

    /// Decodes `data` with arrow-json (building its decoder if need be).
    /// After an error the decoder is dropped, as its state is then unknown.
    fn decode_bytes(&mut self, data: &[u8]) -> Result<Option<RecordBatch>, ArrowError> {
        let decoder = match &mut self.decoder {
            Some(decoder) => decoder,
            empty => empty.insert(Self::build(&self.decode_schema, self.batch_size)?),
        };
        let decoded = Self::decode_all(decoder, data);
        if decoded.is_err() {
            self.decoder = None;
        }
        decoded
    }

    fn decode_all(decoder: &mut Decoder, data: &[u8]) -> Result<Option<RecordBatch>, ArrowError> {
        let mut offset = 0;
        while offset < data.len() {
            let read = decoder.decode(&data[offset..])?;
            if read == 0 {
                break;
            }
            offset += read;
        }
        decoder.flush()
    }

    /// Explains why one line failed, naming the field where possible.
    fn reason(&self, line: &[u8], error: &ArrowError) -> String {
        match serde_json::from_slice::<serde_json::Value>(line) {
            Err(syntax) => format!("invalid JSON: {syntax}"),
            Ok(serde_json::Value::Object(object)) => {
                if self.options.fail_on_missing_field {
                    if let Some(missing) = self
                        .output_schema
                        .fields()
                        .iter()
                        .find(|f| !object.contains_key(f.name()))
                    {
                        return format!("missing field '{}'", missing.name());
                    }
                }
                format!("{}", error)
                    .trim_start_matches("Json error: ")
                    .to_string()
            }
            Ok(_) => "expected a JSON object".to_string(),
        }
    }

    /// Turns the decoded batch into the output schema: base64-decodes BYTES
    /// columns (rejecting rows with invalid base64) and restores nullability.
    fn finish_batch(
        &self,
        chunk: &LineChunk,
        rows: &[(u64, usize)],
        batch: RecordBatch,
    ) -> Result<Option<RecordBatch>> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut keep: Option<Vec<bool>> = None;
        for &index in &self.binary_columns {
            let text = columns[index].as_string::<i32>();
            let mut builder = BinaryBuilder::with_capacity(text.len(), text.len() * 8);
            for row in 0..text.len() {
                if text.is_null(row) {
                    builder.append_null();
                    continue;
                }
                match base64::engine::general_purpose::STANDARD.decode(text.value(row)) {
                    Ok(bytes) => builder.append_value(bytes),
                    Err(e) => {
                        let (line_number, line_index) =
                            rows.get(row).copied().unwrap_or((chunk.first_line, 0));
                        let raw = chunk
                            .lines()
                            .nth(line_index)
                            .map(|(_, l)| l.to_vec())
                            .unwrap_or_default();
                        self.policy.reject(
                            &chunk.source,
                            line_number,
                            &raw,
                            &format!(
                                "field '{}': invalid base64 for BYTES: {e}",
                                self.output_schema.field(index).name()
                            ),
                        )?;
                        keep.get_or_insert_with(|| vec![true; text.len()])[row] = false;
                        builder.append_null();
                    }
                }
            }
            columns[index] = Arc::new(builder.finish());
        }
        let batch = RecordBatch::try_new(self.output_schema.clone(), columns)?;
        match keep {
            None => Ok(Some(batch)),
            Some(mask) => {
                let filtered =
                    arrow::compute::filter_record_batch(&batch, &BooleanArray::from(mask))?;
                Ok((filtered.num_rows() > 0).then_some(filtered))
            }
        }
    }
}

/// Reads Debezium JSON change events (`{"before": ..., "after": ..., "op":
/// "c" | "r" | "u" | "d"}`) into a changelog: `c`/`r` insert the `after` row,
/// `u` retracts `before` (`-U`) and adds `after` (`+U`), `d` deletes `before`.
pub struct DebeziumDecoder {
    envelopes: JsonDecoder,
    schema: SchemaRef,
}

impl DebeziumDecoder {
    /// A decoder of change events whose rows have `schema`.
    pub fn new(
        schema: SchemaRef,
        mut options: JsonOptions,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Self> {
        let row = DataType::Struct(schema.fields().clone());
        let envelope = Schema::new(vec![
            Field::new("before", row.clone(), true),
            Field::new("after", row, true),
            Field::new("op", DataType::Utf8, true),
        ]);
        // `before` and `after` are absent or null depending on the operation.
        options.fail_on_missing_field = false;
        Ok(DebeziumDecoder {
            envelopes: JsonDecoder::new(Arc::new(envelope), options, policy, batch_size)?,
            schema,
        })
    }
}

impl RecordDecoder for DebeziumDecoder {
    fn decode(&mut self, chunk: &LineChunk) -> Result<Option<ChangeBatch>> {
        let Some(envelopes) = self.envelopes.decode_records(chunk)? else {
            return Ok(None);
        };
        let count = envelopes.num_rows();
        let before = envelopes.column(0);
        let after = envelopes.column(1);
        let ops = envelopes.column(2).as_string::<i32>();
        // Rows of `before` come first in the stacked array, then those of `after`.
        let mut picks: Vec<u32> = Vec::with_capacity(count);
        let mut kinds: Vec<i8> = Vec::with_capacity(count);
        for row in 0..count {
            let op = if ops.is_null(row) { "" } else { ops.value(row) };
            let (before_row, after_row) = (row as u32, (count + row) as u32);
            match op {
                "c" | "r" => {
                    picks.push(after_row);
                    kinds.push(RowKind::Insert as i8);
                }
                "u" => {
                    // Without a `before` image, the update is just the new row.
                    if before.is_valid(row) {
                        picks.push(before_row);
                        kinds.push(RowKind::UpdateBefore as i8);
                    }
                    picks.push(after_row);
                    kinds.push(RowKind::UpdateAfter as i8);
                }
                "d" => {
                    picks.push(before_row);
                    kinds.push(RowKind::Delete as i8);
                }
                other => {
                    return Err(SluiceError::Format(format!(
                    "{} lines {}..: debezium-json event with op '{other}' (expected c, r, u or d)",
                    chunk.source, chunk.first_line
                )))
                }
            }
        }
        let stacked = arrow::compute::concat(&[before.as_ref(), after.as_ref()])?;
        let rows = arrow::compute::take(&stacked, &arrow::array::UInt32Array::from(picks), None)?;
        let data = RecordBatch::try_new(self.schema.clone(), rows.as_struct().columns().to_vec())?;
        Ok(Some(ChangeBatch {
            data,
            kinds: Some(arrow::array::Int8Array::from(kinds)),
        }))
    }
}

impl RecordDecoder for JsonDecoder {
    fn decode(&mut self, chunk: &LineChunk) -> Result<Option<ChangeBatch>> {
        Ok(self.decode_records(chunk)?.map(ChangeBatch::inserts))
    }
}

impl JsonDecoder {
    /// Decodes every record of `chunk` into a batch of the table's schema.
    pub fn decode_records(&mut self, chunk: &LineChunk) -> Result<Option<RecordBatch>> {
        let decoded = match self.direct.as_mut().and_then(|d| d.decode(&chunk.data)) {
            Some(batch) => Ok((batch.num_rows() > 0).then_some(batch)),
            None => self.decode_bytes(&chunk.data),
        };
        match decoded {
            Ok(Some(batch)) => {
                if self.binary_columns.is_empty() {
                    return Ok(Some(RecordBatch::try_new(
                        self.output_schema.clone(),
                        batch.columns().to_vec(),
                    )?));
                }
                let rows = non_blank_lines(chunk);
                self.finish_batch(chunk, &rows, batch)
            }
            Ok(None) => Ok(None),
            Err(_) => {
                // Find the bad lines one by one; keep every good one.
                let mut batches = Vec::new();
                let mut rows = Vec::new();
                for (line_index, (line_number, line)) in chunk.lines().enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match self.decode_bytes(line) {
                        Ok(Some(batch)) => {
                            rows.push((line_number, line_index));
                            batches.push(batch);
                        }
                        Ok(None) => {}
                        Err(error) => {
                            let reason = self.reason(line, &error);
                            self.policy
                                .reject(&chunk.source, line_number, line, &reason)?;
                        }
                    }
                }
                match concat(&self.decode_schema, batches)? {
                    None => Ok(None),
                    Some(batch) => self.finish_batch(chunk, &rows, batch),
                }
            }
        }
    }
}

/// (line number, index within the chunk) of each non-blank line.
fn non_blank_lines(chunk: &LineChunk) -> Vec<(u64, usize)> {
    chunk
        .lines()
        .enumerate()
        .filter(|(_, (_, line))| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(index, (number, _))| (number, index))
        .collect()
}

/// Options of the `debezium-json` changelog format (Flink's names).
pub const DEBEZIUM_JSON_OPTIONS: [OptionSpec; 4] = [
    OptionSpec::optional(
        "debezium-json.timestamp-format.standard",
        "'SQL' (default) or 'ISO-8601'",
    ),
    OptionSpec::optional(
        "debezium-json.ignore-parse-errors",
        "same as 'errors' = 'skip'",
    ),
    OptionSpec::optional(
        "debezium-json.encode.ignore-null-fields",
        "omit null fields when writing",
    ),
    OptionSpec::optional(
        "debezium-json.schema-include",
        "accepted for compatibility (no schema is embedded)",
    ),
];

/// Writes rows as JSON objects in Flink's layout; in changelog mode wraps each
/// row as Debezium does: `{"before":null,"after":{...},"op":"c"}` for `+I`/`+U`,
/// `{"before":{...},"after":null,"op":"d"}` for `-U`/`-D` (as Flink writes it).
pub struct JsonEncoder {
    schema: SchemaRef,
    options: JsonOptions,
    changelog: bool,
}

impl JsonEncoder {
    /// An encoder for `schema`; `changelog` selects the Debezium envelope.
    pub fn new(schema: SchemaRef, options: JsonOptions, changelog: bool) -> Result<Self> {
        check_types(&schema)?;
        Ok(JsonEncoder {
            schema,
            options,
            changelog,
        })
    }

    fn write_row(&self, batch: &RecordBatch, row: usize, out: &mut Vec<u8>) -> Result<()> {
        write_object(
            self.schema.fields(),
            batch.columns(),
            row,
            &self.options,
            out,
        )
    }
}

impl RecordEncoder for JsonEncoder {
    fn encode(&mut self, batch: &ChangeBatch, out: &mut Vec<u8>) -> Result<()> {
        if !self.changelog {
            require_inserts(batch, "json")?;
        }
        for row in 0..batch.num_rows() {
            if self.changelog {
                if batch.kind(row).is_addition() {
                    out.extend_from_slice(b"{\"before\":null,\"after\":");
                    self.write_row(&batch.data, row, out)?;
                    out.extend_from_slice(b",\"op\":\"c\"}\n");
                } else {
                    out.extend_from_slice(b"{\"before\":");
                    self.write_row(&batch.data, row, out)?;
                    out.extend_from_slice(b",\"after\":null,\"op\":\"d\"}\n");
                }
            } else {
                self.write_row(&batch.data, row, out)?;
                out.push(b'\n');
            }
        }
        Ok(())
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // serde_json's escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_display(value: impl std::fmt::Display, out: &mut Vec<u8>) {
    let _ = write!(out, "{value}");
}

fn write_float(value: f64, out: &mut Vec<u8>) {
    if value.is_finite() {
        let start = out.len();
        write_display(value, out);
        // Whole numbers keep a fraction (4.0, not 4), as Flink writes doubles.
        if !out[start..].iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            out.extend_from_slice(b".0");
        }
    } else {
        write_string(&value.to_string(), out);
    }
}

/// Writes a timestamp with as many fractional digits as its unit holds.
pub(crate) fn format_timestamp(
    value: i64,
    unit: TimeUnit,
    standard: TimestampStandard,
    zoned: bool,
) -> String {
    let (seconds, nanos, digits) = match unit {
        TimeUnit::Second => (value, 0, 0),
        TimeUnit::Millisecond => (
            value.div_euclid(1_000),
            value.rem_euclid(1_000) * 1_000_000,
            3,
        ),
        TimeUnit::Microsecond => (
            value.div_euclid(1_000_000),
            value.rem_euclid(1_000_000) * 1_000,
            6,
        ),
        TimeUnit::Nanosecond => (
            value.div_euclid(1_000_000_000),
            value.rem_euclid(1_000_000_000),
            9,
        ),
    };
    let Some(datetime) = chrono::DateTime::from_timestamp(seconds, nanos as u32) else {
        return value.to_string();
    };
    let separator = match standard {
        TimestampStandard::Sql => ' ',
        TimestampStandard::Iso8601 => 'T',
    };
    let mut text = datetime
        .format(&format!("%Y-%m-%d{separator}%H:%M:%S"))
        .to_string();
    if digits > 0 {
        let fraction = format!("{:09}", nanos);
        text.push('.');
        text.push_str(&fraction[..digits]);
    }
    if zoned && standard == TimestampStandard::Iso8601 {
        text.push('Z');
    }
    text
}

fn format_time(nanos_of_day: i64, digits: usize) -> String {
    let seconds = nanos_of_day.div_euclid(1_000_000_000);
    let nanos = nanos_of_day.rem_euclid(1_000_000_000);
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    );
    if digits > 0 && nanos > 0 {
        text.push('.');
        text.push_str(&format!("{nanos:09}")[..digits]);
    }
    text
}

/// Writes row `row` of `columns` as a JSON object keyed by `fields`' names.
fn write_object(
    fields: &arrow::datatypes::Fields,
    columns: &[ArrayRef],
    row: usize,
    options: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.push(b'{');
    let mut first = true;
    for (field, column) in fields.iter().zip(columns) {
        if options.ignore_null_fields && column.is_null(row) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(field.name(), out);
        out.push(b':');
        write_value(column.as_ref(), row, options, out)?;
    }
    out.push(b'}');
    Ok(())
}

macro_rules! primitive {
    ($array:expr, $type:ty, $row:expr) => {
        $array.as_primitive::<$type>().value($row)
    };
}

fn write_value(
    array: &dyn Array,
    row: usize,
    options: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<()> {
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match array.data_type() {
        DataType::Boolean => out.extend_from_slice(if array.as_boolean().value(row) {
            b"true"
        } else {
            b"false"
        }),
        DataType::Int8 => write_display(primitive!(array, Int8Type, row), out),
        DataType::Int16 => write_display(primitive!(array, Int16Type, row), out),
        DataType::Int32 => write_display(primitive!(array, Int32Type, row), out),
        DataType::Int64 => write_display(primitive!(array, Int64Type, row), out),
        DataType::UInt8 => write_display(primitive!(array, UInt8Type, row), out),
        DataType::UInt16 => write_display(primitive!(array, UInt16Type, row), out),
        DataType::UInt32 => write_display(primitive!(array, UInt32Type, row), out),
        DataType::UInt64 => write_display(primitive!(array, UInt64Type, row), out),
        DataType::Float32 => write_float(primitive!(array, Float32Type, row) as f64, out),
        DataType::Float64 => write_float(primitive!(array, Float64Type, row), out),
        DataType::Decimal128(_, _) => out.extend_from_slice(
            array
                .as_primitive::<Decimal128Type>()
                .value_as_string(row)
                .as_bytes(),
        ),
        DataType::Utf8 => write_string(array.as_string::<i32>().value(row), out),
        DataType::LargeUtf8 => write_string(array.as_string::<i64>().value(row), out),
        DataType::Utf8View => write_string(array.as_string_view().value(row), out),
        DataType::Binary => write_string(
            &base64::engine::general_purpose::STANDARD.encode(array.as_binary::<i32>().value(row)),
            out,
        ),
        DataType::Date32 => {
            let days = primitive!(array, Date32Type, row);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163);
            match date {
                Some(date) => write_string(&date.format("%Y-%m-%d").to_string(), out),
                None => write_display(days, out),
            }
        }
        DataType::Time32(TimeUnit::Second) => write_string(
            &format_time(
                primitive!(array, Time32SecondType, row) as i64 * 1_000_000_000,
                0,
            ),
            out,
        ),
        DataType::Time32(_) => write_string(
            &format_time(
                primitive!(array, Time32MillisecondType, row) as i64 * 1_000_000,
                3,
            ),
            out,
        ),
        DataType::Time64(TimeUnit::Microsecond) => write_string(
            &format_time(primitive!(array, Time64MicrosecondType, row) * 1_000, 6),
            out,
        ),
        DataType::Time64(_) => write_string(
            &format_time(primitive!(array, Time64NanosecondType, row), 9),
            out,
        ),
        DataType::Timestamp(unit, zone) => {
            let value = match unit {
                TimeUnit::Second => primitive!(array, TimestampSecondType, row),
                TimeUnit::Millisecond => primitive!(array, TimestampMillisecondType, row),
                TimeUnit::Microsecond => primitive!(array, TimestampMicrosecondType, row),
                TimeUnit::Nanosecond => primitive!(array, TimestampNanosecondType, row),
            };
            write_string(
                &format_timestamp(value, *unit, options.timestamp_standard, zone.is_some()),
                out,
            )
        }
        DataType::Struct(fields) => {
            write_object(fields, array.as_struct().columns(), row, options, out)?;
        }
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            out.push(b'[');
            for index in 0..values.len() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(values.as_ref(), index, options, out)?;
            }
            out.push(b']');
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            out.push(b'{');
            for index in 0..entries.len() {
                if index > 0 {
                    out.push(b',');
                }
                let mut key = Vec::new();
                write_value(keys.as_ref(), index, options, &mut key)?;
                match keys.as_any().downcast_ref::<StringArray>() {
                    Some(_) => out.extend_from_slice(&key),
                    None => write_string(&String::from_utf8_lossy(&key), out),
                }
                out.push(b':');
                write_value(values.as_ref(), index, options, out)?;
            }
            out.push(b'}');
        }
        other => {
            return Err(SluiceError::Format(format!(
                "the json format cannot write values of type {other}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn options() -> JsonOptions {
        JsonOptions {
            fail_on_missing_field: false,
            ignore_parse_errors: false,
            timestamp_standard: TimestampStandard::Sql,
            ignore_null_fields: false,
        }
    }

    fn chunk(text: &str) -> LineChunk {
        LineChunk::whole("test.json", 1, text.as_bytes().to_vec())
    }

    #[test]
    fn bad_line_is_rejected_and_good_lines_kept() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let policy = BadRecordPolicy::fail("t");
        let mut decoder = JsonDecoder::new(schema.clone(), options(), policy, 1024).unwrap();
        let err = decoder
            .decode_records(&chunk("{\"a\":1}\n{\"a\":\"x\"}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.json:2"), "{err}");

        let dir = std::env::temp_dir();
        let skip = BadRecordPolicy::from_options(
            "t",
            &Options::new("t", [("errors".to_string(), "skip".to_string())].into()),
            false,
            &dir,
        )
        .unwrap();
        let mut decoder = JsonDecoder::new(schema, options(), skip.clone(), 1024).unwrap();
        let batch = decoder
            .decode_records(&chunk("{\"a\":1}\n{oops\n\n{\"a\":3}\n"))
            .unwrap()
            .unwrap();
        assert_eq!(batch.num_rows(), 2);
        let values = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(values.values(), &[1, 3]);
        assert_eq!(
            skip.counters()
                .skipped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn missing_field_is_named_when_required() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let mut opts = options();
        opts.fail_on_missing_field = true;
        let mut decoder = JsonDecoder::new(schema, opts, BadRecordPolicy::fail("t"), 1024).unwrap();
        let err = decoder
            .decode_records(&chunk("{\"a\":1}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field 'b'"), "{err}");
    }

    #[test]
    fn timestamps_follow_the_standard() {
        let ts = 1_436_918_401_123;
        assert_eq!(
            format_timestamp(ts, TimeUnit::Millisecond, TimestampStandard::Sql, false),
            "2015-07-15 00:00:01.123"
        );
        assert_eq!(
            format_timestamp(ts, TimeUnit::Millisecond, TimestampStandard::Iso8601, true),
            "2015-07-15T00:00:01.123Z"
        );
    }
}
