//! The benchmarks are not timed tests; this only checks that they run: `scripts/bench.py
//! reaction` with one sample (alarm -> rollback, polled and with the events queue) prints its
//! figures and ratio.

mod support;

use std::process::Command;

#[test]
fn the_reaction_benchmark_runs_with_one_sample() {
    let _ = support::Sim::start(); // the simulator's virtualenv (boto3) is installed
    let root = support::root();
    let out = Command::new(root.join(".aws-sim/venv/bin/python"))
        .arg(root.join("scripts/bench.py"))
        .args(["reaction", "--samples", "1"])
        .env("ECS_GITOPS_BINARY", env!("CARGO_BIN_EXE_ecs-gitops"))
        .output()
        .expect("run the benchmark");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("alarm to rollback  "), "{text}");
    assert!(text.contains("alarm to rollback, events queue"), "{text}");
    assert!(text.contains("ratio events queue / polling:"), "{text}");
}
