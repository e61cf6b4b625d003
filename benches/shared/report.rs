//! What the benchmarks that write their own BENCHMARKS.md section share: replacing the section
//! between its markers, and the date, machine and code each report states. Not every benchmark
//! states all of them.
#![allow(dead_code)]

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

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first line a command prints, or its name.
pub fn first_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| program.to_string())
}

/// The commit, and whether the tree had uncommitted changes.
pub fn code_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(st) if !st.is_empty() => format!("drover {rev} plus uncommitted changes"),
            _ => format!("drover {rev}"),
        },
        None => "drover (no git)".into(),
    }
}

/// The opening a Redis benchmark's report shares: when, on what, which Redis and code, how long,
/// and the command.
pub fn redis_header(command: &str, redis_version: &str, load: &str, took_secs: f64) -> String {
    format!(
        "Run {} on {} ({} cores), {redis_version}, load average before: {load}; code {}; {took_secs:.0} s in \
         all.\n\nCommand: `{command}`\n\n",
        date(),
        cpu(),
        nproc(),
        code_version(),
    )
}
