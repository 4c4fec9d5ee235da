//! What operators see, checked with the real tools, in their own test binary: `promtool`, a
//! Prometheus server scraping the daemon on loopback, and headless Chromium rendering the status
//! page. The tools come from Debian's packages (`scripts/install-test-tools`).

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::scenario::rolled_back;
use support::world::{World, sha};
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

/// Chromium's screenshot of `url` (with `extra` arguments) written to `shot`; asserts it is a
/// real PNG and returns it.
fn screenshot(shot: &std::path::Path, extra: &[&str], url: &str) -> Vec<u8> {
    let _ = std::fs::remove_file(shot);
    let arg = format!("--screenshot={}", shot.display());
    let mut args = extra.to_vec();
    args.push(&arg);
    let out = chromium(&args, url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{}: a real screenshot ({} bytes)",
        shot.display(),
        png.len()
    );
    png
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
    screenshot(
        &artifacts.join("status-page.png"),
        &["--window-size=1280,720"],
        &format!("{}/", d.url),
    );
}

/// Every `id="..."` in the page appears once.
fn duplicate_ids(dom: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for part in dom.split(" id=\"").skip(1) {
        let id = part.split('"').next().unwrap_or("").to_string();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect()
}

fn bake_width(dom: &str) -> u32 {
    let at = dom
        .find("class=\"bar\" style=\"width:")
        .expect("a bake bar");
    dom[at + 25..].split('%').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_the_pipeline_a_bake_bar_that_moves_and_a_timeline_with_the_rollback() {
    let w = World::with_web(&["staging", "prod"]).await;
    let file = |env: &str, release: &str, extra: &str, bake: &str| {
        World::yaml(
            env,
            env,
            release,
            &[("web", "web")],
            &format!("{extra}verify:\n  alarms: [web-5xx]\n  bake: {bake}\n"),
        )
    };
    w.commit("staging", &file("staging", &sha(1), "", "1s"));
    w.commit(
        "prod",
        &file("prod", &sha(1), "promote_from: staging\n", "40s"),
    );
    let d = w.start(&[]);
    d.wait_phase("staging", "InSync", T);
    d.wait_phase("prod", "InSync", T);
    w.commit("staging", &file("staging", &sha(2), "", "1s"));
    wait_for(T, "staging verified sha(2)", || {
        (d.env("staging")?["last_good_release"] == sha(2).as_str()).then_some(())
    });
    // A bad release in staging, rolled back on its alarm; then prod takes sha(2) and bakes.
    w.commit("staging", &file("staging", &sha(3), "", "30s"));
    d.wait_phase("staging", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    d.wait_phase("staging", "Rejected", T);
    w.set_alarm("web-5xx", "OK").await;
    w.commit(
        "prod",
        &file("prod", &sha(2), "promote_from: staging\n", "40s"),
    );
    d.wait_phase("prod", "Baking", T);
    let url = format!("{}/", d.url);
    let out = chromium(&["--dump-dom"], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    // The pipeline: staging, then the arrow to prod, then prod.
    let (s, p) = (
        dom.find("id=\"stage-staging\"")
            .expect("staging in the pipeline"),
        dom.find("id=\"stage-prod\"").expect("prod in the pipeline"),
    );
    assert!(s < p, "promotion order");
    let arrow = &dom[s..p];
    assert!(
        arrow.contains("class=\"arrow"),
        "an arrow between the stages: {arrow}"
    );
    // The bake bar follows the time left.
    let first = bake_width(&dom);
    let later = wait_for(T, "the bake bar to move", || {
        let out = chromium(&["--dump-dom"], &url);
        let w2 = bake_width(&String::from_utf8_lossy(&out.stdout));
        (w2 > first).then_some(w2)
    });
    assert!(later <= 100 && later > first, "{first}% then {later}%");
    assert!(dom.contains("role=\"progressbar\""));
    // The timeline marks the rollback with its reason.
    let staging = &dom[dom.find("id=\"detail-staging\"").unwrap()..];
    let svg = &staging[staging.find("<svg").expect("a timeline")..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    assert!(
        svg.contains("class=\"mark rollback\"") && svg.contains("alarm"),
        "{svg}"
    );
    // Accessible structure: unique ids, headers on every table, phases written out.
    assert!(
        duplicate_ids(&dom).is_empty(),
        "duplicate ids: {:?}",
        duplicate_ids(&dom)
    );
    for table in dom.split("<table").skip(1) {
        let table = table.split("</table>").next().unwrap();
        assert!(table.contains("<th"), "a table without headers: {table}");
    }
    assert!(dom.contains(">Baking<") && dom.contains(">Rejected<"));
    assert!(dom.contains("name=\"viewport\""));
    // Screenshots: a phone, and the dark scheme.
    let artifacts = support::root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut sizes = Vec::new();
    for (name, extra) in [
        ("status-page-phone.png", vec!["--window-size=390,1600"]),
        (
            "status-page-dark.png",
            vec![
                "--window-size=1280,1400",
                "--force-dark-mode",
                "--blink-settings=preferredColorScheme=0",
            ],
        ),
        ("status-page-wide.png", vec!["--window-size=1280,1400"]),
    ] {
        sizes.push(screenshot(&artifacts.join(name), &extra, &url));
    }
    assert_ne!(sizes[1], sizes[2], "the dark scheme renders differently");
}
