//! The loop with in-memory fakes and a paused tokio clock (as kube-runtime tests its
//! controller): what the loop itself owns — error policy, wake-ups, requeue, reporting — without
//! AWS or git. What only the real SDK and simulator can show is in `tests/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::aws::{AwsError, ErrorClass};
use crate::desired::{self, Snapshot};
use crate::plan::{
    AlarmState, Check, Deployment, DeploymentStatus, RolloutState, ServiceState, TaskDefinitionInfo,
};
use crate::record::{Phase, Record, ServiceRecord};

const GOOD: &str = "arn:aws:ecs:me-south-1:123456789012:task-definition/web:1";
const NEW: &str = "arn:aws:ecs:me-south-1:123456789012:task-definition/web:2";

fn rel(c: char) -> Release {
    Release::parse(&c.to_string().repeat(40)).unwrap()
}

fn desired(release: char) -> DesiredState {
    let text = format!(
        "environment: prod\nregion: me-south-1\ncluster: c\nrelease: {}\nservices:\n  web:\n    repository: web\nverify:\n  alarms: [web-5xx]\n  bake: 60s\n",
        rel(release)
    );
    desired::parse(Path::new("desired-state/prod.yaml"), &text).unwrap()
}

fn snapshot(release: char, revision: &str) -> SourceStatus {
    let mut files = BTreeMap::new();
    files.insert(
        "prod".to_string(),
        FileState::Valid(Box::new(desired(release))),
    );
    SourceStatus {
        snapshot: Some(Arc::new(Snapshot {
            revision: revision.into(),
            files,
        })),
        ..SourceStatus::default()
    }
}

/// The web service on `td`, steady (or mid-rollout), with `record` in its tags.
fn world(td: &str, rolling: bool, record: &Record, images: Check) -> Observed {
    let service = ServiceState {
        arn: "arn:aws:ecs:me-south-1:123456789012:service/c/web".into(),
        task_definition: td.into(),
        deployments: vec![Deployment {
            id: "d".into(),
            status: DeploymentStatus::Primary,
            task_definition: td.into(),
            rollout_state: Some(if rolling {
                RolloutState::InProgress
            } else {
                RolloutState::Completed
            }),
            running: if rolling { 1 } else { 2 },
            desired: 2,
            failed_tasks: 0,
        }],
        running: if rolling { 1 } else { 2 },
        desired: 2,
        tags: record.tags_for("web"),
        run: Default::default(),
        ..ServiceState::default()
    };
    Observed {
        account: "123456789012".into(),
        services: BTreeMap::from([("web".to_string(), service)]),
        task_definitions: BTreeMap::from([
            (
                GOOD.to_string(),
                TaskDefinitionInfo {
                    release: Some(rel('a')),
                },
            ),
            (
                NEW.to_string(),
                TaskDefinitionInfo {
                    release: Some(rel('b')),
                },
            ),
        ]),
        images: Some(BTreeMap::from([("web".to_string(), images)])),
        alarms: Some(Ok(BTreeMap::from([(
            "web-5xx".to_string(),
            AlarmState::Ok,
        )]))),
        ..Observed::default()
    }
}

fn in_sync() -> Record {
    let mut r = Record::new(Phase::InSync, UNIX_EPOCH);
    r.last_good = Some(rel('a'));
    r.verified = vec![rel('a')];
    r.services.insert(
        "web".into(),
        ServiceRecord {
            last_good_task_definition: Some(GOOD.into()),
            target_task_definition: None,
        },
    );
    r
}

type Answer = Box<dyn Fn(u32) -> Result<Observed, AwsError> + Send + Sync>;

/// Answers each observation from a closure of the attempt number; remembers when each came
/// (in paused tokio time) and every plan applied.
struct Fake {
    answer: Answer,
    observed_at: Mutex<Vec<Instant>>,
    applied: Mutex<Vec<Plan>>,
}

impl Fake {
    fn new(
        answer: impl Fn(u32) -> Result<Observed, AwsError> + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            answer: Box::new(answer),
            observed_at: Mutex::default(),
            applied: Mutex::default(),
        })
    }

    fn times(&self) -> Vec<Instant> {
        self.observed_at.lock().unwrap().clone()
    }
}

impl Observe for Fake {
    fn observe<'a>(
        &'a self,
        _desired: &'a DesiredState,
        _upstream: Option<&'a DesiredState>,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<(Observed, RecordRead), ApplyError>> {
        Box::pin(async move {
            let n = {
                let mut at = self.observed_at.lock().unwrap();
                at.push(Instant::now());
                at.len() as u32
            };
            let mut obs = (self.answer)(n)?;
            obs.source_revision = Some(revision.to_string());
            let tags = obs
                .services
                .iter()
                .map(|(k, s)| (k.clone(), s.tags.clone()))
                .collect();
            Ok((obs, Record::from_tags(&tags)))
        })
    }
}

impl Apply for Fake {
    fn apply<'a>(
        &'a self,
        _desired: &'a DesiredState,
        _observed: &'a Observed,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<Applied, ApplyError>> {
        self.applied.lock().unwrap().push(plan.clone());
        Box::pin(async { Ok(Applied::default()) })
    }
}

/// Paused tokio time as wall time, so `plan` sees time pass as the loop sleeps.
struct PausedClock(Instant);

impl Clock for PausedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.0.elapsed()
    }
}

struct Running {
    shared: Shared,
    tx: watch::Sender<SourceStatus>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(fake: &Arc<Fake>, interval: Duration, first: SourceStatus) -> Running {
    let shared = Shared {
        observe: fake.clone(),
        apply: fake.clone(),
        clock: Arc::new(PausedClock(Instant::now())),
        metrics: Arc::new(Metrics::new()),
        board: Board::default(),
        interval,
        github: None,
        notifier: None,
        github_repo: None,
        leases: None,
        wakers: Default::default(),
        events: None,
    };
    let (tx, rx) = watch::channel(first);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_environment(
        "prod".into(),
        shared.clone(),
        rx,
        cancel.clone(),
    ));
    Running {
        shared,
        tx,
        cancel,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// Lets the loop run until `cond` holds, advancing paused time by `step` (bounded).
async fn until(step: Duration, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("condition not reached");
}

fn throttled() -> AwsError {
    AwsError {
        service: "ecs",
        operation: "DescribeServices",
        class: ErrorClass::Throttled,
        code: Some("ThrottlingException".into()),
        message: "Rate exceeded".into(),
        source: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_pass_backs_off_shows_what_aws_said_and_recovers() {
    let fake = Fake::new(|n| {
        if n <= 4 {
            Err(throttled())
        } else {
            Ok(world(GOOD, false, &in_sync(), Check::Ok))
        }
    });
    let run = start(&fake, Duration::from_secs(60), snapshot('a', "r1"));
    until(Duration::from_millis(100), || fake.times().len() >= 3).await;
    let status = run.shared.board.get("prod").unwrap();
    let error = status.error.unwrap();
    assert!(
        error.contains("ThrottlingException") && error.contains("Rate exceeded"),
        "the status carries AWS's code and message: {error}"
    );
    until(Duration::from_millis(100), || {
        run.shared
            .board
            .get("prod")
            .is_some_and(|s| s.phase == "InSync" && s.error.is_none())
    })
    .await;
    let t = fake.times();
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[..4].iter().all(|g| *g >= Duration::from_millis(800)),
        "retries wait at least kube's 800 ms: {gaps:?}"
    );
    assert!(
        gaps[3] > gaps[0],
        "the wait grows while the failure lasts: {gaps:?}"
    );
    let metrics = run.shared.metrics.render();
    assert!(
        metrics.contains(
            "ecs_gitops_reconcile_errors_total{environment=\"prod\",kind=\"throttled\"} 4"
        ),
        "{metrics}"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_commit_wakes_the_environment_without_waiting_for_the_interval() {
    let fake = Fake::new(|_| Ok(world(GOOD, false, &in_sync(), Check::Ok)));
    let run = start(&fake, Duration::from_secs(600), snapshot('a', "r1"));
    until(Duration::from_millis(10), || fake.times().len() == 1).await;
    let sent = Instant::now();
    run.tx.send_replace(snapshot('b', "r2"));
    until(Duration::from_millis(10), || fake.times().len() == 2).await;
    assert!(
        fake.times()[1] - sent < Duration::from_secs(1),
        "a commit is acted on at once, not after the 600 s interval"
    );
    let plans = fake.applied.lock().unwrap().clone();
    assert_eq!(
        plans.last().unwrap().record.phase.target(),
        Some(&rel('b')),
        "the new commit's release is deployed"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_environment_in_flight_is_looked_at_every_two_seconds_and_a_settled_one_every_interval()
{
    let mut deploying = in_sync();
    deploying.phase = Phase::Deploying { target: rel('b') };
    deploying
        .services
        .get_mut("web")
        .unwrap()
        .target_task_definition = Some(NEW.into());
    let fake = Fake::new(move |_| Ok(world(NEW, true, &deploying, Check::Ok)));
    let run = start(&fake, Duration::from_secs(30), snapshot('b', "r1"));
    until(Duration::from_millis(100), || fake.times().len() >= 4).await;
    let t = fake.times();
    for w in t.windows(2) {
        assert_eq!(w[1] - w[0], crate::plan::IN_FLIGHT_REQUEUE);
    }
    run.stop().await;

    let fake = Fake::new(|_| Ok(world(GOOD, false, &in_sync(), Check::Ok)));
    let run = start(&fake, Duration::from_secs(30), snapshot('a', "r1"));
    until(Duration::from_secs(1), || fake.times().len() >= 3).await;
    let t = fake.times();
    assert_eq!(t[1] - t[0], Duration::from_secs(30));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_keeps_saying_no_is_one_transition_and_writes_nothing() {
    let fake = Fake::new(|_| {
        Ok(world(
            GOOD,
            false,
            &in_sync(),
            Check::Failed("is not in ECR".into()),
        ))
    });
    let run = start(&fake, Duration::from_secs(5), snapshot('b', "r1"));
    until(Duration::from_secs(1), || fake.times().len() >= 5).await;
    let status = run.shared.board.get("prod").unwrap();
    assert_eq!(status.phase, "Blocked");
    let blocked = status.history.iter().filter(|h| h.to == "Blocked").count();
    assert_eq!(blocked, 1, "one transition, not one per pass");
    assert!(
        fake.applied
            .lock()
            .unwrap()
            .iter()
            .all(|p| !p.persist && p.actions.is_empty()),
        "a gate that says no writes nothing"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_environment_is_logged_counted_shown_and_restarted() {
    let fake = Fake::new(|n| {
        if n == 1 {
            panic!("observer bug on the first pass");
        }
        Ok(world(GOOD, false, &in_sync(), Check::Ok))
    });
    let run = start(&fake, Duration::from_secs(60), snapshot('a', "r1"));
    until(Duration::from_millis(100), || {
        run.shared
            .board
            .get("prod")
            .and_then(|s| s.error)
            .is_some_and(|e| e.contains("observer bug on the first pass"))
    })
    .await;
    let metrics = run.shared.metrics.render();
    assert!(
        metrics
            .contains("ecs_gitops_reconcile_errors_total{environment=\"prod\",kind=\"panic\"} 1"),
        "{metrics}"
    );
    // Restarted with backoff, the loop goes on and reaches the phase.
    until(Duration::from_millis(100), || {
        run.shared
            .board
            .get("prod")
            .is_some_and(|s| s.phase == "InSync" && s.error.is_none())
    })
    .await;
    let t = fake.times();
    assert!(
        t[1] - t[0] >= Duration::from_millis(800),
        "restarted after a backoff"
    );
    assert!(
        run.shared.board.stalled(Duration::from_secs(60)).is_empty(),
        "a loop that goes round is alive"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_stops_going_round_is_reported_stalled() {
    let board = Board::default();
    board.loop_alive("prod");
    board.loop_alive("staging");
    tokio::time::advance(Duration::from_secs(30)).await;
    board.loop_alive("staging");
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(
        board.stalled(Duration::from_secs(60)),
        vec!["prod".to_string()]
    );
}
