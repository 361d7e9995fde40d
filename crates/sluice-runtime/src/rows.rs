//! Helpers for state that keeps whole rows as Arrow row bytes and results as
//! scalar values: encoding, decoding, and building output columns.

use arrow::array::{new_null_array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use sluice_core::{Result, SluiceError};

use crate::operators::df;

/// An encoder of whole rows of `schema`; `operator` names the operator in
/// the error for a column type rows cannot hold.
pub(crate) fn whole_row_converter(schema: &SchemaRef, operator: &str) -> Result<RowConverter> {
    RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )
    .map_err(|e| SluiceError::Unsupported(format!("a column type of a {operator} input: {e}")))
}

/// Decodes encoded rows back into columns.
pub(crate) fn decode_rows<'r>(
    converter: &RowConverter,
    rows: impl Iterator<Item = &'r [u8]>,
) -> Result<Vec<ArrayRef>> {
    let parser = converter.parser();
    Ok(converter.convert_rows(rows.map(|row| parser.parse(row)))?)
}

/// Moves the `width` aggregate results out of each row (leaving it empty)
/// into one list per column, so building output columns clones nothing.
pub(crate) fn take_results<'r>(
    rows: impl Iterator<Item = &'r mut Vec<ScalarValue>>,
    width: usize,
) -> Vec<Vec<ScalarValue>> {
    // Sized up front: growing a column of 64-byte values copies it each time.
    let capacity = rows.size_hint().0;
    let mut columns: Vec<Vec<ScalarValue>> =
        (0..width).map(|_| Vec::with_capacity(capacity)).collect();
    for values in rows {
        for (column, value) in columns.iter_mut().zip(values.drain(..)) {
            column.push(value);
        }
    }
    columns
}

/// A column of `target` type from scalar values (cast when DataFusion's
/// result type differs, e.g. AVG's DOUBLE into a BIGINT column).
pub(crate) fn scalar_column(
    values: impl Iterator<Item = ScalarValue>,
    target: &DataType,
) -> Result<ArrayRef> {
    let mut values = values.peekable();
    if values.peek().is_none() {
        return Ok(new_null_array(target, 0));
    }
    let array = ScalarValue::iter_to_array(values).map_err(df)?;
    Ok(if array.data_type() == target {
        array
    } else {
        cast(&array, target)?
    })
}
