//! The decision: `plan(desired, observed, record, now) -> Plan`, with no I/O.
//!
//! Every pass of an environment observes the world (git, ECS, ECR, CloudWatch, health URLs),
//! calls this function, and hands the result to `apply`. The function is level-triggered: it
//! looks only at its arguments, never at what an earlier pass did in memory, so a restarted
//! controller decides exactly as the one that died would have. The phase machine is explicit:
//! the record's `Phase` (which carries its data: the target in flight, the release rolled back
//! and why) selects a step function, and every change of phase goes through `Ctx::go`, which
//! sets the time, the transition and the outcome the metrics count.
//!
//! The plan also says what is persisted (`persist`): apply writes the new record before it acts
//! (a write-ahead of intent), so any action is safe to repeat after a SIGKILL.

mod gates;
mod hooks;
mod managed;
pub mod observed;
mod rollback;
mod rollout;
mod settled;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

pub use hooks::{HookView, started_by};
pub use observed::{
    AlarmState, Check, Deployment, DeploymentStatus, Needs, Observed, PausedHook, RolloutState,
    RunSettings, SdStatus, ServiceDeployment, ServiceState, Strategy, TaskDefinitionInfo, TaskRun,
    TaskState, Upstream,
};

use crate::desired::{DesiredState, Release};
use crate::record::{Phase, PhaseKind, Reason, Record, Unreadable, ceil_millis};

/// Failed tasks on the newest deployment at which the rollout counts as a crash loop. ECS'
/// own circuit breaker uses the same minimum threshold.
pub const CRASH_LOOP_FAILED_TASKS: i32 = 3;
/// While Deploying, Baking or RollingBack, an environment is looked at this often.
pub const IN_FLIGHT_REQUEUE: Duration = Duration::from_secs(2);

/// The record as read from AWS: none yet (a new environment), or one that cannot be read.
pub type RecordRead = Result<Option<Record>, Unreadable>;

// A pass plans a handful of actions; their size does not matter, their readability does.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Register (or reuse) a revision of `base` with `container`'s image set to `image`, tag it
    /// with `release`, point the service at it and record it as the target.
    Deploy {
        service: String,
        base_task_definition: String,
        container: Option<String>,
        image: String,
        release: Release,
    },
    /// Point the service at an existing revision (rollback, drift correction).
    Update {
        service: String,
        task_definition: String,
        why: UpdateWhy,
    },
    /// Run a hook or verification task: the release's revision of `service`'s task definition
    /// (registered or reused as for a deploy), `command` on `container`, the service's launch
    /// settings, and `started_by` so that it is found again instead of started twice.
    RunTask {
        hook: String,
        kind: HookKind,
        service: String,
        base_task_definition: String,
        /// The container whose image carries the release (the service's `container`).
        image_container: Option<String>,
        image: String,
        release: Release,
        /// The container whose command is overridden.
        container: Option<String>,
        command: Vec<String>,
        started_by: String,
        settings: RunSettings,
    },
    /// StopServiceDeployment with `stopType: ROLLBACK`: ECS puts the service's source revision
    /// (its last good one) back and, for a managed strategy, moves production traffic back at
    /// once.
    StopDeployment {
        service: String,
        service_deployment: String,
    },
    /// Stop a hook's task (its timeout passed).
    StopTask {
        hook: String,
        task_arn: String,
        reason: String,
    },
}

/// Which list a one-off task comes from; the `kind` label of the hook metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    PreDeploy,
    Verify,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreDeploy => "pre_deploy",
            HookKind::Verify => "verify",
        }
    }
}

/// How a hook's run ended; the `result` label of the hook metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookResult {
    Succeeded,
    Failed,
    TimedOut,
}

impl HookResult {
    pub const ALL: [HookResult; 3] = [
        HookResult::Succeeded,
        HookResult::Failed,
        HookResult::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Succeeded => "succeeded",
            HookResult::Failed => "failed",
            HookResult::TimedOut => "timed_out",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateWhy {
    Rollback,
    Drift,
    Restore,
}

/// The gates a new release must pass; also the `gate` label of the blocked metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateName {
    Image,
    Alarm,
    Promotion,
    Service,
    RecordUnreadable,
    Freeze,
    /// The environment's `account.role_arn` could not be assumed: nothing can be read.
    AssumeRole,
}

impl GateName {
    pub const ALL: [GateName; 7] = [
        GateName::Image,
        GateName::Alarm,
        GateName::Promotion,
        GateName::Service,
        GateName::RecordUnreadable,
        GateName::Freeze,
        GateName::AssumeRole,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateName::Image => "image",
            GateName::Alarm => "alarm",
            GateName::Promotion => "promotion",
            GateName::Service => "service",
            GateName::RecordUnreadable => "record_unreadable",
            GateName::Freeze => "freeze",
            GateName::AssumeRole => "assume_role",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub name: GateName,
    pub passed: bool,
    pub detail: String,
}

/// Why a phase changed: the `reason` of the status history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// First sight of the environment.
    Adopted,
    NewRelease,
    /// A newer release in git replaced the one in flight.
    Superseded,
    RolloutComplete,
    Verified,
    /// The release in flight failed (into RollingBack, and RollingBack into Rejected).
    Failed(Reason),
    /// Settled into Rejected (the desired release is the one held back).
    RolledBack,
    Gate,
    RecordUnreadable,
    Drift,
    InSync,
    Suspended,
    /// A bake restarted after a suspension.
    Resumed,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Adopted => "adopted",
            Why::NewRelease => "new_release",
            Why::Superseded => "superseded",
            Why::RolloutComplete => "rollout_complete",
            Why::Verified => "verified",
            Why::Failed(r) => r.as_str(),
            Why::RolledBack => "rolled_back",
            Why::Gate => "gate",
            Why::RecordUnreadable => "record_unreadable",
            Why::Drift => "drift",
            Why::InSync => "in_sync",
            Why::Suspended => "suspended",
            Why::Resumed => "resumed",
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `None` on first sight of the environment.
    pub from: Option<PhaseKind>,
    pub to: PhaseKind,
    pub reason: Why,
}

/// Counted by metrics when the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    RolledBack(Reason),
    Superseded,
    DriftCorrected,
    Blocked(GateName),
    /// Rejected without a rollback (a pre-deploy hook failed; nothing was touched).
    Rejected(Reason),
    /// A hook or verification task ended (counted once, in the pass that acts on it).
    Hook {
        name: String,
        kind: HookKind,
        result: HookResult,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The record after this pass (its phase is the environment's phase).
    pub record: Record,
    /// Whether apply writes `record` to the services' tags. A gate that says no, with nothing
    /// to undo, writes nothing: what runs is still what the record says.
    pub persist: bool,
    pub actions: Vec<Action>,
    pub gates: Vec<Gate>,
    pub message: String,
    pub transition: Option<Transition>,
    pub outcomes: Vec<Outcome>,
    pub requeue: Duration,
    /// The hooks and verification tasks of the release in flight, as last seen (status).
    pub hooks: Vec<HookView>,
}

impl Plan {
    pub fn phase(&self) -> PhaseKind {
        self.record.phase.kind()
    }
}

/// What the next pass must observe, given the record it will decide from.
pub fn needs(desired: &DesiredState, record: &RecordRead) -> Needs {
    let r = match record {
        Err(_) => return Needs::default(),
        Ok(None) => {
            return Needs {
                gates: true,
                alarms: true,
                pre_deploy: if desired.pre_deploy.is_empty() {
                    Vec::new()
                } else {
                    vec![desired.release.clone()]
                },
                ..Needs::default()
            };
        }
        Ok(Some(r)) => r,
    };
    let new_release = Some(&desired.release) != r.last_good.as_ref()
        && Some(&desired.release) != r.rejected.as_ref().map(|x| &x.0);
    // Pre-deploy hooks are read whenever a release may start or is starting: the runs of a
    // release whose hooks already passed are not started again.
    let hooks_for = |releases: &[&Release]| -> Vec<Release> {
        releases
            .iter()
            .filter(|x| !desired.pre_deploy.is_empty() && r.hooks_passed.as_ref() != Some(**x))
            .map(|x| (*x).clone())
            .collect()
    };
    let mut n = match &r.phase {
        Phase::Deploying { target } => Needs {
            gates: target != &desired.release,
            alarms: true,
            health: false,
            // A superseded release's hook that still runs is waited for.
            pre_deploy: hooks_for(&[&desired.release, target]),
            ..Needs::default()
        },
        Phase::Baking { target } => Needs {
            gates: target != &desired.release,
            alarms: true,
            health: true,
            pre_deploy: if target != &desired.release {
                hooks_for(&[&desired.release])
            } else {
                Vec::new()
            },
            verify_tasks: (target == &desired.release && !desired.verify.tasks.is_empty())
                .then(|| target.clone()),
            logs_since: (target == &desired.release && !desired.verify.logs.is_empty())
                .then_some(r.since),
            service_deployments: false,
        },
        // What made a hook or verification task fail is shown while the release is held.
        Phase::RollingBack { release, reason } | Phase::Rejected { release, reason }
            if matches!(reason, Reason::PreDeploy | Reason::VerifyTask) =>
        {
            Needs {
                pre_deploy: if *reason == Reason::PreDeploy && release == &desired.release {
                    vec![release.clone()]
                } else {
                    Vec::new()
                },
                verify_tasks: (*reason == Reason::VerifyTask && release == &desired.release)
                    .then(|| release.clone()),
                ..settled_needs(desired, new_release, &hooks_for)
            }
        }
        Phase::RollingBack { .. } => Needs::default(),
        _ => settled_needs(desired, new_release, &hooks_for),
    };
    // ECS' own record of the rollout (or of its rollback) decides when it is over.
    n.service_deployments = matches!(r.phase, Phase::Deploying { .. } | Phase::RollingBack { .. });
    n
}

fn settled_needs(
    desired: &DesiredState,
    new_release: bool,
    hooks_for: &dyn Fn(&[&Release]) -> Vec<Release>,
) -> Needs {
    Needs {
        gates: new_release,
        alarms: new_release,
        pre_deploy: if new_release {
            hooks_for(&[&desired.release])
        } else {
            Vec::new()
        },
        ..Needs::default()
    }
}

struct Ctx<'a> {
    desired: &'a DesiredState,
    obs: &'a Observed,
    now: SystemTime,
    interval: Duration,
    /// The phase the pass started in; `None` on first sight.
    from: Option<PhaseKind>,
}

/// Decides the next step of one environment.
pub fn plan(
    desired: &DesiredState,
    obs: &Observed,
    record: &RecordRead,
    now: SystemTime,
    interval: Duration,
) -> Plan {
    let mut ctx = Ctx {
        desired,
        obs,
        now,
        interval,
        from: None,
    };
    let record = match record {
        Err(e) => return ctx.unreadable(e),
        Ok(r) => r.as_ref(),
    };
    if !obs.missing_services.is_empty() {
        let record = record.cloned().unwrap_or_else(|| ctx.adopt());
        ctx.from = Some(record.phase.kind());
        let p = ctx.missing_services(&record);
        return ctx.finish(p);
    }
    let record = match record {
        Some(r) => {
            ctx.from = Some(r.phase.kind());
            ctx.complete(r.clone())
        }
        None => ctx.adopt(),
    };
    if desired.suspend {
        let mut p = ctx.finish(ctx.suspended(&record));
        p.persist = false;
        return p;
    }
    let mut p = match &record.phase {
        Phase::Deploying { target } => ctx.deploying(&record, target),
        Phase::Baking { target } => ctx.baking(&record, target),
        Phase::RollingBack { release, reason } => ctx.rolling_back(&record, release, *reason),
        Phase::InSync
        | Phase::Blocked
        | Phase::Rejected { .. }
        | Phase::Drifted
        | Phase::Suspended => ctx.settled(&record),
    };
    // The hooks of the release in flight (or just rejected by one), judged against the
    // attempt that ran them.
    let shown = match &p.record.phase {
        Phase::Deploying { target } | Phase::Baking { target } => Some(target),
        Phase::RollingBack { release, reason } | Phase::Rejected { release, reason }
            if matches!(reason, Reason::PreDeploy | Reason::VerifyTask) =>
        {
            Some(release)
        }
        _ => None,
    };
    if let Some(release) = shown.cloned() {
        let attempt = if p.transition.is_none() {
            &p.record
        } else {
            &record
        };
        p.hooks = ctx.hook_views(attempt, &release);
    }
    ctx.finish(p)
}

impl Ctx<'_> {
    fn services(&self) -> impl Iterator<Item = (&String, &ServiceState)> {
        self.desired
            .services
            .keys()
            .filter_map(|n| self.obs.services.get(n).map(|s| (n, s)))
    }

    fn release_of_td(&self, td: &str) -> Option<&Release> {
        self.obs
            .task_definitions
            .get(td)
            .and_then(|i| i.release.as_ref())
    }

    /// First sight of an environment: what its services run now becomes last good.
    fn adopt(&self) -> Record {
        let mut r = Record::new(Phase::InSync, self.now);
        let mut releases = Vec::new();
        for (name, s) in self.services() {
            let td = s.current().to_string();
            releases.push(self.release_of_td(&td).cloned());
            r.services.insert(
                name.clone(),
                crate::record::ServiceRecord {
                    last_good_task_definition: Some(td),
                    target_task_definition: None,
                },
            );
        }
        // One release for the environment only if every service agrees on it.
        if let Some(Some(first)) = releases.first()
            && releases.iter().all(|x| x.as_ref() == Some(first))
        {
            r.last_good = Some(first.clone());
            r.mark_verified(first);
        }
        r
    }

    /// A service added to the file after the environment was adopted: adopt just it.
    fn complete(&self, mut r: Record) -> Record {
        for (name, s) in self.services() {
            let e = r.services.entry(name.clone()).or_default();
            if e.last_good_task_definition.is_none() {
                e.last_good_task_definition = Some(s.current().to_string());
            }
        }
        r
    }

    fn last_good_td(&self, r: &Record, service: &str) -> String {
        r.service(service)
            .last_good_task_definition
            .unwrap_or_else(|| self.obs.services[service].current().to_string())
    }

    fn requeue(&self, phase: PhaseKind) -> Duration {
        if phase.in_flight() {
            IN_FLIGHT_REQUEUE.min(self.interval)
        } else {
            self.interval
        }
    }

    /// A plan that keeps `record` (and its phase) as it is.
    fn base(&self, record: &Record, message: String) -> Plan {
        Plan {
            record: record.clone(),
            persist: true,
            actions: Vec::new(),
            gates: Vec::new(),
            message,
            transition: None,
            outcomes: Vec::new(),
            requeue: self.requeue(record.phase.kind()),
            hooks: Vec::new(),
        }
    }

    /// The one way a phase changes: the new phase with its data, the time it began, the
    /// transition for the history and the log, and what the metrics count.
    fn go(&self, mut p: Plan, to: Phase, why: Why) -> Plan {
        let kind = to.kind();
        match (why, kind) {
            (Why::Verified, _) => p.outcomes.push(Outcome::Verified),
            (Why::Failed(reason), PhaseKind::RollingBack) => {
                p.outcomes.push(Outcome::RolledBack(reason))
            }
            (Why::Failed(reason), PhaseKind::Rejected) if reason == Reason::PreDeploy => {
                p.outcomes.push(Outcome::Rejected(reason))
            }
            (Why::Superseded, _) => p.outcomes.push(Outcome::Superseded),
            _ => {}
        }
        p.record.phase = to;
        p.record.since = ceil_millis(self.now);
        p.transition = Some(Transition {
            from: self.from,
            to: kind,
            reason: why,
        });
        p.requeue = self.requeue(kind);
        p
    }

    /// Into a settled phase (InSync, Blocked, Rejected, Drifted): a transition only when the
    /// phase changes (or on first sight, as an adoption).
    fn settle(&self, r: &Record, to: Phase, why: Why, message: String) -> Plan {
        let p = self.base(r, message);
        match self.from {
            None => self.go(p, to, Why::Adopted),
            Some(from) if from != to.kind() => self.go(p, to, why),
            Some(_) => {
                let mut p = p;
                p.record.phase = to;
                p
            }
        }
    }

    /// What every plan ends with: a gate that says no writes nothing unless something must be
    /// undone; the desired-state commit is recorded with any new intent.
    fn finish(&self, mut p: Plan) -> Plan {
        p.persist = !(p.phase() == PhaseKind::Blocked && p.actions.is_empty());
        if (p.transition.is_some() || !p.actions.is_empty() || p.record.source_revision.is_none())
            && self.obs.source_revision.is_some()
        {
            p.record.source_revision = self.obs.source_revision.clone();
        }
        p
    }

    /// `suspend: true`: what is seen is reported (drift included), nothing is done or written.
    fn suspended(&self, r: &Record) -> Plan {
        // A service on the revision of the release in flight is not drift.
        let drifted: Vec<&str> = self
            .services()
            .filter(|(n, s)| {
                s.current() != self.last_good_td(r, n)
                    && r.service(n).target_task_definition.as_deref() != Some(s.current())
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let mut message = format!(
            "suspended (`suspend: true` in desired-state/{}.yaml): observing only, nothing is written to AWS",
            self.desired.environment
        );
        if !drifted.is_empty() {
            message.push_str(&format!(
                "; drift seen: {} not on the recorded task definition",
                drifted.join(", ")
            ));
        }
        let p = self.base(r, message);
        if self.from == Some(PhaseKind::Suspended) {
            return p;
        }
        self.go(p, Phase::Suspended, Why::Suspended)
    }

    fn missing_services(&self, record: &Record) -> Plan {
        let detail = format!(
            "service(s) {} not found in cluster {} ({}); create them or remove them from desired-state/{}.yaml",
            self.obs.missing_services.join(", "),
            self.desired.cluster,
            self.desired.region,
            self.desired.environment
        );
        let mut p = self.settle(record, Phase::Blocked, Why::Gate, detail.clone());
        p.gates.push(Gate {
            name: GateName::Service,
            passed: false,
            detail,
        });
        p.outcomes.push(Outcome::Blocked(GateName::Service));
        p
    }

    /// Tags that cannot be read: hold everything. Nothing is written and nothing running is
    /// adopted as verified, until a human fixes or removes the tags (or a newer version that
    /// wrote them runs).
    fn unreadable(&self, e: &Unreadable) -> Plan {
        let detail = format!(
            "{e}; fix or remove the ecs-gitops: tags (or run the version that wrote them); nothing is written until then"
        );
        let record = Record::new(Phase::Blocked, self.now);
        let mut p = self.base(&record, detail.clone());
        p.persist = false;
        p.transition = Some(Transition {
            from: None,
            to: PhaseKind::Blocked,
            reason: Why::RecordUnreadable,
        });
        p.gates.push(Gate {
            name: GateName::RecordUnreadable,
            passed: false,
            detail,
        });
        p.outcomes
            .push(Outcome::Blocked(GateName::RecordUnreadable));
        p
    }
}

/// `family:rev` from a task definition ARN, for messages.
pub fn short_td(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}
