//! [`RowCodec`]: whole rows of an operator's state as compact bytes.
//!
//! Joins, Top-N, OVER aggregates and temporal joins keep whole input rows
//! in their state, and only ever compare them for equality and turn them
//! back into columns; they never sort by them. So they need no
//! order-preserving encoding, and Arrow's row format (which pads strings to
//! 8- and 32-byte blocks and spends a byte and a fixed width on every value)
//! costs them memory: a Nexmark bid takes 228 bytes there and 159 here.
//!
//! A row is a null bitmap (one bit per column) followed by every non-null
//! value in column order: integers and temporal values as zigzag LEB128
//! varints (unsigned integers as plain varints), booleans as a byte, other
//! fixed-width values (floats, decimals, intervals, fixed-size binary) as
//! their little-endian bytes, and strings and binaries as a varint length
//! followed by the bytes. Equal rows encode to equal bytes. A schema with a
//! column type outside this list (lists, structs, maps, dictionaries) is
//! encoded whole in Arrow's row format instead.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{make_array, new_null_array, Array, ArrayData, ArrayRef, AsArray};
use arrow::buffer::{BooleanBuffer, Buffer, MutableBuffer, NullBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, IntervalUnit, SchemaRef};
use arrow::row::{RowConverter, Rows};
use sluice_core::{Result, SluiceError};

use crate::rows::{decode_rows, whole_row_converter};
use crate::state::bad_state;

/// A snapshot header value marking rows in this module's encoding (older
/// snapshots of the same operators stored Arrow rows and lack it).
pub(crate) const COMPACT_ROWS: i64 = 1;

/// Splits a snapshot header of `values` values, optionally followed by
/// [`COMPACT_ROWS`], into those values and whether the rows are Arrow rows
/// (the older format); `None` for any other header.
pub(crate) fn header_row_format(header: &[i64], values: usize) -> Option<(&[i64], bool)> {
    match header.len() {
        n if n == values => Some((header, true)),
        n if n == values + 1 && header[values] == COMPACT_ROWS => Some((&header[..values], false)),
        _ => None,
    }
}

/// Runs `restore` with `codecs` converting Arrow rows when `arrow_rows`.
pub(crate) fn restoring<T>(
    codecs: &[&RowCodec],
    arrow_rows: bool,
    restore: impl FnOnce() -> Result<T>,
) -> Result<T> {
    for codec in codecs {
        codec.set_reading_arrow_rows(arrow_rows);
    }
    let restored = restore();
    for codec in codecs {
        codec.set_reading_arrow_rows(false);
    }
    restored
}

/// How one column's values are written.
#[derive(Clone, Copy, Debug)]
enum ColumnLayout {
    /// `DataType::Null`: nothing is written.
    Null,
    Boolean,
    /// A signed native value of this many bytes, zigzag varint encoded.
    Signed(usize),
    /// An unsigned native value of this many bytes, varint encoded.
    Unsigned(usize),
    /// This many little-endian bytes, copied.
    Fixed(usize),
    /// Length-prefixed bytes.
    Bytes,
}

impl ColumnLayout {
    fn of(data_type: &DataType) -> Option<Self> {
        use DataType::*;
        Some(match data_type {
            Null => ColumnLayout::Null,
            Boolean => ColumnLayout::Boolean,
            Int8 => ColumnLayout::Signed(1),
            Int16 => ColumnLayout::Signed(2),
            Int32 | Date32 | Time32(_) | Interval(IntervalUnit::YearMonth) => {
                ColumnLayout::Signed(4)
            }
            Int64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => ColumnLayout::Signed(8),
            UInt8 => ColumnLayout::Unsigned(1),
            UInt16 => ColumnLayout::Unsigned(2),
            UInt32 => ColumnLayout::Unsigned(4),
            UInt64 => ColumnLayout::Unsigned(8),
            Float16 => ColumnLayout::Fixed(2),
            Float32 | Decimal32(_, _) => ColumnLayout::Fixed(4),
            Float64 | Decimal64(_, _) | Interval(IntervalUnit::DayTime) => ColumnLayout::Fixed(8),
            Decimal128(_, _) | Interval(IntervalUnit::MonthDayNano) => ColumnLayout::Fixed(16),
            Decimal256(_, _) => ColumnLayout::Fixed(32),
            FixedSizeBinary(width) => ColumnLayout::Fixed(usize::try_from(*width).ok()?),
            Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView => ColumnLayout::Bytes,
            _ => return None,
        })
    }
}

/// The compact layout of a schema whose every column type has one.
struct CompactLayout {
    types: Vec<DataType>,
    columns: Vec<ColumnLayout>,
    null_bytes: usize,
}

enum Layout {
    Compact(CompactLayout),
    /// Arrow's row format, for schemas with a type the compact layout lacks.
    Arrow(RowConverter),
}

/// Encodes whole rows of one schema for operator state and decodes them
/// back into columns (see the module docs for the format).
pub(crate) struct RowCodec {
    layout: Layout,
    schema: SchemaRef,
    operator: &'static str,
    /// Set while restoring a snapshot written before the compact format:
    /// its rows are in Arrow's row format and [`RowCodec::restored`]
    /// converts them.
    reading_arrow_rows: AtomicBool,
    /// The Arrow row decoder for that conversion, built on first use.
    arrow_rows: OnceLock<RowConverter>,
}

/// Rows encoded by [`RowCodec::encode`].
pub(crate) enum EncodedRows {
    Compact { data: Vec<u8>, offsets: Vec<usize> },
    Arrow(Rows),
}

impl EncodedRows {
    /// The bytes of row `index`.
    pub(crate) fn row(&self, index: usize) -> &[u8] {
        match self {
            EncodedRows::Compact { data, offsets } => &data[offsets[index]..offsets[index + 1]],
            EncodedRows::Arrow(rows) => rows.row(index).data(),
        }
    }
}

impl RowCodec {
    /// A codec for rows of `schema`; `operator` names the operator in errors.
    pub(crate) fn new(schema: &SchemaRef, operator: &'static str) -> Result<Arc<Self>> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let columns: Option<Vec<ColumnLayout>> = types.iter().map(ColumnLayout::of).collect();
        let layout = match columns {
            Some(columns) => Layout::Compact(CompactLayout {
                null_bytes: types.len().div_ceil(8),
                types,
                columns,
            }),
            None => Layout::Arrow(whole_row_converter(schema, operator)?),
        };
        Ok(Arc::new(RowCodec {
            layout,
            schema: schema.clone(),
            operator,
            reading_arrow_rows: AtomicBool::new(false),
            arrow_rows: OnceLock::new(),
        }))
    }

    /// Encodes every row of `columns` (the schema's columns, in order).
    pub(crate) fn encode(&self, columns: &[ArrayRef]) -> Result<EncodedRows> {
        match &self.layout {
            Layout::Compact(layout) => {
                let (data, offsets) = layout.encode(columns)?;
                Ok(EncodedRows::Compact { data, offsets })
            }
            Layout::Arrow(converter) => Ok(EncodedRows::Arrow(converter.convert_columns(columns)?)),
        }
    }

    /// Decodes encoded rows back into the schema's columns.
    pub(crate) fn decode<'r>(&self, rows: impl Iterator<Item = &'r [u8]>) -> Result<Vec<ArrayRef>> {
        match &self.layout {
            Layout::Compact(layout) => layout.decode(&rows.collect::<Vec<_>>()),
            Layout::Arrow(converter) => decode_rows(converter, rows),
        }
    }

    /// Marks whether the snapshot being restored stores its rows in Arrow's
    /// row format (written before the compact format existed).
    fn set_reading_arrow_rows(&self, arrow_rows: bool) {
        self.reading_arrow_rows.store(arrow_rows, Ordering::Relaxed);
    }

    /// A row read from a snapshot or spill file, in this codec's encoding
    /// (borrowed unless it had to be converted).
    pub(crate) fn restored<'r>(&self, row: &'r [u8]) -> Result<Cow<'r, [u8]>> {
        if !self.reading_arrow_rows.load(Ordering::Relaxed) {
            return Ok(Cow::Borrowed(row));
        }
        let Layout::Compact(layout) = &self.layout else {
            return Ok(Cow::Borrowed(row));
        };
        let converter = match self.arrow_rows.get() {
            Some(converter) => converter,
            None => {
                let converter = whole_row_converter(&self.schema, self.operator)?;
                self.arrow_rows.get_or_init(|| converter)
            }
        };
        let columns = decode_rows(converter, std::iter::once(row))?;
        let (data, _) = layout.encode(&columns)?;
        Ok(Cow::Owned(data))
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn varint_length(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn write_varint(out: &mut [u8], mut value: u64) -> usize {
    let mut written = 0;
    while value >= 0x80 {
        out[written] = (value as u8) | 0x80;
        value >>= 7;
        written += 1;
    }
    out[written] = value as u8;
    written + 1
}

fn read_varint(row: &[u8], at: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *row.get(*at).ok_or_else(|| bad_state("truncated row"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(bad_state("row varint too long"))
}

fn take_bytes<'r>(row: &'r [u8], at: &mut usize, length: usize) -> Result<&'r [u8]> {
    let end = at
        .checked_add(length)
        .filter(|end| *end <= row.len())
        .ok_or_else(|| bad_state("truncated row"))?;
    let bytes = &row[*at..end];
    *at = end;
    Ok(bytes)
}

/// A column's values, ready to be measured and written.
enum ColumnValues<'a> {
    Nothing,
    Booleans(BooleanBuffer),
    /// Varint payloads (already zigzagged for signed columns).
    Varints(Vec<u64>),
    /// The column's values (`width` bytes a row).
    Fixed {
        bytes: Buffer,
        width: usize,
    },
    Bytes(Vec<&'a [u8]>),
}

impl<'a> ColumnValues<'a> {
    fn of(array: &'a ArrayRef, layout: ColumnLayout) -> Result<Self> {
        Ok(match layout {
            ColumnLayout::Null => ColumnValues::Nothing,
            ColumnLayout::Boolean => ColumnValues::Booleans(array.as_boolean().values().clone()),
            ColumnLayout::Signed(width) => {
                ColumnValues::Varints(native_integers(array, width, true)?)
            }
            ColumnLayout::Unsigned(width) => {
                ColumnValues::Varints(native_integers(array, width, false)?)
            }
            ColumnLayout::Fixed(width) => ColumnValues::Fixed {
                bytes: value_bytes(array, width)?,
                width,
            },
            ColumnLayout::Bytes => ColumnValues::Bytes(byte_values(array)?),
        })
    }

    /// Adds each valid row's value length to `lengths`.
    fn add_lengths(&self, nulls: Option<&NullBuffer>, lengths: &mut [usize]) {
        let rows = lengths.len();
        match self {
            ColumnValues::Nothing => {}
            ColumnValues::Booleans(_) => for_valid(nulls, rows, |row| lengths[row] += 1),
            ColumnValues::Varints(values) => for_valid(nulls, rows, |row| {
                lengths[row] += varint_length(values[row]);
            }),
            ColumnValues::Fixed { width, .. } => {
                for_valid(nulls, rows, |row| lengths[row] += width);
            }
            ColumnValues::Bytes(values) => for_valid(nulls, rows, |row| {
                let length = values[row].len();
                lengths[row] += varint_length(length as u64) + length;
            }),
        }
    }

    /// Writes each valid row's value at its cursor into `data`, advancing
    /// the cursor.
    fn write_all(&self, nulls: Option<&NullBuffer>, data: &mut [u8], cursors: &mut [usize]) {
        let rows = cursors.len();
        match self {
            ColumnValues::Nothing => {}
            ColumnValues::Booleans(values) => for_valid(nulls, rows, |row| {
                data[cursors[row]] = u8::from(values.value(row));
                cursors[row] += 1;
            }),
            ColumnValues::Varints(values) => for_valid(nulls, rows, |row| {
                cursors[row] += write_varint(&mut data[cursors[row]..], values[row]);
            }),
            ColumnValues::Fixed { bytes, width } => {
                let bytes = bytes.as_slice();
                for_valid(nulls, rows, |row| {
                    let (from, to) = (row * width, cursors[row]);
                    data[to..to + width].copy_from_slice(&bytes[from..from + width]);
                    cursors[row] += width;
                });
            }
            ColumnValues::Bytes(values) => for_valid(nulls, rows, |row| {
                let value = values[row];
                let at = cursors[row] + write_varint(&mut data[cursors[row]..], value.len() as u64);
                data[at..at + value.len()].copy_from_slice(value);
                cursors[row] = at + value.len();
            }),
        }
    }
}

/// Calls `visit` with every row of `rows` that `nulls` marks valid.
fn for_valid(nulls: Option<&NullBuffer>, rows: usize, visit: impl FnMut(usize)) {
    match nulls {
        None => (0..rows).for_each(visit),
        Some(nulls) => nulls.valid_indices().for_each(visit),
    }
}

/// A primitive column's values widened to 64 bits (zigzagged when signed).
fn native_integers(array: &ArrayRef, width: usize, signed: bool) -> Result<Vec<u64>> {
    let bytes = value_bytes(array, width)?;
    macro_rules! widen {
        ($native:ty) => {
            bytes
                .chunks_exact(width)
                .map(|chunk| {
                    let value = <$native>::from_le_bytes(chunk.try_into().unwrap_or_default());
                    if signed {
                        zigzag(value as i64)
                    } else {
                        value as u64
                    }
                })
                .collect()
        };
    }
    Ok(match (width, signed) {
        (1, true) => widen!(i8),
        (2, true) => widen!(i16),
        (4, true) => widen!(i32),
        (8, true) => widen!(i64),
        (1, false) => widen!(u8),
        (2, false) => widen!(u16),
        (4, false) => widen!(u32),
        _ => widen!(u64),
    })
}

/// The values of a primitive or fixed-size column's rows, `width` bytes
/// each (its value buffer cut to the array's slice).
fn value_bytes(array: &ArrayRef, width: usize) -> Result<Buffer> {
    let data = array.to_data();
    let (start, length) = (data.offset() * width, data.len() * width);
    data.buffers()
        .first()
        .filter(|buffer| start + length <= buffer.len())
        .map(|buffer| buffer.slice_with_length(start, length))
        .ok_or_else(|| SluiceError::Runtime("row encoding: short value buffer".into()))
}

/// Every row's bytes of a string or binary column (nulls' are unused).
fn byte_values(array: &ArrayRef) -> Result<Vec<&[u8]>> {
    let rows = 0..array.len();
    Ok(match array.data_type() {
        DataType::Utf8 => {
            let values = array.as_string::<i32>();
            rows.map(|i| values.value(i).as_bytes()).collect()
        }
        DataType::LargeUtf8 => {
            let values = array.as_string::<i64>();
            rows.map(|i| values.value(i).as_bytes()).collect()
        }
        DataType::Utf8View => {
            let values = array.as_string_view();
            rows.map(|i| values.value(i).as_bytes()).collect()
        }
        DataType::Binary => {
            let values = array.as_binary::<i32>();
            rows.map(|i| values.value(i)).collect()
        }
        DataType::LargeBinary => {
            let values = array.as_binary::<i64>();
            rows.map(|i| values.value(i)).collect()
        }
        DataType::BinaryView => {
            let values = array.as_binary_view();
            rows.map(|i| values.value(i)).collect()
        }
        other => {
            return Err(SluiceError::Runtime(format!(
                "row encoding: {other} is not a string or binary type"
            )))
        }
    })
}

impl CompactLayout {
    /// Encodes every row: the bytes of all rows back to back, and the
    /// offset where each row starts (plus the end).
    fn encode(&self, columns: &[ArrayRef]) -> Result<(Vec<u8>, Vec<usize>)> {
        if columns.len() != self.columns.len() {
            return Err(SluiceError::Runtime(format!(
                "row encoding: {} columns for a {}-column schema",
                columns.len(),
                self.columns.len()
            )));
        }
        if let Some((array, expected)) = columns
            .iter()
            .zip(&self.types)
            .find(|(array, expected)| array.data_type() != *expected)
        {
            return Err(SluiceError::Runtime(format!(
                "row encoding: a {} column where the schema has {expected}",
                array.data_type()
            )));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        let values = columns
            .iter()
            .zip(&self.columns)
            .map(|(array, layout)| ColumnValues::of(array, *layout))
            .collect::<Result<Vec<_>>>()?;
        let nulls: Vec<Option<NullBuffer>> = columns
            .iter()
            .map(|array| array.logical_nulls().filter(|n| n.null_count() > 0))
            .collect();
        let mut lengths = vec![self.null_bytes; rows];
        for (column, nulls) in values.iter().zip(&nulls) {
            column.add_lengths(nulls.as_ref(), &mut lengths);
        }
        let mut offsets = Vec::with_capacity(rows + 1);
        let mut total = 0usize;
        offsets.push(0);
        for length in &lengths {
            total += length;
            offsets.push(total);
        }
        let mut data = vec![0u8; total];
        let mut cursors: Vec<usize> = offsets[..rows]
            .iter()
            .map(|o| o + self.null_bytes)
            .collect();
        for (index, (column, nulls)) in values.iter().zip(&nulls).enumerate() {
            if let Some(nulls) = nulls {
                for row in (0..rows).filter(|row| nulls.is_null(*row)) {
                    data[offsets[row] + index / 8] |= 1 << (index % 8);
                }
            }
            column.write_all(nulls.as_ref(), &mut data, &mut cursors);
        }
        Ok((data, offsets))
    }

    /// Decodes rows written by [`CompactLayout::encode`] into columns.
    fn decode(&self, rows: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        if rows.iter().any(|row| row.len() < self.null_bytes) {
            return Err(bad_state("truncated row"));
        }
        let mut cursors = vec![self.null_bytes; rows.len()];
        self.columns
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(index, (layout, data_type))| {
                let valid: Vec<bool> = rows
                    .iter()
                    .map(|row| row[index / 8] & (1 << (index % 8)) == 0)
                    .collect();
                decode_column(*layout, data_type, rows, &valid, &mut cursors)
            })
            .collect()
    }
}

/// Decodes one column of every row, advancing each row's cursor past it.
fn decode_column(
    layout: ColumnLayout,
    data_type: &DataType,
    rows: &[&[u8]],
    valid: &[bool],
    cursors: &mut [usize],
) -> Result<ArrayRef> {
    let count = rows.len();
    let nulls = valid
        .iter()
        .any(|v| !v)
        .then(|| NullBuffer::from(valid.to_vec()));
    let buffers: Vec<Buffer> = match layout {
        ColumnLayout::Null => return Ok(new_null_array(data_type, count)),
        ColumnLayout::Boolean => {
            let mut values = Vec::with_capacity(count);
            for ((row, at), valid) in rows.iter().zip(cursors.iter_mut()).zip(valid) {
                values.push(*valid && take_bytes(row, at, 1)?[0] != 0);
            }
            let values = BooleanBuffer::from(values);
            let data = ArrayData::builder(data_type.clone())
                .len(count)
                .add_buffer(values.into_inner())
                .nulls(nulls)
                .build()?;
            return Ok(make_array(data));
        }
        ColumnLayout::Signed(width) | ColumnLayout::Unsigned(width) => {
            let signed = matches!(layout, ColumnLayout::Signed(_));
            // Arrow's buffers are aligned for any native type; a `Vec<u8>` is not.
            let mut bytes = MutableBuffer::with_capacity(count * width);
            for ((row, at), valid) in rows.iter().zip(cursors.iter_mut()).zip(valid) {
                let value = if *valid { read_varint(row, at)? } else { 0 };
                let value = if signed {
                    unzigzag(value) as u64
                } else {
                    value
                };
                bytes.extend_from_slice(&value.to_le_bytes()[..width]);
            }
            vec![bytes.into()]
        }
        ColumnLayout::Fixed(width) => {
            let mut bytes = MutableBuffer::with_capacity(count * width);
            for ((row, at), valid) in rows.iter().zip(cursors.iter_mut()).zip(valid) {
                if *valid {
                    bytes.extend_from_slice(take_bytes(row, at, width)?);
                } else {
                    bytes.extend_zeros(width);
                }
            }
            vec![bytes.into()]
        }
        ColumnLayout::Bytes => {
            let mut offsets: Vec<i64> = Vec::with_capacity(count + 1);
            let mut values = Vec::new();
            offsets.push(0);
            for ((row, at), valid) in rows.iter().zip(cursors.iter_mut()).zip(valid) {
                if *valid {
                    let length = usize::try_from(read_varint(row, at)?)
                        .map_err(|_| bad_state("row value length"))?;
                    values.extend_from_slice(take_bytes(row, at, length)?);
                }
                offsets.push(values.len() as i64);
            }
            return bytes_column(data_type, offsets, values, nulls);
        }
    };
    let data = ArrayData::builder(data_type.clone())
        .len(count)
        .buffers(buffers)
        .nulls(nulls)
        .build()?;
    Ok(make_array(data))
}

/// A string or binary column of `data_type` from 64-bit offsets and values.
fn bytes_column(
    data_type: &DataType,
    offsets: Vec<i64>,
    values: Vec<u8>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    let count = offsets.len() - 1;
    let (large, string) = match data_type {
        DataType::Utf8 => (false, true),
        DataType::Binary => (false, false),
        DataType::LargeUtf8 | DataType::Utf8View => (true, true),
        _ => (true, false),
    };
    let offsets = if large {
        Buffer::from_vec(offsets)
    } else {
        let narrow = offsets
            .into_iter()
            .map(i32::try_from)
            .collect::<std::result::Result<Vec<i32>, _>>()
            .map_err(|_| SluiceError::Runtime("decoded rows hold over 2 GB of text".into()))?;
        Buffer::from_vec(narrow)
    };
    let built_type = match (large, string) {
        (false, true) => DataType::Utf8,
        (false, false) => DataType::Binary,
        (true, true) => DataType::LargeUtf8,
        (true, false) => DataType::LargeBinary,
    };
    let data = ArrayData::builder(built_type.clone())
        .len(count)
        .add_buffer(offsets)
        .add_buffer(Buffer::from_vec(values))
        .nulls(nulls)
        .build()?;
    let array = make_array(data);
    Ok(if &built_type == data_type {
        array
    } else {
        cast(&array, data_type)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, BinaryViewArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array,
        DurationSecondArray, FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array,
        Int32Array, Int64Array, IntervalMonthDayNanoArray, LargeStringArray, RecordBatch,
        StringArray, StringViewArray, Time64MicrosecondArray, TimestampMillisecondArray,
        UInt16Array, UInt32Array, UInt64Array, UInt8Array,
    };
    use arrow::datatypes::{i256, IntervalMonthDayNano};

    fn round_trip(batch: &RecordBatch) -> (Vec<Vec<u8>>, Vec<ArrayRef>) {
        let codec = RowCodec::new(&batch.schema(), "test").unwrap();
        let encoded = codec.encode(batch.columns()).unwrap();
        let rows: Vec<Vec<u8>> = (0..batch.num_rows())
            .map(|i| encoded.row(i).to_vec())
            .collect();
        let decoded = codec.decode(rows.iter().map(Vec::as_slice)).unwrap();
        (rows, decoded)
    }

    #[test]
    fn every_supported_type_round_trips_with_nulls_and_slices() {
        let batch = RecordBatch::try_from_iter([
            (
                "i16",
                Arc::new(Int16Array::from(vec![
                    Some(-3),
                    None,
                    Some(i16::MIN),
                    Some(7),
                ])) as ArrayRef,
            ),
            (
                "i32",
                Arc::new(Int32Array::from(vec![
                    Some(i32::MAX),
                    Some(0),
                    None,
                    Some(-1),
                ])) as _,
            ),
            (
                "i64",
                Arc::new(Int64Array::from(vec![i64::MIN, i64::MAX, 0, 300])) as _,
            ),
            (
                "u8",
                Arc::new(UInt8Array::from(vec![Some(255), None, Some(0), Some(1)])) as _,
            ),
            (
                "u64",
                Arc::new(UInt64Array::from(vec![u64::MAX, 0, 1 << 40, 5])) as _,
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![
                    Some(-0.0),
                    Some(f64::NAN),
                    None,
                    Some(1.5),
                ])) as _,
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    Some(true),
                ])) as _,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMillisecondArray::from(vec![
                        Some(1_436_918_400_000),
                        None,
                        Some(-5),
                        Some(0),
                    ])
                    .with_timezone("+01:00"),
                ) as _,
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-1), Some(i128::MAX)])
                        .with_precision_and_scale(38, 2)
                        .unwrap(),
                ) as _,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![
                    Some("ünïcode"),
                    Some(""),
                    None,
                    Some("x"),
                ])) as _,
            ),
            (
                "ls",
                Arc::new(LargeStringArray::from(vec![
                    None,
                    Some("a"),
                    Some("bc"),
                    Some(""),
                ])) as _,
            ),
            (
                "sv",
                Arc::new(StringViewArray::from(vec![
                    Some("a string longer than twelve"),
                    None,
                    Some("s"),
                    Some(""),
                ])) as _,
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x00\xff"[..]),
                    None,
                    Some(b""),
                    Some(b"z"),
                ])) as _,
            ),
            (
                "fsb",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        vec![Some(vec![1u8, 2]), None, Some(vec![3, 4]), Some(vec![0, 0])]
                            .into_iter(),
                        2,
                    )
                    .unwrap(),
                ) as _,
            ),
            ("null", new_null_array(&DataType::Null, 4)),
            (
                "date",
                Arc::new(Date32Array::from(vec![
                    Some(-1),
                    None,
                    Some(20_000),
                    Some(0),
                ])) as _,
            ),
            (
                "time",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(1),
                    Some(86_399_999_999),
                    None,
                    Some(0),
                ])) as _,
            ),
            (
                "dur",
                Arc::new(DurationSecondArray::from(vec![
                    Some(-7),
                    Some(7),
                    None,
                    Some(0),
                ])) as _,
            ),
            (
                "u16",
                Arc::new(UInt16Array::from(vec![
                    Some(u16::MAX),
                    None,
                    Some(0),
                    Some(1),
                ])) as _,
            ),
            (
                "u32",
                Arc::new(UInt32Array::from(vec![
                    Some(u32::MAX),
                    None,
                    Some(0),
                    Some(1),
                ])) as _,
            ),
            (
                "f16",
                cast(
                    &Float32Array::from(vec![Some(1.5), None, Some(0.0), Some(-2.0)]),
                    &DataType::Float16,
                )
                .unwrap(),
            ),
            (
                "interval",
                Arc::new(IntervalMonthDayNanoArray::from(vec![
                    Some(IntervalMonthDayNano::new(1, -2, 3)),
                    None,
                    Some(IntervalMonthDayNano::new(0, 0, i64::MAX)),
                    Some(IntervalMonthDayNano::new(-1, 0, 0)),
                ])) as _,
            ),
            (
                "dec256",
                Arc::new(
                    Decimal256Array::from(vec![
                        Some(i256::from_i128(-5)),
                        None,
                        Some(i256::MAX),
                        Some(i256::ZERO),
                    ])
                    .with_precision_and_scale(76, 3)
                    .unwrap(),
                ) as _,
            ),
            (
                "bv",
                Arc::new(BinaryViewArray::from(vec![
                    Some(&b"a binary value longer than 12"[..]),
                    None,
                    Some(b""),
                    Some(b"x"),
                ])) as _,
            ),
        ])
        .unwrap();
        for batch in [batch.clone(), batch.slice(1, 3)] {
            let (_, decoded) = round_trip(&batch);
            for (expected, actual) in batch.columns().iter().zip(&decoded) {
                assert_eq!(
                    expected.to_data(),
                    actual.to_data(),
                    "{}",
                    expected.data_type()
                );
            }
        }
    }

    #[test]
    fn rows_are_compact_and_equal_rows_encode_equally() {
        let batch = RecordBatch::try_from_iter([
            (
                "auction",
                Arc::new(Int64Array::from(vec![1000, 1000, 1000])) as ArrayRef,
            ),
            (
                "url",
                Arc::new(StringArray::from(vec![
                    "https://www.nexmark.com/a",
                    "b",
                    "https://www.nexmark.com/a",
                ])) as _,
            ),
        ])
        .unwrap();
        let (rows, _) = round_trip(&batch);
        // Null bitmap, a two-byte varint, a length byte and the text.
        assert_eq!(rows[0].len(), 1 + 2 + 1 + 25);
        assert_eq!(rows[0], rows[2]);
        assert_ne!(rows[0], rows[1]);
    }

    #[test]
    fn other_types_fall_back_to_arrow_rows() {
        let list = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
            vec![Some(vec![Some(1), None]), None],
        );
        let batch = RecordBatch::try_from_iter([("l", Arc::new(list) as ArrayRef)]).unwrap();
        let (_, decoded) = round_trip(&batch);
        assert_eq!(batch.column(0).to_data(), decoded[0].to_data());
    }

    #[test]
    fn arrow_rows_of_older_snapshots_are_converted_on_restore() {
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(5), None])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("five"), Some("none")])) as _,
            ),
        ])
        .unwrap();
        let codec = RowCodec::new(&batch.schema(), "test").unwrap();
        let arrow_rows = whole_row_converter(&batch.schema(), "test")
            .unwrap()
            .convert_columns(batch.columns())
            .unwrap();
        let compact = codec.encode(batch.columns()).unwrap();
        codec.set_reading_arrow_rows(true);
        for row in 0..2 {
            let restored = codec.restored(arrow_rows.row(row).data()).unwrap();
            assert_eq!(&*restored, compact.row(row));
        }
        codec.set_reading_arrow_rows(false);
        assert_eq!(&*codec.restored(compact.row(1)).unwrap(), compact.row(1));
    }

    #[test]
    fn columns_of_another_type_than_the_schema_are_errors() {
        let batch =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let codec = RowCodec::new(&batch.schema(), "test").unwrap();
        let wrong: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        let err = codec.encode(&[wrong]).err().unwrap().to_string();
        assert!(err.contains("Boolean") && err.contains("Int64"), "{err}");
    }

    #[test]
    fn truncated_rows_are_errors() {
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(vec!["abc"])) as ArrayRef,
        )])
        .unwrap();
        let (rows, _) = round_trip(&batch);
        let codec = RowCodec::new(&batch.schema(), "test").unwrap();
        let cut = &rows[0][..rows[0].len() - 1];
        let err = codec.decode(std::iter::once(cut)).unwrap_err().to_string();
        assert!(err.contains("truncated row"), "{err}");
    }
}
