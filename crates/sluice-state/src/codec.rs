//! The binary encoding of operator state: a compact body of integers and byte
//! strings written by the operator, plus the aggregate values it contains
//! (DataFusion `ScalarValue`s), pooled by type into Arrow arrays and stored as
//! Arrow IPC, so every type DataFusion can aggregate round-trips exactly.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use sluice_core::{Result, SluiceError};

use crate::inline_scalar::{read_inline, write_inline, POOLED};

/// Leading bytes of every encoded state chunk.
const MAGIC: &[u8; 4] = b"SLST";
/// Version of the chunk encoding; readers accept this and older versions.
/// Version 2 writes common scalar types inline (version 1 pooled them all).
pub const CODEC_VERSION: u8 = 2;

pub(crate) fn corrupt(what: impl std::fmt::Display) -> SluiceError {
    SluiceError::State(format!("corrupt state chunk: {what}"))
}

struct ScalarPool {
    data_type: DataType,
    values: Vec<ScalarValue>,
}

/// Writes one chunk of operator state.
#[derive(Default)]
pub struct StateWriter {
    body: Vec<u8>,
    pools: Vec<ScalarPool>,
}

impl StateWriter {
    /// An empty chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// An unsigned integer (LEB128).
    pub fn u64(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.body.push(byte);
                return;
            }
            self.body.push(byte | 0x80);
        }
    }

    /// A signed integer (zigzag LEB128).
    pub fn i64(&mut self, value: i64) {
        self.u64(((value << 1) ^ (value >> 63)) as u64);
    }

    /// A flag.
    pub fn bool(&mut self, value: bool) {
        self.body.push(value as u8);
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, value: &[u8]) {
        self.u64(value.len() as u64);
        self.body.extend_from_slice(value);
    }

    /// A scalar value: common types inline, others pooled by type into
    /// Arrow arrays.
    pub fn scalar(&mut self, value: &ScalarValue) {
        if write_inline(self, value) {
            return;
        }
        self.u64(POOLED);
        let data_type = value.data_type();
        let pool = match self.pools.iter().position(|p| p.data_type == data_type) {
            Some(pool) => pool,
            None => {
                self.pools.push(ScalarPool {
                    data_type,
                    values: Vec::new(),
                });
                self.pools.len() - 1
            }
        };
        self.u64(pool as u64);
        self.u64(self.pools[pool].values.len() as u64);
        self.pools[pool].values.push(value.clone());
    }

    /// A length-prefixed list of scalar values.
    pub fn scalars(&mut self, values: &[ScalarValue]) {
        self.u64(values.len() as u64);
        for value in values {
            self.scalar(value);
        }
    }

    /// Appends the value encoded alone in `chunk` (by a writer with no
    /// other content) as if it had been written here: its body bytes, with
    /// no decoding. Returns false, appending nothing, when `chunk` has
    /// pooled values or an older version, which must be decoded and
    /// written again.
    pub fn append_encoded(&mut self, chunk: &[u8]) -> Result<bool> {
        let reader = StateReader::new(chunk)?;
        if reader.version != CODEC_VERSION || !reader.pools.is_empty() {
            return Ok(false);
        }
        self.body.extend_from_slice(reader.body);
        Ok(true)
    }

    /// The encoded chunk.
    pub fn finish(self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.body.len() + 64);
        out.extend_from_slice(MAGIC);
        out.push(CODEC_VERSION);
        let mut header = StateWriter::new();
        header.u64(self.body.len() as u64);
        header.u64(self.pools.len() as u64);
        out.extend_from_slice(&header.body);
        out.extend_from_slice(&self.body);
        for pool in self.pools {
            let array = ScalarValue::iter_to_array(pool.values)
                .map_err(|e| SluiceError::State(format!("encoding aggregate state: {e}")))?;
            let schema = Arc::new(Schema::new(vec![Field::new(
                "v",
                array.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema.clone(), vec![array])?;
            let mut ipc = Vec::new();
            {
                let mut writer = StreamWriter::try_new(&mut ipc, &schema)?;
                writer.write(&batch)?;
                writer.finish()?;
            }
            let mut length = StateWriter::new();
            length.u64(ipc.len() as u64);
            out.extend_from_slice(&length.body);
            out.extend_from_slice(&ipc);
        }
        Ok(out)
    }
}

/// Reads a chunk written by [`StateWriter`], in the order it was written.
pub struct StateReader<'a> {
    body: &'a [u8],
    position: usize,
    pools: Vec<ArrayRef>,
    version: u8,
}

impl<'a> StateReader<'a> {
    /// Parses a chunk; fails on a wrong magic, version or truncated data.
    pub fn new(chunk: &'a [u8]) -> Result<Self> {
        if chunk.len() < 5 || &chunk[..4] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if chunk[4] > CODEC_VERSION {
            return Err(SluiceError::State(format!(
                "state chunk version {} is newer than this Sluice reads ({CODEC_VERSION})",
                chunk[4]
            )));
        }
        let version = chunk[4];
        let mut header = StateReader {
            body: &chunk[5..],
            position: 0,
            pools: Vec::new(),
            version,
        };
        let body_len = header.u64()? as usize;
        let pool_count = header.u64()? as usize;
        let body_start = 5 + header.position;
        let body_end = body_start
            .checked_add(body_len)
            .filter(|end| *end <= chunk.len())
            .ok_or_else(|| corrupt("truncated body"))?;
        let mut tail = StateReader {
            body: &chunk[body_end..],
            position: 0,
            pools: Vec::new(),
            version,
        };
        let mut pools = Vec::with_capacity(pool_count);
        for _ in 0..pool_count {
            let ipc = tail.raw_bytes()?;
            let mut reader = StreamReader::try_new(Cursor::new(ipc), None)?;
            let batch = reader.next().ok_or_else(|| corrupt("empty value pool"))??;
            pools.push(batch.column(0).clone());
        }
        Ok(StateReader {
            body: &chunk[body_start..body_end],
            position: 0,
            pools,
            version,
        })
    }

    /// Whether the whole body has been read.
    pub fn at_end(&self) -> bool {
        self.position >= self.body.len()
    }

    /// See [`StateWriter::u64`].
    pub fn u64(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .body
                .get(self.position)
                .ok_or_else(|| corrupt("truncated integer"))?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("integer too long"))
    }

    /// A `u64` used as a count or index.
    pub fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("count out of range"))
    }

    /// See [`StateWriter::i64`].
    pub fn i64(&mut self) -> Result<i64> {
        let raw = self.u64()?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// See [`StateWriter::bool`].
    pub fn bool(&mut self) -> Result<bool> {
        let byte = *self
            .body
            .get(self.position)
            .ok_or_else(|| corrupt("truncated flag"))?;
        self.position += 1;
        Ok(byte != 0)
    }

    fn raw_bytes(&mut self) -> Result<&'a [u8]> {
        let length = self.usize()?;
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.body.len())
            .ok_or_else(|| corrupt("truncated bytes"))?;
        let bytes = &self.body[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    /// See [`StateWriter::bytes`].
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        self.raw_bytes()
    }

    /// See [`StateWriter::scalar`].
    pub fn scalar(&mut self) -> Result<ScalarValue> {
        if self.version >= 2 {
            let tag = self.u64()?;
            if tag != POOLED {
                return read_inline(self, tag);
            }
        }
        let pool = self.usize()?;
        let index = self.usize()?;
        let array = self
            .pools
            .get(pool)
            .ok_or_else(|| corrupt("unknown value pool"))?;
        if index >= array.len() {
            return Err(corrupt("value index out of range"));
        }
        ScalarValue::try_from_array(array, index).map_err(corrupt)
    }

    /// See [`StateWriter::scalars`].
    pub fn scalars(&mut self) -> Result<Vec<ScalarValue>> {
        let count = self.usize()?;
        (0..count).map(|_| self.scalar()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_encoded_alone_appends_as_if_written_in_place() {
        let write_value = |out: &mut StateWriter| {
            out.bytes(b"row");
            out.scalar(&ScalarValue::Int64(Some(42)));
        };
        let mut alone = StateWriter::new();
        write_value(&mut alone);
        let alone = alone.finish().unwrap();
        let (mut appended, mut written) = (StateWriter::new(), StateWriter::new());
        for out in [&mut appended, &mut written] {
            out.u64(7);
        }
        assert!(appended.append_encoded(&alone).unwrap());
        write_value(&mut written);
        assert_eq!(appended.finish().unwrap(), written.finish().unwrap());

        // Pooled values are not copied: they index the value's own pools.
        let mut pooled = StateWriter::new();
        pooled.scalar(&ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::Int32(Some(1))],
            &arrow::datatypes::DataType::Int32,
        )));
        let pooled = pooled.finish().unwrap();
        let mut out = StateWriter::new();
        assert!(!out.append_encoded(&pooled).unwrap());
        assert!(out.body.is_empty());
        assert!(out.append_encoded(b"not a chunk").is_err());
    }

    #[test]
    fn round_trips_integers_bytes_and_scalars() {
        let mut writer = StateWriter::new();
        writer.u64(300);
        writer.i64(-5);
        writer.i64(i64::MIN);
        writer.bool(true);
        writer.bytes(b"key");
        writer.scalars(&[
            ScalarValue::Int64(Some(7)),
            ScalarValue::Utf8(Some("a".into())),
            ScalarValue::Int64(None),
            ScalarValue::Float64(Some(1.5)),
        ]);
        let others = vec![
            ScalarValue::Null,
            ScalarValue::Boolean(Some(false)),
            ScalarValue::Int8(Some(-3)),
            ScalarValue::UInt32(Some(u32::MAX)),
            ScalarValue::Float32(Some(f32::NAN)),
            ScalarValue::Float64(Some(-0.0)),
            ScalarValue::LargeUtf8(None),
            ScalarValue::Utf8View(Some("view".into())),
            ScalarValue::Binary(Some(vec![0, 255])),
            ScalarValue::Date32(Some(-1)),
            ScalarValue::TimestampMillisecond(Some(1_700_000_000_000), Some("UTC".into())),
            ScalarValue::TimestampMicrosecond(None, None),
            ScalarValue::Decimal128(Some(-12345), 10, 2),
            // No inline encoding: pooled into an Arrow array.
            ScalarValue::List(ScalarValue::new_list_nullable(
                &[ScalarValue::Int32(Some(1)), ScalarValue::Int32(None)],
                &arrow::datatypes::DataType::Int32,
            )),
        ];
        writer.scalars(&others);
        let chunk = writer.finish().unwrap();
        let mut reader = StateReader::new(&chunk).unwrap();
        assert_eq!(reader.u64().unwrap(), 300);
        assert_eq!(reader.i64().unwrap(), -5);
        assert_eq!(reader.i64().unwrap(), i64::MIN);
        assert!(reader.bool().unwrap());
        assert_eq!(reader.bytes().unwrap(), b"key");
        assert_eq!(
            reader.scalars().unwrap(),
            vec![
                ScalarValue::Int64(Some(7)),
                ScalarValue::Utf8(Some("a".into())),
                ScalarValue::Int64(None),
                ScalarValue::Float64(Some(1.5)),
            ]
        );
        let read = reader.scalars().unwrap();
        assert_eq!(read.len(), others.len());
        for (read, written) in read.iter().zip(&others) {
            // NaN != NaN: compare Debug forms, which also show the types.
            assert_eq!(format!("{read:?}"), format!("{written:?}"));
        }
        assert!(reader.at_end());
    }

    #[test]
    fn reads_version_1_chunks_whose_scalars_are_all_pooled() {
        let list = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::Int64(Some(4))],
            &arrow::datatypes::DataType::Int64,
        ));
        let mut writer = StateWriter::new();
        writer.scalar(&list);
        let v2 = writer.finish().unwrap();
        // Version 2 body: POOLED tag, pool 0, index 0. Version 1 has no tag.
        assert_eq!(&v2[5..10], &[3, 1, 0, 0, 0]);
        let mut v1 = Vec::from(&MAGIC[..]);
        v1.extend_from_slice(&[1, 2, 1, 0, 0]);
        v1.extend_from_slice(&v2[10..]);
        let mut reader = StateReader::new(&v1).unwrap();
        assert_eq!(reader.scalar().unwrap(), list);
    }

    #[test]
    fn truncation_is_an_error_not_garbage() {
        let mut writer = StateWriter::new();
        writer.bytes(b"some state");
        writer.scalar(&ScalarValue::Int32(Some(1)));
        let chunk = writer.finish().unwrap();
        for cut in [3, 6, chunk.len() / 2, chunk.len() - 1] {
            assert!(StateReader::new(&chunk[..cut])
                .and_then(|mut r| r.bytes().map(|_| ()))
                .is_err());
        }
    }
}
