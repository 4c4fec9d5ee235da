//! The per-environment loop: observe, plan, apply, report; then wait for a new commit or the
//! requeue delay, whichever comes first.
//!
//! Each environment runs in its own task, so a slow or failing environment never stalls
//! another. A failed pass keeps the environment's state (it lives in AWS) and is retried with
//! exponential backoff and jitter, reset by the next successful pass.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::aws::{ApplyError, Aws};
use crate::desired::{DesiredState, Release};
use crate::metrics::{Metrics, ReleaseKind};
use crate::plan::{self, Observed, Outcome, Plan, Transition};
use crate::record::{Phase, Record};
use crate::source::{FileState, SourceStatus};
use crate::status::{Board, GateStatus, HistoryEntry, ServiceStatus, rfc3339};

/// Everything the environment tasks share.
#[derive(Clone)]
pub struct Shared {
    pub aws: Aws,
    pub metrics: Arc<Metrics>,
    pub board: Board,
    pub interval: Duration,
    /// GitHub deployment statuses and tags, when configured (best effort, never blocks).
    pub github: Option<crate::github::Reporter>,
}

/// One decision, with what it was based on.
pub struct Pass {
    pub observed: Observed,
    pub record: Option<Record>,
    pub plan: Plan,
}

/// Observes and decides, without acting (also what `ecs-gitops plan` runs).
pub async fn decide(
    aws: &Aws,
    desired: &DesiredState,
    upstream: Option<&DesiredState>,
    revision: &str,
    interval: Duration,
) -> Result<Pass, ApplyError> {
    let (observed, record) = aws
        .observe(desired, upstream, Some(revision.to_string()))
        .await?;
    let plan = plan::plan(
        desired,
        &observed,
        record.as_ref(),
        SystemTime::now(),
        interval,
    );
    Ok(Pass {
        observed,
        record,
        plan,
    })
}

/// Runs one environment until cancelled.
pub async fn run_environment(
    env: String,
    shared: Shared,
    mut rx: watch::Receiver<SourceStatus>,
    cancel: CancellationToken,
) {
    shared.metrics.init_environment(&env);
    let mut last_valid: Option<(Arc<DesiredState>, String)> = None;
    let backoff_builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let mut backoff = backoff_builder.build();
    // When this process first saw git name the current release, until it is verified.
    let mut seen: Option<(Release, Instant)> = None;
    loop {
        let status = rx.borrow_and_update().clone();
        let snapshot = status.snapshot.clone();
        if let Some(snap) = &snapshot {
            match snap.files.get(&env) {
                Some(FileState::Valid(d)) => {
                    last_valid = Some((Arc::new((**d).clone()), snap.revision.clone()));
                    shared.board.update(&env, |s| s.file_problems.clear());
                }
                Some(FileState::Invalid(problems)) => {
                    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    shared.board.update(&env, |s| s.file_problems = lines);
                }
                None => shared.board.update(&env, |s| {
                    s.file_problems = vec![format!(
                        "desired-state/{env}.yaml is not in revision {}; keeping the last valid state",
                        snap.revision
                    )]
                }),
            }
        }
        let delay = match &last_valid {
            None => shared.interval,
            Some((desired, revision)) => {
                let upstream = desired
                    .promote_from
                    .as_deref()
                    .and_then(|u| snapshot.as_ref().and_then(|s| s.valid(u)));
                let timer = shared
                    .metrics
                    .reconcile_duration
                    .with_label_values(&[env.as_str()])
                    .start_timer();
                if seen.as_ref().map(|s| &s.0) != Some(&desired.release) {
                    seen = Some((desired.release.clone(), Instant::now()));
                }
                let result = reconcile_once(&shared, desired, upstream, revision).await;
                timer.observe_duration();
                match result {
                    Ok(plan) => {
                        backoff = backoff_builder.build();
                        if plan.outcomes.contains(&Outcome::Verified)
                            && let Some((_, at)) =
                                seen.take_if(|s| Some(&s.0) == plan.record.last_good.as_ref())
                        {
                            shared
                                .metrics
                                .commit_to_verified
                                .with_label_values(&[env.as_str()])
                                .observe(at.elapsed().as_secs_f64());
                        }
                        plan.requeue
                    }
                    Err(e) => {
                        shared
                            .metrics
                            .reconcile_errors
                            .with_label_values(&[env.as_str(), e.kind()])
                            .inc();
                        tracing::warn!(environment = %env, error = %e, "reconcile pass failed; state kept, retrying with backoff");
                        shared.board.update(&env, |s| {
                            s.error = Some(e.to_string());
                            s.passes += 1;
                            s.last_pass_at = Some(rfc3339(SystemTime::now()));
                        });
                        backoff.next().unwrap_or(Duration::from_secs(30))
                    }
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[tracing::instrument(name = "reconcile", skip_all, fields(environment = %desired.environment, release = %desired.release.short(), revision = %revision))]
async fn reconcile_once(
    shared: &Shared,
    desired: &DesiredState,
    upstream: Option<&DesiredState>,
    revision: &str,
) -> Result<Plan, ApplyError> {
    let env = desired.environment.as_str();
    let pass = decide(&shared.aws, desired, upstream, revision, shared.interval).await?;
    let writes = shared
        .aws
        .apply(desired, &pass.observed, &pass.plan)
        .await?;
    let plan = &pass.plan;
    if writes > 0 {
        tracing::debug!(writes, "applied");
    }
    record_outcomes(&shared.metrics, env, plan);
    if let Some(github) = &shared.github {
        for event in github_events(env, revision, pass.record.as_ref(), plan) {
            github.report(event);
        }
    }
    shared.metrics.set_phase(env, plan.phase);
    // Blocked is not persisted (a gate that says no writes nothing), so the record still names
    // the phase before it; a transition is news only if it differs from what was last
    // reported, unless the plan moves to the same phase on purpose (a superseded rollout).
    let reported = shared.board.get(env).map(|s| s.phase);
    let transition = plan
        .transition
        .clone()
        .filter(|t| t.from == Some(t.to) || reported.as_deref() != Some(t.to.as_str()));
    if let Some(t) = &transition {
        tracing::info!(
            environment = env,
            from = t.from.map(Phase::as_str).unwrap_or("new"),
            phase = t.to.as_str(),
            reason = %t.reason,
            release = %desired.release,
            revision,
            detail = %plan.message,
            "phase changed"
        );
    }
    let running = running_release(desired, &pass.observed);
    let m = &shared.metrics;
    m.set_release(ReleaseKind::Desired, env, Some(desired.release.as_str()));
    m.set_release(ReleaseKind::Running, env, running.as_deref());
    m.set_release(
        ReleaseKind::LastGood,
        env,
        pass.plan.record.last_good.as_ref().map(Release::as_str),
    );
    m.pass_completed(env);
    report(&shared.board, desired, &pass, revision, running, transition);
    Ok(pass.plan)
}

/// What GitHub should hear about this pass: reported only after it was applied, so a
/// status is never ahead of what happened.
fn github_events(
    env: &str,
    revision: &str,
    before: Option<&Record>,
    plan: &Plan,
) -> Vec<crate::github::Event> {
    use crate::github::Event;
    let environment = env.to_string();
    let revision = revision.to_string();
    let mut events = Vec::new();
    for o in &plan.outcomes {
        match o {
            Outcome::Superseded => {
                if let Some(old) = before.and_then(|r| r.target.clone()) {
                    events.push(Event::Superseded {
                        environment: environment.clone(),
                        release: old,
                        revision: revision.clone(),
                    });
                }
            }
            Outcome::Verified => {
                if let Some(r) = plan.record.last_good.clone() {
                    events.push(Event::Verified {
                        environment: environment.clone(),
                        release: r,
                        revision: revision.clone(),
                    });
                }
            }
            Outcome::RolledBack(reason) => {
                if let Some((r, _)) = plan.record.rejected.clone() {
                    events.push(Event::RolledBack {
                        environment: environment.clone(),
                        release: r,
                        revision: revision.clone(),
                        reason: *reason,
                    });
                }
            }
            Outcome::DriftCorrected | Outcome::Blocked(_) => {}
        }
    }
    if plan
        .transition
        .as_ref()
        .is_some_and(|t| t.to == Phase::Deploying)
        && let Some(target) = plan.record.target.clone()
    {
        events.push(Event::Started {
            environment,
            release: target,
            revision,
        });
    }
    events
}

/// The release every service runs, or `None` while they differ (or one is unknown).
fn running_release(desired: &DesiredState, obs: &Observed) -> Option<String> {
    let mut releases = desired.services.keys().map(|name| {
        obs.services
            .get(name)
            .and_then(|s| obs.task_definitions.get(s.current()))
            .and_then(|i| i.release.as_ref())
    });
    let first = releases.next().flatten()?;
    releases
        .all(|r| r == Some(first))
        .then(|| first.to_string())
}

fn record_outcomes(m: &Metrics, env: &str, plan: &Plan) {
    for o in &plan.outcomes {
        match o {
            Outcome::Verified => m.deployments.with_label_values(&[env, "verified"]).inc(),
            Outcome::RolledBack(reason) => {
                m.rollbacks.with_label_values(&[env, reason.as_str()]).inc();
                m.deployments.with_label_values(&[env, "rolled_back"]).inc();
            }
            Outcome::Superseded => m.deployments.with_label_values(&[env, "superseded"]).inc(),
            Outcome::DriftCorrected => m.drift_corrections.with_label_values(&[env]).inc(),
            Outcome::Blocked(gate) => m.gate_blocks.with_label_values(&[env, gate]).inc(),
        }
    }
}

fn report(
    board: &Board,
    desired: &DesiredState,
    pass: &Pass,
    revision: &str,
    running: Option<String>,
    transition: Option<Transition>,
) {
    let plan = &pass.plan;
    let obs = &pass.observed;
    let services: Vec<ServiceStatus> = desired
        .services
        .keys()
        .map(|name| {
            let s = obs.services.get(name);
            let td = s.map(|s| s.current().to_string()).unwrap_or_default();
            ServiceStatus {
                name: name.clone(),
                running_release: obs
                    .task_definitions
                    .get(&td)
                    .and_then(|i| i.release.as_ref())
                    .map(ToString::to_string),
                task_definition: td,
                running_count: s.map(|s| s.running).unwrap_or(0),
                desired_count: s.map(|s| s.desired).unwrap_or(0),
            }
        })
        .collect();
    let r = &plan.record;
    board.update(&desired.environment, |s| {
        s.phase = plan.phase.as_str().to_string();
        s.since = Some(rfc3339(r.since));
        s.desired_release = Some(desired.release.to_string());
        s.running_release = running;
        s.last_good_release = r.last_good.as_ref().map(ToString::to_string);
        s.rejected_release = r.rejected.as_ref().map(|x| x.0.to_string());
        s.rejected_reason = r.rejected.as_ref().map(|x| x.1.as_str().to_string());
        s.message = plan.message.clone();
        s.source_revision = Some(revision.to_string());
        s.services = services;
        s.gates = plan
            .gates
            .iter()
            .map(|g| GateStatus {
                name: g.name.to_string(),
                passed: g.passed,
                detail: g.detail.clone(),
            })
            .collect();
        s.error = None;
        s.passes += 1;
        s.last_pass_at = Some(rfc3339(SystemTime::now()));
        if let Some(t) = &transition {
            s.history.push_front(HistoryEntry {
                at: rfc3339(SystemTime::now()),
                from: t.from.map(|p| p.as_str().to_string()),
                to: t.to.as_str().to_string(),
                reason: t.reason.clone(),
                release: Some(
                    match t.to {
                        Phase::RollingBack | Phase::Rejected => r
                            .rejected
                            .as_ref()
                            .map(|x| &x.0)
                            .unwrap_or(&desired.release),
                        Phase::InSync => r.last_good.as_ref().unwrap_or(&desired.release),
                        _ => r.target.as_ref().unwrap_or(&desired.release),
                    }
                    .to_string(),
                ),
                source_revision: Some(revision.to_string()),
            });
        }
    });
}
