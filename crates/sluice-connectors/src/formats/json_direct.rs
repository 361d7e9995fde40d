//! A direct decoder for the common shape of JSON lines: one object per line
//! whose fields are integers, floats, booleans, strings, timestamps and nested
//! ROWs. It writes values straight into Arrow buffers in one pass over the
//! bytes (no token tape, no allocation per field) and declines everything
//! else: another column type, an escaped key, a duplicate key, a value of the
//! wrong JSON type or any malformed line. On a decline the caller decodes the
//! chunk with arrow-json, which also explains what is wrong with a bad line, so
//! this decoder never has to produce an error of its own.

use std::sync::Arc;

use arrow::array::builder::{BooleanBufferBuilder, NullBufferBuilder};
use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, PrimitiveArray, RecordBatch, RecordBatchOptions, StringArray, StructArray,
    UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowTimestampType, DataType, Fields, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};

/// Deepest nesting a skipped value may have before the decoder declines.
const MAX_SKIP_DEPTH: usize = 64;

/// Decodes JSON lines of a fixed schema into record batches, or declines.
pub(crate) struct DirectDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
}

impl DirectDecoder {
    /// A decoder for `schema`, when every column (and nested field) has a
    /// type it handles and is nullable (a missing field is a null).
    pub(crate) fn new(schema: &SchemaRef) -> Option<Self> {
        Some(DirectDecoder {
            schema: schema.clone(),
            columns: columns_for(schema.fields())?,
        })
    }

    /// Decodes every line of `data`; `None` when any line is outside what
    /// this decoder handles (then nothing of `data` is kept).
    pub(crate) fn decode(&mut self, data: &[u8]) -> Option<RecordBatch> {
        let decoded = self.decode_lines(data);
        let batch = decoded.and_then(|rows| self.finish(rows));
        if batch.is_none() {
            // Drop whatever the failed attempt appended.
            for column in &mut self.columns {
                column.finish();
            }
        }
        batch
    }

    fn decode_lines(&mut self, data: &[u8]) -> Option<usize> {
        let mut rows = 0;
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
        for end in ends {
            let line = &data[start..end];
            start = end + 1;
            let mut cursor = Cursor { bytes: line, at: 0 };
            cursor.skip_whitespace();
            if cursor.at == line.len() {
                continue;
            }
            if !cursor.eat(b'{') {
                return None;
            }
            parse_object(&mut cursor, &mut self.columns)?;
            cursor.skip_whitespace();
            if cursor.at != line.len() {
                return None;
            }
            rows += 1;
        }
        Some(rows)
    }

    fn finish(&mut self, rows: usize) -> Option<RecordBatch> {
        let columns = self
            .columns
            .iter_mut()
            .map(Column::finish)
            .collect::<Option<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .ok()
    }
}

fn columns_for(fields: &Fields) -> Option<Vec<Column>> {
    // Fields seen in an object are tracked in a 64-bit mask.
    if fields.len() > 64 {
        return None;
    }
    fields
        .iter()
        .map(|field| {
            if !field.is_nullable() {
                return None;
            }
            let values = match field.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32 => Values::Int(Vec::new()),
                DataType::UInt64 => Values::UInt(Vec::new()),
                DataType::Float32 => Values::Float32(Vec::new()),
                DataType::Float64 => Values::Float64(Vec::new()),
                DataType::Boolean => Values::Bool(BooleanBufferBuilder::new(0)),
                DataType::Utf8 => Values::Utf8 {
                    offsets: vec![0],
                    bytes: Vec::new(),
                },
                DataType::Timestamp(unit, None) => Values::Timestamp(*unit, Vec::new()),
                DataType::Struct(fields) => Values::Struct {
                    fields: fields.clone(),
                    children: columns_for(fields)?,
                    pending_nulls: 0,
                },
                _ => return None,
            };
            Some(Column {
                name: field.name().as_bytes().into(),
                data_type: field.data_type().clone(),
                values,
                nulls: NullBufferBuilder::new(0),
            })
        })
        .collect()
}

/// One field's values as they are read.
struct Column {
    name: Box<[u8]>,
    data_type: DataType,
    values: Values,
    nulls: NullBufferBuilder,
}

enum Values {
    /// Signed integers and the narrower unsigned ones, range-checked on read.
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Bool(BooleanBufferBuilder),
    Utf8 {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Timestamp(TimeUnit, Vec<i64>),
    Struct {
        fields: Fields,
        children: Vec<Column>,
        /// Nulls owed to every child for null rows of the struct, appended
        /// in one go before the next non-null row (runs of null structs,
        /// like the other event kinds of a union-shaped stream, stay cheap).
        pending_nulls: usize,
    },
}

impl Column {
    fn append_nulls(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        self.nulls.append_n_nulls(count);
        match &mut self.values {
            Values::Int(values) | Values::Timestamp(_, values) => {
                values.resize(values.len() + count, 0)
            }
            Values::UInt(values) => values.resize(values.len() + count, 0),
            Values::Float32(values) => values.resize(values.len() + count, 0.0),
            Values::Float64(values) => values.resize(values.len() + count, 0.0),
            Values::Bool(values) => values.append_n(count, false),
            Values::Utf8 { offsets, bytes } => {
                offsets.resize(offsets.len() + count, bytes.len() as i32)
            }
            Values::Struct { pending_nulls, .. } => *pending_nulls += count,
        }
    }

    /// Reads one value at the cursor.
    fn parse_value(&mut self, cursor: &mut Cursor<'_>) -> Option<()> {
        if cursor.eat_literal(b"null") {
            self.append_nulls(1);
            return Some(());
        }
        match &mut self.values {
            Values::Int(values) => {
                let value = parse_i64(cursor.number()?)?;
                if !fits(&self.data_type, value) {
                    return None;
                }
                values.push(value);
            }
            Values::UInt(values) => values.push(parse_u64(cursor.number()?)?),
            Values::Float32(values) => values.push(parse_float(cursor.number()?)?),
            Values::Float64(values) => values.push(parse_float(cursor.number()?)?),
            Values::Bool(values) => {
                if cursor.eat_literal(b"true") {
                    values.append(true);
                } else if cursor.eat_literal(b"false") {
                    values.append(false);
                } else {
                    return None;
                }
            }
            Values::Utf8 { offsets, bytes } => {
                if !cursor.eat(b'"') {
                    return None;
                }
                cursor.string_into(bytes)?;
                offsets.push(i32::try_from(bytes.len()).ok()?);
            }
            Values::Timestamp(unit, values) => {
                if !cursor.eat(b'"') {
                    return None;
                }
                values.push(parse_timestamp(cursor.plain_string()?, *unit)?);
            }
            Values::Struct {
                children,
                pending_nulls,
                ..
            } => {
                if !cursor.eat(b'{') {
                    return None;
                }
                flush_nulls(children, pending_nulls);
                parse_object(cursor, children)?;
            }
        }
        self.nulls.append_non_null();
        Some(())
    }

    /// The values read so far as an array (`None` if they are inconsistent,
    /// after a declined line); either way the column starts over empty.
    fn finish(&mut self) -> Option<ArrayRef> {
        let nulls = self.nulls.finish();
        let array: ArrayRef = match &mut self.values {
            Values::Int(values) => {
                let values = take_sized(values);
                match self.data_type {
                    DataType::Int8 => Arc::new(Int8Array::try_new(narrow(values), nulls).ok()?),
                    DataType::Int16 => Arc::new(Int16Array::try_new(narrow(values), nulls).ok()?),
                    DataType::Int32 => Arc::new(Int32Array::try_new(narrow(values), nulls).ok()?),
                    DataType::UInt8 => Arc::new(UInt8Array::try_new(narrow(values), nulls).ok()?),
                    DataType::UInt16 => Arc::new(UInt16Array::try_new(narrow(values), nulls).ok()?),
                    DataType::UInt32 => Arc::new(UInt32Array::try_new(narrow(values), nulls).ok()?),
                    _ => Arc::new(Int64Array::try_new(values.into(), nulls).ok()?),
                }
            }
            Values::UInt(values) => {
                Arc::new(UInt64Array::try_new(take_sized(values).into(), nulls).ok()?)
            }
            Values::Float32(values) => {
                Arc::new(Float32Array::try_new(take_sized(values).into(), nulls).ok()?)
            }
            Values::Float64(values) => {
                Arc::new(Float64Array::try_new(take_sized(values).into(), nulls).ok()?)
            }
            Values::Bool(values) => {
                let values = values.finish();
                if nulls.as_ref().is_some_and(|n| n.len() != values.len()) {
                    return None;
                }
                Arc::new(BooleanArray::new(values, nulls))
            }
            Values::Utf8 { offsets, bytes } => {
                let mut next_offsets = Vec::with_capacity(offsets.len());
                next_offsets.push(0);
                let offsets = std::mem::replace(offsets, next_offsets);
                let bytes = take_sized(bytes);
                // Validates UTF-8 once for the whole column.
                Arc::new(
                    StringArray::try_new(
                        OffsetBuffer::new(ScalarBuffer::from(offsets)),
                        Buffer::from_vec(bytes),
                        nulls,
                    )
                    .ok()?,
                )
            }
            Values::Timestamp(unit, values) => {
                let values = take_sized(values);
                match unit {
                    TimeUnit::Second => timestamps::<TimestampSecondType>(values, nulls)?,
                    TimeUnit::Millisecond => timestamps::<TimestampMillisecondType>(values, nulls)?,
                    TimeUnit::Microsecond => timestamps::<TimestampMicrosecondType>(values, nulls)?,
                    TimeUnit::Nanosecond => timestamps::<TimestampNanosecondType>(values, nulls)?,
                }
            }
            Values::Struct {
                fields,
                children,
                pending_nulls,
            } => {
                flush_nulls(children, pending_nulls);
                // Every child starts over, even when one is inconsistent.
                let arrays: Vec<Option<ArrayRef>> =
                    children.iter_mut().map(Column::finish).collect();
                let arrays = arrays.into_iter().collect::<Option<Vec<_>>>()?;
                Arc::new(StructArray::try_new(fields.clone(), arrays, nulls).ok()?)
            }
        };
        Some(array)
    }
}

/// Appends the nulls a struct owes its children.
fn flush_nulls(children: &mut [Column], pending_nulls: &mut usize) {
    for child in children {
        child.append_nulls(*pending_nulls);
    }
    *pending_nulls = 0;
}

/// Takes the values, leaving room for as many in the next chunk (chunks are
/// usually alike, so the buffers are not grown again each time).
fn take_sized<T>(values: &mut Vec<T>) -> Vec<T> {
    let capacity = values.len();
    std::mem::replace(values, Vec::with_capacity(capacity))
}

fn timestamps<T: ArrowTimestampType>(
    values: Vec<i64>,
    nulls: Option<arrow::buffer::NullBuffer>,
) -> Option<ArrayRef> {
    Some(Arc::new(
        PrimitiveArray::<T>::try_new(values.into(), nulls).ok()?,
    ))
}

/// Values already range-checked by [`fits`], narrowed to their type.
fn narrow<T: TryFrom<i64> + Default + arrow::datatypes::ArrowNativeType>(
    values: Vec<i64>,
) -> ScalarBuffer<T> {
    values
        .into_iter()
        .map(|value| T::try_from(value).unwrap_or_default())
        .collect()
}

fn fits(data_type: &DataType, value: i64) -> bool {
    let (min, max) = match data_type {
        DataType::Int8 => (i8::MIN as i64, i8::MAX as i64),
        DataType::Int16 => (i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        DataType::UInt8 => (0, u8::MAX as i64),
        DataType::UInt16 => (0, u16::MAX as i64),
        DataType::UInt32 => (0, u32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    };
    (min..=max).contains(&value)
}

/// Reads the members of an object whose `{` the cursor has passed; a field
/// the object lacks reads as null.
fn parse_object(cursor: &mut Cursor<'_>, columns: &mut [Column]) -> Option<()> {
    let mut seen: u64 = 0;
    cursor.skip_whitespace();
    if !cursor.eat(b'}') {
        // Fields usually come in schema order: try the next one first.
        let mut next = 0;
        loop {
            cursor.skip_whitespace();
            if !cursor.eat(b'"') {
                return None;
            }
            let key = cursor.plain_string()?;
            cursor.skip_whitespace();
            if !cursor.eat(b':') {
                return None;
            }
            cursor.skip_whitespace();
            let index = if columns.get(next).is_some_and(|c| &*c.name == key) {
                Some(next)
            } else {
                columns.iter().position(|c| &*c.name == key)
            };
            match index {
                Some(index) => {
                    let bit = 1u64 << index;
                    if seen & bit != 0 {
                        return None;
                    }
                    seen |= bit;
                    columns[index].parse_value(cursor)?;
                    next = index + 1;
                }
                None => cursor.skip_value(0)?,
            }
            cursor.skip_whitespace();
            if cursor.eat(b',') {
                continue;
            }
            if cursor.eat(b'}') {
                break;
            }
            return None;
        }
    }
    for (index, column) in columns.iter_mut().enumerate() {
        if seen & (1u64 << index) == 0 {
            column.append_nulls(1);
        }
    }
    Some(())
}

/// A position in one line.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_literal(&mut self, literal: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(literal) {
            self.at += literal.len();
            true
        } else {
            false
        }
    }

    /// The rest of a string whose opening quote was passed, when it has no
    /// escapes (keys, timestamps).
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let rest = &self.bytes[self.at..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// Appends the unescaped rest of a string whose opening quote was passed.
    fn string_into(&mut self, out: &mut Vec<u8>) -> Option<()> {
        loop {
            let rest = &self.bytes[self.at..];
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            out.extend_from_slice(&rest[..end]);
            self.at += end + 1;
            if rest[end] == b'"' {
                return Some(());
            }
            let escaped = *self.bytes.get(self.at)?;
            self.at += 1;
            let byte = match escaped {
                b'"' => b'"',
                b'\\' => b'\\',
                b'/' => b'/',
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'u' => {
                    let character = self.unicode_escape()?;
                    let mut encoded = [0; 4];
                    out.extend_from_slice(character.encode_utf8(&mut encoded).as_bytes());
                    continue;
                }
                _ => return None,
            };
            out.push(byte);
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` passed), joining a
    /// surrogate pair.
    fn unicode_escape(&mut self) -> Option<char> {
        let high = self.hex4()?;
        if (0xDC00..0xE000).contains(&high) {
            return None;
        }
        if !(0xD800..0xDC00).contains(&high) {
            return char::from_u32(high);
        }
        if !self.eat_literal(b"\\u") {
            return None;
        }
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return None;
        }
        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        self.at += 4;
        digits.iter().try_fold(0, |code, digit| {
            Some(code * 16 + (*digit as char).to_digit(16)?)
        })
    }

    /// A number token (validated by its parser).
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
        }
        (self.at > start).then(|| &self.bytes[start..self.at])
    }

    /// Passes over the rest of a string whose opening quote was passed.
    fn skip_string(&mut self) -> Option<()> {
        loop {
            let rest = &self.bytes[self.at..];
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            self.at += end + 1;
            if rest[end] == b'"' {
                return Some(());
            }
            match *self.bytes.get(self.at)? {
                b'u' => {
                    self.at += 1;
                    self.unicode_escape()?;
                }
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                _ => return None,
            }
        }
    }

    /// Passes over one well-formed value of any type.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        match *self.bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                self.skip_string()
            }
            b'{' => {
                self.at += 1;
                self.skip_members(b'}', depth, true)
            }
            b'[' => {
                self.at += 1;
                self.skip_members(b']', depth, false)
            }
            b't' => self.eat_literal(b"true").then_some(()),
            b'f' => self.eat_literal(b"false").then_some(()),
            b'n' => self.eat_literal(b"null").then_some(()),
            _ => parse_float::<f64>(self.number()?).map(|_| ()),
        }
    }

    /// Passes over the members of an object (`keyed`) or array up to `close`.
    fn skip_members(&mut self, close: u8, depth: usize, keyed: bool) -> Option<()> {
        self.skip_whitespace();
        if self.eat(close) {
            return Some(());
        }
        loop {
            self.skip_whitespace();
            if keyed {
                if !self.eat(b'"') {
                    return None;
                }
                self.skip_string()?;
                self.skip_whitespace();
                if !self.eat(b':') {
                    return None;
                }
                self.skip_whitespace();
            }
            self.skip_value(depth + 1)?;
            self.skip_whitespace();
            if self.eat(b',') {
                continue;
            }
            return self.eat(close).then_some(());
        }
    }
}

/// The digits of a JSON integer: an optional `-`, then no leading zero.
fn integer_digits(token: &[u8]) -> Option<(bool, &[u8])> {
    let (negative, digits) = match token.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, token),
    };
    let well_formed = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1);
    well_formed.then_some((negative, digits))
}

fn parse_i64(token: &[u8]) -> Option<i64> {
    let (negative, digits) = integer_digits(token)?;
    // Accumulate negatively so that i64::MIN fits.
    let mut value: i64 = 0;
    for digit in digits {
        value = value
            .checked_mul(10)?
            .checked_sub(i64::from(digit - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

fn parse_u64(token: &[u8]) -> Option<u64> {
    let (negative, digits) = integer_digits(token)?;
    if negative {
        return None;
    }
    digits.iter().try_fold(0u64, |value, digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// A JSON number (integer, fraction, exponent) as a float.
fn parse_float<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    let mantissa_end = token
        .iter()
        .position(|b| matches!(b, b'.' | b'e' | b'E'))
        .unwrap_or(token.len());
    integer_digits(&token[..mantissa_end])?;
    let mut rest = &token[mantissa_end..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    if let Some(exponent) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"))
            .unwrap_or(exponent);
        if exponent.is_empty() || !exponent.iter().all(u8::is_ascii_digit) {
            return None;
        }
        rest = &[];
    }
    if !rest.is_empty() {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// `yyyy-MM-dd HH:mm:ss[.fraction]` (or with `T`), no zone, as `unit`s since
/// the epoch; digits past the unit are dropped, as arrow-json does.
fn parse_timestamp(text: &[u8], unit: TimeUnit) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        text.get(range)?.iter().try_fold(0i64, |value, digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + i64::from(digit - b'0'))
        })
    };
    if text.len() < 19
        || text[4] != b'-'
        || text[7] != b'-'
        || !matches!(text[10], b' ' | b'T')
        || text[13] != b':'
        || text[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut nanos = 0i64;
    if text.len() > 19 {
        let fraction = text[19..].strip_prefix(b".")?;
        if fraction.is_empty() || fraction.len() > 9 {
            return None;
        }
        nanos = number(20..text.len())? * 10i64.pow(9 - fraction.len() as u32);
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(match unit {
        TimeUnit::Second => seconds,
        TimeUnit::Millisecond => seconds * 1_000 + nanos / 1_000_000,
        TimeUnit::Microsecond => seconds * 1_000_000 + nanos / 1_000,
        TimeUnit::Nanosecond => seconds.checked_mul(1_000_000_000)?.checked_add(nanos)?,
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use arrow_json::reader::ReaderBuilder;

    fn schema() -> SchemaRef {
        let bid = Fields::from(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("price", DataType::Int32, true),
            Field::new("channel", DataType::Utf8, true),
            Field::new(
                "dateTime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]);
        Arc::new(Schema::new(vec![
            Field::new("event_type", DataType::Int8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ratio", DataType::Float32, true),
            Field::new("big", DataType::UInt64, true),
            Field::new("bid", DataType::Struct(bid), true),
        ]))
    }

    /// What arrow-json makes of the same lines.
    fn reference(data: &[u8]) -> RecordBatch {
        let mut decoder = ReaderBuilder::new(schema())
            .with_batch_size(1024)
            .build_decoder()
            .unwrap();
        decoder.decode(data).unwrap();
        decoder.flush().unwrap().unwrap()
    }

    #[test]
    fn decodes_like_arrow_json() {
        let data = br#"{"event_type": 2, "bid": {"auction": 1000, "price": -7, "channel": "Google", "dateTime": "2015-07-15 00:00:00.001"}, "extra": [1, {"a": "x\"y"}, null, true, -2.5e3]}

{"bid":{"channel":"caf\u00e9 \ud83d\ude00 tab\there\\ \/","dateTime":"1969-12-31T23:59:59.9995","price":null},"event_type":0,"ok":true,"score":1.5e-3,"ratio":0.1,"big":18446744073709551615}
{"event_type":1,"bid":null,"ok":false,"score":-0,"ratio":3}
{}
"#;
        let mut decoder = DirectDecoder::new(&schema()).unwrap();
        let batch = decoder.decode(data).unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch, reference(data));
        // The decoder starts over for the next chunk.
        let again = decoder.decode(b"{\"event_type\": 5}\n").unwrap();
        assert_eq!(again, reference(b"{\"event_type\": 5}\n"));
    }

    #[test]
    fn declines_what_it_does_not_handle_and_recovers() {
        let mut decoder = DirectDecoder::new(&schema()).unwrap();
        for bad in [
            &br#"{"event_type": 300}"#[..],
            br#"{"event_type": "2"}"#,
            br#"{"event_type": 2.0}"#,
            br#"{"event_type": 02}"#,
            br#"{"event_type": 2, "event_type": 3}"#,
            br#"{"event_ty\u0070e": 2}"#,
            br#"{"bid": {"dateTime": "2015-07-15"}}"#,
            br#"{"bid": {"dateTime": "2015-02-29 00:00:00"}}"#,
            br#"{"bid": {"dateTime": 1436918400000}}"#,
            br#"{"bid": 5}"#,
            br#"{"extra": [1, }"#,
            br#"{"extra": tru}"#,
            br#"{"score": 1.}"#,
            br#"{"big": -1}"#,
            br#"{"event_type": 1} {"event_type": 2}"#,
            br#"{"event_type": 1"#,
            br#"[1]"#,
            b"{\"bid\": {\"channel\": \"\xff\"}}",
        ] {
            let mut data = b"{\"event_type\": 1}\n".to_vec();
            data.extend_from_slice(bad);
            assert!(
                decoder.decode(&data).is_none(),
                "accepted {}",
                String::from_utf8_lossy(bad)
            );
            let good = decoder.decode(b"{\"event_type\": 3}\n").unwrap();
            assert_eq!(
                good.num_rows(),
                1,
                "left rows behind after {}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unsupported_types_and_required_fields_are_left_to_arrow_json() {
        let decimal = Schema::new(vec![Field::new("d", DataType::Decimal128(10, 2), true)]);
        assert!(DirectDecoder::new(&Arc::new(decimal)).is_none());
        let required = Schema::new(vec![Field::new("a", DataType::Int64, false)]);
        assert!(DirectDecoder::new(&Arc::new(required)).is_none());
    }

    #[test]
    fn timestamps_match_the_calendar() {
        assert_eq!(
            parse_timestamp(b"1970-01-01 00:00:00", TimeUnit::Second),
            Some(0)
        );
        assert_eq!(
            parse_timestamp(b"2000-02-29 12:34:56.789", TimeUnit::Millisecond),
            Some(951_827_696_789)
        );
        assert_eq!(
            parse_timestamp(b"1969-12-31 23:59:59.5", TimeUnit::Microsecond),
            Some(-500_000)
        );
        assert_eq!(
            parse_timestamp(b"1900-02-29 00:00:00", TimeUnit::Second),
            None
        );
    }
}
