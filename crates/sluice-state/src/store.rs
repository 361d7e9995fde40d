//! Checkpoint files on object storage.
//!
//! Layout under the checkpoint root:
//! - `shared/<xxh3-128>.chunk`: immutable state chunks, named by content, so
//!   a chunk that did not change since the last checkpoint is not written again;
//! - `chk-<n>.manifest`: the checkpoint's manifest, written last (atomic
//!   put): its first line is the checksum of the JSON that follows.
//!
//! Incomplete checkpoints (chunks without a manifest) are ignored, and their
//! chunks are deleted by [`CheckpointStore::retain`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_core::{Result, SluiceError};
use tracing::warn;
use twox_hash::{XxHash3_128, XxHash3_64};

use crate::manifest::{ChunkRef, Manifest, FORMAT_VERSION};

const MANIFEST_SUFFIX: &str = ".manifest";

fn storage(context: impl std::fmt::Display, error: object_store::Error) -> SluiceError {
    SluiceError::State(format!("{context}: {error}"))
}

/// A checkpoint directory (local or on an object store).
#[derive(Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    location: String,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointStore({})", self.location)
    }
}

/// A checkpoint read back: its manifest and every chunk it references, verified.
#[derive(Debug)]
pub struct RestoredCheckpoint {
    /// The manifest.
    pub manifest: Manifest,
    /// Chunk contents by hash.
    pub chunks: HashMap<String, Bytes>,
}

impl RestoredCheckpoint {
    /// The contents of `chunk`.
    pub fn chunk(&self, chunk: &ChunkRef) -> Result<&Bytes> {
        self.chunks
            .get(&chunk.hash)
            .ok_or_else(|| SluiceError::State(format!("chunk {} not loaded", chunk.hash)))
    }
}

impl CheckpointStore {
    /// Opens `location`: a local directory (created if missing), `file://...`,
    /// or `s3://bucket/prefix` (with the `s3` feature; credentials, region and
    /// endpoint from the usual `AWS_*` environment variables).
    pub fn open(location: &str) -> Result<Self> {
        if let Some((scheme, _)) = location.split_once("://") {
            if scheme != "file" {
                return Self::open_url(location);
            }
        }
        let directory = location.strip_prefix("file://").unwrap_or(location);
        std::fs::create_dir_all(directory).map_err(|e| {
            SluiceError::io(format!("creating checkpoint directory '{directory}'"), e)
        })?;
        let store = LocalFileSystem::new_with_prefix(directory)
            .map_err(|e| storage(format!("opening checkpoint directory '{directory}'"), e))?;
        Ok(CheckpointStore {
            store: Arc::new(store),
            root: Path::default(),
            location: directory.to_string(),
        })
    }

    #[cfg(feature = "s3")]
    fn open_url(location: &str) -> Result<Self> {
        let url = url::Url::parse(location)
            .map_err(|e| SluiceError::Config(format!("checkpoint location '{location}': {e}")))?;
        if !matches!(url.scheme(), "s3" | "s3a") {
            return Err(SluiceError::Config(format!(
                "checkpoint location '{location}': use a directory or s3://bucket/prefix"
            )));
        }
        // Credentials, region, endpoint (S3-compatible stores) and
        // AWS_ALLOW_HTTP come from the usual AWS_* environment variables.
        // Conditional puts (If-None-Match) make scale-out's ownership claims atomic.
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_url(location)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .build()
            .map_err(|e| storage(format!("checkpoint location '{location}'"), e))?;
        let root = Path::from_url_path(url.path())
            .map_err(|e| SluiceError::Config(format!("checkpoint location '{location}': {e}")))?;
        Ok(CheckpointStore {
            store: Arc::new(store),
            root,
            location: location.to_string(),
        })
    }

    #[cfg(not(feature = "s3"))]
    fn open_url(location: &str) -> Result<Self> {
        Err(SluiceError::Config(format!(
            "checkpoint location '{location}': this sluice binary was built without S3 \
             support (the `s3` feature); use a local directory"
        )))
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, relative: &str) -> Path {
        let mut path = self.root.clone();
        for part in relative.split('/') {
            path = path.clone().join(part);
        }
        path
    }

    fn chunk_path(&self, hash: &str) -> Path {
        self.path(&format!("shared/{hash}.chunk"))
    }

    fn manifest_path(&self, checkpoint: u64) -> Path {
        self.path(&format!("chk-{checkpoint:010}{MANIFEST_SUFFIX}"))
    }

    /// The reference a chunk with these contents gets.
    pub fn chunk_ref(contents: &[u8]) -> ChunkRef {
        ChunkRef {
            hash: format!("{:032x}", XxHash3_128::oneshot(contents)),
            size: contents.len() as u64,
        }
    }

    /// Stores a chunk unless `existing` says it is already stored. Returns
    /// its reference and whether it was written.
    pub async fn put_chunk(
        &self,
        contents: Vec<u8>,
        existing: &HashSet<String>,
    ) -> Result<(ChunkRef, bool)> {
        let chunk = Self::chunk_ref(&contents);
        if existing.contains(&chunk.hash) {
            return Ok((chunk, false));
        }
        self.store
            .put(&self.chunk_path(&chunk.hash), PutPayload::from(contents))
            .await
            .map_err(|e| storage("writing a checkpoint chunk", e))?;
        Ok((chunk, true))
    }

    /// Writes a manifest, completing its checkpoint.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| SluiceError::State(format!("encoding manifest: {e}")))?;
        let mut contents = format!("{:016x}\n", XxHash3_64::oneshot(&json)).into_bytes();
        contents.extend_from_slice(&json);
        self.store
            .put(
                &self.manifest_path(manifest.checkpoint),
                PutPayload::from(contents),
            )
            .await
            .map_err(|e| storage("writing a checkpoint manifest", e))?;
        Ok(())
    }

    /// Numbers of the checkpoints with a manifest, ascending.
    pub async fn checkpoints(&self) -> Result<Vec<u64>> {
        let listed: Vec<_> = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map(|listing| listing.objects)
            .map_err(|e| storage(format!("listing '{}'", self.location), e))?;
        let mut ids: Vec<u64> = listed
            .iter()
            .filter_map(|meta| {
                meta.location
                    .filename()?
                    .strip_prefix("chk-")?
                    .strip_suffix(MANIFEST_SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    async fn read(&self, path: &Path) -> Result<Bytes> {
        self.store
            .get(path)
            .await
            .map_err(|e| storage(format!("reading '{path}'"), e))?
            .bytes()
            .await
            .map_err(|e| storage(format!("reading '{path}'"), e))
    }

    /// Reads and verifies a checkpoint's manifest.
    pub async fn read_manifest(&self, checkpoint: u64) -> Result<Manifest> {
        let contents = self.read(&self.manifest_path(checkpoint)).await?;
        let corrupt = |what: &str| {
            SluiceError::State(format!(
                "checkpoint {checkpoint} in '{}': manifest {what}",
                self.location
            ))
        };
        let newline = contents
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("has no checksum line"))?;
        let (checksum, json) = (&contents[..newline], &contents[newline + 1..]);
        if checksum != format!("{:016x}", XxHash3_64::oneshot(json)).as_bytes() {
            return Err(corrupt("fails its checksum"));
        }
        let manifest: Manifest =
            serde_json::from_slice(json).map_err(|e| corrupt(&format!("cannot be parsed: {e}")))?;
        if manifest.format_version > FORMAT_VERSION {
            return Err(corrupt(&format!(
                "has format version {}, newer than this Sluice reads ({FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        Ok(manifest)
    }

    /// Reads a checkpoint and verifies every chunk's size and checksum.
    pub async fn load(&self, checkpoint: u64) -> Result<RestoredCheckpoint> {
        let manifest = self.read_manifest(checkpoint).await?;
        let mut chunks = HashMap::new();
        for chunk in manifest.chunks() {
            if chunks.contains_key(&chunk.hash) {
                continue;
            }
            let contents = self
                .read_chunk(chunk)
                .await
                .map_err(|e| SluiceError::State(format!("checkpoint {checkpoint}: {e}")))?;
            chunks.insert(chunk.hash.clone(), contents);
        }
        Ok(RestoredCheckpoint { manifest, chunks })
    }

    /// The newest checkpoint that reads back intact. A corrupt or unreadable
    /// one is reported and skipped in favour of the one before it.
    pub async fn load_latest(&self) -> Result<Option<RestoredCheckpoint>> {
        Ok(self.load_latest_skipping().await?.0)
    }

    /// Like [`CheckpointStore::load_latest`], also returning the numbers of
    /// the newer checkpoints that were skipped as unusable.
    pub async fn load_latest_skipping(&self) -> Result<(Option<RestoredCheckpoint>, Vec<u64>)> {
        let mut skipped = Vec::new();
        for checkpoint in self.checkpoints().await?.into_iter().rev() {
            match self.load(checkpoint).await {
                Ok(restored) => return Ok((Some(restored), skipped)),
                Err(error) => {
                    warn!(
                        "checkpoint {checkpoint} is unusable, falling back to the one before: \
                         {error}"
                    );
                    skipped.push(checkpoint);
                }
            }
        }
        Ok((None, skipped))
    }

    /// Reads one chunk of a checkpoint, verified.
    pub async fn read_chunk(&self, chunk: &ChunkRef) -> Result<Bytes> {
        let contents = self.read(&self.chunk_path(&chunk.hash)).await?;
        if Self::chunk_ref(&contents) != *chunk {
            return Err(SluiceError::State(format!(
                "chunk {} in '{}' fails its checksum",
                chunk.hash, self.location
            )));
        }
        Ok(contents)
    }

    /// Deletes a checkpoint's manifest (an unusable checkpoint that was
    /// skipped); its chunks go with the next [`CheckpointStore::retain`].
    pub async fn discard(&self, checkpoint: u64) -> Result<()> {
        self.delete(&self.manifest_path(checkpoint)).await
    }

    /// Keeps the newest `keep` checkpoints: deletes older manifests and every
    /// chunk no kept manifest references (including chunks of checkpoints
    /// that never completed). Returns the hashes still stored.
    pub async fn retain(&self, keep: usize) -> Result<HashSet<String>> {
        let ids = self.checkpoints().await?;
        let cut = ids.len().saturating_sub(keep.max(1));
        let mut live = HashSet::new();
        for &checkpoint in &ids[cut..] {
            match self.read_manifest(checkpoint).await {
                Ok(manifest) => live.extend(manifest.chunks().map(|c| c.hash.clone())),
                // Keep everything rather than delete what a damaged manifest may need.
                Err(_) => return Ok(live),
            }
        }
        for &checkpoint in &ids[..cut] {
            self.delete(&self.manifest_path(checkpoint)).await?;
        }
        let shared = self.path("shared");
        let listed: Vec<_> = self
            .store
            .list(Some(&shared))
            .try_collect()
            .await
            .map_err(|e| storage(format!("listing '{}'", self.location), e))?;
        for meta in listed {
            let hash = meta
                .location
                .filename()
                .and_then(|name| name.strip_suffix(".chunk"))
                .map(str::to_string);
            if hash.is_some_and(|hash| !live.contains(&hash)) {
                self.delete(&meta.location).await?;
            }
        }
        Ok(live)
    }

    /// Scale-out: claims the next ownership epoch of this store (one
    /// task's checkpoints) for `owner`, by creating `owners/<epoch>` only if
    /// it does not exist yet, so two processes never get the same epoch.
    pub async fn claim_epoch(&self, owner: &str) -> Result<u64> {
        for _ in 0..100 {
            let epoch = self.latest_epoch().await? + 1;
            let path = self.path(&format!("owners/{epoch:010}"));
            let options = object_store::PutOptions::from(object_store::PutMode::Create);
            match self
                .store
                .put_opts(&path, PutPayload::from(owner.as_bytes().to_vec()), options)
                .await
            {
                Ok(_) => return Ok(epoch),
                // Taken by another process: try the next epoch.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => continue,
                Err(error) => return Err(storage(format!("claiming '{path}'"), error)),
            }
        }
        Err(SluiceError::State(format!(
            "claiming an ownership epoch in '{}': 100 attempts found each one taken",
            self.location
        )))
    }

    /// The newest ownership epoch claimed (0: none yet).
    pub async fn latest_epoch(&self) -> Result<u64> {
        let prefix = self.path("owners");
        let listed: Vec<_> = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|listing| listing.objects)
            .map_err(|e| storage(format!("listing '{prefix}'"), e))?;
        Ok(listed
            .iter()
            .filter_map(|meta| meta.location.filename()?.parse().ok())
            .max()
            .unwrap_or(0))
    }

    /// Writes a small named file beside the checkpoints (replacing it).
    pub async fn put_file(&self, name: &str, contents: Vec<u8>) -> Result<()> {
        let path = self.path(name);
        self.store
            .put(&path, PutPayload::from(contents))
            .await
            .map_err(|e| storage(format!("writing '{path}'"), e))?;
        Ok(())
    }

    /// Reads a file written by [`CheckpointStore::put_file`], if it exists.
    pub async fn get_file(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name);
        match self.store.get(&path).await {
            Ok(found) => Ok(Some(
                found
                    .bytes()
                    .await
                    .map_err(|e| storage(format!("reading '{path}'"), e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(storage(format!("reading '{path}'"), error)),
        }
    }

    /// Deletes every checkpoint (for a run that starts over).
    pub async fn clear(&self) -> Result<()> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.root))
            .try_collect()
            .await
            .map_err(|e| storage(format!("listing '{}'", self.location), e))?;
        for meta in listed {
            self.delete(&meta.location).await?;
        }
        Ok(())
    }

    async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(format!("deleting '{path}'"), e)),
        }
    }

    /// Copies a restored checkpoint into `target` as a self-contained
    /// snapshot (its chunks, then its manifest).
    pub async fn copy_into(restored: &RestoredCheckpoint, target: &CheckpointStore) -> Result<()> {
        let none = HashSet::new();
        for chunk in restored.manifest.chunks() {
            target
                .put_chunk(restored.chunk(chunk)?.to_vec(), &none)
                .await?;
        }
        target.write_manifest(&restored.manifest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ComponentState, Role, SnapshotKind};

    fn manifest(checkpoint: u64, chunks: Vec<ChunkRef>) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            sluice_version: "test".into(),
            job: "job".into(),
            checkpoint,
            kind: SnapshotKind::Checkpoint,
            created_ms: 0,
            parallelism: 1,
            operators: vec![],
            components: vec![ComponentState {
                node: 0,
                subtask: 0,
                role: Role::Operator,
                finished: false,
                chunks,
            }],
        }
    }

    #[tokio::test]
    async fn unchanged_chunks_are_not_rewritten_and_old_ones_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap()).unwrap();
        let mut known = HashSet::new();
        let (a, written) = store.put_chunk(b"a".to_vec(), &known).await.unwrap();
        assert!(written);
        store
            .write_manifest(&manifest(1, vec![a.clone()]))
            .await
            .unwrap();
        known.insert(a.hash.clone());
        let (again, written) = store.put_chunk(b"a".to_vec(), &known).await.unwrap();
        assert!(!written);
        let (b, _) = store.put_chunk(b"b".to_vec(), &known).await.unwrap();
        // An orphan chunk, as a crash before the manifest leaves behind.
        store.put_chunk(b"orphan".to_vec(), &known).await.unwrap();
        store
            .write_manifest(&manifest(2, vec![again, b]))
            .await
            .unwrap();
        let live = store.retain(1).await.unwrap();
        assert_eq!(store.checkpoints().await.unwrap(), vec![2]);
        assert_eq!(live.len(), 2);
        let restored = store.load_latest().await.unwrap().unwrap();
        assert_eq!(restored.manifest.checkpoint, 2);
        assert_eq!(restored.chunks.len(), 2);
    }

    #[tokio::test]
    async fn a_damaged_chunk_falls_back_to_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap()).unwrap();
        let none = HashSet::new();
        let (a, _) = store.put_chunk(b"first".to_vec(), &none).await.unwrap();
        store.write_manifest(&manifest(1, vec![a])).await.unwrap();
        let (b, _) = store.put_chunk(b"second".to_vec(), &none).await.unwrap();
        store
            .write_manifest(&manifest(2, vec![b.clone()]))
            .await
            .unwrap();
        let file = dir.path().join(format!("shared/{}.chunk", b.hash));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[0] ^= 0x40;
        std::fs::write(&file, bytes).unwrap();
        assert!(store.load(2).await.is_err());
        let restored = store.load_latest().await.unwrap().unwrap();
        assert_eq!(restored.manifest.checkpoint, 1);
    }
}
