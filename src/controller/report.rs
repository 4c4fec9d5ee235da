//! What a pass tells the world after it was applied: metrics, the `phase changed` log line,
//! the status board, and GitHub. Never ahead of what happened.

use crate::desired::{DesiredState, Release};
use crate::github::Event;
use crate::metrics::{Metrics, ReleaseKind};
use crate::plan::{HookKind, HookResult, Observed, Outcome, Plan, Transition};
use crate::record::{Phase, PhaseKind, Record};
use crate::status::{GateStatus, HistoryEntry, HookStatus, ServiceStatus, rfc3339};

use super::Shared;
use super::pass::Pass;

pub fn pass_applied(
    shared: &Shared,
    desired: &DesiredState,
    pass: &Pass,
    revision: &str,
    reported: &mut Option<PhaseKind>,
) {
    let env = desired.environment.as_str();
    let plan = &pass.plan;
    declare_hooks(&shared.metrics, desired);
    record_outcomes(&shared.metrics, env, plan);
    if let Some(github) = &shared.github {
        let before = pass.record.as_ref().ok().and_then(Option::as_ref);
        for event in github_events(env, revision, before, plan) {
            github.report(event);
        }
    }
    shared.metrics.set_phase(env, plan.phase());
    // A transition into the phase this loop already reported is not news (a Blocked pass is
    // not persisted), unless the plan moves to the same phase on purpose (a superseded rollout).
    let transition = plan
        .transition
        .clone()
        .filter(|t| t.from == Some(t.to) || *reported != Some(t.to));
    *reported = Some(plan.phase());
    if let (Some(t), Some(n)) = (&transition, &shared.notifier) {
        notify(n, shared.github_repo.as_deref(), desired, plan, t, revision);
    }
    if let Some(t) = &transition {
        tracing::info!(
            environment = env,
            from = t.from.map(PhaseKind::as_str).unwrap_or("new"),
            phase = t.to.as_str(),
            reason = t.reason.as_str(),
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
        plan.record.last_good.as_ref().map(Release::as_str),
    );
    m.pass_completed(env);
    board(shared, desired, pass, revision, running, transition);
}

/// What GitHub should hear about this pass.
fn github_events(env: &str, revision: &str, before: Option<&Record>, plan: &Plan) -> Vec<Event> {
    let environment = env.to_string();
    let revision = revision.to_string();
    let mut events = Vec::new();
    for o in &plan.outcomes {
        match o {
            Outcome::Superseded => {
                if let Some(old) = before.and_then(|r| r.phase.target().cloned()) {
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
            Outcome::Rejected(reason) => {
                if let Some((r, _)) = plan.record.rejected.clone() {
                    events.push(Event::RolledBack {
                        environment: environment.clone(),
                        release: r,
                        revision: revision.clone(),
                        reason: *reason,
                    });
                }
            }
            Outcome::DriftCorrected | Outcome::Blocked(_) | Outcome::Hook { .. } => {}
        }
    }
    if plan
        .transition
        .as_ref()
        .is_some_and(|t| t.to == PhaseKind::Deploying)
        && let Some(target) = plan.record.phase.target().cloned()
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
            Outcome::Blocked(gate) => m.gate_blocks.with_label_values(&[env, gate.as_str()]).inc(),
            Outcome::Rejected(_) => m.deployments.with_label_values(&[env, "rejected"]).inc(),
            Outcome::Hook { name, kind, result } => m
                .hook_runs
                .with_label_values(&[env, name, kind.as_str(), result.as_str()])
                .inc(),
        }
    }
}

/// One message per `notify` target that asked for this transition.
fn notify(
    n: &crate::notify::Notifier,
    github_repo: Option<&str>,
    desired: &DesiredState,
    plan: &Plan,
    t: &Transition,
    revision: &str,
) {
    use crate::desired::NotifyOn;
    let kind = match (t.to, t.reason) {
        (PhaseKind::Deploying, _) => NotifyOn::Deploying,
        (PhaseKind::InSync, crate::plan::Why::Verified) => NotifyOn::Verified,
        (PhaseKind::RollingBack, _) => NotifyOn::RolledBack,
        (PhaseKind::Rejected, _) => NotifyOn::Rejected,
        (PhaseKind::Blocked, _) => NotifyOn::Blocked,
        _ => return,
    };
    let r = &plan.record;
    let release = transition_release(desired, r).clone();
    let message = crate::notify::Message {
        kind,
        environment: desired.environment.clone(),
        from: t.from.map(|p| p.as_str().to_string()),
        to: t.to.as_str().to_string(),
        reason: t.reason.as_str().to_string(),
        commit_url: github_repo.map(|g| commit_url(g, release.as_str())),
        release,
        last_good: r.last_good.clone(),
        source_revision: revision.to_string(),
        console_url: console_url(desired),
        alarm_url: (t.reason.as_str() == "alarm").then(|| alarms_url(&desired.region)),
    };
    for (i, target) in desired.notify.iter().enumerate() {
        if !target.on.contains(&kind) {
            continue;
        }
        let label = match target.format {
            crate::desired::NotifyFormat::Slack => format!("slack-{i}"),
            crate::desired::NotifyFormat::Json => format!("json-{i}"),
        };
        n.send(crate::notify::Notification {
            target: label,
            url: target.url.clone(),
            format: target.format,
            message: message.clone(),
        });
    }
}

/// The release a transition is about: the one rolled back or rejected, the one verified, or
/// the one in flight (else what git names).
fn transition_release<'a>(desired: &'a DesiredState, r: &'a Record) -> &'a Release {
    match &r.phase {
        Phase::RollingBack { release, .. } | Phase::Rejected { release, .. } => release,
        Phase::InSync => r.last_good.as_ref().unwrap_or(&desired.release),
        other => other.target().unwrap_or(&desired.release),
    }
}

/// The ECS console page of the environment's services.
fn console_url(desired: &DesiredState) -> String {
    let region = &desired.region;
    format!(
        "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{}/services?region={region}",
        desired.cluster
    )
}

fn alarms_url(region: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:")
}

fn commit_url(repo: &str, sha: &str) -> String {
    format!("https://github.com/{repo}/commit/{sha}")
}

/// The hook metric's series for every hook of the file, at 0 until a run ends.
fn declare_hooks(m: &Metrics, desired: &DesiredState) {
    let env = desired.environment.as_str();
    let hooks = desired
        .pre_deploy
        .iter()
        .map(|h| (h, HookKind::PreDeploy))
        .chain(desired.verify.tasks.iter().map(|h| (h, HookKind::Verify)));
    for (h, kind) in hooks {
        for result in HookResult::ALL {
            m.hook_runs
                .with_label_values(&[env, &h.name, kind.as_str(), result.as_str()]);
        }
    }
}

/// The CloudWatch console page of a log stream.
fn log_url(region: &str, group: &str, stream: &str) -> String {
    // The console's own escaping: `/` becomes `$252F` inside the fragment.
    let esc = |s: &str| {
        s.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
                other => format!("$25{:02X}", other as u32),
            })
            .collect::<String>()
    };
    format!(
        "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{}/log-events/{}",
        esc(group),
        esc(stream)
    )
}

fn board(
    shared: &Shared,
    desired: &DesiredState,
    pass: &Pass,
    revision: &str,
    running: Option<String>,
    transition: Option<Transition>,
) {
    let (board, now) = (&shared.board, shared.clock.now());
    let github_repo = shared.github_repo.as_deref();
    let plan = &pass.plan;
    let obs = &pass.observed;
    let services: Vec<ServiceStatus> = desired
        .services
        .keys()
        .map(|name| {
            let s = obs.services.get(name);
            let td = s.map(|s| s.current().to_string()).unwrap_or_default();
            // Only a service deployment ECS is still working on is shown.
            let sd = s
                .and_then(|s| s.service_deployment.as_ref())
                .and_then(|d| d.as_ref().ok())
                .and_then(Option::as_ref)
                .filter(|d| d.status.in_flight() || d.status.rolling_back());
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
                strategy: s
                    .map(|s| s.strategy.as_str().to_string())
                    .unwrap_or_default(),
                service_deployment_status: sd.map(|d| d.status.as_str().to_string()),
                lifecycle_stage: sd.and_then(|d| d.lifecycle_stage.clone()),
                production_traffic_percent: sd.and_then(|d| d.production_traffic),
                paused_by_hook: sd
                    .and_then(|d| d.paused.as_ref())
                    .map(|h| h.hook_id.clone()),
            }
        })
        .collect();
    let r = &plan.record;
    board.update(&desired.environment, |s| {
        s.phase = plan.phase().as_str().to_string();
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
                name: g.name.as_str().to_string(),
                passed: g.passed,
                detail: g.detail.clone(),
            })
            .collect();
        s.hooks = plan
            .hooks
            .iter()
            .map(|h| HookStatus {
                name: h.name.clone(),
                kind: h.kind.as_str().to_string(),
                task_arn: h.task_arn.clone(),
                state: h.state.to_string(),
                exit_code: h.exit_code,
                reason: h.reason.clone(),
                log_group: h.log.as_ref().map(|l| l.0.clone()),
                log_stream: h.log.as_ref().map(|l| l.1.clone()),
                log_url: h
                    .log
                    .as_ref()
                    .map(|(g, st)| log_url(&desired.region, g, st)),
            })
            .collect();
        s.promote_from = desired.promote_from.clone();
        s.console_url = Some(console_url(desired));
        s.alarms_url = (!desired.verify.alarms.is_empty()).then(|| alarms_url(&desired.region));
        s.commit_url = github_repo
            .zip(s.running_release.as_ref())
            .map(|(g, r)| commit_url(g, r));
        s.source_url = github_repo.map(|g| commit_url(g, revision));
        if let Phase::Baking { .. } = r.phase {
            s.bake_started_ms = r
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64);
            s.bake_seconds = Some(desired.verify.bake.as_secs());
        } else {
            s.bake_started_ms = None;
            s.bake_seconds = None;
        }
        s.error = None;
        s.passes += 1;
        s.last_pass_at = Some(rfc3339(now));
        if let Some(t) = &transition {
            let release = transition_release(desired, r);
            s.history.push_front(HistoryEntry {
                at: rfc3339(now),
                from: t.from.map(|p| p.as_str().to_string()),
                to: t.to.as_str().to_string(),
                reason: t.reason.as_str().to_string(),
                release: Some(release.to_string()),
                source_revision: Some(revision.to_string()),
            });
        }
    });
}

/// The pass failed because the environment's `account.role_arn` could not be assumed.
pub fn assume_role_failed(e: &crate::apply::ApplyError) -> bool {
    matches!(e, crate::apply::ApplyError::Aws(a) if a.service == "sts" && a.operation == "AssumeRole")
}

/// Shows the environment Blocked on `assume_role` with what STS said. Nothing was read or
/// written (the role's credentials are needed for both), so nothing is recorded in AWS either:
/// the status, the gate metric and the log say it, and the pass is retried with backoff.
pub fn blocked_on_role(shared: &Shared, env: &str, e: &crate::apply::ApplyError) {
    let now = shared.clock.now();
    let mut entered = false;
    shared.board.update(env, |s| {
        entered = !(s.phase == "Blocked" && s.gates.iter().any(|g| g.name == "assume_role"));
        s.phase = "Blocked".into();
        if entered {
            s.since = Some(rfc3339(now));
        }
        s.message = format!(
            "blocked (assume_role): {}; nothing was read or written; retrying",
            match e {
                crate::apply::ApplyError::Aws(a) => a.message.clone(),
                other => other.to_string(),
            }
        );
        s.gates = vec![crate::status::GateStatus {
            name: crate::plan::GateName::AssumeRole.as_str().into(),
            passed: false,
            detail: s.message.clone(),
        }];
        s.error = None;
        s.passes += 1;
        s.last_pass_at = Some(rfc3339(now));
    });
    if entered {
        shared
            .metrics
            .gate_blocks
            .with_label_values(&[env, crate::plan::GateName::AssumeRole.as_str()])
            .inc();
        tracing::warn!(environment = %env, error = %e, "environment blocked: its role cannot be assumed; nothing read or written");
    }
}
