//! Uploaded blobs on disk, and the per-user upload bookkeeping (rate limit, bytes in flight).
//!
//! Layout under the data dir: `files/<xx>/<yy>/<file id>` where `xx`/`yy` are the last four
//! hex digits of the id (the random part of a v7 UUID, so directories fill evenly), and
//! `files/tmp/` for uploads still streaming. A temp file lives on the same filesystem as its
//! destination, so committing is a rename; a temp file that is never committed is removed when
//! its `TempBlob` is dropped (an aborted upload leaves nothing behind).

use std::io;
use std::num::NonZeroU32;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};
use uuid::Uuid;

use crate::config::Config;

/// How much of the start of an upload is kept for content sniffing.
pub const SNIFF_BYTES: usize = 8 * 1024;
/// Write buffer for uploads (fewer, larger writes to the blocking file pool).
const WRITE_BUFFER: usize = 256 * 1024;

/// Where blobs live.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl FileStore {
    pub fn new(data_dir: &Path) -> Self {
        let root = data_dir.join("files");
        let tmp = root.join("tmp");
        Self { root, tmp }
    }

    /// The stored relative path for a new file id: `xx/yy/<id>`.
    pub fn relative_path_for(id: Uuid) -> String {
        let simple = id.simple().to_string();
        let n = simple.len();
        format!("{}/{}/{}", &simple[n - 2..], &simple[n - 4..n - 2], id)
    }

    /// The absolute path of a stored relative path. Refuses anything that could leave the
    /// store (absolute paths, `..`), which a row can only contain if the database was edited.
    pub fn absolute(&self, relative: &str) -> io::Result<PathBuf> {
        let rel = Path::new(relative);
        if relative.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad storage path {relative:?}"),
            ));
        }
        Ok(self.root.join(rel))
    }

    /// Starts a temp file for an upload.
    pub async fn begin(&self) -> io::Result<TempBlob> {
        tokio::fs::create_dir_all(&self.tmp).await?;
        let path = self.tmp.join(format!("{}.part", Uuid::new_v4()));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(TempBlob {
            path,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            hasher: Sha256::new(),
            size: 0,
            head: Vec::new(),
            committed: false,
        })
    }

    /// Removes committed-away blobs, each `(blob, thumbnail)`; a failure is logged (the rows
    /// are gone already).
    pub async fn remove_blobs(&self, paths: &[(String, Option<String>)]) {
        for (blob, thumbnail) in paths {
            for relative in std::iter::once(blob).chain(thumbnail.iter()) {
                self.remove(relative).await;
            }
        }
    }

    /// Deletes a stored blob; a blob that is already gone is fine.
    pub async fn remove(&self, relative: &str) {
        let result = match self.absolute(relative) {
            Ok(path) => tokio::fs::remove_file(&path).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, path = relative, "could not remove stored file"),
        }
    }
}

/// An upload being written: bytes go to a temp file while they are hashed.
pub struct TempBlob {
    path: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    committed: bool,
}

impl TempBlob {
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("upload already finished"))?;
        file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first bytes (up to `SNIFF_BYTES`), for content sniffing.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Flushes to disk and returns the lowercase hex SHA-256 of everything written.
    pub async fn finish(&mut self) -> io::Result<String> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.get_mut().sync_all().await?;
        }
        Ok(hex::encode(std::mem::take(&mut self.hasher).finalize()))
    }

    /// Moves the finished temp file to `relative` in the store.
    pub async fn commit(mut self, store: &FileStore, relative: &str) -> io::Result<()> {
        self.finish().await?;
        let dest = store.absolute(relative)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&self.path, &dest).await?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.committed {
            // Close first (Windows would refuse to delete an open file; harmless elsewhere).
            self.file.take();
            if let Err(e) = std::fs::remove_file(&self.path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, path = %self.path.display(), "could not remove temp upload");
            }
        }
    }
}

/// Upload bookkeeping shared by all requests: the store, the per-user rate limit and the
/// bytes each user has in flight (so parallel uploads cannot overrun the quota together).
pub struct Uploads {
    pub store: FileStore,
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    in_flight: DashMap<Uuid, u64>,
}

impl Uploads {
    pub fn new(config: &Config) -> Self {
        let limiter = NonZeroU32::new(config.upload_rate_limit)
            .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n).allow_burst(n)));
        Self { store: FileStore::new(&config.data_dir), limiter, in_flight: DashMap::new() }
    }

    /// Takes one upload from the user's bucket; false when the bucket is empty.
    pub fn allow(&self, user: Uuid) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check_key(&user).is_ok())
    }

    /// Starts counting an upload's bytes against the user's in-flight total.
    pub fn reserve(self: &Arc<Self>, user: Uuid) -> Reservation {
        Reservation { uploads: self.clone(), user, bytes: 0 }
    }
}

/// Bytes of one upload counted in flight; released on drop.
pub struct Reservation {
    uploads: Arc<Uploads>,
    user: Uuid,
    bytes: u64,
}

impl Reservation {
    /// Adds `n` bytes; returns the user's total in flight over all their uploads.
    pub fn add(&mut self, n: u64) -> u64 {
        self.bytes += n;
        let mut entry = self.uploads.in_flight.entry(self.user).or_insert(0);
        *entry += n;
        *entry
    }

    /// The user's total in flight over all their uploads (this one included).
    pub fn in_flight(&self) -> u64 {
        self.uploads.in_flight.get(&self.user).map_or(self.bytes, |entry| *entry)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let user = self.user;
        if let Some(mut entry) = self.uploads.in_flight.get_mut(&user) {
            *entry = entry.saturating_sub(self.bytes);
        }
        self.uploads.in_flight.remove_if(&user, |_, v| *v == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_sharded_and_contained() {
        let id = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        assert_eq!(FileStore::relative_path_for(id), "57/80/01890a5d-ac96-774b-bcce-b302099a8057");
        let store = FileStore::new(Path::new("/data"));
        assert!(store.absolute("57/80/x").is_ok());
        assert!(store.absolute("../etc/passwd").is_err());
        assert!(store.absolute("/etc/passwd").is_err());
        assert!(store.absolute("").is_err());
    }
}
