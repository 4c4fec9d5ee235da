//! Observing one environment: the services and their record (tags), the revisions they run,
//! and, as far as the record says the next decision needs them (`plan::needs`), the gate
//! inputs (ECR images, alarms, the upstream's record) and health checks. Turns AWS's answers
//! into `plan::Observed`; reads that feed a gate or a check degrade to *unknown* on failure
//! (with what AWS said), while failing to read the services themselves fails the pass.

pub mod health;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ecs::types::Service;

use crate::aws::ecr::ImageLookup;
use crate::aws::ecs::CachedTd;
use crate::aws::{Aws, AwsError, ErrorClass};
use crate::desired::{DesiredState, Release};
use crate::plan::{
    AlarmState, Check, Deployment, DeploymentStatus, Observed, RecordRead, RolloutState,
    ServiceState, TaskDefinitionInfo, Upstream,
};
use crate::record::{self, PREFIX, Record, TAG_RELEASE, TAG_TARGET_TD};
use health::HealthChecker;

/// Reads the world for `plan`.
#[derive(Clone)]
pub struct Observer {
    pub aws: Aws,
    health: HealthChecker,
}

impl Observer {
    pub fn new(aws: Aws, health: HealthChecker) -> Observer {
        Observer { aws, health }
    }

    /// The environment's services as the decision sees them, and the names ECS lacks.
    pub async fn services(
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
        let (services, missing) = self.services(desired).await?;
        let record = Record::from_tags(
            &services
                .iter()
                .map(|(n, s)| (n.clone(), s.tags.clone()))
                .collect(),
        );
        let needs = crate::plan::needs(desired, &record);
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
                let info = match self.aws.task_definition(&desired.region, arn).await {
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
    }
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

fn alarm_state(value: Option<&aws_sdk_cloudwatch::types::StateValue>) -> AlarmState {
    use aws_sdk_cloudwatch::types::StateValue;
    match value {
        Some(StateValue::Alarm) => AlarmState::Alarm,
        Some(StateValue::Ok) => AlarmState::Ok,
        _ => AlarmState::InsufficientData,
    }
}
