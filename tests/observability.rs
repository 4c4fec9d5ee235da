//! What operators see: readiness, the JSON logs, the status command, the dashboard's queries.
//! The checks that need promtool, Prometheus or Chromium are in `tools.rs`.

mod support;

use std::process::Command;
use std::time::Duration;

use support::scenario::{prod, rolled_back};
use support::world::{World, sha};
use support::{http, wait_for};

const T: Duration = Duration::from_secs(30);

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_daemon_exports() {
    let text =
        std::fs::read_to_string(support::root().join("deploy/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exported = ecs_gitops::metrics::Metrics::new().names();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if word.starts_with("ecs_gitops_") {
                    let base = word
                        .trim_end_matches("_bucket")
                        .trim_end_matches("_count")
                        .trim_end_matches("_sum");
                    assert!(exported.iter().any(|n| n == base), "{word} is not exported");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_not_ready_before_the_first_pass_and_ready_after() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.commit("prod", &prod(&sha(1), "1s"));
    // Hold the first pass in its first AWS call.
    w.sim.fault(
        r#"{"operation":"ecs:DescribeServices","fault":"latency","latency_ms":3000,"times":1}"#,
    );
    let d = w.start(&[]);
    let (code, body) = http("GET", &format!("{}/readyz", d.url), None);
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        http("GET", &format!("{}/healthz", d.url), None).0,
        200,
        "alive all the same"
    );
    wait_for(T, "ready", || {
        (http("GET", &format!("{}/readyz", d.url), None).0 == 200).then_some(())
    });
    assert_eq!(d.env("prod").unwrap()["phase"], "InSync");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_have_one_line_per_transition_with_fields() {
    let (_w, d) = rolled_back(&["--log-format", "json"]).await;
    let logs = d.logs.lock().unwrap().clone();
    let transitions: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "phase changed")
        .collect();
    let to: Vec<&str> = transitions
        .iter()
        .map(|v| v["fields"]["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        to,
        [
            "InSync",
            "Deploying",
            "Baking",
            "InSync",
            "Deploying",
            "Baking",
            "RollingBack",
            "Rejected"
        ],
        "{logs}"
    );
    let rollback = &transitions[6]["fields"];
    assert_eq!(rollback["environment"], "prod");
    assert_eq!(rollback["reason"], "alarm");
    assert_eq!(rollback["release"], sha(3).as_str());
    assert!(rollback["revision"].as_str().unwrap().len() == 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_command_prints_a_table_and_json() {
    let (_w, d) = rolled_back(&[]).await;
    let run = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ecs-gitops"));
        c.args(["status", "--url", &d.url]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = run(false);
    let line = table
        .lines()
        .find(|l| l.starts_with("prod "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("Rejected") && line.contains(&sha(3)[..7]) && line.contains(&sha(2)[..7]),
        "{line}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(json["environments"][0]["phase"], "Rejected");
    assert_eq!(json["environments"][0]["history"][0]["to"], "Rejected");
    let unreachable = Command::new(env!("CARGO_BIN_EXE_ecs-gitops"))
        .args(["status", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("--url"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_remote_source_keeps_the_state_is_reported_and_makes_readyz_fail() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.commit("prod", &prod(&sha(1), "1s"));
    let url = format!("file://{}", w.repo.path().display());
    let d = w.start_repo(&url, &[]);
    d.wait_phase("prod", "InSync", T);
    wait_for(T, "ready", || {
        (http("GET", &format!("{}/readyz", d.url), None).0 == 200).then_some(())
    });
    let revision = d.status()["source_revision"].clone();
    // The remote goes away: every fetch fails.
    let moved = w.repo.path().with_extension("moved");
    std::fs::rename(w.repo.path(), &moved).unwrap();
    let (code, body) = wait_for(T, "readyz to fail", || {
        let r = http("GET", &format!("{}/readyz", d.url), None);
        (r.0 == 503).then_some(r)
    });
    assert_eq!(code, 503);
    assert!(body.contains("source failing"), "{body}");
    let status = d.status();
    assert!(
        status["source_error"].as_str().unwrap().contains("fetch"),
        "{status}"
    );
    assert_eq!(
        status["source_revision"], revision,
        "the last state is kept"
    );
    assert_eq!(d.env("prod").unwrap()["phase"], "InSync");
    assert!(
        d.metrics()
            .contains(r#"ecs_gitops_git_fetches_total{outcome="error"}"#)
    );
    assert_eq!(
        http("GET", &format!("{}/healthz", d.url), None).0,
        200,
        "still alive"
    );
    // Back: ready again.
    std::fs::rename(&moved, w.repo.path()).unwrap();
    wait_for(T, "ready again", || {
        (http("GET", &format!("{}/readyz", d.url), None).0 == 200).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.commit("prod", &prod(&sha(1), "1s"));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    let logs = d.log_tail(200);
    assert!(logs.contains("phase changed"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape codes in a log that is not a terminal: {logs:?}"
    );
}
