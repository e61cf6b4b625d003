//! What the lab's CDI data paths share (plain data, held by `state::Shared`): the byte and outcome
//! counters of the upload proxy and the importer, the uploads in progress (one per DataVolume) and
//! the importer tasks running (one per DataVolume, by uid).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// A namespace and a name.
pub type Key = (String, String);

/// DataVolume annotation: bytes of the accepted upload.
pub const ANN_UPLOADED_BYTES: &str = "lab.drover.dev/uploaded-bytes";
/// DataVolume annotation: bytes the importer read in the import that succeeded.
pub const ANN_IMPORTED_BYTES: &str = "lab.drover.dev/imported-bytes";
/// DataVolume annotation: the image format (`qcow2`, `raw`, ...; `qemu-img`'s names).
pub const ANN_FORMAT: &str = "lab.drover.dev/image-format";
/// DataVolume annotation: the image's virtual size in bytes.
pub const ANN_VIRTUAL_SIZE: &str = "lab.drover.dev/virtual-size";

/// The counters, as `GET /lab/status` and `GET /lab/counters` show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdiCounters {
    /// Bytes of the uploads the proxy accepted (the DataVolume went Succeeded).
    pub cdi_uploaded_bytes: u64,
    /// Every byte the upload proxy read, refused and cut-off uploads included.
    pub cdi_upload_received_bytes: u64,
    /// Uploads accepted.
    pub cdi_uploads: u64,
    /// Uploads refused after their body was read (not an image, too large, a backing file...).
    pub cdi_uploads_refused: u64,
    /// Every byte the importer read from http sources, failed attempts included.
    pub cdi_imported_bytes: u64,
    /// Imports that succeeded.
    pub cdi_imports: u64,
    /// Importer attempts that failed (each one a restart of the importer pod).
    pub cdi_import_failures: u64,
}

/// An importer task running for a DataVolume.
#[derive(Debug)]
pub struct Importer {
    /// The DataVolume's uid (a DataVolume deleted and created again gets a new importer).
    pub uid: String,
    pub task: tokio::task::AbortHandle,
}

/// The shared CDI state.
#[derive(Debug, Default)]
pub struct Cdi {
    pub uploaded_bytes: AtomicU64,
    pub upload_received_bytes: AtomicU64,
    pub uploads: AtomicU64,
    pub uploads_refused: AtomicU64,
    pub imported_bytes: AtomicU64,
    pub imports: AtomicU64,
    pub import_failures: AtomicU64,
    /// DataVolumes with an upload in progress.
    pub uploading: Mutex<HashSet<Key>>,
    /// Importer tasks by DataVolume.
    pub importers: Mutex<HashMap<Key, Importer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cdi {
    /// A snapshot of the counters.
    pub fn counters(&self) -> CdiCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CdiCounters {
            cdi_uploaded_bytes: get(&self.uploaded_bytes),
            cdi_upload_received_bytes: get(&self.upload_received_bytes),
            cdi_uploads: get(&self.uploads),
            cdi_uploads_refused: get(&self.uploads_refused),
            cdi_imported_bytes: get(&self.imported_bytes),
            cdi_imports: get(&self.imports),
            cdi_import_failures: get(&self.import_failures),
        }
    }

    /// Claim the DataVolume for an upload; `None` when one is already in progress. The claim ends
    /// when the guard drops (the upload finished, failed, or its client went away).
    pub fn start_upload(&self, key: Key) -> Option<UploadGuard<'_>> {
        let claimed = lock(&self.uploading).insert(key.clone());
        claimed.then(|| UploadGuard { cdi: self, key })
    }

    /// The importer tasks (locked).
    pub fn importers(&self) -> MutexGuard<'_, HashMap<Key, Importer>> {
        lock(&self.importers)
    }

    /// Stop a DataVolume's importer, if one runs.
    pub fn stop_importer(&self, key: &Key) {
        if let Some(i) = self.importers().remove(key) {
            i.task.abort();
        }
    }

    /// Stop every importer (lab shutdown).
    pub fn stop_all(&self) {
        for (_, i) in self.importers().drain() {
            i.task.abort();
        }
    }
}

/// An upload in progress; dropping it ends the claim.
#[derive(Debug)]
pub struct UploadGuard<'a> {
    cdi: &'a Cdi,
    key: Key,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        lock(&self.cdi.uploading).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_per_data_volume() {
        let cdi = Cdi::default();
        let key = ("ns".to_string(), "dv".to_string());
        let g = cdi.start_upload(key.clone()).expect("first");
        assert!(cdi.start_upload(key.clone()).is_none());
        drop(g);
        assert!(cdi.start_upload(key).is_some());
    }
}
