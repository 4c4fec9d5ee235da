//! What the daemon reports: one entry per environment, kept in memory and served as
//! `/api/v1/status`, the status page and `ecs-gitops status`. It is a view, not state the
//! decisions depend on (those read the record in AWS), so losing it on restart loses nothing
//! but the in-memory history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub const HISTORY_KEPT: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub task_definition: String,
    pub running_release: Option<String>,
    pub running_count: i32,
    pub desired_count: i32,
    /// `deploymentConfiguration.strategy` (ROLLING, BLUE_GREEN, LINEAR, CANARY).
    #[serde(default)]
    pub strategy: String,
    /// ECS' service deployment in flight (null when none is): its status, lifecycle stage,
    /// share of production traffic on the new revision, and a lifecycle hook it waits on.
    #[serde(default)]
    pub service_deployment_status: Option<String>,
    #[serde(default)]
    pub lifecycle_stage: Option<String>,
    #[serde(default)]
    pub production_traffic_percent: Option<f64>,
    #[serde(default)]
    pub paused_by_hook: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub release: Option<String>,
    pub source_revision: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GateStatus {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A pre-deploy hook or verification task of the release in flight (or just rejected).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HookStatus {
    pub name: String,
    /// `pre_deploy` or `verify`.
    pub kind: String,
    pub task_arn: Option<String>,
    /// `pending`, `starting`, `running`, `stopping`, `succeeded`, `failed`, `timed_out`,
    /// `unknown`.
    pub state: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub log_group: Option<String>,
    pub log_stream: Option<String>,
    /// The log stream in the CloudWatch console, when the task logs there.
    pub log_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EnvironmentStatus {
    pub name: String,
    pub phase: String,
    pub since: Option<String>,
    pub desired_release: Option<String>,
    pub running_release: Option<String>,
    pub last_good_release: Option<String>,
    pub rejected_release: Option<String>,
    pub rejected_reason: Option<String>,
    pub message: String,
    pub source_revision: Option<String>,
    pub services: Vec<ServiceStatus>,
    pub gates: Vec<GateStatus>,
    #[serde(default)]
    pub hooks: Vec<HookStatus>,
    /// The environment whose verified releases this one takes (`promote_from`).
    #[serde(default)]
    pub promote_from: Option<String>,
    /// While Baking: when the bake began (milliseconds since the epoch) and how long it is.
    #[serde(default)]
    pub bake_started_ms: Option<u64>,
    #[serde(default)]
    pub bake_seconds: Option<u64>,
    /// The ECS console page of the environment's services.
    #[serde(default)]
    pub console_url: Option<String>,
    /// The running release's commit on GitHub (`--github-repo`).
    #[serde(default)]
    pub commit_url: Option<String>,
    /// The desired-state commit on GitHub (`--github-repo`).
    #[serde(default)]
    pub source_url: Option<String>,
    /// The CloudWatch alarms page, when the file names alarms.
    #[serde(default)]
    pub alarms_url: Option<String>,
    /// The last pass's error, if it failed (the phase is then the last known one).
    pub error: Option<String>,
    /// With `--lease-table`: the replica holding the environment's lease.
    #[serde(default)]
    pub owner: Option<String>,
    /// Another replica holds the lease: this one does not act on the environment.
    #[serde(default)]
    pub owned_elsewhere: bool,
    /// Problems of the environment's file at the current revision, if it is invalid.
    pub file_problems: Vec<String>,
    pub history: VecDeque<HistoryEntry>,
    pub passes: u64,
    pub last_pass_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StatusReport {
    pub environments: Vec<EnvironmentStatus>,
    pub source_revision: Option<String>,
    pub source_error: Option<String>,
    pub ready: bool,
}

#[derive(Clone, Default)]
pub struct Board {
    inner: Arc<RwLock<BTreeMap<String, EnvironmentStatus>>>,
    /// When each environment's loop last went round (liveness, not success).
    alive: Arc<RwLock<BTreeMap<String, tokio::time::Instant>>>,
}

impl Board {
    /// An environment's loop is about to start a pass (whatever its outcome).
    pub fn loop_alive(&self, env: &str) {
        self.alive
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_string(), tokio::time::Instant::now());
    }

    /// Environments whose loop has not gone round for longer than `max`.
    pub fn stalled(&self, max: std::time::Duration) -> Vec<String> {
        self.alive
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, at)| at.elapsed() > max)
            .map(|(env, _)| env.clone())
            .collect()
    }

    pub fn update(&self, env: &str, f: impl FnOnce(&mut EnvironmentStatus)) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let e = map
            .entry(env.to_string())
            .or_insert_with(|| EnvironmentStatus {
                name: env.to_string(),
                phase: "Unknown".into(),
                ..Default::default()
            });
        f(e);
        while e.history.len() > HISTORY_KEPT {
            e.history.pop_back();
        }
    }

    pub fn snapshot(&self) -> Vec<EnvironmentStatus> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, env: &str) -> Option<EnvironmentStatus> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            .cloned()
    }
}

/// Milliseconds since the Unix epoch (0 for a time before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with second precision, without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_776_000);
        assert_eq!(rfc3339(t), "2026-11-27T10:40:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
