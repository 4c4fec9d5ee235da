//! The AWS side: observing an environment and applying a plan, through the real SDK.
//!
//! Every call goes through `call`, which counts it by service, operation and outcome and
//! retries transient failures (throttling, 5xx, dropped connections, timeouts) with jittered
//! exponential backoff from `backon`; the SDK's own retries are off so each attempt is
//! counted once. Reads that feed a gate (ECR, CloudWatch, the upstream record) degrade to
//! `Check::Unknown` on failure; a failure to read the services themselves fails the pass.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    ServiceField, SortOrder, Tag, TaskDefinition, TaskDefinitionField, TaskDefinitionStatus,
};
use backon::{ExponentialBuilder, Retryable};

use crate::desired::{DesiredState, Release};
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::plan::{
    Action, AlarmState, Check, Deployment, Needs, Observed, Plan, ServiceState, TaskDefinitionInfo,
    Upstream,
};
use crate::record::{self, PREFIX, Record, TAG_RELEASE, TAG_TARGET_TD};

/// How an AWS error should be handled (and the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Throttled,
    ServerError,
    Network,
    NotFound,
    ClientError,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Network => "network_error",
            ErrorClass::NotFound => "not_found",
            ErrorClass::ClientError => "client_error",
        }
    }

    pub fn transient(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::ServerError | ErrorClass::Network
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed ({}): {message}", class.as_str())]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub class: ErrorClass,
    pub code: Option<String>,
    pub message: String,
}

/// Errors of applying a plan that are not AWS errors: the desired state cannot be applied to
/// what ECS has (a human must change the file or the task definition).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "task definition {task_definition} of service {service} has {count} containers; set `container:` for {service} in the desired-state file"
    )]
    WhichContainer {
        service: String,
        task_definition: String,
        count: usize,
    },
    #[error(
        "task definition {task_definition} of service {service} has no container named `{container}`; fix `container:` in the desired-state file (containers: {known})"
    )]
    NoSuchContainer {
        service: String,
        task_definition: String,
        container: String,
        known: String,
    },
}

impl ApplyError {
    /// A short, fixed identifier for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Aws(e) => e.class.as_str(),
            ApplyError::WhichContainer { .. } | ApplyError::NoSuchContainer { .. } => "config",
        }
    }
}

fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> ErrorClass {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Network
        }
        _ => {
            let code = e.code().unwrap_or_default();
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            if code.contains("Throttl") || code == "TooManyRequestsException" || status == 429 {
                ErrorClass::Throttled
            } else if status >= 500 {
                ErrorClass::ServerError
            } else if code.contains("NotFound") {
                ErrorClass::NotFound
            } else {
                ErrorClass::ClientError
            }
        }
    }
}

#[derive(Clone)]
struct Clients {
    ecs: aws_sdk_ecs::Client,
    ecr: aws_sdk_ecr::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
}

#[derive(Clone)]
struct CachedTd {
    td: TaskDefinition,
    tags: Vec<Tag>,
}

/// The AWS clients of all regions the environments use, with a cache of task definitions
/// (revisions are immutable; the controller only tags the ones it registers, at birth).
#[derive(Clone)]
pub struct Aws {
    config: SdkConfig,
    clients: Arc<Mutex<HashMap<String, Clients>>>,
    tds: Arc<Mutex<HashMap<String, CachedTd>>>,
    metrics: Arc<Metrics>,
    health: HealthChecker,
    retry: ExponentialBuilder,
}

impl Aws {
    /// Loads the standard SDK configuration (credential chain, `AWS_ENDPOINT_URL`, ...).
    pub async fn from_env(metrics: Arc<Metrics>) -> Aws {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .load()
            .await;
        Aws {
            config,
            clients: Arc::default(),
            tds: Arc::default(),
            metrics,
            health: HealthChecker::new(Duration::from_secs(5)),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(3))
                .with_max_times(3)
                .with_jitter(),
        }
    }

    fn clients(&self, region: &str) -> Clients {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(region.to_string())
            .or_insert_with(|| {
                let r = Region::new(region.to_string());
                Clients {
                    ecs: aws_sdk_ecs::Client::from_conf(
                        aws_sdk_ecs::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    ecr: aws_sdk_ecr::Client::from_conf(
                        aws_sdk_ecr::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
                        aws_sdk_cloudwatch::config::Builder::from(&self.config)
                            .region(r)
                            .build(),
                    ),
                }
            })
            .clone()
    }

    /// One AWS operation: counted per attempt, retried while transient.
    async fn call<T, E, F, Fut>(
        &self,
        service: &'static str,
        operation: &'static str,
        f: F,
    ) -> Result<T, AwsError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let attempt = || async {
            match f().await {
                Ok(v) => {
                    self.metrics
                        .aws_requests
                        .with_label_values(&[service, operation, "ok"])
                        .inc();
                    Ok(v)
                }
                Err(e) => {
                    let class = classify(&e);
                    self.metrics
                        .aws_requests
                        .with_label_values(&[service, operation, class.as_str()])
                        .inc();
                    Err(AwsError {
                        service,
                        operation,
                        class,
                        code: e.code().map(str::to_string),
                        message: DisplayErrorContext(&e).to_string(),
                    })
                }
            }
        };
        attempt
            .retry(self.retry)
            .when(|e: &AwsError| e.class.transient())
            .notify(|e: &AwsError, after: Duration| {
                tracing::debug!(
                    service,
                    operation,
                    class = e.class.as_str(),
                    retry_in_ms = after.as_millis() as u64,
                    "retrying AWS call"
                );
            })
            .await
    }

    // ---- observe ------------------------------------------------------------------------------

    /// Describes the environment's services (10 per call, tags included).
    pub async fn describe_services(
        &self,
        desired: &DesiredState,
    ) -> Result<(BTreeMap<String, ServiceState>, Vec<String>), AwsError> {
        let c = self.clients(&desired.region);
        let names: Vec<String> = desired.services.keys().cloned().collect();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for chunk in names.chunks(10) {
            let out = self
                .call("ecs", "DescribeServices", || {
                    c.ecs
                        .describe_services()
                        .cluster(&desired.cluster)
                        .set_services(Some(chunk.to_vec()))
                        .include(ServiceField::Tags)
                        .send()
                })
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) if e.code.as_deref() == Some("ClusterNotFoundException") => {
                    missing.extend(chunk.iter().cloned());
                    continue;
                }
                Err(e) => return Err(e),
            };
            for s in out.services() {
                let name = s.service_name().unwrap_or_default().to_string();
                if s.status() != Some("ACTIVE") {
                    missing.push(name);
                    continue;
                }
                let tags = s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .filter(|(k, _)| k.starts_with(PREFIX))
                    .collect();
                let deployments = s
                    .deployments()
                    .iter()
                    .map(|d| Deployment {
                        id: d.id().unwrap_or_default().to_string(),
                        status: d.status().unwrap_or_default().to_string(),
                        task_definition: d.task_definition().unwrap_or_default().to_string(),
                        rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                        running: d.running_count(),
                        desired: d.desired_count(),
                        failed_tasks: d.failed_tasks(),
                    })
                    .collect();
                found.insert(
                    name,
                    ServiceState {
                        arn: s.service_arn().unwrap_or_default().to_string(),
                        task_definition: s.task_definition().unwrap_or_default().to_string(),
                        deployments,
                        running: s.running_count(),
                        desired: s.desired_count(),
                        tags,
                    },
                );
            }
            for f in out.failures() {
                if let Some(arn) = f.arn() {
                    missing.push(arn.rsplit('/').next().unwrap_or(arn).to_string());
                }
            }
        }
        missing.sort();
        missing.dedup();
        Ok((found, missing))
    }

    async fn task_definition(&self, region: &str, arn: &str) -> Result<CachedTd, AwsError> {
        if let Some(hit) = self
            .tds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(arn)
            .cloned()
        {
            return Ok(hit);
        }
        let c = self.clients(region);
        let out = self
            .call("ecs", "DescribeTaskDefinition", || {
                c.ecs
                    .describe_task_definition()
                    .task_definition(arn)
                    .include(TaskDefinitionField::Tags)
                    .send()
            })
            .await?;
        let cached = CachedTd {
            td: out
                .task_definition()
                .cloned()
                .unwrap_or_else(|| TaskDefinition::builder().build()),
            tags: out.tags().to_vec(),
        };
        let key = cached.td.task_definition_arn().unwrap_or(arn).to_string();
        let mut map = self.tds.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, cached.clone());
        map.insert(arn.to_string(), cached.clone());
        Ok(cached)
    }

    fn td_info(cached: &CachedTd, container: Option<&str>) -> TaskDefinitionInfo {
        let tagged = cached
            .tags
            .iter()
            .find(|t| t.key() == Some(TAG_RELEASE))
            .and_then(|t| Release::parse(t.value()?).ok());
        let from_image = || {
            let defs = cached.td.container_definitions();
            let c = match container {
                Some(name) => defs.iter().find(|c| c.name() == Some(name)),
                None if defs.len() == 1 => defs.first(),
                None => None,
            }?;
            let image = c.image()?;
            let tag = image.rsplit('/').next()?.split_once(':')?.1;
            Release::parse(tag).ok()
        };
        TaskDefinitionInfo {
            release: tagged.or_else(from_image),
        }
    }

    /// Everything `plan` needs for one environment.
    /// Returns the observation and the record read from the services' tags; what is read
    /// beyond the services depends on what the record says comes next (`plan::needs`).
    pub async fn observe(
        &self,
        desired: &DesiredState,
        upstream: Option<&DesiredState>,
        source_revision: Option<String>,
    ) -> Result<(Observed, Option<Record>), AwsError> {
        let (services, missing) = self.describe_services(desired).await?;
        let record = Record::from_tags(
            &services
                .iter()
                .map(|(n, s)| (n.clone(), s.tags.clone()))
                .collect(),
        );
        let needs: Needs = crate::plan::needs(desired, record.as_ref());
        let mut obs = Observed {
            account: services
                .values()
                .find_map(|s| s.arn.split(':').nth(4).map(str::to_string)),
            missing_services: missing,
            source_revision,
            ..Observed::default()
        };
        // Revisions the decision looks at: what runs, what deploys, and the last good.
        for (name, s) in &services {
            let container = desired
                .services
                .get(name)
                .and_then(|x| x.container.as_deref());
            let mut arns: Vec<&str> = s
                .deployments
                .iter()
                .map(|d| d.task_definition.as_str())
                .collect();
            arns.push(&s.task_definition);
            if let Some(td) = s.tags.get(record::TAG_LAST_GOOD_TD) {
                arns.push(td);
            }
            if let Some(td) = s.tags.get(TAG_TARGET_TD) {
                arns.push(td);
            }
            for arn in arns {
                if arn.is_empty() || obs.task_definitions.contains_key(arn) {
                    continue;
                }
                let info = match self.task_definition(&desired.region, arn).await {
                    Ok(c) => Self::td_info(&c, container),
                    Err(e)
                        if e.class == ErrorClass::ClientError
                            || e.class == ErrorClass::NotFound =>
                    {
                        TaskDefinitionInfo::default()
                    }
                    Err(e) => return Err(e),
                };
                obs.task_definitions.insert(arn.to_string(), info);
            }
        }
        obs.services = services;
        if needs.gates {
            obs.images = Some(self.images(desired).await);
            if let (Some(_), Some(up)) = (&desired.promote_from, upstream) {
                obs.upstream = Some(self.upstream(up).await);
            } else if desired.promote_from.is_some() {
                obs.upstream = Some(Upstream::Unknown(format!(
                    "desired-state/{}.yaml is missing or invalid",
                    desired.promote_from.as_deref().unwrap_or_default()
                )));
            }
        }
        if (needs.gates || needs.alarms) && !desired.verify.alarms.is_empty() {
            obs.alarms = Some(self.alarms(desired).await);
        }
        if needs.health && !desired.verify.health.is_empty() {
            obs.health = Some(self.health.check_all(&desired.verify.health).await);
        }
        Ok((obs, record))
    }

    async fn images(&self, desired: &DesiredState) -> BTreeMap<String, Check> {
        let c = self.clients(&desired.region);
        let mut out = BTreeMap::new();
        let mut seen: HashMap<(String, String), Check> = HashMap::new();
        for (name, spec) in &desired.services {
            let release = desired.release_of(name).to_string();
            let key = (spec.repository.clone(), release.clone());
            if let Some(hit) = seen.get(&key) {
                out.insert(name.clone(), hit.clone());
                continue;
            }
            let res = self
                .call("ecr", "DescribeImages", || {
                    c.ecr
                        .describe_images()
                        .repository_name(&spec.repository)
                        .image_ids(
                            aws_sdk_ecr::types::ImageIdentifier::builder()
                                .image_tag(&release)
                                .build(),
                        )
                        .send()
                })
                .await;
            let check = match res {
                Ok(o) if !o.image_details().is_empty() => Check::Ok,
                Ok(_) => Check::Failed("is not in ECR; push the image first".into()),
                Err(e) if e.code.as_deref() == Some("ImageNotFoundException") => {
                    Check::Failed("is not in ECR; push the image first".into())
                }
                Err(e) if e.code.as_deref() == Some("RepositoryNotFoundException") => {
                    Check::Failed(format!(
                        "repository {} does not exist in ECR",
                        spec.repository
                    ))
                }
                Err(e) => Check::Unknown(e.class.as_str().into()),
            };
            seen.insert(key, check.clone());
            out.insert(name.clone(), check);
        }
        out
    }

    async fn alarms(&self, desired: &DesiredState) -> Result<BTreeMap<String, AlarmState>, String> {
        let c = self.clients(&desired.region);
        let mut states: BTreeMap<String, AlarmState> = desired
            .verify
            .alarms
            .iter()
            .map(|a| (a.clone(), AlarmState::Missing))
            .collect();
        for chunk in desired.verify.alarms.chunks(100) {
            let out = self
                .call("cloudwatch", "DescribeAlarms", || {
                    c.cloudwatch
                        .describe_alarms()
                        .set_alarm_names(Some(chunk.to_vec()))
                        .max_records(100)
                        .send()
                })
                .await
                .map_err(|e| format!("DescribeAlarms {}", e.class.as_str()))?;
            let reported = out
                .metric_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value()))
                .chain(
                    out.composite_alarms()
                        .iter()
                        .map(|a| (a.alarm_name(), a.state_value())),
                );
            for (name, value) in reported {
                if let Some(slot) = name.and_then(|n| states.get_mut(n)) {
                    *slot = alarm_state(value);
                }
            }
        }
        Ok(states)
    }

    /// The promotion gate's input: releases the upstream environment has verified.
    async fn upstream(&self, up: &DesiredState) -> Upstream {
        match self.describe_services(up).await {
            Err(e) => Upstream::Unknown(e.class.as_str().into()),
            Ok((services, _)) => {
                let tags = services.into_iter().map(|(n, s)| (n, s.tags)).collect();
                match Record::from_tags(&tags) {
                    None => Upstream::Verified(Vec::new()),
                    Some(r) => {
                        let mut v = r.verified.clone();
                        if let Some(g) = r.last_good
                            && !v.contains(&g)
                        {
                            v.push(g);
                        }
                        Upstream::Verified(v)
                    }
                }
            }
        }
    }

    // ---- apply --------------------------------------------------------------------------------

    /// Persists the plan's record (only what changed), then carries out its actions.
    pub async fn apply(
        &self,
        desired: &DesiredState,
        obs: &Observed,
        plan: &Plan,
    ) -> Result<usize, ApplyError> {
        let mut writes = 0;
        // A gate that says no writes nothing to ECS, not even the record: what runs is still
        // what the record says, and the next pass decides Blocked again by itself.
        let persist = !(plan.phase == crate::record::Phase::Blocked && plan.actions.is_empty());
        for (name, s) in &obs.services {
            if !persist || !desired.services.contains_key(name) {
                continue;
            }
            writes += self
                .write_tags(
                    &desired.region,
                    &s.arn,
                    &s.tags,
                    &plan.record.tags_for(name),
                )
                .await?;
        }
        for action in &plan.actions {
            match action {
                Action::Update {
                    service,
                    task_definition,
                    ..
                } => {
                    self.update_service(desired, service, task_definition)
                        .await?;
                    writes += 1;
                }
                Action::Deploy {
                    service,
                    base_task_definition,
                    container,
                    image,
                    release,
                } => {
                    let (td, registered) = self
                        .ensure_revision(
                            desired,
                            service,
                            base_task_definition,
                            container.as_deref(),
                            image,
                            release,
                        )
                        .await?;
                    writes += usize::from(registered);
                    self.update_service(desired, service, &td).await?;
                    writes += 1;
                    if let Some(s) = obs.services.get(service) {
                        let mut after = plan.record.tags_for(service);
                        let before = after.clone();
                        after.insert(TAG_TARGET_TD.to_string(), td.clone());
                        writes += self
                            .write_tags(&desired.region, &s.arn, &before, &after)
                            .await?;
                    }
                }
            }
        }
        Ok(writes)
    }

    async fn write_tags(
        &self,
        region: &str,
        arn: &str,
        old: &BTreeMap<String, String>,
        new: &BTreeMap<String, String>,
    ) -> Result<usize, AwsError> {
        let diff = record::diff_tags(old, new);
        let c = self.clients(region);
        let mut writes = 0;
        if !diff.set.is_empty() {
            let tags: Vec<Tag> = diff
                .set
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            self.call("ecs", "TagResource", || {
                c.ecs
                    .tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
            writes += 1;
        }
        if !diff.remove.is_empty() {
            self.call("ecs", "UntagResource", || {
                c.ecs
                    .untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(Some(diff.remove.clone()))
                    .send()
            })
            .await?;
            writes += 1;
        }
        Ok(writes)
    }

    async fn update_service(
        &self,
        desired: &DesiredState,
        service: &str,
        td: &str,
    ) -> Result<(), AwsError> {
        let c = self.clients(&desired.region);
        self.call("ecs", "UpdateService", || {
            c.ecs
                .update_service()
                .cluster(&desired.cluster)
                .service(service)
                .task_definition(td)
                .send()
        })
        .await?;
        Ok(())
    }

    /// The revision of `base` with only `container`'s image changed: an existing identical
    /// one if there is one (a retry after a crash must not register twice), else a new one.
    /// Returns its ARN and whether it was registered now.
    async fn ensure_revision(
        &self,
        desired: &DesiredState,
        service: &str,
        base: &str,
        container: Option<&str>,
        image: &str,
        release: &Release,
    ) -> Result<(String, bool), ApplyError> {
        let region = &desired.region;
        let base = self.task_definition(region, base).await?;
        let mut wanted = base.td.clone();
        let defs = wanted.container_definitions.get_or_insert_with(Vec::new);
        let idx = match container {
            Some(name) => defs
                .iter()
                .position(|c| c.name() == Some(name))
                .ok_or_else(|| ApplyError::NoSuchContainer {
                    service: service.to_string(),
                    task_definition: base
                        .td
                        .task_definition_arn()
                        .unwrap_or_default()
                        .to_string(),
                    container: name.to_string(),
                    known: defs
                        .iter()
                        .filter_map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
            None if defs.len() == 1 => 0,
            None => {
                return Err(ApplyError::WhichContainer {
                    service: service.to_string(),
                    task_definition: base
                        .td
                        .task_definition_arn()
                        .unwrap_or_default()
                        .to_string(),
                    count: defs.len(),
                });
            }
        };
        defs[idx].image = Some(image.to_string());
        let family = base.td.family().unwrap_or_default().to_string();
        let c = self.clients(region);
        let listed = self
            .call("ecs", "ListTaskDefinitions", || {
                c.ecs
                    .list_task_definitions()
                    .family_prefix(&family)
                    .status(TaskDefinitionStatus::Active)
                    .sort(SortOrder::Desc)
                    .max_results(10)
                    .send()
            })
            .await?;
        for arn in listed.task_definition_arns() {
            let candidate = self.task_definition(region, arn).await?;
            if candidate.td.family() == Some(family.as_str())
                && same_content(&candidate.td, &wanted)
            {
                return Ok((arn.clone(), false));
            }
        }
        let mut tags: Vec<Tag> = base
            .tags
            .iter()
            .filter(|t| !t.key().unwrap_or_default().starts_with(PREFIX))
            .cloned()
            .collect();
        tags.push(
            Tag::builder()
                .key(TAG_RELEASE)
                .value(release.as_str())
                .build(),
        );
        let w = wanted.clone();
        let out = self
            .call("ecs", "RegisterTaskDefinition", || {
                c.ecs
                    .register_task_definition()
                    .family(&family)
                    .set_task_role_arn(w.task_role_arn.clone())
                    .set_execution_role_arn(w.execution_role_arn.clone())
                    .set_network_mode(w.network_mode.clone())
                    .set_container_definitions(w.container_definitions.clone())
                    .set_volumes(w.volumes.clone())
                    .set_placement_constraints(w.placement_constraints.clone())
                    .set_requires_compatibilities(w.requires_compatibilities.clone())
                    .set_cpu(w.cpu.clone())
                    .set_memory(w.memory.clone())
                    .set_pid_mode(w.pid_mode.clone())
                    .set_ipc_mode(w.ipc_mode.clone())
                    .set_proxy_configuration(w.proxy_configuration.clone())
                    .set_ephemeral_storage(w.ephemeral_storage.clone())
                    .set_runtime_platform(w.runtime_platform.clone())
                    .set_enable_fault_injection(w.enable_fault_injection)
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
        let td = out
            .task_definition()
            .cloned()
            .unwrap_or_else(|| TaskDefinition::builder().build());
        let arn = td.task_definition_arn().unwrap_or_default().to_string();
        self.tds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arn.clone(), CachedTd { td, tags });
        Ok((arn, true))
    }

    /// Test and demo helper: the controller-written tags of a service, by name.
    pub async fn service_tags(
        &self,
        desired: &DesiredState,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        let (services, _) = self.describe_services(desired).await?;
        Ok(services.into_iter().map(|(n, s)| (n, s.tags)).collect())
    }
}

fn alarm_state(value: Option<&aws_sdk_cloudwatch::types::StateValue>) -> AlarmState {
    use aws_sdk_cloudwatch::types::StateValue;
    match value {
        Some(StateValue::Alarm) => AlarmState::Alarm,
        Some(StateValue::Ok) => AlarmState::Ok,
        _ => AlarmState::InsufficientData,
    }
}

/// Equal in everything a task runs with (what RegisterTaskDefinition takes).
fn same_content(a: &TaskDefinition, b: &TaskDefinition) -> bool {
    a.container_definitions == b.container_definitions
        && a.task_role_arn == b.task_role_arn
        && a.execution_role_arn == b.execution_role_arn
        && a.network_mode == b.network_mode
        && a.volumes == b.volumes
        && a.placement_constraints == b.placement_constraints
        && a.requires_compatibilities == b.requires_compatibilities
        && a.cpu == b.cpu
        && a.memory == b.memory
        && a.pid_mode == b.pid_mode
        && a.ipc_mode == b.ipc_mode
        && a.proxy_configuration == b.proxy_configuration
        && a.ephemeral_storage == b.ephemeral_storage
        && a.runtime_platform == b.runtime_platform
}
