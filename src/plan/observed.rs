//! What one pass saw, in the decision's own terms (no SDK types): services and their ECS
//! deployments, task definition revisions, and the gate inputs. `observe` builds it; `plan`
//! reads it.

use std::collections::BTreeMap;

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
