//! Table tests of `plan`: every transition of the phase table, with time passed in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::desired::{self, Release};
use crate::record::{Phase as P, PhaseKind as Phase, Reason, Record, ServiceRecord};

const GOOD: &str = "arn:aws:ecs:me-south-1:123456789012:task-definition/web:1";
const NEW: &str = "arn:aws:ecs:me-south-1:123456789012:task-definition/web:2";
const OTHER: &str = "arn:aws:ecs:me-south-1:123456789012:task-definition/web:3";

fn rel(c: char) -> Release {
    Release::parse(&c.to_string().repeat(40)).unwrap()
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn desired(release: char, extra: &str) -> DesiredState {
    let text = format!(
        "environment: prod\nregion: me-south-1\ncluster: c\nrelease: {}\nservices:\n  web:\n    repository: web\nverify:\n  alarms: [web-5xx]\n  health:\n    - url: https://example.com/health\n  bake: 60s\n  rollout_timeout: 120s\n{extra}",
        rel(release)
    );
    desired::parse(Path::new("desired-state/prod.yaml"), &text).unwrap()
}

trait Override {
    fn with_override(self, c: char) -> DesiredState;
}

impl Override for DesiredState {
    /// `web` pinned to release `c` with a per-service `release:`.
    fn with_override(mut self, c: char) -> DesiredState {
        self.services.get_mut("web").unwrap().release = Some(rel(c));
        self
    }
}

fn steady(td: &str) -> ServiceState {
    ServiceState {
        arn: "arn:aws:ecs:me-south-1:123456789012:service/c/web".into(),
        task_definition: td.into(),
        deployments: vec![Deployment {
            id: "d1".into(),
            status: DeploymentStatus::Primary,
            task_definition: td.into(),
            rollout_state: Some(RolloutState::Completed),
            running: 2,
            desired: 2,
            failed_tasks: 0,
        }],
        running: 2,
        desired: 2,
        tags: BTreeMap::new(),
        run: RunSettings::default(),
        ..ServiceState::default()
    }
}

/// `s` on a blue/green strategy whose newest service deployment (created at `t(created)`)
/// deploys NEW over GOOD, `status` at `stage`.
fn managed(mut s: ServiceState, status: SdStatus, stage: &str, created: u64) -> ServiceState {
    s.strategy = Strategy::BlueGreen;
    s.service_deployment = Some(Ok(Some(ServiceDeployment {
        arn: "arn:aws:ecs:me-south-1:123456789012:service-deployment/c/web/sd1".into(),
        status,
        status_reason: None,
        created_at: t(created),
        updated_at: Some(t(created)),
        target_task_definition: Some(NEW.into()),
        source_task_definitions: vec![GOOD.into()],
        lifecycle_stage: Some(stage.into()),
        production_traffic: Some(50.0),
        rollback_reason: None,
        circuit_breaker_triggered: false,
        triggered_alarms: Vec::new(),
        paused: None,
    })));
    s
}

/// Changes the service deployment of `s` (which `managed` gave one).
fn sd_with(mut s: ServiceState, f: impl FnOnce(&mut ServiceDeployment)) -> ServiceState {
    if let Some(Ok(Some(d))) = &mut s.service_deployment {
        f(d);
    }
    s
}

/// A rollout of `to` in progress, replacing `from`.
fn rolling(from: &str, to: &str, running: i32, failed: i32) -> ServiceState {
    let mut s = steady(to);
    s.deployments = vec![
        Deployment {
            id: "d2".into(),
            status: DeploymentStatus::Primary,
            task_definition: to.into(),
            rollout_state: Some(RolloutState::InProgress),
            running,
            desired: 2,
            failed_tasks: failed,
        },
        Deployment {
            id: "d1".into(),
            status: DeploymentStatus::Active,
            task_definition: from.into(),
            rollout_state: Some(RolloutState::Completed),
            running: 2 - running,
            desired: 2,
            failed_tasks: 0,
        },
    ];
    s
}

fn observed(service: ServiceState) -> Observed {
    let mut tds = BTreeMap::new();
    tds.insert(
        GOOD.to_string(),
        TaskDefinitionInfo {
            release: Some(rel('a')),
        },
    );
    tds.insert(
        NEW.to_string(),
        TaskDefinitionInfo {
            release: Some(rel('b')),
        },
    );
    tds.insert(
        OTHER.to_string(),
        TaskDefinitionInfo {
            release: Some(rel('c')),
        },
    );
    Observed {
        account: "123456789012".into(),
        services: BTreeMap::from([("web".to_string(), service)]),
        task_definitions: tds,
        images: Some(BTreeMap::from([("web".to_string(), Check::Ok)])),
        alarms: Some(Ok(BTreeMap::from([(
            "web-5xx".to_string(),
            AlarmState::Ok,
        )]))),
        health: Some(vec![Check::Ok]),
        upstream: Some(Upstream::Verified(vec![rel('b')])),
        source_revision: Some("1111111111111111111111111111111111111111".into()),
        ..Observed::default()
    }
}

/// A record in phase `kind`; Deploying and Baking target `target`; RollingBack and Rejected get
/// their release and reason from `rejected` (`b` rolled back for `rollout_failed` until then).
fn record(kind: Phase, since: u64, target: Option<char>, target_td: Option<&str>) -> Record {
    let held = || (rel(target.unwrap_or('b')), Reason::RolloutFailed);
    let phase = match kind {
        Phase::InSync => P::InSync,
        Phase::Blocked => P::Blocked,
        Phase::Drifted => P::Drifted,
        Phase::Suspended => P::Suspended,
        Phase::Deploying => P::Deploying {
            target: rel(target.expect("Deploying needs a target")),
        },
        Phase::Baking => P::Baking {
            target: rel(target.expect("Baking needs a target")),
        },
        Phase::RollingBack => {
            let (release, reason) = held();
            P::RollingBack { release, reason }
        }
        Phase::Rejected => {
            let (release, reason) = held();
            P::Rejected { release, reason }
        }
    };
    let mut r = Record::new(phase, t(since));
    r.last_good = Some(rel('a'));
    r.verified = vec![rel('a')];
    if matches!(kind, Phase::RollingBack | Phase::Rejected) {
        r.rejected = Some(held());
    }
    r.services.insert(
        "web".into(),
        ServiceRecord {
            last_good_task_definition: Some(GOOD.into()),
            target_task_definition: target_td.map(str::to_string),
        },
    );
    r
}

fn rejected(mut r: Record, c: char, why: Reason) -> Record {
    r.rejected = Some((rel(c), why));
    match &mut r.phase {
        P::RollingBack { release, reason } | P::Rejected { release, reason } => {
            *release = rel(c);
            *reason = why;
        }
        _ => {}
    }
    r
}

struct Case {
    name: &'static str,
    desired: DesiredState,
    observed: Observed,
    record: Option<Record>,
    now: u64,
    phase: Phase,
    /// Expected actions, as short strings: "deploy web", "update web web:1".
    actions: &'static [&'static str],
    /// Part of the message, or of the rollback reason.
    says: &'static str,
    /// The record the plan returns, as `summary` writes it.
    record_after: &'static str,
}

/// One line for the record a plan returns: phase with its data, when it began (seconds after
/// `t(0)`), last good, held rejection, verified list, web's last good and target revisions,
/// and whether apply writes it. Releases are their letter.
fn summary(p: &Plan) -> String {
    let r = &p.record;
    let l = |x: &Release| x.as_str()[..1].to_string();
    let phase = match &r.phase {
        P::Deploying { target } => format!("Deploying({})", l(target)),
        P::Baking { target } => format!("Baking({})", l(target)),
        P::RollingBack { release, reason } => format!("RollingBack({},{reason})", l(release)),
        P::Rejected { release, reason } => format!("Rejected({},{reason})", l(release)),
        other => other.as_str().to_string(),
    };
    let since = r
        .since
        .duration_since(t(0))
        .map(|d| d.as_secs().to_string())
        .unwrap_or_else(|_| "?".into());
    let opt = |x: Option<String>| x.unwrap_or_else(|| "-".into());
    let web = r.service("web");
    format!(
        "{phase} since={since} good={} rejected={} verified={} web={}/{} hooks={} {}",
        opt(r.last_good.as_ref().map(l)),
        opt(r.rejected.as_ref().map(|(x, w)| format!("{}:{w}", l(x)))),
        r.verified.iter().map(l).collect::<String>(),
        opt(web
            .last_good_task_definition
            .as_deref()
            .map(|x| short_td(x).to_string())),
        opt(web
            .target_task_definition
            .as_deref()
            .map(|x| short_td(x).to_string())),
        opt(r.hooks_passed.as_ref().map(l)),
        if p.persist { "persist" } else { "no-write" }
    )
}

fn short(a: &Action) -> String {
    match a {
        Action::Deploy { service, .. } => format!("deploy {service}"),
        Action::Update {
            service,
            task_definition,
            ..
        } => format!("update {service} {}", short_td(task_definition)),
        Action::RunTask { hook, kind, .. } => format!("run {} {hook}", kind.as_str()),
        Action::StopTask { hook, .. } => format!("stop {hook}"),
        Action::StopDeployment { service, .. } => format!("stop-deployment {service}"),
    }
}

/// prod with a migration before the deploy, a smoke test and a log check in the bake.
fn desired_hooks(release: char) -> DesiredState {
    let text = format!(
        "environment: prod\nregion: me-south-1\ncluster: c\nrelease: {}\nservices:\n  web:\n    repository: web\nhooks:\n  pre_deploy:\n    - name: migrate\n      service: web\n      command: [alembic, upgrade, head]\n      timeout: 5m\nverify:\n  alarms: [web-5xx]\n  tasks:\n    - name: smoke\n      service: web\n      command: [pytest, -m, smoke]\n      timeout: 2m\n  logs:\n    - group: /prod/backend\n      pattern: '\"ERROR\"'\n      max: 0\n  bake: 60s\n  rollout_timeout: 120s\n",
        rel(release)
    );
    desired::parse(Path::new("desired-state/prod.yaml"), &text).unwrap()
}

type Run = (String, Result<Option<TaskRun>, String>);

/// A task of hook `name` for release `c`, created at `t(created)`, in `state` with `exit`.
fn run(name: &str, c: char, created: u64, state: TaskState, exit: Option<i32>) -> Run {
    (
        started_by("prod", name, &rel(c)),
        Ok(Some(TaskRun {
            arn: format!("arn:aws:ecs:me-south-1:123456789012:task/c/{name}{created}"),
            state,
            exit_code: exit,
            stop_code: (state == TaskState::Stopped)
                .then(|| "EssentialContainerExited".to_string()),
            stopped_reason: None,
            container_reason: None,
            created_at: t(created),
            log: None,
        })),
    )
}

/// `o` with the given task runs (none for the other hooks of release `c`) and `errors` events
/// matching the log check.
fn tasks(c: char, runs: Vec<Run>, errors: Result<u64, String>) -> impl FnOnce(&mut Observed) {
    move |o: &mut Observed| {
        for name in ["migrate", "smoke"] {
            o.task_runs
                .insert(started_by("prod", name, &rel(c)), Ok(None));
        }
        o.task_runs.extend(runs);
        o.log_counts.insert("/prod/backend".into(), errors);
    }
}

fn with<F: FnOnce(&mut Observed)>(mut o: Observed, f: F) -> Observed {
    f(&mut o);
    o
}

fn cases() -> Vec<Case> {
    let alarm = |o: &mut Observed| {
        o.alarms = Some(Ok(BTreeMap::from([(
            "web-5xx".to_string(),
            AlarmState::Alarm,
        )])));
    };
    vec![
        Case {
            name: "first sight adopts what runs as last good",
            desired: desired('a', ""),
            observed: observed(steady(GOOD)),
            record: None,
            now: 0,
            phase: Phase::InSync,
            actions: &[],
            says: "running aaaaaaa",
            record_after: "InSync since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "first sight of an environment whose git names a new release deploys it",
            desired: desired('b', ""),
            observed: observed(steady(GOOD)),
            record: None,
            now: 0,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying bbbbbbb",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "in sync stays in sync with nothing to do",
            desired: desired('a', ""),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::InSync,
            actions: &[],
            says: "verified",
            record_after: "InSync since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "InSync -> Deploying when git names a new release and the gates pass",
            desired: desired('b', ""),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying",
            record_after: "Deploying(b) since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "InSync -> Blocked when the image is missing in ECR",
            desired: desired('b', ""),
            observed: with(observed(steady(GOOD)), |o| {
                o.images = Some(BTreeMap::from([(
                    "web".into(),
                    Check::Failed("is not in ECR".into()),
                )]))
            }),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "image gate",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "InSync -> Blocked when an alarm is already firing",
            desired: desired('b', ""),
            observed: with(observed(steady(GOOD)), alarm),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "alarm web-5xx in ALARM",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "Blocked when alarms cannot be read (unknown is never healthy)",
            desired: desired('b', ""),
            observed: with(observed(steady(GOOD)), |o| {
                o.alarms = Some(Err("DescribeAlarms throttled".into()))
            }),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "could not be read",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "Blocked when a named alarm does not exist",
            desired: desired('b', ""),
            observed: with(observed(steady(GOOD)), |o| {
                o.alarms = Some(Ok(BTreeMap::new()))
            }),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "does not exist",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "Blocked until the release is verified upstream",
            desired: desired('c', "promote_from: staging\n"),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "not verified in staging",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "a release verified upstream passes the promotion gate",
            desired: desired('b', "promote_from: staging\n"),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::Blocked, 0, None, None)),
            now: 100,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying",
            record_after: "Deploying(b) since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "a hotfix skips the promotion gate",
            desired: desired('c', "promote_from: staging\nhotfix: INC-1 outage\n"),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying",
            record_after: "Deploying(c) since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "a hotfix never skips the alarm gate",
            desired: desired('c', "promote_from: staging\nhotfix: INC-1 outage\n"),
            observed: with(observed(steady(GOOD)), alarm),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "alarm gate",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "Blocked -> Deploying once the gate clears",
            desired: desired('b', ""),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::Blocked, 0, None, None)),
            now: 100,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying",
            record_after: "Deploying(b) since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying waits while the rollout progresses",
            desired: desired('b', ""),
            observed: observed(rolling(GOOD, NEW, 1, 0)),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::Deploying,
            actions: &[],
            says: "1/2 running",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Deploying after a crash before UpdateService redoes the deploy",
            desired: desired('b', ""),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 10,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying -> Baking when every service is steady on the target",
            desired: desired('b', ""),
            observed: observed(steady(NEW)),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::Baking,
            actions: &[],
            says: "baking for 1m",
            record_after: "Baking(b) since=10 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Deploying -> RollingBack on a crash loop",
            desired: desired('b', ""),
            observed: observed(rolling(GOOD, NEW, 0, 3)),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "crash_loop",
            record_after: "RollingBack(b,crash_loop) since=10 good=a rejected=b:crash_loop verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "failed tasks that were replaced are not a crash loop",
            desired: desired('b', ""),
            observed: observed({
                let mut s = steady(NEW);
                s.deployments[0].failed_tasks = 4;
                s
            }),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::Baking,
            actions: &[],
            says: "alarms and health OK",
            record_after: "Baking(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "a service whose override already runs its release is not redeployed",
            desired: desired('b', "").with_override('a'),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 5,
            phase: Phase::Baking,
            actions: &[],
            says: "rollout of bbbbbbb complete",
            record_after: "Baking(b) since=5 good=a rejected=- verified=a web=web:1/web:1 hooks=- persist",
        },
        Case {
            name: "Deploying -> RollingBack when ECS' circuit breaker rolled back (never success)",
            desired: desired('b', ""),
            observed: observed({
                let mut s = rolling(NEW, GOOD, 1, 0);
                s.deployments[1].rollout_state = Some(RolloutState::Failed);
                s.deployments[1].failed_tasks = 3;
                s
            }),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::RollingBack,
            actions: &[],
            says: "circuit_breaker",
            record_after: "RollingBack(b,circuit_breaker) since=10 good=a rejected=b:circuit_breaker verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Deploying -> RollingBack when ECS marks the deployment FAILED",
            desired: desired('b', ""),
            observed: observed({
                let mut s = rolling(GOOD, NEW, 0, 0);
                s.deployments[0].rollout_state = Some(RolloutState::Failed);
                s
            }),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "rollout_failed",
            record_after: "RollingBack(b,rollout_failed) since=10 good=a rejected=b:rollout_failed verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Deploying -> RollingBack when the rollout times out",
            desired: desired('b', ""),
            observed: observed(rolling(GOOD, NEW, 1, 0)),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 121,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "rollout_timeout",
            record_after: "RollingBack(b,rollout_timeout) since=121 good=a rejected=b:rollout_timeout verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Deploying -> RollingBack when an alarm fires during the rollout",
            desired: desired('b', ""),
            observed: with(observed(rolling(GOOD, NEW, 1, 0)), alarm),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "alarm",
            record_after: "RollingBack(b,alarm) since=10 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Deploying -> Deploying when a newer commit supersedes the rollout",
            desired: desired('c', ""),
            observed: observed(rolling(GOOD, NEW, 1, 0)),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 10,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying ccccccc",
            record_after: "Deploying(c) since=10 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Baking continues until the bake time has passed",
            desired: desired('b', ""),
            observed: observed(steady(NEW)),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::Baking,
            actions: &[],
            says: "30s of 1m",
            record_after: "Baking(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> InSync: the release becomes last good",
            desired: desired('b', ""),
            observed: observed(steady(NEW)),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 60,
            phase: Phase::InSync,
            actions: &[],
            says: "verified",
            record_after: "InSync since=60 good=b rejected=- verified=ba web=web:2/- hooks=- persist",
        },
        Case {
            name: "Baking does not finish on unknown health data",
            desired: desired('b', ""),
            observed: with(observed(steady(NEW)), |o| {
                o.health = Some(vec![Check::Unknown("timed out".into())])
            }),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 600,
            phase: Phase::Baking,
            actions: &[],
            says: "cannot finish while data is unknown",
            record_after: "Baking(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking does not finish on unreadable alarms",
            desired: desired('b', ""),
            observed: with(observed(steady(NEW)), |o| {
                o.alarms = Some(Err("DescribeAlarms server_error".into()))
            }),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 600,
            phase: Phase::Baking,
            actions: &[],
            says: "unknown",
            record_after: "Baking(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> RollingBack when an alarm fires",
            desired: desired('b', ""),
            observed: with(observed(steady(NEW)), alarm),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "alarm",
            record_after: "RollingBack(b,alarm) since=30 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> RollingBack when a health check fails",
            desired: desired('b', ""),
            observed: with(observed(steady(NEW)), |o| {
                o.health = Some(vec![Check::Failed("answered 503".into())])
            }),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "health",
            record_after: "RollingBack(b,health) since=30 good=a rejected=b:health verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> Deploying when a newer commit supersedes the bake",
            desired: desired('c', ""),
            observed: observed(steady(NEW)),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying ccccccc",
            record_after: "Deploying(c) since=30 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "RollingBack resends the rollback when a service is not on last good",
            desired: desired('b', ""),
            observed: observed(steady(NEW)),
            record: Some(rejected(
                record(Phase::RollingBack, 0, Some('b'), Some(NEW)),
                'b',
                Reason::Alarm,
            )),
            now: 5,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "rolling back",
            record_after: "RollingBack(b,alarm) since=0 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "RollingBack waits while last good rolls out",
            desired: desired('b', ""),
            observed: observed(rolling(NEW, GOOD, 1, 0)),
            record: Some(rejected(
                record(Phase::RollingBack, 0, Some('b'), Some(NEW)),
                'b',
                Reason::Alarm,
            )),
            now: 5,
            phase: Phase::RollingBack,
            actions: &[],
            says: "rolling back",
            record_after: "RollingBack(b,alarm) since=0 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "RollingBack -> Rejected once last good is steady again",
            desired: desired('b', ""),
            observed: observed(steady(GOOD)),
            record: Some(rejected(
                record(Phase::RollingBack, 0, Some('b'), Some(NEW)),
                'b',
                Reason::Alarm,
            )),
            now: 5,
            phase: Phase::Rejected,
            actions: &[],
            says: "rolled back (alarm)",
            record_after: "Rejected(b,alarm) since=5 good=a rejected=b:alarm verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Rejected is not retried while git names the same release",
            desired: desired('b', ""),
            observed: observed(steady(GOOD)),
            record: Some(rejected(
                record(Phase::Rejected, 0, None, None),
                'b',
                Reason::Alarm,
            )),
            now: 500,
            phase: Phase::Rejected,
            actions: &[],
            says: "until git names a different release",
            record_after: "Rejected(b,alarm) since=0 good=a rejected=b:alarm verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Rejected -> Deploying when git names a different release",
            desired: desired('c', ""),
            observed: observed(steady(GOOD)),
            record: Some(rejected(
                record(Phase::Rejected, 0, None, None),
                'b',
                Reason::Alarm,
            )),
            now: 500,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying ccccccc",
            record_after: "Deploying(c) since=500 good=a rejected=b:alarm verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Rejected -> InSync when git goes back to the last good release",
            desired: desired('a', ""),
            observed: observed(steady(GOOD)),
            record: Some(rejected(
                record(Phase::Rejected, 0, None, None),
                'b',
                Reason::Alarm,
            )),
            now: 500,
            phase: Phase::InSync,
            actions: &[],
            says: "verified",
            record_after: "InSync since=500 good=a rejected=b:alarm verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "InSync -> Drifted and corrected when a service was changed by hand",
            desired: desired('a', ""),
            observed: observed(steady(OTHER)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Drifted,
            actions: &["update web web:1"],
            says: "putting the last good revision back",
            record_after: "Drifted since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "drift: report only reports",
            desired: desired('a', "drift: report\n"),
            observed: observed(steady(OTHER)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Drifted,
            actions: &[],
            says: "not correcting",
            record_after: "Drifted since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Drifted -> InSync once the service is back on last good",
            desired: desired('a', ""),
            observed: observed(rolling(OTHER, GOOD, 1, 0)),
            record: Some(record(Phase::Drifted, 0, None, None)),
            now: 100,
            phase: Phase::InSync,
            actions: &[],
            says: "verified",
            record_after: "InSync since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "a service missing in ECS blocks the environment",
            desired: desired('b', ""),
            observed: with(observed(steady(GOOD)), |o| {
                o.services.clear();
                o.missing_services = vec!["web".into()];
            }),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "not found in cluster c",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        // ---- suspend ----
        Case {
            name: "suspend: a new release in git is observed, not deployed, and nothing is written",
            desired: desired('b', "suspend: true\n"),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Suspended,
            actions: &[],
            says: "observing only, nothing is written to AWS",
            record_after: "Suspended since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "suspend: drift made by hand is shown, not corrected",
            desired: desired('a', "suspend: true\n"),
            observed: observed(steady(OTHER)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Suspended,
            actions: &[],
            says: "drift seen: web not on the recorded task definition",
            record_after: "Suspended since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "suspend: a rollout in flight is left alone, even when its alarm fires",
            desired: desired('b', "suspend: true\n"),
            observed: with(observed(steady(NEW)), |o| {
                o.alarms = Some(Ok(BTreeMap::from([("web-5xx".to_string(), AlarmState::Alarm)])))
            }),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::Suspended,
            actions: &[],
            says: "suspended",
            record_after: "Suspended since=30 good=a rejected=- verified=a web=web:1/web:2 hooks=- no-write",
        },
        Case {
            name: "a bake interrupted by suspend starts again when the key goes away",
            desired: desired('b', ""),
            observed: with(observed(steady(NEW)), |o| o.resumed = true),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 500,
            phase: Phase::Baking,
            actions: &[],
            says: "resumed after a suspension: the bake of bbbbbbb starts again",
            record_after: "Baking(b) since=500 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        // ---- freeze windows ----
        Case {
            name: "InSync -> Blocked inside a freeze window",
            desired: desired('b', "freeze:\n  - from: \"00:00\"\n    to: \"23:59\"\n    timezone: Asia/Riyadh\n"),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Blocked,
            actions: &[],
            says: "freeze gate: frozen until 2027-01-15 23:59 +03 (Asia/Riyadh)",
            record_after: "Blocked since=100 good=a rejected=- verified=a web=web:1/- hooks=- no-write",
        },
        Case {
            name: "a hotfix deploys inside a freeze window",
            desired: desired('b', "hotfix: INC-7 outage\nfreeze:\n  - from: \"00:00\"\n    to: \"23:59\"\n"),
            observed: observed(steady(GOOD)),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying bbbbbbb",
            record_after: "Deploying(b) since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "a rollback to a release verified before goes through a freeze window",
            desired: desired('b', "freeze:\n  - from: \"00:00\"\n    to: \"23:59\"\n"),
            observed: observed(steady(OTHER)),
            record: Some({
                let mut r = record(Phase::InSync, 0, None, None);
                r.last_good = Some(rel('c'));
                r.verified = vec![rel('c'), rel('b'), rel('a')];
                r.services.get_mut("web").unwrap().last_good_task_definition = Some(OTHER.into());
                r
            }),
            now: 100,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying bbbbbbb",
            record_after: "Deploying(b) since=100 good=c rejected=- verified=cba web=web:3/- hooks=- persist",
        },
        // ---- release hooks ----
        Case {
            name: "InSync -> Deploying runs the pre-deploy hook first, touching no service",
            desired: desired_hooks('b'),
            observed: with(observed(steady(GOOD)), tasks('b', vec![], Ok(0))),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 100,
            phase: Phase::Deploying,
            actions: &["run pre_deploy migrate"],
            says: "running hook migrate (alembic upgrade head)",
            record_after: "Deploying(b) since=100 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying waits while the migration runs within its timeout",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Running, None)], Ok(0)),
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 60,
            phase: Phase::Deploying,
            actions: &[],
            says: "hook migrate running for 59s of 5m",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying: the migration exited 0, so the services are updated and the rollout clock starts",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Stopped, Some(0))], Ok(0)),
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 90,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "web: deploying",
            record_after: "Deploying(b) since=90 good=a rejected=- verified=a web=web:1/- hooks=b persist",
        },
        Case {
            name: "Deploying -> Rejected (pre_deploy) when the migration exits 3: no rollback, no service touched",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Stopped, Some(3))], Ok(0)),
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 30,
            phase: Phase::Rejected,
            actions: &[],
            says: "hook migrate exited 3",
            record_after: "Rejected(b,pre_deploy) since=30 good=a rejected=b:pre_deploy verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying -> Rejected (pre_deploy) when the migration hangs past its timeout: its task is stopped",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Running, None)], Ok(0)),
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 302,
            phase: Phase::Rejected,
            actions: &["stop migrate"],
            says: "did not finish within 5m",
            record_after: "Rejected(b,pre_deploy) since=302 good=a rejected=b:pre_deploy verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying waits when the migration's task cannot be read (unknown is not failed)",
            desired: desired_hooks('b'),
            observed: with(observed(steady(GOOD)), |o| {
                tasks('b', vec![], Ok(0))(o);
                o.task_runs.insert(
                    started_by("prod", "migrate", &rel('b')),
                    Err("ListTasks ThrottlingException: Rate exceeded".into()),
                );
            }),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 30,
            phase: Phase::Deploying,
            actions: &[],
            says: "cannot be read (ListTasks ThrottlingException",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "a release whose migration already succeeded is deployed without running it again",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Stopped, Some(0))], Ok(0)),
            ),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 500,
            phase: Phase::Deploying,
            actions: &["deploy web"],
            says: "deploying bbbbbbb",
            record_after: "Deploying(b) since=500 good=a rejected=- verified=a web=web:1/- hooks=b persist",
        },
        Case {
            name: "a migration that failed in an earlier attempt runs again when git names the release again",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Stopped, Some(3))], Ok(0)),
            ),
            record: Some(record(Phase::InSync, 0, None, None)),
            now: 500,
            phase: Phase::Deploying,
            actions: &["run pre_deploy migrate"],
            says: "running hook migrate",
            record_after: "Deploying(b) since=500 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "a newer release while a migration runs: the migration is let finish before the new release's hooks",
            desired: desired_hooks('c'),
            observed: with(
                observed(steady(GOOD)),
                tasks('b', vec![run("migrate", 'b', 1, TaskState::Running, None)], Ok(0)),
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 20,
            phase: Phase::Deploying,
            actions: &[],
            says: "letting bbbbbbb's hook migrate finish",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "once the superseded release's migration has exited, the new release's hooks start",
            desired: desired_hooks('c'),
            observed: with(
                with(
                    observed(steady(GOOD)),
                    tasks('b', vec![run("migrate", 'b', 1, TaskState::Stopped, Some(0))], Ok(0)),
                ),
                tasks('c', vec![], Ok(0)),
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), None)),
            now: 20,
            phase: Phase::Deploying,
            actions: &["run pre_deploy migrate"],
            says: "superseded",
            record_after: "Deploying(c) since=20 good=a rejected=- verified=a web=web:1/- hooks=- persist",
        },
        Case {
            name: "Deploying -> Baking starts the verification tasks with the bake",
            desired: desired_hooks('b'),
            observed: observed(steady(NEW)),
            record: Some({
                let mut r = record(Phase::Deploying, 0, Some('b'), Some(NEW));
                r.hooks_passed = Some(rel('b'));
                r
            }),
            now: 10,
            phase: Phase::Baking,
            actions: &["run verify smoke"],
            says: "baking for 1m",
            record_after: "Baking(b) since=10 good=a rejected=- verified=a web=web:1/web:2 hooks=b persist",
        },
        Case {
            name: "Baking -> RollingBack (verify_task) when the smoke test exits 1",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks('b', vec![run("smoke", 'b', 2, TaskState::Stopped, Some(1))], Ok(0)),
            ),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 20,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "verify task smoke exited 1",
            record_after: "RollingBack(b,verify_task) since=20 good=a rejected=b:verify_task verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking waits for a smoke test still running when the bake time is up",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks('b', vec![run("smoke", 'b', 2, TaskState::Running, None)], Ok(0)),
            ),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 70,
            phase: Phase::Baking,
            actions: &[],
            says: "verify task smoke running for 68s of 2m",
            record_after: "Baking(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> RollingBack (verify_task) when the smoke test outlives its timeout: its task is stopped",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks('b', vec![run("smoke", 'b', 2, TaskState::Running, None)], Ok(0)),
            ),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 125,
            phase: Phase::RollingBack,
            actions: &["update web web:1", "stop smoke"],
            says: "verify task smoke did not finish within 2m",
            record_after: "RollingBack(b,verify_task) since=125 good=a rejected=b:verify_task verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "a smoke test from an earlier bake does not count: a new one is started",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks('b', vec![run("smoke", 'b', 2, TaskState::Stopped, Some(0))], Ok(0)),
            ),
            record: Some(record(Phase::Baking, 400, Some('b'), Some(NEW))),
            now: 410,
            phase: Phase::Baking,
            actions: &["run verify smoke"],
            says: "verify task smoke: starting",
            record_after: "Baking(b) since=400 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> RollingBack (log_errors) when the log group has more errors than max",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks('b', vec![run("smoke", 'b', 2, TaskState::Stopped, Some(0))], Ok(10)),
            ),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &["update web web:1"],
            says: "10 events matching \"ERROR\" in /prod/backend",
            record_after: "RollingBack(b,log_errors) since=30 good=a rejected=b:log_errors verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking does not finish while the log group cannot be read",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks(
                    'b',
                    vec![run("smoke", 'b', 2, TaskState::Stopped, Some(0))],
                    Err("FilterLogEvents ResourceNotFoundException: The specified log group does not exist.".into()),
                ),
            ),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 70,
            phase: Phase::Baking,
            actions: &[],
            says: "log group /prod/backend: FilterLogEvents ResourceNotFoundException",
            record_after: "Baking(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "Baking -> InSync once the bake is over, the smoke test passed and the logs are clean",
            desired: desired_hooks('b'),
            observed: with(
                observed(steady(NEW)),
                tasks('b', vec![run("smoke", 'b', 2, TaskState::Stopped, Some(0))], Ok(0)),
            ),
            record: Some(record(Phase::Baking, 0, Some('b'), Some(NEW))),
            now: 60,
            phase: Phase::InSync,
            actions: &[],
            says: "verified after 1m bake",
            record_after: "InSync since=60 good=b rejected=- verified=ba web=web:2/- hooks=- persist",
        },
        Case {
            name: "blue/green: green up (rolling view complete) but traffic still shifting: not done",
            desired: desired('b', ""),
            observed: observed(managed(
                steady(NEW),
                SdStatus::InProgress,
                "PRODUCTION_TRAFFIC_SHIFT",
                1,
            )),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::Deploying,
            actions: &[],
            says: "web: BLUE_GREEN IN_PROGRESS at PRODUCTION_TRAFFIC_SHIFT, 50% of production traffic",
            record_after: "Deploying(b) since=0 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: the service deployment SUCCESSFUL starts our bake",
            desired: desired('b', ""),
            observed: observed(managed(steady(NEW), SdStatus::Successful, "CLEAN_UP", 1)),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::Baking,
            actions: &[],
            says: "rollout of bbbbbbb complete",
            record_after: "Baking(b) since=30 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: an older SUCCESSFUL deployment of the same revision is not ours",
            desired: desired('b', ""),
            observed: observed(managed(steady(NEW), SdStatus::Successful, "CLEAN_UP", 0)),
            record: Some(record(Phase::Deploying, 100, Some('b'), Some(NEW))),
            now: 130,
            phase: Phase::Deploying,
            actions: &[],
            says: "waiting for ECS' BLUE_GREEN service deployment",
            record_after: "Deploying(b) since=100 good=a rejected=- verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: ECS rolled back by itself -> ecs_rollback, no write while ECS puts it back",
            desired: desired('b', ""),
            observed: observed(sd_with(
                managed(
                    steady(NEW),
                    SdStatus::RollbackInProgress,
                    "PRODUCTION_TRAFFIC_SHIFT",
                    1,
                ),
                |d| d.rollback_reason = Some("lifecycle hook failed".into()),
            )),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &[],
            says: "ROLLBACK_IN_PROGRESS at PRODUCTION_TRAFFIC_SHIFT: lifecycle hook failed",
            record_after: "RollingBack(b,ecs_rollback) since=30 good=a rejected=b:ecs_rollback verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: ECS names the alarm it rolled back on -> alarm",
            desired: desired('b', ""),
            observed: observed(sd_with(
                managed(steady(GOOD), SdStatus::RollbackSuccessful, "PRODUCTION_TRAFFIC_SHIFT", 1),
                |d| d.triggered_alarms = vec!["web-p99".into()],
            )),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &[],
            says: "(alarms web-p99)",
            record_after: "RollingBack(b,alarm) since=30 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: ECS' circuit breaker -> circuit_breaker",
            desired: desired('b', ""),
            observed: observed(sd_with(
                managed(steady(GOOD), SdStatus::RollbackSuccessful, "SCALE_UP", 1),
                |d| d.circuit_breaker_triggered = true,
            )),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &[],
            says: "circuit_breaker",
            record_after: "RollingBack(b,circuit_breaker) since=30 good=a rejected=b:circuit_breaker verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "rolling: service deployment ROLLBACK_SUCCESSFUL while the rolling view looks steady -> ecs_rollback",
            desired: desired('b', ""),
            observed: with(
                observed(sd_with(
                    managed(steady(GOOD), SdStatus::RollbackSuccessful, "BAKE_TIME", 1),
                    |d| d.production_traffic = None,
                )),
                |o| o.services.get_mut("web").unwrap().strategy = Strategy::Rolling,
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &[],
            says: "ECS' ROLLING service deployment of web is ROLLBACK_SUCCESSFUL",
            record_after: "RollingBack(b,ecs_rollback) since=30 good=a rejected=b:ecs_rollback verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: an alarm mid traffic shift stops ECS' deployment with ROLLBACK instead of an update",
            desired: desired('b', ""),
            observed: with(
                observed(managed(
                    steady(NEW),
                    SdStatus::InProgress,
                    "PRODUCTION_TRAFFIC_SHIFT",
                    1,
                )),
                alarm,
            ),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 30,
            phase: Phase::RollingBack,
            actions: &["stop-deployment web"],
            says: "alarm",
            record_after: "RollingBack(b,alarm) since=30 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "blue/green: the rollout timeout stops a deployment paused at a hook",
            desired: desired('b', ""),
            observed: observed(sd_with(
                managed(steady(NEW), SdStatus::InProgress, "POST_TEST_TRAFFIC_SHIFT", 1),
                |d| {
                    d.paused = Some(PausedHook {
                        hook_id: "hook-0".into(),
                        expires_at: None,
                        timeout_action: Some("CONTINUE".into()),
                    })
                },
            )),
            record: Some(record(Phase::Deploying, 0, Some('b'), Some(NEW))),
            now: 121,
            phase: Phase::RollingBack,
            actions: &["stop-deployment web"],
            says: "paused by lifecycle hook hook-0 for 120s",
            record_after: "RollingBack(b,rollout_timeout) since=121 good=a rejected=b:rollout_timeout verified=a web=web:1/web:2 hooks=- persist",
        },
        Case {
            name: "rolling back: ECS still putting last good back is waited for, not written",
            desired: desired('b', ""),
            observed: observed(managed(
                rolling(NEW, GOOD, 1, 0),
                SdStatus::RollbackInProgress,
                "PRODUCTION_TRAFFIC_SHIFT",
                1,
            )),
            record: Some(rejected(
                record(Phase::RollingBack, 30, Some('b'), Some(NEW)),
                'b',
                Reason::Alarm,
            )),
            now: 32,
            phase: Phase::RollingBack,
            actions: &[],
            says: "rolling back bbbbbbb (alarm)",
            record_after: "RollingBack(b,alarm) since=30 good=a rejected=b:alarm verified=a web=web:1/web:2 hooks=- persist",
        },
    ]
}

#[test]
fn every_phase_transition_decides_as_the_table_says() {
    let mut failures = Vec::new();
    for c in cases() {
        let p = plan(
            &c.desired,
            &c.observed,
            &Ok(c.record.clone()),
            t(c.now),
            Duration::from_secs(10),
        );
        let actions: Vec<String> = p.actions.iter().map(short).collect();
        let record = summary(&p);
        let why = format!(
            "{} {}",
            p.message,
            p.transition
                .as_ref()
                .map(|t| t.reason.as_str())
                .unwrap_or("")
        );
        if p.phase() != c.phase
            || actions != c.actions
            || !why.contains(c.says)
            || record != c.record_after
        {
            failures.push(format!(
                "{}:\n  wanted {:?} {:?} saying {:?}\n         {}\n  got    {:?} {:?} saying {:?}\n         {}",
                c.name,
                c.phase,
                c.actions,
                c.says,
                c.record_after,
                p.phase(),
                actions,
                why,
                record
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_verified_release_becomes_last_good_with_its_revisions() {
    let p = plan(
        &desired('b', ""),
        &observed(steady(NEW)),
        &Ok(Some(record(Phase::Baking, 0, Some('b'), Some(NEW)))),
        t(60),
        Duration::from_secs(10),
    );
    assert_eq!(p.record.last_good, Some(rel('b')));
    assert_eq!(p.record.verified, vec![rel('b'), rel('a')]);
    assert_eq!(p.record.phase, P::InSync);
    assert_eq!(
        p.record.service("web").last_good_task_definition.as_deref(),
        Some(NEW)
    );
    assert_eq!(p.outcomes, vec![Outcome::Verified]);
}

#[test]
fn a_rollback_records_the_rejected_release_and_reason() {
    let p = plan(
        &desired('b', ""),
        &with(observed(steady(NEW)), |o| {
            o.alarms = Some(Ok(BTreeMap::from([(
                "web-5xx".to_string(),
                AlarmState::Alarm,
            )])))
        }),
        &Ok(Some(record(Phase::Baking, 0, Some('b'), Some(NEW)))),
        t(30),
        Duration::from_secs(10),
    );
    assert_eq!(p.record.rejected, Some((rel('b'), Reason::Alarm)));
    assert_eq!(p.record.last_good, Some(rel('a')), "last good is untouched");
    assert_eq!(p.outcomes, vec![Outcome::RolledBack(Reason::Alarm)]);
    assert!(matches!(
        &p.actions[0],
        Action::Update {
            why: UpdateWhy::Rollback,
            ..
        }
    ));
}

#[test]
fn the_deploy_action_builds_the_ecr_image_from_account_region_repository_and_release() {
    let p = plan(
        &desired('b', ""),
        &observed(steady(GOOD)),
        &Ok(Some(record(Phase::InSync, 0, None, None))),
        t(1),
        Duration::from_secs(10),
    );
    let Action::Deploy {
        image,
        base_task_definition,
        ..
    } = &p.actions[0]
    else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(
        image,
        &format!(
            "123456789012.dkr.ecr.me-south-1.amazonaws.com/web:{}",
            rel('b')
        )
    );
    assert_eq!(
        base_task_definition, GOOD,
        "the new revision is made from last good"
    );
    assert_eq!(p.record.phase.target(), Some(&rel('b')));
    assert_eq!(p.record.since, t(1));
}

#[test]
fn a_restarted_bake_keeps_its_original_start() {
    // The same record read back after a restart: the bake ends at since + bake, not later.
    let r = record(Phase::Baking, 0, Some('b'), Some(NEW));
    let early = plan(
        &desired('b', ""),
        &observed(steady(NEW)),
        &Ok(Some(r.clone())),
        t(59),
        Duration::from_secs(10),
    );
    assert_eq!(early.phase(), Phase::Baking);
    assert_eq!(
        early.record.since,
        t(0),
        "staying in a phase keeps its start"
    );
    assert!(early.requeue <= Duration::from_secs(1));
    let done = plan(
        &desired('b', ""),
        &observed(steady(NEW)),
        &Ok(Some(r.clone())),
        t(60),
        Duration::from_secs(10),
    );
    assert_eq!(done.phase(), Phase::InSync);
}

#[test]
fn in_flight_phases_are_observed_every_two_seconds_and_settled_ones_every_interval() {
    let settled = plan(
        &desired('a', ""),
        &observed(steady(GOOD)),
        &Ok(Some(record(Phase::InSync, 0, None, None))),
        t(5),
        Duration::from_secs(10),
    );
    assert_eq!(settled.requeue, Duration::from_secs(10));
    let flying = plan(
        &desired('b', ""),
        &observed(rolling(GOOD, NEW, 1, 0)),
        &Ok(Some(record(Phase::Deploying, 0, Some('b'), Some(NEW)))),
        t(5),
        Duration::from_secs(10),
    );
    assert_eq!(flying.requeue, IN_FLIGHT_REQUEUE);
}

#[test]
fn needs_reads_gates_only_when_a_new_release_is_named() {
    let r = record(Phase::InSync, 0, None, None);
    assert_eq!(
        needs(&desired('a', ""), &Ok(Some(r.clone()))),
        Needs::default()
    );
    assert!(needs(&desired('b', ""), &Ok(Some(r.clone()))).gates);
    let baking = record(Phase::Baking, 0, Some('b'), Some(NEW));
    let n = needs(&desired('b', ""), &Ok(Some(baking.clone())));
    assert!(n.alarms && n.health && !n.gates);
}

#[test]
fn an_unreadable_record_blocks_writes_nothing_and_adopts_nothing() {
    let unreadable = crate::record::Unreadable {
        service: "web".into(),
        tag: crate::record::TAG_PHASE,
        value: "Paused".into(),
        problem: "is not a phase this version knows",
    };
    // Git names a new release and every gate would pass: still nothing happens.
    let p = plan(
        &desired('b', ""),
        &observed(steady(GOOD)),
        &Err(unreadable.clone()),
        t(5),
        Duration::from_secs(10),
    );
    assert_eq!(p.phase(), Phase::Blocked);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(
        !p.persist,
        "nothing is written over a record it cannot read"
    );
    assert_eq!(p.record.last_good, None, "nothing running is adopted");
    assert!(p.record.verified.is_empty(), "nothing is verified");
    assert_eq!(p.gates[0].name, GateName::RecordUnreadable);
    assert_eq!(p.transition.as_ref().unwrap().reason, Why::RecordUnreadable);
    assert!(p.message.contains("ecs-gitops:phase"), "{}", p.message);
    assert_eq!(
        needs(&desired('b', ""), &Err(unreadable)),
        Needs::default(),
        "no gate is read for a decision that cannot be made"
    );
}
