//! The planner benchmark: how long `rolling-maintenance` takes to plan a rollout (drain order and
//! each VM's destination, `drover_kinds::plan::plan`) for clusters of 100 to 1,000 nodes with 20 VMs
//! each, with and without spare room outside the plan, one node and five nodes at a time. The
//! issue's aim is under a second for 1,000 nodes; the ratio reported is time / that second. No
//! other tool plans a rollout's placement (`kubectl drain` leaves each evicted VM to the
//! scheduler), so there is no anchor to run beside it.
//!
//! Run from the repository root: `cargo bench --bench planner` (about a minute). Not a test: it
//! asserts nothing, and writes its figures into BENCHMARKS.md between the `planner-bench` markers.

#[path = "shared/report.rs"]
mod report;

use std::time::{Duration, Instant};

use anyhow::Result;
use drover_kinds::plan::{PlanNode, PlanVm, plan};

const COMMAND: &str = "cargo bench --bench planner";
const GIB: u64 = 1 << 30;
const VMS_PER_NODE: usize = 20;
const RUNS: usize = 7;
const AIM: Duration = Duration::from_secs(1);

/// A cluster of `nodes` nodes in the plan with 20 VMs each (8 GiB, 0.5 CPU), and `spare` empty
/// nodes outside it. Node memory leaves room for `headroom` more VMs per node.
fn cluster(nodes: usize, spare: usize, headroom: u64) -> (Vec<PlanNode>, Vec<PlanVm>, Vec<String>) {
    let mut all = Vec::new();
    let mut vms = Vec::new();
    let mut in_plan = Vec::new();
    for i in 0..nodes + spare {
        let name = format!("node-{i:04}");
        all.push(PlanNode {
            name: name.clone(),
            cpu_millis: 128_000,
            memory_bytes: (VMS_PER_NODE as u64 + headroom) * 8 * GIB,
            takes_vms: true,
        });
        if i < nodes {
            in_plan.push(name.clone());
            for v in 0..VMS_PER_NODE {
                vms.push(PlanVm {
                    key: format!("ns-{}/vm-{i:04}-{v:02}", v % 7),
                    node: name.clone(),
                    cpu_millis: 500,
                    // Sizes vary a little, as real VMs do.
                    memory_bytes: (6 + (i + v) as u64 % 3) * GIB,
                    migratable: v % 10 != 9,
                });
            }
        }
    }
    (all, vms, in_plan)
}

struct Row {
    name: String,
    nodes: usize,
    vms: usize,
    wave: usize,
    times: Vec<Duration>,
    migrations: usize,
    second_moves: usize,
    unplaced: usize,
}

fn measure(name: &str, nodes: usize, spare: usize, headroom: u64, wave: usize) -> Row {
    let (all, vms, in_plan) = cluster(nodes, spare, headroom);
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let p = plan(&all, &vms, &in_plan, wave);
        times.push(start.elapsed());
        last = Some(p);
    }
    times.sort();
    let p = last.expect("ran");
    Row {
        name: name.to_string(),
        nodes,
        vms: vms.len(),
        wave,
        times,
        migrations: p.migrations,
        second_moves: p.second_moves.len(),
        unplaced: p.unplaced.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let started = Instant::now();
    let rows = vec![
        measure("100 nodes, 5 spare", 100, 5, 2, 1),
        measure("1,000 nodes, 50 spare", 1000, 50, 2, 1),
        measure("1,000 nodes, 50 spare, waves of 5", 1000, 50, 2, 5),
        measure("1,000 nodes, no spare", 1000, 0, 4, 1),
    ];
    let mut report = String::new();
    report.push_str(&format!(
        "Run {} on {} ({} cores, {}), load average before: {}; code {}; {} runs per row, {:.1} s \
         in all.\n\nCommand: `{COMMAND}`\n\n",
        report::date(),
        report::cpu(),
        report::nproc(),
        report::first_line("uname", &["-sr"]),
        report::load_average(),
        report::code_version(),
        RUNS,
        started.elapsed().as_secs_f64(),
    ));
    report.push_str(
        "| cluster | VMs | wave | median ms | min ms | max ms | median / 1 s aim | migrations | second moves | unplaced |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let median = r.times[r.times.len() / 2];
        report.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {} |\n",
            r.name,
            r.vms,
            r.wave,
            ms(median),
            ms(r.times[0]),
            ms(r.times[r.times.len() - 1]),
            median.as_secs_f64() / AIM.as_secs_f64(),
            r.migrations,
            r.second_moves,
            r.unplaced,
        ));
        let _ = r.nodes;
    }
    print!("{report}");
    report::write_section(
        "<!-- planner-bench:begin -->",
        "<!-- planner-bench:end -->",
        &report,
    )?;
    Ok(())
}
