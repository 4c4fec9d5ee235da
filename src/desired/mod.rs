//! Desired state: what `desired-state/<environment>.yaml` says an environment should run.
//!
//! This is the controller's only input from git. A file is parsed into a located YAML tree
//! (`yaml`), then checked field by field; every problem found is reported with the file, line
//! and column and what to do, and a file with any problem yields no `DesiredState` at all, so
//! nothing is ever deployed from a half-valid file. Checks that span files (`promote_from`
//! naming a missing environment, or a promotion cycle) are in `check_set`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod freeze;
pub mod parse;
pub mod snapshot;
pub mod validate;
pub mod yaml;

use yaml::Location;

pub use parse::{check_set, is_desired_state_file, parse, stem_of};
pub use snapshot::{FileState, Snapshot, SnapshotBuilder};

/// A full 40-character lowercase hex git SHA: the ECR image tag of a release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release(String);

impl Release {
    pub fn parse(s: &str) -> Result<Release, String> {
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "release `{s}` has uppercase letters; write the SHA in lowercase as git prints it"
                ));
            }
            return Ok(Release(s.to_string()));
        }
        if !s.is_empty() && s.len() < 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "release `{s}` is {} characters; use the full 40-character commit SHA (`git rev-parse <commit>`)",
                s.len()
            ));
        }
        Err(format!(
            "release `{}` is not a 40-character lowercase hex git SHA; use the full commit SHA that tags the image",
            truncate(s, 60)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 7-character form used in release tags and messages.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriftMode {
    #[default]
    Correct,
    Report,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub url: String,
    pub expect_status: u16,
}

/// A one-off ECS task run from a service's task definition: a `hooks.pre_deploy` hook
/// (migrations, before any service is updated) or a `verify.tasks` task (smoke tests, in the
/// bake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHook {
    /// Unique among the file's hooks and verification tasks: it names the task's `startedBy`.
    pub name: String,
    /// The service whose task definition (at the new release), network configuration and
    /// launch settings the task runs with.
    pub service: String,
    /// The container whose command is overridden; `None`: the service's `container`, else the
    /// task definition's only one.
    pub container: Option<String>,
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// What a notification is about: a transition into one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyOn {
    Deploying,
    Verified,
    RolledBack,
    Blocked,
    Rejected,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 5] = [
        NotifyOn::Deploying,
        NotifyOn::Verified,
        NotifyOn::RolledBack,
        NotifyOn::Blocked,
        NotifyOn::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Deploying => "deploying",
            NotifyOn::Verified => "verified",
            NotifyOn::RolledBack => "rolled_back",
            NotifyOn::Blocked => "blocked",
            NotifyOn::Rejected => "rejected",
        }
    }
}

/// Where the webhook URL of a notification target is kept: it is a secret, never in git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlFrom {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    Slack,
    Json,
}

/// One `notify` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub url: UrlFrom,
    pub format: NotifyFormat,
    pub on: Vec<NotifyOn>,
}

/// `verify.logs`: more than `max` events matching `pattern` in `group` since the rollout
/// completed fail the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheck {
    pub group: String,
    pub pattern: String,
    pub max: u64,
}

pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub alarms: Vec<String>,
    pub health: Vec<HealthCheck>,
    pub tasks: Vec<TaskHook>,
    pub logs: Vec<LogCheck>,
    pub bake: Duration,
    pub rollout_timeout: Duration,
}

pub const DEFAULT_BAKE: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl Default for Verify {
    fn default() -> Self {
        Verify {
            alarms: Vec::new(),
            health: Vec::new(),
            tasks: Vec::new(),
            logs: Vec::new(),
            bake: DEFAULT_BAKE,
            rollout_timeout: DEFAULT_ROLLOUT_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// ECR repository name (same account and region as the cluster).
    pub repository: String,
    /// Which container's image to set; `None` means the task definition's only container.
    pub container: Option<String>,
    /// Per-service override of the environment's release.
    pub release: Option<Release>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    pub environment: String,
    pub region: String,
    pub cluster: String,
    pub release: Release,
    pub promote_from: Option<String>,
    /// Where `promote_from` is written, for errors that involve other files.
    pub promote_from_at: Location,
    pub hotfix: Option<String>,
    pub services: BTreeMap<String, ServiceSpec>,
    /// `hooks.pre_deploy`, in the order they run.
    pub pre_deploy: Vec<TaskHook>,
    /// Chat and webhook targets told about transitions.
    pub notify: Vec<NotifyTarget>,
    /// `suspend: true`: observe and report only; nothing at all is written to AWS.
    pub suspend: bool,
    /// Windows in which no new release starts (hotfixes and rollbacks still do).
    pub freeze: Vec<freeze::FreezeWindow>,
    pub verify: Verify,
    pub drift: DriftMode,
    /// `account`: the environment lives in another AWS account, reached through this role.
    pub account: Option<AccountRole>,
}

/// `account.role_arn` (+ `external_id`): every AWS call of the environment is made with
/// credentials from STS AssumeRole on the base credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountRole {
    pub role_arn: String,
    pub external_id: Option<String>,
}

impl AccountRole {
    /// The 12-digit account of the role.
    pub fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }
}

impl DesiredState {
    /// The container a hook's command overrides, if the file names one.
    pub fn hook_container<'a>(&'a self, hook: &'a TaskHook) -> Option<&'a str> {
        hook.container.as_deref().or_else(|| {
            self.services
                .get(&hook.service)
                .and_then(|s| s.container.as_deref())
        })
    }

    /// The release a service should run: its own override or the environment's.
    pub fn release_of(&self, service: &str) -> &Release {
        self.services
            .get(service)
            .and_then(|s| s.release.as_ref())
            .unwrap_or(&self.release)
    }
}

/// One problem in one file, printed as `path:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.at.line,
            self.at.col,
            self.message
        )
    }
}

/// Parses `90s`, `15m`, `1h`, `1h30m`, `0s` (units in descending order, each at most once).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const MAX: u64 = 7 * 24 * 3600;
    let bad = || {
        format!(
            "`{}` is not a duration; write a number and a unit, e.g. `90s`, `15m`, `1h` or `1h30m`",
            truncate(s, 30)
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_rank = 0;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            if digits.len() > 7 {
                return Err(bad());
            }
            continue;
        }
        let (rank, factor) = match ch {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(bad()),
        };
        if digits.is_empty() || rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        total += digits.parse::<u64>().map_err(|_| bad())? * factor;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total > MAX {
        return Err(format!(
            "`{s}` is longer than 7 days (168h); use a shorter duration"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way files write it (`1h30m`, `90s` stays `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}
