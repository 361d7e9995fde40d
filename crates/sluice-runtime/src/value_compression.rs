//! [`ValueCompressor`]: LZ4 for the encoded values of compacted keys, with
//! a dictionary made of the state's own first values.
//!
//! One compacted value is small (a row of a few hundred bytes, a key's rows
//! of a few kilobytes), too small for a compressor to find much in on its
//! own. Compressed against a dictionary holding the first values the state
//! compacted, text that repeats from key to key (URLs, names, channels)
//! costs a few bytes: a Nexmark auction's bids take 1.6x less. Each value stays compressed on its own, so a key is still decoded
//! alone when it is touched again. LZ4 over zstd: zstd (level 1, same
//! dictionary) took 2.1x less but cost 2.5x the time, a third of q20's run.

use sluice_core::Result;

use crate::state::bad_state;

/// Values shorter than this are stored as they are: LZ4 sets its
/// dictionary up for every value, which costs more than a short value
/// saves (one Nexmark bid a key, q18: 22% less memory for 27% less speed).
const MIN_COMPRESSED_LEN: usize = 512;
/// Bytes of values the dictionary is made of. LZ4 hashes the dictionary
/// on every call; a larger one barely compresses better (1.62x at 4 KiB,
/// 1.65x at 64 KiB on Nexmark bids).
const DICTIONARY_BYTES: usize = 4 << 10;
/// Values compressed before checking that it pays.
const TRIAL_VALUES: u32 = 4096;
/// Compression stops when the first values shrank by less than this
/// (stored bytes per ten raw bytes).
const MAX_STORED_TENTHS: u64 = 8;

/// Compresses and decompresses one state's compacted values.
pub(crate) struct ValueCompressor {
    /// Still collecting the values the dictionary is made of.
    samples: Option<Vec<u8>>,
    dictionary: Option<Vec<u8>>,
    /// Whether new values are compressed (off when it did not pay).
    compressing: bool,
    /// The last value compressed.
    scratch: Vec<u8>,
    /// Values compressed, and their bytes before and after.
    tried: u32,
    raw_bytes: u64,
    stored_bytes: u64,
}

impl ValueCompressor {
    /// A compressor that starts by collecting its dictionary, or (`enabled`
    /// false) one that never compresses.
    pub(crate) fn new(enabled: bool) -> Self {
        ValueCompressor {
            samples: enabled.then(Vec::new),
            dictionary: None,
            compressing: enabled,
            scratch: Vec::new(),
            tried: 0,
            raw_bytes: 0,
            stored_bytes: 0,
        }
    }

    /// Memory the dictionary and buffers take.
    pub(crate) fn memory(&self) -> usize {
        [&self.samples, &self.dictionary]
            .into_iter()
            .flatten()
            .map(Vec::capacity)
            .sum::<usize>()
            + self.scratch.capacity()
    }

    /// Compresses `encoded` when that is worth it, returning the frame's
    /// length; [`ValueCompressor::frame`] has the frame until the next call.
    pub(crate) fn compress(&mut self, encoded: &[u8]) -> Option<usize> {
        if !self.compressing || encoded.len() < MIN_COMPRESSED_LEN {
            return None;
        }
        if let Some(samples) = &mut self.samples {
            let room = DICTIONARY_BYTES - samples.len();
            samples
                .extend_from_slice(&encoded[..encoded.len().min(room).min(DICTIONARY_BYTES / 8)]);
            if samples.len() < DICTIONARY_BYTES {
                return None;
            }
            self.dictionary = self.samples.take();
        }
        let dictionary = self.dictionary.as_deref()?;
        self.scratch.clear();
        self.scratch
            .resize(lz4_flex::block::get_maximum_output_size(encoded.len()), 0);
        let length =
            lz4_flex::block::compress_into_with_dict(encoded, &mut self.scratch, dictionary)
                .ok()?;
        self.tried += 1;
        self.raw_bytes += encoded.len() as u64;
        self.stored_bytes += length as u64;
        if self.tried == TRIAL_VALUES && self.stored_bytes * 10 > self.raw_bytes * MAX_STORED_TENTHS
        {
            self.compressing = false;
        }
        (length < encoded.len()).then_some(length)
    }

    /// The frame of the last value compressed, `length` bytes long.
    pub(crate) fn frame(&self, length: usize) -> &[u8] {
        &self.scratch[..length]
    }

    /// Decompresses `frame` into `out`, which must be exactly as long as the
    /// value was.
    pub(crate) fn decompress(&self, frame: &[u8], out: &mut [u8]) -> Result<()> {
        let dictionary = self
            .dictionary
            .as_deref()
            .ok_or_else(|| bad_state("a compacted value is compressed without a dictionary"))?;
        let length = lz4_flex::block::decompress_into_with_dict(frame, out, dictionary).map_err(
            |error| bad_state(&format!("a compacted value does not decompress: {error}")),
        )?;
        if length != out.len() {
            return Err(bad_state(
                "a compacted value decompressed to the wrong length",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value like a key's stored rows: repeated text around varying
    /// letters.
    fn row(i: u64) -> Vec<u8> {
        (i * 8..i * 8 + 8)
            .flat_map(|i| {
                let letters: String = (0..40)
                    .map(|j| (b'a' + ((i * 7 + j * 13 + i * j) % 26) as u8) as char)
                    .collect();
                format!(
                    "{i}|channel-{}|https://www.nexmark.com/{letters}/item.htm?query=1",
                    i % 9
                )
                .into_bytes()
            })
            .collect()
    }

    #[test]
    fn values_compress_after_the_dictionary_and_come_back_the_same() {
        let mut compressor = ValueCompressor::new(true);
        let mut compressed = Vec::new();
        for i in 0..2_000 {
            let value = row(i);
            if let Some(length) = compressor.compress(&value) {
                let frame = compressor.frame(length).to_vec();
                compressed.push((value, frame));
            }
        }
        // The first values make the dictionary and are not compressed.
        assert!(compressed.len() > 1_500, "{}", compressed.len());
        let (raw, stored) = compressed
            .iter()
            .fold((0, 0), |(raw, stored), (value, frame)| {
                (raw + value.len(), stored + frame.len())
            });
        assert!(stored * 3 < raw * 2, "{stored} of {raw} bytes");
        for (value, frame) in &compressed {
            let mut out = vec![0; value.len()];
            compressor
                .decompress(frame, &mut out)
                .expect("decompresses");
            assert_eq!(&out, value);
        }
        let mut short = vec![0; 3];
        assert!(compressor.decompress(&compressed[0].1, &mut short).is_err());
        assert!(compressor.decompress(b"not a frame", &mut short).is_err());
    }

    #[test]
    fn short_values_and_a_disabled_compressor_store_values_as_they_are() {
        let mut off = ValueCompressor::new(false);
        let mut on = ValueCompressor::new(true);
        for i in 0..2_000 {
            assert!(off.compress(&row(i)).is_none());
            assert!(on.compress(&row(i)[..MIN_COMPRESSED_LEN - 1]).is_none());
        }
        assert_eq!(off.memory(), 0);
    }

    #[test]
    fn compression_stops_when_it_does_not_pay() {
        // Random bytes do not compress.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = || {
            (0..MIN_COMPRESSED_LEN)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect::<Vec<u8>>()
        };
        let mut compressor = ValueCompressor::new(true);
        for _ in 0..=TRIAL_VALUES * 2 {
            compressor.compress(&random());
        }
        assert!(!compressor.compressing);
        assert!(compressor.compress(&random()).is_none());
    }
}
