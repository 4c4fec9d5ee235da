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

/// Observes and decides, without acting (also what `ecs-gitops plan` runs). The time the
/// decision is given is read after observing: a transition happens when its evidence was
/// seen (a bake starts when the rollout was seen complete, not when the pass began, which can
/// be seconds earlier when AWS calls are retried).
pub async fn decide(
    observe: &dyn Observe,
    desired: &DesiredState,
    upstream: Option<&DesiredState>,
    revision: &str,
    clock: &dyn super::Clock,
    interval: std::time::Duration,
    resumed: bool,
) -> Result<Pass, ApplyError> {
    let (mut observed, record) = observe.observe(desired, upstream, revision).await?;
    observed.resumed = resumed;
    let now = clock.now();
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
        shared.clock.as_ref(),
        shared.interval,
        *reported == Some(PhaseKind::Suspended) && !desired.suspend,
    )
    .await?;
    // A rollback's writes go first in the API budget (see aws::budget).
    let applied = crate::aws::budget::urgent_if(
        pass.plan.phase() == PhaseKind::RollingBack,
        shared.apply.apply(desired, &pass.observed, &pass.plan),
    )
    .await?;
    if applied.writes > 0 {
        tracing::debug!(writes = applied.writes, "applied");
    }
    report::pass_applied(shared, desired, &pass, revision, reported);
    Ok(pass.plan)
}
