//! The engine benchmark's parameters: how much work each phase does and for how long. The report
//! quotes them, so they live apart from both the measuring and the rendering.

use std::time::Duration;

/// The command that produced the figures, as BENCHMARKS.md records it.
pub const COMMAND: &str = "cargo bench --bench engine";
/// Throughput rounds (Drover 1 and 4 workers, apalis stock with two backlogs, apalis lean);
/// figures are medians over rounds, ratios are taken within a round.
pub const ROUNDS: usize = 5;
/// Workflows pre-submitted per Drover throughput run, and their (no-op) steps.
pub const TP_WORKFLOWS: usize = 4_000;
pub const TP_STEPS: usize = 5;
/// Workflows (of [`TP_STEPS`] steps) run by one worker with Redis's SLOWLOG recording every call.
pub const COST_WORKFLOWS: usize = 1_000;
/// Steps run at once per worker process (Drover) and per worker (apalis).
pub const CONCURRENCY: usize = 32;
/// Jobs pre-pushed per apalis run: the anchor has the same backlog as a Drover run has ready
/// workflows. apalis-redis promotes every due job in one Lua `unpack`, which fails from about 8,000
/// due jobs on, so the backlog stays below that.
pub const APALIS_JOBS: usize = TP_WORKFLOWS;
/// A small backlog for apalis: its stock config removes every locked job from the whole queue list
/// (`LREM`), so its cost per job grows with the backlog.
pub const APALIS_SMALL_JOBS: usize = 1_500;
/// How long each script-ceiling configuration is driven, and how often: a ceiling is the best of
/// its tries (a try that another process interrupts says nothing about Redis).
pub const CEILING_WINDOW: Duration = Duration::from_millis(600);
pub const CEILING_TRIES: usize = 3;
pub const PIPELINE_DEPTH: usize = 64;
/// Paced submission for the latency measurement.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(8);
pub const LATENCY_STEPS: usize = 5;
/// Lease used by the throughput and latency workers (no step there comes near it).
pub const LONG_LEASE_MS: u64 = 15_000;
/// Crash recovery: lease TTL, how long the step runs, and when (after its claim) the worker dies.
pub const RECOVERY_LEASE_MS: u64 = 1_500;
pub const RECOVERY_STEP_MS: u64 = 2_500;
pub const KILL_AFTER_MS: [u64; 3] = [600, 900, 1_300];
/// No single wait in the bench lasts longer than this.
pub const DEADLINE: Duration = Duration::from_secs(90);
/// Idle wait of the worker processes (DROVER_WORKER_IDLE_WAIT_MS), the default.
pub const IDLE_WAIT_MS: u64 = 1_000;
