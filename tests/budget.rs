//! The client-side API budget (`--aws-max-rps`): the daemon never calls a service of an
//! account and region faster than the budget allows, and a busy environment does not hold a
//! small one back.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::world::{World, sha};
use support::{counter_sum, wait_for};

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_keeps_to_its_api_budget_and_a_small_environment_is_not_starved() {
    let w = World::new().await;
    w.cluster("big").await;
    w.cluster("small").await;
    let names: Vec<String> = (0..20).map(|i| format!("svc{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    w.services("big", &refs, "web", &sha(1)).await;
    w.services("small", &["web"], "web", &sha(1)).await;
    w.image("web", &sha(1)).await;
    w.alarm("web-5xx").await;
    let services: Vec<(&str, &str)> = refs.iter().map(|n| (*n, "web")).collect();
    let verify = "verify:\n  alarms: [web-5xx]\n  bake: 1s\n";
    w.commit(
        "big",
        &World::yaml("big", "big", &sha(1), &services, verify),
    );
    w.commit(
        "small",
        &World::yaml("small", "small", &sha(1), &[("web", "web")], verify),
    );
    w.sim.reset_calls();
    let d = w.start(&["--aws-max-rps", "4"]);
    let small_done = wait_for(T, "small adopted", || {
        let e = d.env("small")?;
        (e["phase"] == "InSync").then(|| d.env("big").map(|b| b["phase"] == "InSync"))
    });
    assert_eq!(
        small_done,
        Some(false),
        "the small environment finished while the big one still waited for its turn"
    );
    d.wait_phase("big", "InSync", T);
    // From the simulator's clock: no window holds more ECS calls of the daemon than the burst
    // (8) plus 4 per second.
    let log: Vec<Value> = serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap();
    let at: Vec<f64> = log
        .iter()
        .filter(|c| c["access_key"] == "ecs-gitops-daemon")
        .filter(|c| c["operation"].as_str().unwrap().starts_with("ecs:"))
        .map(|c| c["at"].as_f64().unwrap())
        .collect();
    assert!(at.len() > 30, "enough calls to see the rate: {}", at.len());
    for i in 0..at.len() {
        for j in i + 1..at.len() {
            let allowed = 8.0 + 4.0 * (at[j] - at[i]) + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} calls in {:.2}s (allowed {allowed:.1})",
                j - i + 1,
                at[j] - at[i]
            );
        }
    }
    let m = d.metrics();
    assert!(
        counter_sum(
            &m,
            "ecs_gitops_aws_budget_waits_total",
            &[r#"service="ecs""#]
        ) > 0.0,
        "some calls waited for the budget: {m}"
    );
}

/// Safety goes first: while one environment's rollout fills the budget, another's rollback is
/// not queued behind it. Its writes (the record on every service, then an UpdateService each)
/// are urgent: they go out at once, side by side, with almost none of the busy environment's
/// calls between them; taken one at a time in turn they would alternate with its calls.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_is_not_queued_behind_a_busy_environment() {
    let w = World::new().await;
    w.cluster("busy").await;
    w.cluster("small").await;
    let names: Vec<String> = (0..20).map(|i| format!("svc{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let small = ["a", "b", "c", "d", "e"];
    w.services("busy", &refs, "web", &sha(1)).await;
    w.services("small", &small, "web", &sha(1)).await;
    w.image("web", &sha(1)).await;
    w.image("web", &sha(2)).await;
    w.alarm("busy-5xx").await;
    w.alarm("small-5xx").await;
    let busy: Vec<(&str, &str)> = refs.iter().map(|n| (*n, "web")).collect();
    let small_services: Vec<(&str, &str)> = small.iter().map(|n| (*n, "web")).collect();
    let verify =
        |alarm: &str, bake: &str| format!("verify:\n  alarms: [{alarm}]\n  bake: {bake}\n");
    w.commit(
        "busy",
        &World::yaml("busy", "busy", &sha(1), &busy, &verify("busy-5xx", "1s")),
    );
    w.commit(
        "small",
        &World::yaml(
            "small",
            "small",
            &sha(1),
            &small_services,
            &verify("small-5xx", "1s"),
        ),
    );
    let d = w.start(&["--aws-max-rps", "2"]);
    d.wait_phase("busy", "InSync", T);
    d.wait_phase("small", "InSync", T);
    w.commit(
        "small",
        &World::yaml(
            "small",
            "small",
            &sha(2),
            &small_services,
            &verify("small-5xx", "10m"),
        ),
    );
    d.wait_phase("small", "Baking", T);
    // The busy environment starts a rollout: ~100 calls at 2 a second.
    w.commit(
        "busy",
        &World::yaml("busy", "busy", &sha(2), &busy, &verify("busy-5xx", "1s")),
    );
    let calls = || -> Vec<Value> {
        serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap()
    };
    let write = |c: &Value, cluster: &str| {
        c["cluster"] == cluster
            && matches!(
                c["operation"].as_str(),
                Some("ecs:TagResource" | "ecs:UpdateService" | "ecs:RegisterTaskDefinition")
            )
    };
    wait_for(T, "the busy environment writing", || {
        (calls().iter().filter(|c| write(c, "busy")).count() >= 5).then_some(())
    });
    w.set_alarm("small-5xx", "ALARM").await;
    d.wait_phase("small", "Rejected", T);
    let log = calls();
    // The rollback: small's writes after the alarm was set, up to its last UpdateService.
    let alarm = log
        .iter()
        .rposition(|c| c["operation"] == "cloudwatch:SetAlarmState")
        .expect("the alarm in the call log");
    let first = alarm
        + log[alarm..]
            .iter()
            .position(|c| write(c, "small"))
            .expect("the rollback's writes");
    let last = log
        .iter()
        .rposition(|c| c["cluster"] == "small" && c["operation"] == "ecs:UpdateService")
        .expect("the rollback's UpdateService calls");
    let rollback_writes = log[first..=last]
        .iter()
        .filter(|c| write(c, "small"))
        .count();
    let between = log[first..=last]
        .iter()
        .filter(|c| write(c, "busy"))
        .count();
    assert!(
        rollback_writes >= 10,
        "record on 5 services and 5 updates: {rollback_writes}"
    );
    assert!(
        between <= 2,
        "{between} of the busy environment's writes came between the rollback's {rollback_writes} (queued in turn they alternate)"
    );
}
