//! Splits a Flink SQL script into statements. `CREATE TABLE` (with computed
//! columns, `WATERMARK FOR`, `PRIMARY KEY ... NOT ENFORCED` and `WITH` options) and
//! `SET 'k' = 'v'` are parsed here on top of sqlparser's tokenizer; everything else
//! goes to sqlparser's own statement parser.

use std::collections::BTreeMap;

use arrow::datatypes::Field;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};
use sluice_core::options::Options;
use sluice_core::table::{metadata_column, TableColumn, TableDef, WatermarkDef};
use sluice_core::{Result, SluiceError};

use crate::types::TypeParser;

/// One statement of a script, with the line it starts on.
#[derive(Debug, Clone)]
pub struct ScriptStatement {
    /// Where the statement starts (1-based line and column).
    pub location: Location,
    /// What it says.
    pub kind: StatementKind,
    /// Tables it reads `FOR SYSTEM_TIME AS OF` a time attribute.
    pub temporal_tables: Vec<crate::temporal::TemporalTable>,
}

/// The statements Sluice understands.
#[derive(Debug, Clone)]
pub enum StatementKind {
    /// `SET 'key' = 'value'`.
    Set {
        /// Configuration key.
        key: String,
        /// Its value.
        value: String,
    },
    /// `CREATE [TEMPORARY] TABLE ...`.
    CreateTable(TableDef),
    /// Any other statement (views, inserts), for DataFusion to plan.
    Sql(Box<Statement>),
}

/// Parses a whole script. Errors name the line and column.
pub fn parse_script(script: &str) -> Result<Vec<ScriptStatement>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, script)
        .tokenize_with_location()
        .map_err(|e| sql_error(&ParserError::TokenizerError(e.to_string())))?
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let tokens = crate::window_tvf::rewrite_window_tvfs(tokens)
        .map_err(|e| sql_error(&ParserError::ParserError(e)))?;
    let (tokens, mut temporal_tables) = crate::temporal::take_temporal_clauses(tokens)
        .map_err(|e| sql_error(&ParserError::ParserError(e)))?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        let location = parser.peek_token().span.start;
        if skip_statement_set_markers(&mut parser) {
            continue;
        }
        let kind = parse_statement(&mut parser).map_err(|e| sql_error(&e))?;
        let end = parser.peek_token().span.start;
        let (inside, rest): (Vec<_>, Vec<_>) = temporal_tables
            .into_iter()
            .partition(|t| t.location >= location && t.location < end);
        temporal_tables = rest;
        statements.push(ScriptStatement {
            location,
            kind,
            temporal_tables: inside,
        });
        let next = parser.peek_token();
        if next.token != Token::SemiColon
            && next.token != Token::EOF
            && !is_word(&next.token, "END")
        {
            return Err(sql_error(&ParserError::ParserError(format!(
                "Expected: ';' after the statement, found: {} at {}",
                next.token, next.span.start
            ))));
        }
    }
    Ok(statements)
}

/// Skips Flink's statement-set wrappers (`EXECUTE STATEMENT SET BEGIN`,
/// `BEGIN STATEMENT SET;`, `END;`): every script is one statement set anyway.
fn skip_statement_set_markers(parser: &mut Parser<'_>) -> bool {
    let first = parser.peek_nth_token(0).token;
    if is_word(&first, "EXECUTE")
        && is_word(&parser.peek_nth_token(1).token, "STATEMENT")
        && is_word(&parser.peek_nth_token(2).token, "SET")
        && is_word(&parser.peek_nth_token(3).token, "BEGIN")
    {
        for _ in 0..4 {
            parser.next_token();
        }
        return true;
    }
    if is_word(&first, "BEGIN")
        && is_word(&parser.peek_nth_token(1).token, "STATEMENT")
        && is_word(&parser.peek_nth_token(2).token, "SET")
    {
        for _ in 0..3 {
            parser.next_token();
        }
        return true;
    }
    if is_word(&first, "END") {
        parser.next_token();
        return true;
    }
    false
}

fn is_word(token: &Token, text: &str) -> bool {
    matches!(token, Token::Word(word) if word.value.eq_ignore_ascii_case(text) && word.quote_style.is_none())
}

fn sql_error(error: &ParserError) -> SluiceError {
    let message = match error {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "statement nested too deeply".to_string(),
    };
    SluiceError::Sql(format!("SQL syntax error: {}", humanize_location(&message)))
}

/// Rewrites sqlparser's ` at Line: 3, Column: 7` into `(line 3, column 7)`.
fn humanize_location(message: &str) -> String {
    match message.rfind(" at Line: ") {
        Some(index) => {
            let (text, location) = message.split_at(index);
            let location = location
                .trim_start_matches(" at Line: ")
                .replace(", Column: ", ":");
            format!("line {location}: {text}")
        }
        None => message.to_string(),
    }
}

fn parse_statement(parser: &mut Parser<'_>) -> Result<StatementKind, ParserError> {
    if is_word(&parser.peek_token().token, "SET") {
        parser.next_token();
        return parse_set(parser);
    }
    let create = parser.peek_nth_token(0).token;
    let second = parser.peek_nth_token(1).token;
    let third = parser.peek_nth_token(2).token;
    if is_word(&create, "CREATE")
        && (is_word(&second, "TABLE")
            || (is_word(&second, "TEMPORARY") && is_word(&third, "TABLE")))
    {
        return parse_create_table(parser).map(StatementKind::CreateTable);
    }
    parser
        .parse_statement()
        .map(|s| StatementKind::Sql(Box::new(s)))
}

/// `SET 'key' = 'value'` (quotes optional around both).
fn parse_set(parser: &mut Parser<'_>) -> Result<StatementKind, ParserError> {
    let key = parse_loose_text(parser, &[Token::Eq])?;
    parser.expect_token(&Token::Eq)?;
    let value = parse_loose_text(parser, &[Token::SemiColon, Token::EOF])?;
    Ok(StatementKind::Set { key, value })
}

/// A quoted string, or unquoted tokens joined until one of `stop`.
fn parse_loose_text(parser: &mut Parser<'_>, stop: &[Token]) -> Result<String, ParserError> {
    if let Token::SingleQuotedString(text) | Token::DoubleQuotedString(text) =
        parser.peek_token().token
    {
        parser.next_token();
        return Ok(text);
    }
    let mut text = String::new();
    while !stop.contains(&parser.peek_token().token) && parser.peek_token().token != Token::EOF {
        text.push_str(&parser.next_token().token.to_string());
    }
    if text.is_empty() {
        let found = parser.peek_token();
        return parser.expected("a key or value", found);
    }
    Ok(text)
}

fn parse_create_table(parser: &mut Parser<'_>) -> Result<TableDef, ParserError> {
    parser.expect_keyword(Keyword::CREATE)?;
    let _ = parser.parse_keyword(Keyword::TEMPORARY);
    parser.expect_keyword(Keyword::TABLE)?;
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name_token = parser.peek_token();
    let name = parser.parse_object_name(false)?;
    let table_name = name
        .0
        .last()
        .and_then(|part| part.as_ident())
        .map(|ident| ident.value.clone())
        .ok_or_else(|| {
            ParserError::ParserError(format!(
                "Expected: a table name at {}",
                name_token.span.start
            ))
        })?;
    parser.expect_token(&Token::LParen)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    loop {
        if is_word(&parser.peek_token().token, "WATERMARK") {
            parser.next_token();
            parser.expect_keyword(Keyword::FOR)?;
            let column = parser.parse_identifier()?.value;
            parser.expect_keyword(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            watermark = Some(WatermarkDef {
                column,
                expr_sql: expr.to_string(),
            });
        } else if parser.peek_keyword(Keyword::PRIMARY) || parser.peek_keyword(Keyword::CONSTRAINT)
        {
            if parser.parse_keyword(Keyword::CONSTRAINT) {
                parser.parse_identifier()?;
            }
            parser.expect_keywords(&[Keyword::PRIMARY, Keyword::KEY])?;
            parser.expect_token(&Token::LParen)?;
            loop {
                primary_key.push(parser.parse_identifier()?.value);
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            parser.expect_token(&Token::RParen)?;
            let _ = parser.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
        } else {
            let column = parser.parse_identifier()?.value;
            if parser.parse_keyword(Keyword::AS) {
                let expr = parser.parse_expr()?;
                columns.push(TableColumn::Computed {
                    name: column,
                    expr_sql: expr.to_string(),
                });
            } else {
                let (data_type, nullable) = TypeParser::new(parser).parse_with_nullability()?;
                let mut metadata = None;
                if parser.parse_keyword(Keyword::METADATA) {
                    // `METADATA [FROM 'key'] [VIRTUAL]`: the key defaults to the column name.
                    let key = if parser.parse_keyword(Keyword::FROM) {
                        parser.parse_literal_string()?
                    } else {
                        column.clone()
                    };
                    let is_virtual = is_word(&parser.peek_token().token, "VIRTUAL");
                    if is_virtual {
                        parser.next_token();
                    }
                    metadata = Some((key, is_virtual));
                }
                if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                    let _ = parser.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
                    primary_key.push(column.clone());
                }
                if parser.parse_keyword(Keyword::COMMENT) {
                    parser.parse_literal_string()?;
                }
                let field = Field::new(column, data_type, nullable);
                columns.push(TableColumn::Physical(match metadata {
                    Some((key, is_virtual)) => metadata_column(field, &key, is_virtual),
                    None => field,
                }));
            }
        }
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    if parser.parse_keyword(Keyword::COMMENT) {
        parser.parse_literal_string()?;
    }
    if parser.peek_keyword(Keyword::PARTITIONED) {
        let found = parser.peek_token();
        return Err(ParserError::ParserError(format!(
            "PARTITIONED BY is not supported by Sluice yet at {}",
            found.span.start
        )));
    }
    let mut options = BTreeMap::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            if parser.consume_token(&Token::RParen) {
                break;
            }
            let key = parser.parse_literal_string()?;
            parser.expect_token(&Token::Eq)?;
            let value = parser.parse_literal_string()?;
            options.insert(key, value);
            if !parser.consume_token(&Token::Comma) {
                parser.expect_token(&Token::RParen)?;
                break;
            }
        }
    }
    Ok(TableDef {
        options: Options::new(format!("table `{table_name}`"), options),
        name: table_name,
        columns,
        watermark,
        primary_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flink_ddl_set_view_and_insert() {
        let script = r#"
            SET 'parallelism.default' = '2';
            CREATE TABLE nexmark (
                event_type INT,
                bid ROW<auction BIGINT, `dateTime` TIMESTAMP(3)>,
                `dateTime` AS CASE WHEN event_type = 2 THEN bid.`dateTime` END,
                WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND,
                PRIMARY KEY (event_type) NOT ENFORCED
            ) WITH ('connector' = 'nexmark', 'events.num' = '10');
            CREATE TEMPORARY VIEW v AS SELECT bid.auction FROM nexmark;
            INSERT INTO out SELECT * FROM v;
        "#;
        let statements = parse_script(script).unwrap();
        assert_eq!(statements.len(), 4);
        let StatementKind::Set { key, value } = &statements[0].kind else {
            panic!("not SET")
        };
        assert_eq!((key.as_str(), value.as_str()), ("parallelism.default", "2"));
        let StatementKind::CreateTable(table) = &statements[1].kind else {
            panic!("not CREATE TABLE")
        };
        assert_eq!(table.name, "nexmark");
        assert_eq!(table.columns.len(), 3);
        assert_eq!(table.columns[2].name(), "dateTime");
        assert_eq!(table.watermark.as_ref().unwrap().column, "dateTime");
        assert_eq!(table.primary_key, vec!["event_type".to_string()]);
        assert_eq!(table.connector(), Some("nexmark"));
        assert_eq!(statements[1].location.line, 3);
        assert!(matches!(statements[3].kind, StatementKind::Sql(_)));
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse_script("SET 'a' = 'b';\nINSERT INTO t SELEC x FROM y;")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2:"), "{err}");
    }

    #[test]
    fn missing_semicolon_is_reported() {
        let err = parse_script(
            "CREATE TABLE t (a INT) WITH ('connector' = 'print')\nCREATE TABLE u (a INT)",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2:1"), "{err}");
    }

    #[test]
    fn statement_set_wrappers_are_accepted() {
        let statements = parse_script(
            "EXECUTE STATEMENT SET BEGIN INSERT INTO a SELECT 1; INSERT INTO b SELECT 2; END;",
        )
        .unwrap();
        assert_eq!(statements.len(), 2);
    }
}
