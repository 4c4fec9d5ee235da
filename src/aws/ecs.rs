//! ECS: services, task definition revisions (cached: they are immutable), updates and tags.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, ContainerOverride, DesiredStatus, LaunchType,
    NetworkConfiguration, Service, ServiceField, SortOrder, Tag, Task, TaskDefinition,
    TaskDefinitionField, TaskDefinitionStatus, TaskOverride,
};

use super::taskdef::Registrable;
use super::{Aws, AwsError, ErrorClass};

/// Entries (two per revision: as asked and by ARN, sharing one copy) kept before the cache
/// starts again. Observation keeps `TdSummary`s of every revision; whole ones are for apply.
pub const TD_CACHE_MAX: usize = 1024;

/// Whole revisions, by ARN and by the name they were asked for (one shared copy).
pub type TdCache = super::cache::Bounded<std::sync::Arc<CachedTd>>;

/// What observing a service needs of a revision: its release tag and its containers' images.
/// A few hundred bytes, so one is kept for every revision seen (a pass over 10,000 services in
/// sync describes none again); the whole revisions' cache is bounded to the last few hundred,
/// enough for the apply that follows an observation.
#[derive(Debug, Clone, Default)]
pub struct TdSummary {
    /// The value of the revision's release tag, if it has one.
    pub release_tag: Option<String>,
    /// (container name, image) of each container, in order.
    pub images: Vec<(String, String)>,
}

/// Summaries kept before the cache starts again (~30 MB at the most).
pub const SUMMARY_CACHE_MAX: usize = 100_000;

impl TdSummary {
    fn of(c: &CachedTd) -> TdSummary {
        TdSummary {
            release_tag: c
                .tags
                .iter()
                .find(|t| t.key() == Some(crate::record::TAG_RELEASE))
                .and_then(|t| t.value())
                .map(str::to_string),
            images: c
                .td
                .container_definitions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or_default().to_string(),
                        d.image().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        }
    }
}

/// A described task definition revision and its tags.
#[derive(Debug, Clone)]
pub struct CachedTd {
    pub td: TaskDefinition,
    pub tags: Vec<Tag>,
}

impl CachedTd {
    pub fn arn(&self) -> &str {
        self.td.task_definition_arn().unwrap_or_default()
    }
}

/// Services found (ACTIVE) and the names ECS does not know (or knows as draining/inactive).
pub struct Described {
    pub services: Vec<Service>,
    pub missing: Vec<String>,
}

impl Aws {
    /// Describes services, 10 per call (the API's limit), tags included. A cluster that does
    /// not exist makes its services missing, not an error.
    pub async fn describe_services(
        &self,
        region: &str,
        cluster: &str,
        names: &[String],
    ) -> Result<Described, AwsError> {
        let c = self.clients(region);
        let mut out = Described {
            services: Vec::new(),
            missing: Vec::new(),
        };
        for chunk in names.chunks(10) {
            let answer = self
                .call(&c.region, "ecs", "DescribeServices", || {
                    c.ecs
                        .describe_services()
                        .cluster(cluster)
                        .set_services(Some(chunk.to_vec()))
                        .include(ServiceField::Tags)
                        .send()
                })
                .await;
            let answer = match answer {
                Ok(o) => o,
                Err(e) if e.code.as_deref() == Some("ClusterNotFoundException") => {
                    out.missing.extend(chunk.iter().cloned());
                    continue;
                }
                Err(e) => return Err(e),
            };
            for s in answer.services() {
                if s.status() == Some("ACTIVE") {
                    // Not its events: ECS returns up to 100 per service (~20 KB) and nothing
                    // reads them; with a pass per environment in flight, they would be held
                    // for the whole fleet at once.
                    let mut s = s.clone();
                    s.events = None;
                    out.services.push(s);
                } else {
                    out.missing
                        .push(s.service_name().unwrap_or_default().to_string());
                }
            }
            for f in answer.failures() {
                if let Some(arn) = f.arn() {
                    out.missing
                        .push(arn.rsplit('/').next().unwrap_or(arn).to_string());
                }
            }
        }
        out.missing.sort();
        out.missing.dedup();
        Ok(out)
    }

    /// One revision, from the cache when it was seen before. An answer without a task
    /// definition is an error, never an empty revision.
    pub async fn task_definition(&self, region: &str, arn: &str) -> Result<CachedTd, AwsError> {
        if let Some(hit) = self.tds.get(arn) {
            return Ok(CachedTd::clone(&hit));
        }
        let c = self.clients(region);
        let out = self
            .call(&c.region, "ecs", "DescribeTaskDefinition", || {
                c.ecs
                    .describe_task_definition()
                    .task_definition(arn)
                    .include(TaskDefinitionField::Tags)
                    .send()
            })
            .await?;
        let Some(td) = out.task_definition().cloned() else {
            return Err(empty_answer("DescribeTaskDefinition", arn));
        };
        let cached = CachedTd {
            td,
            tags: out.tags().to_vec(),
        };
        self.tds
            .insert(&[arn, cached.arn()], std::sync::Arc::new(cached.clone()));
        Ok(cached)
    }

    /// What observation needs of one revision (see `TdSummary`): from the summaries, else read
    /// whole (through the bounded cache, so the apply that follows finds it there).
    pub async fn td_summary(
        &self,
        region: &str,
        arn: &str,
    ) -> Result<std::sync::Arc<TdSummary>, AwsError> {
        if let Some(hit) = self.summaries.get(arn) {
            return Ok(hit);
        }
        let full = self.task_definition(region, arn).await?;
        let summary = std::sync::Arc::new(TdSummary::of(&full));
        self.summaries.insert(&[arn], summary.clone());
        Ok(summary)
    }

    /// The newest ACTIVE revisions of `family`, newest first (at most `max`).
    pub async fn recent_revisions(
        &self,
        region: &str,
        family: &str,
        max: i32,
    ) -> Result<Vec<String>, AwsError> {
        let c = self.clients(region);
        let listed = self
            .call(&c.region, "ecs", "ListTaskDefinitions", || {
                c.ecs
                    .list_task_definitions()
                    .family_prefix(family)
                    .status(TaskDefinitionStatus::Active)
                    .sort(SortOrder::Desc)
                    .max_results(max)
                    .send()
            })
            .await?;
        Ok(listed.task_definition_arns().to_vec())
    }

    /// Registers a revision from `fields`, tagged with `tags`.
    pub async fn register(
        &self,
        region: &str,
        fields: &Registrable,
        tags: Vec<Tag>,
    ) -> Result<CachedTd, AwsError> {
        let c = self.clients(region);
        let out = self
            .call(&c.region, "ecs", "RegisterTaskDefinition", || {
                fields
                    .request(c.ecs.register_task_definition())
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
        let Some(td) = out.task_definition().cloned() else {
            return Err(empty_answer("RegisterTaskDefinition", &fields.family));
        };
        let cached = CachedTd { td, tags };
        if cached.arn().is_empty() {
            return Err(empty_answer("RegisterTaskDefinition", &fields.family));
        }
        self.tds
            .insert(&[cached.arn()], std::sync::Arc::new(cached.clone()));
        Ok(cached)
    }

    pub async fn update_service(
        &self,
        region: &str,
        cluster: &str,
        service: &str,
        task_definition: &str,
    ) -> Result<(), AwsError> {
        if task_definition.is_empty() {
            return Err(empty_answer("UpdateService", service));
        }
        let c = self.clients(region);
        self.call(&c.region, "ecs", "UpdateService", || {
            c.ecs
                .update_service()
                .cluster(cluster)
                .service(service)
                .task_definition(task_definition)
                .send()
        })
        .await?;
        Ok(())
    }

    /// Sets and removes tags on one resource; returns the number of write calls made.
    pub async fn write_tags(
        &self,
        region: &str,
        arn: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<usize, AwsError> {
        let c = self.clients(region);
        let mut writes = 0;
        if !set.is_empty() {
            let tags: Vec<Tag> = set
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            self.call(&c.region, "ecs", "TagResource", || {
                c.ecs
                    .tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
            writes += 1;
        }
        if !remove.is_empty() {
            self.call(&c.region, "ecs", "UntagResource", || {
                c.ecs
                    .untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(Some(remove.to_vec()))
                    .send()
            })
            .await?;
            writes += 1;
        }
        Ok(writes)
    }
}

/// A one-off task to start (RunTask).
pub struct RunTaskRequest<'a> {
    pub cluster: &'a str,
    pub task_definition: &'a str,
    /// The container whose command is replaced.
    pub container: &'a str,
    pub command: &'a [String],
    pub started_by: &'a str,
    pub network: Option<NetworkConfiguration>,
    pub launch_type: Option<LaunchType>,
    pub capacity_providers: Vec<CapacityProviderStrategyItem>,
    pub platform_version: Option<String>,
}

impl Aws {
    /// Starts one task; a task ECS could not place (`failures`) is an error naming why.
    pub async fn run_task(&self, region: &str, req: &RunTaskRequest<'_>) -> Result<Task, AwsError> {
        let c = self.clients(region);
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(req.container)
                    .set_command(Some(req.command.to_vec()))
                    .build(),
            )
            .build();
        let out = self
            .call(&c.region, "ecs", "RunTask", || {
                c.ecs
                    .run_task()
                    .cluster(req.cluster)
                    .task_definition(req.task_definition)
                    .overrides(overrides.clone())
                    .started_by(req.started_by)
                    .set_network_configuration(req.network.clone())
                    .set_launch_type(req.launch_type.clone())
                    .set_capacity_provider_strategy(
                        (!req.capacity_providers.is_empty())
                            .then(|| req.capacity_providers.clone()),
                    )
                    .set_platform_version(req.platform_version.clone())
                    .count(1)
                    .send()
            })
            .await?;
        if let Some(task) = out.tasks().first() {
            return Ok(task.clone());
        }
        let why = out
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.reason().unwrap_or("no reason given"),
                    f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(AwsError {
            service: "ecs",
            operation: "RunTask",
            class: ErrorClass::ClientError,
            code: Some("TaskNotStarted".into()),
            message: if why.is_empty() {
                "no task was started".into()
            } else {
                why
            },
            source: None,
        })
    }

    pub async fn stop_task(
        &self,
        region: &str,
        cluster: &str,
        task: &str,
        reason: &str,
    ) -> Result<(), AwsError> {
        let c = self.clients(region);
        self.call(&c.region, "ecs", "StopTask", || {
            c.ecs
                .stop_task()
                .cluster(cluster)
                .task(task)
                .reason(reason)
                .send()
        })
        .await?;
        Ok(())
    }

    /// Tasks started with `started_by`, running and stopped (ECS keeps stopped ones a while).
    pub async fn tasks_started_by(
        &self,
        region: &str,
        cluster: &str,
        started_by: &str,
    ) -> Result<Vec<Task>, AwsError> {
        let c = self.clients(region);
        let mut arns = Vec::new();
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let out = self
                .call(&c.region, "ecs", "ListTasks", || {
                    c.ecs
                        .list_tasks()
                        .cluster(cluster)
                        .started_by(started_by)
                        .desired_status(status.clone())
                        .max_results(100)
                        .send()
                })
                .await?;
            arns.extend(out.task_arns().iter().cloned());
        }
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        arns.truncate(100);
        let out = self
            .call(&c.region, "ecs", "DescribeTasks", || {
                c.ecs
                    .describe_tasks()
                    .cluster(cluster)
                    .set_tasks(Some(arns.clone()))
                    .send()
            })
            .await?;
        Ok(out.tasks().to_vec())
    }
}

/// An answer that lacks what the operation exists to return (or a request that would send
/// an empty identifier): an error that says so, never a silent default.
fn empty_answer(operation: &'static str, about: &str) -> AwsError {
    AwsError {
        service: "ecs",
        operation,
        class: ErrorClass::ServerError,
        code: None,
        message: format!("no task definition in the answer for {about:?}"),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_the_release_tag_and_the_images_only() {
        let full = CachedTd {
            td: TaskDefinition::builder()
                .task_definition_arn("arn:aws:ecs:r:1:task-definition/web:7")
                .container_definitions(
                    aws_sdk_ecs::types::ContainerDefinition::builder()
                        .name("app")
                        .image("1.dkr.ecr.r.amazonaws.com/web:abc")
                        .memory(512)
                        .build(),
                )
                .container_definitions(
                    aws_sdk_ecs::types::ContainerDefinition::builder()
                        .name("sidecar")
                        .image("envoy:1")
                        .build(),
                )
                .build(),
            tags: vec![
                Tag::builder().key("team").value("x").build(),
                Tag::builder()
                    .key(crate::record::TAG_RELEASE)
                    .value("abc")
                    .build(),
            ],
        };
        let s = TdSummary::of(&full);
        assert_eq!(s.release_tag.as_deref(), Some("abc"));
        assert_eq!(
            s.images,
            vec![
                (
                    "app".to_string(),
                    "1.dkr.ecr.r.amazonaws.com/web:abc".to_string()
                ),
                ("sidecar".to_string(), "envoy:1".to_string())
            ]
        );
    }
}
