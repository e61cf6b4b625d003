//! Lists the members of an OVA, which is a tar: each member's name, size and where its bytes start,
//! read from the headers alone (the reader seeks past every member's data), so a 500 GB OVA is listed
//! with a few reads.
//!
//! A small reader of our own rather than the `tar` crate: the `tar` crate reads through a blocking
//! `std::io::Read`, so it would run on `spawn_blocking`, where a step that is cancelled or times out
//! cannot stop it (a blocking task runs to its end), and it hands out entries as readers, while the
//! digest and extract operations want an (offset, length) to stream with tokio from any point. The
//! OVF specification (DSP0243) says an OVA is a ustar archive; this reader also takes what real
//! exporters and GNU tar write: pax extended headers (`path`, `size`), GNU long names (`L`) and
//! base-256 sizes (members over 8 GiB).

use std::io::SeekFrom;

use drover_workflows::ports::images::ImageError;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// One regular file in the archive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    /// The name as written, without a leading `./`.
    pub name: String,
    /// Where its bytes start in the archive.
    pub offset: u64,
    pub size: u64,
}

const BLOCK: u64 = 512;
/// The most an extended header (pax `x` or GNU `L`) may hold: names, not data.
const MAX_EXTENDED: u64 = 1 << 20;

/// The regular files of the tar at `file` (of `len` bytes), in archive order. `label` names the
/// archive in errors.
pub(crate) async fn members(
    file: &mut File,
    len: u64,
    label: &str,
) -> Result<Vec<Member>, ImageError> {
    let mut out = Vec::new();
    let mut at = 0u64;
    // What a pax `x` or GNU `L` header says about the next header's member.
    let mut next_name: Option<String> = None;
    let mut next_size: Option<u64> = None;
    loop {
        if at + BLOCK > len {
            // An archive may end without its two zero blocks; a header cut short is a truncation.
            if at == len && next_name.is_none() && next_size.is_none() {
                return Ok(out);
            }
            return Err(ImageError::Invalid(format!(
                "{label} is truncated: its tar header at offset {at} is cut off at {len} bytes"
            )));
        }
        let mut h = [0u8; BLOCK as usize];
        read_at(file, at, &mut h, label).await?;
        if h.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        if !checksum_ok(&h) {
            return Err(ImageError::Invalid(if at == 0 {
                format!("{label} is not an OVA: it does not start with a tar header")
            } else {
                format!("{label}: the tar header at offset {at} is damaged (bad checksum)")
            }));
        }
        let header_size = number(&h[124..136]).ok_or_else(|| {
            ImageError::Invalid(format!(
                "{label}: the tar header at offset {at} has no valid size"
            ))
        })?;
        let kind = h[156];
        let data = at + BLOCK;
        // A pax size overrides the header's for the member it describes, not for the pax header.
        let size = match kind {
            b'x' | b'g' | b'L' | b'K' => header_size,
            _ => next_size.take().unwrap_or(header_size),
        };
        if data.checked_add(size).is_none_or(|end| end > len) {
            return Err(ImageError::Invalid(format!(
                "{label} is truncated: member {} needs {size} bytes from offset {data}, the file has {len}",
                next_name.as_deref().unwrap_or(&header_name(&h))
            )));
        }
        match kind {
            b'x' | b'L' => {
                if size > MAX_EXTENDED {
                    return Err(ImageError::Invalid(format!(
                        "{label}: the extended tar header at offset {at} is {size} bytes, too large for names"
                    )));
                }
                let mut buf = vec![0u8; size as usize];
                read_at(file, data, &mut buf, label).await?;
                if kind == b'L' {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    next_name = Some(String::from_utf8_lossy(&buf[..end]).into_owned());
                } else {
                    let (path, size) = pax(&buf).map_err(|why| {
                        ImageError::Invalid(format!(
                            "{label}: the pax header at offset {at} is damaged: {why}"
                        ))
                    })?;
                    next_name = path.or(next_name);
                    next_size = size.or(next_size);
                }
            }
            // Regular files ('0', NUL for old tars, '7' contiguous).
            b'0' | 0 | b'7' => {
                let name = next_name.take().unwrap_or_else(|| header_name(&h));
                out.push(Member {
                    name: clean(&name).to_string(),
                    offset: data,
                    size,
                });
            }
            // Directories, links, devices, pax globals: nothing an OVA's importer reads.
            _ => {
                next_name = None;
                next_size = None;
            }
        }
        at = data + size.div_ceil(BLOCK) * BLOCK;
    }
}

/// `name` without leading `./` (GNU tar writes `./disk.vmdk` for `tar -C dir .`).
pub(crate) fn clean(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest;
    }
    n
}

async fn read_at(file: &mut File, at: u64, buf: &mut [u8], label: &str) -> Result<(), ImageError> {
    let io =
        |e: std::io::Error| ImageError::Transient(format!("reading {label} at offset {at}: {e}"));
    file.seek(SeekFrom::Start(at)).await.map_err(io)?;
    file.read_exact(buf).await.map_err(io)?;
    Ok(())
}

/// The header's checksum: the sum of its bytes with the checksum field read as spaces. Old tars
/// summed signed bytes; both are accepted.
fn checksum_ok(h: &[u8; BLOCK as usize]) -> bool {
    let Some(want) = number(&h[148..156]) else {
        return false;
    };
    let field = |i: usize| (148..156).contains(&i);
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| if field(i) { 32 } else { u64::from(b) })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| if field(i) { 32 } else { i64::from(b as i8) })
        .sum();
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

/// A numeric field: octal digits padded with spaces or NULs, or GNU's base-256 (first byte's high
/// bit set) for values octal cannot hold.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: &[u8] = {
        let start = field.iter().position(|&b| b != b' ' && b != 0)?;
        let end = field[start..]
            .iter()
            .position(|&b| b == b' ' || b == 0)
            .map_or(field.len(), |e| start + e);
        &field[start..end]
    };
    let mut v: u64 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// The ustar name: `prefix/name` when the POSIX prefix field is used.
fn header_name(h: &[u8; BLOCK as usize]) -> String {
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = text(&h[0..100]);
    // "ustar\0" is POSIX, whose bytes 345.. are the prefix; GNU's "ustar  " uses them otherwise.
    if &h[257..263] == b"ustar\0" {
        let prefix = text(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// The `path` and `size` of a pax extended header's records (`<len> <key>=<value>\n`).
fn pax(mut buf: &[u8]) -> Result<(Option<String>, Option<u64>), String> {
    let (mut path, mut size) = (None, None);
    while !buf.is_empty() && buf[0] != 0 {
        let space = buf
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a record without a length")?;
        let n: usize = std::str::from_utf8(&buf[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a record length that is not a number")?;
        if n <= space + 1 || n > buf.len() || buf[n - 1] != b'\n' {
            return Err(format!("a record of length {n} that does not fit"));
        }
        let record = &buf[space + 1..n - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => path = Some(String::from_utf8_lossy(value).into_owned()),
            b"size" => {
                size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("a size that is not a number")?,
                );
            }
            _ => {}
        }
        buf = &buf[n..];
    }
    Ok((path, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_octal_and_base_256() {
        assert_eq!(number(b"00000001750\0"), Some(1000));
        assert_eq!(number(b"     1750 \0\0"), Some(1000));
        assert_eq!(number(b"\0\0\0\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(number(b"0000000175x\0"), None);
        // 10 GiB as GNU tar writes it.
        let mut f = [0u8; 12];
        f[4..12].copy_from_slice(&(10u64 << 30).to_be_bytes());
        f[0] = 0x80;
        assert_eq!(number(&f), Some(10 << 30));
    }

    #[test]
    fn pax_records() {
        // A record's length counts its own digits.
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while format!("{n}{body}").len() != n {
                n += 1;
            }
            format!("{n}{body}")
        };
        let text = format!(
            "{}{}",
            rec("path", "a/very/long/disk name.vmdk"),
            rec("size", "12884901888")
        );
        assert_eq!(
            pax(text.as_bytes()).unwrap(),
            (
                Some("a/very/long/disk name.vmdk".into()),
                Some(12_884_901_888)
            )
        );
        assert!(pax(b"99 path=x\n").is_err());
        assert!(pax(b"12 size=abc\n").is_err());
    }

    #[test]
    fn leading_dot_slash_is_dropped() {
        assert_eq!(clean("./././vm.ovf"), "vm.ovf");
        assert_eq!(clean("vm.ovf"), "vm.ovf");
    }
}
