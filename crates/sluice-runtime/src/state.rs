//! Keyed operator state. Every stateful operator that keeps values per key
//! (joins, Top-N, updating aggregates, OVER windows) keeps them in a
//! [`KeyedState`]: values by key bytes, event-time timers that tell the
//! operator when a key's state may be freed, and the processing-time TTL of
//! `table.exec.state.ttl`. Checkpoints snapshot this one structure.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::aggregate::StateExpiry;

struct Slot<V> {
    value: V,
    /// When the key was last written (for the TTL).
    last_write: Instant,
}

/// Values per key, with event-time timers and an idle-key TTL.
pub struct KeyedState<V> {
    slots: HashMap<Vec<u8>, Slot<V>>,
    /// Event time → keys with a timer at that time (a key may repeat).
    timers: BTreeMap<i64, Vec<Vec<u8>>>,
    expiry: StateExpiry,
}

impl<V> KeyedState<V> {
    /// Empty state; keys not written for `ttl` are expired by [`KeyedState::expire_idle`].
    pub fn new(ttl: Option<Duration>) -> Self {
        KeyedState {
            slots: HashMap::new(),
            timers: BTreeMap::new(),
            expiry: StateExpiry::new(ttl),
        }
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.slots.get(key).map(|slot| &slot.value)
    }

    /// The value of `key` for reading and changing, without refreshing its TTL.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.slots.get_mut(key).map(|slot| &mut slot.value)
    }

    /// The value of `key` for writing (created with `default` when absent);
    /// refreshes the key's TTL.
    pub fn write(&mut self, key: &[u8], now: Instant, default: impl FnOnce() -> V) -> &mut V {
        match self.try_write(key, now, || Ok::<V, std::convert::Infallible>(default())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`KeyedState::write`], with a fallible `default`.
    pub fn try_write<E>(
        &mut self,
        key: &[u8],
        now: Instant,
        default: impl FnOnce() -> Result<V, E>,
    ) -> Result<&mut V, E> {
        // Allocate the owned key only for a key not seen before.
        if !self.slots.contains_key(key) {
            let value = default()?;
            self.slots.insert(
                key.to_vec(),
                Slot {
                    value,
                    last_write: now,
                },
            );
        }
        let Some(slot) = self.slots.get_mut(key) else {
            unreachable!("the slot exists or was inserted above")
        };
        slot.last_write = now;
        Ok(&mut slot.value)
    }

    /// Removes `key`'s value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.slots.remove(key).map(|slot| slot.value)
    }

    /// Asks for `key` to be returned by [`KeyedState::due_timers`] once the
    /// watermark reaches `time`.
    pub fn register_timer(&mut self, key: &[u8], time: i64) {
        self.timers.entry(time).or_default().push(key.to_vec());
    }

    /// Removes and returns the timers at or before `watermark`, earliest first.
    pub fn due_timers(&mut self, watermark: i64) -> Vec<(i64, Vec<u8>)> {
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (time, keys) = entry.remove_entry();
            due.extend(keys.into_iter().map(|key| (time, key)));
        }
        due
    }

    /// Removes the keys not written for the TTL, when a sweep is due at `now`;
    /// returns them so the operator can account for them.
    pub fn expire_idle(&mut self, now: Instant) -> Vec<(Vec<u8>, V)> {
        let Some(ttl) = self.expiry.due(now) else {
            return Vec::new();
        };
        let idle: Vec<Vec<u8>> = self
            .slots
            .iter()
            .filter(|(_, slot)| now.duration_since(slot.last_write) >= ttl)
            .map(|(key, _)| key.clone())
            .collect();
        idle.into_iter()
            .filter_map(|key| self.slots.remove(&key).map(|slot| (key, slot.value)))
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots
            .iter()
            .map(|(key, slot)| (key.as_slice(), &slot.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_time_order_up_to_the_watermark() {
        let mut state: KeyedState<u32> = KeyedState::new(None);
        let now = Instant::now();
        *state.write(b"a", now, || 0) += 1;
        *state.write(b"a", now, || 0) += 1;
        assert_eq!(state.get(b"a"), Some(&2));
        state.register_timer(b"a", 20);
        state.register_timer(b"b", 10);
        state.register_timer(b"c", 30);
        assert_eq!(
            state.due_timers(20),
            vec![(10, b"b".to_vec()), (20, b"a".to_vec())]
        );
        assert!(state.due_timers(25).is_empty());
        assert_eq!(state.due_timers(i64::MAX), vec![(30, b"c".to_vec())]);
    }

    #[test]
    fn idle_keys_expire_after_the_ttl() {
        let ttl = Duration::from_millis(40);
        let mut state: KeyedState<u32> = KeyedState::new(Some(ttl));
        let start = Instant::now();
        state.write(b"old", start, || 1);
        state.write(b"new", start + ttl, || 2);
        let expired = state.expire_idle(start + ttl + Duration::from_millis(1));
        assert_eq!(expired, vec![(b"old".to_vec(), 1)]);
        assert_eq!(state.len(), 1);
    }
}
