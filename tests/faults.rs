//! The fault matrix: every AWS operation the controller calls, in the phase where it calls it,
//! under every fault the simulator injects (500, 503, throttling, +3 s latency, a dropped
//! connection), injected for a while and then gone. For each cell: no wrong decision (never
//! verified while the faulted read was failing, never rolled back because a call failed,
//! never a lost or rewound record, one deployment per target), converged once the fault
//! cleared, and the failures counted in `ecs_gitops_aws_requests_total`.
//!
//! Each cell gets its own simulator (forked, so cheap) and daemon; cells run 8 at a time. The
//! test prints the table; the README keeps it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::world::{Daemon, REGION, World, sha};

const T: Duration = Duration::from_secs(40);
const PARALLEL: usize = 8;
const BAKE_MS: u64 = 2000;
const FAULTS: [&str; 5] = ["http500", "http503", "throttle", "latency", "drop"];

/// When in the release the fault is switched on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Before the daemon starts: the first pass reads what runs (revisions are then cached).
    Startup,
    /// Before the commit: gates, pre-deploy hook, deploy.
    Deploy,
    /// Once the release is Baking.
    Bake,
    /// Once a bad release is Baking; its alarm then fires: the rollback's calls.
    Rollback,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Startup => "first pass",
            Phase::Deploy => "gates+deploy",
            Phase::Bake => "bake",
            Phase::Rollback => "rollback",
        }
    }
}

const CELLS: [(&str, Phase); 16] = [
    ("ecs:DescribeServices", Phase::Deploy),
    ("ecr:DescribeImages", Phase::Deploy),
    ("cloudwatch:DescribeAlarms", Phase::Deploy),
    ("ecs:DescribeTaskDefinition", Phase::Startup),
    ("ecs:ListTaskDefinitions", Phase::Deploy),
    ("ecs:RegisterTaskDefinition", Phase::Deploy),
    ("ecs:UpdateService", Phase::Deploy),
    ("ecs:TagResource", Phase::Deploy),
    ("ecs:RunTask", Phase::Deploy),
    ("ecs:ListTasks", Phase::Deploy),
    ("ecs:DescribeServices", Phase::Bake),
    ("cloudwatch:DescribeAlarms", Phase::Bake),
    ("ecs:DescribeTasks", Phase::Bake),
    ("logs:FilterLogEvents", Phase::Bake),
    ("ecs:UpdateService", Phase::Rollback),
    ("ecs:TagResource", Phase::Rollback),
];

fn prod(release: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &format!(
            "hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [migrate]\n      timeout: 60s\nverify:\n  alarms: [web-5xx]\n  tasks:\n    - name: smoke\n      service: web\n      command: [smoke]\n      timeout: 60s\n  logs:\n    - group: /prod/backend\n      pattern: ERROR\n  bake: {}s\n  rollout_timeout: 30s\n",
            BAKE_MS / 1000
        ),
    )
}

fn since_ms(tags: &BTreeMap<String, String>) -> u64 {
    let s = &tags["ecs-gitops:since"];
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    secs.parse::<u64>().unwrap() * 1000 + format!("{frac:0<3}")[..3].parse::<u64>().unwrap()
}

fn class(fault: &str) -> Option<&'static str> {
    match fault {
        "http500" | "http503" => Some("server_error"),
        "throttle" => Some("throttled"),
        "drop" => Some("network_error"),
        _ => None, // latency: slow, not failed
    }
}

fn counted(d: &Daemon, op: &str, class: &str) -> f64 {
    let (service, operation) = op.split_once(':').unwrap();
    support::counter_sum(
        &d.metrics(),
        "ecs_gitops_aws_requests_total",
        &[
            &format!(r#"service="{service}""#),
            &format!(r#"operation="{operation}""#),
            &format!(r#"outcome="{class}""#),
        ],
    )
}

/// One cell; `Err` says what went wrong.
fn cell(op: &'static str, phase: Phase, fault: &'static str) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w = rt.block_on(async {
        let w = World::new().await;
        w.cluster("c").await;
        w.fargate_service("c", "web", "web", &sha(1)).await;
        for n in 1..=3 {
            w.image("web", &sha(n)).await;
        }
        w.alarm("web-5xx").await;
        w
    });
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    w.sim
        .put_logs(REGION, "/prod/backend", &[(now_ms(), "INFO up")]);
    let td1 = rt.block_on(w.current_td("c", "web"));
    w.commit("prod", &prod(&sha(1)));
    let bad = phase == Phase::Rollback;
    let release = if bad { sha(3) } else { sha(2) };
    let spec = if fault == "latency" {
        format!(
            r#"{{"operation": "{op}", "fault": "latency", "latency_ms": 3000, "times": 2, "access_key": "ecs-gitops-daemon"}}"#
        )
    } else {
        format!(
            r#"{{"operation": "{op}", "fault": "{fault}", "times": 6, "access_key": "ecs-gitops-daemon"}}"#
        )
    };
    if phase == Phase::Startup {
        w.sim.fault(&spec);
    }
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    if phase == Phase::Deploy {
        w.sim.fault(&spec);
    }
    let started = Instant::now();
    w.commit("prod", &prod(&release));
    let mut baking_since = None;
    let mut armed = matches!(phase, Phase::Startup | Phase::Deploy);
    let deadline = Instant::now() + T;
    let end = loop {
        let tags = rt.block_on(w.tags("c", "web"));
        match tags.get("ecs-gitops:last-good-release").map(String::as_str) {
            Some(g) if g == sha(1) || (!bad && g == release) => {}
            other => return Err(format!("last good became {other:?}")),
        }
        if tags.contains_key("ecs-gitops:rejected-release") && !bad {
            return Err(format!("rolled back: {tags:?}"));
        }
        let phase_now = tags
            .get("ecs-gitops:phase")
            .map(String::as_str)
            .unwrap_or("");
        if phase_now == "Baking" && baking_since.is_none() {
            baking_since = Some(since_ms(&tags));
            if !armed {
                w.sim.fault(&spec);
                armed = true;
                if bad {
                    rt.block_on(w.set_alarm("web-5xx", "ALARM"));
                }
            }
        }
        let done = if bad {
            phase_now == "Rejected"
        } else {
            phase_now == "InSync" && tags["ecs-gitops:last-good-release"] == release
        };
        if done {
            break tags;
        }
        if Instant::now() > deadline {
            return Err(format!("did not converge: {tags:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let log: Vec<Value> = serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap();
    let injected = log
        .iter()
        .filter(|c| c["operation"] == op && !c["fault"].is_null())
        .count();
    if injected == 0 {
        return Err("the fault never fired (the operation was not called)".into());
    }
    // One deployment per target: the release's, and for a bad release the rollback's.
    let events: Vec<String> = rt.block_on(async {
        w.describe("c", "web")
            .await
            .events()
            .iter()
            .filter_map(|e| e.message().map(str::to_string))
            .collect()
    });
    let starts = events.iter().filter(|m| m.contains("has started")).count();
    let want = if bad { 3 } else { 2 };
    if starts != want {
        return Err(format!(
            "{starts} deployments started (want {want}, counting the service's first): {events:?}"
        ));
    }
    let current = rt.block_on(w.current_td("c", "web"));
    if bad {
        if end.get("ecs-gitops:rejected-reason").map(String::as_str) != Some("alarm") {
            return Err(format!("rejected for another reason: {end:?}"));
        }
        if current != td1 {
            return Err("not back on last good".into());
        }
    } else {
        let b = baking_since.ok_or("no bake seen")?;
        let v = since_ms(&end);
        if v < b + BAKE_MS {
            return Err(format!("verified after {} ms of bake", v - b));
        }
        // Verified only once the faulted read answered again.
        let last_fault = log
            .iter()
            .filter(|c| c["operation"] == op && !c["fault"].is_null())
            .filter_map(|c| c["at"].as_f64())
            .fold(0.0, f64::max);
        if phase == Phase::Bake && (v as f64) / 1000.0 < last_fault {
            let calls: Vec<String> = log
                .iter()
                .filter(|c| c["operation"] == op)
                .map(|c| {
                    format!(
                        "{:.3}{}",
                        c["at"].as_f64().unwrap_or(0.0),
                        if c["fault"].is_null() { "" } else { "*" }
                    )
                })
                .collect();
            return Err(format!(
                "verified at {v} ms (bake from {b}) while {op} was still failing (last fault at {last_fault}); calls {calls:?}"
            ));
        }
        if current == td1 {
            return Err("the release does not run".into());
        }
    }
    if let Some(class) = class(fault) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let n = loop {
            let n = counted(&d, op, class);
            if n >= 1.0 {
                break n;
            }
            if Instant::now() > deadline {
                let (_, operation) = op.split_once(':').unwrap();
                let lines: Vec<String> = d
                    .metrics()
                    .lines()
                    .filter(|l| l.contains(operation))
                    .map(str::to_string)
                    .collect();
                return Err(format!(
                    "{injected} faults not counted as {class}: {lines:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(format!(
            "converged in {:.1}s, {injected} faulted calls, {n} counted as {class}",
            took.as_secs_f64()
        ))
    } else {
        Ok(format!(
            "converged in {:.1}s, {injected} slow calls",
            took.as_secs_f64()
        ))
    }
}

#[test]
fn every_operation_in_its_phase_survives_every_fault_and_converges() {
    let mut work: Vec<(&'static str, Phase, &'static str)> = Vec::new();
    for (op, phase) in CELLS {
        for fault in FAULTS {
            work.push((op, phase, fault));
        }
    }
    let only = std::env::var("FAULT_CELLS").ok();
    if let Some(only) = &only {
        work.retain(|(op, _, f)| only.split(',').any(|x| x == *op || x == *f));
    }
    let mut rows = Vec::new();
    for chunk in work.chunks(PARALLEL) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&(op, phase, fault)| {
                (
                    (op, phase, fault),
                    std::thread::spawn(move || {
                        std::panic::catch_unwind(|| cell(op, phase, fault)).unwrap_or_else(|p| {
                            let m = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(format!("panicked: {m}"))
                        })
                    }),
                )
            })
            .collect();
        for (key, h) in handles {
            rows.push((key, h.join().unwrap_or_else(|_| Err("panicked".into()))));
        }
    }
    println!("| operation | phase | fault | result |\n|---|---|---|---|");
    for ((op, phase, fault), r) in &rows {
        let text = match r {
            Ok(s) => format!("ok: {s}"),
            Err(e) => format!("FAILED: {e}"),
        };
        println!("| {op} | {} | {fault} | {text} |", phase.as_str());
    }
    let failed: Vec<_> = rows.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} cells failed: {failed:?}",
        failed.len(),
        rows.len()
    );
}
