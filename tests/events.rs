//! Push-driven reactions: an SQS queue fed (as an EventBridge rule would) with alarm and ECS
//! deployment events wakes the environments they concern; polling stays as the fallback.

mod support;

use std::time::Duration;

use support::world::{REGION, World, sha};
use support::{counter, wait_for};

const T: Duration = Duration::from_secs(60);

/// The queue the simulator publishes events to, as the rule in deploy/events-rule.json would.
async fn queue(w: &World) -> String {
    let sqs = aws_sdk_sqs::Client::new(&support::sdk_config(&w.sim.url, REGION).await);
    let url = sqs
        .create_queue()
        .queue_name("ecs-gitops-events")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    w.sim.control(
        "POST",
        "events",
        Some(&format!(
            r#"{{"queue_url": "{url}", "region": "{REGION}"}}"#
        )),
    );
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_event_wakes_the_baking_environment_and_its_rollback_follows() {
    let w = World::with_web(&["c"]).await;
    let url = queue(&w).await;
    w.commit("prod", &support::scenario::prod(&sha(1), "1s"));
    let d = w.start(&["--events-queue", &url, "--interval", "10s"]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &support::scenario::prod(&sha(2), "60s"));
    d.wait_phase("prod", "Baking", T);
    // The rollout's completion came as an ECS deployment event.
    let m = d.metrics();
    assert!(
        counter(&m, r#"ecs_gitops_events_total{kind="ecs",outcome="woke"}"#) >= 1.0,
        "{m}"
    );
    w.set_alarm("web-5xx", "ALARM").await;
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(e["rejected_reason"], "alarm");
    let m = d.metrics();
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_events_total{kind="alarm",outcome="woke"}"#
        ),
        1.0,
        "the alarm's event woke prod: {m}"
    );
    // The pass that rolled back came after the wake-up (the daemon's own log, in order).
    let log = d.log_tail(400);
    let mut offset = 0;
    let mut alarm_at = None;
    for line in log.lines() {
        if line.contains("event: waking the environment") && line.contains("alarm") {
            alarm_at = Some(offset);
        }
        offset += line.len() + 1;
    }
    let alarm_at = alarm_at.expect("the alarm's wake-up is logged");
    let pass_at = log[alarm_at..]
        .find("woken by an event; passing now")
        .map(|i| alarm_at + i)
        .expect("prod's loop woke up for it");
    let rolled = log.rfind("RollingBack").expect("the transition is logged");
    assert!(pass_at < rolled, "{log}");
    // Handled events are deleted from the queue.
    assert!(w.sim.call_count("sqs:DeleteMessageBatch") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_that_cannot_be_read_leaves_polling_in_charge() {
    let w = World::with_web(&["c"]).await;
    let missing = format!("{}/123456789012/no-such-queue", w.sim.url);
    w.commit("prod", &support::scenario::prod(&sha(1), "1s"));
    let d = w.start(&["--events-queue", &missing]);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &support::scenario::prod(&sha(2), "30s"));
    d.wait_phase("prod", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    let e = d.wait_phase("prod", "Rejected", T);
    assert_eq!(
        e["rejected_reason"], "alarm",
        "the 2 s poll still rolls back"
    );
    wait_for(T, "the queue's failure logged", || {
        d.log_tail(400)
            .contains("events queue unreadable")
            .then_some(())
    });
    let m = d.metrics();
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_events_total{kind="alarm",outcome="woke"}"#
        ),
        0.0
    );
}
