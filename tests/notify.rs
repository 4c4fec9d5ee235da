//! Notifications: one message per transition each target asked for, in order, in Slack's
//! format or as flat JSON; a hanging endpoint never slows a rollout; the URL (a secret) never
//! shows in logs, metrics or the status.

mod support;

use std::time::{Duration, Instant};

use support::world::{World, sha};
use support::{WebhookSink, wait_for};

const T: Duration = Duration::from_secs(30);

fn prod(release: &str, bake: &str, slack: &str, json: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &format!(
            "notify:\n  - url_file: {slack}\n    format: slack\n  - url_file: {json}\n    format: json\n    on: [rolled_back, rejected]\nverify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 20s\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_target_hears_the_transitions_it_asked_for_in_order_and_a_hanging_one_slows_nothing() {
    let sink = WebhookSink::start();
    let dir = tempfile::tempdir().unwrap();
    let (slack, json) = (dir.path().join("slack-url"), dir.path().join("json-url"));
    let secret_path = "/services/T000/B000/do-not-log-me";
    std::fs::write(&slack, format!("{}{secret_path}\n", sink.url)).unwrap();
    std::fs::write(&json, format!("{}/hooks/json\n", sink.url)).unwrap();
    let (slack, json) = (slack.display().to_string(), json.display().to_string());
    let w = World::with_web(&["c"]).await;
    w.commit("prod", &prod(&sha(1), "1s", &slack, &json));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    let verified = |release: &str| {
        let start = Instant::now();
        wait_for(T, "verified", || {
            let e = d.env("prod")?;
            (e["phase"] == "InSync" && e["last_good_release"] == release).then_some(())
        });
        start.elapsed()
    };
    w.commit("prod", &prod(&sha(2), "1s", &slack, &json));
    let up = verified(&sha(2));
    w.commit("prod", &prod(&sha(3), "30s", &slack, &json));
    d.wait_phase("prod", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    d.wait_phase("prod", "Rejected", T);
    let got = wait_for(T, "seven messages", || {
        let b = sink.bodies();
        (b.len() >= 7).then_some(b)
    });
    let slack_kinds: Vec<String> = got
        .iter()
        .filter(|(p, _)| p == secret_path)
        .map(|(_, b)| b["text"].as_str().unwrap().to_string())
        .collect();
    let expect = [
        ("Deploying", sha(2)),
        ("InSync", sha(2)),
        ("Deploying", sha(3)),
        ("RollingBack", sha(3)),
        ("Rejected", sha(3)),
    ];
    assert_eq!(slack_kinds.len(), expect.len(), "{slack_kinds:?}");
    for (text, (to, release)) in slack_kinds.iter().zip(expect) {
        assert!(
            text.contains(&format!("-> {to} ")) && text.contains(&release[..7]),
            "{text} (wanted {to} {})",
            &release[..7]
        );
    }
    let first = &got.iter().find(|(p, _)| p == secret_path).unwrap().1;
    assert!(first["blocks"].is_array(), "Slack's blocks: {first}");
    let json_bodies: Vec<&serde_json::Value> = got
        .iter()
        .filter(|(p, _)| p == "/hooks/json")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        json_bodies.len(),
        2,
        "only rolled_back and rejected: {json_bodies:?}"
    );
    let j = json_bodies[0];
    assert_eq!(j["kind"], "rolled_back");
    assert_eq!(j["reason"], "alarm");
    assert_eq!(j["release"], sha(3).as_str());
    assert_eq!(j["release_short"], &sha(3)[..7]);
    assert_eq!(j["last_good_release"], sha(2).as_str());
    assert!(
        j["console_url"]
            .as_str()
            .unwrap()
            .contains("ecs/v2/clusters/c")
    );
    assert!(
        j.as_object()
            .unwrap()
            .values()
            .all(|v| !v.is_object() && !v.is_array()),
        "flat: {j}"
    );
    assert_eq!(json_bodies[1]["kind"], "rejected");
    // A hanging endpoint does not slow the next rollout.
    w.set_alarm("web-5xx", "OK").await;
    sink.hang(15);
    w.commit("prod", &prod(&sha(1), "1s", &slack, &json));
    let hanging = verified(&sha(1));
    assert!(
        hanging < up + Duration::from_secs(3),
        "a hanging endpoint slowed the rollout: {hanging:?} against {up:?}"
    );
    // The URL is a secret.
    let logs = d.logs.lock().unwrap().clone();
    for place in [logs, d.metrics(), d.status().to_string()] {
        assert!(!place.contains("do-not-log-me"), "the webhook URL leaked");
        assert!(!place.contains(&sink.url), "the webhook URL leaked");
    }
    assert!(
        d.metrics().contains(
            r#"ecs_gitops_notifications_total{environment="prod",result="sent",target="slack-0"} 5"#
        ),
        "{}",
        d.metrics()
    );
}
