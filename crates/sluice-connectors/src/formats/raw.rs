//! The `raw` format: each message is the single column's value, as is
//! (Flink's `raw`): a `STRING` column reads and writes the bytes as UTF-8
//! text, a `BYTES` column reads and writes them unchanged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::{OptionSpec, Options};
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::message::{DecodedMessages, Message, MessageDecoder, MessageEncoder};
use super::require_inserts;

/// Options of the `raw` format.
pub const RAW_OPTIONS: [OptionSpec; 1] = [OptionSpec::optional(
    "raw.charset",
    "character set of STRING values: 'UTF-8' (the default and only one)",
)];

/// Checks the `raw` format's options and that `schema` is one STRING or BYTES
/// column.
pub fn check(options: &Options, schema: &SchemaRef) -> Result<()> {
    if let Some(charset) = options.get("raw.charset") {
        if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
            return Err(SluiceError::Config(format!(
                "{}: 'raw.charset' = '{charset}' is not supported; only 'UTF-8' is",
                options.owner()
            )));
        }
    }
    match schema.fields().as_ref() {
        [field] if matches!(field.data_type(), DataType::Utf8 | DataType::Binary) => Ok(()),
        [field] => Err(SluiceError::Config(format!(
            "{}: the raw format reads and writes one STRING or BYTES column, but `{}` is {}",
            options.owner(),
            field.name(),
            field.data_type()
        ))),
        fields => Err(SluiceError::Config(format!(
            "{}: the raw format reads and writes exactly one column, but {} columns use it ({})",
            options.owner(),
            fields.len(),
            fields
                .iter()
                .map(|f| format!("`{}`", f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Decodes each message into the single column.
pub struct RawDecoder {
    schema: SchemaRef,
    policy: BadRecordPolicy,
}

impl RawDecoder {
    /// A decoder into `schema` (checked by [`check`]).
    pub fn new(schema: SchemaRef, policy: BadRecordPolicy) -> Self {
        RawDecoder { schema, policy }
    }
}

#[async_trait]
impl MessageDecoder for RawDecoder {
    async fn decode_messages(
        &mut self,
        source: &str,
        messages: &[Message<'_>],
    ) -> Result<Option<DecodedMessages>> {
        let mut origins = Vec::with_capacity(messages.len());
        let column: ArrayRef = match self.schema.field(0).data_type() {
            DataType::Utf8 => {
                let mut builder = StringBuilder::with_capacity(messages.len(), 0);
                for (index, message) in messages.iter().enumerate() {
                    match std::str::from_utf8(message.payload) {
                        Ok(text) => {
                            builder.append_value(text);
                            origins.push(index);
                        }
                        Err(error) => self.policy.reject(
                            source,
                            message.position,
                            message.payload,
                            &format!(
                                "field '{}': not UTF-8 text: {error}",
                                self.schema.field(0).name()
                            ),
                        )?,
                    }
                }
                Arc::new(builder.finish())
            }
            _ => {
                let mut builder = BinaryBuilder::with_capacity(messages.len(), 0);
                for (index, message) in messages.iter().enumerate() {
                    builder.append_value(message.payload);
                    origins.push(index);
                }
                Arc::new(builder.finish())
            }
        };
        if origins.is_empty() {
            return Ok(None);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), vec![column])?;
        Ok(Some(DecodedMessages {
            batch: ChangeBatch::inserts(batch),
            origins,
        }))
    }
}

/// Encodes the single column of each row as the message.
pub struct RawEncoder;

#[async_trait]
impl MessageEncoder for RawEncoder {
    async fn encode_messages(&mut self, batch: &ChangeBatch, out: &mut Vec<Vec<u8>>) -> Result<()> {
        require_inserts(batch, "raw")?;
        let column = batch.data.column(0);
        for row in 0..column.len() {
            // A NULL value is an empty message.
            let bytes = if column.is_null(row) {
                Vec::new()
            } else {
                match column.data_type() {
                    DataType::Utf8 => column.as_string::<i32>().value(row).as_bytes().to_vec(),
                    _ => column.as_binary::<i32>().value(row).to_vec(),
                }
            };
            out.push(bytes);
        }
        Ok(())
    }
}
