//! Avro message formats for the Kafka connector, with Flink's option names.
//!
//! - `avro`: every message is one Avro binary record written with the schema
//!   derived from the table's columns ([`derive_avro_schema`], Flink's type
//!   mapping).
//! - `avro-confluent`: Confluent's wire format, a `0x00` magic byte and the
//!   big-endian 4-byte id of the writer schema in a schema registry, then the
//!   Avro binary record. Reading fetches each writer schema by id (cached) and
//!   resolves it against the table's columns with Avro's rules (int → long →
//!   float → double and string ↔ bytes promotions, fields matched by name,
//!   writer-only fields skipped, nullable table columns missing from the writer
//!   read as NULL); writing registers the derived schema under the subject.
//!
//! Records are decoded and encoded with `arrow-avro`. Each writer schema gets
//! its own streaming decoder with a reader schema tailored to it. A message
//! that cannot be decoded (wrong magic byte, unknown schema id, a body that
//! ends early or has bytes left over, invalid UTF-8, a null for a NOT NULL
//! column) goes to the bad-record policy; the decoder is then rebuilt and the
//! good messages decoded again, so a bad message never affects the others.
//! A writer schema that does not fit the table (a column whose type cannot be
//! read from the writer's, a NOT NULL column the writer lacks) is an error
//! naming the column and both types.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StructArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow_avro::errors::AvroError;
use arrow_avro::reader::{Decoder as StreamDecoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore, SCHEMA_METADATA_KEY,
};
use arrow_avro::writer::format::AvroBinaryFormat;
use arrow_avro::writer::{Encoder as RowEncoder, WriterBuilder};
use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::{OptionSpec, Options};
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::message::{DecodedMessages, Message, MessageContext, MessageDecoder, MessageEncoder};
use super::schema_registry::{RegistryAuth, SchemaRegistry, SchemaRegistryClient};
use super::{concat, require_inserts};

/// Options of the `avro` format (Flink's names).
pub const AVRO_OPTIONS: [OptionSpec; 2] = [
    OptionSpec::optional(
        "avro.encoding",
        "'binary' (default); the 'json' encoding is not supported",
    ),
    OptionSpec::optional(
        "avro.timestamp_mapping.legacy",
        "true (default): TIMESTAMP columns are written as timestamp-millis/-micros; false: as local-timestamp-millis/-micros (TIMESTAMP_LTZ is timestamp-millis/-micros either way)",
    ),
];

/// Options of the `avro-confluent` format (Flink's names).
pub const AVRO_CONFLUENT_OPTIONS: [OptionSpec; 7] = [
    OptionSpec::required(
        "avro-confluent.url",
        "URL of the Confluent schema registry (several may be given, separated by commas)",
    ),
    OptionSpec::optional(
        "avro-confluent.subject",
        "subject the schema is registered under (default '<topic>-value', or '<topic>-key' for the key format)",
    ),
    OptionSpec::optional(
        "avro-confluent.auto.register.schemas",
        "register the table's schema under the subject when writing (default true); false writes with the id of the subject's latest schema, which must match the table",
    ),
    OptionSpec::optional(
        "avro-confluent.basic-auth.credentials-source",
        "'USER_INFO' (default when user-info is set) or 'URL' (credentials in the registry URL)",
    ),
    OptionSpec::optional(
        "avro-confluent.basic-auth.user-info",
        "'user:password' for HTTP basic authentication to the registry",
    ),
    OptionSpec::optional(
        "avro-confluent.bearer-auth.credentials-source",
        "'STATIC_TOKEN' (default)",
    ),
    OptionSpec::optional(
        "avro-confluent.bearer-auth.token",
        "bearer token for the registry",
    ),
];

/// Parsed `avro.*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroOptions {
    /// `avro.timestamp_mapping.legacy`: TIMESTAMP columns map to
    /// `timestamp-millis`/`-micros` (true, the default) or to
    /// `local-timestamp-millis`/`-micros` (false).
    pub timestamp_mapping_legacy: bool,
}

impl Default for AvroOptions {
    fn default() -> Self {
        AvroOptions {
            timestamp_mapping_legacy: true,
        }
    }
}

impl AvroOptions {
    /// Reads the `avro.*` options.
    pub fn from_options(options: &Options) -> Result<Self> {
        match options
            .get("avro.encoding")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("binary") => {}
            Some(other) => {
                return Err(SluiceError::Config(format!(
                    "{}: 'avro.encoding' = '{other}' is not supported; only 'binary' is",
                    options.owner()
                )))
            }
        }
        Ok(AvroOptions {
            timestamp_mapping_legacy: options.bool("avro.timestamp_mapping.legacy", true)?,
        })
    }
}

/// Parsed `avro-confluent.*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroConfluentOptions {
    /// `avro-confluent.url`: the registry URL (or several, comma-separated).
    pub url: String,
    /// `avro-confluent.subject`; `None` means `<topic>-value` / `<topic>-key`.
    pub subject: Option<String>,
    /// `avro-confluent.auto.register.schemas` (default true).
    pub auto_register_schemas: bool,
    /// Authentication from the `basic-auth.*` / `bearer-auth.*` options.
    pub auth: RegistryAuth,
}

impl AvroConfluentOptions {
    /// Reads the `avro-confluent.*` options.
    pub fn from_options(options: &Options) -> Result<Self> {
        let owner = options.owner();
        let url = options.require("avro-confluent.url")?.trim().to_string();
        if url.is_empty() {
            return Err(SluiceError::Config(format!(
                "{owner}: option 'avro-confluent.url' is empty"
            )));
        }
        let subject = options
            .get("avro-confluent.subject")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let auto_register_schemas = options.bool("avro-confluent.auto.register.schemas", true)?;
        let user_info = options.get("avro-confluent.basic-auth.user-info");
        let basic_source = options
            .get("avro-confluent.basic-auth.credentials-source")
            .map(str::to_ascii_uppercase);
        let basic = match (basic_source.as_deref(), user_info) {
            (None | Some("USER_INFO"), Some(info)) => match info.split_once(':') {
                Some((user, password)) => Some(RegistryAuth::Basic {
                    user: user.to_string(),
                    password: password.to_string(),
                }),
                None => {
                    return Err(SluiceError::Config(format!(
                        "{owner}: option 'avro-confluent.basic-auth.user-info' must be 'user:password'"
                    )))
                }
            },
            (Some("USER_INFO"), None) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'avro-confluent.basic-auth.credentials-source' = 'USER_INFO' needs 'avro-confluent.basic-auth.user-info'"
                )))
            }
            (None, None) | (Some("URL"), _) => None,
            (Some(other), _) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'avro-confluent.basic-auth.credentials-source' must be 'USER_INFO' or 'URL', got '{other}'"
                )))
            }
        };
        let bearer_source = options
            .get("avro-confluent.bearer-auth.credentials-source")
            .map(str::to_ascii_uppercase);
        let token = options.get("avro-confluent.bearer-auth.token");
        let bearer = match (bearer_source.as_deref(), token) {
            (None | Some("STATIC_TOKEN"), Some(token)) => Some(RegistryAuth::Bearer(token.to_string())),
            (Some("STATIC_TOKEN"), None) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'avro-confluent.bearer-auth.credentials-source' = 'STATIC_TOKEN' needs 'avro-confluent.bearer-auth.token'"
                )))
            }
            (None, None) => None,
            (Some(other), _) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'avro-confluent.bearer-auth.credentials-source' must be 'STATIC_TOKEN', got '{other}'"
                )))
            }
        };
        let auth = match (basic, bearer) {
            (Some(_), Some(_)) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: set either 'avro-confluent.basic-auth.*' or 'avro-confluent.bearer-auth.*', not both"
                )))
            }
            (Some(auth), None) | (None, Some(auth)) => auth,
            (None, None) => RegistryAuth::None,
        };
        Ok(AvroConfluentOptions {
            url,
            subject,
            auto_register_schemas,
            auth,
        })
    }

    /// The subject for `context`: `avro-confluent.subject`, or `<topic>-key`
    /// / `<topic>-value` (Confluent's TopicNameStrategy).
    pub fn subject(&self, context: &MessageContext) -> String {
        match &self.subject {
            Some(subject) => subject.clone(),
            None => format!(
                "{}-{}",
                context.topic,
                if context.is_key { "key" } else { "value" }
            ),
        }
    }

    /// An HTTP client for the configured registry.
    pub fn client(&self) -> Result<SchemaRegistryClient> {
        SchemaRegistryClient::new(&self.url, self.auth.clone())
    }
}

// ---------------------------------------------------------------------------
// Schema derivation (table → Avro), Flink's `AvroSchemaConverter.convertToSchema`.

/// Name of the derived record (Flink's `org.apache.flink.avro.generated.record`).
pub const RECORD_NAME: &str = "record";
/// Namespace of the derived record.
pub const RECORD_NAMESPACE: &str = "org.apache.flink.avro.generated";

/// The Avro schema Flink derives for a table's columns: a record named
/// `org.apache.flink.avro.generated.record`; BOOLEAN → `boolean`,
/// TINYINT/SMALLINT/INT → `int`, BIGINT → `long`, FLOAT → `float`, DOUBLE →
/// `double`, STRING → `string`, BYTES → `bytes`, DECIMAL(p, s) → `bytes` with
/// the `decimal` logical type, DATE → `int` `date`, TIME(0..3) → `int`
/// `time-millis` (TIME(4..6) → `long` `time-micros`), TIMESTAMP(0..3)/(4..6) →
/// `long` `timestamp-millis`/`-micros` (`local-timestamp-*` when
/// `timestamp_mapping_legacy` is false), TIMESTAMP_LTZ(0..3)/(4..6) → `long`
/// `timestamp-millis`/`-micros`, ARRAY → `array`, MAP<STRING, V> → `map`, ROW
/// → a nested record named `<parent>_<field>`. Nullable types are unions
/// `["null", T]` and nullable fields default to null.
pub fn derive_avro_schema(schema: &Schema, timestamp_mapping_legacy: bool) -> Result<Value> {
    let mut fields = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        fields.push(derive_field(
            field,
            RECORD_NAME,
            timestamp_mapping_legacy,
            field.name(),
        )?);
    }
    Ok(json!({
        "type": "record",
        "name": RECORD_NAME,
        "namespace": RECORD_NAMESPACE,
        "fields": fields,
    }))
}

/// [`derive_avro_schema`] as compact JSON text (what `avro-confluent` registers).
pub fn derive_avro_schema_json(schema: &Schema, timestamp_mapping_legacy: bool) -> Result<String> {
    Ok(derive_avro_schema(schema, timestamp_mapping_legacy)?.to_string())
}

fn is_avro_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn derive_field(field: &Field, row_name: &str, legacy: bool, path: &str) -> Result<Value> {
    if !is_avro_name(field.name()) {
        return Err(SluiceError::Config(format!(
            "column `{path}`: '{}' is not a valid Avro field name (letters, digits and '_', not starting with a digit)",
            field.name()
        )));
    }
    let data_type = derive_type(
        field.data_type(),
        field.is_nullable(),
        &format!("{row_name}_{}", field.name()),
        legacy,
        path,
    )?;
    Ok(if field.is_nullable() {
        json!({"name": field.name(), "type": data_type, "default": null})
    } else {
        json!({"name": field.name(), "type": data_type})
    })
}

/// The key and value fields of a map type's entries.
fn map_entry_fields(entries: &FieldRef) -> Option<(&FieldRef, &FieldRef)> {
    match entries.data_type() {
        DataType::Struct(fields) if fields.len() == 2 => Some((&fields[0], &fields[1])),
        _ => None,
    }
}

fn derive_type(
    data_type: &DataType,
    nullable: bool,
    row_name: &str,
    legacy: bool,
    path: &str,
) -> Result<Value> {
    let unsupported = || {
        SluiceError::Config(format!(
            "column `{path}` has type {} which the avro format cannot hold",
            sql_type(data_type)
        ))
    };
    let base = match data_type {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("bytes"),
        DataType::Decimal128(precision, scale) if *scale >= 0 => json!({
            "type": "bytes",
            "logicalType": "decimal",
            "precision": precision,
            "scale": scale,
        }),
        DataType::Date32 => json!({"type": "int", "logicalType": "date"}),
        DataType::Time32(TimeUnit::Millisecond) => {
            json!({"type": "int", "logicalType": "time-millis"})
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            json!({"type": "long", "logicalType": "time-micros"})
        }
        DataType::Timestamp(unit @ (TimeUnit::Millisecond | TimeUnit::Microsecond), zone) => {
            let unit = if *unit == TimeUnit::Millisecond {
                "millis"
            } else {
                "micros"
            };
            let local = zone.is_none() && !legacy;
            json!({
                "type": "long",
                "logicalType": format!("{}timestamp-{unit}", if local { "local-" } else { "" }),
            })
        }
        DataType::Timestamp(_, _) => {
            return Err(SluiceError::Config(format!(
            "column `{path}` has type {}; the avro format supports timestamp precisions up to 6",
            sql_type(data_type)
        )))
        }
        DataType::List(item) => json!({
            "type": "array",
            "items": derive_type(
                item.data_type(),
                item.is_nullable(),
                row_name,
                legacy,
                &format!("{path}[]"),
            )?,
        }),
        DataType::Map(entries, _) => {
            let (key, value) = map_entry_fields(entries).ok_or_else(unsupported)?;
            if !matches!(
                key.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Err(SluiceError::Config(format!(
                    "column `{path}` has type {}; Avro maps need STRING keys",
                    sql_type(data_type)
                )));
            }
            json!({
                "type": "map",
                "values": derive_type(
                    value.data_type(),
                    value.is_nullable(),
                    row_name,
                    legacy,
                    &format!("{path}{{}}"),
                )?,
            })
        }
        DataType::Struct(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            for field in fields {
                out.push(derive_field(
                    field,
                    row_name,
                    legacy,
                    &format!("{path}.{}", field.name()),
                )?);
            }
            json!({"type": "record", "name": row_name, "fields": out})
        }
        _ => return Err(unsupported()),
    };
    Ok(if nullable {
        json!(["null", base])
    } else {
        base
    })
}

use sluice_core::table::sql_type_name as sql_type;

// ---------------------------------------------------------------------------
// Writer schemas: normalization, rendering, resolution against the table.

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The full name and namespace of a named type declared in `obj`.
fn full_name(
    obj: &Map<String, Value>,
    enclosing: Option<&str>,
) -> Option<(String, Option<String>)> {
    let name = obj.get("name")?.as_str()?;
    if let Some((namespace, _)) = name.rsplit_once('.') {
        return Some((name.to_string(), Some(namespace.to_string())));
    }
    let namespace = match obj.get("namespace") {
        Some(Value::String(ns)) if ns.is_empty() => None,
        Some(Value::String(ns)) => Some(ns.clone()),
        _ => enclosing.map(str::to_string),
    };
    let full = match &namespace {
        Some(ns) => format!("{ns}.{name}"),
        None => name.to_string(),
    };
    Some((full, namespace))
}

type Definitions<'a> = HashMap<String, (&'a Value, Option<String>)>;

fn collect_names<'a>(schema: &'a Value, namespace: Option<&str>, defs: &mut Definitions<'a>) {
    match schema {
        Value::Array(branches) => {
            for branch in branches {
                collect_names(branch, namespace, defs);
            }
        }
        Value::Object(obj) => match obj.get("type") {
            Some(Value::String(kind))
                if matches!(kind.as_str(), "record" | "error" | "enum" | "fixed") =>
            {
                let own = full_name(obj, namespace);
                let own_namespace = own.as_ref().and_then(|(_, ns)| ns.clone());
                if let Some((full, _)) = own {
                    defs.entry(full).or_insert((schema, own_namespace.clone()));
                }
                if let Some(Value::Array(fields)) = obj.get("fields") {
                    for field in fields {
                        if let Some(field_type) = field.get("type") {
                            collect_names(field_type, own_namespace.as_deref(), defs);
                        }
                    }
                }
            }
            Some(Value::String(kind)) if kind == "array" => {
                if let Some(items) = obj.get("items") {
                    collect_names(items, namespace, defs);
                }
            }
            Some(Value::String(kind)) if kind == "map" => {
                if let Some(values) = obj.get("values") {
                    collect_names(values, namespace, defs);
                }
            }
            Some(inner @ (Value::Object(_) | Value::Array(_))) => {
                collect_names(inner, namespace, defs)
            }
            _ => {}
        },
        _ => {}
    }
}

/// Rewrites a writer schema so that every named type is declared inline, at
/// each use, under a fresh name (`w0`, `w1`, ...) without namespace; the
/// original full name is kept in a `sluice.name` attribute for messages.
/// Binary layout is unchanged. Reader schemas then name their records after
/// the writer's (arrow-avro matches record names), and named references need
/// no resolution (arrow-avro does not resolve a writer reference against the
/// reader type).
struct Normalizer<'a> {
    defs: Definitions<'a>,
    stack: Vec<String>,
    next: usize,
}

fn normalize_writer(schema: &Value) -> std::result::Result<Value, String> {
    let mut defs = HashMap::new();
    collect_names(schema, None, &mut defs);
    let mut normalizer = Normalizer {
        defs,
        stack: Vec::new(),
        next: 0,
    };
    normalizer.normalize(schema, None)
}

impl<'a> Normalizer<'a> {
    fn normalize(
        &mut self,
        schema: &Value,
        namespace: Option<&str>,
    ) -> std::result::Result<Value, String> {
        match schema {
            Value::String(name) if PRIMITIVES.contains(&name.as_str()) => Ok(schema.clone()),
            Value::String(name) => self.reference(name, namespace),
            Value::Array(branches) => Ok(Value::Array(
                branches
                    .iter()
                    .map(|branch| self.normalize(branch, namespace))
                    .collect::<std::result::Result<_, _>>()?,
            )),
            Value::Object(obj) => match obj.get("type") {
                Some(Value::String(kind)) => match kind.as_str() {
                    kind if PRIMITIVES.contains(&kind) => Ok(schema.clone()),
                    "record" | "error" | "enum" | "fixed" => self.named(obj, namespace),
                    "array" | "map" => {
                        let key = if kind == "array" { "items" } else { "values" };
                        let inner = obj
                            .get(key)
                            .ok_or_else(|| format!("an Avro {kind} without '{key}'"))?;
                        let mut out = obj.clone();
                        out.insert(key.to_string(), self.normalize(inner, namespace)?);
                        Ok(Value::Object(out))
                    }
                    name => self.reference(name, namespace),
                },
                Some(inner @ (Value::Object(_) | Value::Array(_))) => {
                    self.normalize(inner, namespace)
                }
                _ => Err(format!("invalid Avro schema {}", short_json(schema))),
            },
            _ => Err(format!("invalid Avro schema {}", short_json(schema))),
        }
    }

    fn reference(
        &mut self,
        name: &str,
        namespace: Option<&str>,
    ) -> std::result::Result<Value, String> {
        let mut candidates = Vec::with_capacity(2);
        if !name.contains('.') {
            if let Some(ns) = namespace {
                candidates.push(format!("{ns}.{name}"));
            }
        }
        candidates.push(name.to_string());
        for candidate in candidates {
            if let Some((Value::Object(obj), own_namespace)) = self.defs.get(&candidate).cloned() {
                return self.named(obj, own_namespace.as_deref());
            }
        }
        Err(format!("the Avro schema uses the undefined type '{name}'"))
    }

    fn named(
        &mut self,
        obj: &Map<String, Value>,
        enclosing: Option<&str>,
    ) -> std::result::Result<Value, String> {
        let (full, own_namespace) = full_name(obj, enclosing)
            .ok_or_else(|| "a named Avro type without a name".to_string())?;
        if self.stack.contains(&full) {
            return Err(format!(
                "the Avro schema has the recursive type '{full}', which tables cannot hold"
            ));
        }
        let fresh = format!("w{}", self.next);
        self.next += 1;
        let mut out = Map::new();
        for (key, value) in obj {
            match key.as_str() {
                "name" | "namespace" | "aliases" | "doc" | "fields" => {}
                "type" if value == "error" => {
                    out.insert(key.clone(), json!("record"));
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        out.insert("name".to_string(), json!(fresh));
        out.insert("sluice.name".to_string(), json!(full));
        if let Some(fields) = obj.get("fields") {
            let Value::Array(fields) = fields else {
                return Err(format!("record '{full}' has no field list"));
            };
            self.stack.push(full.clone());
            let mut normalized = Vec::with_capacity(fields.len());
            for field in fields {
                let Value::Object(field) = field else {
                    return Err(format!("record '{full}' has an invalid field"));
                };
                let field_type = field
                    .get("type")
                    .ok_or_else(|| format!("a field of record '{full}' has no type"))?;
                let mut copy = field.clone();
                copy.remove("doc");
                copy.insert(
                    "type".to_string(),
                    self.normalize(field_type, own_namespace.as_deref())?,
                );
                normalized.push(Value::Object(copy));
            }
            self.stack.pop();
            out.insert("fields".to_string(), Value::Array(normalized));
        }
        Ok(Value::Object(out))
    }
}

fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        format!("{}...", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// One node of a normalized writer schema.
enum Node<'v> {
    Primitive(&'v str, Option<&'v Map<String, Value>>),
    Union(&'v [Value]),
    Record(&'v Map<String, Value>),
    Enum(&'v Map<String, Value>),
    Fixed(&'v Map<String, Value>),
    Array(&'v Value),
    Map(&'v Value),
}

fn node(schema: &Value) -> std::result::Result<Node<'_>, String> {
    let invalid = || format!("invalid Avro schema {}", short_json(schema));
    match schema {
        Value::String(name) if PRIMITIVES.contains(&name.as_str()) => {
            Ok(Node::Primitive(name, None))
        }
        Value::Array(branches) => Ok(Node::Union(branches)),
        Value::Object(obj) => match obj.get("type").and_then(Value::as_str) {
            Some(kind) if PRIMITIVES.contains(&kind) => Ok(Node::Primitive(kind, Some(obj))),
            Some("record") => Ok(Node::Record(obj)),
            Some("enum") => Ok(Node::Enum(obj)),
            Some("fixed") => Ok(Node::Fixed(obj)),
            Some("array") => obj.get("items").map(Node::Array).ok_or_else(invalid),
            Some("map") => obj.get("values").map(Node::Map).ok_or_else(invalid),
            _ => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

fn logical_type(attributes: Option<&Map<String, Value>>) -> Option<&str> {
    attributes?.get("logicalType")?.as_str()
}

fn type_name(obj: &Map<String, Value>) -> &str {
    obj.get("sluice.name")
        .or_else(|| obj.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
}

/// A writer type as a short text for messages.
fn render(schema: &Value) -> String {
    match node(schema) {
        Ok(Node::Primitive(kind, attributes)) => match logical_type(attributes) {
            Some("decimal") => {
                let attributes = attributes.cloned().unwrap_or_default();
                format!(
                    "{kind} (decimal({}, {}))",
                    attributes.get("precision").unwrap_or(&Value::Null),
                    attributes.get("scale").unwrap_or(&json!(0))
                )
            }
            Some(logical) => format!("{kind} ({logical})"),
            None => kind.to_string(),
        },
        Ok(Node::Union(branches)) => format!(
            "[{}]",
            branches.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        Ok(Node::Record(obj)) => format!("record {}", type_name(obj)),
        Ok(Node::Enum(obj)) => format!("enum {}", type_name(obj)),
        Ok(Node::Fixed(obj)) => format!(
            "fixed {}({})",
            type_name(obj),
            obj.get("size").unwrap_or(&Value::Null)
        ),
        Ok(Node::Array(items)) => format!("array<{}>", render(items)),
        Ok(Node::Map(values)) => format!("map<{}>", render(values)),
        Err(_) => short_json(schema),
    }
}

/// Builds the reader schema for one (normalized) writer schema: the table's
/// columns, each spelled as the Avro type arrow-avro reads from the writer's
/// type and that Arrow then casts to the column's type.
struct Tailor {
    legacy: bool,
    next: usize,
}

impl Tailor {
    fn reader_schema(
        &mut self,
        writer: &Value,
        table: &Schema,
    ) -> std::result::Result<Value, String> {
        match node(writer)? {
            Node::Record(obj) => self.record(obj, table.fields(), ""),
            _ => Err(format!(
                "the writer schema is {}, not a record",
                render(writer)
            )),
        }
    }

    fn mismatch(path: &str, data_type: &DataType, writer: &Value) -> String {
        format!(
            "field '{path}': the table type is {} but the writer schema has {}",
            sql_type(data_type),
            render(writer)
        )
    }

    /// A reader type for `writer` (which may be a union with null) read into
    /// a column of `data_type`.
    fn field_type(
        &mut self,
        writer: &Value,
        data_type: &DataType,
        nullable: bool,
        path: &str,
    ) -> std::result::Result<Value, String> {
        match node(writer)? {
            Node::Union(branches) => {
                let mut has_null = false;
                let mut others = Vec::new();
                for branch in branches {
                    match node(branch)? {
                        Node::Primitive("null", _) => has_null = true,
                        _ => others.push(branch),
                    }
                }
                match others.as_slice() {
                    [] if nullable => Ok(json!("null")),
                    [] => Err(format!(
                        "field '{path}': the table type is {} NOT NULL but the writer schema has {}",
                        sql_type(data_type),
                        render(writer)
                    )),
                    [only] => {
                        let inner = self.value_type(only, data_type, path)?;
                        // A null in a NOT NULL column fails that message only.
                        if has_null && nullable {
                            Ok(json!(["null", inner]))
                        } else {
                            Ok(inner)
                        }
                    }
                    _ => Err(format!(
                        "field '{path}': the writer schema has the union {}; the avro format reads unions of one type and null only",
                        render(writer)
                    )),
                }
            }
            Node::Primitive("null", _) if nullable => Ok(json!("null")),
            _ => self.value_type(writer, data_type, path),
        }
    }

    /// A reader type for the non-union `writer` read into `data_type`.
    fn value_type(
        &mut self,
        writer: &Value,
        data_type: &DataType,
        path: &str,
    ) -> std::result::Result<Value, String> {
        let mismatch = || Self::mismatch(path, data_type, writer);
        let written = node(writer)?;
        let reader = match (data_type, &written) {
            (DataType::Boolean, Node::Primitive("boolean", _)) => json!("boolean"),
            (DataType::Int8 | DataType::Int16 | DataType::Int32, Node::Primitive("int", _)) => {
                json!("int")
            }
            (DataType::Int64, Node::Primitive("int" | "long", _)) => json!("long"),
            (DataType::Float32, Node::Primitive("int" | "long" | "float", _)) => json!("float"),
            (DataType::Float64, Node::Primitive("int" | "long" | "float" | "double", _)) => {
                json!("double")
            }
            (
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
                Node::Primitive("string" | "bytes", _),
            ) => json!("string"),
            (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Node::Enum(_)) => {
                writer.clone()
            }
            (
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView,
                Node::Primitive("bytes" | "string", _),
            ) => json!("bytes"),
            (DataType::Binary | DataType::LargeBinary | DataType::BinaryView, Node::Fixed(obj)) => {
                let mut fixed = (*obj).clone();
                fixed.remove("logicalType");
                fixed.remove("precision");
                fixed.remove("scale");
                Value::Object(fixed)
            }
            (DataType::Decimal128(_, _), Node::Primitive("bytes", attributes))
                if logical_type(*attributes) == Some("decimal") =>
            {
                let attributes = attributes.cloned().unwrap_or_default();
                json!({
                    "type": "bytes",
                    "logicalType": "decimal",
                    "precision": attributes.get("precision").cloned().unwrap_or(Value::Null),
                    "scale": attributes.get("scale").cloned().unwrap_or(json!(0)),
                })
            }
            (DataType::Decimal128(_, _), Node::Fixed(obj))
                if obj.get("logicalType").and_then(Value::as_str) == Some("decimal") =>
            {
                writer.clone()
            }
            (DataType::Date32, Node::Primitive("int", attributes))
                if matches!(logical_type(*attributes), None | Some("date")) =>
            {
                json!({"type": "int", "logicalType": "date"})
            }
            (
                DataType::Time32(TimeUnit::Millisecond) | DataType::Time64(TimeUnit::Microsecond),
                Node::Primitive("int", attributes),
            ) if matches!(logical_type(*attributes), None | Some("time-millis")) => {
                json!({"type": "int", "logicalType": "time-millis"})
            }
            (
                DataType::Time32(TimeUnit::Millisecond) | DataType::Time64(TimeUnit::Microsecond),
                Node::Primitive("long", attributes),
            ) if logical_type(*attributes) == Some("time-micros") => {
                json!({"type": "long", "logicalType": "time-micros"})
            }
            (DataType::Timestamp(unit, zone), Node::Primitive("long", attributes)) => {
                match logical_type(*attributes) {
                    Some(
                        logical @ ("timestamp-millis"
                        | "timestamp-micros"
                        | "timestamp-nanos"
                        | "local-timestamp-millis"
                        | "local-timestamp-micros"
                        | "local-timestamp-nanos"),
                    ) => json!({"type": "long", "logicalType": logical}),
                    // A plain long holds the column's unit.
                    None => {
                        let unit = match unit {
                            TimeUnit::Second | TimeUnit::Millisecond => "millis",
                            TimeUnit::Microsecond => "micros",
                            TimeUnit::Nanosecond => "nanos",
                        };
                        let local = if zone.is_none() { "local-" } else { "" };
                        json!({"type": "long", "logicalType": format!("{local}timestamp-{unit}")})
                    }
                    Some(_) => return Err(mismatch()),
                }
            }
            (DataType::List(item), Node::Array(items)) => json!({
                "type": "array",
                "items": self.field_type(
                    items,
                    item.data_type(),
                    item.is_nullable(),
                    &format!("{path}[]"),
                )?,
            }),
            (DataType::Map(entries, _), Node::Map(values)) => {
                let (_, value) = map_entry_fields(entries).ok_or_else(mismatch)?;
                json!({
                    "type": "map",
                    "values": self.field_type(
                        values,
                        value.data_type(),
                        value.is_nullable(),
                        &format!("{path}{{}}"),
                    )?,
                })
            }
            (DataType::Struct(fields), Node::Record(obj)) => self.record(obj, fields, path)?,
            _ => return Err(mismatch()),
        };
        Ok(reader)
    }

    fn record(
        &mut self,
        writer: &Map<String, Value>,
        columns: &arrow::datatypes::Fields,
        path: &str,
    ) -> std::result::Result<Value, String> {
        let empty = Vec::new();
        let writer_fields = match writer.get("fields") {
            Some(Value::Array(fields)) => fields,
            _ => &empty,
        };
        let named =
            |field: &&Value, name: &str| field.get("name").and_then(Value::as_str) == Some(name);
        let aliased = |field: &&Value, name: &str| {
            field
                .get("aliases")
                .and_then(Value::as_array)
                .is_some_and(|aliases| aliases.iter().any(|a| a.as_str() == Some(name)))
        };
        let mut fields = Vec::with_capacity(columns.len());
        for column in columns {
            let name = column.name();
            let column_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let found = writer_fields
                .iter()
                .find(|f| named(f, name))
                .or_else(|| writer_fields.iter().find(|f| aliased(f, name)));
            match found.and_then(|f| f.get("type")) {
                Some(writer_type) => fields.push(json!({
                    "name": name,
                    "type": self.field_type(
                        writer_type,
                        column.data_type(),
                        column.is_nullable(),
                        &column_path,
                    )?,
                })),
                None if column.is_nullable() => {
                    let row_name = format!("d{}", self.next);
                    self.next += 1;
                    let derived = derive_type(
                        column.data_type(),
                        true,
                        &row_name,
                        self.legacy,
                        &column_path,
                    )
                    .map_err(|e| e.to_string())?;
                    fields.push(json!({"name": name, "type": derived, "default": null}));
                }
                None => {
                    return Err(format!(
                        "field '{column_path}': the table type is {} NOT NULL but the writer schema (record {}) has no such field",
                        sql_type(column.data_type()),
                        type_name(writer)
                    ))
                }
            }
        }
        Ok(json!({
            "type": "record",
            "name": writer.get("name").cloned().unwrap_or_else(|| json!("w")),
            "fields": fields,
        }))
    }
}

/// Checks that data written with `ours` reads correctly with `registered`:
/// the same fields in the same order with the same types (names of named
/// types aside). Both schemas must be normalized.
fn check_same_layout(
    registered: &Value,
    ours: &Value,
    path: &str,
) -> std::result::Result<(), String> {
    let differ = || {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!("field '{path}': ")
        };
        Err(format!(
            "{at}the registered schema has {} but the table writes {}",
            render(registered),
            render(ours)
        ))
    };
    let decimal = |attributes: Option<&Map<String, Value>>| {
        attributes.map(|a| {
            (
                a.get("precision").cloned(),
                a.get("scale").cloned().unwrap_or(json!(0)),
            )
        })
    };
    match (node(registered)?, node(ours)?) {
        (Node::Union(a), Node::Union(b)) if a.len() == b.len() => {
            for (x, y) in a.iter().zip(b) {
                check_same_layout(x, y, path)?;
            }
            Ok(())
        }
        (Node::Primitive(x, a), Node::Primitive(y, b))
            if x == y
                && logical_type(a) == logical_type(b)
                && (logical_type(a) != Some("decimal") || decimal(a) == decimal(b)) =>
        {
            Ok(())
        }
        (Node::Record(a), Node::Record(b)) => {
            let names = |obj: &Map<String, Value>| -> Vec<String> {
                obj.get("fields")
                    .and_then(Value::as_array)
                    .map(|fields| {
                        fields
                            .iter()
                            .map(|f| {
                                f.get("name")
                                    .and_then(Value::as_str)
                                    .unwrap_or("?")
                                    .to_string()
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (a_names, b_names) = (names(a), names(b));
            if a_names != b_names {
                let at = if path.is_empty() {
                    String::new()
                } else {
                    format!("field '{path}': ")
                };
                return Err(format!(
                    "{at}the registered schema has the fields [{}] but the table writes [{}]",
                    a_names.join(", "),
                    b_names.join(", ")
                ));
            }
            let types = |obj: &Map<String, Value>| -> Vec<Value> {
                obj.get("fields")
                    .and_then(Value::as_array)
                    .map(|fields| {
                        fields
                            .iter()
                            .map(|f| f.get("type").cloned().unwrap_or(Value::Null))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for ((name, x), y) in a_names.iter().zip(types(a)).zip(types(b)) {
                let field_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                check_same_layout(&x, &y, &field_path)?;
            }
            Ok(())
        }
        (Node::Array(x), Node::Array(y)) => check_same_layout(x, y, &format!("{path}[]")),
        (Node::Map(x), Node::Map(y)) => check_same_layout(x, y, &format!("{path}{{}}")),
        (Node::Enum(a), Node::Enum(b)) if a.get("symbols") == b.get("symbols") => Ok(()),
        (Node::Fixed(a), Node::Fixed(b))
            if a.get("size") == b.get("size")
                && a.get("logicalType") == b.get("logicalType")
                && a.get("precision") == b.get("precision")
                && a.get("scale") == b.get("scale") =>
        {
            Ok(())
        }
        _ => differ(),
    }
}

// ---------------------------------------------------------------------------
// Decoding.

/// Where the writer schema of each message comes from.
enum WriterSchemas {
    /// `avro`: every message is written with the table's derived schema.
    Derived,
    /// `avro-confluent`: the schema whose id is in the message header.
    Registry(Arc<dyn SchemaRegistry>),
}

/// An arrow-avro streaming decoder for one writer schema, fed one message at a time.
struct SchemaDecoder {
    id: u32,
    writer: String,
    reader: String,
    batch_size: usize,
    /// The Confluent-style prefix arrow-avro expects before each record.
    header: [u8; 5],
    decoder: StreamDecoder,
}

impl SchemaDecoder {
    fn new(
        id: u32,
        writer: String,
        reader: String,
        batch_size: usize,
    ) -> std::result::Result<Self, String> {
        let decoder = Self::build(id, &writer, &reader, batch_size)?;
        let mut header = [0u8; 5];
        header[1..].copy_from_slice(&id.to_be_bytes());
        Ok(SchemaDecoder {
            id,
            writer,
            reader,
            batch_size,
            header,
            decoder,
        })
    }

    fn build(
        id: u32,
        writer: &str,
        reader: &str,
        batch_size: usize,
    ) -> std::result::Result<StreamDecoder, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(Fingerprint::Id(id), AvroSchema::new(writer.to_string()))
            .map_err(|e| e.to_string())?;
        ReaderBuilder::new()
            .with_batch_size(batch_size)
            .with_reader_schema(AvroSchema::new(reader.to_string()))
            .with_writer_schema_store(store)
            .build_decoder()
            .map_err(|e| e.to_string())
    }

    /// Drops any partly decoded state.
    fn reset(&mut self) -> std::result::Result<(), String> {
        self.decoder = Self::build(self.id, &self.writer, &self.reader, self.batch_size)?;
        Ok(())
    }

    /// Decodes one record body into the current batch. On error the decoder
    /// may hold part of the record and must be [`reset`](Self::reset).
    fn feed(&mut self, body: &[u8]) -> std::result::Result<(), String> {
        let before = self.decoder.capacity();
        match self.decoder.decode(&self.header) {
            Ok(5) => {}
            Ok(n) => return Err(format!("the Avro decoder took {n} of 5 header bytes")),
            Err(e) => return Err(describe(&e)),
        }
        // A record of zero bytes (e.g. no columns) needs input to be decoded;
        // a lone 0x00 reads as the start of the next header and is left over.
        let (data, expected): (&[u8], usize) = if body.is_empty() {
            (&[0u8], 0)
        } else {
            (body, body.len())
        };
        let result = self.decoder.decode(data);
        let rows = before.saturating_sub(self.decoder.capacity());
        match result {
            Ok(consumed) if rows == 1 && consumed == expected => Ok(()),
            _ if body.is_empty() => Err("the message has no Avro record body".to_string()),
            Ok(_) if rows == 0 => Err(format!(
                "the message ends before the end of the Avro record ({} bytes)",
                body.len()
            )),
            Ok(consumed) if rows == 1 => Err(format!(
                "{} bytes are left over after the end of the Avro record",
                body.len().saturating_sub(consumed)
            )),
            Ok(_) => Err("bytes are left over after the end of the Avro record".to_string()),
            Err(_) if rows >= 1 => {
                Err("bytes are left over after the end of the Avro record".to_string())
            }
            Err(e) => Err(describe(&e)),
        }
    }
}

fn describe(error: &AvroError) -> String {
    match error {
        AvroError::EOF(_) | AvroError::NeedMoreData(_) | AvroError::NeedMoreDataRange(_) => {
            "the message ends before the end of the Avro record".to_string()
        }
        other => other.to_string(),
    }
}

/// The messages of one `decode_messages` call.
struct Input<'a, 'm> {
    source: &'a str,
    messages: &'a [Message<'m>],
    /// Bytes of header before the Avro body.
    offset: usize,
    /// The writer schema id, for messages (`avro-confluent`).
    id: Option<u32>,
}

impl Input<'_, '_> {
    fn body(&self, index: usize) -> &[u8] {
        let payload = self.messages[index].payload;
        payload.get(self.offset..).unwrap_or(&[])
    }
}

#[derive(Default)]
struct Collected {
    batches: Vec<RecordBatch>,
    origins: Vec<usize>,
}

/// Decodes `avro` and `avro-confluent` messages into rows of the table's columns.
pub struct AvroDecoder {
    schema: SchemaRef,
    table: String,
    format: &'static str,
    legacy: bool,
    policy: BadRecordPolicy,
    batch_size: usize,
    writers: WriterSchemas,
    decoders: HashMap<u32, SchemaDecoder>,
}

impl AvroDecoder {
    /// A decoder of plain `avro` messages, written with the schema derived
    /// from `schema` (the columns this format covers).
    pub fn new(
        schema: SchemaRef,
        options: AvroOptions,
        context: &MessageContext,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Self> {
        let writer = derive_avro_schema_json(&schema, options.timestamp_mapping_legacy)
            .map_err(|e| with_table(&context.table, e))?;
        let mut decoder = AvroDecoder {
            schema,
            table: context.table.clone(),
            format: "avro",
            legacy: options.timestamp_mapping_legacy,
            policy,
            batch_size: batch_size.max(1),
            writers: WriterSchemas::Derived,
            decoders: HashMap::new(),
        };
        let built = decoder.schema_decoder(0, &writer)?;
        decoder.decoders.insert(0, built);
        Ok(decoder)
    }

    /// A decoder of `avro-confluent` messages, fetching writer schemas from the
    /// registry the options name.
    pub fn confluent(
        schema: SchemaRef,
        options: AvroConfluentOptions,
        context: &MessageContext,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Self> {
        let client = options
            .client()
            .map_err(|e| with_table(&context.table, e))?;
        Self::with_registry(schema, Arc::new(client), context, policy, batch_size)
    }

    /// A decoder of `avro-confluent` messages whose writer schemas come from `registry`.
    pub fn with_registry(
        schema: SchemaRef,
        registry: Arc<dyn SchemaRegistry>,
        context: &MessageContext,
        policy: BadRecordPolicy,
        batch_size: usize,
    ) -> Result<Self> {
        // Fails early on column types Avro cannot hold.
        derive_avro_schema(&schema, true).map_err(|e| with_table(&context.table, e))?;
        Ok(AvroDecoder {
            schema,
            table: context.table.clone(),
            format: "avro-confluent",
            legacy: true,
            policy,
            batch_size: batch_size.max(1),
            writers: WriterSchemas::Registry(registry),
            decoders: HashMap::new(),
        })
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn describe_writer(&self, id: u32) -> String {
        match self.writers {
            WriterSchemas::Derived => "the table's derived Avro schema".to_string(),
            WriterSchemas::Registry(_) => format!("the writer schema with id {id}"),
        }
    }

    /// Resolves the writer schema `writer` (JSON text) against the table.
    fn schema_decoder(&self, id: u32, writer: &str) -> Result<SchemaDecoder> {
        let what = self.describe_writer(id);
        let table = &self.table;
        let parsed: Value = serde_json::from_str(writer).map_err(|e| {
            SluiceError::Format(format!("table `{table}`: {what} is not valid JSON: {e}"))
        })?;
        let normalized = normalize_writer(&parsed)
            .map_err(|e| SluiceError::Format(format!("table `{table}`: {what}: {e}")))?;
        let reader = Tailor {
            legacy: self.legacy,
            next: 0,
        }
        .reader_schema(&normalized, &self.schema)
        .map_err(|e| {
            SluiceError::Format(format!(
                "table `{table}`: {what} does not fit the table's columns: {e}"
            ))
        })?;
        SchemaDecoder::new(
            id,
            normalized.to_string(),
            reader.to_string(),
            self.batch_size,
        )
        .map_err(|e| {
            SluiceError::Format(format!(
                "table `{table}`: cannot read Avro written with {what}: {e}"
            ))
        })
    }

    /// The schema id and header length of a payload, or why it is unusable.
    fn frame(&self, payload: &[u8]) -> std::result::Result<u32, String> {
        match self.writers {
            WriterSchemas::Derived => Ok(0),
            WriterSchemas::Registry(_) => match payload {
                [] => Err("empty message; the Confluent wire format needs a 0x00 magic byte and a 4-byte schema id".to_string()),
                [magic, ..] if *magic != 0 => Err(format!(
                    "unknown magic byte 0x{magic:02x}; the Confluent wire format starts with 0x00"
                )),
                [_, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => Err(format!(
                    "a message of {} bytes is too short for the Confluent header (a 0x00 magic byte and a 4-byte schema id)",
                    payload.len()
                )),
            },
        }
    }

    fn reject(&self, input: &Input<'_, '_>, index: usize, reason: &str) -> Result<()> {
        let message = &input.messages[index];
        let reason = match input.id {
            Some(id) => format!(
                "invalid {} message: {reason} (writer schema id {id})",
                self.format
            ),
            None => format!("invalid {} message: {reason}", self.format),
        };
        self.policy
            .reject(input.source, message.position, message.payload, &reason)
    }

    fn reset(&self, decoder: &mut SchemaDecoder) -> Result<()> {
        decoder.reset().map_err(|e| {
            SluiceError::Format(format!(
                "table `{}`: rebuilding the Avro decoder failed: {e}",
                self.table
            ))
        })
    }

    /// Turns a decoded batch into the table's types.
    fn convert(&self, batch: RecordBatch) -> std::result::Result<RecordBatch, String> {
        if self.schema.fields().is_empty() {
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            return RecordBatch::try_new_with_options(self.schema.clone(), vec![], &options)
                .map_err(|e| e.to_string());
        }
        let decoded: ArrayRef = Arc::new(StructArray::from(batch));
        let target = DataType::Struct(self.schema.fields().clone());
        let options = CastOptions {
            safe: true,
            ..Default::default()
        };
        let cast = cast_with_options(&decoded, &target, &options).map_err(|e| e.to_string())?;
        let columns = cast.as_struct().columns().to_vec();
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }

    /// Flushes the rows of `rows` (all fed successfully) into `out`; if the
    /// batch cannot be built, finds the bad messages one by one.
    fn flush_rows(
        &self,
        decoder: &mut SchemaDecoder,
        input: &Input<'_, '_>,
        rows: &[usize],
        out: &mut Collected,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let flushed = decoder
            .decoder
            .flush()
            .map_err(|e| describe(&e))
            .and_then(|batch| batch.ok_or_else(|| "no rows were decoded".to_string()))
            .and_then(|batch| self.convert(batch));
        match flushed {
            Ok(batch) if batch.num_rows() == rows.len() => {
                out.origins.extend_from_slice(rows);
                out.batches.push(batch);
                Ok(())
            }
            _ => {
                self.reset(decoder)?;
                self.one_by_one(decoder, input, rows, out)
            }
        }
    }

    /// Decodes each message of `rows` by itself, rejecting the bad ones.
    fn one_by_one(
        &self,
        decoder: &mut SchemaDecoder,
        input: &Input<'_, '_>,
        rows: &[usize],
        out: &mut Collected,
    ) -> Result<()> {
        for &index in rows {
            let result = decoder
                .feed(input.body(index))
                .and_then(|()| decoder.decoder.flush().map_err(|e| describe(&e)))
                .and_then(|batch| batch.ok_or_else(|| "no row was decoded".to_string()))
                .and_then(|batch| self.convert(batch));
            match result {
                Ok(batch) if batch.num_rows() == 1 => {
                    out.origins.push(index);
                    out.batches.push(batch);
                }
                Ok(batch) => {
                    self.reset(decoder)?;
                    self.reject(
                        input,
                        index,
                        &format!("the message decoded into {} rows", batch.num_rows()),
                    )?;
                }
                Err(reason) => {
                    self.reset(decoder)?;
                    self.reject(input, index, &reason)?;
                }
            }
        }
        Ok(())
    }

    /// Decodes a run of messages written with the same schema.
    fn decode_run(
        &self,
        decoder: &mut SchemaDecoder,
        input: &Input<'_, '_>,
        run: &[usize],
        out: &mut Collected,
    ) -> Result<()> {
        let mut start = 0;
        for k in 0..run.len() {
            if decoder.decoder.batch_is_full() {
                self.flush_rows(decoder, input, &run[start..k], out)?;
                start = k;
            }
            let index = run[k];
            if let Err(reason) = decoder.feed(input.body(index)) {
                // The decoder may hold part of this record: rebuild it and
                // decode the good messages before it again.
                self.reset(decoder)?;
                let refed = run[start..k]
                    .iter()
                    .all(|&j| decoder.feed(input.body(j)).is_ok());
                if refed {
                    self.flush_rows(decoder, input, &run[start..k], out)?;
                } else {
                    self.reset(decoder)?;
                    self.one_by_one(decoder, input, &run[start..k], out)?;
                }
                self.reject(input, index, &reason)?;
                start = k + 1;
            }
        }
        self.flush_rows(decoder, input, &run[start..], out)
    }

    fn decode_with(
        &mut self,
        id: u32,
        input: &Input<'_, '_>,
        run: &[usize],
        out: &mut Collected,
    ) -> Result<()> {
        let Some(mut decoder) = self.decoders.remove(&id) else {
            return Err(SluiceError::Format(format!(
                "table `{}`: no Avro decoder for schema id {id}",
                self.table
            )));
        };
        let result = self.decode_run(&mut decoder, input, run, out);
        if result.is_err() {
            // Leave no partial state behind for the next call.
            let _ = decoder.reset();
        }
        self.decoders.insert(id, decoder);
        result
    }

    /// Fetches and resolves the writer schemas of `ids` not seen before;
    /// returns why each unusable id cannot be used.
    async fn load_schemas(&mut self, ids: Vec<u32>) -> Result<HashMap<u32, String>> {
        let mut unusable = HashMap::new();
        let WriterSchemas::Registry(registry) = &self.writers else {
            return Ok(unusable);
        };
        let registry = Arc::clone(registry);
        for id in ids {
            if self.decoders.contains_key(&id) {
                continue;
            }
            match registry.schema_by_id(id).await? {
                None => {
                    unusable.insert(id, format!("schema id {id} is not in the schema registry"));
                }
                Some(found) if !found.is_avro() => {
                    unusable.insert(
                        id,
                        format!(
                            "schema id {id} is a {} schema, not Avro",
                            found.schema_type.as_deref().unwrap_or("non-Avro")
                        ),
                    );
                }
                Some(found) => {
                    let decoder = self.schema_decoder(id, &found.schema)?;
                    self.decoders.insert(id, decoder);
                }
            }
        }
        Ok(unusable)
    }
}

#[async_trait]
impl MessageDecoder for AvroDecoder {
    async fn decode_messages(
        &mut self,
        source: &str,
        messages: &[Message<'_>],
    ) -> Result<Option<DecodedMessages>> {
        if messages.is_empty() {
            return Ok(None);
        }
        let framed: Vec<std::result::Result<u32, String>> =
            messages.iter().map(|m| self.frame(m.payload)).collect();
        let mut ids: Vec<u32> = framed
            .iter()
            .filter_map(|f| f.as_ref().ok().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let unusable = self.load_schemas(ids).await?;
        let confluent = matches!(self.writers, WriterSchemas::Registry(_));
        let offset = if confluent { 5 } else { 0 };
        let mut out = Collected::default();
        let mut run: Vec<usize> = Vec::new();
        let mut run_id: Option<u32> = None;
        let no_id = Input {
            source,
            messages,
            offset,
            id: None,
        };
        for (index, frame) in framed.iter().enumerate() {
            let id = match frame {
                Ok(id) => *id,
                Err(reason) => {
                    self.reject(&no_id, index, reason)?;
                    continue;
                }
            };
            if let Some(reason) = unusable.get(&id) {
                self.reject(&no_id, index, reason)?;
                continue;
            }
            if run_id != Some(id) {
                if let Some(previous) = run_id {
                    let input = Input {
                        id: confluent.then_some(previous),
                        ..no_id
                    };
                    self.decode_with(previous, &input, &run, &mut out)?;
                }
                run.clear();
                run_id = Some(id);
            }
            run.push(index);
        }
        if let Some(id) = run_id {
            let input = Input {
                id: confluent.then_some(id),
                ..no_id
            };
            self.decode_with(id, &input, &run, &mut out)?;
        }
        Ok(
            concat(&self.schema, out.batches)?.map(|data| DecodedMessages {
                batch: ChangeBatch::inserts(data),
                origins: out.origins,
            }),
        )
    }
}

fn with_table(table: &str, error: SluiceError) -> SluiceError {
    match error {
        SluiceError::Config(message) => SluiceError::Config(format!("table `{table}`: {message}")),
        other => other,
    }
}

// ---------------------------------------------------------------------------
// Encoding.

/// Where `avro-confluent` registers or looks up its schema id.
struct RegistryTarget {
    registry: Arc<dyn SchemaRegistry>,
    subject: String,
    auto_register: bool,
    id: Option<u32>,
}

impl RegistryTarget {
    async fn id(&mut self, avro_schema: &str, table: &str) -> Result<u32> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let subject = &self.subject;
        let id = if self.auto_register {
            self.registry.register(subject, avro_schema).await?
        } else {
            let latest = self.registry.latest(subject).await?.ok_or_else(|| {
                SluiceError::Config(format!(
                    "table `{table}`: subject '{subject}' has no schema in the registry and 'avro-confluent.auto.register.schemas' is false"
                ))
            })?;
            if !latest.is_avro() {
                return Err(SluiceError::Config(format!(
                    "table `{table}`: the latest schema of subject '{subject}' (id {}) is not an Avro schema",
                    latest.id
                )));
            }
            let mismatch = |e: String| {
                SluiceError::Config(format!(
                    "table `{table}`: the latest schema of subject '{subject}' (id {}) does not match the table's columns: {e}",
                    latest.id
                ))
            };
            let registered: Value = serde_json::from_str(&latest.schema)
                .map_err(|e| mismatch(format!("invalid JSON: {e}")))?;
            let registered = normalize_writer(&registered).map_err(mismatch)?;
            let ours: Value = serde_json::from_str(avro_schema)
                .map_err(|e| mismatch(format!("invalid JSON: {e}")))?;
            let ours = normalize_writer(&ours).map_err(mismatch)?;
            check_same_layout(&registered, &ours, "").map_err(mismatch)?;
            latest.id
        };
        self.id = Some(id);
        Ok(id)
    }
}

/// Encodes rows as `avro` or `avro-confluent` messages, with the schema
/// derived from the table's columns.
pub struct AvroEncoder {
    schema: SchemaRef,
    table: String,
    format: &'static str,
    avro_schema: String,
    encoder: RowEncoder,
    registry: Option<RegistryTarget>,
}

impl AvroEncoder {
    /// An encoder of plain `avro` messages for rows of `schema`.
    pub fn new(schema: SchemaRef, options: AvroOptions, context: &MessageContext) -> Result<Self> {
        Self::build(
            schema,
            options.timestamp_mapping_legacy,
            context,
            "avro",
            None,
        )
    }

    /// An encoder of `avro-confluent` messages registering (or looking up) the
    /// schema in the registry the options name.
    pub fn confluent(
        schema: SchemaRef,
        options: AvroConfluentOptions,
        context: &MessageContext,
    ) -> Result<Self> {
        let client = options
            .client()
            .map_err(|e| with_table(&context.table, e))?;
        let subject = options.subject(context);
        Self::with_registry(
            schema,
            Arc::new(client),
            subject,
            options.auto_register_schemas,
            context,
        )
    }

    /// An encoder of `avro-confluent` messages using `registry`: with
    /// `auto_register` the derived schema is registered under `subject`,
    /// otherwise the subject's latest schema is used (it must match the table).
    pub fn with_registry(
        schema: SchemaRef,
        registry: Arc<dyn SchemaRegistry>,
        subject: String,
        auto_register: bool,
        context: &MessageContext,
    ) -> Result<Self> {
        Self::build(
            schema,
            true,
            context,
            "avro-confluent",
            Some(RegistryTarget {
                registry,
                subject,
                auto_register,
                id: None,
            }),
        )
    }

    fn build(
        schema: SchemaRef,
        legacy: bool,
        context: &MessageContext,
        format: &'static str,
        registry: Option<RegistryTarget>,
    ) -> Result<Self> {
        let avro_schema =
            derive_avro_schema_json(&schema, legacy).map_err(|e| with_table(&context.table, e))?;
        let mut metadata = schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), avro_schema.clone());
        let with_avro = Schema::new_with_metadata(schema.fields().clone(), metadata);
        let encoder = WriterBuilder::new(with_avro)
            .build_encoder::<AvroBinaryFormat>()
            .map_err(|e| {
                SluiceError::Config(format!(
                    "table `{}`: cannot write the columns as Avro: {e}",
                    context.table
                ))
            })?;
        Ok(AvroEncoder {
            schema,
            table: context.table.clone(),
            format,
            avro_schema,
            encoder,
            registry,
        })
    }

    /// The Avro schema the messages are written with (JSON text).
    pub fn avro_schema(&self) -> &str {
        &self.avro_schema
    }

    /// The registry id the messages are framed with (registering or looking
    /// it up on first use); `None` for plain `avro`.
    pub async fn schema_id(&mut self) -> Result<Option<u32>> {
        match &mut self.registry {
            Some(target) => Ok(Some(target.id(&self.avro_schema, &self.table).await?)),
            None => Ok(None),
        }
    }

    /// `batch` with the encoder's column types (casting columns that differ).
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.schema().fields() == self.schema.fields() {
            return Ok(batch.clone());
        }
        if batch.num_columns() != self.schema.fields().len() {
            return Err(SluiceError::Format(format!(
                "table `{}`: the {} encoder expects {} columns, got {}",
                self.table,
                self.format,
                self.schema.fields().len(),
                batch.num_columns()
            )));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    arrow::compute::cast(column, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl MessageEncoder for AvroEncoder {
    async fn encode_messages(&mut self, batch: &ChangeBatch, out: &mut Vec<Vec<u8>>) -> Result<()> {
        require_inserts(batch, self.format)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let id = self.schema_id().await?;
        let data = self.conform(&batch.data)?;
        if let Err(e) = self.encoder.encode(&data) {
            // Drop any rows encoded before the failure.
            let _ = self.encoder.flush();
            return Err(SluiceError::Format(format!(
                "table `{}`: cannot encode rows as {}: {e}",
                self.table, self.format
            )));
        }
        let rows = self.encoder.flush();
        out.reserve(rows.len());
        for row in rows.iter() {
            let mut payload = Vec::with_capacity(row.len() + 5);
            if let Some(id) = id {
                payload.push(0);
                payload.extend_from_slice(&id.to_be_bytes());
            }
            payload.extend_from_slice(&row);
            out.push(payload);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::Ordering;

    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
        Int16Array, Int32Array, Int32Builder, Int64Array, Int64Builder, Int8Builder, ListArray,
        ListBuilder, MapBuilder, MapFieldNames, StringArray, StringBuilder, Time32MillisecondArray,
        Time64MicrosecondArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    };
    use arrow::buffer::{NullBuffer, OffsetBuffer};
    use arrow::datatypes::Fields;

    use super::*;
    use crate::formats::schema_registry::InMemorySchemaRegistry;

    fn context() -> MessageContext {
        MessageContext {
            table: "t".to_string(),
            topic: "orders".to_string(),
            is_key: false,
        }
    }

    fn options(pairs: &[(&str, &str)]) -> Options {
        let values: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::new("table `t`", values)
    }

    fn skip_policy() -> BadRecordPolicy {
        BadRecordPolicy::from_options("t", &options(&[("errors", "skip")]), false, Path::new("."))
            .unwrap()
    }

    fn messages(payloads: &[Vec<u8>]) -> Vec<Message<'_>> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| Message {
                position: 100 + i as u64,
                payload,
            })
            .collect()
    }

    /// Avro's zig-zag varint.
    fn long(out: &mut Vec<u8>, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }

    fn string(out: &mut Vec<u8>, text: &str) {
        long(out, text.len() as i64);
        out.extend_from_slice(text.as_bytes());
    }

    fn confluent(id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn nullable_list(values: Vec<Option<Vec<Option<i32>>>>) -> ListArray {
        let mut builder = ListBuilder::new(Int32Builder::new());
        for value in values {
            match value {
                Some(items) => {
                    for item in items {
                        builder.values().append_option(item);
                    }
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        builder.finish()
    }

    /// Every type of the Flink mapping, with nulls, nested rows, arrays and maps.
    fn all_types_batch() -> RecordBatch {
        let utc: Option<Arc<str>> = Some("UTC".into());
        let tags = nullable_list(vec![Some(vec![Some(1), None, Some(3)]), None, Some(vec![])]);
        let mut map = MapBuilder::new(
            Some(MapFieldNames {
                entry: "entries".into(),
                key: "key".into(),
                value: "value".into(),
            }),
            StringBuilder::new(),
            Int64Builder::new(),
        );
        map.keys().append_value("a");
        map.values().append_value(1);
        map.keys().append_value("b");
        map.values().append_null();
        map.append(true).unwrap();
        map.append(false).unwrap();
        map.append(true).unwrap();
        let attrs = map.finish();

        let inner_fields = Fields::from(vec![Field::new("x", DataType::Float64, true)]);
        let inner = StructArray::try_new(
            inner_fields.clone(),
            vec![Arc::new(Float64Array::from(vec![
                Some(0.5),
                None,
                Some(-2.0),
            ]))],
            Some(NullBuffer::from(vec![true, true, false])),
        )
        .unwrap();
        let row_fields = Fields::from(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Utf8, true),
            Field::new("inner", DataType::Struct(inner_fields), true),
        ]);
        let row = StructArray::try_new(
            row_fields,
            vec![
                Arc::new(Int32Array::from(vec![10, 0, 30])),
                Arc::new(StringArray::from(vec![Some("x"), None, None])),
                Arc::new(inner),
            ],
            Some(NullBuffer::from(vec![true, false, true])),
        )
        .unwrap();

        let item_fields = Fields::from(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int32, true),
        ]);
        let items = StructArray::try_new(
            item_fields.clone(),
            vec![
                Arc::new(StringArray::from(vec!["p", "q", "r"])),
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
            ],
            None,
        )
        .unwrap();
        let rows = ListArray::try_new(
            Arc::new(Field::new("item", DataType::Struct(item_fields), false)),
            OffsetBuffer::new(vec![0, 2, 2, 3].into()),
            Arc::new(items),
            Some(NullBuffer::from(vec![true, true, true])),
        )
        .unwrap();

        let mut tiny = Int8Builder::new();
        tiny.append_value(-128);
        tiny.append_null();
        tiny.append_value(127);
        let columns: Vec<(&str, ArrayRef, bool)> = vec![
            (
                "flag",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
                true,
            ),
            ("tiny", Arc::new(tiny.finish()), true),
            (
                "small",
                Arc::new(Int16Array::from(vec![Some(-300), None, Some(300)])),
                true,
            ),
            ("id", Arc::new(Int32Array::from(vec![1, 2, 3])), false),
            (
                "big",
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(i64::MAX)])),
                true,
            ),
            (
                "real",
                Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.25)])),
                true,
            ),
            (
                "dbl",
                Arc::new(Float64Array::from(vec![Some(1e300), None, Some(-3.5)])),
                true,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("héllo"), None, Some("")])),
                true,
            ),
            (
                "raw",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x00\xff"[..]),
                    None,
                    Some(&b""[..]),
                ])),
                true,
            ),
            (
                "price",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-9_999_999_999)])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                true,
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![Some(19_000), None, Some(-1)])),
                true,
            ),
            (
                "at",
                Arc::new(Time32MillisecondArray::from(vec![
                    Some(1_000),
                    None,
                    Some(86_399_999),
                ])),
                true,
            ),
            (
                "at6",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(1),
                    None,
                    Some(86_399_999_999),
                ])),
                true,
            ),
            (
                "ts3",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_700_000_000_123),
                    None,
                    Some(-1),
                ])),
                true,
            ),
            (
                "ts6",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(1_700_000_000_123_456),
                    None,
                    Some(0),
                ])),
                true,
            ),
            (
                "ltz3",
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(5), None, Some(6)])
                        .with_timezone_opt(utc.clone()),
                ),
                true,
            ),
            (
                "ltz6",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(7), Some(8), None])
                        .with_timezone_opt(utc),
                ),
                true,
            ),
            ("tags", Arc::new(tags), true),
            ("attrs", Arc::new(attrs), true),
            ("row", Arc::new(row), true),
            ("rows", Arc::new(rows), false),
        ];
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, array, _)| array).collect(),
        )
        .unwrap()
    }

    async fn round_trip(
        batch: &RecordBatch,
        options: AvroOptions,
    ) -> (Vec<Vec<u8>>, DecodedMessages) {
        let schema = batch.schema();
        let mut encoder = AvroEncoder::new(schema.clone(), options.clone(), &context()).unwrap();
        let mut payloads = Vec::new();
        encoder
            .encode_messages(&ChangeBatch::inserts(batch.clone()), &mut payloads)
            .await
            .unwrap();
        assert_eq!(payloads.len(), batch.num_rows());
        let mut decoder =
            AvroDecoder::new(schema, options, &context(), BadRecordPolicy::fail("t"), 2).unwrap();
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        (payloads, decoded)
    }

    #[tokio::test]
    async fn every_type_round_trips() {
        let batch = all_types_batch();
        for legacy in [true, false] {
            let options = AvroOptions {
                timestamp_mapping_legacy: legacy,
            };
            let (_, decoded) = round_trip(&batch, options).await;
            assert_eq!(decoded.batch.data, batch);
            assert!(decoded.batch.kinds.is_none());
            assert_eq!(decoded.origins, vec![0, 1, 2]);
        }
    }

    #[tokio::test]
    async fn confluent_framing_round_trips_through_a_registry() {
        let batch = all_types_batch();
        let schema = batch.schema();
        let registry = Arc::new(InMemorySchemaRegistry::new());
        registry.add("unrelated", "\"string\"", None);
        let mut encoder = AvroEncoder::with_registry(
            schema.clone(),
            registry.clone(),
            "orders-value".to_string(),
            true,
            &context(),
        )
        .unwrap();
        let mut payloads = Vec::new();
        encoder
            .encode_messages(&ChangeBatch::inserts(batch.clone()), &mut payloads)
            .await
            .unwrap();
        for payload in &payloads {
            assert_eq!(&payload[..5], &[0, 0, 0, 0, 2]);
        }
        let latest = registry.latest("orders-value").await.unwrap().unwrap();
        assert_eq!(latest.id, 2);
        assert_eq!(latest.schema, encoder.avro_schema());

        let mut decoder = AvroDecoder::with_registry(
            schema,
            registry,
            &context(),
            BadRecordPolicy::fail("t"),
            1024,
        )
        .unwrap();
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decoded.batch.data, batch);
        assert_eq!(decoded.origins, vec![0, 1, 2]);
    }

    #[test]
    fn derived_schema_follows_flinks_mapping() {
        let utc: Option<Arc<str>> = Some("UTC".into());
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
            Field::new(
                "addr",
                DataType::Struct(Fields::from(vec![Field::new(
                    "city",
                    DataType::Utf8,
                    false,
                )])),
                true,
            ),
            Field::new("price", DataType::Decimal128(10, 2), false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new(
                "ltz",
                DataType::Timestamp(TimeUnit::Microsecond, utc),
                false,
            ),
            Field::new("day", DataType::Date32, false),
            Field::new("at", DataType::Time32(TimeUnit::Millisecond), false),
        ]);
        let expected = json!({
            "type": "record",
            "name": "record",
            "namespace": "org.apache.flink.avro.generated",
            "fields": [
                {"name": "id", "type": "long"},
                {"name": "name", "type": ["null", "string"], "default": null},
                {"name": "tags", "type": ["null", {"type": "array", "items": ["null", "string"]}], "default": null},
                {"name": "addr", "type": ["null", {"type": "record", "name": "record_addr", "fields": [
                    {"name": "city", "type": "string"}
                ]}], "default": null},
                {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
                {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
                {"name": "ltz", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
            ]
        });
        assert_eq!(derive_avro_schema(&schema, true).unwrap(), expected);
        let modern = derive_avro_schema(&schema, false).unwrap();
        assert_eq!(
            modern["fields"][5]["type"][1]["logicalType"],
            json!("local-timestamp-millis")
        );
        assert_eq!(
            modern["fields"][6]["type"]["logicalType"],
            json!("timestamp-micros")
        );
        let text = derive_avro_schema_json(&schema, true).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);

        let bad = Schema::new(vec![Field::new(
            "m",
            DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Int32, false),
                        Field::new("value", DataType::Int32, true),
                    ])),
                    false,
                )),
                false,
            ),
            true,
        )]);
        let error = derive_avro_schema(&bad, true).unwrap_err().to_string();
        assert!(
            error.contains("column `m`") && error.contains("STRING keys"),
            "{error}"
        );
        let nanos = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]);
        let error = derive_avro_schema(&nanos, true).unwrap_err().to_string();
        assert!(error.contains("TIMESTAMP(9)"), "{error}");
        let odd = Schema::new(vec![Field::new("my col", DataType::Int32, true)]);
        assert!(derive_avro_schema(&odd, true).is_err());
    }

    fn two_column_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn two_column_batch(ids: &[i64]) -> RecordBatch {
        let names: Vec<String> = ids.iter().map(|id| format!("n{id}")).collect();
        RecordBatch::try_new(
            two_column_schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn bad_messages_are_skipped_and_good_ones_kept() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let mut encoder = AvroEncoder::with_registry(
            two_column_schema(),
            registry.clone(),
            "orders-value".into(),
            true,
            &context(),
        )
        .unwrap();
        let mut good = Vec::new();
        encoder
            .encode_messages(
                &ChangeBatch::inserts(two_column_batch(&[1, 2, 3, 4])),
                &mut good,
            )
            .await
            .unwrap();
        let id = encoder.schema_id().await.unwrap().unwrap();
        let mut trailing = good[2].clone();
        trailing.extend_from_slice(&[0x05, 0x06]);
        let mut unknown = good[0].clone();
        unknown[1..5].copy_from_slice(&99u32.to_be_bytes());
        let mut bad_magic = good[1].clone();
        bad_magic[0] = 1;
        let mut bad_utf8 = Vec::new();
        long(&mut bad_utf8, 9);
        long(&mut bad_utf8, 1);
        long(&mut bad_utf8, 2);
        bad_utf8.extend_from_slice(&[0xff, 0xfe]);
        let payloads = vec![
            good[0].clone(),                       // 0 good
            good[1][..good[1].len() - 2].to_vec(), // 1 truncated
            good[1].clone(),                       // 2 good
            bad_magic,                             // 3 magic byte 1
            trailing,                              // 4 bytes left over
            good[2].clone(),                       // 5 good
            unknown,                               // 6 unknown schema id
            vec![0, 0],                            // 7 too short
            confluent(id, &bad_utf8),              // 8 invalid UTF-8
            good[3].clone(),                       // 9 good
            vec![],                                // 10 empty
        ];
        for batch_size in [1, 2, 1024] {
            let policy = skip_policy();
            let mut decoder = AvroDecoder::with_registry(
                two_column_schema(),
                registry.clone(),
                &context(),
                policy.clone(),
                batch_size,
            )
            .unwrap();
            let decoded = decoder
                .decode_messages("orders[0]", &messages(&payloads))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(decoded.origins, vec![0, 2, 5, 9], "batch size {batch_size}");
            assert_eq!(decoded.batch.data, two_column_batch(&[1, 2, 3, 4]));
            assert_eq!(policy.counters().skipped.load(Ordering::Relaxed), 7);
            // The decoder is still healthy for the next call.
            let again = decoder
                .decode_messages("orders[0]", &messages(&good))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.batch.data, two_column_batch(&[1, 2, 3, 4]));
        }
    }

    #[tokio::test]
    async fn bad_messages_fail_by_default_naming_the_position() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let mut decoder = AvroDecoder::with_registry(
            two_column_schema(),
            registry,
            &context(),
            BadRecordPolicy::fail("t"),
            16,
        )
        .unwrap();
        let payloads = vec![vec![7, 1, 2, 3, 4, 5]];
        let error = decoder
            .decode_messages("orders[3]", &messages(&payloads))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("orders[3]:100"), "{error}");
        assert!(error.contains("magic byte 0x07"), "{error}");

        let registry = Arc::new(InMemorySchemaRegistry::new());
        let id = registry.add("x", "\"string\"", Some("PROTOBUF"));
        let mut decoder = AvroDecoder::with_registry(
            two_column_schema(),
            registry,
            &context(),
            BadRecordPolicy::fail("t"),
            16,
        )
        .unwrap();
        let payloads = vec![confluent(id, &[])];
        let error = decoder
            .decode_messages("orders[3]", &messages(&payloads))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("PROTOBUF schema"), "{error}");
    }

    #[tokio::test]
    async fn plain_avro_rejects_truncated_and_overlong_bodies() {
        let mut encoder =
            AvroEncoder::new(two_column_schema(), AvroOptions::default(), &context()).unwrap();
        let mut good = Vec::new();
        encoder
            .encode_messages(&ChangeBatch::inserts(two_column_batch(&[5, 6])), &mut good)
            .await
            .unwrap();
        let mut long_one = good[1].clone();
        long_one.push(0);
        let payloads = vec![
            good[0][..1].to_vec(),
            good[0].clone(),
            long_one,
            vec![],
            good[1].clone(),
        ];
        let policy = skip_policy();
        let mut decoder = AvroDecoder::new(
            two_column_schema(),
            AvroOptions::default(),
            &context(),
            policy.clone(),
            8,
        )
        .unwrap();
        let decoded = decoder
            .decode_messages("orders[1]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decoded.origins, vec![1, 4]);
        assert_eq!(decoded.batch.data, two_column_batch(&[5, 6]));
        assert_eq!(policy.counters().skipped.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_type_mismatch_names_the_field_and_both_types() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let id = registry.add(
            "orders-value",
            r#"{"type":"record","name":"User","namespace":"com.acme","fields":[
                {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#,
            None,
        );
        let table = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut decoder =
            AvroDecoder::with_registry(table, registry.clone(), &context(), skip_policy(), 16)
                .unwrap();
        let mut body = Vec::new();
        long(&mut body, 1);
        string(&mut body, "a");
        let payloads = vec![confluent(id, &body)];
        let error = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("table `t`"), "{error}");
        assert!(error.contains(&format!("id {id}")), "{error}");
        assert!(error.contains("field 'id'"), "{error}");
        assert!(error.contains("INT") && error.contains("long"), "{error}");

        let table = Arc::new(Schema::new(vec![Field::new("age", DataType::Int32, false)]));
        let mut decoder =
            AvroDecoder::with_registry(table, registry, &context(), skip_policy(), 16).unwrap();
        let error = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("field 'age'"), "{error}");
        assert!(error.contains("INT NOT NULL"), "{error}");
        assert!(error.contains("com.acme.User"), "{error}");
    }

    #[tokio::test]
    async fn writer_schemas_resolve_against_the_table() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let writer = r#"{"type":"record","name":"Order","namespace":"com.acme","fields":[
            {"name":"extra","type":{"type":"array","items":"string"}},
            {"name":"amount","type":"int"},
            {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","DONE"]}},
            {"name":"customer","type":["null",{"type":"record","name":"Customer","fields":[
                {"name":"name","type":"string"},{"name":"age","type":"int"}]}],"default":null},
            {"name":"backup","type":["Customer","null"]},
            {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":1}},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"f","type":"float"},
            {"name":"note","type":["null","bytes"]}
        ]}"#;
        let id = registry.add("orders-value", writer, None);
        let customer = Fields::from(vec![
            Field::new("age", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]);
        let backup = Fields::from(vec![Field::new("age", DataType::Int64, true)]);
        let table = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Int64, false),
            Field::new("status", DataType::Utf8, true),
            Field::new("customer", DataType::Struct(customer.clone()), true),
            Field::new("backup", DataType::Struct(backup.clone()), true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("f", DataType::Float64, true),
            Field::new("note", DataType::Utf8, true),
            Field::new("missing", DataType::Utf8, true),
        ]));
        let mut first = Vec::new();
        long(&mut first, 1); // extra: one block of one item
        string(&mut first, "x");
        long(&mut first, 0);
        long(&mut first, 7); // amount
        long(&mut first, 1); // status DONE
        long(&mut first, 1); // customer: branch 1
        string(&mut first, "ann");
        long(&mut first, 30);
        long(&mut first, 0); // backup: branch 0 (Customer)
        string(&mut first, "bob");
        long(&mut first, 40);
        long(&mut first, 1); // price: 12.5 as unscaled 125
        first.push(125);
        long(&mut first, 1_700_000_000_123);
        first.extend_from_slice(&1.5f32.to_le_bytes());
        long(&mut first, 1); // note: bytes "hi"
        string(&mut first, "hi");
        let mut second = Vec::new();
        long(&mut second, 0); // extra: empty
        long(&mut second, -3);
        long(&mut second, 0); // NEW
        long(&mut second, 0); // customer null
        long(&mut second, 1); // backup null
        long(&mut second, 1);
        second.push(0xff); // -0.1
        long(&mut second, 0);
        second.extend_from_slice(&(-2.0f32).to_le_bytes());
        long(&mut second, 0); // note null
        let payloads = vec![confluent(id, &first), confluent(id, &second)];
        let mut decoder = AvroDecoder::with_registry(
            table.clone(),
            registry,
            &context(),
            BadRecordPolicy::fail("t"),
            16,
        )
        .unwrap();
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        let expected = RecordBatch::try_new(
            table,
            vec![
                Arc::new(Int64Array::from(vec![7, -3])),
                Arc::new(StringArray::from(vec!["DONE", "NEW"])),
                Arc::new(
                    StructArray::try_new(
                        customer,
                        vec![
                            Arc::new(Int32Array::from(vec![Some(30), None])),
                            Arc::new(StringArray::from(vec![Some("ann"), None])),
                        ],
                        Some(NullBuffer::from(vec![true, false])),
                    )
                    .unwrap(),
                ),
                Arc::new(
                    StructArray::try_new(
                        backup,
                        vec![Arc::new(Int64Array::from(vec![Some(40), None]))],
                        Some(NullBuffer::from(vec![true, false])),
                    )
                    .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from(vec![1250, -10])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    1_700_000_000_123_000,
                    0,
                ])),
                Arc::new(Float64Array::from(vec![1.5, -2.0])),
                Arc::new(StringArray::from(vec![Some("hi"), None])),
                Arc::new(StringArray::from(vec![None::<&str>, None])),
            ],
        )
        .unwrap();
        assert_eq!(decoded.batch.data, expected);
    }

    #[tokio::test]
    async fn messages_of_several_writer_schemas_keep_their_order() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let old = registry.add(
            "orders-value",
            r#"{"type":"record","name":"r","fields":[{"name":"id","type":"int"}]}"#,
            None,
        );
        let new = registry.add(
            "orders-value",
            r#"{"type":"record","name":"r","fields":[{"name":"id","type":"long"},{"name":"name","type":["null","string"],"default":null}]}"#,
            None,
        );
        let body_old = |id: i64| {
            let mut out = Vec::new();
            long(&mut out, id);
            confluent(old, &out)
        };
        let body_new = |id: i64| {
            let mut out = Vec::new();
            long(&mut out, id);
            long(&mut out, 1);
            string(&mut out, &format!("n{id}"));
            confluent(new, &out)
        };
        let payloads = vec![body_old(1), body_new(2), body_new(3), body_old(4)];
        let mut decoder = AvroDecoder::with_registry(
            two_column_schema(),
            registry,
            &context(),
            BadRecordPolicy::fail("t"),
            16,
        )
        .unwrap();
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decoded.origins, vec![0, 1, 2, 3]);
        let expected = RecordBatch::try_new(
            two_column_schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![None, Some("n2"), Some("n3"), None])),
            ],
        )
        .unwrap();
        assert_eq!(decoded.batch.data, expected);
    }

    #[tokio::test]
    async fn a_null_for_a_not_null_column_rejects_that_message_only() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let id = registry.add(
            "orders-value",
            r#"{"type":"record","name":"r","fields":[{"name":"id","type":["null","long"]}]}"#,
            None,
        );
        let table = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let value = |v: Option<i64>| {
            let mut out = Vec::new();
            match v {
                Some(v) => {
                    long(&mut out, 1);
                    long(&mut out, v);
                }
                None => long(&mut out, 0),
            }
            confluent(id, &out)
        };
        let payloads = vec![value(Some(1)), value(None), value(Some(3))];
        let policy = skip_policy();
        let mut decoder =
            AvroDecoder::with_registry(table, registry, &context(), policy.clone(), 16).unwrap();
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decoded.origins, vec![0, 2]);
        assert_eq!(
            decoded
                .batch
                .data
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values(),
            &[1, 3]
        );
        assert_eq!(policy.counters().skipped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn tables_without_columns_count_messages() {
        let empty = Arc::new(Schema::empty());
        let mut decoder = AvroDecoder::new(
            empty.clone(),
            AvroOptions::default(),
            &context(),
            BadRecordPolicy::fail("t"),
            16,
        )
        .unwrap();
        let payloads = vec![vec![], vec![]];
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decoded.batch.num_rows(), 2);

        let registry = Arc::new(InMemorySchemaRegistry::new());
        let id = registry.add(
            "x",
            r#"{"type":"record","name":"r","fields":[{"name":"id","type":"long"}]}"#,
            None,
        );
        let mut decoder =
            AvroDecoder::with_registry(empty, registry, &context(), skip_policy(), 16).unwrap();
        let payloads = vec![confluent(id, &[2]), confluent(id, &[]), confluent(id, &[4])];
        let decoded = decoder
            .decode_messages("orders[0]", &messages(&payloads))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decoded.origins, vec![0, 2]);
    }

    #[tokio::test]
    async fn updates_cannot_be_written() {
        let mut encoder =
            AvroEncoder::new(two_column_schema(), AvroOptions::default(), &context()).unwrap();
        let batch = ChangeBatch {
            data: two_column_batch(&[1]),
            kinds: Some(arrow::array::Int8Array::from(vec![
                sluice_core::RowKind::Delete as i8,
            ])),
        };
        let error = encoder
            .encode_messages(&batch, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot write updates or deletes"), "{error}");
    }

    #[tokio::test]
    async fn without_auto_register_the_latest_schema_is_used() {
        let registry = Arc::new(InMemorySchemaRegistry::new());
        let schema = two_column_schema();
        // Same layout, other names and formatting: fine.
        let id = registry.add(
            "orders-value",
            r#"{"type":"record","name":"Order","namespace":"x","fields":[
                {"name":"id","type":{"type":"long"}},
                {"name":"name","type":["null","string"],"default":null,"doc":"d"}]}"#,
            None,
        );
        let mut encoder = AvroEncoder::with_registry(
            schema.clone(),
            registry.clone(),
            "orders-value".into(),
            false,
            &context(),
        )
        .unwrap();
        let mut out = Vec::new();
        encoder
            .encode_messages(&ChangeBatch::inserts(two_column_batch(&[1])), &mut out)
            .await
            .unwrap();
        assert_eq!(&out[0][..5], &confluent(id, &[])[..]);

        registry.add(
            "other-value",
            r#"{"type":"record","name":"r","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#,
            None,
        );
        let mut encoder = AvroEncoder::with_registry(
            schema.clone(),
            registry.clone(),
            "other-value".into(),
            false,
            &context(),
        )
        .unwrap();
        let error = encoder
            .encode_messages(
                &ChangeBatch::inserts(two_column_batch(&[1])),
                &mut Vec::new(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("field 'name'"), "{error}");
        assert!(error.contains("does not match"), "{error}");

        let mut encoder =
            AvroEncoder::with_registry(schema, registry, "missing-value".into(), false, &context())
                .unwrap();
        let error = encoder
            .encode_messages(
                &ChangeBatch::inserts(two_column_batch(&[1])),
                &mut Vec::new(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("'missing-value' has no schema"), "{error}");
    }

    #[test]
    fn options_use_flinks_names() {
        let plain = AvroOptions::from_options(&options(&[("avro.encoding", "binary")])).unwrap();
        assert!(plain.timestamp_mapping_legacy);
        assert!(AvroOptions::from_options(&options(&[("avro.encoding", "json")])).is_err());
        let modern =
            AvroOptions::from_options(&options(&[("avro.timestamp_mapping.legacy", "false")]))
                .unwrap();
        assert!(!modern.timestamp_mapping_legacy);

        assert!(AvroConfluentOptions::from_options(&options(&[])).is_err());
        let parsed = AvroConfluentOptions::from_options(&options(&[(
            "avro-confluent.url",
            "http://localhost:8081",
        )]))
        .unwrap();
        assert!(parsed.auto_register_schemas);
        assert_eq!(parsed.auth, RegistryAuth::None);
        assert_eq!(parsed.subject(&context()), "orders-value");
        let key = MessageContext {
            is_key: true,
            ..context()
        };
        assert_eq!(parsed.subject(&key), "orders-key");

        let parsed = AvroConfluentOptions::from_options(&options(&[
            ("avro-confluent.url", "http://localhost:8081"),
            ("avro-confluent.subject", "custom"),
            ("avro-confluent.auto.register.schemas", "false"),
            ("avro-confluent.basic-auth.credentials-source", "USER_INFO"),
            ("avro-confluent.basic-auth.user-info", "me:se:cret"),
        ]))
        .unwrap();
        assert_eq!(parsed.subject(&key), "custom");
        assert!(!parsed.auto_register_schemas);
        assert_eq!(
            parsed.auth,
            RegistryAuth::Basic {
                user: "me".into(),
                password: "se:cret".into()
            }
        );
        let bearer = AvroConfluentOptions::from_options(&options(&[
            ("avro-confluent.url", "http://localhost:8081"),
            ("avro-confluent.bearer-auth.token", "tok"),
        ]))
        .unwrap();
        assert_eq!(bearer.auth, RegistryAuth::Bearer("tok".into()));
        assert!(!format!("{bearer:?}").contains("tok"));
        for bad in [
            vec![("avro-confluent.basic-auth.user-info", "no-colon")],
            vec![(
                "avro-confluent.basic-auth.credentials-source",
                "SASL_INHERIT",
            )],
            vec![("avro-confluent.basic-auth.credentials-source", "USER_INFO")],
            vec![
                ("avro-confluent.basic-auth.user-info", "a:b"),
                ("avro-confluent.bearer-auth.token", "t"),
            ],
        ] {
            let mut pairs = vec![("avro-confluent.url", "http://localhost:8081")];
            pairs.extend(bad);
            assert!(AvroConfluentOptions::from_options(&options(&pairs)).is_err());
        }
        assert!(parsed.client().is_ok());
    }

    #[test]
    fn writer_schemas_are_normalized() {
        let writer: Value = serde_json::from_str(
            r#"{"type":"record","name":"A","namespace":"n","fields":[
                {"name":"b","type":{"type":"record","name":"B","fields":[{"name":"x","type":"int"}]}},
                {"name":"c","type":"B"},
                {"name":"d","type":["null","n.B"]}]}"#,
        )
        .unwrap();
        let normalized = normalize_writer(&writer).unwrap();
        assert_eq!(normalized["sluice.name"], json!("n.A"));
        assert_eq!(normalized["fields"][1]["type"]["sluice.name"], json!("n.B"));
        assert_eq!(
            normalized["fields"][2]["type"][1]["fields"][0]["type"],
            json!("int")
        );
        let recursive: Value = serde_json::from_str(
            r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#,
        )
        .unwrap();
        assert!(normalize_writer(&recursive)
            .unwrap_err()
            .contains("recursive"));
        let undefined: Value = serde_json::from_str(
            r#"{"type":"record","name":"L","fields":[{"name":"x","type":"Nope"}]}"#,
        )
        .unwrap();
        assert!(normalize_writer(&undefined).unwrap_err().contains("Nope"));
    }
}
