//! Observing one environment: the services and their record (tags), the revisions they run,
//! and, as far as the record says the next decision needs them (`plan::needs`), the gate
//! inputs (ECR images, alarms, the upstream's record) and health checks. Turns AWS's answers
//! into `plan::Observed`; reads that feed a gate or a check degrade to *unknown* on failure
//! (with what AWS said), while failing to read the services themselves fails the pass.

pub mod health;

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{Service, Task};

use crate::aws::ecr::ImageLookup;
use crate::aws::ecs::{CachedTd, TdSummary};
use crate::aws::{Aws, AwsError, ErrorClass};
use crate::desired::{DesiredState, Release};
use crate::plan::{
    AlarmState, Check, Deployment, DeploymentStatus, Observed, PausedHook, RecordRead,
    RolloutState, RunSettings, SdStatus, ServiceDeployment, ServiceState, Strategy,
    TaskDefinitionInfo, TaskRun, TaskState, Upstream, started_by,
};
use crate::record::{self, PREFIX, Record, TAG_TARGET_TD};
use health::HealthChecker;

/// Reads the world for `plan`.
#[derive(Clone)]
pub struct Observer {
    /// The handle this observer reads with: the base credentials, or an environment's role.
    pub aws: Aws,
    /// The base credentials' handle (other environments are reached from it).
    base: Aws,
    health: HealthChecker,
}

impl Observer {
    pub fn new(aws: Aws, health: HealthChecker) -> Observer {
        Observer {
            base: aws.clone(),
            aws,
            health,
        }
    }

    /// An observer that reads `desired`'s environment with its own credentials (its
    /// `account.role_arn`, assumed now if the cached credentials are not good): an AssumeRole
    /// that fails is an error before anything is read.
    pub async fn in_account(&self, desired: &DesiredState) -> Result<Observer, AwsError> {
        let aws = self
            .base
            .for_account(&desired.environment, desired.account.as_ref())
            .await;
        aws.credentials_ready().await?;
        Ok(Observer {
            aws,
            base: self.base.clone(),
            health: self.health.clone(),
        })
    }

    /// The environment's services as the decision sees them, and the names ECS lacks.
    pub async fn services(
        &self,
        desired: &DesiredState,
    ) -> Result<(BTreeMap<String, ServiceState>, Vec<String>), AwsError> {
        self.in_account(desired).await?.services_here(desired).await
    }

    async fn services_here(
        &self,
        desired: &DesiredState,
    ) -> Result<(BTreeMap<String, ServiceState>, Vec<String>), AwsError> {
        let names: Vec<String> = desired.services.keys().cloned().collect();
        let d = self
            .aws
            .describe_services(&desired.region, &desired.cluster, &names)
            .await?;
        let services = d
            .services
            .iter()
            .map(|s| {
                (
                    s.service_name().unwrap_or_default().to_string(),
                    service_state(s),
                )
            })
            .collect();
        Ok((services, d.missing))
    }

    /// Everything `plan` needs for one environment, and the record read from its tags.
    pub async fn observe(
        &self,
        desired: &DesiredState,
        upstream: Option<&DesiredState>,
        source_revision: Option<String>,
    ) -> Result<(Observed, RecordRead), AwsError> {
        self.in_account(desired)
            .await?
            .observe_here(desired, upstream, source_revision)
            .await
    }

    async fn observe_here(
        &self,
        desired: &DesiredState,
        upstream: Option<&DesiredState>,
        source_revision: Option<String>,
    ) -> Result<(Observed, RecordRead), AwsError> {
        let (services, missing) = self.services_here(desired).await?;
        let record = Record::from_tags(
            &services
                .iter()
                .map(|(n, s)| (n.clone(), s.tags.clone()))
                .collect(),
        );
        let needs = crate::plan::needs(desired, &record);
        let mut obs = Observed {
            account: account_of(&services)?,
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
                let info = match self.aws.td_summary(&desired.region, arn).await {
                    Ok(c) => td_info(&c, container),
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
        if needs.service_deployments {
            self.service_deployments(desired, &mut obs.services).await;
        }
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
        // Hooks and verification tasks, by the startedBy that finds them.
        let mut runs: BTreeMap<String, Option<String>> = BTreeMap::new();
        for release in &needs.pre_deploy {
            for h in &desired.pre_deploy {
                runs.insert(
                    started_by(&desired.environment, &h.name, release),
                    desired.hook_container(h).map(str::to_string),
                );
            }
        }
        if let Some(release) = &needs.verify_tasks {
            for t in &desired.verify.tasks {
                runs.insert(
                    started_by(&desired.environment, &t.name, release),
                    desired.hook_container(t).map(str::to_string),
                );
            }
        }
        if let Some(since) = &needs.logs_since {
            let now = SystemTime::now();
            for l in &desired.verify.logs {
                let count = self
                    .aws
                    .count_log_events(
                        &desired.region,
                        &l.group,
                        &l.pattern,
                        epoch_ms(*since),
                        epoch_ms(now),
                        l.max,
                    )
                    .await
                    .map_err(|e| e.brief());
                obs.log_counts.insert(l.group.clone(), count);
            }
        }
        for (key, container) in runs {
            let run = self
                .task_run(desired, &key, container.as_deref())
                .await
                .map_err(|e| e.brief());
            obs.task_runs.insert(key, run);
        }
        Ok((obs, record))
    }

    /// Each service's current service deployment (ECS' record of the rollout in flight); a
    /// read that fails leaves what AWS said in its place.
    async fn service_deployments(
        &self,
        desired: &DesiredState,
        services: &mut BTreeMap<String, ServiceState>,
    ) {
        let region = desired.region.as_str();
        let mut arns = Vec::new();
        for (name, s) in services.iter_mut() {
            if s.current_service_deployment.is_none() {
                match self
                    .aws
                    .newest_service_deployment(region, &desired.cluster, name)
                    .await
                {
                    Ok(arn) => s.current_service_deployment = arn,
                    Err(e) => s.service_deployment = Some(Err(e.brief())),
                }
            }
            match &s.current_service_deployment {
                Some(arn) if s.service_deployment.is_none() => arns.push(arn.clone()),
                None if s.service_deployment.is_none() => s.service_deployment = Some(Ok(None)),
                _ => {}
            }
        }
        if arns.is_empty() {
            return;
        }
        let read = async {
            let found = self.aws.service_deployments(region, &arns).await?;
            let revisions: Vec<String> = found
                .iter()
                .flat_map(|d| {
                    d.target_service_revision()
                        .and_then(|r| r.arn())
                        .into_iter()
                        .chain(d.source_service_revisions().iter().filter_map(|r| r.arn()))
                        .map(str::to_string)
                })
                .collect();
            let tds = self
                .aws
                .revision_task_definitions(region, &revisions)
                .await?;
            Ok::<_, AwsError>(
                found
                    .iter()
                    .map(|d| service_deployment(d, &tds))
                    .collect::<Vec<_>>(),
            )
        };
        match read.await {
            Ok(found) => {
                for s in services.values_mut() {
                    if let Some(arn) = &s.current_service_deployment
                        && s.service_deployment.is_none()
                    {
                        s.service_deployment =
                            Some(Ok(found.iter().find(|d| &d.arn == arn).cloned()));
                    }
                }
            }
            Err(e) => {
                for s in services.values_mut() {
                    if s.current_service_deployment.is_some() && s.service_deployment.is_none() {
                        s.service_deployment = Some(Err(e.brief()));
                    }
                }
            }
        }
    }

    /// The newest task started with `key`, if any.
    async fn task_run(
        &self,
        desired: &DesiredState,
        key: &str,
        container: Option<&str>,
    ) -> Result<Option<TaskRun>, AwsError> {
        let tasks = self
            .aws
            .tasks_started_by(&desired.region, &desired.cluster, key)
            .await?;
        let Some(task) = tasks.iter().max_by_key(|t| created_at(t)) else {
            return Ok(None);
        };
        let td = self
            .aws
            .task_definition(
                &desired.region,
                task.task_definition_arn().unwrap_or_default(),
            )
            .await
            .ok();
        Ok(Some(task_run(task, container, td.as_ref())))
    }

    async fn images(&self, desired: &DesiredState) -> BTreeMap<String, Check> {
        let mut out = BTreeMap::new();
        let mut seen: HashMap<(String, String), Check> = HashMap::new();
        for (name, spec) in &desired.services {
            let release = desired.release_of(name).to_string();
            let key = (spec.repository.clone(), release.clone());
            if let Some(hit) = seen.get(&key) {
                out.insert(name.clone(), hit.clone());
                continue;
            }
            let check = match self
                .aws
                .image(&desired.region, &spec.repository, &release)
                .await
            {
                Ok(ImageLookup::Found) => Check::Ok,
                Ok(ImageLookup::NoSuchTag) => {
                    Check::Failed("is not in ECR; push the image first".into())
                }
                Ok(ImageLookup::NoSuchRepository) => Check::Failed(format!(
                    "repository {} does not exist in ECR",
                    spec.repository
                )),
                Err(e) => Check::Unknown(e.brief()),
            };
            seen.insert(key, check.clone());
            out.insert(name.clone(), check);
        }
        out
    }

    async fn alarms(&self, desired: &DesiredState) -> Result<BTreeMap<String, AlarmState>, String> {
        let mut states: BTreeMap<String, AlarmState> = desired
            .verify
            .alarms
            .iter()
            .map(|a| (a.clone(), AlarmState::Missing))
            .collect();
        let found = self
            .aws
            .alarm_states(&desired.region, &desired.verify.alarms)
            .await
            .map_err(|e| e.brief())?;
        for (name, value) in found {
            if let Some(slot) = states.get_mut(&name) {
                *slot = alarm_state(value.as_ref());
            }
        }
        Ok(states)
    }

    /// The promotion gate's input: releases the upstream environment has verified.
    async fn upstream(&self, up: &DesiredState) -> Upstream {
        match self.services(up).await {
            Err(e) => Upstream::Unknown(e.brief()),
            Ok((services, _)) => {
                let tags = services.into_iter().map(|(n, s)| (n, s.tags)).collect();
                match Record::from_tags(&tags) {
                    Err(e) => Upstream::Unknown(e.to_string()),
                    Ok(None) => Upstream::Verified(Vec::new()),
                    Ok(Some(r)) => {
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

    /// Test and demo helper: the controller-written tags of a service, by name.
    pub async fn service_tags(
        &self,
        desired: &DesiredState,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        let (services, _) = self.services(desired).await?;
        Ok(services.into_iter().map(|(n, s)| (n, s.tags)).collect())
    }
}

fn service_state(s: &Service) -> ServiceState {
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
            status: DeploymentStatus::parse(d.status().unwrap_or_default()),
            task_definition: d.task_definition().unwrap_or_default().to_string(),
            rollout_state: d
                .rollout_state()
                .and_then(|r| RolloutState::parse(r.as_str())),
            running: d.running_count(),
            desired: d.desired_count(),
            failed_tasks: d.failed_tasks(),
        })
        .collect();
    ServiceState {
        arn: s.service_arn().unwrap_or_default().to_string(),
        task_definition: s.task_definition().unwrap_or_default().to_string(),
        deployments,
        running: s.running_count(),
        desired: s.desired_count(),
        tags,
        run: run_settings(s),
        strategy: Strategy::parse(
            s.deployment_configuration()
                .and_then(|c| c.strategy())
                .map(|x| x.as_str()),
        ),
        current_service_deployment: s.current_service_deployment().map(str::to_string),
        service_deployment: None,
    }
}

/// A service deployment in the decision's terms, its revisions resolved through `tds`.
fn service_deployment(
    d: &aws_sdk_ecs::types::ServiceDeployment,
    tds: &HashMap<String, String>,
) -> ServiceDeployment {
    let td = |arn: Option<&str>| arn.and_then(|a| tds.get(a)).cloned();
    let time = |t: Option<&aws_sdk_ecs::primitives::DateTime>| {
        t.and_then(|t| SystemTime::try_from(*t).ok())
    };
    let paused = d
        .lifecycle_hook_details()
        .iter()
        .find(|h| h.status().map(|s| s.as_str()) == Some("AWAITING_ACTION"))
        .map(|h| PausedHook {
            hook_id: h.hook_id().unwrap_or("(no id)").to_string(),
            expires_at: time(h.expires_at()),
            timeout_action: h.timeout_action().map(|a| a.as_str().to_string()),
        });
    ServiceDeployment {
        arn: d.service_deployment_arn().unwrap_or_default().to_string(),
        status: SdStatus::parse(d.status().map(|s| s.as_str()).unwrap_or("PENDING")),
        status_reason: d.status_reason().map(str::to_string),
        created_at: time(d.created_at()).unwrap_or(UNIX_EPOCH),
        updated_at: time(d.updated_at()),
        target_task_definition: td(d.target_service_revision().and_then(|r| r.arn())),
        source_task_definitions: d
            .source_service_revisions()
            .iter()
            .filter_map(|r| td(r.arn()))
            .collect(),
        lifecycle_stage: d.lifecycle_stage().map(|s| s.as_str().to_string()),
        production_traffic: d
            .target_service_revision()
            .and_then(|r| r.requested_production_traffic_weight()),
        rollback_reason: d.rollback().and_then(|r| r.reason()).map(str::to_string),
        circuit_breaker_triggered: d
            .deployment_circuit_breaker()
            .and_then(|c| c.status())
            .map(|s| s.as_str() == "TRIGGERED")
            .unwrap_or(false),
        triggered_alarms: d
            .alarms()
            .map(|a| a.triggered_alarm_names().to_vec())
            .unwrap_or_default(),
        paused,
    }
}

/// The account of the environment's services, from their ARNs
/// (`arn:aws:ecs:<region>:<account>:service/...`); an ARN without one is an error, never an
/// image URI built for a made-up account.
fn account_of(services: &BTreeMap<String, ServiceState>) -> Result<String, AwsError> {
    let Some(s) = services.values().next() else {
        return Ok(String::new());
    };
    match s.arn.split(':').nth(4) {
        Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => Ok(a.to_string()),
        _ => Err(AwsError {
            service: "ecs",
            operation: "DescribeServices",
            class: ErrorClass::ServerError,
            code: None,
            message: format!(
                "service ARN {:?} names no 12-digit account; cannot build image URIs for it",
                s.arn
            ),
            source: None,
        }),
    }
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn created_at(t: &Task) -> SystemTime {
    t.created_at()
        .and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(UNIX_EPOCH)
}

/// A described task as the decision sees it; `container` is the hook's container (else the
/// first), whose exit code and log stream count.
fn task_run(t: &Task, container: Option<&str>, td: Option<&CachedTd>) -> TaskRun {
    let containers = t.containers();
    let c = match container {
        Some(name) => containers.iter().find(|c| c.name() == Some(name)),
        None => containers.first(),
    };
    let name = c.and_then(|c| c.name()).unwrap_or_default();
    let log = td.and_then(|td| {
        let def = td
            .td
            .container_definitions()
            .iter()
            .find(|d| d.name() == Some(name))?;
        let lc = def.log_configuration()?;
        if lc.log_driver().as_str() != "awslogs" {
            return None;
        }
        let opts = lc.options()?;
        let group = opts.get("awslogs-group")?;
        let prefix = opts.get("awslogs-stream-prefix")?;
        let id = t.task_arn()?.rsplit('/').next()?;
        Some((group.clone(), format!("{prefix}/{name}/{id}")))
    });
    TaskRun {
        arn: t.task_arn().unwrap_or_default().to_string(),
        state: TaskState::parse(t.last_status().unwrap_or_default()),
        exit_code: c.and_then(|c| c.exit_code()),
        stop_code: t.stop_code().map(|s| s.as_str().to_string()),
        stopped_reason: t.stopped_reason().map(str::to_string),
        container_reason: c.and_then(|c| c.reason()).map(str::to_string),
        created_at: created_at(t),
        log,
    }
}

fn run_settings(s: &Service) -> RunSettings {
    let vpc = s
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration());
    RunSettings {
        subnets: vpc.map(|v| v.subnets().to_vec()).unwrap_or_default(),
        security_groups: vpc
            .map(|v| v.security_groups().to_vec())
            .unwrap_or_default(),
        assign_public_ip: vpc
            .and_then(|v| v.assign_public_ip())
            .map(|a| a.as_str().to_string()),
        launch_type: s.launch_type().map(|l| l.as_str().to_string()),
        capacity_providers: s
            .capacity_provider_strategy()
            .iter()
            .map(|c| (c.capacity_provider().to_string(), c.weight(), c.base()))
            .collect(),
        platform_version: s.platform_version().map(str::to_string),
    }
}

fn td_info(summary: &TdSummary, container: Option<&str>) -> TaskDefinitionInfo {
    let tagged = summary
        .release_tag
        .as_deref()
        .and_then(|t| Release::parse(t).ok());
    let from_image = || {
        let images = &summary.images;
        let (_, image) = match container {
            Some(name) => images.iter().find(|(n, _)| n == name),
            None if images.len() == 1 => images.first(),
            None => None,
        }?;
        let tag = image.rsplit('/').next()?.split_once(':')?.1;
        Release::parse(tag).ok()
    };
    TaskDefinitionInfo {
        release: tagged.or_else(from_image),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_arn(arn: &str) -> BTreeMap<String, ServiceState> {
        BTreeMap::from([(
            "web".to_string(),
            ServiceState {
                arn: arn.into(),
                ..ServiceState::default()
            },
        )])
    }

    #[test]
    fn the_account_comes_from_the_service_arn_or_the_pass_fails() {
        let ok = with_arn("arn:aws:ecs:me-south-1:123456789012:service/c/web");
        assert_eq!(account_of(&ok).unwrap(), "123456789012");
        for bad in ["", "arn:aws:ecs:me-south-1::service/c/web", "web"] {
            let e = account_of(&with_arn(bad)).unwrap_err();
            assert!(e.to_string().contains("names no 12-digit account"), "{e}");
        }
        assert_eq!(
            account_of(&BTreeMap::new()).unwrap(),
            "",
            "no service, no image to build"
        );
    }
}
