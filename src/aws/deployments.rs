//! ECS service deployments: ECS' own record of each rollout of a service (status, lifecycle
//! stage, traffic, rollback), the revisions they deploy, and stopping one with a rollback.

use std::collections::HashMap;

use aws_sdk_ecs::types::{ServiceDeployment, StopServiceDeploymentStopType};

use super::{Aws, AwsError};

/// Entries kept before the cache starts again (revisions are immutable; the set in use moves on).
pub const REVISION_CACHE_MAX: usize = 4096;
/// DescribeServiceDeployments and DescribeServiceRevisions take at most 20 ARNs.
const BATCH: usize = 20;

impl Aws {
    /// The service deployments named, 20 per call; ARNs ECS does not know are left out.
    pub async fn service_deployments(
        &self,
        region: &str,
        arns: &[String],
    ) -> Result<Vec<ServiceDeployment>, AwsError> {
        let c = self.clients(region);
        let mut out = Vec::new();
        for chunk in arns.chunks(BATCH) {
            let resp = self
                .call(&c.region, "ecs", "DescribeServiceDeployments", || {
                    c.ecs
                        .describe_service_deployments()
                        .set_service_deployment_arns(Some(chunk.to_vec()))
                        .send()
                })
                .await?;
            out.extend(resp.service_deployments().iter().cloned());
        }
        Ok(out)
    }

    /// The newest service deployment of a service (for a service whose DescribeServices answer
    /// does not name its current one).
    pub async fn newest_service_deployment(
        &self,
        region: &str,
        cluster: &str,
        service: &str,
    ) -> Result<Option<String>, AwsError> {
        let c = self.clients(region);
        let resp = self
            .call(&c.region, "ecs", "ListServiceDeployments", || {
                c.ecs
                    .list_service_deployments()
                    .cluster(cluster)
                    .service(service)
                    .max_results(1)
                    .send()
            })
            .await?;
        Ok(resp
            .service_deployments()
            .iter()
            .max_by_key(|d| d.created_at().map(|t| (t.secs(), t.subsec_nanos())))
            .and_then(|d| d.service_deployment_arn())
            .map(str::to_string))
    }

    /// Task definition of each service revision (cached: revisions never change); revisions ECS
    /// does not know are left out.
    pub async fn revision_task_definitions(
        &self,
        region: &str,
        arns: &[String],
    ) -> Result<HashMap<String, String>, AwsError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for arn in arns {
            match self.revisions.get(arn) {
                Some(td) => {
                    out.insert(arn.clone(), td);
                }
                None if !missing.contains(arn) => missing.push(arn.clone()),
                None => {}
            }
        }
        let c = self.clients(region);
        for chunk in missing.chunks(BATCH) {
            let resp = self
                .call(&c.region, "ecs", "DescribeServiceRevisions", || {
                    c.ecs
                        .describe_service_revisions()
                        .set_service_revision_arns(Some(chunk.to_vec()))
                        .send()
                })
                .await?;
            for r in resp.service_revisions() {
                if let (Some(arn), Some(td)) = (r.service_revision_arn(), r.task_definition()) {
                    self.revisions.insert(&[arn], td.to_string());
                    out.insert(arn.to_string(), td.to_string());
                }
            }
        }
        Ok(out)
    }

    /// StopServiceDeployment with `stopType: ROLLBACK`: ECS puts the previous revision back.
    pub async fn stop_service_deployment(&self, region: &str, arn: &str) -> Result<(), AwsError> {
        let c = self.clients(region);
        self.call(&c.region, "ecs", "StopServiceDeployment", || {
            c.ecs
                .stop_service_deployment()
                .service_deployment_arn(arn)
                .stop_type(StopServiceDeploymentStopType::Rollback)
                .send()
        })
        .await?;
        Ok(())
    }
}
