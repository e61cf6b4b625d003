//! What one system did in one scenario, and the figures drawn from it: lateness percentiles
//! (nearest rank), the fire times missed or started twice, and CPU read from `/proc`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// One system's run of one scenario.
#[derive(Default)]
pub struct Run {
    /// Lateness of each fire time of the window that started, ms.
    pub lateness_ms: Vec<f64>,
    /// The earliest and the latest start of each fire instant, ms after it (for a burst: when
    /// its first and its last were taken).
    pub spans: BTreeMap<i64, (f64, f64)>,
    pub check: Check,
    /// Named CPU figures, seconds, over the scenario.
    pub cpu: Vec<(String, f64)>,
    /// Wall time the CPU figures cover, seconds.
    pub cpu_wall_secs: f64,
    /// Drover: workflows carrying a schedule's label, and how many of them succeeded.
    pub workflows: Option<(u64, u64)>,
}

/// Fire times expected in the window against what started.
#[derive(Default)]
pub struct Check {
    pub expected: usize,
    /// Expected fire times that started once or more.
    pub started: usize,
    pub missed: usize,
    /// Starts beyond the first of a fire time (log entries, or workflows carrying the schedule's
    /// label beyond the log's starts).
    pub duplicated: usize,
    /// Starts of a fire time that was not expected.
    pub unexpected: usize,
    /// Fire times that became something else than a start (skipped, buffered, existing).
    pub other: usize,
}

impl Check {
    /// Adds one schedule: its expected fire times and the fire times of its starts.
    pub fn add(&mut self, expected: &BTreeSet<i64>, starts: &[i64]) {
        let mut seen = BTreeMap::<i64, usize>::new();
        for s in starts {
            *seen.entry(*s).or_default() += 1;
        }
        self.expected += expected.len();
        for e in expected {
            match seen.get(e) {
                Some(_) => self.started += 1,
                None => self.missed += 1,
            }
        }
        for (at, n) in &seen {
            if !expected.contains(at) {
                self.unexpected += n;
            } else {
                self.duplicated += n - 1;
            }
        }
    }
}

/// The value at percentile `p` (0..=100) by nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p90, p99, max.
pub struct Summary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Run {
    /// Records one start of the fire instant `fire_ms`, `late` ms after it.
    pub fn record(&mut self, fire_ms: i64, late: f64) {
        self.lateness_ms.push(late);
        let span = self.spans.entry(fire_ms).or_insert((late, late));
        span.0 = span.0.min(late);
        span.1 = span.1.max(late);
    }

    pub fn summary(&self) -> Summary {
        let mut v = self.lateness_ms.clone();
        v.sort_by(f64::total_cmp);
        Summary {
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or(f64::NAN),
            n: v.len(),
        }
    }
}

/// CPU seconds a process has used so far (user + system), from `/proc/<pid>/stat`.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A lateness for the report: whole ms when at least 10, else one decimal.
pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
