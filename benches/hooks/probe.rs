//! What a phase cost beside its latency, read before and after its measured span: Redis's CPU,
//! command executions, keys, memory and AOF bytes (`INFO`, `DBSIZE`), and the API process's CPU
//! (`/proc/<pid>/stat`), the bench's own, and the machine's busy time, so what other processes on
//! a shared box took shows. The bench's own `INFO`/`DBSIZE` calls and connection set-up are left out
//! of the command counts.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result};

/// One reading.
pub struct Snapshot {
    /// Calls per command, as `INFO commandstats` names them (commands run inside functions too).
    pub calls: BTreeMap<String, u64>,
    /// redis-server's user + system CPU, seconds.
    pub redis_cpu: f64,
    pub keys: u64,
    pub used_memory: u64,
    pub aof_bytes: u64,
    /// The API process's user + system CPU, seconds.
    pub api_cpu: f64,
    /// The bench process's own (the client's) CPU, seconds.
    pub client_cpu: f64,
    /// Busy time of all the machine's cores (`/proc/stat`), seconds.
    pub machine_busy: f64,
    pub at: Instant,
}

/// Commands the bench itself sends, or that only set a connection up.
const OURS: [&str; 6] = [
    "info",
    "dbsize",
    "hello",
    "client|setinfo",
    "select",
    "ping",
];

/// Per request, `after - before` over `n` requests.
pub struct Cost {
    pub api_cpu_us: f64,
    pub redis_cpu_us: f64,
    pub executions: f64,
    pub fcalls: f64,
    pub keys: f64,
    pub memory_bytes: f64,
    pub aof_bytes: f64,
    pub client_cpu_us: f64,
    /// Cores kept busy on average by everything else on the machine (other processes, the
    /// kernel's own work) over the span.
    pub others_cores: f64,
}

pub async fn read(conn: &mut redis::aio::MultiplexedConnection, api_pid: u32) -> Result<Snapshot> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .arg("cpu")
        .arg("memory")
        .arg("persistence")
        .query_async(conn)
        .await?;
    let keys: u64 = redis::cmd("DBSIZE").query_async(conn).await?;
    let mut calls = BTreeMap::new();
    let mut fields = BTreeMap::new();
    for line in info.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            // cmdstat_hset:calls=12,usec=34,...
            if let Some((name, stats)) = rest.split_once(':') {
                let n = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                calls.insert(name.to_string(), n);
            }
        } else if let Some((k, v)) = line.trim_end().split_once(':') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    let num = |k: &str| -> f64 {
        fields
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Ok(Snapshot {
        calls,
        redis_cpu: num("used_cpu_sys") + num("used_cpu_user"),
        keys,
        used_memory: num("used_memory") as u64,
        aof_bytes: num("aof_current_size") as u64,
        api_cpu: process_cpu(&api_pid.to_string()).context("read the API process's CPU time")?,
        client_cpu: process_cpu("self")?,
        machine_busy: machine_busy()?,
        at: Instant::now(),
    })
}

pub fn cost(before: &Snapshot, after: &Snapshot, n: usize) -> Cost {
    let n = n.max(1) as f64;
    let delta = |name: &str| {
        after.calls.get(name).copied().unwrap_or(0) as f64
            - before.calls.get(name).copied().unwrap_or(0) as f64
    };
    let executions: f64 = after
        .calls
        .keys()
        .filter(|k| !OURS.contains(&k.as_str()))
        .map(|k| delta(k))
        .sum();
    let (api, redis, client) = (
        after.api_cpu - before.api_cpu,
        after.redis_cpu - before.redis_cpu,
        after.client_cpu - before.client_cpu,
    );
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    Cost {
        api_cpu_us: api * 1e6 / n,
        client_cpu_us: client * 1e6 / n,
        others_cores: (after.machine_busy - before.machine_busy - api - redis - client) / wall,
        redis_cpu_us: (after.redis_cpu - before.redis_cpu) * 1e6 / n,
        executions: executions / n,
        fcalls: delta("fcall") / n,
        keys: (after.keys as f64 - before.keys as f64) / n,
        memory_bytes: (after.used_memory as f64 - before.used_memory as f64) / n,
        aof_bytes: (after.aof_bytes as f64 - before.aof_bytes as f64) / n,
    }
}

/// utime + stime of a process, seconds.
fn process_cpu(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields 14 and 15 count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no ')' in /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

/// Busy time of all cores since boot: user, nice, system, irq and softirq of `/proc/stat`'s `cpu`
/// line (not idle, iowait, or steal: time the hypervisor gave elsewhere), seconds.
fn machine_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(7)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Ok(busy as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Open TCP connections from this machine to `port` on loopback (the client's side of them), from
/// `/proc/net/tcp`.
pub fn connections_to(port: u16) -> usize {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // rem_address, st (01 = ESTABLISHED)
                    f.len() > 3 && f[2] == want && f[3] == "01"
                })
                .count()
        })
        .unwrap_or(0)
}
