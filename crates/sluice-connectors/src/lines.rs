//! Line-oriented input shared by the `filesystem` and `stdin` sources: one
//! thread reads lines into chunks, and `parallelism` readers pull chunks from a
//! shared channel and decode them in parallel.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::connector::SourceReader;
use sluice_core::dlq::BadRecordPolicy;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::decode_pool::{self, Decoding};
use crate::formats::{LineChunk, RecordDecoder};

/// Chunks buffered between the reading thread and the decoders (which
/// also hold a few being decoded).
const CHUNK_QUEUE: usize = 4;

/// A run of consumed lines of one input: lines `first..end`, bytes
/// `start_byte..end_byte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRange {
    /// First line (1-based).
    pub first: u64,
    /// One past the last line.
    pub end: u64,
    /// Byte offset of the first line.
    pub start_byte: u64,
    /// Byte offset past the last line.
    pub end_byte: u64,
}

/// The lines of each input that readers have passed on: a line source's
/// checkpoint position. Readers take chunks from a shared queue, so the
/// lines consumed before a checkpoint are a prefix of each input plus a few
/// ranges beyond it; the union of every reader's set is what was read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumedLines {
    /// Input name → consumed ranges, sorted and merged.
    pub inputs: BTreeMap<String, Vec<LineRange>>,
}

impl ConsumedLines {
    /// Adds a range of `input`.
    pub fn add(&mut self, input: &str, range: LineRange) {
        if range.first >= range.end {
            return;
        }
        if !self.inputs.contains_key(input) {
            self.inputs.insert(input.to_string(), Vec::new());
        }
        let Some(ranges) = self.inputs.get_mut(input) else {
            return;
        };
        // Insert in order, then merge it with the ranges it touches.
        let mut at = ranges.partition_point(|r| r.first < range.first);
        ranges.insert(at, range);
        if at > 0 && ranges[at - 1].end >= ranges[at].first {
            at -= 1;
            let next = ranges.remove(at + 1);
            if next.end > ranges[at].end {
                ranges[at].end = next.end;
                ranges[at].end_byte = next.end_byte;
            }
        }
        while at + 1 < ranges.len() && ranges[at].end >= ranges[at + 1].first {
            let next = ranges.remove(at + 1);
            if next.end > ranges[at].end {
                ranges[at].end = next.end;
                ranges[at].end_byte = next.end_byte;
            }
        }
    }

    /// Adds every range of `other`.
    pub fn union(&mut self, other: &ConsumedLines) {
        for (input, ranges) in &other.inputs {
            for range in ranges {
                self.add(input, *range);
            }
        }
    }

    /// Reads positions written by [`LineSourceReader`]s (JSON).
    pub fn from_positions(positions: &[Vec<u8>]) -> Result<Self> {
        let mut all = ConsumedLines::default();
        for position in positions.iter().filter(|p| !p.is_empty()) {
            let consumed: ConsumedLines = serde_json::from_slice(position)
                .map_err(|e| SluiceError::State(format!("unreadable line source position: {e}")))?;
            all.union(&consumed);
        }
        Ok(all)
    }

    /// The ranges of `input` already consumed.
    pub fn of(&self, input: &str) -> &[LineRange] {
        self.inputs.get(input).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Sends chunks of up to `lines_per_chunk` complete lines from one input.
pub struct LinePump {
    source: Arc<str>,
    lines_per_chunk: usize,
    sender: async_channel::Sender<Result<LineChunk>>,
    chunk: Vec<u8>,
    chunk_lines: usize,
    next_line: u64,
    partial: Vec<u8>,
    /// Byte offset of the start of `partial` (everything before is chunked).
    offset: u64,
    /// Byte offset of the start of `chunk`.
    chunk_start: u64,
    /// Line ranges consumed in a checkpointed run, skipped when reached.
    skip: VecDeque<LineRange>,
    /// Send a partial chunk whenever the read buffer runs dry (an input
    /// whose reads block, like stdin); otherwise only full chunks and the
    /// rest at the end of each pass.
    flush_on_drain: bool,
}

impl LinePump {
    /// A pump for one named input.
    pub fn new(
        source: &str,
        lines_per_chunk: usize,
        sender: async_channel::Sender<Result<LineChunk>>,
    ) -> Self {
        LinePump {
            source: Arc::from(source),
            lines_per_chunk: lines_per_chunk.max(1),
            sender,
            chunk: Vec::new(),
            chunk_lines: 0,
            next_line: 1,
            partial: Vec::new(),
            offset: 0,
            chunk_start: 0,
            skip: VecDeque::new(),
            flush_on_drain: false,
        }
    }

    /// Sends what it has whenever the input has no more bytes buffered, so
    /// lines of an input whose reads block (stdin) are not held back.
    pub fn flushing_on_drain(mut self) -> Self {
        self.flush_on_drain = true;
        self
    }

    /// Resumes after `consumed` (ranges of this input read before): returns
    /// the byte offset to read from; later consumed ranges are skipped.
    pub fn resume(&mut self, consumed: &[LineRange]) -> u64 {
        let mut ranges: VecDeque<LineRange> = consumed.iter().copied().collect();
        if let Some(prefix) = ranges.front().copied().filter(|r| r.first == 1) {
            ranges.pop_front();
            self.next_line = prefix.end;
            self.offset = prefix.end_byte;
            self.chunk_start = prefix.end_byte;
        }
        self.skip = ranges;
        self.offset
    }

    fn skips(&mut self, line: u64) -> bool {
        while let Some(range) = self.skip.front() {
            if line >= range.end {
                self.skip.pop_front();
            } else {
                return line >= range.first;
            }
        }
        false
    }

    /// Takes a complete `line` (with its `\n`): chunks it, or skips it when
    /// a checkpointed run already consumed it. Returns false when the
    /// receivers are gone.
    fn take_line(&mut self, line: &[u8], ends_chunk: bool) -> bool {
        let number = self.next_line + self.chunk_lines as u64;
        let length = line.len() as u64;
        if self.skips(number) {
            if !self.flush() {
                return false;
            }
            self.next_line += 1;
            self.offset += length;
            self.chunk_start = self.offset;
            return true;
        }
        self.chunk.extend_from_slice(line);
        self.offset += length;
        self.chunk_lines += 1;
        if self.chunk_lines >= self.lines_per_chunk || ends_chunk {
            return self.flush();
        }
        true
    }

    /// Reads every line available now. A last line without `\n` is kept back
    /// unless `at_end` (the input is complete). Sends a chunk when it is full or
    /// when the reader would block. Returns false when the receivers are gone.
    pub fn pump<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        at_end: bool,
    ) -> std::io::Result<bool> {
        // Lines are cut straight out of the reader's buffer (a line that
        // spans two fills is assembled in `partial`).
        loop {
            let buffer = reader.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            let filled = buffer.len();
            let mut start = 0;
            while let Some(newline) = memchr::memchr(b'\n', &buffer[start..]) {
                let end = start + newline + 1;
                let drained = self.flush_on_drain && end == filled;
                let open = if self.partial.is_empty() {
                    self.take_line(&buffer[start..end], drained)
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&buffer[start..end]);
                    let open = self.take_line(&line, drained);
                    line.clear();
                    self.partial = line;
                    open
                };
                if !open {
                    return Ok(false);
                }
                start = end;
            }
            self.partial.extend_from_slice(&buffer[start..]);
            reader.consume(filled);
        }
        if at_end && !self.partial.is_empty() {
            self.partial.push(b'\n');
            let line = self.next_line + self.chunk_lines as u64;
            if self.skips(line) {
                self.partial.clear();
            } else {
                // The added newline is not in the input.
                self.chunk.extend_from_slice(&self.partial);
                self.offset += self.partial.len() as u64 - 1;
                self.partial.clear();
                self.chunk_lines += 1;
            }
        }
        Ok(self.flush())
    }

    /// Sends the lines collected so far. Returns false when the receivers are gone.
    pub fn flush(&mut self) -> bool {
        if self.chunk_lines == 0 {
            return !self.sender.is_closed();
        }
        // The next chunk is likely as long: size it once instead of growing it.
        let capacity = self.chunk.len() + self.chunk.len() / 8;
        let chunk = LineChunk {
            source: self.source.clone(),
            first_line: self.next_line,
            data: std::mem::replace(&mut self.chunk, Vec::with_capacity(capacity)),
            line_count: self.chunk_lines as u64,
            start_offset: self.chunk_start,
            end_offset: self.offset,
        };
        self.next_line += self.chunk_lines as u64;
        self.chunk_lines = 0;
        self.chunk_start = self.offset;
        self.sender.send_blocking(Ok(chunk)).is_ok()
    }
}

/// Chunk decodes one reader keeps in flight at once, on the process's decode
/// threads (one per core, [`crate::decode_pool`]): with
/// `parallelism` readers on `cores` cores, `2 * cores / parallelism` (2 to
/// 4), so decoding overlaps the operators even at parallelism 1, and a core
/// that frees up finds a chunk to decode (twice the cores measured 15% faster
/// on q0 than one per core, for about 40 MB more peak memory).
fn concurrent_decodes(parallelism: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (2 * cores / parallelism.max(1)).clamp(2, 4)
}

/// Decoded chunks a reader's decoding may queue beyond its running decodes
/// while the operators after it gather batches (`SourceReader::read_ahead`):
/// decoding goes on while they are busy with what they gathered (a
/// `GROUP BY` aggregating the rows it held back), so they then find their
/// next chunks decoded. Measured on q16 (10M events, 2 cores): 2.6x the
/// events/s of decoding only when the task polls. Otherwise nothing queues
/// beyond the running decodes (each decoded chunk ahead costs memory).
const DECODED_AHEAD: usize = 12;

/// A decoder with the holding copy of the bad-record policy it rejects
/// through: what it rejects in a chunk is applied when the chunk is emitted.
struct ChunkDecoder {
    decoder: Box<dyn RecordDecoder>,
    policy: BadRecordPolicy,
}

/// A decoded chunk, with the decoder to reuse.
struct DecodedChunk {
    decoder: ChunkDecoder,
    input: Arc<str>,
    lines: LineRange,
    result: Result<Option<ChangeBatch>>,
}

impl ChunkDecoder {
    fn decode(mut self, chunk: LineChunk) -> DecodedChunk {
        let result = self.decoder.decode(&chunk);
        DecodedChunk {
            decoder: self,
            lines: LineRange {
                first: chunk.first_line,
                end: chunk.first_line + chunk.line_count,
                start_byte: chunk.start_offset,
                end_byte: chunk.end_offset,
            },
            input: chunk.source,
            result,
        }
    }
}

/// What a reader's decoding task hands over: decoded chunks in the order
/// they were pulled, then the input's failure, if it failed.
type Decoded = Result<DecodedChunk>;

/// A reader's decoding task, before its first `next_batch` starts it.
struct DecodingStart {
    chunks: async_channel::Receiver<Result<LineChunk>>,
    decoders: Arc<FreeDecoders>,
    results: tokio::sync::mpsc::Sender<Decoded>,
    concurrency: usize,
}

/// A reader's decoders not holding a chunk, and how many may hold one. The
/// last one returned is used first, so a reader that does not run far ahead
/// keeps reusing a few decoders, and only those hold buffers sized for a
/// chunk.
struct FreeDecoders {
    free: std::sync::Mutex<Vec<ChunkDecoder>>,
    /// All decoders, free or not.
    total: usize,
    /// Decoders that may hold a chunk (decoding, or decoded and queued):
    /// the running decodes, plus [`DECODED_AHEAD`] when reading deep.
    shallow: usize,
    deep: std::sync::atomic::AtomicBool,
    /// A decoder came back, or reading went deeper.
    changed: tokio::sync::Notify,
}

impl FreeDecoders {
    fn put(&self, decoder: ChunkDecoder) {
        if let Ok(mut free) = self.free.lock() {
            free.push(decoder);
        }
        self.changed.notify_one();
    }

    /// A free decoder, unless as many as allowed hold chunks.
    fn take(&self) -> Option<ChunkDecoder> {
        let mut free = self.free.lock().ok()?;
        let allowed = if self.deep.load(std::sync::atomic::Ordering::Relaxed) {
            self.total
        } else {
            self.shallow
        };
        if self.total - free.len() < allowed {
            free.pop()
        } else {
            None
        }
    }

    fn set_deep(&self, deep: bool) {
        let was = self.deep.swap(deep, std::sync::atomic::Ordering::Relaxed);
        if deep && !was {
            self.changed.notify_one();
        }
    }
}

/// One subtask's reader. Its decoding task pulls chunks, decodes up to
/// `concurrency` at once on the decode threads, and queues them in the order
/// it pulled them; a decoded chunk keeps its decoder (and the bad records it
/// rejected, held) until the reader emits it and returns the decoder, so the
/// decoders bound how far decoding runs ahead.
pub struct LineSourceReader {
    start: Option<DecodingStart>,
    /// Decoded chunks, oldest first (a cancelled `next_batch` loses nothing).
    results: tokio::sync::mpsc::Receiver<Decoded>,
    /// Where emitted chunks' decoders go back to the decoding task.
    free_decoders: Arc<FreeDecoders>,
    /// Every line this reader passed on, plus what the run it resumes read.
    consumed: ConsumedLines,
}

/// Decodes `chunks` until they end, the input fails or the reader is gone.
async fn decode_chunks(start: DecodingStart) {
    let DecodingStart {
        chunks,
        decoders,
        results,
        concurrency,
    } = start;
    let mut decoding: VecDeque<Decoding<DecodedChunk>> = VecDeque::new();
    let mut free: Option<ChunkDecoder> = None;
    let mut failed: Option<SluiceError> = None;
    let mut drained = false;
    loop {
        let can_start = !drained && failed.is_none() && decoding.len() < concurrency;
        if !can_start && decoding.is_empty() {
            break;
        }
        if can_start && free.is_none() {
            free = decoders.take();
        }
        tokio::select! {
            biased;
            _ = results.closed() => return,
            done = async {
                match decoding.front_mut() {
                    Some(oldest) => oldest.finish().await,
                    None => std::future::pending().await,
                }
            }, if !decoding.is_empty() => {
                decoding.pop_front();
                if results.send(done).await.is_err() {
                    return;
                }
            }
            // A decoder came back (or reading went deeper): try again.
            _ = decoders.changed.notified(), if can_start && free.is_none() => {}
            chunk = chunks.recv(), if can_start && free.is_some() => match chunk {
                Ok(Ok(chunk)) => {
                    if let Some(decoder) = free.take() {
                        decoding.push_back(decode_pool::decode(move || decoder.decode(chunk)));
                    }
                }
                Ok(Err(error)) => failed = Some(error),
                Err(_) => drained = true,
            },
        }
    }
    // The failure follows the chunks pulled before it.
    if let Some(error) = failed {
        let _ = results.send(Err(error)).await;
    }
}

#[async_trait]
impl SourceReader for LineSourceReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        if let Some(start) = self.start.take() {
            tokio::spawn(decode_chunks(start));
        }
        loop {
            let Some(decoded) = self.results.recv().await else {
                return Ok(None);
            };
            let DecodedChunk {
                decoder,
                input,
                lines,
                result,
            } = decoded?;
            let released = decoder.policy.release();
            self.free_decoders.put(decoder);
            let decoded = result?;
            released?;
            self.consumed.add(&input, lines);
            if let Some(batch) = decoded.filter(|batch| batch.num_rows() > 0) {
                return Ok(Some(batch));
            }
        }
    }

    fn read_ahead(&mut self, deep: bool) {
        self.free_decoders.set_deep(deep);
    }

    fn position(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.consumed)
            .map_err(|e| SluiceError::State(format!("encoding a line source position: {e}")))
    }
}

/// Makes a decoder that rejects bad records through the policy it is given.
pub type DecoderFactory<'a> = dyn Fn(BadRecordPolicy) -> Result<Box<dyn RecordDecoder>> + 'a;

/// Starts `produce` on its own thread and returns `parallelism` readers, each
/// with its own decoders made by `make_decoder` (rejecting through `policy`).
pub fn spawn_line_source(
    name: String,
    parallelism: usize,
    policy: &BadRecordPolicy,
    make_decoder: &DecoderFactory<'_>,
    consumed: ConsumedLines,
    produce: impl FnOnce(async_channel::Sender<Result<LineChunk>>) -> Result<()> + Send + 'static,
) -> Result<Vec<Box<dyn SourceReader>>> {
    let concurrency = concurrent_decodes(parallelism);
    let decoder_count = concurrency + DECODED_AHEAD;
    let mut readers: Vec<Box<dyn SourceReader>> = Vec::with_capacity(parallelism);
    let (sender, receiver) = async_channel::bounded(CHUNK_QUEUE);
    for _ in 0..parallelism.max(1) {
        let mut free = Vec::with_capacity(decoder_count);
        for _ in 0..decoder_count {
            let policy = policy.holding();
            free.push(ChunkDecoder {
                decoder: make_decoder(policy.clone())?,
                policy,
            });
        }
        let free_decoders = Arc::new(FreeDecoders {
            free: std::sync::Mutex::new(free),
            total: decoder_count,
            shallow: concurrency,
            deep: std::sync::atomic::AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        });
        let (results_sender, results) = tokio::sync::mpsc::channel(decoder_count + 1);
        readers.push(Box::new(LineSourceReader {
            start: Some(DecodingStart {
                chunks: receiver.clone(),
                decoders: free_decoders.clone(),
                results: results_sender,
                concurrency,
            }),
            results,
            free_decoders,
            consumed: consumed.clone(),
        }));
    }
    let error_sender = sender.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Err(error) = produce(sender) {
                let _ = error_sender.send_blocking(Err(error));
            }
        })
        .map_err(|e| SluiceError::io("starting source thread", e))?;
    Ok(readers)
}

/// The files a `path` stands for: the file itself, or the visible files of a
/// directory tree (names starting with `.` or `_` are skipped), sorted.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| SluiceError::io(format!("reading path '{}'", path.display()), e))?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SluiceError::io(format!("listing '{}'", dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| SluiceError::io(format!("listing '{}'", dir.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let file_type = entry
                .file_type()
                .map_err(|e| SluiceError::io("reading file type", e))?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads the files of `path` once, or follows them (new files and appended
/// lines) every `monitor_interval`.
pub fn pump_files(
    path: &Path,
    lines_per_chunk: usize,
    monitor_interval: Option<Duration>,
    consumed: &ConsumedLines,
    sender: async_channel::Sender<Result<LineChunk>>,
) -> Result<()> {
    // Opens a file where a checkpointed run left it.
    let open = |file: &Path| -> Result<(BufReader<std::fs::File>, LinePump)> {
        let name = file.display().to_string();
        let mut pump = LinePump::new(&name, lines_per_chunk, sender.clone());
        let offset = pump.resume(consumed.of(&name));
        let mut handle = std::fs::File::open(file)
            .map_err(|e| SluiceError::io(format!("opening '{}'", file.display()), e))?;
        if offset > 0 {
            handle
                .seek(SeekFrom::Start(offset))
                .map_err(|e| SluiceError::io(format!("seeking in '{}'", file.display()), e))?;
        }
        Ok((BufReader::with_capacity(1 << 20, handle), pump))
    };
    let Some(interval) = monitor_interval else {
        for file in list_files(path)? {
            let (mut reader, mut pump) = open(&file)?;
            if !pump
                .pump(&mut reader, true)
                .map_err(|e| SluiceError::io(format!("reading '{}'", file.display()), e))?
            {
                return Ok(());
            }
        }
        return Ok(());
    };
    let mut followed: Vec<(PathBuf, BufReader<std::fs::File>, LinePump)> = Vec::new();
    loop {
        for file in list_files(path)? {
            if !followed.iter().any(|(known, _, _)| known == &file) {
                let (reader, pump) = open(&file)?;
                followed.push((file, reader, pump));
            }
        }
        for (file, reader, pump) in &mut followed {
            if !pump
                .pump(reader, false)
                .map_err(|e| SluiceError::io(format!("reading '{}'", file.display()), e))?
            {
                return Ok(());
            }
        }
        std::thread::sleep(interval);
        if sender.is_closed() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, RecordBatch, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema, UInt64Type};

    /// Decodes a chunk into one row holding its first line number; earlier
    /// chunks take longer, so later ones finish first.
    struct FirstLine;

    impl RecordDecoder for FirstLine {
        fn decode(&mut self, chunk: &LineChunk) -> Result<Option<ChangeBatch>> {
            std::thread::sleep(Duration::from_millis(
                20u64.saturating_sub(chunk.first_line / 2),
            ));
            let schema = Arc::new(Schema::new(vec![Field::new(
                "line",
                DataType::UInt64,
                false,
            )]));
            let rows = UInt64Array::from(vec![chunk.first_line]);
            let batch = RecordBatch::try_new(schema, vec![Arc::new(rows)])?;
            Ok(Some(ChangeBatch::inserts(batch)))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_decoded_ahead_come_out_in_input_order_despite_cancelled_reads() {
        let text: String = (1..=40).map(|i| format!("{i}\n")).collect();
        let mut readers = spawn_line_source(
            "test-read".into(),
            1,
            &BadRecordPolicy::fail("t"),
            &|_| Ok(Box::new(FirstLine)),
            ConsumedLines::default(),
            move |sender| {
                let mut input = BufReader::new(std::io::Cursor::new(text.into_bytes()));
                LinePump::new("mem", 4, sender)
                    .pump(&mut input, true)
                    .map(|_| ())
                    .map_err(|e| SluiceError::io("reading", e))
            },
        )
        .unwrap();
        let mut reader = readers.pop().unwrap();
        let mut firsts = Vec::new();
        loop {
            // Reads often cancelled mid-decode (as a source task's select! does).
            match tokio::time::timeout(Duration::from_millis(3), reader.next_batch()).await {
                Err(_) => continue,
                Ok(batch) => match batch.unwrap() {
                    None => break,
                    Some(batch) => {
                        firsts.push(batch.data.column(0).as_primitive::<UInt64Type>().value(0))
                    }
                },
            }
        }
        assert_eq!(firsts, (0..10).map(|c| 1 + 4 * c).collect::<Vec<u64>>());
        let consumed = ConsumedLines::from_positions(&[reader.position().unwrap()]).unwrap();
        assert_eq!(consumed.of("mem").len(), 1);
        assert_eq!(consumed.of("mem")[0].end, 41);
    }

    fn range(first: u64, end: u64) -> LineRange {
        LineRange {
            first,
            end,
            start_byte: first * 10,
            end_byte: end * 10,
        }
    }

    #[test]
    fn consumed_ranges_merge_in_any_order() {
        let mut consumed = ConsumedLines::default();
        consumed.add("f", range(5, 7));
        consumed.add("f", range(1, 3));
        consumed.add("f", range(9, 10));
        assert_eq!(consumed.of("f"), [range(1, 3), range(5, 7), range(9, 10)]);
        consumed.add("f", range(3, 5));
        assert_eq!(consumed.of("f"), [range(1, 7), range(9, 10)]);
        consumed.add("f", range(7, 9));
        assert_eq!(consumed.of("f"), [range(1, 10)]);
        assert!(consumed.of("other").is_empty());
    }

    #[test]
    fn resumed_pump_skips_consumed_lines() {
        let (sender, receiver) = async_channel::bounded(16);
        let mut pump = LinePump::new("mem", 10, sender);
        // Lines 1-2 (bytes 0..4) and line 4 were read before the checkpoint.
        let offset = pump.resume(&[
            LineRange {
                first: 1,
                end: 3,
                start_byte: 0,
                end_byte: 4,
            },
            LineRange {
                first: 4,
                end: 5,
                start_byte: 6,
                end_byte: 8,
            },
        ]);
        assert_eq!(offset, 4);
        let mut input = BufReader::new(std::io::Cursor::new(b"c\nd\ne\n".to_vec()));
        assert!(pump.pump(&mut input, true).unwrap());
        drop(pump);
        let lines: Vec<(u64, String)> = std::iter::from_fn(|| receiver.try_recv().ok())
            .flat_map(|c| {
                let c = c.unwrap();
                c.lines()
                    .map(|(n, l)| (n, String::from_utf8_lossy(l).into_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(lines, vec![(3, "c".into()), (5, "e".into())]);
    }

    /// The chunks of `lines_per_chunk` lines a fresh pump makes of `reader`'s whole input.
    fn pumped_chunks(lines_per_chunk: usize, mut reader: BufReader<impl Read>) -> Vec<LineChunk> {
        let (sender, receiver) = async_channel::bounded(16);
        let mut pump = LinePump::new("mem", lines_per_chunk, sender);
        assert!(pump.pump(&mut reader, true).unwrap());
        drop(pump);
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|c| c.unwrap())
            .collect()
    }

    #[test]
    fn pump_chunks_lines_and_numbers_them() {
        let input = BufReader::new(std::io::Cursor::new(b"a\nb\nc\nd".to_vec()));
        let chunks = pumped_chunks(2, input);
        let all: Vec<(u64, String)> = chunks
            .iter()
            .flat_map(|c| {
                c.lines()
                    .map(|(n, l)| (n, String::from_utf8_lossy(l).into_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            all,
            vec![
                (1, "a".into()),
                (2, "b".into()),
                (3, "c".into()),
                (4, "d".into())
            ]
        );
    }

    #[test]
    fn lines_split_across_small_reads_chunk_like_whole_ones() {
        let input: Vec<u8> = (1..=8)
            .flat_map(|n| format!("line {}\n", "x".repeat(n)).into_bytes())
            .collect();
        // A read buffer shorter than most lines, and one larger than the input.
        for capacity in [7, 1 << 16] {
            let reader = BufReader::with_capacity(capacity, std::io::Cursor::new(input.clone()));
            let chunks = pumped_chunks(3, reader);
            let firsts: Vec<(u64, u64)> = chunks
                .iter()
                .map(|c| (c.first_line, c.line_count))
                .collect();
            assert_eq!(firsts, vec![(1, 3), (4, 3), (7, 2)], "capacity {capacity}");
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
            assert_eq!(joined, input);
            // Byte offsets tile the input.
            let mut offset = 0;
            for chunk in &chunks {
                assert_eq!(chunk.start_offset, offset);
                offset = chunk.end_offset;
                assert_eq!(
                    (chunk.end_offset - chunk.start_offset) as usize,
                    chunk.data.len()
                );
            }
            assert_eq!(offset as usize, input.len());
        }
    }

    #[test]
    fn partial_line_waits_when_following() {
        let (sender, receiver) = async_channel::bounded(16);
        let mut pump = LinePump::new("mem", 10, sender);
        let mut input = BufReader::new(std::io::Cursor::new(b"a\nhalf".to_vec()));
        pump.pump(&mut input, false).unwrap();
        let chunk = receiver.try_recv().unwrap().unwrap();
        assert_eq!(chunk.data, b"a\n");
        input.get_mut().get_mut().extend_from_slice(b"-line\n");
        pump.pump(&mut input, false).unwrap();
        let chunk = receiver.try_recv().unwrap().unwrap();
        assert_eq!(chunk.data, b"half-line\n");
        assert_eq!(chunk.first_line, 2);
    }
}
