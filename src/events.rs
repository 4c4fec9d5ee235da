//! Push-driven reactions: `run --events-queue URL` long-polls an SQS queue that an EventBridge
//! rule feeds with `CloudWatch Alarm State Change`, `ECS Deployment State Change` and `ECS
//! Service Action` events (deploy/events-rule.json). An event only wakes the environments it
//! is about; their pass then observes and decides as always (an event never decides by
//! itself), and polling stays as the fallback. While the queue answers, in-flight environments
//! are polled every 10 s instead of 2 s and environments in sync every 5 minutes instead of
//! every interval (`relaxed_requeue`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::desired::DesiredState;
use crate::metrics::Metrics;
use crate::record::PhaseKind;
use crate::source::SourceStatus;

/// How long one ReceiveMessage waits for a first message.
const LONG_POLL: Duration = Duration::from_secs(5);
/// The queue counts as healthy while a receive succeeded this recently.
const HEALTHY_FOR: Duration = Duration::from_secs(30);
/// In-flight polling while the queue is healthy.
pub const IN_FLIGHT_WITH_EVENTS: Duration = Duration::from_secs(10);
/// Re-reading an environment in sync while the queue is healthy.
pub const IN_SYNC_WITH_EVENTS: Duration = Duration::from_secs(300);

/// One wake-up per environment (a permit is kept if the loop is busy, so none is lost), and
/// whether the pass it wakes is urgent (an alarm changed: its AWS calls go first in the budget).
#[derive(Clone, Default)]
pub struct Wakers(Arc<Mutex<HashMap<String, Waker>>>);

#[derive(Default)]
struct Waker {
    notify: Arc<Notify>,
    urgent: bool,
}

impl Wakers {
    pub fn get(&self, env: &str) -> Arc<Notify> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(env.to_string())
            .or_default()
            .notify
            .clone()
    }

    pub fn wake(&self, env: &str, urgent: bool) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.entry(env.to_string()).or_default();
        w.urgent |= urgent;
        w.notify.notify_one();
    }

    /// Whether an urgent wake-up came since the last call (and forgets it).
    pub fn take_urgent(&self, env: &str) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get_mut(env)
            .is_some_and(|w| std::mem::take(&mut w.urgent))
    }
}

/// When the queue last answered.
#[derive(Clone, Default)]
pub struct QueueHealth(Arc<AtomicU64>);

fn now_ms() -> u64 {
    crate::status::unix_ms(SystemTime::now())
}

impl QueueHealth {
    pub fn healthy(&self) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        last > 0 && now_ms().saturating_sub(last) < HEALTHY_FOR.as_millis() as u64
    }

    fn answered(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    Alarm {
        region: String,
        name: String,
    },
    Service {
        region: String,
        cluster: String,
        service: String,
    },
}

/// Reads an EventBridge event (the message body); `None` for anything else.
pub fn parse(body: &str) -> Option<About> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let region = v["region"].as_str()?.to_string();
    match v["detail-type"].as_str()? {
        "CloudWatch Alarm State Change" => Some(About::Alarm {
            region,
            name: v["detail"]["alarmName"].as_str()?.to_string(),
        }),
        "ECS Deployment State Change" | "ECS Service Action" => {
            // arn:aws:ecs:<region>:<account>:service/<cluster>/<service>
            let arn = v["resources"].as_array()?.first()?.as_str()?;
            let (_, path) = arn.split_once(":service/")?;
            let (cluster, service) = path.split_once('/')?;
            Some(About::Service {
                region,
                cluster: cluster.to_string(),
                service: service.to_string(),
            })
        }
        _ => None,
    }
}

/// The environments an event concerns: those watching the alarm, or running the service.
pub fn concerned<'a>(
    about: &About,
    environments: impl Iterator<Item = &'a DesiredState>,
) -> Vec<String> {
    environments
        .filter(|d| match about {
            About::Alarm { region, name } => {
                &d.region == region && d.verify.alarms.iter().any(|a| a == name)
            }
            About::Service {
                region,
                cluster,
                service,
            } => &d.region == region && &d.cluster == cluster && d.services.contains_key(service),
        })
        .map(|d| d.environment.clone())
        .collect()
}

/// The delay until an environment's next pass when the events queue is healthy: in flight,
/// 10 s instead of the 2 s poll (events wake it sooner), but never past the end of a bake, and
/// not for an environment whose checks no event reports (HTTP health checks, verification
/// tasks, log checks, pre-deploy hooks); in sync, 5 minutes instead of the interval. Any other
/// delay (a timer the plan set) is kept.
pub fn relaxed_requeue(
    planned: Duration,
    in_flight_poll: Duration,
    phase: PhaseKind,
    desired: &DesiredState,
    bake_left: Option<Duration>,
) -> Duration {
    let polled_only = !desired.verify.health.is_empty()
        || !desired.verify.tasks.is_empty()
        || !desired.verify.logs.is_empty()
        || !desired.pre_deploy.is_empty();
    if phase.in_flight() && planned == in_flight_poll && !polled_only {
        let relaxed = IN_FLIGHT_WITH_EVENTS;
        return match bake_left {
            Some(left) => relaxed.min(left.max(Duration::from_millis(100))),
            None => relaxed,
        };
    }
    if phase == PhaseKind::InSync && planned >= in_flight_poll {
        return IN_SYNC_WITH_EVENTS.max(planned);
    }
    planned
}

/// Long-polls the queue until cancelled: wakes the environments each event concerns, deletes
/// what it read, and backs off (1 s doubling to 30 s) while the queue cannot be read.
/// The queue: read with the controller's own credentials, in its region.
pub struct Queue {
    pub aws: Aws,
    pub region: String,
    pub url: String,
}

pub async fn run(
    queue: Queue,
    source: watch::Receiver<SourceStatus>,
    wakers: Wakers,
    health: QueueHealth,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let Queue {
        aws,
        region,
        url: queue_url,
    } = queue;
    let mut backoff = Duration::from_secs(1);
    loop {
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            got = aws.receive_events(&region, &queue_url, LONG_POLL) => got,
        };
        match got {
            Ok(messages) => {
                health.answered();
                backoff = Duration::from_secs(1);
                if messages.is_empty() {
                    continue;
                }
                let snapshot = source.borrow().snapshot.clone();
                for m in &messages {
                    let about = parse(&m.body);
                    let envs = match (&about, &snapshot) {
                        (Some(a), Some(s)) => {
                            concerned(a, s.files.keys().filter_map(|e| s.valid(e)))
                        }
                        _ => Vec::new(),
                    };
                    let kind = match about {
                        Some(About::Alarm { .. }) => "alarm",
                        Some(About::Service { .. }) => "ecs",
                        None => "other",
                    };
                    metrics
                        .events
                        .with_label_values(&[
                            kind,
                            if envs.is_empty() { "ignored" } else { "woke" },
                        ])
                        .inc();
                    for env in envs {
                        tracing::debug!(environment = %env, kind, "event: waking the environment");
                        // An alarm may stop a release: that pass goes first in the API budget.
                        wakers.wake(&env, kind == "alarm");
                    }
                }
                let receipts: Vec<String> = messages.into_iter().map(|m| m.receipt).collect();
                if let Err(e) = aws.delete_events(&region, &queue_url, &receipts).await {
                    tracing::warn!(error = %e, "could not delete handled events; they come back after the visibility timeout (harmless: an event only wakes a pass)");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "events queue unreadable; polling carries on as without it");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn prod(extra: &str) -> DesiredState {
        let text = format!(
            "environment: prod\nregion: me-south-1\ncluster: saas-prod\nrelease: {}\nservices:\n  web:\n    repository: web\nverify:\n  alarms: [web-5xx]\n  bake: 60s\n{extra}",
            "a".repeat(40)
        );
        crate::desired::parse(Path::new("desired-state/prod.yaml"), &text).unwrap()
    }

    #[test]
    fn alarm_and_deployment_events_name_what_they_are_about() {
        let alarm = r#"{"version":"0","detail-type":"CloudWatch Alarm State Change","source":"aws.cloudwatch","region":"me-south-1","resources":["arn:aws:cloudwatch:me-south-1:1:alarm:web-5xx"],"detail":{"alarmName":"web-5xx","state":{"value":"ALARM"}}}"#;
        assert_eq!(
            parse(alarm),
            Some(About::Alarm {
                region: "me-south-1".into(),
                name: "web-5xx".into()
            })
        );
        let dep = r#"{"detail-type":"ECS Deployment State Change","source":"aws.ecs","region":"me-south-1","resources":["arn:aws:ecs:me-south-1:1:service/saas-prod/web"],"detail":{"eventName":"SERVICE_DEPLOYMENT_COMPLETED"}}"#;
        let about = parse(dep).unwrap();
        assert_eq!(
            about,
            About::Service {
                region: "me-south-1".into(),
                cluster: "saas-prod".into(),
                service: "web".into()
            }
        );
        let d = prod("");
        assert_eq!(concerned(&about, [&d].into_iter()), ["prod"]);
        assert!(parse("not json").is_none());
        assert!(
            parse(r#"{"detail-type":"EC2 Instance State-change Notification","region":"x"}"#)
                .is_none()
        );
    }

    #[test]
    fn an_event_wakes_only_the_environments_it_concerns() {
        let d = prod("");
        let other_region = About::Alarm {
            region: "eu-west-1".into(),
            name: "web-5xx".into(),
        };
        assert!(concerned(&other_region, [&d].into_iter()).is_empty());
        let other_service = About::Service {
            region: "me-south-1".into(),
            cluster: "saas-prod".into(),
            service: "worker".into(),
        };
        assert!(concerned(&other_service, [&d].into_iter()).is_empty());
    }

    #[test]
    fn a_healthy_queue_relaxes_polling_but_never_past_a_bake_or_for_polled_checks() {
        let two = Duration::from_secs(2);
        let d = prod("");
        assert_eq!(
            relaxed_requeue(two, two, PhaseKind::Deploying, &d, None),
            IN_FLIGHT_WITH_EVENTS
        );
        assert_eq!(
            relaxed_requeue(
                two,
                two,
                PhaseKind::Baking,
                &d,
                Some(Duration::from_secs(4))
            ),
            Duration::from_secs(4)
        );
        assert_eq!(
            relaxed_requeue(Duration::from_secs(10), two, PhaseKind::InSync, &d, None),
            IN_SYNC_WITH_EVENTS
        );
        // A timer the plan set is kept.
        let short = Duration::from_millis(300);
        assert_eq!(
            relaxed_requeue(short, two, PhaseKind::Baking, &d, None),
            short
        );
        // Health checks are polled: no event says a URL went bad.
        let h = prod("  health:\n    - url: https://example.com/health\n");
        assert_eq!(relaxed_requeue(two, two, PhaseKind::Baking, &h, None), two);
    }
}
