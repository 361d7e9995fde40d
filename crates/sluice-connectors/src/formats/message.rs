//! Message formats: one record per message, as Kafka carries them.
//!
//! Line formats (`json`, `csv`, `debezium-json`) work on messages through
//! [`LineMessages`]; binary formats (`raw`, `avro`, `avro-confluent`,
//! `protobuf`) implement [`MessageDecoder`] and [`MessageEncoder`] directly.

use async_trait::async_trait;
use sluice_core::{ChangeBatch, Result};

use super::{LineChunk, RecordDecoder, RecordEncoder};

/// Where the messages of a format come from or go to: formats that name
/// things after the topic (schema registry subjects) read it here.
#[derive(Debug, Clone)]
pub struct MessageContext {
    /// Table name, for error messages.
    pub table: String,
    /// The topic the messages are read from or written to.
    pub topic: String,
    /// Whether this format encodes the message key (`key.format`) rather than
    /// the value.
    pub is_key: bool,
}

/// One message to decode: its position (the Kafka offset, reported with bad
/// records) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Position reported with a bad record (the Kafka offset).
    pub position: u64,
    /// The message bytes.
    pub payload: &'a [u8],
}

/// Rows decoded from messages, with the message each row came from.
#[derive(Debug)]
pub struct DecodedMessages {
    /// The rows (a changelog format may produce two rows of one message).
    pub batch: ChangeBatch,
    /// For every row of `batch`, the index of its message in the input slice.
    pub origins: Vec<usize>,
}

/// Decodes message payloads into rows of a fixed schema.
#[async_trait]
pub trait MessageDecoder: Send {
    /// Decodes `messages` read from `source` (e.g. `topic[3]`). Bad messages
    /// go to the bad-record policy and produce no row.
    async fn decode_messages(
        &mut self,
        source: &str,
        messages: &[Message<'_>],
    ) -> Result<Option<DecodedMessages>>;
}

/// Encodes rows into message payloads.
#[async_trait]
pub trait MessageEncoder: Send {
    /// Appends one payload per row of `batch` to `out`, in row order.
    async fn encode_messages(&mut self, batch: &ChangeBatch, out: &mut Vec<Vec<u8>>) -> Result<()>;
}

/// Builds a line decoder that fails on the first bad record.
pub type MakeLineDecoder = Box<dyn Fn() -> Result<Box<dyn RecordDecoder>> + Send>;

/// A line format (`json`, `csv`, `debezium-json`) decoding messages: each
/// message is one line.
pub struct LineMessages {
    /// Decodes with the table's bad-record policy.
    careful: Box<dyn RecordDecoder>,
    /// With `origins`: decodes whole runs with a policy that fails on the first
    /// bad record, so a run without one needs no per-message work.
    fast: Option<Box<dyn RecordDecoder>>,
    make_fast: MakeLineDecoder,
    /// Whether the format can make other than one row per message.
    changelog: bool,
}

impl LineMessages {
    /// Wraps `careful` (the table's policy). When rows must be traced back to
    /// their messages (`origins`), `make_fast` builds a decoder that fails on
    /// the first bad record.
    pub fn new(
        careful: Box<dyn RecordDecoder>,
        make_fast: Option<MakeLineDecoder>,
        changelog: bool,
    ) -> Result<Self> {
        let (fast, make_fast) = match make_fast {
            Some(make) => (Some(make()?), make),
            None => (
                None,
                Box::new(|| -> Result<Box<dyn RecordDecoder>> {
                    Err(sluice_core::SluiceError::Runtime(
                        "no fast line decoder".into(),
                    ))
                }) as MakeLineDecoder,
            ),
        };
        Ok(LineMessages {
            careful,
            fast,
            make_fast,
            changelog,
        })
    }
}

/// The messages as one chunk of lines (newlines inside a message become
/// spaces: whitespace in JSON).
fn as_lines(source: &str, messages: &[Message<'_>]) -> LineChunk {
    let mut data = Vec::with_capacity(messages.iter().map(|m| m.payload.len() + 1).sum());
    for message in messages {
        let start = data.len();
        data.extend_from_slice(message.payload);
        for byte in &mut data[start..] {
            if *byte == b'\n' {
                *byte = b' ';
            }
        }
        data.push(b'\n');
    }
    let first = messages.first().map_or(0, |m| m.position);
    LineChunk {
        source: std::sync::Arc::from(source),
        first_line: first,
        line_count: messages.len() as u64,
        start_offset: first,
        end_offset: messages.last().map_or(first, |m| m.position + 1),
        data,
    }
}

#[async_trait]
impl MessageDecoder for LineMessages {
    async fn decode_messages(
        &mut self,
        source: &str,
        messages: &[Message<'_>],
    ) -> Result<Option<DecodedMessages>> {
        let Some(fast) = &mut self.fast else {
            // Nobody needs origins: decode the run as one chunk.
            let chunk = as_lines(source, messages);
            return Ok(self.careful.decode(&chunk)?.map(|batch| DecodedMessages {
                batch,
                origins: Vec::new(),
            }));
        };
        if !self.changelog && messages.iter().all(|m| !m.payload.is_empty()) {
            match fast.decode(&as_lines(source, messages)) {
                Ok(Some(batch)) if batch.num_rows() == messages.len() => {
                    return Ok(Some(DecodedMessages {
                        origins: (0..messages.len()).collect(),
                        batch,
                    }))
                }
                // A bad record: its partial state is gone with it.
                _ => self.fast = Some((self.make_fast)()?),
            }
        }
        // One message at a time, so every row knows its message.
        let mut batches = Vec::new();
        let mut origins = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let chunk = as_lines(source, std::slice::from_ref(message));
            if let Some(batch) = self.careful.decode(&chunk)? {
                origins.extend(std::iter::repeat_n(index, batch.num_rows()));
                batches.push(batch);
            }
        }
        if batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(DecodedMessages {
            batch: ChangeBatch::concat(&batches)?,
            origins,
        }))
    }
}

/// A line format encoding messages: each row's line is one message.
pub struct LineEncoder(pub Box<dyn RecordEncoder>);

#[async_trait]
impl MessageEncoder for LineEncoder {
    async fn encode_messages(&mut self, batch: &ChangeBatch, out: &mut Vec<Vec<u8>>) -> Result<()> {
        let mut lines = Vec::new();
        self.0.encode(batch, &mut lines)?;
        let lines = lines.strip_suffix(b"\n").unwrap_or(&lines);
        if !lines.is_empty() {
            out.extend(lines.split(|b| *b == b'\n').map(<[u8]>::to_vec));
        }
        Ok(())
    }
}
