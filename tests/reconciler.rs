//! The reconciler end to end: the real binary, the real AWS SDK over HTTP against the
//! simulator, and a desired-state repository made with the git CLI.

mod support;

use std::time::Duration;

use support::world::{World, image_uri, sha};
use support::{counter, wait_for};

const T: Duration = Duration::from_secs(30);

fn verify(alarms: &[&str], bake: &str) -> String {
    format!(
        "verify:\n  alarms: [{}]\n  bake: {bake}\n  rollout_timeout: 20s\n",
        alarms.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_deploys_and_verifies() {
    let w = World::new().await;
    w.cluster("c").await;
    let old = sha(1);
    let new = sha(2);
    let td1 = w.service("c", "web", "web", &old, false).await;
    w.image("web", &old).await;
    w.image("web", &new).await;
    w.alarm("web-5xx").await;
    w.commit(
        "prod",
        &World::yaml(
            "prod",
            "c",
            &old,
            &[("web", "web")],
            &verify(&["web-5xx"], "2s"),
        ),
    );
    let d = w.start(&[]);
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], old.as_str());

    let rev = w.commit(
        "prod",
        &World::yaml(
            "prod",
            "c",
            &new,
            &[("web", "web")],
            &verify(&["web-5xx"], "2s"),
        ),
    );
    d.wait_phase("prod", "Baking", T);
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], new.as_str());
    assert_eq!(e["running_release"], new.as_str());
    assert_eq!(e["source_revision"], rev.as_str());
    let td2 = w.current_td("c", "web").await;
    assert_ne!(td2, td1);
    let tags = w.tags("c", "web").await;
    assert_eq!(tags["ecs-gitops:last-good-release"], new);
    assert_eq!(tags["ecs-gitops:last-good-task-definition"], td2);
    assert_eq!(tags["ecs-gitops:phase"], "InSync");
    let td = w
        .ecs
        .describe_task_definition()
        .task_definition(&td2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        td.task_definition().unwrap().container_definitions()[0].image(),
        Some(image_uri("web", &new).as_str())
    );
    let history = e["history"].as_array().unwrap();
    let phases: Vec<&str> = history
        .iter()
        .rev()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert!(
        phases.ends_with(&["Deploying", "Baking", "InSync"]),
        "{phases:?}"
    );
    assert!(
        d.metrics()
            .contains(r#"ecs_gitops_environment_phase{environment="prod",phase="InSync"} 1"#)
    );
}

/// The usual world: cluster `c`, service `web` on `sha(1)`, images for `sha(1..=3)`, alarm
/// `web-5xx`, and a committed desired state naming `sha(1)`.
async fn world(breaker: bool, bake: &str) -> (World, String) {
    let w = World::new().await;
    w.cluster("c").await;
    let td1 = w.service("c", "web", "web", &sha(1), breaker).await;
    for n in 1..=3 {
        w.image("web", &sha(n)).await;
    }
    w.alarm("web-5xx").await;
    w.commit("prod", &prod(&sha(1), bake));
    (w, td1)
}

fn prod(release: &str, bake: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &verify(&["web-5xx"], bake),
    )
}

fn writes(w: &World) -> u64 {
    [
        "ecs:RegisterTaskDefinition",
        "ecs:UpdateService",
        "ecs:TagResource",
        "ecs:UntagResource",
    ]
    .iter()
    .map(|op| w.sim.call_count(op))
    .sum()
}

/// Waits until `release` is the verified last good release of `env`.
fn wait_verified(d: &support::world::Daemon, env: &str, release: &str) -> serde_json::Value {
    support::wait_for(T, &format!("{env} to verify {release}"), || {
        let e = d.env(env)?;
        (e["phase"] == "InSync" && e["last_good_release"] == release).then_some(e)
    })
}

/// Waits until the daemon has completed `n` more passes of `env`.
fn passes(d: &support::world::Daemon, env: &str, n: u64) {
    let start = d.env(env).unwrap()["passes"].as_u64().unwrap();
    support::wait_for(T, "more passes", || {
        (d.env(env)?["passes"].as_u64()? >= start + n).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_new_revision_preserves_everything_but_the_image() {
    let w = World::new().await;
    w.cluster("c").await;
    let td1 = w
        .service_with(
            "c",
            "api",
            &[("app", "api", &sha(1)), ("envoy", "envoy", "v1.30.1")],
            2,
            false,
        )
        .await;
    w.image("api", &sha(1)).await;
    w.image("api", &sha(2)).await;
    w.commit(
        "prod",
        &World::yaml(
            "prod",
            "c",
            &sha(1),
            &[("api", "api")],
            "verify:\n  bake: 1s\n",
        ),
    );
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit(
        "prod",
        &World::yaml(
            "prod",
            "c",
            &sha(2),
            &[("api", "api")],
            "verify:\n  bake: 1s\n",
        ),
    );
    wait_verified(&d, "prod", &sha(2));
    let td2 = w.current_td("c", "api").await;
    assert_ne!(td1, td2);
    let describe = |arn: String| {
        let ecs = w.ecs.clone();
        async move {
            ecs.describe_task_definition()
                .task_definition(arn)
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send()
                .await
                .unwrap()
        }
    };
    let (old, new) = (describe(td1).await, describe(td2).await);
    let (o, n) = (
        old.task_definition().unwrap(),
        new.task_definition().unwrap(),
    );
    assert_eq!(o.family(), n.family());
    assert_eq!(o.cpu(), n.cpu());
    assert_eq!(o.memory(), n.memory());
    assert_eq!(o.execution_role_arn(), n.execution_role_arn());
    let (oc, nc) = (o.container_definitions(), n.container_definitions());
    assert_eq!(nc.len(), 2);
    assert_eq!(nc[0].image(), Some(image_uri("api", &sha(2)).as_str()));
    let mut expected = oc[0].clone();
    expected.image = nc[0].image.clone();
    assert_eq!(nc[0], expected, "only the image of `app` changed");
    assert_eq!(nc[1], oc[1], "the sidecar is untouched");
    let tags: Vec<(&str, &str)> = new
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert!(tags.contains(&("team", "payments")), "{tags:?}");
    assert!(
        tags.contains(&("ecs-gitops:release", sha(2).as_str())),
        "{tags:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_blocks_until_it_is_pushed() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    let missing = sha(9);
    w.sim.reset_calls();
    w.commit("prod", &prod(&missing, "1s"));
    let e = d.wait_phase("prod", "Blocked", T);
    let gate = e["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "image")
        .unwrap();
    assert_eq!(gate["passed"], false);
    assert!(e["message"].as_str().unwrap().contains("not in ECR"), "{e}");
    passes(&d, "prod", 2);
    assert_eq!(writes(&w), 0, "a gate that says no writes nothing to ECS");
    assert_eq!(w.current_td("c", "web").await, td1);
    w.image("web", &missing).await;
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], missing.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_already_firing_blocks_the_deploy() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.set_alarm("web-5xx", "ALARM").await;
    w.sim.reset_calls();
    w.commit("prod", &prod(&sha(2), "1s"));
    let e = d.wait_phase("prod", "Blocked", T);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("alarm web-5xx in ALARM"),
        "{e}"
    );
    passes(&d, "prod", 2);
    assert_eq!(writes(&w), 0);
    assert_eq!(w.current_td("c", "web").await, td1);
    assert!(
        counter(
            &d.metrics(),
            r#"ecs_gitops_gate_blocks_total{environment="prod",gate="alarm"}"#
        ) >= 1.0
    );
    let history = d.env("prod").unwrap()["history"].clone();
    let blocked = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["to"] == "Blocked")
        .count();
    assert_eq!(blocked, 1, "one transition, not one per pass: {history}");
    w.set_alarm("web-5xx", "OK").await;
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], sha(2).as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_during_the_bake_rolls_back_and_the_release_is_not_retried() {
    let (w, td1) = world(false, "30s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "30s"));
    d.wait_phase("prod", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_release"], sha(2).as_str());
    assert_eq!(e["rejected_reason"], "alarm");
    assert_eq!(e["last_good_release"], sha(1).as_str());
    assert_eq!(
        w.current_td("c", "web").await,
        td1,
        "back on the recorded last good revision"
    );
    let tags = w.tags("c", "web").await;
    assert_eq!(tags["ecs-gitops:rejected-release"], sha(2));
    assert_eq!(tags["ecs-gitops:rejected-reason"], "alarm");
    let m = d.metrics();
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_rollbacks_total{environment="prod",reason="alarm"}"#
        ),
        1.0
    );
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_deployments_total{environment="prod",result="verified"}"#
        ),
        0.0
    );

    // Not retried while git names it, even once the alarm clears.
    w.set_alarm("web-5xx", "OK").await;
    w.sim.reset_calls();
    passes(&d, "prod", 3);
    assert_eq!(d.env("prod").unwrap()["phase"], "Rejected");
    assert_eq!(
        w.sim.call_count("ecs:UpdateService") + w.sim.call_count("ecs:RegisterTaskDefinition"),
        0
    );

    // A different release deploys.
    w.commit("prod", &prod(&sha(3), "1s"));
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], sha(3).as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_is_rolled_back() {
    let (w, td1) = world(false, "1s").await;
    w.sim.behaviour(&sha(2), "crash", None);
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "1s"));
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "crash_loop");
    assert_eq!(w.current_td("c", "web").await, td1);
    assert_eq!(
        counter(
            &d.metrics(),
            r#"ecs_gitops_rollbacks_total{environment="prod",reason="crash_loop"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ecs_circuit_breaker_rollback_is_rejected_never_success() {
    let (w, td1) = world(true, "1s").await;
    w.sim.config(r#"{"task_fail_seconds": 0.05}"#);
    w.sim.behaviour(&sha(2), "crash", None);
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "1s"));
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "circuit_breaker");
    assert_eq!(e["last_good_release"], sha(1).as_str());
    assert_eq!(w.current_td("c", "web").await, td1);
    let m = d.metrics();
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_deployments_total{environment="prod",result="verified"}"#
        ),
        0.0
    );
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_rollbacks_total{environment="prod",reason="circuit_breaker"}"#
        ),
        1.0
    );
    let to: Vec<&str> = e["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert!(
        !to.contains(&"Baking"),
        "a rolled-back rollout never bakes: {to:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_never_becomes_steady_times_out() {
    let (w, td1) = world(false, "1s").await;
    w.sim.behaviour(&sha(2), "never_stable", None);
    let fast = "verify:\n  alarms: [web-5xx]\n  bake: 1s\n  rollout_timeout: 3s\n";
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit(
        "prod",
        &World::yaml("prod", "c", &sha(2), &[("web", "web")], fast),
    );
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "rollout_timeout");
    assert_eq!(w.current_td("c", "web").await, td1);
}

#[tokio::test(flavor = "multi_thread")]
async fn promotion_waits_for_staging_and_a_hotfix_skips_it() {
    let w = World::new().await;
    for c in ["staging", "prod"] {
        w.cluster(c).await;
        w.service(c, "web", "web", &sha(1), false).await;
    }
    for n in 1..=3 {
        w.image("web", &sha(n)).await;
    }
    let file = |env: &str, rel: &str, extra: &str| {
        World::yaml(
            env,
            env,
            rel,
            &[("web", "web")],
            &format!("{extra}verify:\n  bake: 1s\n"),
        )
    };
    w.commit("staging", &file("staging", &sha(1), ""));
    w.commit("prod", &file("prod", &sha(1), "promote_from: staging\n"));
    let d = w.start(&[]);
    d.wait_phase("staging", "InSync", T);
    d.wait_phase("prod", "InSync", T);

    w.commit("prod", &file("prod", &sha(2), "promote_from: staging\n"));
    let e = d.wait_phase("prod", "Blocked", T);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not verified in staging"),
        "{e}"
    );

    w.commit("staging", &file("staging", &sha(2), ""));
    d.wait_phase("staging", "InSync", T);
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], sha(2).as_str());

    // A hotfix goes to prod without staging having it.
    w.commit(
        "prod",
        &file(
            "prod",
            &sha(3),
            "promote_from: staging\nhotfix: \"INC-7 checkout down\"\n",
        ),
    );
    wait_verified(&d, "prod", &sha(3));
    assert_eq!(
        d.env("staging").unwrap()["last_good_release"],
        sha(2).as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_services_are_rolled_back_together_when_one_fails() {
    let w = World::new().await;
    w.cluster("c").await;
    let tds = w.services("c", &["web", "worker"], "app", &sha(1)).await;
    let (web1, worker1) = (tds[0].clone(), tds[1].clone());
    for n in 1..=3 {
        w.image("app", &sha(n)).await;
    }
    w.sim.behaviour(&sha(3), "crash", None);
    let file = |rel: &str, worker: Option<&str>| {
        let mut s = World::yaml(
            "prod",
            "c",
            rel,
            &[("web", "app"), ("worker", "app")],
            "verify:\n  bake: 5s\n",
        );
        if let Some(r) = worker {
            s = s.replacen(
                "  worker:\n    repository: app\n",
                &format!("  worker:\n    repository: app\n    release: {r}\n"),
                1,
            );
        }
        s
    };
    w.commit("prod", &file(&sha(1), None));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    // web gets a healthy release, worker one that crash-loops.
    w.commit("prod", &file(&sha(2), Some(&sha(3))));
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "crash_loop");
    assert_eq!(
        w.current_td("c", "web").await,
        web1,
        "the healthy service went back too"
    );
    assert_eq!(w.current_td("c", "worker").await, worker1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_commit_supersedes_an_in_flight_rollout() {
    let (w, _) = world(false, "1s").await;
    w.sim.behaviour(&sha(2), "slow", Some(30.0));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "1s"));
    d.wait_phase("prod", "Deploying", T);
    w.commit("prod", &prod(&sha(3), "1s"));
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], sha(3).as_str());
    let reasons: Vec<&str> = e["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"superseded"), "{reasons:?}");
    assert_eq!(
        counter(
            &d.metrics(),
            r#"ecs_gitops_deployments_total{environment="prod",result="superseded"}"#
        ),
        1.0
    );
    let tags = w.tags("c", "web").await;
    assert!(
        !tags["ecs-gitops:verified-releases"].contains(&sha(2)),
        "the superseded release was never verified"
    );
}

async fn hand_update(w: &World) -> String {
    let td = support::world::register(&w.ecs, "web", &image_uri("web", "hand-built")).await;
    w.ecs
        .update_service()
        .cluster("c")
        .service("web")
        .task_definition(&td)
        .send()
        .await
        .unwrap();
    td
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_corrected() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    let hand = hand_update(&w).await;
    assert_ne!(hand, td1);
    support::wait_for(T, "the drift to be corrected", || {
        let e = d.env("prod")?;
        let seen = e["history"]
            .as_array()?
            .iter()
            .any(|h| h["to"] == "Drifted");
        (seen && e["phase"] == "InSync").then_some(())
    });
    assert_eq!(w.current_td("c", "web").await, td1);
    assert_eq!(
        counter(
            &d.metrics(),
            r#"ecs_gitops_drift_corrections_total{environment="prod"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_only_reported_with_drift_report() {
    let (w, _) = world(false, "1s").await;
    w.commit("prod", &format!("{}drift: report\n", prod(&sha(1), "1s")));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    let hand = hand_update(&w).await;
    let e = d.wait_phase("prod", "Drifted", T);
    assert!(
        e["message"].as_str().unwrap().contains("not correcting"),
        "{e}"
    );
    passes(&d, "prod", 3);
    assert_eq!(d.env("prod").unwrap()["phase"], "Drifted");
    assert_eq!(
        w.current_td("c", "web").await,
        hand,
        "left as the human set it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_bake_finishes_the_same_bake_without_redeploying() {
    let (w, _) = world(false, "8s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "8s"));
    d.wait_phase("prod", "Baking", T);
    let since = w.tags("c", "web").await["ecs-gitops:since"].clone();
    d.kill();
    w.sim.reset_calls();
    let d = w.start(&[]);
    // The restarted controller resumes the bake where it was: same start, same target.
    let e = d.wait_phase("prod", "Baking", T);
    assert_eq!(
        w.tags("c", "web").await["ecs-gitops:since"],
        since,
        "the bake was not restarted"
    );
    assert!(
        e["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["to"] != "Deploying")
    );
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], sha(2).as_str());
    assert_eq!(
        w.sim.call_count("ecs:UpdateService"),
        0,
        "no second UpdateService"
    );
    assert_eq!(w.sim.call_count("ecs:RegisterTaskDefinition"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_rollout_keeps_waiting_for_it() {
    let (w, _) = world(false, "1s").await;
    w.sim.behaviour(&sha(2), "slow", Some(6.0));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "1s"));
    support::wait_for_async(T, "the target revision to be recorded", || async {
        w.tags("c", "web")
            .await
            .contains_key("ecs-gitops:target-task-definition")
            .then_some(())
    })
    .await;
    d.kill();
    w.sim.reset_calls();
    let d = w.start(&[]);
    let e = d.wait_phase("prod", "InSync", T);
    assert_eq!(e["last_good_release"], sha(2).as_str());
    assert_eq!(
        w.sim.call_count("ecs:UpdateService"),
        0,
        "the rollout in flight was not restarted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_commit_changes_nothing_and_a_fix_deploys() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.sim.reset_calls();
    let bad = prod(&sha(2), "1s").replace("bake: 1s", "bake: soon");
    let rev = w.commit("prod", &bad);
    let e = support::wait_for(T, "the invalid file to be reported", || {
        let e = d.env("prod")?;
        (!e["file_problems"].as_array()?.is_empty()).then_some(e)
    });
    assert!(
        e["file_problems"][0]
            .as_str()
            .unwrap()
            .contains("desired-state/prod.yaml:11:9"),
        "{e}"
    );
    assert_eq!(d.status()["source_revision"], rev.as_str());
    passes(&d, "prod", 2);
    let e = d.env("prod").unwrap();
    assert_eq!(e["phase"], "InSync");
    assert_eq!(
        e["desired_release"],
        sha(1).as_str(),
        "the last valid desired state is kept"
    );
    assert_eq!(writes(&w), 0);
    assert_eq!(w.current_td("c", "web").await, td1);
    w.commit("prod", &prod(&sha(2), "1s"));
    let e = wait_verified(&d, "prod", &sha(2));
    assert!(e["file_problems"].as_array().unwrap().is_empty(), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_state_makes_no_write_calls_and_batches_describes() {
    let w = World::new().await;
    w.cluster("c").await;
    let names: Vec<String> = (0..12).map(|i| format!("svc{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    w.services("c", &refs, "app", &sha(1)).await;
    w.image("app", &sha(1)).await;
    let services: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "app")).collect();
    w.commit(
        "prod",
        &World::yaml("prod", "c", &sha(1), &services, "verify:\n  bake: 1s\n"),
    );
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    passes(&d, "prod", 1);
    w.sim.reset_calls();
    let before = d.env("prod").unwrap()["passes"].as_u64().unwrap();
    passes(&d, "prod", 5);
    let calls = w.sim.calls();
    let after = d.env("prod").unwrap()["passes"].as_u64().unwrap();
    assert_eq!(writes(&w), 0, "in sync means no writes: {calls:?}");
    let describes = w.sim.call_count("ecs:DescribeServices");
    // 12 services are 2 DescribeServices calls per pass (10 per call), nothing else.
    assert!(
        describes >= 2 * (after - before - 1) && describes <= 2 * (after - before + 1),
        "{describes} describes for {} passes",
        after - before
    );
    assert_eq!(describes % 2, 0, "{calls:?}");
    // The watcher must not wake the source on the source's own git reads.
    let unchanged = counter(
        &d.metrics(),
        r#"ecs_gitops_git_fetches_total{outcome="unchanged"}"#,
    );
    assert!(
        unchanged < 40.0,
        "{unchanged} reads of an unchanged repository in a few seconds"
    );
    let others: Vec<&String> = calls
        .keys()
        .filter(|k| *k != "ecs:DescribeServices")
        .collect();
    assert!(
        others.is_empty(),
        "only DescribeServices in steady state: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_health_check_during_the_bake_rolls_back() {
    let health = support::world::HealthServer::start(200);
    let (w, td1) = world(false, "30s").await;
    let extra = format!(
        "verify:\n  alarms: [web-5xx]\n  health:\n    - url: {}/health\n  bake: 30s\n  rollout_timeout: 20s\n",
        health.url
    );
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit(
        "prod",
        &World::yaml("prod", "c", &sha(2), &[("web", "web")], &extra),
    );
    d.wait_phase("prod", "Baking", T);
    health.set(503);
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "health");
    assert_eq!(w.current_td("c", "web").await, td1);
    assert!(health.hits() >= 1, "the health URL was really requested");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_environment_never_stalls_another() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    let other = "eu-west-1";
    let ecs2 = w.ecs_in(other).await;
    ecs2.create_cluster()
        .cluster_name("c2")
        .send()
        .await
        .unwrap();
    let image = format!("123456789012.dkr.ecr.{other}.amazonaws.com/api:{}", sha(1));
    let td = support::world::register(&ecs2, "api", &image).await;
    ecs2.create_service()
        .cluster("c2")
        .service_name("api")
        .task_definition(&td)
        .desired_count(1)
        .send()
        .await
        .unwrap();
    let ecr2 = aws_sdk_ecr::Client::new(&support::sdk_config(&w.sim.url, other).await);
    ecr2.create_repository()
        .repository_name("api")
        .send()
        .await
        .unwrap();
    for n in [1, 2] {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:{0}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1,"digest":"sha256:{0}"}}]}}"#,
            "c".repeat(64)
        );
        ecr2.put_image()
            .repository_name("api")
            .image_tag(sha(n))
            .image_manifest(manifest)
            .send()
            .await
            .unwrap();
    }
    w.commit(
        "broken",
        &World::yaml(
            "broken",
            "c",
            &sha(1),
            &[("web", "web")],
            "verify:\n  bake: 1s\n",
        ),
    );
    let eu = World::yaml(
        "eu",
        "c2",
        &sha(1),
        &[("api", "api")],
        "verify:\n  bake: 1s\n",
    )
    .replace("region: me-south-1", &format!("region: {other}"));
    w.commit("eu", &eu);
    // Every ECS call for the broken environment's region fails.
    w.sim
        .fault(r#"{"operation":"ecs:*","fault":"http500","region":"me-south-1"}"#);
    let d = w.start(&[]);
    d.wait_phase("eu", "InSync", T);
    w.commit("eu", &eu.replace(&sha(1), &sha(2)));
    let e = wait_verified(&d, "eu", &sha(2));
    // Its own passes keep failing (each after retries with backoff), and are reported.
    let broken = wait_for(T, "the broken environment's error", || {
        let b = d.env("broken")?;
        b["error"].as_str()?.contains("server_error").then_some(b)
    });
    assert_ne!(broken["phase"], "InSync", "{broken}");
    assert!(
        counter(
            &d.metrics(),
            r#"ecs_gitops_reconcile_errors_total{environment="broken",kind="server_error"}"#
        ) >= 1.0
    );
    assert!(e["error"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_aws_errors_are_retried_and_the_rollout_still_completes() {
    let (w, _) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.sim
        .fault(r#"{"operation":"ecs:*","fault":"throttle","rate":0.3,"seed":11}"#);
    w.commit("prod", &prod(&sha(2), "1s"));
    wait_verified(&d, "prod", &sha(2));
    assert!(d.metrics().contains(r#"outcome="throttled""#));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_what_the_next_pass_would_do_without_doing_it() {
    let (w, td1) = world(false, "1s").await;
    w.commit("prod", &prod(&sha(2), "1s"));
    w.sim.reset_calls();
    let out = support::world::binary(&w.sim.url)
        .args(["plan", "--repo"])
        .arg(w.repo.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("environment prod"), "{text}");
    assert!(text.contains("-> Deploying"), "{text}");
    assert!(text.contains("gate image     pass"), "{text}");
    assert!(text.contains("gate alarm     pass"), "{text}");
    assert!(
        text.contains(&format!("with image {}", image_uri("web", &sha(2)))),
        "{text}"
    );
    assert_eq!(writes(&w), 0, "plan never acts");
    assert_eq!(w.current_td("c", "web").await, td1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_cannot_be_read_blocks_writes_nothing_and_adopts_nothing() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    d.kill();
    // A phase written by a newer version of the controller.
    let arn = w
        .describe("c", "web")
        .await
        .service_arn()
        .unwrap()
        .to_string();
    w.ecs
        .tag_resource()
        .resource_arn(&arn)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key("ecs-gitops:phase")
                .value("Paused")
                .build(),
        )
        .send()
        .await
        .unwrap();
    w.commit("prod", &prod(&sha(2), "1s"));
    w.sim.reset_calls();
    let d = w.start(&[]);
    let e = d.wait_phase("prod", "Blocked", T);
    let gate = &e["gates"][0];
    assert_eq!(gate["name"], "record_unreadable");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("tag ecs-gitops:phase = \"Paused\""),
        "{e}"
    );
    assert!(e["last_good_release"].is_null(), "nothing adopted: {e}");
    passes(&d, "prod", 3);
    assert_eq!(
        writes(&w),
        0,
        "nothing is written over a record it cannot read"
    );
    assert_eq!(w.current_td("c", "web").await, td1);
    assert_eq!(w.tags("c", "web").await["ecs-gitops:phase"], "Paused");
    assert!(
        counter(
            &d.metrics(),
            r#"ecs_gitops_gate_blocks_total{environment="prod",gate="record_unreadable"}"#
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_rollout_exits_within_seconds_and_the_next_start_resumes_it() {
    let (w, _) = world(false, "1s").await;
    w.sim.behaviour(&sha(2), "slow", Some(4.0));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.sim.reset_calls();
    w.commit("prod", &prod(&sha(2), "1s"));
    d.wait_phase("prod", "Deploying", T);
    let took = d
        .terminate(Duration::from_secs(10))
        .expect("the daemon exits within 10 s of SIGTERM");
    assert!(took < Duration::from_secs(10));
    let tags = w.tags("c", "web").await;
    assert_eq!(tags["ecs-gitops:phase"], "Deploying", "a resumable record");
    let d = w.start(&[]);
    let e = wait_verified(&d, "prod", &sha(2));
    assert!(
        e["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["to"] != "Deploying"),
        "resumed, not started again: {e}"
    );
    assert_eq!(
        w.sim.call_count("ecs:UpdateService"),
        1,
        "one UpdateService"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_freeze_window_covering_now_blocks_a_release_and_lets_a_hotfix_through() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    // A window from an hour ago to two hours ahead (UTC), whatever the time of day.
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600)
        % 24;
    let freeze = format!(
        "freeze:\n  - from: \"{:02}:00\"\n    to: \"{:02}:00\"\n",
        (hour + 23) % 24,
        (hour + 2) % 24
    );
    w.sim.reset_calls();
    w.commit("prod", &format!("{}{freeze}", prod(&sha(2), "1s")));
    let e = d.wait_phase("prod", "Blocked", T);
    let gate = e["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "freeze")
        .cloned()
        .unwrap();
    assert_eq!(gate["passed"], false);
    assert!(
        gate["detail"].as_str().unwrap().starts_with("frozen until"),
        "{gate}"
    );
    passes(&d, "prod", 2);
    assert_eq!(writes(&w), 0, "nothing deployed in a freeze");
    assert_eq!(w.current_td("c", "web").await, td1);
    // The same release as a hotfix goes through.
    w.commit(
        "prod",
        &format!(
            "{}{freeze}hotfix: \"INC-42 checkout down\"\n",
            prod(&sha(2), "1s")
        ),
    );
    let e = wait_verified(&d, "prod", &sha(2));
    assert!(e["history"].to_string().contains("new_release"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_writes_nothing_reports_drift_and_resumes_when_the_key_goes() {
    let (w, td1) = world(false, "1s").await;
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &format!("{}suspend: true\n", prod(&sha(2), "1s")));
    d.wait_phase("prod", "Suspended", T);
    // Someone changes the service by hand while the environment is suspended.
    let other = hand_update(&w).await;
    let e = wait_for(T, "the drift reported", || {
        let e = d.env("prod")?;
        e["message"]
            .as_str()?
            .contains("drift seen: web")
            .then_some(e)
    });
    assert_eq!(e["phase"], "Suspended");
    w.sim.reset_calls();
    passes(&d, "prod", 3);
    assert_eq!(
        writes(&w),
        0,
        "nothing written while suspended, not even the record: {:?}",
        w.sim.calls()
    );
    assert_eq!(
        w.current_td("c", "web").await,
        other,
        "the drift is left as it is"
    );
    assert!(
        w.sim.call_count("ecs:DescribeServices") > 0,
        "still observed"
    );
    // The key goes away: the environment resumes from its record and deploys sha(2).
    w.commit("prod", &prod(&sha(2), "1s"));
    wait_verified(&d, "prod", &sha(2));
    assert_ne!(w.current_td("c", "web").await, td1);
}
