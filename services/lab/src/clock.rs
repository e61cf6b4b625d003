//! Lab time. The simulation runs on a scaled clock (60x makes a 12-minute deploy take 12 s) so that
//! demos and tests stay short; object timestamps are the scaled wall time so ages look consistent.
//! The pure simulation functions take `SimTime` as an input and never read a clock themselves.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Simulated seconds since the lab started.
pub type SimTime = f64;

/// The scaled clock shared by the simulator and the API.
#[derive(Debug, Clone)]
pub struct Clock {
    started: Instant,
    started_wall: SystemTime,
    scale: f64,
}

impl Clock {
    /// A clock running `scale` times faster than real time.
    pub fn new(scale: f64) -> Self {
        Clock {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            scale,
        }
    }

    /// Wall time at simulated time 0.
    pub fn epoch(&self) -> SystemTime {
        self.started_wall
    }

    /// The time scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Simulated seconds since start.
    pub fn now(&self) -> SimTime {
        self.started.elapsed().as_secs_f64() * self.scale
    }

    /// The simulated wall clock: start time plus scaled elapsed time.
    pub fn wall(&self) -> SystemTime {
        self.started_wall + Duration::from_secs_f64(self.now())
    }

    /// Simulated wall time as RFC 3339 (`2026-12-01T13:15:21Z`), as Kubernetes writes timestamps.
    pub fn rfc3339(&self) -> String {
        rfc3339(self.wall())
    }

    /// Real time a simulated duration takes.
    pub fn real(&self, sim_seconds: f64) -> Duration {
        Duration::from_secs_f64((sim_seconds / self.scale).max(0.0))
    }
}

/// Format a time as RFC 3339 with second precision in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parse an RFC 3339 UTC timestamp (`2026-12-01T13:15:21Z`, fractions ignored) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Seconds of the simulated wall clock.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// kubectl's short age format (`45s`, `5m`, `3h`, `2d`).
pub fn short_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Days since 1970-01-01 to a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0u64, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_131_521, "2026-12-01T13:25:21Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), want);
            assert_eq!(parse_rfc3339(want), Some(secs));
        }
    }
}
