//! What RegisterTaskDefinition takes, described once: the same struct builds a new revision
//! and, by its derived equality, tells whether an existing revision is identical (so a retry
//! after a crash reuses it instead of registering twice). Inference accelerators are left out:
//! ECS no longer accepts them (the SDK marks them deprecated).

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, EphemeralStorage, IpcMode, NetworkMode, PidMode,
    ProxyConfiguration, RuntimePlatform, TaskDefinition, TaskDefinitionPlacementConstraint, Volume,
};

/// Every field of a revision that RegisterTaskDefinition accepts (tags aside).
#[derive(Debug, Clone, PartialEq)]
pub struct Registrable {
    pub family: String,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub network_mode: Option<NetworkMode>,
    pub container_definitions: Vec<ContainerDefinition>,
    pub volumes: Vec<Volume>,
    pub placement_constraints: Vec<TaskDefinitionPlacementConstraint>,
    pub requires_compatibilities: Vec<Compatibility>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub pid_mode: Option<PidMode>,
    pub ipc_mode: Option<IpcMode>,
    pub proxy_configuration: Option<ProxyConfiguration>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub runtime_platform: Option<RuntimePlatform>,
    pub enable_fault_injection: Option<bool>,
}

impl Registrable {
    /// The registrable fields of a described revision.
    pub fn of(td: &TaskDefinition) -> Registrable {
        Registrable {
            family: td.family().unwrap_or_default().to_string(),
            task_role_arn: td.task_role_arn().map(str::to_string),
            execution_role_arn: td.execution_role_arn().map(str::to_string),
            network_mode: td.network_mode().cloned(),
            container_definitions: td.container_definitions().to_vec(),
            volumes: td.volumes().to_vec(),
            placement_constraints: td.placement_constraints().to_vec(),
            requires_compatibilities: td.requires_compatibilities().to_vec(),
            cpu: td.cpu().map(str::to_string),
            memory: td.memory().map(str::to_string),
            pid_mode: td.pid_mode().cloned(),
            ipc_mode: td.ipc_mode().cloned(),
            proxy_configuration: td.proxy_configuration().cloned(),
            ephemeral_storage: td.ephemeral_storage().cloned(),
            runtime_platform: td.runtime_platform().cloned(),
            enable_fault_injection: td.enable_fault_injection(),
        }
    }

    /// The RegisterTaskDefinition request for these fields.
    pub fn request(
        &self,
        b: RegisterTaskDefinitionFluentBuilder,
    ) -> RegisterTaskDefinitionFluentBuilder {
        b.family(&self.family)
            .set_task_role_arn(self.task_role_arn.clone())
            .set_execution_role_arn(self.execution_role_arn.clone())
            .set_network_mode(self.network_mode.clone())
            .set_container_definitions(Some(self.container_definitions.clone()))
            .set_volumes(list(&self.volumes))
            .set_placement_constraints(list(&self.placement_constraints))
            .set_requires_compatibilities(list(&self.requires_compatibilities))
            .set_cpu(self.cpu.clone())
            .set_memory(self.memory.clone())
            .set_pid_mode(self.pid_mode.clone())
            .set_ipc_mode(self.ipc_mode.clone())
            .set_proxy_configuration(self.proxy_configuration.clone())
            .set_ephemeral_storage(self.ephemeral_storage.clone())
            .set_runtime_platform(self.runtime_platform.clone())
            .set_enable_fault_injection(self.enable_fault_injection)
    }
}

/// An empty list is sent as absent, as the console and the CLI do.
fn list<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}
