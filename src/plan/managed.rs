//! Following ECS' own record of a rollout: the service deployment (ListServiceDeployments /
//! DescribeServiceDeployments). For a blue/green, linear or canary service it is the only
//! honest answer (the rolling view says "complete" while production traffic has not moved, and
//! cannot tell that ECS rolled back by itself); for a rolling service it confirms the rolling
//! view and says when ECS rolled back.

use std::time::Duration;

use super::{Ctx, SdStatus, ServiceDeployment, ServiceState};
use crate::record::{Reason, Record};

/// How far apart the controller's clock and ECS' may be when a service deployment is matched
/// to the attempt that started it.
pub(super) const CLOCK_SLACK: Duration = Duration::from_secs(10);

/// What ECS says about a service's rollout to one revision.
pub(super) enum Followed<'a> {
    /// The service deployment this attempt's UpdateService started.
    Ours(&'a ServiceDeployment),
    /// ECS' record could not be read (what AWS said): never taken as done.
    Unreadable(&'a str),
    /// No service deployment of this attempt (not read, none yet, or the service needed no new
    /// deployment).
    None,
}

impl Ctx<'_> {
    /// The service's newest service deployment if it deploys `td` and began with the attempt
    /// that started at `r.since` (never an older one).
    pub(super) fn followed<'s>(&self, r: &Record, s: &'s ServiceState, td: &str) -> Followed<'s> {
        match &s.service_deployment {
            None | Some(Ok(None)) => Followed::None,
            Some(Err(m)) => Followed::Unreadable(m),
            Some(Ok(Some(sd))) => {
                let fresh = sd.created_at + CLOCK_SLACK >= r.since;
                if fresh && sd.target_task_definition.as_deref() == Some(td) {
                    Followed::Ours(sd)
                } else {
                    Followed::None
                }
            }
        }
    }

    /// The rollout of `s` to `td` is over: ECS' service deployment is SUCCESSFUL (for a
    /// managed strategy nothing else counts). A service this attempt did not update (`updated`
    /// false: it already carried its release) is done when steady on `td`, and for a managed
    /// strategy when ECS' last deployment of it succeeded. `Err` says what is awaited.
    pub(super) fn rollout_done(
        &self,
        r: &Record,
        s: &ServiceState,
        td: &str,
        updated: bool,
    ) -> Result<(), String> {
        match self.followed(r, s, td) {
            Followed::Ours(sd) if sd.status == SdStatus::Successful => Ok(()),
            Followed::Ours(sd) => Err(self.progress(r, s, sd)),
            Followed::Unreadable(m) => Err(format!("ECS' service deployment unknown ({m})")),
            Followed::None => {
                let older_ok = match &s.service_deployment {
                    // Never judged by an older deployment than the one this attempt started.
                    Some(Ok(Some(_))) if updated => false,
                    Some(Ok(Some(sd))) => {
                        sd.status == SdStatus::Successful
                            && sd.target_task_definition.as_deref() == Some(td)
                    }
                    _ => !s.strategy.managed(),
                };
                if s.steady_on(td) && older_ok {
                    Ok(())
                } else if s.strategy.managed() {
                    Err(format!(
                        "waiting for ECS' {} service deployment",
                        s.strategy.as_str()
                    ))
                } else {
                    Err(format!(
                        "{}/{} running",
                        s.primary().map(|d| d.running).unwrap_or(0),
                        s.desired
                    ))
                }
            }
        }
    }

    /// Where a service deployment in flight is, in words: stage, production traffic, a pause.
    fn progress(&self, r: &Record, s: &ServiceState, sd: &ServiceDeployment) -> String {
        let stage = sd.lifecycle_stage.as_deref().unwrap_or("no stage yet");
        let traffic = sd
            .production_traffic
            .map(|t| format!(", {t}% of production traffic"))
            .unwrap_or_default();
        let mut out = format!(
            "{} {} at {stage}{traffic}",
            s.strategy.as_str(),
            sd.status.as_str()
        );
        if let Some(h) = &sd.paused {
            let paused_for = sd
                .updated_at
                .and_then(|t| self.now.duration_since(t).ok())
                .unwrap_or_default();
            let left = self
                .desired
                .verify
                .rollout_timeout
                .saturating_sub(self.now.duration_since(r.since).unwrap_or_default());
            let on_timeout = match h.timeout_action.as_deref() {
                Some("ROLLBACK") => "rolls it back",
                _ => "continues it",
            };
            out = format!(
                "{out}, paused by lifecycle hook {} for {}s (ECS {on_timeout} when the hook times \
                 out; ecs-gitops stops it and rolls back at rollout_timeout, in {}s)",
                h.hook_id,
                paused_for.as_secs(),
                left.as_secs()
            );
        }
        out
    }

    /// ECS stopped or rolled back the service deployment of this attempt: the release failed,
    /// with the reason ECS names (circuit breaker, alarm) or `ecs_rollback`.
    pub(super) fn ecs_failure(
        &self,
        r: &Record,
        name: &str,
        s: &ServiceState,
        td: &str,
    ) -> Option<(Reason, String)> {
        let Followed::Ours(sd) = self.followed(r, s, td) else {
            return None;
        };
        if !sd.status.failed() {
            return None;
        }
        let reason = if sd.circuit_breaker_triggered {
            Reason::CircuitBreaker
        } else if !sd.triggered_alarms.is_empty() {
            Reason::Alarm
        } else {
            Reason::EcsRollback
        };
        let why = sd
            .rollback_reason
            .as_deref()
            .or(sd.status_reason.as_deref())
            .unwrap_or("no reason given");
        let alarms = if sd.triggered_alarms.is_empty() {
            String::new()
        } else {
            format!(" (alarms {})", sd.triggered_alarms.join(", "))
        };
        Some((
            reason,
            format!(
                "ECS' {} service deployment of {name} is {} at {}: {why}{alarms}",
                s.strategy.as_str(),
                sd.status.as_str(),
                sd.lifecycle_stage.as_deref().unwrap_or("no stage"),
            ),
        ))
    }

    /// How a service gets back to `good` during a rollback: `Some(arn)` to stop its service
    /// deployment in flight (ECS then puts `good` back, and traffic with it, at once);
    /// `None` with `wait` when ECS is already putting `good` back.
    pub(super) fn ecs_puts_back<'s>(&self, s: &'s ServiceState, good: &str) -> EcsPutsBack<'s> {
        let Some(Ok(Some(sd))) = &s.service_deployment else {
            return EcsPutsBack::No;
        };
        if sd.target_task_definition.as_deref() == Some(good)
            || !sd.source_task_definitions.iter().any(|t| t == good)
        {
            return EcsPutsBack::No;
        }
        if sd.status.in_flight() {
            EcsPutsBack::Stop(&sd.arn)
        } else if sd.status.rolling_back() {
            EcsPutsBack::Wait
        } else {
            EcsPutsBack::No
        }
    }
}

pub(super) enum EcsPutsBack<'a> {
    /// Stop this service deployment with ROLLBACK.
    Stop(&'a str),
    /// ECS is rolling back to last good already: no write.
    Wait,
    No,
}
