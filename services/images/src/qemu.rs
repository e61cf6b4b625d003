//! Running the real `qemu-img`: `info` and `check` for [`Images::inspect`], `convert` with its
//! progress, and what its error text means (a corrupt or unreadable image is the content's fault; a
//! full disk, a held lock or a network error is worth retrying).
//!
//! [`Images::inspect`]: drover_workflows::ports::images::Images::inspect

use std::path::Path;
use std::process::Stdio;

use drover_workflows::ports::images::{ImageError, ImageInfo};
use drover_workflows::ports::kube::{OnProgress, Transferred};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// The most of qemu-img's stderr kept (it prints one line per problem `check` finds).
const MAX_STDERR: usize = 64 << 10;

/// `qemu-img info` of `source` (an absolute local path or an http(s) URL). For a local file:
///
/// - a file qemu-img probes as raw whose name says another format (`.qcow2`, `.vmdk`, `.vhd`,
///   `.vhdx`, `.vdi`) is opened as that format: a fixed VHD has no header at its start and probes
///   as raw, and a qcow2 whose header is damaged would otherwise import as raw garbage;
/// - a qcow2 or vmdk is checked (`qemu-img check`), since a qcow2 is corrupt when its metadata is,
///   whether or not its corrupt bit was set yet, and a truncated vmdk reads as zeros past its end.
pub(crate) async fn inspect(
    qemu_img: &Path,
    source: &str,
    format: Option<&str>,
    local: bool,
) -> Result<ImageInfo, ImageError> {
    let mut info = qemu_info(qemu_img, source, format).await?;
    if !local {
        return Ok(info);
    }
    if format.is_none()
        && info.format == "raw"
        && let Some(named) = named_format(source)
    {
        info = match qemu_info(qemu_img, source, Some(named)).await {
            Ok(i) => i,
            Err(ImageError::Invalid(why)) => {
                return Err(ImageError::Invalid(format!(
                    "{source} is named as a {named} image, but qemu-img cannot open it as one \
                     ({why}): it is damaged, or misnamed"
                )));
            }
            Err(e) => return Err(e),
        };
    }
    if !info.corrupt && (info.format == "qcow2" || info.format == "vmdk") {
        info.corrupt = check(qemu_img, source, &info.format).await?;
    }
    Ok(info)
}

/// `qemu-img info --output=json [-f format] source`.
async fn qemu_info(
    qemu_img: &Path,
    source: &str,
    format: Option<&str>,
) -> Result<ImageInfo, ImageError> {
    let mut args = vec!["info", "--output=json"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.push(source);
    let out = run(qemu_img, &args).await?;
    if !out.status.success() {
        return Err(failure(qemu_img, source, &out.stderr));
    }
    parse_info(&out.stdout)
        .map_err(|why| ImageError::Invalid(format!("qemu-img info of {source} printed {why}")))
}

/// The format a file's name says it is in, for the formats qemu-img probes by a header.
fn named_format(source: &str) -> Option<&'static str> {
    let ext = source.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "qcow2" | "qcow" => Some("qcow2"),
        "vmdk" => Some("vmdk"),
        "vhd" => Some("vpc"),
        "vhdx" => Some("vhdx"),
        "vdi" => Some("vdi"),
        _ => None,
    }
}

/// Parses `qemu-img info --output=json`.
pub(crate) fn parse_info(stdout: &[u8]) -> Result<ImageInfo, String> {
    let v: Value =
        serde_json::from_slice(stdout).map_err(|e| format!("output that is not JSON ({e})"))?;
    let format = v["format"]
        .as_str()
        .ok_or("JSON without a format")?
        .to_string();
    let virtual_size = v["virtual-size"]
        .as_u64()
        .ok_or("JSON without a virtual-size")?;
    Ok(ImageInfo {
        format,
        virtual_size,
        actual_size: v["actual-size"].as_u64(),
        backing_file: v["backing-filename"].as_str().map(str::to_string),
        corrupt: v["format-specific"]["data"]["corrupt"]
            .as_bool()
            .unwrap_or(false),
        encrypted: v["encrypted"].as_bool().unwrap_or(false),
    })
}

/// `qemu-img check` of a qcow2 or vmdk: whether its metadata is corrupt. Leaked clusters are only
/// wasted space; corruptions make the image unsafe to copy, and a check that cannot complete (a
/// vmdk whose grains point past its end) means the image is damaged.
async fn check(qemu_img: &Path, source: &str, format: &str) -> Result<bool, ImageError> {
    let out = run(qemu_img, &["check", "--output=json", "-f", format, source]).await?;
    // 0: clean, 2: corruptions, 3: leaks only, 63: the format cannot be checked, 1: the check did
    // not complete.
    match out.status.code() {
        Some(0 | 3 | 63) => Ok(false),
        Some(2) => Ok(true),
        _ => {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if v["corruptions"].as_u64().unwrap_or(0) > 0 {
                return Ok(true);
            }
            Err(match failure(qemu_img, source, &out.stderr) {
                ImageError::Invalid(why) => ImageError::Invalid(format!(
                    "{source} is damaged: qemu-img check of the {format} image fails: {}",
                    why.strip_prefix("ERROR: ").unwrap_or(&why)
                )),
                other => other,
            })
        }
    }
}

/// `qemu-img convert -p` of `source` to `partial`, reporting progress as bytes of `virtual_size`.
pub(crate) async fn convert(
    qemu_img: &Path,
    source: &str,
    format: &str,
    partial: &Path,
    dest_format: &str,
    virtual_size: u64,
    on_progress: OnProgress<'_>,
) -> Result<(), ImageError> {
    let mut cmd = command(qemu_img);
    cmd.arg("convert")
        .arg("-p")
        .args(["-f", format, "-O", dest_format])
        .arg(source)
        .arg(partial)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(qemu_img, e))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    on_progress(Transferred {
        done: 0,
        total: virtual_size,
    });
    let last = std::sync::atomic::AtomicU64::new(0);
    let report = |pct: f64| {
        let done = ((pct / 100.0) * virtual_size as f64).round() as u64;
        let done = done.min(virtual_size);
        // qemu-img's percentage only grows; a repeat is not reported again.
        if done > last.load(std::sync::atomic::Ordering::Relaxed) {
            last.store(done, std::sync::atomic::Ordering::Relaxed);
            on_progress(Transferred {
                done,
                total: virtual_size,
            });
        }
    };
    let (progress, err, status) = tokio::join!(
        read_progress(stdout, report),
        read_capped(stderr),
        child.wait()
    );
    let status = status.map_err(|e| ImageError::Transient(format!("waiting for qemu-img: {e}")))?;
    progress.map_err(|e| ImageError::Transient(format!("reading qemu-img's progress: {e}")))?;
    let err = err.map_err(|e| ImageError::Transient(format!("reading qemu-img's errors: {e}")))?;
    if !status.success() {
        return Err(failure(qemu_img, source, &err));
    }
    if last.load(std::sync::atomic::Ordering::Relaxed) < virtual_size {
        on_progress(Transferred {
            done: virtual_size,
            total: virtual_size,
        });
    }
    Ok(())
}

/// Reads qemu-img's `-p` output, `    (12.34/100%)` records separated by `\r`, calling `report`
/// with each percentage.
async fn read_progress(
    mut out: impl AsyncRead + Unpin,
    report: impl Fn(f64),
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\r' || b == b'\n') {
            let record: Vec<u8> = pending.drain(..=end).collect();
            if let Some(pct) = progress_percent(&String::from_utf8_lossy(&record)) {
                report(pct);
            }
        }
        if pending.len() > 4096 {
            pending.clear();
        }
    }
}

/// `    (12.34/100%)` → 12.34.
pub(crate) fn progress_percent(record: &str) -> Option<f64> {
    let inner = record.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (pct, rest) = inner.split_once('/')?;
    if rest != "100%" {
        return None;
    }
    pct.trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
}

/// What a failed qemu-img run means, from its stderr.
pub(crate) fn failure(qemu_img: &Path, source: &str, stderr: &[u8]) -> ImageError {
    let text = String::from_utf8_lossy(stderr);
    let line = first_line(qemu_img, &text);
    let lower = text.to_ascii_lowercase();
    if lower.contains("no space left on device") || lower.contains("disk quota exceeded") {
        return ImageError::Transient(line);
    }
    // Another process (an abandoned attempt's qemu-img) holds the image.
    if lower.contains("failed to get") && lower.contains("lock") {
        return ImageError::Transient(line);
    }
    if lower.contains("unable to load module curl") {
        return ImageError::Invalid(format!(
            "qemu-img cannot read {source}: its curl driver (http and https) is not installed \
             (Debian's qemu-block-extra, of the same version as qemu-utils)"
        ));
    }
    if is_url(source) {
        // curl's "The requested URL returned error: 404".
        let status = lower
            .split_once("returned error: ")
            .and_then(|(_, rest)| rest.get(..3).and_then(|code| code.parse::<u16>().ok()));
        match status {
            Some(404 | 410) => return ImageError::NotFound(format!("{source}: {line}")),
            Some(408 | 429 | 500..=599) => return ImageError::Transient(line),
            Some(_) => return ImageError::Invalid(line),
            // Anything else curl could not do is worth retrying: a refused connection, a timeout.
            None if lower.contains("curl") => return ImageError::Transient(line),
            None => {}
        }
    }
    ImageError::Invalid(line)
}

/// The first non-empty line of qemu-img's stderr, without its `qemu-img: ` prefix.
fn first_line(qemu_img: &Path, text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("qemu-img failed without saying why");
    let program = qemu_img.to_string_lossy();
    let name = qemu_img
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for prefix in [program.as_ref(), name.as_str(), "qemu-img"] {
        if let Some(rest) = line
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(": "))
            .filter(|_| !prefix.is_empty())
        {
            return rest.trim().to_string();
        }
    }
    line.to_string()
}

pub(crate) fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Runs qemu-img to completion, capturing its output.
async fn run(qemu_img: &Path, args: &[&str]) -> Result<std::process::Output, ImageError> {
    let mut cmd = command(qemu_img);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.output().await.map_err(|e| spawn_error(qemu_img, e))
}

/// A qemu-img command that dies with the worker.
///
/// `kill_on_drop` covers a step future that is dropped (a timeout, a cancelled workflow, a graceful
/// shutdown). A worker that is SIGKILLed drops nothing, so on Linux the child also asks the kernel
/// for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`). That is safe to set in `pre_exec`:
/// between fork and exec only async-signal-safe calls may run, and `prctl` and `getppid` are plain
/// system calls that neither allocate nor take locks. The parent's pid is read before the fork and
/// compared after the `prctl`, so a parent that died in between is noticed (the child exits
/// instead of running orphaned). The death signal fires when the *thread* that forked exits:
/// qemu-img is spawned from the async task, i.e. on a runtime worker thread, which lives as long as
/// the runtime, so the signal comes with the process's end and not before.
fn command(qemu_img: &Path) -> Command {
    let mut cmd = Command::new(qemu_img);
    cmd.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only makes the two system
        // calls described above; it touches no memory the parent's other threads may hold locked.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other(
                        "the worker exited before qemu-img started",
                    ));
                }
                Ok(())
            });
        }
    }
    cmd
}

fn spawn_error(qemu_img: &Path, e: std::io::Error) -> ImageError {
    // A missing qemu-img is the deployment's to fix; retrying cannot help.
    if e.kind() == std::io::ErrorKind::NotFound {
        return ImageError::Invalid(format!(
            "cannot run {}: not found (install qemu-utils or set the qemu-img path)",
            qemu_img.display()
        ));
    }
    ImageError::Transient(format!("cannot run {}: {e}", qemu_img.display()))
}

async fn read_capped(mut err: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = err.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        if kept.len() < MAX_STDERR {
            kept.extend_from_slice(&buf[..n.min(MAX_STDERR - kept.len())]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_records() {
        let cases = [
            ("    (0.00/100%)", Some(0.0)),
            ("    (12.34/100%)\r", Some(12.34)),
            ("(100.00/100%)", Some(100.0)),
            ("    (12.34/50%)", None),
            ("hello", None),
            ("    (abc/100%)", None),
            ("    (120.00/100%)", None),
        ];
        for (record, want) in cases {
            assert_eq!(progress_percent(record), want, "{record:?}");
        }
    }

    #[tokio::test]
    async fn progress_split_across_reads() {
        let data: &[u8] = b"    (0.00/100%)\r    (50.0";
        let rest: &[u8] = b"0/100%)\r    (100.00/100%)\r\n";
        let reader = tokio::io::AsyncReadExt::chain(data, rest);
        let seen = std::sync::Mutex::new(Vec::new());
        read_progress(reader, |p| seen.lock().unwrap().push(p))
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![0.0, 50.0, 100.0]);
    }

    #[test]
    fn failures_are_classified() {
        let q = Path::new("/usr/bin/qemu-img");
        let cases: [(&str, &[u8], ImageError); 6] = [
            (
                "/w/a.qcow2",
                b"qemu-img: Could not open '/w/a.qcow2': Image is not in qcow2 format\n",
                ImageError::Invalid("Could not open '/w/a.qcow2': Image is not in qcow2 format".into()),
            ),
            (
                "/w/a.vmdk",
                b"/usr/bin/qemu-img: error while writing at byte 0: No space left on device\n",
                ImageError::Transient("error while writing at byte 0: No space left on device".into()),
            ),
            (
                "/w/a.vmdk",
                b"qemu-img: /w/b.partial: Failed to get \"write\" lock\nIs another process using the image [/w/b.partial]?\n",
                ImageError::Transient("/w/b.partial: Failed to get \"write\" lock".into()),
            ),
            (
                "http://h/a.qcow2",
                b"qemu-img: Could not open 'http://h/a.qcow2': CURL: Error opening file: The requested URL returned error: 404\n",
                ImageError::NotFound("http://h/a.qcow2: Could not open 'http://h/a.qcow2': CURL: Error opening file: The requested URL returned error: 404".into()),
            ),
            (
                "http://h/a.qcow2",
                b"qemu-img: Could not open 'http://h/a.qcow2': CURL: Error opening file: Failed to connect to h port 80\n",
                ImageError::Transient("Could not open 'http://h/a.qcow2': CURL: Error opening file: Failed to connect to h port 80".into()),
            ),
            ("/w/a.raw", b"", ImageError::Invalid("qemu-img failed without saying why".into())),
        ];
        for (source, stderr, want) in cases {
            assert_eq!(failure(q, source, stderr), want, "{source}");
        }
        let no_curl = failure(
            q,
            "https://h/a.qcow2",
            b"qemu-img: Unable to load module curl. Perhaps you want to install qemu-block-extra\n",
        );
        assert!(matches!(no_curl, ImageError::Invalid(m) if m.contains("curl driver")));
    }

    #[test]
    fn info_json() {
        let json = br#"{"virtual-size": 67108864, "filename": "o.qcow2", "format": "qcow2",
            "actual-size": 200704, "backing-filename": "base.qcow2", "encrypted": true,
            "format-specific": {"type": "qcow2", "data": {"corrupt": true}}}"#;
        assert_eq!(
            parse_info(json).unwrap(),
            ImageInfo {
                format: "qcow2".into(),
                virtual_size: 64 << 20,
                actual_size: Some(200_704),
                backing_file: Some("base.qcow2".into()),
                corrupt: true,
                encrypted: true,
            }
        );
        let over_http = br#"{"virtual-size": 512, "format": "raw"}"#;
        assert_eq!(parse_info(over_http).unwrap().actual_size, None);
        assert!(parse_info(b"not json").is_err());
        assert!(parse_info(br#"{"format": "raw"}"#).is_err());
    }
}
