//! Release hooks: `hooks.pre_deploy` (migrations) run one at a time before any service is
//! updated, `verify.tasks` (smoke tests) and `verify.logs` (error counts) during the bake.
//!
//! A hook's task is found again by its `startedBy` (`ecs-gitops/<env>/<hook>/<sha7>`), so a
//! restarted controller waits for the task it started instead of starting a second one. A run
//! that succeeded counts for its release whenever it ran (hooks run once per release); a run
//! that failed or still runs counts only if it was started in this attempt (at or after the
//! phase began, less `CLOCK_SLACK`), so a release that git names again gets a fresh run.

use std::time::Duration;

use super::{Action, Check, Ctx, HookKind, HookResult, Outcome, TaskRun, TaskState, short_td};
use crate::desired::{Release, TaskHook, format_duration};
use crate::record::Record;

/// How far ECS' clock (a task's `createdAt`) may be behind the controller's.
pub const CLOCK_SLACK: Duration = Duration::from_secs(5);

/// The `startedBy` of a hook's task: how it is found again.
pub fn started_by(environment: &str, hook: &str, release: &Release) -> String {
    format!("ecs-gitops/{environment}/{hook}/{}", release.short())
}

/// A hook or verification task as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookView {
    pub name: String,
    pub kind: HookKind,
    pub task_arn: Option<String>,
    /// `pending`, `starting`, `running`, `stopping`, `succeeded`, `failed`, `timed_out`, or
    /// `unknown` (the task could not be read).
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// `(group, stream)` of the task's container log, when it logs to CloudWatch.
    pub log: Option<(String, String)>,
}

/// What the pre-deploy hooks of a release say.
#[allow(clippy::large_enum_variant)] // built once a pass
pub(super) enum PreDeploy {
    /// All exited 0 (or there are none). `newly` is true in the pass that sees the last one
    /// succeed for the first time.
    Done { newly: bool },
    /// One is running, or is to be started now (`actions`).
    Wait {
        actions: Vec<Action>,
        message: String,
    },
    /// One failed or ran out of time; `stop` is its task to stop.
    Failed {
        detail: String,
        result: HookResult,
        hook: String,
        stop: Option<Action>,
    },
}

impl Ctx<'_> {
    fn run_of(&self, hook: &str, release: &Release) -> Option<&Result<Option<TaskRun>, String>> {
        self.obs
            .task_runs
            .get(&started_by(&self.desired.environment, hook, release))
    }

    /// Started in this attempt (the phase began at `r.since`).
    fn current(&self, r: &Record, run: &TaskRun) -> bool {
        run.created_at + CLOCK_SLACK >= r.since
    }

    fn view(
        &self,
        hook: &TaskHook,
        kind: HookKind,
        run: Option<&Result<Option<TaskRun>, String>>,
        r: &Record,
    ) -> HookView {
        let mut v = HookView {
            name: hook.name.clone(),
            kind,
            task_arn: None,
            state: "pending",
            exit_code: None,
            reason: None,
            log: None,
        };
        match run {
            None | Some(Ok(None)) => {}
            Some(Err(m)) => {
                v.state = "unknown";
                v.reason = Some(m.clone());
            }
            Some(Ok(Some(t))) => {
                let held = matches!(
                    r.phase,
                    crate::record::Phase::RollingBack { .. }
                        | crate::record::Phase::Rejected { .. }
                );
                if !t.succeeded() && !held && !self.current(r, t) {
                    return v;
                }
                v.task_arn = Some(t.arn.clone());
                v.exit_code = t.exit_code;
                v.log = t.log.clone();
                v.state = match t.state {
                    TaskState::Stopped if t.succeeded() => "succeeded",
                    TaskState::Stopped
                        if t.stop_code.as_deref() == Some("UserInitiated")
                            && t.stopped_reason
                                .as_deref()
                                .is_some_and(|s| s.contains("timeout")) =>
                    {
                        "timed_out"
                    }
                    TaskState::Stopped => "failed",
                    other => other.as_str(),
                };
                if t.state == TaskState::Stopped && !t.succeeded() {
                    v.reason = Some(t.failure());
                }
            }
        }
        v
    }

    /// The hooks and verification tasks of `release`, for the status.
    pub(super) fn hook_views(&self, r: &Record, release: &Release) -> Vec<super::HookView> {
        let d = self.desired;
        d.pre_deploy
            .iter()
            .map(|h| (h, HookKind::PreDeploy))
            .chain(d.verify.tasks.iter().map(|h| (h, HookKind::Verify)))
            .map(|(h, kind)| {
                let mut v = self.view(h, kind, self.run_of(&h.name, release), r);
                if kind == HookKind::PreDeploy
                    && r.hooks_passed.as_ref() == Some(release)
                    && v.state == "pending"
                {
                    v.state = "succeeded";
                }
                v
            })
            .collect()
    }

    /// Runs `hook` for `release` with the service's launch settings.
    pub(super) fn run_task(
        &self,
        r: &Record,
        hook: &TaskHook,
        kind: HookKind,
        release: &Release,
    ) -> Action {
        let d = self.desired;
        let spec = &d.services[&hook.service];
        Action::RunTask {
            hook: hook.name.clone(),
            kind,
            service: hook.service.clone(),
            base_task_definition: self.last_good_td(r, &hook.service),
            image_container: spec.container.clone(),
            image: self.image_uri(&hook.service, release),
            release: release.clone(),
            container: d.hook_container(hook).map(str::to_string),
            command: hook.command.clone(),
            started_by: started_by(&d.environment, &hook.name, release),
            settings: self
                .obs
                .services
                .get(&hook.service)
                .map(|s| s.run.clone())
                .unwrap_or_default(),
        }
    }

    fn stop(&self, hook: &TaskHook, run: &TaskRun) -> Action {
        Action::StopTask {
            hook: hook.name.clone(),
            task_arn: run.arn.clone(),
            reason: format!(
                "ecs-gitops: {} exceeded its timeout of {}",
                hook.name,
                format_duration(hook.timeout)
            ),
        }
    }

    /// The next step of `release`'s pre-deploy hooks, run one at a time in file order.
    pub(super) fn pre_deploy(&self, r: &Record, release: &Release) -> PreDeploy {
        let hooks = &self.desired.pre_deploy;
        if hooks.is_empty() || r.hooks_passed.as_ref() == Some(release) {
            return PreDeploy::Done { newly: false };
        }
        for hook in hooks {
            let run = match self.run_of(&hook.name, release) {
                None => {
                    return PreDeploy::Wait {
                        actions: Vec::new(),
                        message: format!("hook {}: its task was not looked for yet", hook.name),
                    };
                }
                Some(Err(m)) => {
                    return PreDeploy::Wait {
                        actions: Vec::new(),
                        message: format!(
                            "hook {}: its task cannot be read ({m}); waiting, nothing is deployed meanwhile",
                            hook.name
                        ),
                    };
                }
                Some(Ok(run)) => run.as_ref(),
            };
            match run {
                Some(t) if t.succeeded() => continue,
                Some(t) if self.current(r, t) => {
                    if t.state == TaskState::Stopped {
                        return PreDeploy::Failed {
                            detail: format!("hook {} {}", hook.name, t.failure()),
                            result: HookResult::Failed,
                            hook: hook.name.clone(),
                            stop: None,
                        };
                    }
                    let age = self.now.duration_since(t.created_at).unwrap_or_default();
                    if age > hook.timeout {
                        return PreDeploy::Failed {
                            detail: format!(
                                "hook {} did not finish within {}; its task {} is stopped",
                                hook.name,
                                format_duration(hook.timeout),
                                task_id(&t.arn)
                            ),
                            result: HookResult::TimedOut,
                            hook: hook.name.clone(),
                            stop: Some(self.stop(hook, t)),
                        };
                    }
                    return PreDeploy::Wait {
                        actions: Vec::new(),
                        message: format!(
                            "hook {} {} for {}s of {} (task {}); no service is updated before it exits 0",
                            hook.name,
                            t.state.as_str(),
                            age.as_secs(),
                            format_duration(hook.timeout),
                            task_id(&t.arn)
                        ),
                    };
                }
                // None, or a run from an earlier attempt that did not succeed: start one.
                _ => {
                    return PreDeploy::Wait {
                        actions: vec![self.run_task(r, hook, HookKind::PreDeploy, release)],
                        message: format!(
                            "running hook {} ({}) with {}'s revision of {}",
                            hook.name,
                            hook.command.join(" "),
                            release.short(),
                            short_td(&self.last_good_td(r, &hook.service))
                        ),
                    };
                }
            }
        }
        PreDeploy::Done { newly: true }
    }

    /// A hook of `release` that still runs (a superseded release's migration is let finish).
    pub(super) fn hook_running(&self, r: &Record, release: &Release) -> Option<String> {
        if r.hooks_passed.as_ref() == Some(release) {
            return None;
        }
        self.desired
            .pre_deploy
            .iter()
            .find_map(|h| match self.run_of(&h.name, release) {
                Some(Ok(Some(t))) if t.state != TaskState::Stopped && self.current(r, t) => {
                    Some(h.name.clone())
                }
                _ => None,
            })
    }

    /// The verification tasks of the bake of `release` that began at `r.since`: `Ok` when all
    /// exited 0, `Failed` on a non-zero exit or a timeout, `Unknown` while one runs or cannot
    /// be read. Also the actions to start (or stop) them, and the outcomes to count.
    pub(super) fn verify_tasks(
        &self,
        r: &Record,
        release: &Release,
    ) -> (Check, Vec<Action>, Vec<Outcome>) {
        let mut actions = Vec::new();
        let mut waiting = Vec::new();
        for task in &self.desired.verify.tasks {
            let run = match self.run_of(&task.name, release) {
                None => {
                    waiting.push(format!("verify task {}: not looked for yet", task.name));
                    continue;
                }
                Some(Err(m)) => {
                    waiting.push(format!("verify task {}: cannot be read ({m})", task.name));
                    continue;
                }
                Some(Ok(run)) => run.as_ref().filter(|t| self.current(r, t)),
            };
            let Some(t) = run else {
                actions.push(self.run_task(r, task, HookKind::Verify, release));
                waiting.push(format!("verify task {}: starting", task.name));
                continue;
            };
            if t.succeeded() {
                continue;
            }
            let outcome = |result| Outcome::Hook {
                name: task.name.clone(),
                kind: HookKind::Verify,
                result,
            };
            if t.state == TaskState::Stopped {
                return (
                    Check::Failed(format!("verify task {} {}", task.name, t.failure())),
                    Vec::new(),
                    vec![outcome(HookResult::Failed)],
                );
            }
            let age = self.now.duration_since(t.created_at).unwrap_or_default();
            if age > task.timeout {
                return (
                    Check::Failed(format!(
                        "verify task {} did not finish within {}; its task {} is stopped",
                        task.name,
                        format_duration(task.timeout),
                        task_id(&t.arn)
                    )),
                    vec![self.stop(task, t)],
                    vec![outcome(HookResult::TimedOut)],
                );
            }
            waiting.push(format!(
                "verify task {} {} for {}s of {}",
                task.name,
                t.state.as_str(),
                age.as_secs(),
                format_duration(task.timeout)
            ));
        }
        if waiting.is_empty() {
            (Check::Ok, actions, Vec::new())
        } else {
            (Check::Unknown(waiting.join("; ")), actions, Vec::new())
        }
    }

    /// `verify.logs`: `Failed` when a group has more matching events than its `max`.
    pub(super) fn log_check(&self) -> Check {
        let mut unknown = Vec::new();
        for l in &self.desired.verify.logs {
            match self.obs.log_counts.get(&l.group) {
                Some(Ok(n)) if *n > l.max => {
                    return Check::Failed(format!(
                        "{n} events matching {} in {} since the rollout completed (at most {} allowed)",
                        l.pattern, l.group, l.max
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(m)) => unknown.push(format!("log group {}: {m}", l.group)),
                None => unknown.push(format!("log group {}: not read yet", l.group)),
            }
        }
        if unknown.is_empty() {
            Check::Ok
        } else {
            Check::Unknown(unknown.join("; "))
        }
    }

    /// Counted when the bake verifies: every verification task succeeded.
    pub(super) fn verify_successes(&self) -> Vec<Outcome> {
        self.desired
            .verify
            .tasks
            .iter()
            .map(|t| Outcome::Hook {
                name: t.name.clone(),
                kind: HookKind::Verify,
                result: HookResult::Succeeded,
            })
            .collect()
    }
}

/// The task id from a task ARN, for messages.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}
