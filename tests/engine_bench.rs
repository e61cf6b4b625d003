//! The engine benchmark's report (`benches/engine/report.rs`), rendered from fixed figures without
//! measuring anything. A benchmark without libtest's harness runs no tests of its own, so its
//! parameters, figures and report are compiled into this binary too. `engine_bench/report.md` is
//! what these figures rendered to before the benchmark was split into measuring and rendering; a
//! change to the report's format shows up here and is taken by replacing that file.

#[allow(dead_code)] // arithmetic only the measuring side uses
#[path = "../benches/engine/figures.rs"]
mod figures;
#[allow(dead_code)] // parameters only the measuring side uses
#[path = "../benches/engine/plan.rs"]
mod plan;
#[allow(dead_code)] // `write_benchmarks`: the file itself is left alone
#[path = "../benches/engine/report.rs"]
mod report;

use std::path::PathBuf;
use std::time::Duration;

use figures::{
    Calls, CeilingRow, FunctionCost, Latency, Machine, RecoveryTrial, Round, ScriptCall, Throughput,
};
use plan::PIPELINE_DEPTH;
use report::{BEGIN, END, Report, splice};

#[test]
fn fixed_figures_render_as_before() {
    let markdown = sample().markdown();
    let expected = include_str!("engine_bench/report.md");
    if markdown != expected {
        let path =
            std::env::temp_dir().join(format!("engine-bench-report-{}.md", std::process::id()));
        std::fs::write(&path, &markdown).expect("write the rendering");
        panic!(
            "the report renders differently: diff {} tests/engine_bench/report.md (if the change is \
             meant, copy the first over the second)",
            path.display()
        );
    }
}

#[test]
fn the_section_goes_between_the_markers_and_notes_outside_stay() {
    let section = "## Engine benchmark\n\nnew figures\n";
    let block = format!("{BEGIN}\n{section}{END}\n");
    assert_eq!(splice(None, section), format!("# Benchmarks\n\n{block}"));
    let old =
        format!("# Benchmarks\n\nnotes before\n\n{BEGIN}\nold figures\n{END}\n\nnotes after\n");
    assert_eq!(
        splice(Some(&old), section),
        format!("# Benchmarks\n\nnotes before\n\n{block}\nnotes after\n")
    );
    let unmarked = "# Benchmarks\n\nthe maintenance section\n\n";
    assert_eq!(
        splice(Some(unmarked), section),
        format!("# Benchmarks\n\nthe maintenance section\n\n{block}")
    );
}

/// Fixed figures: three rounds, every section filled, one anomaly, a missed target.
fn sample() -> Report {
    let calls = |fcall: u64, blpop: u64, inner: &[(&str, u64)], usec: u64| Calls {
        by_command: [("fcall", fcall), ("blpop", blpop), ("client|setinfo", 8)]
            .iter()
            .chain(inner)
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        usec,
    };
    let throughput = |units: u64, span_ms: u64, cpu: (f64, f64), anomalies: &[&str]| Throughput {
        units,
        span: Duration::from_millis(span_ms),
        wall: Duration::from_millis(span_ms + 412),
        calls: calls(
            units + units / 5,
            units / 40,
            &[
                ("hget", units * 3),
                ("zadd", units * 2),
                ("incr", units),
                ("hset", units * 4),
                ("lpush", units / 2),
                ("zrem", units),
                ("del", 7),
            ],
            units * 31,
        ),
        redis_cpu: cpu.0,
        worker_cpu: cpu.1,
        others_cores: 0.37,
        anomalies: anomalies.iter().map(|a| a.to_string()).collect(),
    };
    let round = |k: u64| Round {
        drover_1: throughput(20_000, 4_100 + 37 * k, (1.9, 2.3), &[]),
        drover_4: throughput(
            20_000,
            3_600 - 11 * k,
            (2.1, 3.9),
            if k == 1 {
                &["tp4w-r1-00017 Failed: [\"done\", \"error\"]"]
            } else {
                &[]
            },
        ),
        apalis: throughput(4_000, 2_950 + 101 * k, (1.2, 1.4), &[]),
        apalis_small: throughput(1_500, 610 + 7 * k, (0.3, 0.35), &[]),
        apalis_lean: throughput(4_000, 1_020 + 13 * k, (0.6, 0.9), &[]),
    };
    let ceiling = [ScriptCall::Fcall, ScriptCall::Evalsha]
        .into_iter()
        .flat_map(|call| {
            [(1, 1), (4, 1), (1, PIPELINE_DEPTH), (4, PIPELINE_DEPTH)]
                .into_iter()
                .map(move |(connections, depth)| CeilingRow {
                    call,
                    connections,
                    depth,
                    per_sec: 12_345.6 * connections as f64 * depth as f64,
                })
        })
        .collect();
    let latency = |label: &'static str, workers: usize, offered: f64, base: u64| Latency {
        label,
        workers,
        offered,
        achieved: offered * 0.98,
        gaps: (0..200).map(|i| base + i / 9).collect(),
        first: (0..50).map(|i| base + 2 + i / 3).collect(),
        others_cores: 0.12,
        anomalies: if workers == 4 {
            vec!["x".into()]
        } else {
            Vec::new()
        },
    };
    Report {
        machine: Machine {
            nproc: "2".into(),
            cpu: "AMD EPYC 7B13".into(),
            redis_version: "7.0.15".into(),
            date: "2026-05-01 10:00 UTC".into(),
            load: "1.02 0.88 0.71".into(),
            revision: "ef1fff2 plus uncommitted changes".into(),
            rustc: "rustc 1.95.0 (abc 2026-04-01)".into(),
            redis_config: String::new(),
        },
        rounds: (0..3).map(round).collect(),
        costs: vec![
            FunctionCost {
                name: "drover_claim".into(),
                calls: 1_234,
                per_step: 0.247,
                mean_us: 21.5,
                p50_us: 19,
                p99_us: 60,
            },
            FunctionCost {
                name: "drover_commit".into(),
                calls: 5_000,
                per_step: 1.0,
                mean_us: 33.25,
                p50_us: 30,
                p99_us: 91,
            },
        ],
        ceiling,
        latencies: vec![
            latency("half the measured peak", 4, 2_700.4, 1),
            latency("half this deployment's peak", 1, 2_400.0, 2),
            latency("a tenth of the 1-worker peak (control)", 1, 480.0, 0),
        ],
        recovery: vec![
            RecoveryTrial {
                kill_after_ms: 600,
                recovery_ms: 1_210,
                victim: "rec-0".into(),
                rescuer: "rec-1".into(),
                outcomes: vec!["lease-expired".into(), "done".into()],
            },
            RecoveryTrial {
                kill_after_ms: 900,
                recovery_ms: 1_388,
                victim: "rec-1".into(),
                rescuer: "rec-r0".into(),
                outcomes: vec!["lease-expired".into(), "done".into()],
            },
            RecoveryTrial {
                kill_after_ms: 1_300,
                recovery_ms: 1_002,
                victim: "rec-r0".into(),
                rescuer: "rec-r1".into(),
                outcomes: vec!["lease-expired".into(), "done".into()],
            },
        ],
        elapsed: Duration::from_millis(81_234),
        load_end: "1.50 1.00 0.80".into(),
        logs: PathBuf::from("/tmp/drover-engine-bench-4242"),
    }
}
