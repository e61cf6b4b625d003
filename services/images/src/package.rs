//! OVF packages on the worker's disk: an `.ova` (a tar holding the descriptor, its manifest and its
//! disks) or an `.ovf` with its files beside it. Only the descriptor and the manifest are read into
//! memory; a member is found as a [`Span`] of the file that holds it, for `copy` to stream.

use std::path::{Component, Path, PathBuf};

use drover_workflows::ports::images::{ImageError, Package};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::copy::{Span, read_error};
use crate::tar;

/// The largest descriptor or manifest read: both are text of a few kilobytes; a "descriptor" of
/// gigabytes is a disk misnamed.
const MAX_TEXT: u64 = 16 << 20;

/// How a package is laid out, from its name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Ova,
    Ovf,
}

/// The descriptor, manifest and file list of the package at `path`.
pub(crate) async fn open(path: &Path) -> Result<Package, ImageError> {
    match layout(path)? {
        Layout::Ova => open_ova(path).await,
        Layout::Ovf => open_ovf(path).await,
    }
}

/// Where `member`'s bytes are: inside the OVA, or the file beside the `.ovf`.
pub(crate) async fn member(path: &Path, member: &str) -> Result<Span, ImageError> {
    match layout(path)? {
        Layout::Ova => {
            let (_, members) = list(path).await?;
            let want = tar::clean(member);
            let m = members
                .into_iter()
                .find(|m| m.name == want)
                .ok_or_else(|| {
                    ImageError::NotFound(format!("{} has no member {member}", path.display()))
                })?;
            Ok(Span {
                path: path.to_path_buf(),
                offset: m.offset,
                len: m.size,
                label: format!("{member} in {}", path.display()),
            })
        }
        Layout::Ovf => {
            let file = beside(path, member).ok_or_else(|| {
                ImageError::Invalid(format!(
                    "{member} is not a file name beside {} (a relative path without '..')",
                    path.display()
                ))
            })?;
            let meta = tokio::fs::metadata(&file)
                .await
                .map_err(|e| read_error(&file, e))?;
            if !meta.is_file() {
                return Err(ImageError::Invalid(format!(
                    "{} is not a regular file",
                    file.display()
                )));
            }
            Ok(Span {
                label: file.display().to_string(),
                path: file,
                offset: 0,
                len: meta.len(),
            })
        }
    }
}

fn layout(path: &Path) -> Result<Layout, ImageError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("ova") => Ok(Layout::Ova),
        Some("ovf") => Ok(Layout::Ovf),
        _ => Err(ImageError::Invalid(format!(
            "{} is neither an .ova nor an .ovf",
            path.display()
        ))),
    }
}

/// The archive's length and members.
async fn list(path: &Path) -> Result<(u64, Vec<tar::Member>), ImageError> {
    let mut file = File::open(path).await.map_err(|e| read_error(path, e))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| read_error(path, e))?
        .len();
    let label = path.display().to_string();
    let members = tar::members(&mut file, len, &label).await?;
    Ok((len, members))
}

async fn open_ova(path: &Path) -> Result<Package, ImageError> {
    let (_, members) = list(path).await?;
    let is = |m: &tar::Member, ext: &str| {
        m.name
            .rsplit_once('.')
            .is_some_and(|(_, e)| e.eq_ignore_ascii_case(ext))
    };
    // The specification puts the descriptor first; exporters that do not are still read.
    let ovf = members.iter().find(|m| is(m, "ovf")).ok_or_else(|| {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        ImageError::Invalid(format!(
            "{} holds no .ovf descriptor (its files: {})",
            path.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })?;
    if members.first() != Some(ovf) {
        tracing::debug!(package = %path.display(), descriptor = %ovf.name, "The OVA's descriptor is not its first file.");
    }
    let stem = ovf.name[..ovf.name.len() - 4].to_string();
    let manifest = members
        .iter()
        .find(|m| is(m, "mf") && m.name[..m.name.len() - 3] == stem)
        .or_else(|| members.iter().find(|m| is(m, "mf")));
    let text = |m: &tar::Member| {
        let span = Span {
            path: path.to_path_buf(),
            offset: m.offset,
            len: m.size,
            label: format!("{} in {}", m.name, path.display()),
        };
        async move { read_text(&span).await }
    };
    let ovf_text = text(ovf).await?;
    let manifest = match manifest {
        Some(m) => Some((m.name.clone(), text(m).await?)),
        None => None,
    };
    Ok(Package {
        ovf_name: ovf.name.clone(),
        ovf: ovf_text,
        manifest,
        files: members.iter().map(|m| (m.name.clone(), m.size)).collect(),
    })
}

async fn open_ovf(path: &Path) -> Result<Package, ImageError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| read_error(path, e))?;
    let ovf_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ovf = read_text(&Span {
        path: path.to_path_buf(),
        offset: 0,
        len: meta.len(),
        label: path.display().to_string(),
    })
    .await?;
    let mut files = vec![(ovf_name.clone(), meta.len())];
    // A descriptor that does not parse lists no references here; the kind's parser says why.
    for href in references(&ovf) {
        if files.iter().any(|(f, _)| *f == href) {
            continue;
        }
        if let Some(file) = beside(path, &href)
            && let Ok(m) = tokio::fs::metadata(&file).await
            && m.is_file()
        {
            files.push((href, m.len()));
        }
    }
    let stem = &ovf_name[..ovf_name.len().saturating_sub(4)];
    let mut manifest = None;
    for ext in ["mf", "cert"] {
        let name = format!("{stem}.{ext}");
        let file = path.with_file_name(&name);
        let Ok(m) = tokio::fs::metadata(&file).await else {
            continue;
        };
        if !m.is_file() || files.iter().any(|(f, _)| *f == name) {
            continue;
        }
        if ext == "mf" {
            let text = read_text(&Span {
                path: file.clone(),
                offset: 0,
                len: m.len(),
                label: file.display().to_string(),
            })
            .await?;
            manifest = Some((name.clone(), text));
        }
        files.push((name, m.len()));
    }
    Ok(Package {
        ovf_name,
        ovf,
        manifest,
        files,
    })
}

/// The `ovf:href` of every `File` in the descriptor's `References`.
fn references(ovf: &str) -> Vec<String> {
    let text = ovf.strip_prefix('\u{feff}').unwrap_or(ovf);
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.tag_name().name() == "References")
        .flat_map(|r| r.children().filter(|n| n.tag_name().name() == "File"))
        .filter_map(|f| {
            f.attributes()
                .find(|a| a.name() == "href")
                .map(|a| a.value().to_string())
        })
        .collect()
}

/// `member` as a path beside the descriptor at `ovf`, when it is a plain relative path.
fn beside(ovf: &Path, member: &str) -> Option<PathBuf> {
    let rel = Path::new(member);
    let plain = !member.is_empty()
        && !member.contains("://")
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| ovf.with_file_name("").join(rel))
}

/// A descriptor's or manifest's text.
async fn read_text(span: &Span) -> Result<String, ImageError> {
    if span.len > MAX_TEXT {
        return Err(ImageError::Invalid(format!(
            "{} is {} bytes: too large for a descriptor or manifest",
            span.label, span.len
        )));
    }
    let mut file = File::open(&span.path)
        .await
        .map_err(|e| read_error(&span.path, e))?;
    file.seek(std::io::SeekFrom::Start(span.offset))
        .await
        .map_err(|e| read_error(&span.path, e))?;
    let mut buf = vec![0u8; span.len as usize];
    file.read_exact(&mut buf).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ImageError::Invalid(format!("{} is truncated", span.label))
        } else {
            read_error(&span.path, e)
        }
    })?;
    String::from_utf8(buf)
        .map_err(|e| ImageError::Invalid(format!("{} is not UTF-8 text: {e}", span.label)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_beside_a_descriptor() {
        let ovf = Path::new("/exports/web/web.ovf");
        let cases = [
            ("disk1.vmdk", Some("/exports/web/disk1.vmdk")),
            ("disks/disk1.vmdk", Some("/exports/web/disks/disk1.vmdk")),
            ("../etc/passwd", None),
            ("/etc/passwd", None),
            ("./disk1.vmdk", None),
            ("http://x/disk1.vmdk", None),
            ("", None),
        ];
        for (member, want) in cases {
            assert_eq!(beside(ovf, member), want.map(PathBuf::from), "{member}");
        }
    }

    #[test]
    fn references_of_a_descriptor() {
        let xml = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="123"/>
    <File ovf:href="web-disk2.vmdk" ovf:id="file2"/>
  </References>
</Envelope>"#;
        assert_eq!(references(xml), vec!["web-disk1.vmdk", "web-disk2.vmdk"]);
        assert!(references("<not xml").is_empty());
    }

    #[test]
    fn layouts_by_name() {
        assert_eq!(layout(Path::new("/a/b.OVA")).unwrap(), Layout::Ova);
        assert_eq!(layout(Path::new("/a/b.ovf")).unwrap(), Layout::Ovf);
        assert!(matches!(
            layout(Path::new("/a/b.tar")),
            Err(ImageError::Invalid(_))
        ));
    }
}
