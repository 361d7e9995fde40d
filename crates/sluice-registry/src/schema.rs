//! Schema types, references, validation and the normalized form that decides
//! whether two registrations are "the same schema" (and so share an id).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RegistryError;

/// The kinds of schema the registry stores, named as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    /// Confluent's name (`AVRO`, `JSON`, `PROTOBUF`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    /// Parses a `schemaType` value (case-insensitive, as Confluent accepts it).
    pub fn parse(text: &str) -> Result<SchemaType, RegistryError> {
        match text.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "JSON" => Ok(SchemaType::Json),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            _ => Err(RegistryError::InvalidSchema(format!(
                "Invalid schema type {text}"
            ))),
        }
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference from one schema to a named schema registered under another
/// subject (Confluent's `{"name", "subject", "version"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    /// The name the referencing schema uses: a full record name for Avro, an
    /// import path for Protobuf, a URL for JSON Schema.
    pub name: String,
    pub subject: String,
    /// A version number; `-1` on input means "the latest version", which is
    /// resolved to a number when the schema is registered.
    pub version: i64,
}

/// The body of `POST /subjects/{subject}/versions`, `POST /subjects/{subject}`
/// and the compatibility endpoints. Other fields Confluent clients may send
/// (`metadata`, `ruleSet`, ...) are accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct SchemaRequest {
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default, rename = "schemaType")]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Option<Vec<SchemaReference>>,
}

impl SchemaRequest {
    /// A request for an Avro schema without references.
    pub fn avro(schema: impl Into<String>) -> SchemaRequest {
        SchemaRequest {
            schema: Some(schema.into()),
            schema_type: None,
            references: None,
        }
    }

    pub(crate) fn schema_type(&self) -> Result<SchemaType, RegistryError> {
        match &self.schema_type {
            None => Ok(SchemaType::Avro),
            Some(text) => SchemaType::parse(text),
        }
    }

    pub(crate) fn schema_text(&self) -> Result<&str, RegistryError> {
        match self.schema.as_deref() {
            Some(text) if !text.trim().is_empty() => Ok(text),
            _ => Err(RegistryError::InvalidSchema("Empty schema".into())),
        }
    }
}

/// A schema as stored: its global id, kind, text as first registered, and
/// references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    pub id: i64,
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<SchemaReference>,
}

/// A parsed Avro schema together with the named schemas its references bring in.
#[derive(Debug, Clone)]
pub(crate) struct AvroSchema {
    pub schema: apache_avro::Schema,
    pub schemata: Vec<apache_avro::Schema>,
}

/// Parses an Avro schema; `referenced` holds the texts of the schemas its
/// references name (transitively), which may be used by name.
pub(crate) fn parse_avro(text: &str, referenced: &[String]) -> Result<AvroSchema, String> {
    if referenced.is_empty() {
        apache_avro::Schema::parse_str(text)
            .map(|schema| AvroSchema {
                schema,
                schemata: Vec::new(),
            })
            .map_err(|error| error.to_string())
    } else {
        apache_avro::Schema::parse_str_with_list(text, referenced)
            .map(|(schema, schemata)| AvroSchema { schema, schemata })
            .map_err(|error| error.to_string())
    }
}

/// Validates a schema of the given type and returns its normalized form: two
/// registrations with the same type, normalized form and references are the
/// same schema and share one id.
///
/// * Avro: parsed by `apache-avro` (which rejects invalid schemas), then the
///   JSON is written with sorted keys and no whitespace, and `{"type": "long"}`
///   becomes `"long"`, so formatting and key order do not matter. Nothing else
///   is dropped. This is deliberately not the Avro *Parsing Canonical Form*:
///   that form drops `default`, `logicalType`, `doc`, `aliases` and custom
///   properties (such as Kafka Connect's `connect.type`), so a field with a
///   default and one without (which differ for compatibility), or a
///   `timestamp-millis` and a plain `long`, would share one id and one of the
///   two texts would be lost. (`apache-avro`'s own JSON output is not used
///   either: it drops unknown logical types and properties on primitives.)
/// * JSON Schema: the JSON with sorted keys and no whitespace.
/// * Protobuf: the text with surrounding whitespace trimmed.
pub(crate) fn normalize(
    schema_type: SchemaType,
    text: &str,
    referenced: &[String],
) -> Result<String, RegistryError> {
    match schema_type {
        SchemaType::Avro => {
            parse_avro(text, referenced).map_err(|message| {
                RegistryError::InvalidSchema(format!("Invalid schema: {message}"))
            })?;
            let value: Value = serde_json::from_str(text).map_err(|error| {
                RegistryError::InvalidSchema(format!("Invalid schema: {error}"))
            })?;
            Ok(canonical_json(&simplify_avro(&value)))
        }
        SchemaType::Json => {
            let value: Value = serde_json::from_str(text).map_err(|error| {
                RegistryError::InvalidSchema(format!("Invalid schema: not valid JSON: {error}"))
            })?;
            if !(value.is_object() || value.is_boolean()) {
                return Err(RegistryError::InvalidSchema(
                    "Invalid schema: a JSON Schema must be an object or a boolean".into(),
                ));
            }
            Ok(canonical_json(&value))
        }
        SchemaType::Protobuf => Ok(text.trim().to_string()),
    }
}

/// Writes `{"type": X}` (nothing else) as `X`, in schema positions only (not
/// inside default values): the one rewrite of Avro's canonical form that
/// loses nothing.
fn simplify_avro(schema: &Value) -> Value {
    match schema {
        Value::Array(branches) => Value::Array(branches.iter().map(simplify_avro).collect()),
        Value::Object(object) => {
            let mut object = object.clone();
            for key in ["type", "items", "values"] {
                if let Some(inner) = object.get_mut(key) {
                    *inner = simplify_avro(inner);
                }
            }
            let is_record = matches!(
                object.get("type").and_then(Value::as_str),
                Some("record" | "error")
            );
            if is_record {
                if let Some(Value::Array(fields)) = object.get_mut("fields") {
                    for field in fields.iter_mut() {
                        if let Some(inner) = field.get_mut("type") {
                            *inner = simplify_avro(inner);
                        }
                    }
                }
            }
            if object.len() == 1 {
                if let Some(Value::String(name)) = object.get("type") {
                    return Value::String(name.clone());
                }
            }
            Value::Object(object)
        }
        other => other.clone(),
    }
}

/// JSON text with object keys sorted and no insignificant whitespace
/// (independent of whether serde_json preserves insertion order).
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avro_normal_form_ignores_formatting_but_keeps_everything_else() {
        let a =
            r#"{"type":"record","name":"r","namespace":"n","fields":[{"name":"a","type":"long"}]}"#;
        let b = r#"{ "fields": [ {"type": {"type": "long"}, "name": "a"} ],
                     "namespace": "n", "name": "r", "type": "record" }"#;
        let na = normalize(SchemaType::Avro, a, &[]).unwrap();
        assert_eq!(na, normalize(SchemaType::Avro, b, &[]).unwrap());

        let variants = [
            r#"{"type":"record","name":"r","namespace":"n","fields":[{"name":"a","type":"long","default":1}]}"#,
            r#"{"type":"record","name":"r","namespace":"n","fields":[{"name":"a","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
            r#"{"type":"record","name":"r","namespace":"n","doc":"d","fields":[{"name":"a","type":"long"}]}"#,
            r#"{"type":"record","name":"r","namespace":"n","fields":[{"name":"a","type":{"type":"long","connect.type":"int64"}}]}"#,
            r#"{"type":"record","name":"r","namespace":"n","fields":[{"name":"a","type":{"type":"long","logicalType":"made-up"}}]}"#,
        ];
        for variant in variants {
            assert_ne!(
                na,
                normalize(SchemaType::Avro, variant, &[]).unwrap(),
                "{variant}"
            );
        }
    }

    #[test]
    fn defaults_are_not_rewritten() {
        // A default value that looks like `{"type": ...}` is data, not a schema.
        let schema = r#"{"type":"record","name":"r","fields":[{"name":"inner","default":{"type":"x"},
            "type":{"type":"record","name":"i","fields":[{"name":"type","type":"string"}]}}]}"#;
        let normal = normalize(SchemaType::Avro, schema, &[]).unwrap();
        assert!(normal.contains(r#""default":{"type":"x"}"#), "{normal}");
    }

    #[test]
    fn invalid_avro_is_rejected_with_the_parser_message() {
        let error = normalize(SchemaType::Avro, r#"{"type":"recrod"}"#, &[]).unwrap_err();
        assert_eq!(error.error_code(), 42201);
        assert!(error.to_string().starts_with("Invalid schema: "), "{error}");
    }

    #[test]
    fn json_schema_must_be_json() {
        assert!(normalize(SchemaType::Json, "{\"type\": \"object\"}", &[]).is_ok());
        assert_eq!(
            normalize(SchemaType::Json, "{nope", &[])
                .unwrap_err()
                .error_code(),
            42201
        );
        assert_eq!(
            normalize(SchemaType::Json, r#"{"b":1, "a":[1, {"d":2,"c":3}]}"#, &[]).unwrap(),
            r#"{"a":[1,{"c":3,"d":2}],"b":1}"#
        );
    }
}
