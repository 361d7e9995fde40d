//! The manifest of a checkpoint or savepoint: which chunk files hold whose
//! state. Written last and atomically, so a checkpoint exists exactly when its
//! manifest does.

use serde::{Deserialize, Serialize};

/// Version of the manifest format. A reader accepts this and older versions,
/// so a savepoint taken by one Sluice release is readable by the next.
pub const FORMAT_VERSION: u32 = 1;

/// What kind of snapshot a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// A periodic checkpoint.
    Checkpoint,
    /// A savepoint (self-contained, taken on request).
    Savepoint,
    /// The last checkpoint of a job whose input ended: its output is complete.
    Final,
}

/// What a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A source reader; chunk 0 is its position.
    Source,
    /// A stateful operator; its chunks are its state.
    Operator,
    /// A sink writer; chunk 0 is its pre-committed output, chunk 1 its state.
    Sink,
}

/// A stored chunk file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The content hash (xxh3-128, hex); the file is `shared/<hash>.chunk`.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// The state of one subtask of one plan node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentState {
    /// The plan node.
    pub node: usize,
    /// The subtask (of the manifest's parallelism).
    pub subtask: usize,
    /// What the component is.
    pub role: Role,
    /// Whether it had finished (end of input) when the snapshot was taken.
    #[serde(default)]
    pub finished: bool,
    /// Its state.
    pub chunks: Vec<ChunkRef>,
}

/// A checkpoint's or savepoint's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The Sluice release that wrote it.
    pub sluice_version: String,
    /// The job's name.
    pub job: String,
    /// The checkpoint's number.
    pub checkpoint: u64,
    /// Checkpoint, savepoint or final.
    pub kind: SnapshotKind,
    /// When it completed (ms since the epoch).
    pub created_ms: i64,
    /// The parallelism the job ran at.
    pub parallelism: usize,
    /// One line per plan node, to check that a job resumes its own state.
    pub operators: Vec<String>,
    /// Every component's state.
    pub components: Vec<ComponentState>,
}

impl Manifest {
    /// Every chunk the manifest references.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.components.iter().flat_map(|c| c.chunks.iter())
    }

    /// Total bytes of state referenced.
    pub fn total_bytes(&self) -> u64 {
        self.chunks().map(|c| c.size).sum()
    }
}
