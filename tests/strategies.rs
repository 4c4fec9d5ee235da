//! ECS-managed deployment strategies (blue/green, linear, canary) against the simulator: the
//! controller follows ECS' service deployment, bakes only after it is SUCCESSFUL, treats ECS'
//! own rollback as a failed release, and stops ECS' deployment with ROLLBACK when it must roll
//! back while one is in flight.

mod support;

use std::time::Duration;

use aws_sdk_ecs::types::{
    CanaryConfiguration, DeploymentConfiguration, DeploymentLifecycleHook,
    DeploymentLifecycleHookAction, DeploymentLifecycleHookStage, DeploymentLifecycleHookTargetType,
    DeploymentLifecycleHookTimeoutConfiguration, DeploymentStrategy, LinearConfiguration,
};
use serde_json::Value;
use support::world::{Daemon, World, sha};
use support::{counter, wait_for};

const T: Duration = Duration::from_secs(60);

fn blue_green(bake_minutes: i32) -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::BlueGreen)
        .bake_time_in_minutes(bake_minutes)
        .build()
}

fn linear(step_percent: f64, step_bake_minutes: i32) -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::Linear)
        .bake_time_in_minutes(1)
        .linear_configuration(
            LinearConfiguration::builder()
                .step_percent(step_percent)
                .step_bake_time_in_minutes(step_bake_minutes)
                .build(),
        )
        .build()
}

fn canary(percent: f64, bake_minutes: i32) -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::Canary)
        .bake_time_in_minutes(1)
        .canary_configuration(
            CanaryConfiguration::builder()
                .canary_percent(percent)
                .canary_bake_time_in_minutes(bake_minutes)
                .build(),
        )
        .build()
}

/// A world whose ECS stages last 0.3 s, CLEAN_UP (blue gone, deployment not yet SUCCESSFUL)
/// 2.5 s, longer than an in-flight poll, and whose "minute" (bakes, step waits, hook timeouts)
/// lasts 1 s; services (name, strategy) steady on sha(1), images sha(1..=3) pushed, the
/// `web-5xx` alarm OK.
async fn world(services: &[(&str, Option<DeploymentConfiguration>)]) -> (World, Vec<String>) {
    let w = World::new().await;
    w.sim
        .config(r#"{"stage_seconds": 0.3, "minute_seconds": 1.0, "cleanup_seconds": 2.5}"#);
    w.cluster("c").await;
    let names: Vec<&str> = services.iter().map(|(n, _)| *n).collect();
    let tds = w.services("c", &names, "app", &sha(1)).await;
    for (name, config) in services {
        if let Some(c) = config {
            w.strategy("c", name, c.clone()).await;
        }
    }
    for n in 1..=3 {
        w.image("app", &sha(n)).await;
    }
    w.alarm("web-5xx").await;
    (w, tds)
}

fn prod(services: &[&str], release: &str, bake: &str) -> String {
    let mut s = format!(
        "environment: prod\nregion: {}\ncluster: c\nrelease: {release}\nservices:\n",
        support::world::REGION
    );
    for name in services {
        s.push_str(&format!(
            "  {name}:\n    repository: app\n    container: app\n"
        ));
    }
    s.push_str(&format!(
        "verify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 60s\n"
    ));
    s
}

/// Starts the daemon on sha(1) and waits until prod is in sync.
fn start(w: &World, services: &[&str]) -> Daemon {
    w.commit("prod", &prod(services, &sha(1), "1s"));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    d
}

/// The simulator's newest service deployment of `service`.
fn newest_sd(w: &World, service: &str) -> Value {
    w.sim
        .service_deployments()
        .into_iter()
        .rev()
        .find(|d| {
            d["serviceArn"]
                .as_str()
                .is_some_and(|a| a.ends_with(&format!("/c/{service}")))
        })
        .unwrap_or_else(|| panic!("no service deployment of {service}"))
}

fn history_to(e: &Value) -> Vec<String> {
    e["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn service<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_blue_green_linear_and_canary_services_deploy_and_bake_only_after_ecs_says_successful()
 {
    let all = ["web", "bg", "lin", "can"];
    let (w, _) = world(&[
        ("web", None),
        ("bg", Some(blue_green(1))),
        ("lin", Some(linear(50.0, 2))),
        ("can", Some(canary(10.0, 1))),
    ])
    .await;
    let d = start(&w, &all);
    w.commit("prod", &prod(&all, &sha(2), "3s"));
    let mut stages = std::collections::BTreeSet::new();
    let mut strategies = std::collections::BTreeSet::new();
    let mut bake_checked = false;
    wait_for(T, "sha(2) verified", || {
        let e = d.env("prod")?;
        for s in e["services"].as_array().unwrap() {
            strategies.insert(s["strategy"].as_str().unwrap_or_default().to_string());
            if let Some(stage) = s["lifecycle_stage"].as_str() {
                stages.insert(stage.to_string());
            }
        }
        if e["phase"] == "Baking" && !bake_checked {
            // The bake began (to the millisecond, in the record) after every managed service
            // deployment ended SUCCESSFUL.
            let tags = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(w.tags("c", "bg"))
            });
            let since: f64 = tags["ecs-gitops:since"].parse().unwrap();
            for name in ["bg", "lin", "can"] {
                let sd = newest_sd(&w, name);
                assert_eq!(sd["status"], "SUCCESSFUL", "{name} baking early: {sd}");
                let finished = sd["finishedAt"].as_f64().unwrap();
                assert!(
                    finished <= since,
                    "{name}: the bake began at {since}, before ECS finished at {finished}"
                );
            }
            bake_checked = true;
        }
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
    assert!(bake_checked, "the environment was seen Baking");
    assert!(
        stages.contains("PRODUCTION_TRAFFIC_SHIFT"),
        "the status showed ECS' lifecycle stages: {stages:?}"
    );
    for s in ["ROLLING", "BLUE_GREEN", "LINEAR", "CANARY"] {
        assert!(strategies.contains(s), "{s} in {strategies:?}");
    }
    let e = d.env("prod").unwrap();
    for name in all {
        assert!(
            service(&e, name)["service_deployment_status"].is_null(),
            "nothing in flight once verified"
        );
        assert!(
            service(&e, name)["task_definition"]
                .as_str()
                .unwrap()
                .ends_with(":2"),
            "{name} runs the new revision"
        );
    }
    assert_eq!(w.sim.call_count("ecs:StopServiceDeployment"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_rolling_back_a_blue_green_deployment_by_itself_rejects_the_release_and_puts_the_rolling_service_back()
 {
    let (w, tds) = world(&[("web", None), ("api", Some(blue_green(1)))]).await;
    let d = start(&w, &["web", "api"]);
    w.sim
        .ecs_rollback_at("c/api", "PRODUCTION_TRAFFIC_SHIFT", 0.0, "hook");
    w.commit("prod", &prod(&["web", "api"], &sha(2), "1s"));
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_release"], sha(2).as_str());
    assert_eq!(e["rejected_reason"], "ecs_rollback", "{e}");
    let history = history_to(&e);
    assert!(
        !history.iter().any(|h| h == "Baking"),
        "never baked, never verified: {history:?}"
    );
    assert_eq!(e["last_good_release"], sha(1).as_str());
    assert_eq!(w.current_td("c", "web").await, tds[0], "web put back");
    assert_eq!(w.current_td("c", "api").await, tds[1], "ECS put api back");
    assert_eq!(newest_sd(&w, "api")["status"], "ROLLBACK_SUCCESSFUL");
    let m = d.metrics();
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_rollbacks_total{environment="prod",reason="ecs_rollback"}"#
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_during_a_linear_traffic_shift_stops_ecs_deployment_with_rollback_then_every_service_is_written_once()
 {
    let (w, tds) = world(&[("web", None), ("api", Some(linear(50.0, 30)))]).await;
    let d = start(&w, &["web", "api"]);
    w.commit("prod", &prod(&["web", "api"], &sha(2), "1s"));
    wait_for(T, "api at PRODUCTION_TRAFFIC_SHIFT, 50%", || {
        let sd = newest_sd(&w, "api");
        (sd["lifecycleStage"] == "PRODUCTION_TRAFFIC_SHIFT"
            && sd["targetServiceRevision"]["requestedProductionTrafficWeight"] == 50.0)
            .then_some(())
    });
    wait_for(T, "the status shows the traffic shift", || {
        let e = d.env("prod")?;
        (service(&e, "api")["production_traffic_percent"] == 50.0).then_some(())
    });
    w.sim.reset_calls();
    w.set_alarm("web-5xx", "ALARM").await;
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "alarm");
    let calls = w.sim.calls();
    let n = |op: &str| calls.get(op).and_then(Value::as_u64).unwrap_or(0);
    assert_eq!(n("ecs:StopServiceDeployment"), 1, "{calls:?}");
    assert_eq!(
        n("ecs:UpdateService"),
        1,
        "only web is updated; ECS puts api back itself: {calls:?}"
    );
    // The pass that first read the alarm stopped ECS' deployment (no second look needed).
    let log: Vec<Value> = serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap();
    let ops: Vec<&str> = log
        .iter()
        .map(|c| c["operation"].as_str().unwrap())
        .skip_while(|op| *op != "cloudwatch:SetAlarmState")
        .collect();
    let stop = ops
        .iter()
        .position(|op| *op == "ecs:StopServiceDeployment")
        .expect("StopServiceDeployment in the call log");
    let reads = ops[..stop]
        .iter()
        .filter(|op| **op == "cloudwatch:DescribeAlarms")
        .count();
    assert_eq!(reads, 1, "stopped on the first read of the alarm: {ops:?}");
    let sd = newest_sd(&w, "api");
    assert_eq!(sd["status"], "ROLLBACK_SUCCESSFUL", "{sd}");
    assert_eq!(w.current_td("c", "web").await, tds[0]);
    assert_eq!(w.current_td("c", "api").await, tds[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_service_whose_service_deployment_rolled_back_is_rejected_though_its_deployments_look_complete()
 {
    // ECS' own bake on a rolling service: the PRIMARY deployment is COMPLETED with every task
    // running, while the service deployment is still IN_PROGRESS (BAKE_TIME) and then rolled back.
    let bake = DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::Rolling)
        .bake_time_in_minutes(3)
        .build();
    let (w, tds) = world(&[("web", Some(bake))]).await;
    let d = start(&w, &["web"]);
    w.sim.ecs_rollback_at("c/web", "BAKE_TIME", 1.5, "alarm");
    w.commit("prod", &prod(&["web"], &sha(2), "1s"));
    let e = d.wait_phase("prod", "RollingBack", T);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("ROLLBACK_") && msg.contains("(alarms sim-deployment-alarm)"),
        "ECS' rollback and the alarm it named: {msg}"
    );
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "alarm", "ECS named its alarm: {e}");
    let history = history_to(&e);
    assert!(
        !history.iter().any(|h| h == "Baking"),
        "not taken as complete: {history:?}"
    );
    assert_eq!(w.current_td("c", "web").await, tds[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_mid_canary_resumes_following_it_without_a_second_update_service() {
    let (w, _) = world(&[("web", None), ("api", Some(canary(20.0, 6)))]).await;
    let d = start(&w, &["web", "api"]);
    w.commit("prod", &prod(&["web", "api"], &sha(2), "1s"));
    wait_for(T, "api's canary at 20%", || {
        let sd = newest_sd(&w, "api");
        (sd["targetServiceRevision"]["requestedProductionTrafficWeight"] == 20.0).then_some(())
    });
    let updates = w.sim.call_count("ecs:UpdateService");
    d.kill();
    let d = w.start(&[]);
    wait_for(T, "sha(2) verified after the restart", || {
        let e = d.env("prod")?;
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
    assert_eq!(
        w.sim.call_count("ecs:UpdateService"),
        updates,
        "no second UpdateService"
    );
    assert_eq!(w.sim.call_count("ecs:StopServiceDeployment"), 0);
    let e = d.env("prod").unwrap();
    assert!(!history_to(&e).iter().any(|h| h == "RollingBack"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_paused_at_a_lifecycle_hook_shows_its_stage_and_pause_then_continues() {
    let paused = DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::BlueGreen)
        .bake_time_in_minutes(1)
        .lifecycle_hooks(
            DeploymentLifecycleHook::builder()
                .target_type(DeploymentLifecycleHookTargetType::Pause)
                .lifecycle_stages(DeploymentLifecycleHookStage::PostTestTrafficShift)
                .timeout_configuration(
                    DeploymentLifecycleHookTimeoutConfiguration::builder()
                        .timeout_in_minutes(50)
                        .action(DeploymentLifecycleHookAction::Rollback)
                        .build(),
                )
                .build(),
        )
        .build();
    let (w, _) = world(&[("api", Some(paused))]).await;
    let d = start(&w, &["api"]);
    w.commit("prod", &prod(&["api"], &sha(2), "1s"));
    let e = wait_for(T, "the pause in the status", || {
        let e = d.env("prod")?;
        (service(&e, "api")["paused_by_hook"].is_string()
            && e["message"].as_str()?.contains("paused by lifecycle hook"))
        .then_some(e)
    });
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("POST_TEST_TRAFFIC_SHIFT"), "{msg}");
    assert!(
        msg.contains("ECS rolls it back when the hook times out"),
        "{msg}"
    );
    assert!(msg.contains("rolls back at rollout_timeout"), "{msg}");
    assert_eq!(e["phase"], "Deploying");
    let sd = newest_sd(&w, "api");
    let hook = sd["lifecycleHookDetails"][0]["hookId"].as_str().unwrap();
    w.ecs
        .continue_service_deployment()
        .service_deployment_arn(sd["serviceDeploymentArn"].as_str().unwrap())
        .hook_id(hook)
        .action(DeploymentLifecycleHookAction::Continue)
        .send()
        .await
        .unwrap();
    wait_for(T, "sha(2) verified once the hook continued", || {
        let e = d.env("prod")?;
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
}
