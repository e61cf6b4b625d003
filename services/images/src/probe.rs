//! What an image behind an http(s) URL is, read from its first bytes (and, for a VHD, its last
//! 512): qemu-img can only read URLs with its curl block driver, which many installations lack
//! (Debian ships it apart, in qemu-block-extra, and it must match qemu-utils' version). The
//! headers that size a disk are at fixed places, so two range requests answer what
//! `qemu-img info` would: the format, the virtual size, a qcow2's backing file and encryption.

use drover_workflows::ports::images::{ImageError, ImageInfo};

use crate::download::request_error;

/// How much of the start is read.
const HEAD: u64 = 64 << 10;

/// The image at `url`, from its header.
pub(crate) async fn inspect(client: &reqwest::Client, url: &str) -> Result<ImageInfo, ImageError> {
    let (head, total) = range(client, url, &format!("bytes=0-{}", HEAD - 1)).await?;
    let info = |format: &str, virtual_size: u64| ImageInfo {
        format: format.into(),
        virtual_size,
        actual_size: None,
        ..ImageInfo::default()
    };
    let be = |at: usize, n: usize| -> Option<u64> {
        head.get(at..at + n)
            .map(|b| b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x)))
    };
    let le = |at: usize, n: usize| -> Option<u64> {
        head.get(at..at + n)
            .map(|b| b.iter().rev().fold(0u64, |acc, x| acc << 8 | u64::from(*x)))
    };
    let short = || ImageError::Invalid(format!("{url}: the image's header is cut short"));
    if head.starts_with(b"QFI\xfb") {
        let mut i = info("qcow2", be(24, 8).ok_or_else(short)?);
        let (offset, len) = (be(8, 8).ok_or_else(short)?, be(16, 4).ok_or_else(short)?);
        if offset != 0 {
            let name = head
                .get(offset as usize..(offset + len) as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| "(beyond the first 64 KiB)".into());
            i.backing_file = Some(name);
        }
        i.encrypted = be(32, 4).ok_or_else(short)? != 0;
        return Ok(i);
    }
    if head.starts_with(b"KDMV") {
        return Ok(info("vmdk", le(12, 8).ok_or_else(short)? * 512));
    }
    if head.starts_with(b"# Disk DescriptorFile") {
        return Err(ImageError::Invalid(format!(
            "{url} is a vmdk descriptor: its extents are separate files, which an http import \
             cannot follow; serve a monolithic or streamOptimized vmdk"
        )));
    }
    if head.starts_with(b"vhdxfile") {
        return Err(ImageError::Invalid(format!(
            "{url} is a vhdx, whose size is in its metadata region; download it to the worker's \
             disk and import it from there"
        )));
    }
    if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Ok(info("vdi", le(368, 8).ok_or_else(short)?));
    }
    if head.starts_with(b"conectix") {
        // A dynamic VHD keeps a copy of its footer at the start.
        return Ok(info("vpc", be(48, 8).ok_or_else(short)?));
    }
    if head.get(257..262) == Some(b"ustar") {
        return Err(ImageError::Invalid(format!(
            "{url} is a tar archive, not a disk image (an OVA goes in as source.ova)"
        )));
    }
    let Some(total) = total else {
        return Err(ImageError::Invalid(format!(
            "{url}: the server does not say how long the file is, so its size as a raw disk is \
             unknown"
        )));
    };
    // A fixed VHD has its footer only at the end.
    if total >= 512 {
        let (tail, _) = range(client, url, &format!("bytes={}-{}", total - 512, total - 1)).await?;
        if tail.len() == 512 && tail.starts_with(b"conectix") {
            let size = tail[48..56]
                .iter()
                .fold(0u64, |a, x| a << 8 | u64::from(*x));
            return Ok(info("vpc", size));
        }
    }
    Ok(info("raw", total))
}

/// A range of `url` and the file's whole length, if the server says it. A server that ignores
/// Range answers the whole file: only the first `HEAD` bytes of it are read.
async fn range(
    client: &reqwest::Client,
    url: &str,
    range: &str,
) -> Result<(Vec<u8>, Option<u64>), ImageError> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::RANGE, range)
        .send()
        .await
        .map_err(|e| request_error(url, e))?;
    let status = resp.status();
    if !status.is_success() {
        let why = format!("{url}: the server answered {status}");
        return Err(match status.as_u16() {
            404 | 410 => ImageError::NotFound(why),
            408 | 429 | 500..=599 => ImageError::Transient(why),
            _ => ImageError::Invalid(why),
        });
    }
    let partial = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let total = if partial {
        resp.headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse().ok())
    } else {
        resp.content_length()
    };
    if !partial && !range.starts_with("bytes=0-") {
        // No ranges: the end cannot be had without reading everything.
        return Ok((Vec::new(), total));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(url, e))? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 >= HEAD {
            body.truncate(HEAD as usize);
            break;
        }
    }
    Ok((body, total))
}
