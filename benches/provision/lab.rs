//! The lab side of the provisioning benchmark: the scenario both runs get, and what the lab says
//! happened, read back after a run (straight from the lab, not through the counting proxy, with
//! the faults cleared): every deployment from MAAS's events, the Nodes that are Ready and when
//! they turned Ready, the machines' final states; and from those the two yardsticks of a run,
//! the ideal and the bound for the failures drawn.
//!
//! All times here are lab (simulated) seconds, read from MAAS's event timestamps and the Nodes'
//! `lastTransitionTime`, both of the lab's simulated wall clock at one-second resolution.

use std::collections::BTreeMap;

use anyhow::Result;
use drover_lab::LabHandle;
use drover_lab::scenario::{FaultRates, MachineSpec, Scenario};
use drover_workflows::ports::maas::{Maas, MachineFilter};

/// Ready machines in the bench's pool; 20 nodes plus room for failed ones being erased.
pub const MACHINES: usize = 30;
/// The tag every machine of the pool has, and the constraint both runs allocate by.
pub const TAG: &str = "bench-worker";
/// Minimum CPU count both runs ask for (every machine has 64).
pub const CPUS: u32 = 32;

/// The hostname of machine `i` (from 1).
pub fn hostname(i: usize) -> String {
    format!("bm-{i:02}")
}

/// No Kubernetes node and no VM; `MACHINES` Ready machines in pool `bench`, tagged `TAG`; MAAS's
/// default timings (deploy 720 s with jitter 0.25, join 60 s, Ready 90 s later, release 60 s, quick
/// erase 90 s) and the benchmark's random fault rates.
pub fn scenario(time_scale: f64, faults: FaultRates) -> Scenario {
    let mut s = Scenario::empty();
    s.name = "provision-bench".into();
    s.time_scale = time_scale;
    s.faults = faults;
    s.maas.pools = vec!["bench".into()];
    s.maas.tags = vec![TAG.into()];
    s.maas.machines = (1..=MACHINES)
        .map(|i| MachineSpec {
            hostname: hostname(i),
            pool: "bench".into(),
            tags: vec![TAG.into()],
            status: "ready".into(),
            ip: format!("10.20.40.{}", 10 + i),
            ..MachineSpec::default()
        })
        .collect();
    s
}

/// One deployment of one machine, from its `Deploying` event to its end.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub start: f64,
    /// When it ended and whether it deployed; `None` while still deploying.
    pub end: Option<(f64, bool)>,
}

/// What the lab holds after a run.
#[derive(Debug, Clone, Default)]
pub struct After {
    /// Every deployment, by machine, oldest first.
    pub deployments: BTreeMap<String, Vec<Deployment>>,
    /// Hostname -> system_id of every machine.
    pub system_ids: BTreeMap<String, String>,
    /// Ready Nodes: name -> when the Ready condition turned True.
    pub ready: BTreeMap<String, f64>,
    /// Machines by final status name.
    pub machine_states: BTreeMap<String, usize>,
}

/// One node as a run pursued it: the machines it tried, in order, with when each attempt began
/// (real ms since the epoch: only their order is used).
#[derive(Debug, Clone)]
pub struct Chain {
    pub attempts: Vec<(String, u64)>,
}

/// What the nodes' attempts add up to.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    /// The bound for the failures drawn: the longest, over the nodes that ended Ready, of the
    /// sum of the failed deployments the node went through (each from its deploy call to MAAS
    /// marking it failed) plus the successful one's deploy call to Ready. No run meeting the same
    /// failures with the same deploy durations can beat it; a run's excess over it is time lost
    /// between steps.
    pub bound: f64,
    /// For each failed deployment a node went on from: MAAS marking it failed to the node's next
    /// deploy call (noticing the failure, giving the machine back, allocating another, deploying).
    pub gaps: Vec<f64>,
}

/// Reads the lab back through `maas`, a client that talks to the lab directly.
pub async fn read_back(lab: &LabHandle, maas: &dyn Maas) -> Result<After> {
    lab.clear_faults();
    let mut after = After::default();
    for m in maas.list_machines(&MachineFilter::default()).await? {
        *after
            .machine_states
            .entry(m.status_name.clone())
            .or_default() += 1;
        after
            .system_ids
            .insert(m.hostname.clone(), m.system_id.clone());
        let mut events = maas.events(&m.system_id, 1000).await?;
        events.sort_by_key(|e| e.id);
        let mut list: Vec<Deployment> = Vec::new();
        for e in events {
            let Some(at) = maas_time(&e.created) else {
                continue;
            };
            let end = match e.kind.as_str() {
                "Deploying" => {
                    list.push(Deployment {
                        start: at,
                        end: None,
                    });
                    continue;
                }
                "Deployed" => true,
                "Marking node failed" | "Aborted deployment" => false,
                _ => continue,
            };
            if let Some(d) = list.last_mut().filter(|d| d.end.is_none()) {
                d.end = Some((at, end));
            }
        }
        after.deployments.insert(m.system_id.clone(), list);
    }
    for n in lab.list("nodes", None) {
        let ready = n["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "True")
                .and_then(|c| c["lastTransitionTime"].as_str())
                .and_then(drover_lab::clock::parse_rfc3339)
        });
        if let (Some(name), Some(at)) = (n["metadata"]["name"].as_str(), ready) {
            after.ready.insert(name.to_string(), at as f64);
        }
    }
    Ok(after)
}

impl After {
    /// Deployments that failed.
    pub fn failed_deployments(&self) -> usize {
        self.deployments
            .values()
            .flatten()
            .filter(|d| matches!(d.end, Some((_, false))))
            .count()
    }

    /// Machines whose deployments failed, with how many times: `bm-20 x 2, bm-16 x 1`.
    pub fn failed_machines(&self) -> String {
        let hostname = |sid: &str| {
            self.system_ids
                .iter()
                .find(|(_, s)| s.as_str() == sid)
                .map_or(sid.to_string(), |(h, _)| h.clone())
        };
        let mut out: Vec<(String, usize)> = self
            .deployments
            .iter()
            .map(|(sid, ds)| {
                let failed = ds
                    .iter()
                    .filter(|d| matches!(d.end, Some((_, false))))
                    .count();
                (hostname(sid), failed)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        out.sort();
        out.iter()
            .map(|(h, n)| format!("{h} x {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Lab seconds machines spent deploying, all deployments together.
    pub fn deploying_secs(&self) -> f64 {
        self.deployments
            .values()
            .flatten()
            .filter_map(|d| Some(d.end?.0 - d.start))
            .sum()
    }

    /// The machine's last deployment, if it deployed.
    fn last_deployed(&self, hostname: &str) -> Option<&Deployment> {
        let sid = self.system_ids.get(hostname)?;
        self.deployments
            .get(sid)?
            .last()
            .filter(|d| matches!(d.end, Some((_, true))))
    }

    /// The ideal: the longest time, over the machines that ended as Ready Nodes, from the deploy
    /// call (MAAS's `Deploying` event) to the Node turning Ready. What the run takes with no
    /// failed deployment and nothing lost between steps: the slowest successful deploy plus its
    /// join.
    pub fn ideal(&self) -> Option<f64> {
        self.ready
            .iter()
            .filter_map(|(node, ready)| Some(ready - self.last_deployed(node)?.start))
            .reduce(f64::max)
    }

    /// The bound for the failures drawn, and the gaps: see [`Paths`]. `None` when the attempts
    /// a run reports cannot be matched one to one with MAAS's deployments.
    pub fn paths(&self, chains: &[Chain]) -> Option<Paths> {
        // The k-th attempt on a machine, all the run's nodes together in the order they began,
        // is the machine's k-th deployment.
        let mut on: BTreeMap<&str, Vec<(u64, usize, usize)>> = BTreeMap::new();
        for (c, chain) in chains.iter().enumerate() {
            for (a, (sid, at)) in chain.attempts.iter().enumerate() {
                on.entry(sid.as_str()).or_default().push((*at, c, a));
            }
        }
        let mut matched: BTreeMap<(usize, usize), &Deployment> = BTreeMap::new();
        for (sid, mut attempts) in on {
            attempts.sort();
            let deployments = self.deployments.get(sid)?;
            if deployments.len() != attempts.len() {
                return None;
            }
            for ((_, c, a), d) in attempts.into_iter().zip(deployments) {
                matched.insert((c, a), d);
            }
        }
        let mut paths = Paths::default();
        for (c, chain) in chains.iter().enumerate() {
            for a in 1..chain.attempts.len() {
                let failed = matched.get(&(c, a - 1))?.end?.0;
                paths.gaps.push(matched.get(&(c, a))?.start - failed);
            }
            let Some((last, _)) = chain.attempts.last() else {
                continue;
            };
            let Some(ready) = self
                .system_ids
                .iter()
                .find(|(_, s)| *s == last)
                .and_then(|(h, _)| self.ready.get(h))
            else {
                continue;
            };
            let mut total = 0.0;
            for a in 0..chain.attempts.len() {
                let d = matched.get(&(c, a))?;
                if a + 1 == chain.attempts.len() {
                    total += ready - d.start;
                } else {
                    total += d.end?.0 - d.start;
                }
            }
            paths.bound = paths.bound.max(total);
        }
        Some(paths)
    }

    /// Machines a finished run still holds without a Node: allocated, deploying or failed.
    pub fn held(&self) -> usize {
        ["Allocated", "Deploying", "Failed deployment"]
            .iter()
            .filter_map(|s| self.machine_states.get(*s))
            .sum()
    }
}

/// MAAS's event time, `Wed, 17 Nov. 2021 00:04:51` (UTC), in seconds since the epoch.
fn maas_time(created: &str) -> Option<f64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = created.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?.trim_end_matches('.');
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    let rfc = format!("{year:04}-{month:02}-{day:02}T{time}Z");
    drover_lab::clock::parse_rfc3339(&rfc).map(|s| s as f64)
}
