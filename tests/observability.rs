//! What operators see, checked with the real tools: `promtool`, a Prometheus server scraping
//! the daemon on loopback, headless Chromium rendering the status page, and the JSON logs.
//! The tools come from Debian's packages (`scripts/install-test-tools`).

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::world::{Daemon, World, sha};
use support::{http, wait_for};

const T: Duration = Duration::from_secs(30);

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed; run scripts/install-test-tools (Debian packages prometheus and chromium)"
    );
}

fn prod(release: &str, bake: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &format!("verify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 20s\n"),
    )
}

/// prod deploys sha(2) and verifies it, then sha(3) is rolled back on its alarm.
async fn rolled_back(extra: &[&str]) -> (World, Daemon) {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    for n in 1..=3 {
        w.image("web", &sha(n)).await;
    }
    w.alarm("web-5xx").await;
    w.commit("prod", &prod(&sha(1), "1s"));
    let d = w.start(extra);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "1s"));
    wait_for(T, "sha(2) verified", || {
        let e = d.env("prod")?;
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
    w.commit("prod", &prod(&sha(3), "30s"));
    d.wait_phase("prod", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    d.wait_phase("prod", "Rejected", T);
    (w, d)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_label_values_stay_bounded() {
    let (_w, d) = rolled_back(&[]).await;
    let metrics = d.metrics();
    let mut check = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );

    for name in [
        "ecs_gitops_environment_phase",
        "ecs_gitops_desired_release_info",
        "ecs_gitops_running_release_info",
        "ecs_gitops_last_good_release_info",
        "ecs_gitops_deployments_total",
        "ecs_gitops_rollbacks_total",
        "ecs_gitops_gate_blocks_total",
        "ecs_gitops_drift_corrections_total",
        "ecs_gitops_reconcile_duration_seconds_bucket",
        "ecs_gitops_reconcile_errors_total",
        "ecs_gitops_aws_requests_total",
        "ecs_gitops_git_fetches_total",
        "ecs_gitops_last_pass_age_seconds",
        "ecs_gitops_commit_to_verified_seconds_bucket",
    ] {
        // Counters that never moved in this scenario are still declared.
        assert!(
            metrics.contains(&format!("# TYPE {}", name.trim_end_matches("_bucket")))
                || metrics.contains(name),
            "{name} missing"
        );
    }
    assert!(metrics.contains(&format!(
        r#"ecs_gitops_last_good_release_info{{environment="prod",release="{}"}} 1"#,
        sha(2)
    )));
    assert!(metrics.contains(&format!(
        r#"ecs_gitops_desired_release_info{{environment="prod",release="{}"}} 1"#,
        sha(3)
    )));
    assert!(
        !metrics.contains(&format!(
            r#"ecs_gitops_desired_release_info{{environment="prod",release="{}"}}"#,
            sha(2)
        )),
        "the old desired release series is removed"
    );
    assert!(
        metrics.contains(r#"ecs_gitops_commit_to_verified_seconds_count{environment="prod"} 1"#),
        "{metrics}"
    );
    // No SHA and no free text in a label outside the _info metrics.
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (series, _) = line.rsplit_once(' ').unwrap();
        if series.split('{').next().unwrap().ends_with("_info") {
            continue;
        }
        let labels = series.split_once('{').map(|x| x.1).unwrap_or("");
        for value in labels.split('"').skip(1).step_by(2) {
            assert!(
                value.len() < 40 && !value.contains(' '),
                "unbounded label value {value:?} in {line}"
            );
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(support::root().join("deploy/prometheus-rules.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
}

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

struct Prometheus {
    child: Child,
    _data: tempfile::TempDir,
}
impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_phase_the_scenario_drove() {
    let (_w, d) = rolled_back(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let target = d.url.trim_start_matches("http://");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ecs-gitops\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prom = Prometheus { child, _data: dir };
    let query = |q: &str| -> Option<serde_json::Value> {
        let enc: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (code, body) = std::panic::catch_unwind(|| {
            http(
                "GET",
                &format!("http://127.0.0.1:{port}/api/v1/query?query={enc}"),
                None,
            )
        })
        .ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?.clone();
        (!result.is_empty()).then_some(serde_json::Value::Array(result))
    };
    let r = wait_for(
        Duration::from_secs(60),
        "Prometheus to have scraped the phase",
        || query(r#"ecs_gitops_environment_phase{environment="prod"} == 1"#),
    );
    let phases: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["Rejected"]);
    let rollbacks = wait_for(T, "the rollback counter", || {
        query(r#"ecs_gitops_rollbacks_total{reason="alarm"}"#)
    });
    assert_eq!(rollbacks[0]["value"][1], "1");
    let up = wait_for(T, "up", || query(r#"up{job="ecs-gitops"}"#));
    assert_eq!(up[0]["value"][1], "1");
}

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(tool("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_each_environment_and_its_phase_in_chromium() {
    let w = World::new().await;
    for c in ["staging", "prod"] {
        w.cluster(c).await;
        w.service(c, "web", "web", &sha(1), false).await;
    }
    w.image("web", &sha(1)).await;
    w.commit(
        "staging",
        &World::yaml(
            "staging",
            "staging",
            &sha(1),
            &[("web", "web")],
            "verify:\n  bake: 1s\n",
        ),
    );
    // prod names an image that does not exist: Blocked.
    w.commit(
        "prod",
        &World::yaml(
            "prod",
            "prod",
            &sha(5),
            &[("web", "web")],
            "promote_from: staging\nhotfix: INC-9\nverify:\n  bake: 1s\n",
        ),
    );
    let d = w.start(&[]);
    d.wait_phase("staging", "InSync", T);
    d.wait_phase("prod", "Blocked", T);
    let out = chromium(&["--dump-dom"], &format!("{}/", d.url));
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |env: &str| {
        let start = dom
            .find(&format!("id=\"env-{env}\""))
            .unwrap_or_else(|| panic!("no row for {env}: {dom}"));
        dom[start..].split("</tr>").next().unwrap().to_string()
    };
    assert!(row("staging").contains(">InSync<"), "{}", row("staging"));
    assert!(row("prod").contains(">Blocked<"), "{}", row("prod"));
    assert!(row("prod").contains("not in ECR"), "{}", row("prod"));
    assert!(dom.contains("id=\"detail-prod\""), "per-service detail");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the page refreshes itself"
    );

    let artifacts = support::root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &[
            "--window-size=1280,720",
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("{}/", d.url),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
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
