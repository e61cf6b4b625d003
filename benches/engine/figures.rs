//! The figures a run of the engine benchmark produces: plain data, filled in by `measure.rs` and
//! `environment.rs` and rendered by `report.rs`, with the arithmetic both sides share (rates, CPU per
//! unit, the commandstats split, median and percentile).

use std::collections::BTreeMap;
use std::time::Duration;

/// What the figures were measured on (`Machine::probe`, in `environment.rs`, fills it in).
pub struct Machine {
    pub nproc: String,
    pub cpu: String,
    pub redis_version: String,
    pub date: String,
    pub load: String,
    pub revision: String,
    pub rustc: String,
    /// Redis settings the bench changed with `CONFIG SET` (from `DROVER_BENCH_LISTPACK_VALUE`);
    /// empty: Redis's defaults.
    pub redis_config: String,
}

impl Machine {
    pub fn one_line(&self) -> String {
        format!(
            "nproc {}, {}, redis-server {}, {}, load {}",
            self.nproc, self.cpu, self.redis_version, self.date, self.load
        )
    }
}

/// One throughput run.
pub struct Throughput {
    /// Committed steps (Drover) or completed jobs (apalis).
    pub units: u64,
    /// From the first claim (Drover) or handler call (apalis) until the bench saw the last unit
    /// done.
    pub span: Duration,
    /// From resuming the Drover workers (building the apalis worker) until the same moment.
    pub wall: Duration,
    pub calls: Calls,
    /// CPU seconds used meanwhile by redis-server, and by the worker processes (Drover) or the
    /// bench process that hosts the apalis worker.
    pub redis_cpu: f64,
    pub worker_cpu: f64,
    /// Average cores other processes on the box kept busy meanwhile.
    pub others_cores: f64,
    pub anomalies: Vec<String>,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        self.units as f64 / self.span.as_secs_f64().max(1e-9)
    }

    /// The rate with the CPU per unit behind it, for the bench's progress lines.
    pub fn one_line(&self) -> String {
        format!(
            "{:.0}/s ({:.0}+{:.0} us)",
            self.per_sec(),
            self.cpu_us(self.redis_cpu),
            self.cpu_us(self.worker_cpu)
        )
    }

    /// CPU microseconds per unit of work.
    pub fn cpu_us(&self, secs: f64) -> f64 {
        secs * 1e6 / self.units.max(1) as f64
    }

    /// CPU microseconds per unit, redis-server and workers together: unlike the rate, this hardly
    /// moves when other processes compete for the cores.
    pub fn total_cpu_us(&self) -> f64 {
        self.cpu_us(self.redis_cpu + self.worker_cpu)
    }
}

/// One line of `INFO commandstats`.
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub calls: u64,
    pub usec: u64,
}

/// Redis commands executed during a run, by name, the bench's own polling taken out.
#[derive(Default)]
pub struct Calls {
    pub by_command: BTreeMap<String, u64>,
    /// Microseconds Redis spent in client-sent commands (a script's time includes its calls).
    pub usec: u64,
}

impl Calls {
    /// The commands run between two `INFO commandstats` readings, less `own` (the bench's polling:
    /// command name and how many it sent).
    pub fn between(
        before: &BTreeMap<String, Stat>,
        after: &BTreeMap<String, Stat>,
        own: &[(&str, u64)],
    ) -> Calls {
        let delta = |k: &String, v: &Stat| {
            let b = before.get(k).copied().unwrap_or_default();
            Stat {
                calls: v.calls.saturating_sub(b.calls),
                usec: v.usec.saturating_sub(b.usec),
            }
        };
        let deltas: BTreeMap<String, Stat> = after
            .iter()
            .map(|(k, v)| (k.clone(), delta(k, v)))
            .collect();
        let mut by_command: BTreeMap<String, u64> =
            deltas.iter().map(|(k, v)| (k.clone(), v.calls)).collect();
        for (name, n) in own {
            if let Some(v) = by_command.get_mut(*name) {
                *v = v.saturating_sub(*n);
            }
        }
        by_command.retain(|_, v| *v > 0);
        let usec = deltas
            .iter()
            .filter(|(k, _)| is_top_level(k) && !own.iter().any(|(o, _)| o == k))
            .map(|(_, v)| v.usec)
            .sum();
        Calls { by_command, usec }
    }

    /// Commands a client sent: script and function calls, blocking pops, connection commands.
    /// Everything else is counted as executed inside a script (neither Drover's worker nor
    /// apalis-redis' worker path sends other commands on their own).
    pub fn round_trips(&self) -> u64 {
        self.top_level().iter().map(|(_, n)| n).sum()
    }

    pub fn executions(&self) -> u64 {
        self.by_command.values().sum()
    }

    pub fn top_level(&self) -> Vec<(&str, u64)> {
        self.by_command
            .iter()
            .filter(|(k, _)| is_top_level(k))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    pub fn inner(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .by_command
            .iter()
            .filter(|(k, _)| !is_top_level(k))
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

fn is_top_level(command: &str) -> bool {
    const TOP: [&str; 20] = [
        "fcall",
        "fcall_ro",
        "eval",
        "evalsha",
        "eval_ro",
        "evalsha_ro",
        "blpop",
        "brpop",
        "blmove",
        "brpoplpush",
        "bzpopmin",
        "bzpopmax",
        "blmpop",
        "bzmpop",
        "hello",
        "ping",
        "select",
        "info",
        "auth",
        "subscribe",
    ];
    const TOP_FAMILIES: [&str; 5] = ["client|", "function|", "script|", "config|", "command|"];
    TOP.contains(&command) || TOP_FAMILIES.iter().any(|f| command.starts_with(f))
}

/// One round of the comparison, run back to back.
pub struct Round {
    pub drover_1: Throughput,
    pub drover_4: Throughput,
    /// Stock config, backlog `APALIS_JOBS`: the anchor.
    pub apalis: Throughput,
    /// Stock config, backlog `APALIS_SMALL_JOBS`.
    pub apalis_small: Throughput,
    pub apalis_lean: Throughput,
}

/// Redis time of one kind of client-sent command (a Drover function by name), from the SLOWLOG.
pub struct FunctionCost {
    pub name: String,
    pub calls: u64,
    /// Calls per committed step.
    pub per_step: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// How the script-call ceiling calls a script that only returns 1.
#[derive(Clone, Copy)]
pub enum ScriptCall {
    Fcall,
    Evalsha,
}

impl ScriptCall {
    pub fn name(self) -> &'static str {
        match self {
            ScriptCall::Fcall => "FCALL",
            ScriptCall::Evalsha => "EVALSHA",
        }
    }
}

/// One configuration of the script-call ceiling: the best rate of its tries.
pub struct CeilingRow {
    pub call: ScriptCall,
    pub connections: usize,
    /// Calls in flight per connection (1: request-reply; more: one pipeline of that many).
    pub depth: usize,
    pub per_sec: f64,
}

/// One dispatch-latency run at a paced load.
pub struct Latency {
    /// What the offered load is relative to.
    pub label: &'static str,
    pub workers: usize,
    /// Offered load, steps per second.
    pub offered: f64,
    /// Committed steps per second over the run.
    pub achieved: f64,
    /// Per step k > 0: claim of step k minus the recorded end of step k-1, ms, sorted.
    pub gaps: Vec<u64>,
    /// Step 0: claim minus submission, ms, sorted.
    pub first: Vec<u64>,
    /// Average cores other processes on the box kept busy meanwhile.
    pub others_cores: f64,
    pub anomalies: Vec<String>,
}

/// One kill -9 of the worker holding a lease, and who re-ran the step how soon.
pub struct RecoveryTrial {
    pub kill_after_ms: u64,
    /// From the SIGKILL to the step's next claim (by the surviving worker).
    pub recovery_ms: u64,
    pub victim: String,
    pub rescuer: String,
    pub outcomes: Vec<String>,
}

/// Median (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
