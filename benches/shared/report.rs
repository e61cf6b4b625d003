//! What the benchmarks that write their own BENCHMARKS.md section share: replacing the section
//! between its markers, and the date and machine each report states.

use anyhow::Result;

/// Replaces the text between `begin` and `end` in BENCHMARKS.md with `report` (appends both
/// markers and the report when they are not there yet).
pub fn write_section(begin: &str, end: &str, report: &str) -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{begin}\n{report}{end}");
    let new = match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// Now, UTC, to the minute.
pub fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn nproc() -> String {
    std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// The CPU's model name.
pub fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}
