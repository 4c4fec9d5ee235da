//! GitHub: signed push webhooks, deployment statuses, release tags and the contents API as a
//! source, against a mock of the GitHub REST API on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use support::github_mock::{GitHubMock, Mode};
use support::world::{Daemon, World, sha};
use support::{http_with_headers, wait_for};

const T: Duration = Duration::from_secs(30);
const WEBHOOK_SECRET: &str = "whsec-Zq8wN3-do-not-log-me";
const TOKEN: &str = "github_pat_11ABCDEFG0-do-not-log-me";

fn prod(env: &str, cluster: &str, release: &str, bake: &str) -> String {
    World::yaml(
        env,
        cluster,
        release,
        &[("web", "web")],
        &format!("verify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 20s\n"),
    )
}

fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    p.display().to_string()
}

fn sign(secret: &str, body: &str) -> String {
    ecs_gitops::github::sign(
        &ecs_gitops::github::Secret::new(secret.into()),
        body.as_bytes(),
    )
}

fn deliver(
    d: &Daemon,
    event: &str,
    body: &str,
    signature: Option<&str>,
    content_type: &str,
) -> (u16, String) {
    let mut headers = vec![
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("Content-Type", content_type),
        ("User-Agent", "GitHub-Hookshot/044aadd"),
    ];
    if let Some(s) = signature {
        headers.push(("X-Hub-Signature-256", s));
    }
    http_with_headers(
        "POST",
        &format!("{}/hooks/github", d.url),
        Some(body),
        &headers,
    )
}

/// A delivery signed with the daemon's secret, as GitHub sends it.
fn deliver_signed(d: &Daemon, event: &str, body: &str) -> (u16, String) {
    deliver(
        d,
        event,
        body,
        Some(&sign(WEBHOOK_SECRET, body)),
        "application/json",
    )
}

fn push_event(branch: &str, after: &str) -> String {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "compare": "https://github.com/acme/desired-state/compare/0000000...1111111",
        "commits": [{"id": after, "message": "prod: release", "timestamp": "2026-11-27T10:00:00Z", "added": [], "removed": [], "modified": ["desired-state/prod.yaml"]}],
        "head_commit": {"id": after, "message": "prod: release"},
        "repository": {"id": 1296269, "name": "desired-state", "full_name": "acme/desired-state", "default_branch": "main"},
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        "sender": {"login": "octocat", "id": 1}
    })
    .to_string()
}

fn fetches(d: &Daemon) -> f64 {
    support::counter_sum(&d.metrics(), "ecs_gitops_git_fetches_total", &[])
}

fn assert_no_secrets(d: &Daemon) {
    let logs = d.logs.lock().unwrap().clone();
    let metrics = d.metrics();
    let status = d.status().to_string();
    for secret in [WEBHOOK_SECRET, TOKEN] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!metrics.contains(secret), "a secret is in the metrics");
        assert!(!status.contains(secret), "a secret is in the status");
    }
    assert!(!logs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_push_starts_a_pass_and_bad_deliveries_do_nothing() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.image("web", &sha(1)).await;
    w.image("web", &sha(2)).await;
    w.alarm("web-5xx").await;
    w.commit("prod", &prod("prod", "c", &sha(1), "1s"));
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir, "webhook-secret", WEBHOOK_SECRET);
    // A remote repository polled only every minute: only the webhook can make it fast.
    let url = format!("file://{}", w.repo.path().display());
    let d = w.start_repo(
        &url,
        &["--interval", "60s", "--github-webhook-secret-file", &secret],
    );
    d.wait_phase("prod", "InSync", T);
    let first = d.status()["source_revision"].clone();
    let rev = w.commit("prod", &prod("prod", "c", &sha(2), "1s"));
    let body = push_event("main", &rev);
    let before = fetches(&d);

    let refused = [
        (
            "missing signature",
            deliver(&d, "push", &body, None, "application/json"),
            401,
        ),
        (
            "wrong signature",
            deliver(
                &d,
                "push",
                &body,
                Some(&sign("guess", &body)),
                "application/json",
            ),
            403,
        ),
        (
            "stale signature (old secret)",
            deliver(
                &d,
                "push",
                &body,
                Some(&sign("whsec-rotated-away", &body)),
                "application/json",
            ),
            403,
        ),
        (
            "signature of another body",
            deliver(
                &d,
                "push",
                &body,
                Some(&sign(WEBHOOK_SECRET, &push_event("main", &sha(9)))),
                "application/json",
            ),
            403,
        ),
        (
            "malformed signature",
            deliver(&d, "push", &body, Some("sha256=xyz"), "application/json"),
            403,
        ),
        (
            "form encoded",
            deliver(
                &d,
                "push",
                &body,
                Some(&sign(WEBHOOK_SECRET, &body)),
                "application/x-www-form-urlencoded",
            ),
            415,
        ),
    ];
    for (what, (code, text), want) in refused {
        assert_eq!(code, want, "{what}: {text}");
    }
    let huge = format!(
        "{{\"ref\":\"refs/heads/main\",\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024 + 10)
    );
    let (code, _) = deliver_signed(&d, "push", &huge);
    assert_eq!(code, 413);
    let other = push_event("feature", &rev);
    let (code, text) = deliver_signed(&d, "push", &other);
    assert_eq!(
        (code, text.trim()),
        (202, "not the watched branch; ignored")
    );
    let (code, text) = deliver(
        &d,
        "ping",
        r#"{"zen":"Keep it logically awesome.","hook_id":1}"#,
        Some(&sign(
            WEBHOOK_SECRET,
            r#"{"zen":"Keep it logically awesome.","hook_id":1}"#,
        )),
        "application/json",
    );
    assert_eq!((code, text.trim()), (200, "pong"));
    let issues = r#"{"action":"opened"}"#;
    let (code, _) = deliver_signed(&d, "issues", issues);
    assert_eq!(code, 202);
    assert_eq!(
        fetches(&d),
        before,
        "refused and ignored deliveries fetch nothing"
    );
    assert_eq!(d.status()["source_revision"], first);

    let start = Instant::now();
    let (code, _) = deliver_signed(&d, "push", &body);
    assert_eq!(code, 202);
    wait_for(T, "the pushed commit to be read", || {
        (d.status()["source_revision"] == rev.as_str()).then_some(())
    });
    let read_after = start.elapsed();
    wait_for(T, "the pushed release to verify", || {
        let e = d.env("prod")?;
        (e["last_good_release"] == sha(2).as_str() && e["phase"] == "InSync").then_some(())
    });
    assert!(
        read_after < Duration::from_secs(30),
        "long before the 60 s interval: {read_after:?}"
    );
    let m = d.metrics();
    assert!(
        m.contains(r#"ecs_gitops_webhook_deliveries_total{event="push",outcome="accepted"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"ecs_gitops_webhook_deliveries_total{event="push",outcome="bad_signature"} 4"#
        ),
        "{m}"
    );
    assert_no_secrets(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_refused_when_no_secret_is_configured() {
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.commit("prod", &prod("prod", "c", &sha(1), "1s"));
    let d = w.start(&[]);
    let body = push_event("main", &sha(1));
    let (code, text) = deliver(
        &d,
        "push",
        &body,
        Some(&sign("anything", &body)),
        "application/json",
    );
    assert_eq!(code, 404, "{text}");
}

/// A GitHub mock and a world with `prod` (cluster `prod`, service `web` on sha(1)), images
/// sha(1..=3) and the alarm `web-5xx`.
async fn prod_world() -> (GitHubMock, World) {
    let mock = GitHubMock::start();
    let w = World::with_web(&["prod"]).await;
    (mock, w)
}

/// `prod_world` with prod committed on sha(1) (baked for `bake`) and a daemon reporting to the
/// mock (with `extra` arguments), in sync. The directory holds the token file; keep it alive.
async fn prod_daemon(bake: &str, extra: &[&str]) -> (GitHubMock, World, tempfile::TempDir, Daemon) {
    let (mock, w) = prod_world().await;
    w.commit("prod", &prod("prod", "prod", &sha(1), bake));
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(&dir, "token", TOKEN);
    let mut args = github_args(&mock, &token);
    args.extend(extra);
    let d = w.start(&args);
    d.wait_phase("prod", "InSync", T);
    (mock, w, dir, d)
}

fn github_args<'a>(mock: &'a GitHubMock, token: &'a str) -> Vec<&'a str> {
    vec![
        "--github-repo",
        "acme/app",
        "--github-token-file",
        token,
        "--github-api-url",
        &mock.url,
    ]
}

fn statuses(mock: &GitHubMock) -> Vec<(String, String, String)> {
    // (environment, state, description) in the order they were posted
    mock.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/statuses"))
        .map(|r| {
            (
                r.body["environment"].as_str().unwrap_or("").to_string(),
                r.body["state"].as_str().unwrap_or("").to_string(),
                r.body["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_statuses_follow_what_really_happened_and_the_tag_is_made_once() {
    let mock = GitHubMock::start();
    let w = World::with_web(&["staging", "prod"]).await;
    w.commit("staging", &prod("staging", "staging", &sha(1), "1s"));
    w.commit("prod", &prod("prod", "prod", &sha(1), "1s"));
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(&dir, "token", TOKEN);
    let mut args = github_args(&mock, &token);
    args.extend(["--tag-releases", "prod", "--tag-releases", "staging"]);
    let d = w.start(&args);
    d.wait_phase("prod", "InSync", T);

    // Both environments verify sha(2): two tag attempts, one tag.
    w.commit("staging", &prod("staging", "staging", &sha(2), "1s"));
    let rev = w.commit("prod", &prod("prod", "prod", &sha(2), "1s"));
    for env in ["staging", "prod"] {
        wait_for(T, "verified", || {
            (d.env(env)?["last_good_release"] == sha(2).as_str()).then_some(())
        });
    }
    wait_for(T, "two tag attempts", || {
        (mock
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/git/refs"))
            .count()
            == 2)
            .then_some(())
    });
    let tags = mock.tags();
    assert_eq!(tags.len(), 1, "{tags:?}");
    let tag = &tags[0];
    assert!(
        tag.starts_with("refs/tags/v") && tag.ends_with(&format!("-{}", &sha(2)[..7])),
        "{tag}"
    );
    let date = &tag["refs/tags/v".len()..tag.len() - 8];
    assert_eq!(date.len(), 10, "vYYYY.MM.DD: {tag}");

    let created: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/repos/acme/app/deployments")
        .collect();
    let prod_deploy = created
        .iter()
        .find(|r| r.body["environment"] == "prod")
        .expect("a prod deployment");
    assert_eq!(prod_deploy.body["ref"], sha(2).as_str());
    assert_eq!(
        prod_deploy.body["payload"]["desired_state_revision"],
        rev.as_str()
    );
    assert!(
        prod_deploy
            .headers
            .get("authorization")
            .is_some_and(|a| a.ends_with(TOKEN)),
        "the token is sent to GitHub"
    );
    wait_for(T, "prod's statuses", || {
        let s: Vec<_> = statuses(&mock)
            .into_iter()
            .filter(|s| s.0 == "prod")
            .map(|s| s.1)
            .collect();
        (s == ["in_progress", "success"]).then_some(())
    });

    // A release rolled back on its alarm is a failure with the reason, never a success.
    w.commit("prod", &prod("prod", "prod", &sha(3), "30s"));
    d.wait_phase("prod", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    d.wait_phase("prod", "Rejected", T);
    let prod_statuses = wait_for(T, "the failure status", || {
        let s: Vec<_> = statuses(&mock)
            .into_iter()
            .filter(|s| s.0 == "prod")
            .collect();
        (s.len() == 4).then_some(s)
    });
    assert_eq!(prod_statuses[2].1, "in_progress");
    assert_eq!(prod_statuses[3].1, "failure");
    assert!(
        prod_statuses[3].2.contains("rolled back (alarm)"),
        "{:?}",
        prod_statuses[3]
    );
    assert_eq!(
        mock.tags().len(),
        1,
        "a rolled back release is never tagged"
    );
    assert_no_secrets(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_rollout_becomes_inactive() {
    let (mock, w, _dir, d) = prod_daemon("1s", &[]).await;
    w.sim.behaviour(&sha(2), "slow", Some(30.0));
    w.commit("prod", &prod("prod", "prod", &sha(2), "1s"));
    d.wait_phase("prod", "Deploying", T);
    w.commit("prod", &prod("prod", "prod", &sha(3), "1s"));
    wait_for(T, "sha(3) verified", || {
        (d.env("prod")?["last_good_release"] == sha(3).as_str()).then_some(())
    });
    let s: Vec<String> = wait_for(T, "four statuses", || {
        let s: Vec<String> = statuses(&mock).into_iter().map(|s| s.1).collect();
        (s.len() == 4).then_some(s)
    });
    assert_eq!(s, ["in_progress", "inactive", "in_progress", "success"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn github_as_the_source_follows_new_commits_with_conditional_requests() {
    let mock = GitHubMock::start();
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.image("web", &sha(1)).await;
    w.image("web", &sha(2)).await;
    w.alarm("web-5xx").await;
    let head1 = "1111111111111111111111111111111111111111";
    mock.set_head(
        head1,
        &[
            ("prod.yaml", &prod("prod", "c", &sha(1), "1s")),
            ("README.md", "not a desired-state file"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(&dir, "token", TOKEN);
    let d = w.start_repo(
        "github:acme/desired-state",
        &["--github-api-url", &mock.url, "--github-token-file", &token],
    );
    d.wait_phase("prod", "InSync", T);
    assert_eq!(d.status()["source_revision"], head1);
    // Unchanged: conditional requests answered 304.
    wait_for(T, "a conditional request", || {
        mock.requests()
            .iter()
            .any(|r| {
                r.path.ends_with("/commits/main")
                    && r.headers
                        .get("if-none-match")
                        .is_some_and(|e| e.contains("etag-1"))
            })
            .then_some(())
    });
    let contents_before = mock
        .requests()
        .iter()
        .filter(|r| r.path.contains("/contents/"))
        .count();
    let head2 = "2222222222222222222222222222222222222222";
    mock.set_head(head2, &[("prod.yaml", &prod("prod", "c", &sha(2), "1s"))]);
    wait_for(T, "the new commit to verify", || {
        let e = d.env("prod")?;
        (e["last_good_release"] == sha(2).as_str() && e["phase"] == "InSync").then_some(())
    });
    assert_eq!(d.status()["source_revision"], head2);
    let contents_after = mock
        .requests()
        .iter()
        .filter(|r| r.path.contains("/contents/"))
        .count();
    assert_eq!(
        contents_after - contents_before,
        2,
        "the files are read only when the head moved"
    );
    assert!(d.metrics().contains(
        r#"ecs_gitops_github_requests_total{operation="get_commit",outcome="not_modified"}"#
    ));
    assert_no_secrets(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_outage_changes_neither_the_outcome_nor_the_timing_of_a_rollout() {
    let (mock, w, _dir, d) = prod_daemon("2s", &[]).await;
    let rollout = |release: String| {
        let start = Instant::now();
        w.commit("prod", &prod("prod", "prod", &release, "2s"));
        wait_for(T, "verified", || {
            let e = d.env("prod")?;
            (e["last_good_release"] == release.as_str() && e["phase"] == "InSync").then_some(())
        });
        start.elapsed()
    };
    let up = rollout(sha(2));
    mock.set_mode(Mode::Hang(15));
    let hanging = rollout(sha(3));
    assert!(
        hanging < up + Duration::from_secs(3),
        "GitHub hanging slowed the rollout: {hanging:?} against {up:?} with GitHub up"
    );
    mock.set_mode(Mode::Down);
    wait_for(
        Duration::from_secs(60),
        "failed reports to be counted",
        || {
            d.metrics()
                .lines()
                .any(|l| {
                    l.starts_with("ecs_gitops_github_requests_total")
                        && (l.contains("server_error") || l.contains("network_error"))
                })
                .then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_403_for_a_missing_permission_is_not_retried_and_a_rate_limit_403_is() {
    let (mock, w, _dir, d) = prod_daemon("1s", &[]).await;
    let creates = |m: &GitHubMock| {
        m.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/deployments"))
            .count()
    };
    let client_errors = |d: &Daemon| -> f64 {
        support::counter_sum(
            &d.metrics(),
            "ecs_gitops_github_requests_total",
            &["client_error"],
        )
    };
    // No permission: each event's first request is refused, and the event given up at once.
    mock.set_mode(Mode::Forbidden(false));
    let before = mock.requests().len();
    w.commit("prod", &prod("prod", "prod", &sha(2), "1s"));
    wait_for(T, "sha(2) verified", || {
        (d.env("prod")?["last_good_release"] == sha(2).as_str()).then_some(())
    });
    // Two events (started, verified), each refused once.
    wait_for(T, "both refused reports counted", || {
        (client_errors(&d) >= 2.0).then_some(())
    });
    let made = mock.requests().len() - before;
    assert_eq!(made, 2, "a 403 without a rate limit is not retried");
    assert_eq!(client_errors(&d), 2.0);
    let forbidden = creates(&mock);
    // The rate limit exhausted: worth retrying, so the same event is tried again.
    mock.set_mode(Mode::Forbidden(true));
    let before = mock.requests().len();
    w.commit("prod", &prod("prod", "prod", &sha(3), "1s"));
    wait_for(
        Duration::from_secs(60),
        "the rate-limited report retried",
        || (mock.requests().len() >= before + 3).then_some(()),
    );
    assert!(
        d.metrics()
            .lines()
            .any(|l| l.contains("rate_limited") && !l.ends_with(" 0"))
    );
    assert_eq!(
        creates(&mock),
        forbidden,
        "nothing was created while refused"
    );
    assert_no_secrets(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_github_hangs_stops_within_seconds_and_says_what_was_dropped() {
    let (mock, w, _dir, d) = prod_daemon("1s", &[]).await;
    mock.set_mode(Mode::Hang(15));
    let before = mock.requests().len();
    w.commit("prod", &prod("prod", "prod", &sha(2), "1s"));
    wait_for(T, "a report hanging on GitHub", || {
        (mock.requests().len() > before).then_some(())
    });
    let logs = d.logs.clone();
    let took = d
        .terminate(Duration::from_secs(10))
        .expect("the daemon exits within 10 s of SIGTERM while GitHub hangs");
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.contains("shutdown: GitHub events not delivered"),
        "the dropped events are reported: {took:?}\n{logs}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

fn passes_in(d: &Daemon, window: Duration) -> u64 {
    let count = || d.env("prod").and_then(|e| e["passes"].as_u64()).unwrap();
    let before = count();
    std::thread::sleep(window); // a measurement window, not a wait for a condition
    count() - before
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_abuse_is_refused_in_bounded_memory_without_fetches_and_passes_stay_on_time() {
    use std::io::Write;
    let w = World::new().await;
    w.cluster("c").await;
    w.service("c", "web", "web", &sha(1), false).await;
    w.commit("prod", &prod("prod", "c", &sha(1), "1s"));
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir, "webhook-secret", WEBHOOK_SECRET);
    let url = format!("file://{}", w.repo.path().display());
    let d = w.start_repo(
        &url,
        &["--interval", "1s", "--github-webhook-secret-file", &secret],
    );
    d.wait_phase("prod", "InSync", T);
    let window = Duration::from_secs(6);
    let calm = passes_in(&d, window);
    let rss_before = rss_kib(d.pid());
    let fetches_before = fetches(&d);
    let addr = d.url.trim_start_matches("http://").to_string();
    // A slow client: one byte a second, for the whole abuse.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            for b in b"POST /hooks/github HTTP/1.1\r\n".iter().take(8) {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let body = push_event("main", &sha(2));
    let abuse: Vec<_> = (0..4)
        .map(|t| {
            let (d_url, body) = (d.url.clone(), body.clone());
            std::thread::spawn(move || {
                let mut codes = std::collections::BTreeMap::new();
                for i in 0..250 {
                    let wrong = sign("not-the-secret", &body);
                    let sig = if i % 2 == 0 {
                        None
                    } else {
                        Some(wrong.as_str())
                    };
                    let mut headers = vec![
                        ("X-GitHub-Event", "push"),
                        ("Content-Type", "application/json"),
                    ];
                    if let Some(s) = sig {
                        headers.push(("X-Hub-Signature-256", s));
                    }
                    let (code, _) = support::http_with_headers(
                        "POST",
                        &format!("{d_url}/hooks/github"),
                        Some(&body),
                        &headers,
                    );
                    *codes.entry(code).or_insert(0u32) += 1;
                    if t == 0 && i % 25 == 0 {
                        let big = "x".repeat(2 << 20);
                        let (code, _) = support::http_with_headers(
                            "POST",
                            &format!("{d_url}/hooks/github"),
                            Some(&big),
                            &[
                                ("X-GitHub-Event", "push"),
                                ("Content-Type", "application/json"),
                            ],
                        );
                        *codes.entry(code).or_insert(0u32) += 1;
                    }
                }
                codes
            })
        })
        .collect();
    let during = passes_in(&d, window);
    let mut codes = std::collections::BTreeMap::new();
    for h in abuse {
        for (c, n) in h.join().unwrap() {
            *codes.entry(c).or_insert(0) += n;
        }
    }
    slow.join().unwrap();
    assert_eq!(codes.get(&401), Some(&500), "unsigned: {codes:?}");
    assert_eq!(codes.get(&403), Some(&500), "wrongly signed: {codes:?}");
    assert_eq!(codes.get(&413), Some(&10), "oversized: {codes:?}");
    assert!(
        codes.keys().all(|c| [401, 403, 413].contains(c)),
        "every delivery refused: {codes:?}"
    );
    // Polling every second goes on; no delivery caused a fetch of its own.
    let fetched = fetches(&d) - fetches_before;
    assert!(
        fetched <= 2.0 * window.as_secs_f64() + 4.0,
        "{fetched} fetches during the abuse: deliveries caused fetches"
    );
    assert!(
        during * 2 >= calm,
        "passes during the abuse ({during} in {window:?}) fell below half the calm rate ({calm})"
    );
    let rss_after = rss_kib(d.pid());
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    println!(
        "webhook abuse: passes {calm} calm vs {during} under abuse per {window:?}; RSS {rss_before} -> {rss_after} KiB; {fetched} fetches; {codes:?}"
    );
    assert_no_secrets(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_bake_carries_on_the_open_deployment_and_a_newer_success_inactivates_the_older()
 {
    let (mock, w) = prod_world().await;
    w.commit("prod", &prod("prod", "prod", &sha(1), "1s"));
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(&dir, "token", TOKEN);
    let d = w.start(&github_args(&mock, &token));
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod("prod", "prod", &sha(2), "4s"));
    d.wait_phase("prod", "Baking", T);
    wait_for(T, "the in_progress status", || {
        mock.deployments()
            .iter()
            .any(|x| x.1 == sha(2) && x.3 == ["in_progress"])
            .then_some(())
    });
    d.kill();
    let d = w.start(&github_args(&mock, &token));
    let done = wait_for(T, "sha(2)'s deployment to succeed", || {
        let all = mock.deployments();
        all.iter()
            .any(|x| x.1 == sha(2) && x.3.last().map(String::as_str) == Some("success"))
            .then_some(all)
    });
    let mine: Vec<_> = done.iter().filter(|x| x.1 == sha(2)).collect();
    assert_eq!(
        mine.len(),
        1,
        "one deployment for the release, carried on: {done:?}"
    );
    assert_eq!(mine[0].3, ["in_progress", "success"]);
    // A newer release verifies: the older success becomes inactive.
    w.commit("prod", &prod("prod", "prod", &sha(3), "1s"));
    wait_for(T, "sha(2)'s deployment inactive", || {
        let all = mock.deployments();
        let two = all.iter().find(|x| x.1 == sha(2))?;
        let three = all.iter().find(|x| x.1 == sha(3))?;
        (two.3.last().map(String::as_str) == Some("inactive")
            && three.3.last().map(String::as_str) == Some("success"))
        .then_some(())
    });
    assert_no_secrets(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn github_releases_are_made_for_verified_releases_with_generated_notes() {
    let (mock, w, _dir, d) = prod_daemon("1s", &["--github-releases", "prod"]).await;
    for n in [2u8, 3] {
        w.commit("prod", &prod("prod", "prod", &sha(n), "1s"));
        wait_for(T, "a release for the verified release", || {
            mock.releases()
                .iter()
                .any(|t| t.ends_with(&sha(n)[..7]))
                .then_some(())
        });
    }
    let made: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/releases"))
        .collect();
    assert_eq!(made.len(), 2, "one release per verified release");
    for r in &made {
        assert_eq!(r.body["generate_release_notes"], true);
        let tag = r.body["tag_name"].as_str().unwrap();
        assert!(
            tag.starts_with('v') && mock.tags().iter().any(|t| t.ends_with(tag)),
            "{tag}"
        );
    }
    assert_no_secrets(&d);
}
