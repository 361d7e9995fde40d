//! The `datagen` connector: random (or sequential) rows for any column types,
//! with Flink's `rows-per-second`, `number-of-rows` and `fields.<name>.*` options.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, ListArray,
    RecordBatch, StringArray, StructArray, Time32MillisecondArray, TimestampMillisecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_core::connector::{ConnectorFactory, JobContext, SourceConnector, SourceReader};
use sluice_core::options::Options;
use sluice_core::table::TableDef;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::project_schema;

const TOP_LEVEL: [&str; 5] = [
    "connector",
    "rows-per-second",
    "number-of-rows",
    "seed",
    "scan.watermark.idle-timeout",
];
const FIELD_KEYS: [&str; 9] = [
    "kind",
    "min",
    "max",
    "length",
    "start",
    "end",
    "null-rate",
    "max-past",
    "element-count",
];

/// Makes `batch` match `schema`: columns by name, nested ROW fields by name,
/// other types cast. Errors name the missing column or field.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                let available: Vec<&str> = batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                SluiceError::Config(format!(
                    "column `{}` is not produced by this source (available: {})",
                    field.name(),
                    available.join(", ")
                ))
            })?;
            conform_array(column, field.data_type(), field.name())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn conform_array(array: &ArrayRef, target: &DataType, path: &str) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    match (array.data_type(), target) {
        (DataType::Struct(_), DataType::Struct(target_fields)) => {
            let source = array
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| SluiceError::Runtime(format!("`{path}` is not a struct")))?;
            let children = target_fields
                .iter()
                .map(|field| {
                    let child = source.column_by_name(field.name()).ok_or_else(|| {
                        SluiceError::Config(format!(
                            "field `{path}.{}` is not produced by this source",
                            field.name()
                        ))
                    })?;
                    conform_array(
                        child,
                        field.data_type(),
                        &format!("{path}.{}", field.name()),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let fields = target_fields
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>();
            Ok(Arc::new(StructArray::try_new(
                fields.into(),
                children,
                source.nulls().cloned(),
            )?))
        }
        _ => cast(array, target).map_err(|e| {
            SluiceError::Config(format!(
                "`{path}` is produced as {} and cannot become {target}: {e}",
                array.data_type()
            ))
        }),
    }
}

/// Creates `datagen` sources.
pub struct DatagenConnector;

/// How one column is generated.
#[derive(Debug, Clone)]
struct FieldSpec {
    sequence: Option<(i64, i64)>,
    min: Option<f64>,
    max: Option<f64>,
    length: usize,
    null_rate: f64,
    max_past_ms: i64,
    element_count: usize,
}

fn field_spec(options: &Options, name: &str) -> Result<FieldSpec> {
    let key = |suffix: &str| format!("fields.{name}.{suffix}");
    let kind = options.get(&key("kind")).unwrap_or("random");
    let sequence = match kind {
        "random" => None,
        "sequence" => {
            let start = options.parse::<i64>(&key("start"))?.ok_or_else(|| {
                SluiceError::Config(format!(
                    "{}: sequence field `{name}` needs '{}'",
                    options.owner(),
                    key("start")
                ))
            })?;
            let end = options.parse::<i64>(&key("end"))?.ok_or_else(|| {
                SluiceError::Config(format!(
                    "{}: sequence field `{name}` needs '{}'",
                    options.owner(),
                    key("end")
                ))
            })?;
            Some((start, end))
        }
        other => {
            return Err(SluiceError::Config(format!(
                "{}: '{}' must be 'random' or 'sequence', got '{other}'",
                options.owner(),
                key("kind")
            )))
        }
    };
    Ok(FieldSpec {
        sequence,
        min: options.parse::<f64>(&key("min"))?,
        max: options.parse::<f64>(&key("max"))?,
        length: options.parse::<usize>(&key("length"))?.unwrap_or(100),
        null_rate: options.parse::<f64>(&key("null-rate"))?.unwrap_or(0.0),
        max_past_ms: options
            .duration(&key("max-past"))?
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        element_count: options.parse::<usize>(&key("element-count"))?.unwrap_or(3),
    })
}

fn validate(table: &TableDef) -> Result<()> {
    for (key, _) in table.options.iter() {
        if TOP_LEVEL.contains(&key) {
            continue;
        }
        let valid = key
            .strip_prefix("fields.")
            .and_then(|rest| rest.rsplit_once('.'))
            .is_some_and(|(column, suffix)| {
                FIELD_KEYS.contains(&suffix) && table.columns.iter().any(|c| c.name() == column)
            });
        if !valid {
            return Err(SluiceError::Config(format!(
                "table `{}`: unknown option '{key}'; valid options are: {}, and fields.<column>.{{{}}}",
                table.name,
                TOP_LEVEL.join(", "),
                FIELD_KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

impl ConnectorFactory for DatagenConnector {
    fn name(&self) -> &'static str {
        "datagen"
    }

    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
        job: &JobContext,
    ) -> Result<Arc<dyn SourceConnector>> {
        validate(table)?;
        let schema = project_schema(table, projection);
        let specs = schema
            .fields()
            .iter()
            .map(|f| field_spec(&table.options, f.name()))
            .collect::<Result<Vec<_>>>()?;
        // A sequence column bounds the source, as in Flink.
        let sequence_rows = specs
            .iter()
            .filter_map(|s| s.sequence)
            .map(|(start, end)| (end - start + 1).max(0) as u64)
            .min();
        let rows = match (table.options.parse::<u64>("number-of-rows")?, sequence_rows) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let source = DatagenSource {
            schema,
            specs,
            rows,
            rows_per_second: table
                .options
                .parse::<f64>("rows-per-second")?
                .unwrap_or(10_000.0),
            seed: table
                .options
                .parse::<u64>("seed")?
                .unwrap_or_else(rand::random),
            batch_size: job.batch_size,
        };
        // Fail on unsupported types now.
        source.generate(&mut SmallRng::seed_from_u64(0), 0, 1, 1)?;
        Ok(Arc::new(source))
    }
}

#[derive(Debug)]
struct DatagenSource {
    schema: SchemaRef,
    specs: Vec<FieldSpec>,
    rows: Option<u64>,
    rows_per_second: f64,
    seed: u64,
    batch_size: usize,
}

impl DatagenSource {
    /// Rows `first, first + step, ...` (`count` of them).
    fn generate(
        &self,
        rng: &mut SmallRng,
        first: u64,
        step: u64,
        count: usize,
    ) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(&self.specs)
            .map(|(field, spec)| random_array(field, spec, rng, first, step, count))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn bounds(spec: &FieldSpec, low: f64, high: f64) -> (f64, f64) {
    (
        spec.min.unwrap_or(low),
        spec.max.unwrap_or(high).max(spec.min.unwrap_or(low)),
    )
}

fn random_array(
    field: &Field,
    spec: &FieldSpec,
    rng: &mut SmallRng,
    first: u64,
    step: u64,
    count: usize,
) -> Result<ArrayRef> {
    let ints = |rng: &mut SmallRng, low: f64, high: f64| -> Vec<i64> {
        match spec.sequence {
            Some((start, _)) => (0..count)
                .map(|k| start + (first + k as u64 * step) as i64)
                .collect(),
            None => {
                let (low, high) = bounds(spec, low, high);
                (0..count)
                    .map(|_| rng.gen_range(low as i64..=high as i64))
                    .collect()
            }
        }
    };
    let array: ArrayRef = match field.data_type() {
        DataType::Boolean => Arc::new(BooleanArray::from(
            (0..count).map(|_| rng.gen::<bool>()).collect::<Vec<_>>(),
        )),
        DataType::Int8 => Arc::new(Int8Array::from(
            ints(rng, i8::MIN as f64, i8::MAX as f64)
                .into_iter()
                .map(|v| v as i8)
                .collect::<Vec<_>>(),
        )),
        DataType::Int16 => Arc::new(Int16Array::from(
            ints(rng, i16::MIN as f64, i16::MAX as f64)
                .into_iter()
                .map(|v| v as i16)
                .collect::<Vec<_>>(),
        )),
        DataType::Int32 => Arc::new(Int32Array::from(
            ints(rng, i32::MIN as f64, i32::MAX as f64)
                .into_iter()
                .map(|v| v as i32)
                .collect::<Vec<_>>(),
        )),
        DataType::Int64 => Arc::new(Int64Array::from(ints(
            rng,
            i64::MIN as f64,
            i64::MAX as f64,
        ))),
        DataType::Float32 => {
            let (low, high) = bounds(spec, f32::MIN as f64, f32::MAX as f64);
            Arc::new(Float32Array::from(
                (0..count)
                    .map(|_| rng.gen_range(low..=high) as f32)
                    .collect::<Vec<_>>(),
            ))
        }
        DataType::Float64 => {
            let (low, high) = bounds(spec, -1e12, 1e12);
            Arc::new(Float64Array::from(
                (0..count)
                    .map(|_| rng.gen_range(low..=high))
                    .collect::<Vec<_>>(),
            ))
        }
        DataType::Decimal128(precision, scale) => {
            let limit = 10f64.powi(*precision as i32 - *scale as i32) - 1.0;
            let (low, high) = bounds(spec, -limit, limit);
            let factor = 10f64.powi(*scale as i32);
            let values: Vec<i128> = (0..count)
                .map(|_| (rng.gen_range(low..=high) * factor) as i128)
                .collect();
            Arc::new(Decimal128Array::from(values).with_precision_and_scale(*precision, *scale)?)
        }
        DataType::Utf8 => {
            let values: Vec<String> = match spec.sequence {
                Some(_) => ints(rng, 0.0, 0.0)
                    .into_iter()
                    .map(|v| v.to_string())
                    .collect(),
                None => (0..count)
                    .map(|_| {
                        (0..spec.length)
                            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                            .collect()
                    })
                    .collect(),
            };
            Arc::new(StringArray::from(values))
        }
        DataType::Binary => {
            let values: Vec<Vec<u8>> = (0..count)
                .map(|_| (0..spec.length).map(|_| rng.gen()).collect())
                .collect();
            Arc::new(BinaryArray::from_iter_values(values))
        }
        DataType::Date32 => {
            let today = chrono::Utc::now().timestamp().div_euclid(86_400) as i32;
            Arc::new(Date32Array::from(
                (0..count)
                    .map(|_| today - rng.gen_range(0..=365))
                    .collect::<Vec<_>>(),
            ))
        }
        DataType::Time32(TimeUnit::Millisecond) => Arc::new(Time32MillisecondArray::from(
            (0..count)
                .map(|_| rng.gen_range(0..86_400_000))
                .collect::<Vec<_>>(),
        )),
        DataType::Timestamp(unit, zone) => {
            let now = chrono::Utc::now().timestamp_millis();
            let millis: Vec<i64> = (0..count)
                .map(|_| now - rng.gen_range(0..=spec.max_past_ms))
                .collect();
            let array: ArrayRef = Arc::new(TimestampMillisecondArray::from(millis));
            cast(&array, &DataType::Timestamp(*unit, zone.clone()))?
        }
        DataType::Struct(fields) => {
            let children = fields
                .iter()
                .map(|child| {
                    random_array(
                        child,
                        &FieldSpec {
                            sequence: None,
                            ..spec.clone()
                        },
                        rng,
                        first,
                        step,
                        count,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(StructArray::try_new(fields.clone(), children, None)?)
        }
        DataType::List(element) => {
            let per_row = spec.element_count;
            let values = random_array(
                element,
                &FieldSpec {
                    sequence: None,
                    ..spec.clone()
                },
                rng,
                0,
                1,
                count * per_row,
            )?;
            let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(per_row, count));
            Arc::new(ListArray::try_new(element.clone(), offsets, values, None)?)
        }
        other => {
            return Err(SluiceError::Config(format!(
                "datagen cannot generate column `{}` of type {other}",
                field.name()
            )))
        }
    };
    if spec.null_rate > 0.0 {
        let valid: Vec<bool> = (0..count)
            .map(|_| rng.gen::<f64>() >= spec.null_rate)
            .collect();
        let nulls = NullBuffer::from(valid);
        let data = array.to_data().into_builder().nulls(Some(nulls)).build()?;
        return Ok(arrow::array::make_array(data));
    }
    if count == 0 {
        return Ok(new_null_array(field.data_type(), 0));
    }
    Ok(array)
}

impl SourceConnector for DatagenSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.rows.is_some()
    }

    fn open(&self, parallelism: usize) -> Result<Vec<Box<dyn SourceReader>>> {
        self.open_at(parallelism, &[])
    }

    /// Reader `i` resumes at the next row number reader `i` of the
    /// checkpointed run would have produced (same parallelism only);
    /// sequences continue exactly, random fields draw new values.
    fn open_at(
        &self,
        parallelism: usize,
        positions: &[Vec<u8>],
    ) -> Result<Vec<Box<dyn SourceReader>>> {
        let resumed = crate::per_subtask_positions("datagen", positions, parallelism, |p| {
            std::str::from_utf8(p).ok()?.parse::<u64>().ok()
        })?;
        let source = Arc::new(DatagenSource {
            schema: self.schema.clone(),
            specs: self.specs.clone(),
            rows: self.rows,
            rows_per_second: self.rows_per_second,
            seed: self.seed,
            batch_size: self.batch_size,
        });
        Ok((0..parallelism)
            .map(|subtask| {
                let next_row = resumed.get(subtask).copied().unwrap_or(subtask as u64);
                Box::new(DatagenReader {
                    source: source.clone(),
                    rng: SmallRng::seed_from_u64(match resumed.get(subtask) {
                        None => source.seed.wrapping_add(subtask as u64),
                        Some(row) => source
                            .seed
                            .wrapping_add(subtask as u64)
                            .wrapping_add(row.wrapping_mul(0x9e37_79b9)),
                    }),
                    next_row,
                    step: parallelism as u64,
                    rate: source.rows_per_second / parallelism as f64,
                    started: Instant::now(),
                    emitted: 0,
                }) as Box<dyn SourceReader>
            })
            .collect())
    }

    fn describe(&self) -> String {
        match self.rows {
            Some(rows) => format!("datagen, {rows} rows at {} rows/s", self.rows_per_second),
            None => format!("datagen, unbounded at {} rows/s", self.rows_per_second),
        }
    }
}

struct DatagenReader {
    source: Arc<DatagenSource>,
    rng: SmallRng,
    next_row: u64,
    step: u64,
    rate: f64,
    started: Instant,
    emitted: u64,
}

#[async_trait]
impl SourceReader for DatagenReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        let mut count = self
            .source
            .batch_size
            .min(((self.rate / 10.0).ceil() as usize).max(1));
        if let Some(rows) = self.source.rows {
            if self.next_row >= rows {
                return Ok(None);
            }
            count = count.min((rows - self.next_row).div_ceil(self.step) as usize);
        }
        let due = Duration::from_secs_f64(self.emitted as f64 / self.rate.max(1e-9));
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        let batch = self
            .source
            .generate(&mut self.rng, self.next_row, self.step, count)?;
        self.next_row += count as u64 * self.step;
        self.emitted += count as u64;
        Ok(Some(ChangeBatch::inserts(batch)))
    }

    fn position(&self) -> Result<Vec<u8>> {
        Ok(self.next_row.to_string().into_bytes())
    }
}
