//! Drover's images adapter: implements the workflows' [`Images`] port on the worker's machine with
//! the real `qemu-img` (`qemu.rs`: info, check, convert and what its errors mean), OVA tars and
//! OVF directories (`package.rs` over the header reader in `tar.rs`), streamed digests and copies
//! (`copy.rs`), http(s) downloads (`download.rs`) and the headers of images behind a URL, read
//! with range requests instead of qemu-img's curl driver (`probe.rs`).
//!
//! Everything it writes is under one work root, in a directory per workflow ([`Images::work_dir`]),
//! through a `.partial` file renamed into place (fsynced first, except a conversion: see
//! `convert`), so a file that looks complete is complete and removing the workflow's directory leaves nothing behind. Sources are local paths
//! or http(s) URLs; a local path is made absolute before qemu-img sees it, so a name with a colon
//! is never read as a qemu protocol (`nbd:`, `ssh:`, ...).

mod copy;
mod download;
mod package;
mod probe;
mod qemu;
mod tar;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use drover_workflows::ports::images::{ImageError, ImageInfo, Images, Package};
use drover_workflows::ports::kube::OnProgress;

/// The qemu-img run when no other is configured (found on `PATH`).
pub const DEFAULT_QEMU_IMG: &str = "qemu-img";

/// The longest directory name [`Images::work_dir`] makes before it shortens one with a hash.
const MAX_DIR_NAME: usize = 200;

/// The images port on this machine: work files under `work_root`, images read with `qemu_img`.
#[derive(Debug, Clone)]
pub struct LocalImages {
    root: PathBuf,
    qemu_img: PathBuf,
    client: reqwest::Client,
}

impl LocalImages {
    /// Work files go under `work_root` (made absolute, created as needed); `qemu_img` is the
    /// program run for images ([`DEFAULT_QEMU_IMG`] finds it on `PATH`).
    pub fn new(work_root: impl Into<PathBuf>, qemu_img: impl Into<PathBuf>) -> LocalImages {
        let root = work_root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // A server that stops sending fails the download instead of holding the step.
            .read_timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        LocalImages {
            root,
            qemu_img: qemu_img.into(),
            client,
        }
    }

    /// The directory every workflow's work directory is in.
    pub fn work_root(&self) -> &Path {
        &self.root
    }

    /// Refuses a path this adapter may not write or remove: one not strictly inside the work root
    /// (compared by components, with no `..` allowed).
    fn inside(&self, path: &Path, what: &str) -> Result<PathBuf, ImageError> {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let clean = !abs
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        if clean && abs.starts_with(&self.root) && abs != self.root {
            return Ok(abs);
        }
        Err(ImageError::Invalid(format!(
            "refusing to {what} {}: it is not inside the work root {}",
            path.display(),
            self.root.display()
        )))
    }
}

/// A local source as qemu-img and the file system see it: absolute, and present.
async fn local(source: &str) -> Result<PathBuf, ImageError> {
    let path = std::path::absolute(source).unwrap_or_else(|_| PathBuf::from(source));
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_dir() => Err(ImageError::Invalid(format!(
            "{} is a directory, not an image",
            path.display()
        ))),
        Ok(_) => Ok(path),
        Err(e) => Err(copy::read_error(&path, e)),
    }
}

/// A format name as qemu-img takes it (`qcow2`, `vpc`, ...), so no option reaches its command line.
fn format_name(format: &str) -> Result<&str, ImageError> {
    let ok = !format.is_empty()
        && format.len() <= 32
        && format
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !format.starts_with('-');
    ok.then_some(format)
        .ok_or_else(|| ImageError::Invalid(format!("{format:?} is not an image format name")))
}

/// The directory name for a workflow id: letters, digits, `-` and `_` as they are, `.` too except
/// first (so never `.` or `..`), every other byte as `%XX`; injective, so two workflows never share
/// a directory. A name past [`MAX_DIR_NAME`] is cut and ends with a hash of the whole id.
pub fn dir_name(workflow: &str) -> String {
    let mut out = String::new();
    for (i, b) in workflow.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        return "%".into();
    }
    if out.len() > MAX_DIR_NAME {
        let mut h = copy::Hasher::new("sha256").expect("sha256 is known");
        h.update(workflow.as_bytes());
        let hash = h.hex();
        out.truncate(MAX_DIR_NAME - 17);
        out.push('~');
        out.push_str(&hash[..16]);
    }
    out
}

#[async_trait]
impl Images for LocalImages {
    fn work_dir(&self, workflow: &str) -> PathBuf {
        self.root.join(dir_name(workflow))
    }

    async fn inspect(&self, source: &str) -> Result<ImageInfo, ImageError> {
        if qemu::is_url(source) {
            // From the image's headers over range requests, on every worker alike: qemu-img reads
            // URLs only with its curl driver, often not installed (`probe.rs` says why not a file
            // of the first bytes either).
            return probe::inspect(&self.client, source).await;
        }
        let path = local(source).await?;
        qemu::inspect(&self.qemu_img, &path.to_string_lossy(), None, true).await
    }

    async fn open_package(&self, source: &str) -> Result<Package, ImageError> {
        if qemu::is_url(source) {
            return Err(url_package(source));
        }
        package::open(&local(source).await?).await
    }

    async fn digest(
        &self,
        package: &str,
        member: &str,
        algorithm: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<String, ImageError> {
        if qemu::is_url(package) {
            return Err(url_package(package));
        }
        // An unknown algorithm is refused before anything is read.
        copy::Hasher::new(algorithm)?;
        let span = package::member(&local(package).await?, member).await?;
        copy::digest(&span, algorithm, on_progress).await
    }

    async fn extract(
        &self,
        package: &str,
        member: &str,
        dest: &Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, ImageError> {
        if qemu::is_url(package) {
            return Err(url_package(package));
        }
        let dest = self.inside(dest, "write")?;
        let span = package::member(&local(package).await?, member).await?;
        copy::extract(&span, &dest, on_progress).await
    }

    /// Returns the image's virtual size, the bytes its progress counts.
    async fn convert(
        &self,
        source: &str,
        format: &str,
        dest: &Path,
        dest_format: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, ImageError> {
        let format = format_name(format)?;
        let dest_format = format_name(dest_format)?;
        let dest = self.inside(dest, "write")?;
        let source = if qemu::is_url(source) {
            source.to_string()
        } else {
            local(source).await?.to_string_lossy().into_owned()
        };
        let info = qemu::inspect(&self.qemu_img, &source, Some(format), false).await?;
        let partial = copy::partial_path(&dest);
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| copy::write_error(dir, e))?;
        }
        // qemu-img recreates the partial file itself and locks it while it writes, so an earlier
        // run's leftover is replaced and a still-running one makes this attempt fail transiently.
        qemu::convert(
            &self.qemu_img,
            &source,
            format,
            &partial,
            dest_format,
            info.virtual_size,
            on_progress,
        )
        .await?;
        // Renamed without an fsync: flushing gigabytes doubled an import's staging time, and the
        // page cache outlives a killed worker. Only a machine crash can leave this name holding less
        // than qemu-img wrote, and a reuse of a staged file checks it first (qemu-img check), so
        // such a file is converted again rather than uploaded.
        tokio::fs::rename(&partial, &dest)
            .await
            .map_err(|e| copy::write_error(&dest, e))?;
        tracing::debug!(source = %source, dest = %dest.display(), "Image converted.");
        Ok(info.virtual_size)
    }

    async fn download(
        &self,
        url: &str,
        dest: &Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, ImageError> {
        let dest = self.inside(dest, "write")?;
        download::download(&self.client, url, &dest, on_progress).await
    }

    async fn remove(&self, path: &Path) -> Result<(), ImageError> {
        let path = self.inside(path, "remove")?;
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(copy::write_error(&path, e)),
        };
        // A symlink is removed itself, never followed.
        let removed = if meta.is_dir() {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(copy::write_error(&path, e)),
        }
    }
}

fn url_package(source: &str) -> ImageError {
    ImageError::Invalid(format!(
        "{source}: a package is read from the worker's disk; download it first"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dirs_are_one_component() {
        let cases = [
            (
                "0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e",
                "0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e",
            ),
            (
                "0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e.s2t7.0",
                "0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e.s2t7.0",
            ),
            ("..", "%2E."),
            (".", "%2E"),
            ("a/../../etc", "a%2F..%2F..%2Fetc"),
            ("/etc", "%2Fetc"),
            ("a%2Fb", "a%252Fb"),
            ("", "%"),
        ];
        for (id, want) in cases {
            assert_eq!(dir_name(id), want, "{id}");
        }
        let images = LocalImages::new("/var/lib/drover/work", DEFAULT_QEMU_IMG);
        for (id, _) in cases {
            let dir = images.work_dir(id);
            assert_eq!(
                dir.parent(),
                Some(Path::new("/var/lib/drover/work")),
                "{id}"
            );
            assert!(
                dir.components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
                "{id}"
            );
        }
        let long = format!(
            "0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e{}",
            ".s1t1.0".repeat(60)
        );
        let name = dir_name(&long);
        assert!(name.len() <= MAX_DIR_NAME, "{}", name.len());
        assert_ne!(name, dir_name(&format!("{long}.s1t1.1")));
    }

    #[tokio::test]
    async fn writes_and_removals_stay_inside_the_root() {
        let images = LocalImages::new("/var/lib/drover/work", DEFAULT_QEMU_IMG);
        for refused in [
            "/var/lib/drover/work",
            "/var/lib/drover/work/",
            "/var/lib/drover/work/../secrets",
            "/var/lib/drover/workshop/x",
            "/etc/passwd",
            "/var/lib/drover/work/a/../../x",
        ] {
            let err = images.remove(Path::new(refused)).await.unwrap_err();
            assert!(
                matches!(&err, ImageError::Invalid(m) if m.contains("not inside the work root")),
                "{refused}: {err:?}"
            );
        }
        // Missing is fine.
        images
            .remove(Path::new("/var/lib/drover/work/nobody-here"))
            .await
            .unwrap();
    }

    #[test]
    fn format_names() {
        for ok in ["qcow2", "raw", "vpc", "vhdx", "vmdk"] {
            assert!(format_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-O", "qcow2 -o x", "QCOW2", "a,b"] {
            assert!(format_name(bad).is_err(), "{bad}");
        }
    }
}
