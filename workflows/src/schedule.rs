//! Cron schedules: a [`ScheduleSpec`] as an operator writes it, checked once by
//! [`Compiled::compile`], then asked for fire times. Pure: no clock, no randomness; every instant
//! is an input in Unix milliseconds (UTC), so the scheduler, the API's preview and backfill, and
//! the tests all get the same answer for the same question.
//!
//! # Cron conventions
//!
//! Expressions are Unix cron: five fields `minute hour day-of-month month day-of-week`, or six
//! with seconds first. `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and
//! `@hourly` are accepted too. They are evaluated by the `cron` crate, whose conventions differ
//! from Unix in two ways that this module hides:
//!
//! - **Day-of-week numbers.** The crate counts 1 = Sunday .. 7 = Saturday; Unix counts 0 = Sunday
//!   .. 6 = Saturday, and 7 is Sunday again. Numeric day-of-week items (values, ranges `1-5`,
//!   lists `1,3,5`, steps `*/2` and `1-5/2`) are expanded here as Unix reads them and handed to
//!   the crate renumbered. As in cronie, `*` spans 0-7 and `N/s` means `N-7/s`. Names
//!   (`MON-FRI`, `sun`) mean the same in both and pass through unchanged.
//! - **Day-of-month with day-of-week.** The crate requires both (AND). Unix cron fires when
//!   *either* matches if both are restricted, and Drover follows Unix: `0 0 13 * 5` fires on the
//!   13th and on every Friday. As in Vixie cron, a field that starts with `*` (or `?`) counts as
//!   unrestricted, so `0 0 */2 * 1` keeps the AND: odd days that are Mondays.
//!
//! The crate knows the years 1970 to 2100; a schedule has no fire time after 2100.
//!
//! # Local time and daylight saving
//!
//! The cron runs over the wall clock of the schedule's IANA time zone: `30 2 * * *` in
//! `America/New_York` is 02:30 in New York whatever the offset. Each local candidate is then
//! placed on the UTC time line, and twice a year that is not one-to-one ([`DstPolicy`]):
//!
//! - **A gap** (clocks go forward, e.g. 02:00 -> 03:00): the local times in between do not exist.
//!   [`GapPolicy::Shift`] (the default) fires once at the first instant after the gap (03:00 local)
//!   for all the candidates the gap swallowed; if the cron also fires at that instant anyway
//!   (`*/15` at 03:00), that one fire serves both and nothing is added. [`GapPolicy::Skip`] drops
//!   the swallowed candidates.
//! - **A repeat** (clocks go back, e.g. 02:00 -> 01:00): the local times in between occur twice.
//!   [`RepeatPolicy::First`] (the default) fires at the first occurrence only;
//!   [`RepeatPolicy::Both`] fires at both, the clock change apart, in time order (`*/20` gives
//!   01:00, 01:20, 01:40 summer time, then 01:00, 01:20, 01:40 winter time).
//!
//! A [`Fire`] decided by either policy says so in [`Fire::dst`].
//!
//! # Cost
//!
//! [`Compiled::next_after`] costs a constant number of crate queries (one per cron branch, a few
//! more near a transition) whatever the cron, so an every-second schedule is as cheap to ask as a
//! yearly one: a gap or a repeated hour is stepped over, not walked through.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;

use chrono::{DateTime, MappedLocalTime, Offset, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use cron::TimeUnitSpec;
use serde::{Deserialize, Serialize};

/// What an operator writes (the body of `POST /v1/schedules` without `id`), stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unix cron: 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first).
    pub cron: String,
    /// IANA time zone whose wall clock the cron follows.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The workflow kind each fire starts (checked against the registry elsewhere).
    pub kind: String,
    /// The input of each started workflow.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Priority of each started workflow (-100..=100, higher first; checked with the workflow).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Labels of each started workflow.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The cluster each started workflow acts on (a `[[clusters]]` name; checked with the
    /// workflow); absent: the `[kube]` cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// RFC 3339 instant; no fire time before it.
    #[serde(default)]
    pub start_at: Option<String>,
    /// RFC 3339 instant; no fire time after it.
    #[serde(default)]
    pub end_at: Option<String>,
    /// Each fire is delayed by a deterministic amount in `0..jitter_secs` ([`Compiled::jitter_ms`]);
    /// at most 3600.
    #[serde(default)]
    pub jitter_secs: u64,
    /// What to do when a fire comes while the previous run still runs.
    #[serde(default)]
    pub overlap: Overlap,
    /// How late a missed fire may still start; at most 7 days.
    #[serde(default = "default_catchup_window_secs")]
    pub catchup_window_secs: u64,
    /// Length of the maintenance window each fire opens; 1 s to 7 days.
    #[serde(default)]
    pub window_secs: Option<u64>,
    /// Periods in which no window opens.
    #[serde(default)]
    pub freezes: Vec<Freeze>,
    /// What fires when the time zone's clocks jump.
    #[serde(default)]
    pub dst: DstPolicy,
    /// Informational here: the scheduler does not fire a paused schedule.
    #[serde(default)]
    pub paused: bool,
    /// Free text for operators; at most 500 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// A period in which no maintenance window opens: `from <= t < to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Unique within the schedule.
    pub name: String,
    /// RFC 3339 instant, inclusive.
    pub from: String,
    /// RFC 3339 instant, exclusive; after `from`.
    pub to: String,
}

impl Freeze {
    /// Why a fire time inside it is skipped, as the schedule's log says it.
    pub fn skip_reason(&self) -> String {
        format!("freeze \"{}\" ({} to {})", self.name, self.from, self.to)
    }
}

/// What a fire does while the schedule's previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Drop the fire.
    #[default]
    Skip,
    /// Keep one fire to start when the running one ends; drop further ones.
    BufferOne,
    /// Cancel the running one and start.
    CancelOther,
    /// Start regardless.
    AllowAll,
}

/// What fires when the time zone's clocks jump (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DstPolicy {
    /// Local times that do not exist (clocks go forward).
    #[serde(default)]
    pub gap: GapPolicy,
    /// Local times that occur twice (clocks go back).
    #[serde(default)]
    pub repeat: RepeatPolicy,
}

/// A local fire time that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapPolicy {
    /// Fire once at the first instant after the gap.
    #[default]
    Shift,
    /// Do not fire.
    Skip,
}

/// A local fire time that occurs twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepeatPolicy {
    /// Fire at the first occurrence only.
    #[default]
    First,
    /// Fire at both occurrences.
    Both,
}

/// A spec that failed [`Compiled::compile`]: which field, and what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The spec's field, as spelled in JSON (`cron`, `timezone`, `freezes`, ...).
    pub field: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// A spec checked and parsed, ready to be asked for fire times.
#[derive(Debug, Clone)]
pub struct Compiled {
    spec: ScheduleSpec,
    /// One crate schedule, or two when day-of-month and day-of-week are both restricted (Unix OR):
    /// the first with day-of-week `*`, the second with day-of-month `*`.
    branches: Vec<cron::Schedule>,
    tz: Tz,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    /// `(from, to)` of each of `spec.freezes`, same order.
    freezes: Vec<(i64, i64)>,
}

/// One fire time of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fire {
    /// Unix ms, UTC.
    pub at_ms: i64,
    /// RFC 3339 in UTC, e.g. `2026-03-08T07:00:00Z`.
    pub at: String,
    /// RFC 3339 with the zone's offset, e.g. `2026-03-08T03:00:00-04:00`.
    pub local: String,
    /// Set when the DST policy decided this fire, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
}

/// Formats a Unix ms instant as RFC 3339 in UTC (`...Z`), with milliseconds only when non-zero.
/// Instants beyond chrono's range (about 262,000 years) are clamped to it.
pub fn rfc3339(ms: i64) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 instant (any offset) to Unix ms.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|at| at.timestamp_millis())
        .map_err(|e| {
            format!(
                "{s:?} is not an RFC 3339 instant ({e}); write one such as 2026-03-08T07:00:00Z \
                 or 2026-03-08T03:00:00-04:00"
            )
        })
}

const SECOND_MS: i64 = 1_000;
const HOUR_MS: i64 = 3_600 * SECOND_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_SECS: u64 = 7 * 24 * 3_600;

/// Longest `window_secs`.
pub const MAX_WINDOW_SECS: u64 = WEEK_SECS;
/// Longest `catchup_window_secs`.
pub const MAX_CATCHUP_WINDOW_SECS: u64 = WEEK_SECS;
/// Longest `jitter_secs`.
pub const MAX_JITTER_SECS: u64 = 3_600;
/// Longest `note`, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// How many fire times [`Compiled::next_window`] looks at before it gives up.
pub const WINDOW_SEARCH_FIRES: usize = 10_000;

/// The `cron` crate evaluates the years 1970 to 2100; searches are clamped to that span (with a
/// day's margin for the zone's offset) so that no date arithmetic can overflow.
const SEARCH_FROM_MS: i64 = -2 * DAY_MS;
/// 2101-01-01T00:00:00Z.
const SEARCH_UNTIL_MS: i64 = 4_133_980_800_000;
/// A repeated span of local time lies within this distance of any instant in or next to it: no
/// zone moves its clocks by more than a few hours, and none moves them twice within this span.
const FOLD_PROBE_MS: i64 = 4 * HOUR_MS;

fn default_timezone() -> String {
    "UTC".to_owned()
}

fn default_catchup_window_secs() -> u64 {
    60
}

impl Compiled {
    /// Checks every field of `spec` and parses the cron, zone and instants once.
    pub fn compile(spec: &ScheduleSpec) -> Result<Compiled, SpecError> {
        let branches = parse_cron(&spec.cron)?;
        let tz = Tz::from_str(spec.timezone.trim()).map_err(|_| {
            error(
                "timezone",
                format!(
                    "unknown IANA time zone {:?}; use a name such as Europe/Berlin or UTC",
                    spec.timezone
                ),
            )
        })?;
        if spec.kind.trim().is_empty() {
            return Err(error(
                "kind",
                "empty; name the workflow kind each fire starts",
            ));
        }
        let start_ms = instant("start_at", spec.start_at.as_deref())?;
        let end_ms = instant("end_at", spec.end_at.as_deref())?;
        if let (Some(start), Some(end)) = (start_ms, end_ms)
            && end <= start
        {
            return Err(error(
                "end_at",
                format!(
                    "{} is not after start_at {}; give an end later than the start",
                    rfc3339(end),
                    rfc3339(start)
                ),
            ));
        }
        check_spans(spec)?;
        let freezes = parse_freezes(&spec.freezes)?;

        let compiled = Compiled {
            spec: spec.clone(),
            branches,
            tz,
            start_ms,
            end_ms,
            freezes,
        };
        if compiled.next_unbounded(SEARCH_FROM_MS).is_none() {
            return Err(error("cron", never_fires(&compiled.branches)));
        }
        if compiled.next_after(SEARCH_FROM_MS).is_none() {
            return Err(match (start_ms, end_ms) {
                (Some(start), Some(end)) => error(
                    "end_at",
                    format!(
                        "no fire time between start_at {} and end_at {}; widen the range or \
                         change cron",
                        rfc3339(start),
                        rfc3339(end)
                    ),
                ),
                (None, Some(end)) => error(
                    "end_at",
                    format!("no fire time before {}; move end_at later", rfc3339(end)),
                ),
                _ => error(
                    "start_at",
                    "no fire time at or after start_at (cron is evaluated up to the year 2100); \
                     move start_at earlier",
                ),
            });
        }
        Ok(compiled)
    }

    /// The spec this was compiled from.
    pub fn spec(&self) -> &ScheduleSpec {
        &self.spec
    }

    /// The first fire time strictly after `after_ms`, honouring `start_at`, `end_at` and the DST
    /// policy; `None` when the schedule has no more.
    pub fn next_after(&self, after_ms: i64) -> Option<Fire> {
        let after_ms = match self.start_ms {
            Some(start) => after_ms.max(start - 1),
            None => after_ms,
        };
        let fire = self.next_unbounded(after_ms)?;
        match self.end_ms {
            Some(end) if fire.at_ms > end => None,
            _ => Some(fire),
        }
    }

    /// The next `n` fire times after `after_ms`, in order (fewer when the schedule ends).
    pub fn preview(&self, after_ms: i64, n: usize) -> Vec<Fire> {
        let mut fires = Vec::with_capacity(n.min(1_000));
        let mut after = after_ms;
        while fires.len() < n {
            let Some(fire) = self.next_after(after) else {
                break;
            };
            after = fire.at_ms;
            fires.push(fire);
        }
        fires
    }

    /// A deterministic delay in `[0, jitter_secs * 1000)` for this schedule and fire time, so
    /// that schedules sharing a cron do not all start in the same millisecond, and a fire
    /// computed twice (by two scheduler instances, or before and after a restart) gets the same
    /// delay. FNV-1a over the id and the fire's ms, finished with MurmurHash3's `fmix64` so the
    /// low bits that the modulo keeps are well mixed.
    pub fn jitter_ms(&self, schedule_id: &str, fire_ms: i64) -> i64 {
        let span = self.spec.jitter_secs.min(MAX_JITTER_SECS) * 1_000;
        if span == 0 {
            return 0;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in schedule_id
            .bytes()
            .chain([0xff])
            .chain(fire_ms.to_le_bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^= hash >> 33;
        // `span` is at most 3_600_000, so the remainder fits.
        (hash % span) as i64
    }

    /// The freeze covering instant `ms` (`from <= ms < to`), the first in spec order if several do.
    pub fn freeze_at(&self, ms: i64) -> Option<&Freeze> {
        self.freezes
            .iter()
            .position(|&(from, to)| from <= ms && ms < to)
            .map(|i| &self.spec.freezes[i])
    }

    /// The end of the maintenance window opened by the fire at `fire_ms`; `None` without
    /// `window_secs`.
    pub fn window_end(&self, fire_ms: i64) -> Option<i64> {
        Some(fire_ms.saturating_add(self.window_ms()?))
    }

    /// The next window that starts at or after `after_ms` and whose start is not frozen, as
    /// `(start_ms, end_ms)`. A window whose start falls in a freeze is skipped whole, even if the
    /// freeze ends before the window would. `None` without `window_secs`, when no fire time
    /// remains, or when the next [`WINDOW_SEARCH_FIRES`] fire times are all frozen.
    pub fn next_window(&self, after_ms: i64) -> Option<(i64, i64)> {
        let window = self.window_ms()?;
        let mut after = after_ms.saturating_sub(1);
        for _ in 0..WINDOW_SEARCH_FIRES {
            let start = self.next_after(after)?.at_ms;
            match self.freeze_covering(start) {
                None => return Some((start, start.saturating_add(window))),
                // Every fire inside the freeze is frozen too: go on from its end.
                Some((_, to)) => after = (to - 1).max(start),
            }
        }
        None
    }

    /// The window `(start, end)` containing `ms`: a fire time `f` with `f <= ms < f + window`.
    /// When windows overlap (a window longer than the gap between fires), the earliest such
    /// window. Freezes are not consulted: a caller that cares asks [`Compiled::freeze_at`] with
    /// the start. `None` without `window_secs`.
    pub fn window_containing(&self, ms: i64) -> Option<(i64, i64)> {
        let window = self.window_ms()?;
        let start = self.next_after(ms.saturating_sub(window))?.at_ms;
        (start <= ms).then(|| (start, start.saturating_add(window)))
    }
}

// Fire times: the cron runs over local wall-clock time, written here as "local ms" (the local
// date and time read as if it were UTC); the zone places each local candidate on the time line.
impl Compiled {
    /// The first fire strictly after `after`, ignoring start_at and end_at.
    fn next_unbounded(&self, after: i64) -> Option<Fire> {
        if after >= SEARCH_UNTIL_MS {
            return None;
        }
        let after = after.max(SEARCH_FROM_MS);
        let first = self.next_first_pass(after);
        let second = match self.spec.dst.repeat {
            RepeatPolicy::First => None,
            RepeatPolicy::Both => self.next_second_occurrence(after),
        };
        match (first, second) {
            (Some(a), Some(b)) => Some(if b.at_ms < a.at_ms { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The first fire after `after` counting each local time once: at its only instant, at its
    /// first occurrence if it repeats, or at the end of the gap if it does not exist. These
    /// instants rise with local time, so the walk is in local time and the first instant past
    /// `after` is the answer.
    fn next_first_pass(&self, after: i64) -> Option<Fire> {
        let here = self.tz.timestamp_millis_opt(after).single()?;
        let mut cursor = after + offset_ms(&here);
        if let MappedLocalTime::Ambiguous(first, _) = self.resolve(cursor)?
            && offset_ms(&first) != offset_ms(&here)
        {
            // `after` is in the second pass through a repeated span: every candidate left in the
            // span had its first occurrence already, so go on from where the span ends.
            let turn = self.transition_between(first.timestamp_millis(), after)?;
            cursor = turn + offset_ms(&first) - 1;
        }
        loop {
            let candidate = self.local_next(cursor)?;
            cursor = candidate;
            match self.resolve(candidate)? {
                MappedLocalTime::Single(at) if at.timestamp_millis() > after => {
                    return Some(self.fire(&at, None));
                }
                MappedLocalTime::Ambiguous(first, _) if first.timestamp_millis() > after => {
                    let note = self.repeat_note(candidate, &first, "first");
                    return Some(self.fire(&first, Some(note)));
                }
                MappedLocalTime::None => {
                    // Were the jump not found in the zone's data, only this candidate is dropped.
                    let Some((turn, gap_end)) = self.gap_end(candidate) else {
                        continue;
                    };
                    if self.spec.dst.gap == GapPolicy::Shift && turn > after {
                        let at = self.tz.timestamp_millis_opt(turn).single()?;
                        let regular = self.local_next(gap_end - 1) == Some(gap_end);
                        let note = (!regular).then(|| self.gap_note(candidate, gap_end));
                        return Some(self.fire(&at, note));
                    }
                    // Skipped, or shifted to an instant not after `after`: so is the whole gap.
                    cursor = gap_end - 1;
                }
                // Not after `after`: cannot happen once a second pass has been stepped over
                // above, but harmless.
                _ => {}
            }
        }
    }

    /// Under [`RepeatPolicy::Both`]: the first second occurrence of a repeated local fire time
    /// after `after`. It can only come before the first pass's answer if its first occurrence
    /// is at or before `after`, so only a repeated span next to `after` is looked at.
    fn next_second_occurrence(&self, after: i64) -> Option<Fire> {
        let turn = self.transition_between(after - FOLD_PROBE_MS, after + FOLD_PROBE_MS)?;
        let (before, since) = (self.offset_at(turn - 1)?, self.offset_at(turn)?);
        if since >= before {
            return None;
        }
        // Local times in [turn + since, turn + before) occur twice; the second time at local - since.
        let candidate = self.local_next((after + since).max(turn + since - 1))?;
        if candidate >= turn + before {
            return None;
        }
        match self.resolve(candidate)? {
            MappedLocalTime::Ambiguous(first, second) => {
                let note = self.repeat_note(candidate, &second, "second");
                debug_assert!(first.timestamp_millis() < second.timestamp_millis());
                Some(self.fire(&second, Some(note)))
            }
            _ => None,
        }
    }

    /// The first local time the cron matches strictly after local ms `after` (one crate query
    /// per branch).
    fn local_next(&self, after: i64) -> Option<i64> {
        let after = DateTime::<Utc>::from_timestamp_millis(after)?;
        self.branches
            .iter()
            .filter_map(|branch| branch.after(&after).next())
            .map(|at| at.timestamp_millis())
            .min()
    }

    /// Where local ms `local` falls on the time line.
    fn resolve(&self, local: i64) -> Option<MappedLocalTime<DateTime<Tz>>> {
        let naive = DateTime::<Utc>::from_timestamp_millis(local)?.naive_utc();
        Some(self.tz.from_local_datetime(&naive))
    }

    /// For a local time inside a gap: the instant the clocks jumped, and the local ms they jumped
    /// to (the first local time after the gap).
    fn gap_end(&self, local: i64) -> Option<(i64, i64)> {
        // Whatever the offsets, the jump is within a day of the local time read as UTC.
        let turn = self.transition_between(local - DAY_MS, local + DAY_MS)?;
        let gap_end = turn + self.offset_at(turn)?;
        (gap_end > local).then_some((turn, gap_end))
    }

    /// The zone's offset at instant `ms`, in ms.
    fn offset_at(&self, ms: i64) -> Option<i64> {
        Some(offset_ms(&self.tz.timestamp_millis_opt(ms).single()?))
    }

    /// The first instant in `(lo, hi]` whose offset differs from `lo`'s, assuming at most one
    /// change in between; `None` when the ends agree.
    fn transition_between(&self, lo: i64, hi: i64) -> Option<i64> {
        let start = self.offset_at(lo)?;
        if self.offset_at(hi)? == start {
            return None;
        }
        let (mut lo, mut hi) = (lo, hi);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset_at(mid)? == start {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }

    fn fire(&self, at: &DateTime<Tz>, dst: Option<String>) -> Fire {
        let at_ms = at.timestamp_millis();
        Fire {
            at_ms,
            at: rfc3339(at_ms),
            local: at.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            dst,
        }
    }

    fn gap_note(&self, local: i64, gap_end: i64) -> String {
        format!(
            "{} does not exist on {} in {} (clocks go forward); shifted to {}",
            clock(local),
            date(local),
            self.tz.name(),
            clock(gap_end)
        )
    }

    fn repeat_note(&self, local: i64, at: &DateTime<Tz>, which: &str) -> String {
        format!(
            "{} occurs twice on {} in {}; {which} occurrence ({})",
            clock(local),
            date(local),
            self.tz.name(),
            at.format("%:z")
        )
    }

    fn window_ms(&self) -> Option<i64> {
        // At most 7 days once compiled, so the product fits.
        self.spec.window_secs.map(|secs| secs as i64 * 1_000)
    }

    fn freeze_covering(&self, ms: i64) -> Option<(i64, i64)> {
        self.freezes
            .iter()
            .copied()
            .find(|&(from, to)| from <= ms && ms < to)
    }
}

fn offset_ms(at: &DateTime<Tz>) -> i64 {
    i64::from(at.offset().fix().local_minus_utc()) * 1_000
}

/// `HH:MM`, or `HH:MM:SS` when the seconds are not zero, of local ms `local`.
fn clock(local: i64) -> String {
    let Some(at) = DateTime::<Utc>::from_timestamp_millis(local) else {
        return local.to_string();
    };
    if local.rem_euclid(60 * SECOND_MS) == 0 {
        at.format("%H:%M").to_string()
    } else {
        at.format("%H:%M:%S").to_string()
    }
}

fn date(local: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(local)
        .map(|at| at.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

// Checking a spec.

fn error(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

fn instant(field: &'static str, value: Option<&str>) -> Result<Option<i64>, SpecError> {
    value
        .map(parse_instant)
        .transpose()
        .map_err(|message| error(field, message))
}

/// The numeric limits: window, jitter, catch-up, note.
fn check_spans(spec: &ScheduleSpec) -> Result<(), SpecError> {
    match spec.window_secs {
        Some(0) => {
            return Err(error(
                "window_secs",
                "an empty window (0 s); give the window's length in seconds or leave it out",
            ));
        }
        Some(secs) if secs > MAX_WINDOW_SECS => {
            return Err(error(
                "window_secs",
                format!(
                    "{secs} s is longer than 7 days ({MAX_WINDOW_SECS} s); give a shorter window"
                ),
            ));
        }
        _ => {}
    }
    if spec.jitter_secs > MAX_JITTER_SECS {
        return Err(error(
            "jitter_secs",
            format!(
                "{} s is more than an hour ({MAX_JITTER_SECS} s); give at most {MAX_JITTER_SECS}",
                spec.jitter_secs
            ),
        ));
    }
    if spec.catchup_window_secs > MAX_CATCHUP_WINDOW_SECS {
        return Err(error(
            "catchup_window_secs",
            format!(
                "{} s is longer than 7 days ({MAX_CATCHUP_WINDOW_SECS} s); give at most \
                 {MAX_CATCHUP_WINDOW_SECS}",
                spec.catchup_window_secs
            ),
        ));
    }
    if let Some(note) = &spec.note {
        let chars = note.chars().count();
        if chars > MAX_NOTE_CHARS {
            return Err(error(
                "note",
                format!("{chars} characters; shorten it to at most {MAX_NOTE_CHARS}"),
            ));
        }
    }
    Ok(())
}

fn parse_freezes(freezes: &[Freeze]) -> Result<Vec<(i64, i64)>, SpecError> {
    let mut names = HashSet::new();
    let mut spans = Vec::with_capacity(freezes.len());
    for (i, freeze) in freezes.iter().enumerate() {
        let name = freeze.name.trim();
        if name.is_empty() {
            return Err(error(
                "freezes",
                format!("freeze {i} has an empty name; name each freeze"),
            ));
        }
        if !names.insert(name) {
            return Err(error(
                "freezes",
                format!("two freezes are named {name:?}; give each freeze its own name"),
            ));
        }
        let from = parse_instant(&freeze.from)
            .map_err(|e| error("freezes", format!("freeze {name:?}: from: {e}")))?;
        let to = parse_instant(&freeze.to)
            .map_err(|e| error("freezes", format!("freeze {name:?}: to: {e}")))?;
        if from >= to {
            return Err(error(
                "freezes",
                format!(
                    "freeze {name:?}: from {} is not before to {}; give an end later than the start",
                    rfc3339(from),
                    rfc3339(to)
                ),
            ));
        }
        spans.push((from, to));
    }
    Ok(spans)
}

// Cron expressions, Unix to the crate's dialect.

/// Parses a Unix cron expression into one crate schedule, or two for Unix's day-of-month OR
/// day-of-week.
fn parse_cron(expr: &str) -> Result<Vec<cron::Schedule>, SpecError> {
    let trimmed = expr.trim();
    let expanded = match trimmed.strip_prefix('@') {
        Some(name) => shorthand(name).ok_or_else(|| {
            error(
                "cron",
                format!(
                    "unknown shorthand {trimmed:?}; use @yearly, @monthly, @weekly, @daily or \
                     @hourly, or write the fields"
                ),
            )
        })?,
        None => trimmed,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [second, minute, hour, dom, month, dow] = match fields.as_slice() {
        &[minute, hour, dom, month, dow] => ["0", minute, hour, dom, month, dow],
        &[second, minute, hour, dom, month, dow] => [second, minute, hour, dom, month, dow],
        other => {
            return Err(error(
                "cron",
                format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with \
                     seconds first), got {}",
                    other.len()
                ),
            ));
        }
    };
    let crate_dow = unix_day_of_week(dow).map_err(|message| error("cron", message))?;
    let restricted = |field: &str| !field.starts_with('*') && !field.starts_with('?');
    let texts = if restricted(dom) && restricted(dow) {
        vec![
            format!("{second} {minute} {hour} {dom} {month} *"),
            format!("{second} {minute} {hour} * {month} {crate_dow}"),
        ]
    } else {
        vec![format!(
            "{second} {minute} {hour} {dom} {month} {crate_dow}"
        )]
    };
    let parsed: Result<Vec<_>, _> = texts
        .iter()
        .map(|text| cron::Schedule::from_str(text))
        .collect();
    parsed.map_err(|e| {
        let unix = [second, minute, hour, dom, month, dow];
        let crate_fields = [second, minute, hour, dom, month, crate_dow.as_str()];
        error("cron", field_error(&unix, &crate_fields, &e))
    })
}

/// Names of the six fields, and what each accepts, for parse errors.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
];

/// A parse error that names the faulty field. The crate reports its position in the expression
/// it was given (seconds added, day-of-week renumbered), which would mislead, so each field is
/// parsed alone to find the culprit, and only the crate's reason is kept.
fn field_error(unix: &[&str; 6], crate_fields: &[&str; 6], whole: &cron::error::Error) -> String {
    // The crate's message is the expression, a line with a caret under the fault, then the reason.
    let reason = |e: &cron::error::Error| {
        let text = e.to_string();
        let after_caret: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.trim_end().ends_with('^'))
            .skip(1)
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        if text.lines().any(|line| line.trim_end().ends_with('^')) {
            after_caret.join(" ")
        } else {
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    for (i, (name, accepts)) in FIELDS.iter().enumerate() {
        let mut probe = ["*"; 6];
        probe[i] = crate_fields[i];
        if let Err(e) = cron::Schedule::from_str(&probe.join(" ")) {
            let reason = reason(&e);
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            return format!(
                "cannot parse the {name} field {:?}{reason}; use {accepts}",
                unix[i]
            );
        }
    }
    format!(
        "cannot parse it ({}); write Unix cron such as \"30 2 * * 1-5\"",
        reason(whole)
    )
}

/// The five Unix fields of a shorthand (after the `@`).
fn shorthand(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => return None,
    })
}

/// Rewrites a Unix day-of-week field (0 or 7 = Sunday) in the crate's numbering (1 = Sunday):
/// numeric items are expanded to the days they mean and listed; named items pass through.
fn unix_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = BTreeSet::new();
    let mut items = Vec::new();
    for item in field.split(',') {
        if item.bytes().any(|b| b.is_ascii_alphabetic()) {
            items.push(item.to_owned());
            continue;
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        let stepped = step.is_some();
        let step = match step.map(str::parse::<u32>) {
            None => 1,
            Some(Ok(step @ 1..=7)) => step,
            Some(_) => {
                return Err(format!(
                    "day-of-week {item:?}: the step must be a number from 1 to 7"
                ));
            }
        };
        let (low, high) = match (base, base.split_once('-')) {
            ("*", _) => (0, 7),
            (_, Some((low, high))) => (day_number(low, item)?, day_number(high, item)?),
            // `N/s` runs to the end of the week, as in cronie.
            (single, None) => {
                let day = day_number(single, item)?;
                (day, if stepped { 7 } else { day })
            }
        };
        if low > high {
            return Err(format!(
                "day-of-week range {item:?} runs backwards; write it as two items, e.g. 5-7,0-1"
            ));
        }
        for day in (low..=high).step_by(step as usize) {
            days.insert(day % 7 + 1);
        }
    }
    let numbers = days.iter().map(|day| day.to_string());
    Ok(numbers.chain(items).collect::<Vec<_>>().join(","))
}

fn day_number(text: &str, item: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(day @ 0..=7) => Ok(day),
        _ if text == item => Err(format!(
            "day-of-week {text:?} is not a day; use 0-7 (0 and 7 are Sunday) or SUN-SAT"
        )),
        _ => Err(format!(
            "day-of-week {item:?}: {text:?} is not a day; use 0-7 (0 and 7 are Sunday) or SUN-SAT"
        )),
    }
}

/// Why a cron that parses never fires, for the error message.
fn never_fires(branches: &[cron::Schedule]) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    // A branch with only impossible dates: every listed day is past the end of every listed month.
    let example = branches.first().and_then(|branch| {
        let (days, months) = (branch.days_of_month(), branch.months());
        let day = days.iter().next()?;
        let month = months.iter().next()?;
        let impossible = months.iter().all(|month| {
            days.iter()
                .all(|day| day > LONGEST[(month as usize - 1).min(11)])
        });
        impossible.then(|| format!("{} {}", MONTHS[(month as usize - 1).min(11)], ordinal(day)))
    });
    match example {
        Some(date) => {
            format!("never fires ({date}); check the day-of-month and month fields")
        }
        None => "never fires (no date up to the year 2100 matches it); check the day-of-month, \
                 month and day-of-week fields"
            .to_owned(),
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};
    use serde_json::{Value, json};

    fn ms(s: &str) -> i64 {
        parse_instant(s).unwrap()
    }

    fn spec(value: Value) -> ScheduleSpec {
        let mut value = value;
        value
            .as_object_mut()
            .unwrap()
            .entry("kind")
            .or_insert(json!("maintenance"));
        serde_json::from_value(value).unwrap()
    }

    fn compile(value: Value) -> Compiled {
        Compiled::compile(&spec(value)).unwrap()
    }

    /// The UTC times of the next `n` fires after `after`.
    fn fires(c: &Compiled, after: &str, n: usize) -> Vec<String> {
        c.preview(ms(after), n).into_iter().map(|f| f.at).collect()
    }

    fn weekdays(c: &Compiled, after: &str, n: usize) -> Vec<Weekday> {
        c.preview(ms(after), n)
            .iter()
            .map(|f| {
                DateTime::<Utc>::from_timestamp_millis(f.at_ms)
                    .unwrap()
                    .weekday()
            })
            .collect()
    }

    #[test]
    fn five_and_six_field_crons() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "*/15 * * * *",
                "2026-01-01T00:07:00Z",
                &[
                    "2026-01-01T00:15:00Z",
                    "2026-01-01T00:30:00Z",
                    "2026-01-01T00:45:00Z",
                ],
            ),
            (
                "30 */20 * * * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-01T00:00:30Z",
                    "2026-01-01T00:20:30Z",
                    "2026-01-01T00:40:30Z",
                ],
            ),
            (
                "0 3 1 * *",
                "2026-01-01T03:00:00Z",
                &["2026-02-01T03:00:00Z", "2026-03-01T03:00:00Z"],
            ),
            (
                "  0 12 * JAN,jul *  ",
                "2026-01-30T13:00:00Z",
                &["2026-01-31T12:00:00Z", "2026-07-01T12:00:00Z"],
            ),
            (
                "@daily",
                "2026-01-01T00:00:00.500Z",
                &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"],
            ),
            ("@weekly", "2026-01-01T00:00:00Z", &["2026-01-04T00:00:00Z"]),
            (
                "* * * * * *",
                "2026-01-01T00:00:00.999Z",
                &["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"],
            ),
        ];
        for (cron, after, want) in cases {
            let c = compile(json!({ "cron": cron }));
            assert_eq!(fires(&c, after, want.len()), *want, "{cron}");
        }
    }

    #[test]
    fn unix_day_of_week_numbering() {
        use Weekday::*;
        // Asked at noon on Saturday 2026-01-03, after that day's 02:00.
        let cases: &[(&str, &[Weekday])] = &[
            ("0 2 * * 1", &[Mon, Mon, Mon]),
            ("0 2 * * 0", &[Sun, Sun]),
            ("0 2 * * 7", &[Sun, Sun]),
            ("0 2 * * SUN", &[Sun, Sun]),
            ("0 2 * * 6", &[Sat, Sat]),
            ("0 2 * * 1-5", &[Mon, Tue, Wed, Thu, Fri, Mon]),
            ("0 2 * * MON-FRI", &[Mon, Tue, Wed, Thu, Fri, Mon]),
            ("0 2 * * mon-fri", &[Mon, Tue, Wed, Thu, Fri, Mon]),
            ("0 2 * * 1,3,5", &[Mon, Wed, Fri, Mon]),
            ("0 2 * * */2", &[Sun, Tue, Thu, Sat, Sun]),
            ("0 2 * * 1-5/2", &[Mon, Wed, Fri, Mon]),
            ("0 2 * * 5-7", &[Sun, Fri, Sat, Sun]),
            ("0 2 * * 0,6", &[Sun, Sat, Sun]),
            ("0 2 * * 3/2", &[Sun, Wed, Fri, Sun]),
            ("0 2 * * 1,SAT", &[Mon, Sat, Mon]),
            ("0 0 2 * * 0-6", &[Sun, Mon, Tue, Wed, Thu, Fri, Sat, Sun]),
        ];
        for (cron, want) in cases {
            let c = compile(json!({ "cron": cron }));
            assert_eq!(
                weekdays(&c, "2026-01-03T12:00:00Z", want.len()),
                *want,
                "{cron}"
            );
        }
        assert_eq!(unix_day_of_week("0-7").unwrap(), "1,2,3,4,5,6,7");
        assert_eq!(unix_day_of_week("1-5/2,SAT").unwrap(), "2,4,6,SAT");
    }

    #[test]
    fn day_of_month_and_day_of_week_follow_unix() {
        let cases: &[(&str, &[&str])] = &[
            // Both restricted: the 10th OR Fridays (2026-02-06, -13, -20 are Fridays).
            (
                "0 0 10 * 5",
                &[
                    "2026-02-06T00:00:00Z",
                    "2026-02-10T00:00:00Z",
                    "2026-02-13T00:00:00Z",
                    "2026-02-20T00:00:00Z",
                ],
            ),
            // Day-of-month starts with `*`: AND, odd days that are Fridays.
            (
                "0 0 */2 * 5",
                &[
                    "2026-02-13T00:00:00Z",
                    "2026-02-27T00:00:00Z",
                    "2026-03-13T00:00:00Z",
                ],
            ),
            // Day-of-week `*`: the day of month alone.
            (
                "0 0 10 * *",
                &["2026-02-10T00:00:00Z", "2026-03-10T00:00:00Z"],
            ),
            // An impossible day of month does not stop the day-of-week branch.
            (
                "0 0 30 2 1",
                &["2026-02-02T00:00:00Z", "2026-02-09T00:00:00Z"],
            ),
        ];
        for (cron, want) in cases {
            let c = compile(json!({ "cron": cron }));
            assert_eq!(
                fires(&c, "2026-02-01T00:00:00Z", want.len()),
                *want,
                "{cron}"
            );
        }
    }

    /// One DST case: the cron, zone and policy, the instant to ask after, and the fires expected
    /// as (UTC, local, a phrase of the DST note or "" for none).
    struct DstCase {
        cron: &'static str,
        tz: &'static str,
        gap: &'static str,
        repeat: &'static str,
        after: &'static str,
        want: &'static [(&'static str, &'static str, &'static str)],
    }

    #[test]
    fn daylight_saving_transitions() {
        let ny = "America/New_York";
        let cases = [
            // New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z).
            DstCase {
                cron: "30 2 * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-03-07T12:00:00Z",
                want: &[
                    (
                        "2026-03-08T07:00:00Z",
                        "2026-03-08T03:00:00-04:00",
                        "02:30 does not exist on 2026-03-08 in America/New_York (clocks go forward); shifted to 03:00",
                    ),
                    ("2026-03-09T06:30:00Z", "2026-03-09T02:30:00-04:00", ""),
                ],
            },
            DstCase {
                cron: "30 2 * * *",
                tz: ny,
                gap: "skip",
                repeat: "first",
                after: "2026-03-07T12:00:00Z",
                want: &[
                    ("2026-03-09T06:30:00Z", "2026-03-09T02:30:00-04:00", ""),
                    ("2026-03-10T06:30:00Z", "2026-03-10T02:30:00-04:00", ""),
                ],
            },
            // Every 15 minutes: 03:00 fires anyway, so Shift adds nothing for 02:00-02:45.
            DstCase {
                cron: "*/15 * * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-03-08T06:30:00Z",
                want: &[
                    ("2026-03-08T06:45:00Z", "2026-03-08T01:45:00-05:00", ""),
                    ("2026-03-08T07:00:00Z", "2026-03-08T03:00:00-04:00", ""),
                    ("2026-03-08T07:15:00Z", "2026-03-08T03:15:00-04:00", ""),
                ],
            },
            DstCase {
                cron: "*/15 * * * *",
                tz: ny,
                gap: "skip",
                repeat: "first",
                after: "2026-03-08T06:30:00Z",
                want: &[
                    ("2026-03-08T06:45:00Z", "2026-03-08T01:45:00-05:00", ""),
                    ("2026-03-08T07:00:00Z", "2026-03-08T03:00:00-04:00", ""),
                ],
            },
            // 02:10 and 02:40 are lost: Shift fires once at 03:00 for both, Skip not at all.
            DstCase {
                cron: "10,40 * * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-03-08T06:30:00Z",
                want: &[
                    ("2026-03-08T06:40:00Z", "2026-03-08T01:40:00-05:00", ""),
                    (
                        "2026-03-08T07:00:00Z",
                        "2026-03-08T03:00:00-04:00",
                        "02:10 does not exist",
                    ),
                    ("2026-03-08T07:10:00Z", "2026-03-08T03:10:00-04:00", ""),
                ],
            },
            DstCase {
                cron: "10,40 * * * *",
                tz: ny,
                gap: "skip",
                repeat: "first",
                after: "2026-03-08T06:30:00Z",
                want: &[
                    ("2026-03-08T06:40:00Z", "2026-03-08T01:40:00-05:00", ""),
                    ("2026-03-08T07:10:00Z", "2026-03-08T03:10:00-04:00", ""),
                ],
            },
            // Every second of hour 2: the whole hour is stepped over, not walked.
            DstCase {
                cron: "* * 2 * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-03-08T06:00:00Z",
                want: &[
                    (
                        "2026-03-08T07:00:00Z",
                        "2026-03-08T03:00:00-04:00",
                        "02:00 does not exist",
                    ),
                    ("2026-03-09T06:00:00Z", "2026-03-09T02:00:00-04:00", ""),
                    ("2026-03-09T06:00:01Z", "2026-03-09T02:00:01-04:00", ""),
                ],
            },
            DstCase {
                cron: "* * 2 * * *",
                tz: ny,
                gap: "skip",
                repeat: "first",
                after: "2026-03-08T06:00:00Z",
                want: &[("2026-03-09T06:00:00Z", "2026-03-09T02:00:00-04:00", "")],
            },
            // New York falls back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).
            DstCase {
                cron: "30 1 * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-10-31T12:00:00Z",
                want: &[
                    (
                        "2026-11-01T05:30:00Z",
                        "2026-11-01T01:30:00-04:00",
                        "01:30 occurs twice on 2026-11-01 in America/New_York; first occurrence (-04:00)",
                    ),
                    ("2026-11-02T06:30:00Z", "2026-11-02T01:30:00-05:00", ""),
                ],
            },
            DstCase {
                cron: "30 1 * * *",
                tz: ny,
                gap: "shift",
                repeat: "both",
                after: "2026-10-31T12:00:00Z",
                want: &[
                    (
                        "2026-11-01T05:30:00Z",
                        "2026-11-01T01:30:00-04:00",
                        "first occurrence (-04:00)",
                    ),
                    (
                        "2026-11-01T06:30:00Z",
                        "2026-11-01T01:30:00-05:00",
                        "01:30 occurs twice on 2026-11-01 in America/New_York; second occurrence (-05:00)",
                    ),
                    ("2026-11-02T06:30:00Z", "2026-11-02T01:30:00-05:00", ""),
                ],
            },
            // Both: the repeated hour runs twice, in time order.
            DstCase {
                cron: "*/20 * * * *",
                tz: ny,
                gap: "shift",
                repeat: "both",
                after: "2026-11-01T04:50:00Z",
                want: &[
                    ("2026-11-01T05:00:00Z", "2026-11-01T01:00:00-04:00", "first"),
                    ("2026-11-01T05:20:00Z", "2026-11-01T01:20:00-04:00", "first"),
                    ("2026-11-01T05:40:00Z", "2026-11-01T01:40:00-04:00", "first"),
                    (
                        "2026-11-01T06:00:00Z",
                        "2026-11-01T01:00:00-05:00",
                        "second",
                    ),
                    (
                        "2026-11-01T06:20:00Z",
                        "2026-11-01T01:20:00-05:00",
                        "second",
                    ),
                    (
                        "2026-11-01T06:40:00Z",
                        "2026-11-01T01:40:00-05:00",
                        "second",
                    ),
                    ("2026-11-01T07:00:00Z", "2026-11-01T02:00:00-05:00", ""),
                ],
            },
            DstCase {
                cron: "*/20 * * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-11-01T04:50:00Z",
                want: &[
                    ("2026-11-01T05:00:00Z", "2026-11-01T01:00:00-04:00", "first"),
                    ("2026-11-01T05:20:00Z", "2026-11-01T01:20:00-04:00", "first"),
                    ("2026-11-01T05:40:00Z", "2026-11-01T01:40:00-04:00", "first"),
                    ("2026-11-01T07:00:00Z", "2026-11-01T02:00:00-05:00", ""),
                ],
            },
            // Asked from inside the second pass.
            DstCase {
                cron: "*/20 * * * *",
                tz: ny,
                gap: "shift",
                repeat: "first",
                after: "2026-11-01T06:10:00Z",
                want: &[("2026-11-01T07:00:00Z", "2026-11-01T02:00:00-05:00", "")],
            },
            DstCase {
                cron: "*/20 * * * *",
                tz: ny,
                gap: "shift",
                repeat: "both",
                after: "2026-11-01T06:10:00Z",
                want: &[(
                    "2026-11-01T06:20:00Z",
                    "2026-11-01T01:20:00-05:00",
                    "second",
                )],
            },
            // Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z).
            DstCase {
                cron: "30 2 * * *",
                tz: "Europe/Berlin",
                gap: "shift",
                repeat: "first",
                after: "2026-03-28T12:00:00Z",
                want: &[
                    (
                        "2026-03-29T01:00:00Z",
                        "2026-03-29T03:00:00+02:00",
                        "02:30 does not exist on 2026-03-29 in Europe/Berlin",
                    ),
                    ("2026-03-30T00:30:00Z", "2026-03-30T02:30:00+02:00", ""),
                ],
            },
            // Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z).
            DstCase {
                cron: "30 2 * * *",
                tz: "Europe/Berlin",
                gap: "shift",
                repeat: "both",
                after: "2026-10-24T12:00:00Z",
                want: &[
                    (
                        "2026-10-25T00:30:00Z",
                        "2026-10-25T02:30:00+02:00",
                        "first occurrence (+02:00)",
                    ),
                    (
                        "2026-10-25T01:30:00Z",
                        "2026-10-25T02:30:00+01:00",
                        "second occurrence (+01:00)",
                    ),
                    ("2026-10-26T01:30:00Z", "2026-10-26T02:30:00+01:00", ""),
                ],
            },
            DstCase {
                cron: "30 2 * * *",
                tz: "Europe/Berlin",
                gap: "shift",
                repeat: "first",
                after: "2026-10-24T12:00:00Z",
                want: &[
                    (
                        "2026-10-25T00:30:00Z",
                        "2026-10-25T02:30:00+02:00",
                        "first occurrence (+02:00)",
                    ),
                    ("2026-10-26T01:30:00Z", "2026-10-26T02:30:00+01:00", ""),
                ],
            },
            // Lord Howe moves its clocks by 30 minutes: 2026-10-04 02:00 -> 02:30 (+10:30 -> +11:00).
            DstCase {
                cron: "15 2 * * *",
                tz: "Australia/Lord_Howe",
                gap: "shift",
                repeat: "first",
                after: "2026-10-03T12:00:00Z",
                want: &[
                    (
                        "2026-10-03T15:30:00Z",
                        "2026-10-04T02:30:00+11:00",
                        "02:15 does not exist on 2026-10-04 in Australia/Lord_Howe (clocks go forward); shifted to 02:30",
                    ),
                    ("2026-10-04T15:15:00Z", "2026-10-05T02:15:00+11:00", ""),
                ],
            },
            // ... and back on 2026-04-05 02:00 -> 01:30: 01:45 occurs twice, 30 minutes apart.
            DstCase {
                cron: "45 1 * * *",
                tz: "Australia/Lord_Howe",
                gap: "shift",
                repeat: "both",
                after: "2026-04-04T12:00:00Z",
                want: &[
                    (
                        "2026-04-04T14:45:00Z",
                        "2026-04-05T01:45:00+11:00",
                        "first occurrence (+11:00)",
                    ),
                    (
                        "2026-04-04T15:15:00Z",
                        "2026-04-05T01:45:00+10:30",
                        "second occurrence (+10:30)",
                    ),
                    ("2026-04-05T15:15:00Z", "2026-04-06T01:45:00+10:30", ""),
                ],
            },
            // A UTC schedule on New York's transition day is not affected.
            DstCase {
                cron: "30 2 * * *",
                tz: "UTC",
                gap: "shift",
                repeat: "both",
                after: "2026-03-07T12:00:00Z",
                want: &[
                    ("2026-03-08T02:30:00Z", "2026-03-08T02:30:00+00:00", ""),
                    ("2026-03-09T02:30:00Z", "2026-03-09T02:30:00+00:00", ""),
                ],
            },
        ];
        for case in &cases {
            let c = compile(json!({
                "cron": case.cron,
                "timezone": case.tz,
                "dst": { "gap": case.gap, "repeat": case.repeat },
            }));
            let got = c.preview(ms(case.after), case.want.len());
            let label = format!(
                "{} in {} ({}, {})",
                case.cron, case.tz, case.gap, case.repeat
            );
            assert_eq!(got.len(), case.want.len(), "{label}: {got:#?}");
            for (fire, (at, local, note)) in got.iter().zip(case.want) {
                assert_eq!(
                    (fire.at.as_str(), fire.local.as_str()),
                    (*at, *local),
                    "{label}"
                );
                match (&fire.dst, note.is_empty()) {
                    (None, true) => {}
                    (Some(dst), false) => assert!(dst.contains(note), "{label}: {dst}"),
                    (dst, _) => panic!("{label} at {at}: dst note {dst:?}, expected {note:?}"),
                }
            }
        }
    }

    #[test]
    fn shifted_fire_is_not_returned_twice() {
        let c = compile(json!({ "cron": "10,40 * * * *", "timezone": "America/New_York" }));
        let shifted = ms("2026-03-08T07:00:00Z");
        assert_eq!(c.next_after(shifted - 1).unwrap().at_ms, shifted);
        assert_eq!(c.next_after(shifted).unwrap().at, "2026-03-08T07:10:00Z");
        // Every preview is strictly increasing, across both transitions and under both policies.
        for repeat in ["first", "both"] {
            let c = compile(json!({
                "cron": "*/7 * * * *",
                "timezone": "America/New_York",
                "dst": { "repeat": repeat },
            }));
            for after in ["2026-03-08T05:00:00Z", "2026-11-01T04:00:00Z"] {
                let fires = c.preview(ms(after), 60);
                assert_eq!(fires.len(), 60);
                assert!(
                    fires.windows(2).all(|w| w[0].at_ms < w[1].at_ms),
                    "{repeat} {after}"
                );
            }
        }
    }

    #[test]
    fn every_second_schedule_is_cheap() {
        let c = compile(json!({
            "cron": "* * * * * *",
            "timezone": "America/New_York",
            "dst": { "repeat": "both" },
        }));
        // Three hours of seconds across the fall-back transition: 10,800 fires, each one second
        // after the last (the repeated hour runs twice).
        let fires = c.preview(ms("2026-11-01T04:00:00Z"), 3 * 3_600);
        assert!(fires.windows(2).all(|w| w[1].at_ms - w[0].at_ms == 1_000));
        assert_eq!(fires.last().unwrap().at, "2026-11-01T07:00:00Z");
    }

    #[test]
    fn start_and_end_bound_the_fires() {
        let c = compile(json!({
            "cron": "0 * * * *",
            "start_at": "2026-01-01T05:30:00Z",
            "end_at": "2026-01-01T08:00:00Z",
        }));
        assert_eq!(
            fires(&c, "2026-01-01T00:00:00Z", 10),
            [
                "2026-01-01T06:00:00Z",
                "2026-01-01T07:00:00Z",
                "2026-01-01T08:00:00Z"
            ]
        );
        assert_eq!(c.next_after(ms("2026-01-01T08:00:00Z")), None);
        // A start on a fire time includes it.
        let c = compile(json!({ "cron": "0 * * * *", "start_at": "2026-01-01T06:00:00+00:00" }));
        assert_eq!(
            fires(&c, "2025-01-01T00:00:00Z", 1),
            ["2026-01-01T06:00:00Z"]
        );
        // Past 2100 nothing fires.
        assert_eq!(SEARCH_UNTIL_MS, ms("2101-01-01T00:00:00Z"));
        assert_eq!(c.next_after(ms("2100-12-31T23:00:00Z")), None);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let none = compile(json!({ "cron": "* * * * *" }));
        assert_eq!(none.jitter_ms("s1", 1_000), 0);
        let c = compile(json!({ "cron": "* * * * *", "jitter_secs": 60 }));
        let base = ms("2026-01-01T00:00:00Z");
        let delays: Vec<i64> = (0..1_000)
            .map(|i| c.jitter_ms("s1", base + i * 60_000))
            .collect();
        assert!(delays.iter().all(|d| (0..60_000).contains(d)));
        assert_eq!(
            delays,
            (0..1_000)
                .map(|i| c.jitter_ms("s1", base + i * 60_000))
                .collect::<Vec<_>>()
        );
        // Spread: the delays cover every tenth of the span.
        let tenths: BTreeSet<i64> = delays.iter().map(|d| d / 6_000).collect();
        assert_eq!(tenths.len(), 10);
        // Another id, another delay (for most fire times).
        let differ = (0..100)
            .filter(|i| c.jitter_ms("s2", base + i * 60_000) != delays[*i as usize])
            .count();
        assert!(differ > 90, "{differ}");
        // Pinned: a changed hash would move every schedule's fire times after an upgrade.
        assert_eq!(c.jitter_ms("nightly", 1_767_225_600_000), 33_516);
    }

    fn windowed() -> Compiled {
        compile(json!({
            "cron": "0 22 * * *",
            "window_secs": 3_600,
            "freezes": [
                { "name": "release", "from": "2026-01-02T21:00:00Z", "to": "2026-01-03T00:00:00Z" },
                { "name": "holidays", "from": "2026-01-05T00:00:00Z", "to": "2026-01-08T00:00:00Z" },
            ],
        }))
    }

    #[test]
    fn freezes_cover_from_inclusive_to_exclusive() {
        let c = windowed();
        let name = |at: &str| c.freeze_at(ms(at)).map(|f| f.name.as_str());
        assert_eq!(name("2026-01-02T20:59:59.999Z"), None);
        assert_eq!(name("2026-01-02T21:00:00Z"), Some("release"));
        assert_eq!(name("2026-01-02T23:59:59.999Z"), Some("release"));
        assert_eq!(name("2026-01-03T00:00:00Z"), None);
        assert_eq!(name("2026-01-06T12:00:00Z"), Some("holidays"));
    }

    #[test]
    fn maintenance_windows() {
        let c = windowed();
        let at = |s: &str| ms(s);
        let span = |s: &str, e: &str| Some((at(s), at(e)));
        assert_eq!(
            c.window_end(at("2026-01-01T22:00:00Z")),
            Some(at("2026-01-01T23:00:00Z"))
        );
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            (
                "2026-01-01T12:00:00Z",
                span("2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z"),
            ),
            // A window starting exactly at `after` counts.
            (
                "2026-01-01T22:00:00Z",
                span("2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z"),
            ),
            // The 2nd's window is frozen at its start.
            (
                "2026-01-01T22:00:00.001Z",
                span("2026-01-03T22:00:00Z", "2026-01-03T23:00:00Z"),
            ),
            // The 5th to 7th are frozen: the walk jumps to the freeze's end.
            (
                "2026-01-04T23:00:00Z",
                span("2026-01-08T22:00:00Z", "2026-01-08T23:00:00Z"),
            ),
        ];
        for (after, want) in cases {
            assert_eq!(c.next_window(at(after)), *want, "next_window after {after}");
        }
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            ("2026-01-01T21:59:59.999Z", None),
            (
                "2026-01-01T22:00:00Z",
                span("2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z"),
            ),
            (
                "2026-01-01T22:59:59.999Z",
                span("2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z"),
            ),
            ("2026-01-01T23:00:00Z", None),
        ];
        for (instant, want) in cases {
            assert_eq!(
                c.window_containing(at(instant)),
                *want,
                "window_containing {instant}"
            );
        }
        let plain = compile(json!({ "cron": "0 22 * * *" }));
        assert_eq!(plain.window_end(0), None);
        assert_eq!(plain.next_window(0), None);
        assert_eq!(plain.window_containing(at("2026-01-01T22:30:00Z")), None);
        // Every fire frozen: no window.
        let frozen = compile(json!({
            "cron": "0 22 * * *",
            "window_secs": 60,
            "end_at": "2026-01-10T00:00:00Z",
            "freezes": [{ "name": "all", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z" }],
        }));
        assert_eq!(frozen.next_window(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn validation_errors_name_the_field_and_the_fix() {
        let long_note = "x".repeat(501);
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({ "cron": "0 2 * *" }),
                "cron",
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with seconds first), got 4",
            ),
            (json!({ "cron": "0 0 2 * * * 2026" }), "cron", "got 7"),
            (json!({ "cron": "" }), "cron", "got 0"),
            (
                json!({ "cron": "61 * * * *" }),
                "cron",
                "cannot parse the minute field \"61\"",
            ),
            (
                json!({ "cron": "0 0 0 * *" }),
                "cron",
                "day-of-month field \"0\" (Days of Month must be greater than or equal to 1",
            ),
            (json!({ "cron": "0 x * * *" }), "cron", "hour field \"x\""),
            (
                json!({ "cron": "0 2 * 13 *" }),
                "cron",
                "use 1-12 or JAN-DEC",
            ),
            (
                json!({ "cron": "0 2 * * FUNDAY" }),
                "cron",
                "'FUNDAY' is not a valid day of the week",
            ),
            (
                json!({ "cron": "0 2 * * MON-5" }),
                "cron",
                "day-of-week field \"MON-5\"; use 0-7",
            ),
            (
                json!({ "cron": "0 2 * * 1-8" }),
                "cron",
                "\"8\" is not a day",
            ),
            (json!({ "cron": "0 2 * * 8" }), "cron", "0 and 7 are Sunday"),
            (json!({ "cron": "0 2 * * 5-1" }), "cron", "runs backwards"),
            (json!({ "cron": "0 2 * * */0" }), "cron", "step"),
            (
                json!({ "cron": "@fortnightly" }),
                "cron",
                "unknown shorthand",
            ),
            (
                json!({ "cron": "0 0 30 2 *" }),
                "cron",
                "never fires (February 30th)",
            ),
            (
                json!({ "cron": "0 0 31 4,6 *" }),
                "cron",
                "never fires (April 31st)",
            ),
            (
                json!({ "cron": "0 2 * * *", "timezone": "Mars/Base" }),
                "timezone",
                "unknown IANA time zone \"Mars/Base\"; use a name such as Europe/Berlin or UTC",
            ),
            (json!({ "cron": "0 2 * * *", "kind": " " }), "kind", "empty"),
            (
                json!({ "cron": "0 2 * * *", "start_at": "tomorrow" }),
                "start_at",
                "RFC 3339",
            ),
            (
                json!({ "cron": "0 2 * * *", "end_at": "2026-01-01" }),
                "end_at",
                "RFC 3339",
            ),
            (
                json!({ "cron": "0 2 * * *", "start_at": "2026-02-01T00:00:00Z", "end_at": "2026-01-01T00:00:00Z" }),
                "end_at",
                "not after start_at",
            ),
            (
                json!({ "cron": "0 2 1 1 *", "start_at": "2026-02-01T00:00:00Z", "end_at": "2026-03-01T00:00:00Z" }),
                "end_at",
                "no fire time between",
            ),
            (
                json!({ "cron": "0 2 * * *", "start_at": "2101-02-01T00:00:00Z" }),
                "start_at",
                "no fire time",
            ),
            (
                json!({ "cron": "0 2 * * *", "window_secs": 0 }),
                "window_secs",
                "an empty window (0 s); give the window's length in seconds or leave it out",
            ),
            (
                json!({ "cron": "0 2 * * *", "window_secs": 604_801 }),
                "window_secs",
                "longer than 7 days",
            ),
            (
                json!({ "cron": "0 2 * * *", "jitter_secs": 3_601 }),
                "jitter_secs",
                "at most 3600",
            ),
            (
                json!({ "cron": "0 2 * * *", "catchup_window_secs": 604_801 }),
                "catchup_window_secs",
                "longer than 7 days",
            ),
            (
                json!({ "cron": "0 2 * * *", "note": long_note }),
                "note",
                "at most 500",
            ),
            (
                json!({ "cron": "0 2 * * *", "freezes": [{ "name": "", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z" }] }),
                "freezes",
                "empty name",
            ),
            (
                json!({ "cron": "0 2 * * *", "freezes": [
                { "name": "a", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z" },
                { "name": "a", "from": "2026-02-01T00:00:00Z", "to": "2026-02-02T00:00:00Z" },
            ] }),
                "freezes",
                "two freezes are named \"a\"",
            ),
            (
                json!({ "cron": "0 2 * * *", "freezes": [{ "name": "a", "from": "2026-01-02T00:00:00Z", "to": "2026-01-02T00:00:00Z" }] }),
                "freezes",
                "is not before to",
            ),
            (
                json!({ "cron": "0 2 * * *", "freezes": [{ "name": "a", "from": "soon", "to": "2026-01-02T00:00:00Z" }] }),
                "freezes",
                "freeze \"a\": from",
            ),
        ];
        for (value, field, phrase) in cases {
            let err = Compiled::compile(&spec(value.clone())).expect_err(&value.to_string());
            assert_eq!(err.field, field, "{value}: {err}");
            assert!(err.message.contains(phrase), "{value}: {err}");
            assert!(err.to_string().starts_with(&format!("{field}: ")));
        }
        // At the limits, all is well.
        compile(json!({
            "cron": "0 2 * * *",
            "window_secs": 604_800,
            "jitter_secs": 3_600,
            "catchup_window_secs": 604_800,
            "note": "x".repeat(500),
        }));
    }

    #[test]
    fn spec_json_defaults_and_spelling() {
        let s: ScheduleSpec =
            serde_json::from_value(json!({ "cron": "0 2 * * *", "kind": "k" })).unwrap();
        assert_eq!(s.timezone, "UTC");
        assert_eq!(s.input, Value::Null);
        assert_eq!(s.catchup_window_secs, 60);
        assert_eq!(s.overlap, Overlap::Skip);
        assert_eq!(
            s.dst,
            DstPolicy {
                gap: GapPolicy::Shift,
                repeat: RepeatPolicy::First
            }
        );
        assert_eq!((s.jitter_secs, s.window_secs, s.paused), (0, None, false));
        let s: ScheduleSpec = serde_json::from_value(json!({
            "cron": "0 2 * * *", "kind": "k", "overlap": "buffer-one",
            "dst": { "gap": "skip", "repeat": "both" },
        }))
        .unwrap();
        assert_eq!(s.overlap, Overlap::BufferOne);
        assert_eq!(
            s.dst,
            DstPolicy {
                gap: GapPolicy::Skip,
                repeat: RepeatPolicy::Both
            }
        );
        assert_eq!(
            serde_json::to_value(Overlap::CancelOther).unwrap(),
            json!("cancel-other")
        );
        assert_eq!(
            serde_json::to_value(Overlap::AllowAll).unwrap(),
            json!("allow-all")
        );
        let round = serde_json::to_value(&s).unwrap();
        assert_eq!(serde_json::from_value::<ScheduleSpec>(round).unwrap(), s);
        for unknown in [
            json!({ "cron": "0 2 * * *", "kind": "k", "tz": "UTC" }),
            json!({ "cron": "0 2 * * *", "kind": "k", "dst": { "gap": "skip", "fold": "both" } }),
            json!({ "cron": "0 2 * * *", "kind": "k", "freezes": [{ "name": "a", "from": "x", "to": "y", "why": "" }] }),
        ] {
            assert!(serde_json::from_value::<ScheduleSpec>(unknown).is_err());
        }
        // A fire without a DST note leaves the field out.
        let c = compile(json!({ "cron": "0 2 * * *" }));
        let fire = c.next_after(ms("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            serde_json::to_value(&fire).unwrap(),
            json!({ "at_ms": 1_767_232_800_000_i64, "at": "2026-01-01T02:00:00Z", "local": "2026-01-01T02:00:00+00:00" })
        );
        assert_eq!(c.spec().cron, "0 2 * * *");
    }

    #[test]
    fn instants_format_and_parse() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_772_953_200_000), "2026-03-08T07:00:00Z");
        assert_eq!(rfc3339(1_772_953_200_250), "2026-03-08T07:00:00.250Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert!(rfc3339(i64::MAX).starts_with('+'));
        assert_eq!(
            parse_instant("2026-03-08T03:00:00-04:00"),
            Ok(1_772_953_200_000)
        );
        assert_eq!(
            parse_instant("2026-03-08T07:00:00.250Z"),
            Ok(1_772_953_200_250)
        );
        let err = parse_instant("2026-03-08").unwrap_err();
        assert!(
            err.contains("RFC 3339") && err.contains("2026-03-08T07:00:00Z"),
            "{err}"
        );
    }
}
