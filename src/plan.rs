//! The decision: `plan(desired, observed, record, now) -> Plan`, with no I/O.
//!
//! Every pass of an environment observes the world (git, ECS, ECR, CloudWatch, health URLs),
//! calls this function, and hands the result to `apply`. The function is level-triggered: it
//! looks only at its arguments, never at what an earlier pass did in memory, so a restarted
//! controller decides exactly as the one that died would have. The phase machine is explicit:
//! the record's phase selects a step function, and each step returns the next record, the
//! actions, and why.
//!
//! Apply persists the new record before it acts (a write-ahead of intent), so any action is
//! safe to repeat: a killed controller that restarts sees the intent and finishes it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::desired::{DesiredState, DriftMode, Release, format_duration};
use crate::record::{Phase, Reason, Record, ServiceRecord};

/// Failed tasks on the newest deployment at which the rollout counts as a crash loop. ECS'
/// own circuit breaker uses the same minimum threshold.
pub const CRASH_LOOP_FAILED_TASKS: i32 = 3;
/// While Deploying, Baking or RollingBack, an environment is looked at this often.
pub const IN_FLIGHT_REQUEUE: Duration = Duration::from_secs(2);

/// What one observation of a gate-like input found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok,
    Failed(String),
    /// Could not be read (API error, timeout): never treated as healthy.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    pub id: String,
    pub status: String,
    pub task_definition: String,
    pub rollout_state: Option<String>,
    pub running: i32,
    pub desired: i32,
    pub failed_tasks: i32,
}

/// What a task definition revision carries (immutable, so cached by the observer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskDefinitionInfo {
    /// `ecs-gitops:release` tag, or the image tag of the managed container when it is a SHA.
    pub release: Option<Release>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub arn: String,
    pub task_definition: String,
    pub deployments: Vec<Deployment>,
    pub running: i32,
    pub desired: i32,
    /// The controller's tags on the service (the record), as read.
    pub tags: BTreeMap<String, String>,
}

impl ServiceState {
    /// The PRIMARY deployment's task definition: what the service is moving to or runs.
    pub fn current(&self) -> &str {
        self.deployments
            .iter()
            .find(|d| d.status == "PRIMARY")
            .map(|d| d.task_definition.as_str())
            .unwrap_or(&self.task_definition)
    }

    fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }

    /// Steady on `td`: its PRIMARY deployment completed, nothing else left, running == desired.
    pub fn steady_on(&self, td: &str) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        p.task_definition == td
            && matches!(p.rollout_state.as_deref(), Some("COMPLETED") | None)
            && self.deployments.len() == 1
            && p.running == p.desired
            && self.running == self.desired
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The upstream environment's verified releases (newest first).
    Verified(Vec<Release>),
    Unknown(String),
}

/// Everything one pass saw. `None` for an input means it was not looked at this pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// AWS account of the cluster (from the service ARNs); used to build image URIs.
    pub account: Option<String>,
    pub services: BTreeMap<String, ServiceState>,
    pub missing_services: Vec<String>,
    pub task_definitions: BTreeMap<String, TaskDefinitionInfo>,
    /// Per service: does `<repository>:<release>` exist in ECR.
    pub images: Option<BTreeMap<String, Check>>,
    /// Per alarm name; `Err` when DescribeAlarms could not be read.
    pub alarms: Option<Result<BTreeMap<String, AlarmState>, String>>,
    /// One per health check, in file order.
    pub health: Option<Vec<Check>>,
    pub upstream: Option<Upstream>,
    /// The desired-state commit.
    pub source_revision: Option<String>,
}

/// What the observer must read for the next decision (so a pass in sync stays cheap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub gates: bool,
    pub alarms: bool,
    pub health: bool,
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateWhy {
    Rollback,
    Drift,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<Phase>,
    pub to: Phase,
    pub reason: String,
}

/// Counted by metrics when the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    RolledBack(Reason),
    Superseded,
    DriftCorrected,
    Blocked(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub phase: Phase,
    pub record: Record,
    pub actions: Vec<Action>,
    pub gates: Vec<Gate>,
    pub message: String,
    pub transition: Option<Transition>,
    pub outcomes: Vec<Outcome>,
    pub requeue: Duration,
}

/// What the next pass must observe, given the record it will decide from.
pub fn needs(desired: &DesiredState, record: Option<&Record>) -> Needs {
    let Some(r) = record else {
        return Needs {
            gates: true,
            alarms: true,
            health: false,
        };
    };
    let new_release = Some(&desired.release) != r.last_good.as_ref()
        && Some(&desired.release) != r.rejected.as_ref().map(|x| &x.0);
    match r.phase {
        Phase::Deploying => Needs {
            gates: r.target.as_ref() != Some(&desired.release),
            alarms: true,
            health: false,
        },
        Phase::Baking => Needs {
            gates: r.target.as_ref() != Some(&desired.release),
            alarms: true,
            health: true,
        },
        Phase::RollingBack => Needs::default(),
        _ => Needs {
            gates: new_release,
            alarms: new_release,
            health: false,
        },
    }
}

struct Ctx<'a> {
    desired: &'a DesiredState,
    obs: &'a Observed,
    now: SystemTime,
    interval: Duration,
}

/// Decides the next step of one environment.
pub fn plan(
    desired: &DesiredState,
    obs: &Observed,
    record: Option<&Record>,
    now: SystemTime,
    interval: Duration,
) -> Plan {
    let ctx = Ctx {
        desired,
        obs,
        now,
        interval,
    };
    if !obs.missing_services.is_empty() {
        let record = record.cloned().unwrap_or_else(|| ctx.adopt());
        let detail = format!(
            "service(s) {} not found in cluster {} ({}); create them or remove them from desired-state/{}.yaml",
            obs.missing_services.join(", "),
            desired.cluster,
            desired.region,
            desired.environment
        );
        let mut p = ctx.stay(&record, Phase::Blocked, detail.clone());
        p.gates.push(Gate {
            name: "service",
            passed: false,
            detail,
        });
        p.outcomes.push(Outcome::Blocked("service"));
        return ctx.finish(record.phase, p, false);
    }
    let (record, first) = match record {
        Some(r) => (ctx.complete(r.clone()), false),
        None => (ctx.adopt(), true),
    };
    let from = if first { None } else { Some(record.phase) };
    let p = match record.phase {
        Phase::Deploying => ctx.deploying(&record),
        Phase::Baking => ctx.baking(&record),
        Phase::RollingBack => ctx.rolling_back(&record),
        Phase::InSync | Phase::Blocked | Phase::Rejected | Phase::Drifted => ctx.settled(&record),
    };
    let mut p = p;
    if first && p.transition.is_none() {
        p.transition = Some(Transition {
            from: None,
            to: p.phase,
            reason: "adopted".into(),
        });
    }
    ctx.finish(from.unwrap_or(p.phase), p, first)
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
                ServiceRecord {
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

    fn plan_base(&self, record: &Record, phase: Phase, message: String) -> Plan {
        Plan {
            phase,
            record: record.clone(),
            actions: Vec::new(),
            gates: Vec::new(),
            message,
            transition: None,
            outcomes: Vec::new(),
            requeue: if phase.in_flight() {
                IN_FLIGHT_REQUEUE.min(self.interval)
            } else {
                self.interval
            },
        }
    }

    /// Stay in (or settle into) `phase` without a new intent.
    fn stay(&self, record: &Record, phase: Phase, message: String) -> Plan {
        let mut p = self.plan_base(record, phase, message);
        if record.phase != phase {
            p.record.phase = phase;
            p.record.since = self.now;
        }
        p
    }

    /// Common bookkeeping: a phase change resets `since` and is a transition; the
    /// desired-state commit is recorded with any new intent.
    fn finish(&self, from: Phase, mut p: Plan, first: bool) -> Plan {
        p.record.phase = p.phase;
        let changed = first || from != p.phase;
        if changed {
            p.record.since = self.now;
            if p.transition.is_none() {
                p.transition = Some(Transition {
                    from: (!first).then_some(from),
                    to: p.phase,
                    reason: default_reason(p.phase).into(),
                });
            }
        }
        if (changed || !p.actions.is_empty() || p.record.source_revision.is_none())
            && self.obs.source_revision.is_some()
        {
            p.record.source_revision = self.obs.source_revision.clone();
        }
        p
    }

    // ---- settled phases: InSync, Blocked, Rejected, Drifted -----------------------------------

    fn settled(&self, r: &Record) -> Plan {
        let d = &self.desired.release;
        let drifted: Vec<(&String, String)> = self
            .services()
            .filter_map(|(n, s)| {
                let good = self.last_good_td(r, n);
                (s.current() != good).then_some((n, good))
            })
            .collect();
        let at_desired = r.last_good.as_ref() == Some(d) && !self.overrides_pending(r);
        let rejected = r.rejected.as_ref().is_some_and(|(x, _)| x == d);
        if !at_desired && !rejected {
            let gates = self.gates();
            if gates.iter().all(|g| g.passed) {
                return self.start_deploy(r, gates, "new_release");
            }
            let failed: Vec<&Gate> = gates.iter().filter(|g| !g.passed).collect();
            let msg = format!(
                "release {} blocked: {}",
                d.short(),
                failed
                    .iter()
                    .map(|g| format!("{} gate: {}", g.name, g.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let mut p = self.stay(r, Phase::Blocked, msg);
            p.outcomes = failed.iter().map(|g| Outcome::Blocked(g.name)).collect();
            p.gates = gates;
            self.correct_drift(&mut p, &drifted);
            return p;
        }
        if !drifted.is_empty() {
            let names: Vec<&str> = drifted.iter().map(|(n, _)| n.as_str()).collect();
            let mut p = self.stay(
                r,
                Phase::Drifted,
                format!(
                    "{} not on the recorded task definition{}",
                    names.join(", "),
                    match self.desired.drift {
                        DriftMode::Correct => "; putting the last good revision back",
                        DriftMode::Report => " (drift: report, not correcting)",
                    }
                ),
            );
            self.correct_drift(&mut p, &drifted);
            return p;
        }
        if rejected {
            let (x, why) = r
                .rejected
                .as_ref()
                .map(|(x, w)| (x, *w))
                .unwrap_or((d, Reason::RolloutFailed));
            let msg = format!(
                "release {} was rolled back ({why}); holding last good {} until git names a different release",
                x.short(),
                r.last_good
                    .as_ref()
                    .map(Release::short)
                    .unwrap_or("(adopted)")
            );
            return self.stay(r, Phase::Rejected, msg);
        }
        self.stay(r, Phase::InSync, format!("running {}, verified", d.short()))
    }

    /// A per-service `release:` override changed while the environment's release did not.
    fn overrides_pending(&self, r: &Record) -> bool {
        self.services().any(|(n, _)| {
            let want = self.desired.release_of(n);
            let td = self.last_good_td(r, n);
            self.release_of_td(&td).is_some_and(|have| have != want)
        })
    }

    fn correct_drift(&self, p: &mut Plan, drifted: &[(&String, String)]) {
        if drifted.is_empty() || self.desired.drift == DriftMode::Report {
            return;
        }
        for (n, good) in drifted {
            p.actions.push(Action::Update {
                service: (*n).clone(),
                task_definition: good.clone(),
                why: UpdateWhy::Drift,
            });
        }
        p.outcomes.push(Outcome::DriftCorrected);
    }

    fn gates(&self) -> Vec<Gate> {
        let mut gates = Vec::new();
        let d = &self.desired;
        // Image: every service's image must exist before anything is written.
        let image = match &self.obs.images {
            None => Gate {
                name: "image",
                passed: false,
                detail: "ECR not checked yet".into(),
            },
            Some(images) => {
                let bad: Vec<String> = d
                    .services
                    .iter()
                    .filter_map(|(n, spec)| {
                        let img = format!("{}:{}", spec.repository, d.release_of(n).short());
                        match images.get(n) {
                            Some(Check::Ok) => None,
                            Some(Check::Failed(m)) => Some(format!("{img} {m}")),
                            Some(Check::Unknown(m)) => {
                                Some(format!("{img} could not be checked: {m}"))
                            }
                            None => Some(format!("{img} not checked")),
                        }
                    })
                    .collect();
                Gate {
                    name: "image",
                    passed: bad.is_empty(),
                    detail: if bad.is_empty() {
                        "every image exists in ECR".into()
                    } else {
                        bad.join("; ")
                    },
                }
            }
        };
        gates.push(image);
        gates.push(self.alarm_gate());
        if let Some(up) = &d.promote_from {
            let gate = match (&d.hotfix, &self.obs.upstream) {
                (Some(why), _) => Gate {
                    name: "promotion",
                    passed: true,
                    detail: format!("skipped for hotfix: {why}"),
                },
                (None, Some(Upstream::Verified(v))) if v.contains(&d.release) => Gate {
                    name: "promotion",
                    passed: true,
                    detail: format!("verified in {up}"),
                },
                (None, Some(Upstream::Verified(_))) => Gate {
                    name: "promotion",
                    passed: false,
                    detail: format!("{} is not verified in {up} yet", d.release.short()),
                },
                (None, Some(Upstream::Unknown(m))) => Gate {
                    name: "promotion",
                    passed: false,
                    detail: format!("could not read {up}'s record: {m}"),
                },
                (None, None) => Gate {
                    name: "promotion",
                    passed: false,
                    detail: format!("{up}'s record not read yet"),
                },
            };
            gates.push(gate);
        }
        gates
    }

    fn alarm_gate(&self) -> Gate {
        match self.alarm_check() {
            Check::Ok => Gate {
                name: "alarm",
                passed: true,
                detail: "no alarm firing".into(),
            },
            Check::Failed(m) | Check::Unknown(m) => Gate {
                name: "alarm",
                passed: false,
                detail: m,
            },
        }
    }

    /// `Failed` when an alarm is in ALARM or does not exist; `Unknown` when unreadable.
    fn alarm_check(&self) -> Check {
        let names = &self.desired.verify.alarms;
        if names.is_empty() {
            return Check::Ok;
        }
        match &self.obs.alarms {
            None => Check::Unknown("alarms not read".into()),
            Some(Err(m)) => Check::Unknown(format!("alarms could not be read: {m}")),
            Some(Ok(states)) => {
                let firing: Vec<&str> = names
                    .iter()
                    .filter(|n| states.get(*n) == Some(&AlarmState::Alarm))
                    .map(String::as_str)
                    .collect();
                if !firing.is_empty() {
                    return Check::Failed(format!("alarm {} in ALARM", firing.join(", ")));
                }
                let missing: Vec<&str> = names
                    .iter()
                    .filter(|n| matches!(states.get(*n), None | Some(AlarmState::Missing)))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Check::Failed(format!(
                        "alarm {} does not exist in {}; create it or remove it from verify.alarms",
                        missing.join(", "),
                        self.desired.region
                    ));
                }
                Check::Ok
            }
        }
    }

    fn start_deploy(&self, r: &Record, gates: Vec<Gate>, why: &str) -> Plan {
        let d = &self.desired;
        let mut p = self.plan_base(
            r,
            Phase::Deploying,
            format!(
                "deploying {} to {}",
                d.release.short(),
                d.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        p.gates = gates;
        p.record.phase = Phase::Deploying;
        p.record.since = self.now;
        p.record.target = Some(d.release.clone());
        for s in p.record.services.values_mut() {
            s.target_task_definition = None;
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
        p.transition = Some(Transition {
            from: Some(r.phase),
            to: Phase::Deploying,
            reason: why.into(),
        });
        if why == "superseded" {
            p.outcomes.push(Outcome::Superseded);
        }
        p
    }

    /// A new revision of `service`'s last good task definition carrying its desired image
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<release>`.
    fn deploy_action(&self, r: &Record, service: &str) -> Action {
        let spec = &self.desired.services[service];
        let release = self.desired.release_of(service).clone();
        let account = self.obs.account.as_deref().unwrap_or("000000000000");
        Action::Deploy {
            service: service.to_string(),
            base_task_definition: self.last_good_td(r, service),
            container: spec.container.clone(),
            image: format!(
                "{account}.dkr.ecr.{}.amazonaws.com/{}:{release}",
                self.desired.region, spec.repository
            ),
            release,
        }
    }

    /// A newer release named by git while one is in flight.
    fn supersede(&self, r: &Record) -> Plan {
        let d = &self.desired.release;
        if r.last_good.as_ref() == Some(d) && !self.overrides_pending(r) {
            // Git went back to the last good release: restore it, no gates needed.
            let mut p = self.plan_base(
                r,
                Phase::Drifted,
                format!("git names last good {} again; restoring it", d.short()),
            );
            p.record.target = None;
            self.restore_last_good(&mut p, r, UpdateWhy::Restore);
            p.transition = Some(Transition {
                from: Some(r.phase),
                to: p.phase,
                reason: "superseded".into(),
            });
            p.outcomes.push(Outcome::Superseded);
            return p;
        }
        let gates = self.gates();
        if gates.iter().all(|g| g.passed) {
            return self.start_deploy(r, gates, "superseded");
        }
        // The new release may not ship yet and the one in flight is no longer wanted: put the
        // last good release back and wait for the gate.
        let mut p = self.plan_base(
            r,
            Phase::Blocked,
            format!(
                "release {} blocked ({}); in-flight {} abandoned, last good restored",
                d.short(),
                gates
                    .iter()
                    .filter(|g| !g.passed)
                    .map(|g| g.detail.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                r.target.as_ref().map(Release::short).unwrap_or("?")
            ),
        );
        p.record.target = None;
        self.restore_last_good(&mut p, r, UpdateWhy::Restore);
        p.outcomes = gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| Outcome::Blocked(g.name))
            .collect();
        p.outcomes.push(Outcome::Superseded);
        p.gates = gates;
        p.transition = Some(Transition {
            from: Some(r.phase),
            to: Phase::Blocked,
            reason: "superseded".into(),
        });
        p
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
            let failed = s.deployments.iter().find(|d| {
                d.task_definition == target && d.rollout_state.as_deref() == Some("FAILED")
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

    fn deploying(&self, r: &Record) -> Plan {
        let Some(target) = r.target.clone() else {
            return self.settled(r);
        };
        if target != self.desired.release {
            return self.supersede(r);
        }
        if let Some((reason, msg)) = self.rollout_failure(r) {
            return self.start_rollback(r, reason, msg);
        }
        if let Check::Failed(m) = self.alarm_check() {
            return self.start_rollback(r, Reason::Alarm, m);
        }
        let mut p = self.plan_base(r, Phase::Deploying, String::new());
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
                    if !s.steady_on(&td) {
                        all_steady = false;
                        waiting.push(format!(
                            "{n}: {}/{} running",
                            s.primary().map(|d| d.running).unwrap_or(0),
                            s.desired
                        ));
                    }
                }
            }
        }
        let elapsed = self.now.duration_since(r.since).unwrap_or_default();
        if all_steady {
            let mut b = self.plan_base(
                &p.record,
                Phase::Baking,
                format!(
                    "rollout of {} complete; baking for {}",
                    target.short(),
                    format_duration(self.desired.verify.bake)
                ),
            );
            b.record.phase = Phase::Baking;
            b.record.since = self.now;
            b.transition = Some(Transition {
                from: Some(Phase::Deploying),
                to: Phase::Baking,
                reason: "rollout_complete".into(),
            });
            return b;
        }
        if elapsed > self.desired.verify.rollout_timeout && p.actions.is_empty() {
            return self.start_rollback(
                r,
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

    fn baking(&self, r: &Record) -> Plan {
        let Some(target) = r.target.clone() else {
            return self.settled(r);
        };
        if target != self.desired.release {
            return self.supersede(r);
        }
        if let Some((reason, msg)) = self.rollout_failure(r) {
            return self.start_rollback(r, reason, msg);
        }
        let alarms = self.alarm_check();
        if let Check::Failed(m) = &alarms {
            return self.start_rollback(r, Reason::Alarm, m.clone());
        }
        let health = self.health_check();
        if let Check::Failed(m) = &health {
            return self.start_rollback(r, Reason::Health, m.clone());
        }
        let bake = self.desired.verify.bake;
        let elapsed = self.now.duration_since(r.since).unwrap_or_default();
        let mut unknown = Vec::new();
        for c in [&alarms, &health] {
            if let Check::Unknown(m) = c {
                unknown.push(m.clone());
            }
        }
        if elapsed >= bake && unknown.is_empty() {
            let mut p = self.plan_base(
                r,
                Phase::InSync,
                format!(
                    "release {} verified after {} bake",
                    target.short(),
                    format_duration(bake)
                ),
            );
            p.record.phase = Phase::InSync;
            p.record.since = self.now;
            p.record.last_good = Some(target.clone());
            p.record.mark_verified(&target);
            p.record.target = None;
            for (n, s) in self.services() {
                let td = self
                    .target_td(r, n, s)
                    .unwrap_or_else(|| s.current().to_string());
                let e = p.record.services.entry(n.clone()).or_default();
                e.last_good_task_definition = Some(td);
                e.target_task_definition = None;
            }
            p.transition = Some(Transition {
                from: Some(Phase::Baking),
                to: Phase::InSync,
                reason: "verified".into(),
            });
            p.outcomes.push(Outcome::Verified);
            return p;
        }
        let mut p = self.plan_base(r, Phase::Baking, String::new());
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

    fn health_check(&self) -> Check {
        let checks = &self.desired.verify.health;
        if checks.is_empty() {
            return Check::Ok;
        }
        let Some(results) = &self.obs.health else {
            return Check::Unknown("health not checked".into());
        };
        let mut unknown = None;
        for (c, res) in checks.iter().zip(results) {
            match res {
                Check::Ok => {}
                Check::Failed(m) => return Check::Failed(format!("health check {}: {m}", c.url)),
                Check::Unknown(m) => unknown = Some(format!("health check {}: {m}", c.url)),
            }
        }
        unknown.map(Check::Unknown).unwrap_or(Check::Ok)
    }

    fn start_rollback(&self, r: &Record, reason: Reason, detail: String) -> Plan {
        let target = r
            .target
            .clone()
            .unwrap_or_else(|| self.desired.release.clone());
        let mut p = self.plan_base(
            r,
            Phase::RollingBack,
            format!(
                "release {} failed ({reason}): {detail}; rolling back to last good",
                target.short()
            ),
        );
        p.record.phase = Phase::RollingBack;
        p.record.since = self.now;
        p.record.rejected = Some((target, reason));
        self.restore_last_good(&mut p, r, UpdateWhy::Rollback);
        p.transition = Some(Transition {
            from: Some(r.phase),
            to: Phase::RollingBack,
            reason: reason.as_str().into(),
        });
        p.outcomes.push(Outcome::RolledBack(reason));
        p
    }

    /// Points every service that is not on its last good revision back at it.
    fn restore_last_good(&self, p: &mut Plan, r: &Record, why: UpdateWhy) {
        for (n, s) in self.services() {
            let good = self.last_good_td(r, n);
            if s.current() != good {
                p.actions.push(Action::Update {
                    service: n.clone(),
                    task_definition: good,
                    why,
                });
            }
        }
    }

    fn rolling_back(&self, r: &Record) -> Plan {
        let mut p = self.plan_base(r, Phase::RollingBack, String::new());
        self.restore_last_good(&mut p, r, UpdateWhy::Rollback);
        let pending: Vec<String> = self
            .services()
            .filter(|(n, s)| !s.steady_on(&self.last_good_td(r, n)))
            .map(|(n, s)| format!("{n}: {}/{} running", s.running, s.desired))
            .collect();
        let (rejected, why) = match &r.rejected {
            Some((x, w)) => (x.short().to_string(), w.as_str()),
            None => ("?".into(), "rollout_failed"),
        };
        if pending.is_empty() && p.actions.is_empty() {
            let mut done = self.plan_base(
                r,
                Phase::Rejected,
                format!(
                    "release {rejected} rolled back ({why}); held on last good {}",
                    r.last_good
                        .as_ref()
                        .map(Release::short)
                        .unwrap_or("(adopted)")
                ),
            );
            done.record.phase = Phase::Rejected;
            done.record.since = self.now;
            done.record.target = None;
            for s in done.record.services.values_mut() {
                s.target_task_definition = None;
            }
            done.transition = Some(Transition {
                from: Some(Phase::RollingBack),
                to: Phase::Rejected,
                reason: why.into(),
            });
            return done;
        }
        p.message = format!("rolling back {rejected} ({why}): {}", pending.join(", "));
        p
    }
}

fn default_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::InSync => "in_sync",
        Phase::Blocked => "gate",
        Phase::Deploying => "new_release",
        Phase::Baking => "rollout_complete",
        Phase::RollingBack => "rollout_failed",
        Phase::Rejected => "rolled_back",
        Phase::Drifted => "drift",
    }
}

/// `family:rev` from a task definition ARN, for messages.
pub fn short_td(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
