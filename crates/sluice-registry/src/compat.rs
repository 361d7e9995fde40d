//! Compatibility levels and the Avro schema-resolution check behind them.
//!
//! The check follows Avro's Java `SchemaCompatibility` (what Confluent's
//! registry runs): the reader must be able to decode data written with the
//! writer's schema. Logical types are compared by their underlying type, as
//! there. It is written here rather than on `apache_avro::SchemaCompatibility`
//! because that one compares a named type's definition with a later reference
//! to it (`Schema::Ref`) as a type mismatch, and calls a union or enum that
//! can fail on some data "partially" compatible where Java says incompatible.

use std::collections::{HashMap, HashSet};
use std::fmt;

use apache_avro::schema::{
    EnumSchema, FixedSchema, InnerDecimalSchema, Name, RecordSchema, UuidSchema,
};
use apache_avro::Schema;

use crate::error::RegistryError;
use crate::schema::AvroSchema;

/// Confluent's compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatibilityLevel {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    /// The registry's default, as Confluent's.
    pub const DEFAULT: CompatibilityLevel = CompatibilityLevel::Backward;

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Parses a level, case-insensitively (42203 otherwise).
    pub fn parse(text: &str) -> Result<CompatibilityLevel, RegistryError> {
        Ok(match text.trim().to_ascii_uppercase().as_str() {
            "NONE" => CompatibilityLevel::None,
            "BACKWARD" => CompatibilityLevel::Backward,
            "BACKWARD_TRANSITIVE" => CompatibilityLevel::BackwardTransitive,
            "FORWARD" => CompatibilityLevel::Forward,
            "FORWARD_TRANSITIVE" => CompatibilityLevel::ForwardTransitive,
            "FULL" => CompatibilityLevel::Full,
            "FULL_TRANSITIVE" => CompatibilityLevel::FullTransitive,
            _ => return Err(RegistryError::InvalidCompatibilityLevel),
        })
    }

    /// Whether a new schema is checked against every earlier version (or
    /// only the latest).
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    /// New schema reads data written with the old one.
    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Old schema reads data written with the new one.
    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a pair of Avro schemas is incompatible, shaped like Confluent's
/// messages (`{errorType:'...', description:'...', additionalInfo:'...'}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    pub error_type: &'static str,
    pub description: String,
    pub additional_info: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{errorType:'{}', description:'{}', additionalInfo:'{}'}}",
            self.error_type, self.description, self.additional_info
        )
    }
}

/// Checks a new Avro schema against one earlier one under `level` (which
/// must not be `NONE`); returns the reasons it is incompatible, if any.
pub(crate) fn check_avro(
    level: CompatibilityLevel,
    new: &AvroSchema,
    old: &AvroSchema,
) -> Vec<Incompatibility> {
    let mut found = Vec::new();
    if level.backward() {
        found.extend(Checker::new(new, old, "new", "old").run());
    }
    if level.forward() {
        found.extend(Checker::new(old, new, "old", "new").run());
    }
    found
}

/// Every named type a schema defines, by full name.
fn named_types(schema: &AvroSchema) -> HashMap<String, &Schema> {
    fn walk<'a>(schema: &'a Schema, names: &mut HashMap<String, &'a Schema>) {
        if let Some(name) = schema.name() {
            if matches!(schema, Schema::Ref { .. }) {
                return;
            }
            names.entry(name.fullname(None)).or_insert(schema);
        }
        match schema {
            Schema::Record(record) => {
                for field in &record.fields {
                    walk(&field.schema, names);
                }
            }
            Schema::Array(array) => walk(&array.items, names),
            Schema::Map(map) => walk(&map.types, names),
            Schema::Union(union) => {
                for variant in union.variants() {
                    walk(variant, names);
                }
            }
            _ => {}
        }
    }
    let mut names = HashMap::new();
    walk(&schema.schema, &mut names);
    for referenced in &schema.schemata {
        walk(referenced, &mut names);
    }
    names
}

/// A schema reduced to what resolution looks at: logical types become their
/// underlying types, references are looked up.
enum Kind<'a> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(&'a Schema),
    Map(&'a Schema),
    Union(&'a [Schema]),
    Record(&'a RecordSchema),
    Enum(&'a EnumSchema),
    Fixed(&'a FixedSchema),
    /// A reference to a name the schema does not define.
    Unresolved(&'a Name),
}

impl Kind<'_> {
    fn label(&self) -> String {
        match self {
            Kind::Null => "NULL".into(),
            Kind::Boolean => "BOOLEAN".into(),
            Kind::Int => "INT".into(),
            Kind::Long => "LONG".into(),
            Kind::Float => "FLOAT".into(),
            Kind::Double => "DOUBLE".into(),
            Kind::Bytes => "BYTES".into(),
            Kind::String => "STRING".into(),
            Kind::Array(_) => "ARRAY".into(),
            Kind::Map(_) => "MAP".into(),
            Kind::Union(_) => "UNION".into(),
            Kind::Record(_) => "RECORD".into(),
            Kind::Enum(_) => "ENUM".into(),
            Kind::Fixed(_) => "FIXED".into(),
            Kind::Unresolved(name) => name.fullname(None),
        }
    }
}

fn kind<'a>(schema: &'a Schema, names: &HashMap<String, &'a Schema>) -> Kind<'a> {
    match schema {
        Schema::Null => Kind::Null,
        Schema::Boolean => Kind::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Kind::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Kind::Long,
        Schema::Float => Kind::Float,
        Schema::Double => Kind::Double,
        Schema::Bytes | Schema::BigDecimal => Kind::Bytes,
        Schema::String => Kind::String,
        Schema::Decimal(decimal) => match &decimal.inner {
            InnerDecimalSchema::Bytes => Kind::Bytes,
            InnerDecimalSchema::Fixed(fixed) => Kind::Fixed(fixed),
        },
        Schema::Uuid(UuidSchema::String) => Kind::String,
        Schema::Uuid(UuidSchema::Bytes) => Kind::Bytes,
        Schema::Uuid(UuidSchema::Fixed(fixed)) | Schema::Duration(fixed) => Kind::Fixed(fixed),
        Schema::Array(array) => Kind::Array(&array.items),
        Schema::Map(map) => Kind::Map(&map.types),
        Schema::Union(union) => Kind::Union(union.variants()),
        Schema::Record(record) => Kind::Record(record),
        Schema::Enum(schema) => Kind::Enum(schema),
        Schema::Fixed(fixed) => Kind::Fixed(fixed),
        Schema::Ref { name } => match names.get(&name.fullname(None)) {
            Some(defined) if !matches!(defined, Schema::Ref { .. }) => kind(defined, names),
            _ => Kind::Unresolved(name),
        },
    }
}

struct Checker<'a> {
    reader: &'a AvroSchema,
    writer: &'a AvroSchema,
    reader_names: HashMap<String, &'a Schema>,
    writer_names: HashMap<String, &'a Schema>,
    /// (reader, writer) pairs of named types being compared: a recursive
    /// type meeting itself again counts as compatible, as in Java.
    in_progress: HashSet<(usize, usize)>,
    reader_label: &'static str,
    writer_label: &'static str,
}

impl<'a> Checker<'a> {
    fn new(
        reader: &'a AvroSchema,
        writer: &'a AvroSchema,
        reader_label: &'static str,
        writer_label: &'static str,
    ) -> Checker<'a> {
        Checker {
            reader,
            writer,
            reader_names: named_types(reader),
            writer_names: named_types(writer),
            in_progress: HashSet::new(),
            reader_label,
            writer_label,
        }
    }

    fn run(mut self) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        let (reader, writer) = (&self.reader.schema, &self.writer.schema);
        self.check(reader, writer, "", &mut found);
        found
    }

    fn incompatible(
        &self,
        found: &mut Vec<Incompatibility>,
        error_type: &'static str,
        description: String,
        additional_info: String,
    ) {
        found.push(Incompatibility {
            error_type,
            description,
            additional_info,
        });
    }

    fn type_mismatch(
        &self,
        found: &mut Vec<Incompatibility>,
        path: &str,
        reader: &Kind,
        writer: &Kind,
    ) {
        self.incompatible(
            found,
            "TYPE_MISMATCH",
            format!(
                "The type (path '{}') of a field in the {} schema does not match with the {} schema",
                display_path(path),
                self.reader_label,
                self.writer_label
            ),
            format!(
                "reader type: {} not compatible with writer type: {}",
                reader.label(),
                writer.label()
            ),
        );
    }

    /// Can data written with `writer` be read with `reader`?
    fn check(
        &mut self,
        reader: &'a Schema,
        writer: &'a Schema,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let reader_kind = kind(reader, &self.reader_names);
        let writer_kind = kind(writer, &self.writer_names);

        // A writer union: every branch it may have written must be readable.
        if let Kind::Union(branches) = writer_kind {
            for branch in branches {
                self.check(reader, branch, path, found);
            }
            return;
        }
        match (&reader_kind, &writer_kind) {
            (Kind::Union(branches), _) => {
                let readable = branches.iter().any(|branch| {
                    let mut trial = Vec::new();
                    self.check(branch, writer, path, &mut trial);
                    trial.is_empty()
                });
                if !readable {
                    self.incompatible(
                        found,
                        "MISSING_UNION_BRANCH",
                        format!(
                            "The {} schema is missing a type inside a union field at path '{}' in the {} schema",
                            self.reader_label,
                            display_path(path),
                            self.writer_label
                        ),
                        format!("reader union lacking writer type: {}", writer_kind.label()),
                    );
                }
            }
            (Kind::Null, Kind::Null)
            | (Kind::Boolean, Kind::Boolean)
            | (Kind::Int, Kind::Int)
            | (Kind::Long, Kind::Long | Kind::Int)
            | (Kind::Float, Kind::Float | Kind::Long | Kind::Int)
            | (Kind::Double, Kind::Double | Kind::Float | Kind::Long | Kind::Int)
            | (Kind::Bytes, Kind::Bytes | Kind::String)
            | (Kind::String, Kind::String | Kind::Bytes) => {}
            (Kind::Array(r), Kind::Array(w)) => {
                let (r, w) = (*r, *w);
                self.check(r, w, &format!("{path}/items"), found);
            }
            (Kind::Map(r), Kind::Map(w)) => {
                let (r, w) = (*r, *w);
                self.check(r, w, &format!("{path}/values"), found);
            }
            (Kind::Fixed(r), Kind::Fixed(w)) => {
                self.check_name(&r.name, r.aliases.as_deref(), &w.name, path, found);
                if r.size != w.size {
                    self.incompatible(
                        found,
                        "FIXED_SIZE_MISMATCH",
                        format!(
                            "The size of FIXED type field at path '{}/size' in the {} schema does not match with the {} schema",
                            display_path(path),
                            self.reader_label,
                            self.writer_label
                        ),
                        format!("expected: {}, found: {}", w.size, r.size),
                    );
                }
            }
            (Kind::Enum(r), Kind::Enum(w)) => {
                self.check_name(&r.name, r.aliases.as_deref(), &w.name, path, found);
                let missing: Vec<&str> = w
                    .symbols
                    .iter()
                    .filter(|symbol| !r.symbols.contains(symbol))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && r.default.is_none() {
                    self.incompatible(
                        found,
                        "MISSING_ENUM_SYMBOLS",
                        format!(
                            "The {} schema is missing enum symbols '{}' at path '{}/symbols' in the {} schema",
                            self.reader_label,
                            missing.join(","),
                            display_path(path),
                            self.writer_label
                        ),
                        format!("[{}]", missing.join(", ")),
                    );
                }
            }
            (Kind::Record(r), Kind::Record(w)) => {
                let key = (
                    *r as *const RecordSchema as usize,
                    *w as *const RecordSchema as usize,
                );
                if !self.in_progress.insert(key) {
                    return;
                }
                let (r, w) = (*r, *w);
                self.check_name(&r.name, r.aliases.as_deref(), &w.name, path, found);
                for (index, field) in r.fields.iter().enumerate() {
                    let written = std::iter::once(&field.name)
                        .chain(field.aliases.iter())
                        .find_map(|name| w.fields.iter().find(|wf| &wf.name == name));
                    match written {
                        Some(written) => self.check(
                            &field.schema,
                            &written.schema,
                            &format!("{path}/fields/{index}/type"),
                            found,
                        ),
                        None if field.default.is_none() => self.incompatible(
                            found,
                            "READER_FIELD_MISSING_DEFAULT_VALUE",
                            format!(
                                "The field '{}' at path '{}/fields/{index}' in the {} schema has no default value and is missing in the {} schema",
                                field.name,
                                path,
                                self.reader_label,
                                self.writer_label
                            ),
                            field.name.clone(),
                        ),
                        None => {}
                    }
                }
                self.in_progress.remove(&key);
            }
            (Kind::Unresolved(r), Kind::Unresolved(w)) if r.fullname(None) == w.fullname(None) => {}
            _ => self.type_mismatch(found, path, &reader_kind, &writer_kind),
        }
    }

    /// Java's `schemaNameEquals`: the unqualified names match, or one of the
    /// reader's aliases is the writer's full name.
    fn check_name(
        &self,
        reader: &Name,
        reader_aliases: Option<&[apache_avro::schema::Alias]>,
        writer: &Name,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let writer_full = writer.fullname(None);
        let aliased = reader_aliases
            .unwrap_or_default()
            .iter()
            .any(|alias| alias.fullname(None) == writer_full || alias.name() == writer.name());
        if reader.name() != writer.name() && !aliased {
            self.incompatible(
                found,
                "NAME_MISMATCH",
                format!(
                    "The name of the schema has changed (path '{}/name')",
                    display_path(path)
                ),
                format!("expected: {writer_full}"),
            );
        }
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_avro;

    fn avro(text: &str) -> AvroSchema {
        parse_avro(text, &[]).unwrap()
    }

    fn compatible(level: CompatibilityLevel, new: &str, old: &str) -> bool {
        check_avro(level, &avro(new), &avro(old)).is_empty()
    }

    const V1: &str =
        r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"}]}"#;
    const V2_DEFAULT: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":["null","int"],"default":null}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":"int"}]}"#;

    #[test]
    fn adding_a_field_needs_a_default_for_backward() {
        assert!(compatible(CompatibilityLevel::Backward, V2_DEFAULT, V1));
        assert!(!compatible(CompatibilityLevel::Backward, V2_NO_DEFAULT, V1));
        let reasons = check_avro(
            CompatibilityLevel::Backward,
            &avro(V2_NO_DEFAULT),
            &avro(V1),
        );
        assert_eq!(reasons[0].error_type, "READER_FIELD_MISSING_DEFAULT_VALUE");
        assert_eq!(reasons[0].additional_info, "age");
        // Old readers ignore the new field.
        assert!(compatible(CompatibilityLevel::Forward, V2_NO_DEFAULT, V1));
        assert!(compatible(CompatibilityLevel::Full, V2_DEFAULT, V1));
        assert!(!compatible(CompatibilityLevel::Full, V2_NO_DEFAULT, V1));
    }

    #[test]
    fn removing_a_field_without_default_breaks_forward() {
        assert!(compatible(CompatibilityLevel::Backward, V1, V2_NO_DEFAULT));
        assert!(!compatible(CompatibilityLevel::Forward, V1, V2_NO_DEFAULT));
        assert!(compatible(CompatibilityLevel::Forward, V1, V2_DEFAULT));
    }

    #[test]
    fn promotions_and_type_changes() {
        let int = r#"{"type":"record","name":"R","fields":[{"name":"x","type":"int"}]}"#;
        let long = r#"{"type":"record","name":"R","fields":[{"name":"x","type":"long"}]}"#;
        let string = r#"{"type":"record","name":"R","fields":[{"name":"x","type":"string"}]}"#;
        assert!(compatible(CompatibilityLevel::Backward, long, int));
        assert!(!compatible(CompatibilityLevel::Backward, int, long));
        let reasons = check_avro(CompatibilityLevel::Backward, &avro(string), &avro(int));
        assert_eq!(reasons[0].error_type, "TYPE_MISMATCH");
        assert!(
            reasons[0].description.contains("/fields/0/type"),
            "{}",
            reasons[0]
        );
    }

    #[test]
    fn unions_enums_and_names() {
        let union = r#"["null","string"]"#;
        assert!(compatible(
            CompatibilityLevel::Backward,
            union,
            r#""string""#
        ));
        assert!(!compatible(
            CompatibilityLevel::Backward,
            r#""string""#,
            union
        ));
        let ab = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
        let abc = r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#;
        let ab_default = r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#;
        assert!(compatible(CompatibilityLevel::Backward, abc, ab));
        assert!(!compatible(CompatibilityLevel::Backward, ab, abc));
        assert!(compatible(CompatibilityLevel::Backward, ab_default, abc));
        let other_name = r#"{"type":"enum","name":"F","symbols":["A","B"]}"#;
        assert!(!compatible(CompatibilityLevel::Backward, other_name, ab));
        let aliased = r#"{"type":"enum","name":"F","aliases":["E"],"symbols":["A","B"]}"#;
        assert!(compatible(CompatibilityLevel::Backward, aliased, ab));
    }

    #[test]
    fn references_to_named_types_and_recursion() {
        // `Address` is defined in the first field and referenced by name in
        // the second; the new schema inserts a field before both.
        let old = r#"{"type":"record","name":"P","fields":[
            {"name":"home","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}},
            {"name":"work","type":"Address"}]}"#;
        let new = r#"{"type":"record","name":"P","fields":[
            {"name":"other","type":["null",{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}],"default":null},
            {"name":"home","type":"Address"},
            {"name":"work","type":"Address"}]}"#;
        assert!(compatible(CompatibilityLevel::Full, new, old));
        let list = r#"{"type":"record","name":"L","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","L"]}]}"#;
        let list_long = r#"{"type":"record","name":"L","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","L"]}]}"#;
        assert!(compatible(CompatibilityLevel::Backward, list_long, list));
        assert!(!compatible(CompatibilityLevel::Forward, list_long, list));
    }

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(
            CompatibilityLevel::parse("full_transitive").unwrap(),
            CompatibilityLevel::FullTransitive
        );
        assert_eq!(
            CompatibilityLevel::parse("bogus").unwrap_err().error_code(),
            42203
        );
    }
}
