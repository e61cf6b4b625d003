//! What an image behind an http(s) URL is, read from its headers: the format, the virtual size, a
//! qcow2's (or vmdk's) backing file, its corrupt bit and its encryption, as `qemu-img info` of the
//! URL would say them.
//!
//! This is the only path for URLs, not a fallback after qemu-img: qemu-img reads URLs only through
//! its curl block driver, which many installations lack (Debian ships it apart, in
//! qemu-block-extra, and it must be of qemu-utils' exact version), so whether a URL could be
//! inspected would depend on the worker's packages; reading the headers here answers the same on
//! every worker, in two or three small requests, and tells 404 from a refused connection without
//! parsing curl's text. Nor is qemu-img run on a file of the first bytes: it needs more of the
//! image than its header for most formats, and refuses the cut-off copy. A streamOptimized vmdk
//! reads its footer at the end of the file, a dynamic VHD checks where its next block would go
//! against the file's length, and a vhdx checks every block table entry against it ("points after
//! end of file"); only qcow2, vdi and a monolithic vmdk would open. The fields that size a disk are
//! at fixed, documented places, and reading them takes less code than working around that.
//!
//! One `Range: bytes=0-` request reads the first [`HEAD`] bytes and the file's length (from
//! `Content-Range`, or `Content-Length` when the server ignores Range and sends the whole file, of
//! which only the start is read; a `HEAD` request when neither says). What lies past the start (a
//! qcow2's backing file name far in, a streamOptimized vmdk's footer, a fixed VHD's footer, a vhdx's
//! metadata) is read with another range request, which a server without range support cannot
//! answer: such a source is refused with a message saying so, except that an image without a known
//! header is taken as raw (its tail, a fixed VHD's footer, is then looked for only when the name
//! says `.vhd`). qemu-img's sizing rules are followed where they are not the header's plain field:
//! a VHD made by Virtual PC or an old qemu is sized by its geometry, a vdi's odd size is rounded up
//! to a sector, a raw file's length is too.

use std::borrow::Cow;

use drover_workflows::ports::images::{ImageError, ImageInfo};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

use crate::download::{request_error, status_error};

/// How much of the start is read: every format's header, a vhdx's region table and (as qemu-img
/// and Hyper-V lay them out) its metadata, a vmdk's embedded descriptor.
const HEAD: usize = 4 << 20;
const SECTOR: u64 = 512;

/// The image at `url`, from its headers.
pub(crate) async fn inspect(client: &reqwest::Client, url: &str) -> Result<ImageInfo, ImageError> {
    let remote = Remote::open(client, url).await?;
    let info = identify(&remote).await?;
    tracing::debug!(
        url,
        format = %info.format,
        virtual_size = info.virtual_size,
        ranges = remote.ranges,
        "Image inspected over http."
    );
    Ok(info)
}

/// The start of a file behind a URL, and how to read more of it.
struct Remote<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    /// The first [`HEAD`] bytes (all of them for a shorter file).
    head: Vec<u8>,
    /// The file's length, when the server says it.
    total: Option<u64>,
    /// Whether the server answers range requests.
    ranges: bool,
}

impl<'a> Remote<'a> {
    async fn open(client: &'a reqwest::Client, url: &'a str) -> Result<Remote<'a>, ImageError> {
        let resp = get(client, url, &format!("bytes=0-{}", HEAD - 1)).await?;
        let status = resp.status();
        let (head, mut total, ranges) = if status == StatusCode::PARTIAL_CONTENT {
            let Some((0, total)) = content_range(resp.headers()) else {
                return Err(ImageError::Invalid(format!(
                    "{url}: the server answered a request for the first bytes with another part \
                     of the file"
                )));
            };
            (body(url, resp, HEAD).await?, total, true)
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Only an empty file has no first byte.
            let total = content_range(resp.headers()).and_then(|(_, t)| t);
            if total.is_some_and(|t| t > 0) {
                return Err(ImageError::Invalid(format!(
                    "{url}: the server refused to send the first bytes of a {}-byte file",
                    total.unwrap_or(0)
                )));
            }
            (Vec::new(), Some(0), true)
        } else if status.is_success() {
            // The server ignores Range and sends the whole file: only its start is read.
            let total = content_length(resp.headers());
            (body(url, resp, HEAD).await?, total, false)
        } else {
            return Err(status_error(url, status));
        };
        if total.is_none() {
            total = head_length(client, url).await?;
        }
        let want = total.map_or(0, |t| t.min(HEAD as u64)) as usize;
        if head.len() < want {
            return Err(ImageError::Transient(format!(
                "{url}: the connection ended after {} of the first {want} bytes",
                head.len()
            )));
        }
        if head.is_empty() {
            return Err(ImageError::Invalid(format!("{url} is an empty file")));
        }
        Ok(Remote {
            client,
            url,
            head,
            total,
            ranges,
        })
    }

    /// Whether `head` is the whole file.
    fn whole(&self) -> bool {
        self.head.len() < HEAD || self.total == Some(self.head.len() as u64)
    }

    /// `len` bytes at `offset` (`what` they are, for errors): from the start already read, or with
    /// a range request.
    async fn read(&self, offset: u64, len: usize, what: &str) -> Result<Cow<'_, [u8]>, ImageError> {
        let url = self.url;
        let end = offset.saturating_add(len as u64);
        if end <= self.head.len() as u64 {
            return Ok(Cow::Borrowed(&self.head[offset as usize..end as usize]));
        }
        let past_end = match self.total {
            Some(total) => end > total,
            None => self.whole(),
        };
        if past_end {
            return Err(ImageError::Invalid(format!(
                "{url} is truncated: its {what} (bytes {offset} to {end}) lies past the end of the \
                 file"
            )));
        }
        if !self.ranges {
            return Err(ImageError::Invalid(format!(
                "{url}: the server ignores range requests, and the image's {what} lies past its \
                 first {} MiB; serve it from a server that answers Range (as CDI's importer also \
                 needs), or download it first",
                HEAD >> 20
            )));
        }
        let resp = get(self.client, url, &format!("bytes={offset}-{}", end - 1)).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(url, status));
        }
        if status != StatusCode::PARTIAL_CONTENT
            || content_range(resp.headers()).is_none_or(|(start, _)| start != offset)
        {
            return Err(ImageError::Invalid(format!(
                "{url}: the server answered {status} without the requested range when asked for \
                 the image's {what}"
            )));
        }
        let data = body(url, resp, len).await?;
        if data.len() < len {
            return Err(ImageError::Invalid(format!(
                "{url} is truncated: the server sent {} of the {len} bytes of its {what}",
                data.len()
            )));
        }
        Ok(Cow::Owned(data))
    }

    /// The file's last `len` bytes, when they can be read: the length is known, and the server
    /// answers ranges (or the whole file was read).
    async fn tail(&self, len: usize, what: &str) -> Result<Option<Cow<'_, [u8]>>, ImageError> {
        match self.total {
            Some(total) if total >= len as u64 && (self.ranges || self.whole()) => {
                Ok(Some(self.read(total - len as u64, len, what).await?))
            }
            _ => Ok(None),
        }
    }

    /// The file's name in the URL, lower-cased, without a query.
    fn name(&self) -> String {
        let path = self.url.split(['?', '#']).next().unwrap_or(self.url);
        path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase()
    }
}

/// A GET of `range` of `url` (compression refused, so the bytes are the file's).
async fn get(
    client: &reqwest::Client,
    url: &str,
    range: &str,
) -> Result<reqwest::Response, ImageError> {
    client
        .get(url)
        .header(header::RANGE, range)
        .header(header::ACCEPT_ENCODING, "identity")
        .send()
        .await
        .map_err(|e| request_error(url, e))
}

/// The file's length from a `HEAD` request (for a server whose GET said neither
/// `Content-Range` nor `Content-Length`); None when it does not say or does not answer HEAD.
async fn head_length(client: &reqwest::Client, url: &str) -> Result<Option<u64>, ImageError> {
    let resp = client
        .head(url)
        .header(header::ACCEPT_ENCODING, "identity")
        .send()
        .await
        .map_err(|e| request_error(url, e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(content_length(resp.headers()));
    }
    match status {
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => Ok(None),
        _ => Err(status_error(url, status)),
    }
}

/// Up to `max` bytes of a response's body; the rest is not read (the connection is dropped).
async fn body(url: &str, mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(url, e))? {
        let room = max - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() == max {
            break;
        }
    }
    Ok(out)
}

/// `Content-Length`, read from the header itself (reqwest's `content_length` is the body's size
/// hint, 0 for a HEAD).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Range: bytes <start>-<end>/<total or *>` (or `bytes */<total>` on a 416) as the start
/// (0 for the latter) and the total.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => 0,
        r => r.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((start, total))
}

/// Big- and little-endian fields of a header, refusing one cut short.
struct Fields<'b> {
    bytes: &'b [u8],
    url: &'b str,
    what: &'b str,
}

impl Fields<'_> {
    fn get(&self, at: usize, n: usize) -> Result<&[u8], ImageError> {
        self.bytes.get(at..at + n).ok_or_else(|| {
            ImageError::Invalid(format!(
                "{} is truncated: its {} is cut short",
                self.url, self.what
            ))
        })
    }

    fn be(&self, at: usize, n: usize) -> Result<u64, ImageError> {
        Ok(self
            .get(at, n)?
            .iter()
            .fold(0, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn le(&self, at: usize, n: usize) -> Result<u64, ImageError> {
        Ok(self
            .get(at, n)?
            .iter()
            .rev()
            .fold(0, |acc, b| acc << 8 | u64::from(*b)))
    }
}

/// An image of `format` and `virtual_size` with nothing else to say (no backing file, not
/// corrupt, not encrypted; the bytes it takes are unknown over http).
fn plain(format: &str, virtual_size: u64) -> ImageInfo {
    ImageInfo {
        format: format.into(),
        virtual_size,
        actual_size: None,
        ..ImageInfo::default()
    }
}

/// What the file is, by the magic numbers qemu probes.
async fn identify(r: &Remote<'_>) -> Result<ImageInfo, ImageError> {
    let url = r.url;
    let head = &r.head[..];
    if head.starts_with(b"QFI\xfb") {
        return qcow(r).await;
    }
    if head.starts_with(b"KDMV") {
        return vmdk_sparse(r).await;
    }
    if head.starts_with(b"COWD") {
        // ESX's vmfsSparse: the disk's sectors as a 32-bit count.
        let h = fields(r, "vmdk header");
        return Ok(plain("vmdk", h.le(12, 4)? * SECTOR));
    }
    if vmdk_descriptor(head) {
        return Err(ImageError::Invalid(format!(
            "{url} is a vmdk descriptor: its data is in extent files beside it, which an http \
             import cannot follow; convert it to one file (monolithicSparse or streamOptimized) \
             and serve that"
        )));
    }
    if head.starts_with(b"vhdxfile") {
        return vhdx(r).await;
    }
    if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return vdi(r);
    }
    if head.starts_with(b"conectix") {
        // A dynamic VHD keeps a copy of its footer at the start.
        return vpc(url, &head[..head.len().min(512)]);
    }
    if let Some(kind) = compressed(head) {
        return Err(ImageError::Invalid(format!(
            "{url} is {kind}-compressed: the disk's size is not in a compressed file's header; \
             serve the uncompressed image"
        )));
    }
    if head.get(257..262) == Some(b"ustar") {
        return Err(ImageError::Invalid(format!(
            "{url} is a tar archive, not a disk image (an OVA goes in as source.ova)"
        )));
    }
    let Some(total) = r.total else {
        return Err(ImageError::Invalid(format!(
            "{url}: the server says neither the file's length (no Content-Length or \
             Content-Range) nor answers HEAD with it, and a raw image's size is its length; serve \
             it from a server that does"
        )));
    };
    // A fixed VHD has its footer only at its end.
    match r.tail(512, "VHD footer").await? {
        Some(tail) if tail.starts_with(b"conectix") => return vpc(url, &tail),
        Some(_) => {}
        None if r.name().ends_with(".vhd") => {
            return Err(ImageError::Invalid(format!(
                "{url} is named as a VHD but has no VHD header at its start, and the server \
                 ignores range requests, so its footer (at the end) cannot be read; serve it from \
                 a server that answers Range, or download it first"
            )));
        }
        None => {}
    }
    Ok(plain("raw", whole_sectors(total)))
}

/// `bytes` rounded up to whole sectors, as qemu-img counts a raw file or an odd-sized vdi.
fn whole_sectors(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR).saturating_mul(SECTOR)
}

fn fields<'b>(r: &'b Remote<'_>, what: &'b str) -> Fields<'b> {
    Fields {
        bytes: &r.head,
        url: r.url,
        what,
    }
}

/// qcow2 (versions 2 and 3) and the original qcow (version 1).
async fn qcow(r: &Remote<'_>) -> Result<ImageInfo, ImageError> {
    let url = r.url;
    let h = fields(r, "qcow2 header");
    let version = h.be(4, 4)?;
    // Version 1 keeps its encryption after a byte each of cluster and L2 bits.
    let (format, crypt_at) = match version {
        1 => ("qcow", 36),
        2 | 3 => ("qcow2", 32),
        v => {
            return Err(ImageError::Invalid(format!(
                "{url}: unsupported qcow2 version {v}"
            )));
        }
    };
    let size = h.be(24, 8)?;
    let encrypted = h.be(crypt_at, 4)? != 0;
    let incompatible = if version == 3 { h.be(72, 8)? } else { 0 };
    // dirty, corrupt, external data file, compression type, extended L2 entries.
    const KNOWN: u64 = 0b1_1111;
    if incompatible & !KNOWN != 0 {
        return Err(ImageError::Invalid(format!(
            "{url}: the qcow2 image uses incompatible features qemu-img does not know (bits \
             {:#x})",
            incompatible & !KNOWN
        )));
    }
    if incompatible & 0b100 != 0 {
        return Err(ImageError::Invalid(format!(
            "{url}: the qcow2 image keeps its data in an external data file, which an http import \
             cannot follow"
        )));
    }
    let (offset, len) = (h.be(8, 8)?, h.be(16, 4)?);
    let backing_file = if offset != 0 && len != 0 {
        if len > 1023 {
            return Err(ImageError::Invalid(format!(
                "{url}: the qcow2 image's backing file name is too long ({len} bytes)"
            )));
        }
        let name = r.read(offset, len as usize, "backing file name").await?;
        Some(String::from_utf8_lossy(&name).into_owned())
    } else {
        None
    };
    Ok(ImageInfo {
        format: format.into(),
        // qemu counts the disk in whole sectors.
        virtual_size: size / SECTOR * SECTOR,
        actual_size: None,
        backing_file,
        // What `qemu-img info` reports as format-specific corrupt: the bit qemu sets when it meets
        // a corruption. Checking the tables (`qemu-img check`) needs the whole file.
        corrupt: incompatible & 0b10 != 0,
        encrypted,
    })
}

/// A vmdk sparse extent (monolithicSparse, streamOptimized): capacity in sectors at 12, and a
/// descriptor embedded after the header that may name a parent.
async fn vmdk_sparse(r: &Remote<'_>) -> Result<ImageInfo, ImageError> {
    let url = r.url;
    let h = fields(r, "vmdk header");
    let version = h.le(4, 4)?;
    if version > 3 {
        return Err(ImageError::Invalid(format!(
            "{url}: unsupported VMDK version {version}"
        )));
    }
    let mut capacity = h.le(12, 8)?;
    let (desc_offset, desc_size) = (h.le(28, 8)?, h.le(36, 8)?);
    if capacity == 0 && desc_offset != 0 {
        return Err(ImageError::Invalid(format!(
            "{url} is a vmdk whose embedded descriptor names its extents, which are separate \
             files an http import cannot follow"
        )));
    }
    // A streamOptimized vmdk writes its grain directory last, and a copy of the header that
    // locates it in a footer (before the end-of-stream marker); qemu takes the footer's fields.
    if h.le(56, 8)? == u64::MAX
        && let Some(tail) = r.tail(3 * SECTOR as usize, "vmdk footer").await?
        && tail[512..].starts_with(b"KDMV")
    {
        capacity = Fields {
            bytes: &tail[512..1024],
            url,
            what: "vmdk footer",
        }
        .le(12, 8)?;
    }
    let size = capacity.checked_mul(SECTOR).ok_or_else(|| {
        ImageError::Invalid(format!(
            "{url}: the vmdk's capacity ({capacity} sectors) is impossible"
        ))
    })?;
    let mut info = plain("vmdk", size);
    if desc_offset != 0 && desc_size != 0 {
        // qemu reads at most 20 sectors of it.
        let len = (desc_size.min(20) * SECTOR) as usize;
        let desc = r
            .read(
                desc_offset.saturating_mul(SECTOR),
                len,
                "embedded descriptor",
            )
            .await?;
        info.backing_file = parent_hint(&String::from_utf8_lossy(&desc));
    }
    Ok(info)
}

/// `parentFileNameHint="<name>"` in a vmdk descriptor, as qemu reads its backing file.
fn parent_hint(desc: &str) -> Option<String> {
    let rest = desc.split_once("parentFileNameHint=\"")?.1;
    let name = &rest[..rest.find('"')?];
    (!name.is_empty()).then(|| name.to_string())
}

/// A vmdk text descriptor, as qemu probes one: after comment and blank lines, `version=N`.
fn vmdk_descriptor(head: &[u8]) -> bool {
    let text = &head[..head.len().min(2048)];
    for line in text.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        return matches!(line, b"version=1" | b"version=2" | b"version=3");
    }
    false
}

/// A VHD footer (at the start of a dynamic VHD, at the end of a fixed one), sized as qemu sizes
/// it: by the geometry for images Virtual PC or an old qemu made, else by the current size.
fn vpc(url: &str, footer: &[u8]) -> Result<ImageInfo, ImageError> {
    let f = Fields {
        bytes: footer,
        url,
        what: "VHD footer",
    };
    let disk_type = f.be(60, 4)?;
    if disk_type == 4 {
        return Err(ImageError::Invalid(format!(
            "{url} is a differencing VHD: its parent holds the rest of the disk; merge it into \
             its parent first"
        )));
    }
    let current = f.be(48, 8)?;
    let chs = f.be(56, 2)? * f.be(58, 1)? * f.be(59, 1)?;
    let creator = f.get(28, 4)?;
    let by_geometry = matches!(creator, b"vpc " | b"qemu");
    // The largest geometry cannot describe a larger disk; its current size is right.
    const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
    let sectors = if by_geometry && chs != MAX_GEOMETRY {
        chs
    } else {
        current / SECTOR
    };
    Ok(plain("vpc", sectors * SECTOR))
}

/// A vdi: its disk size at 368, rounded up to a sector as qemu does.
fn vdi(r: &Remote<'_>) -> Result<ImageInfo, ImageError> {
    let url = r.url;
    let h = fields(r, "vdi header");
    let version = h.le(68, 4)?;
    if version != 0x0001_0001 {
        return Err(ImageError::Invalid(format!(
            "{url}: unsupported VDI image (version {}.{})",
            version >> 16,
            version & 0xffff
        )));
    }
    // A linked or differencing image (a snapshot) needs the image it was made from.
    if h.get(424, 16)?.iter().any(|b| *b != 0) || h.get(440, 16)?.iter().any(|b| *b != 0) {
        return Err(ImageError::Invalid(format!(
            "{url} is a VDI snapshot (differencing image): its parent holds the rest of the disk; \
             clone it to a standalone image first"
        )));
    }
    Ok(plain("vdi", whole_sectors(h.le(368, 8)?)))
}

/// A GUID as vhdx stores it: the first three fields little-endian.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

const VHDX_METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const VHDX_FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VHDX_VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const VHDX_LOGICAL_SECTOR_SIZE: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);

/// A vhdx: the region table (at 192 KiB, checksummed) locates the metadata region, whose table
/// locates the virtual disk size.
async fn vhdx(r: &Remote<'_>) -> Result<ImageInfo, ImageError> {
    let url = r.url;
    let damaged = |what: &str| ImageError::Invalid(format!("{url}: the vhdx's {what} is damaged"));
    let table = r.read(192 << 10, 64 << 10, "vhdx region table").await?;
    let t = Fields {
        bytes: &table,
        url,
        what: "vhdx region table",
    };
    if t.get(0, 4)? != b"regi" || !crc32c_matches(&table) {
        return Err(damaged("region table"));
    }
    let entries = t.le(8, 4)?;
    if entries > 2047 {
        return Err(damaged("region table"));
    }
    let metadata = (0..entries as usize)
        .map(|i| 16 + 32 * i)
        .find(|&at| t.get(at, 16).is_ok_and(|g| g == VHDX_METADATA_REGION))
        .ok_or_else(|| damaged("region table (it has no metadata region)"))?;
    let (region, region_len) = (t.le(metadata + 16, 8)?, t.le(metadata + 24, 4)?);
    let table = r
        .read(
            region,
            (64 << 10).min(region_len) as usize,
            "vhdx metadata table",
        )
        .await?;
    let m = Fields {
        bytes: &table,
        url,
        what: "vhdx metadata table",
    };
    if m.get(0, 8)? != b"metadata" {
        return Err(damaged("metadata table"));
    }
    let count = m.le(10, 2)? as usize;
    let item = |id: [u8; 16]| -> Result<Option<(u64, u64)>, ImageError> {
        for at in (0..count).map(|i| 32 + 32 * i) {
            if m.get(at, 16)? == id {
                return Ok(Some((m.le(at + 16, 4)?, m.le(at + 20, 4)?)));
            }
        }
        Ok(None)
    };
    let value = async |id, len: usize, what: &str| -> Result<u64, ImageError> {
        let (offset, size) = item(id)?.ok_or_else(|| damaged(&format!("metadata (no {what})")))?;
        if size < len as u64 {
            return Err(damaged(&format!("metadata ({what})")));
        }
        let bytes = r.read(region.saturating_add(offset), len, what).await?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0, |acc, b| acc << 8 | u64::from(*b)))
    };
    let flags = value(VHDX_FILE_PARAMETERS, 8, "file parameters").await? >> 32;
    if flags & 0b10 != 0 {
        return Err(ImageError::Invalid(format!(
            "{url} is a differencing vhdx: its parent holds the rest of the disk; merge it into \
             its parent first"
        )));
    }
    let sector = value(VHDX_LOGICAL_SECTOR_SIZE, 4, "logical sector size").await?;
    if sector != 512 {
        return Err(ImageError::Invalid(format!(
            "{url}: the vhdx has {sector}-byte logical sectors; qemu-img reads only 512-byte ones"
        )));
    }
    let size = value(VHDX_VIRTUAL_DISK_SIZE, 8, "virtual disk size").await?;
    Ok(plain("vhdx", size / SECTOR * SECTOR))
}

/// Whether a vhdx structure's CRC-32C (at offset 4, computed with that field zero) matches.
fn crc32c_matches(data: &[u8]) -> bool {
    let Some(stored) = data.get(4..8) else {
        return false;
    };
    let stored = u32::from_le_bytes(stored.try_into().expect("four bytes"));
    let zeroed = data
        .iter()
        .enumerate()
        .map(|(i, &b)| if (4..8).contains(&i) { 0 } else { b });
    crc32c(zeroed) == stored
}

/// CRC-32C (Castagnoli), bit by bit: a region table is 64 KiB, read once.
fn crc32c(bytes: impl IntoIterator<Item = u8>) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The compression a file starts with, if any: its image header is inside.
fn compressed(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && &head[4..10] == b"1AY&SY"
    {
        Some("bzip2")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole file as a server that ignores ranges sends it.
    fn remote<'a>(client: &'a reqwest::Client, url: &'a str, data: &[u8]) -> Remote<'a> {
        Remote {
            client,
            url,
            head: data[..data.len().min(HEAD)].to_vec(),
            total: Some(data.len() as u64),
            ranges: false,
        }
    }

    async fn probe(url: &str, data: &[u8]) -> Result<ImageInfo, ImageError> {
        let client = reqwest::Client::new();
        identify(&remote(&client, url, data)).await
    }

    fn qcow2(version: u32, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(*b"123456789"), 0xE306_9283);
        let mut data = b"regi\x00\x00\x00\x00123456789".to_vec();
        let crc = crc32c(data.iter().copied());
        data[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(crc32c_matches(&data));
        data[9] ^= 1;
        assert!(!crc32c_matches(&data));
    }

    #[tokio::test]
    async fn qcow2_headers() {
        let url = "http://h/a.qcow2";
        let info = probe(url, &qcow2(3, 64 << 20)).await.unwrap();
        assert_eq!(info, plain("qcow2", 64 << 20));

        let mut over = qcow2(3, 1 << 30);
        over[8..16].copy_from_slice(&512u64.to_be_bytes());
        over[16..20].copy_from_slice(&9u32.to_be_bytes());
        over[512..521].copy_from_slice(b"base.img!");
        over[32..36].copy_from_slice(&1u32.to_be_bytes());
        over[72..80].copy_from_slice(&2u64.to_be_bytes());
        let info = probe(url, &over).await.unwrap();
        assert_eq!(info.backing_file.as_deref(), Some("base.img!"));
        assert!(info.encrypted && info.corrupt);

        // The backing file name past the end of a short file.
        over[8..16].copy_from_slice(&5000u64.to_be_bytes());
        let e = probe(url, &over).await.unwrap_err();
        assert!(
            matches!(&e, ImageError::Invalid(m) if m.contains("truncated") && m.contains("backing file name")),
            "{e:?}"
        );

        let e = probe(url, &qcow2(99, 1 << 20)).await.unwrap_err();
        assert!(
            matches!(&e, ImageError::Invalid(m) if m.contains("qcow2 version 99")),
            "{e:?}"
        );
        let mut external = qcow2(3, 1 << 20);
        external[72..80].copy_from_slice(&4u64.to_be_bytes());
        assert!(matches!(
            probe(url, &external).await,
            Err(ImageError::Invalid(m)) if m.contains("external data file")
        ));
        let e = probe(url, &qcow2(3, 1 << 20)[..30]).await.unwrap_err();
        assert!(
            matches!(&e, ImageError::Invalid(m) if m.contains("cut short")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn vpc_footers() {
        let footer = |creator: &[u8; 4], current: u64, chs: (u16, u8, u8), kind: u32| {
            let mut f = vec![0u8; 512];
            f[..8].copy_from_slice(b"conectix");
            f[28..32].copy_from_slice(creator);
            f[48..56].copy_from_slice(&current.to_be_bytes());
            f[56..58].copy_from_slice(&chs.0.to_be_bytes());
            f[58] = chs.1;
            f[59] = chs.2;
            f[60..64].copy_from_slice(&kind.to_be_bytes());
            f
        };
        let url = "http://h/a.vhd";
        // Virtual PC's size is its geometry; Hyper-V's (and everyone else's) is current_size.
        let vpc = footer(b"vpc ", 100 << 20, (200, 16, 63), 3);
        assert_eq!(
            probe(url, &vpc).await.unwrap().virtual_size,
            200 * 16 * 63 * 512
        );
        let win = footer(b"win ", 100 << 20, (200, 16, 63), 3);
        assert_eq!(probe(url, &win).await.unwrap().virtual_size, 100 << 20);
        let big = footer(b"qemu", 4 << 40, (65535, 16, 255), 3);
        assert_eq!(probe(url, &big).await.unwrap().virtual_size, 4 << 40);
        assert!(matches!(
            probe(url, &footer(b"win ", 1 << 20, (1, 1, 1), 4)).await,
            Err(ImageError::Invalid(m)) if m.contains("differencing")
        ));
        // A fixed VHD: its footer at the end.
        let mut fixed = vec![0u8; 1 << 20];
        fixed.extend(footer(b"win ", 1 << 20, (1, 1, 1), 2));
        assert_eq!(probe(url, &fixed).await.unwrap(), plain("vpc", 1 << 20));
    }

    #[tokio::test]
    async fn raw_and_refused() {
        let url = "http://h/disk.img";
        assert_eq!(probe(url, &[1u8; 1000]).await.unwrap(), plain("raw", 1024));
        let descriptor =
            b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\ncreateType=\"monolithicFlat\"\n";
        assert!(matches!(
            probe(url, descriptor).await,
            Err(ImageError::Invalid(m)) if m.contains("vmdk descriptor")
        ));
        let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        assert!(matches!(
            probe(url, &gz).await,
            Err(ImageError::Invalid(m)) if m.contains("gzip-compressed")
        ));
        // No length said: a raw image cannot be sized.
        let client = reqwest::Client::new();
        let mut r = remote(&client, url, &[7u8; 4096]);
        r.total = None;
        assert!(matches!(
            identify(&r).await,
            Err(ImageError::Invalid(m)) if m.contains("Content-Length")
        ));
        // A .vhd without ranges whose footer is out of reach.
        let mut r = remote(&client, "http://h/fixed.vhd?x=1", &[]);
        r.head = vec![0u8; HEAD];
        r.total = Some(1 << 30);
        assert!(matches!(
            identify(&r).await,
            Err(ImageError::Invalid(m)) if m.contains("ignores range requests")
        ));
    }

    #[test]
    fn descriptors_and_hints() {
        assert!(vmdk_descriptor(b"# Disk DescriptorFile\n\n  version=1\r\n"));
        assert!(vmdk_descriptor(b"version=3\n"));
        assert!(!vmdk_descriptor(b"# hello\nnot a descriptor\nversion=1\n"));
        assert_eq!(
            parent_hint("CID=1\nparentCID=2\nparentFileNameHint=\"base.vmdk\"\n").as_deref(),
            Some("base.vmdk")
        );
        assert_eq!(parent_hint("parentCID=ffffffff\n"), None);
    }

    #[test]
    fn content_ranges() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 0-99/1000".parse().unwrap());
        assert_eq!(content_range(&h), Some((0, Some(1000))));
        h.insert(header::CONTENT_RANGE, "bytes 10-99/*".parse().unwrap());
        assert_eq!(content_range(&h), Some((10, None)));
        h.insert(header::CONTENT_RANGE, "bytes */0".parse().unwrap());
        assert_eq!(content_range(&h), Some((0, Some(0))));
        h.insert(header::CONTENT_RANGE, "items 0-1/2".parse().unwrap());
        assert_eq!(content_range(&h), None);
    }
}
