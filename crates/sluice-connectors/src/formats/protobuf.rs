//! The `protobuf` message format: one protobuf message per Kafka message,
//! described by a descriptor set (`protoc --include_imports
//! --descriptor_set_out=...`) or a `.proto` file compiled at startup, with
//! Flink's `protobuf.*` option names.
//!
//! Type mapping (as Flink's protobuf format): `bool` → BOOLEAN;
//! `int32`/`sint32`/`sfixed32` → INT; `uint32`/`fixed32` → BIGINT, or INT
//! holding the same 32 bits as Java does; `int64`/`sint64`/`sfixed64` →
//! BIGINT; `uint64`/`fixed64` → BIGINT (same 64 bits); `float` → FLOAT;
//! `double` → DOUBLE; `string` → STRING; `bytes` → BYTES; enums → STRING (the
//! value name) or TINYINT/SMALLINT/INT/BIGINT (the number); messages → ROW
//! with any subset of the message's fields, by name; `repeated` → ARRAY;
//! `map` → MAP; `google.protobuf.Timestamp` → TIMESTAMP(p) / TIMESTAMP_LTZ(p)
//! (or ROW<seconds BIGINT, nanos INT> like any message).
//!
//! Reading: a field that tracks presence (messages, proto2 scalars, proto3
//! `optional` and `oneof` members) reads as NULL when it is absent, and an
//! empty `repeated`/`map` field reads as NULL, unless
//! `protobuf.read-default-values` is true; then absent fields read as their
//! default values (messages as a row of defaults, lists and maps as empty).
//! Proto3 scalars without presence always read as their value, which is the
//! default when absent. Writing: NULL columns are left out of the message;
//! NULL elements of arrays and values of maps are written as the type's
//! default value (strings as `protobuf.write-null-string-literal`), as Flink
//! does, because protobuf cannot hold them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Float32Array,
    Float32Builder, Float64Array, Float64Builder, Int16Array, Int16Builder, Int32Array,
    Int32Builder, Int64Array, Int64Builder, Int8Array, Int8Builder, ListArray, MapArray,
    NullBufferBuilder, RecordBatch, RecordBatchOptions, StringArray, StringBuilder, StructArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, SchemaRef, TimeUnit};
use async_trait::async_trait;
use prost::bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MapKey,
    MessageDescriptor, Value,
};
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::options::{OptionSpec, Options};
use sluice_core::{ChangeBatch, Result, SluiceError};

use super::message::{DecodedMessages, Message, MessageContext, MessageDecoder, MessageEncoder};
use super::require_inserts;

/// Options of the `protobuf` format (Flink's names, plus Sluice's
/// `protobuf.descriptor-file`).
pub const PROTOBUF_OPTIONS: [OptionSpec; 5] = [
    OptionSpec::required(
        "protobuf.message-class-name",
        "fully-qualified protobuf message name in the descriptor file, e.g. 'shop.Order' \
         (a Java class name such as 'com.shop.Orders$Order' also works when its last part is unique)",
    ),
    OptionSpec::required(
        "protobuf.descriptor-file",
        "path to a FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE) \
         or to a .proto file (compiled at startup; imports resolve next to it)",
    ),
    OptionSpec::optional(
        "protobuf.ignore-parse-errors",
        "skip messages that fail to parse (default false); same as 'errors' = 'skip'",
    ),
    OptionSpec::optional(
        "protobuf.read-default-values",
        "read absent fields as their default values instead of NULL (default false)",
    ),
    OptionSpec::optional(
        "protobuf.write-null-string-literal",
        "string written for NULL elements of string arrays and maps (default '')",
    ),
];

/// The full name of the well-known timestamp message.
const TIMESTAMP_MESSAGE: &str = "google.protobuf.Timestamp";

/// Parsed `protobuf.*` options, with the message descriptor they name.
#[derive(Debug, Clone)]
pub struct ProtobufOptions {
    /// `protobuf.message-class-name` as given.
    pub message_class_name: String,
    /// `protobuf.descriptor-file`, when the descriptor was read from a file.
    pub descriptor_file: Option<PathBuf>,
    /// The message the table's rows are.
    pub message: MessageDescriptor,
    /// `protobuf.ignore-parse-errors`.
    pub ignore_parse_errors: bool,
    /// `protobuf.read-default-values`.
    pub read_default_values: bool,
    /// `protobuf.write-null-string-literal`.
    pub write_null_string_literal: String,
}

impl ProtobufOptions {
    /// Reads the `protobuf.*` options and loads the message descriptor from
    /// `protobuf.descriptor-file`.
    pub fn from_options(options: &Options) -> Result<Self> {
        let owner = options.owner();
        let name = options.require("protobuf.message-class-name")?;
        let path = PathBuf::from(options.require("protobuf.descriptor-file")?);
        let pool = load_descriptor_pool(&path).map_err(|reason| {
            SluiceError::Config(format!(
                "{owner}: option 'protobuf.descriptor-file': {reason}"
            ))
        })?;
        let message = find_message(&pool, name).map_err(|reason| {
            SluiceError::Config(format!(
                "{owner}: option 'protobuf.message-class-name': {reason} in {}",
                path.display()
            ))
        })?;
        let mut parsed = ProtobufOptions::new(message);
        parsed.message_class_name = name.to_string();
        parsed.descriptor_file = Some(path);
        parsed.ignore_parse_errors = options.bool("protobuf.ignore-parse-errors", false)?;
        parsed.read_default_values = options.bool("protobuf.read-default-values", false)?;
        parsed.write_null_string_literal = options
            .get("protobuf.write-null-string-literal")
            .unwrap_or_default()
            .to_string();
        Ok(parsed)
    }

    /// Options for `message` with every other option at its default.
    pub fn new(message: MessageDescriptor) -> Self {
        ProtobufOptions {
            message_class_name: message.full_name().to_string(),
            descriptor_file: None,
            message,
            ignore_parse_errors: false,
            read_default_values: false,
            write_null_string_literal: String::new(),
        }
    }
}

/// Loads a descriptor pool from a serialized `FileDescriptorSet`, or compiles
/// a `.proto` file (imports resolve relative to its directory; the
/// well-known `google/protobuf/*.proto` files are built in).
pub fn load_descriptor_pool(path: &Path) -> std::result::Result<DescriptorPool, String> {
    if path.extension().is_some_and(|ext| ext == "proto") {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| format!("'{}' is not a file name", path.display()))?;
        let mut compiler = protox::Compiler::new([dir])
            .map_err(|e| format!("cannot compile {}: {e}", path.display()))?;
        compiler
            .open_file(name)
            .map_err(|e| format!("cannot compile {}: {e}", path.display()))?;
        return Ok(compiler.descriptor_pool());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
        format!(
            "{} is not a valid FileDescriptorSet (write one with `protoc --include_imports \
             --descriptor_set_out=FILE`, or name a .proto file): {e}",
            path.display()
        )
    })
}

/// Finds `name` in `pool`: a fully-qualified message name (`shop.Order`), or
/// a Java class name (`com.shop.Orders$Order`) whose trailing parts match one
/// message better than any other.
pub fn find_message(
    pool: &DescriptorPool,
    name: &str,
) -> std::result::Result<MessageDescriptor, String> {
    let name = name.trim().trim_start_matches('.');
    if let Some(message) = pool.get_message_by_name(name) {
        return Ok(message);
    }
    let normalized = name.replace('$', ".");
    if let Some(message) = pool.get_message_by_name(&normalized) {
        return Ok(message);
    }
    let wanted: Vec<&str> = normalized.split('.').rev().collect();
    let mut best: Vec<MessageDescriptor> = Vec::new();
    let mut best_score = 0;
    for message in pool.all_messages().filter(|m| !m.is_map_entry()) {
        let score = message
            .full_name()
            .split('.')
            .rev()
            .zip(&wanted)
            .take_while(|(a, b)| a == *b)
            .count();
        if score == 0 || score < best_score {
            continue;
        }
        if score > best_score {
            best.clear();
            best_score = score;
        }
        best.push(message);
    }
    match best.len() {
        1 => Ok(best.remove(0)),
        0 => {
            let mut names: Vec<&str> = Vec::new();
            let messages: Vec<MessageDescriptor> = pool
                .all_messages()
                .filter(|m| !m.is_map_entry() && !m.full_name().starts_with("google.protobuf."))
                .collect();
            names.extend(messages.iter().take(30).map(MessageDescriptor::full_name));
            let more = if messages.len() > 30 { ", ..." } else { "" };
            Err(format!(
                "no protobuf message '{name}' (messages: {}{more})",
                names.join(", ")
            ))
        }
        _ => Err(format!(
            "protobuf message name '{name}' is ambiguous: it could be {}; use the full name",
            best.iter()
                .map(MessageDescriptor::full_name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

// ---------------------------------------------------------------------------
// Planning: how each column maps onto a protobuf field.

/// How one protobuf value maps onto an Arrow value.
#[derive(Debug, Clone)]
enum Conv {
    Bool,
    /// `int32` / `sint32` / `sfixed32` as INT.
    I32,
    /// `uint32` / `fixed32` as INT (the same 32 bits).
    U32AsI32,
    /// `uint32` / `fixed32` as BIGINT.
    U32AsI64,
    /// `int64` / `sint64` / `sfixed64` as BIGINT.
    I64,
    /// `uint64` / `fixed64` as BIGINT (the same 64 bits).
    U64AsI64,
    F32,
    F64,
    Str,
    Bytes,
    /// An enum as its value name.
    EnumName(EnumDescriptor),
    /// An enum as its number.
    EnumNumber,
    /// `google.protobuf.Timestamp` as TIMESTAMP.
    Timestamp(MessageDescriptor),
    /// A message as ROW.
    Row(Box<RowPlan>),
    /// A repeated field as ARRAY; the element's kind gives defaults for NULLs.
    List(Box<Conv>, Kind),
    /// A map field as MAP.
    Map {
        key: Box<Conv>,
        key_kind: Kind,
        value: Box<Conv>,
        value_kind: Kind,
    },
}

/// One column (or ROW field) and the protobuf field it comes from.
#[derive(Debug, Clone)]
struct FieldPlan {
    proto: FieldDescriptor,
    arrow: FieldRef,
    /// Dotted column path, for messages.
    path: String,
    conv: Conv,
}

/// A ROW (or the table) and the message it comes from.
#[derive(Debug, Clone)]
struct RowPlan {
    message: MessageDescriptor,
    fields: Vec<FieldPlan>,
}

/// Why a type did not match.
enum PlanError {
    /// The Arrow type cannot hold the protobuf type at this level.
    Mismatch,
    /// A nested field failed, with its full message.
    Nested(String),
}

fn plan_row(
    message: &MessageDescriptor,
    fields: &Fields,
    prefix: &str,
) -> std::result::Result<RowPlan, String> {
    let mut plans = Vec::with_capacity(fields.len());
    for field in fields {
        let path = if prefix.is_empty() {
            field.name().to_string()
        } else {
            format!("{prefix}.{}", field.name())
        };
        let Some(proto) = message.get_field_by_name(field.name()) else {
            let names = message
                .fields()
                .map(|f| f.name().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "column `{path}` ({}) has no field in protobuf message {} (its fields: {names})",
                sql_type(field.data_type()),
                message.full_name(),
            ));
        };
        let conv = match plan_field(&proto, field.data_type(), &path) {
            Ok(conv) => conv,
            Err(PlanError::Nested(reason)) => return Err(reason),
            Err(PlanError::Mismatch) => {
                return Err(format!(
                    "column `{path}` has type {} but protobuf field {} is `{}`, which maps to {}",
                    sql_type(field.data_type()),
                    proto.full_name(),
                    proto_type(&proto),
                    field_maps_to(&proto),
                ))
            }
        };
        plans.push(FieldPlan {
            proto,
            arrow: field.clone(),
            path,
            conv,
        });
    }
    Ok(RowPlan {
        message: message.clone(),
        fields: plans,
    })
}

fn plan_field(
    proto: &FieldDescriptor,
    data_type: &DataType,
    path: &str,
) -> std::result::Result<Conv, PlanError> {
    if proto.is_map() {
        let (DataType::Map(entries, _), Kind::Message(entry)) = (data_type, proto.kind()) else {
            return Err(PlanError::Mismatch);
        };
        let DataType::Struct(pair) = entries.data_type() else {
            return Err(PlanError::Mismatch);
        };
        if pair.len() != 2 {
            return Err(PlanError::Mismatch);
        }
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let key = plan_kind(&key_kind, pair[0].data_type(), path)?;
        let value = plan_kind(&value_kind, pair[1].data_type(), path)?;
        Ok(Conv::Map {
            key: Box::new(key),
            key_kind,
            value: Box::new(value),
            value_kind,
        })
    } else if proto.is_list() {
        let DataType::List(item) = data_type else {
            return Err(PlanError::Mismatch);
        };
        let kind = proto.kind();
        let element = plan_kind(&kind, item.data_type(), path)?;
        Ok(Conv::List(Box::new(element), kind))
    } else {
        plan_kind(&proto.kind(), data_type, path)
    }
}

fn plan_kind(
    kind: &Kind,
    data_type: &DataType,
    path: &str,
) -> std::result::Result<Conv, PlanError> {
    use DataType as D;
    let conv = match (kind, data_type) {
        (Kind::Bool, D::Boolean) => Conv::Bool,
        (Kind::Int32 | Kind::Sint32 | Kind::Sfixed32, D::Int32) => Conv::I32,
        (Kind::Uint32 | Kind::Fixed32, D::Int32) => Conv::U32AsI32,
        (Kind::Uint32 | Kind::Fixed32, D::Int64) => Conv::U32AsI64,
        (Kind::Int64 | Kind::Sint64 | Kind::Sfixed64, D::Int64) => Conv::I64,
        (Kind::Uint64 | Kind::Fixed64, D::Int64) => Conv::U64AsI64,
        (Kind::Float, D::Float32) => Conv::F32,
        (Kind::Double, D::Float64) => Conv::F64,
        (Kind::String, D::Utf8) => Conv::Str,
        (Kind::Bytes, D::Binary) => Conv::Bytes,
        (Kind::Enum(e), D::Utf8) => Conv::EnumName(e.clone()),
        (Kind::Enum(_), D::Int8 | D::Int16 | D::Int32 | D::Int64) => Conv::EnumNumber,
        (Kind::Message(m), D::Timestamp(_, _)) if m.full_name() == TIMESTAMP_MESSAGE => {
            Conv::Timestamp(m.clone())
        }
        (Kind::Message(m), D::Struct(fields)) => Conv::Row(Box::new(
            plan_row(m, fields, path).map_err(PlanError::Nested)?,
        )),
        _ => return Err(PlanError::Mismatch),
    };
    Ok(conv)
}

use sluice_core::table::sql_type_name as sql_type;

/// Protobuf spelling of a field's type, for messages.
fn proto_type(field: &FieldDescriptor) -> String {
    if field.is_map() {
        if let Kind::Message(entry) = field.kind() {
            return format!(
                "map<{}, {}>",
                kind_name(&entry.map_entry_key_field().kind()),
                kind_name(&entry.map_entry_value_field().kind())
            );
        }
    }
    if field.is_list() {
        return format!("repeated {}", kind_name(&field.kind()));
    }
    kind_name(&field.kind())
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
    }
}

/// The Flink SQL type(s) a protobuf field maps to, for messages.
fn field_maps_to(field: &FieldDescriptor) -> String {
    if field.is_map() {
        if let Kind::Message(entry) = field.kind() {
            return format!(
                "MAP<{}, {}>",
                kind_maps_to(&entry.map_entry_key_field().kind()),
                kind_maps_to(&entry.map_entry_value_field().kind())
            );
        }
    }
    if field.is_list() {
        return format!("ARRAY<{}>", kind_maps_to(&field.kind()));
    }
    match field.kind() {
        Kind::Uint32 | Kind::Fixed32 => "BIGINT (or INT)".into(),
        Kind::Enum(_) => "STRING (the value name) or INT (the number)".into(),
        Kind::Message(m) if m.full_name() == TIMESTAMP_MESSAGE => {
            "TIMESTAMP(p), TIMESTAMP_LTZ(p) or ROW<seconds BIGINT, nanos INT>".into()
        }
        Kind::Message(_) => "ROW<...> with some of its fields".into(),
        kind => kind_maps_to(&kind),
    }
}

fn kind_maps_to(kind: &Kind) -> String {
    match kind {
        Kind::Bool => "BOOLEAN".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "INT".into(),
        Kind::Uint32 | Kind::Fixed32 => "BIGINT".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            "BIGINT".into()
        }
        Kind::Float => "FLOAT".into(),
        Kind::Double => "DOUBLE".into(),
        Kind::String | Kind::Enum(_) => "STRING".into(),
        Kind::Bytes => "BYTES".into(),
        Kind::Message(m) if m.full_name() == TIMESTAMP_MESSAGE => "TIMESTAMP(p)".into(),
        Kind::Message(_) => "ROW<...>".into(),
    }
}

/// Checks a table schema against a message, naming the first column that
/// does not fit.
fn plan_table(table: &str, schema: &SchemaRef, message: &MessageDescriptor) -> Result<RowPlan> {
    plan_row(message, schema.fields(), "").map_err(|reason| {
        SluiceError::Config(format!(
            "table `{table}`: protobuf message {}: {reason}",
            message.full_name()
        ))
    })
}

// ---------------------------------------------------------------------------
// Decoding.

/// The value of `field` in `message`, or `None` when it reads as NULL.
fn field_value<'m>(
    message: &'m DynamicMessage,
    field: &FieldDescriptor,
    read_default_values: bool,
) -> Option<Cow<'m, Value>> {
    if !read_default_values {
        let tracked = field.is_list() || field.is_map() || field.supports_presence();
        if tracked && !message.has_field(field) {
            return None;
        }
    }
    Some(message.get_field(field))
}

fn nanos_factor(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// A `google.protobuf.Timestamp` value in `unit` since the epoch.
fn timestamp_value(value: &Value, unit: TimeUnit) -> std::result::Result<i64, String> {
    let Value::Message(timestamp) = value else {
        return Err("expected a google.protobuf.Timestamp message".into());
    };
    let seconds = timestamp
        .get_field_by_number(1)
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    let nanos = timestamp
        .get_field_by_number(2)
        .and_then(|v| v.as_i32())
        .unwrap_or_default();
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    i64::try_from(total.div_euclid(nanos_factor(unit))).map_err(|_| {
        format!("timestamp {seconds}s {nanos}ns is out of range for the column's precision")
    })
}

/// An integer of an enum or integer value.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::I32(v) | Value::EnumNumber(v) => Some(i64::from(*v)),
        Value::I64(v) => Some(*v),
        Value::U32(v) => Some(i64::from(*v)),
        Value::U64(v) => Some(*v as i64),
        _ => None,
    }
}

fn map_key_value(key: &MapKey) -> Value {
    match key {
        MapKey::Bool(v) => Value::Bool(*v),
        MapKey::I32(v) => Value::I32(*v),
        MapKey::I64(v) => Value::I64(*v),
        MapKey::U32(v) => Value::U32(*v),
        MapKey::U64(v) => Value::U64(*v),
        MapKey::String(v) => Value::String(v.clone()),
    }
}

/// Builds one Arrow column from protobuf values.
struct Column {
    /// Whether the column may hold NULL.
    nullable: bool,
    /// Whether appending may fail (NOT NULL, range checks), so messages are
    /// checked before any of their values are appended.
    fallible: bool,
    path: String,
    data_type: DataType,
    builder: ColumnBuilder,
}

enum ColumnBuilder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Str(StringBuilder, Option<EnumDescriptor>),
    Bytes(BinaryBuilder),
    Timestamp(Int64Builder, TimeUnit),
    Struct(RowBuilder, NullBufferBuilder),
    List {
        item: FieldRef,
        offsets: Vec<i32>,
        child: Box<Column>,
        nulls: NullBufferBuilder,
    },
    Map {
        entries: FieldRef,
        sorted: bool,
        offsets: Vec<i32>,
        keys: Box<Column>,
        values: Box<Column>,
        nulls: NullBufferBuilder,
    },
}

/// Builds the columns of a ROW (or of the table) from messages.
struct RowBuilder {
    fields: Vec<(FieldDescriptor, Column)>,
    arrow_fields: Fields,
    read_default_values: bool,
}

impl RowBuilder {
    fn new(plan: &RowPlan, read_default_values: bool) -> Self {
        let fields = plan
            .fields
            .iter()
            .map(|f| {
                (
                    f.proto.clone(),
                    Column::new(&f.conv, &f.arrow, f.path.clone(), read_default_values),
                )
            })
            .collect::<Vec<_>>();
        RowBuilder {
            arrow_fields: plan.fields.iter().map(|f| f.arrow.clone()).collect(),
            fields,
            read_default_values,
        }
    }

    fn fallible(&self) -> bool {
        self.fields.iter().any(|(_, c)| c.fallible)
    }

    fn check(&self, message: &DynamicMessage) -> std::result::Result<(), String> {
        for (proto, column) in &self.fields {
            if column.fallible {
                let value = field_value(message, proto, self.read_default_values);
                column.check(value.as_deref())?;
            }
        }
        Ok(())
    }

    fn append(&mut self, message: &DynamicMessage) {
        for (proto, column) in &mut self.fields {
            let value = field_value(message, proto, self.read_default_values);
            column.append(value.as_deref());
        }
    }

    fn append_null(&mut self) {
        for (_, column) in &mut self.fields {
            column.append_null();
        }
    }

    fn finish(&mut self) -> Result<Vec<ArrayRef>> {
        self.fields.iter_mut().map(|(_, c)| c.finish()).collect()
    }
}

impl Column {
    fn new(conv: &Conv, field: &Field, path: String, read_default_values: bool) -> Self {
        let data_type = field.data_type().clone();
        let element = |item: &FieldRef, conv: &Conv, suffix: &str| {
            Box::new(Column::new(
                conv,
                item,
                format!("{path}{suffix}"),
                read_default_values,
            ))
        };
        let builder = match (conv, &data_type) {
            (Conv::Bool, _) => ColumnBuilder::Bool(BooleanBuilder::new()),
            (Conv::EnumNumber, DataType::Int8) => ColumnBuilder::I8(Int8Builder::new()),
            (Conv::EnumNumber, DataType::Int16) => ColumnBuilder::I16(Int16Builder::new()),
            (Conv::I32 | Conv::U32AsI32 | Conv::EnumNumber, DataType::Int32) => {
                ColumnBuilder::I32(Int32Builder::new())
            }
            (Conv::I64 | Conv::U32AsI64 | Conv::U64AsI64 | Conv::EnumNumber, _) => {
                ColumnBuilder::I64(Int64Builder::new())
            }
            (Conv::I32 | Conv::U32AsI32, _) => ColumnBuilder::I32(Int32Builder::new()),
            (Conv::F32, _) => ColumnBuilder::F32(Float32Builder::new()),
            (Conv::F64, _) => ColumnBuilder::F64(Float64Builder::new()),
            (Conv::Str, _) => ColumnBuilder::Str(StringBuilder::new(), None),
            (Conv::EnumName(e), _) => ColumnBuilder::Str(StringBuilder::new(), Some(e.clone())),
            (Conv::Bytes, _) => ColumnBuilder::Bytes(BinaryBuilder::new()),
            (Conv::Timestamp(_), DataType::Timestamp(unit, _)) => {
                ColumnBuilder::Timestamp(Int64Builder::new(), *unit)
            }
            (Conv::Timestamp(_), _) => {
                ColumnBuilder::Timestamp(Int64Builder::new(), TimeUnit::Millisecond)
            }
            (Conv::Row(plan), _) => ColumnBuilder::Struct(
                RowBuilder::new(plan, read_default_values),
                NullBufferBuilder::new(0),
            ),
            (Conv::List(conv, _), DataType::List(item)) => ColumnBuilder::List {
                item: item.clone(),
                offsets: vec![0],
                child: element(item, conv, "[]"),
                nulls: NullBufferBuilder::new(0),
            },
            (Conv::Map { key, value, .. }, DataType::Map(entries, sorted)) => {
                let (key_field, value_field) = match entries.data_type() {
                    DataType::Struct(pair) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
                    _ => (
                        Arc::new(Field::new("key", DataType::Null, false)),
                        Arc::new(Field::new("value", DataType::Null, true)),
                    ),
                };
                ColumnBuilder::Map {
                    entries: entries.clone(),
                    sorted: *sorted,
                    offsets: vec![0],
                    keys: element(&key_field, key, ".key"),
                    values: element(&value_field, value, ".value"),
                    nulls: NullBufferBuilder::new(0),
                }
            }
            // Planning only pairs list and map conversions with list and map types.
            (Conv::List(..) | Conv::Map { .. }, _) => ColumnBuilder::Bool(BooleanBuilder::new()),
        };
        let fallible = !field.is_nullable()
            || match &builder {
                ColumnBuilder::I8(_) | ColumnBuilder::I16(_) | ColumnBuilder::Timestamp(..) => true,
                ColumnBuilder::Struct(row, _) => row.fallible(),
                ColumnBuilder::List { child, .. } => child.fallible,
                ColumnBuilder::Map { keys, values, .. } => keys.fallible || values.fallible,
                _ => false,
            };
        Column {
            nullable: field.is_nullable(),
            fallible,
            path,
            data_type,
            builder,
        }
    }

    /// Checks that `value` can be appended (only called when `fallible`).
    fn check(&self, value: Option<&Value>) -> std::result::Result<(), String> {
        let Some(value) = value else {
            return if self.nullable {
                Ok(())
            } else {
                Err(format!(
                    "field `{}` is absent but the column is NOT NULL",
                    self.path
                ))
            };
        };
        match &self.builder {
            ColumnBuilder::I8(_) => integer(value)
                .and_then(|v| i8::try_from(v).ok())
                .map(drop)
                .ok_or_else(|| format!("field `{}`: {value:?} does not fit TINYINT", self.path)),
            ColumnBuilder::I16(_) => integer(value)
                .and_then(|v| i16::try_from(v).ok())
                .map(drop)
                .ok_or_else(|| format!("field `{}`: {value:?} does not fit SMALLINT", self.path)),
            ColumnBuilder::Timestamp(_, unit) => timestamp_value(value, *unit)
                .map(drop)
                .map_err(|e| format!("field `{}`: {e}", self.path)),
            ColumnBuilder::Struct(row, _) => match value {
                Value::Message(message) => row.check(message),
                _ => Ok(()),
            },
            ColumnBuilder::List { child, .. } => match value {
                Value::List(items) if child.fallible => {
                    items.iter().try_for_each(|item| child.check(Some(item)))
                }
                _ => Ok(()),
            },
            ColumnBuilder::Map { keys, values, .. } => match value {
                Value::Map(entries) if keys.fallible || values.fallible => {
                    entries.iter().try_for_each(|(key, value)| {
                        keys.check(Some(&map_key_value(key)))?;
                        values.check(Some(value))
                    })
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn append_null(&mut self) {
        match &mut self.builder {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::I8(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) | ColumnBuilder::Timestamp(b, _) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Str(b, _) => b.append_null(),
            ColumnBuilder::Bytes(b) => b.append_null(),
            ColumnBuilder::Struct(row, nulls) => {
                row.append_null();
                nulls.append_null();
            }
            ColumnBuilder::List { offsets, nulls, .. }
            | ColumnBuilder::Map { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or_default();
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Appends `value` (NULL when `None`). Values that do not convert (which
    /// `check` has ruled out) are appended as NULL.
    fn append(&mut self, value: Option<&Value>) {
        let Some(value) = value else {
            self.append_null();
            return;
        };
        match (&mut self.builder, value) {
            (ColumnBuilder::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::I8(b), v) => {
                b.append_option(integer(v).and_then(|v| v.try_into().ok()))
            }
            (ColumnBuilder::I16(b), v) => {
                b.append_option(integer(v).and_then(|v| v.try_into().ok()))
            }
            // uint32 into INT keeps the bits, as Java's int does.
            (ColumnBuilder::I32(b), Value::U32(v)) => b.append_value(*v as i32),
            (ColumnBuilder::I32(b), Value::I32(v) | Value::EnumNumber(v)) => b.append_value(*v),
            (ColumnBuilder::I64(b), v) => b.append_option(integer(v)),
            (ColumnBuilder::F32(b), Value::F32(v)) => b.append_value(*v),
            (ColumnBuilder::F64(b), Value::F64(v)) => b.append_value(*v),
            (ColumnBuilder::Str(b, _), Value::String(v)) => b.append_value(v),
            (ColumnBuilder::Str(b, Some(names)), Value::EnumNumber(n)) => match names.get_value(*n)
            {
                Some(known) => b.append_value(known.name()),
                // As protobuf-java names a number its enum does not declare.
                None => b.append_value("UNRECOGNIZED"),
            },
            (ColumnBuilder::Bytes(b), Value::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b, unit), v) => {
                b.append_option(timestamp_value(v, *unit).ok())
            }
            (ColumnBuilder::Struct(row, nulls), Value::Message(message)) => {
                row.append(message);
                nulls.append_non_null();
            }
            (
                ColumnBuilder::List {
                    offsets,
                    child,
                    nulls,
                    ..
                },
                Value::List(items),
            ) => {
                for item in items {
                    child.append(Some(item));
                }
                let last = offsets.last().copied().unwrap_or_default();
                offsets.push(last + items.len() as i32);
                nulls.append_non_null();
            }
            (
                ColumnBuilder::Map {
                    offsets,
                    keys,
                    values,
                    nulls,
                    ..
                },
                Value::Map(entries),
            ) => {
                // Sorted by key, so that equal maps read alike.
                let mut sorted: Vec<(&MapKey, &Value)> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                for (key, value) in sorted {
                    keys.append(Some(&map_key_value(key)));
                    values.append(Some(value));
                }
                let last = offsets.last().copied().unwrap_or_default();
                offsets.push(last + entries.len() as i32);
                nulls.append_non_null();
            }
            _ => self.append_null(),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let array: ArrayRef = match &mut self.builder {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::I8(b) => Arc::new(b.finish()),
            ColumnBuilder::I16(b) => Arc::new(b.finish()),
            ColumnBuilder::I32(b) => Arc::new(b.finish()),
            ColumnBuilder::I64(b) => Arc::new(b.finish()),
            ColumnBuilder::F32(b) => Arc::new(b.finish()),
            ColumnBuilder::F64(b) => Arc::new(b.finish()),
            ColumnBuilder::Str(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, unit) => {
                let (_, values, nulls) = b.finish().into_parts();
                let zone = match &self.data_type {
                    DataType::Timestamp(_, zone) => zone.clone(),
                    _ => None,
                };
                match unit {
                    TimeUnit::Second => {
                        Arc::new(TimestampSecondArray::new(values, nulls).with_timezone_opt(zone))
                    }
                    TimeUnit::Millisecond => Arc::new(
                        TimestampMillisecondArray::new(values, nulls).with_timezone_opt(zone),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        TimestampMicrosecondArray::new(values, nulls).with_timezone_opt(zone),
                    ),
                    TimeUnit::Nanosecond => Arc::new(
                        TimestampNanosecondArray::new(values, nulls).with_timezone_opt(zone),
                    ),
                }
            }
            ColumnBuilder::Struct(row, nulls) => {
                let columns = row.finish()?;
                Arc::new(StructArray::try_new(
                    row.arrow_fields.clone(),
                    columns,
                    nulls.finish(),
                )?)
            }
            ColumnBuilder::List {
                item,
                offsets,
                child,
                nulls,
            } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::try_new(
                    item.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    child.finish()?,
                    nulls.finish(),
                )?)
            }
            ColumnBuilder::Map {
                entries,
                sorted,
                offsets,
                keys,
                values,
                nulls,
            } => {
                let offsets = std::mem::replace(offsets, vec![0]);
                let DataType::Struct(pair) = entries.data_type() else {
                    return Err(SluiceError::Format(format!(
                        "column `{}`: map entries must be a struct",
                        self.path
                    )));
                };
                let pairs = StructArray::try_new(
                    pair.clone(),
                    vec![keys.finish()?, values.finish()?],
                    None,
                )?;
                Arc::new(MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    pairs,
                    nulls.finish(),
                    *sorted,
                )?)
            }
        };
        Ok(array)
    }
}

/// Decodes protobuf messages into rows of a fixed schema.
pub struct ProtobufDecoder {
    table: String,
    schema: SchemaRef,
    plan: RowPlan,
    options: ProtobufOptions,
    policy: BadRecordPolicy,
}

impl std::fmt::Debug for ProtobufDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufDecoder")
            .field("table", &self.table)
            .field("message", &self.options.message.full_name())
            .finish()
    }
}

impl ProtobufDecoder {
    /// A decoder of `options.message` into rows of `schema`; fails when a
    /// column has no field of a compatible type in the message.
    pub fn new(
        schema: SchemaRef,
        options: ProtobufOptions,
        context: &MessageContext,
        policy: BadRecordPolicy,
    ) -> Result<Self> {
        let plan = plan_table(&context.table, &schema, &options.message)?;
        Ok(ProtobufDecoder {
            table: context.table.clone(),
            schema,
            plan,
            options,
            policy,
        })
    }

    /// Decodes `messages` synchronously (what [`MessageDecoder::decode_messages`] does).
    pub fn decode(
        &mut self,
        source: &str,
        messages: &[Message<'_>],
    ) -> Result<Option<DecodedMessages>> {
        let mut rows = RowBuilder::new(&self.plan, self.options.read_default_values);
        let check = rows.fallible();
        let mut origins = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let decoded = match DynamicMessage::decode(self.plan.message.clone(), message.payload) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let reason = format!(
                        "invalid protobuf message {}: {error}",
                        self.plan.message.full_name()
                    );
                    self.policy
                        .reject(source, message.position, message.payload, &reason)?;
                    continue;
                }
            };
            if check {
                if let Err(reason) = rows.check(&decoded) {
                    self.policy
                        .reject(source, message.position, message.payload, &reason)?;
                    continue;
                }
            }
            rows.append(&decoded);
            origins.push(index);
        }
        if origins.is_empty() {
            return Ok(None);
        }
        let columns = rows.finish()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(origins.len())),
        )
        .map_err(|e| {
            SluiceError::Format(format!(
                "table `{}`: building rows from protobuf messages: {e}",
                self.table
            ))
        })?;
        Ok(Some(DecodedMessages {
            batch: ChangeBatch::inserts(batch),
            origins,
        }))
    }
}

#[async_trait]
impl MessageDecoder for ProtobufDecoder {
    async fn decode_messages(
        &mut self,
        source: &str,
        messages: &[Message<'_>],
    ) -> Result<Option<DecodedMessages>> {
        self.decode(source, messages)
    }
}

// ---------------------------------------------------------------------------
// Encoding.

fn downcast<'a, T: 'static>(
    array: &'a dyn Array,
    path: &str,
) -> std::result::Result<&'a T, String> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| {
        format!(
            "column `{path}` holds {} where the table declares another type",
            sql_type(array.data_type())
        )
    })
}

/// A signed integer from an INT-like array.
fn int_at(array: &dyn Array, row: usize, path: &str) -> std::result::Result<i64, String> {
    match array.data_type() {
        DataType::Int8 => Ok(i64::from(downcast::<Int8Array>(array, path)?.value(row))),
        DataType::Int16 => Ok(i64::from(downcast::<Int16Array>(array, path)?.value(row))),
        DataType::Int32 => Ok(i64::from(downcast::<Int32Array>(array, path)?.value(row))),
        DataType::Int64 => Ok(downcast::<Int64Array>(array, path)?.value(row)),
        DataType::Timestamp(TimeUnit::Second, _) => {
            Ok(downcast::<TimestampSecondArray>(array, path)?.value(row))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Ok(downcast::<TimestampMillisecondArray>(array, path)?.value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Ok(downcast::<TimestampMicrosecondArray>(array, path)?.value(row))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Ok(downcast::<TimestampNanosecondArray>(array, path)?.value(row))
        }
        other => Err(format!(
            "column `{path}` holds {} where an integer was expected",
            sql_type(other)
        )),
    }
}

fn to_map_key(value: Value, path: &str) -> std::result::Result<MapKey, String> {
    match value {
        Value::Bool(v) => Ok(MapKey::Bool(v)),
        Value::I32(v) => Ok(MapKey::I32(v)),
        Value::I64(v) => Ok(MapKey::I64(v)),
        Value::U32(v) => Ok(MapKey::U32(v)),
        Value::U64(v) => Ok(MapKey::U64(v)),
        Value::String(v) => Ok(MapKey::String(v)),
        other => Err(format!("column `{path}`: {other:?} cannot be a map key")),
    }
}

/// Writes rows as protobuf messages.
pub struct ProtobufEncoder {
    table: String,
    plan: RowPlan,
    options: ProtobufOptions,
}

impl std::fmt::Debug for ProtobufEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufEncoder")
            .field("table", &self.table)
            .field("message", &self.options.message.full_name())
            .finish()
    }
}

impl ProtobufEncoder {
    /// An encoder of rows of `schema` as `options.message`; fails when a
    /// column has no field of a compatible type in the message.
    pub fn new(
        schema: SchemaRef,
        options: ProtobufOptions,
        context: &MessageContext,
    ) -> Result<Self> {
        let plan = plan_table(&context.table, &schema, &options.message)?;
        Ok(ProtobufEncoder {
            table: context.table.clone(),
            plan,
            options,
        })
    }

    /// Encodes every row of `batch` (what [`MessageEncoder::encode_messages`] does).
    pub fn encode(&self, batch: &ChangeBatch, out: &mut Vec<Vec<u8>>) -> Result<()> {
        require_inserts(batch, "protobuf")?;
        let columns = batch.data.columns();
        if columns.len() != self.plan.fields.len() {
            return Err(SluiceError::Format(format!(
                "table `{}`: protobuf encoder expected {} columns, got {}",
                self.table,
                self.plan.fields.len(),
                columns.len()
            )));
        }
        out.reserve(batch.num_rows());
        for row in 0..batch.num_rows() {
            let message = self
                .row_message(&self.plan, columns, row)
                .map_err(|reason| {
                    SluiceError::Format(format!(
                        "table `{}`: cannot write row as protobuf message {}: {reason}",
                        self.table,
                        self.plan.message.full_name()
                    ))
                })?;
            out.push(message.encode_to_vec());
        }
        Ok(())
    }

    fn row_message(
        &self,
        plan: &RowPlan,
        columns: &[ArrayRef],
        row: usize,
    ) -> std::result::Result<DynamicMessage, String> {
        let mut message = DynamicMessage::new(plan.message.clone());
        for (field, column) in plan.fields.iter().zip(columns) {
            if column.is_null(row) {
                continue;
            }
            let value = self.value(&field.conv, column.as_ref(), row, &field.path)?;
            message
                .try_set_field(&field.proto, value)
                .map_err(|e| format!("column `{}`: {e}", field.path))?;
        }
        Ok(message)
    }

    /// The default written for a NULL element of an array or map.
    fn null_element(&self, kind: &Kind) -> Value {
        match kind {
            Kind::String => Value::String(self.options.write_null_string_literal.clone()),
            kind => Value::default_value(kind),
        }
    }

    fn value(
        &self,
        conv: &Conv,
        array: &dyn Array,
        row: usize,
        path: &str,
    ) -> std::result::Result<Value, String> {
        let value = match conv {
            Conv::Bool => Value::Bool(downcast::<BooleanArray>(array, path)?.value(row)),
            Conv::I32 => Value::I32(downcast::<Int32Array>(array, path)?.value(row)),
            Conv::U32AsI32 => Value::U32(downcast::<Int32Array>(array, path)?.value(row) as u32),
            Conv::U32AsI64 => {
                let v = downcast::<Int64Array>(array, path)?.value(row);
                Value::U32(u32::try_from(v).map_err(|_| {
                    format!("column `{path}`: {v} is out of range for an unsigned 32-bit field")
                })?)
            }
            Conv::I64 => Value::I64(downcast::<Int64Array>(array, path)?.value(row)),
            Conv::U64AsI64 => Value::U64(downcast::<Int64Array>(array, path)?.value(row) as u64),
            Conv::F32 => Value::F32(downcast::<Float32Array>(array, path)?.value(row)),
            Conv::F64 => Value::F64(downcast::<Float64Array>(array, path)?.value(row)),
            Conv::Str => {
                Value::String(downcast::<StringArray>(array, path)?.value(row).to_string())
            }
            Conv::Bytes => Value::Bytes(Bytes::copy_from_slice(
                downcast::<BinaryArray>(array, path)?.value(row),
            )),
            Conv::EnumName(values) => {
                let name = downcast::<StringArray>(array, path)?.value(row);
                match values.get_value_by_name(name) {
                    Some(known) => Value::EnumNumber(known.number()),
                    None => {
                        let names: Vec<String> =
                            values.values().map(|v| v.name().to_string()).collect();
                        return Err(format!(
                            "column `{path}`: '{name}' is not a value of enum {} ({})",
                            values.full_name(),
                            names.join(", ")
                        ));
                    }
                }
            }
            Conv::EnumNumber => {
                let v = int_at(array, row, path)?;
                Value::EnumNumber(i32::try_from(v).map_err(|_| {
                    format!("column `{path}`: {v} is out of range for an enum number")
                })?)
            }
            Conv::Timestamp(descriptor) => {
                let DataType::Timestamp(unit, _) = array.data_type() else {
                    return Err(format!("column `{path}` is not a timestamp"));
                };
                let nanos = i128::from(int_at(array, row, path)?) * nanos_factor(*unit);
                let mut timestamp = DynamicMessage::new(descriptor.clone());
                let seconds = i64::try_from(nanos.div_euclid(1_000_000_000))
                    .map_err(|_| format!("column `{path}`: timestamp out of range"))?;
                let fraction = nanos.rem_euclid(1_000_000_000) as i32;
                timestamp
                    .try_set_field_by_number(1, Value::I64(seconds))
                    .and_then(|()| timestamp.try_set_field_by_number(2, Value::I32(fraction)))
                    .map_err(|e| format!("column `{path}`: {e}"))?;
                Value::Message(timestamp)
            }
            Conv::Row(plan) => {
                let fields = downcast::<StructArray>(array, path)?;
                Value::Message(self.row_message(plan, fields.columns(), row)?)
            }
            Conv::List(element, kind) => {
                let list = downcast::<ListArray>(array, path)?;
                let items = list.value(row);
                let mut values = Vec::with_capacity(items.len());
                for index in 0..items.len() {
                    values.push(if items.is_null(index) {
                        self.null_element(kind)
                    } else {
                        self.value(element, items.as_ref(), index, path)?
                    });
                }
                Value::List(values)
            }
            Conv::Map {
                key,
                key_kind,
                value,
                value_kind,
            } => {
                let map = downcast::<MapArray>(array, path)?;
                let entries = map.value(row);
                let (keys, values) = (entries.column(0), entries.column(1));
                let mut out = HashMap::with_capacity(entries.len());
                for index in 0..entries.len() {
                    let k = if keys.is_null(index) {
                        self.null_element(key_kind)
                    } else {
                        self.value(key, keys.as_ref(), index, path)?
                    };
                    let v = if values.is_null(index) {
                        self.null_element(value_kind)
                    } else {
                        self.value(value, values.as_ref(), index, path)?
                    };
                    out.insert(to_map_key(k, path)?, v);
                }
                Value::Map(out)
            }
        };
        Ok(value)
    }
}

#[async_trait]
impl MessageEncoder for ProtobufEncoder {
    async fn encode_messages(&mut self, batch: &ChangeBatch, out: &mut Vec<Vec<u8>>) -> Result<()> {
        self.encode(batch, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::json::{JsonDecoder, JsonOptions};
    use crate::formats::LineChunk;
    use arrow::array::{AsArray, Int8Array};
    use arrow::datatypes::{Int32Type, Int64Type, Schema};
    use sluice_core::RowKind;
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;

    const SHOP_PROTO: &str = r#"
syntax = "proto3";
package shop;

import "google/protobuf/timestamp.proto";

enum Status {
  STATUS_UNKNOWN = 0;
  PLACED = 1;
  SHIPPED = 2;
}

message Item {
  string sku = 1;
  int32 quantity = 2;
  double price = 3;
}

message Address {
  string city = 1;
  string zip = 2;
}

message Customer {
  string name = 1;
  Address address = 2;
}

message Order {
  int64 id = 1;
  bool paid = 2;
  int32 i32 = 3;
  sint32 s32 = 4;
  sfixed32 sf32 = 5;
  uint32 u32 = 6;
  fixed32 f32 = 7;
  sint64 s64 = 9;
  sfixed64 sf64 = 10;
  uint64 u64 = 11;
  fixed64 f64 = 12;
  float ratio = 13;
  double amount = 14;
  string note = 15;
  bytes blob = 16;
  Status status = 17;
  Status status_code = 18;
  Customer customer = 19;
  repeated Item items = 20;
  repeated string tags = 21;
  map<string, int64> counts = 22;
  map<int32, Item> by_pos = 23;
  google.protobuf.Timestamp created = 24;
  optional string comment = 25;
  oneof payment {
    string card = 26;
    int64 voucher = 27;
  }
  repeated int32 scores = 28;
}

message Legacy {
  message Item {
    string code = 1;
  }
}
"#;

    const LEGACY_PROTO: &str = r#"
syntax = "proto2";
package legacy;

message Simple {
  optional int32 a = 1 [default = 10];
  optional int64 b = 2 [default = 100];
  optional string c = 3;
}
"#;

    fn temp_dir(name: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "sluice-protobuf-{}-{unique}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Compiles `source` (written as `file`) with protox, as the
    /// `protobuf.descriptor-file` option does for `.proto` files.
    fn compile(file: &str, source: &str) -> DescriptorPool {
        let dir = temp_dir(file);
        let path = dir.join(file);
        std::fs::write(&path, source).unwrap();
        let pool = load_descriptor_pool(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        pool
    }

    fn shop() -> DescriptorPool {
        compile("shop.proto", SHOP_PROTO)
    }

    fn message(pool: &DescriptorPool, name: &str) -> MessageDescriptor {
        pool.get_message_by_name(name).unwrap()
    }

    fn context() -> MessageContext {
        MessageContext {
            table: "orders".into(),
            topic: "orders".into(),
            is_key: false,
        }
    }

    fn field(name: &str, data_type: DataType) -> Field {
        Field::new(name, data_type, true)
    }

    fn row(fields: Vec<Field>) -> DataType {
        DataType::Struct(Fields::from(fields))
    }

    fn list(element: DataType) -> DataType {
        DataType::List(Arc::new(Field::new("item", element, true)))
    }

    fn map(key: DataType, value: DataType) -> DataType {
        DataType::Map(
            Arc::new(Field::new(
                "entries",
                row(vec![
                    Field::new("key", key, false),
                    Field::new("value", value, true),
                ]),
                false,
            )),
            false,
        )
    }

    fn schema(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn item_type() -> DataType {
        row(vec![
            field("sku", DataType::Utf8),
            field("quantity", DataType::Int32),
            field("price", DataType::Float64),
        ])
    }

    fn order_schema() -> SchemaRef {
        schema(vec![
            field("id", DataType::Int64),
            field("paid", DataType::Boolean),
            field("i32", DataType::Int32),
            field("s32", DataType::Int32),
            field("sf32", DataType::Int32),
            field("u32", DataType::Int64),
            field("f32", DataType::Int32),
            field("s64", DataType::Int64),
            field("sf64", DataType::Int64),
            field("u64", DataType::Int64),
            field("f64", DataType::Int64),
            field("ratio", DataType::Float32),
            field("amount", DataType::Float64),
            field("note", DataType::Utf8),
            field("blob", DataType::Binary),
            field("status", DataType::Utf8),
            field("status_code", DataType::Int32),
            field(
                "customer",
                row(vec![
                    field("name", DataType::Utf8),
                    field(
                        "address",
                        row(vec![
                            field("city", DataType::Utf8),
                            field("zip", DataType::Utf8),
                        ]),
                    ),
                ]),
            ),
            field("items", list(item_type())),
            field("tags", list(DataType::Utf8)),
            field("counts", map(DataType::Utf8, DataType::Int64)),
            field("by_pos", map(DataType::Int32, item_type())),
            field(
                "created",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            ),
            field("comment", DataType::Utf8),
            field("card", DataType::Utf8),
            field("voucher", DataType::Int64),
        ])
    }

    /// Rows of `schema` from JSON lines (BYTES as base64).
    fn rows(schema: &SchemaRef, json: &str) -> RecordBatch {
        let options = JsonOptions::from_options(&Options::default()).unwrap();
        let mut decoder =
            JsonDecoder::new(schema.clone(), options, BadRecordPolicy::fail("t"), 1024).unwrap();
        decoder
            .decode_records(&LineChunk::whole("rows", 1, json.as_bytes().to_vec()))
            .unwrap()
            .unwrap()
    }

    fn options(message: MessageDescriptor) -> ProtobufOptions {
        ProtobufOptions::new(message)
    }

    fn encode(schema: &SchemaRef, options: ProtobufOptions, batch: &RecordBatch) -> Vec<Vec<u8>> {
        let mut encoder = ProtobufEncoder::new(schema.clone(), options, &context()).unwrap();
        let mut out = Vec::new();
        futures::executor::block_on(
            encoder.encode_messages(&ChangeBatch::inserts(batch.clone()), &mut out),
        )
        .unwrap();
        out
    }

    fn decode_with(
        schema: &SchemaRef,
        options: ProtobufOptions,
        policy: BadRecordPolicy,
        payloads: &[&[u8]],
    ) -> Result<Option<DecodedMessages>> {
        let mut decoder = ProtobufDecoder::new(schema.clone(), options, &context(), policy)?;
        let messages: Vec<Message<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| Message {
                position: 40 + i as u64,
                payload,
            })
            .collect();
        futures::executor::block_on(decoder.decode_messages("orders[0]", &messages))
    }

    fn decode(schema: &SchemaRef, options: ProtobufOptions, payloads: &[&[u8]]) -> RecordBatch {
        decode_with(schema, options, BadRecordPolicy::fail("orders"), payloads)
            .unwrap()
            .unwrap()
            .batch
            .data
    }

    fn skip_policy() -> BadRecordPolicy {
        let values = BTreeMap::from([("errors".to_string(), "skip".to_string())]);
        BadRecordPolicy::from_options(
            "orders",
            &Options::new("table `orders`", values),
            false,
            Path::new("/nonexistent"),
        )
        .unwrap()
    }

    const FULL_ROW: &str = r#"{"id":7,"paid":true,"i32":-5,"s32":-6,"sf32":-7,"u32":4000000000,"f32":-1,"s64":-9000000000,"sf64":-10,"u64":-1,"f64":12,"ratio":0.5,"amount":19.25,"note":"hi","blob":"AAEC/w==","status":"SHIPPED","status_code":1,"customer":{"name":"Ann","address":{"city":"Oslo","zip":"0150"}},"items":[{"sku":"a","quantity":2,"price":1.5},{"sku":"b","quantity":0,"price":0.0}],"tags":["x","y"],"counts":{"a":1,"b":-2},"by_pos":{"1":{"sku":"c","quantity":3,"price":2.0},"5":{"sku":"d","quantity":1,"price":0.25}},"created":"2024-05-01T10:00:00.123Z","comment":"fragile","card":"4111","voucher":null}"#;

    #[test]
    fn round_trip_with_nulls() {
        let pool = shop();
        let schema = order_schema();
        let json = [
            FULL_ROW,
            // Fields that track presence are NULL; proto3 scalars are not.
            r#"{"id":8,"paid":false,"i32":0,"s32":0,"sf32":0,"u32":0,"f32":0,"s64":0,"sf64":0,"u64":0,"f64":0,"ratio":0.0,"amount":0.0,"note":"","blob":"","status":"STATUS_UNKNOWN","status_code":0,"customer":null,"items":null,"tags":null,"counts":null,"by_pos":null,"created":null,"comment":null,"card":null,"voucher":null}"#,
            // A nested NULL row, an empty optional string, the other oneof member.
            r#"{"id":9,"paid":true,"i32":1,"s32":1,"sf32":1,"u32":1,"f32":1,"s64":1,"sf64":1,"u64":1,"f64":1,"ratio":1.0,"amount":1.0,"note":"n","blob":"AQ==","status":"PLACED","status_code":2,"customer":{"name":"Bo","address":null},"items":[{"sku":"","quantity":0,"price":0.0}],"tags":[""],"counts":{"":0},"by_pos":{"0":{"sku":"","quantity":0,"price":0.0}},"created":"1969-12-31T23:59:59.500Z","comment":"","card":null,"voucher":0}"#,
        ]
        .join("\n");
        let batch = rows(&schema, &json);
        assert_eq!(batch.num_rows(), 3);
        let order = message(&pool, "shop.Order");
        let payloads = encode(&schema, options(order.clone()), &batch);
        assert_eq!(payloads.len(), 3);
        let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let decoded = decode_with(
            &schema,
            options(order),
            BadRecordPolicy::fail("orders"),
            &payloads,
        )
        .unwrap()
        .unwrap();
        assert_eq!(decoded.origins, vec![0, 1, 2]);
        assert_eq!(decoded.batch.data, batch);
        let u32s = decoded.batch.data.column(5).as_primitive::<Int64Type>();
        assert_eq!(u32s.value(0), 4_000_000_000);
    }

    #[test]
    fn proto3_null_scalars_read_as_defaults() {
        let pool = shop();
        let schema = schema(vec![
            field("id", DataType::Int64),
            field("note", DataType::Utf8),
            field("comment", DataType::Utf8),
            field("tags", list(DataType::Utf8)),
            field("customer", row(vec![field("name", DataType::Utf8)])),
        ]);
        let batch = rows(
            &schema,
            r#"{"id":null,"note":null,"comment":null,"tags":[],"customer":null}"#,
        );
        let order = message(&pool, "shop.Order");
        let payloads = encode(&schema, options(order.clone()), &batch);
        assert!(payloads[0].is_empty());
        let decoded = decode(&schema, options(order.clone()), &[&payloads[0]]);
        // No presence for proto3 scalars: the default.
        assert_eq!(decoded.column(0).as_primitive::<Int64Type>().value(0), 0);
        assert_eq!(decoded.column(1).as_string::<i32>().value(0), "");
        // Optional fields, empty lists and messages: NULL.
        assert!(decoded.column(2).is_null(0));
        assert!(decoded.column(3).is_null(0));
        assert!(decoded.column(4).is_null(0));

        let mut defaults = options(order);
        defaults.read_default_values = true;
        let decoded = decode(&schema, defaults, &[&payloads[0]]);
        assert_eq!(decoded.column(2).as_string::<i32>().value(0), "");
        assert_eq!(decoded.column(3).as_list::<i32>().value(0).len(), 0);
        assert!(decoded.column(3).is_valid(0));
        let customer = decoded.column(4).as_struct();
        assert!(customer.is_valid(0));
        assert_eq!(customer.column(0).as_string::<i32>().value(0), "");
    }

    #[test]
    fn proto2_read_default_values() {
        // Flink's documented example: Simple{a: 88} reads as (88, NULL) by
        // default and as (88, 100) with 'protobuf.read-default-values'.
        let pool = compile("legacy.proto", LEGACY_PROTO);
        let simple = message(&pool, "legacy.Simple");
        let schema = schema(vec![
            field("a", DataType::Int32),
            field("b", DataType::Int64),
            field("c", DataType::Utf8),
        ]);
        let payload: &[u8] = &[0x08, 88];
        let decoded = decode(&schema, options(simple.clone()), &[payload]);
        assert_eq!(decoded.column(0).as_primitive::<Int32Type>().value(0), 88);
        assert!(decoded.column(1).is_null(0));
        assert!(decoded.column(2).is_null(0));

        let mut defaults = options(simple.clone());
        defaults.read_default_values = true;
        let decoded = decode(&schema, defaults, &[payload]);
        assert_eq!(decoded.column(1).as_primitive::<Int64Type>().value(0), 100);
        assert_eq!(decoded.column(2).as_string::<i32>().value(0), "");

        // proto2 scalars track presence, so NULLs round-trip.
        let batch = rows(&schema, r#"{"a":0,"b":null,"c":""}"#);
        let payloads = encode(&schema, options(simple.clone()), &batch);
        assert_eq!(decode(&schema, options(simple), &[&payloads[0]]), batch);
    }

    #[test]
    fn corrupt_message_is_skipped_and_origins_point_at_messages() {
        let pool = shop();
        let order = message(&pool, "shop.Order");
        let schema = schema(vec![
            field("id", DataType::Int64),
            field("customer", row(vec![field("name", DataType::Utf8)])),
        ]);
        let batch = rows(
            &schema,
            "{\"id\":1,\"customer\":{\"name\":\"a\"}}\n{\"id\":2,\"customer\":null}",
        );
        let good = encode(&schema, options(order.clone()), &batch);
        // A truncated varint, a truncated length-delimited field and invalid UTF-8.
        let corrupt: [&[u8]; 3] = [&[0x08], &[0x9a, 0x01, 0x05, 0x0a], &[0x7a, 0x01, 0xff]];
        let payloads: Vec<&[u8]> = vec![corrupt[0], &good[0], corrupt[1], corrupt[2], &good[1]];
        let policy = skip_policy();
        let decoded = decode_with(&schema, options(order.clone()), policy.clone(), &payloads)
            .unwrap()
            .unwrap();
        assert_eq!(decoded.origins, vec![1, 4]);
        assert_eq!(decoded.batch.data, batch);
        assert_eq!(policy.counters().skipped.load(Ordering::Relaxed), 3);

        // Nothing decodes: no batch.
        let none = decode_with(&schema, options(order.clone()), skip_policy(), &corrupt).unwrap();
        assert!(none.is_none());

        // In fail mode the error names the source, the position and the message.
        let error = decode_with(
            &schema,
            options(order),
            BadRecordPolicy::fail("orders"),
            &payloads,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("orders[0]:40"), "{error}");
        assert!(
            error.contains("invalid protobuf message shop.Order"),
            "{error}"
        );
    }

    #[test]
    fn not_null_column_rejects_messages_without_the_field() {
        let pool = shop();
        let order = message(&pool, "shop.Order");
        let schema = schema(vec![
            field("id", DataType::Int64),
            Field::new("comment", DataType::Utf8, false),
        ]);
        let with_comment: &[u8] = &[0x08, 0x01, 0xca, 0x01, 0x01, b'x'];
        let without: &[u8] = &[0x08, 0x02];
        let policy = skip_policy();
        let decoded = decode_with(
            &schema,
            options(order),
            policy.clone(),
            &[without, with_comment],
        )
        .unwrap()
        .unwrap();
        assert_eq!(decoded.origins, vec![1]);
        assert_eq!(
            decoded.batch.data.column(1).as_string::<i32>().value(0),
            "x"
        );
        assert_eq!(policy.counters().skipped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn type_mismatch_names_column_field_and_types() {
        let pool = shop();
        let order = message(&pool, "shop.Order");
        let error = |fields: Vec<Field>| {
            ProtobufDecoder::new(
                schema(fields),
                options(order.clone()),
                &context(),
                BadRecordPolicy::fail("orders"),
            )
            .unwrap_err()
            .to_string()
        };
        let text = error(vec![
            field("id", DataType::Int64),
            field("amount", DataType::Int64),
        ]);
        for part in [
            "table `orders`",
            "`amount`",
            "shop.Order.amount",
            "`double`",
            "BIGINT",
            "DOUBLE",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let text = error(vec![field(
            "customer",
            row(vec![field(
                "address",
                row(vec![field("zip", DataType::Int32)]),
            )]),
        )]);
        assert!(text.contains("`customer.address.zip`"), "{text}");
        assert!(text.contains("shop.Address.zip"), "{text}");
        let text = error(vec![field("nope", DataType::Utf8)]);
        assert!(
            text.contains("`nope`") && text.contains("no field"),
            "{text}"
        );
        let text = error(vec![field("tags", DataType::Utf8)]);
        assert!(
            text.contains("repeated string") && text.contains("ARRAY<STRING>"),
            "{text}"
        );
        let text = error(vec![field("counts", map(DataType::Utf8, DataType::Int32))]);
        assert!(text.contains("map<string, int64>"), "{text}");
        // The encoder checks the same way.
        let encoder = ProtobufEncoder::new(
            schema(vec![field("paid", DataType::Utf8)]),
            options(order.clone()),
            &context(),
        );
        assert!(encoder.unwrap_err().to_string().contains("`paid`"));
    }

    #[test]
    fn tables_may_use_a_subset_of_fields() {
        let pool = shop();
        let order = message(&pool, "shop.Order");
        let full = order_schema();
        let payloads = encode(&full, options(order.clone()), &rows(&full, FULL_ROW));
        // Fewer fields, in another order, nested subsets.
        let subset = schema(vec![
            field(
                "customer",
                row(vec![field(
                    "address",
                    row(vec![field("city", DataType::Utf8)]),
                )]),
            ),
            field("id", DataType::Int64),
            field("items", list(row(vec![field("price", DataType::Float64)]))),
        ]);
        let decoded = decode(&subset, options(order.clone()), &[&payloads[0]]);
        let expected = rows(
            &subset,
            r#"{"customer":{"address":{"city":"Oslo"}},"id":7,"items":[{"price":1.5},{"price":0.0}]}"#,
        );
        assert_eq!(decoded, expected);
        // Writing a subset leaves the other fields out.
        let written = encode(&subset, options(order.clone()), &expected);
        let back = decode(&full, options(order), &[&written[0]]);
        assert_eq!(
            back.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(0),
            7
        );
        assert!(back.column_by_name("comment").unwrap().is_null(0));
    }

    #[test]
    fn matches_the_protobuf_wire_format() {
        // Expected bytes written by hand from the protobuf encoding spec.
        let pool = shop();
        let item = message(&pool, "shop.Item");
        let schema_item = schema(vec![
            field("sku", DataType::Utf8),
            field("quantity", DataType::Int32),
            field("price", DataType::Float64),
        ]);
        let wire: &[u8] = &[
            0x0a, 0x01, 0x61, 0x10, 0x96, 0x01, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8,
            0x3f,
        ];
        let batch = rows(&schema_item, r#"{"sku":"a","quantity":150,"price":1.5}"#);
        assert_eq!(
            encode(&schema_item, options(item.clone()), &batch),
            vec![wire.to_vec()]
        );
        assert_eq!(decode(&schema_item, options(item), &[wire]), batch);

        // sint32 zigzag, sfixed32, uint64 as BIGINT, enum, Timestamp before
        // 1970, packed repeated int32.
        let order = message(&pool, "shop.Order");
        let schema_order = schema(vec![
            field("s32", DataType::Int32),
            field("sf32", DataType::Int32),
            field("u64", DataType::Int64),
            field("status", DataType::Utf8),
            field("created", DataType::Timestamp(TimeUnit::Nanosecond, None)),
            field("scores", list(DataType::Int32)),
        ]);
        let wire: &[u8] = &[
            0x20, 0x01, 0x2d, 0xfe, 0xff, 0xff, 0xff, 0x58, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x01, 0x88, 0x01, 0x01, 0xc2, 0x01, 0x11, 0x08, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01, 0xe2,
            0x01, 0x02, 0x01, 0x02,
        ];
        let batch = rows(
            &schema_order,
            r#"{"s32":-1,"sf32":-2,"u64":-1,"status":"PLACED","created":"1969-12-31T23:59:59.5","scores":[1,2]}"#,
        );
        assert_eq!(
            batch
                .column(4)
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .value(0),
            -500_000_000
        );
        assert_eq!(
            encode(&schema_order, options(order.clone()), &batch),
            vec![wire.to_vec()]
        );
        assert_eq!(
            decode(&schema_order, options(order.clone()), &[wire]),
            batch
        );

        // Parsers must also accept unpacked repeated scalars.
        let unpacked: &[u8] = &[0xe0, 0x01, 0x01, 0xe0, 0x01, 0x02];
        let scores = schema(vec![field("scores", list(DataType::Int32))]);
        let decoded = decode(&scores, options(order), &[unpacked]);
        assert_eq!(decoded, rows(&scores, r#"{"scores":[1,2]}"#));
    }

    #[test]
    fn timestamps_and_enums() {
        let pool = shop();
        let order = message(&pool, "shop.Order");
        // created = {seconds: -1, nanos: 500000000}; status = 7 (undeclared).
        let wire: &[u8] = &[
            0x88, 0x01, 0x07, 0x90, 0x01, 0x07, 0xc2, 0x01, 0x11, 0x08, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01,
        ];
        let schema = schema(vec![
            field("status", DataType::Utf8),
            field("status_code", DataType::Int64),
            field(
                "created",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            ),
        ]);
        let decoded = decode(&schema, options(order.clone()), &[wire]);
        assert_eq!(
            decoded.column(0).as_string::<i32>().value(0),
            "UNRECOGNIZED"
        );
        assert_eq!(decoded.column(1).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(
            decoded
                .column(2)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                .value(0),
            -500
        );
        let as_row = Arc::new(Schema::new(vec![field(
            "created",
            row(vec![
                field("seconds", DataType::Int64),
                field("nanos", DataType::Int32),
            ]),
        )]));
        let decoded = decode(&as_row, options(order.clone()), &[wire]);
        assert_eq!(decoded.schema(), as_row);
        let created = decoded.column(0).as_struct();
        assert_eq!(created.column(0).as_primitive::<Int64Type>().value(0), -1);
        assert_eq!(
            created.column(1).as_primitive::<Int32Type>().value(0),
            500_000_000
        );

        // Enum numbers into TINYINT are range-checked: 7 fits, 300 does not.
        let tiny = Arc::new(Schema::new(vec![field("status_code", DataType::Int8)]));
        let decoded = decode(&tiny, options(order.clone()), &[wire]);
        assert_eq!(
            decoded
                .column(0)
                .as_primitive::<arrow::datatypes::Int8Type>()
                .value(0),
            7
        );
        let too_big: &[u8] = &[0x90, 0x01, 0xac, 0x02];
        let policy = skip_policy();
        let none = decode_with(&tiny, options(order.clone()), policy.clone(), &[too_big]).unwrap();
        assert!(none.is_none());
        assert_eq!(policy.counters().skipped.load(Ordering::Relaxed), 1);

        // Writing an enum name the enum lacks is an error naming it.
        let names = Arc::new(Schema::new(vec![field("status", DataType::Utf8)]));
        let batch = rows(&names, r#"{"status":"LOST"}"#);
        let encoder = ProtobufEncoder::new(names, options(order), &context()).unwrap();
        let error = encoder
            .encode(&ChangeBatch::inserts(batch), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("'LOST'") && error.contains("shop.Status"),
            "{error}"
        );
    }

    #[test]
    fn null_elements_are_written_as_defaults() {
        let pool = shop();
        let order = message(&pool, "shop.Order");
        let schema = schema(vec![
            field("tags", list(DataType::Utf8)),
            field("items", list(item_type())),
            field("counts", map(DataType::Utf8, DataType::Int64)),
            field("scores", list(DataType::Int32)),
        ]);
        let batch = rows(
            &schema,
            r#"{"tags":["a",null],"items":[null],"counts":{"k":null},"scores":[null,3]}"#,
        );
        let mut options = options(order);
        options.write_null_string_literal = "n/a".into();
        let payloads = encode(&schema, options.clone(), &batch);
        let decoded = decode(&schema, options, &[&payloads[0]]);
        let expected = rows(
            &schema,
            r#"{"tags":["a","n/a"],"items":[{"sku":"","quantity":0,"price":0.0}],"counts":{"k":0},"scores":[0,3]}"#,
        );
        assert_eq!(decoded, expected);
    }

    #[test]
    fn updates_and_deletes_cannot_be_written() {
        let pool = shop();
        let schema = schema(vec![field("id", DataType::Int64)]);
        let batch = rows(&schema, r#"{"id":1}"#);
        let changes = ChangeBatch {
            data: batch,
            kinds: Some(Int8Array::from(vec![RowKind::Delete as i8])),
        };
        let encoder =
            ProtobufEncoder::new(schema, options(message(&pool, "shop.Order")), &context())
                .unwrap();
        let error = encoder
            .encode(&changes, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot write updates or deletes"), "{error}");
    }

    #[test]
    fn finds_messages_by_full_or_java_name() {
        let pool = shop();
        let found = |name: &str| find_message(&pool, name).map(|m| m.full_name().to_string());
        assert_eq!(found("shop.Order").unwrap(), "shop.Order");
        assert_eq!(found("com.acme.shop.Shop$Order").unwrap(), "shop.Order");
        assert_eq!(found("com.acme.Order").unwrap(), "shop.Order");
        assert_eq!(found("shop.Legacy$Item").unwrap(), "shop.Legacy.Item");
        assert_eq!(
            found("com.acme.Shop$Legacy$Item").unwrap(),
            "shop.Legacy.Item"
        );
        let ambiguous = found("com.acme.Item").unwrap_err();
        assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
        let missing = found("com.acme.Invoice").unwrap_err();
        assert!(missing.contains("shop.Order"), "{missing}");
    }

    #[test]
    fn options_load_descriptor_sets_and_proto_files() {
        let dir = temp_dir("options");
        let proto = dir.join("shop.proto");
        std::fs::write(&proto, SHOP_PROTO).unwrap();
        let set = dir.join("shop.desc");
        std::fs::write(&set, shop().encode_to_vec()).unwrap();
        let parse = |pairs: &[(&str, &str)]| {
            let values = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ProtobufOptions::from_options(&Options::new("table `orders`", values))
        };
        for file in [&set, &proto] {
            let parsed = parse(&[
                ("protobuf.message-class-name", "com.acme.Shop$Order"),
                ("protobuf.descriptor-file", file.to_str().unwrap()),
                ("protobuf.read-default-values", "true"),
                ("protobuf.write-null-string-literal", "null"),
            ])
            .unwrap();
            assert_eq!(parsed.message.full_name(), "shop.Order");
            assert!(parsed.read_default_values && !parsed.ignore_parse_errors);
            assert_eq!(parsed.write_null_string_literal, "null");
        }
        let error = parse(&[("protobuf.message-class-name", "shop.Order")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("protobuf.descriptor-file"), "{error}");
        let error = parse(&[
            ("protobuf.message-class-name", "shop.Order"),
            (
                "protobuf.descriptor-file",
                proto.with_extension("txt").to_str().unwrap(),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("cannot read"), "{error}");
        std::fs::write(dir.join("bad.desc"), b"\x0a\xff").unwrap();
        let bad = dir.join("bad.desc");
        let error = parse(&[
            ("protobuf.message-class-name", "shop.Order"),
            ("protobuf.descriptor-file", bad.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("FileDescriptorSet"), "{error}");
        std::fs::write(dir.join("broken.proto"), "message {").unwrap();
        let broken = dir.join("broken.proto");
        let error = parse(&[
            ("protobuf.message-class-name", "shop.Order"),
            ("protobuf.descriptor-file", broken.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("cannot compile"), "{error}");
        let error = parse(&[
            ("protobuf.message-class-name", "shop.Invoice"),
            ("protobuf.descriptor-file", set.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("no protobuf message 'shop.Invoice'"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
