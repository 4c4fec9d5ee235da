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
