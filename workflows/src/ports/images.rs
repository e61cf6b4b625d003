//! The images port: disk images and OVA/OVF packages on the worker's machine or behind an http(s)
//! URL, read and converted with the real `qemu-img`. `services/images` implements it; the workflows
//! crate only names it. Every path it writes is under the directory [`Images::work_dir`] gives a
//! workflow, so removing that directory leaves nothing behind.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::kube::OnProgress;

/// Why an image operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    /// The file or URL is not there (404, no such file).
    #[error("not found: {0}")]
    NotFound(String),
    /// The content is wrong: corrupt, unsupported, truncated, a checksum that does not match.
    #[error("{0}")]
    Invalid(String),
    /// Worth retrying: a network error, a 5xx, a full disk that may free up.
    #[error("transient: {0}")]
    Transient(String),
}

/// What `qemu-img info --output=json` says about an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// qemu's format name: `raw`, `qcow2`, `vmdk`, `vpc` (VHD), `vhdx`, `vdi`, ...
    pub format: String,
    /// The disk's size as the guest sees it, in bytes.
    pub virtual_size: u64,
    /// Bytes the file takes (None when qemu-img cannot say, as over http).
    pub actual_size: Option<u64>,
    /// `backing-filename`, when the image is an overlay.
    pub backing_file: Option<String>,
    /// qcow2's `format-specific.data.corrupt`.
    pub corrupt: bool,
    pub encrypted: bool,
}

/// An OVA (a tar) or an OVF with its files beside it, as far as can be read without copying it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Package {
    /// The descriptor's file name and its text.
    pub ovf_name: String,
    pub ovf: String,
    /// The manifest's (`.mf`) file name and text, when there is one.
    pub manifest: Option<(String, String)>,
    /// Every file in the package with its size, in order (the descriptor first in an OVA).
    pub files: Vec<(String, u64)>,
}

/// Reads, checks and converts images. Sources are local paths or http(s) URLs; a member of a
/// package is named by the package's source and the member's file name.
#[async_trait]
pub trait Images: Send + Sync {
    /// The directory for `workflow`'s temporary files (not created).
    fn work_dir(&self, workflow: &str) -> PathBuf;
    /// `qemu-img info` of a local file or an http(s) URL.
    async fn inspect(&self, source: &str) -> Result<ImageInfo, ImageError>;
    /// Reads an `.ova` (tar) or an `.ovf`: the descriptor, the manifest and the list of files.
    async fn open_package(&self, source: &str) -> Result<Package, ImageError>;
    /// The hex digest (`sha1`, `sha256` or `sha512`) of a package member, read through once.
    async fn digest(
        &self,
        package: &str,
        member: &str,
        algorithm: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<String, ImageError>;
    /// Copies a package member to `dest` (an OVA's member out of the tar), streaming.
    async fn extract(
        &self,
        package: &str,
        member: &str,
        dest: &Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, ImageError>;
    /// `qemu-img convert` of `source` (of `format`) to `dest` as `dest_format`, reporting qemu-img's
    /// progress as bytes of the virtual size. A partial `dest` from an earlier run is replaced.
    async fn convert(
        &self,
        source: &str,
        format: &str,
        dest: &Path,
        dest_format: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, ImageError>;
    /// Downloads an http(s) URL to `dest`, streaming (a partial `dest` is replaced).
    async fn download(
        &self,
        url: &str,
        dest: &Path,
        on_progress: OnProgress<'_>,
    ) -> Result<u64, ImageError>;
    /// Removes a path under a work directory and everything in it; a missing one is fine.
    async fn remove(&self, path: &Path) -> Result<(), ImageError>;
}
