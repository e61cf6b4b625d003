//! Streaming bytes: reading a span of a file (a member inside an OVA, or a whole file) in chunks with
//! progress, hashing it, and writing files so that one that looks complete is complete.
//!
//! Every file this crate writes goes to `<dest>.partial` first, under an exclusive `flock` (a second
//! attempt that starts while an abandoned one still writes gets a transient error instead of two
//! writers in one file), is fsynced, and is renamed to `<dest>` (then the directory is fsynced). A
//! worker killed at any point leaves at most a `.partial`, which the next run truncates.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use drover_workflows::ports::images::ImageError;
use drover_workflows::ports::kube::{OnProgress, Transferred};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// How much is read at once.
const CHUNK: usize = 1 << 20;
/// How often progress is reported, in bytes.
pub(crate) const REPORT_EVERY: u64 = 4 << 20;

/// A place in a file: a package member's bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// How errors name it (`web.ova:disk1.vmdk`).
    pub label: String,
}

/// `span` read once, in order, a chunk at a time, with progress reported every [`REPORT_EVERY`]
/// bytes and at the end.
pub(crate) struct Chunks<'a> {
    span: &'a Span,
    file: File,
    on_progress: OnProgress<'a>,
    done: u64,
    reported: u64,
    /// The chunk [`Chunks::next`] read, in its first `n` bytes.
    pub buf: Vec<u8>,
}

impl<'a> Chunks<'a> {
    pub async fn open(
        span: &'a Span,
        on_progress: OnProgress<'a>,
    ) -> Result<Chunks<'a>, ImageError> {
        let mut file = File::open(&span.path)
            .await
            .map_err(|e| read_error(&span.path, e))?;
        file.seek(std::io::SeekFrom::Start(span.offset))
            .await
            .map_err(|e| read_error(&span.path, e))?;
        on_progress(Transferred {
            done: 0,
            total: span.len,
        });
        Ok(Chunks {
            span,
            file,
            on_progress,
            done: 0,
            reported: 0,
            buf: vec![0u8; CHUNK],
        })
    }

    /// Reads the next chunk into `buf`: its length, or None at the end of the span.
    pub async fn next(&mut self) -> Result<Option<usize>, ImageError> {
        let total = self.span.len;
        if self.done >= total {
            if self.reported != self.done || total == 0 {
                self.reported = self.done;
                (self.on_progress)(Transferred {
                    done: self.done,
                    total,
                });
            }
            return Ok(None);
        }
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        let want = usize::try_from(total - self.done).map_or(CHUNK, |left| left.min(CHUNK));
        let n = self
            .file
            .read(&mut self.buf[..want])
            .await
            .map_err(|e| read_error(&self.span.path, e))?;
        if n == 0 {
            return Err(ImageError::Invalid(format!(
                "{} is truncated: {} of {total} bytes are there",
                self.span.label, self.done
            )));
        }
        self.done += n as u64;
        if self.done - self.reported >= REPORT_EVERY {
            self.reported = self.done;
            (self.on_progress)(Transferred {
                done: self.done,
                total,
            });
        }
        Ok(Some(n))
    }

    /// The bytes read so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

/// One of the digests OVF manifests use.
pub(crate) enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    /// `sha1`, `sha256` or `sha512`, in any case.
    pub fn new(algorithm: &str) -> Result<Hasher, ImageError> {
        match algorithm.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Hasher::Sha1(Sha1::new())),
            "sha256" => Ok(Hasher::Sha256(Sha256::new())),
            "sha512" => Ok(Hasher::Sha512(Sha512::new())),
            other => Err(ImageError::Invalid(format!(
                "unknown digest algorithm {other:?} (this importer computes sha1, sha256 and sha512)"
            ))),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest in lowercase hex.
    pub fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The hex digest of `span`. Each chunk is hashed on the blocking pool (a 1 MiB SHA-256 takes
/// milliseconds, too long for a runtime thread) one at a time, so dropping the future stops the
/// read at the next chunk.
pub(crate) async fn digest(
    span: &Span,
    algorithm: &str,
    on_progress: OnProgress<'_>,
) -> Result<String, ImageError> {
    let mut hasher = Hasher::new(algorithm)?;
    let mut chunks = Chunks::open(span, on_progress).await?;
    while let Some(n) = chunks.next().await? {
        let buf = std::mem::take(&mut chunks.buf);
        let (h, buf) = tokio::task::spawn_blocking(move || {
            hasher.update(&buf[..n]);
            (hasher, buf)
        })
        .await
        .map_err(|e| ImageError::Transient(format!("hashing {}: {e}", span.label)))?;
        hasher = h;
        chunks.buf = buf;
    }
    Ok(hasher.hex())
}

/// Copies `span` to `dest` through `dest.partial`; returns the bytes copied.
pub(crate) async fn extract(
    span: &Span,
    dest: &Path,
    on_progress: OnProgress<'_>,
) -> Result<u64, ImageError> {
    let mut out = Partial::create(dest).await?;
    let mut chunks = Chunks::open(span, on_progress).await?;
    while let Some(n) = chunks.next().await? {
        out.write(&chunks.buf[..n]).await?;
    }
    out.finish().await?;
    Ok(chunks.done())
}

/// `dest` with `.partial` appended to its file name.
pub(crate) fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

/// A file being written at `dest.partial` under an exclusive lock.
pub(crate) struct Partial {
    file: File,
    partial: PathBuf,
    dest: PathBuf,
}

impl Partial {
    /// Opens (creating its directory) and locks `dest.partial`, and empties it.
    pub async fn create(dest: &Path) -> Result<Partial, ImageError> {
        let partial = partial_path(dest);
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| write_error(dir, e))?;
        }
        // Not truncated on open: the lock is taken first, so a file another attempt still writes
        // is left alone.
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial)
            .await
            .map_err(|e| write_error(&partial, e))?;
        lock(&file, &partial)?;
        file.set_len(0)
            .await
            .map_err(|e| write_error(&partial, e))?;
        Ok(Partial {
            file,
            partial,
            dest: dest.to_path_buf(),
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.file
            .write_all(data)
            .await
            .map_err(|e| write_error(&self.partial, e))
    }

    /// Flushes it to disk and renames it to `dest`.
    pub async fn finish(mut self) -> Result<(), ImageError> {
        self.file
            .flush()
            .await
            .map_err(|e| write_error(&self.partial, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| write_error(&self.partial, e))?;
        // Renamed while still locked, so no other attempt is writing what becomes `dest`.
        commit(&self.partial, &self.dest).await
    }
}

/// Renames a complete, fsynced `partial` to `dest` and makes the rename durable.
pub(crate) async fn commit(partial: &Path, dest: &Path) -> Result<(), ImageError> {
    tokio::fs::rename(partial, dest)
        .await
        .map_err(|e| write_error(dest, e))?;
    if let Some(dir) = dest.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .await
            .map_err(|e| write_error(dir, e))?
            .sync_all()
            .await
            .map_err(|e| write_error(dir, e))?;
    }
    Ok(())
}

/// An exclusive, non-blocking `flock` on `file`, held until it is closed.
fn lock(file: &File, path: &Path) -> Result<(), ImageError> {
    // SAFETY: flock(2) on a descriptor this `File` owns and keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return Err(ImageError::Transient(format!(
            "{} is being written by another attempt; retry when it is done",
            path.display()
        )));
    }
    Err(write_error(path, e))
}

/// A failed read of a local file: a missing one is NotFound, anything else is worth retrying.
pub(crate) fn read_error(path: &Path, e: std::io::Error) -> ImageError {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            ImageError::NotFound(format!("no such file: {}", path.display()))
        }
        std::io::ErrorKind::IsADirectory => {
            ImageError::Invalid(format!("{} is a directory, not a file", path.display()))
        }
        _ => ImageError::Transient(format!("reading {}: {e}", path.display())),
    }
}

/// A failed write under the work root: a full disk may free up, and so may the rest (permissions
/// and read-only mounts are the operator's to fix, and a retry then succeeds).
pub(crate) fn write_error(path: &Path, e: std::io::Error) -> ImageError {
    ImageError::Transient(format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let cases = [
            ("sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                "SHA256",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                "sha512",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ];
        for (algo, want) in cases {
            let mut h = Hasher::new(algo).unwrap();
            h.update(b"a");
            h.update(b"bc");
            assert_eq!(h.hex(), want, "{algo}");
        }
        assert!(matches!(Hasher::new("md5"), Err(ImageError::Invalid(m)) if m.contains("md5")));
    }

    #[tokio::test]
    async fn one_writer_per_partial_and_rename_when_done() {
        let dir =
            std::env::temp_dir().join(format!("drover-images-partial-{}", std::process::id()));
        let dest = dir.join("w/disk.extracted");
        let mut first = Partial::create(&dest).await.unwrap();
        first.write(b"complete").await.unwrap();
        // A second attempt while the first still writes is told to come back.
        assert!(matches!(
            Partial::create(&dest).await,
            Err(ImageError::Transient(m)) if m.contains("another attempt")
        ));
        assert!(!dest.exists());
        first.finish().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"complete");
        assert!(!partial_path(&dest).exists());
        // A leftover partial (a killed writer's) is emptied by the next writer.
        std::fs::write(partial_path(&dest), b"leftover bytes").unwrap();
        let mut again = Partial::create(&dest).await.unwrap();
        again.write(b"new").await.unwrap();
        again.finish().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partial_names() {
        assert_eq!(
            partial_path(Path::new("/w/x/disk-0.qcow2")),
            Path::new("/w/x/disk-0.qcow2.partial")
        );
    }
}
