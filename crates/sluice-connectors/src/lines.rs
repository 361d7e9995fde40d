//! Line-oriented input shared by the `filesystem` and `stdin` sources: one
//! thread reads lines into chunks, and `parallelism` readers pull chunks from a
//! shared channel and decode them in parallel.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::connector::SourceReader;
use sluice_core::{ChangeBatch, Result, SluiceError};

use crate::formats::{LineChunk, RecordDecoder};

/// Chunks buffered between the reading thread and the decoders.
const CHUNK_QUEUE: usize = 8;

/// Sends chunks of up to `lines_per_chunk` complete lines from one input.
pub struct LinePump {
    source: Arc<str>,
    lines_per_chunk: usize,
    sender: async_channel::Sender<Result<LineChunk>>,
    chunk: Vec<u8>,
    chunk_lines: usize,
    next_line: u64,
    partial: Vec<u8>,
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
        }
    }

    /// Reads every line available now. A last line without `\n` is kept back
    /// unless `at_end` (the input is complete). Sends a chunk when it is full or
    /// when the reader would block. Returns false when the receivers are gone.
    pub fn pump<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        at_end: bool,
    ) -> std::io::Result<bool> {
        loop {
            let read = reader.read_until(b'\n', &mut self.partial)?;
            if read == 0 {
                break;
            }
            if self.partial.last() == Some(&b'\n') {
                self.chunk.extend_from_slice(&self.partial);
                self.partial.clear();
                self.chunk_lines += 1;
                if (self.chunk_lines >= self.lines_per_chunk || reader.buffer().is_empty())
                    && !self.flush()
                {
                    return Ok(false);
                }
            }
        }
        if at_end && !self.partial.is_empty() {
            self.chunk.append(&mut self.partial);
            self.chunk.push(b'\n');
            self.chunk_lines += 1;
        }
        Ok(self.flush())
    }

    /// Sends the lines collected so far. Returns false when the receivers are gone.
    pub fn flush(&mut self) -> bool {
        if self.chunk_lines == 0 {
            return !self.sender.is_closed();
        }
        let chunk = LineChunk {
            source: self.source.clone(),
            first_line: self.next_line,
            data: std::mem::take(&mut self.chunk),
        };
        self.next_line += self.chunk_lines as u64;
        self.chunk_lines = 0;
        self.sender.send_blocking(Ok(chunk)).is_ok()
    }
}

/// One subtask's reader: pulls chunks and decodes them.
pub struct LineSourceReader {
    chunks: async_channel::Receiver<Result<LineChunk>>,
    decoder: Box<dyn RecordDecoder>,
}

#[async_trait]
impl SourceReader for LineSourceReader {
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        loop {
            let chunk = match self.chunks.recv().await {
                Err(_) => return Ok(None),
                Ok(chunk) => chunk?,
            };
            if let Some(batch) = self.decoder.decode(&chunk)? {
                if batch.num_rows() > 0 {
                    return Ok(Some(batch));
                }
            }
        }
    }
}

/// Starts `produce` on its own thread and returns one reader per decoder.
pub fn spawn_line_source(
    name: String,
    decoders: Vec<Box<dyn RecordDecoder>>,
    produce: impl FnOnce(async_channel::Sender<Result<LineChunk>>) -> Result<()> + Send + 'static,
) -> Result<Vec<Box<dyn SourceReader>>> {
    let (sender, receiver) = async_channel::bounded(CHUNK_QUEUE);
    let error_sender = sender.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Err(error) = produce(sender) {
                let _ = error_sender.send_blocking(Err(error));
            }
        })
        .map_err(|e| SluiceError::io("starting source thread", e))?;
    Ok(decoders
        .into_iter()
        .map(|decoder| {
            Box::new(LineSourceReader {
                chunks: receiver.clone(),
                decoder,
            }) as Box<dyn SourceReader>
        })
        .collect())
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
    sender: async_channel::Sender<Result<LineChunk>>,
) -> Result<()> {
    let open = |file: &Path| -> Result<BufReader<std::fs::File>> {
        std::fs::File::open(file)
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .map_err(|e| SluiceError::io(format!("opening '{}'", file.display()), e))
    };
    let Some(interval) = monitor_interval else {
        for file in list_files(path)? {
            let mut reader = open(&file)?;
            let mut pump =
                LinePump::new(&file.display().to_string(), lines_per_chunk, sender.clone());
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
                let reader = open(&file)?;
                let pump =
                    LinePump::new(&file.display().to_string(), lines_per_chunk, sender.clone());
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

    #[test]
    fn pump_chunks_lines_and_numbers_them() {
        let (sender, receiver) = async_channel::bounded(16);
        let mut pump = LinePump::new("mem", 2, sender);
        let mut input = BufReader::new(std::io::Cursor::new(b"a\nb\nc\nd".to_vec()));
        assert!(pump.pump(&mut input, true).unwrap());
        drop(pump);
        let chunks: Vec<LineChunk> = std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|c| c.unwrap())
            .collect();
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
