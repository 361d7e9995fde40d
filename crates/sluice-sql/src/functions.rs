//! Flink SQL functions whose names or semantics differ from DataFusion's built-ins
//! (`MOD`, `HOUR`, `DATE_FORMAT` with Java patterns, `TO_TIMESTAMP`, `SPLIT_INDEX`,
//! `REGEXP_EXTRACT`, `IF`, ...). Registered as DataFusion scalar UDFs.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, is_not_null};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::common::{exec_err, plan_err, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Which Flink function a [`FlinkFunction`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Mod,
    TimeField(TimeField),
    DateFormat,
    ToTimestamp,
    ToDate,
    SplitIndex,
    RegexpExtract,
    If,
    FromUnixtime,
    UnixTimestamp,
    Proctime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimeField {
    Year,
    Quarter,
    Month,
    DayOfMonth,
    DayOfYear,
    DayOfWeek,
    Hour,
    Minute,
    Second,
}

/// A Flink function implemented over Arrow arrays.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FlinkFunction {
    name: &'static str,
    usage: &'static str,
    kind: Kind,
    signature: Signature,
}

/// Name, usage and implementation of every function this module adds.
const FLINK_FUNCTIONS: [(&str, &str, Kind); 19] = [
    ("mod", "MOD(a BIGINT, b BIGINT)", Kind::Mod),
    ("year", "YEAR(ts)", Kind::TimeField(TimeField::Year)),
    (
        "quarter",
        "QUARTER(ts)",
        Kind::TimeField(TimeField::Quarter),
    ),
    ("month", "MONTH(ts)", Kind::TimeField(TimeField::Month)),
    (
        "dayofmonth",
        "DAYOFMONTH(ts)",
        Kind::TimeField(TimeField::DayOfMonth),
    ),
    (
        "dayofyear",
        "DAYOFYEAR(ts)",
        Kind::TimeField(TimeField::DayOfYear),
    ),
    (
        "dayofweek",
        "DAYOFWEEK(ts) (1 = Sunday)",
        Kind::TimeField(TimeField::DayOfWeek),
    ),
    ("hour", "HOUR(ts)", Kind::TimeField(TimeField::Hour)),
    ("minute", "MINUTE(ts)", Kind::TimeField(TimeField::Minute)),
    ("second", "SECOND(ts)", Kind::TimeField(TimeField::Second)),
    (
        "date_format",
        "DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss')",
        Kind::DateFormat,
    ),
    (
        "to_timestamp",
        "TO_TIMESTAMP(text [, 'yyyy-MM-dd HH:mm:ss'])",
        Kind::ToTimestamp,
    ),
    ("to_date", "TO_DATE(text [, 'yyyy-MM-dd'])", Kind::ToDate),
    (
        "split_index",
        "SPLIT_INDEX(text, separator, index)",
        Kind::SplitIndex,
    ),
    (
        "regexp_extract",
        "REGEXP_EXTRACT(text, regex [, group])",
        Kind::RegexpExtract,
    ),
    ("if", "IF(condition, then, else)", Kind::If),
    (
        "from_unixtime",
        "FROM_UNIXTIME(seconds [, format])",
        Kind::FromUnixtime,
    ),
    (
        "unix_timestamp",
        "UNIX_TIMESTAMP([text [, format]])",
        Kind::UnixTimestamp,
    ),
    (
        PROCTIME_FUNCTION,
        "PROCTIME() (processing-time attribute: windows over it follow the wall clock)",
        Kind::Proctime,
    ),
];

/// Name of the processing-time attribute function.
pub const PROCTIME_FUNCTION: &str = "proctime";

/// Registers the Flink functions with a DataFusion session, replacing built-ins
/// of the same name (e.g. DataFusion's `date_format`, which takes chrono patterns).
pub fn register_flink_functions(ctx: &SessionContext) {
    for (name, usage, kind) in FLINK_FUNCTIONS {
        let volatility = if matches!(kind, Kind::UnixTimestamp | Kind::Proctime) {
            Volatility::Volatile
        } else {
            Volatility::Immutable
        };
        ctx.register_udf(ScalarUDF::from(FlinkFunction {
            name,
            usage,
            kind,
            signature: Signature::user_defined(volatility),
        }));
    }
}

/// Usage lines of the Flink functions Sluice adds, for documentation and `sluice functions`.
pub fn flink_function_usages() -> Vec<&'static str> {
    FLINK_FUNCTIONS.iter().map(|(_, usage, _)| *usage).collect()
}

const TS_MS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

impl FlinkFunction {
    fn arity_error<T>(&self, got: usize) -> DfResult<T> {
        plan_err!(
            "{} takes different arguments (got {got}); usage: {}",
            self.name.to_uppercase(),
            self.usage
        )
    }
}

impl ScalarUDFImpl for FlinkFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let n = arg_types.len();
        let types = match self.kind {
            Kind::Mod if n == 2 => vec![DataType::Int64, DataType::Int64],
            Kind::TimeField(_) if n == 1 => vec![TS_MS],
            Kind::DateFormat if n == 2 => vec![TS_MS, DataType::Utf8],
            Kind::ToTimestamp | Kind::ToDate if (1..=2).contains(&n) => vec![DataType::Utf8; n],
            Kind::SplitIndex if n == 3 => vec![DataType::Utf8, DataType::Utf8, DataType::Int64],
            Kind::RegexpExtract if (2..=3).contains(&n) => {
                let mut types = vec![DataType::Utf8, DataType::Utf8];
                if n == 3 {
                    types.push(DataType::Int64);
                }
                types
            }
            Kind::If if n == 3 => {
                let common = if arg_types[1] == DataType::Null {
                    arg_types[2].clone()
                } else {
                    arg_types[1].clone()
                };
                vec![DataType::Boolean, common.clone(), common]
            }
            Kind::FromUnixtime if (1..=2).contains(&n) => {
                let mut types = vec![DataType::Int64];
                if n == 2 {
                    types.push(DataType::Utf8);
                }
                types
            }
            Kind::UnixTimestamp if n <= 2 => vec![DataType::Utf8; n],
            Kind::Proctime if n == 0 => vec![],
            _ => return self.arity_error(n),
        };
        Ok(types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::Mod | Kind::TimeField(_) | Kind::UnixTimestamp => DataType::Int64,
            Kind::DateFormat | Kind::SplitIndex | Kind::RegexpExtract | Kind::FromUnixtime => {
                DataType::Utf8
            }
            Kind::ToTimestamp => TS_MS,
            Kind::Proctime => DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC"))),
            Kind::ToDate => DataType::Date32,
            Kind::If => arg_types.get(1).cloned().unwrap_or(DataType::Null),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let result: ArrayRef = match self.kind {
            Kind::Mod => modulo(&arrays)?,
            Kind::TimeField(field) => time_field(&arrays[0], field)?,
            Kind::DateFormat => date_format(&arrays[0], &arrays[1])?,
            Kind::ToTimestamp => to_timestamp(&arrays, rows)?,
            Kind::ToDate => to_date(&arrays, rows)?,
            Kind::SplitIndex => split_index(&arrays)?,
            Kind::RegexpExtract => regexp_extract(&arrays)?,
            Kind::If => {
                let condition = arrays[0].as_boolean();
                // NULL conditions pick the else branch, as in Flink.
                let mask = arrow::compute::and(condition, &is_not_null(condition)?)?;
                let else_branch = cast(&arrays[2], arrays[1].data_type())?;
                zip(&mask, &arrays[1], &else_branch)?
            }
            Kind::FromUnixtime => from_unixtime(&arrays)?,
            Kind::UnixTimestamp => unix_timestamp(&arrays, rows)?,
            Kind::Proctime => {
                let now = chrono::Utc::now().timestamp_millis();
                Arc::new(
                    arrow::array::TimestampMillisecondArray::from_value(now, rows)
                        .with_timezone("UTC"),
                )
            }
        };
        Ok(ColumnarValue::Array(result))
    }
}

fn modulo(arrays: &[ArrayRef]) -> DfResult<ArrayRef> {
    let a = arrays[0].as_primitive::<Int64Type>();
    let b = arrays[1].as_primitive::<Int64Type>();
    let mut out = Int64Builder::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) || b.is_null(i) || b.value(i) == 0 {
            out.append_null();
        } else {
            out.append_value(a.value(i).wrapping_rem(b.value(i)));
        }
    }
    Ok(Arc::new(out.finish()))
}

fn millis_to_datetime(millis: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(millis).map(|dt| dt.naive_utc())
}

fn time_field(array: &ArrayRef, field: TimeField) -> DfResult<ArrayRef> {
    let timestamps = array.as_primitive::<TimestampMillisecondType>();
    let mut out = Int64Builder::with_capacity(timestamps.len());
    for value in timestamps.iter() {
        match value.and_then(millis_to_datetime) {
            None => out.append_null(),
            Some(dt) => out.append_value(match field {
                TimeField::Year => dt.year() as i64,
                TimeField::Quarter => dt.month0() as i64 / 3 + 1,
                TimeField::Month => dt.month() as i64,
                TimeField::DayOfMonth => dt.day() as i64,
                TimeField::DayOfYear => dt.ordinal() as i64,
                TimeField::DayOfWeek => dt.weekday().number_from_sunday() as i64,
                TimeField::Hour => dt.hour() as i64,
                TimeField::Minute => dt.minute() as i64,
                TimeField::Second => dt.second() as i64,
            }),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn date_format(timestamps: &ArrayRef, formats: &ArrayRef) -> DfResult<ArrayRef> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write;
    let timestamps = timestamps.as_primitive::<TimestampMillisecondType>();
    let formats = formats.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(timestamps.len(), timestamps.len() * 16);
    // The pattern is almost always a literal: parse it once, not per row.
    let mut cached: Option<(String, Vec<Item<'static>>, i64)> = None;
    // The last text written, and the time unit (of the pattern's finest
    // field) it stands for: rows in the same day (for 'yyyy-MM-dd'), minute
    // ('HH:mm'), ... reuse it instead of formatting again.
    let mut last: Option<i64> = None;
    let mut text = String::new();
    for i in 0..timestamps.len() {
        if timestamps.is_null(i) || formats.is_null(i) {
            out.append_null();
            continue;
        }
        let java = formats.value(i);
        if cached.as_ref().map(|(pattern, ..)| pattern.as_str()) != Some(java) {
            let Ok(items) = StrftimeItems::new(&java_to_chrono_format(java)).parse_to_owned()
            else {
                return exec_err!("DATE_FORMAT: invalid format '{java}'");
            };
            let unit = finest_unit_millis(&items);
            cached = Some((java.to_string(), items, unit));
            last = None;
        }
        let (items, unit) = cached
            .as_ref()
            .map(|(_, items, unit)| (items.as_slice(), *unit))
            .unwrap_or_default();
        let millis = timestamps.value(i);
        let period = millis.div_euclid(unit.max(1));
        if last != Some(period) {
            let Some(dt) = millis_to_datetime(millis) else {
                out.append_null();
                continue;
            };
            text.clear();
            if write!(text, "{}", dt.format_with_items(items.iter())).is_err() {
                return exec_err!("DATE_FORMAT: invalid format '{java}'");
            }
            last = Some(period);
        }
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

/// The length in milliseconds of the finest time field a parsed pattern
/// prints: a day for date-only patterns, down to 1 for fractions of a
/// second (and for anything not recognised). Two times in the same such
/// unit (counted from the epoch, UTC) format alike.
fn finest_unit_millis(items: &[chrono::format::Item<'_>]) -> i64 {
    use chrono::format::{Fixed, Item, Numeric};
    const SECOND: i64 = 1_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    items
        .iter()
        .map(|item| match item {
            Item::Literal(_) | Item::OwnedLiteral(_) | Item::Space(_) | Item::OwnedSpace(_) => DAY,
            Item::Numeric(numeric, _) => match numeric {
                Numeric::Year
                | Numeric::YearDiv100
                | Numeric::YearMod100
                | Numeric::IsoYear
                | Numeric::IsoYearDiv100
                | Numeric::IsoYearMod100
                | Numeric::Month
                | Numeric::Day
                | Numeric::WeekFromSun
                | Numeric::WeekFromMon
                | Numeric::IsoWeek
                | Numeric::NumDaysFromSun
                | Numeric::WeekdayFromMon
                | Numeric::Ordinal => DAY,
                Numeric::Hour | Numeric::Hour12 => HOUR,
                Numeric::Minute => MINUTE,
                Numeric::Second | Numeric::Timestamp => SECOND,
                _ => 1,
            },
            Item::Fixed(fixed) => match fixed {
                Fixed::ShortMonthName
                | Fixed::LongMonthName
                | Fixed::ShortWeekdayName
                | Fixed::LongWeekdayName => DAY,
                Fixed::LowerAmPm | Fixed::UpperAmPm => HOUR,
                _ => 1,
            },
            _ => 1,
        })
        .min()
        .unwrap_or(DAY)
}

/// Parses text with an optional Java pattern; the default is Flink's
/// `yyyy-MM-dd HH:mm:ss` (fractional seconds accepted).
fn parse_datetime(text: &str, java_format: Option<&str>) -> Option<NaiveDateTime> {
    match java_format {
        Some(format) => {
            let chrono_format = java_to_chrono_format(format);
            NaiveDateTime::parse_from_str(text, &chrono_format)
                .ok()
                .or_else(|| {
                    NaiveDate::parse_from_str(text, &chrono_format)
                        .ok()?
                        .and_hms_opt(0, 0, 0)
                })
        }
        None => NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok())
            .or_else(|| {
                NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .ok()?
                    .and_hms_opt(0, 0, 0)
            }),
    }
}

fn optional_format(arrays: &[ArrayRef], index: usize, row: usize) -> Option<Option<&str>> {
    match arrays.get(index) {
        None => Some(None),
        Some(array) => {
            let formats = array.as_string::<i32>();
            if formats.is_null(row) {
                None
            } else {
                Some(Some(formats.value(row)))
            }
        }
    }
}

fn to_timestamp(arrays: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    let texts = arrays[0].as_string::<i32>();
    let mut out = TimestampMillisecondBuilder::with_capacity(rows);
    for row in 0..rows {
        let parsed = if texts.is_null(row) {
            None
        } else {
            optional_format(arrays, 1, row)
                .and_then(|format| parse_datetime(texts.value(row), format))
        };
        out.append_option(parsed.map(|dt| dt.and_utc().timestamp_millis()));
    }
    Ok(Arc::new(out.finish()))
}

fn to_date(arrays: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    let texts = arrays[0].as_string::<i32>();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let mut out = Date32Builder::with_capacity(rows);
    for row in 0..rows {
        let parsed = if texts.is_null(row) {
            None
        } else {
            optional_format(arrays, 1, row).and_then(|format| {
                let format = format.unwrap_or("yyyy-MM-dd");
                NaiveDate::parse_from_str(texts.value(row).trim(), &java_to_chrono_format(format))
                    .ok()
            })
        };
        out.append_option(parsed.map(|date| (date - epoch).num_days() as i32));
    }
    Ok(Arc::new(out.finish()))
}

fn split_index(arrays: &[ArrayRef]) -> DfResult<ArrayRef> {
    let texts = arrays[0].as_string::<i32>();
    let separators = arrays[1].as_string::<i32>();
    let indexes = arrays[2].as_primitive::<Int64Type>();
    let mut out = StringBuilder::with_capacity(texts.len(), texts.len() * 8);
    for row in 0..texts.len() {
        if texts.is_null(row)
            || separators.is_null(row)
            || indexes.is_null(row)
            || indexes.value(row) < 0
        {
            out.append_null();
            continue;
        }
        let separator = separators.value(row);
        let index = indexes.value(row) as usize;
        let part = if separator.is_empty() {
            None
        } else {
            texts.value(row).split(separator).nth(index)
        };
        out.append_option(part);
    }
    Ok(Arc::new(out.finish()))
}

fn regexp_extract(arrays: &[ArrayRef]) -> DfResult<ArrayRef> {
    let texts = arrays[0].as_string::<i32>();
    let patterns = arrays[1].as_string::<i32>();
    let groups = arrays.get(2).map(|a| a.as_primitive::<Int64Type>());
    let mut out = StringBuilder::with_capacity(texts.len(), texts.len() * 8);
    let mut cached: Option<(String, regex::Regex)> = None;
    for row in 0..texts.len() {
        if texts.is_null(row) || patterns.is_null(row) || groups.is_some_and(|g| g.is_null(row)) {
            out.append_null();
            continue;
        }
        let pattern = patterns.value(row);
        if cached.as_ref().map(|(p, _)| p.as_str()) != Some(pattern) {
            match regex::Regex::new(pattern) {
                Ok(compiled) => cached = Some((pattern.to_string(), compiled)),
                Err(e) => return exec_err!("REGEXP_EXTRACT: invalid regex '{pattern}': {e}"),
            }
        }
        let group = groups.map(|g| g.value(row)).unwrap_or(1).max(0) as usize;
        let extracted = cached
            .as_ref()
            .and_then(|(_, regex)| regex.captures(texts.value(row)))
            .and_then(|captures| captures.get(group))
            .map(|m| m.as_str());
        out.append_option(extracted);
    }
    Ok(Arc::new(out.finish()))
}

fn from_unixtime(arrays: &[ArrayRef]) -> DfResult<ArrayRef> {
    let seconds = arrays[0].as_primitive::<Int64Type>();
    let mut out = StringBuilder::with_capacity(seconds.len(), seconds.len() * 19);
    for row in 0..seconds.len() {
        let format = match optional_format(arrays, 1, row) {
            Some(format) => java_to_chrono_format(format.unwrap_or("yyyy-MM-dd HH:mm:ss")),
            None => {
                out.append_null();
                continue;
            }
        };
        let text = if seconds.is_null(row) {
            None
        } else {
            DateTime::from_timestamp(seconds.value(row), 0)
                .map(|dt| dt.naive_utc().format(&format).to_string())
        };
        out.append_option(text);
    }
    Ok(Arc::new(out.finish()))
}

fn unix_timestamp(arrays: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    let mut out = Int64Builder::with_capacity(rows);
    if arrays.is_empty() {
        let now = chrono::Utc::now().timestamp();
        for _ in 0..rows {
            out.append_value(now);
        }
        return Ok(Arc::new(out.finish()));
    }
    let texts = arrays[0].as_string::<i32>();
    for row in 0..rows {
        let parsed = if texts.is_null(row) {
            None
        } else {
            optional_format(arrays, 1, row)
                .and_then(|format| parse_datetime(texts.value(row), format))
        };
        out.append_option(parsed.map(|dt| dt.and_utc().timestamp()));
    }
    Ok(Arc::new(out.finish()))
}

/// Converts a Java `DateTimeFormatter`/`SimpleDateFormat` pattern (as Flink uses)
/// into a chrono format string.
pub fn java_to_chrono_format(java: &str) -> String {
    let chars: Vec<char> = java.chars().collect();
    let mut out = String::with_capacity(java.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal; '' is a single quote.
            i += 1;
            if i < chars.len() && chars[i] == '\'' {
                out.push('\'');
                i += 1;
                continue;
            }
            while i < chars.len() && chars[i] != '\'' {
                push_literal(&mut out, chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut run = 1;
        while i + run < chars.len() && chars[i + run] == c {
            run += 1;
        }
        let spec = match (c, run) {
            ('y', 2) => "%y".to_string(),
            ('y' | 'u', _) => "%Y".to_string(),
            ('M', 1) => "%-m".to_string(),
            ('M', 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('M', _) => "%B".to_string(),
            ('d', 1) => "%-d".to_string(),
            ('d', _) => "%d".to_string(),
            ('D', _) => "%j".to_string(),
            ('H', 1) => "%-H".to_string(),
            ('H', _) => "%H".to_string(),
            ('h', 1) => "%-I".to_string(),
            ('h', _) => "%I".to_string(),
            ('m', 1) => "%-M".to_string(),
            ('m', _) => "%M".to_string(),
            ('s', 1) => "%-S".to_string(),
            ('s', _) => "%S".to_string(),
            ('S', n) => format!("%{}f", n.min(9)),
            ('a', _) => "%p".to_string(),
            ('E', 1..=3) => "%a".to_string(),
            ('E', _) => "%A".to_string(),
            ('Z', _) => "%z".to_string(),
            ('X', _) | ('x', _) => "%:z".to_string(),
            _ => std::iter::repeat_n(c, run).collect(),
        };
        out.push_str(&spec);
        i += run;
    }
    out
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format_reuses_text_only_within_the_patterns_finest_unit() -> DfResult<()> {
        use arrow::array::{StringArray, TimestampMillisecondArray};
        use chrono::format::StrftimeItems;
        // Runs of close times (same day, same minute, next millisecond),
        // jumps back and forth, and times before 1970.
        let mut times = vec![
            0,
            1,
            999,
            1_000,
            59_999,
            60_000,
            3_599_999,
            3_600_000,
            86_399_999,
            86_400_000,
            -1,
            -86_400_001,
            1_436_918_400_000,
            1_436_918_400_000,
            1_436_918_461_001,
            1_436_922_000_000,
        ];
        times.extend((0..200).map(|i| 1_436_918_400_000 + i * 37_123_457));
        let timestamps: ArrayRef = Arc::new(TimestampMillisecondArray::from(times.clone()));
        for java in [
            "yyyy-MM-dd",
            "HH:mm",
            "yyyy-MM-dd HH:mm:ss.SSS",
            "EEE, d MMM yyyy",
            "hh a",
            "ss",
        ] {
            let formats: ArrayRef = Arc::new(StringArray::from(vec![java; times.len()]));
            let formatted = date_format(&timestamps, &formats)?;
            let formatted = formatted.as_string::<i32>();
            let pattern = java_to_chrono_format(java);
            for (row, millis) in times.iter().enumerate() {
                let expected = millis_to_datetime(*millis).map(|dt| {
                    dt.format_with_items(StrftimeItems::new(&pattern))
                        .to_string()
                });
                assert_eq!(
                    Some(formatted.value(row).to_string()),
                    expected,
                    "{java} at {millis}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn java_patterns_convert() {
        assert_eq!(
            java_to_chrono_format("yyyy-MM-dd HH:mm:ss"),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(java_to_chrono_format("HH:mm"), "%H:%M");
        assert_eq!(
            java_to_chrono_format("yyyy-MM-dd'T'HH:mm:ss.SSS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(java_to_chrono_format("d MMM yy '100%'"), "%-d %b %y 100%%");
    }

    #[test]
    fn parse_default_and_custom_formats() {
        let dt = parse_datetime("2020-01-02 03:04:05.123", None).unwrap();
        assert_eq!(dt.and_utc().timestamp_millis(), 1577934245123);
        let dt = parse_datetime("02/01/2020", Some("dd/MM/yyyy")).unwrap();
        assert_eq!(dt.and_utc().timestamp(), 1577923200);
        assert!(parse_datetime("not a date", None).is_none());
    }
}
