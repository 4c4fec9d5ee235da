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
/// On task definition revisions the controller registers: the release they carry.
pub const TAG_RELEASE: &str = "ecs-gitops:release";

/// How many recently verified releases are kept for the promotion gate (tag values hold 256
/// characters; five SHAs and separators fit).
pub const VERIFIED_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    InSync,
    Blocked,
    Deploying,
    Baking,
    RollingBack,
    Rejected,
    Drifted,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::InSync,
        Phase::Blocked,
        Phase::Deploying,
        Phase::Baking,
        Phase::RollingBack,
        Phase::Rejected,
        Phase::Drifted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::InSync => "InSync",
            Phase::Blocked => "Blocked",
            Phase::Deploying => "Deploying",
            Phase::Baking => "Baking",
            Phase::RollingBack => "RollingBack",
            Phase::Rejected => "Rejected",
            Phase::Drifted => "Drifted",
        }
    }

    /// Deploying, Baking and RollingBack are watched closely; the others wait for a change.
    pub fn in_flight(self) -> bool {
        matches!(self, Phase::Deploying | Phase::Baking | Phase::RollingBack)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
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
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Alarm,
        Reason::Health,
        Reason::RolloutFailed,
        Reason::RolloutTimeout,
        Reason::CrashLoop,
        Reason::CircuitBreaker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Alarm => "alarm",
            Reason::Health => "health",
            Reason::RolloutFailed => "rollout_failed",
            Reason::RolloutTimeout => "rollout_timeout",
            Reason::CrashLoop => "crash_loop",
            Reason::CircuitBreaker => "circuit_breaker",
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
    pub since: SystemTime,
    pub target: Option<Release>,
    pub last_good: Option<Release>,
    pub rejected: Option<(Release, Reason)>,
    /// Most recent first.
    pub verified: Vec<Release>,
    pub source_revision: Option<String>,
    pub services: BTreeMap<String, ServiceRecord>,
}

impl Record {
    pub fn new(phase: Phase, since: SystemTime) -> Record {
        Record {
            phase,
            since,
            target: None,
            last_good: None,
            rejected: None,
            verified: Vec::new(),
            source_revision: None,
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

    /// The controller's tags for one service (only keys with a value).
    pub fn tags_for(&self, service: &str) -> BTreeMap<String, String> {
        let mut t = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                t.insert(k.to_string(), v);
            }
        };
        put(TAG_PHASE, Some(self.phase.as_str().to_string()));
        put(TAG_SINCE, Some(epoch_secs(self.since).to_string()));
        put(TAG_TARGET, self.target.as_ref().map(Release::to_string));
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
        let s = self.service(service);
        put(TAG_LAST_GOOD_TD, s.last_good_task_definition);
        put(TAG_TARGET_TD, s.target_task_definition);
        t
    }

    /// Rebuilds the record from each service's tags. `None` when no service carries one (an
    /// environment seen for the first time). Services are written one after another, so a
    /// controller killed mid-write can leave them disagreeing: the environment-wide fields are
    /// taken from the service written last (newest `since`), which is the newest intent.
    pub fn from_tags(per_service: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Record> {
        let newest = per_service
            .values()
            .filter_map(|tags| {
                let phase: Phase = tags.get(TAG_PHASE)?.parse().ok()?;
                let since = tags.get(TAG_SINCE)?.parse::<u64>().ok()?;
                Some((since, phase, tags))
            })
            .max_by_key(|(since, _, _)| *since)?;
        let (since, phase, tags) = newest;
        let release = |k: &str| tags.get(k).and_then(|v| Release::parse(v).ok());
        let mut record = Record::new(phase, UNIX_EPOCH + Duration::from_secs(since));
        record.target = release(TAG_TARGET);
        record.last_good = release(TAG_LAST_GOOD);
        record.rejected = release(TAG_REJECTED).and_then(|r| {
            let reason = tags.get(TAG_REJECTED_REASON)?.parse().ok()?;
            Some((r, reason))
        });
        record.verified = tags
            .get(TAG_VERIFIED)
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|r| Release::parse(r).ok())
                    .collect()
            })
            .unwrap_or_default();
        record.source_revision = tags.get(TAG_SOURCE).cloned();
        for (name, tags) in per_service {
            record.services.insert(
                name.clone(),
                ServiceRecord {
                    last_good_task_definition: tags.get(TAG_LAST_GOOD_TD).cloned(),
                    target_task_definition: tags.get(TAG_TARGET_TD).cloned(),
                },
            );
        }
        Some(record)
    }
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

pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(c: char) -> Release {
        Release::parse(&c.to_string().repeat(40)).unwrap()
    }

    #[test]
    fn a_record_survives_a_round_trip_through_tags() {
        let mut r = Record::new(
            Phase::Baking,
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        r.target = Some(rel('b'));
        r.last_good = Some(rel('a'));
        r.rejected = Some((rel('c'), Reason::CrashLoop));
        r.mark_verified(&rel('a'));
        r.source_revision = Some("0123456789abcdef0123456789abcdef01234567".into());
        r.services.insert(
            "web".into(),
            ServiceRecord {
                last_good_task_definition: Some("arn:td/web:3".into()),
                target_task_definition: Some("arn:td/web:4".into()),
            },
        );
        let tags = BTreeMap::from([("web".to_string(), r.tags_for("web"))]);
        assert_eq!(Record::from_tags(&tags), Some(r));
    }

    #[test]
    fn the_newest_write_wins_when_services_disagree() {
        let mut old = Record::new(Phase::Deploying, UNIX_EPOCH + Duration::from_secs(100));
        old.target = Some(rel('b'));
        let mut new = Record::new(Phase::RollingBack, UNIX_EPOCH + Duration::from_secs(200));
        new.rejected = Some((rel('b'), Reason::Alarm));
        let tags = BTreeMap::from([
            ("a".to_string(), new.tags_for("a")),
            ("b".to_string(), old.tags_for("b")),
        ]);
        let r = Record::from_tags(&tags).unwrap();
        assert_eq!(r.phase, Phase::RollingBack);
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
