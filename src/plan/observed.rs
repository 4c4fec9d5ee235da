//! What one pass saw, in the decision's own terms (no SDK types): services and their ECS
//! deployments, task definition revisions, and the gate inputs. `observe` builds it; `plan`
//! reads it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::desired::Release;

/// What one observation of a gate-like input found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok,
    Failed(String),
    /// Could not be read (API error, timeout): never treated as healthy.
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
    Missing,
}

/// An ECS deployment's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeploymentStatus {
    /// The deployment the service is moving to (or runs).
    #[default]
    Primary,
    /// An older deployment still draining.
    Active,
    Inactive,
}

impl DeploymentStatus {
    pub fn parse(s: &str) -> DeploymentStatus {
        match s {
            "PRIMARY" => DeploymentStatus::Primary,
            "ACTIVE" => DeploymentStatus::Active,
            _ => DeploymentStatus::Inactive,
        }
    }
}

/// An ECS deployment's `rolloutState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

impl RolloutState {
    pub fn parse(s: &str) -> Option<RolloutState> {
        match s {
            "IN_PROGRESS" => Some(RolloutState::InProgress),
            "COMPLETED" => Some(RolloutState::Completed),
            "FAILED" => Some(RolloutState::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    pub id: String,
    pub status: DeploymentStatus,
    pub task_definition: String,
    pub rollout_state: Option<RolloutState>,
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
    /// How its tasks are launched (hooks and verification tasks run the same way).
    pub run: RunSettings,
    /// `deploymentConfiguration.strategy`.
    pub strategy: Strategy,
    /// ARN of its newest service deployment (`currentServiceDeployment`), as DescribeServices
    /// reports it.
    pub current_service_deployment: Option<String>,
    /// That service deployment, when the decision needed it (`Needs::service_deployments`):
    /// `Ok(None)` when the service has none, `Err` with what AWS said when it could not be read.
    pub service_deployment: Option<Result<Option<ServiceDeployment>, String>>,
}

/// A service's `deploymentConfiguration.strategy`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Rolling,
    BlueGreen,
    Linear,
    Canary,
    /// A strategy this version does not know; followed through its service deployment only.
    Other(String),
}

impl Strategy {
    pub fn parse(s: Option<&str>) -> Strategy {
        match s {
            None | Some("ROLLING") => Strategy::Rolling,
            Some("BLUE_GREEN") => Strategy::BlueGreen,
            Some("LINEAR") => Strategy::Linear,
            Some("CANARY") => Strategy::Canary,
            Some(other) => Strategy::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Strategy::Rolling => "ROLLING",
            Strategy::BlueGreen => "BLUE_GREEN",
            Strategy::Linear => "LINEAR",
            Strategy::Canary => "CANARY",
            Strategy::Other(s) => s,
        }
    }

    /// ECS deploys it in stages (test traffic, production traffic shift, its own bake): the
    /// rolling view (PRIMARY COMPLETED) says nothing about where traffic is.
    pub fn managed(&self) -> bool {
        !matches!(self, Strategy::Rolling)
    }
}

/// A service deployment's `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdStatus {
    Pending,
    InProgress,
    Successful,
    Stopped,
    StopRequested,
    RollbackRequested,
    RollbackInProgress,
    RollbackSuccessful,
    RollbackFailed,
    Other(String),
}

impl SdStatus {
    pub fn parse(s: &str) -> SdStatus {
        match s {
            "PENDING" => SdStatus::Pending,
            "IN_PROGRESS" => SdStatus::InProgress,
            "SUCCESSFUL" => SdStatus::Successful,
            "STOPPED" => SdStatus::Stopped,
            "STOP_REQUESTED" => SdStatus::StopRequested,
            "ROLLBACK_REQUESTED" => SdStatus::RollbackRequested,
            "ROLLBACK_IN_PROGRESS" => SdStatus::RollbackInProgress,
            "ROLLBACK_SUCCESSFUL" => SdStatus::RollbackSuccessful,
            "ROLLBACK_FAILED" => SdStatus::RollbackFailed,
            other => SdStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SdStatus::Pending => "PENDING",
            SdStatus::InProgress => "IN_PROGRESS",
            SdStatus::Successful => "SUCCESSFUL",
            SdStatus::Stopped => "STOPPED",
            SdStatus::StopRequested => "STOP_REQUESTED",
            SdStatus::RollbackRequested => "ROLLBACK_REQUESTED",
            SdStatus::RollbackInProgress => "ROLLBACK_IN_PROGRESS",
            SdStatus::RollbackSuccessful => "ROLLBACK_SUCCESSFUL",
            SdStatus::RollbackFailed => "ROLLBACK_FAILED",
            SdStatus::Other(s) => s,
        }
    }

    /// ECS is still moving it forward (a stop or rollback of ours would take effect).
    pub fn in_flight(&self) -> bool {
        matches!(self, SdStatus::Pending | SdStatus::InProgress)
    }

    /// ECS stopped it or is rolling it back: the release did not ship.
    pub fn failed(&self) -> bool {
        matches!(
            self,
            SdStatus::Stopped
                | SdStatus::StopRequested
                | SdStatus::RollbackRequested
                | SdStatus::RollbackInProgress
                | SdStatus::RollbackSuccessful
                | SdStatus::RollbackFailed
        )
    }

    /// ECS is putting the source revision back (wait for it rather than write).
    pub fn rolling_back(&self) -> bool {
        matches!(
            self,
            SdStatus::RollbackRequested | SdStatus::RollbackInProgress
        )
    }
}

/// One ECS service deployment (DescribeServiceDeployments), with its revisions resolved to
/// task definitions (DescribeServiceRevisions).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDeployment {
    pub arn: String,
    pub status: SdStatus,
    pub status_reason: Option<String>,
    pub created_at: SystemTime,
    /// Its last change (a stage entered, a pause begun).
    pub updated_at: Option<SystemTime>,
    /// The task definition it deploys (None if the revision could not be resolved).
    pub target_task_definition: Option<String>,
    /// The task definitions it replaces (what a rollback returns to).
    pub source_task_definitions: Vec<String>,
    pub lifecycle_stage: Option<String>,
    /// Share of production traffic ECS requested for the target revision, 0 to 100.
    pub production_traffic: Option<f64>,
    pub rollback_reason: Option<String>,
    pub circuit_breaker_triggered: bool,
    pub triggered_alarms: Vec<String>,
    /// A lifecycle hook waiting for an action (a PAUSE hook).
    pub paused: Option<PausedHook>,
}

impl Eq for ServiceDeployment {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausedHook {
    pub hook_id: String,
    pub expires_at: Option<SystemTime>,
    /// What ECS does when it expires (`CONTINUE` or `ROLLBACK`).
    pub timeout_action: Option<String>,
}

impl ServiceState {
    /// The PRIMARY deployment's task definition: what the service is moving to or runs.
    pub fn current(&self) -> &str {
        self.primary()
            .map(|d| d.task_definition.as_str())
            .unwrap_or(&self.task_definition)
    }

    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    /// Steady on `td`: its PRIMARY deployment completed, nothing else left, running == desired.
    pub fn steady_on(&self, td: &str) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        p.task_definition == td
            && matches!(p.rollout_state, Some(RolloutState::Completed) | None)
            && self.deployments.len() == 1
            && p.running == p.desired
            && self.running == self.desired
    }
}

/// How a service's tasks are launched: what a one-off task of the service needs to run beside
/// it (RunTask takes the same settings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunSettings {
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: Option<String>,
    pub launch_type: Option<String>,
    /// (capacity provider, weight, base)
    pub capacity_providers: Vec<(String, i32, i32)>,
    pub platform_version: Option<String>,
}

/// An ECS task's `lastStatus`, as far as the decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// PROVISIONING, PENDING, ACTIVATING.
    Starting,
    Running,
    /// DEACTIVATING, STOPPING, DEPROVISIONING.
    Stopping,
    Stopped,
}

impl TaskState {
    pub fn parse(s: &str) -> TaskState {
        match s {
            "RUNNING" => TaskState::Running,
            "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => TaskState::Stopping,
            "STOPPED" => TaskState::Stopped,
            _ => TaskState::Starting,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Stopping => "stopping",
            TaskState::Stopped => "stopped",
        }
    }
}

/// The newest one-off task the controller started for a hook (found by its `startedBy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    pub arn: String,
    pub state: TaskState,
    /// Of the hook's container, once it exited.
    pub exit_code: Option<i32>,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    /// The container's own reason (e.g. `CannotPullContainerError: ...`).
    pub container_reason: Option<String>,
    pub created_at: SystemTime,
    /// `(group, stream)` when the task definition logs the container to CloudWatch.
    pub log: Option<(String, String)>,
}

impl TaskRun {
    pub fn succeeded(&self) -> bool {
        self.state == TaskState::Stopped && self.exit_code == Some(0)
    }

    /// Why a stopped task did not succeed, in words.
    pub fn failure(&self) -> String {
        let mut parts = Vec::new();
        match self.exit_code {
            Some(c) => parts.push(format!("exited {c}")),
            None => parts.push("stopped before its container exited".to_string()),
        }
        if let Some(r) = self
            .container_reason
            .as_ref()
            .or(self.stopped_reason.as_ref())
        {
            parts.push(format!("({r})"));
        }
        parts.join(" ")
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
    /// AWS account of the cluster (from the service ARNs; `observe` fails rather than guess
    /// it); used to build image URIs.
    pub account: String,
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
    /// Per `startedBy` (`plan::started_by`): the newest task started with it (`Ok(None)`:
    /// none), or why it could not be read.
    pub task_runs: BTreeMap<String, Result<Option<TaskRun>, String>>,
    /// Per `verify.logs` group: events matching its pattern since the rollout completed.
    pub log_counts: BTreeMap<String, Result<u64, String>>,
    /// The controller's previous pass found the environment suspended (it writes nothing while
    /// suspended, so only its memory can say so): a bake in progress starts again, since
    /// nothing acted on what was seen meanwhile.
    pub resumed: bool,
}

/// What the observer must read for the next decision (so a pass in sync stays cheap).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    pub gates: bool,
    pub alarms: bool,
    pub health: bool,
    /// Read the runs of `hooks.pre_deploy` for these releases.
    pub pre_deploy: Vec<Release>,
    /// Read the runs of `verify.tasks` for this release.
    pub verify_tasks: Option<Release>,
    /// Count `verify.logs` events since this time (the rollout completed).
    pub logs_since: Option<SystemTime>,
    /// Read each service's current service deployment (a rollout or rollback in flight).
    pub service_deployments: bool,
}
