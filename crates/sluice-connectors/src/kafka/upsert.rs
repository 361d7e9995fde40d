//! `upsert-kafka` reading: every record is the new value of its key, a
//! tombstone (NULL value) deletes the key. The reader keeps the last value of
//! every key of its partitions (as the raw message) and turns records into a
//! proper changelog, as Flink's ChangelogNormalize does: `+I` for a new key,
//! `-U` old / `+U` new for a changed one, `-D` old for a tombstone. The kept
//! values go into the reader's checkpointed position.

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::array::{Int8Array, UInt32Array};
use arrow::datatypes::SchemaRef;
use base64::Engine as _;
use sluice_core::{ChangeBatch, Result, RowKind, SluiceError};

use super::record::{assemble, take_rows, ColumnSource, KafkaRecord};
use super::source::decode_keys;
use crate::formats::message::{Message, MessageDecoder};

/// The last value of every key, per partition.
#[derive(Debug, Default)]
pub(super) struct UpsertState {
    partitions: HashMap<(String, i32), HashMap<Vec<u8>, Vec<u8>>>,
}

/// Where an output row's value comes from.
enum RowValue {
    /// Row `usize` of this run's decoded values.
    New(usize),
    /// A kept value, number `usize` of the run's retracted values.
    Old(usize),
}

impl UpsertState {
    /// Restores the keys of the partitions `mine` selects from the states of
    /// all readers of a checkpoint.
    pub(super) fn restore(snapshots: &[Vec<u8>], mine: &dyn Fn(&str, i32) -> bool) -> Result<Self> {
        let mut state = UpsertState::default();
        for snapshot in snapshots {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(snapshot)
                .map_err(|e| SluiceError::State(format!("unreadable upsert-kafka state: {e}")))?;
            let mut input = bytes.as_slice();
            let unreadable = || SluiceError::State("truncated upsert-kafka state".into());
            let mut take = |n: usize| -> Result<&[u8]> {
                let (head, rest) = (input.get(..n), input.get(n..));
                match (head, rest) {
                    (Some(head), Some(rest)) => {
                        input = rest;
                        Ok(head)
                    }
                    _ => Err(unreadable()),
                }
            };
            let u32_of = |bytes: &[u8]| u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4]));
            let partitions = u32_of(take(4)?);
            for _ in 0..partitions {
                let len = u32_of(take(4)?) as usize;
                let topic = String::from_utf8_lossy(take(len)?).into_owned();
                let partition = u32_of(take(4)?) as i32;
                let count = u32_of(take(4)?);
                let mut keys = HashMap::with_capacity(count as usize);
                for _ in 0..count {
                    let len = u32_of(take(4)?) as usize;
                    let key = take(len)?.to_vec();
                    let len = u32_of(take(4)?) as usize;
                    keys.insert(key, take(len)?.to_vec());
                }
                if mine(&topic, partition) {
                    state.partitions.insert((topic, partition), keys);
                }
            }
        }
        Ok(state)
    }

    /// The kept values, base64 text for the JSON position.
    pub(super) fn snapshot(&self) -> Result<String> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.partitions.len() as u32).to_le_bytes());
        let mut partitions: Vec<_> = self.partitions.iter().collect();
        partitions.sort_by(|a, b| a.0.cmp(b.0));
        for ((topic, partition), keys) in partitions {
            out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&(*partition as u32).to_le_bytes());
            out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            let mut entries: Vec<_> = keys.iter().collect();
            entries.sort();
            for (key, value) in entries {
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Turns one partition's records into changelog rows. The kept values
    /// change only once the whole run is decoded: the call may be cancelled
    /// at any await (a schema registry lookup) and made again for the same
    /// records, which must then see the kept values as they were.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply(
        &mut self,
        source: &str,
        records: &[KafkaRecord],
        value_decoder: &mut Box<dyn MessageDecoder>,
        key_decoder: Option<&mut (Box<dyn MessageDecoder>, SchemaRef)>,
        schema: &SchemaRef,
        columns: &[ColumnSource],
        topics: &[String],
    ) -> Result<Option<ChangeBatch>> {
        let Some(first) = records.first() else {
            return Ok(None);
        };
        let partition = (topics[first.topic].clone(), first.partition);
        // New values first: one that does not decode changes nothing.
        let with_value: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].value.is_some() && records[i].key.is_some())
            .collect();
        let messages: Vec<Message<'_>> = with_value
            .iter()
            .map(|&i| Message {
                position: records[i].offset as u64,
                payload: records[i].value.as_deref().unwrap_or_default(),
            })
            .collect();
        let decoded = value_decoder.decode_messages(source, &messages).await?;
        let mut new_row_of: HashMap<usize, usize> = HashMap::new();
        if let Some(decoded) = &decoded {
            for (row, &message) in decoded.origins.iter().enumerate() {
                new_row_of.insert(with_value[message], row);
            }
        }
        let mut staged = StagedKeys::over(self.partitions.get(&partition));
        let (rows, retracted) = staged.changelog(source, records, &new_row_of);
        if rows.is_empty() {
            let changes = staged.into_changes();
            self.commit(partition, changes);
            return Ok(None);
        }
        // Kept values decoded before, so they decode again.
        let old_messages: Vec<Message<'_>> = retracted
            .iter()
            .map(|payload| Message {
                position: first.offset as u64,
                payload,
            })
            .collect();
        let old = if old_messages.is_empty() {
            None
        } else {
            value_decoder.decode_messages(source, &old_messages).await?
        };
        let new_count = decoded.as_ref().map_or(0, |d| d.batch.num_rows());
        let mut old_row_of = HashMap::new();
        if let Some(old) = &old {
            for (row, &message) in old.origins.iter().enumerate() {
                old_row_of.insert(message, new_count + row);
            }
        }
        let parts: Vec<ChangeBatch> = decoded
            .into_iter()
            .chain(old)
            .map(|d| ChangeBatch::inserts(d.batch.data))
            .collect();
        let all = ChangeBatch::concat(&parts)?;
        let mut indices = Vec::with_capacity(rows.len());
        let mut kinds = Vec::with_capacity(rows.len());
        let mut row_records: Vec<&KafkaRecord> = Vec::with_capacity(rows.len());
        for (value, kind, record) in &rows {
            let index = match value {
                RowValue::New(row) => Some(*row),
                RowValue::Old(number) => old_row_of.get(number).copied(),
            };
            if let Some(index) = index {
                indices.push(index as u32);
                kinds.push(*kind as i8);
                row_records.push(&records[*record]);
            }
        }
        let taken = all.take(&UInt32Array::from(indices))?;
        let mut value = ChangeBatch {
            data: taken.data,
            kinds: Some(Int8Array::from(kinds)),
        };
        let key = match key_decoder {
            None => None,
            Some((key_decoder, key_schema)) => {
                let (kept, key) =
                    decode_keys(source, key_decoder, key_schema, &row_records).await?;
                if kept.len() != row_records.len() {
                    value = take_rows(&value, &kept)?;
                    row_records = kept.iter().map(|&i| row_records[i as usize]).collect();
                }
                Some(key)
            }
        };
        let batch = assemble(schema, columns, &value, key.as_ref(), &row_records, topics)?;
        // Past the last await: the run is done, its changes are kept.
        let changes = staged.into_changes();
        self.commit(partition, changes);
        Ok(Some(batch))
    }

    /// Stores a decoded run's changes to a partition's kept values.
    fn commit(&mut self, partition: (String, i32), changes: StagedChanges) {
        let keys = self.partitions.entry(partition).or_default();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    keys.insert(key, value);
                }
                None => {
                    keys.remove(&key);
                }
            }
        }
    }
}

/// A run's changes to the kept values, by key: `Some` new value, or `None`
/// for a deleted key.
type StagedChanges = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// An output row: where its value comes from, its kind, and the index of its
/// record in the run.
type ChangelogRow = (RowValue, RowKind, usize);

/// One partition's kept values as a run being decoded sees them: the stored
/// values under the run's own changes so far (so a key that appears twice in
/// a run sees its first record's value). The stored values stay untouched.
struct StagedKeys<'a> {
    /// The kept values before the run (none yet for a new partition).
    stored: Option<&'a HashMap<Vec<u8>, Vec<u8>>>,
    /// The run's changes so far.
    changes: StagedChanges,
}

impl<'a> StagedKeys<'a> {
    fn over(stored: Option<&'a HashMap<Vec<u8>, Vec<u8>>>) -> Self {
        StagedKeys {
            stored,
            changes: HashMap::new(),
        }
    }

    /// Sets the value of `key` (`None` deletes it); returns the one it had.
    fn replace(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Option<Cow<'a, [u8]>> {
        match self.changes.insert(key.to_vec(), value) {
            Some(staged) => staged.map(Cow::Owned),
            None => self
                .stored
                .and_then(|stored| stored.get(key))
                .map(|old| Cow::Borrowed(old.as_slice())),
        }
    }

    /// Stages the change of every record of the run. Returns the changelog
    /// rows and the kept values they retract (numbered by [`RowValue::Old`]).
    /// `new_row_of` maps a record's index to its decoded value's row.
    fn changelog(
        &mut self,
        source: &str,
        records: &[KafkaRecord],
        new_row_of: &HashMap<usize, usize>,
    ) -> (Vec<ChangelogRow>, Vec<Cow<'a, [u8]>>) {
        let mut rows: Vec<ChangelogRow> = Vec::new();
        let mut retracted: Vec<Cow<'a, [u8]>> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let Some(key) = &record.key else {
                tracing::warn!(
                    source,
                    offset = record.offset,
                    "upsert-kafka: a record without a key is ignored"
                );
                continue;
            };
            match (&record.value, new_row_of.get(&index)) {
                (Some(value), Some(&row)) => match self.replace(key, Some(value.clone())) {
                    Some(old) => {
                        retracted.push(old);
                        rows.push((
                            RowValue::Old(retracted.len() - 1),
                            RowKind::UpdateBefore,
                            index,
                        ));
                        rows.push((RowValue::New(row), RowKind::UpdateAfter, index));
                    }
                    None => rows.push((RowValue::New(row), RowKind::Insert, index)),
                },
                // A value that did not decode: the policy has it.
                (Some(_), None) => {}
                (None, _) => {
                    if let Some(old) = self.replace(key, None) {
                        retracted.push(old);
                        rows.push((RowValue::Old(retracted.len() - 1), RowKind::Delete, index));
                    }
                }
            }
        }
        (rows, retracted)
    }

    /// The run's changes, to store once it is decoded.
    fn into_changes(self) -> StagedChanges {
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_keys_see_the_run_s_own_changes_and_leave_the_stored_values_alone() {
        let stored: HashMap<Vec<u8>, Vec<u8>> = HashMap::from([(b"a".to_vec(), b"1".to_vec())]);
        let mut staged = StagedKeys::over(Some(&stored));
        // An update of a stored key, then its delete, within one run.
        assert_eq!(
            staged.replace(b"a", Some(b"2".to_vec())).as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(staged.replace(b"a", None).as_deref(), Some(&b"2"[..]));
        // A new key, then an update of it.
        assert_eq!(staged.replace(b"b", Some(b"3".to_vec())), None);
        assert_eq!(
            staged.replace(b"b", Some(b"4".to_vec())).as_deref(),
            Some(&b"3"[..])
        );
        // A delete of a key nobody has.
        assert_eq!(staged.replace(b"c", None), None);
        let changes = staged.into_changes();
        assert_eq!(stored.get(&b"a"[..]), Some(&b"1".to_vec()));

        let mut state = UpsertState::default();
        state.partitions.insert(("t".into(), 0), stored.clone());
        state.commit(("t".into(), 0), changes);
        let kept = &state.partitions[&("t".to_string(), 0)];
        assert_eq!(kept.get(&b"a"[..]), None);
        assert_eq!(kept.get(&b"b"[..]), Some(&b"4".to_vec()));
        assert_eq!(kept.len(), 1);
    }
}
