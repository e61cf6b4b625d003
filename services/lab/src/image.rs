//! Disk images as CDI's upload server and importer judge them (`qemu-img info`, then
//! `checkIfURLIsValid`): the format from the first bytes (and, for a fixed VHD, the 512-byte footer
//! at the end), the virtual size, a qcow2 backing file, and the refusals with CDI's words. A
//! [`Meter`] watches a stream go by (byte count, the first [`HEAD_BYTES`], the last [`TAIL_BYTES`])
//! without keeping it, at a cost per chunk, not per byte.
//!
//! The lab's own rule, where CDI would take any bytes as raw: a raw image whose length is not a
//! whole number of 512-byte sectors is "not a disk image" (the stand-in for a text file, a PDF...).

/// How much of the start of a stream is kept for the format checks.
pub const HEAD_BYTES: usize = 64 * 1024;
/// How much of the end of a stream is kept (a fixed VHD's footer).
pub const TAIL_BYTES: usize = 512;
/// A disk sector.
pub const SECTOR: u64 = 512;
/// The file CDI's upload server validates (the scratch copy), as its messages name it.
pub const SCRATCH_IMAGE: &str = "/scratch/tmpimage";

/// A format as `qemu-img info` names it (`vpc` is VHD), or a refused non-image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Raw,
    Vmdk,
    Vpc,
    Vhdx,
    Vdi,
    /// A gzip stream (CDI decompresses it; the lab cannot see inside).
    Gzip,
    /// An xz stream (likewise).
    Xz,
    /// A tar archive: not a disk image.
    Tar,
}

impl Format {
    /// The `qemu-img` name (`qcow2`, `raw`, `vmdk`, `vpc`, `vhdx`, `vdi`; `gzip`, `xz`, `tar`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Vpc => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Tar => "tar",
        }
    }
}

/// What the bytes seen so far say about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    /// The virtual size the header states; `None` when the format does not say it cheaply (vhdx,
    /// compressed streams) or it lies beyond the bytes seen, or for raw (its length).
    pub virtual_size: Option<u64>,
    /// A qcow2 backing file.
    pub backing_file: Option<String>,
}

/// Who asks: the upload server takes qcow2 and raw only; the importer converts the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Upload,
    Import,
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap_or_default()))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().unwrap_or_default()))
}

/// Detect the format from the first bytes (`head`) and, when the stream has ended, its last
/// [`TAIL_BYTES`] (`tail`, for a fixed VHD whose only header is its footer).
pub fn probe(head: &[u8], tail: Option<&[u8]>) -> Probe {
    let plain = |format| Probe {
        format,
        virtual_size: None,
        backing_file: None,
    };
    if head.starts_with(b"QFI\xfb") {
        let backing = be64(head, 8).filter(|o| *o != 0).map(|offset| {
            let len = be32(head, 16).unwrap_or(0) as usize;
            usize::try_from(offset)
                .ok()
                .and_then(|o| head.get(o..o.checked_add(len)?))
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .unwrap_or_else(|| format!("(at offset {offset})"))
        });
        return Probe {
            format: Format::Qcow2,
            virtual_size: be64(head, 24),
            backing_file: backing,
        };
    }
    if head.starts_with(b"KDMV") {
        return Probe {
            virtual_size: le64(head, 12).and_then(|s| s.checked_mul(SECTOR)),
            ..plain(Format::Vmdk)
        };
    }
    if head.starts_with(b"# Disk DescriptorFile") {
        return Probe {
            virtual_size: vmdk_descriptor_size(head),
            ..plain(Format::Vmdk)
        };
    }
    if head.starts_with(b"vhdxfile") {
        return plain(Format::Vhdx);
    }
    if head.starts_with(b"conectix") {
        // A dynamic VHD starts with a copy of its footer: the current size is at offset 48.
        return Probe {
            virtual_size: be64(head, 48),
            ..plain(Format::Vpc)
        };
    }
    if head.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Probe {
            virtual_size: le64(head, 0x170),
            ..plain(Format::Vdi)
        };
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return plain(Format::Gzip);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return plain(Format::Xz);
    }
    if head.get(257..262) == Some(b"ustar") {
        return plain(Format::Tar);
    }
    if let Some(t) = tail.filter(|t| t.len() == TAIL_BYTES && t.starts_with(b"conectix")) {
        return Probe {
            virtual_size: be64(t, 48),
            ..plain(Format::Vpc)
        };
    }
    plain(Format::Raw)
}

/// The sum of a text VMDK descriptor's extents (`RW 41943040 SPARSE "x-flat.vmdk"`), in bytes.
fn vmdk_descriptor_size(head: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(head);
    let mut sectors = 0u64;
    let mut any = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if matches!(words.next(), Some("RW" | "RDONLY" | "NOACCESS"))
            && let Some(n) = words.next().and_then(|n| n.parse::<u64>().ok())
        {
            sectors = sectors.saturating_add(n);
            any = true;
        }
    }
    any.then(|| sectors.saturating_mul(SECTOR))
}

/// Judge a whole image of `len` bytes for a volume of `available` bytes: its virtual size, or the
/// refusal. Upload refusals are CDI's upload server's (`Invalid format vmdk for image ...`),
/// import refusals the importer's, without the `Unable to process data: ` the importer adds.
pub fn validate(p: &Probe, len: u64, available: u64, mode: Mode) -> Result<u64, String> {
    match p.format {
        Format::Tar => return Err("not a disk image: a tar archive".into()),
        Format::Vmdk | Format::Vpc | Format::Vhdx | Format::Vdi if mode == Mode::Upload => {
            return Err(format!(
                "Invalid format {} for image {SCRATCH_IMAGE}",
                p.format.name()
            ));
        }
        Format::Raw if len == 0 => return Err("not a disk image: the image is empty".into()),
        Format::Raw if !len.is_multiple_of(SECTOR) => {
            return Err(format!(
                "not a disk image: {len} bytes is not a whole number of 512-byte sectors"
            ));
        }
        _ => {}
    }
    if let Some(backing) = &p.backing_file {
        return Err(format!(
            "Image {SCRATCH_IMAGE} is invalid because it has invalid backing file {backing}"
        ));
    }
    let virtual_size = match p.format {
        // A fixed VHD is its data and a 512-byte footer.
        Format::Vpc => p.virtual_size.unwrap_or(len.saturating_sub(SECTOR)),
        _ => p.virtual_size.unwrap_or(len),
    };
    if virtual_size > available {
        return Err(format!(
            "Virtual image size {virtual_size} is larger than the reported available storage {available}. A larger PVC is required."
        ));
    }
    Ok(virtual_size)
}

/// What the first bytes decide before the transfer (the importer runs `qemu-img info` on the URL
/// first): a tar archive, a backing file, a header's virtual size too large, or a declared length
/// (`Content-Length`) that is not whole sectors for raw. The rest waits for the end.
pub fn check_early(
    p: &Probe,
    declared_len: Option<u64>,
    available: u64,
    mode: Mode,
) -> Result<(), String> {
    match p.format {
        Format::Raw => match declared_len {
            Some(n) if n > 0 && !n.is_multiple_of(SECTOR) => {
                validate(p, n, u64::MAX, mode).map(drop)
            }
            _ => Ok(()),
        },
        Format::Gzip | Format::Xz | Format::Vhdx => Ok(()),
        _ if p.virtual_size.is_some() || p.format == Format::Tar || p.backing_file.is_some() => {
            validate(p, 0, available, mode).map(drop)
        }
        _ => Ok(()),
    }
}

/// Watches a stream go by: the byte count, the first [`HEAD_BYTES`] and the last [`TAIL_BYTES`].
#[derive(Debug, Default)]
pub struct Meter {
    pub bytes: u64,
    pub head: Vec<u8>,
    tail: Vec<u8>,
}

impl Meter {
    /// Account for one chunk.
    pub fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        if data.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - TAIL_BYTES..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > TAIL_BYTES {
                let cut = self.tail.len() - TAIL_BYTES;
                self.tail.drain(..cut);
            }
        }
    }

    /// Whether the head is complete (so the early checks can run).
    pub fn head_full(&self) -> bool {
        self.head.len() >= HEAD_BYTES
    }

    /// The probe of the whole stream, once it has ended.
    pub fn probe(&self) -> Probe {
        probe(&self.head, Some(&self.tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(size: u64, backing: Option<&str>) -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        if let Some(b) = backing {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
            h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
            h[512..512 + b.len()].copy_from_slice(b.as_bytes());
        }
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h
    }

    #[test]
    fn formats_from_their_magic() {
        let q = probe(&qcow2(1 << 30, None), None);
        assert_eq!(
            (q.format, q.virtual_size, q.backing_file),
            (Format::Qcow2, Some(1 << 30), None)
        );
        let q = probe(&qcow2(1 << 30, Some("base.qcow2")), None);
        assert_eq!(q.backing_file.as_deref(), Some("base.qcow2"));
        let mut vmdk = vec![0u8; 512];
        vmdk[..4].copy_from_slice(b"KDMV");
        vmdk[12..20].copy_from_slice(&2048u64.to_le_bytes());
        assert_eq!(
            probe(&vmdk, None),
            Probe {
                format: Format::Vmdk,
                virtual_size: Some(2048 * 512),
                backing_file: None
            }
        );
        let desc = b"# Disk DescriptorFile\nversion=1\nRW 4096 FLAT \"a-flat.vmdk\" 0\nRW 4096 FLAT \"b-flat.vmdk\" 0\n";
        assert_eq!(probe(desc, None).virtual_size, Some(8192 * 512));
        assert_eq!(probe(b"vhdxfile\0\0", None).format, Format::Vhdx);
        let mut tar = vec![0u8; 1024];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(probe(&tar, None).format, Format::Tar);
        let mut vdi = vec![0u8; 0x200];
        vdi[0x40..0x44].copy_from_slice(&0xbeda107fu32.to_le_bytes());
        vdi[0x170..0x178].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(
            (probe(&vdi, None).format, probe(&vdi, None).virtual_size),
            (Format::Vdi, Some(4096))
        );
        let mut footer = vec![0u8; 512];
        footer[..8].copy_from_slice(b"conectix");
        footer[48..56].copy_from_slice(&(1u64 << 20).to_be_bytes());
        let data = vec![0u8; 4096];
        assert_eq!(probe(&data, None).format, Format::Raw);
        let p = probe(&data, Some(&footer));
        assert_eq!((p.format, p.virtual_size), (Format::Vpc, Some(1 << 20)));
        assert_eq!(probe(&[0x1f, 0x8b, 8, 0], None).format, Format::Gzip);
    }

    #[test]
    fn refusals_in_cdi_words() {
        let gib = 1u64 << 30;
        let raw = probe(&[0u8; 512], None);
        assert_eq!(validate(&raw, 4096, gib, Mode::Upload), Ok(4096));
        assert_eq!(
            validate(&raw, 4097, gib, Mode::Upload).unwrap_err(),
            "not a disk image: 4097 bytes is not a whole number of 512-byte sectors"
        );
        assert_eq!(
            validate(&raw, 2 * gib, gib, Mode::Upload).unwrap_err(),
            format!(
                "Virtual image size {} is larger than the reported available storage {gib}. A larger PVC is required.",
                2 * gib
            )
        );
        let q = probe(&qcow2(10 * gib, None), None);
        assert!(
            validate(&q, 1024, gib, Mode::Upload)
                .unwrap_err()
                .starts_with("Virtual image size 10737418240 is larger")
        );
        assert!(check_early(&q, None, gib, Mode::Import).is_err());
        assert_eq!(validate(&q, 1024, 20 * gib, Mode::Upload), Ok(10 * gib));
        let b = probe(&qcow2(gib, Some("/var/base.img")), None);
        assert_eq!(
            validate(&b, 1024, 20 * gib, Mode::Upload).unwrap_err(),
            "Image /scratch/tmpimage is invalid because it has invalid backing file /var/base.img"
        );
        let v = probe(b"KDMV", None);
        assert_eq!(
            validate(&v, 4096, gib, Mode::Upload).unwrap_err(),
            "Invalid format vmdk for image /scratch/tmpimage"
        );
        assert_eq!(validate(&v, 4096, gib, Mode::Import), Ok(4096));
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        let t = probe(&tar, None);
        assert_eq!(
            check_early(&t, None, gib, Mode::Import).unwrap_err(),
            "not a disk image: a tar archive"
        );
        assert!(check_early(&raw, Some(1000), gib, Mode::Import).is_err());
        assert!(check_early(&raw, None, gib, Mode::Import).is_ok());
    }

    #[test]
    fn meter_keeps_head_and_tail_only() {
        let mut m = Meter::default();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(1000).chain(data.chunks(7)) {
            m.feed(chunk);
        }
        assert_eq!(m.bytes, 400_000);
        assert_eq!(m.head, data[..HEAD_BYTES]);
        assert_eq!(m.tail, data[data.len() - TAIL_BYTES..]);
        let mut small = Meter::default();
        small.feed(b"abc");
        small.feed(b"def");
        assert_eq!(
            (small.head.as_slice(), small.tail.as_slice()),
            (&b"abcdef"[..], &b"abcdef"[..])
        );
    }
}
