//! Compact, self-describing encodings of the scalar types aggregates use most
//! (integers, floats, strings, binary, dates, timestamps, decimals). They go
//! straight into a chunk's body; other types are pooled into Arrow arrays.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use sluice_core::Result;

use crate::codec::{StateReader, StateWriter};

/// Tag of a scalar kept in a value pool rather than inline.
pub(crate) const POOLED: u64 = 0;

/// Writes `value` inline (tag first) and returns true, or returns false
/// without writing anything when its type has no inline encoding.
pub(crate) fn write_inline(out: &mut StateWriter, value: &ScalarValue) -> bool {
    use ScalarValue as S;
    match value {
        S::Null => out.u64(1),
        S::Boolean(v) => {
            out.u64(2);
            optional(out, v.map(u64::from), StateWriter::u64);
        }
        S::Int8(v) => signed(out, 3, v.map(i64::from)),
        S::Int16(v) => signed(out, 4, v.map(i64::from)),
        S::Int32(v) => signed(out, 5, v.map(i64::from)),
        S::Int64(v) => signed(out, 6, *v),
        S::UInt8(v) => unsigned(out, 7, v.map(u64::from)),
        S::UInt16(v) => unsigned(out, 8, v.map(u64::from)),
        S::UInt32(v) => unsigned(out, 9, v.map(u64::from)),
        S::UInt64(v) => unsigned(out, 10, *v),
        S::Float32(v) => unsigned(out, 11, v.map(|f| u64::from(f.to_bits()))),
        S::Float64(v) => unsigned(out, 12, v.map(f64::to_bits)),
        S::Utf8(v) => text(out, 13, v.as_deref()),
        S::LargeUtf8(v) => text(out, 14, v.as_deref()),
        S::Utf8View(v) => text(out, 15, v.as_deref()),
        S::Binary(v) => binary(out, 16, v.as_deref()),
        S::LargeBinary(v) => binary(out, 17, v.as_deref()),
        S::BinaryView(v) => binary(out, 18, v.as_deref()),
        S::Date32(v) => signed(out, 19, v.map(i64::from)),
        S::Date64(v) => signed(out, 20, *v),
        S::TimestampSecond(v, tz) => timestamp(out, 21, *v, tz),
        S::TimestampMillisecond(v, tz) => timestamp(out, 22, *v, tz),
        S::TimestampMicrosecond(v, tz) => timestamp(out, 23, *v, tz),
        S::TimestampNanosecond(v, tz) => timestamp(out, 24, *v, tz),
        S::Decimal128(v, precision, scale) => {
            out.u64(25);
            optional(out, *v, |out, v| out.bytes(&v.to_le_bytes()));
            out.u64(u64::from(*precision));
            out.i64(i64::from(*scale));
        }
        _ => return false,
    }
    true
}

/// Reads a scalar written by [`write_inline`] with tag `tag`.
pub(crate) fn read_inline(input: &mut StateReader, tag: u64) -> Result<ScalarValue> {
    use ScalarValue as S;
    Ok(match tag {
        1 => S::Null,
        2 => S::Boolean(read_optional(input, |i| i.bool())?),
        3 => S::Int8(narrow(input)?),
        4 => S::Int16(narrow(input)?),
        5 => S::Int32(narrow(input)?),
        6 => S::Int64(read_optional(input, StateReader::i64)?),
        7 => S::UInt8(narrow_unsigned(input)?),
        8 => S::UInt16(narrow_unsigned(input)?),
        9 => S::UInt32(narrow_unsigned(input)?),
        10 => S::UInt64(read_optional(input, StateReader::u64)?),
        11 => S::Float32(narrow_unsigned::<u32>(input)?.map(f32::from_bits)),
        12 => S::Float64(read_optional(input, StateReader::u64)?.map(f64::from_bits)),
        13 => S::Utf8(read_text(input)?),
        14 => S::LargeUtf8(read_text(input)?),
        15 => S::Utf8View(read_text(input)?),
        16 => S::Binary(read_binary(input)?),
        17 => S::LargeBinary(read_binary(input)?),
        18 => S::BinaryView(read_binary(input)?),
        19 => S::Date32(narrow(input)?),
        20 => S::Date64(read_optional(input, StateReader::i64)?),
        21..=24 => {
            let value = read_optional(input, StateReader::i64)?;
            let zone = read_optional(input, |i| Ok(Arc::<str>::from(read_str(i)?)))?;
            match tag {
                21 => S::TimestampSecond(value, zone),
                22 => S::TimestampMillisecond(value, zone),
                23 => S::TimestampMicrosecond(value, zone),
                _ => S::TimestampNanosecond(value, zone),
            }
        }
        25 => {
            let value = read_optional(input, |i| {
                let bytes: [u8; 16] = i
                    .bytes()?
                    .try_into()
                    .map_err(|_| crate::codec::corrupt("decimal width"))?;
                Ok(i128::from_le_bytes(bytes))
            })?;
            let precision =
                u8::try_from(input.u64()?).map_err(|_| crate::codec::corrupt("precision"))?;
            let scale = i8::try_from(input.i64()?).map_err(|_| crate::codec::corrupt("scale"))?;
            S::Decimal128(value, precision, scale)
        }
        other => return Err(crate::codec::corrupt(format!("unknown scalar tag {other}"))),
    })
}

fn optional<T>(out: &mut StateWriter, value: Option<T>, write: impl FnOnce(&mut StateWriter, T)) {
    out.bool(value.is_some());
    if let Some(value) = value {
        write(out, value);
    }
}

fn signed(out: &mut StateWriter, tag: u64, value: Option<i64>) {
    out.u64(tag);
    optional(out, value, StateWriter::i64);
}

fn unsigned(out: &mut StateWriter, tag: u64, value: Option<u64>) {
    out.u64(tag);
    optional(out, value, StateWriter::u64);
}

fn text(out: &mut StateWriter, tag: u64, value: Option<&str>) {
    binary(out, tag, value.map(str::as_bytes));
}

fn binary(out: &mut StateWriter, tag: u64, value: Option<&[u8]>) {
    out.u64(tag);
    optional(out, value, StateWriter::bytes);
}

fn timestamp(out: &mut StateWriter, tag: u64, value: Option<i64>, zone: &Option<Arc<str>>) {
    signed(out, tag, value);
    optional(out, zone.as_deref(), |out, zone| out.bytes(zone.as_bytes()));
}

fn read_optional<'a, T>(
    input: &mut StateReader<'a>,
    read: impl FnOnce(&mut StateReader<'a>) -> Result<T>,
) -> Result<Option<T>> {
    if input.bool()? {
        Ok(Some(read(input)?))
    } else {
        Ok(None)
    }
}

fn narrow<T: TryFrom<i64>>(input: &mut StateReader) -> Result<Option<T>> {
    read_optional(input, |i| {
        T::try_from(i.i64()?).map_err(|_| crate::codec::corrupt("integer out of range"))
    })
}

fn narrow_unsigned<T: TryFrom<u64>>(input: &mut StateReader) -> Result<Option<T>> {
    read_optional(input, |i| {
        T::try_from(i.u64()?).map_err(|_| crate::codec::corrupt("integer out of range"))
    })
}

fn read_str(input: &mut StateReader) -> Result<String> {
    String::from_utf8(input.bytes()?.to_vec()).map_err(|_| crate::codec::corrupt("invalid UTF-8"))
}

fn read_text(input: &mut StateReader) -> Result<Option<String>> {
    read_optional(input, read_str)
}

fn read_binary(input: &mut StateReader) -> Result<Option<Vec<u8>>> {
    read_optional(input, |i| Ok(i.bytes()?.to_vec()))
}
