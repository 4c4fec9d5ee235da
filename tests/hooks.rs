//! Release hooks end to end (real binary, simulator, git): a migration before the deploy,
//! smoke tests and log checks during the bake.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::wait_for;
use support::world::{Daemon, REGION, World, binary, sha};

const T: Duration = Duration::from_secs(30);

fn migrate(timeout: &str) -> String {
    format!(
        "hooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [alembic, upgrade, head]\n      timeout: {timeout}\n"
    )
}

const SMOKE: &str = "  tasks:\n    - name: smoke\n      service: web\n      command: [pytest, -m, smoke]\n      timeout: 20s\n";

fn prod(release: &str, hooks: &str, verify: &str, bake: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &format!(
            "{hooks}verify:\n  alarms: [web-5xx]\n{verify}  bake: {bake}\n  rollout_timeout: 20s\n"
        ),
    )
}

/// prod in sync on sha(1): a Fargate service whose container logs to CloudWatch.
async fn world(hooks: &str, verify: &str, bake: &str) -> (World, String, Daemon) {
    let w = World::new().await;
    w.cluster("c").await;
    let td1 = w.fargate_service("c", "web", "web", &sha(1)).await;
    for n in 1..=3 {
        w.image("web", &sha(n)).await;
    }
    w.alarm("web-5xx").await;
    w.commit("prod", &prod(&sha(1), hooks, verify, bake));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    (w, td1, d)
}

fn verified(d: &Daemon, release: &str) -> Value {
    wait_for(T, "the release verified", || {
        let e = d.env("prod")?;
        (e["phase"] == "InSync" && e["last_good_release"] == release).then_some(e)
    })
}

fn hook_runs(d: &Daemon, hook: &str, kind: &str, result: &str) -> f64 {
    support::counter(
        &d.metrics(),
        &format!(
            r#"ecs_gitops_hook_runs_total{{environment="prod",hook="{hook}",kind="{kind}",result="{result}"}}"#
        ),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Seconds since the epoch of the simulator's call log entry for the first `op`.
fn first_call(w: &World, op: &str) -> Option<f64> {
    let log: Vec<Value> = serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap();
    log.iter()
        .find(|c| c["operation"] == op)
        .and_then(|c| c["at"].as_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_that_exits_0_runs_before_the_deploy_with_the_release_and_the_services_network()
{
    let (w, td1, d) = world(&migrate("30s"), "", "1s").await;
    w.sim
        .task_rule(r#"{"command": "alembic upgrade head", "exit": 0, "seconds": 0.5}"#);
    d.kill();
    w.sim.reset_calls();
    w.commit("prod", &prod(&sha(2), &migrate("30s"), "", "1s"));
    // What `plan` says the next pass does: the hook, before any service.
    let plan = binary(&w.sim.url)
        .args(["plan", "--repo"])
        .arg(w.repo.path())
        .output()
        .unwrap();
    assert!(plan.status.success());
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        plan.contains("action: run pre_deploy hook migrate: `alembic upgrade head`"),
        "{plan}"
    );
    assert!(!plan.contains("update service"), "{plan}");
    assert!(w.sim.tasks().is_empty(), "plan acts on nothing");
    let d = w.start(&[]);
    verified(&d, &sha(2));
    let tasks = w.sim.tasks();
    assert_eq!(tasks.len(), 1, "one migration task: {tasks:?}");
    let t = &tasks[0];
    assert_eq!(
        t["startedBy"],
        format!("ecs-gitops/prod/migrate/{}", &sha(2)[..7])
    );
    assert_eq!(t["containers"][0]["exitCode"], 0);
    let req = &t["request"];
    let (subnets, groups) = w.sim.network(REGION);
    assert_eq!(
        req["networkConfiguration"]["awsvpcConfiguration"]["subnets"],
        serde_json::json!(subnets[..1]),
        "the service's network configuration"
    );
    assert_eq!(
        req["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"],
        serde_json::json!(groups)
    );
    assert_eq!(req["launchType"], "FARGATE");
    assert_eq!(
        req["overrides"]["containerOverrides"][0],
        serde_json::json!({"name": "app", "command": ["alembic", "upgrade", "head"]})
    );
    // The task ran the release's revision, the same one the service was then updated to.
    let td = t["taskDefinitionArn"].as_str().unwrap();
    assert_ne!(td, td1);
    assert_eq!(w.current_td("c", "web").await, td);
    assert!(
        t["containers"][0]["image"]
            .as_str()
            .unwrap()
            .ends_with(&format!("web:{}", sha(2)))
    );
    assert_eq!(
        w.sim.call_count("ecs:RegisterTaskDefinition"),
        1,
        "the revision registered for the hook is reused by the deploy"
    );
    // No service was updated before the migration exited.
    let update = first_call(&w, "ecs:UpdateService").unwrap();
    assert!(
        update >= t["stoppedAt"].as_f64().unwrap(),
        "UpdateService at {update} before the migration stopped at {}",
        t["stoppedAt"]
    );
    assert_eq!(hook_runs(&d, "migrate", "pre_deploy", "succeeded"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_migration_rejects_the_release_without_touching_a_service_until_git_changes() {
    let (w, td1, d) = world(&migrate("30s"), "", "1s").await;
    w.sim.task_rule(&format!(
        r#"{{"tag": "{}", "exit": 3, "seconds": 0.3}}"#,
        sha(2)
    ));
    w.sim.reset_calls();
    w.commit("prod", &prod(&sha(2), &migrate("30s"), "", "1s"));
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "pre_deploy");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("hook migrate exited 3"),
        "{e}"
    );
    let hook = &e["hooks"][0];
    assert_eq!(hook["state"], "failed");
    assert_eq!(hook["exit_code"], 3);
    let id = hook["task_arn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(hook["log_group"], "/ecs/web");
    assert_eq!(hook["log_stream"], format!("ecs/app/{id}"));
    assert!(
        hook["log_url"]
            .as_str()
            .unwrap()
            .contains("console.aws.amazon.com/cloudwatch")
    );
    let passes = e["passes"].as_u64().unwrap();
    wait_for(T, "three more passes", || {
        (d.env("prod")?["passes"].as_u64()? >= passes + 3).then_some(())
    });
    assert_eq!(
        w.sim.call_count("ecs:UpdateService"),
        0,
        "no service touched"
    );
    assert_eq!(
        w.sim.tasks().len(),
        1,
        "the rejected release is not retried"
    );
    assert_eq!(w.current_td("c", "web").await, td1);
    assert!(
        d.log_tail(400).contains("hook migrate exited 3"),
        "the phase change names the hook"
    );
    assert_eq!(hook_runs(&d, "migrate", "pre_deploy", "failed"), 1.0);
    assert_eq!(
        support::counter(
            &d.metrics(),
            r#"ecs_gitops_deployments_total{environment="prod",result="rejected"}"#
        ),
        1.0
    );
    // Git names another release: its migration runs (and passes), and it deploys.
    w.commit("prod", &prod(&sha(3), &migrate("30s"), "", "1s"));
    verified(&d, &sha(3));
    assert_eq!(w.sim.tasks().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_that_hangs_is_stopped_at_its_timeout_and_the_release_rejected() {
    let (w, td1, d) = world(&migrate("2s"), "", "1s").await;
    w.sim
        .task_rule(&format!(r#"{{"tag": "{}", "hang": true}}"#, sha(2)));
    w.sim.reset_calls();
    w.commit("prod", &prod(&sha(2), &migrate("2s"), "", "1s"));
    let e = d.wait_phase("prod", "Rejected", T);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("hook migrate did not finish within 2s"),
        "{e}"
    );
    let tasks = wait_for(T, "the hung task stopped", || {
        let t = w.sim.tasks();
        (t.len() == 1 && t[0]["lastStatus"] == "STOPPED").then_some(t)
    });
    assert_eq!(tasks[0]["stopCode"], "UserInitiated");
    assert!(
        tasks[0]["stoppedReason"]
            .as_str()
            .unwrap()
            .contains("exceeded its timeout of 2s")
    );
    assert_eq!(w.sim.call_count("ecs:StopTask"), 1);
    assert_eq!(w.sim.call_count("ecs:UpdateService"), 0);
    assert_eq!(w.current_td("c", "web").await, td1);
    assert_eq!(hook_runs(&d, "migrate", "pre_deploy", "timed_out"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_while_the_migration_runs_waits_for_it_instead_of_starting_another() {
    let (w, _, d) = world(&migrate("60s"), "", "1s").await;
    w.sim.task_rule(&format!(
        r#"{{"tag": "{}", "exit": 0, "seconds": 4}}"#,
        sha(2)
    ));
    w.commit("prod", &prod(&sha(2), &migrate("60s"), "", "1s"));
    wait_for(T, "the migration running", || {
        let t = w.sim.tasks();
        (t.len() == 1 && t[0]["lastStatus"] == "RUNNING").then_some(())
    });
    d.kill();
    let d = w.start(&[]);
    let e = d.wait_phase("prod", "Deploying", T);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("hook migrate running"),
        "the restarted controller found the task it started: {e}"
    );
    verified(&d, &sha(2));
    assert_eq!(w.sim.tasks().len(), 1, "no second migration");
    assert_eq!(w.sim.call_count("ecs:RunTask"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_smoke_test_in_the_bake_rolls_back() {
    let (w, td1, d) = world("", SMOKE, "5s").await;
    w.sim
        .task_rule(r#"{"command": "pytest -m smoke", "exit": 1, "seconds": 0.5}"#);
    w.commit("prod", &prod(&sha(2), "", SMOKE, "5s"));
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "verify_task");
    assert_eq!(e["hooks"][0]["name"], "smoke");
    assert_eq!(e["hooks"][0]["state"], "failed");
    assert_eq!(w.current_td("c", "web").await, td1, "back on last good");
    assert_eq!(
        support::counter(
            &d.metrics(),
            r#"ecs_gitops_rollbacks_total{environment="prod",reason="verify_task"}"#
        ),
        1.0
    );
    assert_eq!(hook_runs(&d, "smoke", "verify", "failed"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bake_waits_for_a_smoke_test_that_is_still_running_when_the_bake_time_is_up() {
    let (w, _, d) = world("", SMOKE, "1s").await;
    w.sim
        .task_rule(r#"{"command": "pytest -m smoke", "exit": 0, "seconds": 4}"#);
    w.commit("prod", &prod(&sha(2), "", SMOKE, "1s"));
    d.wait_phase("prod", "Baking", T);
    // Until the smoke test has exited, the 1 s bake cannot complete.
    wait_for(T, "the smoke test to stop", || {
        let stopped = w
            .sim
            .tasks()
            .first()
            .is_some_and(|t| t["lastStatus"] == "STOPPED");
        if !stopped {
            let e = d.env("prod").unwrap();
            assert_ne!(
                e["phase"], "InSync",
                "verified while the smoke test ran: {e}"
            );
        }
        stopped.then_some(())
    });
    verified(&d, &sha(2));
    assert_eq!(hook_runs(&d, "smoke", "verify", "succeeded"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_logged_during_the_bake_roll_back_and_errors_from_before_the_rollout_do_not_count() {
    let logs = "  logs:\n    - group: /prod/backend\n      pattern: '\"ERROR\"'\n      max: 0\n";
    let (w, td1, d) = world("", logs, "20s").await;
    let before: Vec<(i64, &str)> = (0..5).map(|i| (now_ms() - 1000 + i, "ERROR old")).collect();
    w.sim.put_logs(REGION, "/prod/backend", &before);
    w.commit("prod", &prod(&sha(2), "", logs, "20s"));
    let e = d.wait_phase("prod", "Baking", T);
    let passes = e["passes"].as_u64().unwrap();
    wait_for(T, "two baking passes with the old errors present", || {
        let e = d.env("prod")?;
        assert_eq!(
            e["phase"], "Baking",
            "errors from before the rollout counted: {e}"
        );
        (e["passes"].as_u64()? >= passes + 2).then_some(())
    });
    let now = now_ms();
    let during: Vec<(i64, &str)> = (0..10)
        .map(|i| (now + i, "ERROR checkout failed"))
        .collect();
    w.sim.put_logs(REGION, "/prod/backend", &during);
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "log_errors");
    let history = e["history"].to_string();
    assert!(history.contains("log_errors"), "{history}");
    let rollback = d.log_tail(400);
    assert!(
        rollback.contains("10 events matching"),
        "only the 10 errors of the bake count: {rollback}"
    );
    assert_eq!(w.current_td("c", "web").await, td1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_log_group_keeps_the_release_baking_and_says_why() {
    let logs = "  logs:\n    - group: /prod/missing\n      pattern: ERROR\n";
    let (w, _, d) = world("", logs, "1s").await;
    w.commit("prod", &prod(&sha(2), "", logs, "1s"));
    let e = wait_for(T, "the reason in the status", || {
        let e = d.env("prod")?;
        (e["phase"] == "Baking"
            && e["message"]
                .as_str()?
                .contains("log group /prod/missing: FilterLogEvents"))
        .then_some(e)
    });
    let passes = e["passes"].as_u64().unwrap();
    wait_for(T, "three more passes", || {
        let e = d.env("prod")?;
        assert_eq!(e["phase"], "Baking", "{e}");
        (e["passes"].as_u64()? >= passes + 3).then_some(())
    });
    // Once the group can be read (and holds no errors), the bake completes.
    w.sim
        .put_logs(REGION, "/prod/missing", &[(now_ms(), "INFO started")]);
    verified(&d, &sha(2));
}
