//! The benchmarks are not timed tests; this only checks that they run: `scripts/bench.py
//! reaction` with one sample (alarm -> rollback, polled and with the events queue) and `scale`
//! shrunk to a few services and seconds print their figures and ratios.

mod support;

use std::process::Command;

#[test]
fn the_reaction_benchmark_runs_with_one_sample() {
    let text = bench(&["reaction", "--samples", "1"]);
    assert!(text.contains("alarm to rollback  "), "{text}");
    assert!(text.contains("alarm to rollback, events queue"), "{text}");
    assert!(text.contains("ratio events queue / polling:"), "{text}");
}

#[test]
fn the_scale_benchmark_runs_small() {
    let text = bench(&[
        "scale",
        "--envs",
        "3",
        "--per-env",
        "4",
        "--sync-envs",
        "2",
        "--idle-seconds",
        "2",
        "--sync-seconds",
        "3",
        "--settle",
        "0",
        "--alarm-samples",
        "1",
    ]);
    for line in [
        "   1 services: RSS",
        " 100 services: RSS",
        "polling only",
        "with --events-queue",
        "DescribeServices per 10 services per 5 minutes:",
        "ratio with queue / polling only:",
        "-> every environment InSync",
        "-> every environment Deploying",
        "alarm to rollback under load",
        "peak RSS",
        "(its rollout begun)",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

/// Runs `scripts/bench.py ARGS` on the test build; its output, once it succeeded.
fn bench(args: &[&str]) -> String {
    let _ = support::Sim::start(); // the simulator's virtualenv (boto3) is installed
    let root = support::root();
    let out = Command::new(root.join(".aws-sim/venv/bin/python"))
        .arg(root.join("scripts/bench.py"))
        .args(args)
        .env("ECS_GITOPS_BINARY", env!("CARGO_BIN_EXE_ecs-gitops"))
        .output()
        .expect("run the benchmark");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}
