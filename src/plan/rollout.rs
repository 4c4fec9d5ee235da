//! A release in flight: Deploying (new revisions registered, services updated, waiting for
//! steady state) and Baking (alarms and health watched for `bake`), and a newer release in git
//! superseding it.

use std::time::Duration;

use super::hooks::PreDeploy;
use super::{
    Action, CRASH_LOOP_FAILED_TASKS, Check, Ctx, Gate, HookKind, HookResult, Outcome, Plan,
    RolloutState, ServiceState, UpdateWhy, Why, short_td,
};
use crate::desired::{Release, format_duration};
use crate::record::{Phase, Reason, Record, ceil_millis};

impl Ctx<'_> {
    pub(super) fn start_deploy(&self, r: &Record, gates: Vec<Gate>, why: Why) -> Plan {
        let d = self.desired;
        let mut p = self.base(
            r,
            format!(
                "deploying {} to {}",
                d.release.short(),
                d.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        p.gates = gates;
        for s in p.record.services.values_mut() {
            s.target_task_definition = None;
        }
        let target = d.release.clone();
        // Pre-deploy hooks first; this attempt starts now.
        let mut attempt = r.clone();
        attempt.since = ceil_millis(self.now);
        match self.pre_deploy(&attempt, &target) {
            PreDeploy::Done { newly } => {
                if !d.pre_deploy.is_empty() {
                    p.record.hooks_passed = Some(target.clone());
                }
                if newly {
                    p.outcomes.extend(self.pre_deploy_successes());
                }
            }
            PreDeploy::Wait { actions, message } => {
                p.actions = actions;
                p.message = format!("deploying {}: {message}", target.short());
                return self.go(p, Phase::Deploying { target }, why);
            }
            PreDeploy::Failed {
                detail,
                result,
                hook,
                stop,
            } => return self.reject_pre_deploy(p, &target, detail, result, hook, stop),
        }
        for name in d.services.keys() {
            let base = self.last_good_td(r, name);
            let release = d.release_of(name).clone();
            if self.release_of_td(&base) == Some(&release) {
                // Last good already carries this service's release: no new revision, and no
                // new deployment unless the service runs something else.
                if self.obs.services.get(name).map(ServiceState::current) != Some(base.as_str()) {
                    p.actions.push(Action::Update {
                        service: name.clone(),
                        task_definition: base,
                        why: UpdateWhy::Restore,
                    });
                }
                continue;
            }
            p.actions.push(self.deploy_action(r, name));
        }
        self.go(p, Phase::Deploying { target }, why)
    }

    fn pre_deploy_successes(&self) -> Vec<Outcome> {
        self.desired
            .pre_deploy
            .iter()
            .map(|h| Outcome::Hook {
                name: h.name.clone(),
                kind: HookKind::PreDeploy,
                result: HookResult::Succeeded,
            })
            .collect()
    }

    /// A pre-deploy hook failed: the release is Rejected at once, with no rollback, since no
    /// service was touched.
    fn reject_pre_deploy(
        &self,
        mut p: Plan,
        release: &Release,
        detail: String,
        result: HookResult,
        hook: String,
        stop: Option<Action>,
    ) -> Plan {
        p.message = format!(
            "release {} rejected (pre_deploy): {detail}; no service was touched",
            release.short()
        );
        p.actions = stop.into_iter().collect();
        p.record.rejected = Some((release.clone(), Reason::PreDeploy));
        p.outcomes.push(Outcome::Hook {
            name: hook,
            kind: HookKind::PreDeploy,
            result,
        });
        let phase = Phase::Rejected {
            release: release.clone(),
            reason: Reason::PreDeploy,
        };
        self.go(p, phase, Why::Failed(Reason::PreDeploy))
    }

    /// `<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<release>`: the one image of
    /// `service` at `release`, for its deploy and its hooks alike (so the revision a hook
    /// registers is the one the deploy reuses).
    pub(super) fn image_uri(&self, service: &str, release: &Release) -> String {
        format!(
            "{}.dkr.ecr.{}.amazonaws.com/{}:{release}",
            self.obs.account, self.desired.region, self.desired.services[service].repository
        )
    }

    /// A new revision of `service`'s last good task definition carrying its desired image.
    pub(super) fn deploy_action(&self, r: &Record, service: &str) -> Action {
        let release = self.desired.release_of(service).clone();
        Action::Deploy {
            service: service.to_string(),
            base_task_definition: self.last_good_td(r, service),
            container: self.desired.services[service].container.clone(),
            image: self.image_uri(service, &release),
            release,
        }
    }

    /// A newer release named by git while `in_flight` is deploying or baking.
    fn supersede(&self, r: &Record, in_flight: &Release) -> Plan {
        let d = &self.desired.release;
        if r.last_good.as_ref() == Some(d) && !self.overrides_pending(r) {
            // Git went back to the last good release: restore it, no gates needed.
            let mut p = self.base(
                r,
                format!("git names last good {} again; restoring it", d.short()),
            );
            self.restore_last_good(&mut p, r, UpdateWhy::Restore);
            return self.go(p, Phase::Drifted, Why::Superseded);
        }
        let gates = self.gates(r);
        if gates.iter().all(|g| g.passed) {
            return self.start_deploy(r, gates, Why::Superseded);
        }
        // The new release may not ship yet and the one in flight is no longer wanted: put the
        // last good release back and wait for the gate.
        let mut p = self.base(
            r,
            format!(
                "release {} blocked ({}); in-flight {} abandoned, last good restored",
                d.short(),
                gates
                    .iter()
                    .filter(|g| !g.passed)
                    .map(|g| g.detail.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                in_flight.short()
            ),
        );
        self.restore_last_good(&mut p, r, UpdateWhy::Restore);
        p.outcomes = gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| super::Outcome::Blocked(g.name))
            .collect();
        p.gates = gates;
        self.go(p, Phase::Blocked, Why::Superseded)
    }

    /// The revision a service should be on for the release in flight, if known.
    fn target_td(&self, r: &Record, name: &str, s: &ServiceState) -> Option<String> {
        r.service(name).target_task_definition.or_else(|| {
            let want = self.desired.release_of(name);
            // Already carries the wanted release (also when that is last good, as for a
            // service whose `release:` override did not change).
            (self.release_of_td(s.current()) == Some(want)).then(|| s.current().to_string())
        })
    }

    /// Failure of the release in flight, if the services show one.
    fn rollout_failure(&self, r: &Record) -> Option<(Reason, String)> {
        for (n, s) in self.services() {
            let Some(target) = self.target_td(r, n, s) else {
                continue;
            };
            // ECS' own record first: it names what ECS did (and why) when it rolled back.
            if let Some(failure) = self.ecs_failure(r, n, s, &target) {
                return Some(failure);
            }
            let failed = s.deployments.iter().find(|d| {
                d.task_definition == target && d.rollout_state == Some(RolloutState::Failed)
            });
            if let Some(dep) = failed {
                return Some(if s.current() != target {
                    (
                        Reason::CircuitBreaker,
                        format!(
                            "ECS circuit breaker rolled {n} back (deployment {} failed)",
                            dep.id
                        ),
                    )
                } else {
                    (
                        Reason::RolloutFailed,
                        format!("ECS marked {n}'s deployment {} FAILED", dep.id),
                    )
                });
            }
            if s.current() != target && r.service(n).target_task_definition.is_some() {
                return Some((
                    Reason::RolloutFailed,
                    format!(
                        "{n} was moved off the target revision to {} by something else",
                        short_td(s.current())
                    ),
                ));
            }
            if let Some(p) = s.primary()
                && p.task_definition == target
                && p.failed_tasks >= CRASH_LOOP_FAILED_TASKS
                // ECS keeps counting tasks that failed and were replaced; only tasks still
                // missing make it a crash loop.
                && p.running < p.desired
            {
                return Some((
                    Reason::CrashLoop,
                    format!("{n}: {} tasks failed to start or stay up", p.failed_tasks),
                ));
            }
        }
        None
    }

    pub(super) fn deploying(&self, r: &Record, target: &Release) -> Plan {
        if target != &self.desired.release {
            if let Some(hook) = self.hook_running(r, target) {
                // A migration stopped halfway can leave the schema between two versions; the
                // new release's hooks start once it has exited.
                return self.base(
                    r,
                    format!(
                        "git names {}; letting {}'s hook {hook} finish before the new release's hooks start",
                        self.desired.release.short(),
                        target.short()
                    ),
                );
            }
            return self.supersede(r, target);
        }
        let hooks_newly = match self.pre_deploy(r, target) {
            PreDeploy::Done { newly } => newly,
            PreDeploy::Wait { actions, message } => {
                let mut p = self.base(r, format!("deploying {}: {message}", target.short()));
                p.actions = actions;
                return p;
            }
            PreDeploy::Failed {
                detail,
                result,
                hook,
                stop,
            } => {
                let p = self.base(r, String::new());
                return self.reject_pre_deploy(p, target, detail, result, hook, stop);
            }
        };
        if let Some((reason, msg)) = self.rollout_failure(r) {
            return self.start_rollback(r, target, reason, msg);
        }
        if let Check::Failed(m) = self.alarm_check() {
            return self.start_rollback(r, target, Reason::Alarm, m);
        }
        let mut p = self.base(r, String::new());
        if hooks_newly {
            // The services' rollout (and its timeout) starts now; the hooks had their own.
            p.record.hooks_passed = Some(target.clone());
            p.record.since = ceil_millis(self.now);
            p.outcomes.extend(self.pre_deploy_successes());
        }
        let mut waiting = Vec::new();
        let mut all_steady = true;
        for (n, s) in self.services() {
            match self.target_td(r, n, s) {
                None => {
                    // Intent recorded but UpdateService not seen (killed in between): redo it.
                    all_steady = false;
                    p.actions.push(self.deploy_action(r, n));
                    waiting.push(format!("{n}: deploying"));
                }
                Some(td) => {
                    p.record
                        .services
                        .entry(n.clone())
                        .or_default()
                        .target_task_definition = Some(td.clone());
                    let updated = r.service(n).target_task_definition.is_some();
                    if let Err(what) = self.rollout_done(&p.record, s, &td, updated) {
                        all_steady = false;
                        waiting.push(format!("{n}: {what}"));
                    }
                }
            }
        }
        let elapsed = self.now.duration_since(p.record.since).unwrap_or_default();
        if all_steady {
            let mut b = self.base(
                &p.record,
                format!(
                    "rollout of {} complete; baking for {}",
                    target.short(),
                    format_duration(self.desired.verify.bake)
                ),
            );
            b.outcomes = std::mem::take(&mut p.outcomes);
            // The bake starts now, and with it the verification tasks.
            for task in &self.desired.verify.tasks {
                b.actions
                    .push(self.run_task(r, task, HookKind::Verify, target));
            }
            let phase = Phase::Baking {
                target: target.clone(),
            };
            return self.go(b, phase, Why::RolloutComplete);
        }
        if elapsed > self.desired.verify.rollout_timeout && p.actions.is_empty() {
            return self.start_rollback(
                r,
                target,
                Reason::RolloutTimeout,
                format!(
                    "not steady after {} ({})",
                    format_duration(self.desired.verify.rollout_timeout),
                    waiting.join(", ")
                ),
            );
        }
        p.message = format!(
            "rolling out {} ({}s of {}): {}",
            target.short(),
            elapsed.as_secs(),
            format_duration(self.desired.verify.rollout_timeout),
            waiting.join(", ")
        );
        p
    }

    pub(super) fn baking(&self, r: &Record, target: &Release) -> Plan {
        if target != &self.desired.release {
            return self.supersede(r, target);
        }
        if let Some((reason, msg)) = self.rollout_failure(r) {
            return self.start_rollback(r, target, reason, msg);
        }
        let alarms = self.alarm_check();
        if let Check::Failed(m) = &alarms {
            return self.start_rollback(r, target, Reason::Alarm, m.clone());
        }
        let health = self.health_check();
        if let Check::Failed(m) = &health {
            return self.start_rollback(r, target, Reason::Health, m.clone());
        }
        let (tasks, task_actions, task_outcomes) = self.verify_tasks(r, target);
        if let Check::Failed(m) = &tasks {
            let mut p = self.start_rollback(r, target, Reason::VerifyTask, m.clone());
            p.actions.extend(task_actions);
            p.outcomes.extend(task_outcomes);
            return p;
        }
        let logs = self.log_check();
        if let Check::Failed(m) = &logs {
            return self.start_rollback(r, target, Reason::LogErrors, m.clone());
        }
        if self.obs.resumed {
            // Nothing acted on what happened while suspended: the bake starts again.
            let mut p = self.base(
                r,
                format!(
                    "resumed after a suspension: the bake of {} starts again ({})",
                    target.short(),
                    format_duration(self.desired.verify.bake)
                ),
            );
            p.actions = task_actions;
            let phase = Phase::Baking {
                target: target.clone(),
            };
            return self.go(p, phase, Why::Resumed);
        }
        let bake = self.desired.verify.bake;
        let elapsed = self.now.duration_since(r.since).unwrap_or_default();
        let unknown: Vec<String> = [&alarms, &health, &tasks, &logs]
            .into_iter()
            .filter_map(|c| match c {
                Check::Unknown(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        if elapsed >= bake && unknown.is_empty() {
            let mut p = self.base(
                r,
                format!(
                    "release {} verified after {} bake",
                    target.short(),
                    format_duration(bake)
                ),
            );
            p.record.last_good = Some(target.clone());
            p.record.mark_verified(target);
            for (n, s) in self.services() {
                let td = self
                    .target_td(r, n, s)
                    .unwrap_or_else(|| s.current().to_string());
                let e = p.record.services.entry(n.clone()).or_default();
                e.last_good_task_definition = Some(td);
                e.target_task_definition = None;
            }
            p.outcomes.extend(self.verify_successes());
            return self.go(p, Phase::InSync, Why::Verified);
        }
        let mut p = self.base(r, String::new());
        p.actions = task_actions;
        p.message = if unknown.is_empty() {
            format!(
                "baking {}: {}s of {}; alarms and health OK",
                target.short(),
                elapsed.as_secs(),
                format_duration(bake)
            )
        } else {
            format!(
                "baking {}: {}s of {}; cannot finish while data is unknown: {}",
                target.short(),
                elapsed.as_secs(),
                format_duration(bake),
                unknown.join("; ")
            )
        };
        if unknown.is_empty() && elapsed < bake {
            p.requeue = p
                .requeue
                .min(bake - elapsed)
                .max(Duration::from_millis(100));
        }
        p
    }
}
