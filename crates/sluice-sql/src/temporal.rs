//! `FOR SYSTEM_TIME AS OF` table references (Flink's temporal and lookup
//! joins). sqlparser does not read the clause in a join, so it is taken out of
//! the token stream and remembered; the planner turns a join whose right side
//! is such a reference into a lookup join.

use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};

/// A table read `FOR SYSTEM_TIME AS OF` a time attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalTable {
    /// The table's name.
    pub table: String,
    /// The name the query uses for it (its alias, else its name).
    pub alias: String,
    /// The time attribute, as written (e.g. `o.proc_time`).
    pub time: String,
    /// Where the clause starts.
    pub location: Location,
}

fn word(token: &Token) -> Option<&str> {
    match token {
        Token::Word(word) => Some(word.value.as_str()),
        _ => None,
    }
}

fn is_keyword(token: &Token, keyword: &str) -> bool {
    match token {
        Token::Word(word) => word.quote_style.is_none() && word.value.eq_ignore_ascii_case(keyword),
        _ => false,
    }
}

/// Removes every `<table> FOR SYSTEM_TIME AS OF <column>` clause (keeping
/// `<table> [AS] alias`); returns the remaining tokens and the references.
pub fn take_temporal_clauses(
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Vec<TemporalTable>), String> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = is_keyword(&tokens[i].token, "FOR")
            && tokens
                .get(i + 1)
                .is_some_and(|t| is_keyword(&t.token, "SYSTEM_TIME"))
            && tokens
                .get(i + 2)
                .is_some_and(|t| is_keyword(&t.token, "AS"))
            && tokens
                .get(i + 3)
                .is_some_and(|t| is_keyword(&t.token, "OF"));
        if !starts {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let location = tokens[i].span.start;
        let table = out
            .last()
            .and_then(|t| word(&t.token))
            .ok_or_else(|| format!("FOR SYSTEM_TIME AS OF must follow a table name at {location}"))?
            .to_string();
        // The time attribute: a column reference `a.b`.
        let mut end = i + 4;
        let mut time = String::new();
        loop {
            let Some(part) = tokens.get(end).and_then(|t| word(&t.token)) else {
                return Err(format!(
                    "FOR SYSTEM_TIME AS OF needs a time attribute column at {location}"
                ));
            };
            time.push_str(part);
            end += 1;
            if tokens.get(end).map(|t| &t.token) == Some(&Token::Period) {
                time.push('.');
                end += 1;
            } else {
                break;
            }
        }
        // The alias, if any: `[AS] name` before ON / WHERE / JOIN ...
        let mut alias = table.clone();
        let mut next = end;
        if tokens.get(next).is_some_and(|t| is_keyword(&t.token, "AS")) {
            next += 1;
        }
        if let Some(name) = tokens.get(next).and_then(|t| word(&t.token)) {
            let reserved = ["ON", "WHERE", "JOIN", "LEFT", "INNER", "GROUP", "USING"];
            if !reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                alias = name.to_string();
            }
        }
        found.push(TemporalTable {
            table,
            alias,
            time,
            location,
        });
        i = end;
    }
    Ok((out, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    #[test]
    fn clause_is_removed_and_remembered() {
        let sql = "SELECT * FROM b JOIN side FOR SYSTEM_TIME AS OF b.p_time AS s ON b.k = s.k";
        let tokens: Vec<TokenWithSpan> = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .expect("tokens")
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let (rest, found) = take_temporal_clauses(tokens).expect("rewrite");
        let text: Vec<String> = rest.iter().map(|t| t.token.to_string()).collect();
        assert_eq!(
            text.join(" "),
            "SELECT * FROM b JOIN side AS s ON b . k = s . k"
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].table, "side");
        assert_eq!(found[0].alias, "s");
        assert_eq!(found[0].time, "b.p_time");
    }
}
