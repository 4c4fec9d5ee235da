//! The record: what the controller knows that git and ECS do not say by themselves.
//!
//! Last good (verified) task definitions, the release in flight, the rejected release and the
//! phase with the time it began. It lives in AWS as tags on each ECS service of the
//! environment (the ECS equivalent of a Kubernetes object's status), so a controller killed at
//! any instant and restarted elsewhere resumes where it was. This module is pure: it turns a
//! record into tags and back, and diffs two tag sets so only what changed is written.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::desired::Release;

pub const PREFIX: &str = "ecs-gitops:";
pub const TAG_PHASE: &str = "ecs-gitops:phase";
pub const TAG_SINCE: &str = "ecs-gitops:since";
pub const TAG_TARGET: &str = "ecs-gitops:target-release";
pub const TAG_LAST_GOOD: &str = "ecs-gitops:last-good-release";
pub const TAG_REJECTED: &str = "ecs-gitops:rejected-release";
pub const TAG_REJECTED_REASON: &str = "ecs-gitops:rejected-reason";
pub const TAG_VERIFIED: &str = "ecs-gitops:verified-releases";
pub const TAG_SOURCE: &str = "ecs-gitops:source-revision";
pub const TAG_LAST_GOOD_TD: &str = "ecs-gitops:last-good-task-definition";
pub const TAG_TARGET_TD: &str = "ecs-gitops:target-task-definition";
pub const TAG_HOOKS_PASSED: &str = "ecs-gitops:hooks-passed";
/// On task definition revisions the controller registers: the release they carry.
pub const TAG_RELEASE: &str = "ecs-gitops:release";

/// How many recently verified releases are kept for the promotion gate (tag values hold 256
/// characters; five SHAs and separators fit).
pub const VERIFIED_KEPT: usize = 5;

/// The name of a phase: what metrics, tags and the status spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhaseKind {
    InSync,
    Blocked,
    Deploying,
    Baking,
    RollingBack,
    Rejected,
    Drifted,
    Suspended,
}

impl PhaseKind {
    pub const ALL: [PhaseKind; 8] = [
        PhaseKind::InSync,
        PhaseKind::Blocked,
        PhaseKind::Deploying,
        PhaseKind::Baking,
        PhaseKind::RollingBack,
        PhaseKind::Rejected,
        PhaseKind::Drifted,
        PhaseKind::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::InSync => "InSync",
            PhaseKind::Blocked => "Blocked",
            PhaseKind::Deploying => "Deploying",
            PhaseKind::Baking => "Baking",
            PhaseKind::RollingBack => "RollingBack",
            PhaseKind::Rejected => "Rejected",
            PhaseKind::Drifted => "Drifted",
            PhaseKind::Suspended => "Suspended",
        }
    }

    /// Deploying, Baking and RollingBack are watched closely; the others wait for a change.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            PhaseKind::Deploying | PhaseKind::Baking | PhaseKind::RollingBack
        )
    }
}

impl fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PhaseKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        PhaseKind::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(())
    }
}

/// Where an environment is, with what that phase needs: a release in flight has a target, a
/// rollback knows what it rolls back and why. A phase cannot be built without its data, so the
/// decision never has to check for it at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    InSync,
    /// A gate says no. Never written to the record: a gate that says no writes nothing.
    Blocked,
    Deploying {
        target: Release,
    },
    Baking {
        target: Release,
    },
    RollingBack {
        release: Release,
        reason: Reason,
    },
    Rejected {
        release: Release,
        reason: Reason,
    },
    Drifted,
    /// `suspend: true`: observed and reported, nothing written. Never in the record.
    Suspended,
}

impl Phase {
    pub fn kind(&self) -> PhaseKind {
        match self {
            Phase::InSync => PhaseKind::InSync,
            Phase::Blocked => PhaseKind::Blocked,
            Phase::Deploying { .. } => PhaseKind::Deploying,
            Phase::Baking { .. } => PhaseKind::Baking,
            Phase::RollingBack { .. } => PhaseKind::RollingBack,
            Phase::Rejected { .. } => PhaseKind::Rejected,
            Phase::Drifted => PhaseKind::Drifted,
            Phase::Suspended => PhaseKind::Suspended,
        }
    }

    /// The release in flight (Deploying, Baking).
    pub fn target(&self) -> Option<&Release> {
        match self {
            Phase::Deploying { target } | Phase::Baking { target } => Some(target),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a release was rolled back; also the `reason` label of the rollback metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Alarm,
    Health,
    RolloutFailed,
    RolloutTimeout,
    CrashLoop,
    CircuitBreaker,
    /// A `verify.tasks` task exited non-zero or timed out during the bake.
    VerifyTask,
    /// More matching log events than `verify.logs` allows since the rollout completed.
    LogErrors,
    /// A `hooks.pre_deploy` hook failed: the release is rejected, no service was touched.
    PreDeploy,
    /// ECS stopped or rolled back the service deployment by itself (deployment alarm, failed
    /// lifecycle hook, a stop by someone else).
    EcsRollback,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Alarm,
        Reason::Health,
        Reason::RolloutFailed,
        Reason::RolloutTimeout,
        Reason::CrashLoop,
        Reason::CircuitBreaker,
        Reason::VerifyTask,
        Reason::LogErrors,
        Reason::PreDeploy,
        Reason::EcsRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Alarm => "alarm",
            Reason::Health => "health",
            Reason::RolloutFailed => "rollout_failed",
            Reason::RolloutTimeout => "rollout_timeout",
            Reason::CrashLoop => "crash_loop",
            Reason::CircuitBreaker => "circuit_breaker",
            Reason::VerifyTask => "verify_task",
            Reason::LogErrors => "log_errors",
            Reason::PreDeploy => "pre_deploy",
            Reason::EcsRollback => "ecs_rollback",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRecord {
    /// The verified task definition revision this service goes back to.
    pub last_good_task_definition: Option<String>,
    /// The revision registered for the release in flight, once UpdateService was sent.
    pub target_task_definition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub phase: Phase,
    /// When the phase began, kept to the millisecond (rounded up, so a bake is never cut short).
    pub since: SystemTime,
    pub last_good: Option<Release>,
    /// The release held back after its rollback, with why. It outlives the RollingBack and
    /// Rejected phases (a drift correction in between must not forget it) until git names
    /// another release.
    pub rejected: Option<(Release, Reason)>,
    /// Most recent first.
    pub verified: Vec<Release>,
    pub source_revision: Option<String>,
    /// The release whose `hooks.pre_deploy` all exited 0: they run once per release, also
    /// after ECS has forgotten the stopped tasks.
    pub hooks_passed: Option<Release>,
    pub services: BTreeMap<String, ServiceRecord>,
}

/// Why the tags on an environment's services cannot be read as a record: a phase written by a
/// newer version, a mangled time, a phase without the data it needs. Never "no record".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the ecs-gitops record on service {service} cannot be read: tag {tag} = {value:?} {problem}"
)]
pub struct Unreadable {
    pub service: String,
    pub tag: &'static str,
    pub value: String,
    pub problem: &'static str,
}

impl Record {
    pub fn new(phase: Phase, since: SystemTime) -> Record {
        Record {
            phase,
            since: ceil_millis(since),
            last_good: None,
            rejected: None,
            verified: Vec::new(),
            source_revision: None,
            hooks_passed: None,
            services: BTreeMap::new(),
        }
    }

    pub fn service(&self, name: &str) -> ServiceRecord {
        self.services.get(name).cloned().unwrap_or_default()
    }

    pub fn mark_verified(&mut self, release: &Release) {
        self.verified.retain(|r| r != release);
        self.verified.insert(0, release.clone());
        self.verified.truncate(VERIFIED_KEPT);
    }

    /// What apply learned: `service` now targets `task_definition` (registered or reused).
    pub fn with_target(&self, service: &str, task_definition: &str) -> Record {
        let mut r = self.clone();
        r.services
            .entry(service.to_string())
            .or_default()
            .target_task_definition = Some(task_definition.to_string());
        r
    }

    /// The controller's tags for one service (only keys with a value).
    pub fn tags_for(&self, service: &str) -> BTreeMap<String, String> {
        let mut t = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                t.insert(k.to_string(), v);
            }
        };
        put(TAG_PHASE, Some(self.phase.as_str().to_string()));
        put(TAG_SINCE, Some(format_since(self.since)));
        put(TAG_TARGET, self.phase.target().map(Release::to_string));
        put(
            TAG_LAST_GOOD,
            self.last_good.as_ref().map(Release::to_string),
        );
        put(
            TAG_REJECTED,
            self.rejected.as_ref().map(|r| r.0.to_string()),
        );
        put(
            TAG_REJECTED_REASON,
            self.rejected.as_ref().map(|r| r.1.as_str().to_string()),
        );
        if !self.verified.is_empty() {
            put(
                TAG_VERIFIED,
                Some(
                    self.verified
                        .iter()
                        .map(Release::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            );
        }
        put(TAG_SOURCE, self.source_revision.clone());
        put(
            TAG_HOOKS_PASSED,
            self.hooks_passed.as_ref().map(Release::to_string),
        );
        let s = self.service(service);
        put(TAG_LAST_GOOD_TD, s.last_good_task_definition);
        put(TAG_TARGET_TD, s.target_task_definition);
        t
    }

    /// Rebuilds the record from each service's tags. `Ok(None)` only when no service carries
    /// any `ecs-gitops:` tag (an environment seen for the first time); a tag that does not
    /// parse is `Err`, never "no record". Services are written one after another, so a
    /// controller killed mid-write can leave them disagreeing: the environment-wide fields are
    /// taken from the service written last (newest `since`), which is the newest intent.
    pub fn from_tags(
        per_service: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Option<Record>, Unreadable> {
        let mut newest: Option<(SystemTime, &String, &BTreeMap<String, String>)> = None;
        for (name, tags) in per_service {
            if !tags.keys().any(|k| k.starts_with(PREFIX)) {
                continue;
            }
            let bad = |tag: &'static str, problem: &'static str| Unreadable {
                service: name.clone(),
                tag,
                value: tags.get(tag).cloned().unwrap_or_default(),
                problem,
            };
            let Some(since) = tags.get(TAG_SINCE) else {
                return Err(bad(TAG_SINCE, "is missing"));
            };
            let since = parse_since(since).ok_or_else(|| {
                bad(
                    TAG_SINCE,
                    "is not seconds since the epoch (e.g. 1800000000.123)",
                )
            })?;
            if newest.as_ref().is_none_or(|(s, _, _)| since > *s) {
                newest = Some((since, name, tags));
            }
        }
        let Some((since, name, tags)) = newest else {
            return Ok(None);
        };
        let bad = |tag: &'static str, problem: &'static str| Unreadable {
            service: name.clone(),
            tag,
            value: tags.get(tag).cloned().unwrap_or_default(),
            problem,
        };
        let release = |k: &'static str| -> Result<Option<Release>, Unreadable> {
            tags.get(k)
                .map(|v| Release::parse(v).map_err(|_| bad(k, "is not a 40-hex release")))
                .transpose()
        };
        let rejected = match (release(TAG_REJECTED)?, tags.get(TAG_REJECTED_REASON)) {
            (None, None) => None,
            (Some(r), Some(why)) => Some((
                r,
                why.parse::<Reason>()
                    .map_err(|_| bad(TAG_REJECTED_REASON, "is not a reason this version knows"))?,
            )),
            (Some(_), None) => return Err(bad(TAG_REJECTED_REASON, "is missing")),
            (None, Some(_)) => return Err(bad(TAG_REJECTED, "is missing")),
        };
        let kind: PhaseKind = tags
            .get(TAG_PHASE)
            .ok_or_else(|| bad(TAG_PHASE, "is missing"))?
            .parse()
            .map_err(|_| bad(TAG_PHASE, "is not a phase this version knows"))?;
        let target = || release(TAG_TARGET)?.ok_or_else(|| bad(TAG_TARGET, "is missing"));
        let held = || {
            rejected
                .clone()
                .ok_or_else(|| bad(TAG_REJECTED, "is missing"))
        };
        let phase = match kind {
            PhaseKind::InSync => Phase::InSync,
            PhaseKind::Blocked => Phase::Blocked,
            PhaseKind::Drifted => Phase::Drifted,
            PhaseKind::Suspended => Phase::Suspended,
            PhaseKind::Deploying => Phase::Deploying { target: target()? },
            PhaseKind::Baking => Phase::Baking { target: target()? },
            PhaseKind::RollingBack => {
                let (release, reason) = held()?;
                Phase::RollingBack { release, reason }
            }
            PhaseKind::Rejected => {
                let (release, reason) = held()?;
                Phase::Rejected { release, reason }
            }
        };
        let mut record = Record::new(phase, since);
        record.last_good = release(TAG_LAST_GOOD)?;
        record.rejected = rejected;
        record.verified = tags
            .get(TAG_VERIFIED)
            .map(|v| {
                v.split_whitespace()
                    .map(|r| {
                        Release::parse(r)
                            .map_err(|_| bad(TAG_VERIFIED, "holds a value that is not a release"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        record.source_revision = tags.get(TAG_SOURCE).cloned();
        record.hooks_passed = release(TAG_HOOKS_PASSED)?;
        for (name, tags) in per_service {
            record.services.insert(
                name.clone(),
                ServiceRecord {
                    last_good_task_definition: tags.get(TAG_LAST_GOOD_TD).cloned(),
                    target_task_definition: tags.get(TAG_TARGET_TD).cloned(),
                },
            );
        }
        Ok(Some(record))
    }
}

/// `t` rounded up to the next millisecond: the precision the record keeps. Rounding up makes
/// a bake measured from it longer, never shorter.
pub fn ceil_millis(t: SystemTime) -> SystemTime {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ms = d.as_nanos().div_ceil(1_000_000);
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// `1800000000.123`: seconds since the epoch with milliseconds.
pub fn format_since(t: SystemTime) -> String {
    let d = ceil_millis(t)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Reads `format_since`, and the whole seconds earlier versions wrote.
pub fn parse_since(s: &str) -> Option<SystemTime> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || secs.len() > 12 {
        return None;
    }
    if frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(ceil_millis(
        UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos),
    ))
}

/// What to write to one resource's tags to go from `old` to `new` (controller keys only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagDiff {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl TagDiff {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

pub fn diff_tags(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> TagDiff {
    let set = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove = old
        .keys()
        .filter(|k| k.starts_with(PREFIX) && !new.contains_key(*k))
        .cloned()
        .collect();
    TagDiff { set, remove }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(c: char) -> Release {
        Release::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn one(name: &str, r: &Record) -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([(name.to_string(), r.tags_for(name))])
    }

    #[test]
    fn a_record_survives_a_round_trip_through_tags() {
        let mut r = Record::new(
            Phase::Baking { target: rel('b') },
            UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
        );
        r.last_good = Some(rel('a'));
        r.rejected = Some((rel('c'), Reason::CrashLoop));
        r.mark_verified(&rel('a'));
        r.source_revision = Some("0123456789abcdef0123456789abcdef01234567".into());
        r.hooks_passed = Some(rel('b'));
        r.services.insert(
            "web".into(),
            ServiceRecord {
                last_good_task_definition: Some("arn:td/web:3".into()),
                target_task_definition: Some("arn:td/web:4".into()),
            },
        );
        assert_eq!(r.tags_for("web")[TAG_SINCE], "1800000000.123");
        assert_eq!(Record::from_tags(&one("web", &r)), Ok(Some(r)));
    }

    #[test]
    fn every_phase_with_its_data_survives_a_round_trip() {
        for phase in [
            Phase::InSync,
            Phase::Drifted,
            Phase::Deploying { target: rel('b') },
            Phase::Baking { target: rel('b') },
            Phase::RollingBack {
                release: rel('b'),
                reason: Reason::Alarm,
            },
            Phase::Rejected {
                release: rel('b'),
                reason: Reason::Health,
            },
        ] {
            let mut r = Record::new(phase.clone(), UNIX_EPOCH + Duration::from_secs(5));
            if let Phase::RollingBack { release, reason } | Phase::Rejected { release, reason } =
                &phase
            {
                r.rejected = Some((release.clone(), *reason));
            }
            let back = Record::from_tags(&one("s", &r)).unwrap().unwrap();
            assert_eq!(back.phase, phase);
        }
    }

    #[test]
    fn the_start_of_a_phase_is_kept_to_the_millisecond_and_rounded_up() {
        let t = UNIX_EPOCH + Duration::new(1_800_000_000, 123_000_001);
        assert_eq!(format_since(t), "1800000000.124");
        let back = parse_since(&format_since(t)).unwrap();
        assert!(back >= t, "rounding must never move the start earlier");
        assert!(back.duration_since(t).unwrap() < Duration::from_millis(1));
        // What earlier versions wrote: whole seconds.
        assert_eq!(
            parse_since("1800000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
        for bad in ["", "abc", "1.", ".5", "1e9", "-5", "18000000000000"] {
            assert_eq!(parse_since(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tag_that_does_not_parse_is_unreadable_never_no_record() {
        let mut r = Record::new(Phase::Baking { target: rel('b') }, UNIX_EPOCH);
        r.last_good = Some(rel('a'));
        let good = r.tags_for("web");
        for (tag, value) in [
            (TAG_PHASE, "Paused"),
            (TAG_SINCE, "yesterday"),
            (TAG_TARGET, "not-a-sha"),
            (TAG_LAST_GOOD, "abc"),
        ] {
            let mut tags = good.clone();
            tags.insert(tag.to_string(), value.to_string());
            let err =
                Record::from_tags(&BTreeMap::from([("web".to_string(), tags)])).expect_err(tag);
            assert_eq!(err.tag, tag);
            assert!(err.to_string().contains("web"), "{err}");
        }
        let mut tags = good.clone();
        tags.remove(TAG_TARGET);
        let err = Record::from_tags(&BTreeMap::from([("web".to_string(), tags)])).unwrap_err();
        assert_eq!(err.tag, TAG_TARGET, "Baking without its target");
        // No ecs-gitops: tag at all: a new environment.
        let plain = BTreeMap::from([(
            "web".to_string(),
            BTreeMap::from([("team".to_string(), "payments".to_string())]),
        )]);
        assert_eq!(Record::from_tags(&plain), Ok(None));
    }

    #[test]
    fn the_newest_write_wins_when_services_disagree() {
        let old = Record::new(
            Phase::Deploying { target: rel('b') },
            UNIX_EPOCH + Duration::from_secs(100),
        );
        let mut new = Record::new(
            Phase::RollingBack {
                release: rel('b'),
                reason: Reason::Alarm,
            },
            UNIX_EPOCH + Duration::from_secs(200),
        );
        new.rejected = Some((rel('b'), Reason::Alarm));
        let tags = BTreeMap::from([
            ("a".to_string(), new.tags_for("a")),
            ("b".to_string(), old.tags_for("b")),
        ]);
        let r = Record::from_tags(&tags).unwrap().unwrap();
        assert_eq!(r.phase.kind(), PhaseKind::RollingBack);
        assert_eq!(r.rejected, Some((rel('b'), Reason::Alarm)));
    }

    #[test]
    fn only_changed_keys_are_written_and_stale_ones_removed() {
        let old = BTreeMap::from([
            (TAG_PHASE.to_string(), "Baking".to_string()),
            (TAG_TARGET.to_string(), "x".to_string()),
            ("team".to_string(), "payments".to_string()),
        ]);
        let new = BTreeMap::from([(TAG_PHASE.to_string(), "InSync".to_string())]);
        let d = diff_tags(&old, &new);
        assert_eq!(d.set.len(), 1);
        assert_eq!(d.remove, vec![TAG_TARGET.to_string()]);
        assert!(diff_tags(&new, &new).is_empty());
    }

    #[test]
    fn verified_keeps_the_five_most_recent() {
        let mut r = Record::new(Phase::InSync, UNIX_EPOCH);
        for c in ['1', '2', '3', '4', '5', '6', '3'] {
            r.mark_verified(&rel(c));
        }
        let v: Vec<&str> = r.verified.iter().map(|x| &x.as_str()[..1]).collect();
        assert_eq!(v, ["3", "6", "5", "4", "2"]);
        assert!(r.tags_for("s")[TAG_VERIFIED].len() <= 256);
    }
}
