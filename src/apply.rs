//! Carrying out a plan, deciding nothing: write the record the plan says to persist (only the
//! tags that changed), then each action in order. What apply learns (the revision a Deploy
//! registered or reused) goes back through `Record::with_target` into the service's tags, so a
//! restarted controller knows what it was waiting for.

use std::collections::BTreeMap;

use futures_util::stream::{self, StreamExt};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, LaunchType,
    NetworkConfiguration, Tag,
};

use crate::aws::ecs::RunTaskRequest;
use crate::aws::taskdef::Registrable;
use crate::aws::{Aws, AwsError, ErrorClass};
use crate::desired::{DesiredState, Release};
use crate::plan::{Action, Observed, Plan, RunSettings};
use crate::record::{self, PREFIX, TAG_RELEASE};

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
    #[error(
        "stopped writing to environment {environment}: this replica no longer holds its lease with the safety margin left (another replica takes over from the record)"
    )]
    LeaseLost { environment: String },
}

impl ApplyError {
    /// Every value `kind` returns: the `kind` label set of the reconcile error metric.
    pub const KINDS: [&'static str; 7] = [
        ErrorClass::Throttled.as_str(),
        ErrorClass::ServerError.as_str(),
        ErrorClass::Network.as_str(),
        ErrorClass::NotFound.as_str(),
        ErrorClass::ClientError.as_str(),
        "config",
        "lease_lost",
    ];

    /// A short, fixed identifier for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Aws(e) => e.class.as_str(),
            ApplyError::WhichContainer { .. } | ApplyError::NoSuchContainer { .. } => "config",
            ApplyError::LeaseLost { .. } => "lease_lost",
        }
    }
}

/// What applying a plan did and learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Write calls made (tags, registrations, updates).
    pub writes: usize,
    /// Per deployed service: the revision it now targets.
    pub targets: BTreeMap<String, String>,
}

/// Persists the plan's record (if the plan says so), then carries out its actions. `may_write`
/// is asked before every write (with several replicas: does this one still hold the
/// environment's lease with its safety margin); the moment it says no, nothing more is
/// written.
pub async fn apply(
    aws: &Aws,
    desired: &DesiredState,
    obs: &Observed,
    plan: &Plan,
    may_write: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Applied, ApplyError> {
    let fence = || {
        if may_write() {
            Ok(())
        } else {
            Err(ApplyError::LeaseLost {
                environment: desired.environment.clone(),
            })
        }
    };
    // The environment's own credentials (its `account.role_arn`), as the observation used.
    let aws = &aws
        .for_account(&desired.environment, desired.account.as_ref())
        .await;
    let region = desired.region.as_str();
    let mut done = Applied::default();
    // An urgent pass (rolling back, or woken by an alarm) writes side by side what concerns one
    // service each; an ordinary pass one call at a time, so environments take turns in the API
    // budget. The record is always written in full before any action.
    let parallel = if crate::aws::budget::is_urgent() {
        URGENT_PARALLEL
    } else {
        1
    };
    if plan.persist {
        let mut writes: Vec<BoxFuture<'_, Result<usize, ApplyError>>> = Vec::new();
        for (name, s) in &obs.services {
            if desired.services.contains_key(name) {
                let fence = &fence;
                writes.push(Box::pin(async move {
                    fence()?;
                    Ok(
                        write_record(aws, region, &s.arn, &s.tags, &plan.record.tags_for(name))
                            .await?,
                    )
                }));
            }
        }
        done.writes += side_by_side(writes, parallel).await?.iter().sum::<usize>();
    }
    let mut rest = plan.actions.as_slice();
    while !rest.is_empty() {
        // A run of per-service actions together, any other action alone.
        let n = rest.iter().take_while(|a| per_service(a)).count().max(1);
        let (batch, after) = rest.split_at(n);
        rest = after;
        let mut acts: Vec<BoxFuture<'_, Result<Acted, ApplyError>>> = Vec::new();
        for action in batch {
            let fence = &fence;
            acts.push(Box::pin(async move {
                fence()?;
                act(aws, desired, obs, plan, action).await
            }));
        }
        for (writes, target) in side_by_side(acts, parallel).await? {
            done.writes += writes;
            if let Some((service, td)) = target {
                done.targets.insert(service, td);
            }
        }
    }
    Ok(done)
}

/// Runs `work` at most `parallel` at a time (one after another, in order, when 1); stops at
/// the first error.
async fn side_by_side<T>(
    work: Vec<BoxFuture<'_, Result<T, ApplyError>>>,
    parallel: usize,
) -> Result<Vec<T>, ApplyError> {
    let mut out = Vec::with_capacity(work.len());
    let mut running = stream::iter(work).buffer_unordered(parallel);
    while let Some(r) = running.next().await {
        out.push(r?);
    }
    Ok(out)
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The write calls an action made, and the (service, revision) a Deploy now targets.
type Acted = (usize, Option<(String, String)>);

/// Writes in flight at once in an urgent pass.
const URGENT_PARALLEL: usize = 10;

/// Actions that touch one service each and may run side by side (hooks' tasks keep their order).
fn per_service(a: &Action) -> bool {
    matches!(
        a,
        Action::Update { .. } | Action::Deploy { .. } | Action::StopDeployment { .. }
    )
}

/// Carries out one action: the write calls it made, and the revision a Deploy now targets.
async fn act(
    aws: &Aws,
    desired: &DesiredState,
    obs: &Observed,
    plan: &Plan,
    action: &Action,
) -> Result<Acted, ApplyError> {
    let region = desired.region.as_str();
    let mut writes = 0;
    let mut target = None;
    match action {
        Action::Update {
            service,
            task_definition,
            ..
        } => {
            aws.update_service(region, &desired.cluster, service, task_definition)
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
            let (td, registered) = ensure_revision(
                aws,
                region,
                service,
                base_task_definition,
                container.as_deref(),
                image,
                release,
            )
            .await?;
            writes += usize::from(registered);
            aws.update_service(region, &desired.cluster, service, &td)
                .await?;
            writes += 1;
            if let Some(s) = obs.services.get(service) {
                let before = plan.record.tags_for(service);
                let after = plan.record.with_target(service, &td).tags_for(service);
                writes += write_record(aws, region, &s.arn, &before, &after).await?;
            }
            target = Some((service.clone(), td));
        }
        Action::RunTask {
            service,
            base_task_definition,
            image_container,
            image,
            release,
            container,
            command,
            started_by,
            settings,
            ..
        } => {
            // The release's revision, registered as the deploy does (so it is reused).
            let (td, registered) = ensure_revision(
                aws,
                region,
                service,
                base_task_definition,
                image_container.as_deref(),
                image,
                release,
            )
            .await?;
            writes += usize::from(registered);
            let revision = aws.task_definition(region, &td).await?;
            let defs = revision.td.container_definitions();
            let i = container_index(defs, container.as_deref(), service, &td)?;
            let name = defs[i].name().unwrap_or_default().to_string();
            let req = RunTaskRequest {
                cluster: &desired.cluster,
                task_definition: &td,
                container: &name,
                command,
                started_by,
                network: network(settings),
                launch_type: settings.launch_type.as_deref().map(LaunchType::from),
                capacity_providers: settings
                    .capacity_providers
                    .iter()
                    .filter_map(|(name, weight, base)| {
                        CapacityProviderStrategyItem::builder()
                            .capacity_provider(name)
                            .weight(*weight)
                            .base(*base)
                            .build()
                            .ok()
                    })
                    .collect(),
                platform_version: settings.platform_version.clone(),
            };
            aws.run_task(region, &req).await?;
            writes += 1;
        }
        Action::StopDeployment {
            service_deployment, ..
        } => {
            aws.stop_service_deployment(region, service_deployment)
                .await?;
            writes += 1;
        }
        Action::StopTask {
            task_arn, reason, ..
        } => {
            aws.stop_task(region, &desired.cluster, task_arn, reason)
                .await?;
            writes += 1;
        }
    }
    Ok((writes, target))
}

/// The service's awsvpc settings, as RunTask takes them.
fn network(s: &RunSettings) -> Option<NetworkConfiguration> {
    if s.subnets.is_empty() {
        return None;
    }
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(s.subnets.clone()))
        .set_security_groups((!s.security_groups.is_empty()).then(|| s.security_groups.clone()))
        .set_assign_public_ip(s.assign_public_ip.as_deref().map(AssignPublicIp::from))
        .build()
        .ok()?;
    Some(
        NetworkConfiguration::builder()
            .awsvpc_configuration(vpc)
            .build(),
    )
}

async fn write_record(
    aws: &Aws,
    region: &str,
    arn: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<usize, AwsError> {
    let diff = record::diff_tags(old, new);
    if diff.is_empty() {
        return Ok(0);
    }
    aws.write_tags(region, arn, &diff.set, &diff.remove).await
}

/// The container a file names (or the only one) among a revision's containers.
fn container_index(
    defs: &[aws_sdk_ecs::types::ContainerDefinition],
    container: Option<&str>,
    service: &str,
    task_definition: &str,
) -> Result<usize, ApplyError> {
    match container {
        Some(name) => defs
            .iter()
            .position(|c| c.name() == Some(name))
            .ok_or_else(|| ApplyError::NoSuchContainer {
                service: service.to_string(),
                task_definition: task_definition.to_string(),
                container: name.to_string(),
                known: defs
                    .iter()
                    .filter_map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        None if defs.len() == 1 => Ok(0),
        None => Err(ApplyError::WhichContainer {
            service: service.to_string(),
            task_definition: task_definition.to_string(),
            count: defs.len(),
        }),
    }
}

/// The revision of `base` with only `container`'s image changed: an existing identical
/// one if there is one (a retry after a crash must not register twice), else a new one.
/// Returns its ARN and whether it was registered now.
async fn ensure_revision(
    aws: &Aws,
    region: &str,
    service: &str,
    base: &str,
    container: Option<&str>,
    image: &str,
    release: &Release,
) -> Result<(String, bool), ApplyError> {
    let base = aws.task_definition(region, base).await?;
    let mut wanted = Registrable::of(&base.td);
    let idx = container_index(
        &wanted.container_definitions,
        container,
        service,
        base.arn(),
    )?;
    wanted.container_definitions[idx].image = Some(image.to_string());
    for arn in aws.recent_revisions(region, &wanted.family, 10).await? {
        let candidate = aws.task_definition(region, &arn).await?;
        if Registrable::of(&candidate.td) == wanted {
            return Ok((arn, false));
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
    let registered = aws.register(region, &wanted, tags).await?;
    Ok((registered.arn().to_string(), true))
}
