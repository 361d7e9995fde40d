//! Flink SQL data types (`BIGINT`, `TIMESTAMP(3)`, `ROW<a INT>`, `MAP<K, V>`, ...)
//! parsed from sqlparser tokens into Arrow types.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// Parses Flink data types from a sqlparser token stream. Keeps count of a `>`
/// still owed when the tokenizer produced `>>` for two closing brackets.
pub struct TypeParser<'p, 'a> {
    parser: &'p mut Parser<'a>,
    pending_close: usize,
}

/// The timestamp unit that holds `precision` fractional digits.
pub fn time_unit_for_precision(precision: u64) -> TimeUnit {
    match precision {
        0..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    }
}

impl<'p, 'a> TypeParser<'p, 'a> {
    /// Wraps a parser positioned at a type.
    pub fn new(parser: &'p mut Parser<'a>) -> Self {
        TypeParser {
            parser,
            pending_close: 0,
        }
    }

    /// Parses one type and its optional `NOT NULL` / `NULL`; returns the type
    /// and whether it is nullable.
    pub fn parse_with_nullability(&mut self) -> Result<(DataType, bool), ParserError> {
        let data_type = self.parse_type()?;
        if self.pending_close > 0 {
            return Ok((data_type, true));
        }
        let nullable = if self.parser.parse_keywords(&[
            datafusion::sql::sqlparser::keywords::Keyword::NOT,
            datafusion::sql::sqlparser::keywords::Keyword::NULL,
        ]) {
            false
        } else {
            let _ = self
                .parser
                .parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::NULL);
            true
        };
        Ok((data_type, nullable))
    }

    /// Parses one type.
    pub fn parse_type(&mut self) -> Result<DataType, ParserError> {
        let token = self.parser.next_token();
        let name = match &token.token {
            Token::Word(word) => word.value.to_ascii_uppercase(),
            _ => return self.parser.expected("a data type", token),
        };
        let data_type = match name.as_str() {
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TINYINT" => DataType::Int8,
            "SMALLINT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => {
                let _ = self
                    .parser
                    .parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::PRECISION);
                DataType::Float64
            }
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let (precision, scale) = self.optional_precision_scale()?;
                let precision = precision.unwrap_or(10);
                let scale = scale.unwrap_or(0);
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(ParserError::ParserError(format!(
                        "DECIMAL({precision}, {scale}) is out of range: precision must be 1..38 and scale <= precision at {}",
                        token.span.start
                    )));
                }
                DataType::Decimal128(precision as u8, scale as i8)
            }
            "CHAR" | "VARCHAR" | "STRING" | "TEXT" => {
                let _ = self.optional_precision_scale()?;
                DataType::Utf8
            }
            "CHARACTER" => {
                let _ = self
                    .parser
                    .parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::VARYING);
                let _ = self.optional_precision_scale()?;
                DataType::Utf8
            }
            "BINARY" | "VARBINARY" | "BYTES" => {
                let _ = self.optional_precision_scale()?;
                DataType::Binary
            }
            "DATE" => DataType::Date32,
            "TIME" => {
                let (precision, _) = self.optional_precision_scale()?;
                self.skip_time_zone_clause()?;
                match precision.unwrap_or(0) {
                    0..=3 => DataType::Time32(TimeUnit::Millisecond),
                    _ => DataType::Time64(TimeUnit::Microsecond),
                }
            }
            "TIMESTAMP" => {
                let (precision, _) = self.optional_precision_scale()?;
                let local_zone = self.skip_time_zone_clause()?;
                let unit = time_unit_for_precision(precision.unwrap_or(6));
                DataType::Timestamp(unit, local_zone.then(|| Arc::from("UTC")))
            }
            "TIMESTAMP_LTZ" => {
                let (precision, _) = self.optional_precision_scale()?;
                let unit = time_unit_for_precision(precision.unwrap_or(6));
                DataType::Timestamp(unit, Some(Arc::from("UTC")))
            }
            "INTERVAL" => {
                self.skip_interval_qualifier()?;
                DataType::Interval(IntervalUnit::MonthDayNano)
            }
            "ARRAY" => {
                self.expect_open()?;
                let (element, nullable) = self.parse_nested_with_nullability()?;
                self.expect_close()?;
                DataType::List(Arc::new(Field::new("item", element, nullable)))
            }
            "MAP" => {
                self.expect_open()?;
                let (key, _) = self.parse_nested_with_nullability()?;
                self.parser.expect_token(&Token::Comma)?;
                let (value, value_nullable) = self.parse_nested_with_nullability()?;
                self.expect_close()?;
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", key, false),
                        Field::new("value", value, value_nullable),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            "ROW" => self.parse_row_fields()?,
            "MULTISET" | "RAW" => {
                return Err(ParserError::ParserError(format!(
                    "data type {name} is not supported at {}",
                    token.span.start
                )))
            }
            _ => {
                return Err(ParserError::ParserError(format!(
                    "unknown data type '{}' at {}; expected one of BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), VARCHAR, STRING, BYTES, DATE, TIME, TIMESTAMP(p), TIMESTAMP_LTZ(p), INTERVAL, ARRAY<T>, MAP<K, V>, ROW<...>",
                    word_text(&token.token),
                    token.span.start
                )))
            }
        };
        Ok(data_type)
    }

    fn parse_nested_with_nullability(&mut self) -> Result<(DataType, bool), ParserError> {
        self.parse_with_nullability()
    }

    /// `ROW<name TYPE [COMMENT '...'], ...>` or `ROW(name TYPE, ...)`.
    fn parse_row_fields(&mut self) -> Result<DataType, ParserError> {
        let angle = if self.parser.consume_token(&Token::Lt) {
            true
        } else {
            self.parser.expect_token(&Token::LParen)?;
            false
        };
        let mut fields = Vec::new();
        loop {
            if angle && self.try_close() {
                break;
            }
            if !angle && self.parser.consume_token(&Token::RParen) {
                break;
            }
            let name = self.parser.parse_identifier()?;
            let (data_type, nullable) = self.parse_with_nullability()?;
            if self
                .parser
                .parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::COMMENT)
            {
                self.parser.parse_literal_string()?;
            }
            fields.push(Field::new(name.value, data_type, nullable));
            if self.pending_close > 0 {
                continue;
            }
            if !self.parser.consume_token(&Token::Comma) {
                if angle {
                    self.expect_close()?;
                } else {
                    self.parser.expect_token(&Token::RParen)?;
                }
                break;
            }
        }
        Ok(DataType::Struct(Fields::from(fields)))
    }

    fn optional_precision_scale(&mut self) -> Result<(Option<u64>, Option<u64>), ParserError> {
        if !self.parser.consume_token(&Token::LParen) {
            return Ok((None, None));
        }
        let precision = self.parser.parse_literal_uint()?;
        let scale = if self.parser.consume_token(&Token::Comma) {
            Some(self.parser.parse_literal_uint()?)
        } else {
            None
        };
        self.parser.expect_token(&Token::RParen)?;
        Ok((Some(precision), scale))
    }

    /// Skips `WITHOUT TIME ZONE` / `WITH LOCAL TIME ZONE` / `WITH TIME ZONE`;
    /// returns true for the `WITH ...` forms (an instant, not a wall-clock time).
    fn skip_time_zone_clause(&mut self) -> Result<bool, ParserError> {
        use datafusion::sql::sqlparser::keywords::Keyword;
        if self
            .parser
            .parse_keywords(&[Keyword::WITHOUT, Keyword::TIME, Keyword::ZONE])
        {
            return Ok(false);
        }
        if self.parser.parse_keywords(&[
            Keyword::WITH,
            Keyword::LOCAL,
            Keyword::TIME,
            Keyword::ZONE,
        ]) || self
            .parser
            .parse_keywords(&[Keyword::WITH, Keyword::TIME, Keyword::ZONE])
        {
            return Ok(true);
        }
        Ok(false)
    }

    fn skip_interval_qualifier(&mut self) -> Result<(), ParserError> {
        use datafusion::sql::sqlparser::keywords::Keyword;
        let units = [
            Keyword::YEAR,
            Keyword::MONTH,
            Keyword::DAY,
            Keyword::HOUR,
            Keyword::MINUTE,
            Keyword::SECOND,
        ];
        while self.parser.parse_one_of_keywords(&units).is_some()
            || self.parser.parse_keyword(Keyword::TO)
        {
            let _ = self.optional_precision_scale()?;
        }
        Ok(())
    }

    fn expect_open(&mut self) -> Result<(), ParserError> {
        self.parser.expect_token(&Token::Lt).map(|_| ())
    }

    fn try_close(&mut self) -> bool {
        if self.pending_close > 0 {
            self.pending_close -= 1;
            return true;
        }
        if self.parser.consume_token(&Token::Gt) {
            return true;
        }
        if self.parser.consume_token(&Token::ShiftRight) {
            self.pending_close += 1;
            return true;
        }
        false
    }

    fn expect_close(&mut self) -> Result<(), ParserError> {
        if self.try_close() {
            Ok(())
        } else {
            let found = self.parser.peek_token();
            self.parser.expected("'>'", found)
        }
    }
}

fn word_text(token: &Token) -> String {
    match token {
        Token::Word(word) => word.value.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    fn parse(text: &str) -> DataType {
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect).try_with_sql(text).unwrap();
        TypeParser::new(&mut parser).parse_type().unwrap()
    }

    #[test]
    fn scalar_types() {
        assert_eq!(parse("BIGINT"), DataType::Int64);
        assert_eq!(parse("DECIMAL(23, 3)"), DataType::Decimal128(23, 3));
        assert_eq!(parse("VARCHAR(10)"), DataType::Utf8);
        assert_eq!(
            parse("TIMESTAMP(3)"),
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(
            parse("TIMESTAMP_LTZ(3)"),
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(
            parse("TIMESTAMP(6) WITH LOCAL TIME ZONE"),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(parse("BYTES"), DataType::Binary);
    }

    #[test]
    fn nested_types_with_double_close() {
        let parsed = parse("MAP<STRING, ARRAY<INT>>");
        let DataType::Map(entries, _) = parsed else {
            panic!("not a map")
        };
        let DataType::Struct(fields) = entries.data_type() else {
            panic!("not a struct")
        };
        assert!(matches!(fields[1].data_type(), DataType::List(_)));
        let row = parse(
            "ROW<id BIGINT NOT NULL, inner ROW<a ARRAY<ROW<x INT>>>, `dateTime` TIMESTAMP(3)>",
        );
        let DataType::Struct(fields) = row else {
            panic!("not a row")
        };
        assert_eq!(fields.len(), 3);
        assert!(!fields[0].is_nullable());
        assert_eq!(fields[2].name(), "dateTime");
    }

    #[test]
    fn unknown_type_is_named() {
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect).try_with_sql("BIGNUM").unwrap();
        let err = TypeParser::new(&mut parser).parse_type().unwrap_err();
        assert!(err.to_string().contains("BIGNUM"), "{err}");
        assert!(err.to_string().contains("Line: 1"), "{err}");
    }
}
