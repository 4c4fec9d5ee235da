//! One pass of one environment: observe, decide (the same `decide` that `ecs-gitops plan`
//! runs), apply, report.

use crate::apply::ApplyError;
use crate::desired::DesiredState;
use crate::plan::{self, Observed, Plan, RecordRead};
use crate::record::PhaseKind;

use super::{Observe, Shared, report};

/// One decision, with what it was based on.
pub struct Pass {
    pub observed: Observed,
    pub record: RecordRead,
    pub plan: Plan,
}

/// Observes and decides, without acting (also what `ecs-gitops plan` runs).
pub async fn decide(
    observe: &dyn Observe,
    desired: &DesiredState,
    upstream: Option<&DesiredState>,
    revision: &str,
    now: std::time::SystemTime,
    interval: std::time::Duration,
) -> Result<Pass, ApplyError> {
    let (observed, record) = observe.observe(desired, upstream, revision).await?;
    let plan = plan::plan(desired, &observed, &record, now, interval);
    Ok(Pass {
        observed,
        record,
        plan,
    })
}

#[tracing::instrument(name = "reconcile", skip_all, fields(environment = %desired.environment, release = %desired.release.short(), revision = %revision))]
pub async fn reconcile_once(
    shared: &Shared,
    desired: &DesiredState,
    upstream: Option<&DesiredState>,
    revision: &str,
    reported: &mut Option<PhaseKind>,
) -> Result<Plan, ApplyError> {
    let pass = decide(
        shared.observe.as_ref(),
        desired,
        upstream,
        revision,
        shared.clock.now(),
        shared.interval,
    )
    .await?;
    let applied = shared
        .apply
        .apply(desired, &pass.observed, &pass.plan)
        .await?;
    if applied.writes > 0 {
        tracing::debug!(writes = applied.writes, "applied");
    }
    report::pass_applied(shared, desired, &pass, revision, reported);
    Ok(pass.plan)
}
